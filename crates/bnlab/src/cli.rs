//! The `bnlab` command line.

use crate::data::Source;
use crate::experiments::{self, ExpArgs};
use crate::model::{Act, Arch, BnSpec, ModelSpec, WeightInit};
use crate::paper::{self, PaperArgs};
use crate::train::{DataSpec, LrDecay, Run, TrainConfig};
use anyhow::{bail, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "bnlab", version, about = "The batch-normalization lab: train, measure and plot what batch normalization does")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
struct DataArgs {
    /// An MNIST-format directory (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-*).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// A named dataset: mnist-10k (built in, the default) or fashion-mnist (Debian's package).
    #[arg(long, value_name = "NAME")]
    dataset: Option<String>,
}

impl DataArgs {
    /// Whether neither --data nor --dataset was given.
    fn unset(&self) -> bool {
        self.data.is_none() && self.dataset.is_none()
    }
    fn source(&self) -> Result<Source> {
        Source::from_flags(self.data.as_deref(), self.dataset.as_deref())
    }
}

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Reproduce the paper's Figure 1 (with and without BN) and write a report.
    Paper {
        /// Training steps per net (the paper: 50000; the default takes about 25 seconds on 2 cores).
        #[arg(long, default_value_t = paper::DEFAULT_STEPS, allow_negative_numbers = true)]
        steps: u64,
        /// Learning rate of plain SGD, the same for both nets.
        #[arg(long, default_value_t = paper::DEFAULT_LR, allow_negative_numbers = true)]
        lr: f64,
        /// Evaluate every this many steps.
        #[arg(long, default_value_t = paper::DEFAULT_EVAL_EVERY, allow_negative_numbers = true)]
        eval_every: u64,
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        seed: u64,
        /// Seeds to train both nets from (--seed, --seed + 1, ...): the figures show the first; with 2 or more the verdicts weigh
        /// the nets' differences against the seeds' spread (each seed adds about 25 seconds at the default steps).
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        seeds: usize,
        /// Standard deviation of the Gaussian weight init.
        #[arg(long, default_value_t = paper::DEFAULT_INIT_STD, allow_negative_numbers = true)]
        init_std: f64,
        /// The last-hidden-layer unit whose input distribution is tracked.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        unit: usize,
        #[arg(long, default_value_t = 60, allow_negative_numbers = true)]
        batch_size: usize,
        /// Output directory (default `runs/paper-<timestamp>`).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Run one experiment (speedup, lr-sweep, dropout, depth, gamma-beta, test-stats).
    Experiment {
        /// Which experiment.
        name: String,
        #[command(flatten)]
        opts: ExpOpts,
    },
    /// Gather every run in runs/ into runs/report.html and runs/report.md.
    Report {
        /// The directory holding the runs.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
    },
    /// Run Figure 1 and every experiment with their defaults, then the report.
    All {
        #[command(flatten)]
        opts: ExpOpts,
    },
    /// Train one model and record metrics and checkpoints.
    Train(TrainArgs),
    /// Time our kernels on the benchmark suite or given shapes (and PyTorch's, given a Python with torch).
    Bench {
        /// Thread counts to measure, comma-separated.
        #[arg(long, default_value = "1,2", value_delimiter = ',', allow_negative_numbers = true)]
        threads: Vec<usize>,
        /// A Python interpreter with torch installed (e.g. .venv/bin/python).
        #[arg(long, value_name = "PYTHON")]
        torch: Option<PathBuf>,
        /// Rounds of the suite (ours and PyTorch's interleaved); each entry is their median.
        #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
        rounds: usize,
        /// Steps of the end-to-end Figure-1 MLP timing (0 to skip).
        #[arg(long, default_value_t = 2000, allow_negative_numbers = true)]
        e2e_steps: u64,
        /// The tensors' type: f32 (the table, with the floor and the MLP) or f64
        /// (the float64 kernels against PyTorch's float64 BatchNorm; no floor, and the
        /// float32 MLP is skipped).
        #[arg(long, default_value = "f32", value_parser = ["f32", "f64"])]
        dtype: String,
        /// Shapes to time instead of the suite, comma-separated LAYOUT:DxDx... in the
        /// layout's own axis order (e.g. NC:4096x4096,NHWC:32x56x56x64; PyTorch gets the same
        /// tensors, channels-last ones as channels-last strides).
        #[arg(long, value_delimiter = ',')]
        shapes: Vec<String>,
        /// Output directory (default `runs/bench-<timestamp>`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The end-to-end part of `bench`, run by it in a child process so that candle's thread
    /// count (RAYON_NUM_THREADS) is the one being measured: prints one JSON line.
    #[command(hide = true)]
    BenchE2e {
        #[arg(long, default_value_t = 2000, allow_negative_numbers = true)]
        steps: u64,
    },
    /// Run batch-norm conformance cases against the core library.
    Conformance {
        /// Directory of *.safetensors cases.
        dir: PathBuf,
        /// Write what was computed here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Clone)]
struct ExpOpts {
    /// A tiny version (seconds), for tests.
    #[arg(long)]
    quick: bool,
    /// Seeds for headline figures (for `all`, Figure 1's too) [default: 3, with --quick 1].
    #[arg(long, allow_negative_numbers = true)]
    seeds: Option<usize>,
    /// Output directory (default `runs/<name>-<timestamp>`; for `all`, the runs directory).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
}

impl ExpOpts {
    /// `--seeds`, or its default: 3, one for a `--quick` run.
    fn seeds(&self) -> usize {
        self.seeds.unwrap_or(if self.quick { 1 } else { 3 })
    }

    /// Fashion-MNIST when installed, else the built-in digits, unless chosen explicitly.
    fn source(&self) -> Result<Source> {
        if self.data.unset() {
            Ok(Source::best_available())
        } else {
            self.data.source()
        }
    }
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// mlp or cnn.
    #[arg(long, default_value = "mlp")]
    model: String,
    /// Hidden widths of the MLP, comma-separated.
    #[arg(long, default_value = "100,100,100", value_delimiter = ',', allow_negative_numbers = true)]
    widths: Vec<usize>,
    /// Channels of the CNN's two convolutions.
    #[arg(long, default_value = "8,16", value_delimiter = ',', allow_negative_numbers = true)]
    channels: Vec<usize>,
    /// Use batch normalization after every hidden layer.
    #[arg(long, overrides_with = "no_bn")]
    bn: bool,
    /// No batch normalization (the default).
    #[arg(long)]
    no_bn: bool,
    #[arg(long, value_enum, default_value = "relu")]
    act: Act,
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    lr: f64,
    /// Multiply the learning rate by --lr-decay-factor every this many steps.
    #[arg(long, allow_negative_numbers = true)]
    lr_decay_every: Option<u64>,
    /// The factor of --lr-decay-every.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    lr_decay_factor: f64,
    /// sgd or momentum.
    #[arg(long, default_value = "sgd")]
    optimizer: String,
    /// The momentum of --optimizer momentum.
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    momentum: f64,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    weight_decay: f64,
    #[arg(long, default_value_t = 60, allow_negative_numbers = true)]
    batch_size: usize,
    #[arg(long, default_value_t = 2000, allow_negative_numbers = true)]
    steps: u64,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    dropout: f64,
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    seed: u64,
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    eval_every: u64,
    /// Gaussian init std (default: He for ReLU, LeCun for sigmoid).
    #[arg(long, allow_negative_numbers = true)]
    init_std: Option<f64>,
    /// BN momentum (PyTorch convention); "none" for the cumulative average.
    #[arg(long, default_value = "0.1")]
    bn_momentum: String,
    /// Train on the first N training examples only.
    #[arg(long, allow_negative_numbers = true)]
    train_subset: Option<usize>,
    /// Run directory (default `runs/train-<timestamp>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint (its config.json holds
    /// every setting; only --steps may be given beside it).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
}

/// The flags given on the command line (not left at their defaults), by clap's argument id.
struct Given<'a>(&'a ArgMatches);

impl Given<'_> {
    fn has(&self, id: &str) -> bool {
        self.0.value_source(id) == Some(ValueSource::CommandLine)
    }

    /// The given flags, as typed (`--lr-decay-every` for the id `lr_decay_every`).
    fn flags(&self) -> impl Iterator<Item = String> + '_ {
        self.0.ids().filter(|id| self.has(id.as_str())).map(|id| format!("--{}", id.as_str().replace('_', "-")))
    }
}

fn train_config(t: &TrainArgs, given: &Given) -> Result<TrainConfig> {
    // A flag that would change nothing is refused rather than ignored.
    let arch = match t.model.as_str() {
        "mlp" if given.has("channels") => bail!("--channels applies to --model cnn; the MLP's layers are --widths"),
        "mlp" => Arch::Mlp { widths: t.widths.clone() },
        "cnn" if given.has("widths") => bail!("--widths applies to --model mlp; the CNN's layers are --channels"),
        "cnn" => {
            let [a, b] = t.channels[..] else { bail!("--channels takes two numbers, got {:?}", t.channels) };
            Arch::Cnn { channels: [a, b] }
        }
        m => bail!("unknown --model {m:?}: use mlp or cnn"),
    };
    let bn_momentum = match t.bn_momentum.as_str() {
        "none" => None,
        m => Some(m.parse::<f64>().map_err(|_| anyhow::anyhow!("--bn-momentum takes a number in [0, 1] or none, got {m:?}"))?),
    };
    if let Some(m) = bn_momentum {
        if !(0.0..=1.0).contains(&m) {
            bail!("--bn-momentum must be in [0, 1] (PyTorch convention), got {m}");
        }
    }
    let momentum = match t.optimizer.as_str() {
        "sgd" if given.has("momentum") => bail!("--momentum applies to --optimizer momentum (plain sgd has none)"),
        "sgd" => 0.0,
        "momentum" => t.momentum,
        o => bail!("unknown --optimizer {o:?}: use sgd or momentum"),
    };
    if t.lr_decay_every.is_none() && given.has("lr_decay_factor") {
        bail!("--lr-decay-factor needs --lr-decay-every (how often to apply it)");
    }
    let init = match (t.init_std, t.act) {
        (Some(s), _) => WeightInit::Gaussian(s),
        (None, Act::Relu) => WeightInit::He,
        (None, Act::Sigmoid) => WeightInit::Lecun,
    };
    Ok(TrainConfig {
        model: ModelSpec { arch, act: t.act, bn: (t.bn && !t.no_bn).then(|| BnSpec { momentum: bn_momentum, ..BnSpec::default() }), dropout: t.dropout, init },
        data: DataSpec::from_source(&t.data.source()?),
        train_subset: t.train_subset,
        lr: t.lr,
        lr_decay: t.lr_decay_every.map(|every| LrDecay { every, factor: t.lr_decay_factor }),
        momentum,
        weight_decay: t.weight_decay,
        batch_size: t.batch_size,
        steps: t.steps,
        eval_every: t.eval_every,
        seed: t.seed,
        frozen: vec![],
    })
}

/// Exit status when training diverged.
pub const EXIT_DIVERGED: u8 = 3;

fn train(t: &TrainArgs, given: &Given) -> Result<ExitCode> {
    let mut run = if let Some(dir) = &t.resume {
        // The run's settings are its config.json's: any other flag would be ignored.
        if let Some(f) = given.flags().find(|f| !["--resume", "--steps"].contains(&f.as_str())) {
            bail!("{f} cannot change a resumed run (its config.json holds every setting); only --steps may be given with --resume");
        }
        let steps = given.has("steps").then_some(t.steps);
        let run = Run::resume(dir, steps)?;
        eprintln!("resuming {} at step {} of {}", dir.display(), run.step, run.cfg.steps);
        run
    } else {
        let cfg = train_config(t, given)?;
        // Flag errors before the data loads and the run is announced (`Run::new` checks again).
        cfg.validate()?;
        let data = cfg.data.source().load()?;
        let dir = t.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("train-{}", crate::report::timestamp())));
        eprintln!("training on {} ({} train / {} test images); run directory {}", data.name, data.train.len(), data.test.len(), dir.display());
        Run::new(cfg, data, Some(&dir))?
    };
    run.progress = true;
    let outcome = run.train(&mut |_, _| Ok(vec![]))?;
    let dir = run.dir.clone().expect("train runs have a directory");
    if let Some((step, loss)) = outcome.diverged {
        eprintln!(
            "error: training diverged at step {step} (loss {loss}); the last good checkpoint (step {}) is kept in {}",
            outcome.rows.last().map_or(0, |r| r.step),
            dir.join("checkpoint.safetensors").display()
        );
        return Ok(ExitCode::from(EXIT_DIVERGED));
    }
    println!(
        "done: step {}, test accuracy {:.4} (best {:.4}); metrics in {}",
        run.step,
        outcome.final_acc(),
        outcome.best_acc(),
        dir.join("metrics.csv").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn dispatch(cli: Cli, matches: &ArgMatches) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Paper { steps, lr, eval_every, seed, seeds, init_std, unit, batch_size, out, data } => {
            let args = PaperArgs { steps, lr, eval_every, seed, seeds, init_std, unit, batch_size, source: data.source()?, out, quiet: false };
            let dir = paper::run(&args)?;
            println!("report: {}", dir.join("report.html").display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Train(t) => train(&t, &Given(matches.subcommand_matches("train").expect("the train subcommand's matches"))),
        Cmd::Experiment { name, opts } => {
            let args = ExpArgs { quick: opts.quick, seeds: opts.seeds(), source: opts.source()?, out: opts.out.clone(), quiet: false };
            let dir = experiments::run(&name, &args)?;
            println!("report: {}", dir.join("report.html").display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Report { runs } => {
            println!("report: {}", crate::report_all::run(&runs)?.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::All { opts } => {
            let runs = opts.out.clone().unwrap_or_else(|| PathBuf::from("runs"));
            let stamp = crate::report::timestamp();
            let source = opts.source()?;
            let paper_source = if opts.data.unset() { Source::Builtin } else { source.clone() };
            // Figure 1 from as many seeds as every experiment.
            let mut paper_args = PaperArgs { seeds: opts.seeds(), ..PaperArgs::new(paper_source, Some(runs.join(format!("paper-{stamp}")))) };
            if opts.quick {
                (paper_args.steps, paper_args.eval_every) = (60, 20);
            }
            let exp_args = |name: &str| ExpArgs {
                quick: opts.quick,
                seeds: opts.seeds(),
                source: source.clone(),
                out: Some(runs.join(format!("{name}-{stamp}"))),
                quiet: false,
            };
            // Every setting before the first run, not after Figure 1 has trained.
            paper::check(&paper_args)?;
            experiments::check(&exp_args("all"))?;
            paper::run(&paper_args)?;
            for name in experiments::NAMES {
                experiments::run(name, &exp_args(name))?;
            }
            println!("report: {}", crate::report_all::run(&runs)?.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench { threads, rounds, torch, e2e_steps, dtype, shapes, out } => {
            if threads.is_empty() || threads.contains(&0) {
                bail!("--threads takes positive thread counts, e.g. 1,2");
            }
            if let Some(t) = threads.iter().enumerate().find_map(|(i, t)| threads[..i].contains(t).then_some(t)) {
                bail!("--threads names {t} twice: each thread count is measured once");
            }
            if rounds == 0 {
                bail!("--rounds must be at least 1");
            }
            let shapes = crate::bench::shapes(&shapes)?;
            let f64 = dtype == "f64";
            // The end-to-end MLP is a float32 model.
            let e2e_steps = if f64 { 0 } else { e2e_steps };
            let dir = crate::bench::run(&crate::bench::BenchArgs { threads, rounds, torch, e2e_steps, f64, shapes, out })?;
            println!("written to {}", dir.join("bench.md").display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BenchE2e { steps } => {
            let (no_bn, bn) = crate::bench::e2e_ours(steps)?;
            println!("{}", serde_json::json!({ "no_bn": no_bn, "bn": bn }));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Conformance { dir, out } => {
            let sum = batchnorm::conformance::run_dir(&dir, out.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
            for (name, why) in &sum.failed {
                println!("FAIL {name}: {}", why.join("; "));
            }
            println!("{} passed, {} failed", sum.passed, sum.failed.len());
            Ok(if sum.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// Parses the command line, runs it, and turns every error into one line on stderr.
pub fn main() -> ExitCode {
    crate::runtime::configure();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match dispatch(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::from(2)
        }
    }
}
