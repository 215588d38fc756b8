//! The same semantics from composed candle ops, for the devices the fused kernels do not
//! cover (GPU tensors of any type). Gradients come from candle's autograd.

use candle_core::{DType, Result, Tensor};

/// Moves the channel axis to 1 (channels-first), if it is last.
pub(crate) fn to_channels_first(x: &Tensor, channels_last: bool) -> Result<Tensor> {
    if !channels_last || x.rank() == 2 {
        return Ok(x.clone());
    }
    let r = x.rank();
    let mut perm: Vec<usize> = vec![0, r - 1];
    perm.extend(1..r - 1);
    x.permute(perm)
}

/// Inverse of [`to_channels_first`].
pub(crate) fn from_channels_first(y: &Tensor, channels_last: bool) -> Result<Tensor> {
    if !channels_last || y.rank() == 2 {
        return Ok(y.clone());
    }
    let r = y.rank();
    let mut perm: Vec<usize> = vec![0];
    perm.extend(2..r);
    perm.push(1);
    y.permute(perm)?.contiguous()
}

fn bshape(x: &Tensor) -> Vec<usize> {
    x.dims().iter().enumerate().map(|(i, &v)| if i == 1 { v } else { 1 }).collect()
}

/// Normalises channels-first `x` with its own batch statistics; returns `y`, and the batch
/// mean and biased variance per channel (detached, float64 on the host) for the running
/// statistics.
pub(crate) fn train(x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>, eps: f64, detach: bool) -> Result<(Tensor, Vec<f64>, Vec<f64>)> {
    let dtype = x.dtype();
    let internal = match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    };
    let xi = x.to_dtype(internal)?;
    let axes: Vec<usize> = (0..x.rank()).filter(|&a| a != 1).collect();
    let mut mean = xi.mean_keepdim(axes.as_slice())?;
    if detach {
        mean = mean.detach();
    }
    let xc = xi.broadcast_sub(&mean)?;
    let mut var = xc.sqr()?.mean_keepdim(axes.as_slice())?;
    if detach {
        var = var.detach();
    }
    let mut y = xc.broadcast_div(&(&var + eps)?.sqrt()?)?;
    if let (Some(g), Some(b)) = (gamma, beta) {
        let s = bshape(x);
        y = y.broadcast_mul(&g.to_dtype(internal)?.reshape(s.as_slice())?)?;
        y = y.broadcast_add(&b.to_dtype(internal)?.reshape(s.as_slice())?)?;
    }
    let host = |t: &Tensor| -> Result<Vec<f64>> { t.detach().flatten_all()?.to_dtype(DType::F64)?.to_vec1() };
    Ok((y.to_dtype(dtype)?, host(&mean)?, host(&var)?))
}

/// Normalises channels-first `x` with given per-channel mean and variance (constants for
/// the gradient).
pub(crate) fn eval(x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>, mean: &Tensor, var: &Tensor, eps: f64) -> Result<Tensor> {
    let s = bshape(x);
    let dt = x.dtype();
    let m = mean.detach().to_dtype(dt)?.reshape(s.as_slice())?;
    let v = var.detach().to_dtype(dt)?.reshape(s.as_slice())?;
    let mut y = x.broadcast_sub(&m)?.broadcast_div(&(v + eps)?.sqrt()?)?;
    if let (Some(g), Some(b)) = (gamma, beta) {
        y = y.broadcast_mul(&g.to_dtype(dt)?.reshape(s.as_slice())?)?;
        y = y.broadcast_add(&b.to_dtype(dt)?.reshape(s.as_slice())?)?;
    }
    Ok(y)
}
