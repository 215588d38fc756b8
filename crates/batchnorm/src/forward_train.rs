//! Training forward: batch statistics, then normalise with them.

use crate::coefficients::{fold_affine, inv_std};
use crate::error::{check_len, BnError, Result};
use crate::forward_eval::{check_params, normalize_with_saved};
use crate::layout::Dims;
use crate::moments::Moments;
use crate::parallel::{for_each_chunk, from_end, Plan, SharedMut};
use crate::saved::{SavedStats, StatsSource};
use crate::simd::{acc_shifted, affine_out, lane_sum, multiversion, store_fence, streams_train, LANES};
use crate::stats::{channel_moments, moments_unchecked, shifts};
use crate::workspace::Workspace;

multiversion! {
    /// Normalises channel `c`; given `next = (channel, shift)`, also reduces that channel in
    /// the same pass, run by run, so its reads from memory overlap the writes of `c` (one
    /// core's memory traffic is limited by how many misses it keeps in flight; a read-only
    /// pass followed by a write-only pass leaves half of that idle). Returns `next`'s
    /// moments, computed exactly as [`channel_moments`] does. `nt`: stream `y`
    /// ([`streams_train`]).
    #[allow(clippy::too_many_arguments)]
    fn affine_channel(x: &[f32], y: &SharedMut, d: Dims, c: usize, ctr: f32, s: f32, t: f32, next: Option<(usize, f64)>, nt: bool) -> Option<Moments> {
        let mut a1 = [0.0f64; LANES];
        let mut a2 = [0.0f64; LANES];
        for n in 0..d.outer {
            if let Some((nc, k)) = next {
                let nx = (n * d.channels + nc) * d.inner;
                acc_shifted(&x[nx..nx + d.inner], k, &mut a1, &mut a2);
            }
            let off = (n * d.channels + c) * d.inner;
            // SAFETY: channel c's slices belong to this task alone.
            let ys = unsafe { y.slice(off, d.inner) };
            affine_out(&x[off..off + d.inner], ys, ctr, s, t, nt);
        }
        if nt {
            store_fence();
        }
        next.map(|(_, k)| Moments::from_shifted_sums(d.per_channel() as f64, k, lane_sum(&a1), lane_sum(&a2)))
    }
}

/// `saved` = (mean, 1 / sqrt(var + eps)) of every channel's batch moments.
fn save_stats(moments: &[Moments], eps: f64, saved: &mut SavedStats) {
    saved.fill(|c| (moments[c].mean, inv_std(moments[c].var_biased(), eps)));
}

/// What a training forward does before its passes, for any element type: checks the lengths
/// (`lens`: of `x` and `y`) and refuses M = 1, sizes `saved` for batch statistics, and for
/// an empty batch writes empty moments and NaN statistics. Returns whether there are values
/// to reduce.
pub(crate) fn begin_train<T>(
    d: Dims,
    lens: (usize, usize),
    weight: Option<&[T]>,
    bias: Option<&[T]>,
    moments: &mut [Moments],
    saved: &mut SavedStats,
) -> Result<bool> {
    check_len("x", d.len(), lens.0)?;
    check_len("y", d.len(), lens.1)?;
    check_len("moments", d.channels, moments.len())?;
    check_params(d.channels, weight, bias)?;
    if d.per_channel() == 1 {
        return Err(BnError::Degenerate { shape: vec![d.outer, d.channels, d.inner] });
    }
    saved.resize(d.channels);
    saved.source = StatsSource::Batch;
    if d.per_channel() == 0 {
        moments.fill(Moments::EMPTY);
        saved.mean.fill(f64::NAN);
        saved.invstd.fill(f64::NAN);
        return Ok(false);
    }
    Ok(true)
}

/// Training forward pass over a batch.
///
/// Per channel c over its M values: `mean = sum(x) / M`, `var = sum((x - mean)^2) / M`
/// (biased), `y = weight * (x - mean) / sqrt(var + eps) + bias`. Writes `y`, the batch
/// `moments` (for the running statistics) and `saved` (mean and inverse std for backward).
///
/// Reads `x` twice and writes `y` once; on channels-first tensors whose batch of one channel
/// fits in cache, each channel is reduced and normalised by the same task so the second
/// read comes from cache. Fails with [`BnError::Degenerate`] when M = 1; an empty batch
/// (M = 0) gives empty moments and touches nothing.
///
/// ```
/// use batchnorm::{forward_train_into, Dims, Layout, Moments, SavedStats, Workspace};
/// let x = [1.0f32, 3.0]; // NC: 2 rows, 1 channel: mean 2, var 1
/// let mut y = [0.0f32; 2];
/// let mut m = [Moments::EMPTY];
/// let mut saved = SavedStats::with_channels(1);
/// forward_train_into(&x, Dims::new(Layout::Nc, &[2, 1]).unwrap(), None, None, 1e-12,
///                    &mut y, &mut m, &mut saved, &mut Workspace::new()).unwrap();
/// assert_eq!(y, [-1.0, 1.0]);
/// assert_eq!(m[0].mean, 2.0);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn forward_train_into(
    x: &[f32],
    d: Dims,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f64,
    y: &mut [f32],
    moments: &mut [Moments],
    saved: &mut SavedStats,
    ws: &mut Workspace,
) -> Result<()> {
    if !begin_train(d, (x.len(), y.len()), weight, bias, moments, saved)? {
        return Ok(());
    }
    let plan = Plan::new(d);
    if plan.fused {
        // Fused: each task owns a group of channels; it reduces one, then normalises it while
        // it is still in cache, reducing the next in the same pass.
        let k = shifts(x, d, &mut ws.shift);
        let yp = SharedMut::new(y);
        let (group, nt) = (plan.group, streams_train(d));
        for_each_chunk(moments, group, d.len(), |i, m| {
            let c0 = i * group;
            let mut next = channel_moments(x, d, c0, k[c0]);
            for j in 0..m.len() {
                let c = c0 + j;
                m[j] = next;
                let is = inv_std(m[j].var_biased(), eps);
                let g = weight.map_or(1.0, |w| w[c] as f64);
                let b = bias.map_or(0.0, |b| b[c] as f64);
                let (ctr, s, t) = fold_affine(m[j].mean, is, g, b);
                let following = (j + 1 < m.len()).then(|| (c + 1, k[c + 1]));
                if let Some(mo) = affine_channel(x, &yp, d, c, ctr, s, t, following, nt) {
                    next = mo;
                }
            }
        });
    } else {
        // Two passes, one after the other. On a cached tensor the first is bound by float64
        // arithmetic (widen, subtract, add, multiply-add: 0.136 ns a value, 0.095 with the
        // widening and one add alone, when this was written; the adds now run on the FMA
        // pipes, see `simd::x86::hidden_one`) and the second by the cache, so overlapping
        // them would pay. Measured at 1 thread on NC 256x1024, medians of 6,000 alternating
        // calls: reducing a strip of 64 channels while normalising the strip before it,
        // constants and sums in registers (the same additions), took 0.051-0.057 ms against
        // 0.063-0.064 for the two passes when `y` started 512 B or 2 KB past `x` modulo 4 KB,
        // but 0.071-0.075 against 0.066-0.067 when `y` and `x` were 4 KB-aligned alike, as
        // page-aligned buffers are: rows of 4 KB make each row's loads alias the stores of
        // the row before. At that placement, prefetching 1-2 rows ahead (0.087-0.093),
        // streaming stores (0.067), loading rows 1-3 ahead of their stores with the constants
        // read from L1 (0.078-0.085), strips of 16 or 32 channels (0.27 / 0.13), normalising
        // from a copy of each strip that the reducing pass writes to a buffer of its own
        // (0.072-0.073) and two cursors over column parts of 128-512 channels (0.071-0.088)
        // did not help. One fused per-channel loop for the moments, saved statistics and
        // constants saved 0.5%. (The two passes have taken 0.062 ms at that placement since
        // their constants are placed away from `x` and `y`: see `workspace::placed`.)
        //
        // Nor does keeping a group of channels in L3 between the passes pay on a tensor too
        // large for it (the forward and the backward alike). On the passes' skeleton over NC
        // 4096x4096 (a plain read, then a read with streamed writes; 1 thread, medians of 9,
        // 3 alternating runs each with 4 KB and 2 MB pages), groups of 256 to 1024 channels
        // (slices of 4-16 MB, each normalised right after it is read) took 5.6-8.8 ms
        // against 5.7-6.9 for two whole passes (the best, 256 channels asked 8 rows ahead,
        // 5.6-6.6), the backward's 10.7-16.3 against 10.1-12.0. The second pass is bound by
        // its writes: 64 MB of streamed writes alone take 2.5 ms at 1 or 2 threads, and an
        // L3-resident 8 MB copied with them runs at that rate (27 GB/s), but a group's rows,
        // one page each, were copied right after their read at 10-17 GB/s (20-26 with 2 MB
        // pages). At 2 threads: 4.8-6.1 ms against 4.9-5.2, the backward's 8.2-11.5 against
        // 8.7-8.9.
        //
        // Nor did one parallel region for both passes pay at 2 threads (rows that fit in
        // the caches): blocks of rows reduced, a barrier, the constants made (by channel
        // ranges, then a second barrier; or by every worker for itself), then each worker
        // normalising the rows it reduced, the same share of the tensor on the same thread
        // call after call, items claimed from per-share counters so that nothing waited on a
        // worker that had not started. Bit for bit the same results; NC 256x1024 forward
        // (medians of 20,000 calls, alternating with the two regions): 37-38 against 39-41 us
        // in quiet spells, 65-70 against 60-62 in spells of slow traffic between the cores
        // (see `parallel::SEQUENTIAL_BELOW`): with the partial sums of a block written by one
        // core and read by the other, each call moved more lines between them than the two
        // regions did. Constants made by every worker for itself: 42 against 38-40, 72-79
        // against 61-63. Nor did column groups, which pass nothing between the threads (each
        // task summing its columns block by block in block order, bit for bit the same,
        // then making their constants and writing their outputs): NC 256x1024 at 2
        // threads 76-82 us with 2 groups, 51 with 4, 49 with 8, against 40-43; one thread
        // running 2 groups took 73 us against 59-60 (each row read in halves 2 KB apart).
        // The statistics alone run in column groups where the pool has more threads than
        // the shape has blocks of rows (`parallel::column_group_width`).
        moments_unchecked(x, d, moments, ws);
        save_stats(moments, eps, saved);
        normalize_with_saved(x, d, weight, bias, saved, y, ws, from_end(d), streams_train(d));
        return Ok(());
    }
    save_stats(moments, eps, saved);
    Ok(())
}
