//! f64 tensors through the core's float64 kernels (compensated sums, see
//! `batchnorm::forward_train_f64_into`): no conversion on the way in or out.

use crate::ops::{output_buffer, with_cpu, Shared};
use crate::to_candle;
use batchnorm::{backward_f64_into, forward_eval_f64_into, forward_train_f64_into, inv_std, Dims, Moments, SavedStats, StatsSource, Workspace};
use candle_core::{bail, CpuStorage, Layout, Result, Tensor};

/// The contiguous values of an f64 storage; `None` for any other type.
pub(crate) fn values<'a>(s: &'a CpuStorage, l: &Layout) -> Result<Option<&'a [f64]>> {
    let CpuStorage::F64(v) = s else { return Ok(None) };
    let Some((a, b)) = l.contiguous_offsets() else { bail!("batch norm op: input is not contiguous") };
    Ok(Some(&v[a..b]))
}

/// The forward pass over f64 `x` with f64 `gamma` and `beta` (`None` when not affine):
/// batch statistics into `sh` (moments and saved statistics), or the given `stats`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    x: &[f64],
    d: Dims,
    gamma: Option<&[f64]>,
    beta: Option<&[f64]>,
    eps: f64,
    stats: Option<&(Vec<f64>, Vec<f64>)>,
    detach: bool,
    sh: &mut Shared,
) -> Result<CpuStorage> {
    let mut ws = Workspace::new();
    let mut y = output_buffer::<f64>(d.len())?;
    match stats {
        None => {
            sh.moments.resize(d.channels, Moments::EMPTY);
            forward_train_f64_into(x, d, gamma, beta, eps, &mut y, &mut sh.moments, &mut sh.saved, &mut ws).map_err(to_candle)?;
            if detach {
                sh.saved.source = StatsSource::Running;
            }
        }
        Some((mean, var)) => {
            forward_eval_f64_into(x, d, gamma, beta, mean, var, eps, &mut y, &mut ws).map_err(to_candle)?;
            sh.saved = SavedStats { mean: mean.clone(), invstd: var.iter().map(|&v| inv_std(v, eps)).collect(), source: StatsSource::Running };
        }
    }
    Ok(CpuStorage::F64(y))
}

/// Runs `f` on the contiguous values of an f64 CPU tensor.
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f64]) -> Result<R>) -> Result<R> {
    with_cpu(t, |cs, l| match values(cs, l)? {
        Some(v) => f(v),
        None => bail!("batch norm op: expected f64 data, got {:?}", t.dtype()),
    })
}

/// `(dx, dgamma, dbeta)` of the op over f64 `x` for upstream gradient `dy`.
pub(crate) fn backward(x: &Tensor, gamma: &Tensor, beta: &Tensor, dy: &Tensor, d: Dims, affine: bool, saved: &SavedStats) -> Result<(Tensor, Tensor, Tensor)> {
    let mut dx = output_buffer::<f64>(d.len())?;
    let (mut dg, mut db) = (vec![0.0f64; d.channels], vec![0.0f64; d.channels]);
    with_values(x, |xs| {
        with_values(dy, |gs| {
            let mut run =
                |w: Option<&[f64]>| backward_f64_into(xs, gs, d, w, saved, &mut dx, Some(&mut dg), Some(&mut db), &mut Workspace::new()).map_err(to_candle);
            if affine {
                with_values(gamma, |w| run(Some(w)))
            } else {
                run(None)
            }
        })
    })?;
    let dev = x.device();
    Ok((Tensor::from_vec(dx, x.shape(), dev)?, Tensor::from_vec(dg, gamma.shape(), dev)?, Tensor::from_vec(db, beta.shape(), dev)?))
}
