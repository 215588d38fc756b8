//! Per-channel compensated sums over a float64 tensor, in an order fixed by its shape.
//!
//! The outer axis is cut into blocks by the shape alone; each block's sums are taken per
//! channel group (a task each) and the blocks' sums are merged in block order, so results
//! are bitwise the same on any number of threads, and in the AVX-512, AVX2 and baseline
//! copies of the loops alike (every product's error comes from an explicit fused
//! multiply-add, which the compiler never forms by itself).

use super::compensated::{two_prod, two_sum, two_sum_split, Comp};
use crate::layout::Dims;
use crate::parallel::parallel_worth;
use crate::workspace::sized;
use rayon::prelude::*;

/// What one value adds to its channel's two sums.
pub(crate) trait Terms: Copy + Send + Sync {
    /// `[v1, e1, v2, e2]`: the exact terms `v1 + e1` and `v2 + e2` that value `a` (beside
    /// `b`, in a channel whose constant is `k`) adds to the first and the second sum; `one`
    /// is 1.0 (see [`two_sum_split`]).
    fn terms(self, a: f64, b: f64, k: f64, one: f64) -> [f64; 4];
}

/// The statistics' sums `sum(x - k)` and `sum((x - k)^2)`, `k` the channel's shift (`a = b
/// = x`). `x - k` is kept exactly as a pair `d + de`, its square as `d^2` and its error;
/// `de^2`, under 2^-106 of it, is left out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shifted;

impl Terms for Shifted {
    #[inline(always)]
    fn terms(self, x: f64, _: f64, k: f64, _one: f64) -> [f64; 4] {
        // Unsplit: with this subtraction split too the compiler left the runs' loop
        // (`acc_run`) unvectorised for these terms (NCHW 64x256x14x14 forward 5.5 -> 8.3 ms).
        let (d, de) = two_sum(x, -k);
        let (p, pe) = two_prod(d, d);
        [d, de, p, (2.0 * d).mul_add(de, pe)]
    }
}

/// The gradient sums `sum(dy)` and `sum(dy * (x - mean))` (`a = x`, `b = dy`, `k` the
/// channel's mean).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gradient;

impl Terms for Gradient {
    #[inline(always)]
    fn terms(self, x: f64, dy: f64, mean: f64, one: f64) -> [f64; 4] {
        let (xc, xe) = two_sum_split(x, -mean, one);
        let (p, pe) = two_prod(dy, xc);
        [dy, 0.0, p, dy.mul_add(xe, pe)]
    }
}

/// Values per block of the outer axis aimed at (256 KB).
const BLOCK_VALUES: usize = 1 << 15;

/// Most blocks; each holds four float64 sums per channel until the merge.
const MAX_BLOCKS: usize = 32;

/// Fewest values of each channel in a block: keeps the blocks' sums within 1/16 of the
/// tensor's size whatever its shape.
const MIN_PER_CHANNEL: usize = 64;

/// Tasks a reduction over rows aims for: blocks of rows, and when there are fewer blocks,
/// column groups of whole rows' parts (at least [`MIN_ROW_GROUP`] channels: a task that
/// reads narrow parts of rows far apart defeats the prefetchers).
const ROW_TASKS: usize = 8;

/// Narrowest column group of a reduction over rows.
const MIN_ROW_GROUP: usize = 1024;

/// Rows [`add_rows`] adds per visit of a column's sums, on parts wider than
/// [`STRIP_MIN_WIDTH`] values.
const STRIP_ROWS: usize = 4;

/// Widest part of a row whose sums [`add_rows`] visits a row at a time (their 8 KB stay in
/// L1).
const STRIP_MIN_WIDTH: usize = 256;

/// Channel groups per block of a reduction over channels-first runs (tasks for tensors of
/// few batch items).
const RUN_GROUPS: usize = 16;

/// What a value of these sums costs, in values of a float32 kernel's pass (which
/// `parallel::parallel_worth` is measured in): 26 float64 operations against 3 or 4, so
/// they go to the pool from a quarter of a float32 pass's size (NC 256x1024 ran on one
/// thread before, its forward 0.41 ms at 2 threads as at 1; 0.30-0.36 ms since).
const WORK_PER_VALUE: usize = 4;

/// Lanes of a run's sums: independent chains, so that the additions vectorise (at 4 lanes
/// the compiler left them scalar).
const LANES: usize = 8;

/// How a reduction cuts a tensor of dimensions `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    blocks: usize,
    block_len: usize,
    group: usize,
}

impl Cut {
    fn new(d: Dims) -> Cut {
        let outer = d.outer.max(1);
        let blocks = (d.len() / BLOCK_VALUES).clamp(1, MAX_BLOCKS).min((d.per_channel() / MIN_PER_CHANNEL).max(1)).min(outer);
        let block_len = outer.div_ceil(blocks);
        let blocks = outer.div_ceil(block_len);
        let group =
            if d.is_rows() { d.channels.div_ceil(ROW_TASKS.div_ceil(blocks)).max(MIN_ROW_GROUP).min(d.channels) } else { d.channels.div_ceil(RUN_GROUPS) };
        Cut { blocks, block_len, group: group.max(1) }
    }
}

/// The compensated sums of every channel, `[hi1 | lo1 | hi2 | lo2]` (C values each): what
/// [`channel_sums`] returns.
pub(crate) struct Sums<'a> {
    v: &'a [f64],
    c: usize,
}

impl Sums<'_> {
    /// Channel `ch`'s first and second sum.
    #[inline]
    pub(crate) fn get(&self, ch: usize) -> (Comp, Comp) {
        let (v, c) = (self.v, self.c);
        (Comp { hi: v[ch], lo: v[c + ch] }, Comp { hi: v[2 * c + ch], lo: v[3 * c + ch] })
    }
}

/// Sums `terms(a, b, k[c])` over every value of every channel `c` (`b` beside `a`, or `a`
/// again): blocks of the outer axis in tasks of channel groups, each block's sums in
/// `parts`, merged in block order into `totals`.
pub(crate) fn channel_sums<'w, T: Terms>(terms: T, a: &[f64], b: &[f64], d: Dims, k: &[f64], parts: &mut Vec<f64>, totals: &'w mut Vec<f64>) -> Sums<'w> {
    let c = d.channels;
    let cut = Cut::new(d);
    let region = 4 * c;
    let parts = sized(parts, cut.blocks * region, 0.0);
    let one = std::hint::black_box(1.0);
    let task = |blk: usize, g: usize, part: &mut [f64]| {
        let rows = blk * cut.block_len..((blk + 1) * cut.block_len).min(d.outer);
        let c0 = g * cut.group;
        let w = part.len() / 4;
        let (h1, rest) = part.split_at_mut(w);
        let (l1, rest) = rest.split_at_mut(w);
        let (h2, l2) = rest.split_at_mut(w);
        if d.is_rows() {
            acc_rows(terms, a, b, c, rows, &k[c0..c0 + w], c0, one, h1, l1, h2, l2);
        } else {
            for n in rows {
                for j in 0..w {
                    let off = (n * c + c0 + j) * d.inner;
                    let [s1, s2] = acc_run(terms, &a[off..off + d.inner], &b[off..off + d.inner], k[c0 + j], one);
                    let (mut t1, mut t2) = (Comp { hi: h1[j], lo: l1[j] }, Comp { hi: h2[j], lo: l2[j] });
                    t1.merge(s1);
                    t2.merge(s2);
                    (h1[j], l1[j], h2[j], l2[j]) = (t1.hi, t1.lo, t2.hi, t2.lo);
                }
            }
        }
    };
    if c > 0 {
        if parallel_worth(WORK_PER_VALUE * d.len()) {
            parts.par_chunks_mut(region).enumerate().for_each(|(blk, r)| r.par_chunks_mut(4 * cut.group).enumerate().for_each(|(g, p)| task(blk, g, p)));
        } else {
            parts.chunks_mut(region).enumerate().for_each(|(blk, r)| r.chunks_mut(4 * cut.group).enumerate().for_each(|(g, p)| task(blk, g, p)));
        }
    }
    let out = sized(totals, region, 0.0);
    for ch in 0..c {
        // Where channel ch's four sums sit in each block's region.
        let (g, j) = (ch / cut.group, ch % cut.group);
        let w = cut.group.min(c - g * cut.group);
        let at = 4 * g * cut.group + j;
        let (mut s1, mut s2) = (Comp::default(), Comp::default());
        for r in parts.chunks_exact(region) {
            s1.merge(Comp { hi: r[at], lo: r[at + w] });
            s2.merge(Comp { hi: r[at + 2 * w], lo: r[at + 3 * w] });
        }
        (out[ch], out[c + ch], out[2 * c + ch], out[3 * c + ch]) = (s1.hi, s1.lo, s2.hi, s2.lo);
    }
    Sums { v: out, c }
}

wide! {
    /// Adds rows `rows` of channels `c0..c0 + k.len()` (rows of `c` channels) into the sums:
    /// [`add_rows`].
    fn acc_rows<T: Terms>(terms: T, a: &[f64], b: &[f64], c: usize, rows: std::ops::Range<usize>, k: &[f64], c0: usize, one: f64, h1: &mut [f64], l1: &mut [f64], h2: &mut [f64], l2: &mut [f64]) {
        add_rows(terms, a, b, c, rows, k, c0, one, [h1, l1, h2, l2]);
    }
}

wide! {
    /// The two sums of one contiguous run (`b` beside `a`), in [`LANES`] chains (value `i`
    /// in chain `i % LANES`) added in chain order at the end.
    ///
    /// The chains are arrays the compiler vectorises across (as a loop over a run taken as
    /// rows of 8 values it ran 1.7x slower: a vector loop set up for every 8 values).
    fn acc_run<T: Terms>(terms: T, a: &[f64], b: &[f64], k: f64, one: f64) -> [Comp; 2] {
        let (mut h1, mut l1, mut h2, mut l2) = ([0.0f64; LANES], [0.0f64; LANES], [0.0f64; LANES], [0.0f64; LANES]);
        let mut add = |l: usize, x: f64, y: f64| {
            let [v1, e1, v2, e2] = terms.terms(x, y, k, one);
            let (mut t1, mut t2) = (Comp { hi: h1[l], lo: l1[l] }, Comp { hi: h2[l], lo: l2[l] });
            t1.add_split(v1, e1, one);
            t2.add_split(v2, e2, one);
            (h1[l], l1[l], h2[l], l2[l]) = (t1.hi, t1.lo, t2.hi, t2.lo);
        };
        let whole = a.len() / LANES * LANES;
        for (ca, cb) in a[..whole].chunks_exact(LANES).zip(b[..whole].chunks_exact(LANES)) {
            for l in 0..LANES {
                add(l, ca[l], cb[l]);
            }
        }
        for (l, (&x, &y)) in a[whole..].iter().zip(&b[whole..]).enumerate() {
            add(l, x, y);
        }
        let mut s = [Comp::default(); 2];
        for l in 0..LANES {
            s[0].add(h1[l], l1[l]);
            s[1].add(h2[l], l2[l]);
        }
        s
    }
}

/// Adds rows `rows` of the `k.len()` values from `c0` (rows `c` values apart) into the sums
/// `[hi1, lo1, hi2, lo2]` (one of each per column), each column's terms in row order: a row
/// at a time, or for parts wider than [`STRIP_MIN_WIDTH`] [`STRIP_ROWS`] rows per visit of
/// the sums (the same additions in the same order, so the same bits).
///
/// Wide parts' sums (4 x 8 bytes a column) do not stay in L1, and visiting them once for 4
/// rows pays there; on narrower ones the 4 dependent additions a visit makes cost more than
/// the loads and stores they save. Measured (1 thread, training forward, medians of 10,
/// three alternating runs of each build, row at a time -> strips for every width): NC
/// 4096x4096 38.2-44.8 -> 30.8-33.9 ms, NC 256x1024 0.330-0.344 -> 0.313-0.316, NHWC
/// 64x14x14x256 4.30-5.45 -> 5.12-6.36.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn add_rows<T: Terms>(terms: T, a: &[f64], b: &[f64], c: usize, rows: std::ops::Range<usize>, k: &[f64], c0: usize, one: f64, sums: [&mut [f64]; 4]) {
    let w = k.len();
    let [h1, l1, h2, l2] = sums;
    let (h1, l1, h2, l2) = (&mut h1[..w], &mut l1[..w], &mut h2[..w], &mut l2[..w]);
    let part = |r: usize| r * c + c0..r * c + c0 + w;
    let mut r = rows.start;
    if w > STRIP_MIN_WIDTH {
        while r + STRIP_ROWS <= rows.end {
            let ra: [&[f64]; STRIP_ROWS] = std::array::from_fn(|i| &a[part(r + i)]);
            let rb: [&[f64]; STRIP_ROWS] = std::array::from_fn(|i| &b[part(r + i)]);
            for j in 0..w {
                let (mut t1, mut t2) = (Comp { hi: h1[j], lo: l1[j] }, Comp { hi: h2[j], lo: l2[j] });
                for i in 0..STRIP_ROWS {
                    let [v1, e1, v2, e2] = terms.terms(ra[i][j], rb[i][j], k[j], one);
                    t1.add_split(v1, e1, one);
                    t2.add_split(v2, e2, one);
                }
                (h1[j], l1[j], h2[j], l2[j]) = (t1.hi, t1.lo, t2.hi, t2.lo);
            }
            r += STRIP_ROWS;
        }
    }
    for r in r..rows.end {
        let (ar, br) = (&a[part(r)], &b[part(r)]);
        for j in 0..w {
            let [v1, e1, v2, e2] = terms.terms(ar[j], br[j], k[j], one);
            let (mut t1, mut t2) = (Comp { hi: h1[j], lo: l1[j] }, Comp { hi: h2[j], lo: l2[j] });
            t1.add_split(v1, e1, one);
            t2.add_split(v2, e2, one);
            (h1[j], l1[j], h2[j], l2[j]) = (t1.hi, t1.lo, t2.hi, t2.lo);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    /// Strips of rows add each column's terms in row order, as a row at a time does: the
    /// same bits.
    #[test]
    fn strips_of_rows_sum_as_rows_one_at_a_time() {
        let (c, rows, w, c0) = (700, 11, 600, 50);
        let x: Vec<f64> = (0..rows * c).map(|i| ((i * 7919) % 1013) as f64 * 1e-3 + 1e4).collect();
        let k: Vec<f64> = (0..w).map(|j| x[c0 + j]).collect();
        let sums = |by_row: bool| {
            let mut v = vec![0.0; 4 * w];
            let (h1, rest) = v.split_at_mut(w);
            let (l1, rest) = rest.split_at_mut(w);
            let (h2, l2) = rest.split_at_mut(w);
            if by_row {
                for r in 0..rows {
                    add_rows(Shifted, &x, &x, c, r..r + 1, &k, c0, 1.0, [&mut *h1, &mut *l1, &mut *h2, &mut *l2]);
                }
            } else {
                add_rows(Shifted, &x, &x, c, 0..rows, &k, c0, 1.0, [h1, l1, h2, l2]);
            }
            v.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert!(w > STRIP_MIN_WIDTH && rows > STRIP_ROWS);
        assert_eq!(sums(false), sums(true));
    }

    /// Every cut covers the outer axis once with blocks that keep their sums small.
    #[test]
    fn cuts_cover_the_outer_axis() {
        for (layout, shape) in [
            (Layout::Nc, vec![4096, 4096]),
            (Layout::Nc, vec![16, 400_000]),
            (Layout::Nc, vec![3, 2]),
            (Layout::Nchw, vec![8, 3, 224, 224]),
            (Layout::Nhwc, vec![64, 14, 14, 256]),
            (Layout::Nchw, vec![1, 5, 1, 1]),
        ] {
            let d = Dims::new(layout, &shape).unwrap();
            let cut = Cut::new(d);
            assert!(cut.blocks >= 1 && cut.blocks <= MAX_BLOCKS, "{shape:?}: {cut:?}");
            assert!((cut.blocks - 1) * cut.block_len < d.outer && cut.blocks * cut.block_len >= d.outer, "{shape:?}: {cut:?}");
            assert!(cut.blocks == 1 || cut.block_len * d.inner >= MIN_PER_CHANNEL, "{shape:?}: {cut:?}");
            assert!(cut.group >= 1 && cut.group <= d.channels.max(1), "{shape:?}: {cut:?}");
        }
    }
}
