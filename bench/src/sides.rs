//! Figures measured on two sides in turn, the kernel's and vswitch's, round after round
//! (the `nat` and `macvlan` scenarios): the pairs, their medians and ratios, the cores the
//! machine was busy, the 64-byte generator, and the table.

use crate::sys::{cores_busy, counter, cpu_ticks, run, run_in, Res};
use crate::topo::Host;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// One figure measured on both sides, round after round.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Pair {
    pub name: String,
    pub unit: String,
    pub kernel: Vec<f64>,
    pub vswitch: Vec<f64>,
    pub kernel_median: f64,
    pub vswitch_median: f64,
    pub ratio: f64,
    /// Offered by the generator on each side, medians (the limit of what a side can show;
    /// the kernel's NAT runs in the sender's softirq, on the generator's core).
    #[serde(default)]
    pub kernel_offered: f64,
    #[serde(default)]
    pub vswitch_offered: f64,
    #[serde(default)]
    pub target: f64,
    /// Cores busy machine-wide during each round's measurement, and their medians.
    #[serde(default)]
    pub kernel_cpu: Vec<f64>,
    #[serde(default)]
    pub vswitch_cpu: Vec<f64>,
    #[serde(default)]
    pub kernel_cpu_median: f64,
    #[serde(default)]
    pub vswitch_cpu_median: f64,
}

pub fn push(p: &mut Pair, side: usize, v: f64, cpu: f64) {
    if side == 0 {
        p.kernel.push(v);
        p.kernel_cpu.push(cpu);
    } else {
        p.vswitch.push(v);
        p.vswitch_cpu.push(cpu);
    }
}

/// `f`'s result and the cores the machine was busy while it ran.
pub fn timed<T>(f: impl FnOnce() -> Res<T>) -> Res<(T, f64)> {
    let before = cpu_ticks()?;
    let r = f()?;
    Ok((r, cores_busy(before, cpu_ticks()?)))
}

/// Medians and ratios of every pair, once all rounds are in.
pub fn finish(pairs: &mut [Pair]) {
    for p in pairs {
        p.kernel_median = median(&p.kernel);
        p.vswitch_median = median(&p.vswitch);
        p.kernel_cpu_median = median(&p.kernel_cpu);
        p.vswitch_cpu_median = median(&p.vswitch_cpu);
        p.ratio = if p.kernel_median > 0.0 { p.vswitch_median / p.kernel_median } else { 0.0 };
    }
}

/// 64-byte UDP frames from `a` over `flows` flows to the world for `secs`: (offered,
/// arrived) in kpps.
/// With `cpu`, the generator runs on that CPU only; with `pps`, it offers at most that rate.
pub fn udp_flows(
    a: &Host,
    b: &Host,
    dst_mac: &str,
    flows: u32,
    secs: f64,
    cpu: Option<usize>,
    pps: Option<f64>,
) -> Res<(f64, f64)> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let (tx0, rx0) = (counter(&a.ns, &a.iface, "tx_packets")?, counter(&b.ns, &b.iface, "rx_packets")?);
    let t0 = std::time::Instant::now();
    let cpu = cpu.map(|c| c.to_string());
    let pin = match &cpu {
        Some(c) => vec!["taskset", "-c", c.as_str()],
        None => vec![],
    };
    let args = [me.to_str().expect("utf-8 path"), "gen", &a.iface, dst_mac, "--sources", &flows.to_string()];
    let udp = ["--size", "60", "--secs", &secs.to_string(), "--udp-from", &a.ip, "--udp-to", &b.ip];
    let rate = pps.map(|r| r.to_string());
    let paced = match &rate {
        Some(r) => vec!["--pps", r.as_str()],
        None => vec![],
    };
    run_in(&a.ns, &[&pin[..], &args[..], &udp[..], &paced[..]].concat())?;
    let elapsed = t0.elapsed().as_secs_f64();
    crate::sys::sleep(std::time::Duration::from_millis(300))?;
    let (tx1, rx1) = (counter(&a.ns, &a.iface, "tx_packets")?, counter(&b.ns, &b.iface, "rx_packets")?);
    Ok(((tx1 - tx0) as f64 / elapsed / 1e3, (rx1 - rx0) as f64 / elapsed / 1e3))
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        0.0
    } else {
        s[s.len() / 2]
    }
}

pub fn table(title: &str, pairs: &[Pair]) -> String {
    let mut out = format!("\n### {title}\n\n");
    let _ = writeln!(out, "| case | kernel (rounds) | vswitch (rounds) | kernel | vswitch | vswitch / kernel | target | offered (kernel / vswitch) | cores busy (kernel / vswitch) |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let fmt = |v: &[f64]| v.iter().map(|g| format!("{g:.1}")).collect::<Vec<_>>().join(", ");
    for p in pairs {
        let offered = if p.kernel_offered > 0.0 {
            format!("{:.0} / {:.0} kpps", p.kernel_offered, p.vswitch_offered)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "| {} ({}) | {} | {} | {:.2} | {:.2} | {:.2}x | {} | {} | {:.2} / {:.2} |",
            p.name,
            p.unit,
            fmt(&p.kernel),
            fmt(&p.vswitch),
            p.kernel_median,
            p.vswitch_median,
            p.ratio,
            if p.target > 0.0 { format!(">= {:.1}x", p.target) } else { "-".into() },
            offered,
            p.kernel_cpu_median,
            p.vswitch_cpu_median
        );
    }
    out
}

/// The namespaces and links of a scenario's sides; removed on drop, also on failure.
pub struct Topo {
    pub id: u32,
    namespaces: Vec<String>,
    pub links: Vec<String>,
}

impl Drop for Topo {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = run(&["ip", "link", "del", l]);
        }
        for n in &self.namespaces {
            let _ = run(&["ip", "netns", "del", n]);
            // The daemon wrote the endpoint's resolv.conf there (`connect --netns`).
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{n}"));
        }
    }
}

impl Topo {
    pub fn new(id: u32) -> Topo {
        Topo { id, namespaces: vec![], links: vec![] }
    }

    /// A namespace of the scenario's (loopback up, IPv6 off: only the benchmark's traffic).
    pub fn ns(&mut self, name: &str) -> Res<String> {
        let ns = format!("vsbench-{}-{name}", self.id);
        run(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        run_in(&ns, &["ip", "link", "set", "lo", "up"])?;
        run_in(&ns, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        Ok(ns)
    }

    /// A veth pair: `a` in namespace `ns_a` (or the root one), `b` in `ns_b`.
    pub fn veth(&mut self, a: &str, ns_a: Option<&str>, b: &str, ns_b: &str) -> Res<()> {
        run(&["ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b])?;
        match ns_a {
            Some(ns) => run(&["ip", "link", "set", a, "netns", ns])?,
            None => {
                self.links.push(a.to_string());
                run(&["sysctl", "-qw", &format!("net.ipv6.conf.{a}.disable_ipv6=1")])?;
                run(&["ip", "link", "set", a, "up"])?
            }
        };
        run_in(ns_b, &["ip", "link", "set", b, "up"])?;
        if let Some(ns) = ns_a {
            run_in(ns, &["ip", "link", "set", a, "up"])?;
        }
        Ok(())
    }
}

/// A host of a scenario: its namespace and address on eth0.
pub fn host(ns: &str, ip: &str) -> Host {
    Host { ns: ns.into(), port: String::new(), iface: "eth0".into(), ip: ip.into(), mac: String::new() }
}
