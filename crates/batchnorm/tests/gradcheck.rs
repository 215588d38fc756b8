//! Finite-difference gradient checks: central differences of a float64 forward pass against
//! the crate's analytic backward kernels.

mod common;

use batchnorm::{BatchNorm, BatchNormConfig, Dims, Layout};
use common::{normalize, train_forward_f64, Rng};

/// d/dθ of L = sum(dy * y) by central differences.
fn fd(f: impl Fn(f64) -> f64) -> f64 {
    let h = 1e-5;
    (f(h) - f(-h)) / (2.0 * h)
}

fn loss(y: &[f64], dy: &[f32]) -> f64 {
    y.iter().zip(dy).map(|(a, &b)| a * b as f64).sum()
}

fn check(layout: Layout, shape: &[usize], affine: bool, eps: f64) {
    let d = Dims::new(layout, shape).unwrap();
    let c = d.channels;
    let mut rng = Rng::new(shape.iter().product::<usize>() as u64 + affine as u64);
    let x = rng.vec(d.len(), 2.0, 1.5);
    let dy = rng.vec(d.len(), 0.0, 1.0);
    let mut bn = BatchNorm::new(BatchNormConfig::new(c).eps(eps).affine(affine)).unwrap();
    if affine {
        bn.set_affine(&rng.vec(c, 1.0, 0.5), &rng.vec(c, 0.0, 0.5)).unwrap();
    }
    let w = bn.weight().map(<[f32]>::to_vec);
    let b = bn.bias().map(<[f32]>::to_vec);
    let (_, saved) = bn.forward_train(&x, d).unwrap();
    let g = bn.backward(&x, &dy, d, &saved).unwrap();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let tol = |analytic: f64, numeric: f64| (analytic - numeric).abs() <= 1e-3 * (1.0 + numeric.abs());
    for i in 0..d.len() {
        let num = fd(|h| {
            let mut xp = x64.clone();
            xp[i] += h;
            loss(&train_forward_f64(&xp, d, w.as_deref(), b.as_deref(), eps), &dy)
        });
        assert!(tol(g.dx[i] as f64, num), "{layout} dx[{i}]: analytic {} vs numeric {num}", g.dx[i]);
    }
    if let (Some(w), Some(b)) = (&w, &b) {
        // y = gamma * x_hat + beta with float64 parameters, so they can carry a small step.
        let x_hat = train_forward_f64(&x64, d, None, None, eps);
        let y_of = |gamma: &[f64], beta: &[f64]| -> Vec<f64> {
            let mut y = x_hat.clone();
            for ch in 0..c {
                for i in common::channel(d, ch) {
                    y[i] = gamma[ch] * x_hat[i] + beta[ch];
                }
            }
            y
        };
        let (g64, b64): (Vec<f64>, Vec<f64>) = (w.iter().map(|&v| v as f64).collect(), b.iter().map(|&v| v as f64).collect());
        for ch in 0..c {
            let num_w = fd(|h| {
                let mut gp = g64.clone();
                gp[ch] += h;
                loss(&y_of(&gp, &b64), &dy)
            });
            let dg = g.dweight.as_ref().unwrap()[ch] as f64;
            assert!(tol(dg, num_w), "{layout} dweight[{ch}]: analytic {dg} vs numeric {num_w}");
            let num_b = fd(|h| {
                let mut bp = b64.clone();
                bp[ch] += h;
                loss(&y_of(&g64, &bp), &dy)
            });
            let db = g.dbias.as_ref().unwrap()[ch] as f64;
            assert!(tol(db, num_b), "{layout} dbias[{ch}]: analytic {db} vs numeric {num_b}");
        }
    }
}

#[test]
fn training_gradients_match_finite_differences_in_every_layout() {
    check(Layout::Nc, &[6, 3], true, 1e-5);
    check(Layout::Nc, &[2, 2], true, 1e-5);
    check(Layout::Ncl, &[3, 2, 4], false, 1e-3);
    check(Layout::Nchw, &[2, 3, 2, 3], true, 1e-5);
    check(Layout::Ncdhw, &[2, 2, 2, 2, 2], true, 0.1);
    check(Layout::Nlc, &[2, 3, 2], true, 1e-5);
    check(Layout::Nhwc, &[2, 2, 3, 3], true, 1e-5);
}

#[test]
fn eval_gradients_match_finite_differences() {
    let d = Dims::new(Layout::Nchw, &[2, 3, 2, 2]).unwrap();
    let mut rng = Rng::new(3);
    let x = rng.vec(d.len(), 1.0, 2.0);
    let dy = rng.vec(d.len(), 0.0, 1.0);
    let mut bn = BatchNorm::new(BatchNormConfig::new(3)).unwrap();
    bn.set_affine(&[0.5, 2.0, -1.0], &[0.1, 0.2, 0.3]).unwrap();
    bn.set_running_stats(&[0.5, -1.0, 2.0], &[0.25, 4.0, 1.5]).unwrap();
    let (_, saved) = bn.forward_eval(&x, d).unwrap();
    let g = bn.backward(&x, &dy, d, &saved).unwrap();
    let rm: Vec<f64> = bn.running_mean().unwrap().iter().map(|&v| v as f64).collect();
    let rv: Vec<f64> = bn.running_var().unwrap().iter().map(|&v| v as f64).collect();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for i in 0..d.len() {
        let num = fd(|h| {
            let mut xp = x64.clone();
            xp[i] += h;
            loss(&normalize(&xp, d, bn.weight(), bn.bias(), &rm, &rv, 1e-5), &dy)
        });
        assert!((g.dx[i] as f64 - num).abs() <= 1e-4 * (1.0 + num.abs()), "dx[{i}] {} vs {num}", g.dx[i]);
    }
    let db = g.dbias.unwrap();
    for (ch, &got) in db.iter().enumerate() {
        let want: f64 = common::channel(d, ch).iter().map(|&i| dy[i] as f64).sum();
        assert!((got as f64 - want).abs() < 1e-5, "dbias[{ch}] {got} vs {want}");
    }
}
