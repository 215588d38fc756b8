//! One training step (forward + backward) and eval of our candle layer against
//! `candle_nn::BatchNorm` on the suite's CNN shapes.
//!
//! cargo bench -p batchnorm-candle --bench layer
//!
//! `train_step/identity_floor` is the same step through a layer that does nothing (see
//! `Identity`): candle's own share of every step.
//!
//! `BN_DTYPE=f16|bf16` runs the same steps on half-precision tensors and parameters (f32 by
//! default): our layer runs its float32 kernels on a widened copy there. `candle_nn`'s
//! layer fails to train in half precision (a dtype mismatch inside it), so only its eval is
//! timed there. Measured (2 threads, bf16, medians of two alternating runs, the composed
//! fallback our layer ran before -> the kernels on a widened copy): training step NCHW
//! 32x64x56x56 480-495 -> 34-36 ms, 64x256x14x14 242 -> 20.5-20.6, 128x512x7x7 244-247 ->
//! 19.7-20.8; eval 9.9-10.6 -> 5.5-5.9, 5.2 -> 2.8-3.1, 4.7-5.8 -> 3.0-3.4 (`candle_nn`'s
//! eval 9.7, 5.5, 5.4 ms in a later run). In f16, whose conversions candle runs slower, one
//! run each: steps 543 -> 91, 271 -> 43, 265 -> 45 ms; eval 52 -> 20, 27 -> 10.5, 29 -> 10.5.
//!
//! The step's loss is a custom op that hands backprop a precomputed, contiguous upstream
//! gradient `dy` (as the next layer of a network would): `(y * dy).sum_all()` would instead
//! spend ~140 ms of candle's own backprop on a broadcast gradient (32x64x56x56), drowning
//! the batch norm in what both layers pay alike.
//!
//! Every step allocates a handful of tensor-sized buffers (outputs, gradients, the gradient
//! store's zeros) and frees them. Left to itself glibc serves some of them with fresh `mmap`s,
//! whose pages fault in (and are zeroed) on first touch, and which ones depends on the
//! history of the process: in three runs under glibc's defaults the identity step of NCHW
//! 64x256x14x14 took 27.4, 3.7 and 27.2 ms, and within one run the three steps compared
//! could land in different regimes (our step alone, in its own process, 21.5 ms with about
//! 12,000 page faults a step against 4.8 ms with the setting below). So the bench fixes the
//! allocator first (glibc only), chosen by `BN_ALLOC`:
//!
//! - `heap` (the default, as `bnlab` runs): [`batchnorm_candle::keep_freed_memory`], blocks
//!   up to 32 MB from the heap and freed memory kept there, so a step reuses the last step's
//!   pages, as a training loop settles to.
//! - `fresh`: every block from 128 KB is a fresh `mmap` (glibc's starting threshold, never
//!   raised): every step pays its page faults.
//! - `glibc`: glibc's defaults, untouched.

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
            _ => candle_core::bail!("identity: f32, f16 and bf16 only"),
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
        Ok(other) => panic!("BN_DTYPE={other:?}: expected f32, f16 or bf16"),
    };
    eprintln!("dtype: {dtype:?} (BN_DTYPE=f32|f16|bf16)");
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
        let modules: [(&str, &dyn ModuleT); 2] = [("ours", &ours), ("candle_nn", &nn)];
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
