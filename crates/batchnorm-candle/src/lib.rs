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
//! Every candle training step allocates and frees tensor-sized buffers (this layer's output
//! and input gradient, the gradient store's zeros and sums). Under glibc's defaults some of
//! them come from fresh `mmap`s whose pages fault in again every step, which can cost more
//! than the layer itself: a training step of NCHW 64x256x14x14 through this layer took 21.5
//! ms with about 12,000 page faults a step, and 4.8 ms once freed memory was kept for reuse
//! (2 threads, the project's machine). A loop that keeps it, as `bnlab` does, sets before
//! building any tensor:
//!
//! ```
//! # #[cfg(all(target_os = "linux", target_env = "gnu"))] {
//! // SAFETY: mallopt only changes allocator parameters.
//! let kept = unsafe {
//!     libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1 // blocks up to 32 MB from the heap
//!         && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1 // freed memory kept there
//! };
//! assert!(kept, "glibc refused the setting");
//! # }
//! ```
//!
//! (or `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296`
//! in the environment). Nothing else changes: the same memory is simply reused.

#![warn(missing_docs)]

mod dims;
mod fallback;
mod layer;
mod ops;

pub use batchnorm::Moments;
pub use batchnorm::{BatchNormConfig, Momentum, RunningVar};
pub use layer::{batch_norm, BatchNorm, Observer};

/// The core crate's errors as candle errors (the message is kept whole).
pub(crate) fn to_candle(e: batchnorm::BnError) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}
