//! Results: every run's raw numbers, medians per case and switch, ratios to the Linux bridge,
//! the targets we hold ourselves to, tables for people, JSON for scripts, an SVG chart.

use crate::scenario::{Case, Metrics, Scenario};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Sample {
    pub scenario: Scenario,
    pub case: String,
    pub switch: String,
    pub round: usize,
    pub metrics: Metrics,
    /// Why this run has no figures (the others still count).
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Summary {
    pub scenario: Scenario,
    pub case: String,
    pub switch: String,
    /// Medians over the rounds that measured.
    pub median: Metrics,
    /// The case's primary figure divided by the bridge's (RTT: lower is better).
    pub vs_bridge: Option<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

pub fn summarize(cases: &[Case], samples: &[Sample]) -> Vec<Summary> {
    let mut out = Vec::new();
    for c in cases {
        let (primary, _) = c.measure.primary();
        let med = |sw: &str| {
            let runs: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.case == c.name && s.scenario == c.scenario && s.switch == sw && s.error.is_none())
                .collect();
            let mut m = Metrics::new();
            if let Some(first) = runs.first() {
                for k in first.metrics.keys() {
                    if let Some(v) = median(runs.iter().filter_map(|s| s.metrics.get(k).copied()).collect()) {
                        m.insert(k.clone(), v);
                    }
                }
            }
            m
        };
        let bridge = med("bridge").get(primary).copied();
        for sw in &c.switches {
            let name = sw.name();
            let m = med(&name);
            let vs_bridge = match (m.get(primary), bridge) {
                (Some(v), Some(b)) if b > 0.0 => Some(v / b),
                _ => None,
            };
            out.push(Summary { scenario: c.scenario, case: c.name.clone(), switch: name, median: m, vs_bridge });
        }
    }
    out
}

/// The order of a table's columns.
const ORDER: [&str; 11] = [
    "gbps",
    "retransmits",
    "offered_kpps",
    "forwarded_kpps",
    "replies_kpps",
    "loss_pct",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "cores_busy",
    "cpu_ns_per_frame",
];

fn unit(metric: &str) -> String {
    match metric {
        "gbps" => "Gbit/s".into(),
        "retransmits" => "retr".into(),
        "offered_kpps" => "offered kpps".into(),
        "forwarded_kpps" => "forwarded kpps".into(),
        "replies_kpps" => "replies kpps".into(),
        "loss_pct" => "loss %".into(),
        "cpu_ns_per_frame" => "CPU ns/frame".into(),
        "cores_busy" => "cores busy".into(),
        m => m.replace("_ms", " ms"),
    }
}

fn fmt(metric: &str, v: f64) -> String {
    match metric {
        "retransmits" | "offered_kpps" | "forwarded_kpps" | "replies_kpps" | "cpu_ns_per_frame" => format!("{v:.0}"),
        "loss_pct" => format!("{v:.1}"),
        m if m.ends_with("_ms") => format!("{v:.3}"),
        _ => format!("{v:.2}"),
    }
}

/// One table per scenario, as Markdown (readable in a terminal too).
pub fn tables(sums: &[Summary], samples: &[Sample]) -> String {
    let mut t = String::new();
    let mut last: Option<(Scenario, Vec<String>)> = None;
    for r in sums {
        let mut metrics: Vec<String> = r.median.keys().cloned().collect();
        if metrics.is_empty() {
            // No figures: use the case's own kind of table.
            metrics = last.as_ref().filter(|(s, _)| *s == r.scenario).map(|(_, m)| m.clone()).unwrap_or_default();
        }
        metrics.sort_by_key(|m| ORDER.iter().position(|o| o == m));
        if last.as_ref() != Some(&(r.scenario, metrics.clone())) {
            if last.as_ref().is_none_or(|(s, _)| *s != r.scenario) {
                let _ = writeln!(t, "\n### {}\n", scenario_name(r.scenario));
            } else {
                t.push('\n');
            }
            let head: Vec<String> = metrics.iter().map(|m| unit(m)).collect();
            let _ = writeln!(t, "| case | switch | {} | vs bridge |", head.join(" | "));
            let _ = writeln!(t, "|---|---|{}---|", "---|".repeat(metrics.len()));
            last = Some((r.scenario, metrics.clone()));
        }
        let cells: Vec<String> = metrics.iter().map(|m| r.median.get(m).map_or("-".into(), |v| fmt(m, *v))).collect();
        let ratio = r.vs_bridge.map_or("-".into(), |x| format!("{x:.2}x"));
        let failed = samples
            .iter()
            .filter(|s| s.scenario == r.scenario && s.case == r.case && s.switch == r.switch && s.error.is_some())
            .count();
        let note = if failed > 0 { format!(" ({failed} run(s) failed)") } else { String::new() };
        let _ = writeln!(t, "| {} | {}{note} | {} | {ratio} |", r.case, r.switch, cells.join(" | "));
    }
    t
}

pub fn scenario_name(s: Scenario) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Target {
    pub figure: String,
    pub target: String,
    pub result: Option<f64>,
    pub met: Option<bool>,
}

/// Our performance goals, checked against this run's medians where it measured them.
pub fn targets(sums: &[Summary]) -> Vec<Target> {
    let get = |scenario: Scenario, case: &str, sw: &str, metric: &str| {
        sums.iter()
            .find(|s| s.scenario == scenario && s.case == case && s.switch == sw)
            .and_then(|s| s.median.get(metric).copied())
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let tcp = |sw| get(Scenario::Tcp, "1 stream", sw, "gbps");
    let pps = |sw| get(Scenario::Pps, "64 B", sw, "forwarded_kpps");
    let rtt = |sw| get(Scenario::Latency, "ping", sw, "p50_ms");
    let t = |figure: &str, target: &str, result: Option<f64>, ok: fn(f64) -> bool| Target {
        figure: figure.into(),
        target: target.into(),
        result,
        met: result.map(ok),
    };
    vec![
        t("TCP, 1 stream, vs Linux bridge", "at least 0.8x", ratio(tcp("vswitch"), tcp("bridge")), |r| r >= 0.8),
        t("64-byte frames forwarded, vs Linux bridge", "at least 1.0x", ratio(pps("vswitch"), pps("bridge")), |r| {
            r >= 1.0
        }),
        t("64-byte frames forwarded, vs OVS userspace", "at least 5x", ratio(pps("vswitch"), pps("ovs")), |r| r >= 5.0),
        t("ping RTT p50, vs Linux bridge", "at most 2x", ratio(rtt("vswitch"), rtt("bridge")), |r| r <= 2.0),
    ]
}

pub fn targets_table(ts: &[Target]) -> String {
    let mut t = String::from("\n### targets\n\n| figure | target | this run | |\n|---|---|---|---|\n");
    for x in ts {
        let (r, m) = match (x.result, x.met) {
            (Some(r), Some(m)) => (format!("{r:.2}x"), if m { "met" } else { "MISSED" }),
            _ => ("-".into(), "not measured"),
        };
        let _ = writeln!(t, "| {} | {} | {r} | {m} |", x.figure, x.target);
    }
    t
}

/// What this machine is, for the JSON.
pub fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']));
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_gib": (mem_kb as f64 / 1048576.0 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

const COLORS: [(&str, &str); 7] = [
    ("bridge", "#8c8c8c"),
    ("vswitch", "#1f77b4"),
    ("ovs", "#d62728"),
    ("vswitch/1w", "#6baed6"),
    ("vswitch+trace", "#9467bd"),
    ("vswitch/2w", "#08519c"),
    ("baseline", "#ff7f0e"),
];

/// Grouped bars, one group per case, one bar per switch: its primary figure as a ratio to
/// the Linux bridge (1.0 = the bridge), the absolute figure written on the bar.
pub fn svg(cases: &[Case], sums: &[Summary]) -> String {
    let (bar, gap, h, top, left) = (22.0, 26.0, 260.0, 40.0, 50.0);
    let groups: Vec<(&Case, Vec<&Summary>)> = cases
        .iter()
        .map(|c| (c, sums.iter().filter(|s| s.scenario == c.scenario && s.case == c.name).collect()))
        .collect();
    // What a bar shows: the ratio, inverted where less is better, so higher is always better.
    let shown = |c: &Case, s: &Summary| {
        let r = s.vs_bridge.unwrap_or(0.0);
        if c.measure.primary().1 || r == 0.0 {
            r
        } else {
            1.0 / r
        }
    };
    let max = groups.iter().flat_map(|(c, bars)| bars.iter().map(|b| shown(c, b))).fold(1.2f64, f64::max) * 1.1;
    let width = left + groups.iter().map(|(_, s)| s.len() as f64 * bar + gap).sum::<f64>() + 120.0;
    let y = |r: f64| top + h - r / max * h;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{:.0}\" font-family=\"sans-serif\" font-size=\"10\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"20\" font-size=\"13\">vswitch bench: each switch's figure as a ratio to the Linux bridge (higher is better; RTT inverted)</text>\n",
        top + h + 110.0
    );
    for tick in [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0].into_iter().filter(|t| *t <= max) {
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{:.0}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{}\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{tick:.1}x</text>",
            width - 10.0,
            y(tick),
            y(tick),
            if tick == 1.0 { "#444" } else { "#ddd" },
            left - 4.0,
            y(tick) + 3.0
        );
    }
    let mut x = left + gap / 2.0;
    for (c, bars) in &groups {
        let (primary, _) = c.measure.primary();
        let gx = x;
        for b in bars {
            let r = shown(c, b);
            let color = COLORS.iter().find(|(n, _)| *n == b.switch).map_or("#2ca02c", |(_, c)| c);
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{} {} {}: {}</title></rect>",
                y(r),
                bar - 2.0,
                top + h - y(r),
                c.name,
                b.switch,
                unit(primary),
                b.median.get(primary).map_or("-".into(), |v| fmt(primary, *v))
            );
            let label = b.median.get(primary).map_or("-".into(), |v| fmt(primary, *v));
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"8\" text-anchor=\"middle\">{label}</text>",
                x + bar / 2.0 - 1.0,
                y(r) - 3.0
            );
            x += bar;
        }
        let scen = scenario_name(c.scenario);
        let _ = writeln!(
            s,
            "<text transform=\"translate({:.1},{:.1}) rotate(35)\">{scen}: {} ({})</text>",
            gx + 4.0,
            top + h + 12.0,
            c.name,
            unit(primary)
        );
        x += gap;
    }
    let mut lx = left;
    let mut names: Vec<&str> = sums.iter().map(|s| s.switch.as_str()).collect();
    names.dedup();
    names.sort();
    names.dedup();
    for n in names {
        let color = COLORS.iter().find(|(c, _)| *c == n).map_or("#2ca02c", |(_, c)| c);
        let _ = writeln!(
            s,
            "<rect x=\"{lx}\" y=\"{:.0}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{:.0}\">{n}</text>",
            top + h + 90.0,
            lx + 14.0,
            top + h + 99.0
        );
        lx += 110.0;
    }
    s.push_str("</svg>\n");
    s
}
