//! What a forward pass keeps for its backward pass.

/// Where the statistics a forward pass normalised with came from; it decides which
/// backward formula applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatsSource {
    /// The batch's own statistics (training, or eval without running statistics): the
    /// gradient flows through the mean and the variance.
    #[default]
    Batch,
    /// The running statistics (eval): constants for the gradient.
    Running,
}

/// Per-channel mean and inverse standard deviation, in float64, as the forward pass used
/// them; the backward pass recomputes `x_hat = (x - mean) * invstd` from `x`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SavedStats {
    /// Per-channel mean used to normalise.
    pub mean: Vec<f64>,
    /// Per-channel `1 / sqrt(var + eps)` used to normalise.
    pub invstd: Vec<f64>,
    /// Whether those were batch or running statistics.
    pub source: StatsSource,
}

impl SavedStats {
    /// Empty saved statistics for `channels` channels (what the `_into` kernels fill).
    pub fn with_channels(channels: usize) -> Self {
        SavedStats {
            mean: vec![0.0; channels],
            invstd: vec![0.0; channels],
            source: StatsSource::Batch,
        }
    }

    pub(crate) fn resize(&mut self, channels: usize) {
        self.mean.resize(channels, 0.0);
        self.invstd.resize(channels, 0.0);
    }
}
