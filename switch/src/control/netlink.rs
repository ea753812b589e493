//! rtnetlink from the daemon, synchronously: links, addresses and routes through the typed
//! messages of `netlink-packet-route` over a `netlink-sys` socket (no `ip` subprocesses, no
//! async runtime). A socket belongs to the network namespace of the thread that opened it:
//! `Rtnl::open_in` opens one inside an endpoint's namespace to configure its interface.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as Rt};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The kernel refused (NLMSG_ERROR); with its extended-ack text when it gave one.
    #[error("{}{}", io::Error::from_raw_os_error(*errno), text.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Kernel { errno: i32, text: Option<String> },
    #[error("unreadable netlink message: {0}")]
    Decode(String),
}

impl Error {
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Io(e) => e.raw_os_error(),
            Error::Decode(_) => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A link as the daemon cares about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
}

impl Link {
    pub fn from_message(l: &LinkMessage) -> Link {
        let mut out = Link { index: l.header.index, name: String::new(), mtu: 0 };
        for a in &l.attributes {
            match a {
                LinkAttribute::IfName(n) => out.name = n.clone(),
                LinkAttribute::Mtu(m) => out.mtu = *m,
                _ => {}
            }
        }
        out
    }
}

/// One end of a veth pair to create inside a namespace.
pub struct VethPeer<'a> {
    pub name: &'a str,
    pub mac: [u8; 6],
    pub netns: &'a File,
}

/// A request/answer rtnetlink socket.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // The kernel's own words for a refusal ("Nexthop has invalid gateway"), not just errno.
        sock.set_ext_ack(true)?;
        sock.set_cap_ack(true)?;
        Ok(Rtnl { sock, seq: 0, buf: vec![0; 64 * 1024] })
    }

    /// A socket inside the network namespace `ns` (it stays there for its whole life).
    pub fn open_in(ns: &File) -> Result<Rtnl> {
        in_netns(ns, Rtnl::open)
    }

    /// Send one request; collect the answers until the ack, the end of a dump, or an error.
    fn request(&mut self, msg: Rt, flags: u16) -> Result<Vec<Rt>> {
        self.seq = self.seq.wrapping_add(1);
        let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        nl.header.flags = NLM_F_REQUEST | flags;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        self.sock.send(&out, 0)?;
        let mut replies = Vec::new();
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let mut off = 0;
            while off + 16 <= n {
                let m =
                    NetlinkMessage::<Rt>::deserialize(&self.buf[off..n]).map_err(|e| Error::Decode(e.to_string()))?;
                let len = m.header.length as usize;
                if len < 16 {
                    break;
                }
                off += (len + 3) & !3;
                if m.header.sequence_number != self.seq {
                    continue; // an answer to an earlier request
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(r) => replies.push(r),
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(c) => {
                                Err(Error::Kernel { errno: -c.get(), text: ext_ack_text(m.header.flags, &e.header) })
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    pub fn link(&mut self, name: &str) -> Result<Link> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        match self.request(Rt::GetLink(m), NLM_F_ACK)?.pop() {
            Some(Rt::NewLink(l)) => Ok(Link::from_message(&l)),
            other => Err(Error::Decode(format!("unexpected answer to RTM_GETLINK: {other:?}"))),
        }
    }

    /// Every link of this socket's namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let replies = self.request(Rt::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                Rt::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(Rt::SetLink(m), NLM_F_ACK).map(drop)
    }

    /// A veth pair: `host` in this socket's namespace, `peer` created directly inside its
    /// namespace with its MAC; both with `mtu`.
    pub fn create_veth(&mut self, host: &str, peer: &VethPeer, mtu: u32) -> Result<()> {
        let mut p = LinkMessage::default(); // VETH_INFO_PEER: a whole ifinfomsg with attributes
        p.attributes = vec![
            LinkAttribute::IfName(peer.name.into()),
            LinkAttribute::Address(peer.mac.to_vec()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::NetNsFd(peer.netns.as_raw_fd()),
        ];
        let mut m = LinkMessage::default();
        m.attributes = vec![
            LinkAttribute::IfName(host.into()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
            ]),
        ];
        self.request(Rt::NewLink(m), NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK).map(drop)
    }

    pub fn delete_link(&mut self, name: &str) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        self.request(Rt::DelLink(m), NLM_F_ACK).map(drop)
    }

    /// Add `ip/prefix` to link `index`; IPv6 without duplicate address detection (the
    /// switch's IPAM already made it unique), so it is usable at once.
    pub fn add_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        m.header.prefix_len = prefix;
        m.header.index = index;
        if ip.is_ipv4() {
            m.attributes.push(AddressAttribute::Local(ip)); // as iproute2 sends it
        } else {
            m.header.flags = AddressHeaderFlags::Nodad;
            m.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        m.attributes.push(AddressAttribute::Address(ip));
        self.request(Rt::NewAddress(m), NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK).map(drop)
    }

    /// A default route via `gateway` out of link `index` (the link must be up).
    pub fn add_default_route(&mut self, index: u32, gateway: IpAddr) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = if gateway.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Gateway(gateway.into()));
        m.attributes.push(RouteAttribute::Oif(index));
        self.request(Rt::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK).map(drop)
    }
}

/// The text of an extended ack (NLMSGERR_ATTR_MSG) after the echoed request header.
fn ext_ack_text(flags: u16, p: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || p.len() < 16 {
        return None;
    }
    let skip =
        if flags & NLM_F_CAPPED != 0 { 16 } else { (u32::from_ne_bytes(p[0..4].try_into().ok()?) as usize + 3) & !3 };
    NlasIterator::new(p.get(skip..)?)
        .filter_map(|n| n.ok())
        .find(|n| n.kind() == 1)
        .map(|n| String::from_utf8_lossy(n.value()).trim_end_matches('\0').to_string())
}

/// Run `f` on a thread that entered the network namespace `ns`; sockets it opens stay there.
pub fn in_netns<T: Send>(ns: &File, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let fd: RawFd = ns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a descriptor we hold open; it changes only this thread, which
            // ends when `f` returns.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } < 0 {
                return Err(Error::Io(io::Error::last_os_error()));
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Decode("netlink helper thread panicked".into())))
    })
}

/// Link events (created, changed, deleted) of the daemon's namespace, read by `next`.
pub struct LinkEvents {
    sock: Socket,
    buf: Vec<u8>,
}

/// What happened to a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// Created or changed (MTU, flags, name).
    Changed(Link),
    Deleted(Link),
    /// Events were lost (the socket's buffer overflowed): every link must be looked at.
    Lost,
}

impl LinkEvents {
    pub fn subscribe() -> Result<LinkEvents> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.add_membership(libc::RTNLGRP_LINK)?;
        sock.set_rx_buf_sz(4usize << 20)?;
        Ok(LinkEvents { sock, buf: vec![0; 64 * 1024] })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Wait up to `timeout_ms` for events; returns what arrived (empty on timeout).
    pub fn next(&mut self, timeout_ms: i32) -> Result<Vec<LinkEvent>> {
        let mut pfd = libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd.
        if unsafe { libc::poll(&mut pfd, 1, timeout_ms) } <= 0 {
            return Ok(vec![]);
        }
        let n = match self.sock.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(vec![LinkEvent::Lost]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        let mut off = 0;
        while off + 16 <= n {
            let Ok(m) = NetlinkMessage::<Rt>::deserialize(&self.buf[off..n]) else { break };
            let len = m.header.length as usize;
            if len < 16 {
                break;
            }
            off += (len + 3) & !3;
            match m.payload {
                NetlinkPayload::InnerMessage(Rt::NewLink(l)) => out.push(LinkEvent::Changed(Link::from_message(&l))),
                NetlinkPayload::InnerMessage(Rt::DelLink(l)) => out.push(LinkEvent::Deleted(Link::from_message(&l))),
                _ => {}
            }
        }
        Ok(out)
    }
}
