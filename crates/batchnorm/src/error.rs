//! The one error type of the crate.

use std::fmt;

/// Everything that can go wrong in this crate. Every fallible operation validates its inputs
/// before it touches any state, so an `Err` always means the layer is exactly as it was.
#[derive(Debug, Clone, PartialEq)]
pub enum BnError {
    /// The shape does not have the rank the layout needs (`NC`: 2, `NCHW`: 4, ...).
    RankMismatch {
        /// The layout that was asked for.
        layout: &'static str,
        /// The rank that layout needs.
        expected: usize,
        /// The rank of the shape that was given.
        got: usize,
    },
    /// The tensor's channel axis does not match the layer's number of features.
    ChannelMismatch {
        /// The layer's number of features.
        expected: usize,
        /// The size of the tensor's channel axis.
        got: usize,
    },
    /// A buffer's length does not match what its shape or role needs.
    LengthMismatch {
        /// Which buffer (`x`, `dy`, `weight`, `y`, ...).
        what: &'static str,
        /// The length it must have.
        expected: usize,
        /// The length it has.
        got: usize,
    },
    /// Training with one value per channel (M = 1): the batch variance is undefined.
    /// PyTorch: "Expected more than 1 value per channel when training".
    Degenerate {
        /// The shape of the offending input.
        shape: Vec<usize>,
    },
    /// A configuration value is out of its domain (eps <= 0, momentum outside [0, 1], ...).
    InvalidConfig(String),
    /// The operation needs something the layer does not have (running statistics when
    /// `track_running_stats` is false, saved statistics from another batch, ...).
    Unsupported(String),
    /// A safetensors state file is corrupt, truncated or does not match the layer.
    State(String),
    /// An I/O error, with the path it happened on.
    Io(String),
}

impl fmt::Display for BnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BnError::RankMismatch { layout, expected, got } => write!(f, "layout {layout} needs a tensor of rank {expected}, got rank {got}"),
            BnError::ChannelMismatch { expected, got } => write!(f, "the layer has {expected} channels (features) but the input's channel axis has {got}"),
            BnError::LengthMismatch { what, expected, got } => {
                write!(f, "`{what}` has {got} elements, expected {expected}")
            }
            BnError::Degenerate { shape } => write!(f, "expected more than 1 value per channel when training, got input of shape {shape:?}"),
            BnError::InvalidConfig(msg) => write!(f, "invalid configuration: {msg}"),
            BnError::Unsupported(msg) => write!(f, "unsupported: {msg}"),
            BnError::State(msg) => write!(f, "invalid batch-norm state: {msg}"),
            BnError::Io(msg) => write!(f, "I/O error: {msg}"),
        }
    }
}

impl std::error::Error for BnError {}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, BnError>;

pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(BnError::LengthMismatch { what, expected, got })
    }
}
