//! Eval-mode forward over tensors stored in another element type (f16 and bf16 in the candle
//! layer): one pass over memory instead of three.
//!
//! Widening the whole input to float32, running [`forward_eval_into`](crate::forward_eval_into)
//! and narrowing the whole output reads and writes the tensor three times, twice in float32.
//! Here each task widens a block of 2,048 values into a buffer on its stack, normalises it
//! into a second one with the float32 pass's arithmetic (`(x - ctr) * s + t`, as every eval path
//! computes it, so the values before narrowing are bit for bit the float32 eval's), and
//! narrows it into the output: the tensor is read and written once, in its own type.

use crate::coefficients::parts;
use crate::error::Result;
use crate::forward_eval::{coef_into, eval_stats};
use crate::layout::Dims;
use crate::simd::{affine, multiversion, rows_affine};
use crate::workspace::{sized, Workspace};

/// Values a task converts at a time: two buffers of 8 KB of float32 on its stack, which stay
/// in L1 (32 KB here) beside the block's input and output. Blocks of 4,096 (16 KB buffers,
/// spilling to L2) took longer: bf16 eval of NCHW 64x256x14x14 in the candle layer 0.46 ms
/// at 2 threads against 0.58, 1,024 in between (0.49).
const BLOCK: usize = 2048;

/// Values of one parallel task: 16 blocks.
const TASK: usize = 16 * BLOCK;

/// Tensors of fewer values run on the calling thread (a parallel region costs more than the
/// pass).
const SEQUENTIAL_BELOW: usize = TASK;

/// Eval forward of a tensor stored as `T`: `y = narrow(weight * (widen(x) - mean) /
/// sqrt(var + eps) + bias)` per channel, with given statistics, where `widen` converts a
/// slice of `T` to float32 and `narrow` a slice of float32 back (both given the same
/// lengths, at most 2,048 values at a time).
///
/// The float32 values before `narrow` are bit for bit those [`forward_eval_into`] computes
/// from the widened input, whatever the number of threads.
///
/// ```
/// use batchnorm::{forward_eval_converted_into, Dims, Layout, Workspace};
/// // Values stored as float64 here (f16 and bf16 in practice): widened, normalised, narrowed.
/// let x = [1.0f64, 2.0, 3.0, 4.0];
/// let mut y = [0.0f64; 4];
/// let d = Dims::new(Layout::Nc, &[2, 2]).unwrap();
/// let widen = |s: &[f64], o: &mut [f32]| o.iter_mut().zip(s).for_each(|(o, &v)| *o = v as f32);
/// let narrow = |s: &[f32], o: &mut [f64]| o.iter_mut().zip(s).for_each(|(o, &v)| *o = v as f64);
/// forward_eval_converted_into(&x, d, None, Some(&[0.5, 0.5]), &[1.0, 2.0], &[4.0, 4.0], 1e-12,
///                             &mut y, widen, narrow, &mut Workspace::new()).unwrap();
/// assert_eq!(y, [0.5, 0.5, 1.5, 1.5]);
/// ```
///
/// [`forward_eval_into`]: crate::forward_eval_into
#[allow(clippy::too_many_arguments)]
pub fn forward_eval_converted_into<T, W, N>(
    x: &[T],
    d: Dims,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    mean: &[f32],
    var: &[f32],
    eps: f64,
    y: &mut [T],
    widen: W,
    narrow: N,
    ws: &mut Workspace,
) -> Result<()>
where
    T: Copy + Send + Sync,
    W: Fn(&[T], &mut [f32]) + Sync,
    N: Fn(&[f32], &mut [T]) + Sync,
{
    let (m, is) = eval_stats(d, (x.len(), y.len()), weight, bias, mean, var, eps, &mut ws.totals)?;
    if d.is_empty() {
        return Ok(());
    }
    let coef = sized(&mut ws.coef, 3 * d.channels, 0.0);
    coef_into(coef, m, is, weight, bias);
    let coef = &*coef;
    // A task's blocks share its two buffers: zeroing them per block cost 16% of a bf16 eval
    // of NCHW 32x64x56x56 (perf, 2 threads).
    let task = |i: usize, yt: &mut [T]| {
        let (mut wide, mut out) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
        for (j, yb) in yt.chunks_mut(BLOCK).enumerate() {
            let (lo, n) = (i * TASK + j * BLOCK, yb.len());
            widen(&x[lo..lo + n], &mut wide[..n]);
            affine_block(&wide[..n], &mut out[..n], lo, d, coef);
            narrow(&out[..n], yb);
        }
    };
    if d.len() < SEQUENTIAL_BELOW {
        task(0, y);
    } else {
        use rayon::prelude::*;
        y.par_chunks_mut(TASK).enumerate().for_each(|(i, yt)| task(i, yt));
    }
    Ok(())
}

multiversion! {
    /// `y = (x - ctr) * s + t` over the values at flat positions `lo..lo + x.len()` of a
    /// tensor of shape `d`, `coef = [ctr | s | t]`, segment by segment (pieces of rows, or of
    /// channels-first runs), each with its channels' constants.
    fn affine_block(x: &[f32], y: &mut [f32], lo: usize, d: Dims, coef: &[f32]) {
        let c = d.channels;
        let [ctr, s, t] = parts(coef, c);
        let mut at = 0;
        while at < x.len() {
            let (p, rest) = (lo + at, x.len() - at);
            if d.is_rows() {
                // Whole rows from a row's start, else channels `c0..c0 + w` of one row.
                let c0 = p % c;
                let n = if c0 == 0 && rest >= c { rest / c * c } else { (c - c0).min(rest) };
                let w = n.min(c - c0);
                rows_affine(&x[at..at + n], &mut y[at..at + n], &ctr[c0..c0 + w], &s[c0..c0 + w], &t[c0..c0 + w]);
                at += n;
            } else {
                // `n` values of the run of channel `k`.
                let (k, n) = ((p / d.inner) % c, (d.inner - p % d.inner).min(rest));
                affine(&x[at..at + n], &mut y[at..at + n], ctr[k], s[k], t[k]);
                at += n;
            }
        }
    }
}
