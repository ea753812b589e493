//! What is measured: each scenario is a list of cases (a measurement, how many hosts it
//! needs, which switches run it), and each case is measured on every switch in turn, round
//! after round (A, B, A, B...), so drift of the machine cancels out.

use crate::switch::Switch;
use crate::sys::{counter, run_in, spawn_in, Res};
use crate::topo::Host;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// iperf3 TCP, 1 and 4 streams, default offloads: Gbit/s and retransmits
    Tcp,
    /// iperf3 TCP between namespaces whose interfaces are TAP devices of the switch
    TcpTap,
    /// 64- and 1518-byte frames at full rate: offered and forwarded frames per second
    Pps,
    /// ping round trips under light load: p50, p99, max
    Latency,
    /// 64-byte forwarding with 1k..1M source MACs, and with 2..32 ports
    Scale,
    /// vswitch with 1 and 2 worker threads
    Workers,
    /// vswitch with and without `vswitch trace` of every frame running
    Trace,
    /// the switch's own gateway: ping round trips to it, and ARP requests answered per second
    /// (the Linux bridge holding the same address, as docker0 does)
    Gateway,
    /// vswitch alone for --secs at full rate, a port connected and disconnected and CLI calls
    /// in a loop: RSS, fds, threads and drops sampled over time (flat lines pass)
    Soak,
    /// the embedded DNS answering the network's names (dnsperf): answers per second and p99,
    /// against dnsmasq serving the same names on the Linux bridge's gateway address
    Dns,
    /// TCP from an endpoint to a world namespace through SNAT: vswitch's uplink against a
    /// Linux bridge with iptables MASQUERADE in a router namespace (Docker's datapath)
    Nat,
    /// A LAN host to a macvlan endpoint (TCP, 64-byte frames) against the kernel's macvlan,
    /// and vswitch's dispatch with 4 and 256 endpoints on the parent
    Macvlan,
}

/// The gateway address of the benchmark's network (the hosts are 10.203.0.0/16).
pub const GATEWAY_IP: &str = "10.203.255.254";

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Measure {
    Tcp {
        streams: usize,
    },
    /// `size` bytes on the wire (FCS included), from `sources` rotating source MACs.
    Pps {
        size: usize,
        sources: u32,
    },
    Latency,
    /// Pings `hz` times a second (0: flood, `ping -f`), with the cores busy meanwhile.
    LatencyAt {
        hz: u32,
    },
    /// Pings to the gateway.
    GatewayPing,
    /// ARP requests for the gateway at full rate: answered per second.
    GatewayArp,
    /// DNS queries for the network's names, 100 outstanding: answered per second.
    DnsQps,
    /// DNS queries at 500 a second: p50 and p99 of the answers.
    DnsLatency,
}

impl Measure {
    /// The switch must hold the gateway address for this.
    pub fn needs_gateway(&self) -> bool {
        matches!(self, Measure::GatewayPing | Measure::GatewayArp | Measure::DnsQps | Measure::DnsLatency)
    }

    /// The server answers DNS: dnsmasq beside the Linux bridge.
    pub fn is_dns(&self) -> bool {
        matches!(self, Measure::DnsQps | Measure::DnsLatency)
    }

    /// The figure the chart and the ratios use, and whether more is better.
    pub fn primary(&self) -> (&'static str, bool) {
        match self {
            Measure::Tcp { .. } => ("gbps", true),
            Measure::Pps { .. } => ("forwarded_kpps", true),
            Measure::Latency | Measure::GatewayPing | Measure::LatencyAt { .. } => ("p50_ms", false),
            Measure::GatewayArp => ("replies_kpps", true),
            Measure::DnsQps => ("answered_kqps", true),
            Measure::DnsLatency => ("p99_ms", false),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Case {
    pub scenario: Scenario,
    pub name: String,
    pub measure: Measure,
    pub hosts: usize,
    /// The hosts' interfaces are TAP devices (else veth pairs).
    #[serde(default)]
    pub tap: bool,
    pub switches: Vec<Switch>,
}

pub fn plan(scenarios: &[Scenario], quick: bool, ovs: bool, baseline: bool) -> Vec<Case> {
    let vswitch = Switch::Vswitch { workers: 0, traced: false };
    let mut standard = vec![Switch::Bridge, vswitch];
    if baseline {
        standard.push(Switch::Baseline);
    }
    if ovs {
        standard.push(Switch::Ovs);
    }
    let case = |scenario, name: &str, measure, hosts, switches: &[Switch]| Case {
        scenario,
        name: name.into(),
        measure,
        hosts,
        tap: false,
        switches: switches.to_vec(),
    };
    let mut cases = Vec::new();
    for &s in scenarios {
        match s {
            Scenario::Tcp => {
                for streams in if quick { &[1][..] } else { &[1, 4] } {
                    let streams = *streams;
                    let name = if streams == 1 { "1 stream".to_string() } else { format!("{streams} streams") };
                    cases.push(case(s, &name, Measure::Tcp { streams }, 2, &standard));
                }
            }
            Scenario::TcpTap => {
                let mut c = case(s, "1 stream", Measure::Tcp { streams: 1 }, 2, &[Switch::Bridge, vswitch]);
                c.tap = true;
                cases.push(c);
            }
            Scenario::Pps => {
                for size in if quick { &[64][..] } else { &[64, 1518] } {
                    let size = *size;
                    cases.push(case(s, &format!("{size} B"), Measure::Pps { size, sources: 1 }, 2, &standard));
                }
            }
            Scenario::Latency => {
                cases.push(case(s, "ping", Measure::Latency, 2, &standard));
                // Request rates of real services: a sleeping worker pays a wake-up per request.
                let rates: &[(u32, &str)] = if quick {
                    &[(1000, "1 kHz")]
                } else {
                    &[(5, "5 Hz"), (200, "200 Hz"), (1000, "1 kHz"), (0, "flood")]
                };
                for &(hz, label) in rates {
                    cases.push(case(s, &format!("ping {label}"), Measure::LatencyAt { hz }, 2, &standard));
                }
            }
            Scenario::Scale => {
                let macs: &[(u32, &str)] = if quick {
                    &[(1_000, "1k"), (100_000, "100k")]
                } else {
                    &[(1_000, "1k"), (100_000, "100k"), (1_000_000, "1M")]
                };
                for &(n, label) in macs {
                    let m = Measure::Pps { size: 64, sources: n };
                    cases.push(case(s, &format!("{label} MACs"), m, 2, &standard));
                }
                let ports: &[usize] = if quick { &[8] } else { &[2, 8, 32] };
                for &n in ports {
                    cases.push(case(s, &format!("{n} ports"), Measure::Pps { size: 64, sources: 1 }, n, &standard));
                }
            }
            Scenario::Workers => {
                for w in [1, 2] {
                    let sw = [Switch::Bridge, Switch::Vswitch { workers: w, traced: false }];
                    let label = if w == 1 { "1 worker".to_string() } else { format!("{w} workers") };
                    cases.push(case(s, &format!("tcp, {label}"), Measure::Tcp { streams: 1 }, 2, &sw));
                    if !quick {
                        cases.push(case(s, &format!("64 B, {label}"), Measure::Pps { size: 64, sources: 1 }, 2, &sw));
                    }
                }
            }
            Scenario::Gateway => {
                let sw = [Switch::Bridge, vswitch];
                cases.push(case(s, "ping gateway", Measure::GatewayPing, 2, &sw));
                cases.push(case(s, "ARP for gateway", Measure::GatewayArp, 2, &sw));
            }
            Scenario::Dns => {
                let sw = [Switch::Bridge, vswitch];
                cases.push(case(s, "answers/s, local names", Measure::DnsQps, 4, &sw));
                cases.push(case(s, "latency at 500 q/s", Measure::DnsLatency, 4, &sw));
            }
            Scenario::Soak | Scenario::Nat | Scenario::Macvlan => {} // not lists of cases: soak.rs, nat.rs, macvlan.rs
            Scenario::Trace => {
                let sw = [Switch::Bridge, vswitch, Switch::Vswitch { workers: 0, traced: true }];
                cases.push(case(s, "tcp", Measure::Tcp { streams: 1 }, 2, &sw));
                cases.push(case(s, "64 B", Measure::Pps { size: 64, sources: 1 }, 2, &sw));
            }
        }
    }
    cases
}

pub type Metrics = BTreeMap<String, f64>;

/// Ping until the path answers both ways, so both MACs are learned before measuring. The
/// hosts forget their neighbours first: what the last switch taught them (the gateway's MAC,
/// say) must not decide how this one does.
pub fn warm_up(a: &Host, b: &Host) -> Res<()> {
    for h in [a, b] {
        run_in(&h.ns, &["ip", "neigh", "flush", "all"])?;
    }
    for _ in 0..20 {
        crate::sys::check_interrupted()?;
        if run_in(&a.ns, &["ping", "-c1", "-W1", "-q", &b.ip]).is_ok()
            && run_in(&b.ns, &["ping", "-c1", "-W1", "-q", &a.ip]).is_ok()
        {
            return Ok(());
        }
    }
    Err(format!("no ping between {} and {} through the switch", a.ip, b.ip))
}

pub fn measure(m: Measure, a: &Host, b: &Host, secs: f64, quick: bool) -> Res<Metrics> {
    match m {
        Measure::DnsQps | Measure::DnsLatency => Err("the dns cases are measured by dns::measure".into()),
        Measure::Tcp { streams } => tcp(a, b, streams, secs),
        Measure::Pps { size, sources } => pps(a, b, size, sources, secs),
        Measure::Latency => latency(a, &b.ip, if quick { 100 } else { 200 }),
        Measure::LatencyAt { hz } => latency_at(a, &b.ip, hz, secs),
        Measure::GatewayPing => latency(a, GATEWAY_IP, if quick { 100 } else { 200 }),
        Measure::GatewayArp => arp_flood(a, secs),
    }
}

fn metrics(pairs: &[(&str, f64)]) -> Metrics {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn tcp(a: &Host, b: &Host, streams: usize, secs: f64) -> Res<Metrics> {
    let _server = spawn_in(&b.ns, &["iperf3", "-s", "-1"])?;
    let t = format!("{}", secs.ceil() as u64);
    let limit = format!("{}", secs.ceil() as u64 + 4);
    let p = streams.to_string();
    let args = ["ip", "netns", "exec", &a.ns, "timeout", &limit, "iperf3", "-c", &b.ip, "-t", &t, "-P", &p, "-J"];
    // The server may still be starting: a refused connection is tried again, for 3 s.
    let mut tries = 0;
    let out = loop {
        crate::sys::sleep(Duration::from_millis(200))?;
        let out = std::process::Command::new(args[0]).args(&args[1..]).output().map_err(|e| e.to_string())?;
        let refused = String::from_utf8_lossy(&out.stdout).contains("Connection refused");
        tries += 1;
        if !(refused && tries < 15) {
            break out;
        }
    };
    // timeout's 124: the transfer stalled (OVS userspace with offloads on does this), a
    // figure of 0; any other failure is a failed run, not a zero.
    match out.status.code() {
        Some(0) => {}
        Some(124) => return Ok(metrics(&[("gbps", 0.0), ("retransmits", 0.0)])),
        _ => {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let why =
                v["error"].as_str().map(str::to_string).unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into());
            return Err(format!("iperf3 failed: {why}"));
        }
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("iperf3 printed no JSON: {e}"))?;
    let gbps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9;
    let retr = v["end"]["sum_sent"]["retransmits"].as_f64().unwrap_or(0.0);
    Ok(metrics(&[("gbps", gbps), ("retransmits", retr)]))
}

/// ARP requests for the gateway from `a` at full rate: requests offered, replies back.
fn arp_flood(a: &Host, secs: f64) -> Res<Metrics> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let (tx0, rx0) = (counter(&a.ns, &a.iface, "tx_packets")?, counter(&a.ns, &a.iface, "rx_packets")?);
    let t0 = std::time::Instant::now();
    let args = [me.to_str().expect("utf-8 path"), "gen", &a.iface, "ff:ff:ff:ff:ff:ff", "--secs", &secs.to_string()];
    let arp = ["--arp-for", GATEWAY_IP, "--arp-from", &a.ip];
    run_in(&a.ns, &[&args[..], &arp[..]].concat())?;
    let elapsed = t0.elapsed().as_secs_f64();
    crate::sys::sleep(Duration::from_millis(300))?; // replies still on their way
    let (tx1, rx1) = (counter(&a.ns, &a.iface, "tx_packets")?, counter(&a.ns, &a.iface, "rx_packets")?);
    let offered = (tx1 - tx0) as f64 / elapsed / 1e3;
    let replies = (rx1 - rx0) as f64 / elapsed / 1e3;
    Ok(metrics(&[("offered_kpps", offered), ("replies_kpps", replies)]))
}

fn pps(a: &Host, b: &Host, size: usize, sources: u32, secs: f64) -> Res<Metrics> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dst = &b.mac;
    let (tx0, rx0) = (counter(&a.ns, &a.iface, "tx_packets")?, counter(&b.ns, &b.iface, "rx_packets")?);
    let cpu0 = crate::sys::cpu_ticks()?;
    let t0 = std::time::Instant::now();
    run_in(
        &a.ns,
        &[
            me.to_str().expect("utf-8 path"),
            "gen",
            &a.iface,
            dst,
            "--sources",
            &sources.to_string(),
            "--size",
            &(size - 4).to_string(), // the FCS is the NIC's
            "--secs",
            &secs.to_string(),
        ],
    )?;
    let elapsed = t0.elapsed().as_secs_f64();
    let busy = crate::sys::cores_busy(cpu0, crate::sys::cpu_ticks()?);
    crate::sys::sleep(Duration::from_millis(300))?; // let the switch drain
    let (tx1, rx1) = (counter(&a.ns, &a.iface, "tx_packets")?, counter(&b.ns, &b.iface, "rx_packets")?);
    let offered = (tx1 - tx0) as f64 / elapsed / 1e3;
    let forwarded = (rx1 - rx0) as f64 / elapsed / 1e3;
    let loss = if tx1 > tx0 { 100.0 * (1.0 - (rx1 - rx0) as f64 / (tx1 - tx0) as f64).max(0.0) } else { 0.0 };
    // The whole machine's CPU (generator, switch, receiver) per frame delivered.
    let ns_per_frame = if forwarded > 0.0 { busy * 1e9 / (forwarded * 1e3) } else { 0.0 };
    Ok(metrics(&[
        ("offered_kpps", offered),
        ("forwarded_kpps", forwarded),
        ("loss_pct", loss),
        ("cores_busy", busy),
        ("cpu_ns_per_frame", ns_per_frame),
    ]))
}

/// Pings at `hz` (0: flood) for about `secs` (at least 5 pings): p50/p99 (flood: ping's
/// average, it prints no single times), and the cores the machine was busy meanwhile.
fn latency_at(a: &Host, to: &str, hz: u32, secs: f64) -> Res<Metrics> {
    let before = crate::sys::cpu_ticks()?;
    let mut m = if hz == 0 {
        let count = ((secs * 20_000.0) as usize).max(1000).to_string();
        let out = run_in(&a.ns, &["ping", "-f", "-q", "-c", &count, "-W", "1", to])?;
        // rtt min/avg/max/mdev = 0.010/0.012/0.100/0.003 ms
        let line = out.lines().find(|l| l.contains("min/avg/max")).ok_or("ping -f printed no summary")?;
        let avg = line.split('=').nth(1).and_then(|v| v.trim().split('/').nth(1)).and_then(|v| v.parse().ok());
        metrics(&[("p50_ms", avg.ok_or("ping -f: no average")?)])
    } else {
        let count = ((secs * hz as f64) as usize).max(5);
        let interval = format!("{:.4}", 1.0 / hz as f64);
        let out = run_in(&a.ns, &["ping", "-c", &count.to_string(), "-i", &interval, "-W", "1", to])?;
        percentiles(&out)?
    };
    m.insert("cores_busy".into(), crate::sys::cores_busy(before, crate::sys::cpu_ticks()?));
    Ok(m)
}

/// p50, p99 and max of the `time=` of each reply ping printed.
fn percentiles(out: &str) -> Res<Metrics> {
    let mut rtts: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.trim_end_matches(" ms").trim().parse().ok())
        .collect();
    if rtts.is_empty() {
        return Err("no ping replies".into());
    }
    rtts.sort_by(f64::total_cmp);
    let pct = |p: f64| rtts[((rtts.len() as f64 * p).ceil() as usize).clamp(1, rtts.len()) - 1];
    Ok(metrics(&[("p50_ms", pct(0.50)), ("p99_ms", pct(0.99)), ("max_ms", *rtts.last().expect("not empty"))]))
}

fn latency(a: &Host, to: &str, count: usize) -> Res<Metrics> {
    // Pings 10 ms apart: light load; 200 of them give a p99.
    let out = run_in(&a.ns, &["ping", "-c", &count.to_string(), "-i", "0.01", "-W", "1", to])?;
    percentiles(&out)
}
