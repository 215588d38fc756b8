//! Learning rates from 0.003 to 10 with plain SGD, with and without BN, sigmoid and ReLU:
//! which rates train, and the width of that range.

use super::{csv, init_for, mlp, Ctx, Finding, Section, Verdict};
use crate::model::{Act, BnSpec};
use crate::plot::{Figure, Panel, Series, Style, PALETTE};
use crate::report;
use anyhow::Result;

pub fn run(ctx: &Ctx) -> Result<Section> {
    let lrs: Vec<f64> = ctx.pick(vec![0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0], vec![0.01, 1.0, 10.0]);
    let steps: u64 = ctx.pick(1500, 40);
    let widths: &[usize] = ctx.pick(&[100, 100, 100], &[32, 32]);
    let families = [(Act::Sigmoid, false), (Act::Sigmoid, true), (Act::Relu, false), (Act::Relu, true)];
    // acc[f][l] = final accuracies over seeds (NaN when diverged)
    let mut acc = vec![vec![Vec::new(); lrs.len()]; families.len()];
    let mut csv_rows = Vec::new();
    for (fi, &(act, bn)) in families.iter().enumerate() {
        for (li, &lr) in lrs.iter().enumerate() {
            for &seed in &ctx.seeds {
                let mut cfg = ctx.config(mlp(widths, act, bn.then(BnSpec::default), 0.0, init_for(act)), lr, steps, seed);
                cfg.eval_every = (steps / 3).max(1);
                let label = format!("{} {} lr {lr}", name(act), if bn { "BN" } else { "no BN" });
                let o = ctx.train_plain(&label, cfg)?;
                let a = if o.diverged.is_some() { f64::NAN } else { o.final_acc() };
                csv_rows.push(vec![name(act).into(), bn.to_string(), lr.to_string(), seed.to_string(), a.to_string(), o.diverged.is_some().to_string()]);
                acc[fi][li].push(a);
            }
        }
    }
    csv(ctx, "lr_sweep.csv", &["act", "bn", "lr", "seed", "final_acc", "diverged"], &csv_rows)?;
    let mean = |v: &Vec<f64>| if v.iter().any(|a| a.is_nan()) { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
    let best = acc.iter().flatten().map(mean).filter(|a| a.is_finite()).fold(0.0, f64::max);
    // A rate "trains" when no seed diverged and the mean final accuracy is within 90% of the
    // best any configuration reached.
    let trains = |fi: usize, li: usize| mean(&acc[fi][li]).is_finite() && mean(&acc[fi][li]) >= 0.9 * best;
    let mut rows = Vec::new();
    let mut ranges = Vec::new();
    for (fi, &(act, bn)) in families.iter().enumerate() {
        let ok: Vec<f64> = (0..lrs.len()).filter(|&li| trains(fi, li)).map(|li| lrs[li]).collect();
        let range = if ok.is_empty() { f64::NAN } else { ok[ok.len() - 1] / ok[0] };
        ranges.push((ok.first().copied(), ok.last().copied(), range));
        let mut r = vec![format!("{} {}", name(act), if bn { "with BN" } else { "without BN" })];
        for (li, runs) in acc[fi].iter().enumerate() {
            let m = mean(runs);
            r.push(if m.is_nan() { "diverged".into() } else { format!("{m:.3}{}", if trains(fi, li) { "" } else { "*" }) });
        }
        r.push(match (ok.first(), ok.last()) {
            (Some(a), Some(b)) => format!("{a}..{b} ({range:.0}x)"),
            _ => "none".into(),
        });
        rows.push(r);
    }
    let mut headers: Vec<String> = vec!["network".into()];
    headers.extend(lrs.iter().map(|l| format!("lr {l}")));
    headers.push("rates that train".into());
    let h: Vec<&str> = headers.iter().map(String::as_str).collect();
    let panels = [Act::Sigmoid, Act::Relu]
        .iter()
        .enumerate()
        .map(|(pi, &act)| Panel {
            title: format!("{} MLP, plain SGD, {steps} steps", name(act)),
            xlabel: "learning rate".into(),
            ylabel: "final test accuracy (gap: diverged)".into(),
            x_log: true,
            y_range: Some((0.0, 1.0)),
            series: [false, true]
                .iter()
                .flat_map(|&bn| {
                    let fi = pi * 2 + bn as usize;
                    let pts: Vec<(f64, f64)> = lrs.iter().enumerate().map(|(li, &l)| (l, mean(&acc[fi][li]))).collect();
                    let c = PALETTE[if bn { 0 } else { 1 }];
                    let label = if bn { "with BN" } else { "without BN" };
                    [Series::line(label, pts.clone(), c).styled(if bn { Style::Line } else { Style::Dashed }), Series::line("", pts, c).styled(Style::Points)]
                })
                .collect(),
            ..Panel::default()
        })
        .collect();
    let fig_html = ctx.figure(
        &Figure::new("Final test accuracy against learning rate", panels),
        "lr_sweep",
        "Mean final accuracy per learning rate; a gap marks divergence",
    )?;
    let wider = |a: usize, b: usize| {
        let (ra, rb) = (ranges[a], ranges[b]);
        (rb.1.unwrap_or(0.0) > ra.1.unwrap_or(0.0)) || (rb.2.is_finite() && (!ra.2.is_finite() || rb.2 > ra.2))
    };
    let (sig, relu) = (wider(0, 1), wider(2, 3));
    let desc = |i: usize| match ranges[i] {
        (Some(a), Some(b), r) => format!("{a}..{b} ({r:.0}x)"),
        _ => "none".into(),
    };
    let findings = vec![Finding {
        claim: "Batch normalization allows larger learning rates".into(),
        measured: format!("rates that train: sigmoid {} without BN vs {} with BN; ReLU {} without vs {} with", desc(0), desc(1), desc(2), desc(3)),
        paper: "BN-x30 trains at 30x the Inception rate; Base-x5 diverges".into(),
        verdict: match (sig, relu) {
            (true, true) => Verdict::Held,
            (false, false) => Verdict::NotHeld,
            _ => Verdict::Mixed,
        },
    }];
    Ok(Section {
        title: "Experiment lr-sweep: the range of learning rates that train".into(),
        html: format!(
            "<p>MLP {widths:?}, plain SGD, batch 60, {steps} steps per run; mean final test accuracy over seeds {:?}. \
             A rate trains when no seed diverged and the mean accuracy is at least 90% of the best any run reached \
             (values marked * fall short).</p>{}{fig_html}",
            ctx.seeds,
            report::table(&h, &rows)
        ),
        md: format!("{}\n![lr sweep](lr_sweep.png)\n", report::md_table(&h, &rows)),
        findings,
        figures: vec!["lr_sweep".into()],
    })
}

fn name(a: Act) -> &'static str {
    match a {
        Act::Sigmoid => "sigmoid",
        Act::Relu => "ReLU",
    }
}
