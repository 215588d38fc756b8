//! The `_into` kernels write every element of their output, on every path (column tiles,
//! register strips, narrow rows, channel tasks, memory-order slices, streamed outputs), so
//! callers may hand them buffers that were never initialised (the candle ops do).

mod common;

use batchnorm::{backward_into, forward_eval_into, forward_train_into, inv_std, Dims, Layout, Moments, SavedStats, Workspace};
use common::Rng;

fn no_nan(v: &[f32], what: &str, layout: Layout, shape: &[usize]) {
    if let Some(i) = v.iter().position(|f| f.is_nan()) {
        panic!("{what} {layout} {shape:?}: element {i} of {} left unwritten", v.len());
    }
}

#[test]
fn outputs_are_written_in_full() {
    let shapes: [(Layout, &[usize]); 15] = [
        (Layout::Nc, &[60, 100]),
        (Layout::Nc, &[256, 1024]),
        (Layout::Nc, &[16, 3000]),          // column tiles
        (Layout::Nhwc, &[4, 9, 9, 3]),      // narrow rows
        (Layout::Nhwc, &[4, 7, 7, 200]),    // backward strips asking for rows further down
        (Layout::Nchw, &[2, 16, 96, 96]),   // channel tasks
        (Layout::Nchw, &[8, 32, 7, 7]),     // memory-order slices
        (Layout::Nchw, &[90, 16, 55, 55]),  // memory-order slices, second passes from the end (17.4 MB)
        (Layout::Nc, &[1030, 4100]),        // streamed rows (16.9 MB)
        (Layout::Nchw, &[2, 70, 175, 175]), // streamed channel runs (17.2 MB, odd run length)
        (Layout::Nchw, &[96, 129, 19, 19]), // short runs streamed across run boundaries (17.9 MB, runs of 361)
        (Layout::Nhwc, &[2, 97, 97, 256]),  // backward streamed from 11 MB, rows of 256
        (Layout::Nhwc, &[2, 190, 230, 48]), // streamed rows, constants in registers (16.8 MB)
        (Layout::Nhwc, &[2, 181, 183, 64]), // streamed rows, constants in registers (17 MB)
        (Layout::Nc, &[42000, 100]),        // rows of odd width as one stream (16.8 MB, AVX-512)
    ];
    let mut rng = Rng::new(5);
    for (layout, shape) in shapes {
        let d = Dims::new(layout, shape).unwrap();
        let c = d.channels;
        let x = rng.vec(d.len(), 1.0, 2.0);
        let dy = rng.vec(d.len(), 0.0, 1.0);
        let (w, b) = (rng.vec(c, 1.0, 0.1), rng.vec(c, 0.0, 0.1));
        let mut ws = Workspace::new();
        let mut y = vec![f32::NAN; d.len()];
        let mut m = vec![Moments::EMPTY; c];
        let mut saved = SavedStats::with_channels(c);
        forward_train_into(&x, d, Some(&w), Some(&b), 1e-5, &mut y, &mut m, &mut saved, &mut ws).unwrap();
        no_nan(&y, "training forward", layout, shape);
        let mut dx = vec![f32::NAN; d.len()];
        let (mut dw, mut db) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        backward_into(&x, &dy, d, Some(&w), &saved, &mut dx, Some(&mut dw), Some(&mut db), &mut ws).unwrap();
        no_nan(&dx, "backward", layout, shape);
        no_nan(&dw, "dweight", layout, shape);
        no_nan(&db, "dbias", layout, shape);
        let (mean, var) = (rng.vec(c, 1.0, 0.1), rng.vec(c, 4.0, 0.1));
        let mut ye = vec![f32::NAN; d.len()];
        forward_eval_into(&x, d, Some(&w), Some(&b), &mean, &var, 1e-5, &mut ye, &mut ws).unwrap();
        no_nan(&ye, "eval forward", layout, shape);
        let mut running = SavedStats::with_channels(c);
        running.mean.iter_mut().zip(&mean).for_each(|(s, &v)| *s = v as f64);
        running.invstd.iter_mut().zip(&var).for_each(|(s, &v)| *s = inv_std(v as f64, 1e-5));
        running.source = batchnorm::StatsSource::Running;
        let mut dxe = vec![f32::NAN; d.len()];
        backward_into(&x, &dy, d, Some(&w), &running, &mut dxe, None, None, &mut ws).unwrap();
        no_nan(&dxe, "eval backward", layout, shape);
    }
}
