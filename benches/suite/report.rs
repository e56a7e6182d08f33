//! Tables (plain text for the terminal, Markdown for `docs/benchmarks.md`) and the SVG chart
//! of the main comparison.

use std::fmt::Write;

pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Self {
        Table {
            title: title.to_string(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn text(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .chain([&self.headers[i]])
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let pad = widths[i].saturating_sub(c.chars().count());
                    if i < 2 {
                        format!("{c}{}", " ".repeat(pad))
                    } else {
                        format!("{}{c}", " ".repeat(pad))
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut out = format!("{}\n\n{}\n", self.title, line(&self.headers));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out += &format!("{}\n", rule.join("  "));
        for r in &self.rows {
            out += &format!("{}\n", line(r));
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.headers.join(" | "));
        let align: Vec<&str> = (0..self.headers.len())
            .map(|i| if i < 2 { "---" } else { "---:" })
            .collect();
        out += &format!("|{}|\n", align.join("|"));
        for r in &self.rows {
            out += &format!("| {} |\n", r.join(" | "));
        }
        out
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / 1_048_576.0)
}

pub fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// One bar of the chart.
pub struct Bar {
    pub label: String,
    pub system: String,
    pub events_per_s: f64,
    pub cpu_per_m: f64,
}

fn color(system: &str) -> &'static str {
    match system {
        "bare copy" => "#9e9e9e",
        "connector" => "#1f77b4",
        _ => "#ff7f0e",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Two panels of horizontal bars: events/s and CPU seconds per 1 M events, one bar per run.
pub fn svg(title: &str, bars: &[Bar]) -> String {
    let label_w = 330.0;
    let panel_w = 300.0;
    // Room for the first panel's value labels.
    let gap = 90.0;
    let row_h = 24.0;
    let top = 60.0;
    let width = label_w + 2.0 * panel_w + gap + 90.0;
    let height = top + row_h * bars.len() as f64 + 50.0;
    let max_rate = bars.iter().map(|b| b.events_per_s).fold(1.0, f64::max);
    let max_cpu = bars.iter().map(|b| b.cpu_per_m).fold(0.1, f64::max);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let x1 = label_w;
    let x2 = label_w + panel_w + gap;
    let _ = writeln!(
        s,
        r#"<text x="{x1}" y="48" font-weight="bold">events/s (higher is better)</text><text x="{x2}" y="48" font-weight="bold">CPU s per 1 M events (lower is better)</text>"#
    );
    for (i, b) in bars.iter().enumerate() {
        let y = top + row_h * i as f64;
        let c = color(&b.system);
        let w1 = panel_w * b.events_per_s / max_rate;
        let w2 = panel_w * b.cpu_per_m / max_cpu;
        let _ = writeln!(
            s,
            r#"<text x="{:.0}" y="{:.0}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + 15.0,
            escape(&b.label)
        );
        let _ = writeln!(
            s,
            r#"<rect x="{x1}" y="{:.0}" width="{w1:.1}" height="{:.0}" fill="{c}"/><text x="{:.1}" y="{:.0}">{}</text>"#,
            y + 3.0,
            row_h - 6.0,
            x1 + w1 + 4.0,
            y + 15.0,
            thousands(b.events_per_s)
        );
        let _ = writeln!(
            s,
            r#"<rect x="{x2}" y="{:.0}" width="{w2:.1}" height="{:.0}" fill="{c}"/><text x="{:.1}" y="{:.0}">{:.2}</text>"#,
            y + 3.0,
            row_h - 6.0,
            x2 + w2 + 4.0,
            y + 15.0,
            b.cpu_per_m
        );
    }
    let y = top + row_h * bars.len() as f64 + 25.0;
    let mut x = label_w;
    for system in ["bare copy", "connector", "Kafka Streams"] {
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{:.0}" width="12" height="12" fill="{}"/><text x="{:.0}" y="{y:.0}">{system}</text>"#,
            y - 10.0,
            color(system),
            x + 16.0
        );
        x += 130.0;
    }
    s += "</svg>\n";
    s
}
