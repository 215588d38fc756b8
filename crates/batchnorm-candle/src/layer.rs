//! The `BatchNorm` module.

use crate::dims::dims_of;
use crate::fallback;
use crate::ops::{BnOp, Shared};
use batchnorm::{BatchNormConfig, Moments};
use candle_core::{bail, DType, Device, ModuleT, Result, Tensor, Var, WithDType};
use candle_nn::{Init, VarBuilder};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// Collects the per-channel moments of every training batch a layer sees.
pub type Observer = Arc<Mutex<Vec<Vec<Moments>>>>;

/// Batch normalization as a candle [`ModuleT`], with PyTorch's semantics and the `batchnorm`
/// crate's fused kernels behind it.
///
/// `forward_t(x, true)` normalises with the batch statistics and updates the running ones
/// (when tracked); `forward_t(x, false)` uses the running statistics (or the batch's, when
/// `track_running_stats` is false). On CPU tensors of f32 forward and backward are single
/// fused kernels (custom ops over x, gamma and beta); f16 and bf16 ones run the same kernels
/// on a float32 copy, their output and gradient rounded back to the input's type; f64 ones
/// run the core's float64 kernels (compensated sums, f64 running statistics updated in
/// f64). Other devices run composed candle ops with the same semantics.
///
/// The variables are named as `candle_nn::batch_norm` and PyTorch name them (`weight`,
/// `bias`, `running_mean`, `running_var`), so checkpoints interchange.
///
/// ```
/// use batchnorm_candle::{batch_norm, BatchNormConfig};
/// use candle_core::{DType, Device, ModuleT, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let bn = batch_norm(3, BatchNormConfig::new(3), vb.pp("bn")).unwrap();
/// let x = Tensor::arange(0f32, 24., &Device::Cpu).unwrap().reshape((2, 3, 2, 2)).unwrap();
/// let y = bn.forward_t(&x, true).unwrap();
/// assert_eq!(y.dims(), &[2, 3, 2, 2]);
/// assert_eq!(bn.num_batches_tracked(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct BatchNorm {
    config: BatchNormConfig,
    channels_last: bool,
    detach_statistics: bool,
    composed_ops: bool,
    observer: Option<Observer>,
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    running_mean: Option<Var>,
    running_var: Option<Var>,
    num_batches_tracked: Arc<AtomicI64>,
}

/// Creates a [`BatchNorm`] over `num_features` channels with its variables from `vb`:
/// `weight` (init 1) and `bias` (init 0) when affine, `running_mean` (0) and `running_var`
/// (1) when tracking. `config.num_features` is replaced by `num_features`.
pub fn batch_norm(num_features: usize, config: BatchNormConfig, vb: VarBuilder) -> Result<BatchNorm> {
    let config = BatchNormConfig { num_features, ..config };
    config.validate().map_err(crate::to_candle)?;
    let (weight, bias) = if config.affine {
        (Some(vb.get_with_hints(num_features, "weight", Init::Const(1.))?), Some(vb.get_with_hints(num_features, "bias", Init::Const(0.))?))
    } else {
        (None, None)
    };
    let (running_mean, running_var) = if config.track_running_stats {
        (
            Some(Var::from_tensor(&vb.get_with_hints(num_features, "running_mean", Init::Const(0.))?)?),
            Some(Var::from_tensor(&vb.get_with_hints(num_features, "running_var", Init::Const(1.))?)?),
        )
    } else {
        (None, None)
    };
    Ok(BatchNorm {
        config,
        channels_last: false,
        detach_statistics: false,
        composed_ops: false,
        observer: None,
        weight,
        bias,
        running_mean,
        running_var,
        num_batches_tracked: Arc::new(AtomicI64::new(0)),
    })
}

impl BatchNorm {
    /// Inputs of rank 3 to 5 are channels-last (`NLC`, `NHWC`, `NDHWC`) rather than channels-first.
    pub fn channels_last(mut self, yes: bool) -> Self {
        self.channels_last = yes;
        self
    }
    /// Treat the batch mean and variance as constants in the backward pass (the naive
    /// scheme the paper's section 2 shows to fail: the gradient ignores that normalisation
    /// undoes what it asks for). For experiments only; the default (false) is correct BN.
    pub fn detach_statistics(mut self, yes: bool) -> Self {
        self.detach_statistics = yes;
        self
    }
    /// Runs composed candle ops (the path of tensors on other devices) even where the fused
    /// kernels apply: slower, the same semantics, gradients from candle's autograd. For
    /// comparisons; the default (false) takes the kernels.
    pub fn composed_ops(mut self, yes: bool) -> Self {
        self.composed_ops = yes;
        self
    }
    /// Records the moments of every training batch into `observer` (None: stop).
    pub fn set_observer(&mut self, observer: Option<Observer>) {
        self.observer = observer;
    }
    /// Normalises with the batch's own statistics and returns them, without touching the
    /// running statistics or the counter (for population statistics, the paper's
    /// Algorithm 2, with frozen weights).
    pub fn forward_batch_stats(&self, x: &Tensor) -> Result<(Tensor, Vec<Moments>)> {
        let probe = BatchNorm { running_mean: None, running_var: None, observer: None, ..self.clone() };
        let collect: Observer = Arc::new(Mutex::new(Vec::new()));
        let probe = BatchNorm { observer: Some(collect.clone()), ..probe };
        let y = probe.forward_t(x, true)?;
        let m = collect.lock().expect("observer").pop().unwrap_or_default();
        Ok((y, m))
    }
    /// The configuration.
    pub fn config(&self) -> &BatchNormConfig {
        &self.config
    }
    /// gamma, when affine.
    pub fn weight(&self) -> Option<&Tensor> {
        self.weight.as_ref()
    }
    /// beta, when affine.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    /// The running mean, when tracked.
    pub fn running_mean(&self) -> Option<&Tensor> {
        self.running_mean.as_ref().map(Var::as_tensor)
    }
    /// The running variance, when tracked.
    pub fn running_var(&self) -> Option<&Tensor> {
        self.running_var.as_ref().map(Var::as_tensor)
    }
    /// Training batches seen (PyTorch's `num_batches_tracked`; not a candle variable, so
    /// candle-nn checkpoints without it still load).
    pub fn num_batches_tracked(&self) -> i64 {
        self.num_batches_tracked.load(Ordering::Relaxed)
    }
    /// Sets `num_batches_tracked` (after loading a checkpoint that recorded it).
    pub fn set_num_batches_tracked(&self, n: i64) {
        self.num_batches_tracked.store(n, Ordering::Relaxed)
    }

    /// Writes new running statistics from one training batch's moments (float64 update).
    fn update_running(&self, moments: &[Moments]) -> Result<()> {
        if let Some(o) = &self.observer {
            o.lock().expect("observer").push(moments.to_vec());
        }
        let (Some(rm), Some(rv)) = (&self.running_mean, &self.running_var) else { return Ok(()) };
        let n = self.num_batches_tracked.fetch_add(1, Ordering::Relaxed) + 1;
        // f64 statistics are updated in f64; f32, f16 and bf16 ones through float32.
        if rm.dtype() == DType::F64 {
            self.write_running::<f64>(rm, rv, moments, n)
        } else {
            self.write_running::<f32>(rm, rv, moments, n)
        }
    }

    /// The running statistics `rm`, `rv` moved by one batch's `moments` (the core's
    /// `update_running` over copies of them in `T`), written back in their own dtype.
    fn write_running<T: batchnorm::RunningValue + WithDType>(&self, rm: &Var, rv: &Var, moments: &[Moments], n: i64) -> Result<()> {
        let (dt, dev) = (rm.dtype(), rm.device());
        let mut m: Vec<T> = rm.as_tensor().to_dtype(T::DTYPE)?.to_vec1()?;
        let mut v: Vec<T> = rv.as_tensor().to_dtype(T::DTYPE)?.to_vec1()?;
        batchnorm::update_running(&self.config, moments, n, &mut m, &mut v);
        rm.set(&Tensor::from_vec(m, self.config.num_features, dev)?.to_dtype(dt)?)?;
        rv.set(&Tensor::from_vec(v, self.config.num_features, dev)?.to_dtype(dt)?)?;
        Ok(())
    }

    /// gamma and beta for the op in `dtype` (its kernels' type: f64 or float32); constant 1/0
    /// when the layer is not affine.
    fn params(&self, dev: &Device, dtype: DType) -> Result<(Tensor, Tensor)> {
        match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => Ok((w.to_dtype(dtype)?, b.to_dtype(dtype)?)),
            _ => {
                let c = self.config.num_features;
                Ok((Tensor::ones(c, dtype, dev)?, Tensor::zeros(c, dtype, dev)?))
            }
        }
    }

    fn fused(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, d) = dims_of(x.dims(), self.channels_last, self.config.num_features)?;
        let batch = train || self.running_mean.is_none();
        let stats = if batch {
            None
        } else {
            let rm = self.running_mean.as_ref().expect("tracked").as_tensor();
            let rv = self.running_var.as_ref().expect("tracked").as_tensor();
            Some((rm.to_dtype(DType::F64)?.to_vec1()?, rv.to_dtype(DType::F64)?.to_vec1()?))
        };
        let shared = Arc::new(Mutex::new(Shared::default()));
        let op = BnOp { dims: d, eps: self.config.eps, affine: self.weight.is_some(), stats, detach: self.detach_statistics, shared: shared.clone() };
        let kernels = if x.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
        let (g, b) = self.params(x.device(), kernels)?;
        let y = x.contiguous()?.apply_op3_arc(&g, &b, Arc::new(Box::new(op)))?;
        if train && !d.is_empty() {
            let moments = std::mem::take(&mut shared.lock().expect("batch norm state poisoned").moments);
            self.update_running(&moments)?;
        }
        Ok(y)
    }

    fn composed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, d) = dims_of(x.dims(), self.channels_last, self.config.num_features)?;
        let xc = fallback::to_channels_first(x, self.channels_last)?;
        let (w, b) = (self.weight.as_ref(), self.bias.as_ref());
        let y = match (&self.running_mean, &self.running_var, train) {
            (Some(rm), Some(rv), false) => fallback::eval(&xc, w, b, rm.as_tensor(), rv.as_tensor(), self.config.eps)?,
            _ => {
                if d.per_channel() == 1 {
                    bail!("expected more than 1 value per channel when training, got input of shape {:?}", x.dims());
                }
                let (y, mean, var) = fallback::train(&xc, w, b, self.config.eps, self.detach_statistics)?;
                if train && !d.is_empty() {
                    let m = d.per_channel() as f64;
                    let moments: Vec<Moments> = mean.iter().zip(&var).map(|(&mean, &v)| Moments { count: m, mean, m2: v * m }).collect();
                    self.update_running(&moments)?;
                }
                y
            }
        };
        fallback::from_channels_first(&y, self.channels_last)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // candle panics on float ops over integer tensors; an error names the cause instead.
        if !x.dtype().is_float() {
            bail!("batch norm takes floating-point input (f16, bf16, f32 or f64), got {:?}", x.dtype());
        }
        match (x.device().is_cpu() && !self.composed_ops, x.dtype()) {
            // f16 and bf16 are widened to float32 inside the op (see `half_precision.rs`);
            // f64 has kernels of its own (`float64.rs`).
            (true, DType::F32 | DType::F16 | DType::BF16 | DType::F64) => self.fused(x, train),
            _ => self.composed(x, train),
        }
    }
}
