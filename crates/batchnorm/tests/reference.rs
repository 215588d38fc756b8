//! Property tests: the kernels against a float64 reference over random layouts, shapes,
//! settings and multi-step sequences.

mod common;

use batchnorm::{batch_moments, BatchNorm, BatchNormConfig, BnError, Dims, Layout, Moments, Momentum, RunningVar};
use common::{assert_close, batch_stats, eval_backward, normalize, to_f64, train_backward, Rng};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Setup {
    layout: Layout,
    shape: Vec<usize>,
    momentum: Option<f64>,
    biased: bool,
    affine: bool,
    track: bool,
    eps: f64,
    modes: Vec<bool>,
    offset: f64,
    std: f64,
    seed: u64,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop::sample::select(Layout::ALL.to_vec()),
        prop::collection::vec(1usize..6, 5),
        prop::option::of(0.0f64..=1.0),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![1e-5, 1e-3, 0.1]),
        prop::collection::vec(any::<bool>(), 1..4),
        prop::sample::select(vec![0.0, 3.0, -50.0, 1000.0]),
        prop::sample::select(vec![0.1, 1.0, 10.0]),
        any::<u64>(),
    )
        .prop_map(|(layout, dims, momentum, biased, affine, track, eps, modes, offset, std, seed)| Setup {
            layout,
            shape: dims[..layout.rank()].to_vec(),
            momentum,
            biased,
            affine,
            track,
            eps,
            modes,
            offset,
            std,
            seed,
        })
}

fn run(s: &Setup) -> std::result::Result<(), TestCaseError> {
    let d = Dims::new(s.layout, &s.shape).unwrap();
    let c = d.channels;
    let mut rng = Rng::new(s.seed);
    let cfg = BatchNormConfig::new(c)
        .eps(s.eps)
        .momentum(s.momentum.map_or(Momentum::CumulativeAverage, Momentum::Exponential))
        .running_var(if s.biased { RunningVar::Biased } else { RunningVar::Unbiased })
        .affine(s.affine)
        .track_running_stats(s.track);
    let mut bn = BatchNorm::new(cfg).unwrap();
    if s.affine {
        bn.set_affine(&rng.vec(c, 1.0, 0.5), &rng.vec(c, 0.0, 0.5)).unwrap();
    }
    let w = bn.weight().map(<[f32]>::to_vec);
    let bias = bn.bias().map(<[f32]>::to_vec);
    let (mut rm, mut rv) = (vec![0.0f64; c], vec![1.0f64; c]);
    let mut nbt = 0i64;
    for &train in &s.modes {
        let x = rng.vec(d.len(), s.offset, s.std);
        let dy = rng.vec(d.len(), 0.0, 1.0);
        let batch_mode = train || !s.track;
        if batch_mode && d.per_channel() == 1 {
            let before = bn.clone();
            let refused = matches!(bn.forward(&x, d, train), Err(BnError::Degenerate { .. }));
            prop_assert!(refused);
            prop_assert_eq!(bn.running_mean(), before.running_mean());
            prop_assert_eq!(bn.num_batches_tracked(), before.num_batches_tracked());
            continue;
        }
        let (y, saved) = bn.forward(&x, d, train).unwrap();
        let grads = bn.backward(&x, &dy, d, &saved).unwrap();
        let (want_y, (dx, dg, db)) = if batch_mode {
            let (mean, var) = batch_stats(&x, d);
            (normalize(&to_f64(&x), d, w.as_deref(), bias.as_deref(), &mean, &var, s.eps), train_backward(&x, &dy, d, w.as_deref(), s.eps))
        } else {
            let rmf: Vec<f32> = rm.iter().map(|&v| v as f32).collect();
            let rvf: Vec<f32> = rv.iter().map(|&v| v as f32).collect();
            let (rm64, rv64) = (to_f64(&rmf), to_f64(&rvf));
            (normalize(&to_f64(&x), d, w.as_deref(), bias.as_deref(), &rm64, &rv64, s.eps), eval_backward(&x, &dy, d, w.as_deref(), &rmf, &rvf, s.eps))
        };
        // The inputs are float32: the reference is exact on them, ours rounds once or twice.
        assert_close("y", &y, &want_y, 2e-5);
        assert_close("dx", &grads.dx, &dx, 5e-5);
        if s.affine {
            assert_close("dweight", grads.dweight.as_ref().unwrap(), &dg, 2e-5);
            assert_close("dbias", grads.dbias.as_ref().unwrap(), &db, 2e-5);
        } else {
            prop_assert!(grads.dweight.is_none() && grads.dbias.is_none());
        }
        if train && s.track {
            nbt += 1;
            let (mean, var) = batch_stats(&x, d);
            let m = d.per_channel() as f64;
            let f = s.momentum.unwrap_or(1.0 / nbt as f64);
            for ch in 0..c {
                let vb = if s.biased { var[ch] } else { var[ch] * m / (m - 1.0) };
                rm[ch] = (1.0 - f) * (rm[ch] as f32 as f64) + f * mean[ch];
                rv[ch] = (1.0 - f) * (rv[ch] as f32 as f64) + f * vb;
            }
            assert_close("running_mean", bn.running_mean().unwrap(), &rm, 1e-5);
            assert_close("running_var", bn.running_var().unwrap(), &rv, 1e-5);
            rm.iter_mut().zip(bn.running_mean().unwrap()).for_each(|(a, &b)| *a = b as f64);
            rv.iter_mut().zip(bn.running_var().unwrap()).for_each(|(a, &b)| *a = b as f64);
        }
        prop_assert_eq!(bn.num_batches_tracked(), nbt);
        prop_assert_eq!(bn.running_mean().is_some(), s.track);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn matches_float64_reference(s in setup()) {
        run(&s)?;
    }

    #[test]
    fn moments_merge_equals_moments_of_concatenation(
        a in prop::collection::vec(-1e3f32..1e3, 0..50),
        b in prop::collection::vec(-1e3f32..1e3, 0..50),
    ) {
        let mut all = a.clone();
        all.extend_from_slice(&b);
        let merged = Moments::from_slice(&a).merge(&Moments::from_slice(&b));
        let direct = Moments::from_slice(&all);
        prop_assert_eq!(merged.count, direct.count);
        prop_assert!((merged.mean - direct.mean).abs() <= 1e-9 * (1.0 + direct.mean.abs()));
        prop_assert!((merged.m2 - direct.m2).abs() <= 1e-9 * (1.0 + direct.m2));
    }

    #[test]
    fn batch_moments_match_two_pass_reference(
        layout in prop::sample::select(Layout::ALL.to_vec()),
        dims in prop::collection::vec(1usize..7, 5),
        offset in prop::sample::select(vec![0.0, 1e4, -3e3]),
        seed in any::<u64>(),
    ) {
        let d = Dims::new(layout, &dims[..layout.rank()]).unwrap();
        let x = Rng::new(seed).vec(d.len(), offset, 1.0);
        let got = batch_moments(&x, d).unwrap();
        let (mean, var) = batch_stats(&x, d);
        for c in 0..d.channels {
            prop_assert_eq!(got[c].count, d.per_channel() as f64);
            prop_assert!((got[c].mean - mean[c]).abs() <= 1e-12 * (1.0 + mean[c].abs()));
            prop_assert!((got[c].var_biased() - var[c]).abs() <= 1e-9 * (1.0 + var[c]));
        }
    }
}

/// One training step on `x` (seeded, mean `offset`, spread `std`) against the reference:
/// y within `tol_y`, dx within 1e-4, dweight and dbias within 1e-5.
fn check_step(layout: Layout, shape: &[usize], seed: u64, offset: f64, std: f64, tol_y: f64) {
    let d = Dims::new(layout, shape).unwrap();
    let mut rng = Rng::new(seed);
    let x = rng.vec(d.len(), offset, std);
    let dy = rng.vec(d.len(), 0.5, 1.0);
    let mut bn = BatchNorm::new(BatchNormConfig::new(d.channels)).unwrap();
    bn.set_affine(&rng.vec(d.channels, 1.0, 0.3), &rng.vec(d.channels, 0.0, 1.0)).unwrap();
    let w = bn.weight().unwrap().to_vec();
    let b = bn.bias().unwrap().to_vec();
    let (y, saved) = bn.forward_train(&x, d).unwrap();
    let (mean, var) = batch_stats(&x, d);
    let want = normalize(&to_f64(&x), d, Some(&w), Some(&b), &mean, &var, 1e-5);
    assert_close(&format!("{layout} {shape:?} y"), &y, &want, tol_y);
    let g = bn.backward(&x, &dy, d, &saved).unwrap();
    let (dx, dg, db) = train_backward(&x, &dy, d, Some(&w), 1e-5);
    assert_close(&format!("{layout} {shape:?} dx"), &g.dx, &dx, 1e-4);
    assert_close(&format!("{layout} {shape:?} dweight"), &g.dweight.unwrap(), &dg, 1e-5);
    assert_close(&format!("{layout} {shape:?} dbias"), &g.dbias.unwrap(), &db, 1e-5);
}

/// Big enough to take the multi-block and parallel paths, which the small property cases
/// never reach.
#[test]
fn large_tensors_match_reference_on_every_path() {
    for (layout, shape) in [
        (Layout::Nchw, vec![16, 2, 48, 48]),  // few channels: memory-order blocks
        (Layout::Nchw, vec![8, 40, 16, 16]),  // short runs: memory-order blocks, statistics in 16 lanes
        (Layout::Nchw, vec![16, 40, 9, 9]),   // runs of 81: statistics in 8 lanes
        (Layout::Nchw, vec![2, 12, 96, 96]),  // long runs, many channels: channel-by-channel tasks
        (Layout::Nchw, vec![1, 50, 96, 96]),  // channel tasks of 3 pipelined channels (last: 2)
        (Layout::Nhwc, vec![8, 24, 24, 40]),  // rows, several blocks
        (Layout::Nhwc, vec![8, 12, 12, 256]), // statistics in register strips, backward one row at a time
        (Layout::Nc, vec![1000, 70]),
        (Layout::Nc, vec![20, 1700]),       // few rows, many channels: backward in column tiles
        (Layout::Nc, vec![8, 9000]),        // per-channel work in parallel tasks
        (Layout::Nhwc, vec![8, 40, 41, 3]), // rows of 3 regrouped into rows of 24
        (Layout::Nc, vec![7001, 5]),        // rows of 5 regrouped into rows of 40, rows left over
        (Layout::Ncdhw, vec![3, 3, 10, 30, 30]),
        (Layout::Ndhwc, vec![3, 4, 10, 12, 40]), // rows of 40, several blocks
    ] {
        check_step(layout, &shape, 7, 1e3, 2.0, 1e-4);
    }
}

/// Outputs of 16 MB and more are written with streaming stores where the runs allow it
/// (rows of whole vectors, channel runs of 1024 and more; where the CPU has AVX-512, shorter
/// channel runs of y and rows of other widths as one stream across their boundaries) and
/// with ordinary stores where they do not: every case checked against the reference.
#[test]
fn streamed_outputs_match_reference() {
    for (layout, shape) in [
        (Layout::Nc, vec![2048, 2104]),        // rows of whole vectors: streamed
        (Layout::Nc, vec![2048, 2048]),        // rows of whole lines side by side, constants interleaved (AVX-512)
        (Layout::Nhwc, vec![4, 128, 130, 64]), // rows of 64: constants in registers where the CPU allows
        (Layout::Nchw, vec![4, 16, 256, 260]), // long runs, channel-by-channel tasks: streamed
        (Layout::Nchw, vec![64, 129, 23, 23]), // short runs: y one stream across runs (AVX-512), dx cached
        (Layout::Nchw, vec![1300, 3, 33, 33]), // runs of 1089 (streamed one by one) and 3 channels
        (Layout::Nhwc, vec![8, 72, 80, 101]),  // rows of odd width: one stream across rows (AVX-512)
        (Layout::Nc, vec![21000, 200]),        // rows of whole vectors, not lines: the same
    ] {
        let n: usize = shape.iter().product();
        assert!(n * 4 >= 16 << 20, "{shape:?} must reach the streaming threshold");
        check_step(layout, &shape, 3, -2.0, 3.0, 1e-5);
    }
}
