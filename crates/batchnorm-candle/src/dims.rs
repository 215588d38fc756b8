//! Which core layout a candle tensor is in.

use batchnorm::{Dims, Layout};
use candle_core::{bail, Result};

/// The core layout of a tensor of `rank`: channels at axis 1 (`NC`, `NCL`, `NCHW`, `NCDHW`),
/// or last (`NLC`, `NHWC`, `NDHWC`) when the layer was told its inputs are channels-last.
pub(crate) fn layout_of(rank: usize, channels_last: bool) -> Result<Layout> {
    Ok(match (rank, channels_last) {
        (2, _) => Layout::Nc,
        (3, false) => Layout::Ncl,
        (4, false) => Layout::Nchw,
        (5, false) => Layout::Ncdhw,
        (3, true) => Layout::Nlc,
        (4, true) => Layout::Nhwc,
        (5, true) => Layout::Ndhwc,
        (r, last) => bail!("batch norm takes tensors of rank 2 to 5 ({}), got rank {r}", if last { "NC, NLC, NHWC, NDHWC" } else { "NC, NCL, NCHW, NCDHW" }),
    })
}

/// The core view of `shape`, checked against the layer's `num_features`.
pub(crate) fn dims_of(shape: &[usize], channels_last: bool, num_features: usize) -> Result<(Layout, Dims)> {
    let layout = layout_of(shape.len(), channels_last)?;
    let d = Dims::new(layout, shape).map_err(crate::to_candle)?;
    if d.channels != num_features {
        bail!("batch norm over {num_features} channels got input of shape {shape:?} ({layout}) with {} channels", d.channels);
    }
    Ok((layout, d))
}
