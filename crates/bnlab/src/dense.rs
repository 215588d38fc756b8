//! The fully connected layer: `y = x W^T + b`, one candle custom op with its own backward.
//!
//! Built from candle ops (`x.matmul(&w.t())`, then `broadcast_add(b)`, as `candle_nn::Linear`
//! does) a layer is three graph nodes, and candle's backward of a matrix product always forms
//! both operands' gradients: for the first layer that is `dL/dx`, a product as large as the
//! layer's forward (60x100x784 in the Figure-1 MLP), for an input that wants no gradient,
//! plus its zero-filled accumulator. As one op the backward forms `dW = dy^T x` and
//! `db = sum(dy)` always and `dx = dy W` only when `x` takes part in the graph. Measured on
//! the Figure-1 MLP (`bnlab bench-e2e`, 2000 steps, three interleaved runs, steps/s): at 1
//! thread without BN 1288-1302 -> 1630-1799, with BN 1372-1375 -> 1838-1917; at 2 threads
//! 1275 -> 1796 and 1376 -> 1901.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// A fully connected layer with weight `[out, in]` and optional bias `[out]`, as
/// `candle_nn::Linear` (same shapes, same names in a `VarMap`).
///
/// ```
/// use bnlab::dense::Dense;
/// use candle_core::{Device, Tensor};
/// let w = Tensor::new(&[[1f32, 2.], [3., 4.], [5., 6.]], &Device::Cpu).unwrap(); // 3 outputs, 2 inputs
/// let b = Tensor::new(&[0.5f32, 0., -0.5], &Device::Cpu).unwrap();
/// let x = Tensor::new(&[[1f32, 1.]], &Device::Cpu).unwrap();
/// let y = Dense::new(w, Some(b)).forward(&x).unwrap();
/// assert_eq!(y.to_vec2::<f32>().unwrap(), [[3.5, 7., 10.5]]);
/// ```
#[derive(Debug, Clone)]
pub struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Dense {
    /// A layer over `weight` (`[out, in]`) and `bias` (`[out]`), usually variables of a
    /// `VarMap` so that training updates them.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Dense {
        Dense { weight, bias }
    }

    /// The weight, `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[out]`, if the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `y = x W^T + b` for `x` of shape `[batch, in]`. Float32 CPU tensors go through the
    /// fused op; anything else through candle's own ops (same values).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let fused = x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && x.rank() == 2;
        match (&self.bias, fused) {
            (Some(b), true) => x.apply_op3(&self.weight, b, DenseOp),
            (None, true) => x.apply_op2(&self.weight, DenseOp),
            (Some(b), false) => x.matmul(&self.weight.t()?)?.broadcast_add(b),
            (None, false) => x.matmul(&self.weight.t()?),
        }
    }
}

/// `x W^T (+ b)` and its backward.
struct DenseOp;

/// The contiguous float32 data of a CPU storage.
fn f32s<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let Some((a, b)) = l.contiguous_offsets() else { bail!("dense: operand is not contiguous") };
    Ok(&s.as_slice::<f32>()?[a..b])
}

impl DenseOp {
    /// `x [B, in] W^T` as a new `[B, out]` storage, with candle's own matrix product.
    fn product(x: &CpuStorage, lx: &Layout, w: &CpuStorage, lw: &Layout) -> Result<(CpuStorage, usize, usize)> {
        let (bsz, inp) = lx.shape().dims2()?;
        let (out, inp2) = lw.shape().dims2()?;
        if inp != inp2 {
            bail!("dense: input has {inp} features, the weight expects {inp2}");
        }
        let y = x.matmul(w, (1, bsz, out, inp), lx, &lw.transpose(0, 1)?)?;
        Ok((y, bsz, out))
    }

    /// `dW = dy^T x`, `db = sum over the batch of dy` (when asked), `dx = dy W` (when `x`
    /// takes part in the graph).
    fn grads(x: &Tensor, w: &Tensor, dy: &Tensor, with_bias: bool) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let dx = if x.track_op() { Some(dy.matmul(w)?) } else { None };
        let dw = dy.t()?.matmul(x)?;
        let db = if with_bias { Some(dy.sum(0)?) } else { None };
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for DenseOp {
    fn name(&self) -> &'static str {
        "dense"
    }

    fn cpu_fwd(&self, x: &CpuStorage, lx: &Layout, w: &CpuStorage, lw: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, bsz, out) = Self::product(x, lx, w, lw)?;
        Ok((y, Shape::from((bsz, out))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = Self::grads(x, w, dy, false)?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp3 for DenseOp {
    fn name(&self) -> &'static str {
        "dense"
    }

    fn cpu_fwd(&self, x: &CpuStorage, lx: &Layout, w: &CpuStorage, lw: &Layout, b: &CpuStorage, lb: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, bsz, out) = Self::product(x, lx, w, lw)?;
        let bias = f32s(b, lb)?;
        if bias.len() != out {
            bail!("dense: bias has {} values for {out} outputs", bias.len());
        }
        let CpuStorage::F32(mut y) = y else { bail!("dense: expected float32") };
        for row in y.chunks_exact_mut(out) {
            for (v, &c) in row.iter_mut().zip(bias) {
                *v += c;
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((bsz, out))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = Self::grads(x, w, dy, true)?;
        Ok((dx, Some(dw), db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let (a, b) = (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{what}[{i}]: {p} vs {q}");
        }
    }

    /// The fused op gives candle_nn::Linear's output and gradients (with and without bias,
    /// for an input that is a leaf and for one that takes part in the graph).
    #[test]
    fn matches_candle_linear_forward_and_backward() {
        let dev = Device::Cpu;
        for with_bias in [true, false] {
            let x0 = Tensor::randn(0f32, 1., (7, 13), &dev).unwrap();
            let w = Var::from_tensor(&Tensor::randn(0f32, 0.3, (5, 13), &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, 5, &dev).unwrap()).unwrap();
            let dy = Tensor::randn(0f32, 1., (7, 5), &dev).unwrap();
            let bias = with_bias.then(|| b.as_tensor().clone());
            let ours = Dense::new(w.as_tensor().clone(), bias.clone());
            let theirs = candle_nn::Linear::new(w.as_tensor().clone(), bias);
            // A leaf input: no gradient for x.
            let (yo, yt) = (ours.forward(&x0).unwrap(), candle_nn::Module::forward(&theirs, &x0).unwrap());
            close(&yo, &yt, "y");
            let go = (yo * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let gt = (yt * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            close(go.get(w.as_tensor()).unwrap(), gt.get(w.as_tensor()).unwrap(), "dW");
            if with_bias {
                close(go.get(b.as_tensor()).unwrap(), gt.get(b.as_tensor()).unwrap(), "db");
            }
            assert!(go.get(&x0).is_none());
            // An input inside the graph: dx flows.
            let xv = Var::from_tensor(&x0).unwrap();
            let x1 = (xv.as_tensor() * 2.0).unwrap();
            let go = (ours.forward(&x1).unwrap() * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let gt = (candle_nn::Module::forward(&theirs, &x1).unwrap() * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            close(go.get(xv.as_tensor()).unwrap(), gt.get(xv.as_tensor()).unwrap(), "dx");
        }
    }
}
