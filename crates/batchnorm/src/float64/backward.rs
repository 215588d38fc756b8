//! Backward over float64 tensors.

use super::pointwise::{map, ConstantDx, TrainDx};
use super::sums::{channel_sums, Gradient};
use crate::backward::check_backward;
use crate::error::Result;
use crate::layout::Dims;
use crate::saved::{SavedStats, StatsSource};
use crate::workspace::{sized, Workspace};

/// Backward pass over a float64 tensor for upstream gradient `dy`:
/// [`backward_into`](crate::backward_into) for float64 storage.
///
/// With `x_hat = (x - mean) * invstd` from `saved` and sums over a channel's M values:
/// - batch statistics (training): `dx = weight * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat))`;
/// - running statistics (eval): `dx = weight * invstd * dy`;
/// - both: `dweight = sum(dy * x_hat)`, `dbias = sum(dy)`.
///
/// `sum(dy)` and `sum(dy * (x - mean))` are compensated sums (`x - mean` and each product
/// kept exactly as pairs), then `dx = a * dy + (b * (x - mean) + e)` with two multiply-adds
/// per value. `weight = None` means gamma = 1. `dweight` and `dbias` are written when given.
///
/// ```
/// use batchnorm::*;
/// let d = Dims::new(Layout::Nc, &[2, 1]).unwrap();
/// let (x, mut y) = ([1.0, 3.0], [0.0; 2]);
/// let mut saved = SavedStats::with_channels(1);
/// let mut ws = Workspace::new();
/// forward_train_f64_into(&x, d, None, None, 0.0, &mut y, &mut [Moments::EMPTY], &mut saved, &mut ws).unwrap();
/// // x_hat = [-1, 1]; a gradient along it is cancelled by the normalisation's constraint.
/// let (mut dx, mut dw, mut db) = ([9.0; 2], [0.0], [0.0]);
/// backward_f64_into(&x, &[-1.0, 1.0], d, None, &saved, &mut dx, Some(&mut dw), Some(&mut db), &mut ws).unwrap();
/// assert_eq!(dx, [0.0, 0.0]);
/// assert_eq!((dw[0], db[0]), (2.0, 0.0));
/// ```
#[allow(clippy::too_many_arguments)]
pub fn backward_f64_into(
    x: &[f64],
    dy: &[f64],
    d: Dims,
    weight: Option<&[f64]>,
    saved: &SavedStats,
    dx: &mut [f64],
    dweight: Option<&mut [f64]>,
    dbias: Option<&mut [f64]>,
    ws: &mut Workspace,
) -> Result<()> {
    let c = d.channels;
    check_backward(d, (x.len(), dy.len(), dx.len()), weight, saved, dweight.as_deref(), dbias.as_deref())?;
    let batch = saved.source == StatsSource::Batch;
    let m = d.per_channel() as f64;
    let gamma = |ch: usize| weight.map_or(1.0, |w| w[ch]);
    // [sum(dy) | sum(dy * (x - mean))], rounded once each.
    let totals = sized(&mut ws.shift, 2 * c, 0.0);
    if batch || dweight.is_some() || dbias.is_some() {
        let sums = channel_sums(Gradient, x, dy, d, &saved.mean, &mut ws.sums, &mut ws.totals);
        for ch in 0..c {
            let (s1, s2) = sums.get(ch);
            (totals[ch], totals[c + ch]) = (s1.value(), s2.value());
        }
    }
    let q = sized(&mut ws.sums, 4 * c, 0.0);
    for ch in 0..c {
        let is = saved.invstd[ch];
        let a = gamma(ch) * is;
        q[ch] = saved.mean[ch];
        q[c + ch] = a;
        if batch {
            q[2 * c + ch] = -a * is * is * totals[c + ch] / m;
            q[3 * c + ch] = -a * totals[ch] / m;
        }
    }
    if batch {
        map(TrainDx, x, dy, d, q, dx);
    } else {
        map(ConstantDx, x, dy, d, q, dx);
    }
    if let Some(g) = dweight {
        for ch in 0..c {
            g[ch] = totals[c + ch] * saved.invstd[ch];
        }
    }
    if let Some(g) = dbias {
        g.copy_from_slice(&totals[..c]);
    }
    Ok(())
}
