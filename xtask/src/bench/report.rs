//! The bench's output: a terminal table of medians with min and max and the
//! target ratios, a JSON file of every sample, and an SVG chart of ratios.

use std::fmt::Write;

use super::{LatencySample, Sample, Target};

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

fn values(samples: &[Sample], case: &str, plane: &str, streams: u32) -> Vec<f64> {
    samples
        .iter()
        .filter(|s| s.case == case && s.plane == plane && s.streams == streams)
        .map(|s| s.gbit_per_s)
        .collect()
}

/// (case, streams) pairs in the order they were first measured.
fn groups(samples: &[Sample]) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for s in samples {
        if !out.iter().any(|(c, n)| *c == s.case && *n == s.streams) {
            out.push((s.case.clone(), s.streams));
        }
    }
    out
}

fn planes(samples: &[Sample], case: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in samples.iter().filter(|s| s.case == case) {
        if !out.contains(&s.plane) {
            out.push(s.plane.clone());
        }
    }
    out
}

/// A target's measured ratio (medians) in one group, if both were measured.
pub fn ratio(samples: &[Sample], t: &Target, case: &str, streams: u32) -> Option<f64> {
    let plane = summarize(&values(samples, case, t.plane, streams))?;
    let base = summarize(&values(samples, case, t.baseline, streams))?;
    (base.median > 0.0).then(|| plane.median / base.median)
}

pub fn table(samples: &[Sample], targets: &[Target]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n| case | streams | data plane | median Gbit/s | min | max | runs |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for (case, streams) in groups(samples) {
        for plane in planes(samples, &case) {
            let v = values(samples, &case, &plane, streams);
            if let Some(s) = summarize(&v) {
                let _ = writeln!(
                    out,
                    "| {case} | {streams} | {plane} | {:.2} | {:.2} | {:.2} | {} |",
                    s.median,
                    s.min,
                    s.max,
                    v.len()
                );
            }
        }
    }
    let _ = writeln!(out, "\n| case | streams | ratio | measured | target | |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (case, streams) in groups(samples) {
        for t in targets.iter().filter(|t| t.applies_to(&case)) {
            if let Some(r) = ratio(samples, t, &case, streams) {
                let verdict = if r >= t.ratio { "met" } else { "MISSED" };
                let _ = writeln!(
                    out,
                    "| {case} | {streams} | {} / {} | {r:.3}x | >= {:.2}x | {verdict} |",
                    t.plane, t.baseline, t.ratio
                );
            }
        }
    }
    out
}

pub fn json(samples: &[Sample], latencies: &[LatencySample], streams: &[u32], seconds: u32) -> serde_json::Value {
    serde_json::json!({
        "tool": "iperf3 TCP; sockperf TCP ping-pong",
        "seconds_per_run": seconds,
        "streams": streams,
        "machine": machine(),
        "samples": samples,
        "latency_samples": latencies,
    })
}

/// Median (min–max) of the p50 and p99 latencies per plane.
pub fn latency_table(latencies: &[LatencySample]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| case | data plane | p50 us, median (min-max) | p99 us, median (min-max) |");
    let _ = writeln!(out, "|---|---|---|---|");
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for l in latencies {
        if seen.contains(&(l.case.as_str(), l.plane.as_str())) {
            continue;
        }
        seen.push((&l.case, &l.plane));
        let of = |f: fn(&LatencySample) -> f64| {
            let v: Vec<f64> = latencies.iter().filter(|x| x.case == l.case && x.plane == l.plane).map(f).collect();
            summarize(&v).map(|s| format!("{:.1} ({:.1}-{:.1})", s.median, s.min, s.max)).unwrap_or_default()
        };
        let _ = writeln!(out, "| {} | {} | {} | {} |", l.case, l.plane, of(|x| x.p50_us), of(|x| x.p99_us));
    }
    out
}

fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("Linux {}, {cpus} CPUs", kernel.trim())
}

/// A horizontal bar per target ratio, with the target marked.
pub fn svg(samples: &[Sample], targets: &[Target]) -> String {
    let mut rows = Vec::new();
    for (case, streams) in groups(samples) {
        for t in targets.iter().filter(|t| t.applies_to(&case)) {
            if let Some(r) = ratio(samples, t, &case, streams) {
                rows.push((format!("{case}, {streams} stream(s): {} / {}", t.plane, t.baseline), r, t.ratio));
            }
        }
    }
    let (left, width, row_h) = (330.0, 400.0, 28.0);
    let max = rows.iter().map(|(_, r, t)| r.max(*t)).fold(1.5_f64, f64::max);
    let height = 40.0 + row_h * rows.len() as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="12">"#,
        left + width + 80.0
    );
    let _ = write!(
        svg,
        r#"<text x="10" y="18" font-weight="bold">knet bench: median ratios (bar) against targets (line)</text>"#
    );
    for (i, (label, r, target)) in rows.iter().enumerate() {
        let y = 30.0 + row_h * i as f64;
        let w = width * r / max;
        let tx = left + width * target / max;
        let color = if r >= target { "#2a9d5c" } else { "#d1495b" };
        let _ = write!(
            svg,
            r##"<text x="10" y="{:.1}">{label}</text><rect x="{left}" y="{y:.1}" width="{w:.1}" height="18" fill="{color}"/><line x1="{tx:.1}" x2="{tx:.1}" y1="{:.1}" y2="{:.1}" stroke="#000" stroke-width="2"/><text x="{:.1}" y="{:.1}">{r:.3}x</text>"##,
            y + 13.0,
            y - 2.0,
            y + 20.0,
            left + w + 6.0,
            y + 13.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(plane: &str, rep: u32, g: f64) -> Sample {
        Sample { case: "same-node".into(), plane: plane.into(), streams: 1, rep, gbit_per_s: g }
    }

    #[test]
    fn median_min_max() {
        assert_eq!(summarize(&[3.0, 1.0, 2.0]), Some(Summary { median: 2.0, min: 1.0, max: 3.0 }));
        assert_eq!(summarize(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn ratios_use_medians_and_mark_misses() {
        let samples = vec![
            sample("knet", 1, 19.0),
            sample("knet", 2, 20.0),
            sample("knet", 3, 1.0),
            sample("kernel-routed", 1, 18.0),
            sample("kernel-routed", 2, 16.0),
            sample("kernel-routed", 3, 17.0),
        ];
        let t = Target { case: "same-node", plane: "knet", baseline: "kernel-routed", ratio: 1.10 };
        let r = ratio(&samples, &t, "same-node", 1).unwrap();
        assert!((r - 19.0 / 17.0).abs() < 1e-9);
        let table = table(&samples, std::slice::from_ref(&t));
        assert!(table.contains("1.118x") && table.contains("met"), "{table}");
        let strict = Target { ratio: 1.2, ..t };
        assert!(super::table(&samples, &[strict]).contains("MISSED"));
        assert!(svg(&samples, &[Target { case: "same-node", plane: "knet", baseline: "kernel-routed", ratio: 1.1 }])
            .contains("1.118x"));
    }
}
