//! f16 and bf16 tensors through the float32 kernels. Training and backward: the op widens
//! its inputs to float32 and narrows its outputs back itself, in parallel chunks, instead of
//! leaving both to candle's `to_dtype` (one thread, a value at a time; a bf16 training step
//! of NCHW 32x64x56x56 took 33-36 ms between those casts, 25-26 with these). Eval: the core
//! normalises a block at a time from the half-precision input into the half-precision
//! output ([`eval_converted`]), one pass over memory.
//!
//! Widening is exact; narrowing rounds to nearest, ties to even (the vectorised conversions
//! of `convert.rs`, bit for bit `half`'s), as candle's own casts do, so the results are bit
//! for bit those of casting around the float32 op.

use crate::convert::Half;
use crate::ops::output_buffer;
use batchnorm::{forward_eval_converted_into, Dims, Workspace};
use candle_core::{bail, CpuStorage, DType, Layout, Result, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

/// Values a task converts: large enough to amortise its start, small enough that two
/// threads split a 64 KB tensor.
const CHUNK: usize = 1 << 14;

/// The contiguous data of a CPU storage as float32: borrowed when it is float32, widened
/// (in parallel) from f16 or bf16.
pub(crate) fn widened<'a>(s: &'a CpuStorage, l: &Layout) -> Result<Cow<'a, [f32]>> {
    let Some((a, b)) = l.contiguous_offsets() else { bail!("batch norm op: input is not contiguous") };
    match s {
        CpuStorage::F32(v) => Ok(Cow::Borrowed(&v[a..b])),
        CpuStorage::F16(v) => Ok(Cow::Owned(widen(&v[a..b])?)),
        CpuStorage::BF16(v) => Ok(Cow::Owned(widen(&v[a..b])?)),
        other => bail!("batch norm op: expected f32, f16 or bf16 data, got {:?}", storage_dtype(other)),
    }
}

/// Float32 results as a storage of `dtype` (float32 moved as is; f16 and bf16 narrowed in
/// parallel into a buffer allocated as candle allocates its outputs).
pub(crate) fn narrowed(v: Vec<f32>, dtype: DType) -> Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(v),
        DType::F16 => CpuStorage::F16(narrow(&v)?),
        DType::BF16 => CpuStorage::BF16(narrow(&v)?),
        other => bail!("batch norm op: cannot write {other:?} output"),
    })
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

/// The eval forward of f16 or bf16 storage straight into a storage of its type, a block at a
/// time through float32 (`batchnorm::forward_eval_converted_into`: one pass over memory, the
/// values bit for bit the float32 eval's before narrowing); `None` for float32 storage.
#[allow(clippy::too_many_arguments)]
pub(crate) fn eval_converted(
    s: &CpuStorage,
    l: &Layout,
    d: Dims,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    mean: &[f32],
    var: &[f32],
    eps: f64,
    ws: &mut Workspace,
) -> Result<Option<CpuStorage>> {
    let Some((a, b)) = l.contiguous_offsets() else { bail!("batch norm op: input is not contiguous") };
    fn run<T: Half>(x: &[T], d: Dims, p: Params, ws: &mut Workspace) -> Result<Vec<T>> {
        let (weight, bias, mean, var, eps) = p;
        let mut y = output_buffer(x.len())?;
        forward_eval_converted_into(x, d, weight, bias, mean, var, eps, &mut y, T::widen, T::narrow, ws).map_err(crate::to_candle)?;
        Ok(y)
    }
    let p = (weight, bias, mean, var, eps);
    Ok(match s {
        CpuStorage::F16(v) => Some(CpuStorage::F16(run(&v[a..b], d, p, ws)?)),
        CpuStorage::BF16(v) => Some(CpuStorage::BF16(run(&v[a..b], d, p, ws)?)),
        _ => None,
    })
}

/// The affine parameters, statistics and epsilon of an eval forward.
type Params<'a> = (Option<&'a [f32]>, Option<&'a [f32]>, &'a [f32], &'a [f32], f64);

/// `v` widened to float32, in parallel chunks.
fn widen<T: Half>(v: &[T]) -> Result<Vec<f32>> {
    let mut out = output_buffer(v.len())?;
    out.par_chunks_mut(CHUNK).zip(v.par_chunks(CHUNK)).for_each(|(o, s)| T::widen(s, o));
    Ok(out)
}

/// `v` narrowed to `T`, in parallel chunks.
fn narrow<T: Half>(v: &[f32]) -> Result<Vec<T>> {
    let mut out = output_buffer(v.len())?;
    out.par_chunks_mut(CHUNK).zip(v.par_chunks(CHUNK)).for_each(|(o, s)| T::narrow(s, o));
    Ok(out)
}

/// The element type a CPU storage holds.
pub(crate) fn storage_dtype(s: &CpuStorage) -> DType {
    use candle_core::backend::BackendStorage;
    s.dtype()
}
