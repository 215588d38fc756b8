//! Times the three kernels on any shapes given on the command line (best of 7 after one
//! warm-up call) and prints milliseconds and effective GB/s over the memory-traffic floor
//! (forward and eval: 2 x bytes; backward: 3 x bytes; the batch moments alone: 1 x bytes).
//!
//! RAYON_NUM_THREADS=2 cargo run --release -p batchnorm --example shapes -- NC:64x100000 NHWC:32x56x56x64

use batchnorm::{batch_moments_into, parse_shape, BatchNorm, BatchNormConfig, Dims, Layout, Moments, SavedStats, Workspace};
use std::time::Instant;

fn best_of_7<F: FnMut()>(mut f: F) -> f64 {
    f();
    (0..7)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let shapes: Vec<(Layout, Vec<usize>)> = match std::env::args().skip(1).map(|a| parse_shape(&a)).collect() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if shapes.is_empty() {
        eprintln!("usage: shapes LAYOUT:DxDx... [...]   e.g. NC:64x100000 NHWC:32x56x56x64");
        std::process::exit(2);
    }
    for (layout, shape) in shapes {
        let d = Dims::new(layout, &shape).expect("checked by parse_shape");
        let n = d.len();
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 1e-3).collect();
        let dy: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 * 1e-3).collect();
        let (mut y, mut dx) = (vec![0.0f32; n], vec![0.0f32; n]);
        let (mut dw, mut db) = (vec![0.0; d.channels], vec![0.0; d.channels]);
        let mut saved = SavedStats::with_channels(d.channels);
        let mut bn = BatchNorm::new(BatchNormConfig::new(d.channels)).expect("config");
        let bytes = n as f64 * 4.0;
        let fwd = best_of_7(|| bn.forward_train_into(&x, d, &mut y, &mut saved).expect("forward"));
        bn.forward_train_into(&x, d, &mut y, &mut saved).expect("forward");
        let bwd = best_of_7(|| bn.backward_into(&x, &dy, d, &saved, &mut dx, Some(&mut dw), Some(&mut db)).expect("backward"));
        let eval = best_of_7(|| bn.forward_eval_into(&x, d, &mut y, &mut saved).expect("eval"));
        let (mut m, mut ws) = (vec![Moments::EMPTY; d.channels], Workspace::new());
        let stats = best_of_7(|| batch_moments_into(&x, d, &mut m, &mut ws).expect("moments"));
        let gbps = |k: f64, t: f64| k * bytes / t / 1e9;
        println!(
            "{layout:5} {:>20} {:7.1} MB  train fwd {:8.3} ms {:5.1} GB/s  backward {:8.3} ms {:5.1} GB/s  eval {:8.3} ms {:5.1} GB/s  moments {:8.3} ms {:5.1} GB/s",
            shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("x"),
            bytes / 1e6,
            fwd * 1e3,
            gbps(2.0, fwd),
            bwd * 1e3,
            gbps(3.0, bwd),
            eval * 1e3,
            gbps(2.0, eval),
            stats * 1e3,
            gbps(1.0, stats)
        );
    }
}
