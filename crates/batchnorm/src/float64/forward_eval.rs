//! Eval forward over float64 tensors.

use super::pointwise::{map, Normalise};
use crate::coefficients::inv_std;
use crate::error::Result;
use crate::forward_eval::check_eval;
use crate::layout::Dims;
use crate::workspace::{sized, Workspace};

/// The normalising pass's constants `[mean | weight * invstd | bias | 0]` (C each) in `buf`.
pub(super) fn normalise_constants<'a>(buf: &'a mut Vec<f64>, mean: &[f64], invstd: &[f64], weight: Option<&[f64]>, bias: Option<&[f64]>) -> &'a [f64] {
    let c = mean.len();
    let q = sized(buf, 4 * c, 0.0);
    for ch in 0..c {
        q[ch] = mean[ch];
        q[c + ch] = weight.map_or(1.0, |w| w[ch]) * invstd[ch];
        q[2 * c + ch] = bias.map_or(0.0, |b| b[ch]);
    }
    q
}

/// Eval forward over a float64 tensor with given statistics (normally the running ones):
/// `y = weight * (x - mean) / sqrt(var + eps) + bias` per channel, computed as
/// `(x - mean) * (weight * invstd) + bias` with one multiply-add; `weight`/`bias` default to
/// 1/0 when `None`.
///
/// ```
/// use batchnorm::{forward_eval_f64_into, Dims, Layout, Workspace};
/// let x = [1.0, 2.0, 3.0, 4.0];
/// let mut y = [0.0; 4];
/// let d = Dims::new(Layout::Nc, &[2, 2]).unwrap();
/// forward_eval_f64_into(&x, d, None, Some(&[0.5, 0.5]), &[1.0, 2.0], &[4.0, 4.0], 0.0, &mut y,
///                       &mut Workspace::new()).unwrap();
/// assert_eq!(y, [0.5, 0.5, 1.5, 1.5]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn forward_eval_f64_into(
    x: &[f64],
    d: Dims,
    weight: Option<&[f64]>,
    bias: Option<&[f64]>,
    mean: &[f64],
    var: &[f64],
    eps: f64,
    y: &mut [f64],
    ws: &mut Workspace,
) -> Result<()> {
    check_eval(d, (x.len(), y.len()), weight, bias, mean, var)?;
    let is = sized(&mut ws.totals, d.channels, 0.0);
    for (v, &s) in is.iter_mut().zip(var) {
        *v = inv_std(s, eps);
    }
    let q = normalise_constants(&mut ws.sums, mean, is, weight, bias);
    map(Normalise, x, x, d, q, y);
    Ok(())
}
