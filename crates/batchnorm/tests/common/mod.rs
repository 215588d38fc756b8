//! A float64 reference implementation written straight from the formulas, plus test data.
#![allow(dead_code)]

use batchnorm::Dims;

/// A small deterministic generator (xorshift64*), so test data needs no extra crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Roughly standard normal (sum of uniforms).
    pub fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }
    pub fn vec(&mut self, n: usize, mean: f64, std: f64) -> Vec<f32> {
        (0..n).map(|_| (mean + std * self.normal()) as f32).collect()
    }
}

pub fn idx(d: Dims, o: usize, c: usize, i: usize) -> usize {
    (o * d.channels + c) * d.inner + i
}

/// Indices of channel c's values.
pub fn channel(d: Dims, c: usize) -> Vec<usize> {
    let mut v = Vec::with_capacity(d.per_channel());
    for o in 0..d.outer {
        for i in 0..d.inner {
            v.push(idx(d, o, c, i));
        }
    }
    v
}

pub fn g(w: Option<&[f32]>, c: usize) -> f64 {
    w.map_or(1.0, |w| w[c] as f64)
}
pub fn b(bias: Option<&[f32]>, c: usize) -> f64 {
    bias.map_or(0.0, |b| b[c] as f64)
}

/// Batch mean and biased variance per channel, two-pass in float64.
pub fn batch_stats(x: &[f32], d: Dims) -> (Vec<f64>, Vec<f64>) {
    let m = d.per_channel() as f64;
    (0..d.channels)
        .map(|c| {
            let ix = channel(d, c);
            let mean = ix.iter().map(|&i| x[i] as f64).sum::<f64>() / m;
            let var = ix.iter().map(|&i| (x[i] as f64 - mean).powi(2)).sum::<f64>() / m;
            (mean, var)
        })
        .unzip()
}

/// y = gamma * (x - mean) / sqrt(var + eps) + beta with the given statistics, in float64.
pub fn normalize(x: &[f64], d: Dims, w: Option<&[f32]>, bias: Option<&[f32]>, mean: &[f64], var: &[f64], eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for c in 0..d.channels {
        for i in channel(d, c) {
            y[i] = g(w, c) * (x[i] - mean[c]) / (var[c] + eps).sqrt() + b(bias, c);
        }
    }
    y
}

/// Training-mode output as a function of float64 x (for finite differences).
pub fn train_forward_f64(x: &[f64], d: Dims, w: Option<&[f32]>, bias: Option<&[f32]>, eps: f64) -> Vec<f64> {
    let m = d.per_channel() as f64;
    let mut mean = vec![0.0; d.channels];
    let mut var = vec![0.0; d.channels];
    for c in 0..d.channels {
        let ix = channel(d, c);
        mean[c] = ix.iter().map(|&i| x[i]).sum::<f64>() / m;
        var[c] = ix.iter().map(|&i| (x[i] - mean[c]).powi(2)).sum::<f64>() / m;
    }
    normalize(x, d, w, bias, &mean, &var, eps)
}

/// Analytic training backward in float64: (dx, dgamma, dbeta).
pub fn train_backward(x: &[f32], dy: &[f32], d: Dims, w: Option<&[f32]>, eps: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mean, var) = batch_stats(x, d);
    let m = d.per_channel() as f64;
    let mut dx = vec![0.0; x.len()];
    let mut dg = vec![0.0; d.channels];
    let mut db = vec![0.0; d.channels];
    for c in 0..d.channels {
        let is = 1.0 / (var[c] + eps).sqrt();
        let ix = channel(d, c);
        let xh = |i: usize| (x[i] as f64 - mean[c]) * is;
        db[c] = ix.iter().map(|&i| dy[i] as f64).sum();
        dg[c] = ix.iter().map(|&i| dy[i] as f64 * xh(i)).sum();
        for &i in &ix {
            dx[i] = g(w, c) * is * (dy[i] as f64 - db[c] / m - xh(i) * dg[c] / m);
        }
    }
    (dx, dg, db)
}

/// Analytic eval backward in float64 (running statistics are constants).
pub fn eval_backward(x: &[f32], dy: &[f32], d: Dims, w: Option<&[f32]>, rm: &[f32], rv: &[f32], eps: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; x.len()];
    let mut dg = vec![0.0; d.channels];
    let mut db = vec![0.0; d.channels];
    for c in 0..d.channels {
        let is = 1.0 / (rv[c] as f64 + eps).sqrt();
        for i in channel(d, c) {
            dx[i] = g(w, c) * is * dy[i] as f64;
            dg[c] += dy[i] as f64 * (x[i] as f64 - rm[c] as f64) * is;
            db[c] += dy[i] as f64;
        }
    }
    (dx, dg, db)
}

/// max |a - e| <= tol * max(1, max |e|), with a readable message.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |a, v| a.max(v.abs()));
    for (i, (&a, &e)) in got.iter().zip(want).enumerate() {
        let err = (a as f64 - e).abs();
        assert!(err <= tol * scale, "{what}[{i}]: got {a}, expected {e} (err {err:.3e} > {:.3e})", tol * scale);
    }
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| v as f64).collect()
}
