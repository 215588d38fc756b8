//! `bnlab report`: every run in `runs/` gathered into one self-contained page and its
//! Markdown twin, with a summary table of claims.

use crate::experiments::{Finding, NAMES};
use crate::report;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct Summary {
    experiment: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    data: String,
    #[serde(default)]
    quick: bool,
    #[serde(default)]
    findings: Vec<Finding>,
    #[serde(default)]
    figures: Vec<String>,
}

/// Builds `<runs>/report.html` and `<runs>/report.md` from the latest run of each
/// experiment (directory names sort by timestamp); returns the HTML path.
pub fn run(runs: &Path) -> Result<PathBuf> {
    let rd = std::fs::read_dir(runs).with_context(|| format!("cannot read {} (run an experiment first, e.g. `bnlab paper`)", runs.display()))?;
    let mut dirs: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join("summary.json").is_file()).collect();
    dirs.sort();
    let mut latest: Vec<(String, PathBuf, Summary)> = Vec::new();
    // One damaged run must not hide the others: it is named on stderr and in the report, and
    // an earlier run of the same experiment stands in for it.
    let mut skipped: Vec<(String, String)> = Vec::new();
    for d in dirs {
        let path = d.join("summary.json");
        let read = std::fs::read_to_string(&path).map_err(|e| e.to_string()).and_then(|t| serde_json::from_str::<Summary>(&t).map_err(|e| e.to_string()));
        let s = match read {
            Ok(s) => s,
            Err(why) => {
                eprintln!("warning: skipping {}: not a readable run summary ({why})", path.display());
                skipped.push((d.strip_prefix(runs).unwrap_or(&d).display().to_string(), why));
                continue;
            }
        };
        let name = s.experiment.clone();
        latest.retain(|(n, _, _)| *n != name);
        latest.push((name, d, s));
    }
    if latest.is_empty() {
        let also = if skipped.is_empty() { String::new() } else { format!(" ({} with an unreadable one)", skipped.len()) };
        bail!("{} holds no run with a summary.json{also}: run `bnlab paper` or `bnlab experiment <name>` first", runs.display());
    }
    let order = |n: &str| if n == "paper" { 0 } else { 1 + NAMES.iter().position(|x| *x == n).unwrap_or(99) };
    latest.sort_by_key(|(n, _, _)| order(n));
    let headers = ["experiment", "claim", "measured here", "the paper", "verdict"];
    let mut rows = Vec::new();
    for (n, _, s) in &latest {
        for f in &s.findings {
            rows.push(vec![n.clone(), f.claim.clone(), f.measured.clone(), f.paper.clone(), f.verdict.word().to_string()]);
        }
    }
    let mut html = format!("<p>{} experiment runs from <code>{}</code>. Each section shows the latest run of one experiment; its own report, CSVs and plots are in its directory.</p><h2>Summary</h2>{}", latest.len(), report::esc(&runs.display().to_string()), report::table(&headers, &rows));
    let mut md = format!("# bnlab report\n\n{}\n", report::md_table(&headers, &rows));
    let missing: Vec<&str> = std::iter::once("paper").chain(NAMES).filter(|n| !latest.iter().any(|(m, _, _)| m == n)).collect();
    if !missing.is_empty() {
        html.push_str(&format!("<p>Not run yet: {}.</p>", missing.join(", ")));
        md.push_str(&format!("\nNot run yet: {}.\n", missing.join(", ")));
    }
    if !skipped.is_empty() {
        let list = skipped.iter().map(|(d, why)| format!("{d} ({why})")).collect::<Vec<_>>().join("; ");
        html.push_str(&format!("<p>Skipped, their summary.json unreadable: {}.</p>", report::esc(&list)));
        md.push_str(&format!("\nSkipped, their summary.json unreadable: {list}.\n"));
    }
    for (n, d, s) in &latest {
        let rel = d.strip_prefix(runs).unwrap_or(d).display().to_string();
        html.push_str(&format!(
            "<h2>{}: {}</h2><p>Data: {}{}. Run: <a href=\"{rel}/report.html\">{rel}</a>.</p>",
            report::esc(n),
            report::esc(&s.title),
            report::esc(&s.data),
            if s.quick { " (quick mode)" } else { "" }
        ));
        md.push_str(&format!("\n## {n}: {}\n\nRun: [{rel}]({rel}/report.md)\n", s.title));
        for f in &s.figures {
            if let Ok(svg) = std::fs::read_to_string(d.join(format!("{f}.svg"))) {
                html.push_str(&report::figure(&svg, f, &[&format!("{rel}/{f}.png")]));
                md.push_str(&format!("\n![{f}]({rel}/{f}.png)\n"));
            }
        }
    }
    let out = runs.join("report.html");
    batchnorm::write_atomic(&out, report::page("bnlab: what batch normalization does, measured", &html).as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    batchnorm::write_atomic(&runs.join("report.md"), md.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(out)
}
