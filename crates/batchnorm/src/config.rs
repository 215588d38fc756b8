//! The layer's configuration, validated once when it is built.

use crate::error::{BnError, Result};

/// How the running statistics follow the batch statistics during training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Momentum {
    /// Exponential moving average in PyTorch's convention:
    /// `running = (1 - m) * running + m * batch`, `m` in `[0, 1]` (PyTorch's default 0.1).
    ///
    /// Keras and ONNX write the same average with the weight on the *old* value
    /// (`running = m' * running + (1 - m') * batch`): convert with `m = 1 - m'`
    /// (Keras' default 0.99 is `Exponential(0.01)`, ONNX's 0.9 is `Exponential(0.1)`).
    Exponential(f64),
    /// Cumulative simple average of every batch seen (PyTorch's `momentum=None`):
    /// `m = 1 / num_batches_tracked` after its increment, so each batch weighs the same.
    CumulativeAverage,
}

/// Which batch variance updates `running_var`. Normalisation always uses the biased one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunningVar {
    /// `sum((x - mean)^2) / (M - 1)`: the biased variance times `M / (M - 1)`, the seed's and
    /// the paper's correction, and PyTorch's behaviour (the default).
    Unbiased,
    /// `sum((x - mean)^2) / M`, as ONNX and Keras do.
    Biased,
}

/// Configuration of a batch-normalization layer; build it with [`BatchNormConfig::new`] and the
/// chained setters, then [`BatchNormConfig::validate`] (called by every constructor that takes
/// one).
///
/// ```
/// use batchnorm::{BatchNormConfig, Momentum};
/// let cfg = BatchNormConfig::new(64).eps(1e-3).momentum(Momentum::CumulativeAverage);
/// assert!(cfg.validate().is_ok());
/// assert!(BatchNormConfig::new(64).eps(0.0).validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// Number of channels (features) C.
    pub num_features: usize,
    /// Added to the variance inside the square root; must be finite and > 0. Default 1e-5.
    pub eps: f64,
    /// Running-statistics rule. Default `Exponential(0.1)`.
    pub momentum: Momentum,
    /// Which batch variance feeds `running_var`. Default `Unbiased`.
    pub running_var: RunningVar,
    /// Whether gamma (`weight`) and beta (`bias`) exist. Default true.
    pub affine: bool,
    /// Whether running statistics exist; when false, eval mode normalises with the batch
    /// statistics too. Default true.
    pub track_running_stats: bool,
}

impl BatchNormConfig {
    /// PyTorch's defaults for `num_features` channels.
    pub fn new(num_features: usize) -> Self {
        BatchNormConfig {
            num_features,
            eps: 1e-5,
            momentum: Momentum::Exponential(0.1),
            running_var: RunningVar::Unbiased,
            affine: true,
            track_running_stats: true,
        }
    }
    /// Sets `eps`.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// Sets the running-statistics rule.
    pub fn momentum(mut self, momentum: Momentum) -> Self {
        self.momentum = momentum;
        self
    }
    /// Sets which batch variance feeds `running_var`.
    pub fn running_var(mut self, running_var: RunningVar) -> Self {
        self.running_var = running_var;
        self
    }
    /// Sets `affine`.
    pub fn affine(mut self, affine: bool) -> Self {
        self.affine = affine;
        self
    }
    /// Sets `track_running_stats`.
    pub fn track_running_stats(mut self, track: bool) -> Self {
        self.track_running_stats = track;
        self
    }

    /// Checks every field's domain: `num_features >= 1`, `eps` finite and > 0, momentum in
    /// `[0, 1]` and not NaN.
    pub fn validate(&self) -> Result<()> {
        if self.num_features == 0 {
            return Err(BnError::InvalidConfig("num_features must be at least 1".into()));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(BnError::InvalidConfig(format!("eps must be finite and > 0, got {}", self.eps)));
        }
        if let Momentum::Exponential(m) = self.momentum {
            if !(0.0..=1.0).contains(&m) {
                return Err(BnError::InvalidConfig(format!("momentum must be in [0, 1] (PyTorch convention; Keras/ONNX's m' is 1 - m), got {m}")));
            }
        }
        Ok(())
    }
}
