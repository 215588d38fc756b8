//! The binary: every error is one clear line and a non-zero exit.

use std::process::Command;

fn bnlab(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_bnlab")).args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn bad_flags_missing_data_and_unwritable_output_fail_with_one_clear_line() {
    let (code, _, err) = bnlab(&["train", "--lr", "-1", "--steps", "1", "--out", "/tmp/bnlab-never"]);
    assert_eq!(code, 2);
    assert!(err.contains("--lr must be a positive number") && err.lines().count() == 1, "{err}");
    let (code, _, err) = bnlab(&["train", "--model", "rnn"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown --model"), "{err}");
    let (code, _, err) = bnlab(&["train", "--data", "/nonexistent/mnist", "--steps", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/mnist") && err.lines().count() == 1, "{err}");
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
    ] {
        let (code, _, err) = bnlab(&[&["train", "--steps", "1", "--out", "/tmp/bnlab-never"][..], flags].concat());
        assert_eq!(code, 2, "{flags:?}: {err}");
        assert!(err.contains(message) && err.lines().count() == 1, "{flags:?}: {err}");
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
