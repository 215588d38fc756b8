//! Self-contained HTML pages (figures inline as SVG) and their Markdown twins.

/// An HTML table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><thead><tr>");
    for h in headers {
        s.push_str(&format!("<th>{}</th>", esc(h)));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            s.push_str(&format!("<td>{}</td>", esc(c)));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// A Markdown table. A `|` inside a cell is escaped (`\|`) and a line break becomes a space,
/// so cells such as "|x| > 4" stay one cell and every row one line.
///
/// ```
/// let t = bnlab::report::md_table(&["claim", "verdict"], &[vec!["inputs out of saturation (|x| > 4)".into(), "held".into()]]);
/// assert_eq!(t.lines().nth(2), Some(r"| inputs out of saturation (\|x\| > 4) | held |"));
/// ```
pub fn md_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |c: &str| c.replace('|', "\\|").replace(['\n', '\r'], " ");
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut s = line(headers.iter().map(|h| cell(h)).collect());
    s.push_str(&format!("|{}\n", "---|".repeat(headers.len())));
    for r in rows {
        s.push_str(&line(r.iter().map(|c| cell(c)).collect()));
    }
    s
}

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A standalone page: no external resource, figures inline.
pub fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{t}</title>
<style>
body {{ font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; max-width: 1300px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th {{ background: #f3f3f3; }}
td:first-child, th:first-child {{ text-align: left; }}
.fig {{ overflow-x: auto; margin: 1em 0; }}
.held {{ color: #0a7a2f; font-weight: bold; }} .not {{ color: #b3261e; font-weight: bold; }}
code {{ background: #f3f3f3; padding: 0 3px; }}
</style></head><body>
<h1>{t}</h1>
{body}
</body></html>
"#,
        t = esc(title)
    )
}

/// An inline figure with a caption and links to its files.
pub fn figure(svg: &str, caption: &str, files: &[&str]) -> String {
    let links: Vec<String> = files.iter().map(|f| format!(r#"<a href="{f}">{f}</a>"#)).collect();
    format!(r#"<div class="fig">{svg}<p><em>{}</em> ({})</p></div>"#, esc(caption), links.join(", "))
}

/// `YYYYMMDD-HHMMSS` in UTC, for run directory names.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}
