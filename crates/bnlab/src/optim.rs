//! Stochastic gradient descent with optional momentum and L2 weight decay, whose state can be
//! saved and restored exactly (candle-nn's SGD has no momentum).

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor, Var};
use candle_nn::VarMap;
use std::collections::BTreeMap;

/// `v = mu * v + (g + wd * w)`, `w -= lr * v` (plain SGD when `mu = 0`).
pub struct Sgd {
    pub momentum: f64,
    pub weight_decay: f64,
    /// Velocity per variable name.
    pub velocity: BTreeMap<String, Tensor>,
}

/// Whether `name` is learned by gradient descent (running statistics are not).
pub fn trainable(name: &str) -> bool {
    !(name.ends_with("running_mean") || name.ends_with("running_var"))
}

impl Sgd {
    pub fn new(momentum: f64, weight_decay: f64) -> Self {
        Sgd { momentum, weight_decay, velocity: BTreeMap::new() }
    }

    /// One step over every trainable variable of `vm` that has a gradient and is not
    /// `frozen`.
    pub fn step(&mut self, vm: &VarMap, grads: &GradStore, lr: f64, frozen: &dyn Fn(&str) -> bool) -> Result<()> {
        let data = vm.data().lock().expect("varmap");
        let mut names: Vec<(&String, &Var)> = data.iter().collect();
        names.sort_by(|a, b| a.0.cmp(b.0));
        for (name, var) in names {
            if !trainable(name) || frozen(name) {
                continue;
            }
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let mut g = g.clone();
            if self.weight_decay > 0.0 && name.ends_with("weight") && !name.starts_with("bn") {
                g = (g + (var.as_tensor() * self.weight_decay)?)?;
            }
            let step = if self.momentum > 0.0 {
                let v = match self.velocity.get(name) {
                    Some(v) => ((v * self.momentum)? + g)?,
                    None => g,
                };
                self.velocity.insert(name.clone(), v.clone());
                v
            } else {
                g
            };
            if !update_in_place(var, &step, lr) {
                var.set(&(var.as_tensor() - (step * lr)?)?)?;
            }
        }
        Ok(())
    }
}

/// `w -= lr * step` on a contiguous float32 CPU variable, in place: one pass and no new
/// tensors, where `var - step * lr` makes two and `set` copies the result back (Figure-1 MLP,
/// 1 thread, 3 interleaved runs of 3000 steps: 1255-1264 -> 1289-1306 steps/s without BN,
/// 1331-1338 -> 1359-1390 with). The same float32 operations in the same order, so the
/// weights equal those of the tensor expression. Returns false (having done nothing) for any
/// other kind of tensor.
fn update_in_place(var: &Var, step: &Tensor, lr: f64) -> bool {
    var.as_tensor().inplace_op2(step, &SgdUpdate { lr: lr as f32 }).is_ok()
}

/// `w -= lr * g`, element by element.
struct SgdUpdate {
    lr: f32,
}

impl InplaceOp2 for SgdUpdate {
    fn name(&self) -> &'static str {
        "sgd-update"
    }

    fn cpu_fwd(&self, w: &mut CpuStorage, lw: &Layout, g: &CpuStorage, lg: &Layout) -> candle_core::Result<()> {
        let (Some((w0, w1)), Some((g0, g1))) = (lw.contiguous_offsets(), lg.contiguous_offsets()) else {
            candle_core::bail!("sgd-update: non-contiguous tensor")
        };
        let (CpuStorage::F32(w), CpuStorage::F32(g)) = (w, g) else { candle_core::bail!("sgd-update: not float32") };
        if w1 - w0 != g1 - g0 {
            candle_core::bail!("sgd-update: shape mismatch")
        }
        for (w, g) in w[w0..w1].iter_mut().zip(&g[g0..g1]) {
            *w -= *g * self.lr;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn in_place_update_equals_the_tensor_expression() {
        let dev = Device::Cpu;
        let w0 = Tensor::randn(0f32, 1.0, (7, 5), &dev).unwrap();
        let g = Tensor::randn(0f32, 3.0, (7, 5), &dev).unwrap();
        let lr = 0.37;
        let expected = (&w0 - (&g * lr).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        let var = Var::from_tensor(&w0).unwrap();
        assert!(update_in_place(&var, &g, lr));
        assert_eq!(var.as_tensor().to_vec2::<f32>().unwrap(), expected);
        // A float64 variable is left to the tensor expression.
        let v64 = Var::from_tensor(&w0.to_dtype(candle_core::DType::F64).unwrap()).unwrap();
        assert!(!update_in_place(&v64, &g.to_dtype(candle_core::DType::F64).unwrap(), lr));
    }
}
