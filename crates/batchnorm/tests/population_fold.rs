//! Population statistics (Algorithm 2) and folding into the previous layer.

mod common;

use batchnorm::*;
use common::Rng;

#[test]
fn equal_weight_population_statistics_follow_algorithm_2() {
    let d = Dims::new(Layout::Nchw, &[4, 3, 2, 2]).unwrap();
    let m = d.per_channel() as f64;
    let mut rng = Rng::new(1);
    let batches: Vec<Vec<f32>> = (0..5).map(|k| rng.vec(d.len(), k as f64, 1.0 + k as f64)).collect();
    let mut pop = PopulationStats::new(3);
    for b in &batches {
        pop.add_batch(b, d).unwrap();
    }
    assert_eq!(pop.batches(), 5);
    let (mean, var) = pop.finish(PopulationEstimator::EqualWeight, RunningVar::Unbiased).unwrap();
    let (_, var_b) = pop.finish(PopulationEstimator::EqualWeight, RunningVar::Biased).unwrap();
    for c in 0..3 {
        let stats: Vec<(f64, f64)> = batches
            .iter()
            .map(|b| {
                let (mu, v) = common::batch_stats(b, d);
                (mu[c], v[c])
            })
            .collect();
        let e_mu = stats.iter().map(|s| s.0).sum::<f64>() / 5.0;
        let e_var = stats.iter().map(|s| s.1).sum::<f64>() / 5.0;
        assert!((mean[c] as f64 - e_mu).abs() < 1e-5);
        assert!((var[c] as f64 - e_var * m / (m - 1.0)).abs() < 1e-4, "m/(m-1) correction");
        assert!((var_b[c] as f64 - e_var).abs() < 1e-4);
    }
}

#[test]
fn pooled_population_statistics_equal_the_statistics_of_all_values() {
    let d = Dims::rows(7, 2);
    let mut rng = Rng::new(2);
    let batches: Vec<Vec<f32>> = (0..4).map(|_| rng.vec(d.len(), 100.0, 3.0)).collect();
    let mut pop = PopulationStats::new(2);
    batches.iter().for_each(|b| pop.add_batch(b, d).unwrap());
    let all: Vec<f32> = batches.concat();
    let whole = batch_moments(&all, Dims::rows(28, 2)).unwrap();
    let (mean, var) = pop.finish(PopulationEstimator::Pooled, RunningVar::Unbiased).unwrap();
    for c in 0..2 {
        assert!((mean[c] as f64 - whole[c].mean).abs() < 1e-4);
        assert!((var[c] as f64 - whole[c].var_unbiased()).abs() < 1e-4);
    }
    let mut bn = BatchNorm::new(BatchNormConfig::new(2)).unwrap();
    bn.set_num_batches_tracked(9);
    pop.apply_to(&mut bn, PopulationEstimator::Pooled).unwrap();
    assert_eq!(bn.running_mean().unwrap(), &mean[..]);
    assert_eq!(bn.running_var().unwrap(), &var[..]);
    assert_eq!(bn.num_batches_tracked(), 9);
}

fn trained_bn(c: usize, rng: &mut Rng) -> BatchNorm {
    let mut bn = BatchNorm::new(BatchNormConfig::new(c).eps(1e-3)).unwrap();
    bn.set_affine(&rng.vec(c, 1.0, 0.5), &rng.vec(c, 0.0, 0.5)).unwrap();
    bn.set_running_stats(&rng.vec(c, 0.5, 1.0), &rng.vec(c, 2.0, 0.3)).unwrap();
    bn
}

#[test]
fn folding_into_a_dense_layer_gives_the_same_outputs() {
    let (n, i, o) = (5, 4, 3);
    let mut rng = Rng::new(3);
    let bn = trained_bn(o, &mut rng);
    let w = rng.vec(o * i, 0.0, 1.0);
    let b = rng.vec(o, 0.0, 1.0);
    let x = rng.vec(n * i, 0.0, 1.0);
    let x = &x;
    let dense = |w: &[f32], b: &[f32]| -> Vec<f32> {
        let mut y = Vec::with_capacity(n * o);
        for r in 0..n {
            for k in 0..o {
                y.push((0..i).map(|j| x[r * i + j] * w[k * i + j]).sum::<f32>() + b[k]);
            }
        }
        y
    };
    let (want, _) = bn.clone().forward_eval(&dense(&w, &b), Dims::rows(n, o)).unwrap();
    let (fw, fb) = fold_into_linear(&bn, &w, Some(&b), o, i).unwrap();
    common::assert_close("folded", &dense(&fw, &fb), &common::to_f64(&want), 1e-5);
    // Without a bias the BN's shift alone remains.
    let (_, fb0) = fold_into_linear(&bn, &w, None, o, i).unwrap();
    let (wantb, _) = bn.clone().forward_eval(&dense(&w, &[0.0; 3]), Dims::rows(n, o)).unwrap();
    common::assert_close("folded no bias", &dense(&fw, &fb0), &common::to_f64(&wantb), 1e-5);
    assert!(matches!(fold_into_linear(&bn, &w, Some(&b), 4, 3), Err(BnError::ChannelMismatch { .. })));
    assert!(matches!(fold_into_linear(&bn, &w[1..], Some(&b), o, i), Err(BnError::LengthMismatch { .. })));
}

#[test]
fn folding_into_a_convolution_gives_the_same_outputs() {
    // 3x3 valid convolution, NCHW input [2, 2, 5, 5], weight [3, 2, 3, 3].
    let (n, ci, co, h, k) = (2, 2, 3, 5, 3);
    let ho = h - k + 1;
    let mut rng = Rng::new(4);
    let bn = trained_bn(co, &mut rng);
    let w = rng.vec(co * ci * k * k, 0.0, 0.5);
    let b = rng.vec(co, 0.0, 1.0);
    let x = rng.vec(n * ci * h * h, 0.0, 1.0);
    let conv = |w: &[f32], b: &[f32]| -> Vec<f32> {
        let mut y = vec![0.0; n * co * ho * ho];
        for s in 0..n {
            for o in 0..co {
                for r in 0..ho {
                    for c in 0..ho {
                        let mut acc = b[o];
                        for i in 0..ci {
                            for u in 0..k {
                                for v in 0..k {
                                    acc += x[((s * ci + i) * h + r + u) * h + c + v] * w[((o * ci + i) * k + u) * k + v];
                                }
                            }
                        }
                        y[((s * co + o) * ho + r) * ho + c] = acc;
                    }
                }
            }
        }
        y
    };
    let d = Dims::new(Layout::Nchw, &[n, co, ho, ho]).unwrap();
    let (want, _) = bn.clone().forward_eval(&conv(&w, &b), d).unwrap();
    let (fw, fb) = fold_into_conv(&bn, &w, Some(&b), [co, ci, k, k]).unwrap();
    common::assert_close("folded conv", &conv(&fw, &fb), &common::to_f64(&want), 1e-5);
    // Shapes whose product overflows are refused, not wrapped round to a length that fits.
    let huge = usize::MAX / 2 + 1;
    for shape in [[co, huge, 2, 1], [co, 1, huge, 2], [co, 3, 3, huge]] {
        assert!(matches!(fold_into_conv(&bn, &[], Some(&b), shape), Err(BnError::InvalidConfig(_))), "{shape:?}");
    }
    assert!(matches!(fold_into_linear(&bn, &[], Some(&b), co, huge), Err(BnError::InvalidConfig(_))));
}

#[test]
fn momentum_conventions_and_cumulative_average() {
    // Keras' momentum 0.99 (weight on the old value) is PyTorch's 0.01.
    let d = Dims::rows(4, 1);
    let x = [1.0f32, 2.0, 3.0, 6.0];
    let mut bn = BatchNorm::new(BatchNormConfig::new(1).momentum(Momentum::Exponential(1.0 - 0.99))).unwrap();
    bn.forward_train(&x, d).unwrap();
    assert!((bn.running_mean().unwrap()[0] - 0.01 * 3.0).abs() < 1e-7);
    // Cumulative average: after K batches the running mean is the plain mean of the K means.
    let mut bn = BatchNorm::new(BatchNormConfig::new(1).momentum(Momentum::CumulativeAverage)).unwrap();
    let means = [3.0, 10.0, -4.0];
    for m in means {
        bn.forward_train(&x.map(|v| v - 3.0 + m), d).unwrap();
    }
    assert!((bn.running_mean().unwrap()[0] - 3.0).abs() < 1e-6);
    // Unbiased variance of {1,2,3,6} is 14/3, and every batch had the same spread.
    assert!((bn.running_var().unwrap()[0] - 14.0 / 3.0).abs() < 1e-5);
    bn.reset();
    assert_eq!((bn.running_mean().unwrap()[0], bn.running_var().unwrap()[0], bn.num_batches_tracked()), (0.0, 1.0, 0));
}

#[test]
fn moments_of_fewer_than_two_values_or_no_finite_count_are_refused() {
    let ok = Moments { count: 4.0, mean: 1.0, m2: 3.0 };
    for count in [0.0, 1.0, 1.5, -2.0, f64::NAN, f64::INFINITY] {
        let mut pop = PopulationStats::new(2);
        let bad = Moments { count, ..ok };
        let err = pop.add_moments(&[ok, bad]).unwrap_err();
        assert!(matches!(err, BnError::Degenerate { .. }), "count {count}: {err}");
        assert_eq!(pop.batches(), 0, "count {count}: a refused batch was counted");
        assert!(pop.finish(PopulationEstimator::Pooled, RunningVar::Unbiased).is_err(), "count {count}: a refused batch was kept");
    }
    let mut pop = PopulationStats::new(2);
    pop.add_moments(&[ok, Moments { count: 2.0, ..ok }]).unwrap();
    assert_eq!(pop.batches(), 1);
}
