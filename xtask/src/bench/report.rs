//! The bench's output: per case a terminal table of medians with min and
//! max, the ratios to baselines with their targets, a JSON file of every
//! sample, and an SVG chart of the ratios with whiskers.

use std::fmt::Write;

use super::Sample;

/// Median, min and max of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] };
    Some(Summary { median, min: v[0], max: v[v.len() - 1] })
}

/// How a ratio is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    /// plane / baseline >= this (more is better: throughput, packet rate).
    AtLeast(f64),
    /// plane / baseline <= this (less is better: CPU cost, latency).
    AtMost(f64),
    /// The plane's median lies within the baseline's min..max.
    WithinNoise,
}

/// A target: `plane` against the best of `baselines` in `metric` of
/// `case` (and of the case on loaded nodes, `case/N-rules`).
pub struct Target {
    pub case: &'static str,
    pub metric: &'static str,
    pub plane: &'static str,
    pub baselines: &'static [&'static str],
    pub check: Check,
}

impl Target {
    pub fn applies_to(&self, case: &str) -> bool {
        case == self.case || case.strip_prefix(self.case).is_some_and(|rest| rest.starts_with('/'))
    }
}

const fn t(
    case: &'static str,
    metric: &'static str,
    plane: &'static str,
    baselines: &'static [&'static str],
    check: Check,
) -> Target {
    Target { case, metric, plane, baselines, check }
}

/// The kernel data planes users run instead, per case (the physical limits
/// are not among them).
const SAME_NODE_KERNEL: &[&str] = &["kernel-routed", "bridge"];
const CROSS_NODE_KERNEL: &[&str] = &["host-gw", "flannel-vxlan"];

/// The targets of issue 11, as ratios of medians measured side by side.
pub const TARGETS: &[Target] = &[
    t("same-node", "tcp-1", "knet", &["veth-direct"], Check::AtLeast(0.97)),
    t("same-node", "tcp-1", "knet", &["kernel-routed"], Check::AtLeast(1.10)),
    t("same-node", "tcp-1", "knet", &["bridge"], Check::AtLeast(1.10)),
    t("same-node", "udp64", "knet", &["kernel-routed"], Check::AtLeast(1.20)),
    t("cross-node", "tcp-1", "knet-vxlan", &["flannel-vxlan"], Check::AtLeast(1.25)),
    t("cross-node", "tcp-1", "knet-vxlan", &["underlay"], Check::AtLeast(0.85)),
    t("cross-node", "tcp-4", "knet-vxlan", &["flannel-vxlan"], Check::AtLeast(1.25)),
    t("cross-node", "tcp-4", "knet-vxlan", &["underlay"], Check::AtLeast(0.85)),
    t("cross-node", "tcp-1", "knet-native", &["host-gw"], Check::AtLeast(1.05)),
    t("cross-node", "tcp-1", "knet-native", &["underlay"], Check::AtLeast(0.95)),
    t("cross-node", "tcp-1 cpu", "knet-vxlan", &["flannel-vxlan"], Check::AtMost(0.80)),
    // Latency: no worse than the best kernel data plane of the case.
    t("same-node", "latency p50", "knet", SAME_NODE_KERNEL, Check::AtMost(1.0)),
    t("same-node", "latency p99", "knet", SAME_NODE_KERNEL, Check::AtMost(1.0)),
    t("cross-node", "latency p50", "knet-vxlan", CROSS_NODE_KERNEL, Check::AtMost(1.0)),
    t("cross-node", "latency p99", "knet-vxlan", CROSS_NODE_KERNEL, Check::AtMost(1.0)),
    t("cross-node", "latency p50", "knet-native", CROSS_NODE_KERNEL, Check::AtMost(1.0)),
    t("cross-node", "latency p99", "knet-native", CROSS_NODE_KERNEL, Check::AtMost(1.0)),
    t("scaling", "tcp-1", "knet-vxlan/10000-subnets", &["knet-vxlan"], Check::WithinNoise),
    t("scaling", "latency p50", "knet-vxlan/10000-subnets", &["knet-vxlan"], Check::WithinNoise),
    t("scaling", "latency p99", "knet-vxlan/10000-subnets", &["knet-vxlan"], Check::WithinNoise),
];

/// The table's columns per case, in order: the metrics that matter most.
const COLUMNS: &[&str] = &[
    "tcp-1",
    "tcp-4",
    "tcp-8",
    "udp64",
    "tcp-1 cpu sender",
    "tcp-1 cpu receiver",
    "latency p50",
    "latency p99",
    "latency p99.9",
];

/// The samples of one plane's metric in one case: (repetition, value).
fn series(samples: &[Sample], case: &str, plane: &str, metric: &str) -> Vec<(u32, f64)> {
    samples
        .iter()
        .filter(|s| s.case == case && s.plane == plane && s.metric == metric)
        .map(|s| (s.rep, s.value))
        .collect()
}

fn summary_of(samples: &[Sample], case: &str, plane: &str, metric: &str) -> Option<Summary> {
    summarize(&series(samples, case, plane, metric).into_iter().map(|(_, v)| v).collect::<Vec<_>>())
}

/// Distinct values in first-seen order.
fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn cases(samples: &[Sample]) -> Vec<&str> {
    distinct(samples.iter().map(|s| s.case.as_str()))
}

fn planes<'a>(samples: &'a [Sample], case: &str) -> Vec<&'a str> {
    distinct(samples.iter().filter(|s| s.case == case).map(|s| s.plane.as_str()))
}

/// Per case, a row per plane: median (min-max) of each column's metric.
pub fn tables(samples: &[Sample]) -> String {
    let mut out = String::new();
    for case in cases(samples) {
        let columns: Vec<&str> =
            COLUMNS.iter().copied().filter(|m| samples.iter().any(|s| s.case == case && s.metric == *m)).collect();
        let unit = |m: &str| samples.iter().find(|s| s.metric == m).map_or("", |s| s.unit);
        let _ = write!(out, "\n{case}\n\n| data plane |");
        for m in &columns {
            let _ = write!(out, " {m} ({}) |", unit(m));
        }
        let _ = writeln!(out, "\n|---|{}", "---|".repeat(columns.len()));
        for plane in planes(samples, case) {
            let _ = write!(out, "| {plane} |");
            for m in &columns {
                let cell = summary_of(samples, case, plane, m)
                    .map(|s| format!("{} ({}-{})", fig(s.median), fig(s.min), fig(s.max)))
                    .unwrap_or_default();
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
    }
    out
}

/// Three significant figures, however large or small.
fn fig(v: f64) -> String {
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else if v.abs() >= 1.0 {
        2
    } else {
        3
    };
    format!("{v:.digits$}")
}

/// One measured ratio: `plane` over `baseline` in `metric` of `case`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ratio {
    pub case: String,
    pub metric: String,
    pub plane: String,
    pub baseline: String,
    /// Median of the plane over median of the baseline.
    pub ratio: f64,
    /// The lowest and highest ratio of one repetition's pair (the planes
    /// were measured side by side in each repetition).
    pub rep_min: f64,
    pub rep_max: f64,
    /// The target as text (`>= 1.10x`), empty for a ratio shown only.
    pub target: String,
    /// Whether the target is met; `None` without one.
    pub met: Option<bool>,
}

fn ratio_of(samples: &[Sample], case: &str, metric: &str, plane: &str, baseline: &str) -> Option<Ratio> {
    let p = summary_of(samples, case, plane, metric)?;
    let b = summary_of(samples, case, baseline, metric)?;
    if b.median <= 0.0 {
        return None;
    }
    let base = series(samples, case, baseline, metric);
    let per_rep: Vec<f64> = series(samples, case, plane, metric)
        .into_iter()
        .filter_map(|(rep, v)| base.iter().find(|(r, _)| *r == rep).filter(|(_, b)| *b > 0.0).map(|(_, b)| v / b))
        .collect();
    let spread = summarize(&per_rep)?;
    Some(Ratio {
        case: case.into(),
        metric: metric.into(),
        plane: plane.into(),
        baseline: baseline.into(),
        ratio: p.median / b.median,
        rep_min: spread.min,
        rep_max: spread.max,
        target: String::new(),
        met: None,
    })
}

/// A target's ratio in `case`: against the best of its baselines (highest
/// for AtLeast, lowest for AtMost), with its verdict; `plane` may be a
/// variant of the target's.
fn judge(samples: &[Sample], t: &Target, case: &str, plane: &str) -> Option<Ratio> {
    let measured = |b: &&str| summary_of(samples, case, b, t.metric).map(|s| s.median);
    let best = match t.check {
        Check::AtMost(_) => t
            .baselines
            .iter()
            .filter(|b| measured(b).is_some())
            .min_by(|a, b| measured(a).unwrap_or(f64::MAX).total_cmp(&measured(b).unwrap_or(f64::MAX))),
        _ => t
            .baselines
            .iter()
            .filter(|b| measured(b).is_some())
            .max_by(|a, b| measured(a).unwrap_or(f64::MIN).total_cmp(&measured(b).unwrap_or(f64::MIN))),
    }?;
    let mut r = ratio_of(samples, case, t.metric, plane, best)?;
    let (target, met) = match t.check {
        Check::AtLeast(x) => (format!(">= {x:.2}x"), r.ratio >= x),
        Check::AtMost(x) => (format!("<= {x:.2}x"), r.ratio <= x),
        Check::WithinNoise => {
            let p = summary_of(samples, case, plane, t.metric)?;
            let b = summary_of(samples, case, best, t.metric)?;
            (format!("within {best}'s min-max"), p.median >= b.min && p.median <= b.max)
        }
    };
    r.target = target;
    r.met = Some(met);
    Some(r)
}

/// Every ratio the run can show: each target in each case it applies to
/// (and for each variant of its plane), each variant against its own build,
/// and each scaling plane against the first.
pub fn ratios(samples: &[Sample], targets: &[Target]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for case in cases(samples) {
        let all = planes(samples, case);
        for t in targets.iter().filter(|t| t.applies_to(case)) {
            out.extend(judge(samples, t, case, t.plane));
            for variant in all.iter().filter(|p| p.split_once('@').is_some_and(|(base, _)| base == t.plane)) {
                out.extend(judge(samples, t, case, variant));
            }
        }
        for plane in &all {
            let Some((base, _)) = plane.split_once('@') else { continue };
            for m in ["tcp-1", "tcp-4", "tcp-8", "udp64", "tcp-1 cpu", "latency p50", "latency p99"] {
                out.extend(ratio_of(samples, case, m, plane, base));
            }
        }
        if case == "scaling" {
            for plane in all.iter().skip(1) {
                for m in ["tcp-1", "latency p50", "latency p99"] {
                    let shown = out.iter().any(|r| r.case == case && r.plane == *plane && r.metric == m);
                    if !shown {
                        out.extend(ratio_of(samples, case, m, plane, all[0]));
                    }
                }
            }
        }
    }
    out
}

pub fn ratio_table(samples: &[Sample], targets: &[Target]) -> String {
    let mut out = String::from(
        "\n| case | metric | ratio | median | per-repetition min-max | target | |\n|---|---|---|---|---|---|---|\n",
    );
    for r in ratios(samples, targets) {
        let verdict = match r.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} / {} | {:.3}x | {:.3}-{:.3} | {} | {verdict} |",
            r.case, r.metric, r.plane, r.baseline, r.ratio, r.rep_min, r.rep_max, r.target
        );
    }
    out
}

pub fn ratios_json(samples: &[Sample], targets: &[Target]) -> serde_json::Value {
    serde_json::to_value(ratios(samples, targets)).unwrap_or_default()
}

/// A horizontal bar per ratio (median), whiskers from the lowest to the
/// highest repetition's ratio, the target marked by a line.
pub fn svg(samples: &[Sample], targets: &[Target]) -> String {
    let rows = ratios(samples, targets);
    let (left, width, row_h) = (430.0, 400.0, 26.0);
    let max = rows.iter().map(|r| r.rep_max.max(r.ratio)).fold(1.5_f64, f64::max);
    let x = |v: f64| left + width * v / max;
    let height = 40.0 + row_h * rows.len() as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="12">"#,
        left + width + 90.0
    );
    let _ = write!(
        svg,
        r#"<text x="10" y="18" font-weight="bold">knet bench: ratios of medians (bars), per-repetition min-max (whiskers), targets (lines)</text>"#
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 30.0 + row_h * i as f64;
        let color = match r.met {
            Some(true) => "#2a9d5c",
            Some(false) => "#d1495b",
            None => "#8a8a8a",
        };
        let label = format!("{} {}: {} / {}", r.case, r.metric, r.plane, r.baseline);
        let _ = write!(
            svg,
            r##"<text x="10" y="{:.1}">{}</text><rect x="{left}" y="{y:.1}" width="{:.1}" height="16" fill="{color}"/><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#333"/><text x="{:.1}" y="{:.1}">{:.3}x</text>"##,
            y + 12.0,
            escape(&label),
            x(r.ratio) - left,
            x(r.rep_min),
            x(r.rep_max),
            y + 8.0,
            y + 8.0,
            x(r.rep_max.max(r.ratio)) + 6.0,
            y + 12.0,
            r.ratio
        );
        let target = match targets.iter().find(|t| t.metric == r.metric && t.applies_to(&r.case)).map(|t| t.check) {
            Some(Check::AtLeast(v)) | Some(Check::AtMost(v)) if r.met.is_some() => Some(v),
            _ => None,
        };
        if let Some(v) = target {
            let _ = write!(
                svg,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#000" stroke-width="2"/>"##,
                x(v),
                x(v),
                y - 2.0,
                y + 18.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(case: &str, plane: &str, metric: &str, rep: u32, value: f64) -> Sample {
        Sample { case: case.into(), plane: plane.into(), metric: metric.into(), unit: "u", rep, value }
    }

    #[test]
    fn median_min_max() {
        assert_eq!(summarize(&[3.0, 1.0, 2.0]), Some(Summary { median: 2.0, min: 1.0, max: 3.0 }));
        assert_eq!(summarize(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn ratios_use_medians_with_paired_spread_and_mark_misses() {
        let mut s = Vec::new();
        for (rep, knet, kr) in [(1, 19.0, 18.0), (2, 20.0, 16.0), (3, 1.0, 17.0)] {
            s.push(sample("same-node", "knet", "tcp-1", rep, knet));
            s.push(sample("same-node", "kernel-routed", "tcp-1", rep, kr));
        }
        let t = Target {
            case: "same-node",
            metric: "tcp-1",
            plane: "knet",
            baselines: &["kernel-routed"],
            check: Check::AtLeast(1.10),
        };
        let r = judge(&s, &t, "same-node", "knet").unwrap();
        assert!((r.ratio - 19.0 / 17.0).abs() < 1e-9);
        assert!((r.rep_min - 1.0 / 17.0).abs() < 1e-9 && (r.rep_max - 20.0 / 16.0).abs() < 1e-9);
        assert_eq!(r.met, Some(true));
        let table = ratio_table(&s, std::slice::from_ref(&t));
        assert!(
            table.contains("| same-node | tcp-1 | knet / kernel-routed | 1.118x | 0.059-1.250 | >= 1.10x | met |"),
            "{table}"
        );
        let strict = Target { check: Check::AtLeast(1.2), ..t };
        assert!(ratio_table(&s, &[strict]).contains("MISSED"));
        let chart = svg(&s, TARGETS);
        assert!(chart.contains("1.118x") && chart.ends_with("</svg>\n"), "{chart}");
    }

    #[test]
    fn lower_is_better_judged_against_the_best_kernel_plane() {
        let s = vec![
            sample("cross-node", "knet-vxlan", "latency p50", 1, 30.0),
            sample("cross-node", "host-gw", "latency p50", 1, 28.0),
            sample("cross-node", "flannel-vxlan", "latency p50", 1, 35.0),
        ];
        let t = &TARGETS.iter().find(|t| t.metric == "latency p50" && t.plane == "knet-vxlan").unwrap();
        let r = judge(&s, t, "cross-node", "knet-vxlan").unwrap();
        assert_eq!(r.baseline, "host-gw", "the best kernel plane is the lowest latency");
        assert_eq!(r.met, Some(false));
        // The same target holds on loaded nodes.
        assert!(t.applies_to("cross-node/5000-rules") && !t.applies_to("cross-nodes"));
    }

    #[test]
    fn variants_and_scaling_are_shown_against_their_own_base() {
        let mut s = Vec::new();
        for (rep, a, b) in [(1, 10.0, 9.0), (2, 10.0, 11.0), (3, 10.0, 10.0)] {
            s.push(sample("cross-node", "knet-vxlan", "tcp-1", rep, a));
            s.push(sample("cross-node", "knet-vxlan@old", "tcp-1", rep, b));
            s.push(sample("cross-node", "flannel-vxlan", "tcp-1", rep, 8.5));
            s.push(sample("scaling", "knet-vxlan", "tcp-1", rep, a));
            s.push(sample("scaling", "knet-vxlan/10000-subnets", "tcp-1", rep, b));
            s.push(sample("scaling", "knet-vxlan/250-pods", "tcp-1", rep, b * 2.0));
        }
        let rows = ratios(&s, TARGETS);
        let find = |plane: &str, base: &str| rows.iter().find(|r| r.plane == plane && r.baseline == base);
        assert_eq!(find("knet-vxlan@old", "knet-vxlan").unwrap().ratio, 1.0);
        assert_eq!(find("knet-vxlan@old", "flannel-vxlan").unwrap().met, Some(false), "1.25x of flannel is the bar");
        let scaled = find("knet-vxlan/10000-subnets", "knet-vxlan").unwrap();
        assert_eq!(scaled.met, Some(true), "its median (10) lies within the base's 10-10");
        let pods = find("knet-vxlan/250-pods", "knet-vxlan").unwrap();
        assert_eq!((pods.ratio, pods.met), (2.0, None));
    }

    #[test]
    fn case_tables_show_median_and_range() {
        let s = vec![
            sample("same-node", "knet", "tcp-1", 1, 20.0),
            sample("same-node", "knet", "tcp-1", 2, 22.0),
            sample("same-node", "knet", "tcp-1", 3, 21.0),
            sample("same-node", "knet", "latency p99", 1, 12.5),
        ];
        let t = tables(&s);
        assert!(t.contains("| knet | 21.0 (20.0-22.0) | 12.5 (12.5-12.5) |"), "{t}");
        assert_eq!(fig(0.01234), "0.012");
        assert_eq!(fig(123.4), "123");
    }
}
