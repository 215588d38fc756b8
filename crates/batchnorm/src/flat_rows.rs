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
//! (and of whole lines up to [`CACHED_LINES_MAX`]; see [`cached_rows`]), in 16-lane vectors
//! where the CPU has AVX-512 and in 8-lane ones where it has AVX2 only. Those runs start at
//! the input's first line boundary, and their per-channel constants as far past a line as
//! the input (`simd::constants_skew`), so that over rows of whole lines no load of them
//! straddles two lines.

use crate::simd::{affine1, grad1, head_of};
use std::arch::x86_64::*;

/// Fewest channels a row needs here: a 16-lane vector then straddles at most one boundary
/// (an 8-lane one from 8 channels, see [`cached_rows`]).
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

/// Rows narrower than this whose outputs are not streamed go as one run of 16-lane vectors
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
/// rows of 100 channels ran alike either way (NC 8192x100). Those timings had the constants
/// wherever the allocator's offset put them against the output's lines; rows of whole lines
/// now run wider (see [`CACHED_LINES_MAX`]).
pub(crate) const CACHED_MAX: usize = 1024;

/// Rows of whole 64-byte lines narrower than this go as one cached run too (from
/// [`CACHED_MAX`] on, the loop a row at a time takes the rest).
///
/// With the constants on the input's offset within a line (`simd::constants_skew`) no
/// load of a constant straddles two lines, which is what the one run lost from 1024
/// channels on. Measured with `x` and `y` 16 bytes past a page (as large buffers are), 1
/// thread, medians of 800 calls, 3 alternating runs, a row at a time -> one run, ms: NC
/// 256x1024 eval 0.032 -> 0.026, forward 0.062 -> 0.057, forward + backward 0.163 -> 0.151-0.179
/// (median 0.156); NC 512x1024 eval 0.061 -> 0.050, forward 0.119 -> 0.108, forward +
/// backward 0.320 -> 0.302; NC 1024x1024 eval 0.121 -> 0.099, forward 0.235 -> 0.214,
/// forward + backward 0.71 -> 0.71; NC 2048x1024 (8 MB, from L3) within noise (0.95-1.09x).
/// Rows of 2048 channels and more ran alike either way (NC 512x2048 eval 0.184 -> 0.182,
/// forward 0.303 -> 0.300; NC 256x8192 and NC 128x16384 within 4%).
pub(crate) const CACHED_LINES_MAX: usize = 2048;

/// Rows narrower than this whose outputs are not streamed go as one run of 8-lane vectors
/// on a CPU with AVX2 but not AVX-512 (the portable loop's AVX2 copy a row at a time
/// otherwise).
///
/// Measured on this project's machine with the pass's AVX-512 path turned off (the rest of
/// the kernels as they run there; `bnlab bench --shapes`, 3 runs of 3 rounds alternating,
/// medians, ms at 1 / 2 threads, row by row -> one run of 8 lanes): NHWC 32x28x28x64 eval
/// 0.551 -> 0.259 / 0.283 -> 0.146, forward 0.710 -> 0.417, forward + backward 1.956 ->
/// 1.457; NHWC 32x28x28x20 eval 0.302 -> 0.080, forward + backward 1.048 -> 0.460; NHWC
/// 16x14x14x128 eval 0.089 -> 0.061 / 0.054 -> 0.039; NHWC 8x28x28x12 (rows of 24 once
/// regrouped, see `narrow`) eval 0.045 -> 0.013. Rows of 256 and 512 channels gained
/// nothing there (NC 4096x256 eval 0.170 -> 0.164, NC 2048x512 0.143 -> 0.154; best of 7
/// in 5 alternating runs of `examples/shapes`, 0.167-0.170 -> 0.155-0.202 and 0.141-0.144
/// -> 0.167-0.203), where 16 lanes did (0.139-0.147 and 0.139-0.150).
pub(crate) const CACHED_MAX_8: usize = 256;

/// How a pass over rows of `c` channels whose output is not streamed goes as one run across
/// rows with ordinary stores: in 16-lane vectors on a CPU with AVX-512 (rows of
/// [`MIN_CHANNELS`] to [`CACHED_MAX`], and of whole lines to [`CACHED_LINES_MAX`]), in
/// 8-lane ones on a CPU with AVX2 only (rows of 8 to [`CACHED_MAX_8`]), or not at all
/// (`None`).
#[inline(always)]
pub(crate) fn cached_rows(c: usize) -> Option<Width> {
    if crate::simd::has_avx512() {
        let lines = c.is_multiple_of(16) && c < CACHED_LINES_MAX;
        ((MIN_CHANNELS..CACHED_MAX).contains(&c) || lines).then_some(Width::W16)
    } else {
        ((8..CACHED_MAX_8).contains(&c) && crate::simd::has_avx2_fma()).then_some(Width::W8)
    }
}

/// The vectors a one-run pass goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Width {
    /// 16 lanes (AVX-512F).
    W16,
    /// 8 lanes (AVX2).
    W8,
}

/// The vector operations of the one-run loops, for 16-lane (AVX-512) and 8-lane (AVX2)
/// vectors; the caller's CPU has the features of the type it uses.
trait Lanes: Copy {
    /// Values a vector holds.
    const N: usize;
    unsafe fn load(p: *const f32) -> Self;
    /// The constants of channels `j..j + N` of a row of `c` (`c >= N`), wrapping to channel
    /// 0 past `c - 1`, from the array at `p`; touches no value outside the array.
    unsafe fn wrapped(p: *const f32, c: usize, j: usize) -> Self;
    /// Stores `v` at `p` (streamed where `NT`, then `p` is 64-byte aligned).
    unsafe fn store<const NT: bool>(p: *mut f32, v: Self);
    unsafe fn sub(a: Self, b: Self) -> Self;
    unsafe fn mul(a: Self, b: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
}

impl Lanes for __m512 {
    const N: usize = 16;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn wrapped(p: *const f32, c: usize, j: usize) -> Self {
        if j + 16 <= c {
            return _mm512_loadu_ps(p.add(j));
        }
        // Lanes k.. take channels 0.. of the next row.
        let k = c - j;
        let m = (0xffffu32 << k) as __mmask16;
        _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(!m, p.add(j)), m, p.wrapping_sub(k))
    }
    #[inline(always)]
    unsafe fn store<const NT: bool>(p: *mut f32, v: Self) {
        if NT {
            _mm512_stream_ps(p, v)
        } else {
            _mm512_storeu_ps(p, v)
        }
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        _mm512_add_ps(a, b)
    }
}

impl Lanes for __m256 {
    const N: usize = 8;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn wrapped(p: *const f32, c: usize, j: usize) -> Self {
        if j + 8 <= c {
            return _mm256_loadu_ps(p.add(j));
        }
        // Lanes below k from channels j.., the rest from channels 0..; masked-off lanes
        // are not read, and the blend selects (an addition of the two would turn a -0.0
        // constant into +0.0).
        let k = (c - j) as i32;
        let first = _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        let rest = _mm256_xor_si256(first, _mm256_set1_epi32(-1));
        let lo = _mm256_maskload_ps(p.add(j), first);
        let hi = _mm256_maskload_ps(p.wrapping_sub(k as usize), rest);
        _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(rest))
    }
    #[inline(always)]
    unsafe fn store<const NT: bool>(p: *mut f32, v: Self) {
        if NT {
            _mm256_stream_ps(p, v)
        } else {
            _mm256_storeu_ps(p, v)
        }
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        _mm256_add_ps(a, b)
    }
}

/// Writes `o[0..n]` (`n` a multiple of `c`, starting with a row) as one run: `one(i, j)`
/// writes value `i` (channel `j`) with an ordinary store, up to the first line boundary and
/// after the last whole vector; `vector(i, j)` gives values `i..i + V::N` (the first of
/// channel `j`), streamed then fenced where `NT`, stored in cache otherwise.
///
/// The boundary is the output's where `NT` (a streaming store writes a whole line), the
/// input `lead`'s otherwise: a pass loads more than it stores (the input and three or four
/// constants, placed at the input's offset, see `simd::constants_skew`), and where input
/// and output lie at different offsets within a line, loads that straddle lines cost more
/// than stores that do. Measured with `x` and `y` at different offsets (1 thread, medians
/// of 300 calls, 2 runs, aligned on the output -> on the input, ms): NC 4096x256 eval,
/// `x` 48 and `y` 16 bytes past a page, 0.104 -> 0.098; NHWC 16x14x14x128 eval, `x` on a
/// page and `y` 16 past, 0.044 -> 0.040, forward + backward 0.221 -> 0.205; NC 256x1024
/// eval 0.029 -> 0.027-0.028; alike where both lie at one offset.
///
/// With `back` the whole vectors go from the last to the first: where the output sits a
/// little above an input modulo 4 KB (`simd::output_trails`), the loads that run ahead of
/// the stores from the start wait on them as if they read them. Only the cached passes ask
/// for it (the streamed ones were not measured that way).
#[inline(always)]
unsafe fn run_rows<V: Lanes, const NT: bool>(
    o: *mut f32,
    lead: *const f32,
    back: bool,
    n: usize,
    c: usize,
    one: impl Fn(usize, usize),
    vector: impl Fn(usize, usize) -> V,
) {
    let h = if NT { head_of(o) } else { head_of(lead) }.min(n);
    for i in 0..h {
        one(i, i % c);
    }
    let m = (n - h) / V::N;
    let end = h + m * V::N;
    // From the last vector to the first where `back` (see above), in one loop either way:
    // `vector` keeps one call site, so that it is inlined into this function's target
    // features, and the direction is two steps fixed before the loop. A step back of a
    // vector is one of `c - V::N` channels forward, wrapped.
    let (mut i, mut j) = if back && m > 0 { (end - V::N, (end - V::N) % c) } else { (h, h % c) };
    let (di, dj) = if back { (V::N.wrapping_neg(), c - V::N) } else { (V::N, V::N) };
    for _ in 0..m {
        V::store::<NT>(o.add(i), vector(i, j));
        i = i.wrapping_add(di);
        j += dj;
        if j >= c {
            j -= c;
        }
    }
    for i in end..n {
        one(i, i % c);
    }
    if NT {
        _mm_sfence();
    }
}

/// Rows of `c = ctr.len()` channels: `y = (x - ctr) * s + t`, as one run of `V`s.
#[inline(always)]
unsafe fn affine_run<V: Lanes, const NT: bool>(x: &[f32], y: &mut [f32], ctr: &[f32], s: &[f32], t: &[f32]) {
    let (c, n) = (ctr.len(), y.len());
    assert!(c >= V::N && s.len() >= c && t.len() >= c && x.len() >= n && n.is_multiple_of(c));
    let (xp, yp, cp, sp, tp) = (x.as_ptr(), y.as_mut_ptr(), ctr.as_ptr(), s.as_ptr(), t.as_ptr());
    run_rows::<V, NT>(
        yp,
        xp,
        !NT && crate::simd::output_trails(yp, [xp]),
        n,
        c,
        |i, j| *yp.add(i) = affine1(*xp.add(i), *cp.add(j), *sp.add(j), *tp.add(j)),
        |i, j| {
            let d = V::sub(V::load(xp.add(i)), V::wrapped(cp, c, j));
            V::add(V::mul(d, V::wrapped(sp, c, j)), V::wrapped(tp, c, j))
        },
    );
}

/// Rows of `c = ctr.len()` channels: `dx = dy * a + ((x - ctr) * b + d)`, as one run of `V`s.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn grad_run<V: Lanes, const NT: bool>(x: &[f32], dy: &[f32], dx: &mut [f32], ctr: &[f32], a: &[f32], b: &[f32], d: &[f32]) {
    let (c, n) = (ctr.len(), dx.len());
    assert!(c >= V::N && a.len() >= c && b.len() >= c && d.len() >= c && x.len() >= n && dy.len() >= n && n.is_multiple_of(c));
    let (xp, gp, op) = (x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
    let (cp, ap, bp, dp) = (ctr.as_ptr(), a.as_ptr(), b.as_ptr(), d.as_ptr());
    run_rows::<V, NT>(
        op,
        xp,
        !NT && crate::simd::output_trails(op, [xp, gp]),
        n,
        c,
        |i, j| *op.add(i) = grad1(*xp.add(i), *gp.add(i), *cp.add(j), *ap.add(j), *bp.add(j), *dp.add(j)),
        |i, j| {
            let g = V::mul(V::load(gp.add(i)), V::wrapped(ap, c, j));
            let e = V::sub(V::load(xp.add(i)), V::wrapped(cp, c, j));
            V::add(g, V::add(V::mul(e, V::wrapped(bp, c, j)), V::wrapped(dp, c, j)))
        },
    );
}

/// Rows of `c = ctr.len()` channels: `y = (x - ctr) * s + t`, as one run of 16-lane vectors
/// (streamed where `NT`).
///
/// # Safety
/// The CPU has AVX-512F; `c >= 16`; `s` and `t` hold `c` values; `x` as many as `y`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn rows_affine<const NT: bool>(x: &[f32], y: &mut [f32], ctr: &[f32], s: &[f32], t: &[f32]) {
    affine_run::<__m512, NT>(x, y, ctr, s, t)
}

/// Rows of `c = ctr.len()` channels: `dx = dy * a + ((x - ctr) * b + d)`, as one run of
/// 16-lane vectors (streamed where `NT`).
///
/// # Safety
/// The CPU has AVX-512F; `c >= 16`; `a`, `b` and `d` hold `c` values; `x` and `dy` as many
/// as `dx`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn rows_grad_combine<const NT: bool>(x: &[f32], dy: &[f32], dx: &mut [f32], ctr: &[f32], a: &[f32], b: &[f32], d: &[f32]) {
    grad_run::<__m512, NT>(x, dy, dx, ctr, a, b, d)
}

/// [`rows_affine`] with ordinary stores in 8-lane vectors.
///
/// # Safety
/// The CPU has AVX2; `c >= 8`; `s` and `t` hold `c` values; `x` as many as `y`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn rows_affine_8(x: &[f32], y: &mut [f32], ctr: &[f32], s: &[f32], t: &[f32]) {
    affine_run::<__m256, false>(x, y, ctr, s, t)
}

/// [`rows_grad_combine`] with ordinary stores in 8-lane vectors.
///
/// # Safety
/// The CPU has AVX2; `c >= 8`; `a`, `b` and `d` hold `c` values; `x` and `dy` as many as `dx`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn rows_grad_combine_8(x: &[f32], dy: &[f32], dx: &mut [f32], ctr: &[f32], a: &[f32], b: &[f32], d: &[f32]) {
    grad_run::<__m256, false>(x, dy, dx, ctr, a, b, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd;

    type Affine = unsafe fn(&[f32], &mut [f32], &[f32], &[f32], &[f32]);
    type Grad = unsafe fn(&[f32], &[f32], &mut [f32], &[f32], &[f32], &[f32], &[f32]);

    /// Both passes, streamed and cached, in 16-lane and in 8-lane vectors, write what the
    /// portable loops write, bit for bit, for widths with and without whole vectors, any
    /// number of rows, and every start within a line; channel 0's constants include -0.0,
    /// which a vector straddling two rows gathers from two loads.
    #[test]
    fn one_run_across_rows_equals_the_portable_loops() {
        let (w16, w8) = (simd::has_avx512(), simd::has_avx2_fma());
        let widest = if w16 { Some(Width::W16) } else { w8.then_some(Width::W8) };
        assert_eq!(cached_rows(16), widest);
        assert_eq!(cached_rows(15), (!w16 && w8).then_some(Width::W8));
        assert_eq!(cached_rows(1023).is_some(), w16);
        assert_eq!(cached_rows(255).is_some(), w16 || w8);
        assert_eq!(cached_rows(1024), w16.then_some(Width::W16), "whole lines run wider");
        assert_eq!(cached_rows(1025), None);
        assert_eq!(cached_rows(2048), None);
        assert_eq!(cached_rows(7), None);
        if !w16 {
            assert!(!flat_rows(100, false) && !flat_rows(104, true), "no AVX-512: streamed rows keep their other paths");
        }
        let mut kinds: Vec<(&str, usize, Affine, Grad)> = Vec::new();
        if w16 {
            kinds.push(("16 lanes, streamed", 16, rows_affine::<true>, rows_grad_combine::<true>));
            kinds.push(("16 lanes, cached", 16, rows_affine::<false>, rows_grad_combine::<false>));
        }
        if w8 {
            kinds.push(("8 lanes, cached", 8, rows_affine_8, rows_grad_combine_8));
        }
        let value = |i: usize, s: usize| ((i * 7919 + s * 104_729) % 1013) as f32 * 0.37 - 150.0;
        let same = |got: &[f32], want: &[f32]| got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
        for c in [8, 9, 12, 15, 16, 17, 20, 24, 33, 100, 104, 196, 1001, 1024] {
            let mut q: Vec<Vec<f32>> = (0..4).map(|s| (0..c).map(|j| value(j, s + 3) * 1e-3).collect()).collect();
            // (x - ctr) * -0.0 + -0.0 is -0.0 where x > ctr: a +0.0 gathered instead shows.
            (q[1][0], q[2][0]) = (-0.0, -0.0);
            for rows in [1, 2, 3, 7] {
                let n = rows * c;
                let (x, dy): (Vec<f32>, Vec<f32>) = ((0..n).map(|i| value(i, 1)).collect(), (0..n).map(|i| value(i, 2)).collect());
                let (mut want_y, mut want_dx) = (vec![0.0f32; n], vec![0.0f32; n]);
                simd::rows_affine(&x, &mut want_y, &q[0], &q[1], &q[2]);
                simd::rows_grad_combine(&x, &dy, &mut want_dx, &q[0], &q[1], &q[2], &q[3]);
                let mut buf = vec![0.0f32; n + 16];
                // The cached runs start at the input's line boundary, the streamed ones at
                // the output's: the input moves through a line too, apart from the output.
                let mut xbuf = vec![0.0f32; n + 16];
                for &(kind, _, affine, grad) in kinds.iter().filter(|k| c >= k.1) {
                    for off in 0..16 {
                        let out = off..off + n;
                        let xo = (off * 7 + 3) % 16;
                        xbuf[xo..xo + n].copy_from_slice(&x);
                        let x = &xbuf[xo..xo + n];
                        buf.fill(f32::NAN);
                        // SAFETY: the CPU has the kernel's features (`kinds`); c is wide enough.
                        unsafe { affine(x, &mut buf[out.clone()], &q[0], &q[1], &q[2]) };
                        assert!(same(&buf[out.clone()], &want_y), "affine, {kind}: {c} channels, {rows} rows, offsets {off} (x {xo})");
                        buf.fill(f32::NAN);
                        // SAFETY: as above.
                        unsafe { grad(x, &dy, &mut buf[out.clone()], &q[0], &q[1], &q[2], &q[3]) };
                        assert!(same(&buf[out], &want_dx), "dx, {kind}: {c} channels, {rows} rows, offsets {off} (x {xo})");
                    }
                }
            }
        }
    }
}
