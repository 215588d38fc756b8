//! Per-channel batch statistics: one read of `x`, float64 accumulation about a shift.

use crate::error::{check_len, Result};
use crate::layout::Dims;
use crate::moments::Moments;
use crate::parallel::{column_group_width, for_each_chunk, sum_blocks, sum_column_groups, Plan};
use crate::simd::{acc_shifted, lane_sum, multiversion, rows_acc_shifted, runs_shifted, LANES};
use crate::strips::strips_acc_shifted;
use crate::tiles::{moments_tiled, tile_width};
use crate::workspace::{lined, Workspace};

multiversion! {
    /// Moments of channel `c` of a channels-first tensor, accumulated about `k`.
    pub(crate) fn channel_moments(x: &[f32], d: Dims, c: usize, k: f64) -> Moments {
        let mut a1 = [0.0f64; LANES];
        let mut a2 = [0.0f64; LANES];
        for n in 0..d.outer {
            let off = (n * d.channels + c) * d.inner;
            acc_shifted(&x[off..off + d.inner], k, &mut a1, &mut a2);
        }
        Moments::from_shifted_sums(d.per_channel() as f64, k, lane_sum(&a1), lane_sum(&a2))
    }
}

multiversion! {
    /// Shifted sums of every channel over a block of whole outer indices, in memory order:
    /// `acc = [s1 (C) | s2 (C)]`.
    pub(crate) fn block_sums(x: &[f32], d: Dims, k: &[f64], acc: &mut [f64]) {
        let c = d.channels;
        let (a1, a2) = acc.split_at_mut(c);
        if d.is_rows() {
            rows_acc_shifted(x, k, a1, a2, crate::strips::ahead(d));
            return;
        }
        runs_shifted(x, d.inner, k, a1, a2);
    }
}

/// The shift each channel's sums are taken about: its first value, which is close to the
/// data, so float64 sums of `(x - k)` and `(x - k)^2` lose nothing that matters even when
/// the mean is 1e4 times the spread. A first value that is infinite or NaN gives the shift
/// 0: about `inf` every sum would be NaN (`inf - inf`), where PyTorch's `sum / n` makes the
/// mean of a channel holding `inf` infinite.
pub(crate) fn shifts<'a, T: Copy + Into<f64>>(x: &[T], d: Dims, ws: &'a mut Vec<f64>) -> &'a [f64] {
    let k = lined(ws, d.channels);
    for (c, kc) in k.iter_mut().enumerate() {
        let v: f64 = x[c * d.inner].into();
        *kc = if v.is_finite() { v } else { 0.0 };
    }
    k
}

/// Writes the moments (count, mean, M2) of every channel of `x` into `out`.
///
/// For channel c over its M values: `mean = sum(x) / M`, `m2 = sum((x - mean)^2)`, computed
/// in float64 in one read of `x`; results are identical whatever the number of threads.
///
/// ```
/// use batchnorm::{batch_moments_into, Dims, Layout, Moments, Workspace};
/// let x = [1.0f32, 10.0, 3.0, 30.0]; // NC, 2 rows, 2 channels
/// let mut out = [Moments::EMPTY; 2];
/// batch_moments_into(&x, Dims::new(Layout::Nc, &[2, 2]).unwrap(), &mut out, &mut Workspace::new()).unwrap();
/// assert_eq!(out[0].mean, 2.0);
/// assert_eq!(out[1].var_biased(), 100.0);
/// ```
pub fn batch_moments_into(x: &[f32], d: Dims, out: &mut [Moments], ws: &mut Workspace) -> Result<()> {
    check_len("x", d.len(), x.len())?;
    check_len("moments", d.channels, out.len())?;
    moments_unchecked(x, d, out, ws);
    Ok(())
}

/// [`batch_moments_into`] into a new vector.
pub fn batch_moments(x: &[f32], d: Dims) -> Result<Vec<Moments>> {
    let mut out = vec![Moments::EMPTY; d.channels];
    batch_moments_into(x, d, &mut out, &mut Workspace::new())?;
    Ok(out)
}

pub(crate) fn moments_unchecked(x: &[f32], d: Dims, out: &mut [Moments], ws: &mut Workspace) {
    if d.per_channel() == 0 {
        out.fill(Moments::EMPTY);
        return;
    }
    let plan = Plan::new(d);
    let c = d.channels;
    let k = shifts(x, d, &mut ws.shift);
    if let Some(w) = tile_width(d) {
        moments_tiled(x, d, w, k, out);
        return;
    }
    if plan.fused {
        for_each_chunk(out, 1, d.len(), |ch, o| {
            o[0] = channel_moments(x, d, ch, k[ch]);
        });
        return;
    }
    let span = c * d.inner;
    // Every block sums about the same per-channel shift, so the partial sums combine by
    // plain addition (in block order); one conversion to moments per channel at the end.
    let total = lined(&mut ws.totals, 2 * c);
    if let Some(width) = column_group_width(d, plan.blocks) {
        let ahead = crate::strips::ahead(d);
        sum_column_groups(&plan, d.outer, width, total, &mut ws.sums, |r, j0, a1, a2| {
            strips_acc_shifted(&x[r.start * c..r.end * c], c, j0, &k[j0..j0 + a1.len()], a1, a2, ahead);
        });
    } else {
        sum_blocks(plan.blocks, d.len(), total, &mut ws.sums, |b, acc| {
            let r = plan.range(b, d.outer);
            block_sums(&x[r.start * span..r.end * span], d, k, acc);
        });
    }
    let (s1, s2) = total.split_at(c);
    moments_from_sums((d.outer * d.inner) as f64, k, s1, s2, out);
}

multiversion! {
    /// `out[c]` = the moments of `count` values with shifted sums `s1[c]`, `s2[c]` about `k[c]`.
    fn moments_from_sums(count: f64, k: &[f64], s1: &[f64], s2: &[f64], out: &mut [Moments]) {
        for (ch, o) in out.iter_mut().enumerate() {
            *o = Moments::from_shifted_sums(count, k[ch], s1[ch], s2[ch]);
        }
    }
}
