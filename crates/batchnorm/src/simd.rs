//! Inner loops shaped for auto-vectorisation, and the CPU-feature dispatch around them.
//!
//! Every reduction keeps `LANES` (or `WIDE_LANES`) independent float64 accumulators and
//! reduces them in a fixed tree at the end, so the arithmetic (and the result) is the same
//! whichever instruction set runs it. Every product added into a float64 sum is one fused
//! multiply-add (`mul_add`, rounded once, on every instruction set), which keeps the AVX-512,
//! AVX2 and baseline builds bitwise identical (a CPU without FMA runs the baseline loops
//! through the C library's correctly rounded `fma`: slower, same results); the float32 output
//! passes use a separate multiply and add everywhere.

use crate::interleave::Interleaved;

/// The number of values before the first 64-byte boundary at or after `p`: where the
/// streamed passes' whole-line stores begin.
#[inline(always)]
pub(crate) fn head_of(p: *const f32) -> usize {
    ((64 - (p as usize) % 64) % 64) / 4
}

/// Independent accumulators per reduction.
pub(crate) const LANES: usize = 8;

/// Independent accumulators of the statistics and the gradient sums over channels-first runs
/// of at least [`LONG_RUN`] values in memory order. With [`LANES`], one chain of float64
/// additions per 4 lanes bounds a core to 8 values per add latency (0.5 cycles a value);
/// with 16 lanes (two chains per 4 lanes) and the adds on the multiply-add pipes
/// (`x86::hidden_one`), runs of 3136 values in L2 sum 1.6x as fast for the statistics (NCHW
/// 8x8x56x56 at 1 thread: 0.027 -> 0.021 ms with 16 lanes, -> 0.017 with the adds moved)
/// and 1.3x for the gradient sums (0.028 -> 0.0215 ms; 16 lanes alone gained nothing there,
/// their adds and widenings shared two pipes). 16 lanes cut the forward of NCHW 32x64x56x56
/// to 0.93-0.95x (1 thread, old and new builds alternating, medians of 10-14). The
/// backward's channel-by-channel pass sums in 16 lanes too (in L2: NCHW 1x16x96x96 backward
/// 0.043 -> 0.034 ms; tensors of 25-67 MB within noise); the forward's keeps [`LANES`]:
/// there the next channel's reduction runs beside this one's normalising, and 16 lanes made
/// the forward of NCHW 8x64x112x112 1.11-1.13x as long at 1 thread (twice, 10-14 rounds).
pub(crate) const WIDE_LANES: usize = 16;

/// Shortest channels-first run that the memory-order reductions sum in [`WIDE_LANES`] lanes
/// ([`runs_shifted`], [`runs_grad`]). Shorter runs sum their whole chunks of 8 in [`LANES`]
/// lanes and their last values in order (over a few batch items at a time where
/// [`run_items`] says; else two runs side by side): on runs of 49 values (NCHW
/// 8x512x7x7 in L2, 1 thread) 16 lanes summed the statistics in 0.036-0.040 ms against 0.034,
/// and one run at a time in registers (the tail as lanes) took 0.038 and 0.047 ms against
/// 0.034 and 0.043; two side by side with the tail in order take 0.032 and 0.037 (runs of
/// 60: 0.050 -> 0.038 and 0.059 -> 0.045; tensors of 12.8-25.7 MB within noise).
pub(crate) const LONG_RUN: usize = 128;

/// Batch items whose runs of a channel the reductions over runs shorter than [`LONG_RUN`]
/// sum in the same lanes where [`run_items`] says so.
pub(crate) const RUN_ITEMS: usize = 4;

/// Fewest values a batch item holds (`C * inner`) for [`run_items`] to take [`RUN_ITEMS`]
/// of them at a time: 16 KB.
const RUN_ITEMS_MIN_SPAN: usize = 4096;

/// How many batch items' runs of a channel the run reductions over runs of `inner` values
/// (`c` channels) sum in the same lanes ([`runs_shifted`]): [`RUN_ITEMS`] where the runs
/// are shorter than [`LONG_RUN`] and a batch item holds at least 16 KB, else 1. The
/// memory-order plans give blocks at least that many items (`parallel::Plan`).
///
/// Summing a channel's runs run by run leaves a sum of 8 lanes, a tail and an addition into
/// the channel's sums per run: on runs of 49 values (7x7 maps) that took as long as the
/// rest of the run (about 25 cycles a run, twice what the skeleton of a read with the same
/// arithmetic takes). Two channels side by side walking down four batch items, their lanes
/// in registers, summed the statistics of NCHW 128x512x7x7 in 0.37-0.38 ms against
/// 0.50-0.54 and their gradient sums in 0.61-0.68 against 0.88-0.94 (1 thread, in a training
/// loop, medians of 30 calls, 3 runs each); NCHW 32x1024x4x4 0.088 against 0.141 and 0.103
/// against 0.155, NCHW 8x512x7x7 0.022 against 0.032 and 0.027 against 0.037, NCHW
/// 64x256x10x10 0.169 against 0.199 and 0.290 against 0.307, NCHW 512x256x4x4 0.363 against
/// 0.501 and 0.581 against 0.738. Four channels side by side (AVX-512's registers) were
/// slower than two (NCHW 128x512x7x7 0.40-0.42 and 0.90-0.97 ms), as were eight batch items
/// for the gradient sums (1.51 ms: sixteen streams); eight for the statistics alone (with
/// blocks of at least eight items) gained at 1 thread (0.38-0.39 -> 0.33 ms, the forward
/// 0.96-1.06 -> 0.90-0.92) but not at 2 (0.20 -> 0.21), where fewer blocks would also leave
/// tensors of 8 to 15 batch items on one thread. The two channels' tails go side by side in
/// one vector (they were two scalar loops, which cost their setup even when empty): NCHW
/// 128x512x7x7 statistics 0.37 -> 0.34 ms, NCHW 64x256x10x10 0.17 -> 0.155, NCHW
/// 32x1024x4x4 (no tails) 0.088 -> 0.072; the gradient sums within noise (NCHW
/// 128x512x7x7 0.60-0.75 ms either way, NCHW 64x256x10x10 0.26-0.33) but on 4x4 maps
/// (0.103-0.104 -> 0.096-0.098). Batch items of less than 16 KB lose
/// with it, the gradient sums most (NCHW 1024x64x7x7, 12.5 KB: 1.00-1.04 against 0.81 ms; NCHW
/// 2048x64x5x5, 6.4 KB: 1.25 against 0.84), and keep the runs one at a time in memory
/// order; large ones gain whatever their place in a page (NCHW 64x1024x7x7, 196 KB a batch
/// item: 0.37 against 0.51 and 0.67 against 0.74; NCHW 64x1024x4x4, 64 KB: 0.18 against
/// 0.28 and 0.22 against 0.33). Runs of [`LONG_RUN`] values and more, summed that way in 8
/// lanes, lost: NCHW 64x256x14x14 statistics 0.40 -> 0.58-0.64 ms, gradient sums 0.70 ->
/// 1.9-2.0.
pub(crate) fn run_items(c: usize, inner: usize) -> usize {
    if inner < LONG_RUN && c * inner >= RUN_ITEMS_MIN_SPAN {
        RUN_ITEMS
    } else {
        1
    }
}

/// Defines `fn $name(args)` whose body is compiled twice, for the baseline target and for
/// AVX2+FMA, and picks the AVX2 copy at run time when the CPU has it.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
    // The same for a function generic over closures (per-channel maps whose square roots and
    // divisions vectorise only where the closure is inlined into the AVX2 copy).
    ($(#[$m:meta])* $vis:vis fn $name:ident<$($g:ident : $b:path),+>($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$($g: $b),+>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<$($g: $b),+>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2<$($g: $b),+>($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// The sum of [`LANES`] or [`WIDE_LANES`] lanes in a fixed tree: 16 lanes fold to 8 as
/// `h[i] = a[i] + a[i + 8]`, then `((h0 + h4) + (h1 + h5)) + ((h2 + h6) + (h3 + h7))`.
#[inline(always)]
pub(crate) fn lane_sum<const L: usize>(a: &[f64; L]) -> f64 {
    const { assert!(L == LANES || L == WIDE_LANES, "lane_sum: 8 or 16 lanes") };
    let h = |i: usize| if L == WIDE_LANES { a[i] + a[i + 8] } else { a[i] };
    ((h(0) + h(4)) + (h(1) + h(5))) + ((h(2) + h(6)) + (h(3) + h(7)))
}

/// Whether the AVX2 reductions may run (cached by the standard library).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX2 reductions (which add products with fused multiply-adds) may run.
#[inline(always)]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-512 reductions may run.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && has_avx2_fma()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the reductions that need AVX-512's 32 vector registers for 256-bit vectors
/// (AVX-512VL) may run.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
pub(crate) fn has_avx512vl() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512vl") && has_avx512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `a1 += x - k`, `a2 += (x - k)^2`, lane by lane in `L` lanes ([`LANES`] or
/// [`WIDE_LANES`]): lane i takes elements i, i + L, ...
#[inline(always)]
pub(crate) fn acc_shifted<const L: usize>(x: &[f32], k: f64, a1: &mut [f64; L], a2: &mut [f64; L]) {
    let mut x = x;
    if has_avx2_fma() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe {
            x86::acc_lanes::<L, false>(x, &[], k, a1, a2)
        };
        x = &x[x.len() - x.len() % L..];
    }
    let mut it = x.chunks_exact(L);
    for c in &mut it {
        for i in 0..L {
            let d = c[i] as f64 - k;
            a1[i] += d;
            a2[i] = d.mul_add(d, a2[i]);
        }
    }
    for (i, &v) in it.remainder().iter().enumerate() {
        let d = v as f64 - k;
        a1[i] += d;
        a2[i] = d.mul_add(d, a2[i]);
    }
}

/// `a1 += dy`, `a2 += dy * (x - k)`, lane by lane in `L` lanes ([`LANES`] or
/// [`WIDE_LANES`]): lane i takes elements i, i + L, ...
#[inline(always)]
pub(crate) fn acc_grad<const L: usize>(x: &[f32], dy: &[f32], k: f64, a1: &mut [f64; L], a2: &mut [f64; L]) {
    let n = x.len().min(dy.len());
    let (mut x, mut dy) = (&x[..n], &dy[..n]);
    if has_avx2_fma() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe {
            x86::acc_lanes::<L, true>(x, dy, k, a1, a2)
        };
        let done = n - n % L;
        (x, dy) = (&x[done..], &dy[done..]);
    }
    let mut ix = x.chunks_exact(L);
    let mut id = dy.chunks_exact(L);
    for (cx, cd) in (&mut ix).zip(&mut id) {
        for i in 0..L {
            let g = cd[i] as f64;
            a1[i] += g;
            a2[i] = g.mul_add(cx[i] as f64 - k, a2[i]);
        }
    }
    for (i, (&v, &g)) in ix.remainder().iter().zip(id.remainder()).enumerate() {
        let g = g as f64;
        a1[i] += g;
        a2[i] = g.mul_add(v as f64 - k, a2[i]);
    }
}

/// Channels-first runs of `inner` values over whole batch items (`x.len()` a multiple of
/// `inner * C`, `C = k.len()`; run `i` is of channel `i % C`): `a1[ch] += sum(x - k[ch])`,
/// `a2[ch] += sum((x - k[ch])^2)` over the channel's runs. Runs of at least [`LONG_RUN`]
/// values are summed one by one, as [`acc_shifted`] sums them from zero in [`WIDE_LANES`]
/// lanes, then [`lane_sum`], each run's sum added on its own. Shorter runs are summed per
/// channel and group of [`run_items`] batch items (1 or [`RUN_ITEMS`], counted from the
/// first): the whole chunks of 8 of the group's runs of the channel in [`LANES`] lanes (as
/// [`acc_shifted`] sums them, run after run), then [`lane_sum`], plus their last `inner % 8`
/// values summed in order (run after run), one addition each into `a1` and `a2`. The vector
/// versions keep the lanes in registers and sum them there, with the same additions.
#[inline(always)]
pub(crate) fn runs_shifted(x: &[f32], inner: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe {
            if run_items(k.len(), inner) > 1 {
                x86::item_runs::<false>(x, &[], inner, k, a1, a2)
            } else if inner < LONG_RUN {
                x86::short_runs::<false>(x, &[], inner, k, a1, a2)
            } else {
                x86::long_runs::<false>(x, &[], inner, k, a1, a2)
            }
        };
    }
    runs_each(x, None, inner, k, a1, a2)
}

/// [`runs_shifted`] for the gradient sums: `a1[ch] += sum(dy)`, `a2[ch] += sum(dy * (x -
/// k[ch]))`, as [`acc_grad`] sums them, in the same lanes and with the same tails.
#[inline(always)]
pub(crate) fn runs_grad(x: &[f32], dy: &[f32], inner: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe {
            if run_items(k.len(), inner) > 1 {
                x86::item_runs::<true>(x, dy, inner, k, a1, a2)
            } else if inner < LONG_RUN {
                x86::short_runs::<true>(x, dy, inner, k, a1, a2)
            } else {
                x86::long_runs::<true>(x, dy, inner, k, a1, a2)
            }
        };
    }
    runs_each(x, Some(dy), inner, k, a1, a2)
}

/// [`runs_shifted`] (`dy` none) or [`runs_grad`], the lanes summed through memory: the
/// portable definition the vector kernels follow.
fn runs_each(x: &[f32], dy: Option<&[f32]>, inner: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64]) {
    let c = k.len();
    assert!(inner > 0 && c > 0 && x.len().is_multiple_of(inner * c), "runs_each: whole batch items");
    if inner >= LONG_RUN {
        for (i, run) in x.chunks_exact(inner).enumerate() {
            let (ch, g) = (i % c, dy.map(|g| &g[i * inner..(i + 1) * inner]));
            let (mut l1, mut l2) = ([0.0f64; WIDE_LANES], [0.0f64; WIDE_LANES]);
            acc_run(run, g, k[ch], &mut l1, &mut l2);
            a1[ch] += lane_sum(&l1);
            a2[ch] += lane_sum(&l2);
        }
        return;
    }
    let (full, span, items) = (inner - inner % LANES, c * inner, run_items(c, inner));
    for first in (0..x.len()).step_by(items * span) {
        let end = (first + items * span).min(x.len());
        for ch in 0..c {
            let (mut l1, mut l2) = ([0.0f64; LANES], [0.0f64; LANES]);
            let mut t = (0.0f64, 0.0f64);
            for at in (first + ch * inner..end).step_by(span) {
                let (run, g) = (&x[at..at + inner], dy.map(|g| &g[at..at + inner]));
                acc_run(&run[..full], g.map(|g| &g[..full]), k[ch], &mut l1, &mut l2);
                for (i, &v) in run.iter().enumerate().skip(full) {
                    let d = v as f64 - k[ch];
                    let g = g.map_or(d, |g| g[i] as f64);
                    t.0 += g;
                    t.1 = g.mul_add(d, t.1);
                }
            }
            a1[ch] += lane_sum(&l1) + t.0;
            a2[ch] += lane_sum(&l2) + t.1;
        }
    }
}

/// [`acc_shifted`] over `x` (`dy` none) or [`acc_grad`] over `x` beside `dy`, in `L` lanes.
#[inline(always)]
fn acc_run<const L: usize>(x: &[f32], dy: Option<&[f32]>, k: f64, l1: &mut [f64; L], l2: &mut [f64; L]) {
    match dy {
        None => acc_shifted(x, k, l1, l2),
        Some(dy) => acc_grad(x, dy, k, l1, l2),
    }
}

/// Asks for the `n` values from `p`, a cache line per 16, into L2 (into L1 measured slower
/// where tried: it evicts the per-channel sums the strips keep there, see `strips::ahead`).
/// A prefetch is a hint: it changes nothing the program sees and no address makes it fault,
/// so `p` may point past the data.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_values(p: *const f32, n: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
    for o in (0..n).step_by(16) {
        // SAFETY: a prefetch reads nothing the program sees and cannot fault, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(o) as *const i8) }
    }
}

/// Rows per group of a streamed pass over wide rows (see `x86::NT_WIDE`); the element-wise
/// tasks over rows hold at least this many rows.
pub(crate) const NT_GROUP: usize = 8;

/// Hand-written AVX2 versions of the slice reductions, which the compiler does not vectorise
/// on its own (the float32 to float64 widening defeats it). Same lanes, same operations
/// (the same fused multiply-adds), so results equal the portable loops bit for bit. Each handles
/// the whole chunks of its lanes and leaves the tail to the caller (the run kernels, whole
/// runs).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{affine1, grad1, prefetch_values, NT_GROUP, WIDE_LANES};
    use crate::interleave::Interleaved;
    use std::arch::x86_64::*;

    /// [`super::acc_shifted`] (`G` false, `dy` unused) or [`super::acc_grad`] over the whole
    /// chunks of `L` values. `#[inline]`: with 16 lanes the compiler stopped inlining it into
    /// the per-run loops on its own, and a call per run of 49 values took twice as long.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn acc_lanes<const L: usize, const G: bool>(x: &[f32], dy: &[f32], k: f64, a1: &mut [f64; L], a2: &mut [f64; L]) {
        const { assert!(L == 8 || L == 16, "acc_lanes: 8 or 16 lanes") };
        let kv = _mm256_set1_pd(k);
        let one = if L == 16 { Some(hidden_one()) } else { None };
        let (p1, p2) = (a1.as_mut_ptr(), a2.as_mut_ptr());
        // L / 4 vectors per sum: lanes 0-3, 4-7 (, 8-11, 12-15).
        let z = _mm256_setzero_pd();
        let (mut s1, mut s2) = ([z; 4], [z; 4]);
        for q in 0..L / 4 {
            s1[q] = _mm256_loadu_pd(p1.add(4 * q));
            s2[q] = _mm256_loadu_pd(p2.add(4 * q));
        }
        let n = if G { x.len().min(dy.len()) } else { x.len() };
        let mut i = 0;
        while i + L <= n {
            for h in 0..L / 8 {
                let g = if G { Some(load8::<L>(dy.as_ptr().add(i + 8 * h))) } else { None };
                add_lanes(load8::<L>(x.as_ptr().add(i + 8 * h)), g, h, kv, one, None, &mut s1, &mut s2);
            }
            i += L;
        }
        for q in 0..L / 4 {
            _mm256_storeu_pd(p1.add(4 * q), s1[q]);
            _mm256_storeu_pd(p2.add(4 * q), s2[q]);
        }
    }

    /// [`super::lane_sum`] of 8 or 16 lanes held as `L / 4` vectors of 4, in registers:
    /// `h = lanes 0-3 + lanes 8-11 | lanes 4-7 + lanes 12-15` (16 lanes), then `g = h[0..4] +
    /// h[4..8]` and `(g0 + g1) + (g2 + g3)`: the same additions.
    #[inline(always)]
    unsafe fn lanes_tree<const L: usize>(s: [__m256d; 4]) -> f64 {
        let (lo, hi) = if L == 16 { (_mm256_add_pd(s[0], s[2]), _mm256_add_pd(s[1], s[3])) } else { (s[0], s[1]) };
        let g = _mm256_add_pd(lo, hi);
        let p = _mm_hadd_pd(_mm256_castpd256_pd128(g), _mm256_extractf128_pd::<1>(g));
        _mm_cvtsd_f64(_mm_add_sd(p, _mm_unpackhi_pd(p, p)))
    }

    /// How a run's last `r < 16` values (lanes `0..r` of a last, partial chunk) load as two
    /// vectors of 8 floats: half `h` holds `r - 8h` of them (clamped to 0..=8). A whole half
    /// is a plain load; a partial one loads the 8 floats that end with the run's last value
    /// and moves them down to lanes `0..r % 8` (`perm`; runs of at least 8 values). `keep`
    /// masks the float64 lanes past `r`.
    #[derive(Clone, Copy)]
    struct Tail {
        r: usize,
        perm: __m256i,
        keep: [__m256d; 4],
    }

    impl Tail {
        #[inline(always)]
        unsafe fn new(r: usize) -> Tail {
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let m = |h: usize| _mm256_cmpgt_epi32(_mm256_set1_epi32(r.saturating_sub(8 * h).min(8) as i32), idx);
            // Sign extension keeps every bit of a lane's mask.
            let w = |v: __m256i, q: usize| {
                _mm256_castsi256_pd(_mm256_cvtepi32_epi64(if q == 0 { _mm256_castsi256_si128(v) } else { _mm256_extracti128_si256::<1>(v) }))
            };
            let perm = _mm256_add_epi32(idx, _mm256_set1_epi32(8 - (r % 8) as i32));
            let (m0, m1) = (m(0), m(1));
            Tail { r, perm, keep: [w(m0, 0), w(m0, 1), w(m1, 0), w(m1, 1)] }
        }

        /// Half `h` of the tail of the run of at least 8 values that ends at `end`, widened.
        #[inline(always)]
        unsafe fn load(&self, end: *const f32, h: usize) -> [__m256d; 2] {
            widen2(if self.r >= 8 * (h + 1) {
                _mm256_loadu_ps(end.sub(self.r - 8 * h))
            } else {
                _mm256_permutevar8x32_ps(_mm256_loadu_ps(end.sub(8)), self.perm)
            })
        }
    }

    /// The two float64 halves of 8 floats.
    #[inline(always)]
    unsafe fn widen2(v: __m256) -> [__m256d; 2] {
        [_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v))]
    }

    /// The 8 floats at `p` widened to two vectors of float64, each converted straight from
    /// memory (a 256-bit load and an extract cost one more operation on the pipes that
    /// convert and add).
    #[inline(always)]
    unsafe fn load_wide(p: *const f32) -> [__m256d; 2] {
        [_mm256_cvtps_pd(_mm_loadu_ps(p)), _mm256_cvtps_pd(_mm_loadu_ps(p.add(4)))]
    }

    /// With `G` (the gradient sums), `dy`'s 8 values at `q + i` as [`load_wide`] loads them;
    /// else none (`q` then points into no `dy` and is not offset).
    #[inline(always)]
    unsafe fn load_dy<const G: bool>(q: *const f32, i: usize) -> Option<[__m256d; 2]> {
        if G {
            Some(load_wide(q.add(i)))
        } else {
            None
        }
    }

    /// The 8 floats at `p` widened: for 16 lanes with [`load_wide`], for 8 as one 256-bit load
    /// and an extract, as the 8-lane sums always loaded (the conversions' pipes do not bound
    /// those, and converting from memory measured no faster there).
    #[inline(always)]
    unsafe fn load8<const L: usize>(p: *const f32) -> [__m256d; 2] {
        if L == 16 {
            load_wide(p)
        } else {
            widen2(_mm256_loadu_ps(p))
        }
    }

    /// 1.0, hidden from the compiler. Sums in 16 lanes add with `fma(d, one, s)`, which is
    /// `d + s` rounded once, bit for bit an add, but runs on the two multiply-add pipes; a
    /// plain add (and a literal 1.0, which the compiler folds back into one) shares its two
    /// pipes with the conversions and subtractions, which then bound the loop at about 3
    /// cycles per 8 values (a probe: runs of 49, 196 and 3136 values at 0.41-0.57 cycles a
    /// value, two or four runs interleaved or not, until the adds moved). Sums in 8 lanes keep
    /// plain adds: one add chain per 4 lanes bounds them anyway, and hiding the 1.0 per call
    /// of a short run cost more than it gave (NCHW 8x512x7x7 statistics 0.034 -> 0.035 ms).
    #[inline(always)]
    unsafe fn hidden_one() -> __m256d {
        _mm256_set1_pd(std::hint::black_box(1.0))
    }

    /// Adds 8 values `w` of `x` (lanes `8h..8h + 8` of a chunk, widened) into the lanes:
    /// `s1 += x - k`, `s2 += (x - k)^2`, or with `dy`'s values `g`, `s1 += dy`, `s2 += dy * (x -
    /// k)`. Lanes outside `keep` add zeros, which leave every sum as it is (sums from +0 are
    /// never -0).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn add_lanes(
        w: [__m256d; 2],
        g: Option<[__m256d; 2]>,
        h: usize,
        kv: __m256d,
        one: Option<__m256d>,
        keep: Option<[__m256d; 4]>,
        s1: &mut [__m256d; 4],
        s2: &mut [__m256d; 4],
    ) {
        for q in 0..2 {
            let mut d = _mm256_sub_pd(w[q], kv);
            let mut e = g.map_or(d, |g| g[q]);
            if let Some(m) = keep {
                d = _mm256_and_pd(d, m[2 * h + q]);
                e = _mm256_and_pd(e, m[2 * h + q]);
            }
            s1[2 * h + q] = match one {
                Some(one) => _mm256_fmadd_pd(e, one, s1[2 * h + q]),
                None => _mm256_add_pd(s1[2 * h + q], e),
            };
            s2[2 * h + q] = _mm256_fmadd_pd(e, d, s2[2 * h + q]);
        }
    }

    /// [`super::runs_shifted`] (`G` false, `dy` unused) or [`super::runs_grad`] over runs of
    /// at least [`super::LONG_RUN`] values, in 16 lanes held in registers. Two runs side by
    /// side, in AVX-512's 32 registers (the same loop over both), ran at half the speed (1
    /// thread, in a training loop: NCHW 64x256x14x14 statistics 0.38 -> 0.66-0.68 ms, gradient
    /// sums 0.74-0.75 -> 1.64-1.66; NCHW 32x64x56x56 0.65-0.70 -> 1.27-1.30).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn long_runs<const G: bool>(x: &[f32], dy: &[f32], inner: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64]) {
        const L: usize = WIDE_LANES;
        let c = k.len();
        let runs = x.len() / inner;
        assert!(inner >= 8 && a1.len() >= c && a2.len() >= c && (!G || dy.len() >= runs * inner), "long_runs: runs of 8 values or more");
        let (full, r) = (inner - inner % L, inner % L);
        let (tail, one) = (Tail::new(r), Some(hidden_one()));
        let z = _mm256_setzero_pd();
        let mut ch = 0;
        for j in 0..runs {
            let (p, q) = (x.as_ptr().add(j * inner), dy.as_ptr().wrapping_add(j * inner));
            let kv = _mm256_set1_pd(k[ch]);
            let (mut s1, mut s2) = ([z; 4], [z; 4]);
            let mut i = 0;
            while i < full {
                for h in 0..L / 8 {
                    let g = load_dy::<G>(q, i + 8 * h);
                    add_lanes(load_wide(p.add(i + 8 * h)), g, h, kv, one, None, &mut s1, &mut s2);
                }
                i += L;
            }
            // Constant halves, so that the lanes stay in registers.
            if r > 0 {
                let g = if G { Some(tail.load(q.add(inner), 0)) } else { None };
                add_lanes(tail.load(p.add(inner), 0), g, 0, kv, one, Some(tail.keep), &mut s1, &mut s2);
            }
            if r > 8 {
                let g = if G { Some(tail.load(q.add(inner), 1)) } else { None };
                add_lanes(tail.load(p.add(inner), 1), g, 1, kv, one, Some(tail.keep), &mut s1, &mut s2);
            }
            a1[ch] += lanes_tree::<WIDE_LANES>(s1);
            a2[ch] += lanes_tree::<WIDE_LANES>(s2);
            ch = if ch + 1 == c { 0 } else { ch + 1 };
        }
    }

    /// The last `inner - full` values of a short run from `p` (with `q`, of `dy` beside),
    /// summed in order.
    #[inline(always)]
    unsafe fn short_tail(p: *const f32, q: Option<*const f32>, full: usize, inner: usize, k: f64) -> (f64, f64) {
        let mut t = (0.0f64, 0.0f64);
        for i in full..inner {
            let d = *p.add(i) as f64 - k;
            let g = match q {
                Some(q) => *q.add(i) as f64,
                None => d,
            };
            t.0 += g;
            t.1 = g.mul_add(d, t.1);
        }
        t
    }

    /// [`super::runs_shifted`] (`G` false) or [`super::runs_grad`] (`G`, with `dy`) over runs
    /// shorter than [`super::LONG_RUN`] of batch items taken one at a time
    /// ([`super::run_items`] 1), in memory order: two runs side by side, so that each step has two
    /// independent chains of additions per lane (one run alone waits on its chains: about 28
    /// cycles a run of 49 values, whatever else changed), the adds on the multiply-add pipes.
    /// The two runs' tails side by side in one vector, as [`item_runs`] sums them, changed
    /// nothing here (NCHW 1024x64x7x7 statistics 0.48 ms, NCHW 2048x64x5x5 0.65-0.67, either
    /// way).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn short_runs<const G: bool>(x: &[f32], dy: &[f32], inner: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64]) {
        let c = k.len();
        let runs = x.len() / inner;
        assert!(inner > 0 && a1.len() >= c && a2.len() >= c && (!G || dy.len() >= runs * inner));
        let full = inner - inner % 8;
        let one = Some(hidden_one());
        let z = _mm256_setzero_pd();
        let (xp, gp) = (x.as_ptr(), dy.as_ptr());
        let mut ch = 0;
        let mut j = 0;
        while j < runs {
            let two = j + 1 < runs;
            let cb = if ch + 1 == c { 0 } else { ch + 1 };
            let (p, pb) = (xp.add(j * inner), xp.wrapping_add((j + 1) * inner));
            let (q, qb) = (gp.wrapping_add(j * inner), gp.wrapping_add((j + 1) * inner));
            let (ka, kb) = (_mm256_set1_pd(k[ch]), _mm256_set1_pd(k[cb]));
            let (mut s1a, mut s2a, mut s1b, mut s2b) = ([z; 4], [z; 4], [z; 4], [z; 4]);
            let mut i = 0;
            if two {
                while i < full {
                    add_lanes(load_wide(p.add(i)), load_dy::<G>(q, i), 0, ka, one, None, &mut s1a, &mut s2a);
                    add_lanes(load_wide(pb.add(i)), load_dy::<G>(qb, i), 0, kb, one, None, &mut s1b, &mut s2b);
                    i += 8;
                }
            } else {
                while i < full {
                    add_lanes(load_wide(p.add(i)), load_dy::<G>(q, i), 0, ka, one, None, &mut s1a, &mut s2a);
                    i += 8;
                }
            }
            let ta = short_tail(p, G.then_some(q), full, inner, k[ch]);
            a1[ch] += lanes_tree::<8>(s1a) + ta.0;
            a2[ch] += lanes_tree::<8>(s2a) + ta.1;
            if two {
                let tb = short_tail(pb, G.then_some(qb), full, inner, k[cb]);
                a1[cb] += lanes_tree::<8>(s1b) + tb.0;
                a2[cb] += lanes_tree::<8>(s2b) + tb.1;
            }
            // Without `two` that was the last run, and `ch` is not read again.
            ch = if cb + 1 == c { 0 } else { cb + 1 };
            j += 2;
        }
    }

    /// [`super::runs_shifted`] (`G` false, `dy` unused) or [`super::runs_grad`] over runs
    /// shorter than [`super::LONG_RUN`]: two channels side by side walk down the batch items,
    /// [`super::RUN_ITEMS`] at a time, their lanes and tails in registers, then
    /// [`lanes_tree`] and one addition each into `a1`, `a2` (see [`super::run_items`]).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn item_runs<const G: bool>(x: &[f32], dy: &[f32], inner: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64]) {
        let c = k.len();
        assert!(
            inner > 0 && c > 0 && x.len().is_multiple_of(inner * c) && a1.len() >= c && a2.len() >= c && (!G || dy.len() >= x.len()),
            "item_runs: whole batch items"
        );
        let items = x.len() / (inner * c);
        let one = hidden_one();
        for n0 in (0..items).step_by(super::RUN_ITEMS) {
            let n = (n0, (n0 + super::RUN_ITEMS).min(items));
            for c0 in (0..c - c % 2).step_by(2) {
                item_group::<G, 2>(x, dy, inner, n, c0, k, a1, a2, one);
            }
            if c % 2 == 1 {
                item_group::<G, 1>(x, dy, inner, n, c - 1, k, a1, a2, one);
            }
        }
    }

    /// Channels `c0..c0 + R` of items `n.0..n.1` of [`item_runs`].
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn item_group<const G: bool, const R: usize>(
        x: &[f32],
        dy: &[f32],
        inner: usize,
        n: (usize, usize),
        c0: usize,
        k: &[f64],
        a1: &mut [f64],
        a2: &mut [f64],
        one: __m256d,
    ) {
        let c = k.len();
        let full = inner - inner % 8;
        let z = _mm256_setzero_pd();
        let (xp, gp) = (x.as_ptr(), dy.as_ptr());
        let kv: [__m256d; R] = std::array::from_fn(|r| _mm256_set1_pd(k[c0 + r]));
        let (mut s1, mut s2) = ([[z; 4]; R], [[z; 4]; R]);
        // The tails' sums, lane r for channel c0 + r (R is 1 or 2): two channels' tails side by
        // side cost little more than one's.
        let (mut u1, mut u2) = (_mm_setzero_pd(), _mm_setzero_pd());
        let kk = _mm_setr_pd(k[c0], k[c0 + R - 1]);
        for n in n.0..n.1 {
            let base = (n * c + c0) * inner;
            let mut i = 0;
            while i < full {
                for r in 0..R {
                    let at = base + r * inner;
                    add_lanes(load_wide(xp.add(at + i)), load_dy::<G>(gp.wrapping_add(at), i), 0, kv[r], Some(one), None, &mut s1[r], &mut s2[r]);
                }
                i += 8;
            }
            for i in base + full..base + inner {
                // Lane 1 reads the second channel's value, or with one channel a copy of the first.
                let pair = |p: *const f32| _mm_cvtps_pd(_mm_setr_ps(*p.add(i), *p.add(i + (R - 1) * inner), 0.0, 0.0));
                let d = _mm_sub_pd(pair(xp), kk);
                let e = if G { pair(gp) } else { d };
                u1 = _mm_add_pd(u1, e);
                u2 = _mm_fmadd_pd(e, d, u2);
            }
        }
        let (mut t1, mut t2) = ([0.0f64; 2], [0.0f64; 2]);
        _mm_storeu_pd(t1.as_mut_ptr(), u1);
        _mm_storeu_pd(t2.as_mut_ptr(), u2);
        for r in 0..R {
            a1[c0 + r] += lanes_tree::<8>(s1[r]) + t1[r];
            a2[c0 + r] += lanes_tree::<8>(s2[r]) + t2[r];
        }
    }

    /// How far above an input, modulo 4 KB, an output may start and still make the input's
    /// loads wait on its stores: 64 bytes.
    const TRAIL_BYTES: usize = 64;

    /// Whether `y` starts 1 to [`TRAIL_BYTES`] bytes above one of `inputs` modulo 4 KB.
    ///
    /// A load whose address matches a still pending earlier store in its low 12 bits waits
    /// for that store as if they were the same address. A pass that stores `y[i..i + 8]` and
    /// then loads `x[i + 8..]` meets that on every load when `y` sits a few bytes above `x`
    /// modulo 4 KB; the streamed passes then issue their loads three vectors ahead of their
    /// stores ([`stream_out`]; rows in registers a row ahead, [`stream_rows_512`]), which
    /// covers outputs up to 64 bytes above. The placement is the caller's: large allocations
    /// from one allocator usually sit alike (0 apart), but buffers from two allocators need
    /// not. Measured (one process, alternating, medians of 20-30 calls, 1 thread unless said;
    /// `y` 16 / 48 bytes above `x`, plain loop -> loads ahead): NCHW 32x64x56x56 eval 1.52 /
    /// 1.72 -> 1.20 / 1.20 ms, forward 2.38 / 2.54 -> 2.10 / 2.04, backward 3.72 / 3.81 ->
    /// 3.08 / 3.07 (aligned alike: 1.07, 2.17, 3.14); NC 4096x4096 eval 5.53 / 6.02 -> 5.14 /
    /// 3.84, forward 7.73 / 8.96 -> 6.71 / 6.77, backward 16.1 / 18.8 -> 14.5 / 16.2; NHWC
    /// 32x56x56x64 (48 bytes) eval 1.51-1.84 -> 1.33-1.67, forward 2.53-2.88 -> 2.35-2.58,
    /// backward 4.69 -> 4.39; 2 threads (48 bytes) NCHW eval 1.17 -> 1.07, backward 2.83 ->
    /// 2.59, NC 4096x4096 eval 3.59 -> 3.09, backward 11.1 -> 10.0. At 64 bytes NCHW gains
    /// 3-9% and NC 4096x4096 moves within 5% either way; from 96 bytes up, and below `x`,
    /// nothing to gain. Running ahead everywhere costs 3-7% where the buffers sit alike (NCHW
    /// eval 1.15-1.24 -> 1.20-1.28, NC 4096x4096 4.04 -> 4.32), hence the check.
    #[inline(always)]
    pub(super) fn trails<const I: usize>(y: *const f32, inputs: [*const f32; I]) -> bool {
        inputs.iter().any(|&p| (1..=TRAIL_BYTES).contains(&((y as usize).wrapping_sub(p as usize) % 4096)))
    }

    /// How many leading elements to write normally before `p` is 16-byte aligned.
    #[inline(always)]
    fn head(p: *const f32, n: usize) -> usize {
        (((16 - (p as usize) % 16) % 16) / 4).min(n)
    }

    /// Writes `y[0..n]`, as much as it can with streaming stores: `one(i)` writes element
    /// `i` with an ordinary store (up to 16-byte alignment and the last few), `eight(i)`
    /// gives elements `i..i + 8` (for any `i + 8 <= n`). Whole 32-byte stores where the
    /// output is 32-byte aligned, a 16-byte one at either end where it is only 16-byte
    /// aligned (as large allocations usually are: a page plus a 16-byte header), so no line
    /// mixes streaming and ordinary stores when `n` is a multiple of 4 from an aligned
    /// start. 32-byte streaming stores ran a pass over 64 MB in 4.2-4.5 ms where 16-byte
    /// ones took 4.3-4.9 ms (up to 7 ms for some relative alignments of input and output);
    /// in the kernels (`examples/shapes`, medians of 5 interleaved runs, 1 thread, eval):
    /// NCHW 32x64x56x56 1.64 -> 1.40 ms, NHWC 32x56x56x64 2.72 -> 2.10 ms, NC 4096x4096
    /// 6.85 -> 6.24 ms; training forward and backward gained 5-27% on the same shapes.
    ///
    /// With `lag` (the output sits a little above an input modulo 4 KB, [`trails`]), the loads
    /// run three vectors ahead of the stores.
    #[inline(always)]
    unsafe fn stream_out(y: *mut f32, n: usize, lag: bool, mut one: impl FnMut(usize), eight: impl Fn(usize) -> __m256) {
        let h = head(y, n);
        for i in 0..h {
            one(i);
        }
        let mut i = h;
        if (y.add(i) as usize) % 32 == 16 && i + 8 <= n {
            _mm_stream_ps(y.add(i), _mm256_castps256_ps128(eight(i)));
            i += 4;
        }
        if lag && i + 32 <= n {
            // Each load is issued before the stores that share its low 12 address bits.
            let (mut a, mut b, mut c) = (eight(i), eight(i + 8), eight(i + 16));
            while i + 32 <= n {
                let d = eight(i + 24);
                _mm256_stream_ps(y.add(i), a);
                (a, b, c) = (b, c, d);
                i += 8;
            }
            for v in [a, b, c] {
                _mm256_stream_ps(y.add(i), v);
                i += 8;
            }
        }
        while i + 8 <= n {
            _mm256_stream_ps(y.add(i), eight(i));
            i += 8;
        }
        if i + 4 <= n && i >= 4 {
            // Elements i - 4..i + 4 again (in bounds), storing their upper half.
            _mm_stream_ps(y.add(i), _mm256_extractf128_ps::<1>(eight(i - 4)));
            i += 4;
        }
        for j in i..n {
            one(j);
        }
    }

    /// `y = (x - ctr) * s + t` with streaming stores (same operations as the portable loop),
    /// without the closing fence.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn affine_nt(x: &[f32], y: &mut [f32], ctr: f32, s: f32, t: f32) {
        let n = x.len().min(y.len());
        let (c, sv, tv) = (_mm256_set1_ps(ctr), _mm256_set1_ps(s), _mm256_set1_ps(t));
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
        stream_out(
            yp,
            n,
            trails(yp, [xp]),
            |i| *yp.add(i) = affine1(*xp.add(i), ctr, s, t),
            |i| _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xp.add(i)), c), sv), tv),
        );
    }

    /// `dx = dy * a + ((x - ctr) * b + d)` with streaming stores, without the closing fence.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn grad_combine_nt(x: &[f32], dy: &[f32], dx: &mut [f32], ctr: f32, a: f32, b: f32, d: f32) {
        let n = x.len().min(dy.len()).min(dx.len());
        let (c, av, bv, dv) = (_mm256_set1_ps(ctr), _mm256_set1_ps(a), _mm256_set1_ps(b), _mm256_set1_ps(d));
        let (xp, gp, op) = (x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        stream_out(
            op,
            n,
            trails(op, [xp, gp]),
            |i| *op.add(i) = grad1(*xp.add(i), *gp.add(i), ctr, a, b, d),
            |i| {
                let (xv, g) = (_mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(gp.add(i)));
                _mm256_add_ps(_mm256_mul_ps(g, av), _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(xv, c), bv), dv))
            },
        );
    }

    /// Where the CPU has AVX-512 and rows are a whole number of 64-byte lines, streamed rows
    /// go side by side instead ([`stream_parts_512`]); the strips below are the path of the
    /// others. Streamed rows of at least this many channels (8 KB) are cut into strips of
    /// [`NT_STRIP`] channels, and each strip is done over a group of rows before the next:
    /// the pass then reads as many streams as the group has rows (times its inputs), 512
    /// bytes of each at a time, and its per-channel constants for the strip (1.5-2 KB) stay
    /// in L1. One core keeps more misses in flight over several streams than along one (a
    /// plain read of 64 MB at 1 thread: 3.0-3.3 ms in order, 2.8-2.9 ms as 8-row strips).
    /// Narrower rows go whole, one after another (NC 16384x1024 eval in 128-channel strips
    /// 4.68 -> 5.18 ms at 1 thread). Measured (1 thread unless said, in one process,
    /// alternating, medians of 45 calls; forward / backward / eval, ms; before this, strips of
    /// 1024 channels over the task's rows, each row prefetching the next row's strip): NC
    /// 4096x4096 10.0 / 18.6 / 6.6 -> 8.0 / 16.2 / 4.5, NC 8192x2048 9.4 / 17.9 / 6.2 -> 8.1 /
    /// 16.3 / 4.5, NC 2048x8192 10.6 / 17.9 / 6.7 -> 8.3 / 15.3 / 4.4; 2 threads NC 4096x4096
    /// 5.1 / 9.4 / 3.5 -> 4.3 / 8.1 / 2.5, NC 8192x2048 4.9 / 10.0 / 3.4 -> 4.2 / 9.6 / 2.7.
    /// Old and new builds of `examples/shapes` (best of 7, 2 x ABBA) agree at 1 thread (NC
    /// 4096x4096 8.7-9.0 / 16.2-17.2 / 5.5-5.7 -> 7.2-7.8 / 14.3-15.7 / 4.1-4.4) and show less
    /// at 2, where both cores share the memory bus (4.9-5.4 / 9.7-10.4 / 3.0-3.2 -> 4.8-4.9 /
    /// 9.3-9.9 / 2.9-3.1); rows under 2048 channels within noise (NC 16384x1024, NHWC
    /// 8x56x56x512).
    /// Strips of 256 channels (eval 5.6-5.9 at 4096) and 512 (5.9-6.3), groups of 16 rows
    /// (6.0) or 2 (7.3) were slower, and prefetching the next row's strip no longer helps
    /// (4.65 with it).
    const NT_WIDE: usize = 2048;
    const NT_STRIP: usize = 128;

    /// How far ahead along a row the streamed normalising pass over strips asks for its
    /// input, into L2: 512 values (2 KB, four strips on). A group reads 8 streams 512 bytes at
    /// a time, which the hardware prefetchers alone do not keep far enough ahead of (as the
    /// timings suggest; not counted). Measured
    /// at 1 thread in one process, alternating, same output buffer, medians of 40 calls over
    /// 3-5 runs: NC 4096x4096 eval 4.59-4.84 -> 4.21-4.49 ms (256 values ahead 4.39-4.51,
    /// 1024 4.32-4.44), training forward (with the statistics' prefetch, see
    /// `strips::ahead`) 8.31-8.75 -> 7.60-7.78; NC 8192x2048 eval 5.41-5.72 -> 5.09-5.31,
    /// forward 8.67-8.78 -> 7.95-8.27; NC 2048x8192 eval 4.76-5.51 -> 4.71-4.85, forward
    /// 8.99-9.30 -> 8.31-8.47; 2 threads NC 4096x4096 eval 3.08-3.51 -> 2.92-3.33, forward
    /// 4.84-6.42 -> 4.49-5.77. Whole rows lose (eval NC 16384x1024 5.04-5.26 -> 5.81, NC
    /// 32768x512 4.79-4.96 -> 6.53-6.56): they are one stream at a time.
    const NT_AHEAD: usize = 512;

    /// [`NT_AHEAD`] for the streamed gradient pass, which reads `x` and `dy`: 256 values (two
    /// strips on), over groups of 8 rows as the normalising pass. Before it prefetched, groups
    /// of 4 rows were the faster (NC 4096x4096 backward 16.2-16.6 ms against 17.7-18.7 with
    /// 8); with the prefetch, 8 rows are. Measured at 1 thread as [`NT_AHEAD`], the dx pass
    /// alone (4 rows, 512 ahead -> 8 rows, 256 ahead): NC 4096x4096 7.95-9.16 -> 6.96-8.30 ms
    /// (8 rows with 128 ahead 10.2-11.1, 384 7.52-8.65, 512 7.34-9.71; 16 rows with 256
    /// 7.61-8.68; 2 or 6 rows slower); the whole backward 14.2-17.2 -> 13.4-15.9 (5 runs), NC
    /// 8192x2048 15.6-19.3 -> 14.8-18.3, NC 2048x8192 15.6-16.5 -> 14.2-15.2, 2 threads NC
    /// 4096x4096 9.3-11.4 -> 8.9-10.9.
    const NT_AHEAD_GRAD: usize = 256;

    /// Visits streamed rows of `c` channels in the order [`NT_WIDE`] describes, strip by strip
    /// over groups of [`NT_GROUP`] rows (rows under `NT_WIDE` channels whole, in order):
    /// `f(values, channels)`, the value range of one row's strip and its channel range.
    /// Before each strip, asks for the values `ahead` on in each of `inputs`.
    #[inline(always)]
    fn nt_visit<const I: usize>(
        c: usize,
        rows: usize,
        ahead: usize,
        inputs: [*const f32; I],
        mut f: impl FnMut(std::ops::Range<usize>, std::ops::Range<usize>),
    ) {
        let (strip, group) = if c >= NT_WIDE { (NT_STRIP, NT_GROUP) } else { (c, rows.max(1)) };
        for g0 in (0..rows).step_by(group) {
            for j0 in (0..c).step_by(strip) {
                let j = j0..(j0 + strip).min(c);
                for r in g0..(g0 + group).min(rows) {
                    let v = r * c + j.start..r * c + j.end;
                    if strip < c {
                        for p in inputs {
                            prefetch_values(p.wrapping_add(v.start + ahead), v.len());
                        }
                    }
                    f(v, j.clone());
                }
            }
        }
    }

    /// Rows of `C`: `y[c] = (x[c] - ctr[c]) * s[c] + t[c]` with streaming stores.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn rows_affine_nt(x: &[f32], y: &mut [f32], ctr: &[f32], s: &[f32], t: &[f32]) {
        let c = ctr.len();
        let rows = x.len().min(y.len()) / c;
        // Every strip sits at the same distance from its input as the whole tensors do.
        let lag = trails(y.as_ptr(), [x.as_ptr()]);
        nt_visit(c, rows, NT_AHEAD, [x.as_ptr()], |v, j| {
            // SAFETY: the caller's CPU has AVX2 (this function's own requirement).
            unsafe { row_affine_nt(&x[v.clone()], &mut y[v], &ctr[j.clone()], &s[j.clone()], &t[j], lag) }
        });
        _mm_sfence();
    }

    /// One row (or strip of a row) of [`rows_affine_nt`], without the closing fence; `lag`:
    /// loads ahead of stores (see [`trails`]).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row_affine_nt(xr: &[f32], yr: &mut [f32], ctr: &[f32], s: &[f32], t: &[f32], lag: bool) {
        let c = ctr.len();
        assert!(xr.len() >= c && yr.len() >= c && s.len() >= c && t.len() >= c);
        let (xp, yp, cp, sp, tp) = (xr.as_ptr(), yr.as_mut_ptr(), ctr.as_ptr(), s.as_ptr(), t.as_ptr());
        stream_out(
            yp,
            c,
            lag,
            |j| *yp.add(j) = affine1(*xp.add(j), *cp.add(j), *sp.add(j), *tp.add(j)),
            |j| {
                let v = _mm256_loadu_ps(xp.add(j));
                _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v, _mm256_loadu_ps(cp.add(j))), _mm256_loadu_ps(sp.add(j))), _mm256_loadu_ps(tp.add(j)))
            },
        );
    }

    /// Rows of `C`: `dx[c] = dy[c] * a[c] + ((x[c] - ctr[c]) * b[c] + d[c])`, streaming stores.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn rows_grad_combine_nt(x: &[f32], dy: &[f32], dx: &mut [f32], ctr: &[f32], a: &[f32], b: &[f32], d: &[f32]) {
        let c = ctr.len();
        let rows = x.len().min(dy.len()).min(dx.len()) / c;
        let lag = trails(dx.as_ptr(), [x.as_ptr(), dy.as_ptr()]);
        nt_visit(c, rows, NT_AHEAD_GRAD, [x.as_ptr(), dy.as_ptr()], |v, j| {
            let q = (&ctr[j.clone()], &a[j.clone()], &b[j.clone()], &d[j]);
            // SAFETY: as in `rows_affine_nt`.
            unsafe { row_grad_combine_nt(&x[v.clone()], &dy[v.clone()], &mut dx[v], q, lag) }
        });
        _mm_sfence();
    }

    /// One row (or strip of a row) of [`rows_grad_combine_nt`], without the closing fence;
    /// `q = (ctr, a, b, d)`, `lag` as in [`row_affine_nt`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row_grad_combine_nt(xr: &[f32], gr: &[f32], o: &mut [f32], q: (&[f32], &[f32], &[f32], &[f32]), lag: bool) {
        let (ctr, a, b, d) = q;
        let c = ctr.len();
        assert!(xr.len() >= c && gr.len() >= c && o.len() >= c && a.len() >= c && b.len() >= c && d.len() >= c);
        let (xp, gp, op) = (xr.as_ptr(), gr.as_ptr(), o.as_mut_ptr());
        let (cp, ap, bp, dp) = (ctr.as_ptr(), a.as_ptr(), b.as_ptr(), d.as_ptr());
        stream_out(
            op,
            c,
            lag,
            |j| *op.add(j) = grad1(*xp.add(j), *gp.add(j), *cp.add(j), *ap.add(j), *bp.add(j), *dp.add(j)),
            |j| {
                let ld = |p: *const f32| _mm256_loadu_ps(p.add(j));
                _mm256_add_ps(_mm256_mul_ps(ld(gp), ld(ap)), _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(ld(xp), ld(cp)), ld(bp)), ld(dp)))
            },
        );
    }

    /// Widest rows of [`rows_affine_512`] and [`rows_grad_combine_512`]: four 16-lane
    /// vectors of each of the (three or four) per-channel constants stay in registers.
    pub(super) const REG_ROWS_MAX: usize = 64;

    /// `K` vectors of per-channel constants for the values after a head of `h`: lane `l` of
    /// vector `q` is channel `(h + 16 q + l) % c`, where `c = 16 K` (see [`stream_rows_512`]).
    #[inline(always)]
    unsafe fn rotated<const K: usize>(v: &[f32], h: usize) -> [__m512; K] {
        let c = 16 * K;
        let mut buf = [0.0f32; REG_ROWS_MAX];
        for (j, b) in buf[..c].iter_mut().enumerate() {
            *b = v[(h + j) % c];
        }
        std::array::from_fn(|q| _mm512_loadu_ps(buf.as_ptr().add(16 * q)))
    }

    /// Writes `n` values of rows `16 K` wide (`n` a whole number of rows) as one flat run of
    /// 64-byte streaming stores, one whole cache line each, from the first 64-byte boundary
    /// `h` values in: `one(i, ch)` writes value `i` (channel `ch`) with an ordinary store,
    /// `line(i, q)` gives values `i..i + 16`, whose channels are those of vector `q` of the
    /// constants rotated by `h` ([`rotated`]). Row by row, a narrow row not 32-byte aligned
    /// began and ended with 16-byte stores and read its constants from memory for every
    /// vector: NHWC passes ran a third slower than the same tensors channels-first. Measured
    /// in one process, alternating, medians of 30 (25.7 MB tensors, ms, row by row -> here),
    /// 1 thread: 64 channels eval 1.80 -> 1.39, train forward 2.94 -> 2.46, backward 4.35 ->
    /// 4.08; 32 channels 1.90 -> 1.31, 3.12 -> 2.55, 4.93 -> 3.95; 16 channels 2.38 -> 1.39,
    /// 3.39 -> 2.35, 5.80 -> 3.97; 48 channels 1.71 -> 1.47, 2.81 -> 2.54, 4.43 -> 4.13; 2
    /// threads: 64 channels 1.11 -> 0.86, 1.62 -> 1.38, 2.51 -> 2.35. Rows of 128 channels
    /// (eight vectors of each constant) gained at most 15% and lost up to 4%, so they stay
    /// row by row.
    /// With `lag` ([`trails`]), each row is stored after the next row's loads. Four rows
    /// and more now go side by side with the same rotated constants ([`stream_parts_512`]);
    /// this writes the rows left over.
    #[inline(always)]
    unsafe fn stream_rows_512<const K: usize>(
        y: *mut f32,
        n: usize,
        h: usize,
        lag: bool,
        mut one: impl FnMut(usize, usize),
        line: impl Fn(usize, usize) -> __m512,
    ) {
        let c = 16 * K;
        for i in 0..h {
            one(i, i % c);
        }
        let mut i = h;
        if lag && i + c <= n {
            let mut prev: [__m512; K] = std::array::from_fn(|q| line(i + 16 * q, q));
            i += c;
            while i + c <= n {
                for (q, p) in prev.iter_mut().enumerate() {
                    let v = line(i + 16 * q, q);
                    _mm512_stream_ps(y.add(i - c + 16 * q), *p);
                    *p = v;
                }
                i += c;
            }
            for (q, v) in prev.into_iter().enumerate() {
                _mm512_stream_ps(y.add(i - c + 16 * q), v);
            }
        }
        while i + c <= n {
            for q in 0..K {
                _mm512_stream_ps(y.add(i + 16 * q), line(i + 16 * q, q));
            }
            i += c;
        }
        for k in i..n {
            one(k, k % c);
        }
    }

    /// Values before the first 64-byte boundary at or after `p`, at most `n`.
    #[inline(always)]
    fn head64(p: *const f32, n: usize) -> usize {
        super::head_of(p).min(n)
    }

    /// Rows of `16 K` channels: `y[c] = (x[c] - ctr[c]) * s[c] + t[c]` with 64-byte
    /// streaming stores and the constants in registers (see [`stream_rows_512`]); same
    /// operations as the portable loop.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_affine_512<const K: usize>(x: &[f32], y: &mut [f32], ctr: &[f32], s: &[f32], t: &[f32]) {
        let c = 16 * K;
        assert!(ctr.len() == c && s.len() == c && t.len() == c);
        let n = x.len().min(y.len()) / c * c;
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
        let h = head64(yp, n);
        let (rc, rs, rt) = (rotated::<K>(ctr, h), rotated::<K>(s, h), rotated::<K>(t, h));
        stream_rows_512::<K>(
            yp,
            n,
            h,
            trails(yp, [xp]),
            |i, k| *yp.add(i) = affine1(*xp.add(i), ctr[k], s[k], t[k]),
            |i, q| _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xp.add(i)), rc[q]), rs[q]), rt[q]),
        );
        _mm_sfence();
    }

    /// Rows of `16 K` channels: `dx[c] = dy[c] * a[c] + ((x[c] - ctr[c]) * b[c] + d[c])`, as
    /// [`rows_affine_512`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_grad_combine_512<const K: usize>(x: &[f32], dy: &[f32], dx: &mut [f32], q: (&[f32], &[f32], &[f32], &[f32])) {
        let (ctr, a, b, d) = q;
        let c = 16 * K;
        assert!(ctr.len() == c && a.len() == c && b.len() == c && d.len() == c);
        let n = x.len().min(dy.len()).min(dx.len()) / c * c;
        let (xp, gp, op) = (x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        let h = head64(op, n);
        let (rc, ra, rb, rd) = (rotated::<K>(ctr, h), rotated::<K>(a, h), rotated::<K>(b, h), rotated::<K>(d, h));
        stream_rows_512::<K>(
            op,
            n,
            h,
            trails(op, [xp, gp]),
            |i, k| *op.add(i) = grad1(*xp.add(i), *gp.add(i), ctr[k], a[k], b[k], d[k]),
            |i, v| {
                let (xv, g) = (_mm512_loadu_ps(xp.add(i)), _mm512_loadu_ps(gp.add(i)));
                _mm512_add_ps(_mm512_mul_ps(g, ra[v]), _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(xv, rc[v]), rb[v]), rd[v]))
            },
        );
        _mm_sfence();
    }

    /// Runs of whole rows a streamed pass over rows writes side by side
    /// ([`stream_parts_512`]).
    pub(super) const PARTS: usize = 4;

    /// Values per task of such a pass (1 MB): each run a stream of 256 KB.
    pub(super) const PARTS_TASK: usize = 1 << 18;

    /// Rows from this many channels are normalised in eight runs side by side when their
    /// constants are interleaved (the dx pass, with two inputs a run, stays at four).
    ///
    /// With the constants of a step in one stream (see `interleave`), eight runs load them
    /// once for eight rows. Measured on the normalising pass alone (1 thread, in one process,
    /// medians of 20 calls rotating the order, ms, four -> eight runs): NC 4096x4096
    /// 4.25-4.77 -> 3.83-4.28, NC 8192x2048 4.15 -> 3.94, NC 2048x8192 4.22 -> 3.67; rows of
    /// 1024 channels lost (NC 16384x1024 4.62 -> 4.71), and the dx pass with eight runs of
    /// both inputs ran 1.15-1.25x slower (sixteen streams in). In the kernels (old and new
    /// builds alternating, 8 rounds, medians; 1 thread over the rounds the machine was quiet
    /// in, forward / eval ms): NC 4096x4096 6.60 / 3.98 -> 6.09 / 3.59, NC 8192x2048 6.75 /
    /// 3.89 -> 6.37 / 3.59, NC 2048x8192 6.61 / 4.04 -> 6.12 / 3.61; 2 threads, all rounds:
    /// forward 0.93-0.94x, eval 0.86-0.91x.
    pub(super) const EIGHT_PARTS_MIN: usize = 2048;

    /// Writes `rows` rows of `c` channels (`c` a multiple of 16) as [`PARTS`] runs of whole
    /// rows, each one flat stream of 64-byte streaming stores from its first 64-byte
    /// boundary, the runs in lock step: step `v` takes the vectors of the per-channel
    /// `arrays` for the channels of the `v`-th vector after the head once (the same in every
    /// run, as every run starts a row and rows are whole lines apart modulo the head; for
    /// rows of 16 to 64 channels held in registers, wider ones loaded, from `il` where it was
    /// made for this output's head, see `interleave`) and gives each run's
    /// `line(i, constants)` for its values `i..i + 16`; `one(i, ch)` writes the heads and
    /// tails with ordinary stores. The loads of a step are all issued before its stores
    /// (with `lag`, before the previous step's stores too): rows a power of two wide put the
    /// runs whole pages apart, where a store right after its own run's loads has the same low
    /// 12 address bits as the next run's load (4 KB aliasing). Returns the rows written (the
    /// multiple of [`PARTS`]), the rest is the caller's.
    ///
    /// One stream at a time leaves most of one core's memory parallelism idle, and wide rows
    /// read their constants from L2 for every vector of every row; strips of rows (what
    /// [`nt_visit`] does for rows of 2048 channels and more) keep the constants in L1 but
    /// read 8 rows a few lines at a time, which the prefetchers follow poorly. Four runs side
    /// by side load each vector of constants once for four rows and give the prefetchers
    /// four long streams. Measured as old and new builds in alternating processes, medians
    /// of 6 processes of 15 calls (forward / backward / eval ms; old -> new), 1 thread: NC
    /// 4096x4096 7.36 / 14.05 / 4.39 -> 7.16 / 13.11 / 4.12, NHWC 32x56x56x64 2.22 / 3.81 /
    /// 1.39 -> 2.02 / 3.48 / 1.14, NC 16384x1024 8.12 / 16.79 / 4.79 -> 6.68 / 14.27 / 3.41,
    /// NHWC 8x56x56x256 3.14 / 4.60 / 1.92 -> 2.53 / 3.95 / 1.09, NHWC 64x56x56x32 2.29 /
    /// 3.63 / 1.55 -> 1.96 / 3.33 / 1.09, the streamed backward of NHWC 64x14x14x256 2.17 ->
    /// 1.66; 2 threads: NC 4096x4096 4.12 / 8.04 / 2.46 -> 4.13 / 7.13 / 2.40, NHWC
    /// 32x56x56x64 1.36 / 2.19 / 0.82 -> 1.22 / 2.10 / 0.71, NC 16384x1024 4.50 / 9.25 / 2.65
    /// -> 3.93 / 7.63 / 2.07. Storing each run's result right after its loads ran 1.5-1.7x
    /// slower than the old passes on those shapes (the aliasing above). Two runs side by
    /// side lost to four (eval NC 4096x4096 6.5 against
    /// 4.5 ms), eight ran between; tasks of 256 KB lost to 1 MB ones.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn stream_parts_512<const N: usize, const P: usize>(
        y: *mut f32,
        rows: usize,
        c: usize,
        lag: bool,
        arrays: [&[f32]; N],
        il: Option<Interleaved>,
        one: impl FnMut(usize, usize),
        line: impl Fn(usize, [__m512; N]) -> __m512,
    ) -> usize {
        let h = head64(y, rows / P * c);
        match c {
            16 => parts_walk::<N, P>(y, rows, c, h, lag, one, parts_consts_held::<1, N>(arrays, h), line),
            32 => parts_walk::<N, P>(y, rows, c, h, lag, one, parts_consts_held::<2, N>(arrays, h), line),
            48 => parts_walk::<N, P>(y, rows, c, h, lag, one, parts_consts_held::<3, N>(arrays, h), line),
            64 => parts_walk::<N, P>(y, rows, c, h, lag, one, parts_consts_held::<4, N>(arrays, h), line),
            _ => match il.filter(|il| il.head == h && il.values.len() == N * c) {
                Some(il) => parts_walk::<N, P>(y, rows, c, h, lag, one, parts_consts_interleaved::<N>(il.values), line),
                None => parts_walk::<N, P>(y, rows, c, h, lag, one, parts_consts_loaded(arrays, h), line),
            },
        }
    }

    /// The walk of [`stream_parts_512`] after a head of `h` values, its constants from
    /// `consts()`, called once a step in order.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn parts_walk<const N: usize, const P: usize>(
        y: *mut f32,
        rows: usize,
        c: usize,
        h: usize,
        lag: bool,
        mut one: impl FnMut(usize, usize),
        mut consts: impl FnMut() -> [__m512; N],
        line: impl Fn(usize, [__m512; N]) -> __m512,
    ) -> usize {
        let part = rows / P * c;
        if part == 0 {
            return 0;
        }
        let vecs = (part - h) / 16;
        let store = |i: usize, r: [__m512; P]| {
            for (p, v) in r.into_iter().enumerate() {
                _mm512_stream_ps(y.add(p * part + i), v);
            }
        };
        for p in 0..P {
            for i in p * part..p * part + h {
                one(i, i % c);
            }
        }
        let mut held: Option<(usize, [__m512; P])> = None;
        for v in 0..vecs {
            let i = h + 16 * v;
            let q = consts();
            let r: [__m512; P] = std::array::from_fn(|p| line(p * part + i, q));
            if lag {
                if let Some((j, prev)) = held.replace((i, r)) {
                    store(j, prev);
                }
            } else {
                store(i, r);
            }
        }
        if let Some((j, prev)) = held {
            store(j, prev);
        }
        for p in 0..P {
            for i in p * part + h + 16 * vecs..(p + 1) * part {
                one(i, i % c);
            }
        }
        rows / P * P
    }

    /// The constants of each step of [`stream_parts_512`] over rows of `c = 16 K` channels
    /// (`K` at most 4): all `K` vectors of each array rotated by the head `h` in registers.
    #[inline(always)]
    unsafe fn parts_consts_held<const K: usize, const N: usize>(arrays: [&[f32]; N], h: usize) -> impl FnMut() -> [__m512; N] {
        let r: [[__m512; K]; N] = arrays.map(|a| rotated::<K>(a, h));
        let mut q = 0;
        move || {
            let out = std::array::from_fn(|i| r[i][q]);
            q = if q + 1 == K { 0 } else { q + 1 };
            out
        }
    }

    /// The constants of each step of [`stream_parts_512`] over rows of `c` channels (a
    /// multiple of 16) loaded from the arrays; the vector that crosses a row's end (channels
    /// `c - 16 + h` to `h - 1`, when the head `h` is not 0) gathered once.
    #[inline(always)]
    unsafe fn parts_consts_loaded<const N: usize>(arrays: [&[f32]; N], h: usize) -> impl FnMut() -> [__m512; N] + use<'_, N> {
        let c = arrays[0].len();
        let cross: [__m512; N] = arrays.map(|a| {
            let t: [f32; 16] = std::array::from_fn(|l| a[(c - 16 + h + l) % c]);
            _mm512_loadu_ps(t.as_ptr())
        });
        let mut ch = h;
        move || {
            let out = if ch + 16 > c { cross } else { arrays.map(|a| _mm512_loadu_ps(a.as_ptr().add(ch))) };
            ch += 16;
            if ch >= c {
                ch -= c;
            }
            out
        }
    }

    /// The constants of each step of [`stream_parts_512`] from an [`Interleaved`] copy of the
    /// arrays made for its head: block after block, wrapping at the row's end.
    #[inline(always)]
    unsafe fn parts_consts_interleaved<const N: usize>(values: &[f32]) -> impl FnMut() -> [__m512; N] + use<'_, N> {
        let end = values.len();
        let mut at = 0;
        move || {
            let p = values.as_ptr().add(at);
            let out = std::array::from_fn(|a| _mm512_loadu_ps(p.add(16 * a)));
            at += 16 * N;
            if at == end {
                at = 0;
            }
            out
        }
    }

    /// Rows of `c` channels (a multiple of 16): `y[c] = (x[c] - ctr[c]) * s[c] + t[c]`, rows
    /// side by side ([`stream_parts_512`]); same operations as the portable loop. Returns the
    /// rows written, from the first.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_affine_parts_512(x: &[f32], y: &mut [f32], ctr: &[f32], s: &[f32], t: &[f32], il: Option<Interleaved>) -> usize {
        let c = ctr.len();
        assert!(c.is_multiple_of(16) && s.len() == c && t.len() == c);
        let rows = x.len().min(y.len()) / c;
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
        let one = |i: usize, k: usize| *yp.add(i) = affine1(*xp.add(i), ctr[k], s[k], t[k]);
        let line = |i: usize, q: [__m512; 3]| _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xp.add(i)), q[0]), q[1]), q[2]);
        let lag = trails(yp, [xp]);
        let done = if il.is_some() && c >= EIGHT_PARTS_MIN {
            stream_parts_512::<3, 8>(yp, rows, c, lag, [ctr, s, t], il, one, line)
        } else {
            stream_parts_512::<3, PARTS>(yp, rows, c, lag, [ctr, s, t], il, one, line)
        };
        _mm_sfence();
        done
    }

    /// Rows of `c` channels (a multiple of 16): `dx[c] = dy[c] * a[c] + ((x[c] - ctr[c]) *
    /// b[c] + d[c])`, as [`rows_affine_parts_512`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_grad_combine_parts_512(
        x: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        q: (&[f32], &[f32], &[f32], &[f32]),
        il: Option<Interleaved>,
    ) -> usize {
        let (ctr, a, b, d) = q;
        let c = ctr.len();
        assert!(c.is_multiple_of(16) && a.len() == c && b.len() == c && d.len() == c);
        let rows = x.len().min(dy.len()).min(dx.len()) / c;
        let (xp, gp, op) = (x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        let one = |i: usize, k: usize| *op.add(i) = grad1(*xp.add(i), *gp.add(i), ctr[k], a[k], b[k], d[k]);
        let line = |i: usize, q: [__m512; 4]| {
            let (xv, g) = (_mm512_loadu_ps(xp.add(i)), _mm512_loadu_ps(gp.add(i)));
            _mm512_add_ps(_mm512_mul_ps(g, q[1]), _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(xv, q[0]), q[2]), q[3]))
        };
        let done = stream_parts_512::<4, PARTS>(op, rows, c, trails(op, [xp, gp]), [ctr, a, b, d], il, one, line);
        _mm_sfence();
        done
    }

    /// Writes `n` values that are channels-first runs of `inner` values (run `j` is channel
    /// `(ch0 + j) % c`, the first run starting at value 0) as one flat run of 64-byte stores
    /// from the first 64-byte boundary, streamed and then fenced where `NT`, into the cache
    /// otherwise: `one(i, ch)` writes value `i` of
    /// channel `ch` with an ordinary store (the head and the tail), `line(i, k)` gives values
    /// `i..i + 16` from the per-lane constants `k` (the `K` arrays of `consts`, broadcast;
    /// where a vector crosses into the next run, its lanes from there on take the next
    /// channel's). `inner >= 16`, so a vector meets at most one run boundary. With `back` the
    /// whole vectors go from the last to the first (see [`super::output_trails`]). Measured
    /// (cached, `x` on a page and `y` that far above, 1 thread, medians of 500 calls, from
    /// the start -> from the end, eval ms): NCHW 32x128x14x14 at 48 bytes 0.103-0.109 ->
    /// 0.076, 64 0.097-0.098 -> 0.073-0.086, 128 0.081-0.083 -> 0.073; NCHW 64x128x7x7 at 48
    /// bytes 0.055-0.059 -> 0.040, 128 0.046-0.047 -> 0.037-0.038.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn stream_runs_512<const K: usize, const NT: bool>(
        y: *mut f32,
        back: bool,
        n: usize,
        inner: usize,
        ch0: usize,
        c: usize,
        consts: [&[f32]; K],
        mut one: impl FnMut(usize, usize),
        line: impl Fn(usize, [__m512; K]) -> __m512,
    ) {
        debug_assert!(inner >= 16 && ch0 < c);
        // Channel and offset within its run of the next value, stepped without a division.
        let (mut ch, mut off) = (ch0, 0);
        let next = |ch: usize| if ch + 1 == c { 0 } else { ch + 1 };
        let step = |ch: &mut usize, off: &mut usize, by: usize| {
            *off += by;
            if *off >= inner {
                *off -= inner;
                *ch = next(*ch);
            }
        };
        let h = head64(y, n);
        for i in 0..h {
            one(i, ch);
            step(&mut ch, &mut off, 1);
        }
        let m = (n - h) / 16;
        let end = h + 16 * m;
        // Channel and offset of value `i`, by division (where the walk does not step there).
        let at = |i: usize| ((ch0 + i / inner) % c, i % inner);
        // From the last vector to the first where `back` (see `output_trails`).
        let mut i = h;
        if back && m > 0 {
            i = end - 16;
            (ch, off) = at(i);
        }
        for _ in 0..m {
            let here: [__m512; K] = std::array::from_fn(|q| _mm512_set1_ps(consts[q][ch]));
            let left = inner - off;
            let v = if left >= 16 {
                line(i, here)
            } else {
                let later = (0xFFFF_u32 << left) as __mmask16;
                line(i, std::array::from_fn(|q| _mm512_mask_blend_ps(later, here[q], _mm512_set1_ps(consts[q][next(ch)]))))
            };
            if NT {
                _mm512_stream_ps(y.add(i), v);
            } else {
                _mm512_storeu_ps(y.add(i), v);
            }
            if back {
                i = i.wrapping_sub(16);
                if off >= 16 {
                    off -= 16;
                } else {
                    ch = if ch == 0 { c - 1 } else { ch - 1 };
                    off += inner - 16;
                }
            } else {
                step(&mut ch, &mut off, 16);
                i += 16;
            }
        }
        if back {
            (ch, off) = at(end);
        }
        for k in end..n {
            one(k, ch);
            step(&mut ch, &mut off, 1);
        }
        if NT {
            _mm_sfence();
        }
    }

    /// Channels-first runs: `y = (x - ctr[ch]) * s[ch] + t[ch]` with 64-byte stores
    /// (streamed where `NT`) across run boundaries (see [`stream_runs_512`]); same
    /// operations as the portable loop.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn runs_affine_512<const NT: bool>(x: &[f32], y: &mut [f32], inner: usize, ch0: usize, ctr: &[f32], s: &[f32], t: &[f32]) {
        let c = ctr.len();
        assert!(s.len() == c && t.len() == c && x.len() >= y.len() && inner >= 16 && ch0 < c);
        let (xp, yp, n) = (x.as_ptr(), y.as_mut_ptr(), y.len());
        stream_runs_512::<3, NT>(
            yp,
            !NT && super::output_trails(yp, [xp]),
            n,
            inner,
            ch0,
            c,
            [ctr, s, t],
            |i, k| *yp.add(i) = affine1(*xp.add(i), ctr[k], s[k], t[k]),
            |i, [rc, rs, rt]| _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xp.add(i)), rc), rs), rt),
        );
    }

    /// Channels-first runs: `dx = dy * a[ch] + ((x - ctr[ch]) * b[ch] + d[ch])` across run
    /// boundaries as [`runs_affine_512`] (`q = (ctr, a, b, d)`), with ordinary stores (the
    /// dx pass does not stream short runs, see [`super::runs_stream`]); same operations as
    /// the portable loop.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn runs_grad_combine_512(x: &[f32], dy: &[f32], dx: &mut [f32], inner: usize, ch0: usize, q: [&[f32]; 4]) {
        let [ctr, a, b, d] = q;
        let c = ctr.len();
        assert!(a.len() == c && b.len() == c && d.len() == c && x.len() >= dx.len() && dy.len() >= dx.len() && inner >= 16 && ch0 < c);
        let (xp, gp, op, n) = (x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr(), dx.len());
        stream_runs_512::<4, false>(
            op,
            super::output_trails(op, [xp, gp]),
            n,
            inner,
            ch0,
            c,
            q,
            |i, k| *op.add(i) = grad1(*xp.add(i), *gp.add(i), ctr[k], a[k], b[k], d[k]),
            |i, [rc, ra, rb, rd]| {
                let (xv, g) = (_mm512_loadu_ps(xp.add(i)), _mm512_loadu_ps(gp.add(i)));
                _mm512_add_ps(_mm512_mul_ps(g, ra), _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(xv, rc), rb), rd))
            },
        );
    }

    /// Orders earlier streaming stores before everything after it.
    #[inline(always)]
    pub(super) fn store_fence() {
        // SAFETY: SSE is part of x86_64.
        unsafe { _mm_sfence() }
    }
}

/// One value of the normalising pass, `(x - ctr) * s + t`. Every path (the portable loops,
/// the heads and tails of the vector ones) computes it through here, and the vector bodies
/// do the same three operations in the same order, so all agree bit for bit.
#[inline(always)]
pub(crate) fn affine1(x: f32, ctr: f32, s: f32, t: f32) -> f32 {
    (x - ctr) * s + t
}

/// One value of dx, `dy * a + ((x - ctr) * b + d)`, as [`affine1`].
#[inline(always)]
pub(crate) fn grad1(x: f32, dy: f32, ctr: f32, a: f32, b: f32, d: f32) -> f32 {
    dy * a + ((x - ctr) * b + d)
}

/// `y = (x - ctr) * s + t`.
#[inline(always)]
pub(crate) fn affine(x: &[f32], y: &mut [f32], ctr: f32, s: f32, t: f32) {
    for (yo, &xi) in y.iter_mut().zip(x) {
        *yo = affine1(xi, ctr, s, t);
    }
}

/// `dx = dy * a + (x - ctr) * b + d`.
#[inline(always)]
pub(crate) fn grad_combine(x: &[f32], dy: &[f32], dx: &mut [f32], ctr: f32, a: f32, b: f32, d: f32) {
    for ((o, &xi), &g) in dx.iter_mut().zip(x).zip(dy) {
        *o = grad1(xi, g, ctr, a, b, d);
    }
}

/// Rows of `C` values: `a1[c] += x - k[c]`, `a2[c] += (x - k[c])^2` over every row, in
/// strips of channels held in registers (see `strips`), prefetching as `ahead` says; rows of
/// fewer than 16 channels that are not whole vectors are regrouped first (see `narrow`).
#[inline(always)]
pub(crate) fn rows_acc_shifted(x: &[f32], k: &[f64], a1: &mut [f64], a2: &mut [f64], ahead: crate::strips::Ahead) {
    let c = k.len();
    if let Some(l) = crate::narrow::period(c) {
        crate::narrow::acc_shifted(x, k, l, a1, a2)
    } else {
        crate::strips::strips_acc_shifted(x, c, 0, k, a1, a2, ahead)
    }
}

/// Channels `j0..j0 + k.len()` of rows `c` wide: `a1[j] += x - k[j]`, `a2[j] += (x - k[j])^2`,
/// one row at a time: a single stream through memory.
#[inline(always)]
pub(crate) fn strip_acc_shifted_1(x: &[f32], c: usize, j0: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64]) {
    let w = k.len();
    let (a1, a2) = (&mut a1[..w], &mut a2[..w]);
    for r in x.chunks_exact(c) {
        let r = &r[j0..j0 + w];
        for j in 0..w {
            let d = r[j] as f64 - k[j];
            a1[j] += d;
            a2[j] = d.mul_add(d, a2[j]);
        }
    }
}

/// Channels `j0..j0 + k.len()` of rows `c` wide: `a1[j] += dy`, `a2[j] += dy * (x - k[j])`,
/// one row at a time (two streams, accumulators in L1).
#[inline(always)]
pub(crate) fn strip_acc_grad_1(x: &[f32], dy: &[f32], c: usize, j0: usize, k: &[f64], a1: &mut [f64], a2: &mut [f64]) {
    let w = k.len();
    let (a1, a2) = (&mut a1[..w], &mut a2[..w]);
    for (r, g) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
        let (r, g) = (&r[j0..j0 + w], &g[j0..j0 + w]);
        for j in 0..w {
            let e = g[j] as f64;
            a1[j] += e;
            a2[j] = e.mul_add(r[j] as f64 - k[j], a2[j]);
        }
    }
}

/// Rows of `C` values: `a1[c] += dy`, `a2[c] += dy * (x - k[c])` over every row.
///
/// Rows of a few channels are regrouped (see `narrow`), all others summed in strips held in
/// registers (see `strips`; rows of 128 to 512 channels with their rows asked for ahead, see
/// `strips::ahead_grad`). Strips against four rows at a time (`examples/shapes`, medians of
/// 5 interleaved runs, backward ms): NHWC 32x56x56x64 4.6-5.1 -> 4.5-4.8 at 1 thread and
/// 2.8-3.0 -> 2.5-2.6 at 2, NC 4096x4096 21.7 -> 19.4 and 11.0 -> 10.4, NC 2048x2048 1.75
/// -> 1.64 at 2 threads (3.91 -> 4.00 at 1), NC 64x100000 (column tiles) 3.62 -> 3.19 at 2.
/// The order of each channel's additions depends on the shape alone; strips prefetch as
/// `ahead` says.
#[inline(always)]
pub(crate) fn rows_acc_grad(x: &[f32], dy: &[f32], k: &[f64], a1: &mut [f64], a2: &mut [f64], ahead: crate::strips::Ahead) {
    let c = k.len();
    if let Some(l) = crate::narrow::period(c) {
        crate::narrow::acc_grad(x, dy, k, l, a1, a2)
    } else {
        crate::strips::strips_acc_grad(x, dy, c, 0, k, a1, a2, ahead)
    }
}

/// Rows of `C` values: `y[c] = (x[c] - ctr[c]) * s[c] + t[c]` for every row.
///
/// A row at a time loads each constant once per row: four loads a vector beside one store.
/// Four rows sharing one load of each constant (7 loads and 4 stores per 32 values instead
/// of 16 and 4, the same operations, vectorised by the compiler) were slower everywhere
/// measured (eval, old -> new, us a call, 1 / 2 threads): NC 256x1024 29.1-29.5 ->
/// 37.7-38.9 / 27.2-27.4 -> 24.1-32.6, NHWC 64x14x14x256 547-556 -> 1407-1493 / 283-284 ->
/// 571-644, NHWC 8x14x14x256 43.0 -> 48.5 at 1 thread. Rows 1-4 KB apart put the stores of
/// one row and the loads of the next at the same offsets within 4 KB, which may be why
/// (not followed up). Many rows go as one run across the rows instead: streamed ones that
/// are not whole lines wide, on a CPU with AVX-512 (`flat_rows::flat_rows`), and cached ones
/// of 16 to 1023 channels (of whole lines to 2047) with AVX-512, of 8 to 255 with AVX2 only
/// (`flat_rows::cached_rows`).
#[inline(always)]
pub(crate) fn rows_affine(x: &[f32], y: &mut [f32], ctr: &[f32], s: &[f32], t: &[f32]) {
    let c = ctr.len();
    let (s, t) = (&s[..c], &t[..c]);
    for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        for j in 0..c {
            yr[j] = affine1(xr[j], ctr[j], s[j], t[j]);
        }
    }
}

/// Rows of `C` values: `dx[c] = dy[c] * a[c] + ((x[c] - ctr[c]) * b[c] + d[c])`.
#[inline(always)]
pub(crate) fn rows_grad_combine(x: &[f32], dy: &[f32], dx: &mut [f32], ctr: &[f32], a: &[f32], b: &[f32], d: &[f32]) {
    let c = ctr.len();
    let (a, b, d) = (&a[..c], &b[..c], &d[..c]);
    for ((o, xr), gr) in dx.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(dy.chunks_exact(c)) {
        for j in 0..c {
            o[j] = grad1(xr[j], gr[j], ctr[j], a[j], b[j], d[j]);
        }
    }
}

/// `dx = dy * a`.
#[inline(always)]
pub(crate) fn scale(dy: &[f32], dx: &mut [f32], a: f32) {
    for (o, &g) in dx.iter_mut().zip(dy) {
        *o = g * a;
    }
}

/// Rows of `C` values: `dx[c] = dy[c] * a[c]`.
#[inline(always)]
pub(crate) fn rows_scale(dy: &[f32], dx: &mut [f32], a: &[f32]) {
    let c = a.len();
    for (o, gr) in dx.chunks_exact_mut(c).zip(dy.chunks_exact(c)) {
        for j in 0..c {
            o[j] = gr[j] * a[j];
        }
    }
}

/// Outputs at least this large are written with non-temporal stores: together with the input
/// they overflow the last-level cache, so caching them only costs a read-for-ownership per
/// line and evicts the input the next pass needs. Streaming rows (NHWC, NC) from 8 MB won
/// when the machine's other tenants held the shared cache (in one process, alternating,
/// eval ms at 1 thread: NC 1024x2048 0.93 -> 0.55, NHWC 64x14x14x256 0.84 -> 0.69) and lost
/// when a tensor of 12.8 MB stayed in it, as a layer's input just written by the layer before
/// does (`bnlab bench`, 3 alternating runs, NHWC 64x14x14x256 eval 0.51-0.70 -> 0.73-0.76 ms at
/// 1 thread, 0.30-0.36 -> 0.49-0.51 at 2), so every layout streams from 16 MB (the training
/// passes and the eval over rows on one thread from 8 MB: see [`streams_train`],
/// [`streams_backward`] and [`streams_eval`]).
///
/// The bound does not follow the size of the last-level cache: on a 16-core Xeon with 300
/// MB of L3, tensors that fit in it twice over still gained from streaming (`examples/shapes`,
/// best of 7, ms streamed against never streamed, 1 / 16 threads): NCHW 128x64x56x56 (103
/// MB) forward 27.2 vs 30.2 / 1.61 vs 2.72, eval 13.8 vs 15.0 / 0.68 vs 2.45; NHWC
/// 128x56x56x128 (206 MB) forward 29.5 vs 48.2 / 3.63 vs 6.42; NC 16384x8192 (537 MB) eval
/// 43.9 vs 95.9 / 6.8 vs 12.3. At 25.7 MB there (`bnlab bench`, 3 alternating runs, one
/// round each) NHWC 32x56x56x64 ran 1.03-1.46x as long never streamed, and NCHW
/// 32x64x56x56 0.82-0.89x at 1 and 16 threads but 1.08-1.22x at 4: no one bound wins there.
const STREAM_MIN_BYTES: usize = 16 << 20;

/// Whether the outputs of a pass over a tensor of these dimensions are streamed.
#[inline(always)]
pub(crate) fn streams(d: crate::layout::Dims) -> bool {
    streams_bytes(d.len() * 4)
}

/// Whether the output of a pass over a tensor of `bytes` bytes is streamed (see
/// [`STREAM_MIN_BYTES`]; the float64 passes ask with their own size).
#[inline(always)]
pub(crate) fn streams_bytes(bytes: usize) -> bool {
    bytes >= STREAM_MIN_BYTES
}

/// Whether dx of the backward pass is streamed: as [`streams`], and also from 11 MB where
/// x, dy and dx together (3 x 11 MB) overflow the last-level cache, except for rows of
/// fewer than 256 channels, where each short row is a streamed run of its own. Measured
/// (`examples/shapes`, medians of 7 interleaved runs, backward ms, 1 / 2 threads): NHWC
/// 64x14x14x256 2.42 -> 2.24 / 1.22 -> 1.01, NC 2048x1536 3.04 -> 2.58 / 1.47 -> 1.32,
/// NCHW 32x128x28x28 1.95 -> 1.84 / 0.96 -> 0.94; rows of 64 and 128 channels lost
/// (NHWC 16x56x56x64 2.02 -> 2.32 at 1 thread, NHWC 32x28x28x128 2.56 -> 3.06). Checked
/// again later in `bnlab bench` (6 alternating runs, forward + backward ms, 1 / 2 threads,
/// without this bound and with it): NHWC 64x14x14x256 3.33 -> 2.96 / 2.02 -> 1.74; the NCHW
/// shapes of 12.8 MB within 3% either way.
///
/// One thread alone also streams dx over rows, whatever their width, and over channels
/// taken one by one ([`crate::reads_once`]) from [`ALONE_STREAM_MIN_BYTES`]: in a training
/// step the pass follows the forward's and the gradient sums' reads of `x` and `dy` (the
/// loss above was measured on backward passes alone, repeated over tensors that stayed in
/// the cache). Measured as `train_fwd_bwd` runs it (forward then backward over the same
/// tensors, 1 thread, the forward streaming from 8 MB; rows: in one process alternating
/// blocks of 8 calls, medians of 90; channels: 3 alternating runs of medians of 200; ms,
/// without and with): NHWC 16x56x56x64 2.93 -> 2.51, NHWC 12x56x56x64 1.94 -> 1.62, NHWC
/// 32x28x28x128 3.04 -> 2.64, NC 4096x512 1.70 -> 1.47, NC 2560x1024 2.74 -> 2.28, NC
/// 2048x1024 2.14 -> 1.79; NCHW 2x64x128x128 2.13-3.14 -> 1.42-1.76, NCHW 3x64x112x112
/// 2.52-2.83 -> 1.94-2.01. Channels-first slices in memory order did not gain (NCHW
/// 48x256x14x14, 9.6 MB: 2.35-2.73 -> 2.45-2.57; NCHW 24x128x28x28 2.19-3.09 ->
/// 2.79-2.86) and keep the bound above.
#[inline(always)]
pub(crate) fn streams_backward(d: crate::layout::Dims) -> bool {
    streams(d)
        || (d.len() * 4 * 3 >= 2 * STREAM_MIN_BYTES && (!d.is_rows() || d.channels >= 256))
        || ((d.is_rows() || crate::parallel::reads_once(d)) && streams_alone(d.len() * 4, ALONE_STREAM_MIN_BYTES))
}

/// The output of a training pass that one thread runs alone streams from this many bytes,
/// under [`STREAM_MIN_BYTES`], over rows and over channels taken one by one: the pass
/// follows a read of the whole input (the statistics, or the gradient sums), which leaves
/// the output's lines out of the cache, and one core fetching every line it writes (a read
/// for ownership) besides the line it reads keeps too few of its own reads in flight. Two
/// threads keep twice as many; there the shared bound holds (see [`streams_train`]).
const ALONE_STREAM_MIN_BYTES: usize = 8 << 20;

/// [`ALONE_STREAM_MIN_BYTES`] for the forward's channels-first slices in memory order, whose
/// output passes one run at a time (or as one flat stream across short runs).
const ALONE_SLICES_STREAM_MIN_BYTES: usize = 12 << 20;

/// Whether one thread runs a pass alone and its output of `bytes` reaches `min`.
#[inline(always)]
fn streams_alone(bytes: usize, min: usize) -> bool {
    bytes >= min && rayon::current_num_threads() == 1
}

/// Whether one thread runs a pass alone and its output of `bytes` reaches
/// [`ALONE_STREAM_MIN_BYTES`]: the float64 passes, all of which stream then (see
/// `float64::streamed::streams`).
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn streams_alone_bytes(bytes: usize) -> bool {
    streams_alone(bytes, ALONE_STREAM_MIN_BYTES)
}

/// Whether the eval forward streams `y`: as [`streams`], and on one thread over rows from
/// [`ALONE_STREAM_MIN_BYTES`]. Where the eval follows a training step over the same
/// buffers, as in `bnlab bench`, `y` is out of the cache once the training passes stream
/// it, and a core writing through the cache takes about six calls to pull it back in: the
/// rows' evals timed that way (1 thread, the same binary with the bound at 16 and 8 MB
/// alternating, 4 runs each, medians of the bench's 15 calls, ms) NHWC 64x14x14x256 0.70-0.98
/// -> 0.51, NC 2048x1536 1.00-1.54 -> 0.55-0.60, NHWC 16x56x56x64 0.64-1.01 -> 0.48-0.50.
/// Channels-first slices lost the same way (NCHW 64x256x14x14 0.56-0.71 -> 0.64-0.71, NCHW
/// 128x512x7x7 0.57-0.73 -> 0.62-0.68, NCHW 48x256x14x14 0.28-0.39 -> 0.42-0.45) and keep
/// [`STREAM_MIN_BYTES`].
#[inline(always)]
pub(crate) fn streams_eval(d: crate::layout::Dims) -> bool {
    streams(d) || (d.is_rows() && streams_alone(d.len() * 4, ALONE_STREAM_MIN_BYTES))
}

/// Whether the training forward's normalising pass streams `y`: as [`streams`], and on one
/// thread from [`ALONE_STREAM_MIN_BYTES`] (channels-first slices in memory order from
/// [`ALONE_SLICES_STREAM_MIN_BYTES`]); the eval forward has its own rule
/// ([`streams_eval`]).
///
/// Measured (the training forward, bench placement: `x`, `y` 2608 and 2640 bytes into their
/// pages; 1 thread, in one process alternating blocks of 8 calls, medians of 180, ms,
/// without and with): NHWC 64x14x14x256 1.07 -> 0.83, NHWC 16x28x28x256 1.10 -> 0.82, NC
/// 2048x1536 1.55 -> 0.94, NC 1024x2048 0.86 -> 0.60, NCHW 16x64x56x56 0.96 -> 0.80, NCHW
/// 64x256x14x14 1.05 -> 0.99, NCHW 128x512x7x7 1.02 -> 0.98; forward + backward (medians of
/// 90) NHWC 64x14x14x256 4.01 -> 3.28, NC 2048x1536 3.85 -> 2.93, NC 1024x2048 3.34 -> 2.70.
/// In `bnlab bench` (1 thread, 3 alternating runs, forward ms, without and with): NHWC
/// 16x56x56x64 0.93-1.25 -> 0.83-1.00, NHWC 32x28x28x128 1.20-1.31 -> 0.79-0.84, NC 4096x512
/// (8.4 MB) 0.51-0.55 -> 0.51-0.55, NCHW 2x64x128x128 (8.4 MB, channels one by one) 0.61-0.66
/// -> 0.58-0.62, NCHW 3x64x112x112 0.77-0.85 -> 0.66-0.72, NCHW 32x128x28x28 0.93-1.30 ->
/// 0.81-0.89, NCHW 72x256x14x14 1.22-1.29 -> 1.01-1.04; but channels-first slices in memory
/// order under 12 MB lost (NCHW 48x256x14x14, 9.6 MB, 0.59-0.64 -> 0.71-0.81, NCHW
/// 96x512x7x7 0.53-0.58 -> 0.67-0.72, NCHW 24x128x28x28 0.49-0.56 -> 0.63, NCHW 12x64x56x56
/// 0.52-0.61 -> 0.58-0.64; at 12 MB even, NCHW 60x256x14x14 0.90-1.29 -> 0.92-1.26). From
/// 6 MB a thread it lost: NHWC 32x14x14x256 (6.4 MB) at 1 thread 0.38 -> 0.43, and the
/// 12.8 MB shapes at 2 threads (NCHW 64x256x14x14 0.53 -> 0.71, NCHW 128x512x7x7 0.51 ->
/// 0.64, NHWC 64x14x14x256 0.61 -> 0.65; NC 2048x1536 0.75 -> 0.65).
#[inline(always)]
pub(crate) fn streams_train(d: crate::layout::Dims) -> bool {
    let slices = !d.is_rows() && !crate::parallel::reads_once(d);
    streams(d) || streams_alone(d.len() * 4, if slices { ALONE_SLICES_STREAM_MIN_BYTES } else { ALONE_STREAM_MIN_BYTES })
}

/// Shortest contiguous run written with streaming stores. A streamed run's unaligned head
/// and tail are written with ordinary stores and it ends with a fence; on short runs those
/// partial lines flush the write-combining buffers early: NCHW 128x512x7x7 (runs of 49)
/// took 26 ms instead of 0.6 ms when streamed. The normalising passes stream shorter runs
/// as one flat stream across run boundaries instead, where the CPU has AVX-512
/// ([`runs_stream`]).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const STREAM_MIN_RUN: usize = 1024;

/// Whether rows of `c` values starting at `p` stream: every row must start 16-byte aligned
/// and be a whole number of 8-lane vectors, or each row leaves ordinary stores between the
/// streamed ones (NC 100000x100 eval: 14.1 ms streamed, 2.7 ms cached). Rows of whole
/// vectors gain even when narrow: NHWC 32x56x56x64 in `bnlab bench` (3 interleaved rounds)
/// took 1.38-1.58 ms for eval and 3.0-3.4 ms for train forward at 1 thread streamed,
/// 1.93-2.39 and 3.6-4.2 ms cached. Where the CPU has AVX-512, rows that fail this stream
/// as one stream across the rows instead (`flat_rows`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn rows_stream(p: *const f32, c: usize) -> bool {
    c.is_multiple_of(8) && (p as usize).is_multiple_of(16)
}

/// [`affine`], streaming the output when `nt`; the caller issues [`store_fence`] after its
/// last run. A fence per run of an NCHW batch (12.5 KB) cost 12-20% of a streamed pass
/// over 25 MB, against one at the end (and 3x with runs of 196 values); in the kernels
/// (medians of 5 interleaved runs, 1 thread) NCHW 32x64x56x56 eval 1.40 -> 1.27 ms,
/// forward 2.44 -> 2.12, backward 3.90 -> 3.23.
#[inline(always)]
pub(crate) fn affine_out(x: &[f32], y: &mut [f32], ctr: f32, s: f32, t: f32, nt: bool) {
    #[cfg(target_arch = "x86_64")]
    if nt && y.len() >= STREAM_MIN_RUN && has_avx2() {
        // SAFETY: the CPU has AVX2.
        return unsafe { x86::affine_nt(x, y, ctr, s, t) };
    }
    let _ = nt;
    affine(x, y, ctr, s, t)
}

/// [`grad_combine`], streaming the output when `nt`; the caller issues [`store_fence`]
/// after its last run.
#[inline(always)]
pub(crate) fn grad_combine_out(x: &[f32], dy: &[f32], dx: &mut [f32], q: (f32, f32, f32, f32), nt: bool) {
    #[cfg(target_arch = "x86_64")]
    if nt && dx.len() >= STREAM_MIN_RUN && has_avx2() {
        // SAFETY: the CPU has AVX2.
        return unsafe { x86::grad_combine_nt(x, dy, dx, q.0, q.1, q.2, q.3) };
    }
    let _ = nt;
    grad_combine(x, dy, dx, q.0, q.1, q.2, q.3)
}

/// One row (or a tile's part of one) of [`rows_affine_out`], without the closing fence of
/// streaming stores: the caller issues [`store_fence`] after its last row.
#[inline(always)]
pub(crate) fn row_affine_out(xr: &[f32], yr: &mut [f32], ctr: &[f32], s: &[f32], t: &[f32], nt: bool) {
    #[cfg(target_arch = "x86_64")]
    if nt && rows_stream(yr.as_ptr(), ctr.len()) && has_avx2() {
        // SAFETY: the CPU has AVX2.
        return unsafe { x86::row_affine_nt(xr, yr, ctr, s, t, x86::trails(yr.as_ptr(), [xr.as_ptr()])) };
    }
    let _ = nt;
    let c = ctr.len();
    rows_affine(&xr[..c], &mut yr[..c], ctr, s, t)
}

/// For streamed rows of 16, 32, 48 or 64 channels on a CPU with AVX-512: the number of
/// 16-lane vectors a row takes, its constants then held in registers
/// (`x86::stream_rows_512`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rows_in_registers(c: usize) -> Option<usize> {
    (c.is_multiple_of(16) && c <= x86::REG_ROWS_MAX && has_avx512()).then_some(c / 16)
}

/// Whether streamed passes over rows of `c` channels write their rows side by side
/// (`x86::stream_parts_512`): rows a whole number of 64-byte lines wide, on a CPU with
/// AVX-512.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rows_side_by_side(c: usize) -> bool {
    c.is_multiple_of(16) && has_avx512()
}

/// Whether a streamed pass over rows of `c` channels loads its per-channel constants at
/// every step of the side-by-side walk (rows wider than those held in registers), so that an
/// [`Interleaved`] copy serves it (see `interleave`).
pub(crate) fn parts_load_constants(c: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if rows_side_by_side(c) && c > x86::REG_ROWS_MAX {
        return true;
    }
    let _ = c;
    false
}

/// Fewest rows per task of a pass over rows of `c` channels, streamed when `nt`: at least
/// [`NT_GROUP`], and 1 MB (and at least eight rows) where streamed rows go side by side
/// (each of its four or eight runs then a stream of 256 or 128 KB).
pub(crate) fn rows_per_task(c: usize, nt: bool) -> usize {
    #[cfg(target_arch = "x86_64")]
    if nt && rows_side_by_side(c) {
        return (x86::PARTS_TASK / c.max(1)).max(2 * x86::PARTS);
    }
    let _ = (c, nt);
    NT_GROUP
}

/// Whether a cached pass writing `y` from `inputs` goes from its end to its start: `y`
/// starts 33 to 320 bytes above one of `inputs` modulo 4 KB.
///
/// A load whose address matches a still pending earlier store in its low 12 bits waits for
/// that store as if they were the same address (see `x86::trails`). A pass from the start
/// that stores `y[i..]` and then runs its loads of `x` ahead meets that whenever `y` sits
/// a little above `x` modulo 4 KB; from the end, its later loads lie below its earlier
/// stores. Allocations of one size from one heap sit a header apart (x, then dy, y and dx
/// 16 bytes after each other modulo 4 KB, as `bnlab bench` and a training step allocate
/// them). Measured (`x` on a page, `y` that far above, 1 thread, medians of 300 calls,
/// forward -> backward order, NC 4096x256 eval ms): 48 bytes 0.158-0.168 -> 0.105-0.106,
/// 64 0.125 -> 0.098, 80 0.138 -> 0.106, 128 0.136 -> 0.101, 256 0.107 -> 0.101, 320
/// 0.103-0.108 -> 0.100; NHWC 16x14x14x128 eval at 48 bytes 0.055-0.058 -> 0.040. Where
/// nothing aliases the backward order costs 3-6% (0.092-0.094 -> 0.098-0.100 at 0, 512-1024
/// bytes), and at 16 and 32 bytes it gains nothing (0.107-0.109 -> 0.106-0.117,
/// 0.094-0.099 -> 0.099-0.127), at 384 bytes and up nothing either.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn output_trails<const I: usize>(y: *const f32, inputs: [*const f32; I]) -> bool {
    inputs.iter().any(|&p| (33..=320).contains(&((y as usize).wrapping_sub(p as usize) % 4096)))
}

/// Bytes past a 64-byte boundary at which the per-channel constants of a pass over rows of
/// `d` whose input starts at `x` should start (see `workspace::placed`): `x`'s own offset
/// where the pass goes as one cached run across rows (`flat_rows::cached_rows`) of whole
/// vectors, 0 otherwise.
///
/// That run loads from the input's first line boundary on, so with rows a whole number of
/// lines wide the vector of channels `j..j + 16` always starts `x % 64` bytes before a line
/// of the input; constants that start on a line are then loaded `64 - x % 64` bytes off
/// one, every load touching two lines. Large buffers start 16 bytes past a page (a page and
/// the allocator's header), so that was the common case. Measured (`examples/shapes`-like
/// timings, 1 thread, medians of 400 calls, `x` and `y` 16 bytes past a page, constants on
/// a line -> 16 bytes past one too; eval / forward ms): NC 4096x256 0.135 / 0.252 -> 0.092 /
/// 0.209 (the time with `x` and `y` on a page), NC 2048x512 0.131 / 0.240 -> 0.093 / 0.204.
pub(crate) fn constants_skew(d: crate::layout::Dims, nt: bool, x: *const f32) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::flat_rows::{cached_rows, Width};
        let c = d.channels;
        // Rows of whole vectors are never regrouped (`narrow::period`), so that needs no test.
        let flat = !nt && d.is_rows() && crate::tiles::tile_width(d).is_none();
        let whole = match cached_rows(c) {
            Some(Width::W16) => c.is_multiple_of(16),
            Some(Width::W8) => c.is_multiple_of(8),
            None => false,
        };
        if flat && whole {
            return x as usize % 64;
        }
    }
    let _ = (d, nt, x);
    0
}

/// [`rows_affine`], streaming the output when `nt`.
#[inline(always)]
pub(crate) fn rows_affine_out(x: &[f32], y: &mut [f32], ctr: &[f32], s: &[f32], t: &[f32], il: Option<Interleaved>, nt: bool) {
    #[cfg(target_arch = "x86_64")]
    if nt && crate::flat_rows::flat_rows(ctr.len(), rows_stream(y.as_ptr(), ctr.len())) {
        // SAFETY: `flat_rows` found AVX-512F and rows of 16 channels or more.
        return unsafe { crate::flat_rows::rows_affine::<true>(x, y, ctr, s, t) };
    }
    #[cfg(target_arch = "x86_64")]
    if !nt {
        use crate::flat_rows::{cached_rows, Width};
        match cached_rows(ctr.len()) {
            // SAFETY: `cached_rows` found AVX-512F and rows of 16 channels or more.
            Some(Width::W16) => return unsafe { crate::flat_rows::rows_affine::<false>(x, y, ctr, s, t) },
            // SAFETY: `cached_rows` found AVX2 and rows of 8 channels or more.
            Some(Width::W8) => return unsafe { crate::flat_rows::rows_affine_8(x, y, ctr, s, t) },
            None => {}
        }
    }
    #[cfg(target_arch = "x86_64")]
    if nt && rows_stream(y.as_ptr(), ctr.len()) && has_avx2() {
        let c = ctr.len();
        // SAFETY: the CPU has AVX-512F where `rows_side_by_side` says so.
        let done = if rows_side_by_side(c) { unsafe { x86::rows_affine_parts_512(x, y, ctr, s, t, il) * c } } else { 0 };
        let (x, y) = (&x[done..], &mut y[done..]);
        // SAFETY: the CPU has AVX2 (and AVX-512F where `rows_in_registers` says so).
        return unsafe {
            match rows_in_registers(c) {
                Some(1) => x86::rows_affine_512::<1>(x, y, ctr, s, t),
                Some(2) => x86::rows_affine_512::<2>(x, y, ctr, s, t),
                Some(3) => x86::rows_affine_512::<3>(x, y, ctr, s, t),
                Some(_) => x86::rows_affine_512::<4>(x, y, ctr, s, t),
                None => x86::rows_affine_nt(x, y, ctr, s, t),
            }
        };
    }
    let _ = (nt, il);
    rows_affine(x, y, ctr, s, t)
}

/// [`rows_grad_combine`], streaming the output when `nt`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows_grad_combine_out(x: &[f32], dy: &[f32], dx: &mut [f32], ctr: &[f32], a: &[f32], b: &[f32], d: &[f32], il: Option<Interleaved>, nt: bool) {
    #[cfg(target_arch = "x86_64")]
    if nt && crate::flat_rows::flat_rows(ctr.len(), rows_stream(dx.as_ptr(), ctr.len())) {
        // SAFETY: `flat_rows` found AVX-512F and rows of 16 channels or more.
        return unsafe { crate::flat_rows::rows_grad_combine::<true>(x, dy, dx, ctr, a, b, d) };
    }
    #[cfg(target_arch = "x86_64")]
    if !nt {
        use crate::flat_rows::{cached_rows, Width};
        match cached_rows(ctr.len()) {
            // SAFETY: `cached_rows` found AVX-512F and rows of 16 channels or more.
            Some(Width::W16) => return unsafe { crate::flat_rows::rows_grad_combine::<false>(x, dy, dx, ctr, a, b, d) },
            // SAFETY: `cached_rows` found AVX2 and rows of 8 channels or more.
            Some(Width::W8) => return unsafe { crate::flat_rows::rows_grad_combine_8(x, dy, dx, ctr, a, b, d) },
            None => {}
        }
    }
    #[cfg(target_arch = "x86_64")]
    if nt && rows_stream(dx.as_ptr(), ctr.len()) && has_avx2() {
        let (c, q) = (ctr.len(), (ctr, a, b, d));
        // SAFETY: the CPU has AVX-512F where `rows_side_by_side` says so.
        let done = if rows_side_by_side(c) { unsafe { x86::rows_grad_combine_parts_512(x, dy, dx, q, il) * c } } else { 0 };
        let (x, dy, dx) = (&x[done..], &dy[done..], &mut dx[done..]);
        // SAFETY: the CPU has AVX2 (and AVX-512F where `rows_in_registers` says so).
        return unsafe {
            match rows_in_registers(c) {
                Some(1) => x86::rows_grad_combine_512::<1>(x, dy, dx, q),
                Some(2) => x86::rows_grad_combine_512::<2>(x, dy, dx, q),
                Some(3) => x86::rows_grad_combine_512::<3>(x, dy, dx, q),
                Some(_) => x86::rows_grad_combine_512::<4>(x, dy, dx, q),
                None => x86::rows_grad_combine_nt(x, dy, dx, ctr, a, b, d),
            }
        };
    }
    let _ = (nt, il);
    rows_grad_combine(x, dy, dx, ctr, a, b, d)
}

/// Whether a pass over channels-first runs of `inner` values, streamed (`nt`), writes them
/// as one flat stream across run boundaries: runs shorter than [`STREAM_MIN_RUN`] (which
/// are not streamed one by one) of at least 16 values, on a CPU with AVX-512. Runs follow
/// each other in memory and only their constants change, so the whole task's range is
/// written in whole cache lines, a vector that straddles two runs blending the two
/// channels' constants. Such runs were written with ordinary stores, each line read before
/// it was written. Measured as `bnlab bench` times (fresh `Vec`s per shape, medians of 15
/// calls; medians of 6 alternating rounds, ms, 1 thread): NCHW 128x256x14x14 forward 2.55
/// -> 2.33, eval 1.47 -> 1.42; NCHW 256x512x7x7 2.90 -> 2.62, 1.61 -> 1.50; 2 threads 1.68
/// -> 1.69, 1.02 -> 1.05 and 1.84 -> 1.68, 1.10 -> 1.04.
///
/// Not for the dx pass, which streams from 11 MB: there it lost in the same harness
/// (forward + backward, 1 thread, six sets with `dx` at four offsets: NCHW 64x256x14x14
/// 3.47-3.70 -> 3.62-3.89 ms, slower in five; 128x512x7x7 3.56-3.79 -> 3.82-4.13, slower in
/// all; the 25.7 MB shapes even) although it won by 8-12% where the tensors were allocated
/// once and kept (3.75-3.85 -> 3.33-3.48), or never freed (2.95-3.01 -> 2.68-2.71): with its
/// four tensors the backward depends on where the pages land, and a training step allocates
/// afresh.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn runs_stream(inner: usize, nt: bool) -> bool {
    nt && (16..STREAM_MIN_RUN).contains(&inner) && has_avx512()
}

/// Channel-first runs shorter than this whose output stays in cache go as one run of
/// 16-lane vectors across their boundaries too (see [`cached_runs`]).
///
/// Run by run, the compiler's loop pays for each run's start and its vector tail (a run
/// of 49 is three vectors and one value). Measured (`bnlab bench --shapes`, both builds
/// alternating, 4 runs of 3 rounds, medians, ms at 1 / 2 threads, run by run -> one run;
/// the normalising pass alone): NCHW 64x128x7x7 eval 0.052 -> 0.040 / 0.039 -> 0.032,
/// forward 0.093 -> 0.082 / 0.069 -> 0.060; NCHW 64x64x4x4 eval 0.014 -> 0.007 / 0.011 ->
/// 0.008; NCL 64x128x50 eval 0.049 -> 0.040 / 0.037 -> 0.031; NCHW 128x512x7x7 (12.8 MB)
/// eval 0.709 -> 0.599 / 0.380 -> 0.377, forward 1.103 -> 0.970 / 0.705 -> 0.616; runs of
/// 196 alike either way (NCHW 32x64x14x14 eval 0.037 -> 0.036 / 0.028 -> 0.027); runs of
/// 784 and more were as fast run by run already (NCHW 32x32x28x28 at 92% of the floor).
/// With the dx pass of the backward so too (the same harness, forward + backward, from
/// before either pass went this way): NCHW 64x128x7x7 0.216 -> 0.197 ms at 1 thread, NCHW
/// 64x64x4x4 0.064 -> 0.054 / 0.058 -> 0.053, NCL 64x128x50 0.217 -> 0.199 / 0.166 ->
/// 0.145; the 12.8 MB shapes moved with the machine's noise (NCHW 32x128x28x28, whose runs
/// of 784 neither change reaches, 0.91x the time at 1 thread and 1.31x at 2 in that set).
const CACHED_RUN_MAX: usize = 256;

/// Whether a pass over channels-first runs of `inner` values whose output is not streamed
/// goes as one run across the run boundaries ([`CACHED_RUN_MAX`]), on a CPU with AVX-512.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
pub(crate) fn cached_runs(inner: usize) -> bool {
    (16..CACHED_RUN_MAX).contains(&inner) && has_avx512()
}

/// Channels-first runs of `inner` values, run `j` of channel `(ch0 + j) % C`: `dx = dy *
/// a + ((x - ctr) * b + d)` with that channel's `q = [ctr, a, b, d]`, with ordinary stores
/// as one run across the run boundaries, where [`cached_runs`] says.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn runs_grad_combine_cached(x: &[f32], dy: &[f32], dx: &mut [f32], inner: usize, ch0: usize, q: [&[f32]; 4]) {
    assert!(cached_runs(inner), "runs_grad_combine_cached: runs of {inner} on this CPU");
    // SAFETY: the CPU has AVX-512F (`cached_runs`); the runs stay within `x`, `dy` and `dx`.
    unsafe { x86::runs_grad_combine_512(x, dy, dx, inner, ch0, q) }
}

/// Channels-first runs of `inner` values, run `j` of channel `(first + j) % C`: `y = (x -
/// ctr) * s + t` with that channel's constants; streamed when `nt`, as one flat stream where
/// the runs are short ([`runs_stream`], and [`cached_runs`] with ordinary stores), else run
/// by run ([`affine_out`]). `x` and `y` start
/// at the first run; the caller issues [`store_fence`] when `nt`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn runs_affine_out(x: &[f32], y: &mut [f32], first: usize, inner: usize, ctr: &[f32], s: &[f32], t: &[f32], nt: bool) {
    let c = ctr.len();
    #[cfg(target_arch = "x86_64")]
    if runs_stream(inner, nt) {
        // SAFETY: the CPU has AVX-512F; the runs stay within `x` and `y`.
        return unsafe { x86::runs_affine_512::<true>(x, y, inner, first % c, ctr, s, t) };
    }
    #[cfg(target_arch = "x86_64")]
    if !nt && cached_runs(inner) {
        // SAFETY: the CPU has AVX-512F; the runs stay within `x` and `y`.
        return unsafe { x86::runs_affine_512::<false>(x, y, inner, first % c, ctr, s, t) };
    }
    for (j, ys) in y.chunks_exact_mut(inner).enumerate() {
        let ch = (first + j) % c;
        affine_out(&x[j * inner..(j + 1) * inner], ys, ctr[ch], s[ch], t[ch], nt);
    }
}

/// One row segment of [`rows_grad_combine_out`] (then [`store_fence`] if streamed).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn row_grad_combine_out(xr: &[f32], gr: &[f32], o: &mut [f32], ctr: &[f32], a: &[f32], b: &[f32], d: &[f32], nt: bool) {
    #[cfg(target_arch = "x86_64")]
    if nt && rows_stream(o.as_ptr(), ctr.len()) && has_avx2() {
        // SAFETY: the CPU has AVX2.
        return unsafe { x86::row_grad_combine_nt(xr, gr, o, (ctr, a, b, d), x86::trails(o.as_ptr(), [xr.as_ptr(), gr.as_ptr()])) };
    }
    let _ = nt;
    let c = ctr.len();
    rows_grad_combine(&xr[..c], &gr[..c], &mut o[..c], ctr, a, b, d)
}

/// Orders the streaming stores made so far before later stores (nothing elsewhere).
#[inline(always)]
pub(crate) fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    x86::store_fence();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constants take the input's offset within a line exactly where the pass goes as
    /// one cached run over rows of whole vectors, and start on a line everywhere else.
    #[test]
    fn constants_skew_follows_the_one_cached_run() {
        use crate::layout::{Dims, Layout};
        let (w16, w8) = (has_avx512(), !has_avx512() && has_avx2_fma());
        let buf = vec![0.0f32; 64];
        // (layout, shape, whether the one cached run takes it with 16 lanes, with 8 lanes)
        let cases = [
            (Layout::Nc, vec![4096, 256], true, false),
            (Layout::Nc, vec![256, 1024], true, false),
            (Layout::Nhwc, vec![8, 7, 7, 64], true, true),
            (Layout::Nc, vec![512, 24], false, true),
            (Layout::Nc, vec![512, 12], false, false),
            (Layout::Nc, vec![512, 100], false, false),
            (Layout::Nc, vec![256, 2048], false, false),
            (Layout::Nc, vec![64, 4096], false, false),
            (Layout::Nchw, vec![8, 64, 7, 7], false, false),
        ];
        for off in [0, 1, 4, 15] {
            let out = buf[off..].as_ptr();
            let at = out as usize % 64;
            for (layout, shape, by16, by8) in &cases {
                let d = Dims::new(*layout, shape).unwrap();
                let want = if (w16 && *by16) || (w8 && *by8) { at } else { 0 };
                assert_eq!(constants_skew(d, false, out), want, "{layout:?} {shape:?}, input {at} bytes past a line");
                assert_eq!(constants_skew(d, true, out), 0, "{layout:?} {shape:?} streamed: the streamed passes keep their own constants");
            }
        }
    }

    /// The vector reductions add lane by lane exactly as the portable definition does:
    /// lane `i` takes elements `i, i + 8, ...` (`i + 16, ...` for the statistics in wide
    /// lanes) in order, squares and products added by one fused multiply-add.
    #[test]
    fn slice_reductions_equal_lane_by_lane_definition() {
        for n in [0, 1, 7, 8, 9, 16, 31, 100, 1027] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0).collect();
            let dy: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 * 0.01 - 5.0).collect();
            let k = -3.25;
            let (mut w1, mut w2, mut g1, mut g2) = ([0.5f64; LANES], [0.25f64; LANES], [0.5f64; LANES], [0.25f64; LANES]);
            for (i, (&v, &g)) in x.iter().zip(&dy).enumerate() {
                let (l, d, g) = (i % LANES, v as f64 - k, g as f64);
                w1[l] += d;
                w2[l] = d.mul_add(d, w2[l]);
                g1[l] += g;
                g2[l] = g.mul_add(d, g2[l]);
            }
            let (mut a1, mut a2) = ([0.5f64; LANES], [0.25f64; LANES]);
            acc_shifted(&x, k, &mut a1, &mut a2);
            assert_eq!((a1, a2), (w1, w2), "acc_shifted, {n} values");
            let (mut v1, mut v2) = ([0.5f64; WIDE_LANES], [0.25f64; WIDE_LANES]);
            for (i, &v) in x.iter().enumerate() {
                let d = v as f64 - k;
                v1[i % WIDE_LANES] += d;
                v2[i % WIDE_LANES] = d.mul_add(d, v2[i % WIDE_LANES]);
            }
            let (mut a1, mut a2) = ([0.5f64; WIDE_LANES], [0.25f64; WIDE_LANES]);
            acc_shifted(&x, k, &mut a1, &mut a2);
            assert_eq!((a1, a2), (v1, v2), "acc_shifted in wide lanes, {n} values");
            let (mut a1, mut a2) = ([0.5f64; LANES], [0.25f64; LANES]);
            acc_grad(&x, &dy, k, &mut a1, &mut a2);
            assert_eq!((a1, a2), (g1, g2), "acc_grad, {n} values");
            let (mut v1, mut v2) = ([0.5f64; WIDE_LANES], [0.25f64; WIDE_LANES]);
            for (i, (&v, &g)) in x.iter().zip(&dy).enumerate() {
                let (d, g) = (v as f64 - k, g as f64);
                v1[i % WIDE_LANES] += g;
                v2[i % WIDE_LANES] = g.mul_add(d, v2[i % WIDE_LANES]);
            }
            let (mut a1, mut a2) = ([0.5f64; WIDE_LANES], [0.25f64; WIDE_LANES]);
            acc_grad(&x, &dy, k, &mut a1, &mut a2);
            assert_eq!((a1, a2), (v1, v2), "acc_grad in wide lanes, {n} values");
        }
    }

    /// The run reductions follow their definition bit for bit: runs of [`LONG_RUN`] values
    /// and more each summed from zero in 16 lanes, then [`lane_sum`], and added on its own;
    /// shorter runs per channel and [`run_items`] batch items, the whole chunks of 8 of those
    /// runs in 8 lanes and the rest in order, run after run, then one addition each. Every
    /// tail length of both lane counts, batch items above and below the span that takes
    /// [`RUN_ITEMS`] at a time, even and odd channel counts (the vector kernels take two
    /// channels or two runs side by side), a last group of fewer items, sums that start
    /// non-zero; the vector kernels and the portable loops.
    #[test]
    fn run_kernels_equal_their_definition() {
        let lengths: Vec<usize> = (1..=40).chain([49, 127, 128, 129, 136, 143, 144, 196, 200]).collect();
        for (c, inners) in
            [(1usize, &lengths[..]), (2, &lengths), (3, &lengths), (9, &lengths), (131, &[3, 31, 32, 33, 49, 127, 128][..]), (4096, &[1, 2, 7][..])]
        {
            let k: Vec<f64> = (0..c).map(|ch| [0.75, -3.25, 120.0][ch % 3] + ch as f64).collect();
            for &inner in inners {
                let span = c * inner;
                let n = span * (RUN_ITEMS + 2);
                // Magnitudes from 2^-30 to 2^38, so that float64 sums round and their order shows.
                let x: Vec<f32> = (0..n).map(|i| (((i * 7919) % 1013) as f32 * 0.37 - 150.0) * 2f32.powi((i * 13 % 61) as i32 - 30)).collect();
                let dy: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 * 0.01 - 5.0).collect();
                let (mut w1, mut w2, mut g1, mut g2) = (vec![0.5; c], vec![0.25; c], vec![0.5; c], vec![0.25; c]);
                let (wide, full) = if inner >= LONG_RUN { (WIDE_LANES, inner) } else { (LANES, inner - inner % LANES) };
                let sum = |l: &[f64; WIDE_LANES]| if wide == LANES { lane_sum(&<[f64; LANES]>::try_from(&l[..LANES]).unwrap()) } else { lane_sum(l) };
                let items = if inner < LONG_RUN && span >= 4096 { RUN_ITEMS } else { 1 };
                assert_eq!(run_items(c, inner), items);
                for first in (0..n).step_by(items * span) {
                    for ch in 0..c {
                        // [x - k lanes, (x - k)^2 lanes, dy lanes, dy (x - k) lanes], and the tails.
                        let mut l = [[0.0f64; WIDE_LANES]; 4];
                        let mut t = [0.0f64; 4];
                        for at in (first + ch * inner..(first + items * span).min(n)).step_by(span) {
                            for j in 0..inner {
                                let (d, g) = (x[at + j] as f64 - k[ch], dy[at + j] as f64);
                                if j < full {
                                    l[0][j % wide] += d;
                                    l[1][j % wide] = d.mul_add(d, l[1][j % wide]);
                                    l[2][j % wide] += g;
                                    l[3][j % wide] = g.mul_add(d, l[3][j % wide]);
                                } else {
                                    t[0] += d;
                                    t[1] = d.mul_add(d, t[1]);
                                    t[2] += g;
                                    t[3] = g.mul_add(d, t[3]);
                                }
                            }
                            if inner >= LONG_RUN {
                                w1[ch] += sum(&l[0]);
                                w2[ch] += sum(&l[1]);
                                g1[ch] += sum(&l[2]);
                                g2[ch] += sum(&l[3]);
                                l = [[0.0f64; WIDE_LANES]; 4];
                            }
                        }
                        if inner < LONG_RUN {
                            w1[ch] += sum(&l[0]) + t[0];
                            w2[ch] += sum(&l[1]) + t[1];
                            g1[ch] += sum(&l[2]) + t[2];
                            g2[ch] += sum(&l[3]) + t[3];
                        }
                    }
                }
                let what = |who: &str| format!("{who}, {c} channels, runs of {inner}");
                let check = |who: &str, f: &dyn Fn(&mut [f64], &mut [f64]), want: (&Vec<f64>, &Vec<f64>)| {
                    let (mut a1, mut a2) = (vec![0.5; c], vec![0.25; c]);
                    f(&mut a1, &mut a2);
                    assert_eq!((&a1, &a2), want, "{}", what(who));
                };
                check("runs_shifted", &|a1, a2| runs_shifted(&x, inner, &k, a1, a2), (&w1, &w2));
                check("runs_grad", &|a1, a2| runs_grad(&x, &dy, inner, &k, a1, a2), (&g1, &g2));
                // The portable loops, which the vector kernels replace where the CPU has AVX2.
                check("portable statistics", &|a1, a2| runs_each(&x, None, inner, &k, a1, a2), (&w1, &w2));
                check("portable gradient sums", &|a1, a2| runs_each(&x, Some(&dy), inner, &k, a1, a2), (&g1, &g2));
            }
        }
    }

    /// The streamed passes write every element exactly as the portable loops do, whatever
    /// the output's alignment and length (16-, 32- and 64-byte heads and tails, short runs,
    /// rows of 16 to 64 channels in registers).
    #[test]
    fn streamed_passes_equal_the_portable_loops() {
        let n = 4200;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0).collect();
        let dy: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 * 0.01 - 5.0).collect();
        let coef = |k: f32| -> Vec<f32> { (0..n).map(|j| k + j as f32 * 1e-3).collect() };
        let (ctr, s, t, d) = (coef(0.5), coef(1.5), coef(-0.25), coef(2.0));
        let mut buf = vec![0.0f32; n + 16];
        // Offsets 0..16 floats: every 16-, 32- and 64-byte head.
        for off in 0..16 {
            for len in [0, 1, 3, 4, 7, 8, 9, 12, 15, 16, 20, 24, 31, 1024, 1027, 1030, 4096, 4100] {
                let (xs, gs) = (&x[..len], &dy[..len]);
                let mut want = vec![0.0f32; len];
                affine(xs, &mut want, 0.5, 1.5, -0.25);
                let y = &mut buf[off..off + len];
                affine_out(xs, y, 0.5, 1.5, -0.25, true);
                store_fence();
                assert_eq!(y, &want[..], "affine, offset {off}, length {len}");
                grad_combine(xs, gs, &mut want, 0.5, 1.5, -0.25, 2.0);
                let y = &mut buf[off..off + len];
                grad_combine_out(xs, gs, y, (0.5, 1.5, -0.25, 2.0), true);
                store_fence();
                assert_eq!(y, &want[..], "grad_combine, offset {off}, length {len}");
                if len % 8 == 0 && len > 0 {
                    for c in [8, 16, 24, 32, 48, 64, len] {
                        if len % c != 0 {
                            continue;
                        }
                        rows_affine(xs, &mut want, &ctr[..c], &s[..c], &t[..c]);
                        let y = &mut buf[off..off + len];
                        rows_affine_out(xs, y, &ctr[..c], &s[..c], &t[..c], None, true);
                        assert_eq!(y, &want[..], "rows_affine, offset {off}, {len} values in rows of {c}");
                        rows_grad_combine(xs, gs, &mut want, &ctr[..c], &s[..c], &t[..c], &d[..c]);
                        let y = &mut buf[off..off + len];
                        rows_grad_combine_out(xs, gs, y, &ctr[..c], &s[..c], &t[..c], &d[..c], None, true);
                        assert_eq!(y, &want[..], "rows_grad_combine, offset {off}, {len} values in rows of {c}");
                    }
                }
            }
        }
    }

    /// Rows written side by side (runs of whole rows in lock step) equal the portable loops
    /// for rows of 16 to 64 channels (constants held in registers) and wider (constants
    /// loaded, one vector crossing each row's end, or interleaved; eight runs from 2048
    /// channels), row counts that leave a remainder after the runs, and every 64-byte head.
    #[test]
    fn rows_side_by_side_equal_the_portable_loops() {
        let n = 2048 * 19;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0).collect();
        let dy: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 * 0.01 - 5.0).collect();
        let coef = |k: f32| -> Vec<f32> { (0..2048).map(|j| k + j as f32 * 1e-4).collect() };
        let (ctr, s, t, d) = (coef(0.5), coef(1.5), coef(-0.25), coef(2.0));
        let mut buf = vec![0.0f32; n + 16];
        for c in [16, 32, 48, 64, 80, 144, 1024, 2048] {
            for rows in [4, 5, 7, 8, 13, 17, 67, n / c] {
                let len = rows * c;
                if len > n {
                    continue;
                }
                let (xs, gs) = (&x[..len], &dy[..len]);
                let q = (&ctr[..c], &s[..c], &t[..c], &d[..c]);
                let (mut want_y, mut want_dx) = (vec![0.0f32; len], vec![0.0f32; len]);
                rows_affine(xs, &mut want_y, q.0, q.1, q.2);
                rows_grad_combine(xs, gs, &mut want_dx, q.0, q.1, q.2, q.3);
                let (mut il3, mut il4) = (vec![f32::NAN; 3 * c], vec![f32::NAN; 4 * c]);
                for off in 0..16 {
                    let y = &mut buf[off..off + len];
                    // The constants from the arrays, and (where the pass loads them) from
                    // their interleaved copy for this output, and from one made for another
                    // head (which the pass must not use).
                    let yp = y.as_ptr();
                    let other = yp.wrapping_add(1 + (off % 3));
                    let ils = [None, Some(yp), Some(other)];
                    for (k, il_for) in ils.into_iter().enumerate() {
                        if k > 0 && !parts_load_constants(c) {
                            continue;
                        }
                        let il = il_for.map(|p| crate::interleave::interleave([q.0, q.1, q.2], p, &mut il3));
                        y.fill(f32::NAN);
                        rows_affine_out(xs, y, q.0, q.1, q.2, il, true);
                        assert_eq!(y, &want_y[..], "rows_affine, {rows} rows of {c}, offset {off}, constants {k}");
                        let il = il_for.map(|p| crate::interleave::interleave([q.0, q.1, q.2, q.3], p, &mut il4));
                        y.fill(f32::NAN);
                        rows_grad_combine_out(xs, gs, y, q.0, q.1, q.2, q.3, il, true);
                        assert_eq!(y, &want_dx[..], "rows_grad_combine, {rows} rows of {c}, offset {off}, constants {k}");
                    }
                }
            }
        }
    }

    /// Channels-first runs normalised as one run across run boundaries (streamed, and cached
    /// where [`cached_runs`] says; the dx pass cached) equal the portable loop run by run,
    /// bit for bit, for runs of 16 values up (a vector meets a boundary at every lane
    /// position), first channels that wrap around, every 64-byte head, and chunks of one run
    /// to many.
    #[test]
    fn runs_across_boundaries_equal_the_portable_loops() {
        let n = 6000;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0).collect();
        let dy: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 * 0.01 - 5.0).collect();
        let c = 7;
        let coef = |k: f32| -> Vec<f32> { (0..c).map(|j| k + j as f32 * 0.125).collect() };
        let (ctr, s, t, d) = (coef(0.5), coef(1.5), coef(-0.25), coef(2.0));
        let same = |got: &[f32], want: &[f32]| got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
        let mut buf = vec![0.0f32; n + 16];
        for inner in [16, 17, 23, 31, 49, 196, 255, 256, 1000] {
            for first in [0, 3, 6, 13] {
                for runs in [1, 2, 5, 5999 / inner] {
                    let len = runs * inner;
                    let (xs, gs) = (&x[..len], &dy[..len]);
                    let (mut want, mut want_dx) = (vec![0.0f32; len], vec![0.0f32; len]);
                    for j in 0..runs {
                        let (ch, r) = ((first + j) % c, j * inner..(j + 1) * inner);
                        affine(&xs[r.clone()], &mut want[r.clone()], ctr[ch], s[ch], t[ch]);
                        grad_combine(&xs[r.clone()], &gs[r.clone()], &mut want_dx[r], ctr[ch], s[ch], t[ch], d[ch]);
                    }
                    for off in [0, 1, 4, 15] {
                        let out = off..off + len;
                        for nt in [true, false] {
                            buf.fill(f32::NAN);
                            runs_affine_out(xs, &mut buf[out.clone()], first, inner, &ctr, &s, &t, nt);
                            store_fence();
                            assert!(same(&buf[out.clone()], &want), "{runs} runs of {inner} from channel {first}, offset {off}, streamed {nt}");
                        }
                        #[cfg(target_arch = "x86_64")]
                        if cached_runs(inner) {
                            buf.fill(f32::NAN);
                            runs_grad_combine_cached(xs, gs, &mut buf[out.clone()], inner, first % c, [&ctr, &s, &t, &d]);
                            assert!(same(&buf[out.clone()], &want_dx), "dx: {runs} runs of {inner} from channel {first}, offset {off}");
                        }
                    }
                }
            }
        }
    }

    /// The loads-ahead loops run when the output trails an input by 1-64 bytes modulo 4 KB:
    /// `x` and `y` are cut from one buffer so that `y` starts 4-64 bytes (and, as controls, 0
    /// and 68) above `x`, and every streamed pass must still equal its portable loop.
    #[test]
    fn streamed_passes_with_a_trailing_output_equal_the_portable_loops() {
        #[cfg(target_arch = "x86_64")]
        assert!(x86::trails(4100 as *const f32, [4096 as *const f32]) && !x86::trails(4096 as *const f32, [4096 as *const f32]));
        let n: usize = 3 * 4104;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0).collect();
        let dy: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 * 0.01 - 5.0).collect();
        let coef = |k: f32| -> Vec<f32> { (0..4104).map(|j| k + j as f32 * 1e-3).collect() };
        let (ctr, s, t, d) = (coef(0.5), coef(1.5), coef(-0.25), coef(2.0));
        let base = n.next_multiple_of(1024);
        let mut buf = vec![0.0f32; 2 * base + 1024];
        let (xb, rest) = buf.split_at_mut(base);
        // `y - x` is `4 * (base + off)` bytes: `4 * off` modulo 4 KB.
        let (xb, rest) = (&mut xb[..n], &mut rest[..base + 1024]);
        xb.copy_from_slice(&x);
        let xs: &[f32] = xb;
        let mut want = vec![0.0f32; n];
        for off in [0, 1, 4, 12, 16, 17] {
            for len in [32, 40, 100, 4096, n] {
                let (xs, gs) = (&xs[..len], &dy[..len]);
                let y = &mut rest[off..off + len];
                affine(xs, &mut want[..len], 0.5, 1.5, -0.25);
                affine_out(xs, y, 0.5, 1.5, -0.25, true);
                store_fence();
                assert_eq!(y, &want[..len], "affine, y {} bytes above x, length {len}", 4 * off);
                grad_combine(xs, gs, &mut want[..len], 0.5, 1.5, -0.25, 2.0);
                grad_combine_out(xs, gs, y, (0.5, 1.5, -0.25, 2.0), true);
                store_fence();
                assert_eq!(y, &want[..len], "grad_combine, y {} bytes above x, length {len}", 4 * off);
            }
            for c in [16, 32, 48, 64, 40, 2048, 4104] {
                let len = n / c * c;
                let (xs, gs, w) = (&xs[..len], &dy[..len], &mut want[..len]);
                let q = (&ctr[..c], &s[..c], &t[..c], &d[..c]);
                let y = &mut rest[off..off + len];
                rows_affine(xs, w, q.0, q.1, q.2);
                rows_affine_out(xs, y, q.0, q.1, q.2, None, true);
                assert_eq!(y, &w[..], "rows_affine, rows of {c}, y {} bytes above x", 4 * off);
                rows_grad_combine(xs, gs, w, q.0, q.1, q.2, q.3);
                rows_grad_combine_out(xs, gs, y, q.0, q.1, q.2, q.3, None, true);
                assert_eq!(y, &w[..], "rows_grad_combine, rows of {c}, y {} bytes above x", 4 * off);
            }
        }
    }

    /// The cached one-run passes go from the end where the output sits 33-320 bytes above
    /// an input modulo 4 KB (`output_trails`): `x` and `y` cut from one buffer so that `y`
    /// starts 0-324 bytes above `x` (`dy` beside them as the backward places it), and every
    /// cached pass over rows and over channels-first runs must still equal its portable loop.
    #[test]
    fn cached_passes_with_a_trailing_output_equal_the_portable_loops() {
        #[cfg(target_arch = "x86_64")]
        {
            let at = |b: usize| (4096 + b) as *const f32;
            assert!(output_trails(at(48), [at(0)]) && output_trails(at(320), [at(0)]) && output_trails(at(48), [at(100), at(0)]));
            assert!(!output_trails(at(32), [at(0)]) && !output_trails(at(324), [at(0)]) && !output_trails(at(0), [at(48)]));
        }
        let n: usize = 1024 * 12;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0).collect();
        let dy: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 * 0.01 - 5.0).collect();
        let coef = |k: f32| -> Vec<f32> { (0..1024).map(|j| k + j as f32 * 1e-3).collect() };
        let (ctr, s, t, d) = (coef(0.5), coef(1.5), coef(-0.25), coef(2.0));
        let same = |got: &[f32], want: &[f32]| got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
        let base = n.next_multiple_of(1024);
        let mut buf = vec![0.0f32; 3 * base + 1024];
        let (xb, rest) = buf.split_at_mut(base);
        let (gb, rest) = rest.split_at_mut(base);
        xb[..n].copy_from_slice(&x);
        gb[..n].copy_from_slice(&dy);
        let (xs, gs): (&[f32], &[f32]) = (&xb[..n], &gb[..n]);
        let mut want = vec![0.0f32; n];
        // `y - x` is `4 * (2 * base + off)` bytes: `4 * off` modulo 4 KB (and `y - dy` the same).
        for off in [0, 4, 12, 16, 40, 80, 81] {
            for c in [16, 24, 100, 256, 1024] {
                let len = n / c * c;
                let (xs, gs, w) = (&xs[..len], &gs[..len], &mut want[..len]);
                let q = (&ctr[..c], &s[..c], &t[..c], &d[..c]);
                let y = &mut rest[off..off + len];
                rows_affine(xs, w, q.0, q.1, q.2);
                rows_affine_out(xs, y, q.0, q.1, q.2, None, false);
                assert!(same(y, w), "rows_affine, rows of {c}, y {} bytes above x", 4 * off);
                rows_grad_combine(xs, gs, w, q.0, q.1, q.2, q.3);
                rows_grad_combine_out(xs, gs, y, q.0, q.1, q.2, q.3, None, false);
                assert!(same(y, w), "rows_grad_combine, rows of {c}, y {} bytes above x", 4 * off);
            }
            for inner in [16, 49, 196] {
                let (c, first) = (7, 3);
                let len = n / inner * inner;
                let (xs, w) = (&xs[..len], &mut want[..len]);
                let y = &mut rest[off..off + len];
                for j in 0..len / inner {
                    let (ch, r) = ((first + j) % c, j * inner..(j + 1) * inner);
                    affine(&xs[r.clone()], &mut w[r], ctr[ch], s[ch], t[ch]);
                }
                runs_affine_out(xs, y, first, inner, &ctr[..c], &s[..c], &t[..c], false);
                assert!(same(y, w), "runs of {inner}, y {} bytes above x", 4 * off);
                #[cfg(target_arch = "x86_64")]
                if cached_runs(inner) {
                    let gs = &gs[..len];
                    for j in 0..len / inner {
                        let (ch, r) = ((first + j) % c, j * inner..(j + 1) * inner);
                        grad_combine(&xs[r.clone()], &gs[r.clone()], &mut w[r], ctr[ch], s[ch], t[ch], d[ch]);
                    }
                    runs_grad_combine_cached(xs, gs, y, inner, first, [&ctr[..c], &s[..c], &t[..c], &d[..c]]);
                    assert!(same(y, w), "dx: runs of {inner}, y {} bytes above x", 4 * off);
                }
            }
        }
    }

    /// Streamed rows of 2048 channels and more go in strips over groups of rows: every value,
    /// whatever the remainders of channels per strip and rows per group. Widths of whole
    /// 8-value vectors and offsets of whole 16 bytes, so that the streamed path runs.
    #[test]
    fn wide_streamed_rows_equal_the_portable_loops() {
        for c in [2048, 2088, 4104] {
            for rows in [1, 3, 4, 5, 9, 13] {
                let n = rows * c;
                let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0).collect();
                let dy: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 * 0.01 - 5.0).collect();
                let coef = |k: f32| -> Vec<f32> { (0..c).map(|j| k + j as f32 * 1e-3).collect() };
                let (ctr, s, t, d) = (coef(0.5), coef(1.5), coef(-0.25), coef(2.0));
                let mut want = vec![0.0f32; n];
                let mut buf = vec![f32::NAN; n + 4];
                for off in [0, 4] {
                    rows_affine(&x, &mut want, &ctr, &s, &t);
                    let y = &mut buf[off..off + n];
                    y.fill(f32::NAN);
                    rows_affine_out(&x, y, &ctr, &s, &t, None, true);
                    assert_eq!(y, &want[..], "rows_affine, {rows} rows of {c}, offset {off}");
                    rows_grad_combine(&x, &dy, &mut want, &ctr, &s, &t, &d);
                    let y = &mut buf[off..off + n];
                    y.fill(f32::NAN);
                    rows_grad_combine_out(&x, &dy, y, &ctr, &s, &t, &d, None, true);
                    assert_eq!(y, &want[..], "rows_grad_combine, {rows} rows of {c}, offset {off}");
                }
            }
        }
    }
}
