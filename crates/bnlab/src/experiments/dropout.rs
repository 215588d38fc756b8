//! On a training subset small enough to overfit: does batch normalization make dropout
//! unnecessary?

use super::{csv, init_for, mlp, pm, Ctx, Finding, Section, Verdict};
use crate::model::{Act, BnSpec, Model};
use crate::plot::{Figure, Panel, Series, Style, PALETTE};
use crate::report;
use crate::train::{evaluate, Eval};
use anyhow::Result;

const VARIANTS: [(&str, bool, f64); 5] =
    [("none", false, 0.0), ("dropout 0.5", false, 0.5), ("BN", true, 0.0), ("BN + dropout 0.5", true, 0.5), ("BN + dropout 0.1", true, 0.1)];

struct Res {
    best: f64,
    fin: f64,
    gap: f64,
    turn_epoch: Option<usize>,
    test_loss: Vec<f64>,
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let n: usize = ctx.pick(1000, 200);
    let epochs: u64 = ctx.pick(60, 3);
    let batch = 50;
    let per_epoch = (n / batch) as u64;
    let widths: &[usize] = ctx.pick(&[256, 256], &[32, 32]);
    let subset = ctx.data.train.select(&(0..n).collect::<Vec<_>>());
    let mut res: Vec<Vec<Res>> = Vec::new();
    for &(name, bn, p) in &VARIANTS {
        let mut per_seed = Vec::new();
        for &seed in &ctx.seeds {
            let mut cfg = ctx.config(mlp(widths, Act::Relu, bn.then(BnSpec::default), p, init_for(Act::Relu)), 0.02, epochs * per_epoch, seed);
            cfg.train_subset = Some(n);
            cfg.batch_size = batch;
            cfg.momentum = 0.9;
            cfg.eval_every = per_epoch;
            let mut hook = |_: &Eval, m: &Model| -> Result<Vec<(String, f64)>> {
                let tr = evaluate(m, &subset, false, 0)?;
                Ok(vec![("train_acc".into(), tr.acc), ("train_loss".into(), tr.loss)])
            };
            let (o, _) = ctx.train(name, cfg, false, &mut hook)?;
            let test_loss: Vec<f64> = o.rows.iter().map(|r| r.test_loss).collect();
            let argmin = test_loss.iter().enumerate().filter(|(_, v)| v.is_finite()).min_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
            let last = o.rows.last().expect("evaluated");
            let train_acc = last.extra.iter().find(|e| e.0 == "train_acc").map_or(f64::NAN, |e| e.1);
            per_seed.push(Res {
                best: o.best_acc(),
                fin: o.final_acc(),
                gap: train_acc - last.test_acc,
                turn_epoch: argmin.filter(|&i| i + 1 < test_loss.len()),
                test_loss,
            });
        }
        res.push(per_seed);
    }
    let mut rows = Vec::new();
    let mut csv_rows = Vec::new();
    for ((name, _, _), rs) in VARIANTS.iter().zip(&res) {
        let turns: Vec<String> = rs.iter().map(|r| r.turn_epoch.map_or("never".into(), |e| e.to_string())).collect();
        rows.push(vec![
            name.to_string(),
            pm(&rs.iter().map(|r| r.best).collect::<Vec<_>>(), 4),
            pm(&rs.iter().map(|r| r.fin).collect::<Vec<_>>(), 4),
            pm(&rs.iter().map(|r| r.gap).collect::<Vec<_>>(), 4),
            turns.join(", "),
        ]);
        for (s, r) in ctx.seeds.iter().zip(rs) {
            csv_rows.push(vec![
                name.to_string(),
                s.to_string(),
                r.best.to_string(),
                r.fin.to_string(),
                r.gap.to_string(),
                r.turn_epoch.map_or("".into(), |e| e.to_string()),
            ]);
        }
    }
    csv(ctx, "dropout.csv", &["variant", "seed", "best_test_acc", "final_test_acc", "train_test_gap", "test_loss_min_epoch"], &csv_rows)?;
    let series = VARIANTS
        .iter()
        .zip(&res)
        .enumerate()
        .map(|(i, ((name, bn, _), rs))| {
            let pts = rs[0].test_loss.iter().enumerate().map(|(e, &l)| (e as f64, l)).collect();
            Series::line(*name, pts, PALETTE[i]).styled(if *bn { Style::Line } else { Style::Dashed })
        })
        .collect();
    let fig_html = ctx.figure(
        &Figure {
            panel_width: 640.0,
            height: 400.0,
            ..Figure::new(
                format!("Test loss per epoch, {n} training examples (seed {})", ctx.seeds[0]),
                vec![Panel {
                    title: format!("MLP {widths:?} ReLU, SGD momentum 0.9"),
                    xlabel: "epoch".into(),
                    ylabel: "test loss".into(),
                    series,
                    ..Panel::default()
                }],
            )
        },
        "dropout",
        "Test loss against epochs; where a curve turns up the net overfits",
    )?;
    let bests = |i: usize| res[i].iter().map(|r| r.best).collect::<Vec<_>>();
    let mean_best = |i: usize| crate::stats::mean_std(&bests(i)).0;
    let (none, drop, bn) = (mean_best(0), mean_best(1), mean_best(2));
    // What the seeds alone move the best accuracy by, over the three variants compared.
    let spread = super::spread(&[&bests(0), &bests(1), &bests(2)]);
    let verdict = decide(none, drop, bn, spread);
    let why = if verdict == Verdict::Undecided {
        let fin = crate::stats::mean_std(&res[0].iter().map(|r| r.fin).collect::<Vec<_>>()).0;
        let (head, how) = (format!("; neither BN nor dropout moved it from neither beyond the seeds' spread ({spread:.4})"), overfitting(&res[0], epochs));
        if res[0].iter().any(|r| r.turn_epoch.is_some()) {
            format!(
                "{head}, though the net without either overfits ({how}), in its loss more than in its accuracy (final {fin:.4} against best \
                 {none:.4}): little for a regulariser to win"
            )
        } else {
            format!("{head}, and the net without either shows no overfitting for them to cure ({how})")
        }
    } else {
        String::new()
    };
    let findings = vec![Finding {
        claim: "With batch normalization dropout is no longer needed".into(),
        measured: format!(
            "best test accuracy: BN alone {bn:.4}, dropout 0.5 alone {drop:.4}, neither {none:.4}, BN + dropout 0.5 {:.4}, BN + dropout 0.1 {:.4}{}",
            mean_best(3),
            mean_best(4),
            why
        ),
        paper: "BN-x5 removes dropout and still beats Inception (73.0% vs 72.2%)".into(),
        verdict,
    }];
    let h = ["variant", "best test accuracy", "final test accuracy", "train - test accuracy at end", "epoch of lowest test loss (per seed)"];
    Ok(Section {
        title: "Experiment dropout: does BN replace dropout?".into(),
        html: format!(
            "<p>MLP {widths:?}, ReLU, SGD with momentum 0.9 at rate 0.02, batch {batch}, trained for {epochs} epochs on the first \
             {n} training examples (small enough to overfit), evaluated every epoch on the full test set. Held: BN alone reaches \
             the best accuracy of dropout alone (within 0.5 points) and beats no regularisation.</p>{}{fig_html}",
            report::table(&h, &rows)
        ),
        md: format!("{}\n![dropout](dropout.png)\n", report::md_table(&h, &rows)),
        findings,
        figures: vec!["dropout".into()],
    })
}

/// How the seeds of one variant overfit, in words: the mean train - test accuracy gap at
/// the end and the epochs (of `epochs`; epoch 0 is before training) where the test loss
/// was lowest.
fn overfitting(rs: &[Res], epochs: u64) -> String {
    let gap = crate::stats::mean_std(&rs.iter().map(|r| r.gap).collect::<Vec<_>>()).0;
    let turns: Vec<usize> = rs.iter().filter_map(|r| r.turn_epoch).collect();
    let turned = match (turns.iter().min(), turns.iter().max()) {
        (Some(a), Some(b)) if a == b => format!("its test loss lowest at epoch {a} of {epochs}"),
        (Some(a), Some(b)) => format!("its test loss lowest at epochs {a}-{b} of {epochs}"),
        _ => "its test loss still falling at the end".to_string(),
    };
    let late = rs.len() - turns.len();
    let late = if late > 0 && !turns.is_empty() { format!(", still falling at the end in {late} of {} seeds", rs.len()) } else { String::new() };
    format!("train - test accuracy {gap:.3} at the end, {turned}{late}")
}

/// The verdict on "with BN dropout is no longer needed" from the variants' mean best test
/// accuracies and the seeds' `spread`: held where BN alone beats no regularisation by more
/// than the spread and does about as well as dropout (within 0.005); undecided where neither
/// BN nor dropout moves the accuracy from no regularisation by more than the spread (nothing
/// for either to replace in the best accuracy); partly held where BN beats no
/// regularisation but falls short of dropout; not held otherwise.
fn decide(none: f64, drop: f64, bn: f64, spread: f64) -> Verdict {
    let beats_none = bn > none + spread;
    if beats_none && bn >= drop - 0.005 {
        Verdict::Held
    } else if beats_none {
        Verdict::Mixed
    } else if spread > 0.0 && (bn - none).abs() <= spread && (drop - none).abs() <= spread {
        Verdict::Undecided
    } else {
        Verdict::NotHeld
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_within_the_seeds_spread_decide_nothing() {
        // The last `bnlab all`: every variant within 0.003, standard deviations up to 0.0037.
        assert_eq!(decide(0.8039, 0.8036, 0.8035, 0.0037), Verdict::Undecided);
        // One seed: no spread, every difference counts.
        assert_eq!(decide(0.8039, 0.8036, 0.8035, 0.0), Verdict::NotHeld);
        assert_eq!(decide(0.80, 0.83, 0.83, 0.004), Verdict::Held);
        assert_eq!(decide(0.80, 0.84, 0.82, 0.004), Verdict::Mixed);
        // BN clearly worse than nothing while dropout sits in the noise: the claim failed.
        assert_eq!(decide(0.80, 0.801, 0.78, 0.004), Verdict::NotHeld);
        // BN ahead by less than the spread but dropout clearly ahead: not undecided.
        assert_eq!(decide(0.80, 0.83, 0.802, 0.004), Verdict::NotHeld);
    }

    fn res(gap: f64, turn_epoch: Option<usize>) -> Res {
        Res { best: 0.8, fin: 0.8, gap, turn_epoch, test_loss: Vec::new() }
    }

    #[test]
    fn overfitting_names_the_gap_and_where_the_test_loss_turned() {
        let turned = [res(0.19, Some(15)), res(0.20, Some(11)), res(0.21, Some(6))];
        assert_eq!(overfitting(&turned, 60), "train - test accuracy 0.200 at the end, its test loss lowest at epochs 6-15 of 60");
        let one = [res(0.1, Some(4)), res(0.1, Some(4)), res(0.1, None)];
        assert_eq!(
            overfitting(&one, 60),
            "train - test accuracy 0.100 at the end, its test loss lowest at epoch 4 of 60, still falling at the end in 1 of 3 seeds"
        );
        assert_eq!(overfitting(&[res(0.01, None)], 3), "train - test accuracy 0.010 at the end, its test loss still falling at the end");
    }
}
