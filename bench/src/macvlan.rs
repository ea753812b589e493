//! The `macvlan` scenario: a LAN host to a macvlan endpoint, vswitch's macvlan network
//! beside the kernel's macvlan device on the same kind of parent (a veth whose other end is
//! the LAN host), rounds interleaved (kernel, vswitch with 4 endpoints, vswitch with 256).
//!
//! ```text
//!  kernel:  [lan-k: eth0 10.207.0.10] --veth-- [khost: kpar + 4 macvlans] ... [ek: macvlan eth0 .20]
//!  vswitch: [lan-4: eth0 10.208.0.10] --veth-- parent | vswitch | veth -- [e4: eth0 .20]   + 3 TAP endpoints
//!           [lan-256: eth0 10.209.0.10] --veth-- parent | vswitch | veth -- [e256: eth0 .20] + 255 TAP endpoints
//! ```
//!
//! Measured: TCP, one stream, LAN host to endpoint (default offloads; unpinned); 64-byte
//! UDP frames LAN host to endpoint over 64 flows (dropped on arrival by the endpoint's raw
//! table, so no receiver pays an ICMP error per frame), the generator pinned to CPU 1 and
//! vswitch's one worker to CPU 0 (the kernel's macvlan runs in the generator's softirq, on
//! CPU 1): offered and delivered frames per second and the cores busy. The 256-endpoint
//! parent shows what dispatching among many endpoints costs (one hash probe either way).

use crate::scenario::{self, Measure};
use crate::sides::{self, host, median, push, timed, udp_flows, Pair, Topo};
use crate::switch::Lab;
use crate::sys::{run, run_in, Res};
use crate::topo::Host;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Report {
    pub pairs: Vec<Pair>,
    /// vswitch's 64-byte delivered kpps with 4 and with 256 endpoints on the parent, each round.
    pub dispatch4: Vec<f64>,
    pub dispatch256: Vec<f64>,
    pub dispatch_ratio: f64,
}

/// A LAN host `ns` with `ip`/`prefix` on eth0, its veth's other end `parent` here.
fn lan(t: &mut Topo, name: &str, parent: &str, ip: &str, prefix: u8) -> Res<Host> {
    let ns = t.ns(name)?;
    run(&["ip", "link", "add", parent, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
    t.links.push(parent.to_string());
    run(&["sysctl", "-qw", &format!("net.ipv6.conf.{parent}.disable_ipv6=1")])?;
    run(&["ip", "link", "set", parent, "up"])?;
    run_in(&ns, &["ip", "addr", "add", &format!("{ip}/{prefix}"), "dev", "eth0"])?;
    run_in(&ns, &["ip", "link", "set", "eth0", "up"])?;
    Ok(host(&ns, ip))
}

fn mac_of(h: &Host) -> Res<String> {
    Ok(run_in(&h.ns, &["cat", "/sys/class/net/eth0/address"])?.trim().to_string())
}

/// A vswitch macvlan network on `parent` with the endpoint namespace `ep` at `.20` and
/// `extra` TAP endpoints (the dispatch table's other entries).
fn vswitch_side(
    lab: &Lab,
    t: &mut Topo,
    name: &str,
    parent: &str,
    subnet: &str,
    ep_ip: &str,
    extra: usize,
) -> Res<Host> {
    let ep = t.ns(&format!("{name}-ep"))?;
    lab.vs_current(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        subnet,
        "-o",
        &format!("parent={parent}"),
        name,
    ])?;
    lab.vs_current(&["network", "connect", name, "--netns", &ep, "--ip", ep_ip])?;
    for i in 0..extra {
        let tap = format!("vbm{}{}{i}", t.id, &name[name.len() - 1..]);
        lab.vs_current(&["network", "connect", name, "--tap", &tap])?;
    }
    Ok(host(&ep, ep_ip))
}

/// Until `a` reaches `b`.
fn reach(a: &Host, b: &Host) -> Res<()> {
    for _ in 0..20 {
        if run_in(&a.ns, &["ping", "-c1", "-W1", "-q", &b.ip]).is_ok() {
            return Ok(());
        }
    }
    Err(format!("{} cannot reach {}", a.ns, b.ip))
}

pub fn run_scenario(lab: &Lab, secs: f64, rounds: usize) -> Res<Report> {
    crate::sys::require_tools(&[("iperf3", "iperf3"), ("taskset", "util-linux"), ("iptables", "iptables")])?;
    let id = std::process::id() % 100_000;
    let mut t = Topo::new(id);
    // The kernel: a host namespace holding the parent and its macvlans, one moved to `ek`.
    let khost = t.ns("mv-khost")?;
    let lan_k = t.ns("mv-lank")?;
    run(&["ip", "-n", &khost, "link", "add", "kpar", "type", "veth", "peer", "name", "eth0", "netns", &lan_k])?;
    run_in(&khost, &["ip", "link", "set", "kpar", "up"])?;
    run_in(&lan_k, &["ip", "addr", "add", "10.207.0.10/24", "dev", "eth0"])?;
    run_in(&lan_k, &["ip", "link", "set", "eth0", "up"])?;
    let ek = t.ns("mv-ek")?;
    for i in 0..4 {
        let mv = format!("mv{i}");
        run_in(&khost, &["ip", "link", "add", &mv, "link", "kpar", "type", "macvlan", "mode", "bridge"])?;
        if i == 0 {
            run_in(&khost, &["ip", "link", "set", &mv, "netns", &ek, "name", "eth0"])?;
        } else {
            run_in(&khost, &["ip", "link", "set", &mv, "up"])?;
        }
    }
    run_in(&ek, &["ip", "addr", "add", "10.207.0.20/24", "dev", "eth0"])?;
    run_in(&ek, &["ip", "link", "set", "eth0", "up"])?;
    let kernel = (host(&lan_k, "10.207.0.10"), host(&ek, "10.207.0.20"));

    // vswitch: one worker on CPU 0, two parents.
    let lan4 = lan(&mut t, "mv-lan4", &format!("vbm{id}p"), "10.208.0.10", 24)?;
    let lan256 = lan(&mut t, "mv-lan256", &format!("vbm{id}q"), "10.209.0.10", 16)?;
    let _daemon = lab.start_daemon_with(1, &["--cpus", "0"])?;
    let e4 = vswitch_side(lab, &mut t, "mvb4", &format!("vbm{id}p"), "10.208.0.0/24", "10.208.0.20", 3)?;
    let e256 = vswitch_side(lab, &mut t, "mvb256", &format!("vbm{id}q"), "10.209.0.0/16", "10.209.0.20", 255)?;
    let sides = [kernel, (lan4, e4), (lan256, e256)];
    let mut macs = Vec::new();
    for (lan, ep) in &sides {
        reach(lan, ep)?;
        macs.push(mac_of(ep)?);
        // The endpoint drops the generator's UDP at once (its own namespace's raw table):
        // to a closed port each frame would cost the receiver an ICMP route lookup, on the
        // core of whichever switch delivers it (scripts/perf-pps: 42% of vswitch's core).
        run_in(&ep.ns, &["iptables", "-t", "raw", "-A", "PREROUTING", "-p", "udp", "-j", "DROP"])?;
    }

    let mut tcp = Pair {
        name: "TCP, 1 stream, LAN host to endpoint".into(),
        unit: "Gbit/s".into(),
        target: 0.8,
        ..Pair::default()
    };
    // The kernel forwards in the generator's own softirq, so what it is offered is what it
    // can take; vswitch is offered that same rate (paced), and then all the generator has.
    let mut same = Pair {
        name: "UDP 64 B, LAN host to endpoint, 64 flows, at the kernel's rate".into(),
        unit: "kpps".into(),
        target: 1.0,
        ..Pair::default()
    };
    let mut full = Pair {
        name: "UDP 64 B, LAN host to endpoint, 64 flows, as fast as the generator goes".into(),
        unit: "kpps".into(),
        ..Pair::default()
    };
    let (mut offered_k, mut offered_same, mut offered_full) = (vec![], vec![], vec![]);
    let (mut d4, mut d256) = (vec![], vec![]);
    for round in 1..=rounds {
        let mut kernel_rate = None;
        for (i, (lan, ep)) in sides.iter().enumerate() {
            crate::sys::check_interrupted()?;
            let side = ["kernel", "vswitch, 4 endpoints", "vswitch, 256 endpoints"][i];
            eprintln!("macvlan round {round}/{rounds}: {side}");
            let ((off, got), cpu) = timed(|| udp_flows(lan, ep, &macs[i], 64, secs, Some(1), None))?;
            match i {
                0 => {
                    push(&mut same, 0, got, cpu);
                    push(&mut full, 0, got, cpu);
                    offered_k.push(off);
                    kernel_rate = Some(off * 1e3);
                }
                1 => {
                    push(&mut full, 1, got, cpu);
                    offered_full.push(off);
                    d4.push(got);
                    let ((off, got), cpu) = timed(|| udp_flows(lan, ep, &macs[i], 64, secs, Some(1), kernel_rate))?;
                    push(&mut same, 1, got, cpu);
                    offered_same.push(off);
                }
                _ => d256.push(got),
            }
            if i < 2 {
                let (m, cpu) = timed(|| scenario::measure(Measure::Tcp { streams: 1 }, lan, ep, secs, false))?;
                push(&mut tcp, i, m.get("gbps").copied().unwrap_or(0.0), cpu);
            }
        }
    }
    for p in [&mut same, &mut full] {
        p.kernel_offered = median(&offered_k);
    }
    same.vswitch_offered = median(&offered_same);
    full.vswitch_offered = median(&offered_full);
    let mut pairs = vec![tcp, same, full];
    sides::finish(&mut pairs);
    let ratio = if median(&d4) > 0.0 { median(&d256) / median(&d4) } else { 0.0 };
    Ok(Report { pairs, dispatch4: d4, dispatch256: d256, dispatch_ratio: ratio })
}

pub fn table(r: &Report) -> String {
    let mut out = sides::table(
        "macvlan: LAN host to endpoint, vswitch beside the kernel's macvlan (64 B: generator on CPU 1, \
         vswitch's one worker on CPU 0)",
        &r.pairs,
    );
    let fmt = |v: &[f64]| v.iter().map(|g| format!("{g:.0}")).collect::<Vec<_>>().join(", ");
    let _ =
        writeln!(out, "\n| vswitch dispatch, 64 B delivered (kpps) | 4 endpoints | 256 endpoints | 256 / 4 | target |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| rounds: {} / {} | {:.0} | {:.0} | {:.2}x | >= 0.90x |",
        fmt(&r.dispatch4),
        fmt(&r.dispatch256),
        median(&r.dispatch4),
        median(&r.dispatch256),
        r.dispatch_ratio
    );
    out
}
