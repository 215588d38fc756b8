//! The layer: parameters, running statistics and the passes that use them.

use crate::backward::backward_into;
use crate::config::BatchNormConfig;
use crate::error::{check_len, BnError, Result};
use crate::forward_eval::normalize_with_saved;
use crate::forward_train::forward_train_into;
use crate::layout::Dims;
use crate::moments::Moments;
use crate::running::update_running;
use crate::saved::SavedStats;
use crate::workspace::Workspace;

/// Gradients of a backward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients {
    /// Gradient of the input, same layout as `x`.
    pub dx: Vec<f32>,
    /// Gradient of gamma (`weight`), when the layer is affine.
    pub dweight: Option<Vec<f32>>,
    /// Gradient of beta (`bias`), when the layer is affine.
    pub dbias: Option<Vec<f32>>,
}

/// A batch-normalization layer with PyTorch's `BatchNorm{1,2,3}d` semantics: learned
/// gamma/beta (`weight`/`bias`, init 1/0), running statistics (init 0/1) and
/// `num_batches_tracked`.
///
/// Training normalises with the batch statistics and updates the running ones; eval uses the
/// running statistics (or, with `track_running_stats = false`, the batch statistics).
/// Every method checks its inputs first: an `Err` leaves the layer exactly as it was.
///
/// ```
/// use batchnorm::{BatchNorm, BatchNormConfig, Dims, Layout};
/// let mut bn = BatchNorm::new(BatchNormConfig::new(2)).unwrap();
/// let d = Dims::new(Layout::Nc, &[4, 2]).unwrap();
/// let x = [1.0f32, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0];
/// let (y, saved) = bn.forward_train(&x, d).unwrap();
/// assert!((y[0] + 1.3416).abs() < 1e-3);          // (1 - 2.5) / sqrt(1.25)
/// assert_eq!(bn.num_batches_tracked(), 1);
/// assert!((bn.running_mean().unwrap()[1] - 2.5).abs() < 1e-5); // 0.9 * 0 + 0.1 * 25
/// let g = bn.backward(&x, &[1.0; 8], d, &saved).unwrap();
/// assert_eq!(g.dbias.unwrap(), vec![4.0, 4.0]);
/// let y_eval = bn.forward_eval(&x, d).unwrap().0;
/// assert_eq!(y_eval.len(), 8);
/// ```
#[derive(Debug, Clone)]
pub struct BatchNorm {
    config: BatchNormConfig,
    weight: Option<Vec<f32>>,
    bias: Option<Vec<f32>>,
    running_mean: Option<Vec<f32>>,
    running_var: Option<Vec<f32>>,
    num_batches_tracked: i64,
    moments: Vec<Moments>,
    ws: Workspace,
}

impl BatchNorm {
    /// A fresh layer: gamma = 1, beta = 0, running mean 0, running var 1, counter 0.
    pub fn new(config: BatchNormConfig) -> Result<Self> {
        config.validate()?;
        let c = config.num_features;
        Ok(BatchNorm {
            config,
            weight: config.affine.then(|| vec![1.0; c]),
            bias: config.affine.then(|| vec![0.0; c]),
            running_mean: config.track_running_stats.then(|| vec![0.0; c]),
            running_var: config.track_running_stats.then(|| vec![1.0; c]),
            num_batches_tracked: 0,
            moments: vec![Moments::EMPTY; c],
            ws: Workspace::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BatchNormConfig {
        &self.config
    }
    /// Number of channels C.
    pub fn num_features(&self) -> usize {
        self.config.num_features
    }
    /// gamma, when affine.
    pub fn weight(&self) -> Option<&[f32]> {
        self.weight.as_deref()
    }
    /// beta, when affine.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }
    /// gamma, mutable (for an optimiser), when affine.
    pub fn weight_mut(&mut self) -> Option<&mut [f32]> {
        self.weight.as_deref_mut()
    }
    /// beta, mutable, when affine.
    pub fn bias_mut(&mut self) -> Option<&mut [f32]> {
        self.bias.as_deref_mut()
    }
    /// Running mean, when tracked.
    pub fn running_mean(&self) -> Option<&[f32]> {
        self.running_mean.as_deref()
    }
    /// Running variance, when tracked.
    pub fn running_var(&self) -> Option<&[f32]> {
        self.running_var.as_deref()
    }
    /// Training batches seen (PyTorch's `num_batches_tracked`).
    pub fn num_batches_tracked(&self) -> i64 {
        self.num_batches_tracked
    }

    fn check_channels(&self, v: &[f32], what: &'static str) -> Result<()> {
        check_len(what, self.num_features(), v.len())
    }

    /// Sets gamma and beta; fails when the layer is not affine or a length is not C.
    pub fn set_affine(&mut self, weight: &[f32], bias: &[f32]) -> Result<()> {
        if !self.config.affine {
            return Err(BnError::Unsupported("the layer has affine = false".into()));
        }
        self.check_channels(weight, "weight")?;
        self.check_channels(bias, "bias")?;
        self.weight = Some(weight.to_vec());
        self.bias = Some(bias.to_vec());
        Ok(())
    }

    /// Sets the running statistics; fails when they are not tracked or a length is not C.
    pub fn set_running_stats(&mut self, mean: &[f32], var: &[f32]) -> Result<()> {
        if !self.config.track_running_stats {
            return Err(BnError::Unsupported("the layer has track_running_stats = false".into()));
        }
        self.check_channels(mean, "running_mean")?;
        self.check_channels(var, "running_var")?;
        self.running_mean = Some(mean.to_vec());
        self.running_var = Some(var.to_vec());
        Ok(())
    }

    /// Sets `num_batches_tracked`.
    pub fn set_num_batches_tracked(&mut self, n: i64) {
        self.num_batches_tracked = n;
    }

    /// gamma = 1, beta = 0.
    pub fn reset_parameters(&mut self) {
        self.weight.iter_mut().for_each(|w| w.fill(1.0));
        self.bias.iter_mut().for_each(|b| b.fill(0.0));
    }

    /// Running mean 0, running var 1, counter 0.
    pub fn reset_running_stats(&mut self) {
        self.running_mean.iter_mut().for_each(|v| v.fill(0.0));
        self.running_var.iter_mut().for_each(|v| v.fill(1.0));
        self.num_batches_tracked = 0;
    }

    /// Both resets: the layer as [`BatchNorm::new`] made it.
    pub fn reset(&mut self) {
        self.reset_parameters();
        self.reset_running_stats();
    }

    fn check_dims(&self, d: Dims) -> Result<()> {
        if d.channels != self.num_features() {
            return Err(BnError::ChannelMismatch { expected: self.num_features(), got: d.channels });
        }
        Ok(())
    }

    /// Forward pass in training (`train = true`) or eval mode.
    pub fn forward(&mut self, x: &[f32], d: Dims, train: bool) -> Result<(Vec<f32>, SavedStats)> {
        if train {
            self.forward_train(x, d)
        } else {
            self.forward_eval(x, d)
        }
    }

    /// Training forward; see [`BatchNorm::forward_train_into`].
    pub fn forward_train(&mut self, x: &[f32], d: Dims) -> Result<(Vec<f32>, SavedStats)> {
        let mut y = vec![0.0; x.len()];
        let mut saved = SavedStats::with_channels(self.num_features());
        self.forward_train_into(x, d, &mut y, &mut saved)?;
        Ok((y, saved))
    }

    /// Normalises with the batch statistics, leaving them in `self.moments`; no state change.
    fn batch_forward(&mut self, x: &[f32], d: Dims, y: &mut [f32], saved: &mut SavedStats) -> Result<()> {
        forward_train_into(x, d, self.weight.as_deref(), self.bias.as_deref(), self.config.eps, y, &mut self.moments, saved, &mut self.ws)
    }

    /// Training forward into `y`: batch statistics (biased variance) normalise `x`; when
    /// tracking, `num_batches_tracked += 1` and the running statistics move toward the batch's
    /// (see [`crate::update_running`]). An empty batch (N = 0) writes nothing and leaves the
    /// state unchanged; one value per channel is refused ([`BnError::Degenerate`]).
    pub fn forward_train_into(&mut self, x: &[f32], d: Dims, y: &mut [f32], saved: &mut SavedStats) -> Result<()> {
        self.check_dims(d)?;
        self.batch_forward(x, d, y, saved)?;
        if d.is_empty() {
            return Ok(());
        }
        if let (Some(rm), Some(rv)) = (self.running_mean.as_deref_mut(), self.running_var.as_deref_mut()) {
            self.num_batches_tracked += 1;
            update_running(&self.config, &self.moments, self.num_batches_tracked, rm, rv);
        }
        Ok(())
    }

    /// Eval forward; see [`BatchNorm::forward_eval_into`].
    pub fn forward_eval(&mut self, x: &[f32], d: Dims) -> Result<(Vec<f32>, SavedStats)> {
        let mut y = vec![0.0; x.len()];
        let mut saved = SavedStats::with_channels(self.num_features());
        self.forward_eval_into(x, d, &mut y, &mut saved)?;
        Ok((y, saved))
    }

    /// Eval forward into `y`: normalise with the running statistics; without them
    /// (`track_running_stats = false`) with the batch statistics, as PyTorch does. Never
    /// changes the state.
    pub fn forward_eval_into(&mut self, x: &[f32], d: Dims, y: &mut [f32], saved: &mut SavedStats) -> Result<()> {
        self.check_dims(d)?;
        match (self.running_mean.as_deref(), self.running_var.as_deref()) {
            (Some(rm), Some(rv)) => {
                // Checked first, so a refused call leaves `saved` as it was; the parameters
                // and running statistics are the layer's own, `check_dims` sized them.
                check_len("x", d.len(), x.len())?;
                check_len("y", d.len(), y.len())?;
                saved.fill_running(rm, rv, self.config.eps);
                normalize_with_saved(x, d, self.weight.as_deref(), self.bias.as_deref(), saved, y, &mut self.ws, false, crate::simd::streams_eval(d));
                Ok(())
            }
            _ => self.batch_forward(x, d, y, saved),
        }
    }

    /// Backward pass; see [`BatchNorm::backward_into`].
    pub fn backward(&mut self, x: &[f32], dy: &[f32], d: Dims, saved: &SavedStats) -> Result<Gradients> {
        let c = self.num_features();
        let mut dx = vec![0.0; x.len()];
        let (mut dw, mut db) = if self.config.affine { (Some(vec![0.0; c]), Some(vec![0.0; c])) } else { (None, None) };
        self.backward_into(x, dy, d, saved, &mut dx, dw.as_deref_mut(), db.as_deref_mut())?;
        Ok(Gradients { dx, dweight: dw, dbias: db })
    }

    /// Backward pass into caller buffers for the forward pass that produced `saved` from `x`
    /// (see [`crate::backward_into`] for the formulas). Gradients are written, not accumulated.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_into(
        &mut self,
        x: &[f32],
        dy: &[f32],
        d: Dims,
        saved: &SavedStats,
        dx: &mut [f32],
        dweight: Option<&mut [f32]>,
        dbias: Option<&mut [f32]>,
    ) -> Result<()> {
        self.check_dims(d)?;
        backward_into(x, dy, d, self.weight.as_deref(), saved, dx, dweight, dbias, &mut self.ws)
    }
}
