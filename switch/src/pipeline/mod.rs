//! The data plane as a pipeline of named stages, one per file, as VPP's l2 graph nodes are
//! (`l2_input`, `l2_learn`, `l2_fwd`, `l2_bvi`, `l2_output`):
//!
//! ```text
//!   classify ─▶ learn ─▶ lookup ─▶ gateway ─▶ [icc] ─▶ egress
//!   (runt,      (source   (dst MAC:  (frames for   (icc=false:  (MTU, transmit,
//!    oversize)   MAC)      port,      the switch,   endpoints    counters)
//!                          flood)     isolation,    not to each
//!                                     route/NAT)    other)
//! ```
//!
//! Each network runs the pipeline its driver chooses ([`Pipeline`]); later drivers and
//! features (route/NAT, encap/decap, MAC dispatch) come as new stages and new variants, not
//! as edits to the worker loop. A stage either decides (`ControlFlow::Break(Action)`) or
//! hands the next stage what it found (`ControlFlow::Continue`). Every drop has a typed
//! reason that belongs to one stage and is counted by the data plane.
//!
//! `explain` runs these very functions with a recording [`Observe`]; the workers pass
//! [`NoObserve`], whose empty `note` is inlined away, so nothing is written twice and
//! observing costs the data plane nothing.

pub mod classify;
pub mod dispatch;
pub mod egress;
pub mod gateway;
pub mod icc;
pub mod learn;
pub mod lookup;
pub mod route;

use crate::fdb::{Learn, MacTable, PortId};
use crate::mac::MacAddr;
use crate::port::RxFrame;
use std::ops::ControlFlow;
use std::sync::Arc;

pub use gateway::{Gateway, NetRoute, NextHop, Routes, UplinkRoute};
pub use route::Nat;

/// What the pipeline decided for a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Out of one port.
    Port(PortId),
    /// Out of every port of the network but the ingress one.
    Flood,
    /// To the switch's own host on the network (the services thread).
    Gateway,
    /// Routed out of a port of another network, with the worker's edit `.1` of this batch
    /// (new MACs, NAT) applied on the way (the route stage).
    Routed(PortId, u16),
    /// Out of the ports of macvlan segment `.0` that `.1` names, but the ingress port and
    /// `.2` (the endpoint that sent it, when a hairpin switch reflects its group frame).
    Group(u16, dispatch::Reach, PortId),
    Drop(DropReason),
}

/// Why a frame was not forwarded. Each reason belongs to the stage that drops for it; the
/// order is the order of the counters in `stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// port: the kernel dropped frames before the switch read them (its receive ring or the
    /// TAP's queue was full). Counted from the kernel's statistics, once a second.
    RxOverrun,
    /// classify: shorter than an Ethernet header.
    Runt,
    /// classify: longer than the ingress port's MTU allows (and not a GSO super-frame).
    Oversize,
    /// classify: the kernel truncated the frame (no room to copy it whole).
    Truncated,
    /// classify: the source MAC is a group address or all zeros (no station sends from
    /// one); the Linux bridge drops these too.
    BadSource,
    /// learn: a new source MAC past its port's quota (port security).
    PortQuota,
    /// lookup: IEEE 802.1D link-local destination (STP, LACP, LLDP...): never forwarded.
    LinkLocal,
    /// lookup: unicast to a MAC learned on the port it came in on.
    SamePort,
    /// gateway: to another network through the gateway; networks are isolated (as Docker's).
    Isolated,
    /// gateway: to an address the switch has no route to (the outside needs an uplink).
    NoRoute,
    /// gateway: the services queue was full (a flood of requests to the gateway).
    GatewayBusy,
    /// icc: endpoint to endpoint on a network with `icc=false`.
    IccDenied,
    /// route: the next hop, or the endpoint a reply is for, has no known MAC.
    NoNeighbor,
    /// route: not something the NAT translates (only TCP, UDP and ICMP echo; no fragments).
    NatUnsupported,
    /// route: no session, and not the first packet of one (a TCP segment without SYN).
    NatNoSession,
    /// route: the session table or the outside ports are full.
    NatLimit,
    /// route: an endpoint to its own published port (not supported yet).
    HairpinSelf,
    /// dispatch: from a macvlan parent, a VLAN (or untagged) no network on it has; from an
    /// endpoint of a VLAN network, a frame that carries a tag of its own.
    UnknownVlan,
    /// dispatch: from a macvlan parent, unicast to a MAC no endpoint has.
    UnknownMac,
    /// dispatch: from a macvlan parent, an endpoint's own frame come back (a hairpin switch)
    /// in bridge or private mode.
    Reflected,
    /// egress: too big for the egress port's MTU.
    TooBigForEgress,
    /// egress: the egress port's transmit ring was full or the write failed.
    TxError,
}

impl DropReason {
    pub const ALL: [DropReason; 22] = [
        DropReason::RxOverrun,
        DropReason::Runt,
        DropReason::Oversize,
        DropReason::Truncated,
        DropReason::BadSource,
        DropReason::PortQuota,
        DropReason::LinkLocal,
        DropReason::SamePort,
        DropReason::Isolated,
        DropReason::NoRoute,
        DropReason::GatewayBusy,
        DropReason::IccDenied,
        DropReason::NoNeighbor,
        DropReason::NatUnsupported,
        DropReason::NatNoSession,
        DropReason::NatLimit,
        DropReason::HairpinSelf,
        DropReason::UnknownVlan,
        DropReason::UnknownMac,
        DropReason::Reflected,
        DropReason::TooBigForEgress,
        DropReason::TxError,
    ];

    /// The counter's name in `stats` and `explain`.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::RxOverrun => "rx_overrun",
            DropReason::Runt => "runt",
            DropReason::Oversize => "oversize",
            DropReason::Truncated => "truncated",
            DropReason::BadSource => "bad_source",
            DropReason::PortQuota => "port_quota",
            DropReason::LinkLocal => "link_local",
            DropReason::SamePort => "same_port",
            DropReason::Isolated => "isolated",
            DropReason::NoRoute => "no_route",
            DropReason::GatewayBusy => "gateway_busy",
            DropReason::IccDenied => "icc_denied",
            DropReason::NoNeighbor => "no_neighbor",
            DropReason::NatUnsupported => "nat_unsupported",
            DropReason::NatNoSession => "nat_no_session",
            DropReason::NatLimit => "nat_limit",
            DropReason::HairpinSelf => "hairpin_self",
            DropReason::UnknownVlan => "unknown_vlan",
            DropReason::UnknownMac => "unknown_mac",
            DropReason::Reflected => "reflected",
            DropReason::TooBigForEgress => "too_big_for_egress",
            DropReason::TxError => "tx_error",
        }
    }

    /// The stage that drops for this reason.
    pub fn stage(self) -> &'static str {
        match self {
            DropReason::RxOverrun => "port",
            DropReason::Runt | DropReason::Oversize | DropReason::Truncated | DropReason::BadSource => classify::NAME,
            DropReason::PortQuota => learn::NAME,
            DropReason::LinkLocal | DropReason::SamePort => lookup::NAME,
            DropReason::Isolated | DropReason::NoRoute | DropReason::GatewayBusy => gateway::NAME,
            DropReason::IccDenied => icc::NAME,
            DropReason::NoNeighbor
            | DropReason::NatUnsupported
            | DropReason::NatNoSession
            | DropReason::NatLimit
            | DropReason::HairpinSelf => route::NAME,
            DropReason::UnknownVlan | DropReason::UnknownMac | DropReason::Reflected => dispatch::NAME,
            DropReason::TooBigForEgress | DropReason::TxError => egress::NAME,
        }
    }
}

/// What a stage found, for an observer (`explain`). Plain data: building one costs nothing
/// the optimizer cannot remove when the observer ignores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    Dropped(DropReason),
    /// learn: what learning the source did.
    Learned(MacAddr, Learn),
    /// lookup: the destination is on this port.
    Found(MacAddr, PortId),
    /// lookup: the destination is not in the table: flood.
    Unknown(MacAddr),
    /// lookup: a group destination: flood.
    Group(MacAddr),
    /// gateway: the frame is for the switch's own host on the network.
    ForGateway(GatewayWhy),
    /// egress: sent out of this port.
    Out(PortId),
    /// egress: not sent out of this port: its largest frame is smaller.
    TooBig(PortId, usize),
    /// egress: handed to the services thread.
    ToServices,
    /// route: translated and routed out of this port.
    Routed(PortId),
}

/// Why the gateway stage took a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayWhy {
    /// Sent to the gateway's MAC and addressed to it (or ARP).
    Unicast,
    /// An ARP request for the gateway's IPv4 address.
    ArpRequest,
    /// An IPv6 neighbour solicitation for the gateway's IPv6 address.
    NeighborSolicit,
    /// To be routed, but its TTL runs out here: the gateway answers "time exceeded".
    TtlExpired,
}

/// Sees what each stage found. The workers use [`NoObserve`]; `explain` records.
pub trait Observe {
    fn note(&mut self, stage: &'static str, note: Note);
}

/// The workers' observer: does nothing, and is compiled away.
pub struct NoObserve;

impl Observe for NoObserve {
    #[inline(always)]
    fn note(&mut self, _: &'static str, _: Note) {}
}

/// What a MAC table is to the stages: the live `MacTable` in the workers, a dry-run view
/// of it in `explain`.
pub trait Table {
    fn learn(&self, mac: MacAddr, port: PortId, now: u32) -> Learn;
    fn lookup(&self, mac: MacAddr) -> Option<PortId>;
}

impl Table for MacTable {
    #[inline]
    fn learn(&self, mac: MacAddr, port: PortId, now: u32) -> Learn {
        MacTable::learn(self, mac, port, now)
    }
    #[inline]
    fn lookup(&self, mac: MacAddr) -> Option<PortId> {
        MacTable::lookup(self, mac)
    }
}

/// One frame as the stages see it: borrowed from its batch, with where it came from.
pub struct FrameCx<'f, 'a> {
    pub frame: &'f RxFrame<'a>,
    pub in_port: PortId,
    /// The ingress port's largest frame (GSO frames aside).
    pub max_frame: usize,
    /// Seconds, `crate::clock::now`, read once per batch.
    pub now: u32,
}

/// A network's pipeline, chosen by its driver.
#[derive(Clone)]
pub enum Pipeline {
    /// A learning L2 switch with the switch's own gateway on it.
    Bridge(Bridge),
    /// The macvlan networks of one parent interface: frames dispatched by MAC.
    Macvlan(Arc<dispatch::Dispatch>),
}

#[derive(Clone)]
pub struct Bridge {
    pub table: Arc<MacTable>,
    pub gateway: Option<Gateway>,
    /// Endpoints may reach each other (Docker's icc; false runs the `icc` stage).
    pub icc: bool,
}

/// What a pipeline needs from outside its network.
pub struct Env<'a> {
    /// Every network's subnets: the gateway stage tells "another network" from "outside".
    pub routes: &'a Routes,
}

impl Pipeline {
    /// Warm the table lines a batch will touch (see `MacTable::prefetch`), if that pays.
    #[inline]
    pub fn prefetch(&self, batch: &[RxFrame]) {
        match self {
            Pipeline::Bridge(b) => lookup::prefetch(&b.table, batch),
            Pipeline::Macvlan(_) => {}
        }
    }

    /// Run one frame through the stages with the network's live table and the worker's NAT.
    #[inline]
    pub fn run<O: Observe>(&self, env: &Env, nat: &mut Nat, cx: &FrameCx, obs: &mut O) -> Action {
        match self {
            Pipeline::Bridge(b) => b.run(&*b.table, env, nat, cx, obs),
            Pipeline::Macvlan(d) => macvlan(d, cx, obs),
        }
    }

    /// The same over other views of the table and NAT (explain's dry run).
    pub fn run_with<T: Table, O: Observe>(
        &self,
        table: &T,
        env: &Env,
        nat: &mut Nat,
        cx: &FrameCx,
        obs: &mut O,
    ) -> Action {
        match self {
            Pipeline::Bridge(b) => b.run(table, env, nat, cx, obs),
            Pipeline::Macvlan(d) => macvlan(d, cx, obs),
        }
    }

    /// The learning table (a bridge's; macvlan networks learn nothing).
    pub fn table(&self) -> Option<&Arc<MacTable>> {
        match self {
            Pipeline::Bridge(b) => Some(&b.table),
            Pipeline::Macvlan(_) => None,
        }
    }

    pub fn gateway(&self) -> Option<&Gateway> {
        match self {
            Pipeline::Bridge(b) => b.gateway.as_ref(),
            Pipeline::Macvlan(_) => None,
        }
    }

    /// The ports a flooding action goes to: the network's members, or a macvlan segment's.
    #[inline]
    pub fn members<'a>(&'a self, action: Action, all: &'a [PortId]) -> &'a [PortId] {
        match (self, action) {
            (Pipeline::Macvlan(d), Action::Group(seg, reach, _)) => d.group(seg, reach),
            _ => all,
        }
    }

    /// The frame as egress sends it: on a macvlan VLAN segment an endpoint's frame gets the
    /// segment's tag (for the parent; `untags` takes it off for endpoints).
    #[inline]
    pub fn egress_view<'a>(&self, f: &RxFrame<'a>, in_port: PortId) -> RxFrame<'a> {
        match self {
            Pipeline::Bridge(_) => *f,
            Pipeline::Macvlan(d) => d.tagged(f, in_port),
        }
    }

    /// Whether frames out of `port` lose their VLAN tag (a member of a macvlan VLAN segment:
    /// the tag belongs to the parent's wire).
    #[inline]
    pub fn untags(&self, port: PortId) -> bool {
        match self {
            Pipeline::Bridge(_) => false,
            Pipeline::Macvlan(d) => d.untags(port),
        }
    }
}

#[inline]
fn macvlan<O: Observe>(d: &dispatch::Dispatch, cx: &FrameCx, obs: &mut O) -> Action {
    let mut steps = || -> ControlFlow<Action, Action> {
        let eth = classify::run(cx, obs)?;
        d.run(cx, &eth, obs)
    };
    match steps() {
        ControlFlow::Break(a) | ControlFlow::Continue(a) => a,
    }
}

impl Bridge {
    #[inline]
    fn run<T: Table, O: Observe>(&self, table: &T, env: &Env, nat: &mut Nat, cx: &FrameCx, obs: &mut O) -> Action {
        let mut steps = || -> ControlFlow<Action, Action> {
            let eth = classify::run(cx, obs)?;
            learn::run(table, cx, &eth, obs)?;
            let mut action = lookup::run(table, cx, &eth, obs)?;
            if let Some(gw) = &self.gateway {
                action = gateway::run(gw, env.routes, nat, cx, &eth, action, obs)?;
            }
            if !self.icc {
                action = icc::run(cx, action, obs)?;
            }
            ControlFlow::Continue(action)
        };
        match steps() {
            ControlFlow::Break(a) | ControlFlow::Continue(a) => a,
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Frames and a recording observer for the stages' tests.
    use super::*;
    use crate::frame::VnetHdr;

    #[derive(Default)]
    pub struct Record(pub Vec<(&'static str, Note)>);

    impl Observe for Record {
        fn note(&mut self, stage: &'static str, note: Note) {
            self.0.push((stage, note));
        }
    }

    pub fn rx(data: &[u8]) -> RxFrame<'_> {
        RxFrame::new(VnetHdr::default(), data, None)
    }

    /// Run `data` from `in_port` through a bridge pipeline over `table`.
    pub fn run(p: &Pipeline, routes: &Routes, in_port: PortId, data: &[u8]) -> (Action, Vec<(&'static str, Note)>) {
        let f = rx(data);
        let cx = FrameCx { frame: &f, in_port, max_frame: 1518, now: 0 };
        let mut rec = Record::default();
        let a = p.run(&Env { routes }, &mut Nat::new(1024..=65535, 16), &cx, &mut rec);
        (a, rec.0)
    }

    pub fn bridge(gateway: Option<Gateway>) -> Pipeline {
        bridge_with(gateway, true)
    }

    pub fn bridge_with(gateway: Option<Gateway>, icc: bool) -> Pipeline {
        Pipeline::Bridge(Bridge { table: Arc::new(MacTable::new(1024)), gateway, icc })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::frame::test_frame as frame;

    const A: &str = "02:00:00:00:00:0a";
    const B: &str = "02:00:00:00:00:0b";

    #[test]
    fn learn_then_unicast() {
        let p = bridge(None);
        let r = Routes::default();
        let (a, notes) = run(&p, &r, 1, &frame("ff:ff:ff:ff:ff:ff", A));
        assert_eq!(a, Action::Flood);
        assert!(notes.contains(&("learn", Note::Learned(A.parse().unwrap(), Learn::New))));
        // Unknown unicast floods; the reply is then unicast back to A's port.
        assert_eq!(run(&p, &r, 2, &frame(A, B)).0, Action::Port(1));
        assert_eq!(run(&p, &r, 1, &frame(B, A)).0, Action::Port(2));
        assert_eq!(run(&p, &r, 1, &frame("02:00:00:00:00:0c", A)).0, Action::Flood);
    }

    #[test]
    fn never_back_out_of_ingress() {
        let p = bridge(None);
        let r = Routes::default();
        run(&p, &r, 1, &frame("ff:ff:ff:ff:ff:ff", A));
        run(&p, &r, 1, &frame("ff:ff:ff:ff:ff:ff", B));
        assert_eq!(run(&p, &r, 1, &frame(A, B)).0, Action::Drop(DropReason::SamePort));
    }

    #[test]
    fn mac_move_follows_at_once() {
        let p = bridge(None);
        let r = Routes::default();
        run(&p, &r, 1, &frame("ff:ff:ff:ff:ff:ff", A));
        let (_, notes) = run(&p, &r, 3, &frame("ff:ff:ff:ff:ff:ff", A));
        assert!(notes.contains(&("learn", Note::Learned(A.parse().unwrap(), Learn::Moved))));
        assert_eq!(run(&p, &r, 2, &frame(A, B)).0, Action::Port(3));
    }

    #[test]
    fn group_and_zero_sources_are_dropped_unlearned() {
        let p = bridge(None);
        for src in ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"] {
            let (a, notes) = run(&p, &Routes::default(), 1, &frame(B, src));
            assert_eq!(a, Action::Drop(DropReason::BadSource), "{src}");
            assert_eq!(notes, [("classify", Note::Dropped(DropReason::BadSource))]);
        }
        assert_eq!(p.table().unwrap().learned(), 0);
    }

    #[test]
    fn drops_name_their_stage() {
        let p = bridge(None);
        let r = Routes::default();
        let (a, notes) = run(&p, &r, 1, &frame("01:80:c2:00:00:00", A));
        assert_eq!(a, Action::Drop(DropReason::LinkLocal));
        assert_eq!(notes.last(), Some(&("lookup", Note::Dropped(DropReason::LinkLocal))));
        assert_eq!(p.table().unwrap().learned(), 1, "a link-local frame's source is learned, as the Linux bridge does");
        let (a, notes) = run(&p, &r, 1, &[0u8; 10]);
        assert_eq!(a, Action::Drop(DropReason::Runt));
        assert_eq!(notes, [("classify", Note::Dropped(DropReason::Runt))]);
        for why in DropReason::ALL {
            assert!(["port", "classify", "learn", "lookup", "gateway", "icc", "route", "dispatch", "egress"]
                .contains(&why.stage()));
        }
    }
}
