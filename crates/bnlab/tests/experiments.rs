//! Every experiment's --quick run produces its files with sane contents, and `report`
//! gathers them.

use bnlab::data::Source;
use bnlab::experiments::{self, ExpArgs, NAMES};

/// Splits one CSV line, honouring quoted fields.
fn fields(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn check_csv(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = fields(lines.next().unwrap());
    let rows: Vec<&str> = lines.collect();
    assert!(!rows.is_empty(), "{} has no rows", path.display());
    for r in rows {
        let f = fields(r);
        assert_eq!(f.len(), header.len(), "{}: {r}", path.display());
        // Numeric fields are finite, or NaN where a run diverged on purpose; text is labels.
        for v in &f {
            if let Ok(x) = v.parse::<f64>() {
                assert!(!x.is_infinite(), "{}: {r}", path.display());
            }
        }
    }
}

#[test]
fn quick_runs_write_reports_csvs_plots_and_summaries() {
    let runs = std::env::temp_dir().join(format!("bnlab-exp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&runs);
    for name in NAMES {
        let dir = runs.join(name);
        let a = ExpArgs { quick: true, seeds: 1, source: Source::Builtin, out: Some(dir.clone()), quiet: true };
        assert_eq!(experiments::run(name, &a).unwrap(), dir);
        let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
        assert_eq!(s["experiment"], name);
        let findings = s["findings"].as_array().unwrap();
        assert!(!findings.is_empty(), "{name}: no findings");
        for f in findings {
            for k in ["claim", "measured", "paper"] {
                assert!(!f[k].as_str().unwrap().is_empty(), "{name}: empty {k}");
            }
            assert!(["held", "not-held", "mixed", "undecided"].contains(&f["verdict"].as_str().unwrap()));
        }
        for fig in s["figures"].as_array().unwrap() {
            let stem = fig.as_str().unwrap();
            assert!(std::fs::read(dir.join(format!("{stem}.png"))).unwrap().starts_with(b"\x89PNG"), "{name}: {stem}.png");
            assert!(std::fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap().contains("<svg"), "{name}: {stem}.svg");
        }
        let csvs: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "csv")).collect();
        assert!(!csvs.is_empty(), "{name}: no CSV");
        csvs.iter().for_each(|p| check_csv(p));
        let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
        assert!(html.contains("<svg") && html.contains("verdict"), "{name}: report.html");
        assert!(dir.join("report.md").exists());
    }
    // Run again into a directory that holds results: refused, and the results kept.
    let dir = runs.join(NAMES[0]);
    let before = std::fs::read(dir.join("summary.json")).unwrap();
    let a = ExpArgs { quick: true, seeds: 1, source: Source::Builtin, out: Some(dir.clone()), quiet: true };
    let e = format!("{:#}", experiments::run(NAMES[0], &a).unwrap_err());
    assert!(e.contains("already holds") && e.contains("--out"), "{e}");
    assert_eq!(std::fs::read(dir.join("summary.json")).unwrap(), before);
    let page = bnlab::report_all::run(&runs).unwrap();
    let html = std::fs::read_to_string(&page).unwrap();
    for name in NAMES {
        assert!(html.contains(&format!("{name}/report.html")), "the report links {name}");
    }
    assert!(html.contains("Not run yet: paper"));
    assert!(std::fs::read_to_string(runs.join("report.md")).unwrap().contains("| experiment | claim |"));
    std::fs::remove_dir_all(runs).unwrap();
}

#[test]
fn unknown_experiments_and_empty_run_directories_are_clear_errors() {
    let a = ExpArgs { quick: true, seeds: 1, source: Source::Builtin, out: Some(std::env::temp_dir().join("bnlab-never")), quiet: true };
    let e = format!("{:#}", experiments::run("warp-speed", &a).unwrap_err());
    assert!(e.contains("unknown experiment") && e.contains("lr-sweep"), "{e}");
    let empty = std::env::temp_dir().join(format!("bnlab-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let e = format!("{:#}", bnlab::report_all::run(&empty).unwrap_err());
    assert!(e.contains("bnlab paper"), "{e}");
    std::fs::remove_dir_all(empty).unwrap();
}

#[test]
fn a_damaged_run_is_skipped_by_the_report_and_named_in_it() {
    let runs = std::env::temp_dir().join(format!("bnlab-damaged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&runs);
    let summary = |name: &str, title: &str| format!(r#"{{"experiment": "{name}", "title": "{title}", "findings": [], "figures": []}}"#);
    for (dir, text) in [("depth-1", summary("depth", "older depth")), ("depth-2", "{not json".to_string()), ("dropout-1", summary("dropout", "dropout run"))] {
        std::fs::create_dir_all(runs.join(dir)).unwrap();
        std::fs::write(runs.join(dir).join("summary.json"), text).unwrap();
    }
    bnlab::report_all::run(&runs).unwrap();
    let md = std::fs::read_to_string(runs.join("report.md")).unwrap();
    assert!(md.contains("Skipped, their summary.json unreadable: depth-2"), "{md}");
    assert!(md.contains("## depth: older depth") && md.contains("## dropout: dropout run"), "{md}");
    // Nothing readable at all is still an error, which counts the damaged runs.
    std::fs::remove_dir_all(runs.join("depth-1")).unwrap();
    std::fs::remove_dir_all(runs.join("dropout-1")).unwrap();
    let e = format!("{:#}", bnlab::report_all::run(&runs).unwrap_err());
    assert!(e.contains("no run with a summary.json (1 with an unreadable one)"), "{e}");
    std::fs::remove_dir_all(runs).unwrap();
}
