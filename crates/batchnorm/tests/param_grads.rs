//! The parameter gradients alone equal the full backward's, bit for bit, on every path the
//! backward takes (channel tasks, blocks of rows, column tiles, regrouped narrow rows,
//! passes from the end), with batch and with running statistics, at any thread count; and
//! they match a float64 reference.

mod common;

use batchnorm::{param_grads_into, BatchNorm, BatchNormConfig, BnError, Dims, Layout, SavedStats, Workspace};
use common::{channel, Rng};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// (full backward's dweight and dbias, the parameter gradients alone) for `saved`.
fn both(x: &[f32], dy: &[f32], d: Dims, bn: &mut BatchNorm, saved: &SavedStats) -> ([Vec<u32>; 2], [Vec<u32>; 2]) {
    let g = bn.backward(x, dy, d, saved).unwrap();
    let (mut dw, mut db) = (vec![f32::NAN; d.channels], vec![f32::NAN; d.channels]);
    param_grads_into(x, dy, d, saved, Some(&mut dw), Some(&mut db), &mut Workspace::new()).unwrap();
    ([bits(&g.dweight.unwrap()), bits(&g.dbias.unwrap())], [bits(&dw), bits(&db)])
}

#[test]
fn equal_the_full_backward_bit_for_bit_on_every_path() {
    let shapes: [(Layout, &[usize]); 10] = [
        (Layout::Nc, &[60, 100]),
        (Layout::Nc, &[512, 256]),
        (Layout::Nc, &[16, 2100]), // few rows, many channels: the backward's column tiles
        (Layout::Nchw, &[4, 64, 16, 16]),
        (Layout::Nchw, &[1, 50, 96, 96]), // channel tasks, pipelined
        (Layout::Nhwc, &[8, 32, 32, 16]),
        (Layout::Nhwc, &[8, 32, 33, 3]), // rows of 3 regrouped
        (Layout::Ncl, &[3, 1, 40000]),
        (Layout::Nhwc, &[2, 190, 230, 48]), // 16 MB: passes from the end
        (Layout::Nchw, &[90, 16, 55, 55]),
    ];
    for (layout, shape) in shapes {
        let d = Dims::new(layout, shape).unwrap();
        let mut rng = Rng::new(5);
        let x = rng.vec(d.len(), 2.0, 3.0);
        let dy = rng.vec(d.len(), 0.1, 1.0);
        for threads in [1, 3] {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                let mut bn = BatchNorm::new(BatchNormConfig::new(d.channels)).unwrap();
                let (_, saved) = bn.forward_train(&x, d).unwrap();
                let (full, alone) = both(&x, &dy, d, &mut bn, &saved);
                assert!(full == alone, "{layout} {shape:?}, {threads} threads, batch statistics: differ");
                let (_, saved) = bn.forward_eval(&x, d).unwrap();
                let (full, alone) = both(&x, &dy, d, &mut bn, &saved);
                assert!(full == alone, "{layout} {shape:?}, {threads} threads, running statistics: differ");
            });
        }
    }
}

#[test]
fn match_a_float64_reference() {
    for (layout, shape) in [(Layout::Nchw, vec![3, 4, 5, 7]), (Layout::Nc, vec![33, 9]), (Layout::Nhwc, vec![2, 3, 5, 6])] {
        let d = Dims::new(layout, &shape).unwrap();
        let mut rng = Rng::new(9);
        let x = rng.vec(d.len(), -1.0, 2.0);
        let dy = rng.vec(d.len(), 0.5, 1.5);
        let mut bn = BatchNorm::new(BatchNormConfig::new(d.channels)).unwrap();
        let (_, saved) = bn.forward_train(&x, d).unwrap();
        let (mut dw, mut db) = (vec![0.0f32; d.channels], vec![0.0f32; d.channels]);
        param_grads_into(&x, &dy, d, &saved, Some(&mut dw), Some(&mut db), &mut Workspace::new()).unwrap();
        for c in 0..d.channels {
            let ix = channel(d, c);
            let m = ix.len() as f64;
            let mean = ix.iter().map(|&i| x[i] as f64).sum::<f64>() / m;
            let var = ix.iter().map(|&i| (x[i] as f64 - mean).powi(2)).sum::<f64>() / m;
            let is = 1.0 / (var + 1e-5).sqrt();
            let want_w = ix.iter().map(|&i| dy[i] as f64 * (x[i] as f64 - mean) * is).sum::<f64>();
            let want_b = ix.iter().map(|&i| dy[i] as f64).sum::<f64>();
            assert!((dw[c] as f64 - want_w).abs() <= 1e-6 * (1.0 + want_w.abs()), "{layout} channel {c}: dweight {} against {want_w}", dw[c]);
            assert!((db[c] as f64 - want_b).abs() <= 1e-6 * (1.0 + want_b.abs()), "{layout} channel {c}: dbias {} against {want_b}", db[c]);
        }
    }
}

#[test]
fn wrong_lengths_are_refused_and_nothing_is_written() {
    let d = Dims::new(Layout::Nc, &[4, 3]).unwrap();
    let x = vec![1.0f32; 12];
    let mut bn = BatchNorm::new(BatchNormConfig::new(3)).unwrap();
    let (_, saved) = bn.forward_train(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0], d).unwrap();
    let mut dw = vec![7.0f32; 3];
    let mut short_db = vec![7.0f32; 2];
    let e = param_grads_into(&x, &x, d, &saved, Some(&mut dw), Some(&mut short_db), &mut Workspace::new()).unwrap_err();
    assert!(matches!(e, BnError::LengthMismatch { what: "dbias", .. }), "{e}");
    assert_eq!((dw, short_db), (vec![7.0; 3], vec![7.0; 2]));
    let e = param_grads_into(&x[..11], &x, d, &saved, None, None, &mut Workspace::new()).unwrap_err();
    assert!(matches!(e, BnError::LengthMismatch { what: "x", .. }), "{e}");
}
