//! Folding an eval-mode batch norm into the layer before it, for inference.

use crate::error::{check_len, BnError, Result};
use crate::layer::BatchNorm;

/// Folds `bn` (eval mode, running statistics) into the dense layer `y = x W^T + b` before it:
/// with `s = gamma / sqrt(running_var + eps)` per output feature,
/// `W'[o, :] = W[o, :] * s[o]` and `b'[o] = (b[o] - running_mean[o]) * s[o] + beta[o]`
/// (PyTorch's `fuse_linear_bn_eval`). `weight` is `[out, in]` row-major; returns `(W', b')`.
///
/// ```
/// use batchnorm::{fold_into_linear, BatchNorm, BatchNormConfig};
/// let mut bn = BatchNorm::new(BatchNormConfig::new(1).eps(1e-12)).unwrap();
/// bn.set_running_stats(&[1.0], &[4.0]).unwrap();
/// let (w, b) = fold_into_linear(&bn, &[2.0, 4.0], Some(&[3.0]), 1, 2).unwrap();
/// assert_eq!(w, vec![1.0, 2.0]);   // / sqrt(4)
/// assert_eq!(b, vec![1.0]);        // (3 - 1) / 2
/// ```
pub fn fold_into_linear(bn: &BatchNorm, weight: &[f32], bias: Option<&[f32]>, out_features: usize, in_features: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    fold_per_output(bn, weight, bias, out_features, in_features)
}

/// Folds `bn` into the convolution before it, weight `[O, I, kh, kw]` (`shape`), optional
/// bias `[O]`: each output channel's filter is scaled by `s[o]` and its bias becomes
/// `(b[o] - running_mean[o]) * s[o] + beta[o]` (PyTorch's `fuse_conv_bn_eval`).
pub fn fold_into_conv(bn: &BatchNorm, weight: &[f32], bias: Option<&[f32]>, shape: [usize; 4]) -> Result<(Vec<f32>, Vec<f32>)> {
    let [o, i, kh, kw] = shape;
    let per_out = i.checked_mul(kh).and_then(|v| v.checked_mul(kw)).ok_or_else(|| BnError::InvalidConfig(format!("weight shape {shape:?} overflows usize")))?;
    fold_per_output(bn, weight, bias, o, per_out)
}

fn fold_per_output(bn: &BatchNorm, weight: &[f32], bias: Option<&[f32]>, outs: usize, per_out: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    if bn.num_features() != outs {
        return Err(BnError::ChannelMismatch { expected: bn.num_features(), got: outs });
    }
    let (Some(rm), Some(rv)) = (bn.running_mean(), bn.running_var()) else {
        return Err(BnError::Unsupported("folding needs running statistics (track_running_stats = true)".into()));
    };
    let len = outs.checked_mul(per_out).ok_or_else(|| BnError::InvalidConfig(format!("weight of {outs} x {per_out} values overflows usize")))?;
    check_len("weight", len, weight.len())?;
    if let Some(b) = bias {
        check_len("bias", outs, b.len())?;
    }
    let eps = bn.config().eps;
    let mut w = Vec::with_capacity(weight.len());
    let mut b = Vec::with_capacity(outs);
    for o in 0..outs {
        let g = bn.weight().map_or(1.0, |v| v[o] as f64);
        let beta = bn.bias().map_or(0.0, |v| v[o] as f64);
        let s = g / (rv[o] as f64 + eps).sqrt();
        w.extend(weight[o * per_out..(o + 1) * per_out].iter().map(|&v| (v as f64 * s) as f32));
        let b0 = bias.map_or(0.0, |v| v[o] as f64);
        b.push(((b0 - rm[o] as f64) * s + beta) as f32);
    }
    Ok((w, b))
}
