//! Training runs: learning, resume, divergence, and the paper command's files.

use bnlab::data::Source;
use bnlab::model::{Act, Arch, BnSpec, ModelSpec, WeightInit};
use bnlab::paper::{self, PaperArgs};
use bnlab::train::{DataSpec, Run, TrainConfig};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bnlab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn cfg(bn: bool, steps: u64) -> TrainConfig {
    TrainConfig {
        model: ModelSpec { arch: Arch::Mlp { widths: vec![64, 64] }, act: Act::Sigmoid, bn: bn.then(BnSpec::default), dropout: 0.1, init: WeightInit::Lecun },
        data: DataSpec::Builtin,
        train_subset: None,
        lr: 0.5,
        lr_decay: None,
        momentum: 0.5,
        weight_decay: 1e-4,
        batch_size: 32,
        steps,
        eval_every: 50,
        seed: 7,
        frozen: vec![],
    }
}

#[test]
fn loss_falls_and_the_bn_net_beats_chance_clearly() {
    let data = Source::Builtin.load().unwrap();
    let mut run = Run::new(cfg(true, 300), data, None).unwrap();
    let out = run.train(&mut |_, _| Ok(vec![])).unwrap();
    assert!(out.diverged.is_none());
    let first = out.rows[1].train_loss;
    let last = out.rows.last().unwrap().train_loss;
    assert!(last < first * 0.7, "training loss {first} -> {last}");
    assert!(out.final_acc() > 0.8, "BN net accuracy {} after 300 steps", out.final_acc());
    assert_eq!(out.rows.first().unwrap().step, 0);
    assert_eq!(out.rows.last().unwrap().step, 300);
}

fn files_equal(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// Same tensors (names, shapes, bytes) and same metadata; the header's key order is free.
fn checkpoints_equal(a: &Path, b: &Path) -> bool {
    use batchnorm::safetensors::SafeTensors;
    let (ba, bb) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let (sa, sb) = (SafeTensors::deserialize(&ba).unwrap(), SafeTensors::deserialize(&bb).unwrap());
    let mut na = sa.names();
    na.sort();
    let mut nb = sb.names();
    nb.sort();
    let md = |b: &[u8]| SafeTensors::read_metadata(b).unwrap().1.metadata().clone();
    na == nb
        && na.iter().all(|n| {
            let (x, y) = (sa.tensor(n).unwrap(), sb.tensor(n).unwrap());
            x.shape() == y.shape() && x.data() == y.data()
        })
        && md(&ba) == md(&bb)
}

#[test]
fn resume_equals_uninterrupted_bit_for_bit() {
    let data = Source::Builtin.load().unwrap();
    let (a, b) = (tmp("straight"), tmp("resumed"));
    let mut c = cfg(true, 200);
    c.model.arch = Arch::Cnn { channels: [4, 8] };
    c.model.act = Act::Relu;
    c.model.init = WeightInit::He;
    c.lr = 0.05;
    let mut straight = Run::new(c.clone(), data.clone(), Some(&a)).unwrap();
    straight.train(&mut |_, _| Ok(vec![])).unwrap();
    let mut first = Run::new(TrainConfig { steps: 100, ..c.clone() }, data, Some(&b)).unwrap();
    first.train(&mut |_, _| Ok(vec![])).unwrap();
    drop(first);
    let mut resumed = Run::resume(&b, Some(200)).unwrap();
    assert_eq!(resumed.step, 100);
    resumed.train(&mut |_, _| Ok(vec![])).unwrap();
    assert!(checkpoints_equal(&a.join("checkpoint.safetensors"), &b.join("checkpoint.safetensors")), "checkpoints differ");
    assert!(files_equal(&a.join("metrics.csv"), &b.join("metrics.csv")), "metrics differ");
    // A new run refuses to overwrite an existing one.
    let e = Run::new(c, Source::Builtin.load().unwrap(), Some(&a)).err().unwrap();
    assert!(format!("{e:#}").contains("--resume"), "{e:#}");
    std::fs::remove_dir_all(a).unwrap();
    std::fs::remove_dir_all(b).unwrap();
}

#[test]
fn divergence_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let data = Source::Builtin.load().unwrap();
    let dir = tmp("diverge");
    let mut c = cfg(false, 400);
    c.model.act = Act::Relu;
    c.model.dropout = 0.0;
    c.lr = 50.0;
    c.momentum = 0.9;
    c.eval_every = 1;
    let mut run = Run::new(c, data, Some(&dir)).unwrap();
    let out = run.train(&mut |_, _| Ok(vec![])).unwrap();
    let (step, loss) = out.diverged.expect("lr 50 with momentum must diverge");
    assert!(!loss.is_finite() || loss > 50.0);
    let kept = out.rows.last().unwrap().step;
    assert_eq!(kept, step, "the last evaluated step is the last good one");
    let resumed = Run::resume(&dir, None).unwrap();
    assert_eq!(resumed.step, kept, "the checkpoint is the last good step");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn paper_command_in_a_tiny_configuration_writes_every_promised_file() {
    let dir = tmp("paper");
    let a = PaperArgs {
        steps: 60,
        lr: 0.5,
        eval_every: 20,
        seed: 1,
        seeds: 1,
        init_std: 0.1,
        unit: 3,
        batch_size: 60,
        source: Source::Builtin,
        out: Some(dir.clone()),
        quiet: true,
    };
    let got = paper::run(&a).unwrap();
    assert_eq!(got, dir);
    let csv = std::fs::read_to_string(dir.join("figure1.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 4, "header + steps 0, 20, 40, 60");
    assert!(lines[0].starts_with("step,acc_no_bn,acc_bn,p15_no_bn"));
    for l in &lines[1..] {
        assert!(l.split(',').all(|v| v.parse::<f64>().is_ok_and(f64::is_finite)), "{l}");
    }
    for f in ["figure1.png", "figure1.svg", "saturation.png", "saturation.svg"] {
        let b = std::fs::read(dir.join(f)).unwrap();
        assert!(b.len() > 1000, "{f} is too small");
    }
    assert!(std::fs::read(dir.join("figure1.png")).unwrap().starts_with(b"\x89PNG"));
    let svg = std::fs::read_to_string(dir.join("figure1.svg")).unwrap();
    assert!(svg.contains("(a) test accuracy") && svg.contains("with BN") && svg.contains("training step"));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for needle in ["<svg", "figure1.png", "figure1.csv", "Measured outcome", "without BN"] {
        assert!(html.contains(needle), "report.html lacks {needle}");
    }
    for sub in ["bn", "no-bn"] {
        for f in ["config.json", "metrics.csv", "checkpoint.safetensors"] {
            assert!(dir.join(sub).join(f).exists(), "{sub}/{f}");
        }
    }
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert!(s["final_acc_bn"].as_f64().unwrap() > 0.3);
    // Run again into the same directory: refused before training, the first run kept.
    let e = format!("{:#}", paper::run(&a).unwrap_err());
    assert!(e.contains("already holds a Figure-1 run") && e.contains("--out"), "{e}");
    assert_eq!(std::fs::read_to_string(dir.join("figure1.csv")).unwrap(), csv);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn paper_command_over_seeds_keeps_each_seeds_nets_and_weighs_their_spread() {
    let dir = tmp("paper-seeds");
    let a = PaperArgs { steps: 40, eval_every: 20, seeds: 2, seed: 5, quiet: true, ..PaperArgs::new(Source::Builtin, Some(dir.clone())) };
    paper::run(&a).unwrap();
    for sub in ["bn", "no-bn", "seed-6/bn", "seed-6/no-bn"] {
        assert!(dir.join(sub).join("metrics.csv").exists(), "{sub}/metrics.csv");
    }
    let first = std::fs::read_to_string(dir.join("no-bn/metrics.csv")).unwrap();
    assert_ne!(first, std::fs::read_to_string(dir.join("seed-6/no-bn/metrics.csv")).unwrap(), "the second seed trained the first's net again");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["seeds"], serde_json::json!([5, 6]));
    let drift: Vec<f64> = s["median_drift_bn_per_seed"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(drift.len(), 2);
    assert_eq!(format!("{:.3}", drift[0]), s["median_drift_bn"].as_str().unwrap(), "the figures and tables are the first seed's");
    let measured = s["findings"][0]["measured"].as_str().unwrap();
    assert!(measured.contains("over 2 seeds") && measured.contains('±'), "{measured}");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| 5 |") && md.contains("| 6 |"), "no per-seed rows in report.md");
    std::fs::remove_dir_all(dir).unwrap();
}
