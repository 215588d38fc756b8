//! Backward pass: dx, dweight (dgamma) and dbias (dbeta), fused.

use crate::coefficients::{fold_backward, parts};
use crate::error::{check_len, Result};
use crate::forward_eval::check_params;
use crate::interleave::{interleave, interleaves, Interleaved};
use crate::layout::Dims;
use crate::narrow::{period, repeat_parts, split, MAX_PERIOD};
use crate::parallel::{column_group_width, for_each_chunk, for_each_pass_chunk, from_end, sum_blocks, sum_column_groups, Plan, SharedMut};
use crate::saved::{SavedStats, StatsSource};
use crate::simd::{
    acc_grad, constants_skew, grad_combine_out, lane_sum, multiversion, rows_acc_grad, rows_grad_combine_out, rows_per_task, rows_scale, runs_grad, scale,
    store_fence, streams_backward, WIDE_LANES,
};
use crate::strips::strips_acc_grad;
use crate::tiles::{backward_tiled, tile_width};
use crate::workspace::{lined, placed, sized, Workspace};

multiversion! {
    /// `(sum(dy), sum(dy * (x - k)))` of channel c of a channels-first tensor.
    fn channel_grad_sums(x: &[f32], dy: &[f32], d: Dims, c: usize, k: f64) -> (f64, f64) {
        let mut a1 = [0.0f64; WIDE_LANES];
        let mut a2 = [0.0f64; WIDE_LANES];
        for n in 0..d.outer {
            let off = (n * d.channels + c) * d.inner;
            let r = off..off + d.inner;
            acc_grad(&x[r.clone()], &dy[r], k, &mut a1, &mut a2);
        }
        (lane_sum(&a1), lane_sum(&a2))
    }
}

multiversion! {
    /// `[sum(dy) (C) | sum(dy * (x - k)) (C)]` over a block of whole outer indices, in
    /// memory order.
    fn block_grad_sums(x: &[f32], dy: &[f32], d: Dims, k: &[f64], acc: &mut [f64]) {
        let c = d.channels;
        let (a1, a2) = acc.split_at_mut(c);
        if d.is_rows() {
            rows_acc_grad(x, dy, k, a1, a2, crate::strips::ahead_grad(d));
            return;
        }
        runs_grad(x, dy, d.inner, k, a1, a2);
    }
}

multiversion! {
    /// dx of channel `c`; given `next = (channel, shift)`, also sums that channel in the same
    /// pass, run by run, so its reads overlap the writes of `c`; returns what
    /// [`channel_grad_sums`] returns for it. `nt`: stream dx ([`streams_backward`]).
    #[allow(clippy::too_many_arguments)]
    fn combine_channel(x: &[f32], dy: &[f32], dx: &SharedMut, d: Dims, c: usize, q: (f32, f32, f32, f32), next: Option<(usize, f64)>, nt: bool) -> Option<(f64, f64)> {
        let mut a1 = [0.0f64; WIDE_LANES];
        let mut a2 = [0.0f64; WIDE_LANES];
        for n in 0..d.outer {
            if let Some((nc, k)) = next {
                let nx = (n * d.channels + nc) * d.inner;
                let r = nx..nx + d.inner;
                acc_grad(&x[r.clone()], &dy[r], k, &mut a1, &mut a2);
            }
            let off = (n * d.channels + c) * d.inner;
            let r = off..off + d.inner;
            // SAFETY: channel c's slices belong to this task alone.
            let o = unsafe { dx.slice(off, d.inner) };
            grad_combine_out(&x[r.clone()], &dy[r], o, q, nt);
        }
        if nt {
            store_fence();
        }
        next.map(|_| (lane_sum(&a1), lane_sum(&a2)))
    }
}

multiversion! {
    /// Channels-first slices `first..` of dx: `dx = dy * a + (x - ctr) * b + d`, or
    /// `dx = dy * a` when `coef` holds only `a`.
    fn combine_slices(x: &[f32], dy: &[f32], dx: &mut [f32], first: usize, d: Dims, coef: &[f32]) {
        let ch = d.channels;
        let nt = streams_backward(d);
        let eval = coef.len() == ch;
        #[cfg(target_arch = "x86_64")]
        if !nt && !eval && crate::simd::cached_runs(d.inner) {
            let r = first * d.inner..first * d.inner + dx.len();
            return crate::simd::runs_grad_combine_cached(&x[r.clone()], &dy[r], dx, d.inner, first % ch, parts(coef, ch));
        }
        for (j, o) in dx.chunks_exact_mut(d.inner).enumerate() {
            let i = first + j;
            let c = i % ch;
            let r = i * d.inner..(i + 1) * d.inner;
            if eval {
                scale(&dy[r], o, coef[c]);
            } else {
                grad_combine_out(&x[r.clone()], &dy[r], o, (coef[c], coef[ch + c], coef[2 * ch + c], coef[3 * ch + c]), nt);
            }
        }
        if nt && !eval {
            store_fence();
        }
    }
}

multiversion! {
    fn combine_rows(x: &[f32], dy: &[f32], dx: &mut [f32], coef: &[f32], il: Option<Interleaved>, ch: usize, nt: bool) {
        if let Some(l) = period(ch) {
            // [a] or [ctr | a | b | d], each repeated along l positions.
            let mut wide = [0.0f32; 4 * MAX_PERIOD];
            let w = split(dx.len(), l);
            combine_rows_plain(&x[..w], &dy[..w], &mut dx[..w], repeat_parts(coef, ch, l, &mut wide), None, l, nt);
            combine_rows_plain(&x[w..], &dy[w..], &mut dx[w..], coef, None, ch, nt);
        } else {
            combine_rows_plain(x, dy, dx, coef, il, ch, nt);
        }
    }
}

/// [`combine_rows`] for rows `ch` wide, `coef = [a]` or `[ctr | a | b | d]` per position
/// (and `il`, the latter interleaved, where `interleave::interleaves` says).
#[inline(always)]
fn combine_rows_plain(x: &[f32], dy: &[f32], dx: &mut [f32], coef: &[f32], il: Option<Interleaved>, ch: usize, nt: bool) {
    if coef.len() == ch {
        rows_scale(dy, dx, coef);
    } else {
        let [ctr, a, b, dd] = parts(coef, ch);
        rows_grad_combine_out(x, dy, dx, ctr, a, b, dd, il, nt);
    }
}

/// `out = [sum(dy) (C) | sum(dy * (x - mean)) (C)]` from the per-channel pairs of the
/// channel tasks, `part = [(sum(dy), sum(dy * (x - mean))) per channel]`.
fn unpair(part: &[f64], out: &mut [f64]) {
    let (s1, s2) = out.split_at_mut(part.len() / 2);
    for ((p, a), b) in part.chunks_exact(2).zip(s1).zip(s2) {
        (*a, *b) = (p[0], p[1]);
    }
}

/// Per-channel `[sum(dy) (C) | sum(dy * (x - mean)) (C)]`, in float64, in a fixed order.
/// `shift` holds a copy of `mean` on a line for the strips (see `workspace::lined`).
pub(crate) fn grad_sums<'a>(x: &[f32], dy: &[f32], d: Dims, mean: &[f64], sums: &mut Vec<f64>, shift: &mut Vec<f64>, totals: &'a mut Vec<f64>) -> &'a [f64] {
    let c = d.channels;
    let out = lined(totals, 2 * c);
    if d.is_empty() {
        out.fill(0.0);
        return out;
    }
    let plan = Plan::new(d);
    if plan.fused {
        let part = sized(sums, 2 * c, 0.0);
        for_each_chunk(part, 2, d.len(), |ch, p| {
            (p[0], p[1]) = channel_grad_sums(x, dy, d, ch, mean[ch]);
        });
        unpair(part, out);
        return out;
    }
    let span = c * d.inner;
    let k = lined(shift, c);
    k.copy_from_slice(mean);
    let k = &*k;
    if let Some(width) = column_group_width(d, plan.blocks) {
        let ahead = crate::strips::ahead_grad(d);
        sum_column_groups(&plan, d.outer, width, out, sums, |r, j0, a1, a2| {
            let r = r.start * c..r.end * c;
            strips_acc_grad(&x[r.clone()], &dy[r], c, j0, &k[j0..j0 + a1.len()], a1, a2, ahead);
        });
        return out;
    }
    sum_blocks(plan.blocks, d.len(), out, sums, |b, acc| {
        let r = plan.range(b, d.outer);
        let r = r.start * span..r.end * span;
        block_grad_sums(&x[r.clone()], &dy[r], d, k, acc);
    });
    out
}

/// The dx pass, `coef = [a]` or `[ctr | a | b | d]` (and `il`, the latter interleaved for
/// `dx`); `back`: from the end (it follows the gradient sums, see `parallel::from_end`).
pub(crate) fn combine_unchecked(x: &[f32], dy: &[f32], d: Dims, coef: &[f32], il: Option<Interleaved>, dx: &mut [f32], back: bool) {
    if d.is_empty() {
        return;
    }
    let c = d.channels;
    if d.is_rows() {
        let nt = streams_backward(d);
        for_each_pass_chunk(dx, c, rows_per_task(c, nt), back, |lo, o| {
            let r = lo..lo + o.len();
            combine_rows(&x[r.clone()], &dy[r], o, coef, il, c, nt);
        });
    } else {
        for_each_pass_chunk(dx, d.inner, 1, back, |lo, o| {
            combine_slices(x, dy, o, lo / d.inner, d, coef);
        });
    }
}

/// Backward pass of batch normalization for upstream gradient `dy`.
///
/// With `x_hat = (x - mean) * invstd` from `saved` and sums over a channel's M values:
/// - batch statistics (training): `dx = weight * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat))`;
/// - running statistics (eval): `dx = weight * invstd * dy`;
/// - both: `dweight = sum(dy * x_hat)`, `dbias = sum(dy)`.
///
/// `weight = None` means gamma = 1 (no affine). `dweight` and `dbias` are written when given.
/// One fused reduction pass computes `sum(dy)` and `sum(dy * x_hat)` together (float64), a
/// second writes `dx` with one multiply-add chain per element; for channels-first tensors
/// both passes over one channel run in the same task so the second read comes from cache.
///
/// ```
/// use batchnorm::*;
/// let d = Dims::new(Layout::Nc, &[2, 1]).unwrap();
/// let (x, mut y) = ([1.0f32, 3.0], [0.0f32; 2]);
/// let mut saved = SavedStats::with_channels(1);
/// let mut ws = Workspace::new();
/// forward_train_into(&x, d, None, None, 1e-12, &mut y, &mut [Moments::EMPTY], &mut saved, &mut ws).unwrap();
/// // A gradient along x_hat itself is cancelled by the normalisation's own constraint.
/// let (mut dx, mut dw, mut db) = ([9.0f32; 2], [0.0f32], [0.0f32]);
/// backward_into(&x, &[-1.0, 1.0], d, None, &saved, &mut dx, Some(&mut dw), Some(&mut db), &mut ws).unwrap();
/// assert!(dx.iter().all(|v| v.abs() < 1e-6));
/// assert_eq!((dw[0], db[0]), (2.0, 0.0));
/// ```
#[allow(clippy::too_many_arguments)]
pub fn backward_into(
    x: &[f32],
    dy: &[f32],
    d: Dims,
    weight: Option<&[f32]>,
    saved: &SavedStats,
    dx: &mut [f32],
    dweight: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
    ws: &mut Workspace,
) -> Result<()> {
    let c = d.channels;
    check_backward(d, (x.len(), dy.len(), dx.len()), weight, saved, dweight.as_deref(), dbias.as_deref())?;
    let m = d.per_channel() as f64;
    let gamma = |ch: usize| weight.map_or(1.0, |w| w[ch] as f64);
    let plan = Plan::new(d);
    let fused = saved.source == StatsSource::Batch && plan.fused;
    let tiles = (saved.source == StatsSource::Batch).then(|| tile_width(d)).flatten();
    let sums: &[f64] = if let Some(w) = tiles {
        let out = sized(&mut ws.totals, 2 * c, 0.0);
        let parts = sized(&mut ws.sums, 2 * c, 0.0);
        backward_tiled(x, dy, d, w, &saved.mean, &saved.invstd, weight, dx, parts, out);
        out
    } else if fused && !d.is_empty() {
        let out = sized(&mut ws.totals, 2 * c, 0.0);
        // [sum(dy), sum(dy * (x - mean))] per channel, in groups of channels per task.
        let part = sized(&mut ws.sums, 2 * c, 0.0);
        let dxp = SharedMut::new(dx);
        let (group, nt) = (plan.group, streams_backward(d));
        for_each_chunk(part, 2 * group, d.len(), |i, p| {
            let c0 = i * group;
            let mut next = channel_grad_sums(x, dy, d, c0, saved.mean[c0]);
            for j in 0..p.len() / 2 {
                let ch = c0 + j;
                let (a, b) = next;
                let q = fold_backward(saved.mean[ch], saved.invstd[ch], gamma(ch), m, a, b);
                let following = (2 * (j + 1) < p.len()).then(|| (ch + 1, saved.mean[ch + 1]));
                if let Some(sums) = combine_channel(x, dy, &dxp, d, ch, q, following, nt) {
                    next = sums;
                }
                (p[2 * j], p[2 * j + 1]) = (a, b);
            }
        });
        unpair(part, out);
        out
    } else {
        let need_sums = saved.source == StatsSource::Batch || dweight.is_some() || dbias.is_some();
        let sums = if need_sums { grad_sums(x, dy, d, &saved.mean, &mut ws.sums, &mut ws.shift, &mut ws.totals) } else { sized(&mut ws.totals, 2 * c, 0.0) };
        let (coef, il): (&[f32], _) = match saved.source {
            StatsSource::Batch => {
                let nt = streams_backward(d);
                let il = interleaves(d, nt);
                let arrays = if il { 8 } else { 4 };
                let skew = constants_skew(d, nt, x.as_ptr());
                let (q, spare) = placed(&mut ws.coef, arrays * c, arrays, d.len(), &[x.as_ptr(), dy.as_ptr(), dx.as_ptr()], skew).split_at_mut(4 * c);
                for ch in 0..c {
                    let (ctr, a, b, dd) = fold_backward(saved.mean[ch], saved.invstd[ch], gamma(ch), m, sums[ch], sums[c + ch]);
                    (q[ch], q[c + ch], q[2 * c + ch], q[3 * c + ch]) = (ctr, a, b, dd);
                }
                let il = il.then(|| interleave(parts::<4>(q, c), dx.as_ptr(), spare));
                (&*q, il)
            }
            StatsSource::Running => {
                // The eval-mode pass, `dx = dy * a`, reads no `x`.
                let q = placed(&mut ws.coef, c, 1, d.len(), &[dy.as_ptr(), dx.as_ptr()], 0);
                for (ch, a) in q.iter_mut().enumerate() {
                    *a = (gamma(ch) * saved.invstd[ch]) as f32;
                }
                (&*q, None)
            }
        };
        combine_unchecked(x, dy, d, coef, il, dx, need_sums && from_end(d));
        sums
    };
    write_param_grads(sums, &saved.invstd, dweight, dbias);
    Ok(())
}

/// A backward pass's checks, for any element type: the lengths of `x`, `dy` and `dx`
/// (`lens`), of the weight, the saved statistics and the parameter gradients asked for.
pub(crate) fn check_backward<T>(
    d: Dims,
    lens: (usize, usize, usize),
    weight: Option<&[T]>,
    saved: &SavedStats,
    dweight: Option<&[T]>,
    dbias: Option<&[T]>,
) -> Result<()> {
    check_len("x", d.len(), lens.0)?;
    check_len("dy", d.len(), lens.1)?;
    check_len("dx", d.len(), lens.2)?;
    check_params(d.channels, weight, None)?;
    check_saved_and_grads(d.channels, saved, dweight, dbias)
}

/// The lengths of the saved statistics and of the parameter gradients asked for: `c` each.
fn check_saved_and_grads<T>(c: usize, saved: &SavedStats, dweight: Option<&[T]>, dbias: Option<&[T]>) -> Result<()> {
    check_len("saved.mean", c, saved.mean.len())?;
    check_len("saved.invstd", c, saved.invstd.len())?;
    if let Some(g) = dweight {
        check_len("dweight", c, g.len())?;
    }
    if let Some(g) = dbias {
        check_len("dbias", c, g.len())?;
    }
    Ok(())
}

/// `dweight = sum(dy * (x - mean)) * invstd`, `dbias = sum(dy)` from `sums = [sum(dy) (C) |
/// sum(dy * (x - mean)) (C)]`.
fn write_param_grads(sums: &[f64], invstd: &[f64], dweight: Option<&mut [f32]>, dbias: Option<&mut [f32]>) {
    let c = invstd.len();
    if let Some(g) = dweight {
        for ch in 0..c {
            g[ch] = (sums[c + ch] * invstd[ch]) as f32;
        }
    }
    if let Some(g) = dbias {
        for ch in 0..c {
            g[ch] = sums[ch] as f32;
        }
    }
}

/// The parameter gradients alone, for a layer whose input needs no gradient (PyTorch's
/// `output_mask` without dx): with `x_hat = (x - mean) * invstd` from `saved` and sums over a
/// channel's M values, `dweight = sum(dy * x_hat)`, `dbias = sum(dy)`, each written when
/// given.
///
/// One pass reads `x` and `dy` once (float64 sums) and writes no tensor: about 2/5 of the
/// memory traffic of [`backward_into`], whose `dweight` and `dbias` these equal bit for bit.
///
/// ```
/// use batchnorm::*;
/// let d = Dims::new(Layout::Nc, &[2, 1]).unwrap();
/// let (x, mut y) = ([1.0f32, 3.0], [0.0f32; 2]);
/// let mut saved = SavedStats::with_channels(1);
/// let mut ws = Workspace::new();
/// forward_train_into(&x, d, None, None, 1e-12, &mut y, &mut [Moments::EMPTY], &mut saved, &mut ws).unwrap();
/// // x_hat = [-1, 1]
/// let (mut dw, mut db) = ([0.0f32], [0.0f32]);
/// param_grads_into(&x, &[0.5, 2.0], d, &saved, Some(&mut dw), Some(&mut db), &mut ws).unwrap();
/// assert_eq!((dw[0], db[0]), (1.5, 2.5));
/// ```
pub fn param_grads_into(
    x: &[f32],
    dy: &[f32],
    d: Dims,
    saved: &SavedStats,
    dweight: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
    ws: &mut Workspace,
) -> Result<()> {
    let c = d.channels;
    check_len("x", d.len(), x.len())?;
    check_len("dy", d.len(), dy.len())?;
    check_saved_and_grads(c, saved, dweight.as_deref(), dbias.as_deref())?;
    let sums = grad_sums(x, dy, d, &saved.mean, &mut ws.sums, &mut ws.shift, &mut ws.totals);
    write_param_grads(sums, &saved.invstd, dweight, dbias);
    Ok(())
}
