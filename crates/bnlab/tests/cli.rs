//! The binary: every error is one clear line and a non-zero exit.

use std::process::Command;

fn bnlab(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_bnlab")).args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

/// Runs `bnlab args` and asserts that it failed with status 2 and one line on stderr holding
/// `message`.
fn refused(args: &[&str], message: &str) {
    let (code, _, err) = bnlab(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert!(err.contains(message) && err.lines().count() == 1, "{args:?}: {err}");
}

#[test]
fn bad_flags_missing_data_and_unwritable_output_fail_with_one_clear_line() {
    refused(&["train", "--lr", "-1", "--steps", "1", "--out", "/tmp/bnlab-never"], "--lr must be a positive number");
    let (code, _, err) = bnlab(&["train", "--model", "rnn"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown --model"), "{err}");
    refused(&["train", "--data", "/nonexistent/mnist", "--steps", "1"], "/nonexistent/mnist");
    let (code, _, err) = bnlab(&["paper", "--steps", "1", "--out", "/proc/forbidden/run"]);
    assert_ne!(code, 0);
    assert!(err.contains("/proc/forbidden/run"), "{err}");
    let (code, _, err) = bnlab(&["train", "--resume", "/nonexistent/run"]);
    assert_eq!(code, 2);
    assert!(err.contains("config.json"), "{err}");
    for (flags, message) in [
        (&["--widths", "100,0"][..], "--widths takes layer widths of at least 1"),
        (&["--model", "cnn", "--channels", "0,4"], "--channels takes channel counts of at least 1"),
        (&["--init-std", "-1"], "--init-std must be a positive number"),
        (&["--lr-decay-every", "0"], "--lr-decay-every must be at least 1"),
        (&["--lr-decay-every", "10", "--lr-decay-factor", "-0.5"], "--lr-decay-factor must be a positive number"),
        (&["--weight-decay", "-0.0001"], "--weight-decay must be a number of at least 0"),
        // Flags that would change nothing are refused, not ignored.
        (&["--momentum", "0.5"], "--momentum applies to --optimizer momentum"),
        (&["--lr-decay-factor", "0.1"], "--lr-decay-factor needs --lr-decay-every"),
        (&["--channels", "4,8"], "--channels applies to --model cnn"),
        (&["--model", "cnn", "--widths", "10"], "--widths applies to --model mlp"),
        (&["--optimizer", "momentum", "--momentum", "1.5"], "--momentum must be in [0, 1)"),
    ] {
        refused(&[&["train", "--steps", "1", "--out", "/tmp/bnlab-never"][..], flags].concat(), message);
    }
    // A negative count is named as a bad value of its flag, not taken for an unknown flag.
    for (args, bad) in [
        (&["train", "--steps", "-1"][..], "-1"),
        (&["train", "--seed", "-1"], "-1"),
        (&["train", "--batch-size", "-60"], "-60"),
        (&["train", "--widths", "100,-5"], "-5"),
        (&["paper", "--eval-every", "-10"], "-10"),
        (&["experiment", "speedup", "--seeds", "-3"], "-3"),
        (&["bench", "--rounds", "-2"], "-2"),
        (&["train", "--lr-decay-every", "-100"], "-100"),
        (&["train", "--train-subset", "-1"], "-1"),
    ] {
        let (code, _, err) = bnlab(args);
        let flag = args.iter().find(|a| a.starts_with("--")).unwrap();
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(&format!("invalid value '{bad}' for '{flag}")), "{args:?}: {err}");
    }
    let (code, _, err) = bnlab(&["frobnicate"]);
    assert_ne!(code, 0);
    assert!(err.contains("frobnicate"), "{err}");
}

#[test]
fn conformance_subcommand_runs_the_core_cases() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../batchnorm/tests/data/conformance/cases");
    let (code, out, _) = bnlab(&["conformance", dir]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().last().unwrap(), "49 passed, 0 failed");
}

#[test]
fn train_writes_a_run_directory() {
    let dir = std::env::temp_dir().join(format!("bnlab-cli-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let (code, out, err) = bnlab(&["train", "--bn", "--steps", "40", "--eval-every", "20", "--out", d]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("test accuracy"), "{out}");
    let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 4, "header + steps 0, 20, 40");
    // A resumed run keeps its config.json's settings: any flag but --steps is refused.
    for flag in [&["--lr", "0.5"][..], &["--bn"], &["--out=/tmp/elsewhere"]] {
        let name = flag[0].split('=').next().unwrap();
        refused(&[&["train", "--resume", d, "--steps", "60"][..], flag].concat(), &format!("{name} cannot change a resumed run"));
    }
    assert_eq!(std::fs::read_to_string(dir.join("metrics.csv")).unwrap().lines().count(), 4, "refused resumes trained nothing");
    let (code, _, err) = bnlab(&["train", "--resume", d, "--steps", "60"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("metrics.csv")).unwrap().lines().count(), 5);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn end_to_end_timing_child_reports_steps_per_second() {
    // What `bnlab bench` runs per thread count: one JSON line, both nets timed.
    let o = Command::new(env!("CARGO_BIN_EXE_bnlab")).args(["bench-e2e", "--steps", "20"]).env("RAYON_NUM_THREADS", "1").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(o.stdout.trim_ascii()).unwrap();
    for k in ["bn", "no_bn"] {
        let r = v[k].as_f64().unwrap_or(f64::NAN);
        assert!(r.is_finite() && r > 0.0, "{k}: {v}");
    }
}

/// `paper`, `experiment`, `all` and `bench` check their flags before anything runs, with one
/// line, and a run that cannot start leaves no directory behind.
#[test]
fn runs_check_every_flag_first_and_leave_nothing_when_they_cannot_start() {
    let root = std::env::temp_dir().join(format!("bnlab-cli-checks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let out = root.join("run");
    let o = out.to_str().unwrap();
    for (args, message) in [
        (&["paper", "--steps", "0"][..], "--steps must be at least 1"),
        (&["paper", "--lr", "-1"], "--lr must be a positive number"),
        (&["paper", "--init-std", "-0.1"], "--init-std must be a positive number"),
        (&["paper", "--eval-every", "0"], "--eval-every must be at least 1"),
        (&["paper", "--batch-size", "1"], "--batch-size must be at least 2"),
        (&["paper", "--batch-size", "9000"], "batch size 9000 exceeds the 8000 training examples"),
        (&["paper", "--unit", "100"], "--unit must be below 100"),
        (&["paper", "--seeds", "0"], "--seeds must be at least 1"),
        (&["paper", "--seed", "18446744073709551615", "--seeds", "2"], "the last seed would pass"),
        (&["paper", "--data", "/nonexistent/mnist"], "/nonexistent/mnist"),
        (&["experiment", "depth", "--quick", "--data", "/nonexistent/mnist"], "/nonexistent/mnist"),
        (&["experiment", "depth", "--quick", "--seeds", "0"], "--seeds must be at least 1"),
        (&["bench", "--rounds", "0"], "--rounds must be at least 1"),
        (&["bench", "--threads", "0"], "--threads takes positive thread counts"),
        (&["bench", "--threads", "1,2,1"], "--threads names 1 twice"),
        (&["bench", "--shapes", "NC:60x100,NHWC:8x14x14"], "\"NHWC:8x14x14\": layout NHWC needs a tensor of rank 4, got rank 3"),
        (&["bench", "--shapes", "XY:3x3"], "unknown layout \"XY\""),
        (&["bench", "--shapes", "60x100"], "\"60x100\": expected LAYOUT:DxDx..."),
        (&["bench", "--shapes", "NC:60xa"], "\"a\" is not a size"),
        (&["bench", "--shapes", "NC:0x100"], "\"NC:0x100\" holds no values"),
        (&["bench", "--shapes", "NC:1000000x1000000"], "\"NC:1000000x1000000\" needs about 40000.0 GB"),
        (&["bench", "--shapes", "NC:10000000000x1000000000"], "needs about 400000000000.0 GB"),
    ] {
        refused(&[args, &["--out", o]].concat(), message);
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
    let (code, _, err) = bnlab(&["bench", "--dtype", "f16", "--out", o]);
    assert!(code == 2 && err.contains("invalid value 'f16' for '--dtype"), "{err}");
    assert!(!out.exists());
    // `all` would train Figure 1 first: its bad flag must stop it before that.
    let start = std::time::Instant::now();
    refused(&["all", "--quick", "--seeds", "0", "--out", o], "--seeds must be at least 1");
    assert!(!out.exists() && start.elapsed().as_secs() < 5, "all ran before checking its flags");
    let _ = std::fs::remove_dir_all(&root);
}

/// `bench --shapes` times the shapes it names, each in its layout, and only those.
#[test]
fn bench_times_the_shapes_it_is_given() {
    let out = std::env::temp_dir().join(format!("bnlab-bench-shapes-{}", std::process::id()));
    let o = out.to_str().unwrap();
    let (code, _, err) = bnlab(&["bench", "--shapes", "nc:60x100,NHWC:2x5x5x8", "--threads", "1", "--rounds", "1", "--e2e-steps", "0", "--out", o]);
    assert_eq!(code, 0, "{err}");
    let csv = std::fs::read_to_string(out.join("bench.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let entries: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[1], r[2], r[3])).collect();
    let mut want = Vec::new();
    for (shape, layout) in [("60x100", "NC"), ("2x5x5x8", "NHWC")] {
        for op in ["train_fwd", "train_fwd_bwd", "eval"] {
            want.push((shape, layout, op));
        }
    }
    assert_eq!(entries, want);
    for r in &rows {
        let ms: f64 = r[4].parse().unwrap();
        assert!(ms.is_finite() && ms > 0.0, "{r:?}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn quick_experiments_take_one_seed_unless_told() {
    let root = std::env::temp_dir().join(format!("bnlab-cli-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (seeds, want) in [(None, vec![1]), (Some("2"), vec![1, 2])] {
        let dir = root.join(seeds.unwrap_or("default"));
        let mut args = vec!["experiment", "depth", "--quick", "--dataset", "mnist-10k", "--out", dir.to_str().unwrap()];
        args.extend(seeds.map(|s| ["--seeds", s]).iter().flatten());
        let (code, _, err) = bnlab(&args);
        assert_eq!(code, 0, "{err}");
        let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
        assert_eq!(s["seeds"], serde_json::json!(want), "{seeds:?}");
    }
    std::fs::remove_dir_all(root).unwrap();
}
