//! # batchnorm-candle
//!
//! A batch-normalization layer for [candle](https://github.com/huggingface/candle) whose
//! forward and backward passes are the `batchnorm` crate's fused, float64-accumulating
//! kernels, run as candle custom ops. Semantics are PyTorch's `BatchNorm{1,2,3}d`
//! (momentum or cumulative average, unbiased or biased running variance, `affine`,
//! `track_running_stats`); variables carry `candle_nn::batch_norm`'s names, so checkpoints
//! interchange with candle-nn and PyTorch.
//!
//! ## Training loops on glibc
//!
//! Under glibc's defaults a candle training step can spend more time faulting in fresh
//! pages for its tensors than in this layer; [`keep_freed_memory`], called first thing,
//! has glibc keep freed memory for reuse instead (a 64x256x14x14 step 21.5 -> 4.8 ms).

#![warn(missing_docs)]

mod alloc;
mod convert;
mod dims;
mod fallback;
mod float64;
mod half_precision;
mod layer;
mod ops;

pub use alloc::keep_freed_memory;
pub use batchnorm::Moments;
pub use batchnorm::{BatchNormConfig, Momentum, RunningVar};
pub use layer::{batch_norm, BatchNorm, Observer};

/// The core crate's errors as candle errors (the message is kept whole).
pub(crate) fn to_candle(e: batchnorm::BnError) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}
