//! The connection table: sessions, the index that finds them from either direction's key,
//! port allocation for SNAT, and expiry.
//!
//! Shaped after OVS userspace conntrack (one session, two keys in one index: the original
//! and the reply) and VPP NAT44-ED (one table per worker, each owning a slice of the outside
//! ports so a reply's destination port names its owner; expiry lists per timeout class).
//! A table belongs to one thread: nothing here locks. Memory is reserved up front for the
//! session cap, so creating a session never allocates on the packet path.

use std::hash::BuildHasher;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::checksum::Csum;
use crate::key::{Endpoint, FlowKey, Proto};
use crate::packet::{self, Kind, Unsupported};
use crate::ports::PortSet;
use crate::state::{Dir, State, Timeouts};

/// What a session's creator (the switch's policy) asks for a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Track and translate: the source to `snat` (with a port from this table's range), the
    /// destination to `dnat`, or both (hairpin). `tag` groups sessions (a network) for the
    /// per-tag cap and for removal.
    Translate { tag: u16, snat: Option<Ipv4Addr>, dnat: Option<Endpoint> },
    /// Not a NAT flow: forward unchanged, keep no state.
    Pass,
    /// Refused by policy.
    Drop,
}

/// What became of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten by the session it belongs to.
    Translated(Dir),
    /// Belongs to no session and needs none: forward as it is.
    Untracked,
    Dropped(Refused),
}

/// Why a packet was dropped; each is a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("cannot translate: {0}")]
    Unsupported(Unsupported),
    #[error("no session and not the start of one")]
    NoSession,
    #[error("refused by policy")]
    Policy,
    #[error("session limit reached")]
    SessionLimit,
    #[error("no outside port free")]
    PortsExhausted,
    #[error("its reply would be another session's")]
    Clash,
}

/// What a translation changes in a packet, found by [`Conntrack::track`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edit {
    p: packet::Parsed,
    /// The packet's new key (for an ICMP error: its outer addresses).
    to: FlowKey,
    /// For an ICMP error: what the packet it quotes becomes.
    inner: Option<FlowKey>,
    len: usize,
}

impl Edit {
    /// The bytes from the start of the IPv4 header that the edit reads and writes: the
    /// headers up to the L4 checksum (the whole packet for an ICMP error, whose checksum is
    /// summed afresh). The rest of the packet is unchanged.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the packet goes once edited.
    pub fn destination(&self) -> Ipv4Addr {
        self.to.dst.addr
    }

    /// Change `buf`, the packet's first [`len`](Self::len) bytes or more.
    pub fn apply(&self, buf: &mut [u8], csum: Csum) {
        match &self.inner {
            None => packet::rewrite(buf, &self.p, &self.to, csum),
            Some(inner) => packet::rewrite_icmp_error(buf, &self.p, &self.to, inner),
        }
    }
}

/// A table's bounds and timeouts.
#[derive(Clone, Debug)]
pub struct Config {
    pub max_sessions: u32,
    /// At most this many sessions per tag (0: only `max_sessions`).
    pub max_per_tag: u32,
    /// The outside ports this table hands out for SNAT.
    pub ports: RangeInclusive<u16>,
    pub timeouts: Timeouts,
}

impl Default for Config {
    fn default() -> Config {
        Config { max_sessions: 65536, max_per_tag: 0, ports: 1024..=65535, timeouts: Timeouts::default() }
    }
}

/// Counters, one per event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub created: u64,
    pub expired: u64,
    pub removed: u64,
    pub session_limit: u64,
    pub ports_exhausted: u64,
    pub clash: u64,
}

/// A session as `sessions` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: u32,
    pub tag: u16,
    /// The connection as its opener sent it.
    pub orig: FlowKey,
    /// The connection's replies as they arrive, before translation.
    pub reply: FlowKey,
    pub state: State,
    pub last_seen: u32,
}

/// The end of an expiry list.
const NIL: u32 = u32::MAX;
/// How many outside ports a new mapping tries before it gives up.
const PORT_PROBES: u32 = 512;

/// A connection: its two keys, state and place in its state's expiry list. 48 bytes.
#[derive(Clone, Copy, Debug)]
struct Session {
    keys: [FlowKey; 2],
    last_seen: u32,
    /// When it was (re)placed at the tail of its list: the list is ordered by this.
    positioned: u32,
    prev: u32,
    next: u32,
    tag: u16,
    state: State,
    /// Which directions have sent FIN (bit per `Dir`).
    fins: u8,
}

#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
}

pub struct Conntrack {
    sessions: Vec<Session>,
    /// Freed slots, reused before `sessions` grows.
    free: Vec<u32>,
    /// Either direction's key to `session << 1 | dir`.
    index: HashMap<FlowKey, u32>,
    lists: [List; State::COUNT],
    per_tag: Vec<u32>,
    cfg: Config,
    /// Ports SNAT never hands out (published ones).
    reserved: Option<Arc<PortSet>>,
    pub stats: Stats,
}

impl Conntrack {
    pub fn new(cfg: Config) -> Conntrack {
        let max = cfg.max_sessions as usize;
        Conntrack {
            sessions: Vec::with_capacity(max),
            free: Vec::with_capacity(max),
            index: HashMap::with_capacity(2 * max),
            lists: [List { head: NIL, tail: NIL }; State::COUNT],
            per_tag: Vec::new(),
            cfg,
            reserved: None,
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Ports SNAT must leave alone (published host ports: their traffic is DNAT's).
    pub fn set_reserved(&mut self, ports: Option<Arc<PortSet>>) {
        self.reserved = ports;
    }

    /// New timeouts; sessions already placed in an expiry list go by the new ones too.
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.cfg.timeouts = t;
    }

    /// Bytes the table has allocated (sessions, free list, index), whether used or not.
    pub fn memory(&self) -> usize {
        self.sessions.capacity() * std::mem::size_of::<Session>()
            + self.free.capacity() * 4
            + self.index.allocation_size()
            + self.per_tag.capacity() * 4
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session `key` belongs to, and the direction it goes.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<(u32, Dir)> {
        self.index.get(key).map(|&v| (v >> 1, if v & 1 == 0 { Dir::Orig } else { Dir::Reply }))
    }

    /// Translate one packet (starting at its IPv4 header) in place. A packet of a known
    /// session is rewritten and refreshes it; the first packet of a flow asks `decide`.
    pub fn translate(
        &mut self,
        buf: &mut [u8],
        csum: Csum,
        now: u32,
        decide: impl FnOnce(&FlowKey) -> Decision,
    ) -> Verdict {
        let (verdict, edit) = self.track(buf, now, decide);
        if let Some(e) = edit {
            e.apply(buf, csum);
        }
        verdict
    }

    /// [`translate`](Self::translate) in two steps, for a packet that cannot be written in
    /// place (a frame in a receive ring): find or create its session and say what to change;
    /// [`Edit::apply`] then changes a copy of the packet's first [`Edit::len`] bytes.
    pub fn track(
        &mut self,
        buf: &[u8],
        now: u32,
        decide: impl FnOnce(&FlowKey) -> Decision,
    ) -> (Verdict, Option<Edit>) {
        let p = match packet::parse(buf) {
            Ok(p) => p,
            Err(e) => return (Verdict::Dropped(Refused::Unsupported(e)), None),
        };
        if let Kind::IcmpError { inner } = p.kind {
            // The quoted packet went the other way: its reversed key is this error's flow.
            let Some((id, dir)) = self.lookup(&inner.reversed()) else { return (Verdict::Untracked, None) };
            let s = &self.sessions[id as usize];
            let (this, other) = (s.keys[dir as usize], s.keys[dir.other() as usize]);
            let mut outer = p.key;
            if outer.src.addr == this.src.addr {
                outer.src.addr = other.dst.addr;
            }
            if outer.dst.addr == this.dst.addr {
                outer.dst.addr = other.src.addr;
            }
            let len = packet::total_len(buf);
            return (Verdict::Translated(dir), Some(Edit { p, to: outer, inner: Some(other), len }));
        }
        let (id, dir) = match self.lookup(&p.key) {
            Some(hit) => hit,
            None => {
                let starts = match p.kind {
                    Kind::Tcp(f) => f.syn && !f.ack && !f.rst,
                    Kind::Echo { request } => request,
                    Kind::Udp => true,
                    Kind::IcmpError { .. } => false,
                };
                match decide(&p.key) {
                    Decision::Pass => return (Verdict::Untracked, None),
                    Decision::Drop => return (Verdict::Dropped(Refused::Policy), None),
                    Decision::Translate { .. } if !starts => return (Verdict::Dropped(Refused::NoSession), None),
                    Decision::Translate { tag, snat, dnat } => match self.create(p.key, tag, snat, dnat, now) {
                        Ok(id) => (id, Dir::Orig),
                        Err(e) => return (Verdict::Dropped(e), None),
                    },
                }
            }
        };
        let s = &mut self.sessions[id as usize];
        s.last_seen = now;
        let state = match p.kind {
            Kind::Tcp(flags) => s.state.after_tcp(dir, flags, &mut s.fins),
            Kind::Udp => s.state.after_udp(dir),
            _ => s.state,
        };
        let to = s.keys[dir.other() as usize].reversed();
        if state != s.state {
            self.move_to(id, state, now);
        }
        let len = p.rewritten_len();
        (Verdict::Translated(dir), Some(Edit { p, to, inner: None, len }))
    }

    /// A new session for the flow `orig`, its source translated to `snat` (a port from this
    /// table's range; the original port when it is free and in range) and its destination
    /// to `dnat`.
    pub fn create(
        &mut self,
        orig: FlowKey,
        tag: u16,
        snat: Option<Ipv4Addr>,
        dnat: Option<Endpoint>,
        now: u32,
    ) -> Result<u32, Refused> {
        if self.len() >= self.cfg.max_sessions as usize
            || (self.cfg.max_per_tag != 0 && self.tag_count(tag) >= self.cfg.max_per_tag)
        {
            self.stats.session_limit += 1;
            return Err(Refused::SessionLimit);
        }
        let remote = dnat.unwrap_or(orig.dst);
        let local = match snat {
            Some(addr) => match self.free_port(orig.proto, remote, addr, orig.src.port) {
                Some(port) => Endpoint::new(addr, port),
                None => {
                    self.stats.ports_exhausted += 1;
                    return Err(Refused::PortsExhausted);
                }
            },
            None => orig.src,
        };
        let reply = FlowKey::new(orig.proto, remote, local);
        if self.index.contains_key(&reply) || self.index.contains_key(&orig) {
            self.stats.clash += 1;
            return Err(Refused::Clash);
        }
        let state = match orig.proto {
            Proto::Tcp => State::TcpSynSent,
            Proto::Udp => State::UdpNew,
            Proto::Icmp => State::Icmp,
        };
        let session =
            Session { keys: [orig, reply], last_seen: now, positioned: now, prev: NIL, next: NIL, tag, state, fins: 0 };
        let id = match self.free.pop() {
            Some(id) => {
                self.sessions[id as usize] = session;
                id
            }
            None => {
                self.sessions.push(session);
                (self.sessions.len() - 1) as u32
            }
        };
        self.index.insert(orig, id << 1);
        self.index.insert(reply, id << 1 | 1);
        self.push_back(id);
        *self.tag_slot(tag) += 1;
        self.stats.created += 1;
        Ok(id)
    }

    /// An outside port on `addr` not yet used toward `remote`: `want` if it is in range and
    /// free, else the first free one from a hashed start.
    fn free_port(&self, proto: Proto, remote: Endpoint, addr: Ipv4Addr, want: u16) -> Option<u16> {
        let (lo, hi) = (u32::from(*self.cfg.ports.start()), u32::from(*self.cfg.ports.end()));
        if lo > hi {
            return None;
        }
        let span = hi - lo + 1;
        let start = if (lo..=hi).contains(&u32::from(want)) {
            u32::from(want) - lo
        } else {
            (self.index.hasher().hash_one((remote, want)) % u64::from(span)) as u32
        };
        let reserved = |port| self.reserved.as_ref().is_some_and(|r| r.contains(port));
        (0..span.min(PORT_PROBES)).map(|i| (lo + (start + i) % span) as u16).find(|&port| {
            !reserved(port) && !self.index.contains_key(&FlowKey::new(proto, remote, Endpoint::new(addr, port)))
        })
    }

    /// Expire sessions idle past their state's timeout; at most `budget` list heads are
    /// looked at, so a worker can call this between batches. Returns how many went.
    pub fn expire(&mut self, now: u32, mut budget: usize) -> usize {
        let mut gone = 0;
        for (i, state) in ALL_STATES.iter().enumerate() {
            let timeout = self.cfg.timeouts.of(*state);
            while budget > 0 {
                let id = self.lists[i].head;
                if id == NIL {
                    break;
                }
                let s = self.sessions[id as usize];
                // Sessions behind the head were placed later: if the head may not go yet,
                // none of them may.
                if now.wrapping_sub(s.positioned) < timeout {
                    break;
                }
                budget -= 1;
                if now.wrapping_sub(s.last_seen) >= timeout {
                    self.free_session(id);
                    self.stats.expired += 1;
                    gone += 1;
                } else {
                    // Used since it was placed: place it again, by its last use.
                    self.unlink(id);
                    self.sessions[id as usize].positioned = s.last_seen;
                    self.push_back(id);
                }
            }
        }
        gone
    }

    /// Remove every session `pred` picks (a port unpublished, a network gone).
    pub fn remove_where(&mut self, mut pred: impl FnMut(&SessionInfo) -> bool) -> usize {
        let doomed: Vec<u32> = self.sessions().filter(|s| pred(s)).map(|s| s.id).collect();
        for &id in &doomed {
            self.free_session(id);
        }
        self.stats.removed += doomed.len() as u64;
        doomed.len()
    }

    /// Every live session, oldest placed first within each state.
    pub fn sessions(&self) -> impl Iterator<Item = SessionInfo> + '_ {
        self.lists.iter().flat_map(move |l| {
            std::iter::successors((l.head != NIL).then_some(l.head), move |&id| {
                let next = self.sessions[id as usize].next;
                (next != NIL).then_some(next)
            })
            .map(move |id| {
                let s = &self.sessions[id as usize];
                SessionInfo {
                    id,
                    tag: s.tag,
                    orig: s.keys[0],
                    reply: s.keys[1],
                    state: s.state,
                    last_seen: s.last_seen,
                }
            })
        })
    }

    /// Sessions held for `tag`.
    pub fn tag_count(&self, tag: u16) -> u32 {
        self.per_tag.get(usize::from(tag)).copied().unwrap_or(0)
    }

    fn tag_slot(&mut self, tag: u16) -> &mut u32 {
        let i = usize::from(tag);
        if i >= self.per_tag.len() {
            // Grows once per new tag (a network), never per packet.
            self.per_tag.resize(i + 1, 0);
        }
        &mut self.per_tag[i]
    }

    fn free_session(&mut self, id: u32) {
        self.unlink(id);
        let s = self.sessions[id as usize];
        self.index.remove(&s.keys[0]);
        self.index.remove(&s.keys[1]);
        *self.tag_slot(s.tag) -= 1;
        self.free.push(id);
    }

    fn move_to(&mut self, id: u32, state: State, now: u32) {
        self.unlink(id);
        let s = &mut self.sessions[id as usize];
        s.state = state;
        s.positioned = now;
        self.push_back(id);
    }

    fn push_back(&mut self, id: u32) {
        let list = self.sessions[id as usize].state as usize;
        let tail = self.lists[list].tail;
        {
            let s = &mut self.sessions[id as usize];
            s.prev = tail;
            s.next = NIL;
        }
        match tail {
            NIL => self.lists[list].head = id,
            t => self.sessions[t as usize].next = id,
        }
        self.lists[list].tail = id;
    }

    fn unlink(&mut self, id: u32) {
        let Session { prev, next, state, .. } = self.sessions[id as usize];
        let list = &mut self.lists[state as usize];
        match prev {
            NIL => list.head = next,
            p => self.sessions[p as usize].next = next,
        }
        match next {
            NIL => self.lists[state as usize].tail = prev,
            n => self.sessions[n as usize].prev = prev,
        }
    }
}

const ALL_STATES: [State; State::COUNT] = [
    State::TcpSynSent,
    State::TcpEstablished,
    State::TcpFinWait,
    State::TcpTimeWait,
    State::TcpClosed,
    State::UdpNew,
    State::UdpReplied,
    State::Icmp,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Session>(), 48);
    }
}
