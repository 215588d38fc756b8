//! The fastest a batch-norm operation on a given tensor could run on this machine, measured
//! in the same run as the kernels (so the floor and the timing see the same neighbours).
//!
//! Each operation is replayed as its skeleton: the passes over memory it cannot avoid, in
//! its order, over tensors of its size, at the pool's thread count; so every pass finds the
//! caches as the real one does. The passes are the statistics' float64 arithmetic over `x`
//! (S1: `d = x - k`, `s1 += d`, `s2 += d * d`, each thread reading its part as four streams
//! side by side, into lanes that hold no channel), `y = x` (W1), the gradient sums'
//! float64 arithmetic over `x` beside `dy` (S2: `s1 += dy`, `s2 += dy * (x - k)`) and `dx =
//! x + dy` (W2, into a buffer of its own, as the step writes `y` and `dx` apart), each with
//! ordinary and with streaming stores (the faster skeleton counts). The reads carry the
//! arithmetic because on this machine the two do not overlap completely even in that
//! simplest loop (see `stats_streams`); they were float32 sums, with the arithmetic timed
//! apart and assumed free under the read. Separately, the same arithmetic on data in the L2
//! cache, all threads at once, gives the time `A` exact statistics take even when memory is
//! free, and the same timing of the gradient sums ([`batchnorm::param_grads_into`]) the
//! time `G` of theirs. Then:
//!
//! - eval: W1 (read `x`, write `y`).
//! - training forward: every value must be read before the first output is written (the
//!   statistics come first): `max(S1, A) + W1`; when the kernels take the shape channel by
//!   channel ([`batchnorm::reads_once`]) the second read comes from cache and overlaps the
//!   next channel's first: `max(W1, A)`.
//! - training forward + backward: that, then `max(S2, G) + W2` (channel by channel
//!   `max(W2, G)`).
//!
//! The floor leaves out the arithmetic of the output passes and the per-channel work, so
//! no kernel can beat it by more than noise; `PyTorch ms / floor ms` is the largest speedup
//! any exact float64-accumulating kernel could show on that entry.

use crate::bench::{median, middle};
use batchnorm::{batch_moments_into, param_grads_into, reads_once, Dims, Layout, Moments, SavedStats, Workspace};
use rayon::prelude::*;
use std::time::Instant;

/// A pass of an operation's skeleton.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The statistics' float64 arithmetic over `x` ([`stats_streams`]).
    S1,
    /// `y = x`.
    W1,
    /// The gradient sums' float64 arithmetic over `x` and `dy` ([`grad_streams`]).
    S2,
    /// `dx = x + dy`.
    W2,
}

/// Values per thread of the arithmetic measurement: 256 KB, in L2 and out of L1.
const ARITH_BLOCK: usize = 1 << 16;

/// The tensors a skeleton runs over, cut into one chunk per thread.
struct Tensors {
    x: Vec<f32>,
    dy: Vec<f32>,
    /// `y`, written by W1.
    out: Vec<f32>,
    /// `dx`, written by W2: a buffer of its own, as the training step's (with the forward's
    /// `y` and both inputs, four tensors compete for the cache, not three).
    grad: Vec<f32>,
    chunk: usize,
}

impl Tensors {
    fn run(&mut self, p: Pass, stream: bool) {
        let (x, dy, c) = (&self.x, &self.dy, self.chunk);
        match p {
            Pass::S1 => {
                std::hint::black_box(x.par_chunks(c).map(|a| stats_streams(&quarters(a))).sum::<f64>());
            }
            Pass::S2 => {
                std::hint::black_box(x.par_chunks(c).zip(dy.par_chunks(c)).map(|(a, b)| grad_streams(a, b)).sum::<f64>());
            }
            Pass::W1 => self.out.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(o, a)| add(a, None, o, stream)),
            Pass::W2 => self.grad.par_chunks_mut(c).zip(x.par_chunks(c)).zip(dy.par_chunks(c)).for_each(|((o, a), b)| add(a, Some(b), o, stream)),
        }
    }

    /// Median seconds of each pass of `passes`, run in order `reps` times (after one
    /// warm-up round), with ordinary or streaming stores.
    fn skeleton(&mut self, passes: &[Pass], stream: bool, reps: usize) -> Vec<f64> {
        let mut t = vec![Vec::with_capacity(reps); passes.len()];
        for r in 0..=reps {
            for (i, &p) in passes.iter().enumerate() {
                let s = Instant::now();
                self.run(p, stream);
                if r > 0 {
                    t[i].push(s.elapsed().as_secs_f64());
                }
            }
        }
        t.into_iter().map(middle).collect()
    }
}

/// Seconds of the float64 arithmetic over `n` values at the pool's thread count: of the
/// statistics, or with `grad` of the gradient sums.
fn arithmetic(n: usize, reps: usize, grad: bool) -> f64 {
    let threads = rayon::current_num_threads();
    // Every thread sums its own block over and over, all at once (two logical CPUs may
    // share one core's arithmetic units).
    let calls = n.div_ceil(ARITH_BLOCK * threads).max(1);
    let block = Dims::new(Layout::Nchw, &[1, 1, 64, ARITH_BLOCK / 64]).expect("block shape");
    let blocks: Vec<Vec<f32>> = (0..threads).map(|t| (0..ARITH_BLOCK).map(|i| ((i * 7 + t) % 1000) as f32).collect()).collect();
    let dy: Vec<f32> = if grad { (0..ARITH_BLOCK).map(|i| ((i * 13) % 997) as f32).collect() } else { Vec::new() };
    let mut saved = SavedStats::with_channels(1);
    saved.mean[0] = 499.5;
    saved.invstd[0] = 0.0035;
    let run = median(
        || {
            blocks.par_iter().for_each(|b| {
                let (mut m, mut ws) = ([Moments::EMPTY], Workspace::new());
                let (mut dw, mut db) = ([0.0f32], [0.0f32]);
                for _ in 0..calls {
                    if grad {
                        param_grads_into(b, &dy, block, &saved, Some(&mut dw), Some(&mut db), &mut ws).expect("gradient sums");
                    } else {
                        batch_moments_into(b, block, &mut m, &mut ws).expect("moments");
                    }
                }
                std::hint::black_box((m, dw, db));
            })
        },
        reps,
    );
    run * n as f64 / (calls * ARITH_BLOCK * threads) as f64
}

/// Milliseconds of [training forward, training forward + backward, eval] at their floor
/// for shape `d` (medians of `reps` runs of each skeleton).
pub fn floor_ms(d: Dims, reps: usize) -> [f64; 3] {
    let n = d.len();
    let chunk = n.div_ceil(rayon::current_num_threads()).max(1);
    let mut t = Tensors {
        x: (0..n).map(|i| (i % 1000) as f32).collect(),
        dy: (0..n).map(|i| (i % 997) as f32).collect(),
        out: vec![0.0; n],
        grad: vec![0.0; n],
        chunk,
    };
    let (a, g) = (arithmetic(n, reps, false), arithmetic(n, reps, true));
    let best = |f: &mut dyn FnMut(bool) -> f64| f(false).min(f(true));
    let once = reads_once(d);
    let fwd_of = |s1: f64, w1: f64| if once { w1.max(a) } else { s1.max(a) + w1 };
    let bwd_of = |s2: f64, w2: f64| if once { w2.max(g) } else { s2.max(g) + w2 };
    let eval = best(&mut |st| t.skeleton(&[Pass::W1], st, reps)[0]);
    let fwd = best(&mut |st| {
        let p = t.skeleton(&[Pass::S1, Pass::W1], st, reps);
        fwd_of(p[0], p[1])
    });
    let fwd_bwd = best(&mut |st| {
        let p = t.skeleton(&[Pass::S1, Pass::W1, Pass::S2, Pass::W2], st, reps);
        fwd_of(p[0], p[1]) + bwd_of(p[2], p[3])
    });
    [fwd * 1e3, fwd_bwd * 1e3, eval * 1e3]
}

/// `d = s` with streaming stores where the CPU has AVX: the W1 skeleton's copy, and the
/// bench's streaming-copy bandwidth (`bench::copy_bandwidth`). 16- and 64-byte streaming
/// stores copied no faster than these 32-byte ones (29-33 GB/s at 1 thread, 38-43 at 2).
pub(crate) fn stream_copy(s: &[f32], d: &mut [f32]) {
    assert_eq!(s.len(), d.len(), "stream_copy: lengths differ");
    add(s, None, d, true);
}

/// `o = a (+ b)`, with streaming stores where asked and the CPU has AVX.
fn add(a: &[f32], b: Option<&[f32]>, o: &mut [f32], stream: bool) {
    #[cfg(target_arch = "x86_64")]
    if stream && std::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX.
        return unsafe { add_stream(a, b, o) };
    }
    let _ = stream;
    match b {
        Some(b) => add2(a, b, o),
        None => store_copy(a, o),
    }
}

/// `o = a (+ b)` with non-temporal stores past the unaligned head.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn add_stream(a: &[f32], b: Option<&[f32]>, o: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = o.len().min(a.len());
    let head = (o.as_ptr().align_offset(32)).min(n);
    for i in 0..head {
        o[i] = a[i] + b.map_or(0.0, |b| b[i]);
    }
    let mut i = head;
    while i + 8 <= n {
        let mut v = _mm256_loadu_ps(a.as_ptr().add(i));
        if let Some(b) = b {
            v = _mm256_add_ps(v, _mm256_loadu_ps(b.as_ptr().add(i)));
        }
        _mm256_stream_ps(o.as_mut_ptr().add(i), v);
        i += 8;
    }
    for j in i..n {
        o[j] = a[j] + b.map_or(0.0, |b| b[j]);
    }
    _mm_sfence();
}

/// Compiles `$body` for AVX2 as well (the kernels it is compared with use AVX2 where the
/// CPU has it) and picks that copy at run time.
macro_rules! avx2_or_not {
    ($(#[$m:meta])* fn $name:ident($($a:ident : $t:ty),*) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn body($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($a: $t),*) $(-> $r)? { body($($a),*) }
                // SAFETY: the CPU has AVX2.
                return unsafe { avx2($($a),*) };
            }
            body($($a),*)
        }
    };
}

avx2_or_not! {
    /// `d = s` with ordinary vector stores (`+ 0.0` keeps the compiler from calling memcpy).
    fn store_copy(s: &[f32], d: &mut [f32]) {
        for (o, v) in d.iter_mut().zip(s) {
            *o = v + 0.0;
        }
    }
}

avx2_or_not! {
    fn add2(a: &[f32], b: &[f32], o: &mut [f32]) {
        for ((o, x), y) in o.iter_mut().zip(a).zip(b) {
            *o = x + y;
        }
    }
}

/// The shift the read skeletons subtract (any value: the arithmetic is what is timed).
const SKELETON_SHIFT: f64 = 0.25;

/// One value's share of [`stats_streams`]: `d + d * d` with `d = x - k`.
fn stats_term(x: f32) -> f64 {
    let d = x as f64 - SKELETON_SHIFT;
    d + d * d
}

/// One value's share of [`grad_streams`]: `dy + dy * (x - k)`.
fn grad_term(x: f32, dy: f32) -> f64 {
    dy as f64 + dy as f64 * (x as f64 - SKELETON_SHIFT)
}

/// `sum(d) + sum(d * d)` with `d = x - k` in float64 over every value of `parts`, read side
/// by side 16 values of each in turn, into lanes that hold no channel: the statistics'
/// arithmetic (widen, subtract, two multiply-adds, as the kernels do it) in the reads'
/// most favourable order. It is the read a two-pass forward cannot avoid, with the
/// arithmetic it cannot avoid either: a plain float32 sum of `x` plus the arithmetic timed
/// apart assumed the two overlap completely, and on the project's machine they do not
/// (NHWC 32x56x56x64 after a normalising pass, 1 thread, medians of 41, 2 runs: a plain
/// read 0.55-0.59 ms, this read 0.62-0.64, the arithmetic alone on L2-resident data 0.46,
/// the kernels' statistics 0.69-0.70). Without AVX2 and FMA it reads the parts one after
/// the other.
fn stats_streams(parts: &[&[f32]]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { x86::stats_streams(parts) };
    }
    parts.iter().flat_map(|p| p.iter()).map(|&v| stats_term(v)).sum()
}

/// `sum(dy) + sum(dy * (x - k))` in float64 over `x` beside `dy`, 16 values of each in
/// turn, into lanes that hold no channel: the gradient sums' arithmetic in the reads' most
/// favourable order (see [`stats_streams`]; NC 4096x4096 after a training forward, 1
/// thread: a plain read of both 4.1-5.1 ms, this read 4.4-5.5, the kernels' sums 5.8-6.4).
fn grad_streams(x: &[f32], dy: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { x86::grad_streams(x, dy) };
    }
    x.iter().zip(dy).map(|(&a, &g)| grad_term(a, g)).sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{grad_term, stats_term, SKELETON_SHIFT};
    use std::arch::x86_64::*;

    /// Lanes of 4 float64 per accumulator: 16 values of a stream per step.
    const V: usize = 4;

    /// The sum of the lanes of `s1` and `s2`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn lanes(s1: [__m256d; V], s2: [__m256d; V]) -> f64 {
        let mut o = [0.0f64; 4];
        let mut t = _mm256_setzero_pd();
        for v in 0..V {
            t = _mm256_add_pd(t, _mm256_add_pd(s1[v], s2[v]));
        }
        _mm256_storeu_pd(o.as_mut_ptr(), t);
        o.iter().sum()
    }

    /// [`super::stats_streams`] in 256-bit vectors (the `one` of `fma(d, one, s1)` hidden
    /// from the compiler, as the kernels hide it, so the add runs on the multiply-add pipes).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn stats_streams(parts: &[&[f32]]) -> f64 {
        let n = parts.iter().map(|p| p.len()).min().unwrap_or(0) / 16 * 16;
        let (kv, one) = (_mm256_set1_pd(SKELETON_SHIFT), _mm256_set1_pd(std::hint::black_box(1.0)));
        let (mut s1, mut s2) = ([_mm256_setzero_pd(); V], [_mm256_setzero_pd(); V]);
        for i in (0..n).step_by(16) {
            for p in parts {
                for v in 0..V {
                    let d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(p.as_ptr().add(i + 4 * v))), kv);
                    s1[v] = _mm256_fmadd_pd(d, one, s1[v]);
                    s2[v] = _mm256_fmadd_pd(d, d, s2[v]);
                }
            }
        }
        let rest: f64 = parts.iter().flat_map(|p| &p[n..]).map(|&v| stats_term(v)).sum();
        lanes(s1, s2) + rest
    }

    /// [`super::grad_streams`] in 256-bit vectors.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn grad_streams(x: &[f32], dy: &[f32]) -> f64 {
        let n = x.len().min(dy.len()) / 16 * 16;
        let (kv, one) = (_mm256_set1_pd(SKELETON_SHIFT), _mm256_set1_pd(std::hint::black_box(1.0)));
        let (mut s1, mut s2) = ([_mm256_setzero_pd(); V], [_mm256_setzero_pd(); V]);
        for i in (0..n).step_by(16) {
            for v in 0..V {
                let a = _mm256_cvtps_pd(_mm_loadu_ps(x.as_ptr().add(i + 4 * v)));
                let g = _mm256_cvtps_pd(_mm_loadu_ps(dy.as_ptr().add(i + 4 * v)));
                s1[v] = _mm256_fmadd_pd(g, one, s1[v]);
                s2[v] = _mm256_fmadd_pd(g, _mm256_sub_pd(a, kv), s2[v]);
            }
        }
        let rest: f64 = x[n..].iter().zip(&dy[n..]).map(|(&a, &g)| grad_term(a, g)).sum();
        lanes(s1, s2) + rest
    }
}

/// `a` cut into four parts of equal length (the last one takes the remainder), which the
/// statistics' skeleton reads side by side.
///
/// One core reads memory faster over several streams than over one (its prefetchers keep
/// more misses in flight). Measured on the project's machine with float32 sums, 64 MB at 1
/// thread, medians of 11: one stream 3.29 ms (20.4 GB/s), 2 parts side by side 2.58-2.69, 4
/// parts 2.43-2.52, 8 parts 2.35-2.42; `x` and `dy` side by side 5.65-5.67 ms for the 128
/// MB, where one after the other each reads as one stream. The kernels' reductions read
/// several streams (rows of a strip, `x` beside `dy`), so the skeletons do too.
fn quarters(a: &[f32]) -> [&[f32]; 4] {
    let q = a.len() / 4;
    [&a[..q], &a[q..2 * q], &a[2 * q..3 * q], &a[3 * q..]]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streaming copy writes every value, whatever the alignment of either buffer and
    /// whatever is left past the last whole vector.
    #[test]
    fn stream_copy_copies_every_value() {
        let src: Vec<f32> = (0..300).map(|i| i as f32 * 0.5 - 7.0).collect();
        for (so, doff, n) in [(0, 0, 0), (1, 0, 3), (0, 1, 17), (3, 2, 250), (2, 3, 297), (1, 1, 64)] {
            let mut dst = vec![f32::NAN; 300];
            stream_copy(&src[so..so + n], &mut dst[doff..doff + n]);
            assert_eq!(&dst[doff..doff + n], &src[so..so + n], "source +{so}, destination +{doff}, {n} values");
            assert!(dst[..doff].iter().chain(&dst[doff + n..]).all(|v| v.is_nan()), "wrote outside, {n} values");
        }
    }

    /// The read skeletons do their arithmetic on every value once, whatever the lengths of
    /// the parts: `sum(d + d * d)` with `d = x - k`, and `sum(dy + dy * (x - k))`.
    #[test]
    fn read_skeletons_reach_every_value_once() {
        let k = SKELETON_SHIFT;
        for n in [0, 5, 15, 16, 17, 127, 1000, 4099] {
            let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 2.5).collect();
            let b: Vec<f32> = (0..n + 45).map(|i| (i % 5) as f32 * 0.5).collect();
            let stats = |v: &[f32]| v.iter().map(|&x| (x as f64 - k) + (x as f64 - k).powi(2)).sum::<f64>();
            let close = |got: f64, want: f64| (got - want).abs() <= 1e-9 * want.abs().max(1.0);
            assert!(close(stats_streams(&quarters(&a)), stats(&a)), "{n} values in quarters");
            assert!(close(stats_streams(&[&a, &b]), stats(&a) + stats(&b)), "{n} and {} values side by side", n + 45);
            let grad: f64 = a.iter().zip(&b).map(|(&x, &g)| g as f64 * (1.0 + x as f64 - k)).sum();
            assert!(close(grad_streams(&a, &b[..n]), grad), "{n} values of x beside dy");
        }
    }

    #[test]
    fn skeletons_time_every_pass_and_floors_add_up() {
        let d = Dims::new(Layout::Nhwc, &[8, 16, 16, 64]).unwrap();
        let [fwd, fwd_bwd, eval] = floor_ms(d, 3);
        assert!(eval > 0.0 && fwd > 0.0 && fwd_bwd > fwd, "{fwd} {fwd_bwd} {eval}");
        let mut t = Tensors { x: vec![1.0; 1000], dy: vec![2.0; 1000], out: vec![0.0; 1000], grad: vec![0.0; 1000], chunk: 300 };
        for stream in [false, true] {
            assert_eq!(t.skeleton(&[Pass::S1, Pass::W2, Pass::S2], stream, 2).len(), 3);
            assert!(t.grad.iter().all(|&v| v == 3.0), "dx = x + dy everywhere");
            t.run(Pass::W1, stream);
            assert!(t.out.iter().all(|&v| v == 1.0), "y = x everywhere");
        }
    }
}
