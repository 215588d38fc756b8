//! The element-wise passes over large float64 tensors written with streaming stores: whole
//! 64-byte lines of the output go straight to memory, without the read for ownership an
//! ordinary store costs and without evicting the input the pass is still reading (as the
//! float32 passes write from the same size, see `simd::STREAM_MIN_BYTES`). Where the CPU
//! has AVX-512; the values are those of [`Pointwise::apply`] bit for bit
//! ([`Pointwise::apply8`]: the same IEEE operations, eight at a time).

use super::pointwise::Pointwise;
use crate::layout::Dims;
use std::arch::x86_64::*;

/// Shortest channels-first run written with streaming stores (4 KB): a run's unaligned
/// ends are ordinary stores, and short runs mix the two too finely. Measured (`bnlab bench
/// --dtype f64 --shapes`, 3-4 alternating runs, medians, ms at 1 / 2 threads, never
/// streamed -> streamed): runs
/// of 784 gain (NCHW 32x128x28x28 eval 1.69 -> 1.13 / 0.84 -> 0.56, forward + backward 9.30
/// -> 7.50 / 4.83 -> 3.65), runs of 196 do not (NCHW 64x256x14x14 eval 1.73 -> 1.75 / 0.78 ->
/// 0.91), runs of 49 lose (NCHW 128x512x7x7 eval 1.78 -> 3.28 / 0.75 -> 1.80).
const MIN_RUN: usize = 512;

/// Narrowest rows written with streaming stores (512 bytes): each row's unaligned ends are
/// ordinary stores, one line in eight at this width. Measured (as [`MIN_RUN`]): rows of 64
/// and 40 channels gain (NHWC 32x56x56x64 eval 5.07 -> 3.69 / 2.95 -> 2.15 ms, NC 65536x40
/// 1.89 -> 1.38 / 0.84 -> 0.80), rows of 32 and fewer lose (NHWC 32x56x56x32 eval 1.61 ->
/// 2.87 / 1.38 -> 1.17, NHWC 64x56x56x16 1.59 -> 5.91 / 1.27 -> 1.97, NC 131072x24 1.93 ->
/// 2.87 / 1.29 -> 1.28).
const MIN_ROW: usize = 64;

/// Whether a pass over a float64 tensor of dimensions `d` streams its output: on AVX-512,
/// from the float32 passes' size on, over rows of whole lines (channels a multiple of 8, at
/// least [`MIN_ROW`]) or runs of at least [`MIN_RUN`] values.
pub(crate) fn streams(d: Dims) -> bool {
    let shaped = if d.is_rows() { d.channels.is_multiple_of(8) && d.channels >= MIN_ROW } else { d.inner >= MIN_RUN };
    shaped && crate::simd::has_avx512() && crate::simd::streams_bytes(8 * d.len())
}

/// Values before `p` reaches a 64-byte boundary (at most `n`).
#[inline(always)]
fn head(p: *const f64, n: usize) -> usize {
    ((64 - (p as usize) % 64) % 64 / 8).min(n)
}

/// Runs of a channels-first tensor of dimensions `d` (`inner` values each, of channel
/// `(first / inner + i) % C` for run `i` of `out`, whose first value is value `first` of
/// the tensor), as `pointwise::map_run` writes each.
///
/// # Safety
/// The CPU has AVX-512F; `a` and `b` hold at least `out.len()` values.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn runs<P: Pointwise>(op: P, a: &[f64], b: &[f64], d: Dims, q: [&[f64]; 4], first: usize, out: &mut [f64]) {
    let (inner, c) = (d.inner, d.channels);
    for (i, run) in out.chunks_exact_mut(inner).enumerate() {
        let ch = (first / inner + i) % c;
        let qs = [q[0][ch], q[1][ch], q[2][ch], q[3][ch]];
        let qv = [_mm512_set1_pd(qs[0]), _mm512_set1_pd(qs[1]), _mm512_set1_pd(qs[2]), _mm512_set1_pd(qs[3])];
        let (x, dy, y) = (a.as_ptr().add(i * inner), b.as_ptr().add(i * inner), run.as_mut_ptr());
        let h = head(y, inner);
        for j in 0..h {
            *y.add(j) = op.apply(*x.add(j), *dy.add(j), qs);
        }
        let mut j = h;
        while j + 8 <= inner {
            _mm512_stream_pd(y.add(j), op.apply8(_mm512_loadu_pd(x.add(j)), _mm512_loadu_pd(dy.add(j)), qv));
            j += 8;
        }
        for j in j..inner {
            *y.add(j) = op.apply(*x.add(j), *dy.add(j), qs);
        }
    }
    _mm_sfence();
}

/// Whole rows of `c` channels (a multiple of 8), `R` rows side by side (each channel's
/// constants loaded once for them), as `pointwise::map_rows` writes them.
///
/// # Safety
/// The CPU has AVX-512F; `a` and `b` hold at least `out.len()` values.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn rows<P: Pointwise, const R: usize>(op: P, a: &[f64], b: &[f64], q: [&[f64]; 4], out: &mut [f64]) {
    let c = q[0].len();
    let rows = out.len() / c;
    // Every row starts at the same place in a line: a row is a whole number of lines.
    let h = head(out.as_ptr(), c);
    let y = out.as_mut_ptr();
    let scalar = |r: usize, j: usize| {
        let at = r * c + j;
        *y.add(at) = op.apply(a[at], b[at], [q[0][j], q[1][j], q[2][j], q[3][j]]);
    };
    let mut r = 0;
    while r < rows {
        let g = if r + R <= rows { R } else { 1 };
        for k in r..r + g {
            for j in 0..h {
                scalar(k, j);
            }
        }
        let mut j = h;
        while j + 8 <= c {
            let qv = [
                _mm512_loadu_pd(q[0].as_ptr().add(j)),
                _mm512_loadu_pd(q[1].as_ptr().add(j)),
                _mm512_loadu_pd(q[2].as_ptr().add(j)),
                _mm512_loadu_pd(q[3].as_ptr().add(j)),
            ];
            for k in r..r + g {
                let at = k * c + j;
                _mm512_stream_pd(y.add(at), op.apply8(_mm512_loadu_pd(a.as_ptr().add(at)), _mm512_loadu_pd(b.as_ptr().add(at)), qv));
            }
            j += 8;
        }
        for k in r..r + g {
            for j in j..c {
                scalar(k, j);
            }
        }
        r += g;
    }
    _mm_sfence();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::float64::pointwise::{ConstantDx, Normalise, TrainDx};

    /// Each streamed pass writes every value exactly as `apply` defines it, at every start
    /// within a line (the heads and tails written one by one), over rows alone and side by
    /// side (with rows left over) and runs of whole and partial vectors.
    fn matches_apply<P: Pointwise>(op: P) {
        if !crate::simd::has_avx512() {
            // Nothing streams here: every pass takes the path of ordinary stores.
            assert!(!streams(Dims::rows(1 << 20, 64)));
            return;
        }
        let value = |i: usize, s: u64| ((i as u64 * 2654435761 + s) % 10007) as f64 * 0.0137 - 60.0;
        let check = |what: &str, out: &[f64], want: &dyn Fn(usize) -> f64| {
            for (i, &v) in out.iter().enumerate() {
                assert_eq!(v.to_bits(), want(i).to_bits(), "{what}: value {i}");
            }
        };
        for c in [8, 64, 1032] {
            let q: Vec<f64> = (0..4 * c).map(|i| value(i, 3) * 0.01).collect();
            let qs = [&q[..c], &q[c..2 * c], &q[2 * c..3 * c], &q[3 * c..]];
            for n in 1..=9 {
                let len = n * c;
                let (a, b): (Vec<f64>, Vec<f64>) = ((0..len).map(|i| value(i, 1)).collect(), (0..len).map(|i| value(i, 2)).collect());
                for off in 0..8 {
                    let mut buf = vec![f64::NAN; len + off];
                    let want = |i: usize| op.apply(a[i], b[i], [qs[0][i % c], qs[1][i % c], qs[2][i % c], qs[3][i % c]]);
                    // SAFETY: the CPU has AVX-512F; a and b hold len values.
                    unsafe { rows::<P, 4>(op, &a, &b, qs, &mut buf[off..]) };
                    check(&format!("{c} channels, {n} rows four at a time, offset {off}"), &buf[off..], &want);
                    buf.fill(f64::NAN);
                    // SAFETY: as above.
                    unsafe { rows::<P, 1>(op, &a, &b, qs, &mut buf[off..]) };
                    check(&format!("{c} channels, {n} rows one at a time, offset {off}"), &buf[off..], &want);
                }
            }
        }
        for (inner, c) in [(512, 3), (515, 2), (1000, 5)] {
            let len = 2 * c * inner;
            let (a, b): (Vec<f64>, Vec<f64>) = ((0..len).map(|i| value(i, 4)).collect(), (0..len).map(|i| value(i, 5)).collect());
            let q: Vec<f64> = (0..4 * c).map(|i| value(i, 6) * 0.01).collect();
            let qs = [&q[..c], &q[c..2 * c], &q[2 * c..3 * c], &q[3 * c..]];
            // The task starts at batch item 0, channel 1 (its first run is channel 1's).
            let first = inner;
            for off in 0..8 {
                let mut buf = vec![f64::NAN; len - inner + off];
                // SAFETY: the CPU has AVX-512F; a and b hold the task's values.
                unsafe { runs(op, &a[first..], &b[first..], Dims { outer: 2, channels: c, inner }, qs, first, &mut buf[off..]) };
                let want = |i: usize| {
                    let ch = ((first + i) / inner) % c;
                    op.apply(a[first + i], b[first + i], [qs[0][ch], qs[1][ch], qs[2][ch], qs[3][ch]])
                };
                check(&format!("runs of {inner}, {c} channels, offset {off}"), &buf[off..], &want);
            }
        }
    }

    #[test]
    fn streamed_passes_write_what_apply_defines() {
        matches_apply(Normalise);
        matches_apply(TrainDx);
        matches_apply(ConstantDx);
    }
}
