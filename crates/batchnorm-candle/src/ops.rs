//! The core's fused kernels as candle custom ops over (x, gamma, beta): float32 (f16 and
//! bf16 through it) and f64.

use crate::float64;
use crate::half_precision::{eval_converted, narrowed, narrowed_like, storage_dtype, widened};
use crate::to_candle;
use batchnorm::{backward_into, forward_eval_into, forward_train_into, inv_std, Dims, Moments, SavedStats, StatsSource, Workspace};
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor, WithDType};
use std::sync::{Arc, Mutex};

/// Runs `f` on the storage and layout of a CPU tensor made contiguous.
pub(crate) fn with_cpu<R>(t: &Tensor, f: impl FnOnce(&CpuStorage, &Layout) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(cs) => f(cs, l),
        _ => bail!("batch norm op: expected a CPU tensor"),
    }
}

/// Runs `f` on the contiguous data of a CPU tensor as float32 (widened from f16 or bf16).
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    with_cpu(t, |cs, l| f(&widened(cs, l)?))
}

/// An output buffer of `n` values of `T` (float32, f64, f16 or bf16) for a kernel or
/// conversion that writes every one of them.
///
/// Allocated as candle allocates its own ops' outputs (`alloc_uninit`), not zero-filled: a
/// zero-fill is a whole extra pass over memory (25 MB for NCHW 32x64x56x56, 18% of a
/// training step's time went to memset before, ours being two of the three fills).
pub(crate) fn output_buffer<T: WithDType>(n: usize) -> Result<Vec<T>> {
    use candle_core::backend::BackendDevice;
    // SAFETY: float32, f64, f16 and bf16 have no invalid bit patterns; every caller hands the
    // whole buffer to a core kernel or a conversion that writes every element before the
    // buffer is read (or returns an error, and the buffer is dropped unread).
    let storage = unsafe { candle_core::cpu_backend::CpuDevice.alloc_uninit(&Shape::from(n), T::DTYPE)? };
    T::cpu_storage_data(storage)
}

/// What a forward pass leaves for the backward pass and for the running-statistics update.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub saved: SavedStats,
    pub moments: Vec<Moments>,
}

/// Forward (batch statistics, or given statistics) and fused backward, both from the core.
pub(crate) struct BnOp {
    pub dims: Dims,
    pub eps: f64,
    pub affine: bool,
    /// `Some((mean, var))`: normalise with these (eval); `None`: batch statistics.
    pub stats: Option<(Vec<f64>, Vec<f64>)>,
    /// Differentiate as if the batch statistics were constants.
    pub detach: bool,
    pub shared: Arc<Mutex<Shared>>,
}

impl CustomOp3 for BnOp {
    fn name(&self) -> &'static str {
        "batchnorm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = self.dims;
        let mut sh = self.shared.lock().expect("batch norm state poisoned");
        let sh = &mut *sh;
        if let Some(x) = float64::values(s1, l1)? {
            let (g, b) = match (float64::values(s2, l2)?, float64::values(s3, l3)?) {
                (Some(g), Some(b)) => (g, b),
                _ => bail!("batch norm op: f64 input needs f64 gamma and beta"),
            };
            let (g, b) = if self.affine { (Some(g), Some(b)) } else { (None, None) };
            let y = float64::forward(x, d, g, b, self.eps, self.stats.as_ref(), self.detach, sh)?;
            return Ok((y, l1.shape().clone()));
        }
        let (g, b) = (widened(s2, l2)?, widened(s3, l3)?);
        let (g, b) = if self.affine { (Some(&*g), Some(&*b)) } else { (None, None) };
        let mut ws = Workspace::new();
        let y = match &self.stats {
            None => {
                let x = widened(s1, l1)?;
                let mut y = output_buffer(d.len())?;
                sh.moments.resize(d.channels, Moments::EMPTY);
                forward_train_into(&x, d, g, b, self.eps, &mut y, &mut sh.moments, &mut sh.saved, &mut ws).map_err(to_candle)?;
                if self.detach {
                    sh.saved.source = StatsSource::Running;
                }
                narrowed(y, storage_dtype(s1))?
            }
            Some((mean, var)) => {
                let (mean, var): (Vec<f32>, Vec<f32>) = mean.iter().zip(var).map(|(&m, &v)| (m as f32, v as f32)).unzip();
                let (mean, var) = (&mean, &var);
                // Half precision is normalised straight from its own storage (one pass).
                let y = match eval_converted(s1, l1, d, g, b, mean, var, self.eps, &mut ws)? {
                    Some(y) => y,
                    None => {
                        let mut y = output_buffer(d.len())?;
                        forward_eval_into(&widened(s1, l1)?, d, g, b, mean, var, self.eps, &mut y, &mut ws).map_err(to_candle)?;
                        CpuStorage::F32(y)
                    }
                };
                sh.saved = SavedStats {
                    mean: mean.iter().map(|&v| v as f64).collect(),
                    invstd: var.iter().map(|&v| inv_std(v as f64, self.eps)).collect(),
                    source: StatsSource::Running,
                };
                y
            }
        };
        Ok((y, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, gamma: &Tensor, beta: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.dims;
        let saved = &self.shared.lock().expect("batch norm state poisoned").saved;
        if x.dtype() == DType::F64 {
            let (dx, dg, db) = float64::backward(x, gamma, beta, dy, d, self.affine, saved)?;
            return Ok((Some(dx), Some(dg), Some(db)));
        }
        let mut dx = output_buffer(d.len())?;
        let (mut dg, mut db) = (vec![0.0f32; d.channels], vec![0.0f32; d.channels]);
        with_cpu_f32(x, |xs| {
            with_cpu_f32(dy, |gs| {
                let mut run =
                    |w: Option<&[f32]>| backward_into(xs, gs, d, w, saved, &mut dx, Some(&mut dg), Some(&mut db), &mut Workspace::new()).map_err(to_candle);
                if self.affine {
                    with_cpu_f32(gamma, |w| run(Some(w)))
                } else {
                    run(None)
                }
            })
        })?;
        let dev = x.device();
        Ok((Some(narrowed_like(dx, x)?), Some(Tensor::from_vec(dg, gamma.shape(), dev)?), Some(Tensor::from_vec(db, beta.shape(), dev)?)))
    }
}
