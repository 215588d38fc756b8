//! The element-wise passes over a float64 tensor: normalising, and forming dx.

use crate::layout::Dims;
use crate::parallel::for_each_chunk;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Values per task of an element-wise pass (128 KB of float64).
const TASK_VALUES: usize = 1 << 14;

/// Widest rows [`map_rows`] writes one at a time (their constants, 24 KB at the most,
/// stay in L1 up to there).
const SIDE_BY_SIDE_MIN: usize = 1024;

/// What an element-wise pass writes for value `x` (beside `dy`) of a channel whose four
/// constants are `q`.
pub(crate) trait Pointwise: Copy + Send + Sync {
    /// The output value.
    fn apply(self, x: f64, dy: f64, q: [f64; 4]) -> f64;

    /// [`apply`](Self::apply) on eight values at once, lane by lane with the same IEEE
    /// operations (for the streamed passes, `streamed`).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn apply8(self, x: __m512d, dy: __m512d, q: [__m512d; 4]) -> __m512d;
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

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn apply8(self, x: __m512d, _: __m512d, q: [__m512d; 4]) -> __m512d {
        _mm512_fmadd_pd(_mm512_sub_pd(x, q[0]), q[1], q[2])
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

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn apply8(self, x: __m512d, dy: __m512d, q: [__m512d; 4]) -> __m512d {
        _mm512_fmadd_pd(q[1], dy, _mm512_fmadd_pd(_mm512_sub_pd(x, q[0]), q[2], q[3]))
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

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn apply8(self, _: __m512d, dy: __m512d, q: [__m512d; 4]) -> __m512d {
        _mm512_mul_pd(q[1], dy)
    }
}

/// Writes `out = op(a, b, q[channel])` over a tensor of dimensions `d`, `q` laid out
/// `[q0 (C) | q1 | q2 | q3]`, in tasks of whole rows or runs; from 16 MB on, where the CPU
/// has AVX-512, with streaming stores (`streamed::streams` says which shapes).
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
    #[cfg(target_arch = "x86_64")]
    let nt = super::streamed::streams(d);
    for_each_chunk(out, chunk, 2 * d.len(), |i, o| {
        let first = i * chunk;
        let r = first..first + o.len();
        #[cfg(target_arch = "x86_64")]
        if nt {
            use super::streamed::{flat_rows, rows4, runs};
            // SAFETY: `streams` found AVX-512F and rows or runs of 8 values or more; `a` and
            // `b` hold the task's range.
            unsafe {
                match (d.is_rows(), c > SIDE_BY_SIDE_MIN && c.is_multiple_of(8)) {
                    (true, true) => rows4(op, &a[r.clone()], &b[r], q, o),
                    (true, false) => flat_rows(op, &a[r.clone()], &b[r], q, o),
                    (false, _) => runs(op, &a[r.clone()], &b[r], d, q, first, o),
                }
            }
            return;
        }
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
    /// Whole rows of `q[0].len()` channels; rows wider than [`SIDE_BY_SIDE_MIN`] four at a
    /// time, each channel's constants loaded once for the four (they come from L2 there).
    ///
    /// Measured (1 thread, medians of 10, three alternating runs of each build, a row at a
    /// time -> four): NC 4096x4096 eval 19.0-19.8 -> 13.4-14.6 ms, backward 49.1-50.5 ->
    /// 46.0-47.1; NC 1024x2048 eval 2.31-2.42 -> 1.32-1.47, backward 5.30-5.48 -> 4.44-4.76;
    /// but rows of 1024 lost (NC 256x1024 eval 0.116-0.120 -> 0.153-0.158, backward
    /// 0.44-0.47 -> 0.57-0.58), hence the threshold.
    fn map_rows<P: Pointwise>(op: P, a: &[f64], b: &[f64], q: [&[f64]; 4], out: &mut [f64]) {
        let c = q[0].len();
        let (q0, q1, q2, q3) = (&q[0][..c], &q[1][..c], &q[2][..c], &q[3][..c]);
        let rows = out.len() / c;
        let mut r = 0;
        if c > SIDE_BY_SIDE_MIN {
            while r + 4 <= rows {
                let span = r * c..(r + 4) * c;
                let mut o4 = out[span.clone()].chunks_exact_mut(c);
                let [o0, o1, o2, o3] = [(); 4].map(|_| o4.next().expect("four rows"));
                let (o0, o1, o2, o3) = (&mut o0[..c], &mut o1[..c], &mut o2[..c], &mut o3[..c]);
                let x: [&[f64]; 4] = std::array::from_fn(|i| &a[(r + i) * c..(r + i + 1) * c]);
                let y: [&[f64]; 4] = std::array::from_fn(|i| &b[(r + i) * c..(r + i + 1) * c]);
                for j in 0..c {
                    let qj = [q0[j], q1[j], q2[j], q3[j]];
                    o0[j] = op.apply(x[0][j], y[0][j], qj);
                    o1[j] = op.apply(x[1][j], y[1][j], qj);
                    o2[j] = op.apply(x[2][j], y[2][j], qj);
                    o3[j] = op.apply(x[3][j], y[3][j], qj);
                }
                r += 4;
            }
        }
        for r in r..rows {
            let (o, x, y) = (&mut out[r * c..(r + 1) * c], &a[r * c..(r + 1) * c], &b[r * c..(r + 1) * c]);
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
