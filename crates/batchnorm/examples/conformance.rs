//! Runs a directory of batch-norm conformance cases against this crate.
//!
//! cargo run --release -p batchnorm --example conformance -- <CASE_DIR> [--out <OUT_DIR>]
//!
//! Prints one line per failing case and, last, `N passed, M failed`; exits 1 when any failed.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = None;
    let mut out = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => match it.next() {
                Some(o) => out = Some(PathBuf::from(o)),
                None => return usage("--out needs a directory"),
            },
            "-h" | "--help" => return usage(""),
            s if s.starts_with('-') => return usage(&format!("unknown flag {s}")),
            s if dir.is_none() => dir = Some(PathBuf::from(s)),
            s => return usage(&format!("unexpected argument {s}")),
        }
    }
    let Some(dir) = dir else { return usage("missing CASE_DIR") };
    match batchnorm::conformance::run_dir(&dir, out.as_deref()) {
        Ok(sum) => {
            for (name, why) in &sum.failed {
                println!("FAIL {name}: {}", why.join("; "));
            }
            println!("{} passed, {} failed", sum.passed, sum.failed.len());
            if sum.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    if !msg.is_empty() {
        eprintln!("error: {msg}");
    }
    eprintln!("usage: conformance <CASE_DIR> [--out <OUT_DIR>]");
    ExitCode::from(2)
}
