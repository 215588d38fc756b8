//! The fastest a batch-norm pass over a given tensor could run on this machine, measured
//! in the same run as the kernels (so the floor and the timing see the same neighbours).
//!
//! Three measurements, each on a tensor of the same size at the pool's thread count:
//! a read-only pass (a float32 sum: nothing cheaper reads every value), a copy (read +
//! write), and the float64 arithmetic of the statistics alone (`x - k`, then `+=` and
//! `+= d * d` per value, on data that stays in the L2 cache: what exact statistics cost even
//! when memory is free). The floor of each operation follows from what it must do:
//!
//! - eval: read `x`, write `y`: a copy.
//! - training forward: every value must be read before the first output can be written
//!   (the statistics come first), so a reduction, then a copy; when the kernels take the
//!   shape channel by channel ([`batchnorm::reads_once`]) the second read comes from cache
//!   and overlaps the next channel's, leaving the larger of the copy and the arithmetic.
//! - backward: a reduction over `x` and `dy`, then read both and write `dx` (a copy plus a
//!   read); channel by channel, the larger of that traffic and the arithmetic.
//!
//! Each floor is optimistic (the arithmetic of the normalising pass is not counted, and a
//! repeated read of a tensor that fits in the last-level cache is served from there), so
//! no kernel can beat it; `PyTorch ms / floor ms` is the largest speedup any exact
//! float64-accumulating kernel could show on that entry.

use crate::bench::median;
use batchnorm::{batch_moments_into, reads_once, Dims, Layout, Moments, Workspace};
use rayon::prelude::*;

/// Seconds of the three passes over one tensor, at the current pool's thread count.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// A float32 sum of the tensor.
    pub read: f64,
    /// A copy of the tensor into another of its size.
    pub copy: f64,
    /// Float64 shifted sums of as many values, L2-resident, spread over the threads.
    pub arith: f64,
}

/// Values per thread of the arithmetic measurement: 256 KB, in L2 and out of L1.
const ARITH_BLOCK: usize = 1 << 16;

impl Floor {
    /// Measures the three passes for a tensor of `n` float32 values (medians of `reps`).
    pub fn measure(n: usize, reps: usize) -> Floor {
        let threads = rayon::current_num_threads();
        let chunk = n.div_ceil(threads).max(1);
        let src: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
        let mut dst = vec![0.0f32; n];
        let read = median(
            || {
                let s: f32 = src.par_chunks(chunk).map(sum).sum();
                std::hint::black_box(s);
            },
            reps,
        );
        // The C library's copy streams large blocks past the cache, which is slower than
        // ordinary stores while both tensors fit in the last-level cache: the floor is the
        // faster of the two.
        let memcpy = median(|| dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s)), reps);
        let stores = median(|| dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| store_copy(s, d)), reps);
        let copy = memcpy.min(stores);
        // Every thread sums its own block over and over, all at once (two logical CPUs may
        // share one core's arithmetic units).
        let calls = n.div_ceil(ARITH_BLOCK * threads).max(1);
        let block = Dims::new(Layout::Nchw, &[1, 1, 64, ARITH_BLOCK / 64]).expect("block shape");
        let blocks: Vec<Vec<f32>> = (0..threads).map(|t| (0..ARITH_BLOCK).map(|i| ((i * 7 + t) % 1000) as f32).collect()).collect();
        let run = median(
            || {
                blocks.par_iter().for_each(|b| {
                    let (mut m, mut ws) = ([Moments::EMPTY], Workspace::new());
                    for _ in 0..calls {
                        batch_moments_into(b, block, &mut m, &mut ws).expect("moments");
                    }
                    std::hint::black_box(m);
                })
            },
            reps,
        );
        let arith = run * n as f64 / (calls * ARITH_BLOCK * threads) as f64;
        Floor { read, copy, arith }
    }

    /// Milliseconds of [training forward, training forward + backward, eval] for shape `d`.
    pub fn ops_ms(&self, d: Dims) -> [f64; 3] {
        let Floor { read, copy, arith } = *self;
        let (fwd, bwd) = if reads_once(d) {
            (copy.max(arith), (copy + read).max(arith))
        } else {
            (read.max(arith) + copy, (2.0 * read).max(arith) + copy + read)
        };
        [fwd * 1e3, (fwd + bwd) * 1e3, copy * 1e3]
    }
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
fn sum(x: &[f32]) -> f32 {
    // Independent lanes, so the compiler vectorises it without reassociating.
    let mut acc = [0.0f32; 32];
    let mut it = x.chunks_exact(32);
    for c in &mut it {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_follow_the_passes_each_operation_needs() {
        let f = Floor { read: 1.0, copy: 2.0, arith: 1.5 };
        let rows = Dims::new(Layout::Nhwc, &[8, 4, 4, 64]).unwrap();
        assert_eq!(f.ops_ms(rows), [3500.0, 3500.0 + 5000.0, 2000.0]);
        let fused = Dims::new(Layout::Nchw, &[2, 16, 96, 96]).unwrap();
        assert_eq!(f.ops_ms(fused), [2000.0, 2000.0 + 3000.0, 2000.0]);
        let m = Floor::measure(1 << 16, 3);
        assert!(m.read > 0.0 && m.copy > 0.0 && m.arith > 0.0, "{m:?}");
    }
}
