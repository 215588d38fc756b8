//! Eval-mode forward: normalise with given (running) statistics, one read and one write.

use crate::coefficients::{fold_affine, parts};
use crate::error::{check_len, Result};
use crate::interleave::{interleave, interleaves, Interleaved};
use crate::layout::Dims;
use crate::narrow::{period, repeat_parts, split, MAX_PERIOD};
use crate::parallel::{channels_in_parallel, for_each_pass_chunk, CHANNEL_TASK};
use crate::saved::{running_into, SavedStats};
use crate::simd::{constants_skew, multiversion, rows_affine_out, rows_per_task, runs_affine_out, store_fence, streams_eval};
use crate::tiles::{normalize_tiled, tile_width};
use crate::workspace::{placed, sized, Workspace};

multiversion! {
    /// Channels-first slices `first..` (slice i is channel `i % C`) of `y` from `x`.
    fn affine_slices(x: &[f32], y: &mut [f32], first: usize, d: Dims, ctr: &[f32], s: &[f32], t: &[f32], nt: bool) {
        let lo = first * d.inner;
        runs_affine_out(&x[lo..lo + y.len()], y, first, d.inner, ctr, s, t, nt);
        if nt {
            store_fence();
        }
    }
}

multiversion! {
    /// Rows `c` wide, `coef = [ctr | s | t]` (and `il`, the same interleaved, where
    /// `interleave::interleaves` says); rows of a few channels regrouped (see `narrow`).
    fn affine_rows(x: &[f32], y: &mut [f32], coef: &[f32], il: Option<Interleaved>, c: usize, nt: bool) {
        if let Some(l) = period(c) {
            let mut wide = [0.0f32; 4 * MAX_PERIOD];
            let w = split(x.len(), l);
            affine_rows_plain(&x[..w], &mut y[..w], repeat_parts(coef, c, l, &mut wide), None, l, nt);
            affine_rows_plain(&x[w..], &mut y[w..], coef, None, c, nt);
        } else {
            affine_rows_plain(x, y, coef, il, c, nt);
        }
    }
}

/// [`affine_rows`] for rows `c` wide, `coef = [ctr | s | t]` per position.
#[inline(always)]
fn affine_rows_plain(x: &[f32], y: &mut [f32], coef: &[f32], il: Option<Interleaved>, c: usize, nt: bool) {
    let [ctr, s, t] = parts(coef, c);
    rows_affine_out(x, y, ctr, s, t, il, nt);
}

/// `y = (x - ctr[c]) * s[c] + t[c]` over the whole tensor, with `coef = [ctr | s | t]` and
/// `il` as [`fill_coef`] gives them. `back`: run from the end (the pass follows a reduction
/// of `x`, see `parallel::from_end`); `nt`: stream `y` (`simd::streams`, or in the training
/// forward `simd::streams_train`).
pub(crate) fn normalize_unchecked(x: &[f32], d: Dims, coef: &[f32], il: Option<Interleaved>, y: &mut [f32], back: bool, nt: bool) {
    let c = d.channels;
    let [ctr, s, t] = parts(coef, c);
    if d.is_empty() {
        return;
    }
    if let Some(w) = tile_width(d) {
        normalize_tiled(x, d, w, coef, y, nt);
    } else if d.is_rows() {
        for_each_pass_chunk(y, c, rows_per_task(c, nt), back, |lo, yc| {
            affine_rows(&x[lo..lo + yc.len()], yc, coef, il, c, nt);
        });
    } else {
        for_each_pass_chunk(y, d.inner, 1, back, |lo, yc| {
            affine_slices(x, yc, lo / d.inner, d, ctr, s, t, nt);
        });
    }
}

/// Fills `coef = [ctr | s | t]` for every channel from means and inverse standard deviations,
/// placed in its buffer away from `x` and `y`, the input and output of the normalising pass
/// over `d` (see [`placed`]), which streams `y` where `nt`; where that pass reads
/// interleaved constants (`interleave::interleaves`), also the three arrays interleaved for
/// `y`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fill_coef<'a>(
    coef: &'a mut Vec<f32>,
    mean: &[f64],
    invstd: &[f64],
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    x: &[f32],
    d: Dims,
    y: &[f32],
    nt: bool,
) -> (&'a [f32], Option<Interleaved<'a>>) {
    let c = mean.len();
    let interleave_for = interleaves(d, nt).then_some(y.as_ptr());
    let arrays = if interleave_for.is_some() { 6 } else { 3 };
    let skew = constants_skew(d, nt, x.as_ptr());
    let (buf, spare) = placed(coef, arrays * c, arrays, d.len(), &[x.as_ptr(), y.as_ptr()], skew).split_at_mut(3 * c);
    coef_into(buf, mean, invstd, weight, bias);
    let buf = &*buf;
    let il = interleave_for.map(|y| interleave(parts::<3>(buf, c), y, spare));
    (buf, il)
}

/// `buf = [ctr | s | t]` (three arrays of `C` values) from means and inverse standard
/// deviations and the affine parameters (see [`fold_affine`]), in parallel tasks of
/// channels where there are many.
pub(crate) fn coef_into(buf: &mut [f32], mean: &[f64], invstd: &[f64], weight: Option<&[f32]>, bias: Option<&[f32]>) {
    let c = mean.len();
    let (ctr, st) = buf.split_at_mut(c);
    let (s, t) = st.split_at_mut(c);
    let fill = |first: usize, ctr: &mut [f32], s: &mut [f32], t: &mut [f32]| {
        let r = first..first + ctr.len();
        let (w, b) = (weight.map(|w| &w[r.clone()]), bias.map(|b| &b[r.clone()]));
        coef_run(&mean[r.clone()], &invstd[r], w, b, ctr, s, t);
    };
    if !channels_in_parallel(c) {
        fill(0, ctr, s, t);
    } else {
        use rayon::prelude::*;
        ctr.par_chunks_mut(CHANNEL_TASK)
            .zip(s.par_chunks_mut(CHANNEL_TASK))
            .zip(t.par_chunks_mut(CHANNEL_TASK))
            .enumerate()
            .for_each(|(i, ((ctr, s), t))| fill(i * CHANNEL_TASK, ctr, s, t));
    }
}

multiversion! {
    /// `(ctr, s, t)[i]` from `mean[i]`, `invstd[i]` and the affine parameters (see
    /// [`fold_affine`]); slices of one length, so that the loop vectorises.
    fn coef_run(mean: &[f64], invstd: &[f64], weight: Option<&[f32]>, bias: Option<&[f32]>, ctr: &mut [f32], s: &mut [f32], t: &mut [f32]) {
        let n = ctr.len();
        let (mean, invstd, s, t) = (&mean[..n], &invstd[..n], &mut s[..n], &mut t[..n]);
        let (weight, bias) = (weight.map(|w| &w[..n]), bias.map(|b| &b[..n]));
        for i in 0..n {
            let g = weight.map_or(1.0, |w| w[i] as f64);
            let b = bias.map_or(0.0, |b| b[i] as f64);
            (ctr[i], s[i], t[i]) = fold_affine(mean[i], invstd[i], g, b);
        }
    }
}

/// `y` from `x` normalised with the (mean, inverse std) in `saved`, lengths already checked:
/// the second pass of the training forward (`back`: from the end where
/// `parallel::from_end` says), and the layer's eval, which keeps the running statistics in
/// `saved` for its backward pass anyway (one square root per channel, not two).
#[allow(clippy::too_many_arguments)]
pub(crate) fn normalize_with_saved(
    x: &[f32],
    d: Dims,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    saved: &SavedStats,
    y: &mut [f32],
    ws: &mut Workspace,
    back: bool,
    nt: bool,
) {
    let (coef, il) = fill_coef(&mut ws.coef, &saved.mean, &saved.invstd, weight, bias, x, d, y, nt);
    normalize_unchecked(x, d, coef, il, y, back, nt);
}

/// An eval forward's checks, for any element type: the lengths of `x` and `y` (`lens`), of
/// the statistics and of the parameters given.
pub(crate) fn check_eval<T>(d: Dims, lens: (usize, usize), weight: Option<&[T]>, bias: Option<&[T]>, mean: &[T], var: &[T]) -> Result<()> {
    check_len("x", d.len(), lens.0)?;
    check_len("y", d.len(), lens.1)?;
    check_len("running_mean", d.channels, mean.len())?;
    check_len("running_var", d.channels, var.len())?;
    check_params(d.channels, weight, bias)
}

/// The lengths of the affine parameters given (of any element type): `c` each.
pub(crate) fn check_params<T>(c: usize, weight: Option<&[T]>, bias: Option<&[T]>) -> Result<()> {
    if let Some(w) = weight {
        check_len("weight", c, w.len())?;
    }
    if let Some(b) = bias {
        check_len("bias", c, b.len())?;
    }
    Ok(())
}

/// Eval forward: `y = weight * (x - mean) / sqrt(var + eps) + bias` per channel, with given
/// statistics (normally the running ones); `weight`/`bias` default to 1/0 when `None`.
///
/// ```
/// use batchnorm::{forward_eval_into, Dims, Layout, Workspace};
/// let x = [1.0f32, 2.0, 3.0, 4.0];
/// let mut y = [0.0f32; 4];
/// let d = Dims::new(Layout::Nc, &[2, 2]).unwrap();
/// forward_eval_into(&x, d, None, Some(&[0.5, 0.5]), &[1.0, 2.0], &[4.0, 4.0], 1e-12, &mut y,
///                   &mut Workspace::new()).unwrap();
/// assert_eq!(y, [0.5, 0.5, 1.5, 1.5]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn forward_eval_into(
    x: &[f32],
    d: Dims,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    mean: &[f32],
    var: &[f32],
    eps: f64,
    y: &mut [f32],
    ws: &mut Workspace,
) -> Result<()> {
    let (m, is) = eval_stats(d, (x.len(), y.len()), weight, bias, mean, var, eps, &mut ws.totals)?;
    let nt = streams_eval(d);
    let (coef, il) = fill_coef(&mut ws.coef, m, is, weight, bias, x, d, y, nt);
    normalize_unchecked(x, d, coef, il, y, false, nt);
    Ok(())
}

/// An eval forward's checks (the lengths of `x` and `y` in `lens`, the statistics', the
/// parameters'), then the running statistics as (mean, inverse std) per channel in `totals`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn eval_stats<'a>(
    d: Dims,
    lens: (usize, usize),
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    mean: &[f32],
    var: &[f32],
    eps: f64,
    totals: &'a mut Vec<f64>,
) -> Result<(&'a [f64], &'a [f64])> {
    check_eval(d, lens, weight, bias, mean, var)?;
    let (m, is) = sized(totals, 2 * d.channels, 0.0).split_at_mut(d.channels);
    running_into(mean, var, eps, m, is);
    Ok((m, is))
}
