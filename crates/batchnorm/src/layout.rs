//! Memory layouts and the `(outer, channels, inner)` view every kernel works on.

use crate::error::{BnError, Result};
use std::fmt;
use std::str::FromStr;

/// How a contiguous float32 tensor is laid out. `C` is the channel (feature) axis; statistics
/// are taken per channel over every other axis.
///
/// | layout | shape | values per channel M |
/// |---|---|---|
/// | `NC` | `[N, C]` | N |
/// | `NCL` | `[N, C, L]` | N·L |
/// | `NCHW` | `[N, C, H, W]` | N·H·W |
/// | `NCDHW` | `[N, C, D, H, W]` | N·D·H·W |
/// | `NLC` | `[N, L, C]` | N·L |
/// | `NHWC` | `[N, H, W, C]` | N·H·W |
/// | `NDHWC` | `[N, D, H, W, C]` | N·D·H·W |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Dense layers: `[N, C]`.
    Nc,
    /// Channels-first sequences: `[N, C, L]`.
    Ncl,
    /// Channels-first images: `[N, C, H, W]`.
    Nchw,
    /// Channels-first volumes: `[N, C, D, H, W]`.
    Ncdhw,
    /// Channels-last sequences: `[N, L, C]`.
    Nlc,
    /// Channels-last images: `[N, H, W, C]`.
    Nhwc,
    /// Channels-last volumes: `[N, D, H, W, C]` (PyTorch's `channels_last_3d`).
    Ndhwc,
}

impl Layout {
    /// Every layout, in a fixed order.
    pub const ALL: [Layout; 7] = [Layout::Nc, Layout::Ncl, Layout::Nchw, Layout::Ncdhw, Layout::Nlc, Layout::Nhwc, Layout::Ndhwc];

    /// The layout's name as written in shapes and case files (`"NCHW"`).
    pub fn name(self) -> &'static str {
        match self {
            Layout::Nc => "NC",
            Layout::Ncl => "NCL",
            Layout::Nchw => "NCHW",
            Layout::Ncdhw => "NCDHW",
            Layout::Nlc => "NLC",
            Layout::Nhwc => "NHWC",
            Layout::Ndhwc => "NDHWC",
        }
    }

    /// The rank of a tensor in this layout.
    pub fn rank(self) -> usize {
        self.name().len()
    }

    /// The index of the channel axis in the shape.
    pub fn channel_axis(self) -> usize {
        match self {
            Layout::Nc | Layout::Ncl | Layout::Nchw | Layout::Ncdhw => 1,
            Layout::Nlc => 2,
            Layout::Nhwc => 3,
            Layout::Ndhwc => 4,
        }
    }
}

/// A tensor written `LAYOUT:DxDx...`, as the benchmarks take shapes on the command line:
/// its layout and shape, with the rank checked against the layout and the size against
/// `usize` (as [`Dims::new`] checks them). The layout's name is matched in any case.
///
/// ```
/// use batchnorm::{parse_shape, Layout};
/// assert_eq!(parse_shape("NHWC:32x56x56x64").unwrap(), (Layout::Nhwc, vec![32, 56, 56, 64]));
/// assert!(parse_shape("NHWC:32x56x56").is_err()); // four axes in NHWC
/// assert!(parse_shape("32x56").is_err()); // no layout
/// ```
pub fn parse_shape(s: &str) -> Result<(Layout, Vec<usize>)> {
    let bad = |why: String| BnError::InvalidConfig(format!("{s:?}: {why}"));
    // The inner errors' own words, without a second "invalid configuration:".
    let inner = |e: BnError| bad(if let BnError::InvalidConfig(m) = e { m } else { e.to_string() });
    let (l, dims) = s.split_once(':').ok_or_else(|| bad("expected LAYOUT:DxDx..., e.g. NHWC:32x56x56x64".into()))?;
    let layout: Layout = l.trim().parse().map_err(inner)?;
    let shape = dims.split('x').map(|v| v.trim().parse::<usize>().map_err(|_| bad(format!("{v:?} is not a size")))).collect::<Result<Vec<_>>>()?;
    Dims::new(layout, &shape).map_err(inner)?;
    Ok((layout, shape))
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Layout {
    type Err = BnError;
    fn from_str(s: &str) -> Result<Self> {
        Layout::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| BnError::InvalidConfig(format!("unknown layout {s:?} (expected one of NC, NCL, NCHW, NCDHW, NLC, NHWC, NDHWC)")))
    }
}

/// A tensor's shape reduced to what batch normalization needs: the tensor is
/// `[outer, channels, inner]`, row-major, and channel `c` owns the `outer` runs
/// `x[o * channels * inner + c * inner ..][..inner]`.
///
/// Channels-first layouts have `outer = N` and `inner = H·W...`; `NC` and the channels-last
/// layouts have `inner = 1` and `outer = N·H·W...` (one row of `C` values per position).
///
/// ```
/// use batchnorm::{Dims, Layout};
/// let d = Dims::new(Layout::Nhwc, &[2, 4, 5, 3]).unwrap();
/// assert_eq!((d.outer, d.channels, d.inner), (40, 3, 1));
/// assert_eq!(d.per_channel(), 40);
/// let d = Dims::new(Layout::Nchw, &[2, 3, 4, 5]).unwrap();
/// assert_eq!((d.outer, d.channels, d.inner), (2, 3, 20));
/// // Channels-last volumes are rows of C values, as an `NC` tensor of N·D·H·W rows.
/// assert_eq!(Dims::new(Layout::Ndhwc, &[2, 3, 4, 5, 6]).unwrap(), Dims::rows(120, 6));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dims {
    /// Product of the axes before the channel axis (and, channels-last, the spatial axes).
    pub outer: usize,
    /// Number of channels (features) C.
    pub channels: usize,
    /// Product of the axes after the channel axis (1 for `NC` and channels-last).
    pub inner: usize,
}

impl Dims {
    /// Builds the view of a tensor of `shape` in `layout`; fails when the rank is wrong or the
    /// element count overflows.
    pub fn new(layout: Layout, shape: &[usize]) -> Result<Dims> {
        if shape.len() != layout.rank() {
            return Err(BnError::RankMismatch { layout: layout.name(), expected: layout.rank(), got: shape.len() });
        }
        let ca = layout.channel_axis();
        let prod = |s: &[usize]| -> Result<usize> {
            s.iter().try_fold(1usize, |a, &b| a.checked_mul(b)).ok_or_else(|| BnError::InvalidConfig(format!("shape {shape:?} overflows usize")))
        };
        let channels = shape[ca];
        let (outer, inner) = match layout {
            Layout::Nlc | Layout::Nhwc | Layout::Ndhwc => (prod(&shape[..ca])?, 1),
            _ => (prod(&shape[..ca])?, prod(&shape[ca + 1..])?),
        };
        let d = Dims { outer, channels, inner };
        d.checked_len()?;
        Ok(d)
    }

    /// A dense `[rows, channels]` view (the `NC` layout).
    pub fn rows(rows: usize, channels: usize) -> Dims {
        Dims { outer: rows, channels, inner: 1 }
    }

    fn checked_len(&self) -> Result<usize> {
        self.outer
            .checked_mul(self.channels)
            .and_then(|v| v.checked_mul(self.inner))
            .ok_or_else(|| BnError::InvalidConfig("tensor size overflows usize".into()))
    }

    /// Total number of elements.
    pub fn len(&self) -> usize {
        self.outer * self.channels * self.inner
    }

    /// Whether the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// M: the number of values each channel's statistics are taken over.
    pub fn per_channel(&self) -> usize {
        self.outer * self.inner
    }

    /// Whether a channel's values are strided by `channels` (one value per row) rather than
    /// contiguous runs.
    pub fn is_rows(&self) -> bool {
        self.inner == 1
    }
}
