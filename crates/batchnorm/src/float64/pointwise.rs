//! The element-wise passes over a float64 tensor: normalising, and forming dx.

use crate::layout::Dims;
use crate::parallel::for_each_chunk;

/// Values per task of an element-wise pass (128 KB of float64).
const TASK_VALUES: usize = 1 << 14;

/// What an element-wise pass writes for value `x` (beside `dy`) of a channel whose four
/// constants are `q`.
pub(crate) trait Pointwise: Copy + Send + Sync {
    /// The output value.
    fn apply(self, x: f64, dy: f64, q: [f64; 4]) -> f64;
}

/// `y = (x - mean) * s + t`, `q = [mean, s, t, _]`: centred on the float64 mean, so that
/// `x - mean` is exact or nearly for values near it, with one rounding in the multiply-add.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Normalise;

impl Pointwise for Normalise {
    #[inline(always)]
    fn apply(self, x: f64, _: f64, q: [f64; 4]) -> f64 {
        (x - q[0]).mul_add(q[1], q[2])
    }
}

/// `dx = a * dy + (b * (x - mean) + e)`, `q = [mean, a, b, e]`: the training backward.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrainDx;

impl Pointwise for TrainDx {
    #[inline(always)]
    fn apply(self, x: f64, dy: f64, q: [f64; 4]) -> f64 {
        q[1].mul_add(dy, (x - q[0]).mul_add(q[2], q[3]))
    }
}

/// `dx = a * dy`, `q = [_, a, _, _]`: the backward through constant statistics, which
/// reads no `x`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConstantDx;

impl Pointwise for ConstantDx {
    #[inline(always)]
    fn apply(self, _: f64, dy: f64, q: [f64; 4]) -> f64 {
        q[1] * dy
    }
}

/// Writes `out = op(a, b, q[channel])` over a tensor of dimensions `d`, `q` laid out
/// `[q0 (C) | q1 | q2 | q3]`, in tasks of whole rows or runs.
pub(crate) fn map<P: Pointwise>(op: P, a: &[f64], b: &[f64], d: Dims, q: &[f64], out: &mut [f64]) {
    if d.is_empty() {
        return;
    }
    let c = d.channels;
    let q = [&q[..c], &q[c..2 * c], &q[2 * c..3 * c], &q[3 * c..4 * c]];
    let unit = if d.is_rows() { c } else { d.inner };
    // Tasks of whole rows or runs, about 128 KB each; a value is 8 bytes, so the pass is
    // worth the pool from half a float32 pass's count of values.
    let chunk = (TASK_VALUES / unit).max(1) * unit;
    for_each_chunk(out, chunk, 2 * d.len(), |i, o| {
        let first = i * chunk;
        let r = first..first + o.len();
        if d.is_rows() {
            map_rows(op, &a[r.clone()], &b[r], q, o);
        } else {
            for (i, run) in o.chunks_exact_mut(d.inner).enumerate() {
                let at = first + i * d.inner;
                let ch = (first / d.inner + i) % c;
                map_run(op, &a[at..at + d.inner], &b[at..at + d.inner], [q[0][ch], q[1][ch], q[2][ch], q[3][ch]], run);
            }
        }
    });
}

wide! {
    /// Whole rows of `q[0].len()` channels.
    fn map_rows<P: Pointwise>(op: P, a: &[f64], b: &[f64], q: [&[f64]; 4], out: &mut [f64]) {
        let c = q[0].len();
        for ((o, x), y) in out.chunks_exact_mut(c).zip(a.chunks_exact(c)).zip(b.chunks_exact(c)) {
            let (q0, q1, q2, q3) = (&q[0][..c], &q[1][..c], &q[2][..c], &q[3][..c]);
            for j in 0..c {
                o[j] = op.apply(x[j], y[j], [q0[j], q1[j], q2[j], q3[j]]);
            }
        }
    }
}

wide! {
    /// One run of a channel whose constants are `q`.
    fn map_run<P: Pointwise>(op: P, a: &[f64], b: &[f64], q: [f64; 4], out: &mut [f64]) {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = op.apply(x, y, q);
        }
    }
}
