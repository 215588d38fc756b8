//! Per-channel constants interleaved for the streamed passes over wide rows.
//!
//! The passes that write four runs of rows side by side (`simd::x86::stream_parts_512`) take,
//! at every step, one 16-lane vector of each per-channel array (`ctr`, `s`, `t` for the
//! normalising pass; `ctr`, `a`, `b`, `d` for dx) for the same 16 channels. Rows of up to 64
//! channels hold those vectors in registers; wider rows load them, and from about 2048
//! channels the arrays (48-64 KB) no longer fit in L1 beside the data, so each step's three
//! or four vectors come from L2 out of three or four arrays: as many more streams beside
//! the four (or eight) the data makes. Interleaved, a step's constants are three or four
//! consecutive lines of a single stream, in the order the steps take them.
//!
//! Measured (1 thread, in one process, the data passes alone with the constants in separate
//! arrays or interleaved, 3 runs, medians of 20 calls rotating the order): the normalising
//! pass over NC 4096x4096 4.00-4.08 -> 3.65-3.74 ms (no constants at all: 2.92-3.06), NC
//! 8192x2048 3.87 -> 3.51, NC 16384x1024 3.85 -> 3.38, NC 65536x256 3.68 -> 3.56; the dx pass
//! NC 4096x4096 6.24-6.47 -> 5.90-6.26, NC 16384x1024 7.16 -> 6.72. In the kernels, the copy
//! made once per pass beside the arrays (old and new builds alternating, 8 rounds, medians;
//! forward / eval ms, 1 thread): NC 4096x4096 7.47 / 4.58 -> 6.82 / 4.20, NC 16384x1024 6.81
//! / 3.92 -> 6.39 / 3.54, NC 2048x8192 7.53 / 4.61 -> 6.89 / 4.16, NHWC 8x56x56x256 2.40 /
//! 1.50 -> 2.02 / 1.17; the backward 0.98-1.04x, and 2 threads 0.98-1.05x (memory-bound
//! there either way). Made again for every 1 MB task instead, it kept half of the gain.

use crate::layout::Dims;
use crate::simd::head_of;

/// Per-channel arrays interleaved for an output whose first 64-byte boundary is `head`
/// values in: block `b` (16 `N` values) holds, array after array, the 16 values of channels
/// `(head + 16 b + l) % c`, `l` in `0..16` — the channels of the `b`-th vector a
/// side-by-side pass writes after the head of each of its rows.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct Interleaved<'a> {
    pub(crate) values: &'a [f32],
    pub(crate) head: usize,
}

/// Whether a pass over a tensor of dimensions `d` that streams its output (`nt`) reads
/// interleaved constants: rows that are neither regrouped (`narrow`) nor cut into column
/// tiles, written side by side with their constants loaded (`simd::parts_load_constants`).
pub(crate) fn interleaves(d: Dims, nt: bool) -> bool {
    nt && d.is_rows() && crate::tiles::tile_width(d).is_none() && crate::narrow::period(d.channels).is_none() && crate::simd::parts_load_constants(d.channels)
}

/// `arrays` (each `c` values, `c` a multiple of 16) interleaved into the first `N c` values
/// of `out` for an output that starts at `y` (see [`Interleaved`]).
pub(crate) fn interleave<'a, const N: usize>(arrays: [&[f32]; N], y: *const f32, out: &'a mut [f32]) -> Interleaved<'a> {
    let c = arrays[0].len();
    assert!(c.is_multiple_of(16) && arrays.iter().all(|a| a.len() == c) && out.len() >= N * c, "interleave: arrays of unequal or odd length");
    let head = head_of(y);
    let out = &mut out[..N * c];
    for (b, block) in out.chunks_exact_mut(16 * N).enumerate() {
        let first = (head + 16 * b) % c;
        for (a, lanes) in arrays.iter().zip(block.chunks_exact_mut(16)) {
            if first + 16 <= c {
                lanes.copy_from_slice(&a[first..first + 16]);
            } else {
                for (l, v) in lanes.iter_mut().enumerate() {
                    *v = a[(first + l) % c];
                }
            }
        }
    }
    Interleaved { values: out, head }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_follow_the_steps_after_the_head() {
        let c = 48;
        let (p, q): (Vec<f32>, Vec<f32>) = ((0..c).map(|j| j as f32).collect(), (0..c).map(|j| 1000.0 + j as f32).collect());
        let buf = vec![0.0f32; 64];
        let mut out = vec![f32::NAN; 2 * c + 5];
        for off in 0..16 {
            let y = buf[off..].as_ptr();
            let il = interleave([&p, &q], y, &mut out);
            let h = head_of(y);
            assert_eq!(il.head, h);
            assert_eq!((y as usize + 4 * h) % 64, 0, "head {h} does not reach a line");
            for b in 0..c / 16 {
                for l in 0..16 {
                    let ch = (h + 16 * b + l) % c;
                    assert_eq!(il.values[32 * b + l], p[ch], "offset {off}, block {b}, lane {l}");
                    assert_eq!(il.values[32 * b + 16 + l], q[ch], "offset {off}, block {b}, lane {l}");
                }
            }
            assert_eq!(il.values.len(), 2 * c);
        }
        assert!(out[2 * c..].iter().all(|v| v.is_nan()), "wrote past N c values");
    }
}
