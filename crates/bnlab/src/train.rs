//! Training runs: mini-batch SGD over a dataset, periodic evaluation, metrics, atomic
//! checkpoints, bit-exact resume and divergence detection.

use crate::checkpoint;
use crate::data::{Dataset, Source, Split};
use crate::model::{Arch, Model, ModelSpec, WeightInit};
use crate::optim::Sgd;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, D};
use candle_nn::VarMap;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// A loss above this (or not finite) counts as divergence: chance level is ln 10 = 2.3.
pub const DIVERGED_LOSS: f64 = 50.0;

/// Learning-rate decay: `lr * factor^(step / every)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrDecay {
    pub every: u64,
    pub factor: f64,
}

/// Where the data comes from, recorded so a resumed run reloads the same data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataSpec {
    Builtin,
    FashionMnist,
    Dir(PathBuf),
}

impl DataSpec {
    pub fn source(&self) -> Source {
        match self {
            DataSpec::Builtin => Source::Builtin,
            DataSpec::FashionMnist => Source::FashionMnist,
            DataSpec::Dir(d) => Source::Dir(d.clone()),
        }
    }
    pub fn from_source(s: &Source) -> Self {
        match s {
            Source::Builtin => DataSpec::Builtin,
            Source::FashionMnist => DataSpec::FashionMnist,
            Source::Dir(d) => DataSpec::Dir(d.clone()),
        }
    }
}

/// Everything that defines a training run (written to `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ModelSpec,
    pub data: DataSpec,
    /// Train on the first `n` training examples only (to study overfitting).
    pub train_subset: Option<usize>,
    pub lr: f64,
    pub lr_decay: Option<LrDecay>,
    /// SGD momentum (0: plain SGD).
    pub momentum: f64,
    /// L2 penalty on weights (not on gamma/beta).
    pub weight_decay: f64,
    pub batch_size: usize,
    pub steps: u64,
    pub eval_every: u64,
    pub seed: u64,
    /// Variable-name prefixes whose values stay fixed (e.g. `bn0.weight`).
    pub frozen: Vec<String>,
}

impl TrainConfig {
    pub fn lr_at(&self, step: u64) -> f64 {
        match self.lr_decay {
            Some(d) if d.every > 0 => self.lr * d.factor.powi((step / d.every) as i32),
            _ => self.lr,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if self.batch_size < 2 {
            bail!("--batch-size must be at least 2 (batch statistics need two values), got {}", self.batch_size);
        }
        if self.eval_every == 0 {
            bail!("--eval-every must be at least 1");
        }
        if !(0.0..1.0).contains(&self.model.dropout) {
            bail!("--dropout must be in [0, 1), got {}", self.model.dropout);
        }
        if !(0.0..1.0).contains(&self.momentum) {
            bail!("--momentum must be in [0, 1), got {}", self.momentum);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("--weight-decay must be a number of at least 0, got {}", self.weight_decay);
        }
        if let Some(d) = self.lr_decay {
            if d.every == 0 {
                bail!("--lr-decay-every must be at least 1");
            }
            if !(d.factor.is_finite() && d.factor > 0.0) {
                bail!("--lr-decay-factor must be a positive number, got {}", d.factor);
            }
        }
        match &self.model.arch {
            Arch::Mlp { widths } if widths.contains(&0) => bail!("--widths takes layer widths of at least 1, got {widths:?}"),
            Arch::Cnn { channels } if channels.contains(&0) => bail!("--channels takes channel counts of at least 1, got {channels:?}"),
            _ => {}
        }
        if let WeightInit::Gaussian(s) = self.model.init {
            if !(s.is_finite() && s > 0.0) {
                bail!("--init-std must be a positive number, got {s}");
            }
        }
        Ok(())
    }
}

/// One evaluation on the test set.
#[derive(Debug, Clone)]
pub struct Eval {
    pub step: u64,
    pub loss: f64,
    pub acc: f64,
    /// Pre-activations of every hidden layer over the test set, flattened per layer
    /// (`[n, units]` for dense layers), when asked for.
    pub taps: Vec<(Vec<usize>, Vec<f32>)>,
}

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub step: u64,
    pub lr: f64,
    pub train_loss: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    pub extra: Vec<(String, f64)>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub rows: Vec<Row>,
    /// `(step, loss)` where the loss blew up, if it did.
    pub diverged: Option<(u64, f64)>,
}

impl Outcome {
    pub fn best_acc(&self) -> f64 {
        self.rows.iter().map(|r| r.test_acc).fold(0.0, f64::max)
    }
    pub fn final_acc(&self) -> f64 {
        self.rows.last().map_or(0.0, |r| r.test_acc)
    }
    /// First evaluated step whose test accuracy reached `acc`.
    pub fn steps_to(&self, acc: f64) -> Option<u64> {
        self.rows.iter().find(|r| r.test_acc >= acc).map(|r| r.step)
    }
}

/// Hook called at every evaluation; returns extra named metrics for the row.
pub type Hook<'a> = dyn FnMut(&Eval, &Model) -> Result<Vec<(String, f64)>> + 'a;

/// What [`Run::on_step`] calls after every step's backward pass: `(step, gradients, model)`.
pub type StepHook = Box<dyn FnMut(u64, &candle_core::backprop::GradStore, &Model) -> Result<()>>;

/// A training run in progress.
pub struct Run {
    pub cfg: TrainConfig,
    pub data: Dataset,
    pub vm: VarMap,
    pub model: Model,
    pub opt: Sgd,
    pub step: u64,
    pub dir: Option<PathBuf>,
    /// Whether evaluations compute hidden pre-activations (for hooks that need them).
    pub want_taps: bool,
    /// Show a progress bar (or, when stderr is not a terminal, one line per evaluation).
    pub progress: bool,
    /// Called after every step's backward pass, before the update (e.g. to record gradient
    /// norms): `(step, gradients, model)`.
    pub on_step: Option<StepHook>,
    rows: Vec<Row>,
    /// The current epoch's permutation of the training set.
    perm: Option<(u64, Vec<usize>)>,
}

fn batch_tensor(split: &Split, idx: &[usize]) -> Result<(Tensor, Tensor)> {
    let p = split.pixels();
    let mut x = Vec::with_capacity(idx.len() * p);
    for &i in idx {
        x.extend_from_slice(&split.images[i * p..(i + 1) * p]);
    }
    let y: Vec<u32> = idx.iter().map(|&i| split.labels[i]).collect();
    Ok((Tensor::from_vec(x, (idx.len(), p), &Device::Cpu)?, Tensor::from_vec(y, idx.len(), &Device::Cpu)?))
}

impl Run {
    /// The run at step 0: checked configuration, training subset, model and optimiser.
    fn build(cfg: TrainConfig, mut data: Dataset, dir: Option<PathBuf>) -> Result<Run> {
        cfg.validate()?;
        if let Some(n) = cfg.train_subset {
            if n < cfg.batch_size || n > data.train.len() {
                bail!("--train-subset {n} must be between the batch size and the {} training examples", data.train.len());
            }
            data.train = data.train.select(&(0..n).collect::<Vec<_>>());
        }
        if data.train.len() < cfg.batch_size {
            bail!("batch size {} exceeds the {} training examples", cfg.batch_size, data.train.len());
        }
        let vm = VarMap::new();
        let model = Model::new(&cfg.model, &vm, cfg.seed, (data.train.rows, data.train.cols))?;
        let opt = Sgd::new(cfg.momentum, cfg.weight_decay);
        Ok(Run { cfg, data, vm, model, opt, step: 0, dir, want_taps: false, progress: false, on_step: None, rows: vec![], perm: None })
    }

    /// Starts a new run; with `dir`, writes `config.json` there (the directory must not
    /// hold an earlier run).
    pub fn new(cfg: TrainConfig, data: Dataset, dir: Option<&Path>) -> Result<Run> {
        let run = Run::build(cfg, data, dir.map(Path::to_path_buf))?;
        if let Some(d) = dir {
            if d.join("config.json").exists() {
                bail!("{} already holds a run: use --resume {} to continue it, or another --out", d.display(), d.display());
            }
            std::fs::create_dir_all(d).with_context(|| format!("cannot create output directory {}", d.display()))?;
            let json = serde_json::to_string_pretty(&run.cfg)?;
            batchnorm::write_atomic(&d.join("config.json"), json.as_bytes()).map_err(|e| anyhow::anyhow!("cannot write to {}: {e}", d.display()))?;
        }
        Ok(run)
    }

    /// Continues the run in `dir` from its checkpoint (bit for bit as if uninterrupted);
    /// `steps` extends its length.
    pub fn resume(dir: &Path, steps: Option<u64>) -> Result<Run> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("cannot resume: {} is missing", cfg_path.display()))?;
        let mut cfg: TrainConfig = serde_json::from_str(&text).with_context(|| format!("{} is not a valid run config", cfg_path.display()))?;
        if let Some(s) = steps {
            cfg.steps = s;
        }
        let ck = dir.join("checkpoint.safetensors");
        if !ck.exists() {
            bail!("cannot resume: {} has no checkpoint yet", dir.display());
        }
        let data = cfg.data.source().load()?;
        let mut run = Run::build(cfg, data, Some(dir.to_path_buf()))?;
        run.step = checkpoint::load(&ck, &run.vm, &run.model, &mut run.opt)?;
        run.rows = read_metrics(&dir.join("metrics.csv"), run.step)?;
        run.rewrite_metrics()?;
        Ok(run)
    }

    /// The epoch's permutation is drawn once and kept (a function of seed and epoch only, so
    /// a resumed run draws the same).
    fn batch_indices(&mut self, step: u64) -> Vec<usize> {
        let n = self.data.train.len();
        let per_epoch = (n / self.cfg.batch_size) as u64;
        let (epoch, k) = (step / per_epoch, (step % per_epoch) as usize);
        if self.perm.as_ref().is_none_or(|p| p.0 != epoch) {
            let mut idx: Vec<usize> = (0..n).collect();
            Rng::derive(self.cfg.seed, &[5, epoch]).shuffle(&mut idx);
            self.perm = Some((epoch, idx));
        }
        let idx = &self.perm.as_ref().expect("just drawn").1;
        idx[k * self.cfg.batch_size..(k + 1) * self.cfg.batch_size].to_vec()
    }

    /// Test loss and accuracy (eval mode), with hidden pre-activations if asked.
    pub fn evaluate(&self, taps: bool) -> Result<Eval> {
        evaluate(&self.model, &self.data.test, taps, self.step)
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    fn rewrite_metrics(&self) -> Result<()> {
        if let Some(d) = &self.dir {
            write_metrics(&d.join("metrics.csv"), &self.rows)?;
        }
        Ok(())
    }

    fn record(&mut self, train_loss: f64, hook: &mut Hook) -> Result<Row> {
        let ev = self.evaluate(self.want_taps)?;
        let extra = hook(&ev, &self.model)?;
        let row = Row { step: self.step, lr: self.cfg.lr_at(self.step), train_loss, test_loss: ev.loss, test_acc: ev.acc, extra };
        if let Some(d) = &self.dir {
            // Checkpoint first, then the metrics row: a crash in between leaves a row too
            // few, never a row the checkpoint cannot reproduce.
            checkpoint::save(&d.join("checkpoint.safetensors"), &self.vm, &self.model, &self.opt, self.step)?;
        }
        self.rows.push(row.clone());
        self.rewrite_metrics()?;
        Ok(row)
    }

    /// Trains to `cfg.steps`, evaluating every `eval_every` steps (and at step 0).
    pub fn train(&mut self, hook: &mut Hook) -> Result<Outcome> {
        let bar = if self.progress && std::io::stderr().is_terminal() {
            let b = ProgressBar::new(self.cfg.steps);
            b.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]").expect("template"));
            b.set_position(self.step);
            Some(b)
        } else {
            None
        };
        let line = self.progress && bar.is_none();
        if self.step == 0 && self.rows.is_empty() {
            let r = self.record(f64::NAN, hook)?;
            report(&bar, line, &r, self.cfg.steps);
        }
        let (mut loss_sum, mut loss_n) = (0.0, 0u64);
        let mut diverged = None;
        while self.step < self.cfg.steps {
            let idx = self.batch_indices(self.step);
            let (x, y) = batch_tensor(&self.data.train, &idx)?;
            let (logits, _) = self.model.forward(&x, true, self.step, self.cfg.seed, false)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let lv = loss.to_scalar::<f32>()? as f64;
            if !lv.is_finite() || lv > DIVERGED_LOSS {
                diverged = Some((self.step, lv));
                break;
            }
            let grads = loss.backward()?;
            if let Some(f) = self.on_step.as_mut() {
                f(self.step, &grads, &self.model)?;
            }
            let frozen = self.cfg.frozen.clone();
            self.opt.step(&self.vm, &grads, self.cfg.lr_at(self.step), &|n: &str| frozen.iter().any(|f| n.starts_with(f.as_str())))?;
            self.step += 1;
            loss_sum += lv;
            loss_n += 1;
            if let Some(b) = &bar {
                b.set_position(self.step);
            }
            if self.step.is_multiple_of(self.cfg.eval_every) || self.step == self.cfg.steps {
                let r = self.record(loss_sum / loss_n as f64, hook)?;
                (loss_sum, loss_n) = (0.0, 0);
                report(&bar, line, &r, self.cfg.steps);
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok(Outcome { rows: self.rows.clone(), diverged })
    }
}

fn report(bar: &Option<ProgressBar>, line: bool, r: &Row, steps: u64) {
    // Before the first step there is no training loss yet (NaN in metrics.csv).
    let train = if r.train_loss.is_nan() { "-".to_string() } else { format!("{:.4}", r.train_loss) };
    let msg = format!("train loss {train}  test loss {:.4}  test acc {:.4}", r.test_loss, r.test_acc);
    if let Some(b) = bar {
        b.set_message(msg);
    } else if line {
        eprintln!("step {:>6}/{steps}  {msg}", r.step);
    }
}

/// Loss and accuracy of `model` on `split` in eval mode (chunks of 1000).
pub fn evaluate(model: &Model, split: &Split, taps: bool, step: u64) -> Result<Eval> {
    let n = split.len();
    let (mut loss, mut correct) = (0.0f64, 0usize);
    let mut all_taps: Vec<(Vec<usize>, Vec<f32>)> = Vec::new();
    for lo in (0..n).step_by(1000) {
        let idx: Vec<usize> = (lo..(lo + 1000).min(n)).collect();
        let (x, y) = batch_tensor(split, &idx)?;
        let (logits, t) = model.forward(&x, false, 0, 0, taps)?;
        loss += candle_nn::loss::cross_entropy(&logits, &y)?.to_scalar::<f32>()? as f64 * idx.len() as f64;
        let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        correct += pred.iter().zip(y.to_vec1::<u32>()?).filter(|(a, b)| **a == *b).count();
        for (i, tap) in t.into_iter().enumerate() {
            let v: Vec<f32> = tap.flatten_all()?.to_vec1()?;
            if all_taps.len() <= i {
                let mut dims = tap.dims().to_vec();
                dims[0] = 0;
                all_taps.push((dims, Vec::new()));
            }
            all_taps[i].0[0] += tap.dims()[0];
            all_taps[i].1.extend(v);
        }
    }
    Ok(Eval { step, loss: loss / n as f64, acc: correct as f64 / n as f64, taps: all_taps })
}

/// Writes the rows as CSV (atomically).
pub fn write_metrics(path: &Path, rows: &[Row]) -> Result<()> {
    let mut s = String::from("step,lr,train_loss,test_loss,test_acc");
    if let Some(r) = rows.first() {
        for (k, _) in &r.extra {
            s.push(',');
            s.push_str(k);
        }
    }
    s.push('\n');
    for r in rows {
        s.push_str(&format!("{},{},{},{},{}", r.step, r.lr, r.train_loss, r.test_loss, r.test_acc));
        for (_, v) in &r.extra {
            s.push_str(&format!(",{v}"));
        }
        s.push('\n');
    }
    batchnorm::write_atomic(path, s.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Reads `metrics.csv` rows up to and including `max_step`.
pub fn read_metrics(path: &Path, max_step: u64) -> Result<Vec<Row>> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(vec![]) };
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap_or("").split(',').map(str::to_string).collect();
    let mut rows = Vec::new();
    for (ln, l) in lines.enumerate() {
        let f: Vec<f64> = l
            .split(',')
            .map(|v| v.parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("{}: line {} is not numeric", path.display(), ln + 2))?;
        if f.len() != header.len() || f.len() < 5 {
            bail!("{}: line {} has {} fields, the header {}", path.display(), ln + 2, f.len(), header.len());
        }
        let step = f[0] as u64;
        if step > max_step {
            break;
        }
        rows.push(Row {
            step,
            lr: f[1],
            train_loss: f[2],
            test_loss: f[3],
            test_acc: f[4],
            extra: header[5..].iter().cloned().zip(f[5..].iter().copied()).collect(),
        });
    }
    Ok(rows)
}
