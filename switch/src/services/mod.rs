//! services: the switch's own hosts, one per network with a gateway, on a thread of their
//! own (VPP's BVI with its punt path). Workers hand frames for a gateway over the bounded
//! `link`; this thread answers them with smoltcp (`host`) and hands the replies back to a
//! worker, which sends them through the network's pipeline like any frame. Nothing here
//! ever blocks a worker, and what does not fit is dropped and counted.

pub mod dns;
pub mod host;
pub mod link;

use crate::dns::forward::Forwarder;
use crate::dns::names::Names;
use crate::port::PortShared;
use crate::worker::NetId;
use crossbeam_channel::{Receiver, Sender};
use host::{GatewayAddrs, Host};
use link::Link;
use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest sleep when nothing is pending: control messages also wake the thread at once.
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// Frames taken from the link between two polls of the hosts.
const BURST: usize = 256;

enum Ctl {
    Add(NetId, GatewayAddrs, Arc<PortShared>),
    Remove(NetId),
    Announce(NetId),
    Names(Arc<Names>),
    Stop,
}

pub struct Services {
    ctl: Sender<Ctl>,
    link: Arc<Link>,
    thread: Option<JoinHandle<()>>,
}

impl Services {
    pub fn start(link: Arc<Link>) -> std::io::Result<Services> {
        let (ctl, rx) = crossbeam_channel::unbounded();
        let l = link.clone();
        let thread = std::thread::Builder::new().name("services".into()).spawn(move || serve(l, rx))?;
        link.serve_from(thread.thread().clone());
        Ok(Services { ctl, link, thread: Some(thread) })
    }

    fn send(&self, c: Ctl) {
        let _ = self.ctl.send(c);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Bring up network `net`'s gateway. Its drops are counted in `stats`' last slot (the
    /// workers' slots come first).
    pub fn add(&self, net: NetId, addrs: GatewayAddrs, stats: Arc<PortShared>) {
        self.send(Ctl::Add(net, addrs, stats));
    }

    pub fn remove(&self, net: NetId) {
        self.send(Ctl::Remove(net));
    }

    /// Have network `net`'s gateway announce itself (the network came up with its ports).
    pub fn announce(&self, net: NetId) {
        self.send(Ctl::Announce(net));
    }

    /// Who is called what on every network with DNS (replaces what was there).
    pub fn set_names(&self, names: Arc<Names>) {
        self.send(Ctl::Names(names));
    }

    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// The index of the services thread's counter slot in a gateway's stats.
    pub fn stats_slot(&self) -> usize {
        self.link.workers()
    }

    pub fn stop(&mut self) {
        self.send(Ctl::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(link: Arc<Link>, ctl: Receiver<Ctl>) {
    let start = std::time::Instant::now();
    let now = || smoltcp::time::Instant::from_micros(start.elapsed().as_micros() as i64);
    let mut hosts: HashMap<NetId, Host> = HashMap::new();
    let forwarder = Forwarder::start(std::thread::current())
        .map_err(|e| tracing::error!("dns: the forwarder did not start ({e}): unknown names get SERVFAIL"))
        .ok();
    let mut dns = dns::Shared { names: Arc::new(Names::default()), forwarder };
    loop {
        while let Ok(c) = ctl.try_recv() {
            match c {
                Ctl::Add(net, addrs, stats) => {
                    hosts.insert(net, Host::new(net, addrs, link.clone(), stats, now()));
                }
                Ctl::Remove(net) => {
                    hosts.remove(&net);
                }
                Ctl::Announce(net) => {
                    if let Some(h) = hosts.get_mut(&net) {
                        h.announce();
                    }
                }
                Ctl::Names(n) => dns.names = n,
                Ctl::Stop => return,
            }
        }
        let mut taken = 0;
        while taken < BURST {
            let Some(p) = link.next_up() else { break };
            taken += 1;
            match hosts.get_mut(&p.net) {
                Some(h) => h.receive(p),
                None => link.recycle(p), // its network just went away
            }
        }
        let t = now();
        while let Some(d) = dns.forwarder.as_ref().and_then(|f| f.next_done()) {
            if let Some(h) = hosts.get_mut(&d.client.net()) {
                h.answered(d, t);
            }
        }
        let mut next: Option<smoltcp::time::Instant> = None;
        for h in hosts.values_mut() {
            if let Some(at) = h.poll(t, &dns) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        if taken == 0 {
            let wait = match next {
                Some(at) if at <= t => Duration::ZERO,
                Some(at) => Duration::from_micros((at - t).total_micros()).min(MAX_SLEEP),
                None => MAX_SLEEP,
            };
            if !wait.is_zero() {
                link.sleep(wait);
            }
        }
    }
}
