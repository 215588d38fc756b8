//! Population statistics after training (the paper's Algorithm 2, "precise BN").

use crate::config::RunningVar;
use crate::error::{check_len, BnError, Result};
use crate::layer::BatchNorm;
use crate::layout::Dims;
use crate::moments::Moments;
use crate::stats::batch_moments;

/// How the batches' statistics are combined into population statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopulationEstimator {
    /// The paper's Algorithm 2: every batch weighs the same. `E[x] = mean over batches of
    /// mu_B`; `Var[x] = mean over batches of the batch variance`, unbiased
    /// (`m/(m-1) * sigma_B^2`) or biased as the layer's [`RunningVar`] says.
    EqualWeight,
    /// The exact moments of all values seen, pooled (Chan et al.): `mean = sum(x) / n`,
    /// `var = M2 / (n - 1)` (unbiased) or `M2 / n` (biased).
    Pooled,
}

/// Accumulates per-channel batch statistics over K batches, run with frozen weights, and
/// turns them into population statistics for inference.
///
/// ```
/// use batchnorm::*;
/// let mut pop = PopulationStats::new(1);
/// let d = Dims::new(Layout::Nc, &[2, 1]).unwrap();
/// pop.add_batch(&[0.0, 2.0], d).unwrap();   // mean 1, biased var 1
/// pop.add_batch(&[4.0, 6.0], d).unwrap();   // mean 5, biased var 1
/// let (mean, var) = pop.finish(PopulationEstimator::EqualWeight, RunningVar::Unbiased).unwrap();
/// assert_eq!((mean[0], var[0]), (3.0, 2.0)); // var: 2/(2-1) * 1
/// let (mean, var) = pop.finish(PopulationEstimator::Pooled, RunningVar::Biased).unwrap();
/// assert_eq!((mean[0], var[0]), (3.0, 5.0));
/// ```
#[derive(Debug, Clone)]
pub struct PopulationStats {
    batches: usize,
    sum_mean: Vec<f64>,
    sum_var_unbiased: Vec<f64>,
    sum_var_biased: Vec<f64>,
    pooled: Vec<Moments>,
}

impl PopulationStats {
    /// An empty accumulator for `channels` channels.
    pub fn new(channels: usize) -> Self {
        PopulationStats {
            batches: 0,
            sum_mean: vec![0.0; channels],
            sum_var_unbiased: vec![0.0; channels],
            sum_var_biased: vec![0.0; channels],
            pooled: vec![Moments::EMPTY; channels],
        }
    }

    /// Batches added so far (K).
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Adds one batch's per-channel moments; each channel needs a finite count of at least 2
    /// values (a NaN or infinite count, which only a caller's own arithmetic makes, is refused
    /// like a count of 1: merged, it would make the pooled statistics NaN).
    pub fn add_moments(&mut self, moments: &[Moments]) -> Result<()> {
        check_len("moments", self.sum_mean.len(), moments.len())?;
        if let Some(m) = moments.iter().find(|m| !(m.count.is_finite() && m.count >= 2.0)) {
            return Err(BnError::Degenerate { shape: vec![m.count as usize] });
        }
        for (c, m) in moments.iter().enumerate() {
            self.sum_mean[c] += m.mean;
            self.sum_var_unbiased[c] += m.var_unbiased();
            self.sum_var_biased[c] += m.var_biased();
            self.pooled[c] = self.pooled[c].merge(m);
        }
        self.batches += 1;
        Ok(())
    }

    /// Adds the batch `x` (the layer's input for that batch).
    pub fn add_batch(&mut self, x: &[f32], d: Dims) -> Result<()> {
        if d.channels != self.sum_mean.len() {
            return Err(BnError::ChannelMismatch { expected: self.sum_mean.len(), got: d.channels });
        }
        if d.per_channel() < 2 {
            return Err(BnError::Degenerate { shape: vec![d.outer, d.channels, d.inner] });
        }
        self.add_moments(&batch_moments(x, d)?)
    }

    /// The population `(mean, var)` per channel; fails when no batch was added.
    pub fn finish(&self, est: PopulationEstimator, var: RunningVar) -> Result<(Vec<f32>, Vec<f32>)> {
        if self.batches == 0 {
            return Err(BnError::Unsupported("no batch was added to the population statistics".into()));
        }
        let k = self.batches as f64;
        Ok(match est {
            PopulationEstimator::EqualWeight => {
                let sv = match var {
                    RunningVar::Unbiased => &self.sum_var_unbiased,
                    RunningVar::Biased => &self.sum_var_biased,
                };
                (self.sum_mean.iter().map(|s| (s / k) as f32).collect(), sv.iter().map(|s| (s / k) as f32).collect())
            }
            PopulationEstimator::Pooled => (
                self.pooled.iter().map(|m| m.mean as f32).collect(),
                self.pooled
                    .iter()
                    .map(|m| match var {
                        RunningVar::Unbiased => m.var_unbiased() as f32,
                        RunningVar::Biased => m.var_biased() as f32,
                    })
                    .collect(),
            ),
        })
    }

    /// Writes the population statistics into `bn`'s running statistics (with the layer's own
    /// [`RunningVar`] rule). `num_batches_tracked` is left as it was.
    pub fn apply_to(&self, bn: &mut BatchNorm, est: PopulationEstimator) -> Result<()> {
        if bn.num_features() != self.sum_mean.len() {
            return Err(BnError::ChannelMismatch { expected: bn.num_features(), got: self.sum_mean.len() });
        }
        let (mean, var) = self.finish(est, bn.config().running_var)?;
        bn.set_running_stats(&mean, &var)
    }
}
