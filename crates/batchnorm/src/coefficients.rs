//! The per-channel constants that turn normalisation into one subtract and one multiply-add.

/// `1 / sqrt(var + eps)` in float64.
#[inline]
pub fn inv_std(var: f64, eps: f64) -> f64 {
    1.0 / (var + eps).sqrt()
}

/// Folds `y = gamma * (x - mean) * invstd + beta` into `y = (x - ctr) * s + t` with
/// `ctr = f32(mean)`, `s = gamma * invstd` and `t = beta + (ctr - mean) * s`.
///
/// Centering on `ctr` (rather than folding everything into `x * s + t'`) keeps `x - ctr`
/// exact for values near the mean, so a mean of 1e4 with unit spread still normalises to
/// float32 precision. Returns `(ctr, s, t)`.
#[inline]
pub fn fold_affine(mean: f64, invstd: f64, gamma: f64, beta: f64) -> (f32, f32, f32) {
    let ctr = mean as f32;
    let s = gamma * invstd;
    let t = beta + (ctr as f64 - mean) * s;
    (ctr, s as f32, t as f32)
}

/// Constants of the training backward pass, `dx = a * dy + b * (x - ctr) + d`, from
/// `dx = gamma * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat))` with
/// `sum_dy = sum(dy)` and `sum_dyxc = sum(dy * (x - mean))` over the channel's `m` values.
/// Returns `(ctr, a, b, d)`.
#[inline]
pub fn fold_backward(mean: f64, invstd: f64, gamma: f64, m: f64, sum_dy: f64, sum_dyxc: f64) -> (f32, f32, f32, f32) {
    let ctr = mean as f32;
    let a = gamma * invstd;
    let b = -a * invstd * invstd * sum_dyxc / m;
    let c = -a * sum_dy / m;
    let d = c + b * (ctr as f64 - mean);
    (ctr, a as f32, b as f32, d as f32)
}

/// The `N` per-channel arrays of a coefficient buffer laid out `[p0 (c) | p1 (c) | ...]`:
/// `[ctr | s | t]` for the normalising pass, `[ctr | a | b | d]` for dx. Whatever lies past
/// `N * c` (the interleaved copy) is not part of them.
pub(crate) fn parts<const N: usize>(coef: &[f32], c: usize) -> [&[f32]; N] {
    std::array::from_fn(|i| &coef[i * c..(i + 1) * c])
}
