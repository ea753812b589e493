//! `vswitch explain`: run frames through a network's pipeline with the live tables, sending
//! nothing and changing nothing, and say what each stage decided (like Open vSwitch's
//! `ofproto/trace`). The stages are the data plane's own (`pipeline/`), run with a
//! recording observer over a dry-run view of the MAC table and an egress sink that only
//! notes where frames would go; this file only formats what they report.

use crate::fdb::{Learn, MacTable, PortId, GATEWAY_PORT};
use crate::frame::{VnetHdr, ETH_HLEN};
use crate::mac::MacAddr;
use crate::pipeline::egress::{self, Sink};
use crate::pipeline::{Action, DropReason, Env, FrameCx, GatewayWhy, Nat, Note, Observe, Pipeline, Routes, Table};
use crate::port::RxFrame;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// One line of an explanation: the stage that spoke and what it decided.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub stage: String,
    pub text: String,
}

/// Where the frame ends up.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `forward` (one port), `flood` (every other port), `gateway` (the switch itself) or `drop`.
    pub action: String,
    /// The ports it would be sent out of.
    pub ports: Vec<String>,
    /// Why it was dropped (a drop counter's name), for `drop`.
    pub reason: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// 1-based position of the frame in the input.
    pub frame: usize,
    pub len: usize,
    pub steps: Vec<Step>,
    pub outcome: Outcome,
}

/// A port of the network as explain needs to know it.
pub struct PortView {
    pub id: PortId,
    pub name: String,
    pub max_frame: usize,
}

/// The network a frame is explained in.
pub struct NetView<'a> {
    pub name: &'a str,
    pub pipeline: &'a Pipeline,
    pub routes: &'a Routes,
    pub max_learned: usize,
    /// Its ports, in the order the workers hold them.
    pub ports: Vec<PortView>,
}

/// The live MAC table as the frames would change it, without changing it: what the frames
/// teach is kept aside, so a later frame sees what an earlier one learned.
struct DryRun<'a> {
    /// None: a pipeline that learns nothing (macvlan).
    live: Option<&'a MacTable>,
    max_learned: usize,
    taught: RefCell<HashMap<MacAddr, PortId>>,
    /// MACs the frames would add (not moves): they count against the cap.
    new: Cell<usize>,
    /// The ingress port's quota of MACs, if it has one.
    quota: Option<u32>,
}

impl Table for DryRun<'_> {
    fn learn(&self, mac: MacAddr, port: PortId, _now: u32) -> Learn {
        let mut taught = self.taught.borrow_mut();
        let known = taught.get(&mac).map(|&p| (p, false)).or_else(|| self.live.and_then(|t| t.get(mac)));
        let (learned, on_port) = self.live.map_or((0, 0), |t| (t.learned(), t.learned_on(port)));
        let learn = match known {
            Some((_, true)) => return Learn::Static,
            Some((p, false)) if p == port => return Learn::Known,
            Some(_) => Learn::Moved,
            None if learned + self.new.get() >= self.max_learned => return Learn::OverLimit,
            None if self.quota.is_some_and(|q| on_port >= q) => return Learn::OverQuota,
            None => {
                self.new.set(self.new.get() + 1);
                Learn::New
            }
        };
        taught.insert(mac, port);
        learn
    }

    fn lookup(&self, mac: MacAddr) -> Option<PortId> {
        self.taught.borrow().get(&mac).copied().or_else(|| self.live.and_then(|t| t.lookup(mac)))
    }
}

/// Records what the stages report.
#[derive(Default)]
struct Recorder(Vec<(&'static str, Note)>);

impl Observe for Recorder {
    fn note(&mut self, stage: &'static str, note: Note) {
        self.0.push((stage, note));
    }
}

/// The egress side in a dry run: where frames would go, and where they would be dropped.
struct DrySink<'a> {
    ports: &'a [PortView],
    sent: Vec<PortId>,
    dropped: Vec<DropReason>,
    gateway: bool,
}

impl Sink for DrySink<'_> {
    fn max_frame(&self, port: PortId) -> Option<usize> {
        // A routed frame leaves by another network's port: its MTU is not known here.
        Some(self.ports.iter().find(|p| p.id == port).map_or(usize::MAX, |p| p.max_frame))
    }
    fn send(&mut self, port: PortId, _: &RxFrame) {
        self.sent.push(port);
    }
    fn drop(&mut self, _: PortId, why: DropReason) {
        self.dropped.push(why);
    }
    fn to_gateway(&mut self, _: &RxFrame) {
        self.gateway = true;
    }
    fn send_routed(&mut self, port: PortId, _: &RxFrame, _: u16) {
        self.sent.push(port);
    }
}

/// Explain `frames` arriving on port `in_port` of `net`.
pub fn explain(net: &NetView, in_port: PortId, frames: &[Vec<u8>], now: u32) -> Vec<Explanation> {
    let dry = DryRun {
        live: net.pipeline.table().map(|t| &**t),
        max_learned: net.max_learned,
        taught: RefCell::new(HashMap::new()),
        new: Cell::new(0),
        quota: net.pipeline.table().map(|t| t.quota_of(in_port)).filter(|&q| q != 0),
    };
    let name = |id: PortId| match id {
        GATEWAY_PORT => "gateway".to_string(),
        _ => net.ports.iter().find(|p| p.id == id).map_or_else(|| format!("port{id}"), |p| p.name.clone()),
    };
    let inp = net.ports.iter().find(|p| p.id == in_port).expect("the caller checked the ingress port");
    let members: Vec<PortId> = net.ports.iter().map(|p| p.id).collect();
    let env = Env { routes: net.routes };
    frames
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let mut steps = vec![
                step(
                    "ingress",
                    format!(
                        "{} bytes on port {} of network {} (largest frame {})",
                        data.len(),
                        inp.name,
                        net.name,
                        inp.max_frame
                    ),
                ),
                step("parse", describe(data)),
            ];
            // As the kernel hands a tagged frame over: its 802.1Q tag taken out.
            let (untagged, tag) = crate::frame::as_received(data);
            let f = RxFrame::new(VnetHdr::default(), &untagged, tag);
            let cx = FrameCx { frame: &f, in_port, max_frame: inp.max_frame, now };
            let mut rec = Recorder::default();
            // A NAT of its own: explain shows what a first packet would do, and keeps nothing.
            let mut nat = Nat::new(1024..=65535, 16);
            let action = net.pipeline.run_with(&dry, &env, &mut nat, &cx, &mut rec);
            let mut sink = DrySink { ports: &net.ports, sent: vec![], dropped: vec![], gateway: false };
            let out = net.pipeline.egress_view(&f, in_port);
            let out_cx = FrameCx { frame: &out, ..cx };
            egress::run(action, &out_cx, net.pipeline.members(action, &members), &mut sink, &mut rec);
            steps.extend(rec.0.iter().map(|&(stage, note)| step(stage, say(note, &name, data.len(), &inp.name))));
            let ports: Vec<String> = sink.sent.iter().map(|&p| name(p)).collect();
            let outcome = match action {
                Action::Drop(why) => dropped(why, ports),
                _ if ports.is_empty() && !sink.dropped.is_empty() => dropped(sink.dropped[0], ports),
                Action::Port(_) => Outcome { action: "forward".into(), ports, reason: None },
                Action::Flood | Action::Group(..) => Outcome { action: "flood".into(), ports, reason: None },
                Action::Gateway => Outcome { action: "gateway".into(), ports: vec!["gateway".into()], reason: None },
                Action::Routed(..) => Outcome { action: "route".into(), ports, reason: None },
            };
            Explanation { frame: i + 1, len: data.len(), steps, outcome }
        })
        .collect()
}

fn step(stage: &str, text: String) -> Step {
    Step { stage: stage.into(), text }
}

fn dropped(why: DropReason, ports: Vec<String>) -> Outcome {
    Outcome { action: "drop".into(), ports, reason: Some(why.name().into()) }
}

/// A stage's note in words.
fn say(note: Note, name: &impl Fn(PortId) -> String, len: usize, in_port: &str) -> String {
    match note {
        Note::Dropped(why) => format!("drop: {}", drop_text(why, len)),
        Note::Learned(src, l) => learned(l, src, in_port),
        Note::Found(dst, p) => format!("{dst} is on port {}", name(p)),
        Note::Unknown(dst) => format!("{dst} is not in the MAC table: flood"),
        Note::Group(dst) => format!("{dst} is a group address: flood"),
        Note::ForGateway(GatewayWhy::Unicast) => "for the switch's own address on this network".into(),
        Note::ForGateway(GatewayWhy::TtlExpired) => {
            "its TTL runs out here: the gateway answers ICMP time exceeded".into()
        }
        Note::ForGateway(GatewayWhy::ArpRequest) => {
            "an ARP request for the gateway's address: answered by the switch".into()
        }
        Note::ForGateway(GatewayWhy::NeighborSolicit) => {
            "a neighbour solicitation for the gateway's address: answered by the switch".into()
        }
        Note::Out(p) => format!("out of port {}", name(p)),
        Note::TooBig(p, max) => format!("{}: drop, too big for its MTU (largest frame {max})", name(p)),
        Note::ToServices => "to the gateway (the services thread answers it)".into(),
        Note::Routed(p) => format!("translated (NAT) and routed out of port {}", name(p)),
    }
}

fn learned(l: Learn, src: MacAddr, port: &str) -> String {
    match l {
        Learn::New => format!("source {src} learned on {port} (new entry)"),
        Learn::Known => format!("source {src} already known on {port} (age refreshed)"),
        Learn::Moved => format!("source {src} moves to {port} (it was on another port)"),
        Learn::Static => format!("source {src} has a static entry: not moved"),
        Learn::OverLimit => format!("source {src} not learned: the network's MAC table is at its cap"),
        Learn::OverQuota => format!("source {src} not learned: {port} has as many MACs as its quota allows"),
        Learn::BucketFull => format!("source {src} not learned: no room in its bucket"),
    }
}

fn drop_text(why: DropReason, len: usize) -> String {
    match why {
        DropReason::Runt => format!("runt ({len} bytes, shorter than the {ETH_HLEN}-byte Ethernet header)"),
        DropReason::Oversize => format!("oversize ({len} bytes, more than the port's largest frame)"),
        DropReason::LinkLocal => "IEEE 802.1D link-local destination (01:80:c2:00:00:0x) is never forwarded".into(),
        DropReason::SamePort => "the destination is on the port the frame came in on".into(),
        DropReason::PortQuota => "a new source MAC past its port's quota (port security)".into(),
        DropReason::BadSource => "the source MAC is a group address or all zeros: no station sends from it".into(),
        DropReason::Isolated => "addressed to another network: networks are isolated from each other".into(),
        DropReason::NoRoute => {
            "addressed beyond the gateway: no route to the outside (no uplink, or an internal network)".into()
        }
        DropReason::NoNeighbor => "the next hop's (or the endpoint's) MAC is not known yet".into(),
        DropReason::IccDenied => "endpoint to endpoint on a network with icc=false".into(),
        other => other.name().into(),
    }
}

/// A one-line summary of a frame's headers, as far as they go.
pub fn describe(f: &[u8]) -> String {
    if f.len() < ETH_HLEN {
        return format!("{} bytes: not a whole Ethernet header", f.len());
    }
    let (dst, src) = (MacAddr::from_slice(&f[..6]), MacAddr::from_slice(&f[6..12]));
    let mut ty = u16::from_be_bytes([f[12], f[13]]);
    let mut rest = &f[ETH_HLEN..];
    let mut vlan = String::new();
    if ty == 0x8100 && rest.len() >= 4 {
        vlan = format!(" vlan {}", u16::from_be_bytes([rest[0], rest[1]]) & 0xfff);
        ty = u16::from_be_bytes([rest[2], rest[3]]);
        rest = &rest[4..];
    }
    let ip = |b: &[u8]| format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]);
    let payload = match ty {
        0x0806 if rest.len() >= 28 => match u16::from_be_bytes([rest[6], rest[7]]) {
            1 => format!("ARP who-has {} tell {}", ip(&rest[24..28]), ip(&rest[14..18])),
            2 => format!("ARP reply {} is-at {}", ip(&rest[14..18]), MacAddr::from_slice(&rest[8..14])),
            op => format!("ARP op {op}"),
        },
        0x0806 => "ARP (short)".into(),
        0x0800 if rest.len() >= 20 => {
            let proto = match rest[9] {
                1 => "ICMP".to_string(),
                6 => "TCP".into(),
                17 => "UDP".into(),
                p => format!("protocol {p}"),
            };
            format!("IPv4 {} > {} {proto}", ip(&rest[12..16]), ip(&rest[16..20]))
        }
        0x86dd if rest.len() >= 40 => {
            let a = |b: &[u8]| std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes"));
            let proto = match rest[6] {
                58 => "ICMPv6".to_string(),
                6 => "TCP".into(),
                17 => "UDP".into(),
                p => format!("next header {p}"),
            };
            format!("IPv6 {} > {} {proto}", a(&rest[8..24]), a(&rest[24..40]))
        }
        0x86dd => "IPv6 (short)".into(),
        t => format!("EtherType 0x{t:04x}"),
    };
    format!("{src} > {dst}{vlan}, {payload}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::test_frame as frame;
    use crate::pipeline::testing::bridge;

    const A: &str = "02:00:00:00:00:0a";
    const B: &str = "02:00:00:00:00:0b";

    fn net<'a>(p: &'a Pipeline, routes: &'a Routes) -> NetView<'a> {
        let ports = [(1, "a", 1518), (2, "b", 1518), (3, "c", 50)]
            .into_iter()
            .map(|(id, n, m)| PortView { id, name: n.into(), max_frame: m })
            .collect();
        NetView { name: "blue", pipeline: p, routes, max_learned: 100, ports }
    }

    #[test]
    fn explains_flood_then_learned_unicast_without_touching_the_table() {
        let p = bridge(None);
        let r = Routes::default();
        let t = p.table().unwrap();
        t.learn(B.parse().unwrap(), 2, 0);
        let e = explain(&net(&p, &r), 1, &[frame("ff:ff:ff:ff:ff:ff", A), frame(B, A), frame(A, B)], 0);
        assert_eq!(e[0].outcome.action, "flood");
        assert_eq!(e[0].outcome.ports, ["b"], "c's MTU is too small");
        assert!(e[0]
            .steps
            .iter()
            .any(|s| s.stage == "learn" && s.text == format!("source {A} learned on a (new entry)")));
        assert!(e[0].steps.iter().any(|s| s.stage == "egress" && s.text.contains("c: drop, too big")));
        assert_eq!(e[1].outcome, Outcome { action: "forward".into(), ports: vec!["b".into()], reason: None });
        assert!(e[1].steps.iter().any(|s| s.text == format!("source {A} already known on a (age refreshed)")));
        // The third frame comes from B on port a: B moves, and A (taught by frame 1) is on a.
        assert_eq!(e[2].outcome.reason.as_deref(), Some("same_port"));
        assert!(e[2].steps.iter().any(|s| s.text.contains("moves to a")));
        assert_eq!(t.lookup(A.parse().unwrap()), None, "the live table learned nothing");
        assert_eq!(t.lookup(B.parse().unwrap()), Some(2));
    }

    #[test]
    fn explains_drops_with_their_stage() {
        let p = bridge(None);
        let r = Routes::default();
        let e = explain(&net(&p, &r), 1, &[frame("01:80:c2:00:00:00", A), vec![0; 10], vec![0; 2000]], 0);
        let reasons: Vec<_> = e.iter().map(|x| x.outcome.reason.clone().unwrap()).collect();
        assert_eq!(reasons, ["link_local", "runt", "oversize"]);
        let last = |x: &Explanation| x.steps.last().unwrap().stage.clone();
        assert_eq!([last(&e[0]), last(&e[1]), last(&e[2])], ["lookup", "classify", "classify"]);
    }

    #[test]
    fn a_flood_with_no_other_port_is_not_a_drop() {
        let p = bridge(None);
        let r = Routes::default();
        let mut n = net(&p, &r);
        n.ports.truncate(1);
        let e = explain(&n, 1, &[frame("ff:ff:ff:ff:ff:ff", A)], 0);
        assert_eq!(e[0].outcome, Outcome { action: "flood".into(), ports: vec![], reason: None });
    }

    #[test]
    fn describes_headers() {
        let mut arp = frame("ff:ff:ff:ff:ff:ff", A);
        arp[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        arp[28..32].copy_from_slice(&[10, 0, 0, 1]);
        arp[38..42].copy_from_slice(&[10, 0, 0, 2]);
        assert_eq!(describe(&arp), format!("{A} > ff:ff:ff:ff:ff:ff, ARP who-has 10.0.0.2 tell 10.0.0.1"));
        assert_eq!(describe(&[0; 5]), "5 bytes: not a whole Ethernet header");
    }
}
