//! The soak (`vswitch bench --only soak --secs 600`): vswitch forwarding at full rate for a
//! long time while a port is connected and disconnected over and over and CLI calls run in a
//! loop, its process sampled every tenth of the run (at most every 10 s): resident memory,
//! open file descriptors, threads, frames forwarded and dropped. Flat lines are the pass: a
//! leak of memory, descriptors or threads shows as a line that climbs.

use crate::switch::{Lab, Switch};
use crate::sys::{counter, Res};
use crate::topo::Host;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Sample {
    pub at_s: f64,
    pub rss_kb: u64,
    pub fds: u64,
    pub threads: u64,
    /// Frames b received since the last sample, per second.
    pub forwarded_kpps: f64,
    /// Drops the switch counted on all ports since the start.
    pub drops: u64,
    /// Port connects and disconnects, CLI calls since the start.
    pub churn: u64,
    pub cli_calls: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Report {
    pub secs: f64,
    pub samples: Vec<Sample>,
    /// RSS at the last sample minus RSS at the first after warm-up, in kB.
    pub rss_growth_kb: i64,
    pub fds_range: u64,
    pub threads_range: u64,
    pub flat: bool,
    /// The drops at the end, by port and reason.
    #[serde(default)]
    pub drops_by_reason: std::collections::BTreeMap<String, u64>,
}

fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix(key).map(|v| v.split_whitespace().next().unwrap_or("0").to_string()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0)
}

/// Run the soak on hosts a, b (traffic a → b) and c (its port comes and goes).
pub fn run(lab: &Lab, hosts: &[Host], secs: f64) -> Res<Report> {
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    let attached = lab.attach(Switch::Vswitch { workers: 0, traced: false }, &hosts[..2], false)?;
    let pid = attached.daemon_pid().ok_or("no vswitch daemon")?;
    crate::scenario::warm_up(a, b)?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    // The generator runs for the whole soak in the background.
    let gen = std::process::Command::new("ip")
        .args(["netns", "exec", &a.ns])
        .arg(&me)
        .args(["gen", &a.iface, &b.mac, "--size", "60", "--secs", &secs.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the generator: {e}"))?;
    let _gen = crate::sys::ChildGuard(gen);
    let every = Duration::from_secs_f64((secs / 10.0).clamp(1.0, 10.0));
    let start = Instant::now();
    let mut next = start;
    let mut samples = Vec::new();
    let (mut churn, mut cli_calls) = (0u64, 0u64);
    let mut connected = false;
    let mut last_rx = counter(&b.ns, &b.iface, "rx_packets")?;
    let mut last_t = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        crate::sys::check_interrupted()?;
        // Churn: c's port in and out; and what an operator's scripts would ask all day.
        let verb = if connected { "disconnect" } else { "connect" };
        lab.vs_current(&["network", verb, "bench", &c.port])?;
        connected = !connected;
        churn += 1;
        for q in [&["network", "ls"][..], &["stats", "--json"], &["fdb", "bench"], &["network", "inspect", "bench"]] {
            lab.vs_current(q)?;
            cli_calls += 1;
        }
        if Instant::now() >= next {
            // b talks now and then, as a live host does, so its address stays learned and
            // the run measures the switch rather than the flooding of an aged-out receiver.
            let _ = crate::sys::run_in(&b.ns, &["ping", "-c1", "-W1", "-q", &a.ip]);
            let rx = counter(&b.ns, &b.iface, "rx_packets")?;
            let dt = last_t.elapsed().as_secs_f64();
            let stats: serde_json::Value =
                serde_json::from_str(&lab.vs_current(&["stats", "--json"])?).unwrap_or_default();
            let drops = stats
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|p| p["drops"].as_object().into_iter().flatten().filter_map(|(_, v)| v.as_u64()))
                .sum();
            samples.push(Sample {
                at_s: start.elapsed().as_secs_f64(),
                rss_kb: proc_status(pid, "VmRSS:"),
                fds: fds(pid),
                threads: proc_status(pid, "Threads:"),
                forwarded_kpps: (rx - last_rx) as f64 / dt / 1e3,
                drops,
                churn,
                cli_calls,
            });
            last_rx = rx;
            last_t = Instant::now();
            next += every;
        }
        crate::sys::sleep(Duration::from_millis(200))?;
    }
    if connected {
        lab.vs_current(&["network", "disconnect", "bench", &c.port])?;
    }
    let stats: serde_json::Value = serde_json::from_str(&lab.vs_current(&["stats", "--json"])?).unwrap_or_default();
    let mut by_reason = std::collections::BTreeMap::new();
    for p in stats.as_array().into_iter().flatten() {
        for (why, n) in p["drops"].as_object().into_iter().flatten() {
            let port = if p["port"] == a.port.as_str() {
                "a"
            } else if p["port"] == b.port.as_str() {
                "b"
            } else {
                "other"
            };
            *by_reason.entry(format!("{port}:{why}")).or_insert(0) += n.as_u64().unwrap_or(0);
        }
    }
    drop(attached);
    let mut r = judge(secs, samples);
    r.drops_by_reason = by_reason;
    Ok(r)
}

/// Flat or not: memory may grow while tables and caches warm up (the first fifth of the run),
/// then by at most 8 MB; descriptors and threads by at most the churning port's share.
fn judge(secs: f64, samples: Vec<Sample>) -> Report {
    let warm = samples.iter().find(|s| s.at_s >= secs / 5.0).or(samples.first());
    let (first_rss, last_rss) = (warm.map_or(0, |s| s.rss_kb), samples.last().map_or(0, |s| s.rss_kb));
    let range = |f: fn(&Sample) -> u64| {
        let v: Vec<u64> = samples.iter().map(f).collect();
        v.iter().max().unwrap_or(&0) - v.iter().min().unwrap_or(&0)
    };
    let rss_growth_kb = last_rss as i64 - first_rss as i64;
    let (fds_range, threads_range) = (range(|s| s.fds), range(|s| s.threads));
    // One port's queues: two sockets per worker; the background closer's threads come and go.
    let flat = rss_growth_kb <= 8 * 1024 && fds_range <= 16 && threads_range <= 16;
    Report { secs, samples, rss_growth_kb, fds_range, threads_range, flat, drops_by_reason: Default::default() }
}

pub fn table(r: &Report) -> String {
    let mut t = String::from("\n### soak\n\n| at s | RSS MB | fds | threads | forwarded kpps | drops | port churn | CLI calls |\n|---|---|---|---|---|---|---|---|\n");
    for s in &r.samples {
        let _ = writeln!(
            t,
            "| {:.0} | {:.1} | {} | {} | {:.0} | {} | {} | {} |",
            s.at_s,
            s.rss_kb as f64 / 1024.0,
            s.fds,
            s.threads,
            s.forwarded_kpps,
            s.drops,
            s.churn,
            s.cli_calls
        );
    }
    let drops: Vec<String> = r.drops_by_reason.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        t,
        "\ndrops at the end (port:reason): {}",
        if drops.is_empty() { "none".into() } else { drops.join(", ") }
    );
    let _ = writeln!(
        t,
        "RSS after warm-up {:+} kB, fds varied by {}, threads by {}: {}",
        r.rss_growth_kb,
        r.fds_range,
        r.threads_range,
        if r.flat { "flat (pass)" } else { "NOT FLAT (fail)" }
    );
    t
}

/// RSS, fds and threads over time, each line scaled to its own maximum.
pub fn svg(r: &Report) -> String {
    let (w, h, pad) = (720.0, 260.0, 40.0);
    let t_max = r.samples.last().map_or(1.0, |s| s.at_s.max(1.0));
    let line = |f: &dyn Fn(&Sample) -> f64, color: &str, label: &str, row: f64| {
        let max = r.samples.iter().map(f).fold(1.0f64, f64::max);
        let pts: Vec<String> = r
            .samples
            .iter()
            .map(|s| {
                format!("{:.1},{:.1}", pad + s.at_s / t_max * (w - 2.0 * pad), h - pad - f(s) / max * (h - 2.0 * pad))
            })
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{row}\" fill=\"{color}\" font-size=\"12\">{label} (max {max:.0})</text>",
            pts.join(" "),
            w - 220.0
        )
    };
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{pad}\" y=\"20\" font-size=\"14\">vswitch soak: {:.0} s at full rate with port churn (each line / its max)</text>\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/>{}{}{}</svg>\n",
        r.secs,
        h - pad,
        w - pad,
        h - pad,
        line(&|s| s.rss_kb as f64, "#1f77b4", "RSS kB", 40.0),
        line(&|s| s.fds as f64, "#d62728", "fds", 56.0),
        line(&|s| s.threads as f64, "#2ca02c", "threads", 72.0),
    )
}
