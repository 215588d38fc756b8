//! Criterion benchmarks of the kernels on the shared benchmark suite, with effective
//! throughput over the memory-traffic floor (train forward and eval: 2 x bytes; forward +
//! backward: 5 x bytes; the statistics pass alone: 1 x bytes) and a plain 256 MB copy, with
//! memcpy and with streaming stores, as the bandwidth reference.
//!
//! BN_THREADS=1 cargo bench -p batchnorm --bench kernels   (threads: BN_THREADS, default 2)

use batchnorm::{batch_moments_into, BatchNorm, BatchNormConfig, Dims, Layout, Moments, SavedStats, Workspace};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

const SUITE: [(Layout, &[usize]); 10] = [
    // Beyond the shared suite: outputs large enough to stream, with short runs (49 values)
    // and rows that are not a whole number of vectors (100 channels).
    (Layout::Nchw, &[512, 512, 7, 7]),
    (Layout::Nc, &[100000, 100]),
    (Layout::Nc, &[60, 100]),
    (Layout::Nc, &[256, 1024]),
    (Layout::Nc, &[4096, 4096]),
    (Layout::Nchw, &[32, 64, 56, 56]),
    (Layout::Nchw, &[64, 256, 14, 14]),
    (Layout::Nchw, &[128, 512, 7, 7]),
    (Layout::Nhwc, &[32, 56, 56, 64]),
    (Layout::Nhwc, &[64, 14, 14, 256]),
];

fn kernels(c: &mut Criterion) {
    let threads: usize = std::env::var("BN_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    // The global pool, so no call pays for waking another pool's threads.
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().unwrap();
    {
        let mut g = c.benchmark_group(format!("bn/{threads}t"));
        g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
        for (layout, shape) in SUITE {
            let d = Dims::new(layout, shape).unwrap();
            let n = d.len();
            let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 1e-3).collect();
            let dy: Vec<f32> = (0..n).map(|i| ((i * 104729) % 997) as f32 * 1e-3).collect();
            let (mut y, mut dx) = (vec![0.0f32; n], vec![0.0f32; n]);
            let (mut dw, mut db) = (vec![0.0; d.channels], vec![0.0; d.channels]);
            let mut saved = SavedStats::with_channels(d.channels);
            let mut bn = BatchNorm::new(BatchNormConfig::new(d.channels)).unwrap();
            let id = format!("{}-{}", layout, shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("x"));
            let bytes = (n * 4) as u64;
            g.throughput(Throughput::Bytes(2 * bytes));
            g.bench_function(BenchmarkId::new("train_fwd", &id), |b| b.iter(|| bn.forward_train_into(&x, d, &mut y, &mut saved).unwrap()));
            g.throughput(Throughput::Bytes(5 * bytes));
            g.bench_function(BenchmarkId::new("train_fwd_bwd", &id), |b| {
                b.iter(|| {
                    bn.forward_train_into(&x, d, &mut y, &mut saved).unwrap();
                    bn.backward_into(&x, &dy, d, &saved, &mut dx, Some(&mut dw), Some(&mut db)).unwrap();
                })
            });
            g.throughput(Throughput::Bytes(2 * bytes));
            g.bench_function(BenchmarkId::new("eval", &id), |b| b.iter(|| bn.forward_eval_into(&x, d, &mut y, &mut saved).unwrap()));
            // The statistics pass alone (one read): with `eval` (the normalising pass alone),
            // it shows what a training forward costs beyond its two passes.
            let (mut m, mut ws) = (vec![Moments::EMPTY; d.channels], Workspace::new());
            g.throughput(Throughput::Bytes(bytes));
            g.bench_function(BenchmarkId::new("moments", &id), |b| b.iter(|| batch_moments_into(&x, d, &mut m, &mut ws).unwrap()));
        }
        let n = 64 << 20;
        let src = vec![1.0f32; n];
        let mut dst = vec![0.0f32; n];
        g.throughput(Throughput::Bytes(2 * (n as u64) * 4));
        g.bench_function("copy_256MB", |b| {
            use rayon::prelude::*;
            let chunk = n.div_ceil(threads);
            b.iter(|| dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s)))
        });
        // memcpy reads each destination line before writing it; the kernels stream large
        // outputs, so the copy they are measured against streams too (`bnlab bench` takes
        // the faster of the two, see `copy_bandwidth` there).
        g.bench_function("copy_256MB_streaming", |b| {
            use rayon::prelude::*;
            let chunk = n.div_ceil(threads);
            b.iter(|| dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| stream_copy(s, d)))
        });
        g.finish();
    }
}

/// `d = s` with 16-byte streaming stores (SSE, part of every x86-64); elsewhere a memcpy.
fn stream_copy(s: &[f32], d: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_sfence, _mm_stream_ps};
        let head = d.as_ptr().align_offset(16).min(d.len());
        d[..head].copy_from_slice(&s[..head]);
        let whole = head + (d.len() - head) / 4 * 4;
        for i in (head..whole).step_by(4) {
            // SAFETY: i + 4 <= len for both; d + i is 16-byte aligned.
            unsafe { _mm_stream_ps(d.as_mut_ptr().add(i), _mm_loadu_ps(s.as_ptr().add(i))) };
        }
        d[whole..].copy_from_slice(&s[whole..]);
        // SAFETY: SSE is part of x86-64.
        unsafe { _mm_sfence() };
    }
    #[cfg(not(target_arch = "x86_64"))]
    d.copy_from_slice(s);
}

criterion_group!(benches, kernels);
criterion_main!(benches);
