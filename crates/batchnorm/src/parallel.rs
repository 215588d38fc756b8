//! How a tensor is cut into tasks. The cut depends on the shape alone, never on the number
//! of threads, and partial results are combined in task order: that is what makes every
//! result bitwise identical whatever the thread count.

use crate::layout::Dims;
use rayon::prelude::*;

/// Below this many elements a kernel called from a pool thread runs on that thread:
/// splitting would cost more than the work. Running sequentially does the same arithmetic in the same order.
///
/// Whether splitting pays from there depends on whether the pool's other threads are awake,
/// which the library cannot see: an idle rayon worker sleeps after a few tens of
/// microseconds, and waking it costs each parallel region about 14 us on the project's
/// machine. Measured at 2 threads inside the pool, NC 256x1024, the median of 1000 calls
/// (1 thread: moments 32 us, forward 62, eval 29, forward + backward 161): calls back to back
/// or 2-10 us apart 22 / 41 / 19 / 101 us, calls 30 us or more apart 36 / 56 / 35 / 118 us.
/// Asleep, the moments and the eval of 1 MB run slower than on one thread; the forward and
/// the backward still gain.
///
/// Awake or not, what the two threads pass each other costs several times more in some
/// spells, which come and go within seconds: a cache line one thread writes and the other
/// reads back (a ping-pong probe between two threads) took a 390-410 ns round
/// trip against 61-135 ns, and reading 2 MB the other core had just written 79-80 us against
/// 37-38 us, as if the machine's two CPUs sat on different core complexes. In those spells
/// NC 256x1024 ran at 2 threads as at 1 (forward 59-64 against 39-41 us, moments 35 against
/// 20-22, eval 25 against 18; 1 thread 59-60 throughout), and two single-thread processes,
/// one on each CPU, each ran the moments at their speed alone (30-31 us), so neither CPU was
/// slower: only their traffic. (Probe and kernel ran one after the other, seconds apart; in 6
/// of 8 such pairs both were slow or both quick.)
///
/// Giving each thread the same share call after call does not undo it: with
/// `rayon::broadcast`, thread t taking the t-th contiguous share of the reduction's blocks
/// and of the normalising pass's chunks (bit for bit the same results), NC 256x1024 at 2
/// threads, medians of 2,000 calls alternating with the pool's own scheduling, 30 rounds:
/// forward 37.3 -> 36.9 us and forward + backward 96.2 -> 94.9 in quiet rounds (round trip
/// 78-83 ns), 56.4-60.0 -> 54.2-57.0 and 139-144 -> 135-139 in slow ones (334-366 ns), with
/// two slow rounds the other way (forward + backward 142 -> 149-152). 1-4%, for giving up
/// work stealing on every shape and a broadcast that waits for every thread of the pool.
pub(crate) const SEQUENTIAL_BELOW: usize = 1 << 15;

/// Below this many elements a call from outside the pool runs on the calling thread: the
/// pool's sleeping workers take tens of microseconds to wake up (on this project's machine),
/// as long as the whole pass over a 1 MB tensor. Measured at 2 threads, called from the main
/// thread (`examples/shapes`): NC 256x1024 train forward 0.110-0.121 ms in parallel,
/// 0.082-0.099 ms on the calling thread; NC 64x1000 0.076-0.086 vs 0.023-0.026 ms; NC
/// 1024x1024 is faster in parallel (0.24-0.28 vs 0.31-0.36 ms).
const SEQUENTIAL_OUTSIDE_POOL_BELOW: usize = 1 << 19;

/// Whether `work` elements are worth handing to the pool. With one thread they never are:
/// a call from outside the pool would only wait for the pool's thread to wake up and do the
/// same work. Measured at 1 thread (`examples/shapes`, best of 7, effective GB/s): NC
/// 120x600 train forward 7.5-9.0 -> 22.9-28.5, eval 15.8-16.2 -> 45.6-53.3; NC 64x4096
/// forward 9.4-10.1 -> 15.8-18.0. Sequential and parallel runs do the same arithmetic, so
/// this choice never changes a result.
pub(crate) fn parallel_worth(work: usize) -> bool {
    let below = if rayon::current_thread_index().is_some() { SEQUENTIAL_BELOW } else { SEQUENTIAL_OUTSIDE_POOL_BELOW };
    work >= below && rayon::current_num_threads() > 1
}

/// Aim for at least this many elements per task.
const MIN_TASK: usize = 1 << 14;

/// Rows per block of a channels-last reduction aimed at: its partial sums cost 4 / rows of
/// the block's own traffic, and the threads pass them to each other. Blocks of 128 rows
/// against 64 (old and new alternating, 6 rounds, medians of 5,000-10,000 calls, us): NC
/// 256x1024 at 1 thread forward 59.4 -> 58.4, forward + backward 162.5 -> 159.1; at 2
/// threads, in quiet spells forward 38.9 -> 38.0, forward + backward 102.9 -> 99.2,
/// statistics 21.8 -> 18.8; in spells of slow traffic between the cores (see
/// [`SEQUENTIAL_BELOW`]) forward 47-68 -> 45-60 (one round of three slower), forward +
/// backward 124-168 -> 115-145, statistics 29-37 -> 26-32; NC 1024x1024 forward at 2
/// threads 128-140 -> 120-131, NC 512x512 34.8-38.7 -> 33.6-34.8.
const ROWS_PER_BLOCK: usize = 128;

/// Fewest rows per block, where there are too few rows for two blocks of [`ROWS_PER_BLOCK`].
const MIN_ROWS_PER_BLOCK: usize = 64;

/// Most blocks a memory-order reduction is cut into.
const MAX_BLOCKS: usize = 32;

/// Channels-first tensors whose contiguous runs are at least this long are reduced channel
/// by channel; shorter runs are reduced in memory order. A channel's runs are one per batch
/// item, far apart: each one restarts the hardware prefetchers, so with short runs one
/// core's reads of a channel are slower than a second pass over the whole tensor in memory
/// order. Measured (`examples/shapes`, medians of 5 interleaved runs, channel by channel
/// -> memory order, train forward / backward ms): runs of 3136 (NCHW 32x64x56x56) 4.07 ->
/// 2.85 / 5.27 -> 4.21 at 1 thread, 1.87 -> 1.49 / 2.81 -> 2.30 at 2; runs of 4096 (NCHW
/// 64x64x64x64) 9.2 -> 7.6 / 12.9 -> 12.0 at 1 thread; runs of 12544 about even (16x32x112x112
/// 2.65 -> 2.56 / 3.72 -> 4.01); runs of 16384 and more favour channels (16x64x128x128
/// backward 6.6 -> 8.5 at 2 threads, 4x64x256x256 9.6 -> 11.9 at 1).
const FUSE_MIN_INNER: usize = 8192;

/// Channel-by-channel reduction needs this many channels to feed the threads.
const FUSE_MIN_CHANNELS: usize = 8;

/// Fused channel tasks per tensor: enough to balance the threads, few enough that each task
/// holds a run of channels to pipeline. Overlapping one channel's writes with the next one's
/// reads measured (bnlab bench, 3 interleaved rounds) NCHW 32x64x56x56 train forward +
/// backward 8.5-9.1 -> 7.8-8.1 ms at 1 thread and 4.7-5.2 -> 4.2-4.5 ms at 2.
const FUSE_TASKS: usize = 16;

/// The decomposition of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Each task takes `group` consecutive channels: it reduces a whole channel, then
    /// normalises (or forms dx for) it while it is still in cache, reducing the next
    /// channel in the same pass. Only channels-first.
    pub fused: bool,
    /// Otherwise: blocks of the outer axis, reduced in memory order, merged in block order.
    pub blocks: usize,
    /// Outer indices per block.
    pub block_len: usize,
    /// Fused: channels per task, processed in order so that one channel's second pass
    /// overlaps the next one's first.
    pub group: usize,
}

impl Plan {
    pub(crate) fn new(d: Dims) -> Plan {
        let outer = d.outer.max(1);
        if !d.is_rows() && d.inner >= FUSE_MIN_INNER && d.channels >= FUSE_MIN_CHANNELS {
            let group = (d.channels / FUSE_TASKS).max(1);
            return Plan { fused: true, blocks: 1, block_len: outer, group };
        }
        let mut blocks = (d.len() / MIN_TASK).clamp(1, MAX_BLOCKS).min(outer);
        if d.is_rows() {
            // Each block writes 2 x C float64 partial sums: keep that small beside its rows.
            blocks = blocks.min((outer / ROWS_PER_BLOCK).max((outer / MIN_ROWS_PER_BLOCK).min(2)).max(1));
        } else {
            // Short runs may be summed a few batch items at a time (`simd::run_items`).
            blocks = blocks.min((outer / crate::simd::run_items(d.channels, d.inner)).max(1));
        }
        let block_len = outer.div_ceil(blocks);
        Plan { fused: false, blocks: outer.div_ceil(block_len), block_len, group: 1 }
    }

    /// The outer range of block `b`.
    pub(crate) fn range(&self, b: usize, outer: usize) -> std::ops::Range<usize> {
        let lo = (b * self.block_len).min(outer);
        lo..((b + 1) * self.block_len).min(outer)
    }
}

/// Whether the training kernels take this shape channel by channel: each task reduces a
/// channel and then normalises it (or forms its dx) while the channel's slice is still in
/// cache, so `x` (and `dy`) are read from memory once. Otherwise the statistics pass reads
/// the whole tensor before the second pass reads it again. Depends on the shape alone:
/// channels-first tensors with runs of at least 8192 values and at least 8 channels.
///
/// ```
/// use batchnorm::{reads_once, Dims, Layout};
/// assert!(reads_once(Dims::new(Layout::Nchw, &[8, 64, 112, 112]).unwrap()));
/// assert!(!reads_once(Dims::new(Layout::Nchw, &[32, 64, 56, 56]).unwrap()));
/// assert!(!reads_once(Dims::new(Layout::Nhwc, &[32, 56, 56, 64]).unwrap()));
/// ```
pub fn reads_once(d: Dims) -> bool {
    Plan::new(d).fused
}

/// Elements per task of an element-wise pass.
const ELEMENTWISE_TASK: usize = 1 << 14;

/// Tensors of at least this many elements (16 MB) have the element-wise pass that follows a
/// reduction over the same data run from the end (see [`for_each_pass_chunk`]).
const FROM_END_MIN: usize = 1 << 22;

/// Elements per task of a pass run from the end (1 MB).
const FROM_END_TASK: usize = 1 << 18;

/// Whether the element-wise pass that follows a reduction over `d` (the normalising pass of
/// the training forward, the dx pass of the backward) runs from the end of the tensor when
/// it runs on one thread (see [`for_each_pass_chunk`]).
///
/// The reduction reads the tensor front to back, so when it ends its last megabytes are the
/// ones still in the caches (L2 and this core's share of L3); a second pass that starts
/// there reads them from cache instead of memory. Below 16 MB most of the tensor stays
/// cached whichever way the pass runs. Tasks from the end hold 1 MB each: tasks of 64 KB
/// lost more than the cache gave (every backward step between tasks restarts the hardware
/// prefetchers). Measured at 1 thread in one process, each variant called 4 times in a row
/// as a training loop calls it (the first call dropped), variants alternating, medians of
/// 11-15. How much the caches keep depends on the neighbours: in one set of 4 runs NHWC
/// 32x56x56x64 forward 2.30-2.57 -> 2.03-2.26 ms, forward + backward 6.51-6.65 -> 6.20-6.50,
/// NC 4096x4096 forward and forward + backward 1-2% faster; in a later set of 6 runs (time
/// ratios new / old) NC 4096x4096 forward 0.96-0.99, forward + backward 0.96-0.98, NCHW
/// 32x64x56x56 forward 0.97-0.99, forward + backward 0.98-1.01, NHWC 32x56x56x64 forward
/// 0.98-1.04 (median 1.03), forward + backward 0.96-1.01. Nor does it pay below 16 MB
/// (from 512 KB or 4 MB, tasks of 64-256 KB; 1 thread, medians of 10,000 calls, two runs):
/// NC 256x1024 forward 58.7-59.5 -> 57.3-58.6 us, forward + backward 158.7-160.6 ->
/// 157.0-158.8; NHWC 64x14x14x256 forward 874-908 -> 884-925, forward + backward 2688-2833
/// -> 2677-2794. Element-wise passes compute each value on its own, so the order changes no
/// result.
pub(crate) fn from_end(d: Dims) -> bool {
    d.len() >= FROM_END_MIN
}

/// Maps `f(first, chunk)` over the chunks of an element-wise pass's output `out`, `first`
/// being the chunk's first element: tasks of whole `unit`s (rows or slices), at least
/// `min_units` of them, front to back. With `back` (see [`from_end`]) a pass that runs on
/// one thread visits tasks of 1 MB from the last to the first; on more threads it runs as
/// without: from the end, each thread from the end of its half, it was slower at 2 threads
/// (NCHW 32x64x56x56 forward + backward 3.92-4.13 -> 4.10-4.70 ms, NC 4096x4096 13.4-14.2
/// -> 13.8-15.2, with tasks of 256 KB to 4 MB alike), and so it was on a tensor of 12.8 MB
/// from the end of each half, tasks of 1 MB (NHWC 64x14x14x256, two runs of medians of 14:
/// forward 0.53 / 0.48 -> 0.57 / 0.52 ms, forward + backward 1.60 / 1.54 -> 1.72 / 1.66).
pub(crate) fn for_each_pass_chunk<T, F>(out: &mut [T], unit: usize, min_units: usize, back: bool, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    let (work, unit) = (out.len(), unit.max(1));
    let back = back && !parallel_worth(work);
    let task = if back { FROM_END_TASK } else { ELEMENTWISE_TASK };
    let chunk = (task / unit).max(min_units).max(1) * unit;
    if back {
        out.chunks_mut(chunk).enumerate().rev().for_each(|(i, c)| f(i * chunk, c));
    } else {
        for_each_chunk(out, chunk, work, |i, c| f(i * chunk, c));
    }
}

/// Maps `f` over the chunks of `out` (each `chunk` long), in parallel when worth it.
pub(crate) fn for_each_chunk<T, F>(out: &mut [T], chunk: usize, work: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    let chunk = chunk.max(1);
    if !parallel_worth(work) || out.len() <= chunk {
        out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// `out = p[0] + p[1] + ... + p[blocks - 1]`, element by element in block order, where
/// `p[b]` is what `f(b, p)` sums into a zeroed `p` as long as `out` (the partial sums of
/// block `b` of a reduction over `work` elements).
///
/// On one thread the blocks run in order through one scratch vector that stays in cache,
/// each added to `out` when it completes; in parallel every block sums into its own part of
/// `parts`, which its task zeroes (so the part is in that core's cache when the block
/// starts), and the parts are added in block order at the end. The same additions in the
/// same order either way.
///
/// A buffer of partial sums per block, zeroed up front and added at the end (as before),
/// cost the statistics of NC 4096x4096 a tenth of their time at 1 thread: 2 MB zeroed, then
/// every block's first touch of its part and the final additions miss L2. Measured on the
/// statistics' strips over the same 32 blocks (1 thread, in one process, 4 runs): 2.81-2.98
/// ms that way, 2.73-2.82 with each part zeroed in its task, 2.55-2.73 through one scratch
/// vector. Old and new builds alternating (6 rounds, medians), training forward at 1 thread,
/// with [`crate::workspace::lined`]: NC 4096x4096 7.42 -> 7.15 ms, NHWC 32x56x56x64 2.21 ->
/// 2.09, NHWC 64x14x14x256 1.33 -> 1.15, NC 16384x1024 6.67 -> 6.54; the backward and 2
/// threads within noise (NC 4096x4096 at 2 threads, 12 rounds: forward 4.76 -> 4.79,
/// backward 9.07 -> 8.86).
pub(crate) fn sum_blocks<F>(blocks: usize, work: usize, out: &mut [f64], parts: &mut Vec<f64>, f: F)
where
    F: Fn(usize, &mut [f64]) + Sync + Send,
{
    let n = out.len();
    out.fill(0.0);
    if blocks == 0 || n == 0 {
        return;
    }
    if !parallel_worth(work) || blocks == 1 {
        f(0, out);
        if blocks > 1 {
            let scratch = crate::workspace::lined(parts, n);
            for b in 1..blocks {
                scratch.fill(0.0);
                f(b, scratch);
                add_into(out, scratch);
            }
        }
        return;
    }
    let parts = crate::workspace::lined(parts, blocks * n);
    parts.par_chunks_mut(n).enumerate().for_each(|(b, p)| {
        p.fill(0.0);
        f(b, p);
    });
    let parts = &*parts;
    let merge = |lo: usize, o: &mut [f64]| {
        o.copy_from_slice(&parts[lo..lo + o.len()]);
        for p in parts[n..].chunks_exact(n) {
            add_into(o, &p[lo..lo + o.len()]);
        }
    };
    if n >= 2 * MERGE_TASK {
        out.par_chunks_mut(MERGE_TASK).enumerate().for_each(|(i, o)| merge(i * MERGE_TASK, o));
    } else {
        merge(0, out);
    }
}

/// Partial sums per task of the parallel merge of [`sum_blocks`]'s parts (rows of 1024
/// channels and more). Whichever task merges an element, it adds that element's parts in
/// block order. Merged on one thread, the 32 parts of NC 4096x4096 (2 MB, written by the
/// other cores) held the rest back: on a 16-core Xeon (`bnlab bench` of both builds
/// alternating, 6 runs each of medians of 3 rounds, medians of the runs, ms) training forward
/// 2.07 -> 1.84 at 8 threads and 1.50 -> 1.30 at 16, forward + backward 5.18 -> 4.70 and 3.63
/// -> 3.32, every run of the new build faster than every run of the old at 16 threads but
/// one; the entries that run as before moved 0.93-1.08x. At 2 threads on the project's
/// machine, within its noise.
const MERGE_TASK: usize = 1024;

/// Narrowest column group, in channels (a row's part 256 B long).
const MIN_COLUMN_GROUP: usize = 64;

/// The width (a multiple of 32 channels) of the column groups that a reduction over the rows
/// of `d`, cut into `blocks` blocks of rows (see [`Plan`]), runs in instead when the pool
/// has more threads than there are blocks, or `None`.
///
/// The blocks depend on the shape alone (they fix the order of the additions), so a tensor
/// of few rows has few of them: NC 256x1024 has 2, and with 2 tasks its statistics ran no
/// faster on 4, 8 or 16 threads than on 2 (a 16-core Xeon, medians of 3 rounds: training
/// forward 0.074, 0.078, 0.079 and 0.108 ms at 2, 4, 8 and 16 threads). Column groups give
/// every thread work without touching the order (see [`sum_column_groups`]). Which of the
/// two runs depends on the thread count; what they compute does not. Measured on that Xeon
/// (`bnlab bench` of both builds alternating, 5 runs each of medians of 3 rounds, medians of
/// the runs, blocks -> column groups, ms): NC 256x1024 training forward 0.064 -> 0.056 at 4
/// threads, 0.070 -> 0.047 at 8, 0.084 -> 0.043 at 16; forward + backward 0.151 -> 0.130,
/// 0.165 -> 0.113, 0.196 -> 0.094. The entries that run as before moved with the noise (at
/// 2 threads, 256x1024 forward + backward 0.143 -> 0.178 with the same code; NC 4096x4096
/// 0.89-1.09x throughout). On this project's 2 cores they take tensors of fewer than 128 rows
/// that are not cut into tiles (one block, which ran on one thread): in the pool, medians of calls
/// back to back, 5 alternating runs, us, NC 100x400 forward 11.7-12.1 -> 11.3-11.5, backward
/// 15.1-15.3 -> 13.0-13.2; NC 120x300 forward 11.0-11.2 -> 11.4-11.7, backward 13.7-13.9 ->
/// 13.1-13.4.
pub(crate) fn column_group_width(d: Dims, blocks: usize) -> Option<usize> {
    let threads = rayon::current_num_threads();
    if !d.is_rows() || threads <= blocks || !parallel_worth(d.len()) {
        return None;
    }
    let groups = threads.min(d.channels / MIN_COLUMN_GROUP);
    (groups > blocks).then(|| d.channels.div_ceil(groups).next_multiple_of(32))
}

/// `out = [s1 (C) | s2 (C)]`, the block-ordered sum that [`sum_blocks`] forms over the
/// blocks of `plan`, cut by columns instead: one task per group of `width` channels (see
/// [`column_group_width`]), each summing its channels block after block, every block's
/// partial sums added to the first block's in block order. `f(rows, j0, a1, a2)` adds rows
/// `rows` of channels `j0..j0 + a1.len()` into zeroed `a1`, `a2`, each channel's values in
/// row order as the reduction of whole rows adds them; so every channel sees the same
/// additions in the same order as through [`sum_blocks`], bit for bit the same sums.
pub(crate) fn sum_column_groups<F>(plan: &Plan, outer: usize, width: usize, out: &mut [f64], parts: &mut Vec<f64>, f: F)
where
    F: Fn(std::ops::Range<usize>, usize, &mut [f64], &mut [f64]) + Sync + Send,
{
    let c = out.len() / 2;
    let parts = crate::workspace::lined(parts, c.div_ceil(width) * 4 * width);
    parts.par_chunks_mut(4 * width).enumerate().for_each(|(g, p)| {
        let (j0, w) = (g * width, width.min(c - g * width));
        let (acc, scratch) = p.split_at_mut(2 * width);
        let (a1, a2) = acc.split_at_mut(width);
        let (a1, a2) = (&mut a1[..w], &mut a2[..w]);
        a1.fill(0.0);
        a2.fill(0.0);
        f(plan.range(0, outer), j0, a1, a2);
        let (s1, s2) = scratch.split_at_mut(width);
        let (s1, s2) = (&mut s1[..w], &mut s2[..w]);
        for b in 1..plan.blocks {
            s1.fill(0.0);
            s2.fill(0.0);
            f(plan.range(b, outer), j0, s1, s2);
            add_into(a1, s1);
            add_into(a2, s2);
        }
    });
    let (o1, o2) = out.split_at_mut(c);
    for ((p, o1), o2) in parts.chunks(4 * width).zip(o1.chunks_mut(width)).zip(o2.chunks_mut(width)) {
        o1.copy_from_slice(&p[..o1.len()]);
        o2.copy_from_slice(&p[width..width + o2.len()]);
    }
}

/// `out[i] += p[i]`.
fn add_into(out: &mut [f64], p: &[f64]) {
    for (o, a) in out.iter_mut().zip(p) {
        *o += a;
    }
}

/// Runs `f(0..tasks)`, in parallel when `work` elements are worth it (as [`for_each_chunk`],
/// for tasks that write through a [`SharedMut`] rather than into chunks of one slice).
pub(crate) fn for_each_task<F>(tasks: usize, work: usize, f: F)
where
    F: Fn(usize) + Sync + Send,
{
    if !parallel_worth(work) || tasks <= 1 {
        (0..tasks).for_each(f);
    } else {
        (0..tasks).into_par_iter().for_each(f);
    }
}

/// Channels per task of per-channel work (coefficients, saved statistics), which runs in
/// parallel once there are more channels than this: a tensor of few rows and 100,000s of
/// channels spends as long on per-channel square roots as on its data.
pub(crate) const CHANNEL_TASK: usize = 4096;

/// Whether per-channel work over `c` channels goes to the pool in tasks of [`CHANNEL_TASK`].
pub(crate) fn channels_in_parallel(c: usize) -> bool {
    c > CHANNEL_TASK && parallel_worth(c)
}

/// A pointer to an output buffer that tasks write disjoint parts of.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks only ever take disjoint sub-slices (see `slice`).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(crate) fn new(s: &mut [f32]) -> Self {
        SharedMut { ptr: s.as_mut_ptr(), len: s.len() }
    }

    /// # Safety
    /// No two live slices obtained from the same `SharedMut` may overlap, and the buffer it
    /// was made from must outlive them.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "SharedMut::slice out of bounds");
        std::slice::from_raw_parts_mut(self.ptr.add(start), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The chunks of a pass cover the output once, in whole units, at 1 and 2 threads; on
    /// one thread a pass from the end visits tasks of at least 1 MB last to first.
    #[test]
    fn pass_chunks_cover_the_output_from_the_end() {
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for (n, unit, min_units) in [(1_000_000, 1000, 8), (700_001, 1, 1), (3 * FROM_END_TASK, 3136, 1), (12, 4, 8)] {
                for back in [false, true] {
                    let mut out = vec![0u8; n];
                    let seen = Mutex::new(Vec::new());
                    pool.install(|| {
                        for_each_pass_chunk(&mut out, unit, min_units, back, |first, o| {
                            o.iter_mut().for_each(|v| *v += 1);
                            seen.lock().unwrap().push((first, o.len()));
                        })
                    });
                    let what = format!("{n} x {unit}, back {back}, {threads} threads");
                    assert!(out.iter().all(|&v| v == 1), "{what}: not every element once");
                    let seen = seen.into_inner().unwrap();
                    let mut tiles = seen.clone();
                    tiles.sort_unstable();
                    let ends: Vec<usize> = tiles.iter().map(|t| t.0 + t.1).collect();
                    assert!(tiles[0].0 == 0 && tiles[1..].iter().zip(&ends).all(|(t, e)| t.0 == *e), "{what}: first elements");
                    let back_here = back && threads == 1;
                    let task = if back_here { FROM_END_TASK } else { ELEMENTWISE_TASK };
                    let chunk = seen.iter().map(|s| s.1).max().unwrap();
                    assert_eq!(chunk % unit, 0, "{what}: chunks of whole units");
                    assert!(chunk >= (task / unit).max(min_units) * unit || seen.len() == 1, "{what}: chunk {chunk}");
                    if threads == 1 {
                        let starts: Vec<usize> = seen.iter().map(|s| s.0).collect();
                        let mut sorted = starts.clone();
                        sorted.sort_unstable();
                        if back {
                            sorted.reverse();
                        }
                        assert_eq!(starts, sorted, "{what}: order");
                    }
                }
            }
        }
    }

    /// Run from the end, the normalising pass and the dx pass (batch and running
    /// statistics) write what they write front to back, bit for bit, on rows and on
    /// channels-first slices, at 1 and 2 threads.
    #[test]
    fn passes_from_the_end_write_the_same() {
        use crate::backward::combine_unchecked;
        use crate::forward_eval::normalize_unchecked;
        use crate::layout::Layout;
        for (layout, shape) in [(Layout::Nc, &[600usize, 1000][..]), (Layout::Nhwc, &[3, 70, 70, 48]), (Layout::Nchw, &[8, 16, 60, 60])] {
            let d = Dims::new(layout, shape).unwrap();
            let c = d.channels;
            let x: Vec<f32> = (0..d.len()).map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0).collect();
            let dy: Vec<f32> = (0..d.len()).map(|i| ((i * 104_729) % 997) as f32 * 0.01 - 5.0).collect();
            let coef = |parts: usize| -> Vec<f32> { (0..parts * c).map(|i| ((i * 31) % 17) as f32 * 0.25 - 2.0).collect() };
            type Pass<'a> = Box<dyn Fn(&mut [f32], bool) + Sync + 'a>;
            let passes: [(&str, Pass); 3] = [
                ("normalising", Box::new(|y, back| normalize_unchecked(&x, d, &coef(3), None, y, back, crate::simd::streams(d)))),
                ("dx, batch statistics", Box::new(|o, back| combine_unchecked(&x, &dy, d, &coef(4), None, o, back))),
                ("dx, running statistics", Box::new(|o, back| combine_unchecked(&x, &dy, d, &coef(1), None, o, back))),
            ];
            for (name, pass) in &passes {
                for threads in [1, 2] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let (mut front, mut back) = (vec![f32::NAN; d.len()], vec![f32::NAN; d.len()]);
                    pool.install(|| {
                        pass(&mut front, false);
                        pass(&mut back, true);
                    });
                    let what = format!("{name} pass, {layout} {shape:?}, {threads} threads");
                    assert!(front.iter().all(|v| !v.is_nan()), "{what}: unwritten");
                    assert!(front.iter().zip(&back).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}");
                }
            }
        }
    }

    /// Rows go in blocks of about 128 rows, in two of 64 or more where there are fewer than
    /// 256, and in at most 32; the blocks cover the rows once.
    #[test]
    fn rows_go_in_blocks_of_128_or_two_of_64() {
        let nc = |n: usize, c: usize| Plan::new(Dims::new(crate::layout::Layout::Nc, &[n, c]).unwrap());
        for ((n, c), blocks) in [((256, 1024), 2), ((200, 2000), 2), ((100, 4000), 1), ((1024, 1024), 8), ((4096, 4096), 32), ((60, 100), 1)] {
            let p = nc(n, c);
            assert_eq!(p.blocks, blocks, "{n}x{c}");
            assert!(n < 128 || (0..p.blocks).all(|b| p.range(b, n).len() >= 64), "{n}x{c}: a block under 64 rows");
            assert_eq!((0..p.blocks).map(|b| p.range(b, n).len()).sum::<usize>(), n, "{n}x{c}");
        }
    }

    /// Where a pool has more threads than a reduction over rows has blocks, the column
    /// groups take it, and the statistics and the gradient sums come out bit for bit as on
    /// one thread: groups whose width is not a multiple of the vectors', rows of 8 KB that
    /// prefetch along the row, rows of 512 channels that prefetch rows down (backward).
    #[test]
    fn column_groups_sum_as_the_blocks_do() {
        use crate::backward::grad_sums;
        use crate::layout::Layout;
        use crate::moments::Moments;
        use crate::stats::moments_unchecked;
        use crate::workspace::Workspace;
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        for (shape, threads) in [([256usize, 1024], 16), ([300, 200], 16), ([1000, 1000], 16), ([256, 512], 7), ([2048, 2048], 32)] {
            let d = Dims::new(Layout::Nc, &shape).unwrap();
            let many = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let blocks = Plan::new(d).blocks;
            assert!(many.install(|| column_group_width(d, blocks)).is_some(), "{shape:?}: no column groups at {threads} threads");
            assert!(one.install(|| column_group_width(d, blocks)).is_none(), "{shape:?}: column groups on one thread");
            let x: Vec<f32> = (0..d.len()).map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0).collect();
            let dy: Vec<f32> = (0..d.len()).map(|i| ((i * 104_729) % 997) as f32 * 0.01 - 5.0).collect();
            let mean: Vec<f64> = (0..d.channels).map(|c| c as f64 * 0.01 - 3.0).collect();
            let run = |pool: &rayon::ThreadPool| {
                pool.install(|| {
                    let mut ws = Workspace::new();
                    let mut m = vec![Moments::EMPTY; d.channels];
                    moments_unchecked(&x, d, &mut m, &mut ws);
                    let mut bits: Vec<u64> = m.iter().flat_map(|m| [m.mean.to_bits(), m.var_biased().to_bits()]).collect();
                    let (mut sums, mut shift, mut totals) = (Vec::new(), Vec::new(), Vec::new());
                    bits.extend(grad_sums(&x, &dy, d, &mean, &mut sums, &mut shift, &mut totals).iter().map(|v| v.to_bits()));
                    bits
                })
            };
            assert!(run(&one) == run(&many), "{shape:?}: {threads} threads in column groups differ from one thread");
        }
    }

    /// From 16 MB (4 Mi values) on, and only there.
    #[test]
    fn passes_run_from_the_end_from_16_mb() {
        let nc = |n: usize, c: usize| Dims::new(crate::layout::Layout::Nc, &[n, c]).unwrap();
        assert!(!from_end(nc(1023, 4096)));
        assert!(from_end(nc(1024, 4096)));
        assert!(from_end(Dims::new(crate::layout::Layout::Nhwc, &[32, 56, 56, 64]).unwrap()));
    }
}
