//! Streamed passes over rows whose width is not a whole number of 8-lane vectors (rows of
//! 100 channels, say): each row alone would leave a partial line at either end, and a pass
//! that mixes ordinary and streaming stores in a line loses what streaming gains, so such
//! rows were written with ordinary stores (`simd::rows_stream`). Here the rows of a task go
//! as one stream of whole 64-byte lines across their boundaries instead: a vector of 16
//! values that straddles a boundary takes channels `j..C` in its first lanes and `0, 1, ...`
//! in the rest, its constants gathered by two masked loads (which touch no value outside
//! the constants). Same operations as the portable loops (`simd::rows_affine`,
//! `simd::rows_grad_combine`), so the values are theirs bit for bit.

use std::arch::x86_64::*;

/// Fewest channels a row needs here: a vector then straddles at most one boundary.
pub(crate) const MIN_CHANNELS: usize = 16;

/// Whether a streamed pass over rows of `c` channels goes as one stream across rows: rows
/// whose width or start leaves partial lines (see `simd::rows_stream`) of at least
/// [`MIN_CHANNELS`], on a CPU with AVX-512.
///
/// Measured against the ordinary stores such rows had (`bnlab bench --shapes`, 3
/// alternating runs, medians, ms at 1 / 2 threads): NC 100000x100 eval 3.48 -> 2.85 / 2.30
/// -> 1.56, forward 6.07 -> 5.51 / 3.41 -> 2.94; NC 65536x196 eval 4.67 -> 3.52 / 3.42 ->
/// 2.06, forward 7.43 -> 5.54 / 4.98 -> 3.33; NHWC 32x56x56x100 eval 3.14 -> 2.65 / 2.52 ->
/// 1.53, forward + backward 15.6 -> 14.6 / 10.4 -> 8.3. Rows of whole vectors (96, 200
/// channels) keep their own streamed paths, unchanged.
#[inline(always)]
pub(crate) fn flat_rows(c: usize, whole_lines: bool) -> bool {
    !whole_lines && c >= MIN_CHANNELS && crate::simd::has_avx512()
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

/// Writes `o[0..n]` (`n` a multiple of `c`, starting with a row) as one stream: `one(i, j)`
/// writes value `i` (channel `j`) with an ordinary store, up to the first line boundary and
/// after the last whole line; `sixteen(i, j)` gives values `i..i + 16` (the first of channel
/// `j`), streamed; then the fence.
#[inline(always)]
unsafe fn stream_rows(o: *mut f32, n: usize, c: usize, one: impl Fn(usize, usize), sixteen: impl Fn(usize, usize) -> __m512) {
    let h = ((64 - (o as usize) % 64) % 64 / 4).min(n);
    for i in 0..h {
        one(i, i % c);
    }
    let (mut i, mut j) = (h, h % c);
    while i + 16 <= n {
        _mm512_stream_ps(o.add(i), sixteen(i, j));
        i += 16;
        j += 16;
        if j >= c {
            j -= c;
        }
    }
    for i in i..n {
        one(i, i % c);
    }
    _mm_sfence();
}

/// Rows of `c = ctr.len()` channels: `y = (x - ctr) * s + t`, as one stream.
///
/// # Safety
/// The CPU has AVX-512F; `c >= 16`; `s` and `t` hold `c` values; `x` as many as `y`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn rows_affine(x: &[f32], y: &mut [f32], ctr: &[f32], s: &[f32], t: &[f32]) {
    let (c, n) = (ctr.len(), y.len());
    assert!(c >= MIN_CHANNELS && s.len() >= c && t.len() >= c && x.len() >= n && n.is_multiple_of(c));
    let (xp, yp, cp, sp, tp) = (x.as_ptr(), y.as_mut_ptr(), ctr.as_ptr(), s.as_ptr(), t.as_ptr());
    stream_rows(
        yp,
        n,
        c,
        |i, j| *yp.add(i) = (*xp.add(i) - *cp.add(j)) * *sp.add(j) + *tp.add(j),
        |i, j| {
            let d = _mm512_sub_ps(_mm512_loadu_ps(xp.add(i)), wrapped(cp, c, j));
            _mm512_add_ps(_mm512_mul_ps(d, wrapped(sp, c, j)), wrapped(tp, c, j))
        },
    );
}

/// Rows of `c = ctr.len()` channels: `dx = dy * a + ((x - ctr) * b + d)`, as one stream.
///
/// # Safety
/// The CPU has AVX-512F; `c >= 16`; `a`, `b` and `d` hold `c` values; `x` and `dy` as many
/// as `dx`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn rows_grad_combine(x: &[f32], dy: &[f32], dx: &mut [f32], ctr: &[f32], a: &[f32], b: &[f32], d: &[f32]) {
    let (c, n) = (ctr.len(), dx.len());
    assert!(c >= MIN_CHANNELS && a.len() >= c && b.len() >= c && d.len() >= c && x.len() >= n && dy.len() >= n && n.is_multiple_of(c));
    let (xp, gp, op) = (x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
    let (cp, ap, bp, dp) = (ctr.as_ptr(), a.as_ptr(), b.as_ptr(), d.as_ptr());
    stream_rows(
        op,
        n,
        c,
        |i, j| *op.add(i) = *gp.add(i) * *ap.add(j) + ((*xp.add(i) - *cp.add(j)) * *bp.add(j) + *dp.add(j)),
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

    /// Both passes write what the portable loops write, bit for bit, for widths with and
    /// without whole vectors, any number of rows, and every start within a line.
    #[test]
    fn one_stream_across_rows_equals_the_portable_loops() {
        if !crate::simd::has_avx512() {
            assert!(!flat_rows(100, false), "no AVX-512: rows keep ordinary stores");
            return;
        }
        let value = |i: usize, s: usize| ((i * 7919 + s * 104_729) % 1013) as f32 * 0.37 - 150.0;
        for c in [16, 17, 20, 33, 100, 196, 1001] {
            let q: Vec<Vec<f32>> = (0..4).map(|s| (0..c).map(|j| value(j, s + 3) * 1e-3).collect()).collect();
            for rows in [1, 2, 3, 7] {
                let n = rows * c;
                let (x, dy): (Vec<f32>, Vec<f32>) = ((0..n).map(|i| value(i, 1)).collect(), (0..n).map(|i| value(i, 2)).collect());
                let mut want = vec![0.0f32; n];
                let mut buf = vec![f32::NAN; n + 16];
                for off in 0..16 {
                    simd::rows_affine(&x, &mut want, &q[0], &q[1], &q[2]);
                    // SAFETY: the CPU has AVX-512F; c >= 16.
                    unsafe { rows_affine(&x, &mut buf[off..off + n], &q[0], &q[1], &q[2]) };
                    assert!(buf[off..off + n].iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "affine: {c} channels, {rows} rows, offset {off}");
                    simd::rows_grad_combine(&x, &dy, &mut want, &q[0], &q[1], &q[2], &q[3]);
                    // SAFETY: as above.
                    unsafe { rows_grad_combine(&x, &dy, &mut buf[off..off + n], &q[0], &q[1], &q[2], &q[3]) };
                    assert!(buf[off..off + n].iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "dx: {c} channels, {rows} rows, offset {off}");
                }
            }
        }
    }
}
