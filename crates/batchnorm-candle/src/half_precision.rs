//! f16 and bf16 tensors through the float32 kernels: the op widens its inputs to float32 and
//! narrows its outputs back itself, in parallel chunks, instead of leaving both to candle's
//! `to_dtype` (one thread, a value at a time), which took most of a half-precision step.
//!
//! Widening is exact; narrowing rounds to nearest, ties to even (`half`'s conversions, with
//! F16C where the CPU has it), as candle's own casts do, so the results are bit for bit those
//! of casting around the float32 op.

use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Tensor};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use std::borrow::Cow;

/// Values a task converts: large enough to amortise its start, small enough that two
/// threads split a 64 KB tensor.
const CHUNK: usize = 1 << 14;

/// The contiguous data of a CPU storage as float32: borrowed when it is float32, widened
/// (in parallel) from f16 or bf16.
pub(crate) fn widened<'a>(s: &'a CpuStorage, l: &Layout) -> Result<Cow<'a, [f32]>> {
    let Some((a, b)) = l.contiguous_offsets() else { bail!("batch norm op: input is not contiguous") };
    let widen = |n: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)| -> Result<Cow<'a, [f32]>> {
        let mut out = crate::ops::output_buffer(n)?;
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, o)| f(i * CHUNK, o));
        Ok(Cow::Owned(out))
    };
    match s {
        CpuStorage::F32(v) => Ok(Cow::Borrowed(&v[a..b])),
        CpuStorage::F16(v) => widen(b - a, &|at, o| v[a + at..a + at + o.len()].convert_to_f32_slice(o)),
        CpuStorage::BF16(v) => widen(b - a, &|at, o| v[a + at..a + at + o.len()].convert_to_f32_slice(o)),
        other => bail!("batch norm op: expected f32, f16 or bf16 data, got {:?}", storage_dtype(other)),
    }
}

/// Float32 results as a storage of `dtype` (float32 moved as is; f16 and bf16 narrowed in
/// parallel into a buffer allocated as candle allocates its outputs).
pub(crate) fn narrowed(v: Vec<f32>, dtype: DType) -> Result<CpuStorage> {
    use candle_core::backend::BackendDevice;
    if !matches!(dtype, DType::F16 | DType::BF16) {
        return match dtype {
            DType::F32 => Ok(CpuStorage::F32(v)),
            other => bail!("batch norm op: cannot write {other:?} output"),
        };
    }
    // SAFETY: f16 and bf16 have no invalid bit patterns, and every value is written below
    // before the storage is returned.
    let mut out = unsafe { candle_core::cpu_backend::CpuDevice.alloc_uninit(&Shape::from(v.len()), dtype)? };
    match &mut out {
        CpuStorage::F16(o) => narrow(o, &v),
        CpuStorage::BF16(o) => narrow(o, &v),
        _ => bail!("batch norm op: expected a {dtype:?} buffer"),
    }
    Ok(out)
}

/// Float32 results as a tensor of `like`'s dtype, shape and device.
pub(crate) fn narrowed_like(v: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    let (shape, dev) = (like.shape(), like.device());
    match narrowed(v, like.dtype())? {
        CpuStorage::F32(v) => Tensor::from_vec(v, shape, dev),
        CpuStorage::F16(v) => Tensor::from_vec(v, shape, dev),
        CpuStorage::BF16(v) => Tensor::from_vec(v, shape, dev),
        _ => bail!("batch norm op: unexpected output type"),
    }
}

fn narrow<T: Send>(out: &mut [T], v: &[f32])
where
    [T]: HalfFloatSliceExt,
{
    out.par_chunks_mut(CHUNK).zip(v.par_chunks(CHUNK)).for_each(|(o, s)| o.convert_from_f32_slice(s));
}

/// The element type a CPU storage holds.
pub(crate) fn storage_dtype(s: &CpuStorage) -> DType {
    use candle_core::backend::BackendStorage;
    s.dtype()
}
