//! dispatch: the macvlan driver's stage, instead of learn and lookup. Every macvlan network
//! on one parent interface is a *segment* of that parent (its VLAN, or untagged); the
//! parent and all the segments' endpoints are one data-plane network whose table is this
//! one, built whole by the controller from the endpoints (exact match, no learning, no
//! aging) and handed to the workers as a new `Arc` when an endpoint comes or goes.
//!
//! From the parent: the segment is the frame's VLAN; unicast goes to the endpoint with that
//! MAC, group frames to every endpoint of the segment, anything else is dropped. From an
//! endpoint: out of the parent (egress tags it for a VLAN segment), and, as the kernel's
//! macvlan modes say, to the segment's other endpoints:
//!
//! | mode | endpoint to endpoint | a frame from the parent sent by an endpoint (hairpin) |
//! |---|---|---|
//! | bridge | inside the switch | dropped (`reflected`) |
//! | private | never | dropped (`reflected`) |
//! | vepa | only by way of the parent's switch | delivered |
//! | passthru | one endpoint owns the parent: everything both ways | - |
//!
//! A segment's host port (`-o host_port=`) is the daemon's own way in: frames between it and
//! the endpoints are always delivered inside the switch, whatever the mode.

use super::classify::Eth;
use super::{Action, DropReason, FrameCx, Note, Observe};
use crate::fdb::PortId;
use crate::mac::MacAddr;
use crate::port::RxFrame;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::ControlFlow;

pub const NAME: &str = "dispatch";

/// The kernel macvlan's modes (`ip link add ... type macvlan mode M`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Bridge,
    Private,
    Vepa,
    Passthru,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "bridge" => Mode::Bridge,
            "private" => Mode::Private,
            "vepa" => Mode::Vepa,
            "passthru" => Mode::Passthru,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Bridge => "bridge",
            Mode::Private => "private",
            Mode::Vepa => "vepa",
            Mode::Passthru => "passthru",
        }
    }
}

/// Who a member of a segment is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Endpoint,
    /// The daemon's own interface onto the segment (`-o host_port=`).
    Host,
}

/// One macvlan network as the data plane sees it.
#[derive(Clone, Debug, Default)]
pub struct Segment {
    /// The 802.1Q tag on the parent (TPID 0x8100 and the VLAN id), None: untagged.
    pub tag: Option<[u8; 4]>,
    pub mode: Mode,
    /// Every endpoint and the host port: where a group frame from the parent goes.
    pub endpoints: Vec<PortId>,
    /// The parent and every member: a group frame from the host port, or from an endpoint
    /// in bridge mode.
    pub everyone: Vec<PortId>,
    /// The parent and the host port: a group frame from an endpoint in private or vepa mode.
    pub outward: Vec<PortId>,
    /// The endpoints without the host port: a vepa endpoint's group frame reflected back
    /// (the host port had it from inside already).
    pub siblings: Vec<PortId>,
}

/// Which list of a segment a group frame goes to (see `Segment`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    Endpoints = 0,
    Everyone = 1,
    Outward = 2,
    Siblings = 3,
}

/// A member's place: its segment and role.
#[derive(Clone, Copy, Debug)]
struct Member {
    segment: u16,
    role: Role,
}

/// Keys are `vlan << 48 | mac` (a MAC is 48 bits): one word, hashed with one multiply.
/// Written here because std's SipHash costs more than the whole stage.
#[derive(Default)]
pub struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        // Fibonacci hashing: the multiply spreads every input bit into the high bits, which
        // hashbrown uses for its control bytes; the rotate brings them down for the index.
        self.0 = v.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(26);
    }
}

/// VLAN 0 stands for untagged (802.1Q's "priority tag only" is never a segment).
fn key(vlan: u16, mac: MacAddr) -> u64 {
    u64::from(vlan) << 48 | mac.to_u64()
}

/// The VLAN of a frame's offloaded tag (0: untagged); None for a tag that is not 802.1Q's
/// (an 802.1ad service tag is not a VLAN of ours).
fn vlan_of(tag: Option<[u8; 4]>) -> Option<u16> {
    match tag {
        None => Some(0),
        Some([0x81, 0x00, hi, lo]) => Some(u16::from_be_bytes([hi, lo]) & 0x0fff),
        Some(_) => None,
    }
}

/// A tag inside the frame's bytes (a TAP's frames keep theirs there).
fn tagged_inline(data: &[u8]) -> bool {
    matches!(data.get(12..14), Some([0x81, 0x00]) | Some([0x88, 0xa8]))
}

/// The 802.1Q tag for VLAN `vid`.
pub fn tag_for(vid: u16) -> [u8; 4] {
    let [hi, lo] = (vid & 0x0fff).to_be_bytes();
    [0x81, 0x00, hi, lo]
}

/// One segment as the controller describes it: VLAN id (None: untagged), mode, members
/// `(port, mac, role)`.
pub type SegmentPlan = (Option<u16>, Mode, Vec<(PortId, MacAddr, Role)>);

/// One parent's table: built by the controller, read by the workers, never changed in place.
#[derive(Clone, Debug, Default)]
pub struct Dispatch {
    /// The parent's port; None while it is missing (deleted, not yet back).
    pub parent: Option<PortId>,
    pub segments: Vec<Segment>,
    /// (VLAN, MAC) to the member with that MAC.
    macs: HashMap<u64, PortId, BuildHasherDefault<WordHasher>>,
    /// Member ports' segments and roles, by port id.
    members: Vec<Option<Member>>,
    /// VLAN id (0: untagged) to segment index + 1 (0: no segment), 4096 entries.
    by_vlan: Vec<u16>,
}

impl Dispatch {
    /// The table for `parent` and these segments.
    pub fn build(parent: Option<PortId>, segments: &[SegmentPlan]) -> Dispatch {
        let mut d = Dispatch { parent, by_vlan: vec![0; 4096], ..Dispatch::default() };
        for (i, (vid, mode, members)) in segments.iter().enumerate() {
            let vlan = vid.unwrap_or(0) & 0x0fff;
            d.by_vlan[vlan as usize] = i as u16 + 1;
            let mut s = Segment { tag: vid.map(tag_for), mode: *mode, ..Segment::default() };
            s.everyone.extend(parent);
            s.outward.extend(parent);
            for &(port, mac, role) in members {
                d.macs.insert(key(vlan, mac), port);
                if d.members.len() <= port as usize {
                    d.members.resize(port as usize + 1, None);
                }
                d.members[port as usize] = Some(Member { segment: i as u16, role });
                s.endpoints.push(port);
                s.everyone.push(port);
                match role {
                    Role::Host => s.outward.push(port),
                    Role::Endpoint => s.siblings.push(port),
                }
            }
            d.segments.push(s);
        }
        d
    }

    /// The ports a group frame of `segment` goes to.
    #[inline]
    pub fn group(&self, segment: u16, reach: Reach) -> &[PortId] {
        let s = &self.segments[segment as usize];
        match reach {
            Reach::Endpoints => &s.endpoints,
            Reach::Everyone => &s.everyone,
            Reach::Outward => &s.outward,
            Reach::Siblings => &s.siblings,
        }
    }

    fn member(&self, port: PortId) -> Option<Member> {
        self.members.get(port as usize).copied().flatten()
    }

    fn lookup(&self, vlan: u16, mac: MacAddr) -> Option<PortId> {
        self.macs.get(&key(vlan, mac)).copied()
    }

    /// The frame as it leaves the switch: a frame from an endpoint of a VLAN segment carries
    /// the segment's tag (egress takes tags off again on the way to an endpoint).
    #[inline]
    pub fn tagged<'a>(&self, f: &RxFrame<'a>, in_port: PortId) -> RxFrame<'a> {
        match self.member(in_port).and_then(|m| self.segments[m.segment as usize].tag) {
            Some(tag) => f.with_tag(Some(tag)),
            None => *f,
        }
    }

    /// Whether `port` is the parent.
    #[inline]
    pub fn is_parent(&self, port: PortId) -> bool {
        self.parent == Some(port)
    }

    /// Whether frames out of `port` lose their tag: a member of a VLAN segment (the tag is
    /// its segment's, the parent's wire's). On an untagged segment an endpoint's own tag
    /// stays, as it stays on the way out of the parent.
    #[inline]
    pub fn untags(&self, port: PortId) -> bool {
        self.member(port).is_some_and(|m| self.segments[m.segment as usize].tag.is_some())
    }

    #[inline]
    pub fn run<O: Observe>(&self, cx: &FrameCx, eth: &Eth, obs: &mut O) -> ControlFlow<Action, Action> {
        let a = if self.is_parent(cx.in_port) { self.on_parent(cx, eth, obs) } else { self.on_member(cx, eth, obs) };
        match a {
            Action::Drop(why) => {
                obs.note(NAME, Note::Dropped(why));
                ControlFlow::Break(a)
            }
            a => ControlFlow::Continue(a),
        }
    }

    fn on_parent<O: Observe>(&self, cx: &FrameCx, eth: &Eth, obs: &mut O) -> Action {
        let Some(vlan) = vlan_of(cx.frame.tag) else { return Action::Drop(DropReason::UnknownVlan) };
        let Some(seg) = self.by_vlan[vlan as usize].checked_sub(1) else {
            return Action::Drop(DropReason::UnknownVlan);
        };
        let s = &self.segments[seg as usize];
        if s.mode == Mode::Passthru {
            return match s.endpoints.first() {
                Some(&p) => {
                    obs.note(NAME, Note::Found(eth.dst, p));
                    Action::Port(p)
                }
                None => Action::Drop(DropReason::UnknownMac),
            };
        }
        // Our own endpoint's frame come back: the parent's switch reflects (hairpin). Only
        // vepa takes it; the host port's frames were delivered inside already, in any mode.
        let sender = self.lookup(vlan, eth.src);
        let host_sent = sender.and_then(|p| self.member(p)).is_some_and(|m| m.role == Role::Host);
        if sender.is_some() && (s.mode != Mode::Vepa || host_sent) {
            return Action::Drop(DropReason::Reflected);
        }
        if eth.dst.is_multicast() {
            obs.note(NAME, Note::Group(eth.dst));
            return match sender {
                Some(p) => Action::Group(seg, Reach::Siblings, p),
                None => Action::Group(seg, Reach::Endpoints, cx.in_port),
            };
        }
        match self.lookup(vlan, eth.dst) {
            Some(p) => {
                obs.note(NAME, Note::Found(eth.dst, p));
                Action::Port(p)
            }
            None => Action::Drop(DropReason::UnknownMac),
        }
    }

    fn on_member<O: Observe>(&self, cx: &FrameCx, eth: &Eth, obs: &mut O) -> Action {
        let Some(m) = self.member(cx.in_port) else { return Action::Drop(DropReason::UnknownVlan) };
        let s = &self.segments[m.segment as usize];
        if s.tag.is_some() && (cx.frame.tag.is_some() || tagged_inline(cx.frame.data())) {
            // A tag of the endpoint's own inside a VLAN segment: one tag is all we carry.
            return Action::Drop(DropReason::UnknownVlan);
        }
        let to_parent = || match self.parent {
            Some(p) => Action::Port(p),
            None => Action::Drop(DropReason::UnknownMac),
        };
        if s.mode == Mode::Passthru {
            return to_parent();
        }
        let inside = m.role == Role::Host || s.mode == Mode::Bridge;
        if eth.dst.is_multicast() {
            obs.note(NAME, Note::Group(eth.dst));
            let reach = if inside { Reach::Everyone } else { Reach::Outward };
            return Action::Group(m.segment, reach, cx.in_port);
        }
        let vlan = vlan_of(s.tag).unwrap_or(0);
        match self.lookup(vlan, eth.dst) {
            Some(p) if p == cx.in_port => Action::Drop(DropReason::SamePort),
            Some(p) if inside || self.member(p).is_some_and(|t| t.role == Role::Host) => {
                obs.note(NAME, Note::Found(eth.dst, p));
                Action::Port(p)
            }
            _ => {
                if let Some(p) = self.parent {
                    obs.note(NAME, Note::Found(eth.dst, p));
                }
                to_parent()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{rx, Record};
    use super::super::{classify, Pipeline};
    use super::*;
    use crate::frame::test_frame as frame;
    use std::sync::Arc;

    const PARENT: PortId = 1;
    const A: &str = "02:00:00:00:00:0a";
    const B: &str = "02:00:00:00:00:0b";
    const H: &str = "02:00:00:00:00:0f";
    const LAN: &str = "02:00:00:00:00:99";
    const BCAST: &str = "ff:ff:ff:ff:ff:ff";

    /// Endpoints A (port 2) and B (port 3), the host port H (4) on an untagged segment;
    /// C (5, A's MAC) on VLAN 50.
    fn table(mode: Mode) -> Dispatch {
        let m = |s: &str| s.parse::<MacAddr>().unwrap();
        Dispatch::build(
            Some(PARENT),
            &[
                (None, mode, vec![(2, m(A), Role::Endpoint), (3, m(B), Role::Endpoint), (4, m(H), Role::Host)]),
                (Some(50), mode, vec![(5, m(A), Role::Endpoint)]),
            ],
        )
    }

    fn run(d: &Dispatch, in_port: PortId, data: &[u8], tag: Option<u16>) -> Action {
        let mut f = rx(data);
        f.tag = tag.map(tag_for);
        let cx = FrameCx { frame: &f, in_port, max_frame: 1518, now: 0 };
        let p = Pipeline::Macvlan(Arc::new(d.clone()));
        let mut rec = Record::default();
        p.run(
            &super::super::Env { routes: &Default::default() },
            &mut super::super::Nat::new(1024..=2048, 4),
            &cx,
            &mut rec,
        )
    }

    #[test]
    fn from_the_parent_by_vlan_and_mac() {
        let d = table(Mode::Bridge);
        assert_eq!(run(&d, PARENT, &frame(A, LAN), None), Action::Port(2));
        assert_eq!(run(&d, PARENT, &frame(A, LAN), Some(50)), Action::Port(5), "the same MAC on VLAN 50 is C");
        assert_eq!(run(&d, PARENT, &frame(A, LAN), Some(60)), Action::Drop(DropReason::UnknownVlan));
        assert_eq!(run(&d, PARENT, &frame("02:00:00:00:00:77", LAN), None), Action::Drop(DropReason::UnknownMac));
        assert_eq!(run(&d, PARENT, &frame(BCAST, LAN), None), Action::Group(0, Reach::Endpoints, PARENT));
        assert_eq!(d.group(0, Reach::Endpoints), [2, 3, 4]);
        assert_eq!(d.group(1, Reach::Endpoints), [5]);
    }

    #[test]
    fn bridge_mode_delivers_inside() {
        let d = table(Mode::Bridge);
        assert_eq!(run(&d, 2, &frame(B, A), None), Action::Port(3));
        assert_eq!(run(&d, 2, &frame(LAN, A), None), Action::Port(PARENT));
        assert_eq!(run(&d, 2, &frame(BCAST, A), None), Action::Group(0, Reach::Everyone, 2));
        assert_eq!(d.group(0, Reach::Everyone), [PARENT, 2, 3, 4]);
        // Our own frame back from a hairpin switch: already delivered inside.
        assert_eq!(run(&d, PARENT, &frame(B, A), None), Action::Drop(DropReason::Reflected));
        // Another segment's endpoint is not a sibling: out of the parent (tagged there).
        assert_eq!(run(&d, 5, &frame(B, A), None), Action::Port(PARENT));
    }

    #[test]
    fn private_and_vepa_send_everything_out_but_to_the_host_port() {
        for mode in [Mode::Private, Mode::Vepa] {
            let d = table(mode);
            assert_eq!(run(&d, 2, &frame(B, A), None), Action::Port(PARENT), "{mode:?}");
            assert_eq!(run(&d, 2, &frame(BCAST, A), None), Action::Group(0, Reach::Outward, 2));
            assert_eq!(d.group(0, Reach::Outward), [PARENT, 4]);
            assert_eq!(run(&d, 2, &frame(H, A), None), Action::Port(4), "the host port is always inside");
            assert_eq!(run(&d, 4, &frame(A, H), None), Action::Port(2));
        }
        // Back from a hairpin switch: vepa delivers, private never does.
        assert_eq!(run(&table(Mode::Vepa), PARENT, &frame(B, A), None), Action::Port(3));
        assert_eq!(run(&table(Mode::Vepa), PARENT, &frame(BCAST, A), None), Action::Group(0, Reach::Siblings, 2));
        assert_eq!(table(Mode::Vepa).group(0, Reach::Siblings), [2, 3], "the host port had it from inside");
        // The host port's own frames never come back in: delivered inside already.
        assert_eq!(run(&table(Mode::Vepa), PARENT, &frame(BCAST, H), None), Action::Drop(DropReason::Reflected));
        assert_eq!(run(&table(Mode::Private), PARENT, &frame(B, A), None), Action::Drop(DropReason::Reflected));
    }

    #[test]
    fn passthru_gives_one_endpoint_the_parent() {
        let m = |s: &str| s.parse::<MacAddr>().unwrap();
        let d = Dispatch::build(Some(PARENT), &[(None, Mode::Passthru, vec![(2, m(A), Role::Endpoint)])]);
        assert_eq!(run(&d, PARENT, &frame("02:00:00:00:00:77", LAN), None), Action::Port(2), "any MAC");
        assert_eq!(run(&d, 2, &frame(LAN, "02:00:00:00:00:78"), None), Action::Port(PARENT), "its MAC may change");
    }

    #[test]
    fn tags_on_the_way_out_and_nowhere_else() {
        let d = table(Mode::Bridge);
        let data = frame(LAN, A);
        let f = rx(&data);
        assert_eq!(d.tagged(&f, 5).tag, Some([0x81, 0, 0, 50]));
        assert_eq!(d.tagged(&f, 2).tag, None);
        // A frame tagged by the endpoint itself cannot go into a VLAN segment, offloaded or
        // inline (a TAP's).
        assert_eq!(run(&d, 5, &data, Some(7)), Action::Drop(DropReason::UnknownVlan));
        let mut inline = data.clone();
        inline.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        assert_eq!(run(&d, 5, &inline, None), Action::Drop(DropReason::UnknownVlan));
        assert_eq!(run(&d, 2, &data, Some(7)), Action::Port(PARENT), "untagged segment: its tag passes");
        // ... and reaches a sibling with it; only a VLAN segment's members lose tags.
        assert!(!d.untags(3) && d.untags(5) && !d.untags(PARENT));
        // An 802.1ad service tag is no VLAN of ours.
        let stag = frame(A, LAN);
        let mut f = rx(&stag);
        f.tag = Some([0x88, 0xa8, 0, 50]);
        let cx = FrameCx { frame: &f, in_port: PARENT, max_frame: 1518, now: 0 };
        let p = Pipeline::Macvlan(Arc::new(d.clone()));
        let a = p.run(
            &super::super::Env { routes: &Default::default() },
            &mut super::super::Nat::new(1024..=2048, 4),
            &cx,
            &mut Record::default(),
        );
        assert_eq!(a, Action::Drop(DropReason::UnknownVlan));
    }

    #[test]
    fn no_parent_an_internal_network() {
        let m = |s: &str| s.parse::<MacAddr>().unwrap();
        let d =
            Dispatch::build(None, &[(None, Mode::Bridge, vec![(2, m(A), Role::Endpoint), (3, m(B), Role::Endpoint)])]);
        assert_eq!(run(&d, 2, &frame(B, A), None), Action::Port(3));
        assert_eq!(run(&d, 2, &frame(LAN, A), None), Action::Drop(DropReason::UnknownMac));
        assert_eq!(d.group(0, Reach::Everyone), [2, 3]);
        let _ = classify::NAME;
    }
}
