//! Datasets: an IDX reader (raw or gzip), the built-in 10,000 MNIST digits, any
//! MNIST-format directory, and Debian's Fashion-MNIST package.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The built-in digits (see `data/README.md`): 10,000 real MNIST images and labels.
const BUILTIN_IMAGES: &[u8] = include_bytes!("../data/images-idx3-ubyte.gz");
const BUILTIN_LABELS: &[u8] = include_bytes!("../data/labels-idx1-ubyte.gz");

/// Where Debian's `dataset-fashion-mnist` package puts its files.
pub const FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Images larger than this are refused rather than decompressed (a corrupt size field).
const MAX_BYTES: u64 = 1 << 31;

/// Labelled images, pixels scaled to [0, 1], row-major `n x rows x cols`.
#[derive(Debug, Clone)]
pub struct Split {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    pub rows: usize,
    pub cols: usize,
}

impl Split {
    /// Examples in the split.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether the split holds no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }
    /// The examples at `idx`, as a new split.
    pub fn select(&self, idx: &[usize]) -> Split {
        let p = self.pixels();
        let mut images = Vec::with_capacity(idx.len() * p);
        for &i in idx {
            images.extend_from_slice(&self.images[i * p..(i + 1) * p]);
        }
        Split { images, labels: idx.iter().map(|&i| self.labels[i]).collect(), rows: self.rows, cols: self.cols }
    }
}

/// A train/test pair and where it came from.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub train: Split,
    pub test: Split,
}

/// Which data to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in 10,000 digits, split 8,000 / 2,000 with a fixed seed.
    Builtin,
    /// Debian's Fashion-MNIST (70,000 images).
    FashionMnist,
    /// An MNIST-format directory.
    Dir(PathBuf),
}

impl Source {
    /// `--data DIR` wins over `--dataset NAME`; the default is the built-in digits.
    pub fn from_flags(data: Option<&Path>, dataset: Option<&str>) -> Result<Source> {
        if let Some(d) = data {
            return Ok(Source::Dir(d.to_path_buf()));
        }
        match dataset {
            None | Some("mnist-10k") | Some("builtin") => Ok(Source::Builtin),
            Some("fashion-mnist") => Ok(Source::FashionMnist),
            Some(other) => bail!("unknown dataset {other:?}: use mnist-10k (built in), fashion-mnist, or --data DIR"),
        }
    }

    /// Fashion-MNIST when Debian's package is installed, else the built-in digits.
    pub fn best_available() -> Source {
        if Path::new(FASHION_DIR).join("train-images-idx3-ubyte.gz").exists() {
            Source::FashionMnist
        } else {
            Source::Builtin
        }
    }

    pub fn load(&self) -> Result<Dataset> {
        match self {
            Source::Builtin => builtin(),
            Source::FashionMnist => {
                if !Path::new(FASHION_DIR).is_dir() {
                    bail!(
                        "Fashion-MNIST is not installed ({FASHION_DIR} is missing): run `apt-get update && apt-get install -y dataset-fashion-mnist`, or use --data DIR"
                    );
                }
                let mut d = load_dir(Path::new(FASHION_DIR))?;
                d.name = "fashion-mnist".into();
                Ok(d)
            }
            Source::Dir(dir) => load_dir(dir),
        }
    }
}

/// An IDX file: its dimensions and payload bytes.
#[derive(Debug)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Decompresses gzip data (recognised by its magic bytes) or passes raw bytes through.
fn maybe_gunzip(bytes: &[u8], what: &str) -> Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).take(MAX_BYTES).read_to_end(&mut out).with_context(|| format!("{what}: corrupt gzip data"))?;
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

/// Parses an IDX file of unsigned bytes (type 0x08) with `ndims` dimensions; `what` names
/// the file in every error.
pub fn parse_idx(bytes: &[u8], ndims: usize, what: &str) -> Result<Idx> {
    let raw = maybe_gunzip(bytes, what)?;
    if raw.len() < 4 {
        bail!("{what}: too short to be an IDX file ({} bytes)", raw.len());
    }
    let magic = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let expected = 0x0800 | ndims as u32;
    if magic != expected {
        bail!("{what}: bad magic number 0x{magic:08x}, expected 0x{expected:08x} (unsigned bytes, {ndims} dimension(s))");
    }
    let header = 4 + 4 * ndims;
    if raw.len() < header {
        bail!("{what}: truncated header ({} of {header} bytes)", raw.len());
    }
    let dims: Vec<usize> = (0..ndims).map(|i| u32::from_be_bytes(raw[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize).collect();
    let payload = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|&p| p as u64 <= MAX_BYTES);
    let Some(payload) = payload else { bail!("{what}: implausible dimensions {dims:?}") };
    if raw.len() != header + payload {
        bail!(
            "{what}: dimensions {dims:?} need {} bytes, the file holds {} ({})",
            header + payload,
            raw.len(),
            if raw.len() < header + payload { "truncated" } else { "trailing data" }
        );
    }
    Ok(Idx { dims, data: raw[header..].to_vec() })
}

/// Builds a split from image and label IDX files, checking counts and label range.
pub fn split_from_idx(images: &[u8], labels: &[u8], what_images: &str, what_labels: &str) -> Result<Split> {
    let im = parse_idx(images, 3, what_images)?;
    let lb = parse_idx(labels, 1, what_labels)?;
    if im.dims[0] != lb.dims[0] {
        bail!("{what_images} holds {} images but {what_labels} holds {} labels", im.dims[0], lb.dims[0]);
    }
    if let Some((i, &l)) = lb.data.iter().enumerate().find(|(_, &l)| l > 9) {
        bail!("{what_labels}: label {l} at index {i} is outside 0..=9");
    }
    Ok(Split {
        images: im.data.iter().map(|&p| p as f32 / 255.0).collect(),
        labels: lb.data.iter().map(|&l| l as u32).collect(),
        rows: im.dims[1],
        cols: im.dims[2],
    })
}

fn read_either(dir: &Path, stem: &str) -> Result<(Vec<u8>, String)> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.exists() {
            let b = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            return Ok((b, p.display().to_string()));
        }
    }
    bail!("{} has no {stem} or {stem}.gz (an MNIST-format directory holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally .gz)", dir.display())
}

/// Loads an MNIST-format directory.
pub fn load_dir(dir: &Path) -> Result<Dataset> {
    if !dir.is_dir() {
        bail!("data directory {} does not exist", dir.display());
    }
    let load = |prefix: &str| -> Result<Split> {
        let (im, wi) = read_either(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let (lb, wl) = read_either(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        split_from_idx(&im, &lb, &wi, &wl)
    };
    Ok(Dataset { name: dir.display().to_string(), train: load("train")?, test: load("t10k")? })
}

/// The built-in digits, split 8,000 train / 2,000 test by a fixed permutation.
pub fn builtin() -> Result<Dataset> {
    let all = split_from_idx(BUILTIN_IMAGES, BUILTIN_LABELS, "built-in images", "built-in labels")?;
    let mut idx: Vec<usize> = (0..all.len()).collect();
    crate::rng::Rng::new(0x5EED_0001).shuffle(&mut idx);
    Ok(Dataset { name: "mnist-10k (built in)".into(), train: all.select(&idx[..8000]), test: all.select(&idx[8000..]) })
}
