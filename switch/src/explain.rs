//! `vswitch explain`: run frames through a network's pipeline with the live tables, sending
//! nothing and changing nothing, and say what each stage decided (like Open vSwitch's
//! `ofproto/trace`). The forwarding decision is the data plane's own `forward::decide`, run
//! over a dry-run view of the MAC table; each stage adds its lines through `Step`.

use crate::fdb::{Learn, MacTable, PortId};
use crate::forward::{decide, Table, Verdict};
use crate::frame::{Drop, ETH_HLEN};
use crate::mac::MacAddr;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
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
    /// `forward` (one port), `flood` (several) or `drop`.
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
    pub table: &'a MacTable,
    pub max_learned: usize,
    pub ports: Vec<PortView>,
}

/// The live MAC table as the frames would change it, without changing it: what the frames
/// teach is kept aside, so a later frame sees what an earlier one learned.
struct DryRun<'a> {
    live: &'a MacTable,
    max_learned: usize,
    taught: RefCell<HashMap<MacAddr, PortId>>,
    /// MACs the frames would add (not moves): they count against the cap.
    new: std::cell::Cell<usize>,
}

impl Table for DryRun<'_> {
    fn learn(&self, mac: MacAddr, port: PortId, _now: u32) -> Learn {
        let mut taught = self.taught.borrow_mut();
        let known = taught.get(&mac).map(|&p| (p, false)).or_else(|| self.live.get(mac));
        let learn = match known {
            Some((_, true)) => return Learn::Static,
            Some((p, false)) if p == port => return Learn::Known,
            Some(_) => Learn::Moved,
            None if self.live.learned() + self.new.get() >= self.max_learned => return Learn::OverLimit,
            None => {
                self.new.set(self.new.get() + 1);
                Learn::New
            }
        };
        taught.insert(mac, port);
        learn
    }

    fn lookup(&self, mac: MacAddr) -> Option<PortId> {
        self.taught.borrow().get(&mac).copied().or_else(|| self.live.lookup(mac))
    }
}

fn step(stage: &str, text: String) -> Step {
    Step { stage: stage.into(), text }
}

/// Explain `frames` arriving on port `in_port` of `net`.
pub fn explain(net: &NetView, in_port: PortId, frames: &[Vec<u8>], now: u32) -> Vec<Explanation> {
    let dry = DryRun {
        live: net.table,
        max_learned: net.max_learned,
        taught: RefCell::new(HashMap::new()),
        new: Default::default(),
    };
    let name =
        |id: PortId| net.ports.iter().find(|p| p.id == id).map_or_else(|| format!("port{id}"), |p| p.name.clone());
    let inp = net.ports.iter().find(|p| p.id == in_port).expect("the caller checked the ingress port");
    frames
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let mut steps = vec![step(
                "ingress",
                format!(
                    "{} bytes on port {} of network {} (largest frame {})",
                    data.len(),
                    inp.name,
                    net.name,
                    inp.max_frame
                ),
            )];
            steps.push(step("parse", describe(data)));
            let d = decide(&dry, in_port, data, data.len(), inp.max_frame, false, now);
            let src = (data.len() >= ETH_HLEN).then(|| MacAddr::from_slice(&data[6..12]));
            let dst = (data.len() >= ETH_HLEN).then(|| MacAddr::from_slice(&data[..6]));
            if let (Some(learn), Some(src)) = (d.learned, src) {
                steps.push(step("learn", learned(learn, src, &inp.name)));
            } else if let Some(src) = src.filter(|s| s.is_multicast()) {
                steps.push(step("learn", format!("source {src} is a group address: not learned")));
            }
            let out: Vec<&PortView> = match d.verdict {
                Verdict::Drop(why) => {
                    steps.push(step("forward", format!("drop: {}", drop_text(why, data.len(), inp.max_frame))));
                    return Explanation { frame: i + 1, len: data.len(), steps, outcome: dropped(why, vec![]) };
                }
                Verdict::Port(p) => {
                    steps.push(step("lookup", format!("{} is on port {}", dst.expect("parsed"), name(p))));
                    net.ports.iter().filter(|x| x.id == p).collect()
                }
                Verdict::Flood => {
                    let dst = dst.expect("parsed");
                    let why = if dst.is_multicast() {
                        format!("{dst} is a group address")
                    } else {
                        format!("{dst} is not in the MAC table")
                    };
                    steps.push(step("lookup", format!("{why}: flood")));
                    net.ports.iter().filter(|x| x.id != in_port).collect()
                }
            };
            let mut ports = Vec::new();
            let out_count = out.len();
            for p in out {
                if data.len() > p.max_frame {
                    steps.push(step(
                        "egress",
                        format!("{}: drop, too big for its MTU (largest frame {})", p.name, p.max_frame),
                    ));
                } else {
                    steps.push(step("egress", format!("out of port {}", p.name)));
                    ports.push(p.name.clone());
                }
            }
            let outcome = match (d.verdict, ports.len()) {
                (_, 0) if out_count == 0 => {
                    steps.push(step("egress", "no other port in the network: nowhere to send it".into()));
                    Outcome { action: "drop".into(), ports, reason: Some("no_other_port".into()) }
                }
                (_, 0) => dropped(Drop::TooBigForEgress, ports),
                (Verdict::Port(_), _) => Outcome { action: "forward".into(), ports, reason: None },
                _ => Outcome { action: "flood".into(), ports, reason: None },
            };
            Explanation { frame: i + 1, len: data.len(), steps, outcome }
        })
        .collect()
}

fn dropped(why: Drop, ports: Vec<String>) -> Outcome {
    Outcome { action: "drop".into(), ports, reason: Some(why.name().into()) }
}

fn learned(l: Learn, src: MacAddr, port: &str) -> String {
    match l {
        Learn::New => format!("source {src} learned on {port} (new entry)"),
        Learn::Known => format!("source {src} already known on {port} (age refreshed)"),
        Learn::Moved => format!("source {src} moves to {port} (it was on another port)"),
        Learn::Static => format!("source {src} has a static entry: not moved"),
        Learn::OverLimit => format!("source {src} not learned: the network's MAC table is at its cap"),
        Learn::BucketFull => format!("source {src} not learned: no room in its bucket"),
    }
}

fn drop_text(why: Drop, len: usize, max: usize) -> String {
    match why {
        Drop::Runt => format!("runt ({len} bytes, shorter than the {ETH_HLEN}-byte Ethernet header)"),
        Drop::Oversize => format!("oversize ({len} bytes, the port's largest frame is {max})"),
        Drop::LinkLocal => "IEEE 802.1D link-local destination (01:80:c2:00:00:0x) is never forwarded".into(),
        Drop::SamePort => "the destination is on the port the frame came in on".into(),
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
    let payload = match ty {
        0x0806 if rest.len() >= 28 => {
            let ip = |b: &[u8]| format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]);
            match u16::from_be_bytes([rest[6], rest[7]]) {
                1 => format!("ARP who-has {} tell {}", ip(&rest[24..28]), ip(&rest[14..18])),
                2 => format!("ARP reply {} is-at {}", ip(&rest[14..18]), MacAddr::from_slice(&rest[8..14])),
                op => format!("ARP op {op}"),
            }
        }
        0x0806 => "ARP (short)".into(),
        0x0800 if rest.len() >= 20 => {
            let proto = match rest[9] {
                1 => "ICMP".to_string(),
                6 => "TCP".into(),
                17 => "UDP".into(),
                p => format!("protocol {p}"),
            };
            let ip = |b: &[u8]| format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]);
            format!("IPv4 {} > {} {proto}", ip(&rest[12..16]), ip(&rest[16..20]))
        }
        0x86dd => "IPv6".into(),
        t => format!("EtherType 0x{t:04x}"),
    };
    format!("{src} > {dst}{vlan}, {payload}")
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::frame::test_frame as frame;

    const A: &str = "02:00:00:00:00:0a";
    const B: &str = "02:00:00:00:00:0b";

    fn net(table: &MacTable) -> NetView<'_> {
        let ports = [(1, "a", 1518), (2, "b", 1518), (3, "c", 50)]
            .into_iter()
            .map(|(id, n, m)| PortView { id, name: n.into(), max_frame: m })
            .collect();
        NetView { name: "blue", table, max_learned: 100, ports }
    }

    #[test]
    fn explains_flood_then_learned_unicast_without_touching_the_table() {
        let t = MacTable::new(100);
        t.learn(B.parse().unwrap(), 2, 0);
        let e = explain(&net(&t), 1, &[frame("ff:ff:ff:ff:ff:ff", A), frame(B, A), frame(A, B)], 0);
        assert_eq!(e[0].outcome.action, "flood");
        assert_eq!(e[0].outcome.ports, ["b"], "c's MTU is too small");
        assert!(e[0].steps.iter().any(|s| s.text == format!("source {A} learned on a (new entry)")));
        assert!(e[0].steps.iter().any(|s| s.text.contains("c: drop, too big")));
        assert_eq!(e[1].outcome, Outcome { action: "forward".into(), ports: vec!["b".into()], reason: None });
        assert!(e[1].steps.iter().any(|s| s.text == format!("source {A} already known on a (age refreshed)")));
        // The third frame comes from B on port a: B moves, and A (taught by frame 1) is on a.
        assert_eq!(e[2].outcome.reason.as_deref(), Some("same_port"));
        assert!(e[2].steps.iter().any(|s| s.text.contains("moves to a")));
        assert_eq!(t.lookup(A.parse().unwrap()), None, "the live table learned nothing");
        assert_eq!(t.lookup(B.parse().unwrap()), Some(2));
    }

    #[test]
    fn explains_drops() {
        let t = MacTable::new(100);
        let e = explain(&net(&t), 1, &[frame("01:80:c2:00:00:00", A), vec![0; 10], vec![0; 2000]], 0);
        let reasons: Vec<_> = e.iter().map(|x| x.outcome.reason.clone().unwrap()).collect();
        assert_eq!(reasons, ["link_local", "runt", "oversize"]);
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
