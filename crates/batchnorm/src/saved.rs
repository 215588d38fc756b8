//! What a forward pass keeps for its backward pass.

use crate::coefficients::inv_std;
use crate::parallel::{channels_in_parallel, CHANNEL_TASK};
use crate::simd::multiversion;

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
        SavedStats { mean: vec![0.0; channels], invstd: vec![0.0; channels], source: StatsSource::Batch }
    }

    pub(crate) fn resize(&mut self, channels: usize) {
        self.mean.resize(channels, 0.0);
        self.invstd.resize(channels, 0.0);
    }

    /// `(mean[c], invstd[c]) = f(c)` for every channel (see [`fill_pairs`]).
    pub(crate) fn fill(&mut self, f: impl Fn(usize) -> (f64, f64) + Sync) {
        fill_pairs(&mut self.mean, &mut self.invstd, f);
    }

    /// The running statistics as saved statistics: `mean`, `1 / sqrt(var + eps)`, source
    /// [`StatsSource::Running`].
    pub(crate) fn fill_running(&mut self, mean: &[f32], var: &[f32], eps: f64) {
        self.resize(mean.len());
        self.source = StatsSource::Running;
        running_into(mean, var, eps, &mut self.mean, &mut self.invstd);
    }
}

/// `(m[c], s[c]) = f(c)` for every channel, in per-channel tasks when there are many (a
/// square root and a division each: NC 16x400000 eval spent longer on them than on its data).
fn fill_pairs(m: &mut [f64], s: &mut [f64], f: impl Fn(usize) -> (f64, f64) + Sync) {
    let fill = |first: usize, m: &mut [f64], s: &mut [f64]| fill_run(first, m, s, &f);
    if !channels_in_parallel(m.len()) {
        fill(0, m, s);
    } else {
        use rayon::prelude::*;
        m.par_chunks_mut(CHANNEL_TASK).zip(s.par_chunks_mut(CHANNEL_TASK)).enumerate().for_each(|(i, (m, s))| fill(i * CHANNEL_TASK, m, s));
    }
}

/// Running statistics in float64: `m = mean`, `is = 1 / sqrt(var + eps)` per channel.
pub(crate) fn running_into(mean: &[f32], var: &[f32], eps: f64, m: &mut [f64], is: &mut [f64]) {
    fill_pairs(m, is, |c| (mean[c] as f64, inv_std(var[c] as f64, eps)));
}

multiversion! {
    /// `(mean[i], invstd[i]) = f(first + i)`.
    ///
    /// Loops over slices of one length for each use instead (the batch's moments, the running
    /// statistics), bit for bit the same, measured the same: NC 256x1024 at 1 thread, 6
    /// alternating rounds of 20,000 calls, forward 57.6 against 57.8 us, eval 27.35 against
    /// 27.2. Nor did AVX-512 copies of this loop, the moments' (`stats::moments_from_sums`)
    /// and the constants' (`forward_eval::coef_run`) pay for a third copy of each: NC
    /// 256x1024 forward, 3 alternating runs of 20,000 calls, 58.6-59.3 -> 58.2-58.4 us at 1
    /// thread, 37.1-37.7 -> 37.1-37.5 at 2.
    fn fill_run<F: Fn(usize) -> (f64, f64)>(first: usize, mean: &mut [f64], invstd: &mut [f64], f: &F) {
        for (i, (m, s)) in mean.iter_mut().zip(invstd).enumerate() {
            (*m, *s) = f(first + i);
        }
    }
}
