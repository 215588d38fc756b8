//! Run checkpoints: every variable, the optimiser's velocities and the counters, in one
//! safetensors file written atomically (temporary file, then rename).

use crate::model::Model;
use crate::optim::Sgd;
use anyhow::{bail, Context, Result};
use batchnorm::safetensors::{self, Dtype, SafeTensors};
use batchnorm::OwnedTensor;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use std::collections::HashMap;
use std::path::Path;

fn owned(t: &Tensor) -> Result<OwnedTensor> {
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(OwnedTensor::f32(t.dims().to_vec(), &v))
}

/// Writes `model.*` (all variables), `opt.*` (velocities) and metadata (`step` and each BN's
/// `num_batches_tracked`) to `path`, atomically.
pub fn save(path: &Path, vm: &VarMap, model: &Model, opt: &Sgd, step: u64) -> Result<()> {
    let mut tensors = Vec::new();
    for (name, var) in vm.data().lock().expect("varmap").iter() {
        tensors.push((format!("model.{name}"), owned(var.as_tensor())?));
    }
    for (name, v) in &opt.velocity {
        tensors.push((format!("opt.{name}"), owned(v)?));
    }
    let mut md = HashMap::new();
    md.insert("step".to_string(), step.to_string());
    for (name, bn) in model.bn_names.iter().zip(&model.bns) {
        md.insert(format!("{name}.num_batches_tracked"), bn.num_batches_tracked().to_string());
    }
    let bytes = safetensors::serialize(tensors, Some(md))?;
    batchnorm::write_atomic(path, &bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Restores what [`save`] wrote into a freshly built model; returns the step.
pub fn load(path: &Path, vm: &VarMap, model: &Model, opt: &mut Sgd) -> Result<u64> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).with_context(|| format!("{} is not a valid checkpoint", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)?;
    let md = header.metadata().clone().unwrap_or_default();
    let tensor = |name: &str, shape: &[usize]| -> Result<Tensor> {
        let t = st.tensor(name).with_context(|| format!("{}: missing {name}", path.display()))?;
        if t.dtype() != Dtype::F32 || t.shape() != shape {
            bail!("{}: {name} is {:?} {:?}, expected F32 {shape:?}", path.display(), t.dtype(), t.shape());
        }
        let v: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4"))).collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    };
    // Read everything before changing anything.
    let data = vm.data().lock().expect("varmap");
    let mut values = Vec::new();
    for (name, var) in data.iter() {
        values.push((var, tensor(&format!("model.{name}"), var.dims())?));
    }
    let mut velocity = std::collections::BTreeMap::new();
    for name in st.names() {
        if let Some(n) = name.strip_prefix("opt.") {
            let shape = st.tensor(name)?.shape().to_vec();
            velocity.insert(n.to_string(), tensor(name, &shape)?);
        }
    }
    let step: u64 = md.get("step").and_then(|s| s.parse().ok()).with_context(|| format!("{}: no step recorded", path.display()))?;
    let mut counters = Vec::new();
    for name in &model.bn_names {
        let n: i64 = md
            .get(&format!("{name}.num_batches_tracked"))
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{}: no num_batches_tracked for {name}", path.display()))?;
        counters.push(n);
    }
    for (var, v) in values {
        var.set(&v)?;
    }
    for (bn, n) in model.bns.iter().zip(counters) {
        bn.set_num_batches_tracked(n);
    }
    opt.velocity = velocity;
    Ok(step)
}
