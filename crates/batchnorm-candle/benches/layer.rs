//! One training step (forward + backward) and eval of our candle layer against
//! `candle_nn::BatchNorm` on the suite's CNN shapes.
//!
//! cargo bench -p batchnorm-candle --bench layer
//!
//! `train_step/identity_floor` is the same step through a layer that does nothing (see
//! `Identity`): candle's own share of every step.
//!
//! `BN_DTYPE=f64` runs them on f64 tensors (the core's float64 kernels), with
//! `train_step/ours_composed` and `eval/ours_composed` beside them: the composed candle ops
//! the layer ran on f64 before.
//!
//! `BN_DTYPE=f16|bf16` runs the same steps on half-precision tensors and parameters (f32 by
//! default): in training our layer's op widens its input to float32, runs the kernels and
//! narrows its output (see `src/half_precision.rs`). `candle_nn`'s layer fails to train in half precision (a dtype
//! mismatch inside it), so only its eval is timed there. Measured (2 threads, bf16, medians,
//! 2 alternating runs a step): the composed fallback the layer ran before -> the kernels
//! between candle's `to_dtype` casts -> the op's own parallel conversions: training step
//! NCHW 32x64x56x56 480-495 -> 33-36 -> 25-26 ms, 64x256x14x14 242 -> 16.6-20.6 -> 12.6-12.9,
//! 128x512x7x7 244-247 -> 16.5-20.8 -> 12.5-15.2; eval 9.9-10.6 -> 4.7-5.9 -> 3.0-3.3, 5.2 ->
//! 2.2-3.1 -> 1.4-2.0, 4.7-5.8 -> 2.4-3.4 -> 1.5-2.5 (`candle_nn`'s eval 9.7, 5.5 and 5.4 ms).
//! In f16 (one run each; candle's casts convert f16 slower than bf16): steps 543 -> 91 -> 44,
//! 271 -> 43 -> 21, 265 -> 45 -> 23 ms; eval 52 -> 20 -> 3.1, 27 -> 10.5 -> 1.2, 29 -> 10.5 ->
//! 1.3 (`candle_nn`'s eval 56, 30 and 30 ms).
//! Eval since reads and writes half precision itself (`batchnorm::forward_eval_converted_into`,
//! a block of 4,096 values at a time through float32, with `src/convert.rs`'s vectorised
//! conversions; 2 alternating runs, the op's own conversions -> this): bf16 3.40-3.61 ->
//! 1.39-1.51 ms, 1.41-1.44 -> 0.59-0.60, 1.42-2.14 -> 0.66-0.71; f16 3.06-3.49 -> 1.22-1.95,
//! 1.24-1.47 -> 0.50-0.76, 1.25-1.51 -> 0.65-0.86. Then blocks of 2,048 values (in L1) and
//! AVX-512 narrowing (2 alternating runs of the two builds): bf16 1.38-1.44 -> 0.84-1.12 ms,
//! 0.57-0.58 -> 0.37-0.40, 0.68 -> 0.49-0.62; f16 1.25-1.48 -> 0.83-0.89, 0.42-0.44 -> 0.30,
//! 0.52-0.54 -> 0.42-0.43. The float32 step of the first shape takes
//! 12.5 ms and its eval 0.63: the training step's conversion passes (2 bytes a value in, 4
//! out, and back) are what half precision costs there.

use batchnorm_candle::{batch_norm, BatchNormConfig};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, ModuleT, Shape, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, BenchmarkId, Criterion};
use std::time::Duration;

/// A loss whose gradient with respect to its input is `dy`.
struct InjectGrad(Tensor);

impl CustomOp1 for InjectGrad {
    fn name(&self) -> &'static str {
        "inject-grad"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(vec![0.0]), Shape::from(())))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, _grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.0.clone()))
    }
}

/// The least any layer can do in a training step: a new output the size of its input
/// (forward) and a gradient the size of its input (backward), with no arithmetic. Timing a
/// step through it measures what candle itself spends on the step (allocation, and the
/// gradient store's zero-fill and accumulation of every tensor-sized gradient), which no
/// batch-norm kernel can remove.
struct Identity;

impl CustomOp1 for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = l.contiguous_offsets().expect("contiguous");
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(v[a..b].to_vec()),
            CpuStorage::F16(v) => CpuStorage::F16(v[a..b].to_vec()),
            CpuStorage::BF16(v) => CpuStorage::BF16(v[a..b].to_vec()),
            CpuStorage::F64(v) => CpuStorage::F64(v[a..b].to_vec()),
            _ => candle_core::bail!("identity: f32, f64, f16 and bf16 only"),
        };
        Ok((out, l.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.copy()?))
    }
}

const SHAPES: [[usize; 4]; 3] = [[32, 64, 56, 56], [64, 256, 14, 14], [128, 512, 7, 7]];

fn layer(c: &mut Criterion) {
    let dtype = match std::env::var("BN_DTYPE").as_deref() {
        Err(_) | Ok("f32") => DType::F32,
        Ok("f16") => DType::F16,
        Ok("bf16") => DType::BF16,
        Ok("f64") => DType::F64,
        Ok(other) => panic!("BN_DTYPE={other:?}: expected f32, f64, f16 or bf16"),
    };
    eprintln!("dtype: {dtype:?} (BN_DTYPE=f32|f64|f16|bf16)");
    let mut g = c.benchmark_group("candle_bn");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for shape in SHAPES {
        let ch = shape[1];
        let mut id = shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("x");
        if dtype != DType::F32 {
            id = format!("{id}/{}", dtype.as_str());
        }
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., &shape[..], &Device::Cpu).unwrap().to_dtype(dtype).unwrap()).unwrap();
        let dy = Tensor::randn(0f32, 1., &shape[..], &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        let vm_a = VarMap::new();
        let ours = batch_norm(ch, BatchNormConfig::new(ch), VarBuilder::from_varmap(&vm_a, dtype, &Device::Cpu)).unwrap();
        let vm_b = VarMap::new();
        let nn = candle_nn::batch_norm(ch, 1e-5, VarBuilder::from_varmap(&vm_b, dtype, &Device::Cpu)).unwrap();
        // In f64, also the composed candle ops our layer ran on f64 tensors before its float64
        // kernels (`composed_ops`).
        let composed = ours.clone().composed_ops(true);
        let mut modules: Vec<(&str, &dyn ModuleT)> = vec![("ours", &ours), ("candle_nn", &nn)];
        if dtype == DType::F64 {
            modules.push(("ours_composed", &composed));
        }
        g.bench_function(BenchmarkId::new("train_step/identity_floor", &id), |b| {
            b.iter(|| {
                let y = x.as_tensor().apply_op1(Identity).unwrap();
                y.apply_op1(InjectGrad(dy.clone())).unwrap().backward().unwrap()
            })
        });
        for (name, m) in modules {
            // A mode a layer refuses (candle_nn's training in half precision) is said once
            // and not timed.
            match m.forward_t(x.as_tensor(), true) {
                Ok(_) => {
                    g.bench_function(BenchmarkId::new(format!("train_step/{name}"), &id), |b| {
                        b.iter(|| {
                            let y = m.forward_t(x.as_tensor(), true).unwrap();
                            y.apply_op1(InjectGrad(dy.clone())).unwrap().backward().unwrap()
                        })
                    });
                }
                Err(e) => eprintln!("{name} on {id}: training refused ({}); not timed", e.to_string().lines().next().unwrap_or("")),
            }
            match m.forward_t(x.as_tensor(), false) {
                Ok(_) => {
                    g.bench_function(BenchmarkId::new(format!("eval/{name}"), &id), |b| b.iter(|| m.forward_t(x.as_tensor(), false).unwrap()));
                }
                Err(e) => eprintln!("{name} on {id}: eval refused ({}); not timed", e.to_string().lines().next().unwrap_or("")),
            }
        }
    }
    g.finish();
}

/// Sets the allocator regime `BN_ALLOC` names (see the module's notes) and says which.
fn fix_allocator() {
    let regime = std::env::var("BN_ALLOC").unwrap_or_else(|_| "heap".into());
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let ok = match regime.as_str() {
            "heap" => batchnorm_candle::keep_freed_memory(),
            // SAFETY: mallopt only changes allocator parameters, before any tensor exists.
            "fresh" => unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10) == 1 },
            "glibc" => true,
            other => panic!("BN_ALLOC={other:?}: expected heap, fresh or glibc"),
        };
        assert!(ok, "mallopt refused the {regime} setting");
        eprintln!("allocator: {regime} (BN_ALLOC=heap|fresh|glibc)");
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    eprintln!("allocator: the platform's own (BN_ALLOC={regime} applies to glibc only)");
}

criterion_group!(benches, layer);

fn main() {
    fix_allocator();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
