//! `bnlab experiment <name>`: each claim of the seed, measured and shown. Every experiment
//! writes CSVs, PNG and SVG plots, `report.html`/`report.md` and a `summary.json` stating the
//! claim, the measured numbers, the paper's figure and whether the claim held here.

pub mod depth;
pub mod dropout;
pub mod gamma_beta;
pub mod lr_sweep;
pub mod speedup;
pub mod test_stats;

use crate::data::{Dataset, Source};
use crate::model::{Act, Arch, BnSpec, ModelSpec, WeightInit};
use crate::plot::{self, Figure};
use crate::report;
use crate::train::{DataSpec, Eval, Outcome, Run, TrainConfig};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Every experiment, in the order `bnlab all` runs them.
pub const NAMES: [&str; 6] = ["speedup", "lr-sweep", "dropout", "depth", "gamma-beta", "test-stats"];

/// Settings shared by all experiments.
#[derive(Debug, Clone)]
pub struct ExpArgs {
    /// A tiny version for tests.
    pub quick: bool,
    /// Seeds for headline figures (the command line's default: 3, or 1 with `quick`).
    pub seeds: usize,
    pub source: Source,
    pub out: Option<PathBuf>,
    pub quiet: bool,
}

/// Whether a claim held in this lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Held,
    NotHeld,
    Mixed,
    /// The run could not tell: the differences the claim is about stayed within the seeds'
    /// spread.
    Undecided,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Held => "held",
            Verdict::NotHeld => "did not hold",
            Verdict::Mixed => "partly held",
            Verdict::Undecided => "could not tell",
        }
    }
    pub fn from(ok: bool) -> Verdict {
        if ok {
            Verdict::Held
        } else {
            Verdict::NotHeld
        }
    }

    /// Held where the side the claim favours leads beyond the noise, could not tell where
    /// the two are within it, did not hold where it trails beyond it.
    pub fn from_lead(l: Lead) -> Verdict {
        match l {
            Lead::Ahead => Verdict::Held,
            Lead::Within => Verdict::Undecided,
            Lead::Behind => Verdict::NotHeld,
        }
    }
}

/// Where one measured number stands against another once the noise is allowed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lead {
    /// Above the other by more than the noise.
    Ahead,
    /// Within the noise of the other: the run cannot tell them apart.
    Within,
    /// Below the other by more than the noise.
    Behind,
}

/// `a` against `b`: [`Lead::Ahead`] where `a - b > noise`, [`Lead::Behind`] where
/// `b - a > noise`, [`Lead::Within`] otherwise. A NaN (a run that diverged) stands below
/// every number.
///
/// ```
/// use bnlab::experiments::{lead, Lead};
/// assert_eq!(lead(0.8537, 0.8470, 0.0033), Lead::Ahead);
/// assert_eq!(lead(0.9230, 0.9160, 0.0169), Lead::Within);
/// assert_eq!(lead(f64::NAN, 0.1, 0.0), Lead::Behind);
/// ```
pub fn lead(a: f64, b: f64, noise: f64) -> Lead {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Lead::Within,
        (true, false) => Lead::Behind,
        (false, true) => Lead::Ahead,
        _ if a - b > noise => Lead::Ahead,
        _ if b - a > noise => Lead::Behind,
        _ => Lead::Within,
    }
}

/// What the seeds alone move a comparison by: the largest sample standard deviation among
/// the groups of per-seed results compared, `max_g sqrt(sum_i (x_gi - mean_g)^2 / (n_g - 1))`;
/// 0 with one seed (every difference counts). A group holding a NaN (a diverged run) has
/// no spread to offer and is left out.
///
/// ```
/// use bnlab::experiments::spread;
/// assert_eq!(spread(&[&[0.80], &[0.81]]), 0.0);
/// assert!((spread(&[&[1.0, 3.0], &[2.0, 2.5]]) - 2f64.sqrt()).abs() < 1e-12);
/// ```
pub fn spread(groups: &[&[f64]]) -> f64 {
    groups.iter().map(|g| crate::stats::mean_std(g).1).filter(|s| s.is_finite()).fold(0.0, f64::max)
}

/// [`lead`] of the mean of per-seed results `a` over the mean of `b`, the noise being their
/// [`spread`] or `floor`, whichever is larger (a difference too small to matter even when the
/// seeds agree).
pub fn lead_over_seeds(a: &[f64], b: &[f64], floor: f64) -> Lead {
    let mean = |v: &[f64]| crate::stats::mean_std(v).0;
    lead(mean(a), mean(b), spread(&[a, b]).max(floor))
}

/// One claim and what was measured about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    pub claim: String,
    pub measured: String,
    pub paper: String,
    pub verdict: Verdict,
}

/// What an experiment hands back to be written.
pub struct Section {
    pub title: String,
    pub findings: Vec<Finding>,
    /// HTML body (figures inline, tables).
    pub html: String,
    /// Markdown twin (figures by file name).
    pub md: String,
    /// Figure stems written in the run directory.
    pub figures: Vec<String>,
}

/// What every experiment receives.
pub struct Ctx {
    pub dir: PathBuf,
    pub data: Dataset,
    pub quick: bool,
    pub seeds: Vec<u64>,
    pub quiet: bool,
    pub source: Source,
}

impl Ctx {
    /// `full` by default, `quick` with --quick.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }

    pub fn log(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// A training configuration with the experiment's data; fields are then adjusted.
    pub fn config(&self, model: ModelSpec, lr: f64, steps: u64, seed: u64) -> TrainConfig {
        TrainConfig {
            model,
            data: DataSpec::from_source(&self.source),
            train_subset: None,
            lr,
            lr_decay: None,
            momentum: 0.0,
            weight_decay: 0.0,
            batch_size: 60,
            steps,
            eval_every: (steps / 20).max(1),
            seed,
            frozen: vec![],
        }
    }

    /// Trains one configuration in memory, with a hook on every evaluation.
    pub fn train(&self, label: &str, cfg: TrainConfig, taps: bool, hook: &mut crate::train::Hook) -> Result<(Outcome, Run)> {
        let seed = cfg.seed;
        let mut run = Run::new(cfg, self.data.clone(), None)?;
        run.want_taps = taps;
        let out = run.train(hook)?;
        let tail = match out.diverged {
            Some((s, _)) => format!("diverged at step {s}"),
            None => format!("best test accuracy {:.4}, final {:.4}", out.best_acc(), out.final_acc()),
        };
        self.log(&format!("  {label} (seed {seed}): {tail}"));
        Ok((out, run))
    }

    /// Trains without a hook.
    pub fn train_plain(&self, label: &str, cfg: TrainConfig) -> Result<Outcome> {
        Ok(self.train(label, cfg, false, &mut |_: &Eval, _: &crate::model::Model| Ok(vec![]))?.0)
    }

    /// Writes a figure (SVG + PNG) and returns its inline HTML.
    pub fn figure(&self, fig: &Figure, stem: &str, caption: &str) -> Result<String> {
        let (svg, _, _) = plot::save(fig, &self.dir, stem)?;
        Ok(report::figure(&svg, caption, &[&format!("{stem}.png"), &format!("{stem}.svg")]))
    }

    pub fn write(&self, name: &str, text: &str) -> Result<()> {
        batchnorm::write_atomic(&self.dir.join(name), text.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// An MLP of the given widths.
pub fn mlp(widths: &[usize], act: Act, bn: Option<BnSpec>, dropout: f64, init: WeightInit) -> ModelSpec {
    ModelSpec { arch: Arch::Mlp { widths: widths.to_vec() }, act, bn, dropout, init }
}

/// The default init for an activation.
pub fn init_for(act: Act) -> WeightInit {
    match act {
        Act::Relu => WeightInit::He,
        Act::Sigmoid => WeightInit::Lecun,
    }
}

/// `mean ± sd` with `d` decimals.
pub fn pm(v: &[f64], d: usize) -> String {
    let (m, s) = crate::stats::mean_std(v);
    if !m.is_finite() {
        return "n/a".into();
    }
    if v.len() > 1 {
        format!("{m:.d$} ± {s:.d$}")
    } else {
        format!("{m:.d$}")
    }
}

/// Checks the settings every experiment shares.
pub fn check(a: &ExpArgs) -> Result<()> {
    if a.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    Ok(())
}

/// Runs experiment `name` and writes its outputs; returns the run directory.
pub fn run(name: &str, a: &ExpArgs) -> Result<PathBuf> {
    if !NAMES.contains(&name) {
        bail!("unknown experiment {name:?}; the experiments are: {}", NAMES.join(", "));
    }
    check(a)?;
    let dir = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{name}-{}", report::timestamp())));
    if dir.join("summary.json").exists() {
        bail!("{} already holds an experiment's results: choose another --out", dir.display());
    }
    // The data first: a run that cannot start leaves no empty directory behind.
    let data = a.source.load()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let seeds = (1..=a.seeds as u64).collect();
    let ctx = Ctx { dir: dir.clone(), data, quick: a.quick, seeds, quiet: a.quiet, source: a.source.clone() };
    ctx.log(&format!("experiment {name} on {}{} -> {}", ctx.data.name, if a.quick { " (quick)" } else { "" }, dir.display()));
    let s = match name {
        "speedup" => speedup::run(&ctx)?,
        "lr-sweep" => lr_sweep::run(&ctx)?,
        "dropout" => dropout::run(&ctx)?,
        "depth" => depth::run(&ctx)?,
        "gamma-beta" => gamma_beta::run(&ctx)?,
        "test-stats" => test_stats::run(&ctx)?,
        _ => unreachable!("checked above"),
    };
    write_outputs(&ctx, name, &s)?;
    Ok(dir)
}

fn findings_table(f: &[Finding]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    (
        vec!["claim", "measured here", "the paper", "verdict"],
        f.iter().map(|f| vec![f.claim.clone(), f.measured.clone(), f.paper.clone(), f.verdict.word().to_string()]).collect(),
    )
}

fn write_outputs(ctx: &Ctx, name: &str, s: &Section) -> Result<()> {
    let (h, rows) = findings_table(&s.findings);
    let intro = format!(
        "<p>Data: {}{}. Seeds: {:?}. Every number below is measured in this run; CSVs and plots are beside this page.</p>",
        report::esc(&ctx.data.name),
        if ctx.quick { " (quick mode: a tiny version, not for conclusions)" } else { "" },
        ctx.seeds
    );
    let html = report::page(&s.title, &format!("{intro}<h2>Claims</h2>{}{}", report::table(&h, &rows), s.html));
    ctx.write("report.html", &html)?;
    ctx.write("report.md", &format!("# {}\n\nData: {}.\n\n{}\n{}", s.title, ctx.data.name, report::md_table(&h, &rows), s.md))?;
    let summary = serde_json::json!({
        "experiment": name,
        "title": s.title,
        "data": ctx.data.name,
        "quick": ctx.quick,
        "seeds": ctx.seeds,
        "findings": s.findings,
        "figures": s.figures,
    });
    ctx.write("summary.json", &serde_json::to_string_pretty(&summary)?)
}

/// One CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
pub fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// Writes a CSV from a header and rows.
pub fn csv(ctx: &Ctx, name: &str, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let line = |r: &[String]| r.iter().map(|v| csv_field(v)).collect::<Vec<_>>().join(",");
    let mut s = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    s.push('\n');
    for r in rows {
        s.push_str(&line(r));
        s.push('\n');
    }
    ctx.write(name, &s)
}

/// Whether `dir` holds an experiment or paper run summary.
pub fn has_summary(dir: &Path) -> bool {
    dir.join("summary.json").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::accuracy_noise;

    #[test]
    fn a_lead_within_the_noise_decides_nothing() {
        // The last `bnlab all`'s gamma-beta: learned 0.8537 ± 0.0033, frozen 0.8470 ± 0.0027.
        assert_eq!(lead(0.8537, 0.8470, 0.0033), Lead::Ahead);
        assert_eq!(lead(0.8470, 0.8537, 0.0033), Lead::Behind);
        // Its Figure 1 (one seed, 2,000 test images): BN ahead by 0.7 points at step 2,000,
        // inside the test set's noise; by 14.6 points at step 400, far outside it.
        assert_eq!(lead(0.9230, 0.9160, accuracy_noise(0.9230, 0.9160, 2000)), Lead::Within);
        assert_eq!(lead(0.8920, 0.7465, accuracy_noise(0.8920, 0.7465, 2000)), Lead::Ahead);
        // No noise: every difference counts, a tie does not.
        assert_eq!(lead(0.8001, 0.8, 0.0), Lead::Ahead);
        assert_eq!(lead(0.8, 0.8, 0.0), Lead::Within);
        // A diverged run (NaN) stands below any number.
        assert_eq!(lead(0.1, f64::NAN, 0.5), Lead::Ahead);
        assert_eq!(lead(f64::NAN, f64::NAN, 0.0), Lead::Within);
        assert_eq!(Verdict::from_lead(Lead::Ahead), Verdict::Held);
        assert_eq!(Verdict::from_lead(Lead::Within), Verdict::Undecided);
        assert_eq!(Verdict::from_lead(Lead::Behind), Verdict::NotHeld);
        // Over seeds: means 0.86 and 0.85, spread 0.01 / sqrt(2) = 0.0071, so a lead; a
        // floor of 0.02 swallows it; the other way round, behind.
        assert_eq!(lead_over_seeds(&[0.855, 0.865], &[0.85, 0.85], 0.0), Lead::Ahead);
        assert_eq!(lead_over_seeds(&[0.855, 0.865], &[0.85, 0.85], 0.02), Lead::Within);
        assert_eq!(lead_over_seeds(&[0.85, 0.85], &[0.855, 0.865], 0.0), Lead::Behind);
        // Seeds spread wider than the difference: within.
        assert_eq!(lead_over_seeds(&[0.84, 0.88], &[0.85, 0.85], 0.0), Lead::Within);
    }

    #[test]
    fn the_spread_is_the_widest_group_that_has_one() {
        let s = spread(&[&[0.80, f64::NAN], &[0.80, 0.82], &[0.5]]);
        assert!((s - 0.02 / 2f64.sqrt()).abs() < 1e-12, "{s}");
        assert_eq!(spread(&[]), 0.0);
        assert_eq!(spread(&[&[f64::NAN, f64::NAN]]), 0.0);
    }
}
