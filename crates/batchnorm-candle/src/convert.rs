//! Vectorised f16 and bf16 conversions to and from float32, bit for bit `half`'s (and so
//! candle's casts').
//!
//! `half`'s slice conversions run here at 0.19 (bf16 to float32), 0.41 (float32 to bf16),
//! 0.25 and 0.22 ns a value (f16, both ways): a value at a time, which made them, not memory,
//! the cost of a half-precision eval (4,096 values in L1, 2,000 repetitions). bf16 is the top
//! half of a float32, so both directions are integer shifts (and the rounding's carry) that
//! vectorise; f16 goes through F16C's `vcvtph2ps` / `vcvtps2ph`, 8 values an instruction.
//! Where the CPU has AVX-512, both narrow 16 values at a time (see [`avx512`]). Both round
//! to nearest, ties to even, and keep NaNs NaN, as `half` does.

use half::{bf16, f16};

/// A half-precision element the layer converts.
pub(crate) trait Half: candle_core::WithDType {
    /// `out[i] = s[i]` as float32 (exact); `out` as long as `s`.
    fn widen(s: &[Self], out: &mut [f32]);
    /// `out[i] = s[i]` rounded to nearest, ties to even; `out` as long as `s`.
    fn narrow(s: &[f32], out: &mut [Self]);
}

impl Half for bf16 {
    fn widen(s: &[bf16], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { widen_bf16_avx2(s, out) };
        }
        widen_bf16(s, out)
    }
    fn narrow(s: &[f32], out: &mut [bf16]) {
        // SAFETY: `avx512` says the CPU has AVX-512F.
        let n = if avx512() { unsafe { x86::narrow_bf16_512(s, out) } } else { 0 };
        let (s, out) = (&s[n..], &mut out[n..]);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { narrow_bf16_avx2(s, out) };
        }
        narrow_bf16(s, out)
    }
}

#[inline(always)]
fn widen_bf16(s: &[bf16], out: &mut [f32]) {
    for (o, v) in out.iter_mut().zip(s) {
        *o = f32::from_bits((v.to_bits() as u32) << 16);
    }
}

/// `half::bf16::from_f32`, branch-free: a NaN keeps its top bits with the quiet bit set;
/// otherwise adding `0x7fff` plus the kept part's lowest bit before the shift rounds to
/// nearest, ties to even (and carries into the exponent, up to infinity, as it should).
#[inline(always)]
fn narrow_bf16(s: &[f32], out: &mut [bf16]) {
    for (o, &v) in out.iter_mut().zip(s) {
        let b = v.to_bits();
        let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
        let nan = ((b >> 16) as u16) | 0x40;
        *o = bf16::from_bits(if b & 0x7fff_ffff > 0x7f80_0000 { nan } else { rounded });
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn widen_bf16_avx2(s: &[bf16], out: &mut [f32]) {
    widen_bf16(s, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn narrow_bf16_avx2(s: &[f32], out: &mut [bf16]) {
    narrow_bf16(s, out)
}

impl Half for f16 {
    fn widen(s: &[f16], out: &mut [f32]) {
        // SAFETY: `f16c` says the CPU has F16C and AVX.
        let n = if f16c() { unsafe { x86::widen_f16(s, out) } } else { 0 };
        for (o, v) in out[n..].iter_mut().zip(&s[n..]) {
            *o = v.to_f32();
        }
    }
    fn narrow(s: &[f32], out: &mut [f16]) {
        // SAFETY: `avx512` says the CPU has AVX-512F, `f16c` that it has F16C and AVX.
        let n = if avx512() { unsafe { x86::narrow_f16_512(s, out) } } else { 0 };
        let n = n + if f16c() { unsafe { x86::narrow_f16(&s[n..], &mut out[n..]) } } else { 0 };
        for (o, &v) in out[n..].iter_mut().zip(&s[n..]) {
            *o = f16::from_f32(v);
        }
    }
}

/// Whether the CPU converts f16 in vectors (F16C, with AVX for 256-bit registers).
fn f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("f16c") && std::is_x86_feature_detected!("avx");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the CPU narrows 16 values at a time (AVX-512F: `vcvtps2ph` on 512-bit registers,
/// and `vpmovdw` to pack bf16). Widening gains nothing from it (0.045 ns a value either way,
/// in L1), narrowing does: bf16 0.148 -> 0.089 ns a value, f16 0.068 -> 0.038.
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::{bf16, f16};
    use std::arch::x86_64::*;

    /// Narrows whole groups of 16 values of the shorter of `s` and `out` as
    /// `super::narrow_bf16` narrows one (round to nearest, ties to even; a NaN keeps its top
    /// bits, quieted); returns how many it did (the caller does the rest).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn narrow_bf16_512(s: &[f32], out: &mut [bf16]) -> usize {
        let n = s.len().min(out.len()) / 16 * 16;
        let (one, half, abs, inf, quiet) =
            (_mm512_set1_epi32(1), _mm512_set1_epi32(0x7fff), _mm512_set1_epi32(0x7fff_ffff), _mm512_set1_epi32(0x7f80_0000), _mm512_set1_epi32(0x40));
        for i in (0..n).step_by(16) {
            // SAFETY: `i + 16 <= n <= s.len(), out.len()`; unaligned loads and stores.
            let b = _mm512_loadu_si512(s.as_ptr().add(i) as *const __m512i);
            let top = _mm512_srli_epi32::<16>(b);
            let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(b, _mm512_add_epi32(half, _mm512_and_si512(top, one))));
            let nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, abs), inf);
            let v = _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(top, quiet));
            _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, _mm512_cvtepi32_epi16(v));
        }
        n
    }

    /// [`narrow_f16`] 16 values an instruction.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn narrow_f16_512(s: &[f32], out: &mut [f16]) -> usize {
        let n = s.len().min(out.len()) / 16 * 16;
        for i in (0..n).step_by(16) {
            // SAFETY: as in `narrow_bf16_512`.
            let v = _mm512_loadu_ps(s.as_ptr().add(i));
            _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
        }
        n
    }

    /// Widens whole groups of 8 values of the shorter of `s` and `out`; returns how many it
    /// did (the caller does the rest).
    #[target_feature(enable = "f16c,avx")]
    pub(super) unsafe fn widen_f16(s: &[f16], out: &mut [f32]) -> usize {
        let n = s.len().min(out.len()) / 8 * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: `i + 8 <= n <= s.len(), out.len()`; unaligned loads and stores.
            let h = _mm_loadu_si128(s.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        n
    }

    /// Narrows whole groups of 8 values as [`widen_f16`] widens them, rounding to nearest,
    /// ties to even; returns how many.
    #[target_feature(enable = "f16c,avx")]
    pub(super) unsafe fn narrow_f16(s: &[f32], out: &mut [f16]) -> usize {
        let n = s.len().min(out.len()) / 8 * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: as in `widen_f16`.
            let v = _mm256_loadu_ps(s.as_ptr().add(i));
            _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut __m128i, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
        }
        n
    }
}

/// Elsewhere no vector conversions: `avx512` and `f16c` are false and these are never called.
#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use half::{bf16, f16};
    pub(super) unsafe fn narrow_bf16_512(_: &[f32], _: &mut [bf16]) -> usize {
        0
    }
    pub(super) unsafe fn narrow_f16_512(_: &[f32], _: &mut [f16]) -> usize {
        0
    }
    pub(super) unsafe fn widen_f16(_: &[f16], _: &mut [f32]) -> usize {
        0
    }
    pub(super) unsafe fn narrow_f16(_: &[f32], _: &mut [f16]) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every float32 class: zeros, subnormals of both formats, ties, the largest values,
    /// infinities and NaNs with payloads, in a length that leaves a tail after the vectors.
    fn values() -> Vec<f32> {
        let mut v: Vec<f32> = [0.0f32, -0.0, 1.0, -1.5, 65504.0, 65520.0, 1e-8, 6e-8, 3.4e38, f32::MAX, f32::MIN_POSITIVE, 1e-40]
            .into_iter()
            .chain([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::from_bits(0x7fa0_0001), f32::from_bits(0xffc1_2345)])
            .collect();
        // Ties and their neighbours for both formats, and a sweep of bit patterns.
        for b in [0x3f80_8000u32, 0x3f81_8000, 0x3f80_7fff, 0x3f80_1000, 0x3f80_3000, 0x3f80_2fff] {
            v.push(f32::from_bits(b));
            v.push(-f32::from_bits(b));
        }
        let mut x = 0x1234_5678u32;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            v.push(f32::from_bits(x));
        }
        v.push(1.0);
        v
    }

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn conversions_are_halfs_bit_for_bit() {
        let v = values();
        let (mut b, mut h) = (vec![bf16::ZERO; v.len()], vec![f16::ZERO; v.len()]);
        bf16::narrow(&v, &mut b);
        f16::narrow(&v, &mut h);
        for (i, &x) in v.iter().enumerate() {
            assert_eq!(b[i].to_bits(), bf16::from_f32(x).to_bits(), "bf16 of {x:e} ({:#x})", x.to_bits());
            assert_eq!(h[i].to_bits(), f16::from_f32(x).to_bits(), "f16 of {x:e} ({:#x})", x.to_bits());
        }
        let (mut wb, mut wh) = (vec![0.0f32; v.len()], vec![0.0f32; v.len()]);
        bf16::widen(&b, &mut wb);
        f16::widen(&h, &mut wh);
        for i in 0..v.len() {
            assert!(same(wb[i], b[i].to_f32()), "bf16 {:#x}", b[i].to_bits());
            assert!(same(wh[i], h[i].to_f32()), "f16 {:#x}", h[i].to_bits());
        }
    }

    /// Each narrowing path the CPU has (the public ones use the widest and leave tails to
    /// the next), over every value, against `half`.
    #[test]
    fn every_narrowing_path_rounds_as_half_does() {
        let v = values();
        let whole = |n: usize, path: &str| assert!(n + 16 > v.len(), "{path}: converted {n} of {}", v.len());
        let check_b = |b: &[bf16], n: usize, path: &str| {
            whole(n, path);
            for (i, &x) in v[..n].iter().enumerate() {
                assert_eq!(b[i].to_bits(), bf16::from_f32(x).to_bits(), "{path}: bf16 of {x:e} ({:#x})", x.to_bits());
            }
        };
        let check_h = |h: &[f16], n: usize, path: &str| {
            whole(n, path);
            for (i, &x) in v[..n].iter().enumerate() {
                assert_eq!(h[i].to_bits(), f16::from_f32(x).to_bits(), "{path}: f16 of {x:e} ({:#x})", x.to_bits());
            }
        };
        let (mut b, mut h) = (vec![bf16::ZERO; v.len()], vec![f16::ZERO; v.len()]);
        narrow_bf16(&v, &mut b);
        check_b(&b, v.len(), "portable");
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            b.fill(bf16::ZERO);
            // SAFETY: the CPU has AVX2.
            unsafe { narrow_bf16_avx2(&v, &mut b) };
            check_b(&b, v.len(), "avx2");
        }
        if f16c() {
            // SAFETY: the CPU has F16C and AVX.
            let n = unsafe { x86::narrow_f16(&v, &mut h) };
            check_h(&h, n, "f16c");
        }
        if avx512() {
            b.fill(bf16::ZERO);
            h.fill(f16::ZERO);
            // SAFETY: the CPU has AVX-512F.
            let (nb, nh) = unsafe { (x86::narrow_bf16_512(&v, &mut b), x86::narrow_f16_512(&v, &mut h)) };
            check_b(&b, nb, "avx512");
            check_h(&h, nh, "avx512");
        }
    }
}
