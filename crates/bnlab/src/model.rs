//! The lab's networks: an MLP and a small CNN, with or without batch normalization, placed
//! as in the seed: act(BN(x W)), the preceding layer's bias dropped when BN follows.

use crate::dense::Dense;
use crate::rng::Rng;
use anyhow::{bail, Result};
use batchnorm_candle::{batch_norm, BatchNorm, BatchNormConfig, Momentum, RunningVar};
use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Init, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

/// Hidden-layer non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    Sigmoid,
    Relu,
}

/// Which network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Fully connected, hidden widths as given, 10 outputs.
    Mlp { widths: Vec<usize> },
    /// conv5x5(c1)-BN-act-pool2, conv5x5(c2)-BN-act-pool2, dense to 10.
    Cnn { channels: [usize; 2] },
}

/// How weights start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightInit {
    /// N(0, std^2) for every weight (the paper's "small Gaussian").
    Gaussian(f64),
    /// N(0, 1 / fan_in) (LeCun): keeps pre-activations near unit scale.
    Lecun,
    /// N(0, 2 / fan_in) (He), for ReLU.
    He,
}

/// Batch-normalization settings of a model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BnSpec {
    pub momentum: Option<f64>,
    pub biased_running_var: bool,
    pub eps: f64,
    /// Initial gamma and beta (the seed: 1 and 0).
    pub gamma0: f64,
    pub beta0: f64,
    /// Backward treats the batch statistics as constants (the paper's section 2 failure).
    #[serde(default)]
    pub detach_stats: bool,
    /// Keep the bias of the layer before BN (redundant with beta; for that experiment).
    #[serde(default)]
    pub keep_bias: bool,
}

impl Default for BnSpec {
    fn default() -> Self {
        BnSpec { momentum: Some(0.1), biased_running_var: false, eps: 1e-5, gamma0: 1.0, beta0: 0.0, detach_stats: false, keep_bias: false }
    }
}

/// How batch normalization runs in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics, running statistics updated, dropout on.
    Train,
    /// Running statistics, dropout off.
    Eval,
    /// Batch statistics without any update, dropout off; each BN layer's batch moments are
    /// returned (population statistics with frozen weights).
    BatchStats,
}

/// Everything that defines a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: Arch,
    pub act: Act,
    /// `Some`: batch normalization after every hidden linear/conv layer.
    pub bn: Option<BnSpec>,
    /// Dropout probability after every hidden activation (training only).
    pub dropout: f64,
    pub init: WeightInit,
}

/// A built network and the variables it owns.
pub struct Model {
    pub spec: ModelSpec,
    pub layers: Vec<Layer>,
    pub head: Dense,
    pub bns: Vec<BatchNorm>,
    /// Names of the BN layers (`bn0`, ...) in order.
    pub bn_names: Vec<String>,
}

pub enum Layer {
    Dense(Dense),
    Conv(Conv2d),
}

/// Per-layer pre-activations (the inputs of the non-linearity), when asked for.
pub type Taps = Vec<Tensor>;

fn init_tensor(rng: &mut Rng, shape: &[usize], std: f64, dev: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
    Ok(Tensor::from_vec(v, shape, dev)?)
}

/// Creates variable `name` in `vm` with the given values.
fn var(vm: &VarMap, name: &str, value: Tensor) -> Result<Tensor> {
    let t = vm.get(value.shape(), name, Init::Const(0.0), DType::F32, value.device())?;
    vm.data().lock().expect("varmap").get(name).expect("just created").set(&value)?;
    Ok(t)
}

impl Model {
    /// Builds the network with weights drawn from `seed` (the same seed gives the same
    /// weights with or without BN, so the two can be compared from one starting point).
    pub fn new(spec: &ModelSpec, vm: &VarMap, seed: u64, inputs: (usize, usize)) -> Result<Model> {
        let dev = Device::Cpu;
        let std_for = |fan_in: usize| match spec.init {
            WeightInit::Gaussian(s) => s,
            WeightInit::Lecun => (1.0 / fan_in as f64).sqrt(),
            WeightInit::He => (2.0 / fan_in as f64).sqrt(),
        };
        let mut layers = Vec::new();
        let mut bns = Vec::new();
        let mut bn_names = Vec::new();
        let mut make_bn = |i: usize, c: usize| -> Result<()> {
            if let Some(b) = &spec.bn {
                let cfg = BatchNormConfig::new(c)
                    .eps(b.eps)
                    .momentum(b.momentum.map_or(Momentum::CumulativeAverage, Momentum::Exponential))
                    .running_var(if b.biased_running_var { RunningVar::Biased } else { RunningVar::Unbiased });
                let name = format!("bn{i}");
                let vb = VarBuilder::from_varmap(vm, DType::F32, &dev);
                let layer = batch_norm(c, cfg, vb.pp(&name))?.detach_statistics(b.detach_stats);
                if (b.gamma0, b.beta0) != (1.0, 0.0) {
                    var(vm, &format!("{name}.weight"), Tensor::full(b.gamma0 as f32, c, &dev)?)?;
                    var(vm, &format!("{name}.bias"), Tensor::full(b.beta0 as f32, c, &dev)?)?;
                }
                bns.push(layer);
                bn_names.push(name);
            }
            Ok(())
        };
        let bias = spec.bn.is_none_or(|b| b.keep_bias);
        let (rows, cols) = inputs;
        let last_width = match &spec.arch {
            Arch::Mlp { widths } => {
                if widths.is_empty() {
                    bail!("an MLP needs at least one hidden layer");
                }
                let mut fan_in = rows * cols;
                for (i, &w) in widths.iter().enumerate() {
                    let mut rng = Rng::derive(seed, &[1, i as u64]);
                    let wt = var(vm, &format!("fc{i}.weight"), init_tensor(&mut rng, &[w, fan_in], std_for(fan_in), &dev)?)?;
                    let b = if bias { Some(var(vm, &format!("fc{i}.bias"), Tensor::zeros(w, DType::F32, &dev)?)?) } else { None };
                    layers.push(Layer::Dense(Dense::new(wt, b)));
                    make_bn(i, w)?;
                    fan_in = w;
                }
                fan_in
            }
            Arch::Cnn { channels } => {
                let mut cin = 1;
                let (mut h, mut w) = (rows, cols);
                for (i, &c) in channels.iter().enumerate() {
                    let fan_in = cin * 25;
                    let mut rng = Rng::derive(seed, &[2, i as u64]);
                    let wt = var(vm, &format!("conv{i}.weight"), init_tensor(&mut rng, &[c, cin, 5, 5], std_for(fan_in), &dev)?)?;
                    let b = if bias { Some(var(vm, &format!("conv{i}.bias"), Tensor::zeros(c, DType::F32, &dev)?)?) } else { None };
                    layers.push(Layer::Conv(Conv2d::new(wt, b, Conv2dConfig::default())));
                    make_bn(i, c)?;
                    if h < 5 || w < 5 {
                        bail!("images of {rows}x{cols} are too small for the CNN");
                    }
                    (h, w) = ((h - 4) / 2, (w - 4) / 2);
                    cin = c;
                }
                cin * h * w
            }
        };
        let mut rng = Rng::derive(seed, &[3]);
        let hw = var(vm, "head.weight", init_tensor(&mut rng, &[10, last_width], std_for(last_width), &dev)?)?;
        let hb = var(vm, "head.bias", Tensor::zeros(10, DType::F32, &dev)?)?;
        Ok(Model { spec: spec.clone(), layers, head: Dense::new(hw, Some(hb)), bns, bn_names })
    }

    /// Logits for a batch of images `[B, rows*cols]`; with `taps`, also every hidden layer's
    /// pre-activation (detached). `step` seeds the dropout masks.
    pub fn forward(&self, x: &Tensor, train: bool, step: u64, seed: u64, taps: bool) -> Result<(Tensor, Taps)> {
        let (y, t, _) = self.forward_mode(x, if train { Mode::Train } else { Mode::Eval }, step, seed, taps)?;
        Ok((y, t))
    }

    /// [`Model::forward`] in any [`Mode`]; the third value holds each BN layer's batch
    /// moments in `Mode::BatchStats`.
    pub fn forward_mode(&self, x: &Tensor, mode: Mode, step: u64, seed: u64, taps: bool) -> Result<(Tensor, Taps, Vec<Vec<batchnorm_candle::Moments>>)> {
        let train = mode == Mode::Train;
        let mut moments = Vec::new();
        let mut out = Vec::new();
        let (b, p) = x.dims2()?;
        let side = (p as f64).sqrt() as usize;
        let mut h = match self.spec.arch {
            Arch::Mlp { .. } => x.clone(),
            Arch::Cnn { .. } => x.reshape((b, 1, side, p / side))?,
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let mut z = match layer {
                Layer::Dense(l) => l.forward(&h)?,
                Layer::Conv(c) => c.forward(&h)?,
            };
            if let Some(bn) = self.bns.get(i) {
                z = match mode {
                    Mode::BatchStats => {
                        let (y, m) = bn.forward_batch_stats(&z)?;
                        moments.push(m);
                        y
                    }
                    _ => bn.forward_t(&z, train)?,
                };
            }
            if taps {
                out.push(z.detach());
            }
            let mut a = match self.spec.act {
                Act::Sigmoid => candle_nn::ops::sigmoid(&z)?,
                Act::Relu => z.relu()?,
            };
            if matches!(layer, Layer::Conv(_)) {
                a = a.max_pool2d(2)?;
            }
            if train && self.spec.dropout > 0.0 {
                a = dropout(&a, self.spec.dropout, Rng::derive(seed, &[4, step, i as u64]))?;
            }
            h = a;
        }
        let h = if matches!(self.spec.arch, Arch::Cnn { .. }) { h.flatten_from(1)? } else { h };
        Ok((self.head.forward(&h)?, out, moments))
    }

    /// The weight tensor of hidden layer `i` (dense or conv).
    pub fn weight(&self, i: usize) -> &Tensor {
        match &self.layers[i] {
            Layer::Dense(l) => l.weight(),
            Layer::Conv(c) => c.weight(),
        }
    }

    /// The bias of hidden layer `i`, if it has one.
    pub fn bias(&self, i: usize) -> Option<&Tensor> {
        match &self.layers[i] {
            Layer::Dense(l) => l.bias(),
            Layer::Conv(c) => c.bias(),
        }
    }
}

/// Inverted dropout with a mask drawn from `rng` (reproducible and resumable).
fn dropout(a: &Tensor, p: f64, mut rng: Rng) -> Result<Tensor> {
    let keep = 1.0 - p;
    let n = a.elem_count();
    let mask: Vec<f32> = (0..n).map(|_| if rng.uniform() < keep { (1.0 / keep) as f32 } else { 0.0 }).collect();
    Ok(a.mul(&Tensor::from_vec(mask, a.shape(), a.device())?)?)
}
