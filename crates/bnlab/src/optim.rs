//! Stochastic gradient descent with optional momentum and L2 weight decay, whose state can be
//! saved and restored exactly (candle-nn's SGD has no momentum).

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
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
            var.set(&(var.as_tensor() - (step * lr)?)?)?;
        }
        Ok(())
    }
}
