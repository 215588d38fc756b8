//! The fastest a batch-norm operation on a given tensor could run on this machine, measured
//! in the same run as the kernels (so the floor and the timing see the same neighbours).
//!
//! Each operation is replayed as its skeleton: the passes over memory it cannot avoid, in
//! its order, over tensors of its size, with no arithmetic beyond a float32 add, at the
//! pool's thread count; so every pass finds the caches as the real one does. The passes
//! are a sum of `x` (S1, each thread reading its part as four streams side by side), `y =
//! x` (W1), a sum of `x` and `dy` (S2, the two side by side) and `dx = x + dy` (W2, into a
//! buffer of its own, as the step writes `y` and `dx` apart), each
//! with ordinary and with streaming stores (the faster skeleton counts). Separately,
//! the float64 arithmetic of the statistics (`d = x - k`, `s1 += d`, `s2 += d * d` per
//! value, on data in the L2 cache, all threads at once) gives the time `A` exact
//! statistics take even when memory is free, and the same timing of the gradient sums
//! (`s1 += dy`, `s2 += dy * (x - mean)`, [`batchnorm::param_grads_into`]) the time `G` of
//! theirs. `G` was `A` within 1% while both summed in 8 lanes; since the statistics sum
//! long runs in 16 lanes, `A` is about 0.8x `G` (widening two values a pair bounds the
//! gradient sums, see `WIDE_LANES` in the core's `simd.rs`). Then:
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
    /// Sum of `x`.
    S1,
    /// `y = x`.
    W1,
    /// Sum of `x` and `dy`.
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
                std::hint::black_box(x.par_chunks(c).map(|a| sum_streams(&quarters(a))).sum::<f32>());
            }
            Pass::S2 => {
                std::hint::black_box(x.par_chunks(c).zip(dy.par_chunks(c)).map(|(a, b)| sum_streams(&[a, b])).sum::<f32>());
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

/// `a` cut into four parts of equal length (the last one takes the remainder).
fn quarters(a: &[f32]) -> [&[f32]; 4] {
    let q = a.len() / 4;
    [&a[..q], &a[q..2 * q], &a[2 * q..3 * q], &a[3 * q..]]
}

avx2_or_not! {
    /// The sum of every value of `parts`, read side by side, 32 values of each in turn.
    ///
    /// One core reads memory faster over several streams than over one (its prefetchers
    /// keep more misses in flight). Measured on the project's machine, 64 MB at 1 thread,
    /// medians of 11: one stream 3.29 ms (20.4 GB/s), 2 parts side by side 2.58-2.69, 4
    /// parts 2.43-2.52, 8 parts 2.35-2.42; `x` and `dy` side by side 5.65-5.67 ms for the
    /// 128 MB, where one after the other each reads as one stream. The kernels' reductions
    /// read several streams (rows of a strip, `x` beside `dy`), so the skeleton does too.
    fn sum_streams(parts: &[&[f32]]) -> f32 {
        let n = parts.iter().map(|p| p.len()).min().unwrap_or(0) / 32 * 32;
        // Independent lanes, so the compiler vectorises it without reassociating.
        let mut acc = [0.0f32; 32];
        for i in (0..n).step_by(32) {
            for p in parts {
                for (a, v) in acc.iter_mut().zip(&p[i..i + 32]) {
                    *a += v;
                }
            }
        }
        acc.iter().sum::<f32>() + parts.iter().flat_map(|p| &p[n..]).sum::<f32>()
    }
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

    /// The read skeletons add every value once, whatever the lengths of the parts.
    #[test]
    fn stream_sums_add_every_value_once() {
        for n in [0, 5, 31, 32, 33, 127, 1000, 4099] {
            let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
            let b: Vec<f32> = (0..n + 45).map(|i| (i % 5) as f32).collect();
            let exact = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() as f32;
            assert_eq!(sum_streams(&quarters(&a)), exact(&a), "{n} values in quarters");
            assert_eq!(sum_streams(&[&a, &b]), exact(&a) + exact(&b), "{n} and {} values side by side", n + 45);
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
