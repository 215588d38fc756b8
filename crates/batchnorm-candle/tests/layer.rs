//! The candle layer: against candle-nn, the core, finite differences and its own composed ops.

use batchnorm_candle::{batch_norm, BatchNormConfig, Momentum, RunningVar};
use candle_core::{DType, Device, ModuleT, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};

fn data(shape: &[usize], seed: u64, offset: f32) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            offset + ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 4.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64, offset: f32) -> Tensor {
    Tensor::from_vec(data(shape, seed, offset), shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(D::Minus1).unwrap().to_scalar::<f32>().unwrap()
}

fn ours(vm: &VarMap, c: usize, cfg: BatchNormConfig, dtype: DType) -> batchnorm_candle::BatchNorm {
    batch_norm(c, cfg, VarBuilder::from_varmap(vm, dtype, &Device::Cpu).pp("bn")).unwrap()
}

fn set_affine(vm: &VarMap, c: usize) {
    let data = vm.data().lock().unwrap();
    data["bn.weight"].set(&tensor(&[c], 91, 1.0).to_dtype(data["bn.weight"].dtype()).unwrap()).unwrap();
    data["bn.bias"].set(&tensor(&[c], 92, 0.0).to_dtype(data["bn.bias"].dtype()).unwrap()).unwrap();
}

#[test]
fn training_and_eval_match_candle_nn_including_gradients() {
    for shape in [vec![8usize, 5], vec![4, 3, 6], vec![4, 6, 5, 5]] {
        let c = shape[1];
        let (vm_a, vm_b) = (VarMap::new(), VarMap::new());
        let a = ours(&vm_a, c, BatchNormConfig::new(c), DType::F32);
        let b = candle_nn::batch_norm(c, 1e-5, VarBuilder::from_varmap(&vm_b, DType::F32, &Device::Cpu).pp("bn")).unwrap();
        set_affine(&vm_a, c);
        set_affine(&vm_b, c);
        for step in 0..3 {
            let x = Var::from_tensor(&tensor(&shape, step, 1.5)).unwrap();
            let dy = tensor(&shape, 100 + step, 0.0);
            let ya = a.forward_t(x.as_tensor(), true).unwrap();
            let ga = (&ya * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let yb = b.forward_t(x.as_tensor(), true).unwrap();
            let gb = (&yb * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            assert!(max_diff(&ya, &yb) < 1e-5, "{shape:?} y");
            for (name, ta, tb) in [
                ("dx", x.as_tensor(), x.as_tensor()),
                ("dweight", a.weight().unwrap(), b.weight_and_bias().unwrap().0),
                ("dbias", a.bias().unwrap(), b.weight_and_bias().unwrap().1),
            ] {
                let (da, db) = (ga.get(ta).expect(name), gb.get(tb).expect(name));
                assert!(max_diff(da, db) < 1e-4, "{shape:?} {name}: {}", max_diff(da, db));
            }
            assert!(max_diff(a.running_mean().unwrap(), b.running_mean()) < 1e-6);
            assert!(max_diff(a.running_var().unwrap(), b.running_var()) < 1e-5);
        }
        assert_eq!(a.num_batches_tracked(), 3);
        let x = tensor(&shape, 7, 1.0);
        let (ya, yb) = (a.forward_t(&x, false).unwrap(), b.forward_t(&x, false).unwrap());
        assert!(max_diff(&ya, &yb) < 1e-5, "{shape:?} eval");
        assert_eq!(a.num_batches_tracked(), 3, "eval must not count");
    }
}

#[test]
fn running_statistics_match_the_core_layer() {
    let shape = [6usize, 4, 3, 3];
    for (momentum, var) in [(Momentum::Exponential(0.3), RunningVar::Unbiased), (Momentum::CumulativeAverage, RunningVar::Biased)] {
        let cfg = BatchNormConfig::new(4).momentum(momentum).running_var(var);
        let vm = VarMap::new();
        let a = ours(&vm, 4, cfg, DType::F32);
        let mut core = batchnorm::BatchNorm::new(cfg).unwrap();
        let d = batchnorm::Dims::new(batchnorm::Layout::Nchw, &shape).unwrap();
        for step in 0..4 {
            let x = data(&shape, step, 3.0);
            a.forward_t(&Tensor::from_vec(x.clone(), &shape[..], &Device::Cpu).unwrap(), true).unwrap();
            core.forward_train(&x, d).unwrap();
        }
        assert_eq!(a.running_mean().unwrap().to_vec1::<f32>().unwrap(), core.running_mean().unwrap());
        assert_eq!(a.running_var().unwrap().to_vec1::<f32>().unwrap(), core.running_var().unwrap());
        assert_eq!(a.num_batches_tracked(), core.num_batches_tracked());
    }
}

#[test]
fn gradients_match_finite_differences_of_the_f64_layer() {
    // The f64 layer is differentiated by finite differences; the f32 fused kernels'
    // analytic gradients must agree.
    let shape = [3usize, 2, 2, 2];
    let cfg = BatchNormConfig::new(2);
    let vm32 = VarMap::new();
    let bn32 = ours(&vm32, 2, cfg, DType::F32);
    set_affine(&vm32, 2);
    let vm64 = VarMap::new();
    let bn64 = ours(&vm64, 2, cfg, DType::F64);
    set_affine(&vm64, 2);
    let x = tensor(&shape, 5, 0.5);
    let dy = tensor(&shape, 6, 0.0);
    let xv = Var::from_tensor(&x).unwrap();
    let y = bn32.forward_t(xv.as_tensor(), true).unwrap();
    let grads = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = grads.get(xv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let dy64 = dy.to_dtype(DType::F64).unwrap();
    let x64: Vec<f64> = x.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let loss = |xs: &[f64]| -> f64 {
        let t = Tensor::from_vec(xs.to_vec(), &shape[..], &Device::Cpu).unwrap();
        (bn64.forward_t(&t, true).unwrap() * &dy64).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
    };
    let h = 1e-6;
    for i in 0..x64.len() {
        let (mut p, mut m) = (x64.clone(), x64.clone());
        p[i] += h;
        m[i] -= h;
        let num = (loss(&p) - loss(&m)) / (2.0 * h);
        assert!((dx[i] as f64 - num).abs() < 1e-3 * (1.0 + num.abs()), "dx[{i}] {} vs {num}", dx[i]);
    }
    // Gradients for gamma reach the variable, through an SGD step.
    let w_before = bn32.weight().unwrap().to_vec1::<f32>().unwrap();
    let mut sgd = candle_nn::SGD::new(vm32.all_vars(), 0.1).unwrap();
    use candle_nn::Optimizer;
    let y = bn32.forward_t(&x, true).unwrap();
    sgd.backward_step(&(&y * &dy).unwrap().sum_all().unwrap()).unwrap();
    assert_ne!(bn32.weight().unwrap().to_vec1::<f32>().unwrap(), w_before);
}

#[test]
fn fallback_path_matches_fused_path() {
    for (cl, shape) in [(false, vec![4usize, 3, 5]), (true, vec![2, 3, 4, 5]), (false, vec![7, 5]), (true, vec![2, 3, 2, 4, 5])] {
        let c = if cl { shape[shape.len() - 1] } else { shape[1] };
        let cfg = BatchNormConfig::new(c).momentum(Momentum::CumulativeAverage);
        let (vm32, vm64) = (VarMap::new(), VarMap::new());
        let a = ours(&vm32, c, cfg, DType::F32).channels_last(cl);
        let b = ours(&vm64, c, cfg, DType::F64).channels_last(cl).composed_ops(true);
        set_affine(&vm32, c);
        set_affine(&vm64, c);
        for step in 0..2 {
            let x = tensor(&shape, step, 2.0);
            let dy = tensor(&shape, 50 + step, 0.0);
            let xv = Var::from_tensor(&x).unwrap();
            let x64 = Var::from_tensor(&x.to_dtype(DType::F64).unwrap()).unwrap();
            let ya = a.forward_t(xv.as_tensor(), true).unwrap();
            let yb = b.forward_t(x64.as_tensor(), true).unwrap();
            assert!(max_diff(&ya, &yb) < 1e-5, "{shape:?} y");
            let ga = (&ya * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&yb * &dy.to_dtype(DType::F64).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
            assert!(max_diff(ga.get(xv.as_tensor()).unwrap(), gb.get(x64.as_tensor()).unwrap()) < 1e-4);
            assert!(max_diff(ga.get(a.weight().unwrap()).unwrap(), gb.get(b.weight().unwrap()).unwrap()) < 1e-4);
        }
        assert!(max_diff(a.running_var().unwrap(), b.running_var().unwrap()) < 1e-5);
        let x = tensor(&shape, 9, 1.0);
        assert!(max_diff(&a.forward_t(&x, false).unwrap(), &b.forward_t(&x.to_dtype(DType::F64).unwrap(), false).unwrap()) < 1e-5);
        // Eval gradients flow too, on both paths.
        let xv = Var::from_tensor(&x).unwrap();
        let g = a.forward_t(xv.as_tensor(), false).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(xv.as_tensor()).is_some() && g.get(a.bias().unwrap()).is_some());
    }
}

/// The f64 kernels against candle's composed f64 ops: outputs, gradients (x, gamma, beta)
/// and running statistics over two training steps and an eval, to float64's rounding.
#[test]
fn f64_kernels_match_composed_f64_ops() {
    let max_diff64 =
        |a: &Tensor, b: &Tensor| -> f64 { (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(D::Minus1).unwrap().to_scalar::<f64>().unwrap() };
    for (cl, shape) in [(false, vec![4usize, 3, 5]), (true, vec![2, 3, 4, 5]), (false, vec![7, 5]), (false, vec![2, 4, 9, 7]), (true, vec![2, 2, 3, 4, 5])] {
        let c = if cl { shape[shape.len() - 1] } else { shape[1] };
        let cfg = BatchNormConfig::new(c);
        let (vma, vmb) = (VarMap::new(), VarMap::new());
        let a = ours(&vma, c, cfg, DType::F64).channels_last(cl);
        let b = ours(&vmb, c, cfg, DType::F64).channels_last(cl).composed_ops(true);
        set_affine(&vma, c);
        set_affine(&vmb, c);
        for step in 0..2 {
            let x = Var::from_tensor(&tensor(&shape, 70 + step, 3.0).to_dtype(DType::F64).unwrap()).unwrap();
            let dy = tensor(&shape, 80 + step, 0.0).to_dtype(DType::F64).unwrap();
            let (ya, yb) = (a.forward_t(x.as_tensor(), true).unwrap(), b.forward_t(x.as_tensor(), true).unwrap());
            assert_eq!(ya.dtype(), DType::F64);
            assert!(max_diff64(&ya, &yb) < 1e-13, "{shape:?} y: {}", max_diff64(&ya, &yb));
            let ga = (&ya * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&yb * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let pairs = [(x.as_tensor(), x.as_tensor()), (a.weight().unwrap(), b.weight().unwrap()), (a.bias().unwrap(), b.bias().unwrap())];
            for (i, (ta, tb)) in pairs.into_iter().enumerate() {
                let (da, db) = (ga.get(ta).unwrap(), gb.get(tb).unwrap());
                assert_eq!(da.dtype(), DType::F64);
                assert!(max_diff64(da, db) < 1e-12, "{shape:?} gradient {i}: {}", max_diff64(da, db));
            }
        }
        assert_eq!(a.running_mean().unwrap().dtype(), DType::F64);
        assert!(max_diff64(a.running_mean().unwrap(), b.running_mean().unwrap()) < 1e-14);
        assert!(max_diff64(a.running_var().unwrap(), b.running_var().unwrap()) < 1e-14);
        let x = tensor(&shape, 90, 3.0).to_dtype(DType::F64).unwrap();
        assert!(max_diff64(&a.forward_t(&x, false).unwrap(), &b.forward_t(&x, false).unwrap()) < 1e-13);
    }
}

#[test]
fn half_precision_matches_the_f64_path_to_its_rounding() {
    // f16 and bf16 layers (parameters and running statistics in the same type) against the
    // float64 composed path on the same rounded inputs and parameters: only the output's,
    // the gradients' and the running statistics' rounding to half precision may differ.
    for (dtype, tol) in [(DType::F16, 4e-3f32), (DType::BF16, 3e-2)] {
        for (cl, shape) in [(false, vec![4usize, 3, 5, 2]), (true, vec![2, 3, 4, 5]), (false, vec![16, 5])] {
            let c = if cl { shape[shape.len() - 1] } else { shape[1] };
            let cfg = BatchNormConfig::new(c);
            let (vmh, vm64) = (VarMap::new(), VarMap::new());
            let a = ours(&vmh, c, cfg, dtype).channels_last(cl);
            let b = ours(&vm64, c, cfg, DType::F64).channels_last(cl);
            set_affine(&vmh, c);
            for name in ["bn.weight", "bn.bias"] {
                let v = vmh.data().lock().unwrap()[name].as_tensor().to_dtype(DType::F64).unwrap();
                vm64.data().lock().unwrap()[name].set(&v).unwrap();
            }
            for step in 0..2 {
                let x = tensor(&shape, step, 2.0).to_dtype(dtype).unwrap();
                let dy = tensor(&shape, 60 + step, 0.0).to_dtype(dtype).unwrap();
                let (xh, x64) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&x.to_dtype(DType::F64).unwrap()).unwrap());
                let ya = a.forward_t(xh.as_tensor(), true).unwrap();
                let yb = b.forward_t(x64.as_tensor(), true).unwrap();
                assert_eq!(ya.dtype(), dtype);
                assert!(max_diff(&ya, &yb) < tol, "{dtype:?} {shape:?} y: {}", max_diff(&ya, &yb));
                let ga = (&ya * &dy).unwrap().sum_all().unwrap().backward().unwrap();
                let gb = (&yb * &dy.to_dtype(DType::F64).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
                let dx = ga.get(xh.as_tensor()).unwrap();
                assert_eq!(dx.dtype(), dtype);
                assert!(max_diff(dx, gb.get(x64.as_tensor()).unwrap()) < tol, "{dtype:?} {shape:?} dx: {}", max_diff(dx, gb.get(x64.as_tensor()).unwrap()));
                for (name, ta, tb) in [("dweight", a.weight().unwrap(), b.weight().unwrap()), ("dbias", a.bias().unwrap(), b.bias().unwrap())] {
                    let (da, db) = (ga.get(ta).expect(name), gb.get(tb).expect(name));
                    // Sums over the batch: their size, not 1, sets the rounding.
                    let scale = db.abs().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap().max(1.0) as f32;
                    assert!(max_diff(da, db) < tol * scale, "{dtype:?} {shape:?} {name}: {}", max_diff(da, db));
                }
                assert!(max_diff(a.running_mean().unwrap(), b.running_mean().unwrap()) < tol, "{dtype:?} running mean");
                assert!(max_diff(a.running_var().unwrap(), b.running_var().unwrap()) < tol, "{dtype:?} running var");
            }
            assert_eq!(a.num_batches_tracked(), 2);
            let x = tensor(&shape, 9, 1.0).to_dtype(dtype).unwrap();
            let (ya, yb) = (a.forward_t(&x, false).unwrap(), b.forward_t(&x.to_dtype(DType::F64).unwrap(), false).unwrap());
            assert_eq!(ya.dtype(), dtype);
            assert!(max_diff(&ya, &yb) < tol, "{dtype:?} {shape:?} eval: {}", max_diff(&ya, &yb));
        }
    }
}

#[test]
fn half_precision_is_the_float32_layer_rounded() {
    // The op widens and narrows in parallel chunks of its own, and eval converts block by
    // block in the core: over several chunks and blocks and a partial one (65,600 values, in
    // parallel), its output and input gradient are bit for bit the float32 layer's on the
    // widened input, rounded by candle's own casts.
    let shape = [8usize, 4, 50, 41];
    for dtype in [DType::F16, DType::BF16] {
        let (vmh, vm32) = (VarMap::new(), VarMap::new());
        let a = ours(&vmh, 4, BatchNormConfig::new(4), dtype);
        let b = ours(&vm32, 4, BatchNormConfig::new(4), DType::F32);
        set_affine(&vmh, 4);
        for name in ["bn.weight", "bn.bias"] {
            let v = vmh.data().lock().unwrap()[name].as_tensor().to_dtype(DType::F32).unwrap();
            vm32.data().lock().unwrap()[name].set(&v).unwrap();
        }
        let x = tensor(&shape, 5, 3.0).to_dtype(dtype).unwrap();
        let dy = tensor(&shape, 6, 0.0).to_dtype(dtype).unwrap();
        let (xh, x32) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&x.to_dtype(DType::F32).unwrap()).unwrap());
        let bits =
            |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for train in [true, false] {
            if !train {
                // Eval reads the running statistics, which the half layer keeps in its type.
                for name in ["bn.running_mean", "bn.running_var"] {
                    let v = vmh.data().lock().unwrap()[name].as_tensor().to_dtype(DType::F32).unwrap();
                    vm32.data().lock().unwrap()[name].set(&v).unwrap();
                }
            }
            let ya = a.forward_t(xh.as_tensor(), train).unwrap();
            let yb = b.forward_t(x32.as_tensor(), train).unwrap();
            assert_eq!(bits(&ya), bits(&yb.to_dtype(dtype).unwrap()), "{dtype:?} y (train {train})");
            let ga = (&ya * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&yb * &dy.to_dtype(DType::F32).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
            let (dxa, dxb) = (ga.get(xh.as_tensor()).unwrap(), gb.get(x32.as_tensor()).unwrap());
            assert_eq!(dxa.dtype(), dtype);
            assert_eq!(bits(dxa), bits(&dxb.to_dtype(dtype).unwrap()), "{dtype:?} dx (train {train})");
        }
    }
}

#[test]
fn bad_input_is_an_error_and_leaves_the_state() {
    let vm = VarMap::new();
    let bn = ours(&vm, 3, BatchNormConfig::new(3), DType::F32);
    // Half precision takes the same checks before its conversions.
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let t = |shape: &[usize]| tensor(shape, 1, 0.0).to_dtype(dtype).unwrap();
        let e = bn.forward_t(&t(&[4, 5]), true).unwrap_err().to_string();
        assert!(e.contains("3 channels") && e.contains("5 channels"), "{dtype:?}: {e}");
        let e = bn.forward_t(&t(&[1, 3]), true).unwrap_err().to_string();
        assert!(e.contains("more than 1 value per channel"), "{dtype:?}: {e}");
        let e = bn.forward_t(&t(&[6]), true).unwrap_err().to_string();
        assert!(e.contains("rank"), "{dtype:?}: {e}");
        assert_eq!(bn.num_batches_tracked(), 0);
        assert_eq!(bn.running_mean().unwrap().to_vec1::<f32>().unwrap(), vec![0.0; 3]);
        let y = bn.forward_t(&t(&[1, 3]), false).expect("one sample is fine in eval");
        assert_eq!(y.dtype(), dtype);
    }
    for train in [true, false] {
        let ints = Tensor::new(&[[1u32, 2, 3], [4, 5, 6]], &Device::Cpu).unwrap();
        let e = bn.forward_t(&ints, train).unwrap_err().to_string();
        assert!(e.contains("floating-point input") && e.contains("U32"), "{e}");
    }
    assert_eq!(bn.num_batches_tracked(), 0);
    let bad = batch_norm(3, BatchNormConfig::new(3).eps(-1.0), VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu));
    assert!(bad.is_err());
}

#[test]
fn checkpoints_round_trip_and_candle_nn_states_load() {
    let dir = std::env::temp_dir().join(format!("bnc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A state saved by candle_nn::BatchNorm after training loads into ours.
    let vm_nn = VarMap::new();
    let nn = candle_nn::batch_norm(4, 1e-5, VarBuilder::from_varmap(&vm_nn, DType::F32, &Device::Cpu).pp("bn")).unwrap();
    for s in 0..3 {
        nn.forward_t(&tensor(&[8, 4], s, 2.0), true).unwrap();
    }
    let path = dir.join("nn.safetensors");
    vm_nn.save(&path).unwrap();
    let mut vm = VarMap::new();
    let bn = ours(&vm, 4, BatchNormConfig::new(4), DType::F32);
    vm.load(&path).unwrap();
    let x = tensor(&[5, 4], 11, 1.0);
    assert!(max_diff(&bn.forward_t(&x, false).unwrap(), &nn.forward_t(&x, false).unwrap()) < 1e-6);
    // And ours round-trips through VarMap.
    bn.forward_t(&tensor(&[8, 4], 12, -1.0), true).unwrap();
    let ours_path = dir.join("ours.safetensors");
    vm.save(&ours_path).unwrap();
    let mut vm2 = VarMap::new();
    let bn2 = ours(&vm2, 4, BatchNormConfig::new(4), DType::F32);
    vm2.load(&ours_path).unwrap();
    assert_eq!(bn2.running_var().unwrap().to_vec1::<f32>().unwrap(), bn.running_var().unwrap().to_vec1::<f32>().unwrap());
    assert_eq!(bn2.forward_t(&x, false).unwrap().to_vec2::<f32>().unwrap(), bn.forward_t(&x, false).unwrap().to_vec2::<f32>().unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn observer_batch_statistics_probe_and_detached_statistics() {
    let vm = VarMap::new();
    let mut bn = ours(&vm, 3, BatchNormConfig::new(3), DType::F32);
    let obs: batchnorm_candle::Observer = Default::default();
    bn.set_observer(Some(obs.clone()));
    let x = tensor(&[6, 3], 1, 2.0);
    bn.forward_t(&x, true).unwrap();
    bn.forward_t(&x, false).unwrap();
    bn.forward_t(&x, true).unwrap();
    assert_eq!(obs.lock().unwrap().len(), 2, "one entry per training batch");
    let rm = bn.running_mean().unwrap().to_vec1::<f32>().unwrap();
    let (y, m) = bn.forward_batch_stats(&tensor(&[6, 3], 2, -1.0)).unwrap();
    assert_eq!(bn.running_mean().unwrap().to_vec1::<f32>().unwrap(), rm, "the probe must not update");
    assert_eq!(bn.num_batches_tracked(), 2);
    assert_eq!(obs.lock().unwrap().len(), 2);
    let xs = tensor(&[6, 3], 2, -1.0).to_vec2::<f32>().unwrap();
    let mean0 = xs.iter().map(|r| r[0] as f64).sum::<f64>() / 6.0;
    assert!((m[0].mean - mean0).abs() < 1e-6);
    assert!(y.mean(0).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap() < 1e-5);
    // With correct BN the gradient along a channel sums to zero over the batch; with the
    // statistics treated as constants it does not.
    for dtype in [DType::F32, DType::F64] {
        for detach in [false, true] {
            let vm = VarMap::new();
            let bn = ours(&vm, 3, BatchNormConfig::new(3), dtype).detach_statistics(detach);
            let xv = Var::from_tensor(&tensor(&[6, 3], 3, 1.0).to_dtype(dtype).unwrap()).unwrap();
            let dy = tensor(&[6, 3], 4, 0.5).to_dtype(dtype).unwrap();
            let g = (bn.forward_t(xv.as_tensor(), true).unwrap() * dy).unwrap().sum_all().unwrap().backward().unwrap();
            let s = g.get(xv.as_tensor()).unwrap().sum(0).unwrap().abs().unwrap().max(0).unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
            assert_eq!(s > 1e-3, detach, "{dtype:?} detach={detach}: |sum dx| = {s}");
        }
    }
}
