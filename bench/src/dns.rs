//! The `dns` scenario: the embedded DNS answering the network's own names, against dnsmasq
//! serving the same names on the Linux bridge's gateway address (what a user of the kernel's
//! bridge would run). dnsperf in host A's namespace asks for the other hosts' names.
//!
//! Placement on 2 cores: dnsperf on CPU 1; the server on CPU 0 (dnsmasq, or the whole vswitch
//! daemon: its worker and its services thread). Next to each rate, the cores the machine was
//! busy. Throughput is dnsperf with 100 queries outstanding; latency is 500 queries a
//! second (a light load), every answer's time, p50 and p99.

use crate::scenario::{Metrics, GATEWAY_IP};
use crate::sys::{cores_busy, cpu_ticks, run, ChildGuard, Res};
use crate::topo::Host;
use std::process::{Command, Stdio};

/// The names asked for: each host's port, as vswitch names an endpoint without a sandbox.
fn names(hosts: &[Host]) -> Vec<(String, String)> {
    hosts.iter().skip(1).map(|h| (h.port.clone(), h.ip.clone())).collect()
}

fn query_file(hosts: &[Host], dir: &std::path::Path) -> Res<std::path::PathBuf> {
    let path = dir.join("dns-queries.txt");
    let text: String = names(hosts).iter().map(|(n, _)| format!("{n} A\n")).collect();
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

/// dnsmasq on the bridge's gateway address with the same names, pinned to CPU 0.
pub fn dnsmasq(hosts: &[Host]) -> Res<ChildGuard> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0", "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces"])
        .arg(format!("--listen-address={GATEWAY_IP}"))
        .args(["--pid-file=", "--user=root", "--cache-size=1000"]);
    for (n, ip) in names(hosts) {
        cmd.arg(format!("--host-record={n},{ip}"));
    }
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    let g = ChildGuard(child.map_err(|e| format!("cannot start dnsmasq: {e}"))?);
    crate::sys::sleep(std::time::Duration::from_millis(300))?;
    Ok(g)
}

/// Every thread of process `pid` on CPU `cpu`.
pub fn pin(pid: u32, cpu: usize) -> Res<()> {
    run(&["taskset", "-a", "-p", "-c", &cpu.to_string(), &pid.to_string()]).map(drop)
}

fn dnsperf(a: &Host, file: &std::path::Path, args: &[&str]) -> Res<String> {
    let f = file.to_str().expect("utf-8 path");
    let base = ["ip", "netns", "exec", &a.ns, "taskset", "-c", "1", "dnsperf", "-s", GATEWAY_IP, "-d", f];
    let out = Command::new(base[0]).args(&base[1..]).args(args).output().map_err(|e| format!("dnsperf: {e}"))?;
    if !out.status.success() {
        return Err(format!("dnsperf failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn field(out: &str, key: &str) -> Option<f64> {
    out.lines().find_map(|l| l.trim().strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

pub fn measure(m: crate::scenario::Measure, hosts: &[Host], dir: &std::path::Path, secs: f64) -> Res<Metrics> {
    match m {
        crate::scenario::Measure::DnsQps => throughput(&hosts[0], hosts, dir, secs),
        _ => latency(&hosts[0], hosts, dir, secs),
    }
}

/// Answers per second with 100 queries outstanding, and the share that got NOERROR.
pub fn throughput(a: &Host, hosts: &[Host], dir: &std::path::Path, secs: f64) -> Res<Metrics> {
    let file = query_file(hosts, dir)?;
    let before = cpu_ticks()?;
    let out = dnsperf(a, &file, &["-l", &secs.to_string(), "-q", "100", "-t", "1"])?;
    let busy = cores_busy(before, cpu_ticks()?);
    let qps = field(&out, "Queries per second:").ok_or_else(|| format!("dnsperf printed no rate:\n{out}"))?;
    let sent = field(&out, "Queries sent:").unwrap_or(0.0);
    let ok = out.lines().find(|l| l.contains("Response codes:")).and_then(|l| l.split("NOERROR ").nth(1));
    let ok = ok.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()).unwrap_or(0.0);
    if sent > 0.0 && ok / sent < 0.99 {
        return Err(format!("only {ok} of {sent} queries got NOERROR:\n{out}"));
    }
    Ok([("answered_kqps".to_string(), qps / 1e3), ("cores_busy".to_string(), busy)].into_iter().collect())
}

/// Latency of every answer at 500 queries a second: p50 and p99 in ms.
pub fn latency(a: &Host, hosts: &[Host], dir: &std::path::Path, secs: f64) -> Res<Metrics> {
    let file = query_file(hosts, dir)?;
    let out = dnsperf(a, &file, &["-l", &secs.max(2.0).to_string(), "-Q", "500", "-v", "-t", "1"])?;
    let mut ms: Vec<f64> = out
        .lines()
        .filter(|l| l.starts_with("> NOERROR"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| s * 1e3)
        .collect();
    if ms.is_empty() {
        return Err(format!("no answers:\n{out}"));
    }
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    Ok([("p50_ms".to_string(), pct(0.5)), ("p99_ms".to_string(), pct(0.99))].into_iter().collect())
}
