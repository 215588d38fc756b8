//! The running-statistics update rule.

use crate::config::{BatchNormConfig, Momentum, RunningVar};
use crate::moments::Moments;
use crate::simd::multiversion;

/// The weight `m` of the new batch in `running = (1 - m) * running + m * batch`, given the
/// value of `num_batches_tracked` *after* this batch's increment.
pub fn momentum_factor(momentum: Momentum, num_batches_tracked: i64) -> f64 {
    match momentum {
        Momentum::Exponential(m) => m,
        Momentum::CumulativeAverage => 1.0 / num_batches_tracked.max(1) as f64,
    }
}

/// The batch variance that feeds `running_var`: `m2 / (M - 1)` (unbiased, the seed's
/// m/(m-1) correction) or `m2 / M` (biased).
pub fn running_var_sample(m: &Moments, rule: RunningVar) -> f64 {
    match rule {
        RunningVar::Unbiased => m.var_unbiased(),
        RunningVar::Biased => m.var_biased(),
    }
}

/// The element types running statistics are kept in (float32, or float64 beside the float64
/// kernels): the update runs in float64 and rounds once into them.
pub trait RunningValue: Copy + Send + Sync {
    /// The value, widened exactly.
    fn widen(self) -> f64;
    /// `v` rounded to this type.
    fn round(v: f64) -> Self;
}

impl RunningValue for f32 {
    #[inline(always)]
    fn widen(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn round(v: f64) -> f32 {
        v as f32
    }
}

impl RunningValue for f64 {
    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }
    #[inline(always)]
    fn round(v: f64) -> f64 {
        v
    }
}

/// Applies one training batch's moments to the running statistics (float32 or float64), in
/// float64: `running_mean = (1 - f) * running_mean + f * mean_B`,
/// `running_var = (1 - f) * running_var + f * var_B` with `f` from [`momentum_factor`].
///
/// ```
/// use batchnorm::{update_running, BatchNormConfig, Moments};
/// let cfg = BatchNormConfig::new(1); // momentum 0.1, unbiased running variance
/// let batch = [Moments { count: 4.0, mean: 2.0, m2: 6.0 }]; // unbiased variance 2
/// let (mut m, mut v) = ([0.0f64], [1.0f64]);
/// update_running(&cfg, &batch, 1, &mut m, &mut v);
/// assert!((m[0] - 0.2).abs() < 1e-15 && (v[0] - 1.1).abs() < 1e-15);
/// ```
pub fn update_running<T: RunningValue>(cfg: &BatchNormConfig, moments: &[Moments], num_batches_tracked: i64, running_mean: &mut [T], running_var: &mut [T]) {
    let f = momentum_factor(cfg.momentum, num_batches_tracked);
    let sample = |m: &Moments| running_var_sample(m, cfg.running_var);
    update_run(f, moments, running_mean, running_var, &sample);
}

multiversion! {
    /// [`update_running`]'s loop, also compiled for AVX2 (its divisions vectorise there).
    fn update_run<T: RunningValue, V: Fn(&Moments) -> f64>(f: f64, moments: &[Moments], running_mean: &mut [T], running_var: &mut [T], sample: &V) {
        for ((m, rm), rv) in moments.iter().zip(running_mean).zip(running_var) {
            *rm = T::round((1.0 - f) * rm.widen() + f * m.mean);
            *rv = T::round((1.0 - f) * rv.widen() + f * sample(m));
        }
    }
}
