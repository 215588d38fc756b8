//! Bad input: a typed error, never a panic, and the state left untouched.

mod common;

use batchnorm::*;
use common::Rng;

fn layer(c: usize) -> BatchNorm {
    let mut bn = BatchNorm::new(BatchNormConfig::new(c)).unwrap();
    bn.set_affine(&vec![1.5; c], &vec![0.5; c]).unwrap();
    bn.set_running_stats(&vec![0.25; c], &vec![2.0; c]).unwrap();
    bn.set_num_batches_tracked(3);
    bn
}

fn same_state(a: &BatchNorm, b: &BatchNorm) -> bool {
    a.weight() == b.weight()
        && a.bias() == b.bias()
        && a.running_mean() == b.running_mean()
        && a.running_var() == b.running_var()
        && a.num_batches_tracked() == b.num_batches_tracked()
}

#[test]
fn invalid_configurations_are_refused_when_built() {
    for eps in [0.0, -1e-5, f64::NAN, f64::INFINITY] {
        let e = BatchNorm::new(BatchNormConfig::new(4).eps(eps)).unwrap_err();
        assert!(matches!(e, BnError::InvalidConfig(_)), "eps {eps}: {e}");
    }
    for m in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
        let e = BatchNorm::new(BatchNormConfig::new(4).momentum(Momentum::Exponential(m))).unwrap_err();
        assert!(e.to_string().contains("momentum"), "momentum {m}: {e}");
    }
    assert!(BatchNorm::new(BatchNormConfig::new(0)).is_err());
    assert!(BatchNorm::new(BatchNormConfig::new(4).momentum(Momentum::Exponential(0.0))).is_ok());
    assert!(BatchNorm::new(BatchNormConfig::new(4).momentum(Momentum::Exponential(1.0))).is_ok());
    assert!("NCHWX".parse::<Layout>().is_err());
    assert_eq!("nhwc".parse::<Layout>().unwrap(), Layout::Nhwc);
    for l in Layout::ALL {
        assert_eq!(l.name().parse::<Layout>().unwrap(), l);
    }
}

#[test]
fn shape_and_length_mismatches_leave_state_untouched() {
    let mut bn = layer(3);
    let before = bn.clone();
    assert!(matches!(Dims::new(Layout::Nchw, &[2, 3, 4]), Err(BnError::RankMismatch { .. })));
    let d4 = Dims::new(Layout::Nc, &[5, 4]).unwrap();
    let x4 = vec![1.0; 20];
    for train in [true, false] {
        assert_eq!(bn.forward(&x4, d4, train).unwrap_err(), BnError::ChannelMismatch { expected: 3, got: 4 });
    }
    let d = Dims::new(Layout::Nc, &[5, 3]).unwrap();
    let e = bn.forward_train(&[1.0; 14], d).unwrap_err();
    assert!(matches!(e, BnError::LengthMismatch { what: "x", expected: 15, got: 14 }), "{e}");
    let mut y = vec![0.0; 10];
    let mut saved = SavedStats::with_channels(3);
    assert!(matches!(bn.forward_train_into(&[1.0; 15], d, &mut y, &mut saved), Err(BnError::LengthMismatch { what: "y", .. })));
    let kept = SavedStats { mean: vec![7.0; 3], invstd: vec![8.0; 3], source: StatsSource::Batch };
    let mut saved_eval = kept.clone();
    assert!(matches!(bn.forward_eval_into(&[1.0; 15], d, &mut y, &mut saved_eval), Err(BnError::LengthMismatch { what: "y", .. })));
    assert_eq!(saved_eval, kept, "a refused eval call leaves the saved statistics as they were");
    assert!(matches!(bn.set_affine(&[1.0; 2], &[0.0; 3]), Err(BnError::LengthMismatch { what: "weight", .. })));
    assert!(matches!(bn.set_running_stats(&[1.0; 3], &[0.0; 4]), Err(BnError::LengthMismatch { what: "running_var", .. })));
    let x = Rng::new(1).vec(15, 0.0, 1.0);
    let (_, saved) = bn.clone().forward_train(&x, d).unwrap();
    assert!(matches!(bn.backward(&x, &[0.0; 14], d, &saved), Err(BnError::LengthMismatch { what: "dy", .. })));
    let short = SavedStats::with_channels(2);
    assert!(matches!(bn.backward(&x, &x, d, &short), Err(BnError::LengthMismatch { what: "saved.mean", .. })));
    let mut dx = vec![0.0; 15];
    let mut dw = vec![0.0; 2];
    assert!(matches!(bn.backward_into(&x, &x, d, &saved, &mut dx, Some(&mut dw), None), Err(BnError::LengthMismatch { what: "dweight", .. })));
    assert!(same_state(&bn, &before));
}

#[test]
fn one_value_per_channel_is_refused_in_training_only() {
    let mut bn = layer(5);
    let before = bn.clone();
    for (layout, shape) in [(Layout::Nc, vec![1, 5]), (Layout::Ncl, vec![1, 5, 1]), (Layout::Nhwc, vec![1, 1, 1, 5])] {
        let d = Dims::new(layout, &shape).unwrap();
        let e = bn.forward_train(&[1.0; 5], d).unwrap_err();
        assert!(matches!(e, BnError::Degenerate { .. }));
        assert!(e.to_string().contains("more than 1 value per channel"), "{e}");
        assert!(same_state(&bn, &before));
        // Eval with running statistics is fine on a single sample.
        assert!(bn.forward_eval(&[1.0; 5], d).is_ok());
    }
    // Without running statistics eval uses batch statistics, so it is refused too.
    let mut nt = BatchNorm::new(BatchNormConfig::new(5).track_running_stats(false)).unwrap();
    assert!(matches!(nt.forward_eval(&[1.0; 5], Dims::rows(1, 5)), Err(BnError::Degenerate { .. })));
}

#[test]
fn empty_batch_gives_empty_output_and_unchanged_state() {
    let mut bn = layer(3);
    let before = bn.clone();
    for layout in [Layout::Nc, Layout::Nchw, Layout::Nhwc] {
        let shape: Vec<usize> = (0..layout.rank())
            .map(|i| {
                if i == 0 {
                    0
                } else if i == layout.channel_axis() {
                    3
                } else {
                    2
                }
            })
            .collect();
        let d = Dims::new(layout, &shape).unwrap();
        let (y, saved) = bn.forward_train(&[], d).unwrap();
        assert!(y.is_empty());
        let g = bn.backward(&[], &[], d, &saved).unwrap();
        assert!(g.dx.is_empty());
        assert_eq!(g.dbias.unwrap(), vec![0.0; 3]);
        assert!(bn.forward_eval(&[], d).unwrap().0.is_empty());
        assert!(same_state(&bn, &before));
    }
}

#[test]
fn nan_poisons_its_channel_only_and_constant_channels_give_beta() {
    let mut bn = layer(3);
    let d = Dims::new(Layout::Nc, &[4, 3]).unwrap();
    // channel 0 constant, channel 1 ordinary, channel 2 holds a NaN.
    let x = [7.0, 1.0, 1.0, 7.0, 2.0, f32::NAN, 7.0, 3.0, 2.0, 7.0, 4.0, 3.0];
    let (y, saved) = bn.forward_train(&x, d).unwrap();
    for r in 0..4 {
        assert_eq!(y[r * 3], 0.5, "constant channel gives beta");
        assert!(y[r * 3 + 1].is_finite());
        assert!(y[r * 3 + 2].is_nan());
    }
    let rm = bn.running_mean().unwrap();
    assert!(rm[0].is_finite() && rm[1].is_finite() && rm[2].is_nan());
    let g = bn.backward(&x, &[1.0; 12], d, &saved).unwrap();
    assert!(g.dx.iter().enumerate().all(|(i, v)| (i % 3 == 2) == v.is_nan()));
    assert_eq!(g.dweight.unwrap()[0], 0.0);
}

#[test]
fn an_infinite_value_gives_an_infinite_mean_wherever_it_sits() {
    // PyTorch's mean is sum / n: a channel holding +inf or -inf has that mean, and the
    // variance (inf - inf) is NaN. The sums here are taken about each channel's first value,
    // which must not make the mean NaN when that value is the infinite one. Rows (NC),
    // channels-first runs and channels-last rows; the first, second and last value.
    for (layout, shape) in [(Layout::Nc, vec![4, 3]), (Layout::Nchw, vec![2, 3, 2, 1]), (Layout::Nhwc, vec![2, 2, 1, 3])] {
        let d = Dims::new(layout, &shape).unwrap();
        let channel = |i: usize| if layout == Layout::Nchw { (i / 2) % 3 } else { i % 3 };
        for (pos, inf) in [(0, f32::INFINITY), (1, f32::NEG_INFINITY), (3, f32::INFINITY)] {
            let mut x: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
            let idx = (0..12).filter(|&i| channel(i) == 1).nth(pos).unwrap();
            x[idx] = inf;
            let m = batch_moments(&x, d).unwrap();
            assert!(m[1].mean == inf as f64 && m[1].var_biased().is_nan(), "{layout:?} value {pos}: {:?}", m[1]);
            assert!(m[0].var_biased().is_finite() && m[2].var_biased().is_finite(), "{layout:?}: other channels untouched");
            let mut bn = layer(3);
            let (y, saved) = bn.forward_train(&x, d).unwrap();
            assert_eq!(saved.mean[1], inf as f64, "{layout:?} value {pos}");
            assert_eq!(bn.running_mean().unwrap()[1], 0.1 * inf, "{layout:?} value {pos}");
            assert!(y.iter().enumerate().all(|(i, v)| v.is_nan() == (channel(i) == 1)), "{layout:?} value {pos}: {y:?}");
        }
    }
}

#[test]
fn operations_that_need_missing_state_are_refused() {
    let mut bn = BatchNorm::new(BatchNormConfig::new(2).affine(false).track_running_stats(false)).unwrap();
    assert!(matches!(bn.set_affine(&[1.0; 2], &[0.0; 2]), Err(BnError::Unsupported(_))));
    assert!(matches!(bn.set_running_stats(&[1.0; 2], &[0.0; 2]), Err(BnError::Unsupported(_))));
    assert!(matches!(fold_into_linear(&bn, &[1.0; 4], None, 2, 2), Err(BnError::Unsupported(_))));
    let empty = PopulationStats::new(2);
    assert!(empty.finish(PopulationEstimator::Pooled, RunningVar::Unbiased).is_err());
    let mut tracked = BatchNorm::new(BatchNormConfig::new(3)).unwrap();
    assert!(matches!(empty.apply_to(&mut tracked, PopulationEstimator::Pooled), Err(BnError::ChannelMismatch { .. })));
    let mut pop = PopulationStats::new(3);
    assert!(matches!(pop.add_batch(&[1.0; 3], Dims::rows(1, 3)), Err(BnError::Degenerate { .. })));
    assert!(matches!(pop.add_batch(&[1.0; 4], Dims::rows(2, 2)), Err(BnError::ChannelMismatch { .. })));
    assert_eq!(pop.batches(), 0);
}
