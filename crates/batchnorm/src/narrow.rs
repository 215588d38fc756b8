//! Rows of a few channels (an NHWC image batch with 3 channels): a loop over one row is too
//! short to vectorise. A block of such rows is read instead as rows of lcm(C, 8) values
//! (whole 8-lane vectors) with each channel's constants repeated along the regrouped row;
//! sums kept per position are folded back into their channels at the end. Each channel's
//! additions still depend on the shape alone.

use crate::simd::{strip_acc_grad_1, strip_acc_shifted_1};

/// Widest regrouped row: lcm(15, 8).
pub(crate) const MAX_PERIOD: usize = 120;

/// lcm(c, 8) for rows of fewer than 16 channels that are not whole vectors already.
#[inline(always)]
pub(crate) fn period(c: usize) -> Option<usize> {
    (c > 0 && c < 16 && !c.is_multiple_of(8)).then(|| {
        let g = gcd(c, 8);
        c / g * 8
    })
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `v` repeated along `l` positions: `out[j] = v[j % v.len()]`.
#[inline(always)]
pub(crate) fn repeat<T: Copy>(v: &[T], l: usize, out: &mut [T]) {
    for (j, o) in out[..l].iter_mut().enumerate() {
        *o = v[j % v.len()];
    }
}

/// Per-channel constants `coef = [part (c) | part (c) | ...]` (up to 4 parts) for rows
/// regrouped `l` wide: each part repeated along `l` positions into `out`; returns the
/// regrouped constants, `[part (l) | part (l) | ...]`.
#[inline(always)]
pub(crate) fn repeat_parts<'a>(coef: &[f32], c: usize, l: usize, out: &'a mut [f32; 4 * MAX_PERIOD]) -> &'a [f32] {
    let k = coef.len() / c;
    for (i, part) in coef.chunks_exact(c).enumerate() {
        repeat(part, l, &mut out[i * l..]);
    }
    &out[..k * l]
}

/// Rows of `k.len()` channels: `a1[c] += x - k[c]`, `a2[c] += (x - k[c])^2` over every row,
/// in regrouped rows of `l` values (then the rows left over one by one).
#[inline(always)]
pub(crate) fn acc_shifted(x: &[f32], k: &[f64], l: usize, a1: &mut [f64], a2: &mut [f64]) {
    let c = k.len();
    let mut kv = [0.0f64; MAX_PERIOD];
    repeat(k, l, &mut kv);
    let kv = &kv[..l];
    let (mut v1, mut v2) = ([0.0f64; MAX_PERIOD], [0.0f64; MAX_PERIOD]);
    let (p1, p2) = (&mut v1[..l], &mut v2[..l]);
    let mut it = x.chunks_exact(l);
    for r in &mut it {
        for j in 0..l {
            let d = r[j] as f64 - kv[j];
            p1[j] += d;
            p2[j] = d.mul_add(d, p2[j]);
        }
    }
    fold(p1, p2, c, a1, a2);
    strip_acc_shifted_1(it.remainder(), c, 0, k, a1, a2);
}

/// Rows of `k.len()` channels: `a1[c] += dy`, `a2[c] += dy * (x - k[c])` over every row, in
/// regrouped rows of `l` values.
#[inline(always)]
pub(crate) fn acc_grad(x: &[f32], dy: &[f32], k: &[f64], l: usize, a1: &mut [f64], a2: &mut [f64]) {
    let c = k.len();
    let mut kv = [0.0f64; MAX_PERIOD];
    repeat(k, l, &mut kv);
    let kv = &kv[..l];
    let (mut v1, mut v2) = ([0.0f64; MAX_PERIOD], [0.0f64; MAX_PERIOD]);
    let (p1, p2) = (&mut v1[..l], &mut v2[..l]);
    let (mut ix, mut id) = (x.chunks_exact(l), dy.chunks_exact(l));
    for (r, g) in (&mut ix).zip(&mut id) {
        for j in 0..l {
            let e = g[j] as f64;
            p1[j] += e;
            p2[j] = e.mul_add(r[j] as f64 - kv[j], p2[j]);
        }
    }
    fold(p1, p2, c, a1, a2);
    strip_acc_grad_1(ix.remainder(), id.remainder(), c, 0, k, a1, a2);
}

/// Adds the sums kept per position of a regrouped row into their channels (position `j` is
/// channel `j % c`), in position order.
#[inline(always)]
fn fold(p1: &[f64], p2: &[f64], c: usize, a1: &mut [f64], a2: &mut [f64]) {
    for (j, (v1, v2)) in p1.iter().zip(p2).enumerate() {
        a1[j % c] += v1;
        a2[j % c] += v2;
    }
}

/// The first `whole` values of a block of rows `c` wide, `l` at a time (a multiple of `c`):
/// the rest are whole rows to be done `c` at a time.
#[inline(always)]
pub(crate) fn split(len: usize, l: usize) -> usize {
    len / l * l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_whole_vectors_of_whole_rows() {
        assert_eq!(period(3), Some(24));
        assert_eq!(period(8), None);
        assert_eq!(period(16), None);
        assert_eq!(period(0), None);
        for c in 1..16 {
            if let Some(l) = period(c) {
                assert!(l % c == 0 && l % 8 == 0 && l <= MAX_PERIOD, "c = {c}: {l}");
            }
        }
        let mut out = [0u8; 6];
        repeat(&[1, 2, 3], 6, &mut out);
        assert_eq!(out, [1, 2, 3, 1, 2, 3]);
    }
}
