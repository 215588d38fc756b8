//! Times the kernels on the benchmark shape suite and prints medians with effective GB/s
//! next to a plain 256 MB copy measured in the same run.
//!
//! cargo run --release -p batchnorm --example bench -- [--threads N] [--json]
//!
//! Effective bytes (the memory-traffic floor): training forward and eval read x and write y
//! (2 x bytes); forward + backward also reads dy and writes dx (5 x bytes).

use batchnorm::{BatchNorm, BatchNormConfig, Dims, Layout, SavedStats};
use std::time::Instant;

const SUITE: [(&str, Layout, [usize; 4], usize); 8] = [
    ("mlp", Layout::Nc, [60, 100, 0, 0], 2),
    ("mlp", Layout::Nc, [256, 1024, 0, 0], 2),
    ("mlp", Layout::Nc, [4096, 4096, 0, 0], 2),
    ("cnn", Layout::Nchw, [32, 64, 56, 56], 4),
    ("cnn", Layout::Nchw, [64, 256, 14, 14], 4),
    ("cnn", Layout::Nchw, [128, 512, 7, 7], 4),
    ("cnn", Layout::Nhwc, [32, 56, 56, 64], 4),
    ("cnn", Layout::Nhwc, [64, 14, 14, 256], 4),
];

fn median(mut f: impl FnMut(), reps: usize) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse().expect("--threads takes a number"))
        .unwrap_or(2);
    let json = args.iter().any(|a| a == "--json");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let mut rows = Vec::new();
        for (kind, layout, shape, rank) in SUITE {
            let shape = &shape[..rank];
            let d = Dims::new(layout, shape).unwrap();
            let n = d.len();
            let bytes = (n * 4) as f64;
            let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
            let dy: Vec<f32> = (0..n).map(|i| ((i * 104729) % 997) as f32 * 1e-3 - 0.5).collect();
            let (mut y, mut dx) = (vec![0.0f32; n], vec![0.0f32; n]);
            let (mut dw, mut db) = (vec![0.0; d.channels], vec![0.0; d.channels]);
            let mut saved = SavedStats::with_channels(d.channels);
            let mut bn = BatchNorm::new(BatchNormConfig::new(d.channels)).unwrap();
            let reps = ((2e9 / (bytes * 10.0)) as usize).clamp(5, 200);
            let t_fwd = median(|| bn.forward_train_into(&x, d, &mut y, &mut saved).unwrap(), reps);
            let t_fb = median(
                || {
                    bn.forward_train_into(&x, d, &mut y, &mut saved).unwrap();
                    bn.backward_into(&x, &dy, d, &saved, &mut dx, Some(&mut dw), Some(&mut db)).unwrap();
                },
                reps,
            );
            let t_eval = median(|| bn.forward_eval_into(&x, d, &mut y, &mut saved).unwrap(), reps);
            let name = shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("x");
            println!(
                "{kind:<4} {:<5} {name:<18} {:8.2} MB  fwd {:8.3} ms ({:5.1} GB/s)  fwd+bwd {:8.3} ms ({:5.1} GB/s)  eval {:8.3} ms ({:5.1} GB/s)",
                layout.name(),
                bytes / 1e6,
                t_fwd * 1e3,
                2.0 * bytes / t_fwd / 1e9,
                t_fb * 1e3,
                5.0 * bytes / t_fb / 1e9,
                t_eval * 1e3,
                2.0 * bytes / t_eval / 1e9
            );
            rows.push(format!(
                "{{\"kind\":\"{kind}\",\"layout\":\"{}\",\"shape\":{shape:?},\"MB\":{},\"train_fwd_ms\":{},\"train_fwd_bwd_ms\":{},\"eval_ms\":{}}}",
                layout.name(),
                bytes / 1e6,
                t_fwd * 1e3,
                t_fb * 1e3,
                t_eval * 1e3
            ));
        }
        let copy = copy_bandwidth();
        println!("copy 256 MB: {copy:.1} GB/s (read+write) with {threads} threads");
        if json {
            println!("[{}]", rows.join(","));
            println!("{{\"copy_GBps\":{copy},\"threads\":{threads}}}");
        }
    });
}

/// A plain parallel copy of a 256 MB buffer, split into one chunk per thread.
fn copy_bandwidth() -> f64 {
    use rayon::prelude::*;
    let n = 64 << 20;
    let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut dst = vec![0.0f32; n];
    let chunk = n.div_ceil(rayon::current_num_threads());
    let t = median(
        || {
            dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s));
        },
        20,
    );
    2.0 * (n * 4) as f64 / t / 1e9
}
