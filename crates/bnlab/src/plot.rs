//! Figures as SVG (hand-written, dependency-free) and PNG (the same SVG rasterised by resvg
//! with the bundled DejaVu Sans, so text renders identically on every machine).

use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Colours that stay distinguishable in print and for common colour blindness.
pub const PALETTE: [&str; 8] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    Line,
    Dashed,
    Dotted,
    /// Vertical bars of this width (a histogram).
    Bars(f64),
    Points,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: String,
    pub style: Style,
}

impl Series {
    pub fn line(label: impl Into<String>, points: Vec<(f64, f64)>, color: &str) -> Self {
        Series { label: label.into(), points, color: color.into(), style: Style::Line }
    }
    pub fn styled(mut self, style: Style) -> Self {
        self.style = style;
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct Panel {
    pub title: String,
    pub xlabel: String,
    pub ylabel: String,
    pub series: Vec<Series>,
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    pub x_log: bool,
    /// Shaded vertical spans `(x0, x1, colour)` drawn under the data (e.g. regions).
    pub spans: Vec<(f64, f64, String)>,
}

#[derive(Debug, Clone)]
pub struct Figure {
    pub title: String,
    pub panels: Vec<Panel>,
    pub panel_width: f64,
    pub height: f64,
}

impl Figure {
    pub fn new(title: impl Into<String>, panels: Vec<Panel>) -> Self {
        Figure { title: title.into(), panels, panel_width: 420.0, height: 340.0 }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// About five round tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).abs().max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e6 || v.abs() < 1e-3 {
        format!("{v:.0e}")
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn finite_range(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = vals.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    (lo <= hi).then_some((lo, hi))
}

fn panel_svg(out: &mut String, p: &Panel, ox: f64, oy: f64, w: f64, h: f64) {
    let (ml, mr, mt, mb) = (62.0, 14.0, 30.0, 48.0);
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let tx = |v: f64, log: bool| if log { v.max(1e-300).log10() } else { v };
    let xs = p.series.iter().flat_map(|s| s.points.iter().map(|q| tx(q.0, p.x_log)));
    let (mut x0, mut x1) = p.x_range.map(|(a, b)| (tx(a, p.x_log), tx(b, p.x_log))).or_else(|| finite_range(xs)).unwrap_or((0.0, 1.0));
    let ys = p.series.iter().flat_map(|s| {
        let bars = matches!(s.style, Style::Bars(_));
        s.points.iter().map(|q| q.1).chain(bars.then_some(0.0))
    });
    let (mut y0, mut y1) = p.y_range.or_else(|| finite_range(ys)).unwrap_or((0.0, 1.0));
    if x1 - x0 < 1e-12 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    if y1 - y0 < 1e-12 {
        (y0, y1) = (y0 - 0.5, y1 + 0.5);
    } else if p.y_range.is_none() {
        let pad = (y1 - y0) * 0.05;
        (y0, y1) = (y0 - pad, y1 + pad);
    }
    let sx = |v: f64| ox + ml + (tx(v, p.x_log) - x0) / (x1 - x0) * pw;
    let sy = |v: f64| oy + mt + (1.0 - (v.clamp(y0 - (y1 - y0), y1 + (y1 - y0)) - y0) / (y1 - y0)) * ph;
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" font-size="14" text-anchor="middle" font-weight="bold">{}</text>"##,
        ox + ml + pw / 2.0,
        oy + 18.0,
        esc(&p.title)
    );
    let _ = writeln!(
        out,
        r##"<defs><clipPath id="c{ox:.0}_{oy:.0}"><rect x="{:.1}" y="{:.1}" width="{pw:.1}" height="{ph:.1}"/></clipPath></defs>"##,
        ox + ml,
        oy + mt
    );
    for (a, b, c) in &p.spans {
        let (xa, xb) = (sx(*a).max(ox + ml), sx(*b).min(ox + ml + pw));
        if xb > xa {
            let _ = writeln!(out, r##"<rect x="{xa:.1}" y="{:.1}" width="{:.1}" height="{ph:.1}" fill="{c}" opacity="0.15"/>"##, oy + mt, xb - xa);
        }
    }
    // Grid and ticks.
    for t in ticks(y0, y1) {
        let y = sy(t);
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            ox + ml,
            ox + ml + pw,
            ox + ml - 5.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
    let xt = if p.x_log {
        (x0.floor() as i64..=x1.ceil() as i64).map(|e| e as f64).filter(|e| *e >= x0 - 1e-9 && *e <= x1 + 1e-9).collect::<Vec<_>>()
    } else {
        ticks(x0, x1)
    };
    for t in xt {
        let (v, label) = if p.x_log { (10f64.powf(t), fmt_tick(10f64.powf(t))) } else { (t, fmt_tick(t)) };
        let x = sx(v);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#e0e0e0"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{label}</text>"##,
            oy + mt,
            oy + mt + ph,
            oy + mt + ph + 15.0
        );
    }
    let _ = writeln!(out, r##"<rect x="{:.1}" y="{:.1}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#333"/>"##, ox + ml, oy + mt);
    let _ = writeln!(out, r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"##, ox + ml + pw / 2.0, oy + h - 10.0, esc(&p.xlabel));
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{}</text>"##,
        ox + 16.0,
        oy + mt + ph / 2.0,
        ox + 16.0,
        oy + mt + ph / 2.0,
        esc(&p.ylabel)
    );
    // Data.
    let _ = writeln!(out, r##"<g clip-path="url(#c{ox:.0}_{oy:.0})">"##);
    for s in &p.series {
        match s.style {
            Style::Bars(bw) => {
                for &(x, y) in s.points.iter().filter(|q| q.0.is_finite() && q.1.is_finite()) {
                    let (xa, xb) = (sx(x - bw / 2.0), sx(x + bw / 2.0));
                    let (ya, yb) = (sy(y.max(0.0)), sy(0.0f64.max(y0)));
                    let _ = writeln!(
                        out,
                        r##"<rect x="{xa:.1}" y="{ya:.1}" width="{:.2}" height="{:.1}" fill="{}" opacity="0.55"/>"##,
                        (xb - xa).max(0.5),
                        (yb - ya).max(0.0),
                        s.color
                    );
                }
            }
            Style::Points => {
                for &(x, y) in s.points.iter().filter(|q| q.0.is_finite() && q.1.is_finite()) {
                    let _ = writeln!(out, r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"##, sx(x), sy(y), s.color);
                }
            }
            _ => {
                let dash = match s.style {
                    Style::Dashed => r#" stroke-dasharray="6 4""#,
                    Style::Dotted => r#" stroke-dasharray="2 3""#,
                    _ => "",
                };
                // Break the line at non-finite values (a diverged run).
                let mut d = String::new();
                let mut pen = false;
                for &(x, y) in &s.points {
                    if x.is_finite() && y.is_finite() {
                        let _ = write!(d, "{}{:.1},{:.1} ", if pen { "L" } else { "M" }, sx(x), sy(y));
                        pen = true;
                    } else {
                        pen = false;
                    }
                }
                let _ = writeln!(out, r##"<path d="{d}" fill="none" stroke="{}" stroke-width="2"{dash}/>"##, s.color);
            }
        }
    }
    let _ = writeln!(out, "</g>");
    // Legend.
    let labelled: Vec<&Series> = p.series.iter().filter(|s| !s.label.is_empty()).collect();
    if !labelled.is_empty() {
        let lw = labelled.iter().map(|s| s.label.chars().count()).max().unwrap_or(0) as f64 * 6.6 + 34.0;
        let (lx, ly) = (ox + ml + pw - lw - 6.0, oy + mt + 6.0);
        let _ = writeln!(
            out,
            r##"<rect x="{lx:.1}" y="{ly:.1}" width="{lw:.1}" height="{:.1}" fill="white" opacity="0.85" stroke="#bbb"/>"##,
            labelled.len() as f64 * 16.0 + 6.0
        );
        for (i, s) in labelled.iter().enumerate() {
            let y = ly + 14.0 + i as f64 * 16.0;
            let dash = match s.style {
                Style::Dashed => r#" stroke-dasharray="6 4""#,
                Style::Dotted => r#" stroke-dasharray="2 3""#,
                _ => "",
            };
            let _ = writeln!(
                out,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{}" stroke-width="{}"{dash}/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"##,
                lx + 5.0,
                lx + 25.0,
                y - 4.0,
                y - 4.0,
                s.color,
                if matches!(s.style, Style::Bars(_)) { 8 } else { 2 },
                lx + 30.0,
                y,
                esc(&s.label)
            );
        }
    }
}

/// The figure as a standalone SVG document.
pub fn svg(fig: &Figure) -> String {
    let top = if fig.title.is_empty() { 0.0 } else { 28.0 };
    let w = fig.panel_width * fig.panels.len().max(1) as f64;
    let h = fig.height + top;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="DejaVu Sans, sans-serif">"##
    );
    let _ = writeln!(out, r##"<rect width="100%" height="100%" fill="white"/>"##);
    if top > 0.0 {
        let _ = writeln!(out, r##"<text x="{:.1}" y="20" font-size="15" text-anchor="middle">{}</text>"##, w / 2.0, esc(&fig.title));
    }
    for (i, p) in fig.panels.iter().enumerate() {
        panel_svg(&mut out, p, i as f64 * fig.panel_width, top, fig.panel_width, fig.height);
    }
    out.push_str("</svg>\n");
    out
}

/// Rasterises an SVG document to PNG bytes.
pub fn png(svg_text: &str) -> Result<Vec<u8>> {
    let mut opt = resvg::usvg::Options::default();
    opt.fontdb_mut().load_font_data(FONT.to_vec());
    opt.font_family = "DejaVu Sans".into();
    let tree = resvg::usvg::Tree::from_str(svg_text, &opt).context("rendering the figure")?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).context("figure too large")?;
    resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().context("encoding PNG")
}

/// Writes `<dir>/<stem>.svg` and `<dir>/<stem>.png`; returns the SVG text and both paths.
pub fn save(fig: &Figure, dir: &Path, stem: &str) -> Result<(String, PathBuf, PathBuf)> {
    let s = svg(fig);
    let (sp, pp) = (dir.join(format!("{stem}.svg")), dir.join(format!("{stem}.png")));
    batchnorm::write_atomic(&sp, s.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    batchnorm::write_atomic(&pp, &png(&s)?).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((s, sp, pp))
}
