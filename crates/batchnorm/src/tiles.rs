//! Column tiles: channels-last tensors of few rows and many channels (a batch of 64 with
//! 100,000 features), cut into groups of channels, one task per group.
//!
//! In memory order such a tensor is a handful of rows: its reduction cannot be split into
//! blocks of rows (each block's partial sums are as large as the rows themselves), so it
//! would run on one thread. A tile of `w` channels reads `w` contiguous values of every row.
//! The statistics are summed tile by tile, each channel in row order (the same additions as
//! one memory-order block, now in parallel, see `strips`); the
//! backward pass also forms its tile's coefficients and writes dx from the values it just
//! read, while they are in cache. Tiles are independent and each is reduced in row order by
//! one task, so results do not depend on the number of threads.
//!
//! Measured (min of 7): backward, effective GB/s over 3 x bytes, NC 64x100000 6.8-7.5 ->
//! 10.9-11.8 at 1 thread and 11.8-12.4 -> 21.6-23.4 at 2, NC 16x400000 5.4-5.6 -> 7.1-7.4
//! and 7.9-8.1 -> 12.3-13.6; train forward at 2 threads (with the per-channel work in
//! parallel, see `parallel::CHANNEL_TASK`) NC 64x100000 5.0-5.2 -> 3.1-3.7 ms, NC 16x400000
//! 9.9-10.8 -> 5.6-7.2 ms, NC 100x2000 0.093-0.109 -> 0.059-0.066 ms. A fused forward tile
//! (statistics and normalising in one task) was slower at 1 thread (NC 100x2000 0.13-0.15 ->
//! 0.24-0.25 ms); the normalising pass alone tile by tile (so few rows still make many
//! tasks, and each tile's coefficients are read once) is faster (eval, medians of 3
//! interleaved runs, 1 thread: NC 100x2000 0.052 -> 0.038 ms, NC 64x4096 0.085 -> 0.062, NC
//! 64x100000 3.9 -> 3.4; 2 threads: 0.054 -> 0.046, 0.088 -> 0.075, 2.17 -> 2.34 within noise).

use crate::coefficients::fold_backward;
use crate::layout::Dims;
use crate::moments::Moments;
use crate::parallel::{for_each_chunk, for_each_task, SharedMut};
use crate::simd::{multiversion, row_affine_out, row_grad_combine_out, store_fence};
use crate::strips::{strips_acc_grad, strips_acc_shifted, Ahead};

/// Channels-last tensors with fewer rows than this are cut into tiles (with more, blocks
/// of 64-128 rows give the threads work, see `parallel::Plan`). Tiles for 256 rows
/// lost everywhere (NC 256x1024, medians of 10,000 calls, two runs, blocks -> tiles, us, 1
/// / 2 threads: forward 57.9-58.5 -> 65.8-68.0 / 38.2 -> 39.9-41.0, forward + backward
/// 156.6-160.4 -> 187.5-189.9 / 99.9-101.2 -> 113.2-114.8, eval 27.0 -> 33.4-33.7 / 17.4-17.8
/// -> 22.4-22.7; the same with `y` 0, 512 B or 2 KB past `x` modulo 4 KB).
const FEW_ROWS: usize = 128;

/// Tiles per tensor aimed at, within the width limits below.
const TILES: usize = 8;

/// Narrowest tile, in channels (rows of 1 KB): narrower tiles were slower at 1 thread
/// (NC 64x1000 backward 9.0 GB/s with tiles of 64 channels, 13.0 with 256).
const MIN_TILE: usize = 256;

/// Widest tile, in channels (its coefficients live on the stack).
const MAX_TILE: usize = 512;

/// The tile width for a channels-last tensor, or `None` when it is not cut into tiles.
pub(crate) fn tile_width(d: Dims) -> Option<usize> {
    if !d.is_rows() || d.outer >= FEW_ROWS || d.channels < 2 * MIN_TILE || d.len() < crate::parallel::SEQUENTIAL_BELOW {
        return None;
    }
    Some((d.channels / TILES).next_multiple_of(16).clamp(MIN_TILE, MAX_TILE))
}

multiversion! {
    /// Moments of the `m.len()` channels from `j0`, summed about `k` in row order.
    fn tile_moments(x: &[f32], d: Dims, j0: usize, k: &[f64], m: &mut [Moments]) {
        let w = m.len();
        let (mut a1, mut a2) = ([0.0f64; MAX_TILE], [0.0f64; MAX_TILE]);
        strips_acc_shifted(x, d.channels, j0, &k[j0..j0 + w], &mut a1, &mut a2, Ahead::No);
        for (j, mj) in m.iter_mut().enumerate() {
            *mj = Moments::from_shifted_sums(d.outer as f64, k[j0 + j], a1[j], a2[j]);
        }
    }
}

/// The moments of every channel, tile by tile (chunk `i` of `out` is tile `i`); each
/// channel's additions are in row order, those of a single memory-order block.
pub(crate) fn moments_tiled(x: &[f32], d: Dims, w: usize, k: &[f64], out: &mut [Moments]) {
    for_each_chunk(out, w, d.len(), |i, m| tile_moments(x, d, i * w, k, m));
}

multiversion! {
    /// One tile of the normalising pass: `y = (x - ctr) * s + t` on channels `j0..j0 + w` of
    /// every row (`ctr`, `s`, `t` are the tile's).
    fn affine_tile(x: &[f32], y: &SharedMut, d: Dims, j0: usize, ctr: &[f32], s: &[f32], t: &[f32], nt: bool) {
        let (c, w) = (d.channels, ctr.len());
        for r in 0..d.outer {
            let off = r * c + j0;
            // SAFETY: these channels of every row belong to this tile alone.
            let ys = unsafe { y.slice(off, w) };
            row_affine_out(&x[off..off + w], ys, ctr, s, t, nt);
        }
        if nt {
            store_fence();
        }
    }
}

/// The normalising pass tile by tile, `coef = [ctr | s | t]` (C each): in memory order a
/// tensor of few rows is one task, and every row reads all 3 x C coefficients again.
pub(crate) fn normalize_tiled(x: &[f32], d: Dims, w: usize, coef: &[f32], y: &mut [f32], nt: bool) {
    let c = d.channels;
    let yp = SharedMut::new(y);
    let tile = |i: usize| {
        let j = i * w..((i + 1) * w).min(c);
        let k = |p: usize| &coef[p * c + j.start..p * c + j.end];
        affine_tile(x, &yp, d, j.start, k(0), k(1), k(2), nt);
    };
    for_each_task(c.div_ceil(w), d.len(), tile);
}

multiversion! {
    /// One tile of the training backward pass: `part = [sum(dy) (w) | sum(dy * (x - mean)) (w)]`,
    /// then `dx`.
    fn backward_tile(x: &[f32], dy: &[f32], dx: &SharedMut, d: Dims, j0: usize, mean: &[f64], invstd: &[f64], weight: Option<&[f32]>, part: &mut [f64]) {
        let (c, w) = (d.channels, part.len() / 2);
        let (s1, s2) = part.split_at_mut(w);
        strips_acc_grad(x, dy, c, j0, &mean[j0..j0 + w], s1, s2, Ahead::No);
        let mut q = [[0.0f32; MAX_TILE]; 4];
        let m = d.outer as f64;
        for j in 0..w {
            let ch = j0 + j;
            let g = weight.map_or(1.0, |v| v[ch] as f64);
            (q[0][j], q[1][j], q[2][j], q[3][j]) = fold_backward(mean[ch], invstd[ch], g, m, s1[j], s2[j]);
        }
        let nt = crate::simd::streams_backward(d);
        for r in 0..d.outer {
            let off = r * c + j0;
            let rr = off..off + w;
            // SAFETY: these channels of every row belong to this tile alone.
            let o = unsafe { dx.slice(off, w) };
            row_grad_combine_out(&x[rr.clone()], &dy[rr], o, &q[0][..w], &q[1][..w], &q[2][..w], &q[3][..w], nt);
        }
        if nt {
            store_fence();
        }
    }
}

/// The training backward pass tile by tile: writes `dx` and
/// `totals = [sum(dy) (C) | sum(dy * (x - mean)) (C)]`, using `parts` (2 x C) as scratch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_tiled(
    x: &[f32],
    dy: &[f32],
    d: Dims,
    w: usize,
    mean: &[f64],
    invstd: &[f64],
    weight: Option<&[f32]>,
    dx: &mut [f32],
    parts: &mut [f64],
    totals: &mut [f64],
) {
    let c = d.channels;
    let dxp = SharedMut::new(dx);
    for_each_chunk(parts, 2 * w, d.len(), |i, p| {
        backward_tile(x, dy, &dxp, d, i * w, mean, invstd, weight, p);
    });
    for (i, p) in parts.chunks(2 * w).enumerate() {
        let (w_i, j0) = (p.len() / 2, i * w);
        totals[j0..j0 + w_i].copy_from_slice(&p[..w_i]);
        totals[c + j0..c + j0 + w_i].copy_from_slice(&p[w_i..]);
    }
}
