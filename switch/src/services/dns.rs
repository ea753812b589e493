//! The embedded DNS on one gateway: a smoltcp UDP socket and a few TCP sockets on port 53
//! of the gateway's addresses. Queries are answered by `dns::answer` from the names the
//! control plane published; the rest go to the forwarder, whose answers come back here.
//! Everything is bounded: the sockets' buffers (what overflows is dropped, counted with the
//! link's), queries in flight (REFUSED beyond), TCP connections (4 per gateway).

use crate::dns::answer::{self, Reply, TCP_LIMIT};
use crate::dns::forward::{Done, Failure, Forwarder, Job};
use crate::dns::names::Names;
use crate::dns::DnsStats;
use crate::worker::NetId;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub const PORT: u16 = 53;
/// Queries a gateway's UDP socket holds between two polls, and their bytes.
const UDP_QUEUE: usize = 256;
const UDP_BYTES: usize = 256 * 512;
/// TCP connections served at once per gateway, and each one's buffers.
const TCP_CONNS: usize = 4;
const TCP_BUF: usize = 8192;
/// A TCP client that sends nothing for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Who a forwarded query's answer goes back to.
pub enum Client {
    Udp {
        net: NetId,
        peer: IpEndpoint,
        local: Option<IpAddress>,
    },
    /// The connection's slot and its generation (a slot reused since is someone else).
    Tcp {
        net: NetId,
        slot: usize,
        generation: u64,
    },
}

impl Client {
    pub fn net(&self) -> NetId {
        match self {
            Client::Udp { net, .. } | Client::Tcp { net, .. } => *net,
        }
    }
}

/// What every gateway's DNS shares: the names, the forwarder, the default upstreams.
pub struct Shared {
    pub names: Arc<Names>,
    /// None if its thread could not start (unknown names then get SERVFAIL).
    pub forwarder: Option<Forwarder<Client>>,
}

struct Conn {
    handle: SocketHandle,
    generation: u64,
    /// Bytes of queries received and not yet whole.
    rx: Vec<u8>,
    /// Answers waiting for room in the socket's send buffer.
    tx: Vec<u8>,
}

pub struct Dns {
    net: NetId,
    udp: SocketHandle,
    conns: Vec<Conn>,
    stats: Arc<DnsStats>,
    /// The largest DNS message in one unfragmented UDP datagram here (MTU minus headers).
    max_udp: usize,
    generations: u64,
}

impl Dns {
    pub fn new(net: NetId, sockets: &mut SocketSet<'static>, mtu: usize, stats: Arc<DnsStats>) -> Dns {
        let buf = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; UDP_QUEUE], vec![0; UDP_BYTES]);
        let mut u = udp::Socket::new(buf(), buf());
        u.bind(PORT).expect("port 53 is not zero");
        let udp = sockets.add(u);
        let mut d = Dns { net, udp, conns: vec![], stats, max_udp: mtu.saturating_sub(48).max(512), generations: 0 };
        for _ in 0..TCP_CONNS {
            let mut t =
                tcp::Socket::new(tcp::SocketBuffer::new(vec![0; TCP_BUF]), tcp::SocketBuffer::new(vec![0; TCP_BUF]));
            t.set_timeout(Some(TCP_IDLE));
            let _ = t.listen(PORT);
            let handle = sockets.add(t);
            d.conns.push(Conn { handle, generation: 0, rx: vec![], tx: vec![] });
        }
        d
    }

    /// Take every query the sockets hold; true if anything was sent (the interface should
    /// be polled again to put it on the wire).
    pub fn serve(&mut self, sockets: &mut SocketSet<'static>, shared: &Shared) -> bool {
        let mut sent = false;
        loop {
            let s = sockets.get_mut::<udp::Socket>(self.udp);
            let Ok((q, meta)) = s.recv() else { break };
            let q = q.to_vec();
            let from = ip_of(meta.endpoint.addr);
            let client = Client::Udp { net: self.net, peer: meta.endpoint, local: meta.local_address };
            if let Some(reply) = self.query(&q, from, false, client, shared) {
                let s = sockets.get_mut::<udp::Socket>(self.udp);
                let to = udp::UdpMetadata { local_address: meta.local_address, ..meta.endpoint.into() };
                sent |= s.send_slice(&reply, to).is_ok();
            }
        }
        for slot in 0..self.conns.len() {
            sent |= self.serve_tcp(slot, sockets, shared);
        }
        sent
    }

    fn serve_tcp(&mut self, slot: usize, sockets: &mut SocketSet<'static>, shared: &Shared) -> bool {
        let c = &mut self.conns[slot];
        let s = sockets.get_mut::<tcp::Socket>(c.handle);
        if !s.is_open() {
            // Closed (or never opened): listen again, as someone new.
            c.rx.clear();
            c.tx.clear();
            self.generations += 1;
            c.generation = self.generations;
            let _ = s.listen(PORT);
            return false;
        }
        let from = s.remote_endpoint().map(|e| ip_of(e.addr));
        let mut buf = [0u8; 2048];
        while let Ok(n @ 1..) = s.recv_slice(&mut buf) {
            c.rx.extend_from_slice(&buf[..n]);
            if c.rx.len() > 2 + TCP_LIMIT {
                s.abort();
                return false;
            }
        }
        // The client closed its side and has every answer: close ours.
        if s.state() == tcp::State::CloseWait && c.tx.is_empty() {
            s.close();
        }
        let mut queries = vec![];
        while c.rx.len() >= 2 {
            let len = u16::from_be_bytes([c.rx[0], c.rx[1]]) as usize;
            if c.rx.len() < 2 + len {
                break;
            }
            queries.push(c.rx[2..2 + len].to_vec());
            c.rx.drain(..2 + len);
        }
        let generation = c.generation;
        for q in queries {
            let Some(from) = from else { break };
            let client = Client::Tcp { net: self.net, slot, generation };
            if let Some(reply) = self.query(&q, from, true, client, shared) {
                push_tcp(&mut self.conns[slot].tx, &reply);
            }
        }
        self.flush_tcp(slot, sockets)
    }

    fn flush_tcp(&mut self, slot: usize, sockets: &mut SocketSet<'static>) -> bool {
        let c = &mut self.conns[slot];
        if c.tx.is_empty() {
            return false;
        }
        let s = sockets.get_mut::<tcp::Socket>(c.handle);
        match s.send_slice(&c.tx) {
            Ok(n) if n > 0 => {
                c.tx.drain(..n);
                true
            }
            _ => false,
        }
    }

    /// The answer to send now, or None (forwarded, or dropped).
    fn query(&self, q: &[u8], from: IpAddr, tcp: bool, client: Client, shared: &Shared) -> Option<Vec<u8>> {
        let asker = shared.names.asker(self.net, from);
        let (reply, outcome) = answer::answer(q, &shared.names, &asker, tcp, self.max_udp);
        self.stats.count(outcome);
        match reply {
            Reply::Local(r) => Some(r),
            Reply::Drop => None,
            Reply::Forward { limit } => {
                let upstreams = if asker.upstreams.is_empty() {
                    shared.names.upstreams.clone()
                } else {
                    asker.upstreams.iter().map(|&ip| SocketAddr::new(ip, 53)).collect()
                };
                let job = Job { client, query: q.to_vec(), limit, tcp, upstreams };
                let Some(f) = &shared.forwarder else {
                    self.stats.failed(Failure::AllFailed);
                    return answer::servfail(q);
                };
                match f.forward(job) {
                    Ok(()) => None,
                    Err(job) => {
                        self.stats.failed(Failure::Busy);
                        answer::refused(&job.query)
                    }
                }
            }
        }
    }

    /// An upstream's answer (or the SERVFAIL for its failure) for one of our clients.
    pub fn answered(&mut self, d: Done<Client>, sockets: &mut SocketSet<'static>) -> bool {
        if let Err(f) = d.how {
            self.stats.failed(f);
        }
        match d.client {
            Client::Udp { peer, local, .. } => {
                let s = sockets.get_mut::<udp::Socket>(self.udp);
                let to = udp::UdpMetadata { local_address: local, ..peer.into() };
                s.send_slice(&d.answer, to).is_ok()
            }
            Client::Tcp { slot, generation, .. } => {
                let Some(c) = self.conns.get_mut(slot).filter(|c| c.generation == generation) else { return false };
                push_tcp(&mut c.tx, &d.answer);
                self.flush_tcp(slot, sockets)
            }
        }
    }

    /// Connections with answers still to send (they need polling soon).
    pub fn backlog(&self) -> bool {
        self.conns.iter().any(|c| !c.tx.is_empty())
    }
}

fn push_tcp(tx: &mut Vec<u8>, msg: &[u8]) {
    let len = msg.len().min(TCP_LIMIT);
    tx.extend_from_slice(&(len as u16).to_be_bytes());
    tx.extend_from_slice(&msg[..len]);
}

fn ip_of(a: IpAddress) -> IpAddr {
    match a {
        IpAddress::Ipv4(v4) => IpAddr::V4(v4),
        IpAddress::Ipv6(v6) => IpAddr::V6(v6),
    }
}
