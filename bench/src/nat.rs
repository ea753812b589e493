//! The `nat` scenario: TCP from an endpoint to `world` through SNAT, side by side with the
//! kernel doing what Docker's bridge driver has it do: a Linux bridge holding the gateway
//! address plus iptables MASQUERADE, in a router namespace of its own (the machine's own
//! namespace, forwarding sysctl and iptables are never touched). Rounds are interleaved
//! (kernel, vswitch, kernel, vswitch...) and medians compared.
//!
//! ```text
//!  kernel:  [endpoint ns] --veth-- [router ns: br0 10.205.0.1, MASQUERADE] --veth-- [world ns]
//!  vswitch: [endpoint ns] --veth-- vswitch (network natbench, uplink 192.0.2.10) --veth-- [world ns]
//! ```
//!
//! Measured: TCP endpoint → world (SNAT); TCP world → 192.0.2.10:5201, published to the
//! endpoint (DNAT: iptables DNAT on the kernel side, `-p 5201:5201` on vswitch's); new TCP
//! connections per second from world to a published port (5202); 64-byte UDP over 1k and
//! 100k flows, endpoint → world. Next to each figure, the cores the whole machine was busy
//! (/proc/stat) while it was measured: both ends, and the kernel's or vswitch's NAT.

use crate::scenario::{self, Measure};
use crate::sides::{self, host, median, push, timed, udp_flows, Pair, Topo};
use crate::switch::Lab;
use crate::sys::{run, run_in, spawn_in, Res};
use crate::topo::Host;
use serde::{Deserialize, Serialize};

const WORLD: &str = "192.0.2.1";
const UPLINK: &str = "192.0.2.10";

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Report {
    pub pairs: Vec<Pair>,
}

/// UDP flows the 64-byte cases run over.
const FLOWS: [u32; 2] = [1_000, 100_000];

/// Build both sides, then measure one TCP stream through each, `rounds` times in turn.
pub fn run_scenario(lab: &Lab, secs: f64, rounds: usize) -> Res<Report> {
    crate::sys::require_tools(&[("iptables", "iptables"), ("iperf3", "iperf3")])?;
    let id = std::process::id() % 100_000;
    let mut t = Topo::new(id);
    // The kernel: a router namespace with a bridge and MASQUERADE, as Docker sets it up.
    let (ek, router, wk) = (t.ns("nat-ek")?, t.ns("nat-router")?, t.ns("nat-wk")?);
    run_in(&router, &["ip", "link", "add", "br0", "type", "bridge"])?;
    run_in(&router, &["ip", "addr", "add", "10.205.0.1/24", "dev", "br0"])?;
    run_in(&router, &["ip", "link", "set", "br0", "up"])?;
    run(&["ip", "-n", &router, "link", "add", "ek", "type", "veth", "peer", "name", "eth0", "netns", &ek])?;
    run_in(&router, &["ip", "link", "set", "ek", "master", "br0", "up"])?;
    run_in(&ek, &["ip", "link", "set", "eth0", "up"])?;
    run_in(&ek, &["ip", "addr", "add", "10.205.0.2/24", "dev", "eth0"])?;
    run_in(&ek, &["ip", "route", "add", "default", "via", "10.205.0.1"])?;
    run(&["ip", "-n", &router, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", &wk])?;
    run_in(&router, &["ip", "addr", "add", &format!("{UPLINK}/24"), "dev", "up0"])?;
    run_in(&router, &["ip", "link", "set", "up0", "up"])?;
    run_in(&wk, &["ip", "link", "set", "eth0", "up"])?;
    run_in(&wk, &["ip", "addr", "add", &format!("{WORLD}/24"), "dev", "eth0"])?;
    run_in(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    run_in(
        &router,
        &["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.205.0.0/24", "-o", "up0", "-j", "MASQUERADE"],
    )?;
    // Publishing, as `docker run -p 5201:5201` does it.
    for port in ["5201", "5202"] {
        let to = format!("10.205.0.2:{port}");
        let dnat = ["-p", "tcp", "--dport", port, "-j", "DNAT", "--to-destination", &to];
        run_in(&router, &[&["iptables", "-t", "nat", "-A", "PREROUTING", "-i", "up0"][..], &dnat[..]].concat())?;
    }

    // vswitch: the same, with the switch as bridge, gateway and NAT.
    let (ev, wv) = (t.ns("nat-ev")?, t.ns("nat-wv")?);
    let up = format!("vbn{id}up");
    t.veth(&up, None, "eth0", &wv)?;
    run_in(&wv, &["ip", "addr", "add", &format!("{WORLD}/24"), "dev", "eth0"])?;
    let _daemon = lab.start_daemon()?;
    lab.vs_current(&["uplink", "set", &up, "--address", &format!("{UPLINK}/24"), "--gateway", WORLD])?;
    lab.vs_current(&["network", "create", "natbench", "--subnet", "10.206.0.0/24"])?;
    lab.vs_current(&["network", "connect", "natbench", "--netns", &ev, "-p", "5201:5201", "-p", "5202:5202"])?;
    // The connection load's client may use every port (a run opens tens of thousands).
    for w in [&wk, &wv] {
        run_in(w, &["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"])?;
    }

    let sides = [(host(&ek, "10.205.0.2"), host(&wk, WORLD)), (host(&ev, "10.206.0.2"), host(&wv, WORLD))];
    for (a, b) in &sides {
        scenario_ping(a, b)?;
    }
    // Where the endpoints' frames go: the gateway's MAC on each side.
    let kernel_gw = run_in(&router, &["cat", "/sys/class/net/br0/address"])?.trim().to_string();
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.vs_current(&["network", "inspect", "natbench", "--json"])?)
            .map_err(|e| e.to_string())?;
    let vswitch_gw = inspect[0]["driver"]["bridge"]["gateway_mac"].as_str().unwrap_or_default().to_string();
    let gws = [kernel_gw, vswitch_gw];

    let mut tcp = Pair { name: "TCP, 1 stream".into(), unit: "Gbit/s".into(), target: 0.8, ..Pair::default() };
    let mut dnat = Pair {
        name: "TCP, 1 stream, world to a published port (DNAT)".into(),
        unit: "Gbit/s".into(),
        target: 0.8,
        ..Pair::default()
    };
    let mut conns = Pair {
        name: "new TCP connections, world to a published port (DNAT)".into(),
        unit: "conn/s".into(),
        target: 1.0,
        ..Pair::default()
    };
    let mut udp: Vec<Pair> = FLOWS
        .iter()
        .map(|f| Pair { name: format!("UDP 64 B, {f} flows"), unit: "kpps".into(), target: 1.0, ..Pair::default() })
        .collect();
    let mut offered: Vec<[Vec<f64>; 2]> = vec![[vec![], vec![]]; FLOWS.len()];
    for round in 1..=rounds {
        for (i, (a, b)) in sides.iter().enumerate() {
            crate::sys::check_interrupted()?;
            let side = if i == 0 { "kernel" } else { "vswitch" };
            eprintln!("nat round {round}/{rounds}: {side}");
            let (m, cpu) = timed(|| scenario::measure(Measure::Tcp { streams: 1 }, a, b, secs, false))?;
            push(&mut tcp, i, m.get("gbps").copied().unwrap_or(0.0), cpu);
            // The other way: world connects to the uplink's address, published to the endpoint.
            let published = host(&a.ns, UPLINK);
            let (m, cpu) = timed(|| scenario::measure(Measure::Tcp { streams: 1 }, b, &published, secs, false))?;
            push(&mut dnat, i, m.get("gbps").copied().unwrap_or(0.0), cpu);
            let (rate, cpu) = timed(|| connection_rate(a, b, secs))?;
            push(&mut conns, i, rate, cpu);
            for (k, &flows) in FLOWS.iter().enumerate() {
                let ((off, fwd), cpu) = timed(|| udp_flows(a, b, &gws[i], flows, secs, None, None))?;
                push(&mut udp[k], i, fwd, cpu);
                offered[k][i].push(off);
            }
        }
    }
    let mut pairs = vec![tcp, dnat, conns];
    for (mut p, off) in udp.into_iter().zip(offered) {
        p.kernel_offered = median(&off[0]);
        p.vswitch_offered = median(&off[1]);
        pairs.push(p);
    }
    sides::finish(&mut pairs);
    Ok(Report { pairs })
}

/// New connections per second from world (`b`) to the endpoint's published port 5202 at
/// the uplink's address.
fn connection_rate(a: &Host, b: &Host, secs: f64) -> Res<f64> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let me = me.to_str().expect("utf-8 path");
    let _server = spawn_in(&a.ns, &[me, "conn-serve", "5202", "--secs", &(secs + 10.0).to_string()])?;
    // Until it listens: one connection goes through.
    let mut ready = false;
    for _ in 0..50 {
        if run_in(&b.ns, &[me, "conn-load", UPLINK, "5202", "--secs", "0.05", "--threads", "1"]).is_ok() {
            ready = true;
            break;
        }
        crate::sys::sleep(std::time::Duration::from_millis(100))?;
    }
    if !ready {
        return Err(format!("nothing answers on {UPLINK}:5202 from {}", b.ns));
    }
    let out = run_in(&b.ns, &[me, "conn-load", UPLINK, "5202", "--secs", &secs.to_string()])?;
    out.trim().parse().map_err(|_| format!("conn-load printed '{}'", out.trim()))
}

/// Until the endpoint reaches the world (ARP, the next hop, the first session).
fn scenario_ping(a: &Host, b: &Host) -> Res<()> {
    for _ in 0..20 {
        if run_in(&a.ns, &["ping", "-c1", "-W1", "-q", &b.ip]).is_ok() {
            return Ok(());
        }
    }
    Err(format!("{} cannot reach {} through the NAT", a.ns, b.ip))
}

pub fn table(r: &Report) -> String {
    sides::table("nat: through SNAT and DNAT, vswitch beside the kernel (bridge + MASQUERADE + DNAT)", &r.pairs)
}
