//! Streamed passes over rows that are not a whole number of 64-byte lines wide (rows of 100
//! or 200 channels, say): each row alone would leave a partial line at either end, and a
//! pass that mixes ordinary and streaming stores in a line loses what streaming gains, so
//! rows that are not whole 8-lane vectors were written with ordinary stores
//! (`simd::rows_stream`), and rows of whole vectors with 32-byte ones. Here the rows of a task go
//! as one stream of whole 64-byte lines across their boundaries instead: a vector of 16
//! values that straddles a boundary takes channels `j..C` in its first lanes and `0, 1, ...`
//! in the rest, its constants gathered by two masked loads (which touch no value outside
//! the constants). Same operations as the portable loops (`simd::rows_affine`,
//! `simd::rows_grad_combine`), so the values are theirs bit for bit.
//!
//! The same loops with ordinary stores write the outputs that stay in cache (tensors under
//! 16 MB, see `simd::streams`) of rows narrower than [`CACHED_MAX`], of whole lines or not
//! (see [`cached_rows`]).

use crate::simd::{affine1, grad1, head_of};
use std::arch::x86_64::*;

/// Fewest channels a row needs here: a vector then straddles at most one boundary.
pub(crate) const MIN_CHANNELS: usize = 16;

/// Rows of whole 8-lane vectors, but not of whole lines, at least this wide keep the AVX2
/// path's strips (`simd::x86::NT_WIDE`), which take them faster: NC 8192x2056 eval 5.1-5.4
/// ms that way against 6.3-6.6 as one stream, NC 2048x4104 2.4-2.5 against 3.1-3.5; NC
/// 16384x1000 4.6-4.9 against 4.0-4.3 (`examples/shapes`, 1 thread, 3 alternating runs).
const WIDE: usize = 2048;

/// Whether a streamed pass over rows of `c` channels goes as one stream across rows, on a
/// CPU with AVX-512, for rows of at least [`MIN_CHANNELS`]: rows that are not whole 8-lane
/// vectors from a 16-byte boundary (`whole_vectors` false, see `simd::rows_stream`), and
/// rows of whole vectors but not whole lines narrower than [`WIDE`] (which the AVX2 path
/// writes with 32-byte stores).
///
/// Measured against the ordinary stores the former had (`bnlab bench --shapes`, 3
/// alternating runs, medians, ms at 1 / 2 threads): NC 100000x100 eval 3.48 -> 2.85 / 2.30
/// -> 1.56, forward 6.07 -> 5.51 / 3.41 -> 2.94; NC 65536x196 eval 4.67 -> 3.52 / 3.42 ->
/// 2.06, forward 7.43 -> 5.54 / 4.98 -> 3.33; NHWC 32x56x56x100 eval 3.14 -> 2.65 / 2.52 ->
/// 1.53, forward + backward 15.6 -> 14.6 / 10.4 -> 8.3; NC 16384x1001 eval 6.73 -> 4.58 /
/// 4.22 -> 2.76; NC 8192x2050 eval 8.63 -> 6.99 / 5.04 -> 3.63. Against the AVX2 path for
/// the latter (`examples/shapes`, 1 thread, 3 alternating runs, eval / forward ms): NC
/// 100000x104 2.9-3.3 -> 2.1-2.6 / 5.0-5.4 -> 3.8-4.5, NC 65536x200 3.7-4.4 -> 2.9-3.4 /
/// 6.2-7.1 -> 4.4-4.9, NHWC 32x56x56x72 2.0-2.3 -> 1.5-1.6 / 3.5-3.8 -> 2.6-2.9; less in
/// `bnlab bench --shapes` (3 alternating runs, medians, eval ms at 1 / 2 threads): 3.24 ->
/// 2.97 / 1.85 -> 1.62, 4.37 -> 3.67 / 2.16 -> 2.10, 1.89 -> 1.60 / 1.12 -> 1.13, the
/// forward and backward together 0.91-0.94x the time. Rows of whole lines keep their own
/// paths (side by side, constants in registers).
#[inline(always)]
pub(crate) fn flat_rows(c: usize, whole_vectors: bool) -> bool {
    let eighths = !c.is_multiple_of(16) && c < WIDE;
    (!whole_vectors || eighths) && c >= MIN_CHANNELS && crate::simd::has_avx512()
}

/// Rows narrower than this whose outputs are not streamed go as one run of 64-byte vectors
/// across their boundaries too, with ordinary stores ([`cached_rows`]).
///
/// The compiler's vectorisation of the portable loop a row at a time pays for each row's
/// start and end (and the vector tail of rows that are not whole vectors), which narrow rows
/// cannot hide: on tensors that stay in cache it ran well under the copy's speed. Measured
/// (`bnlab bench --shapes`, the portable loop and this alternating, 3 runs of 3 rounds,
/// medians, ms at 1 / 2 threads, old -> new): NHWC 32x28x28x20 eval 0.294 -> 0.080 / 0.154
/// -> 0.048, forward + backward 1.033 -> 0.499 / 0.533 -> 0.286; NHWC 32x28x28x48 eval 0.309
/// -> 0.147 / 0.158 -> 0.064, forward 0.417 -> 0.259 / 0.215 -> 0.120; NHWC 32x28x28x64 (6.4
/// MB, PyTorch's eval 0.43-0.52 ms at 1 thread) eval 0.675 -> 0.281 / 0.365 -> 0.104, forward
/// 0.771 -> 0.439; NHWC 16x14x14x128 eval 0.101 -> 0.060 / 0.052 -> 0.028; NC 4096x256 eval
/// 0.159 -> 0.112 / 0.081 -> 0.061, forward 0.282 -> 0.229; NC 2048x512 eval 0.129 -> 0.109 /
/// 0.067 -> 0.056; NHWC 64x14x14x256 (12.8 MB) 0.95-1.00x the time at 1 thread, eval 0.68x at
/// 2 (4 runs). From rows of 1024 channels the loop a row at a time is as fast or faster (NC
/// 1024x1024 eval 0.117 -> 0.113 / 0.065 -> 0.059 but forward + backward 0.97x / 1.14x; NC
/// 512x2048 eval 0.191 -> 0.204 / 0.102 -> 0.100; NC 256x4096 1.13x the time at 2 threads);
/// rows of 100 channels ran alike either way (NC 8192x100).
pub(crate) const CACHED_MAX: usize = 1024;

/// Whether a pass over rows of `c` channels whose output is not streamed goes as one run
/// across rows with ordinary stores (see [`CACHED_MAX`]), on a CPU with AVX-512.
#[inline(always)]
pub(crate) fn cached_rows(c: usize) -> bool {
    (MIN_CHANNELS..CACHED_MAX).contains(&c) && crate::simd::has_avx512()
}

/// The constants of channels `j..j + 16` of a row of `c` (`c >= 16`), wrapping to channel 0
/// past `c - 1`, from the array at `p`.
#[inline(always)]
unsafe fn wrapped(p: *const f32, c: usize, j: usize) -> __m512 {
    if j + 16 <= c {
        return _mm512_loadu_ps(p.add(j));
    }
    // Lanes k.. take channels 0.. of the next row.
    let k = c - j;
    let m = (0xffffu32 << k) as __mmask16;
    _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(!m, p.add(j)), m, p.wrapping_sub(k))
}

/// Writes `o[0..n]` (`n` a multiple of `c`, starting with a row) as one run: `one(i, j)`
/// writes value `i` (channel `j`) with an ordinary store, up to the first line boundary and
/// after the last whole line; `sixteen(i, j)` gives values `i..i + 16` (the first of channel
/// `j`), streamed then fenced where `NT`, stored in cache otherwise.
#[inline(always)]
unsafe fn stream_rows<const NT: bool>(o: *mut f32, n: usize, c: usize, one: impl Fn(usize, usize), sixteen: impl Fn(usize, usize) -> __m512) {
    let h = head_of(o).min(n);
    for i in 0..h {
        one(i, i % c);
    }
    let (mut i, mut j) = (h, h % c);
    while i + 16 <= n {
        if NT {
            _mm512_stream_ps(o.add(i), sixteen(i, j));
        } else {
            _mm512_storeu_ps(o.add(i), sixteen(i, j));
        }
        i += 16;
        j += 16;
        if j >= c {
            j -= c;
        }
    }
    for i in i..n {
        one(i, i % c);
    }
    if NT {
        _mm_sfence();
    }
}

/// Rows of `c = ctr.len()` channels: `y = (x - ctr) * s + t`, as one run (streamed where
/// `NT`).
///
/// # Safety
/// The CPU has AVX-512F; `c >= 16`; `s` and `t` hold `c` values; `x` as many as `y`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn rows_affine<const NT: bool>(x: &[f32], y: &mut [f32], ctr: &[f32], s: &[f32], t: &[f32]) {
    let (c, n) = (ctr.len(), y.len());
    assert!(c >= MIN_CHANNELS && s.len() >= c && t.len() >= c && x.len() >= n && n.is_multiple_of(c));
    let (xp, yp, cp, sp, tp) = (x.as_ptr(), y.as_mut_ptr(), ctr.as_ptr(), s.as_ptr(), t.as_ptr());
    stream_rows::<NT>(
        yp,
        n,
        c,
        |i, j| *yp.add(i) = affine1(*xp.add(i), *cp.add(j), *sp.add(j), *tp.add(j)),
        |i, j| {
            let d = _mm512_sub_ps(_mm512_loadu_ps(xp.add(i)), wrapped(cp, c, j));
            _mm512_add_ps(_mm512_mul_ps(d, wrapped(sp, c, j)), wrapped(tp, c, j))
        },
    );
}

/// Rows of `c = ctr.len()` channels: `dx = dy * a + ((x - ctr) * b + d)`, as one run
/// (streamed where `NT`).
///
/// # Safety
/// The CPU has AVX-512F; `c >= 16`; `a`, `b` and `d` hold `c` values; `x` and `dy` as many
/// as `dx`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn rows_grad_combine<const NT: bool>(x: &[f32], dy: &[f32], dx: &mut [f32], ctr: &[f32], a: &[f32], b: &[f32], d: &[f32]) {
    let (c, n) = (ctr.len(), dx.len());
    assert!(c >= MIN_CHANNELS && a.len() >= c && b.len() >= c && d.len() >= c && x.len() >= n && dy.len() >= n && n.is_multiple_of(c));
    let (xp, gp, op) = (x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
    let (cp, ap, bp, dp) = (ctr.as_ptr(), a.as_ptr(), b.as_ptr(), d.as_ptr());
    stream_rows::<NT>(
        op,
        n,
        c,
        |i, j| *op.add(i) = grad1(*xp.add(i), *gp.add(i), *cp.add(j), *ap.add(j), *bp.add(j), *dp.add(j)),
        |i, j| {
            let g = _mm512_mul_ps(_mm512_loadu_ps(gp.add(i)), wrapped(ap, c, j));
            let e = _mm512_sub_ps(_mm512_loadu_ps(xp.add(i)), wrapped(cp, c, j));
            _mm512_add_ps(g, _mm512_add_ps(_mm512_mul_ps(e, wrapped(bp, c, j)), wrapped(dp, c, j)))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd;

    /// Both passes, streamed and cached, write what the portable loops write, bit for bit,
    /// for widths with and without whole vectors, any number of rows, and every start within
    /// a line.
    #[test]
    fn one_run_across_rows_equals_the_portable_loops() {
        if !crate::simd::has_avx512() {
            assert!(!flat_rows(100, false) && !flat_rows(104, true) && !cached_rows(64), "no AVX-512: rows keep their other paths");
            return;
        }
        assert!(cached_rows(16) && cached_rows(1023) && !cached_rows(15) && !cached_rows(1024));
        let value = |i: usize, s: usize| ((i * 7919 + s * 104_729) % 1013) as f32 * 0.37 - 150.0;
        for c in [16, 17, 20, 24, 33, 100, 104, 196, 1001] {
            let q: Vec<Vec<f32>> = (0..4).map(|s| (0..c).map(|j| value(j, s + 3) * 1e-3).collect()).collect();
            for rows in [1, 2, 3, 7] {
                let n = rows * c;
                let (x, dy): (Vec<f32>, Vec<f32>) = ((0..n).map(|i| value(i, 1)).collect(), (0..n).map(|i| value(i, 2)).collect());
                let mut want = vec![0.0f32; n];
                let mut buf = vec![0.0f32; n + 16];
                let same = |got: &[f32], want: &[f32]| got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
                for off in 0..16 {
                    let out = off..off + n;
                    simd::rows_affine(&x, &mut want, &q[0], &q[1], &q[2]);
                    buf.fill(f32::NAN);
                    // SAFETY: the CPU has AVX-512F; c >= 16.
                    unsafe { rows_affine::<true>(&x, &mut buf[out.clone()], &q[0], &q[1], &q[2]) };
                    assert!(same(&buf[out.clone()], &want), "affine, streamed: {c} channels, {rows} rows, offset {off}");
                    buf.fill(f32::NAN);
                    // SAFETY: as above.
                    unsafe { rows_affine::<false>(&x, &mut buf[out.clone()], &q[0], &q[1], &q[2]) };
                    assert!(same(&buf[out.clone()], &want), "affine, cached: {c} channels, {rows} rows, offset {off}");
                    simd::rows_grad_combine(&x, &dy, &mut want, &q[0], &q[1], &q[2], &q[3]);
                    buf.fill(f32::NAN);
                    // SAFETY: as above.
                    unsafe { rows_grad_combine::<true>(&x, &dy, &mut buf[out.clone()], &q[0], &q[1], &q[2], &q[3]) };
                    assert!(same(&buf[out.clone()], &want), "dx, streamed: {c} channels, {rows} rows, offset {off}");
                    buf.fill(f32::NAN);
                    // SAFETY: as above.
                    unsafe { rows_grad_combine::<false>(&x, &dy, &mut buf[out.clone()], &q[0], &q[1], &q[2], &q[3]) };
                    assert!(same(&buf[out], &want), "dx, cached: {c} channels, {rows} rows, offset {off}");
                }
            }
        }
    }
}
