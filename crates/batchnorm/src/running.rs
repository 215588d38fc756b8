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

/// Applies one training batch's moments to the running statistics, in float64:
/// `running_mean = (1 - f) * running_mean + f * mean_B`,
/// `running_var = (1 - f) * running_var + f * var_B` with `f` from [`momentum_factor`].
pub fn update_running(cfg: &BatchNormConfig, moments: &[Moments], num_batches_tracked: i64, running_mean: &mut [f32], running_var: &mut [f32]) {
    let f = momentum_factor(cfg.momentum, num_batches_tracked);
    let sample = |m: &Moments| running_var_sample(m, cfg.running_var);
    update_run(f, moments, running_mean, running_var, &sample);
}

multiversion! {
    /// [`update_running`]'s loop, also compiled for AVX2 (its divisions vectorise there).
    fn update_run<V: Fn(&Moments) -> f64>(f: f64, moments: &[Moments], running_mean: &mut [f32], running_var: &mut [f32], sample: &V) {
        for ((m, rm), rv) in moments.iter().zip(running_mean).zip(running_var) {
            *rm = ((1.0 - f) * *rm as f64 + f * m.mean) as f32;
            *rv = ((1.0 - f) * *rv as f64 + f * sample(m)) as f32;
        }
    }
}
