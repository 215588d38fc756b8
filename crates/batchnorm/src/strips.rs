//! Reductions over rows (channels-last tensors) with the accumulators held in registers.
//!
//! Reduced a row at a time, every value of a row costs a load and a store of each of its
//! channel's two float64 accumulators: the loop is bound by the stores, not by memory. Here a
//! strip of 16 channels (8 at the edge; 32, then 16 and 8, with AVX-512) is summed down a
//! block of 8 rows (16 for the statistics of rows of up to 256 channels with AVX-512) with
//! its accumulators in registers, then the next strip of the same rows, which are in L1 by
//! then.
//! Each channel still adds its rows in row order, exactly as a row at a time, so the
//! results are bitwise those of [`strip_acc_shifted_1`] and [`strip_acc_grad_1`] (which the
//! non-AVX2 build runs).
//!
//! Measured (1 thread, statistics alone, best of 15, `examples/probe`-style timing of the
//! two loops): rows of 256 channels (NHWC 64x14x14x256) 0.77 -> 0.49 ms, of 64 channels
//! (NHWC 32x56x56x64; four rows at a time before) 1.22-1.37 -> 0.96-1.05 ms, of 4096 (NC
//! 4096x4096) 6.3-7.5 -> 3.2-3.9 ms; float64 accumulation of L1-resident data runs at
//! 0.136 ns a value on this machine (256-bit), so the first two are within 1.3x of the
//! arithmetic itself. Blocks of 4 or 16 rows were no better for any of them then (16 are now,
//! see below), 32 and more slower for wide rows (16 KB rows: every row of a block is another
//! page).
//!
//! Where the CPU has AVX-512 the strips are 32 channels wide (then 16, then 8) in 512-bit
//! vectors (the statistics' since in 256-bit ones, see below), and the squares and cross
//! products are added with fused multiply-adds (as every other path does, scalar included,
//! so the results stay bitwise alike). The float32 to float64 widening is what bounds these
//! loops: 256-bit widening runs at one vector of 4 every 2 cycles here whatever else the
//! loop does (fused multiply-adds alone, or a float32 subtraction before the widening,
//! gained nothing), 512-bit widening does 8 in about 3.
//! Measured on L1-resident data (262,144 values, medians of 31): 35.5 -> 28.0 us, i.e.
//! 0.135 -> 0.107 ns a value (512-bit without fused multiply-adds: 38.2 us, bound by the
//! adds); the moments alone, medians of 5 interleaved runs, 1 thread: NC 256x1024 0.040 ->
//! 0.032 ms, NHWC 64x14x14x256 0.49 -> 0.38, NHWC 32x56x56x64 1.11 -> 0.86, NC 4096x4096
//! 3.50 -> 3.23; 2 threads: NHWC 32x56x56x64 0.59 -> 0.43. The sums of `x - k` and of `dy`
//! add as `fma(d, one, s)` (bit for bit an add) with a 1.0 the compiler cannot fold, which
//! moves those adds to the multiply-add pipes, away from the widening (see
//! `simd::x86::hidden_one`): in L2 at 1 thread the statistics of NHWC 4x14x14x256 0.024 ->
//! 0.022 ms and their gradient sums 0.034 -> 0.032, NHWC 2x28x28x64 0.012 -> 0.011 and
//! 0.0159 -> 0.0148 (the strips gain less than the channels-first runs did: their loads and
//! stores of the sums bound them too).
//!
//! The statistics' strips later moved to 256-bit vectors with AVX-512's 32 registers (eight
//! vectors for 32 channels; with AVX2's 16 they spill): once the adds ran on the
//! multiply-add pipes, 512-bit vectors, which this machine (Zen 4) runs as two halves, no
//! longer paid. On L1-resident rows of 64 channels (a standalone probe, medians of 301) the
//! loop runs at 0.072 ns a value against 0.098 in four 512-bit vectors. Blocks of 16 rows for
//! rows of up to 256 channels (a strip's block 4-16 KB) halve the loads and stores of the
//! sums per value; wider rows keep 8 (at 16 the statistics of NC 4096x4096 ran at 22 GB/s
//! against 25-27, those of NC 16384x512, which ask for rows 16 further down, at 30-34
//! against 35-39). Measured (`examples/shapes`, moments alone, 1 thread, 3 alternating runs,
//! GB/s, 512-bit in blocks of 8 -> 256-bit in blocks of 16): NHWC 2x28x28x64 (in L2)
//! 37.1-37.5 -> 41.7-43.5, NHWC 4x14x14x256 34.5-36.3 -> 38.1-40.0, NHWC 32x56x56x64
//! 25.7-34.6 -> 34.2-38.9, NHWC 64x14x14x256 36.5-38.1 -> 40.7-43.2, NC 2048x128 33.1-35.2 ->
//! 36.6-37.2, NHWC 8x56x56x256 32.7-34.4 -> 38.2-40.8; rows of 512 channels and more, in
//! blocks of 8 either way, within noise (NC 256x1024 33.9-35.6 -> 35.2-35.6, NC 4096x4096
//! 24.9-27.4 -> 25.0-27.2). The gradient sums keep 512-bit vectors: 256-bit ones were 8-12%
//! faster in L2 (NHWC 2x28x28x64 0.0154-0.0160 -> 0.0139-0.0141 ms, NHWC 4x14x14x256
//! 0.033 -> 0.030) and on NC 4096x4096 (6.27-6.38 -> 6.01-6.05), but NHWC 8x56x56x256, whose
//! rows are asked for 16 rows ahead, took 1.71-2.03 ms against 1.35-1.71 (best of 15, 4
//! alternating runs), and its backward 1.04-1.07x as long. Rows of more than 512 channels
//! (in blocks of 4 rows, see below) since sum in 256-bit vectors:
//! the gradient sums alone at 1 thread, old and new alternating in one process (4 runs,
//! medians of 11), NC 4096x4096 6.18-6.29 -> 5.94-6.17 ms, NC 1024x8192 2.83-2.96 ->
//! 2.72-2.83, NC 2048x2048 1.30-1.39 -> 1.25-1.29, NC 16384x1024 6.09-6.65 -> 6.11-6.52; the
//! backward 0-3% faster; at 2 threads, bound by memory, within 2% either way.
//!
//! With `dy` beside `x` (the backward sums) strips of rows of more than 512 channels go in
//! blocks of 4 rows; rows of 128 to 512 channels need their rows asked for ahead to beat a
//! row at a time once the tensor leaves the cache (see `ahead_grad`).
//!
//! Rows of 2048 channels and more reload their sums from L2 for every strip (see [`ahead`]).
//! Column panels were tried there: each block of rows walked panel by panel (1024 channels,
//! 24 KB of shifts and sums, in L1), each panel down all the block's rows, then the next
//! (each channel's additions still in row order, so bit for bit the same results). Measured
//! on NC 4096x4096 in one process, alternating, medians of 16: the gradient sums alone at 1
//! thread 5.57-5.60 ms against 6.60-6.74 (a plain read of `x` beside `dy`: 5.1-5.5), the
//! backward after a forward 11.5-12.2 against 12.3-13.5 in one probe (3 alternating runs)
//! and no faster in another (11.9-13.2 against 11.9-13.0); but at 2 threads, where the two
//! cores share the memory bus, slower with every prefetch tried (gradient sums 4.4-5.0 ms
//! against 3.8-4.2, backward 8.6-9.2 against 7.9-8.4), and at 1 thread no better on other
//! wide rows (NC 1024x8192 gradient sums 2.79-3.03 against 2.77-2.92 ms, NC 512x16384
//! 2.68-3.12 against 2.84-2.97, NC 8192x2048 5.65-7.87 against 6.44-7.65). Panels of 512
//! channels gained less (6.44-6.49 ms at 1 thread), rows asked for 16 rows down instead of
//! along the row lost (8.4-9.1), blocks of 2 or 8 rows lost (7.0-7.2), and the statistics
//! lost with any panel (3.15-3.32 ms against 2.79-3.05 at 1 thread). Measured again later
//! (panels of 1024 channels over each block of 128 rows, the same strips; NC 4096x4096, a
//! training-loop probe, 4 alternating runs of medians of 14, strips -> panels): at 1 thread
//! the gradient sums alone 5.74-6.31 -> 4.89-5.64 ms, but the dx pass after them 5.81-6.26
//! -> 6.31-6.67, the backward 11.65-12.46 -> 11.26-11.96 (4% by the median); at 2 threads
//! the gradient sums 3.08-4.41 -> 3.31-4.97, the backward 6.32-9.12 -> 6.63-9.81. A
//! one-thread-only kernel for 4% of a backward was left out. The strips span the whole row.
//!
//! What the sums of wide rows lose to a plain read is those reloaded sums, not their
//! arithmetic or the rows' order. Probes of NC 4096x4096 at 1 thread, each timed after a
//! training forward as a training step runs it (2-5 runs, medians of 8): a plain read of `x`
//! beside `dy` 4.1-5.1 ms; the same read doing the gradient sums' float64 arithmetic into
//! registers (no per-channel sums) 4.4-5.5; these strips' order (blocks of 4 rows, strips
//! of 32 channels, 256-bit) into registers 4.7-5.7, with each strip's sums loaded and
//! stored per block 5.6-6.6 (blocks of 2 rows 7.2-7.9, of 8 rows 7.5-8.1, a row at a time
//! 9.7-10.6); the kernel 5.8-6.4. Column panels over tasks of 128 rows (the sums of 1024
//! channels kept in L1 for all of them) 5.2-5.9 against 5.5-5.6 for the same loop without
//! panels; asking for the next block's rows in order while summing the present one (into
//! L1 or L2) 6.9-15.2 ms. Asking for the sums and shifts of the strip 32-128 channels
//! ahead, into L1, did not help either (gradient sums alone at 1 thread, two runs of
//! medians of 14 in one process: none 6.99 / 6.10 ms, 32 channels ahead 6.50 / 5.97, 64
//! 7.07 / 6.40, 128 7.38 / 6.59; the backward 13.74 / 12.21 against 13.94 / 12.06 at 32).
//!
//! The statistics of rows of 256 channels lose to the floor's read skeleton (four streams
//! with the same float64 arithmetic, `bnlab`'s `floor`) only once the rows come from L3, and
//! what they lose is the strips' order of reads, not the arithmetic. A standalone copy of
//! the 32-channel strips (256-bit, blocks of 16 rows) against the skeleton, 1 thread,
//! medians of 31, ns a value: 64-512 KB (in L2) 0.080-0.087 against 0.081; 1.5 MB
//! 0.103-0.104 and 12.5 MB 0.113-0.119 (from L3) against 0.082. Asking for rows 8-64 rows
//! down (as [`Ahead::Down`] does from 8 MB) or for the next block in memory order (two
//! lines a strip row, into L1 or L2) brings 12.5 MB to 0.095-0.106; blocks of 8 or 32 rows,
//! two rows a step, and narrow strips (8-32 channels in blocks of 2-8 rows: 2-8 streams
//! down the rows, the sums through L1) do no better (0.106-0.161). Rows of 64 channels, 3
//! MB: 0.084-0.090 against 0.081. At 2 threads NHWC 64x14x14x256, whose halves sit in L3
//! between calls, takes its statistics in 0.17 ms against the skeleton's 0.13-0.14; rows
//! asked for 8 rows down 179-181 us there, 16 (as now) 150, 24 151-154, 32 147-163, 48
//! 152-172, 64 156-159, none 221 (two runs in the machine's busy state, 3,000 calls each).
//! Tensors of about 1 MB sit between L2 and L3 and gain nothing from asking ahead either:
//! NC 256x1024 at 1 thread (20,000 calls) 31.3-33.1 us with none, 30.5-38.3 asking 32 to
//! 512 values along the row into L1 or L2; prefetching from 1 MB instead of 8, 30.4-30.6
//! -> 31.3-31.5 us (even at 2 threads).

#[cfg(target_arch = "x86_64")]
use crate::simd::{has_avx2_fma, has_avx512, has_avx512vl};
use crate::simd::{strip_acc_grad_1, strip_acc_shifted_1};

/// Rows per block: a strip's values of a block of rows are one cache line per row.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const BLOCK_ROWS: usize = 8;

/// Rows per block of the statistics' 32-channel strips over rows of at most
/// [`TALL_MAX_CHANNELS`] channels (see the module's notes). Up to 1024 channels instead, on
/// tensors that stay in cache, was within 3% either way (1 thread, 20,000 calls, 3
/// alternating runs: NC 256x1024 statistics 30.6-31.0 -> 29.2-30.2 us, forward 59.3-60.2 ->
/// 58.0-60.4, NC 512x512 statistics 27.6-28.5 -> 28.7-29.5).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const TALL_BLOCK_ROWS: usize = 16;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const TALL_MAX_CHANNELS: usize = 256;

/// Rows wider than this many channels are summed with `dy` in blocks of
/// [`WIDE_BLOCK_ROWS`]: with two inputs a block of 8 wide rows is 16 pages.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const WIDE: usize = 512;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const WIDE_BLOCK_ROWS: usize = 4;

/// How a reduction over rows asks for its data before it loads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ahead {
    /// The hardware prefetchers alone.
    No,
    /// [`ALONG`] values further along the same row, into L2 (rows of 2048 channels and more).
    Along,
    /// Each strip's rows [`DOWN`] rows further down, into L2 (rows of 65 to 2047 channels,
    /// see [`ahead`] and [`ahead_grad`]).
    Down,
}

/// How far down [`Ahead::Down`] asks for data: 16 rows (0.3-8 KB a row, so 5-128 KB ahead).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const DOWN: usize = 16;

/// How far ahead along a row [`Ahead::Along`] asks for data: 512 values, 2 KB.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const ALONG: usize = 512;

/// How the statistics of a tensor prefetch (tensors of 8 MB and more; the gradient sums:
/// [`ahead_grad`]).
///
/// Rows of more than 64 and fewer than 2048 channels ask for each strip's rows 16 rows
/// further down, into L2 ([`Ahead::Down`], as the gradient sums of rows of 128 to 512
/// channels always did). A strip walks down 8 rows 0.3-8 KB apart, an order the hardware
/// prefetchers do not follow, so whatever is not in cache arrives at memory latency. They
/// asked for the next block of rows into L1 before (rows of 128 to 512 channels; other
/// widths nothing), which had halved NHWC 8x56x56x256 (1.66 -> 0.87 ms) when it came in but
/// measured 1.7-1.8 ms again since (the 512-bit strips came later). Measured
/// (`examples/shapes`, best of 7, 2 alternating runs, moments alone, 1 thread; next block
/// into L1 or none -> 16 rows down into L2): NC 65536x256 6.04-6.19 -> 2.86-2.87 ms, NHWC
/// 8x56x56x256 1.73-1.78 -> 0.90-0.93, NC 131072x128 6.57-6.60 -> 2.95-3.26, NC 32768x512
/// 4.78-4.91 -> 2.57-2.60, NC 16384x1024 3.65-3.69 -> 2.84-2.87, NHWC 16x56x56x96
/// 1.04-1.21 -> 0.67-0.71; no prefetch at all 6.45-6.71, 2.19-2.40, 3.93-4.20, 5.56-5.90
/// for the first four. Rows of 64 channels lose with it (NHWC 32x56x56x64 1.09-1.10 ->
/// 1.17-1.19: adjacent rows are within the prefetchers' reach), and since the 256-bit
/// strips in blocks of 16 rows also asked into L1 (1 thread, medians of 60, 2 alternating
/// runs): 0.68-0.71 ms with none, 1.13-1.15 with 16 rows down into L2, into L1 0.98-1.09 at
/// 4 rows down, 1.06-1.09 at 8, 0.82-1.06 at 16, 0.70-0.77 at 32.
///
/// Rows of 2048 channels and more ask for the line 2 KB further along the row they are
/// reading, into L2 only (past the row's end, the same row of the next block of rows:
/// `Prefetch::at`). Their per-channel shifts and sums (24 bytes a channel) no longer
/// fit in L1 beside the rows, so every strip reloads them from L2 between its loads of `x`,
/// and the prefetchers alone leave the pass 1.3-1.5x a plain read of the same rows (faking
/// L1-resident sums gained 0.3-0.5 ms of NC 4096x4096's 4.0-4.2). Measured at 1 thread in
/// one process, alternating, medians of 21 calls, moments alone: NC 4096x4096 3.98-4.28 ->
/// 3.43-3.68 ms (1 KB ahead 3.53-3.72, 4 KB 3.60-3.72; into L1 instead 5.17-5.49, which
/// evicts the sums), NC 8192x2048 4.02 -> 3.51, NC 2048x8192 4.13-4.21 -> 3.58. Rows down
/// did as well there (NC 4096x4096 2.85-2.91 against 2.85-2.88 ms, NC 8192x2048 2.89-2.93
/// against 3.05-3.18).
pub(crate) fn ahead(d: crate::layout::Dims) -> Ahead {
    if !d.is_rows() || d.len() * 4 < PREFETCH_MIN_BYTES {
        Ahead::No
    } else if d.channels >= ALONG_MIN_CHANNELS {
        Ahead::Along
    } else if d.channels > DOWN_ABOVE_CHANNELS {
        Ahead::Down
    } else {
        Ahead::No
    }
}

/// How the gradient sums of a tensor (which read `x` and `dy`) prefetch: as [`ahead`] says
/// (along wide rows, both inputs: NC 4096x4096 backward, with the streamed pass's prefetch
/// (`simd::NT_AHEAD`), 15.3-16.8 -> 14.5-16.3 ms at 1 thread, 5 runs), and rows of 128 to
/// 512 channels at any size, each strip's rows 16 rows further down into L2
/// ([`Ahead::Down`]).
///
/// Those rows were summed one row at a time, two streams the hardware prefetchers follow:
/// strips of 8 rows of both inputs (16 streams) lost to it once the tensor left the cache
/// (NHWC 64x14x14x256 gradient sums 1.27-2.75 ms against 0.93-1.56 at 1 thread, with no
/// prefetch, the next block into L1, or 2 KB along the row), although in cache they win (the
/// one-row loop is bound by widening 4 values at a time and by loading and storing its sums:
/// 400 KB 0.019 against 0.030 ms, 1.6 MB 0.073 against 0.113). With the rows 16 further down
/// asked into L2 they win at every size, in the machine's quiet state and in its busy one
/// (where L2-resident loops ran 1.5x slower: 400 KB a row at a time 0.043-0.044 ms against
/// 0.028-0.030). Measured in one process, alternating, medians of 31, 1 / 2 threads; quiet:
/// gradient sums alone NHWC 64x14x14x256 0.99-1.03 -> 0.63-0.71 ms / 0.51-0.53 -> 0.34-0.36,
/// 128x7x7x512 1.16-1.17 -> 0.81-0.86 / 0.56-0.69 -> 0.40-0.53, 16x56x56x128 2.58-2.59 ->
/// 1.95-2.03 / 1.44-1.58 -> 1.15-1.33; the whole backward 1.92-2.31 -> 1.55-1.89 / 0.93-1.12 -> 0.75-0.90,
/// 2.22-2.26 -> 1.88-1.94 / 0.98-1.35 -> 0.81-1.16, 5.01-5.07 -> 4.19-4.33 / 2.93-3.40 ->
/// 2.58-3.10; NC 8192x384 backward 1.97 -> 1.66; forward + backward as a training loop calls
/// it, NHWC 64x14x14x256 3.09-3.38 -> 2.77-3.14 / 1.81-1.86 -> 1.70-1.76. Between states
/// (three runs): the whole backward NHWC 64x14x14x256 1.80-1.94 -> 1.46-1.64 / 0.74-0.97 ->
/// 0.70-0.97, 128x7x7x512 2.22-2.38 -> 1.79-1.92 / 0.97-1.15 -> 0.89-1.02, 16x56x56x128
/// 4.54-4.65 -> 4.12-4.49 / 2.52-2.66 -> 2.28-2.52. 8, 32 and 64 rows down did as well as
/// 16; 16 rows down into L1 took 0.3-0.5 ms more than into L2. At 4 MB (NHWC 20x14x14x256) the
/// strips gain as much with or without it (0.35 against 0.46 ms), at 8 MB only with it (0.95
/// against 1.14-1.18; 1.24-1.28 without).
pub(crate) fn ahead_grad(d: crate::layout::Dims) -> Ahead {
    if d.is_rows() && ROWS_AHEAD_CHANNELS.contains(&d.channels) {
        return Ahead::Down;
    }
    ahead(d)
}

/// Tensors from this size prefetch ahead (see [`ahead`]).
const PREFETCH_MIN_BYTES: usize = 8 << 20;

/// The gradient sums of rows of these many channels ask for rows further down at any size.
const ROWS_AHEAD_CHANNELS: std::ops::RangeInclusive<usize> = 128..=512;

/// Rows of more than this many channels (and fewer than [`ALONG_MIN_CHANNELS`]) ask for
/// rows further down from 8 MB (see [`ahead`]).
const DOWN_ABOVE_CHANNELS: usize = 64;

/// Rows from this many channels prefetch along the row (see [`ahead`]).
const ALONG_MIN_CHANNELS: usize = 2048;

/// Channels `j0..j0 + k.len()` of rows `c` wide: `a1[j] += x - k[j]`, `a2[j] += (x - k[j])^2`
/// over every row, each channel's additions in row order, prefetching as `ahead` says.
#[inline(always)]
pub(crate) fn strips_acc_shifted(x: &[f32], c: usize, j0: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64], ahead: Ahead) {
    let w = k.len();
    assert!(j0 + w <= c && a1.len() >= w && a2.len() >= w, "strip out of its rows");
    // Only the vector strips (x86-64) prefetch or leave channels to the scalar loop.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ahead;
    #[cfg(target_arch = "x86_64")]
    let pf = Prefetch::new(ahead, c);
    #[cfg(target_arch = "x86_64")]
    if has_avx512vl() {
        // SAFETY: the CPU has AVX-512F and VL, AVX2 and FMA; the strips stay within channels
        // j0..j0 + w of whole rows (prefetches may point past them: they never fault).
        done = unsafe { x86::acc_shifted_32(x, c, j0, k, a1, a2, pf) };
    } else if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; as above.
        done = unsafe { x86::acc_shifted(x, c, j0, k, a1, a2, pf) };
    }
    strip_acc_shifted_1(x, c, j0 + done, &k[done..], &mut a1[done..w], &mut a2[done..w]);
}

/// Channels `j0..j0 + k.len()` of rows `c` wide: `a1[j] += dy`, `a2[j] += dy * (x - k[j])`
/// over every row, each channel's additions in row order, prefetching both inputs as
/// `ahead` says.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn strips_acc_grad(x: &[f32], dy: &[f32], c: usize, j0: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64], ahead: Ahead) {
    let w = k.len();
    assert!(j0 + w <= c && a1.len() >= w && a2.len() >= w && dy.len() >= x.len(), "strip out of its rows");
    // Only the vector strips (x86-64) prefetch or leave channels to the scalar loop.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ahead;
    #[cfg(target_arch = "x86_64")]
    let pf = Prefetch::new(ahead, c);
    #[cfg(target_arch = "x86_64")]
    if c > WIDE && has_avx512vl() {
        // SAFETY: the CPU has AVX-512F and VL, AVX2 and FMA; as above, for both inputs.
        done = unsafe { x86::acc_grad_32(x, dy, c, j0, k, a1, a2, pf) };
    } else if has_avx512() {
        // SAFETY: the CPU has AVX-512F, AVX2 and FMA; as above, for both inputs.
        done = unsafe { x86::acc_grad_512(x, dy, c, j0, k, a1, a2, pf) };
    } else if has_avx2_fma() {
        // SAFETY: as above, for both inputs.
        done = unsafe { x86::acc_grad(x, dy, c, j0, k, a1, a2, pf) };
    }
    strip_acc_grad_1(x, dy, c, j0 + done, &k[done..], &mut a1[done..w], &mut a2[done..w]);
}

/// [`Ahead`] resolved for rows `c` wide: prefetch `offset` values past each load into L2
/// (none when 0).
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
struct Prefetch {
    offset: usize,
    along: bool,
}

#[cfg(target_arch = "x86_64")]
impl Prefetch {
    fn new(ahead: Ahead, c: usize) -> Prefetch {
        match ahead {
            Ahead::No => Prefetch { offset: 0, along: false },
            Ahead::Along => Prefetch { offset: ALONG, along: true },
            Ahead::Down => Prefetch { offset: DOWN * c, along: false },
        }
    }

    /// The prefetch of a strip from column `col` in blocks of `block` rows: asked along a
    /// row past its end, it asks for the same row of the next block rather than the row
    /// below, which the block itself is reading, so that each row's stream of prefetches
    /// runs on into the next block's instead of leaving its first 2 KB to arrive at memory
    /// latency. Measured in one process, alternating pairs of calls, medians of 30, ms,
    /// the row below -> the next block's row (1 thread, two runs): NC 4096x4096 statistics
    /// 3.12 / 2.94 -> 2.91 / 2.82, gradient sums 6.83 / 7.35 -> 6.59 / 6.95, forward +
    /// backward 21.1 / 21.1 -> 21.4 / 20.7; NC 8192x2048 statistics 3.33 / 2.98 -> 2.94 /
    /// 2.52, gradient sums 7.44 / 7.81 -> 7.08 / 6.96, forward + backward 22.0 / 21.0 -> 21.8
    /// / 19.8; 2 threads: NC 4096x4096 statistics 2.53 / 1.71 -> 2.51 / 1.58, gradient sums
    /// 5.03 / 3.96 -> 4.89 / 3.78, forward + backward 16.0 / 11.4 -> 15.9 / 11.1; NC
    /// 8192x2048 2.53 / 3.11 -> 2.37 / 2.73, 5.20 / 6.13 -> 4.96 / 5.34, 16.0 / 18.5 -> 15.7
    /// / 17.9.
    /// With it the other heights and distances were measured again (NC 4096x4096, the same
    /// way, ms, the kept ones first): blocks of 8 rows for the gradient sums and 16 for the
    /// statistics lost (forward + backward at 1 thread 21.3 / 21.3 against 22.4 / 23.4,
    /// statistics 3.14 / 2.88 against 3.73 / 3.47; at 2 threads 14.7 / 16.6 against 15.9 /
    /// 17.3), 2 and 4 lost (20.9 / 20.4 against 22.0 / 22.2 at 1 thread, gradient sums 7.02 /
    /// 7.18 against 7.91 / 8.40), 1,024 values along instead of 512 came out even (24.8 /
    /// 22.5 against 25.0 / 22.1 at 1 thread, 15.4 against 15.1 at 2) and 256 lost (20.9 /
    /// 21.9 against 21.7 / 22.1, statistics 2.88 against 3.24).
    #[inline(always)]
    fn at(self, col: usize, c: usize, block: usize) -> Prefetch {
        if self.along && col + self.offset >= c {
            Prefetch { offset: self.offset + (block - 1) * c, along: true }
        } else {
            self
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Prefetch, BLOCK_ROWS, TALL_BLOCK_ROWS, TALL_MAX_CHANNELS, WIDE, WIDE_BLOCK_ROWS};
    use std::arch::x86_64::*;

    /// The float64 vector operations of a strip, in 256-bit (AVX2) and 512-bit (AVX-512)
    /// registers: one strip body serves both, so both add the same values in the same order.
    /// Only called from functions compiled with the matching target features.
    trait F64s: Copy {
        /// Float64 lanes per vector.
        const N: usize;
        unsafe fn load(p: *const f64) -> Self;
        unsafe fn store(self, p: *mut f64);
        /// `N` float32 values from `p`, widened.
        unsafe fn widen(p: *const f32) -> Self;
        unsafe fn sub(self, o: Self) -> Self;
        /// `self * b + c`, rounded once.
        unsafe fn fmadd(self, b: Self, c: Self) -> Self;
        /// `v` in every lane.
        unsafe fn splat(v: f64) -> Self;
        /// 1.0 in every lane, hidden from the compiler, which would fold `fma(d, one, s)` with
        /// a literal 1.0 back into an add (see the module's notes).
        #[inline(always)]
        unsafe fn hidden_one() -> Self {
            Self::splat(std::hint::black_box(1.0))
        }
    }

    impl F64s for __m256d {
        const N: usize = 4;
        #[inline(always)]
        unsafe fn load(p: *const f64) -> Self {
            _mm256_loadu_pd(p)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f64) {
            _mm256_storeu_pd(p, self)
        }
        #[inline(always)]
        unsafe fn widen(p: *const f32) -> Self {
            _mm256_cvtps_pd(_mm_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            _mm256_sub_pd(self, o)
        }
        #[inline(always)]
        unsafe fn fmadd(self, b: Self, c: Self) -> Self {
            _mm256_fmadd_pd(self, b, c)
        }
        #[inline(always)]
        unsafe fn splat(v: f64) -> Self {
            _mm256_set1_pd(v)
        }
    }

    impl F64s for __m512d {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn load(p: *const f64) -> Self {
            _mm512_loadu_pd(p)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f64) {
            _mm512_storeu_pd(p, self)
        }
        #[inline(always)]
        unsafe fn widen(p: *const f32) -> Self {
            _mm512_cvtps_pd(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            _mm512_sub_pd(self, o)
        }
        #[inline(always)]
        unsafe fn fmadd(self, b: Self, c: Self) -> Self {
            _mm512_fmadd_pd(self, b, c)
        }
        #[inline(always)]
        unsafe fn splat(v: f64) -> Self {
            _mm512_set1_pd(v)
        }
    }

    /// `V` vectors from `p` (`V * T::N` values).
    #[inline(always)]
    unsafe fn load<T: F64s, const V: usize>(p: *const f64) -> [T; V] {
        std::array::from_fn(|i| T::load(p.add(T::N * i)))
    }

    #[inline(always)]
    unsafe fn store<T: F64s, const V: usize>(p: *mut f64, v: [T; V]) {
        for (i, r) in v.iter().enumerate() {
            r.store(p.add(T::N * i));
        }
    }

    #[inline(always)]
    unsafe fn widen<T: F64s, const V: usize>(p: *const f32) -> [T; V] {
        std::array::from_fn(|i| T::widen(p.add(T::N * i)))
    }

    /// Asks for the `n` values `pf.offset` past `p`, as `pf` says.
    #[inline(always)]
    fn prefetch(p: *const f32, n: usize, pf: Prefetch) {
        if pf.offset > 0 {
            crate::simd::prefetch_values(p.wrapping_add(pf.offset), n);
        }
    }

    /// One strip of `V * T::N` channels from `j` over rows `r0..r1`: `a1 += x - k`,
    /// `a2 += (x - k)^2`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn strip_shifted<T: F64s, const V: usize>(
        x: *const f32,
        c: usize,
        rows: (usize, usize),
        j: usize,
        k: *const f64,
        a1: *mut f64,
        a2: *mut f64,
        pf: Prefetch,
        one: T,
    ) {
        let kv = load::<T, V>(k.add(j));
        let (mut s1, mut s2) = (load::<T, V>(a1.add(j)), load::<T, V>(a2.add(j)));
        let mut p = x.add(rows.0 * c + j);
        for _ in rows.0..rows.1 {
            prefetch(p, V * T::N, pf);
            let v = widen::<T, V>(p);
            for i in 0..V {
                let d = v[i].sub(kv[i]);
                s1[i] = d.fmadd(one, s1[i]);
                s2[i] = d.fmadd(d, s2[i]);
            }
            p = p.add(c);
        }
        store(a1.add(j), s1);
        store(a2.add(j), s2);
    }

    /// One strip of the backward sums: `a1 += dy`, `a2 += dy * (x - k)`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn strip_grad<T: F64s, const V: usize>(
        x: *const f32,
        dy: *const f32,
        c: usize,
        rows: (usize, usize),
        j: usize,
        k: *const f64,
        a1: *mut f64,
        a2: *mut f64,
        pf: Prefetch,
        one: T,
    ) {
        let kv = load::<T, V>(k.add(j));
        let (mut s1, mut s2) = (load::<T, V>(a1.add(j)), load::<T, V>(a2.add(j)));
        let (mut p, mut q) = (x.add(rows.0 * c + j), dy.add(rows.0 * c + j));
        for _ in rows.0..rows.1 {
            prefetch(p, V * T::N, pf);
            prefetch(q, V * T::N, pf);
            let (v, g) = (widen::<T, V>(p), widen::<T, V>(q));
            for i in 0..V {
                s1[i] = g[i].fmadd(one, s1[i]);
                s2[i] = g[i].fmadd(v[i].sub(kv[i]), s2[i]);
            }
            p = p.add(c);
            q = q.add(c);
        }
        store(a1.add(j), s1);
        store(a2.add(j), s2);
    }

    /// Calls `f(rows, j, width)` for every block of rows and every whole strip of channels
    /// `0..w` (relative to the caller's first channel): strips `wide` channels wide, then
    /// at most one strip of each half width down to 8. Returns the channels covered.
    #[inline(always)]
    fn blocks(rows: usize, w: usize, block: usize, wide: usize, mut f: impl FnMut((usize, usize), usize, usize)) -> usize {
        let w8 = w / 8 * 8;
        for r0 in (0..rows).step_by(block) {
            let r = (r0, (r0 + block).min(rows));
            let (mut j, mut s) = (0, wide);
            while s >= 8 {
                while j + s <= w8 {
                    f(r, j, s);
                    j += s;
                }
                s /= 2;
            }
        }
        w8
    }

    /// The whole 8-channel strips of [`super::strips_acc_shifted`]; returns how many channels
    /// they covered.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn acc_shifted(x: &[f32], c: usize, j0: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64], pf: Prefetch) -> usize {
        let (xp, kp, p1, p2) = (x.as_ptr().wrapping_add(j0), k.as_ptr(), a1.as_mut_ptr(), a2.as_mut_ptr());
        let one = __m256d::hidden_one();
        blocks(x.len() / c, k.len(), BLOCK_ROWS, 16, |r, j, s| {
            let pf = pf.at(j0 + j, c, BLOCK_ROWS);
            if s == 16 {
                strip_shifted::<__m256d, 4>(xp, c, r, j, kp, p1, p2, pf, one)
            } else {
                strip_shifted::<__m256d, 2>(xp, c, r, j, kp, p1, p2, pf, one)
            }
        })
    }

    /// [`acc_shifted`] with AVX-512's 32 registers: strips of 32 channels (then 16, then 8)
    /// in 256-bit vectors, in blocks of 16 rows where the rows are at most 256 channels wide.
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    pub(super) unsafe fn acc_shifted_32(x: &[f32], c: usize, j0: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64], pf: Prefetch) -> usize {
        let (xp, kp, p1, p2) = (x.as_ptr().wrapping_add(j0), k.as_ptr(), a1.as_mut_ptr(), a2.as_mut_ptr());
        let one = __m256d::hidden_one();
        let block = if c <= TALL_MAX_CHANNELS { TALL_BLOCK_ROWS } else { BLOCK_ROWS };
        blocks(x.len() / c, k.len(), block, 32, |r, j, s| match (s, pf.at(j0 + j, c, block)) {
            (32, pf) => strip_shifted::<__m256d, 8>(xp, c, r, j, kp, p1, p2, pf, one),
            (16, pf) => strip_shifted::<__m256d, 4>(xp, c, r, j, kp, p1, p2, pf, one),
            (_, pf) => strip_shifted::<__m256d, 2>(xp, c, r, j, kp, p1, p2, pf, one),
        })
    }

    /// The whole 8-channel strips of [`super::strips_acc_grad`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn acc_grad(x: &[f32], dy: &[f32], c: usize, j0: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64], pf: Prefetch) -> usize {
        let (xp, gp, kp, p1, p2) = (x.as_ptr().wrapping_add(j0), dy.as_ptr().wrapping_add(j0), k.as_ptr(), a1.as_mut_ptr(), a2.as_mut_ptr());
        let block = if c > WIDE { WIDE_BLOCK_ROWS } else { BLOCK_ROWS };
        let one = __m256d::hidden_one();
        blocks(x.len() / c, k.len(), block, 16, |r, j, s| {
            let pf = pf.at(j0 + j, c, block);
            if s == 16 {
                strip_grad::<__m256d, 4>(xp, gp, c, r, j, kp, p1, p2, pf, one)
            } else {
                strip_grad::<__m256d, 2>(xp, gp, c, r, j, kp, p1, p2, pf, one)
            }
        })
    }

    /// [`acc_grad`] over rows of more than [`WIDE`] channels with AVX-512's 32 registers:
    /// strips of 32 channels (then 16, then 8) in 256-bit vectors, in blocks of
    /// [`WIDE_BLOCK_ROWS`] rows.
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn acc_grad_32(x: &[f32], dy: &[f32], c: usize, j0: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64], pf: Prefetch) -> usize {
        let (xp, gp, kp, p1, p2) = (x.as_ptr().wrapping_add(j0), dy.as_ptr().wrapping_add(j0), k.as_ptr(), a1.as_mut_ptr(), a2.as_mut_ptr());
        let one = __m256d::hidden_one();
        blocks(x.len() / c, k.len(), WIDE_BLOCK_ROWS, 32, |r, j, s| match (s, pf.at(j0 + j, c, WIDE_BLOCK_ROWS)) {
            (32, pf) => strip_grad::<__m256d, 8>(xp, gp, c, r, j, kp, p1, p2, pf, one),
            (16, pf) => strip_grad::<__m256d, 4>(xp, gp, c, r, j, kp, p1, p2, pf, one),
            (_, pf) => strip_grad::<__m256d, 2>(xp, gp, c, r, j, kp, p1, p2, pf, one),
        })
    }

    /// [`acc_grad`] in strips of 32 channels (then 16, then 8) with 512-bit vectors.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn acc_grad_512(x: &[f32], dy: &[f32], c: usize, j0: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64], pf: Prefetch) -> usize {
        let (xp, gp, kp, p1, p2) = (x.as_ptr().wrapping_add(j0), dy.as_ptr().wrapping_add(j0), k.as_ptr(), a1.as_mut_ptr(), a2.as_mut_ptr());
        let block = if c > WIDE { WIDE_BLOCK_ROWS } else { BLOCK_ROWS };
        let one = __m512d::hidden_one();
        blocks(x.len() / c, k.len(), block, 32, |r, j, s| match (s, pf.at(j0 + j, c, block)) {
            (32, pf) => strip_grad::<__m512d, 4>(xp, gp, c, r, j, kp, p1, p2, pf, one),
            (16, pf) => strip_grad::<__m512d, 2>(xp, gp, c, r, j, kp, p1, p2, pf, one),
            (_, pf) => strip_grad::<__m512d, 1>(xp, gp, c, r, j, kp, p1, p2, pf, one),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Dims, Layout};

    /// Prefetching follows the rule [`ahead`] documents: by row width, from 8 MB.
    #[test]
    fn prefetch_by_row_width_from_8_mb() {
        let nc = |n, c| Dims::new(Layout::Nc, &[n, c]).unwrap();
        assert_eq!(ahead(nc(4096, 4096)), Ahead::Along);
        assert_eq!(ahead(nc(1024, 2048)), Ahead::Along);
        assert_eq!(ahead(nc(1023, 2048)), Ahead::No, "under 8 MB");
        assert_eq!(ahead(nc(16384, 1024)), Ahead::Down);
        assert_eq!(ahead(nc(16384, 512)), Ahead::Down);
        assert_eq!(ahead(nc(32768, 65)), Ahead::Down);
        assert_eq!(ahead(nc(4095, 512)), Ahead::No, "under 8 MB");
        assert_eq!(ahead(Dims::new(Layout::Nhwc, &[32, 56, 56, 64]).unwrap()), Ahead::No);
        assert_eq!(ahead(Dims::new(Layout::Nchw, &[4, 4096, 32, 32]).unwrap()), Ahead::No, "channels-first");
        assert_eq!(ahead_grad(nc(4096, 4096)), Ahead::Along);
        assert_eq!(ahead_grad(nc(16384, 512)), Ahead::Down);
        assert_eq!(ahead_grad(nc(64, 128)), Ahead::Down, "at any size");
        assert_eq!(ahead_grad(nc(16384, 1024)), Ahead::Down);
        assert_eq!(ahead_grad(nc(1024, 1024)), Ahead::No, "under 8 MB");
        assert_eq!(ahead_grad(Dims::new(Layout::Nhwc, &[32, 56, 56, 64]).unwrap()), Ahead::No);
        assert_eq!(ahead_grad(Dims::new(Layout::Nchw, &[64, 256, 14, 14]).unwrap()), Ahead::No, "channels-first");
    }

    /// Strips add each channel's rows in row order, so they must equal a row at a time bit
    /// for bit, for every mix of 32-, 16- and 8-wide and scalar strips and partial row blocks
    /// (of 8 rows, and of 16 for the statistics of rows of up to 256 channels).
    #[test]
    fn strips_equal_a_row_at_a_time() {
        for (rows, c, j0, w) in [
            (19, 16, 0, 16),
            (8, 24, 0, 24),
            (13, 37, 0, 37),
            (21, 300, 5, 283),
            (3, 1024, 512, 512),
            (0, 64, 0, 64),
            (9, 21, 2, 19),
            (37, 64, 0, 64),
            (40, 256, 0, 256),
            (33, 120, 8, 104),
            (7, 1100, 3, 1093),
        ] {
            let x: Vec<f32> = (0..rows * c).map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0).collect();
            let dy: Vec<f32> = (0..rows * c).map(|i| ((i * 104_729) % 997) as f32 * 0.01 - 5.0).collect();
            let k: Vec<f64> = (0..w).map(|j| j as f64 * 0.5 - 3.0).collect();
            let start: Vec<f64> = (0..w).map(|j| j as f64 * 1e-3).collect();
            for ahead in [Ahead::No, Ahead::Along, Ahead::Down] {
                let (mut a1, mut a2, mut b1, mut b2) = (start.clone(), start.clone(), start.clone(), start.clone());
                strips_acc_shifted(&x, c, j0, &k, &mut a1, &mut a2, ahead);
                strip_acc_shifted_1(&x, c, j0, &k, &mut b1, &mut b2);
                assert_eq!((&a1, &a2), (&b1, &b2), "shifted: {rows} rows of {c}, channels {j0}+{w}, {ahead:?}");
                let (mut a1, mut a2, mut b1, mut b2) = (start.clone(), start.clone(), start.clone(), start.clone());
                strips_acc_grad(&x, &dy, c, j0, &k, &mut a1, &mut a2, ahead);
                strip_acc_grad_1(&x, &dy, c, j0, &k, &mut b1, &mut b2);
                assert_eq!((&a1, &a2), (&b1, &b2), "grad: {rows} rows of {c}, channels {j0}+{w}, {ahead:?}");
            }
        }
    }
}
