//! `bnlab paper`: the paper's Figure 1 on the built-in digits.
//!
//! MLP 784-100-100-100-10 with sigmoid, batch 60, plain SGD, small Gaussian init, trained
//! with and without BN from the same seed and learning rate. At every evaluation: test
//! accuracy, the 15th/50th/85th percentiles of one typical last-hidden-layer unit's sigmoid
//! input over the test set, and the fraction of saturated sigmoid inputs (|x| > 4) in all
//! hidden layers. With `--seeds N` both nets train from N seeds: the figures show the first,
//! and the verdicts weigh the nets' differences against the seeds' spread.

use crate::data::Source;
use crate::model::{Act, Arch, BnSpec, ModelSpec, WeightInit};
use crate::plot::{self, Figure, Panel, Series, Style, PALETTE};
use crate::report;
use crate::stats::{column, frac_abs_above, frac_abs_below, percentile, sorted};
use crate::train::{DataSpec, Outcome, Run, TrainConfig};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Settings of the Figure-1 experiment.
#[derive(Debug, Clone)]
pub struct PaperArgs {
    pub steps: u64,
    pub lr: f64,
    pub eval_every: u64,
    pub seed: u64,
    /// Seeds to train both nets from: `seed`, `seed + 1`, ...
    pub seeds: usize,
    pub init_std: f64,
    pub unit: usize,
    pub batch_size: usize,
    pub source: Source,
    pub out: Option<PathBuf>,
    pub quiet: bool,
}

/// Default training steps per net (the paper ran 50,000).
pub const DEFAULT_STEPS: u64 = 20_000;
/// Default learning rate of plain SGD, the same for both nets.
pub const DEFAULT_LR: f64 = 0.5;
/// Default evaluation interval in steps.
pub const DEFAULT_EVAL_EVERY: u64 = 200;
/// Default standard deviation of the Gaussian weight init (the paper's "small Gaussian").
pub const DEFAULT_INIT_STD: f64 = 0.1;

impl PaperArgs {
    /// The defaults of `bnlab paper` on `source`, writing to `out`.
    pub fn new(source: Source, out: Option<PathBuf>) -> Self {
        PaperArgs {
            steps: DEFAULT_STEPS,
            lr: DEFAULT_LR,
            eval_every: DEFAULT_EVAL_EVERY,
            seed: 1,
            seeds: 1,
            init_std: DEFAULT_INIT_STD,
            unit: 0,
            batch_size: 60,
            source,
            out,
            quiet: false,
        }
    }
}

/// One net's curves.
struct Curves {
    label: &'static str,
    outcome: Outcome,
}

impl Curves {
    fn col(&self, name: &str) -> Vec<(f64, f64)> {
        self.outcome.rows.iter().map(|r| (r.step as f64, r.extra.iter().find(|(k, _)| k == name).map_or(f64::NAN, |e| e.1))).collect()
    }
    fn acc(&self) -> Vec<(f64, f64)> {
        self.outcome.rows.iter().map(|r| (r.step as f64, r.test_acc)).collect()
    }
    /// The range the median sigmoid input moved over during the run.
    fn drift(&self) -> f64 {
        let p50: Vec<f64> = self.col("p50").iter().map(|p| p.1).filter(|v| v.is_finite()).collect();
        p50.iter().cloned().fold(f64::NEG_INFINITY, f64::max) - p50.iter().cloned().fold(f64::INFINITY, f64::min)
    }
    fn at(&self, step: u64, name: &str) -> f64 {
        let r = self.outcome.rows.iter().rfind(|r| r.step <= step);
        match name {
            "acc" => r.map_or(f64::NAN, |r| r.test_acc),
            _ => r.and_then(|r| r.extra.iter().find(|(k, _)| k == name)).map_or(f64::NAN, |e| e.1),
        }
    }
}

/// What one seed's pair of nets measured for the verdicts, `[without BN, with BN]` each.
struct SeedResult {
    seed: u64,
    drift: [f64; 2],
    early: [f64; 2],
    end: [f64; 2],
}

impl SeedResult {
    fn new(a: &PaperArgs, seed: u64, c: &[Curves; 2]) -> SeedResult {
        let (early, end) = (early_mark(a), a.steps);
        SeedResult {
            seed,
            drift: c.each_ref().map(Curves::drift),
            early: c.each_ref().map(|cv| cv.at(early, "acc")),
            end: c.each_ref().map(|cv| cv.at(end, "acc")),
        }
    }
}

/// The evaluation steps the report reads the accuracies at: 2%, 10%, 25%, 50% and all of
/// the run, each rounded down to an evaluation.
fn marks(a: &PaperArgs) -> Vec<u64> {
    let ev = a.eval_every.max(1);
    let mut marks: Vec<u64> = [0.02, 0.1, 0.25, 0.5, 1.0].iter().map(|f| ((a.steps as f64 * f) as u64 / ev) * ev).collect();
    marks.dedup();
    marks
}

/// "Faster" is decided where both nets are still learning: the first mark after the start
/// (2% of the run). By 10% the net without BN has about caught up on the digits (0.916
/// against 0.923 at step 2,000 of the default run, within the test set's 0.017).
fn early_mark(a: &PaperArgs) -> u64 {
    marks(a).into_iter().find(|&s| s > 0).unwrap_or(a.steps)
}

pub fn config(a: &PaperArgs, bn: bool) -> TrainConfig {
    TrainConfig {
        model: ModelSpec {
            arch: Arch::Mlp { widths: vec![100, 100, 100] },
            act: Act::Sigmoid,
            bn: bn.then(BnSpec::default),
            dropout: 0.0,
            init: WeightInit::Gaussian(a.init_std),
        },
        data: DataSpec::from_source(&a.source),
        train_subset: None,
        lr: a.lr,
        lr_decay: None,
        momentum: 0.0,
        weight_decay: 0.0,
        batch_size: a.batch_size,
        steps: a.steps,
        eval_every: a.eval_every,
        seed: a.seed,
        frozen: vec![],
    }
}

/// Checks the settings before anything runs: both nets' training configuration, at least
/// one step and one seed, and a tracked unit within the last hidden layer.
pub fn check(a: &PaperArgs) -> Result<()> {
    if a.steps == 0 {
        anyhow::bail!("--steps must be at least 1");
    }
    if a.seeds == 0 {
        anyhow::bail!("--seeds must be at least 1");
    }
    if a.seed.checked_add(a.seeds as u64 - 1).is_none() {
        anyhow::bail!("--seed {} with --seeds {}: the last seed would pass {}", a.seed, a.seeds, u64::MAX);
    }
    if a.unit >= 100 {
        anyhow::bail!("--unit must be below 100 (the last hidden layer's width), got {}", a.unit);
    }
    config(a, true).validate()
}

/// Runs both nets and writes CSVs, plots and `report.html` into the run directory.
pub fn run(a: &PaperArgs) -> Result<PathBuf> {
    check(a)?;
    let dir = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("paper-{}", report::timestamp())));
    if ["figure1.csv", "no-bn/config.json", "bn/config.json"].iter().any(|f| dir.join(f).exists()) {
        anyhow::bail!("{} already holds a Figure-1 run: choose another --out", dir.display());
    }
    let data = a.source.load()?;
    let mut first = None;
    let mut per_seed = Vec::new();
    for k in 0..a.seeds {
        // The first seed's nets in `dir` itself (the figures are theirs), the others' beside.
        let seed = a.seed + k as u64;
        let base = if k == 0 { dir.clone() } else { dir.join(format!("seed-{seed}")) };
        if !a.quiet && a.seeds > 1 {
            eprintln!("seed {seed} ({} of {})", k + 1, a.seeds);
        }
        let curves = train_pair(a, seed, &data, &base)?;
        per_seed.push(SeedResult::new(a, seed, &curves));
        if k == 0 {
            first = Some(curves);
        }
    }
    let first = first.context("no seed ran")?;
    write_outputs(a, &dir, &first, &per_seed, &data.name, data.test.len())?;
    Ok(dir)
}

/// Trains the net without BN and the net with it from `seed`, into `base/no-bn` and
/// `base/bn`.
fn train_pair(a: &PaperArgs, seed: u64, data: &crate::data::Dataset, base: &Path) -> Result<[Curves; 2]> {
    let mut curves = Vec::new();
    for (bn, label) in [(false, "without BN"), (true, "with BN")] {
        // `Run::new` checks the run against the data (the batch size) before it makes the
        // net's directory (and with it `dir`): a run that cannot start leaves nothing behind.
        let sub = base.join(if bn { "bn" } else { "no-bn" });
        let mut run = Run::new(TrainConfig { seed, ..config(a, bn) }, data.clone(), Some(&sub))?;
        if !a.quiet {
            eprintln!("training the {label} net ({} steps, lr {}, batch {}) on {}", a.steps, a.lr, a.batch_size, data.name);
        }
        run.want_taps = true;
        run.progress = !a.quiet;
        let unit = a.unit;
        let mut hook = |ev: &crate::train::Eval, _: &crate::model::Model| -> Result<Vec<(String, f64)>> {
            let (dims, last) = ev.taps.last().context("no hidden layer")?;
            let u = sorted(&column(last, dims[1], unit));
            let all: Vec<f32> = ev.taps.iter().flat_map(|t| t.1.iter().copied()).collect();
            Ok(vec![
                ("p15".into(), percentile(&u, 15.0)),
                ("p50".into(), percentile(&u, 50.0)),
                ("p85".into(), percentile(&u, 85.0)),
                ("saturated".into(), frac_abs_above(&all, 4.0)),
                ("near_linear".into(), frac_abs_below(&all, 1.0)),
            ])
        };
        let outcome = run.train(&mut hook)?;
        if let Some((s, l)) = outcome.diverged {
            eprintln!("note: the {label} net diverged at step {s} (loss {l}); its curves stop there");
        }
        curves.push(Curves { label, outcome });
    }
    curves.try_into().map_err(|_| anyhow::anyhow!("two nets expected"))
}

fn fmt(v: f64, d: usize) -> String {
    if v.is_finite() {
        format!("{v:.d$}")
    } else {
        "n/a".into()
    }
}

fn write_outputs(a: &PaperArgs, dir: &Path, c: &[Curves; 2], per_seed: &[SeedResult], data_name: &str, n_test: usize) -> Result<()> {
    let (nb, b) = (&c[0], &c[1]);
    // figure1.csv: both nets side by side, one row per evaluation step.
    let mut csv = String::from("step,acc_no_bn,acc_bn,p15_no_bn,p50_no_bn,p85_no_bn,p15_bn,p50_bn,p85_bn,saturated_no_bn,saturated_bn\n");
    for r in &b.outcome.rows {
        let s = r.step;
        let v = [
            nb.at(s, "acc"),
            b.at(s, "acc"),
            nb.at(s, "p15"),
            nb.at(s, "p50"),
            nb.at(s, "p85"),
            b.at(s, "p15"),
            b.at(s, "p50"),
            b.at(s, "p85"),
            nb.at(s, "saturated"),
            b.at(s, "saturated"),
        ];
        csv.push_str(&format!("{s},{}\n", v.map(|x| x.to_string()).join(",")));
    }
    batchnorm::write_atomic(&dir.join("figure1.csv"), csv.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;

    let band = |cv: &Curves, title: &str| Panel {
        title: title.into(),
        xlabel: "training step".into(),
        ylabel: format!("sigmoid input of unit {}", a.unit),
        series: vec![
            Series::line("85th percentile", cv.col("p85"), PALETTE[1]).styled(Style::Dashed),
            Series::line("50th percentile", cv.col("p50"), PALETTE[0]),
            Series::line("15th percentile", cv.col("p15"), PALETTE[2]).styled(Style::Dashed),
        ],
        ..Panel::default()
    };
    let (ylo, yhi) = ["p15", "p85"]
        .iter()
        .flat_map(|k| c.iter().flat_map(move |cv| cv.col(k)))
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    let mut pb = band(nb, "(b) without BN");
    let mut pc = band(b, "(c) with BN");
    if ylo < yhi {
        let pad = (yhi - ylo) * 0.05;
        pb.y_range = Some((ylo - pad, yhi + pad));
        pc.y_range = pb.y_range;
    }
    let fig = Figure::new(
        format!("Figure 1: MLP 784-100-100-100-10, sigmoid, batch {}, SGD lr {} ({data_name})", a.batch_size, a.lr),
        vec![
            Panel {
                title: "(a) test accuracy".into(),
                xlabel: "training step".into(),
                ylabel: "test accuracy".into(),
                series: vec![Series::line("without BN", nb.acc(), PALETTE[1]).styled(Style::Dashed), Series::line("with BN", b.acc(), PALETTE[0])],
                y_range: Some((0.0, 1.0)),
                ..Panel::default()
            },
            pb,
            pc,
        ],
    );
    let (fig_svg, _, _) = plot::save(&fig, dir, "figure1")?;
    let sat = Figure::new(
        "Saturated sigmoid inputs (|x| > 4), all hidden layers, test set",
        vec![Panel {
            title: "saturation".into(),
            xlabel: "training step".into(),
            ylabel: "fraction saturated".into(),
            series: vec![
                Series::line("without BN", nb.col("saturated"), PALETTE[1]).styled(Style::Dashed),
                Series::line("with BN", b.col("saturated"), PALETTE[0]),
            ],
            ..Panel::default()
        }],
    );
    let (sat_svg, _, _) = plot::save(&Figure { panel_width: 560.0, ..sat }, dir, "saturation")?;

    // Numbers: accuracy at fixed fractions of the run, percentile spread and drift.
    let marks = marks(a);
    // One seed: what the test set alone moves a difference of accuracies by is the noise.
    let noise = |s: u64| crate::stats::accuracy_noise(b.at(s, "acc"), nb.at(s, "acc"), n_test);
    let acc_rows: Vec<Vec<String>> = marks
        .iter()
        .map(|&s| vec![s.to_string(), fmt(nb.at(s, "acc"), 4), fmt(b.at(s, "acc"), 4), fmt(b.at(s, "acc") - nb.at(s, "acc"), 4), fmt(noise(s), 4)])
        .collect();
    let spread = |cv: &Curves| -> Vec<String> {
        let first = cv.outcome.rows.first().map_or(0, |r| r.step);
        let last = cv.outcome.rows.last().map_or(0, |r| r.step);
        vec![
            cv.label.to_string(),
            fmt(cv.at(first, "p85") - cv.at(first, "p15"), 3),
            fmt(cv.at(last, "p85") - cv.at(last, "p15"), 3),
            fmt(cv.drift(), 3),
            fmt(cv.at(last, "saturated"), 4),
            fmt(cv.outcome.best_acc(), 4),
        ]
    };
    let spread_rows = vec![spread(nb), spread(b)];
    let acc_h = ["step", "accuracy without BN", "accuracy with BN", "difference", "test-set noise (2 s.e.)"];
    let spread_h = ["net", "p85 - p15 at start", "p85 - p15 at end", "range of the median over training", "saturated fraction at end", "best accuracy"];
    let end = a.steps;
    let early = early_mark(a);
    let verdict = format!(
        "After {end} steps the net with BN reached {} test accuracy against {} without (best {} vs {}). \
         The median sigmoid input of unit {} moved over a range of {} with BN and {} without, over the whole run.",
        fmt(b.at(end, "acc"), 4),
        fmt(nb.at(end, "acc"), 4),
        fmt(b.outcome.best_acc(), 4),
        fmt(nb.outcome.best_acc(), 4),
        a.unit,
        spread_rows[1][3],
        spread_rows[0][3]
    );
    // Every seed's numbers, where there are several: the verdicts' evidence.
    let seed_h = [
        "seed".to_string(),
        "range of the median without BN".into(),
        "with BN".into(),
        format!("accuracy at step {early} without BN"),
        "with BN".into(),
        format!("at step {end} without BN"),
        "with BN".into(),
    ];
    let seed_h: Vec<&str> = seed_h.iter().map(String::as_str).collect();
    let seed_rows: Vec<Vec<String>> = per_seed
        .iter()
        .map(|r| vec![r.seed.to_string(), fmt(r.drift[0], 3), fmt(r.drift[1], 3), fmt(r.early[0], 4), fmt(r.early[1], 4), fmt(r.end[0], 4), fmt(r.end[1], 4)])
        .collect();
    let (seed_html, seed_md) = if per_seed.len() > 1 {
        let title = format!("<h2>Every seed</h2><p>{} seeds from {}; the figures and tables above show the first.</p>", per_seed.len(), a.seed);
        (format!("{title}{}", report::table(&seed_h, &seed_rows)), format!("\n{}", report::md_table(&seed_h, &seed_rows)))
    } else {
        (String::new(), String::new())
    };
    let body = format!(
        "<p>Data: {data_name}. Both nets start from the same weights (seed {seed}, N(0, {std}&sup2;)), train with plain SGD at \
         learning rate {lr}, batch {bs}, for {steps} steps, evaluated every {ev} steps on the test set. With BN, every hidden \
         layer computes sigmoid(BN(xW)) and drops its bias.</p>\
         <h2>Measured outcome</h2><p>{verdict}</p>{fig}\
         <h2>Test accuracy at fixed steps</h2>{t1}\
         <h2>Distribution of the sigmoid input</h2><p>Percentiles are over the {n} test images, for unit {unit} of the last hidden layer \
         (panels b and c). Saturation counts |input| &gt; 4 over all hidden units.</p>{t2}{satfig}{seed_html}\
         <p>Files: <a href=\"figure1.csv\">figure1.csv</a>, <a href=\"no-bn/metrics.csv\">no-bn/metrics.csv</a>, \
         <a href=\"bn/metrics.csv\">bn/metrics.csv</a>, checkpoints in <code>no-bn/</code> and <code>bn/</code>{more}.</p>",
        seed = a.seed,
        std = a.init_std,
        lr = a.lr,
        bs = a.batch_size,
        steps = a.steps,
        ev = a.eval_every,
        fig = report::figure(
            &fig_svg,
            "Figure 1 (a) test accuracy, (b, c) 15th/50th/85th percentiles of a last-hidden-layer sigmoid input",
            &["figure1.png", "figure1.svg"]
        ),
        t1 = report::table(&acc_h, &acc_rows),
        n = "all",
        unit = a.unit,
        t2 = report::table(&spread_h, &spread_rows),
        satfig = report::figure(&sat_svg, "Fraction of saturated sigmoid inputs", &["saturation.png", "saturation.svg"]),
        more = if per_seed.len() > 1 { "; the other seeds' nets in <code>seed-N/</code>" } else { "" },
    );
    batchnorm::write_atomic(&dir.join("report.html"), report::page("bnlab paper: Batch Normalization, Figure 1", &body).as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let md = format!(
        "# bnlab paper: Figure 1\n\n{verdict}\n\n![Figure 1](figure1.png)\n\n{}\n{}{seed_md}",
        report::md_table(&acc_h, &acc_rows),
        report::md_table(&spread_h, &spread_rows)
    );
    batchnorm::write_atomic(&dir.join("report.md"), md.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let findings = vec![drift_finding(a, per_seed), faster_finding(per_seed, early, end, noise(early), n_test)];
    let summary = serde_json::json!({
        "experiment": "paper",
        "title": "Figure 1: test accuracy and the stability of sigmoid inputs",
        "findings": findings,
        "figures": ["figure1", "saturation"],
        "data": data_name,
        "steps": a.steps,
        "final_acc_bn": b.at(end, "acc"),
        "final_acc_no_bn": nb.at(end, "acc"),
        "best_acc_bn": b.outcome.best_acc(),
        "best_acc_no_bn": nb.outcome.best_acc(),
        "median_drift_bn": spread_rows[1][3],
        "median_drift_no_bn": spread_rows[0][3],
        "saturated_end_bn": b.at(end, "saturated"),
        "saturated_end_no_bn": nb.at(end, "saturated"),
        "seeds": per_seed.iter().map(|r| r.seed).collect::<Vec<_>>(),
        "median_drift_no_bn_per_seed": per_seed.iter().map(|r| r.drift[0]).collect::<Vec<_>>(),
        "median_drift_bn_per_seed": per_seed.iter().map(|r| r.drift[1]).collect::<Vec<_>>(),
        "early_step": early,
        "early_acc_no_bn_per_seed": per_seed.iter().map(|r| r.early[0]).collect::<Vec<_>>(),
        "early_acc_bn_per_seed": per_seed.iter().map(|r| r.early[1]).collect::<Vec<_>>(),
    });
    batchnorm::write_atomic(&dir.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The verdict on the stability of the sigmoid's input: the range its median moved over,
/// smaller with BN. Over several seeds a difference counts only beyond the seeds' spread;
/// one seed has none to weigh it against.
fn drift_finding(a: &PaperArgs, per_seed: &[SeedResult]) -> crate::experiments::Finding {
    use crate::experiments::{lead_over_seeds, pm, Finding, Verdict};
    let (nb, b): (Vec<f64>, Vec<f64>) = per_seed.iter().map(|r| (r.drift[0], r.drift[1])).unzip();
    let (verdict, how) = if per_seed.len() > 1 {
        (Verdict::from_lead(lead_over_seeds(&nb, &b, 0.0)), format!(" (means ± standard deviations over {} seeds)", per_seed.len()))
    } else {
        (Verdict::from(b[0] < nb[0]), " (one seed: no spread to weigh the difference against; --seeds gives one)".into())
    };
    Finding {
        claim: "With BN the distribution of a sigmoid's input stays stable during training (Figure 1 b, c)".into(),
        measured: format!("the median input of unit {} moved over a range of {} with BN and {} without{how}", a.unit, pm(&b, 3), pm(&nb, 3)),
        paper: "without BN the percentiles drift; with BN they are stable".into(),
        verdict,
    }
}

/// The verdict on "trains faster": test accuracy at the early mark, ahead with BN by more
/// than the test set's own noise (`noise`, two standard errors of the first seed's
/// difference) and, over several seeds, than the seeds' spread.
fn faster_finding(per_seed: &[SeedResult], early: u64, end: u64, noise: f64, n_test: usize) -> crate::experiments::Finding {
    use crate::experiments::{lead_over_seeds, pm, Finding, Verdict};
    let col = |f: fn(&SeedResult) -> f64| per_seed.iter().map(f).collect::<Vec<f64>>();
    let (e_nb, e_b, z_nb, z_b) = (col(|r| r.early[0]), col(|r| r.early[1]), col(|r| r.end[0]), col(|r| r.end[1]));
    let over = if per_seed.len() > 1 { format!(" (means ± standard deviations over {} seeds)", per_seed.len()) } else { String::new() };
    Finding {
        claim: "With BN the network trains faster (Figure 1 a)".into(),
        measured: format!(
            "test accuracy at step {early}: {} with BN vs {} without (the test set alone moves the difference by {}: two standard \
             errors over {n_test} images); at step {end}: {} vs {}{over}",
            pm(&e_b, 4),
            pm(&e_nb, 4),
            fmt(noise, 4),
            pm(&z_b, 4),
            pm(&z_nb, 4)
        ),
        paper: "the BN net reaches higher accuracy faster".into(),
        verdict: Verdict::from_lead(lead_over_seeds(&e_b, &e_nb, noise)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::Verdict;

    fn seeds(drift: &[[f64; 2]], early: &[[f64; 2]]) -> Vec<SeedResult> {
        drift.iter().zip(early).enumerate().map(|(i, (&drift, &early))| SeedResult { seed: i as u64 + 1, drift, early, end: early }).collect()
    }

    #[test]
    fn verdicts_count_a_difference_only_beyond_the_seeds_spread() {
        let a = PaperArgs::new(crate::data::Source::Builtin, None);
        let early = [[0.2, 0.85]; 3];
        let clear = seeds(&[[1.2, 0.3], [1.1, 0.4], [1.3, 0.35]], &early);
        assert_eq!(drift_finding(&a, &clear).verdict, Verdict::Held);
        // Means 0.9 against 0.57, but one seed's nets swapped places: within the spread.
        let noisy = seeds(&[[1.0, 0.5], [0.2, 0.9], [1.5, 0.3]], &early);
        assert_eq!(drift_finding(&a, &noisy).verdict, Verdict::Undecided);
        let worse = seeds(&[[0.3, 1.2], [0.4, 1.1], [0.35, 1.3]], &early);
        assert_eq!(drift_finding(&a, &worse).verdict, Verdict::NotHeld);
        // One seed: any difference counts, and the text says there was no spread to weigh.
        let one = seeds(&[[0.5, 0.6]], &[[0.80, 0.81]]);
        let f = drift_finding(&a, &one);
        assert!(f.verdict == Verdict::NotHeld && f.measured.contains("one seed"), "{f:?}");
        // Faster: BN ahead by less than the test set's noise is no lead; beyond it is.
        assert_eq!(faster_finding(&one, 400, 20000, 0.02, 2000).verdict, Verdict::Undecided);
        assert_eq!(faster_finding(&clear, 400, 20000, 0.02, 2000).verdict, Verdict::Held);
        let spread_out = seeds(&[[1.0, 0.3]; 3], &[[0.2, 0.85], [0.9, 0.3], [0.3, 0.9]]);
        assert_eq!(faster_finding(&spread_out, 400, 20000, 0.02, 2000).verdict, Verdict::Undecided);
    }
}
