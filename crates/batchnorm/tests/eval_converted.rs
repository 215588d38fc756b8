//! The eval forward over tensors stored in another type: bit for bit the float32 eval's
//! results narrowed, for every layout and at any thread count.

mod common;

use batchnorm::{forward_eval_converted_into, forward_eval_into, BnError, Dims, Layout, Workspace};
use common::Rng;

/// bfloat16 as its bits: widening is exact, narrowing rounds to nearest, ties to even.
fn widen(s: &[u16], o: &mut [f32]) {
    o.iter_mut().zip(s).for_each(|(o, &b)| *o = f32::from_bits((b as u32) << 16));
}

fn narrow(s: &[f32], o: &mut [u16]) {
    o.iter_mut().zip(s).for_each(|(o, &v)| *o = bf16_bits(v));
}

fn bf16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

#[test]
fn narrowed_float32_eval_bit_for_bit() {
    let cases: [(Layout, &[usize]); 9] = [
        (Layout::Nc, &[3, 5]),
        (Layout::Nc, &[300, 5000]),
        (Layout::Nc, &[64, 1024]),
        (Layout::Ncl, &[4, 3, 10]),
        (Layout::Nchw, &[4, 3, 7, 7]),
        (Layout::Nchw, &[8, 64, 56, 56]),
        (Layout::Nhwc, &[2, 5, 5, 3]),
        (Layout::Nhwc, &[16, 14, 14, 256]),
        (Layout::Nchw, &[2, 2, 100, 100]),
    ];
    for (layout, shape) in cases {
        let d = Dims::new(layout, shape).unwrap();
        let c = d.channels;
        let mut rng = Rng::new(d.len() as u64);
        let x: Vec<u16> = rng.vec(d.len(), 0.5, 2.0).into_iter().map(bf16_bits).collect();
        let (w, b) = (rng.vec(c, 1.0, 0.3), rng.vec(c, 0.0, 0.5));
        let mean = rng.vec(c, 0.3, 0.5);
        let var: Vec<f32> = rng.vec(c, 2.0, 0.5).into_iter().map(|v| v.abs() + 0.1).collect();
        // The float32 eval on the widened input, then narrowed.
        let mut xf = vec![0.0f32; d.len()];
        widen(&x, &mut xf);
        let mut yf = vec![0.0f32; d.len()];
        forward_eval_into(&xf, d, Some(&w), Some(&b), &mean, &var, 1e-5, &mut yf, &mut Workspace::new()).unwrap();
        let mut want = vec![0u16; d.len()];
        narrow(&yf, &mut want);
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut y = vec![0xffffu16; d.len()];
            pool.install(|| forward_eval_converted_into(&x, d, Some(&w), Some(&b), &mean, &var, 1e-5, &mut y, widen, narrow, &mut Workspace::new())).unwrap();
            let diff = y.iter().zip(&want).position(|(a, b)| a != b);
            assert!(diff.is_none(), "{layout} {shape:?} at {threads} threads: first difference at {diff:?}");
        }
        // Without the affine parameters too.
        let mut yf = vec![0.0f32; d.len()];
        forward_eval_into(&xf, d, None, None, &mean, &var, 1e-5, &mut yf, &mut Workspace::new()).unwrap();
        narrow(&yf, &mut want);
        let mut y = vec![0u16; d.len()];
        forward_eval_converted_into(&x, d, None, None, &mean, &var, 1e-5, &mut y, widen, narrow, &mut Workspace::new()).unwrap();
        assert!(y == want, "{layout} {shape:?} without affine parameters");
    }
}

#[test]
fn bad_lengths_are_refused_and_the_output_untouched() {
    let d = Dims::new(Layout::Nchw, &[2, 3, 4, 4]).unwrap();
    let (x, stats) = (vec![0u16; d.len()], vec![1.0f32; 3]);
    let mut y = vec![7u16; d.len()];
    let mut ws = Workspace::new();
    let e = forward_eval_converted_into(&x[1..], d, None, None, &stats, &stats, 1e-5, &mut y, widen, narrow, &mut ws).unwrap_err();
    assert!(matches!(e, BnError::LengthMismatch { .. }), "{e}");
    let e = forward_eval_converted_into(&x, d, Some(&stats[..2]), None, &stats, &stats, 1e-5, &mut y, widen, narrow, &mut ws).unwrap_err();
    assert!(matches!(e, BnError::LengthMismatch { .. }), "{e}");
    let e = forward_eval_converted_into(&x, d, None, None, &stats, &stats[..2], 1e-5, &mut y, widen, narrow, &mut ws).unwrap_err();
    assert!(matches!(e, BnError::LengthMismatch { .. }), "{e}");
    assert!(y.iter().all(|&v| v == 7));
}
