//! The layer's state as safetensors, under PyTorch's `state_dict` names.

use crate::error::{BnError, Result};
use crate::layer::BatchNorm;
use safetensors::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

/// An owned little-endian tensor ready for [`safetensors::serialize`].
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedTensor {
    /// Element type.
    pub dtype: Dtype,
    /// Shape (empty for a 0-dim scalar).
    pub shape: Vec<usize>,
    /// Raw little-endian bytes.
    pub data: Vec<u8>,
}

impl OwnedTensor {
    /// A float32 tensor.
    pub fn f32(shape: Vec<usize>, values: &[f32]) -> Self {
        OwnedTensor { dtype: Dtype::F32, shape, data: values.iter().flat_map(|v| v.to_le_bytes()).collect() }
    }
    /// A 0-dim int64 tensor.
    pub fn i64_scalar(v: i64) -> Self {
        OwnedTensor { dtype: Dtype::I64, shape: vec![], data: v.to_le_bytes().to_vec() }
    }
}

impl View for OwnedTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

impl View for &OwnedTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The layer's tensors under `prefix` + PyTorch's names: `weight`, `bias` (when affine),
/// `running_mean`, `running_var` (`[C]`, F32) and `num_batches_tracked` (0-dim I64) when
/// tracking. Append them to other layers' tensors to write one file for a whole model.
pub fn state_tensors(bn: &BatchNorm, prefix: &str) -> Vec<(String, OwnedTensor)> {
    let c = bn.num_features();
    let mut out = Vec::new();
    let mut push = |name: &str, v: Option<&[f32]>| {
        if let Some(v) = v {
            out.push((format!("{prefix}{name}"), OwnedTensor::f32(vec![c], v)));
        }
    };
    push("weight", bn.weight());
    push("bias", bn.bias());
    push("running_mean", bn.running_mean());
    push("running_var", bn.running_var());
    if bn.config().track_running_stats {
        out.push((format!("{prefix}num_batches_tracked"), OwnedTensor::i64_scalar(bn.num_batches_tracked())));
    }
    out
}

/// The layer's state as the bytes of a safetensors file (see [`state_tensors`]).
pub fn save_state(bn: &BatchNorm, prefix: &str) -> Result<Vec<u8>> {
    safetensors::serialize(state_tensors(bn, prefix), None).map_err(|e| BnError::State(e.to_string()))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, flushed to disk, then
/// renamed over `path`, so a reader never sees a half-written file and a crash never
/// destroys the previous one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error, what: &str| BnError::Io(format!("{what} {}: {e}", path.display()));
    let name = path.file_name().ok_or_else(|| BnError::Io(format!("{} is not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e, "cannot write"));
    }
    Ok(())
}

/// Saves the layer's state to a safetensors file, atomically.
pub fn save_state_file(bn: &BatchNorm, prefix: &str, path: impl AsRef<Path>) -> Result<()> {
    write_atomic(path.as_ref(), &save_state(bn, prefix)?)
}

fn read_f32(st: &SafeTensors, name: &str, c: usize) -> Result<Vec<f32>> {
    let t = st.tensor(name).map_err(|_| BnError::State(format!("missing tensor `{name}`")))?;
    if t.shape() != [c] {
        return Err(BnError::State(format!("`{name}` has shape {:?}, expected [{c}]", t.shape())));
    }
    let d = t.data();
    Ok(match t.dtype() {
        Dtype::F32 => d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        // Rounded to nearest, as PyTorch's `load_state_dict` copies a float64 tensor into a
        // float32 parameter.
        Dtype::F64 => d.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
        Dtype::F16 => d.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
        Dtype::BF16 => d.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect(),
        other => return Err(BnError::State(format!("`{name}` has dtype {other:?}, expected a float type (F32, F64, F16 or BF16)"))),
    })
}

/// The float32 value of an IEEE half-precision number (every half is exactly a float32).
///
/// Normal halves move their exponent from bias 15 to bias 127; subnormals are `m * 2^-24`,
/// normal in float32.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let (exp, man) = (((h >> 10) & 0x1f) as u32, (h & 0x3ff) as u32);
    let magnitude = match exp {
        0 => (man as f32 * (-24f32).exp2()).to_bits(),
        0x1f if man == 0 => 0x7f80_0000,
        // NaNs come out quiet, their payload kept, as x86's `vcvtph2ps` converts them.
        0x1f => 0x7fc0_0000 | (man << 13),
        _ => ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(sign | magnitude)
}

fn read_counter(st: &SafeTensors, name: &str) -> Result<Option<i64>> {
    let Ok(t) = st.tensor(name) else { return Ok(None) };
    if t.shape().iter().product::<usize>() != 1 || t.shape().len() > 1 {
        return Err(BnError::State(format!("`{name}` has shape {:?}, expected a scalar", t.shape())));
    }
    let d = t.data();
    let n = match t.dtype() {
        Dtype::I64 => i64::from_le_bytes(d[..8].try_into().expect("8 bytes")),
        Dtype::I32 => i32::from_le_bytes(d[..4].try_into().expect("4 bytes")) as i64,
        other => return Err(BnError::State(format!("`{name}` has dtype {other:?}, expected I64"))),
    };
    // A count of batches below zero is no count: with a cumulative average the next batch's
    // weight 1 / (n + 1) would be infinite or negative.
    if n < 0 {
        return Err(BnError::State(format!("`{name}` is {n}, expected a count of batches (0 or more)")));
    }
    Ok(Some(n))
}

/// Loads the layer's state from parsed safetensors under `prefix`. Every tensor is read and
/// checked (present, shape `[C]`, a float type: F32, or F64, F16 or BF16 converted to
/// float32 as PyTorch's `load_state_dict` converts them; the counter an integer of 0 or more)
/// before anything changes, so on error the layer is untouched. A missing
/// `num_batches_tracked` leaves the counter as it was; tensors of other layers are ignored.
pub fn load_state_from(bn: &mut BatchNorm, st: &SafeTensors, prefix: &str) -> Result<()> {
    let c = bn.num_features();
    let cfg = *bn.config();
    let affine = if cfg.affine { Some((read_f32(st, &format!("{prefix}weight"), c)?, read_f32(st, &format!("{prefix}bias"), c)?)) } else { None };
    let running = if cfg.track_running_stats {
        Some((
            read_f32(st, &format!("{prefix}running_mean"), c)?,
            read_f32(st, &format!("{prefix}running_var"), c)?,
            read_counter(st, &format!("{prefix}num_batches_tracked"))?,
        ))
    } else {
        None
    };
    if let Some((w, b)) = affine {
        bn.set_affine(&w, &b)?;
    }
    if let Some((m, v, n)) = running {
        bn.set_running_stats(&m, &v)?;
        if let Some(n) = n {
            bn.set_num_batches_tracked(n);
        }
    }
    Ok(())
}

/// Loads the layer's state from the bytes of a safetensors file; see [`load_state_from`].
///
/// ```
/// use batchnorm::{load_state, save_state, BatchNorm, BatchNormConfig};
/// let mut a = BatchNorm::new(BatchNormConfig::new(3)).unwrap();
/// a.set_running_stats(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
/// let bytes = save_state(&a, "layer1.bn.").unwrap();
/// let mut b = BatchNorm::new(BatchNormConfig::new(3)).unwrap();
/// load_state(&mut b, &bytes, "layer1.bn.").unwrap();
/// assert_eq!(b.running_var(), Some(&[4.0f32, 5.0, 6.0][..]));
/// assert!(load_state(&mut b, &bytes[..bytes.len() - 1], "layer1.bn.").is_err());
/// ```
pub fn load_state(bn: &mut BatchNorm, bytes: &[u8], prefix: &str) -> Result<()> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| BnError::State(format!("not a valid safetensors file: {e}")))?;
    load_state_from(bn, &st, prefix)
}

/// Loads the layer's state from a safetensors file; see [`load_state_from`].
pub fn load_state_file(bn: &mut BatchNorm, prefix: &str, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| BnError::Io(format!("cannot read {}: {e}", path.display())))?;
    load_state(bn, &bytes, prefix).map_err(|e| match e {
        BnError::State(m) => BnError::State(format!("{}: {m}", path.display())),
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    /// A half's value by its definition, in float64 arithmetic: `(-1)^s 2^(e-15) (1 + m/1024)`,
    /// subnormals `(-1)^s 2^-14 (m/1024)`, exponent 31 infinity (m = 0) or NaN.
    fn by_definition(h: u16) -> f64 {
        let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
        let (e, m) = (((h >> 10) & 0x1f) as i32, (h & 0x3ff) as f64);
        match e {
            0 => sign * 2f64.powi(-14) * (m / 1024.0),
            31 if m == 0.0 => sign * f64::INFINITY,
            31 => f64::NAN,
            _ => sign * 2f64.powi(e - 15) * (1.0 + m / 1024.0),
        }
    }

    #[test]
    fn every_half_converts_to_its_value() {
        for h in 0..=u16::MAX {
            let (got, want) = (f16_to_f32(h), by_definition(h));
            if want.is_nan() {
                // Quiet, with the half's payload in the top of the float's.
                assert_eq!(got.to_bits(), 0x7fc0_0000 | ((h as u32 & 0x8000) << 16) | ((h as u32 & 0x3ff) << 13), "{h:#06x}");
            } else {
                assert!(got as f64 == want && got.is_sign_negative() == want.is_sign_negative(), "{h:#06x}: {got:e} against {want:e}");
            }
        }
    }
}
