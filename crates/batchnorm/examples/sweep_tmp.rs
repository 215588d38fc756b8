use batchnorm::{BatchNorm, BatchNormConfig, Dims, Layout, SavedStats};
use std::time::Instant;
fn t<F: FnMut()>(mut f: F) -> f64 { f(); let mut best = f64::MAX; for _ in 0..7 { let s = Instant::now(); f(); best = best.min(s.elapsed().as_secs_f64()); } best }
fn main() {
    let shapes: Vec<(Layout, Vec<usize>)> = std::env::args().skip(1).map(|a| {
        let (l, s) = a.split_once(':').unwrap();
        (l.parse().unwrap(), s.split('x').map(|v| v.parse().unwrap()).collect())
    }).collect();
    for (l, s) in shapes {
        let d = Dims::new(l, &s).unwrap(); let n = d.len();
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 1e-3).collect();
        let dy: Vec<f32> = (0..n).map(|i| ((i * 104729) % 997) as f32 * 1e-3).collect();
        let (mut y, mut dx) = (vec![0.0f32; n], vec![0.0f32; n]);
        let (mut dw, mut db) = (vec![0.0; d.channels], vec![0.0; d.channels]);
        let mut saved = SavedStats::with_channels(d.channels);
        let mut bn = BatchNorm::new(BatchNormConfig::new(d.channels)).unwrap();
        let b = n as f64 * 4.0;
        let f = t(|| bn.forward_train_into(&x, d, &mut y, &mut saved).unwrap());
        bn.forward_train_into(&x, d, &mut y, &mut saved).unwrap();
        let bw = t(|| bn.backward_into(&x, &dy, d, &saved, &mut dx, Some(&mut dw), Some(&mut db)).unwrap());
        let e = t(|| bn.forward_eval_into(&x, d, &mut y, &mut saved).unwrap());
        println!("{:5} {:>22} {:6.1} MB  fwd {:7.3} ms {:5.1} GB/s  bwd {:7.3} ms {:5.1} GB/s  eval {:7.3} ms {:5.1} GB/s", l.name(), format!("{s:?}"), b / 1e6, f * 1e3, 2.0 * b / f / 1e9, bw * 1e3, 3.0 * b / bw / 1e9, e * 1e3, 2.0 * b / e / 1e9);
    }
}
