//! The element-wise passes over large float64 tensors written with streaming stores: whole
//! 64-byte lines of the output go straight to memory, without the read for ownership an
//! ordinary store costs and without evicting the input the pass is still reading (as the
//! float32 passes write from the same size, see `simd::STREAM_MIN_BYTES`). Where the CPU
//! has AVX-512; the values are those of [`Pointwise::apply`] bit for bit
//! ([`Pointwise::apply8`]: the same IEEE operations, eight at a time).

use super::pointwise::Pointwise;
use crate::layout::Dims;
use std::arch::x86_64::*;

/// Fewest values of a row or run for the streamed passes: a vector of eight then straddles
/// at most one boundary between rows or runs.
const MIN_SPAN: usize = 8;

/// Whether a pass over a float64 tensor of dimensions `d` streams its output: on AVX-512,
/// from the float32 passes' size on (on one thread from 8 MB, every pass and layout: see
/// `simd::streams_alone_bytes`), over rows or runs of at least [`MIN_SPAN`] values.
///
/// On one thread from 8 MB (`bnlab bench --dtype f64 --threads 1`, the same binary with
/// the bound at 16 and 8 MB alternating, 4 runs each, medians, ms): NHWC 32x14x14x256
/// (12.8 MB) forward 2.50 -> 1.83, forward + backward 6.16 -> 4.94, eval 1.06 -> 0.59; NC
/// 1024x1536 2.81 -> 2.48, 7.47 -> 6.88, 1.04 -> 0.79; NCHW 32x256x14x14 2.40 -> 1.96,
/// 5.64 -> 4.53, 0.84 -> 0.52; NCHW 8x64x56x56 2.01 -> 1.61, 4.94 -> 3.76, 0.81 -> 0.52.
///
/// Rows and runs are streamed as one stream of whole lines across their boundaries
/// ([`runs`], [`flat_rows`]); each streamed on its own, with its unaligned ends ordinary
/// stores, short ones lost to ordinary stores (`bnlab bench --dtype f64 --shapes`, 3-4
/// alternating runs, medians, eval ms at 1 / 2 threads: NCHW 128x512x7x7 1.78 -> 3.28 /
/// 0.75 -> 1.80, NHWC 64x56x56x16 1.59 -> 5.91 / 1.27 -> 1.97). As one stream, against
/// ordinary stores: NCHW 128x512x7x7 1.72 -> 1.25 / 1.18 -> 0.98, NCHW 64x256x14x14 1.70 ->
/// 1.20 / 1.28 -> 0.94, NCHW 256x1024x4x4 3.00 -> 2.20 / 1.96 -> 1.42, NHWC 64x56x56x16 1.53
/// -> 1.37 / 1.37 -> 1.00; against each run or row streamed on its own: NCHW 32x64x56x56
/// 2.97 -> 2.56 / 2.10 -> 2.02, NHWC 32x56x56x64 3.68 -> 3.05 / 2.62 -> 2.10. Rows of more
/// than 1024 channels, a multiple of 8, go four side by side instead ([`rows4`]; as one
/// stream NC 4096x4096 took 15.1 ms against 9.4 at 1 thread, 8.3 against 6.0 at 2).
pub(crate) fn streams(d: Dims) -> bool {
    let span = if d.is_rows() { d.channels } else { d.inner };
    let bytes = 8 * d.len();
    span >= MIN_SPAN && crate::simd::has_avx512() && (crate::simd::streams_bytes(bytes) || crate::simd::streams_alone_bytes(bytes))
}

/// Values before `p` reaches a 64-byte boundary (at most `n`).
#[inline(always)]
fn head(p: *const f64, n: usize) -> usize {
    ((64 - (p as usize) % 64) % 64 / 8).min(n)
}

/// Writes `y[0..n]` as one stream: `one(v)` writes value `v` with an ordinary store (the
/// first `h`, up to a line's boundary, and those after the last whole line), `eight(v)`
/// gives values `v..v + 8`, asked for in order from `h`, 8 apart, and streamed; then the
/// fence that orders the streamed stores before whatever the caller does next.
#[inline(always)]
unsafe fn stream_from(y: *mut f64, n: usize, h: usize, one: impl Fn(usize), mut eight: impl FnMut(usize) -> __m512d) {
    for v in 0..h {
        one(v);
    }
    let mut v = h;
    while v + 8 <= n {
        _mm512_stream_pd(y.add(v), eight(v));
        v += 8;
    }
    for v in v..n {
        one(v);
    }
    _mm_sfence();
}

/// Runs of a channels-first tensor of dimensions `d` (`inner` values each, at least 8, of
/// channel `(first / inner + i) % C` for run `i` of `out`, whose first value is value
/// `first` of the tensor), as `pointwise::map_run` writes each, but as one stream of whole
/// lines across the runs' boundaries: a vector that straddles one takes the next channel's
/// constants in the lanes past it.
///
/// # Safety
/// The CPU has AVX-512F; `a` and `b` hold at least `out.len()` values; `d.inner >= 8`.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn runs<P: Pointwise>(op: P, a: &[f64], b: &[f64], d: Dims, q: [&[f64]; 4], first: usize, out: &mut [f64]) {
    let (inner, c, n) = (d.inner, d.channels, out.len());
    debug_assert!(inner >= 8 && first.is_multiple_of(inner) && n.is_multiple_of(inner));
    let (x, dy, y) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    let consts = |ch: usize| [q[0][ch], q[1][ch], q[2][ch], q[3][ch]];
    let lanes = |q: [f64; 4]| [_mm512_set1_pd(q[0]), _mm512_set1_pd(q[1]), _mm512_set1_pd(q[2]), _mm512_set1_pd(q[3])];
    let one = |v: usize| *y.add(v) = op.apply(*x.add(v), *dy.add(v), consts(((first + v) / inner) % c));
    let h = head(y, n);
    // The run holding the next vector's first value: its channel, constants and (relative) end.
    let mut ch = ((first + h) / inner) % c;
    let mut cur = lanes(consts(ch));
    let mut end = ((first + h) / inner + 1) * inner - first;
    let eight = |v: usize| {
        let (vx, vd) = (_mm512_loadu_pd(x.add(v)), _mm512_loadu_pd(dy.add(v)));
        if v + 8 < end {
            return op.apply8(vx, vd, cur);
        }
        ch = if ch + 1 == c { 0 } else { ch + 1 };
        let next = lanes(consts(ch));
        // Lanes end - v and up (none when the vector ends with the run) are the next run's.
        let m = (0xffu32 << (end - v)) as __mmask8;
        let qv = [0, 1, 2, 3].map(|s| _mm512_mask_blend_pd(m, cur[s], next[s]));
        (cur, end) = (next, end + inner);
        op.apply8(vx, vd, qv)
    };
    stream_from(y, n, h, one, eight);
}

/// Rows of `c` channels (at least 8; `out` starts with a row), as `pointwise::map_rows`
/// writes them, as one stream of whole lines across the rows' boundaries: a vector that
/// straddles one takes channels 0, 1, ... in the lanes past it (masked loads, which touch
/// no value outside the constants).
///
/// # Safety
/// The CPU has AVX-512F; `a` and `b` hold at least `out.len()` values; `q[0].len() >= 8`.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn flat_rows<P: Pointwise>(op: P, a: &[f64], b: &[f64], q: [&[f64]; 4], out: &mut [f64]) {
    let (c, n) = (q[0].len(), out.len());
    debug_assert!(c >= 8 && n.is_multiple_of(c));
    let (x, dy, y) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    let one = |v: usize| *y.add(v) = op.apply(*x.add(v), *dy.add(v), [q[0][v % c], q[1][v % c], q[2][v % c], q[3][v % c]]);
    let h = head(y, n);
    // The channel of the next vector's first value.
    let mut j = h % c;
    let eight = |v: usize| {
        let qv = if j + 8 <= c {
            let qv = [0, 1, 2, 3].map(|s| _mm512_loadu_pd(q[s].as_ptr().add(j)));
            j = if j + 8 == c { 0 } else { j + 8 };
            qv
        } else {
            // Lanes 0..k are channels j..c, lanes k.. channels 0.. of the next row.
            let k = c - j;
            let m = (0xffu32 << k) as __mmask8;
            j = 8 - k;
            [0, 1, 2, 3].map(|s| _mm512_mask_loadu_pd(_mm512_maskz_loadu_pd(!m, q[s].as_ptr().add(c - k)), m, q[s].as_ptr().wrapping_sub(k)))
        };
        op.apply8(_mm512_loadu_pd(x.add(v)), _mm512_loadu_pd(dy.add(v)), qv)
    };
    stream_from(y, n, h, one, eight);
}

/// Whole rows of `c` channels, four side by side (each channel's constants loaded once for
/// them; the rows left over one at a time), as `pointwise::map_rows` writes wide rows: each
/// row's unaligned ends are ordinary stores (a row of whole lines starts where the last one
/// did within its line).
///
/// # Safety
/// The CPU has AVX-512F; `a` and `b` hold at least `out.len()` values; `c` is a multiple of
/// 8 (else the streaming stores of some rows fall off the lines' boundaries, and fault).
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn rows4<P: Pointwise>(op: P, a: &[f64], b: &[f64], q: [&[f64]; 4], out: &mut [f64]) {
    const R: usize = 4;
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
        for c in [8, 13, 64, 1032] {
            let q: Vec<f64> = (0..4 * c).map(|i| value(i, 3) * 0.01).collect();
            let qs = [&q[..c], &q[c..2 * c], &q[2 * c..3 * c], &q[3 * c..]];
            for n in 1..=9 {
                let len = n * c;
                let (a, b): (Vec<f64>, Vec<f64>) = ((0..len).map(|i| value(i, 1)).collect(), (0..len).map(|i| value(i, 2)).collect());
                for off in 0..8 {
                    let mut buf = vec![f64::NAN; len + off];
                    let want = |i: usize| op.apply(a[i], b[i], [qs[0][i % c], qs[1][i % c], qs[2][i % c], qs[3][i % c]]);
                    if c.is_multiple_of(8) {
                        // SAFETY: the CPU has AVX-512F; a and b hold len values; rows of whole lines.
                        unsafe { rows4(op, &a, &b, qs, &mut buf[off..]) };
                        check(&format!("{c} channels, {n} rows four at a time, offset {off}"), &buf[off..], &want);
                        buf.fill(f64::NAN);
                    }
                    // SAFETY: the CPU has AVX-512F; a and b hold len values; rows of 8 or more.
                    unsafe { flat_rows(op, &a, &b, qs, &mut buf[off..]) };
                    check(&format!("{c} channels, {n} rows as one stream, offset {off}"), &buf[off..], &want);
                }
            }
        }
        for (inner, c) in [(8, 3), (9, 2), (49, 5), (512, 3), (515, 2), (1000, 5)] {
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
