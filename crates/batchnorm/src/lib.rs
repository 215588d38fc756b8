//! # batchnorm
//!
//! Exact, complete and fast batch normalization (Ioffe & Szegedy, 2015) for float32 tensors,
//! with PyTorch's `BatchNorm{1,2,3}d` semantics and no framework underneath.
//!
//! Training normalises each channel with its batch mean and (biased) variance,
//! `y = gamma * (x - mean) / sqrt(var + eps) + beta`, and moves the running statistics toward
//! the batch's (exponential average with PyTorch's momentum, or a cumulative simple average;
//! the running variance from the unbiased batch variance, `m/(m-1)` times the biased one, by
//! default). Eval normalises with the running statistics. Statistics are per channel over
//! every other axis, for dense (`NC`), channels-first (`NCL`, `NCHW`, `NCDHW`) and
//! channels-last (`NLC`, `NHWC`, `NDHWC`) tensors.
//!
//! Tensors are float32; [`forward_eval_converted_into`] evaluates tensors stored in another
//! type (f16, bf16) through float32 a block at a time, given the two conversions, and
//! [`forward_train_f64_into`], [`forward_eval_f64_into`] and [`backward_f64_into`] take float64
//! tensors, with compensated sums (float64 accumulation would give them no margin).
//!
//! Accumulation is float64; the reduction order is fixed by the shape, so results are
//! bitwise identical whatever the number of threads. The `_into` kernels write into caller
//! buffers and reuse a [`Workspace`], so a training loop allocates nothing after its first
//! step.
//!
//! ```
//! use batchnorm::{BatchNorm, BatchNormConfig, Dims, Layout};
//! // A CNN activation: N=2, C=3, H=W=4, one gamma/beta per channel.
//! let mut bn = BatchNorm::new(BatchNormConfig::new(3)).unwrap();
//! let d = Dims::new(Layout::Nchw, &[2, 3, 4, 4]).unwrap();
//! let x: Vec<f32> = (0..d.len()).map(|i| (i % 7) as f32).collect();
//! let (y, saved) = bn.forward_train(&x, d).unwrap();          // batch statistics
//! let grads = bn.backward(&x, &y, d, &saved).unwrap();         // dx, dgamma, dbeta
//! assert_eq!(grads.dweight.as_ref().unwrap().len(), 3);
//! let (y_test, _) = bn.forward_eval(&x, d).unwrap();           // running statistics
//! assert_eq!(y_test.len(), x.len());
//! ```

#![warn(missing_docs)]

mod backward;
mod coefficients;
mod config;
pub mod conformance;
mod error;
#[cfg(target_arch = "x86_64")]
mod flat_rows;
mod float64;
mod fold;
mod forward_eval;
mod forward_eval_converted;
mod forward_train;
mod interleave;
mod io;
mod layer;
mod layout;
mod moments;
mod narrow;
mod parallel;
mod population;
mod running;
mod saved;
mod simd;
mod stats;
mod strips;
mod tiles;
mod workspace;

pub use backward::{backward_into, param_grads_into};
pub use coefficients::{fold_affine, fold_backward, inv_std};
pub use config::{BatchNormConfig, Momentum, RunningVar};
pub use error::{BnError, Result};
pub use float64::{backward_f64_into, forward_eval_f64_into, forward_train_f64_into};
pub use fold::{fold_into_conv, fold_into_linear};
pub use forward_eval::forward_eval_into;
pub use forward_eval_converted::forward_eval_converted_into;
pub use forward_train::forward_train_into;
pub use io::{load_state, load_state_file, load_state_from, save_state, save_state_file, state_tensors, write_atomic, OwnedTensor};
pub use layer::{BatchNorm, Gradients};
pub use layout::{parse_shape, Dims, Layout};
pub use moments::{merge_channels, Moments};
pub use parallel::reads_once;
pub use population::{PopulationEstimator, PopulationStats};
pub use running::{momentum_factor, running_var_sample, update_running, RunningValue};
/// Re-exported so callers can parse multi-layer files for [`load_state_from`].
pub use safetensors;
pub use saved::{SavedStats, StatsSource};
pub use stats::{batch_moments, batch_moments_into};
pub use workspace::Workspace;
