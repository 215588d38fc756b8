//! The float64 kernels: exact statistics on data that defeats plain float64 sums, outputs
//! and gradients against references and finite differences, the conformance cases, the
//! float32 kernels, and the same bits on any number of threads.

mod common;

use batchnorm::safetensors::SafeTensors;
use batchnorm::*;
use common::{channel, Rng};

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/conformance/cases");

/// Everything one training step and one eval step give, as float64 vectors.
struct Step {
    y: Vec<f64>,
    moments: Vec<Moments>,
    dx: Vec<f64>,
    dw: Vec<f64>,
    db: Vec<f64>,
    y_eval: Vec<f64>,
    dx_eval: Vec<f64>,
}

fn step(x: &[f64], dy: &[f64], d: Dims, w: Option<&[f64]>, b: Option<&[f64]>, eps: f64) -> Step {
    let c = d.channels;
    let mut ws = Workspace::new();
    let (mut y, mut dx, mut y_eval, mut dx_eval) = (vec![f64::NAN; d.len()], vec![f64::NAN; d.len()], vec![f64::NAN; d.len()], vec![f64::NAN; d.len()]);
    let mut moments = vec![Moments::EMPTY; c];
    let mut saved = SavedStats::with_channels(c);
    let (mut dw, mut db) = (vec![f64::NAN; c], vec![f64::NAN; c]);
    forward_train_f64_into(x, d, w, b, eps, &mut y, &mut moments, &mut saved, &mut ws).unwrap();
    backward_f64_into(x, dy, d, w, &saved, &mut dx, Some(&mut dw), Some(&mut db), &mut ws).unwrap();
    let mean: Vec<f64> = moments.iter().map(|m| m.mean + 0.25).collect();
    let var: Vec<f64> = moments.iter().map(|m| m.var_biased() * 1.5).collect();
    forward_eval_f64_into(x, d, w, b, &mean, &var, eps, &mut y_eval, &mut ws).unwrap();
    let running = SavedStats { mean, invstd: var.iter().map(|&v| inv_std(v, eps)).collect(), source: StatsSource::Running };
    backward_f64_into(x, dy, d, w, &running, &mut dx_eval, None, None, &mut ws).unwrap();
    Step { y, moments, dx, dw, db, y_eval, dx_eval }
}

fn shapes() -> Vec<(Layout, Vec<usize>)> {
    vec![
        (Layout::Nc, vec![300, 7]),
        (Layout::Nc, vec![2, 5]),
        (Layout::Nc, vec![64, 1000]),
        (Layout::Nc, vec![9, 1100]), // rows written four at a time, and one alone
        (Layout::Nchw, vec![3, 4, 5, 7]),
        (Layout::Nchw, vec![5, 3, 33, 31]),
        (Layout::Nhwc, vec![4, 9, 11, 6]),
        (Layout::Ncl, vec![2, 2, 1]),
        (Layout::Ncdhw, vec![2, 3, 2, 3, 4]),
        // 16 MB and more: outputs written with streaming stores where the CPU has AVX-512,
        // wide rows four at a time, narrower rows and runs long and short as one stream.
        (Layout::Nc, vec![513, 4104]),
        (Layout::Nchw, vec![4, 2, 512, 512]),
        (Layout::Nchw, vec![128, 340, 7, 7]),
        (Layout::Nhwc, vec![2, 128, 128, 64]),
        (Layout::Nc, vec![90000, 24]),
    ]
}

/// `|got - want| <= ulps * ulp(max(|want|, floor))` element by element.
fn assert_ulps(what: &str, got: &[f64], want: &[f64], ulps: f64, floor: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&a, &e)) in got.iter().zip(want).enumerate() {
        let tol = ulps * e.abs().max(floor) * f64::EPSILON;
        assert!((a - e).abs() <= tol, "{what}[{i}]: got {a:e}, expected {e:e} (off by {:.2} ulp)", (a - e).abs() / (e.abs().max(floor) * f64::EPSILON));
    }
}

/// Values `offset + k * 2^-20` with integer `k`: every one exact in float64, so the exact
/// mean and variance follow from integer sums (i128), which no float64 loop shares.
#[test]
fn statistics_are_exact_where_plain_float64_sums_are_not() {
    let offset = 2f64.powi(26);
    let scale = 2f64.powi(-20);
    for (layout, shape) in [(Layout::Nc, vec![120_000, 3]), (Layout::Nchw, vec![6, 2, 150, 150]), (Layout::Nhwc, vec![40, 50, 50, 2])] {
        let d = Dims::new(layout, &shape).unwrap();
        let mut rng = Rng::new(5);
        let k: Vec<i64> = (0..d.len()).map(|_| (rng.normal() * 3e5) as i64).collect();
        let x: Vec<f64> = k.iter().map(|&k| offset + k as f64 * scale).collect();
        let mut moments = vec![Moments::EMPTY; d.channels];
        let mut y = vec![0.0; d.len()];
        forward_train_f64_into(&x, d, None, None, 1e-5, &mut y, &mut moments, &mut SavedStats::with_channels(d.channels), &mut Workspace::new()).unwrap();
        let mut plain_off = 0.0f64;
        for (ch, m) in moments.iter().enumerate() {
            let ix = channel(d, ch);
            let n = ix.len() as i128;
            let s1: i128 = ix.iter().map(|&i| k[i] as i128).sum();
            let s2: i128 = ix.iter().map(|&i| (k[i] as i128).pow(2)).sum();
            // mean = offset + s1 / n * 2^-20; m2 = (n s2 - s1^2) / n * 2^-40.
            let mean = offset + (s1 as f64 / n as f64) * scale;
            let m2 = ((n * s2 - s1 * s1) as f64 / n as f64) * scale * scale;
            assert_ulps(&format!("{layout} mean[{ch}]"), &[m.mean], &[mean], 1.0, 0.0);
            assert_ulps(&format!("{layout} m2[{ch}]"), &[m.m2], &[m2], 4.0, 0.0);
            let plain_mean = ix.iter().map(|&i| x[i]).sum::<f64>() / n as f64;
            let plain_m2 = ix.iter().map(|&i| (x[i] - plain_mean).powi(2)).sum::<f64>();
            plain_off = plain_off.max((plain_m2 - m2).abs() / (m2 * f64::EPSILON));
        }
        // The data is hard enough to tell: two plain float64 passes miss by far more.
        assert!(plain_off > 100.0, "{layout}: plain two-pass sums were within {plain_off:.1} ulp");
    }
}

/// y, dx and the parameter gradients against the formulas evaluated from exact sums: on
/// data of multiples of 2^-12 every sum the formulas need is an integer (i128) in disguise.
#[test]
fn outputs_and_gradients_match_the_formulas() {
    const Q: f64 = 4096.0;
    for (layout, shape) in shapes() {
        let d = Dims::new(layout, &shape).unwrap();
        let c = d.channels;
        let mut rng = Rng::new(d.len() as u64);
        let mut ints = |n: usize, mean: f64, std: f64| -> Vec<i64> { (0..n).map(|_| ((mean + std * rng.normal()) * Q).round() as i64).collect() };
        let (xi, dyi, wi, bi) = (ints(d.len(), 3.0, 2.0), ints(d.len(), 0.0, 1.0), ints(c, 1.0, 0.5), ints(c, 0.0, 0.5));
        let real = |v: &[i64]| -> Vec<f64> { v.iter().map(|&v| v as f64 / Q).collect() };
        let (x, dy, w, b) = (real(&xi), real(&dyi), real(&wi), real(&bi));
        let eps = 1e-5;
        let s = step(&x, &dy, d, Some(&w), Some(&b), eps);
        let m = d.per_channel();
        let mf = m as f64;
        for ch in 0..c {
            let ix = channel(d, ch);
            let sum = |f: &dyn Fn(usize) -> i128| -> i128 { ix.iter().map(|&i| f(i)).sum() };
            let (s1, s2) = (sum(&|i| xi[i] as i128), sum(&|i| (xi[i] as i128).pow(2)));
            let (sd, sdx) = (sum(&|i| dyi[i] as i128), sum(&|i| dyi[i] as i128 * xi[i] as i128));
            let mi = m as i128;
            let mean = s1 as f64 / mf / Q;
            let var = (mi * s2 - s1 * s1) as f64 / (mi * mi) as f64 / (Q * Q);
            let sdy = sd as f64 / Q;
            let sdyxc = (mi * sdx - s1 * sd) as f64 / mf / (Q * Q);
            let is = 1.0 / (var + eps).sqrt();
            let what = |v: &str| format!("{layout} {shape:?} {v}[{ch}]");
            assert_ulps(&what("mean"), &[s.moments[ch].mean], &[mean], 1.0, 0.0);
            assert_ulps(&what("var"), &[s.moments[ch].var_biased()], &[var], 4.0, 0.0);
            let y: Vec<f64> = ix.iter().map(|&i| w[ch] * (x[i] - mean) * is + b[ch]).collect();
            let got: Vec<f64> = ix.iter().map(|&i| s.y[i]).collect();
            assert_ulps(&what("y"), &got, &y, 16.0, 1.0);
            let dx: Vec<f64> = ix.iter().map(|&i| w[ch] * is * (dy[i] - sdy / mf - (x[i] - mean) * is * (sdyxc * is) / mf)).collect();
            let got: Vec<f64> = ix.iter().map(|&i| s.dx[i]).collect();
            // dx is a difference of terms as large as `weight * invstd * dy`: its rounding is
            // measured against them (on two values a channel, dx is nearly 0).
            let dx_scale = ix.iter().zip(&dx).fold(0.0f64, |a, (&i, v)| a.max((w[ch] * is * dy[i]).abs()).max(v.abs()));
            assert_ulps(&what("dx"), &got, &dx, 32.0, dx_scale);
            // sum(dy * (x - mean)) is taken about the float64 mean, half a unit from the
            // exact one: that moves it by up to sum(dy) times that, the floor here.
            assert_ulps(&what("dweight"), &[s.dw[ch]], &[sdyxc * is], 16.0, (sdy * mean).abs() * is);
            assert_eq!(s.db[ch], sdy, "{}", what("dbias"));
        }
    }
}

/// dx by central differences of the float64 forward itself, in training and in eval.
#[test]
fn gradients_match_finite_differences() {
    for (layout, shape) in [(Layout::Nc, vec![6, 3]), (Layout::Nchw, vec![2, 2, 3, 2]), (Layout::Nhwc, vec![3, 2, 2, 2])] {
        let d = Dims::new(layout, &shape).unwrap();
        let c = d.channels;
        let mut rng = Rng::new(3);
        let x: Vec<f64> = (0..d.len()).map(|_| 1.0 + 2.0 * rng.normal()).collect();
        let dy: Vec<f64> = (0..d.len()).map(|_| rng.normal()).collect();
        let w: Vec<f64> = (0..c).map(|_| 1.0 + 0.5 * rng.normal()).collect();
        let b: Vec<f64> = (0..c).map(|_| rng.normal()).collect();
        let (eps, h) = (1e-3, 1e-6);
        let s = step(&x, &dy, d, Some(&w), Some(&b), eps);
        let (rm, rv): (Vec<f64>, Vec<f64>) = s.moments.iter().map(|m| (m.mean + 0.25, m.var_biased() * 1.5)).unzip();
        let loss = |train: bool, x: &[f64], w: &[f64], b: &[f64]| -> f64 {
            let mut y = vec![0.0; d.len()];
            let mut ws = Workspace::new();
            if train {
                forward_train_f64_into(x, d, Some(w), Some(b), eps, &mut y, &mut vec![Moments::EMPTY; c], &mut SavedStats::with_channels(c), &mut ws).unwrap();
            } else {
                forward_eval_f64_into(x, d, Some(w), Some(b), &rm, &rv, eps, &mut y, &mut ws).unwrap();
            }
            y.iter().zip(&dy).map(|(a, g)| a * g).sum()
        };
        let close = |what: String, analytic: f64, numeric: f64| {
            assert!((analytic - numeric).abs() <= 1e-7 * (1.0 + numeric.abs()), "{what}: analytic {analytic} vs numeric {numeric}")
        };
        for (train, dx) in [(true, &s.dx), (false, &s.dx_eval)] {
            for i in 0..d.len() {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[i] += h;
                xm[i] -= h;
                let num = (loss(train, &xp, &w, &b) - loss(train, &xm, &w, &b)) / (2.0 * h);
                close(format!("{layout} train={train} dx[{i}]"), dx[i], num);
            }
        }
        for ch in 0..c {
            let (mut wp, mut wm, mut bp, mut bm) = (w.clone(), w.clone(), b.clone(), b.clone());
            wp[ch] += h;
            wm[ch] -= h;
            bp[ch] += h;
            bm[ch] -= h;
            close(format!("{layout} dweight[{ch}]"), s.dw[ch], (loss(true, &x, &wp, &b) - loss(true, &x, &wm, &b)) / (2.0 * h));
            close(format!("{layout} dbias[{ch}]"), s.db[ch], (loss(true, &x, &w, &bp) - loss(true, &x, &w, &bm)) / (2.0 * h));
        }
    }
}

/// Every single-step conformance case: float32 inputs run in float64, rounded to float32,
/// within a unit or two of float32's last place of the expectations (themselves float64
/// results rounded to float32), and the degenerate case refused.
#[test]
fn conformance_cases_pass_in_float64() {
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(CASES).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let md = header.metadata().clone().unwrap();
        if md.get("steps").map(String::as_str) != Some("1") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let f64s = |key: &str| -> Option<Vec<f64>> {
            let t = st.tensor(key).ok()?;
            Some(t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64).collect())
        };
        let flag = |key: &str| md[key] == "true";
        let layout: Layout = md["layout"].parse().unwrap();
        let shape = st.tensor("x").unwrap().shape().to_vec();
        let d = Dims::new(layout, &shape).unwrap();
        let c = d.channels;
        let eps: f64 = md["eps"].parse().unwrap();
        let x = f64s("x").unwrap();
        let (w, b) = if flag("affine") { (f64s("weight"), f64s("bias")) } else { (None, None) };
        let batch = flag("training") || !flag("track_running_stats");
        let mut ws = Workspace::new();
        let mut y = vec![0.0; d.len()];
        let mut saved = SavedStats::with_channels(c);
        if batch {
            let r = forward_train_f64_into(&x, d, w.as_deref(), b.as_deref(), eps, &mut y, &mut vec![Moments::EMPTY; c], &mut saved, &mut ws);
            if md.contains_key("expect.error") {
                assert!(matches!(r, Err(BnError::Degenerate { .. })), "{name}: expected a refusal, got {r:?}");
                checked += 1;
                continue;
            }
            r.unwrap();
        } else {
            let (rm, rv) = (f64s("running_mean").unwrap(), f64s("running_var").unwrap());
            forward_eval_f64_into(&x, d, w.as_deref(), b.as_deref(), &rm, &rv, eps, &mut y, &mut ws).unwrap();
            saved = SavedStats { mean: rm, invstd: rv.iter().map(|&v| inv_std(v, eps)).collect(), source: StatsSource::Running };
        }
        let tol = 2.0 * f32::EPSILON as f64;
        let check = |key: &str, got: &[f64]| {
            if let Some(want) = f64s(key) {
                let got: Vec<f32> = got.iter().map(|&v| v as f32).collect();
                let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
                conformance::compare(key, &got, &want, tol).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        };
        check("expect.y", &y);
        if let Some(dy) = f64s("dy") {
            let (mut dx, mut dw, mut db) = (vec![0.0; d.len()], vec![0.0; c], vec![0.0; c]);
            backward_f64_into(&x, &dy, d, w.as_deref(), &saved, &mut dx, Some(&mut dw), Some(&mut db), &mut ws).unwrap();
            check("expect.dx", &dx);
            if w.is_some() {
                check("expect.dweight", &dw);
                check("expect.dbias", &db);
            }
        }
        checked += 1;
    }
    // Guards against a directory that silently lost its cases: 41 of the 49 take one step.
    assert_eq!(checked, 41, "single-step cases checked");
}

/// On float32 data the float64 kernels and the float32 ones agree to float32's precision.
#[test]
fn float32_data_gives_what_the_float32_kernels_give() {
    for (layout, shape) in shapes() {
        let d = Dims::new(layout, &shape).unwrap();
        let c = d.channels;
        let mut rng = Rng::new(9);
        let (x32, dy32) = (rng.vec(d.len(), 2.0, 3.0), rng.vec(d.len(), 0.0, 1.0));
        let (w32, b32) = (rng.vec(c, 1.0, 0.5), rng.vec(c, 0.0, 0.5));
        let up = |v: &[f32]| -> Vec<f64> { v.iter().map(|&v| v as f64).collect() };
        let s = step(&up(&x32), &up(&dy32), d, Some(&up(&w32)), Some(&up(&b32)), 1e-5);
        let mut ws = Workspace::new();
        let (mut y, mut dx, mut dw, mut db) = (vec![0.0f32; d.len()], vec![0.0f32; d.len()], vec![0.0f32; c], vec![0.0f32; c]);
        let mut saved = SavedStats::with_channels(c);
        forward_train_into(&x32, d, Some(&w32), Some(&b32), 1e-5, &mut y, &mut vec![Moments::EMPTY; c], &mut saved, &mut ws).unwrap();
        backward_into(&x32, &dy32, d, Some(&w32), &saved, &mut dx, Some(&mut dw), Some(&mut db), &mut ws).unwrap();
        common::assert_close(&format!("{layout} y"), &y, &s.y, 4e-6);
        common::assert_close(&format!("{layout} dx"), &dx, &s.dx, 1e-5);
        common::assert_close(&format!("{layout} dweight"), &dw, &s.dw, 1e-5);
        common::assert_close(&format!("{layout} dbias"), &db, &s.db, 1e-5);
    }
}

/// The same bits on 1, 2 and 3 threads, on shapes large enough to be cut into tasks.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let bits = |v: &[f64]| -> Vec<u64> { v.iter().map(|v| v.to_bits()).collect() };
    for (layout, shape) in
        [(Layout::Nc, vec![700, 300]), (Layout::Nchw, vec![4, 8, 60, 50]), (Layout::Nhwc, vec![16, 30, 30, 24]), (Layout::Nchw, vec![2, 3, 200, 100])]
    {
        let d = Dims::new(layout, &shape).unwrap();
        let mut rng = Rng::new(21);
        let x: Vec<f64> = (0..d.len()).map(|_| 1e3 + rng.normal()).collect();
        let dy: Vec<f64> = (0..d.len()).map(|_| rng.normal()).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let s = pool.install(|| step(&x, &dy, d, None, None, 1e-5));
            let m: Vec<f64> = s.moments.iter().flat_map(|m| [m.mean, m.m2]).collect();
            [bits(&s.y), bits(&m), bits(&s.dx), bits(&s.dw), bits(&s.db), bits(&s.y_eval), bits(&s.dx_eval)]
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(run(threads) == one, "{layout} {shape:?}: {threads} threads differ from one");
        }
    }
}

/// An infinite value poisons its own channel as in the float32 kernels (an infinite mean, a
/// NaN variance, NaN outputs) and no other.
#[test]
fn infinite_values_poison_their_channel_as_in_float32() {
    let d = Dims::new(Layout::Nc, &[4, 3]).unwrap();
    let x32 = [1.0f32, 2.0, f32::INFINITY, 3.0, f32::INFINITY, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
    let x: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
    let (mut y, mut y32) = (vec![0.0; 12], vec![0.0f32; 12]);
    let (mut m, mut m32) = (vec![Moments::EMPTY; 3], vec![Moments::EMPTY; 3]);
    let mut ws = Workspace::new();
    forward_train_f64_into(&x, d, None, None, 1e-5, &mut y, &mut m, &mut SavedStats::with_channels(3), &mut ws).unwrap();
    forward_train_into(&x32, d, None, None, 1e-5, &mut y32, &mut m32, &mut SavedStats::with_channels(3), &mut ws).unwrap();
    for ch in 0..3 {
        assert_eq!(m[ch].mean.to_bits(), m32[ch].mean.to_bits(), "mean[{ch}]");
        assert_eq!(m[ch].m2.is_nan(), m32[ch].m2.is_nan(), "m2[{ch}]");
    }
    assert!(m[1].mean == f64::INFINITY && m[2].mean == f64::INFINITY && m[0].m2 == 26.75);
    for (i, (&a, &b)) in y.iter().zip(&y32).enumerate() {
        assert_eq!(a.is_nan(), b.is_nan(), "y[{i}]");
        assert_eq!(a.is_nan(), i % 3 != 0, "y[{i}]");
    }
}

/// Bad lengths are refused before anything is written; M = 1 is refused in training.
#[test]
fn bad_input_is_refused() {
    let d = Dims::new(Layout::Nc, &[4, 2]).unwrap();
    let x = [1.0; 8];
    let mut ws = Workspace::new();
    let mut y = [7.0; 8];
    let mut m = [Moments::EMPTY; 2];
    let mut saved = SavedStats::with_channels(2);
    let r = forward_train_f64_into(&x[..7], d, None, None, 1e-5, &mut y, &mut m, &mut saved, &mut ws);
    assert_eq!(r, Err(BnError::LengthMismatch { what: "x", expected: 8, got: 7 }));
    let r = forward_train_f64_into(&x, d, Some(&[1.0]), None, 1e-5, &mut y, &mut m, &mut saved, &mut ws);
    assert_eq!(r, Err(BnError::LengthMismatch { what: "weight", expected: 2, got: 1 }));
    let r = forward_eval_f64_into(&x, d, None, None, &[0.0; 2], &[1.0; 3], 1e-5, &mut y, &mut ws);
    assert_eq!(r, Err(BnError::LengthMismatch { what: "running_var", expected: 2, got: 3 }));
    let r = backward_f64_into(&x, &x, d, None, &saved, &mut y, Some(&mut [0.0; 3]), None, &mut ws);
    assert_eq!(r, Err(BnError::LengthMismatch { what: "dweight", expected: 2, got: 3 }));
    assert_eq!(y, [7.0; 8], "a refused call wrote its output");
    let one = Dims::new(Layout::Nchw, &[1, 2, 1, 1]).unwrap();
    let r = forward_train_f64_into(&[1.0, 2.0], one, None, None, 1e-5, &mut [0.0; 2], &mut m, &mut saved, &mut ws);
    assert!(matches!(r, Err(BnError::Degenerate { .. })), "{r:?}");
}
