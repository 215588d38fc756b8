//! Training forward over float64 tensors.

use super::compensated::moments_from;
use super::forward_eval::normalise_constants;
use super::pointwise::{map, Normalise};
use super::sums::{channel_sums, Shifted};
use crate::coefficients::inv_std;
use crate::error::Result;
use crate::forward_train::begin_train;
use crate::layout::Dims;
use crate::moments::Moments;
use crate::saved::SavedStats;
use crate::stats::shifts;
use crate::workspace::Workspace;

/// Training forward pass over a float64 batch: [`forward_train_into`](crate::forward_train_into)
/// for float64 storage, with compensated sums (each addition's and each product's rounding
/// error kept and summed beside the sums).
///
/// Per channel c over its M values: `mean = sum(x) / M`, `var = sum((x - mean)^2) / M`
/// (biased), `y = weight * (x - mean) / sqrt(var + eps) + bias`, computed as
/// `(x - mean) * (weight * invstd) + bias`. Writes `y`, the batch `moments` and `saved`
/// (mean and inverse std for [`backward_f64_into`](crate::backward_f64_into)). The sums
/// about each channel's first value are compensated, so the mean and the variance are within
/// a few units in the last place of their exact values whatever M; results are bitwise the
/// same on any number of threads. Fails with [`BnError::Degenerate`](crate::BnError::Degenerate) when M = 1.
///
/// ```
/// use batchnorm::{forward_train_f64_into, Dims, Layout, Moments, SavedStats, Workspace};
/// // 1e8 + 0.1, 1e8 + 0.3 (NC: 2 rows, 1 channel): mean 1e8 + 0.2, variance 0.01.
/// let x = [1e8 + 0.1, 1e8 + 0.3];
/// let (mut y, mut m, mut saved) = ([0.0; 2], [Moments::EMPTY], SavedStats::with_channels(1));
/// forward_train_f64_into(&x, Dims::new(Layout::Nc, &[2, 1]).unwrap(), None, None, 0.0,
///                        &mut y, &mut m, &mut saved, &mut Workspace::new()).unwrap();
/// assert_eq!(m[0].mean, (x[0] + x[1]) / 2.0);
/// assert!((y[0] + 1.0).abs() < 1e-6 && (y[1] - 1.0).abs() < 1e-6);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn forward_train_f64_into(
    x: &[f64],
    d: Dims,
    weight: Option<&[f64]>,
    bias: Option<&[f64]>,
    eps: f64,
    y: &mut [f64],
    moments: &mut [Moments],
    saved: &mut SavedStats,
    ws: &mut Workspace,
) -> Result<()> {
    if !begin_train(d, (x.len(), y.len()), weight, bias, moments, saved)? {
        return Ok(());
    }
    let k = shifts(x, d, &mut ws.shift);
    let sums = channel_sums(Shifted, x, x, d, k, &mut ws.sums, &mut ws.totals);
    let m = d.per_channel() as f64;
    for (ch, mo) in moments.iter_mut().enumerate() {
        let (s1, s2) = sums.get(ch);
        *mo = moments_from(m, k[ch], s1, s2);
    }
    let moments = &*moments;
    saved.fill(|ch| (moments[ch].mean, inv_std(moments[ch].var_biased(), eps)));
    let q = normalise_constants(&mut ws.sums, &saved.mean, &saved.invstd, weight, bias);
    map(Normalise, x, x, d, q, y);
    Ok(())
}
