//! forward: queries for names the networks do not know, sent on to the upstream resolvers
//! from the daemon's own namespace (so a resolver on the host's loopback, systemd-resolved's
//! 127.0.0.53, works too: Docker's containers cannot reach those). A thread of its own with
//! one mio loop over a UDP socket per family: the services thread hands it a job and goes
//! on; the answer comes back through a channel and wakes the services thread.
//!
//! Docker's rules: each upstream in turn, 4 s each; SERVFAIL, REFUSED, an answer that does
//! not parse or a timeout moves on to the next; NXDOMAIN and every other answer are passed
//! through; when every upstream failed, SERVFAIL; at most 1024 queries in flight, then
//! REFUSED. A TCP client's query goes over TCP (a short-lived thread, few at a time).

use super::answer;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long one upstream has to answer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(4);
/// Queries waiting for an upstream, at most (Docker's maxConcurrent).
pub const MAX_IN_FLIGHT: usize = 1024;
/// TCP queries being forwarded at once, each on a thread of its own.
const MAX_TCP: usize = 16;

const WAKE: Token = Token(0);
const UDP4: Token = Token(1);
const UDP6: Token = Token(2);

/// A query to forward, and who gets the answer (the services thread's own token).
pub struct Job<C> {
    pub client: C,
    pub query: Vec<u8>,
    /// The client's limit on the answer's size (larger answers are truncated, TC set).
    pub limit: usize,
    pub tcp: bool,
    /// In order; port 53 unless given.
    pub upstreams: Vec<SocketAddr>,
}

/// An answer for a client: the upstream's (with the client's id), or SERVFAIL / REFUSED.
pub struct Done<C> {
    pub client: C,
    pub answer: Vec<u8>,
    pub how: Result<(), Failure>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failure {
    /// Every upstream failed or timed out (or there are none).
    AllFailed,
    /// Too many queries in flight.
    Busy,
}

pub struct Forwarder<C> {
    jobs: crossbeam_channel::Sender<Job<C>>,
    waker: Arc<Waker>,
    done: crossbeam_channel::Receiver<Done<C>>,
    in_flight: Arc<AtomicUsize>,
}

impl<C: Send + 'static> Forwarder<C> {
    /// Start the forwarding thread; `wake` is unparked whenever an answer is ready.
    pub fn start(wake: Thread) -> std::io::Result<Forwarder<C>> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (jobs, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done) = crossbeam_channel::unbounded();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let mut loop_ = Loop::new(poll, jobs_rx, done_tx, wake, in_flight.clone())?;
        std::thread::Builder::new().name("dns-forward".into()).spawn(move || loop_.run())?;
        Ok(Forwarder { jobs, waker, done, in_flight })
    }

    /// Hand `job` over; its answer comes back from `next_done`. Never blocks.
    pub fn forward(&self, job: Job<C>) -> Result<(), Job<C>> {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(job);
        }
        self.jobs.send(job).map_err(|e| e.0)?;
        let _ = self.waker.wake();
        Ok(())
    }

    pub fn next_done(&self) -> Option<Done<C>> {
        self.done.try_recv().ok()
    }
}

impl<C> Drop for Forwarder<C> {
    fn drop(&mut self) {
        // Closing the job channel ends the thread at its next wake-up.
        let (dead, _) = crossbeam_channel::unbounded();
        self.jobs = dead;
        let _ = self.waker.wake();
    }
}

struct Pending<C> {
    job: Job<C>,
    /// Which upstream is being asked now.
    at: usize,
    id: u16,
    deadline: Instant,
}

struct Loop<C> {
    poll: Poll,
    jobs: crossbeam_channel::Receiver<Job<C>>,
    done: crossbeam_channel::Sender<Done<C>>,
    wake: Thread,
    in_flight: Arc<AtomicUsize>,
    tcp_in_flight: Arc<AtomicUsize>,
    udp4: UdpSocket,
    udp6: Option<UdpSocket>,
    /// By (upstream, the id we sent it).
    pending: HashMap<(SocketAddr, u16), Pending<C>>,
    buf: Vec<u8>,
    next_id: u16,
}

impl<C: Send + 'static> Loop<C> {
    fn new(
        poll: Poll,
        jobs: crossbeam_channel::Receiver<Job<C>>,
        done: crossbeam_channel::Sender<Done<C>>,
        wake: Thread,
        in_flight: Arc<AtomicUsize>,
    ) -> std::io::Result<Loop<C>> {
        let mut udp4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0).into())?;
        poll.registry().register(&mut udp4, UDP4, Interest::READABLE)?;
        // A host without IPv6 still forwards over IPv4.
        let udp6 = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0).into()).ok().and_then(|mut s| {
            poll.registry().register(&mut s, UDP6, Interest::READABLE).ok()?;
            Some(s)
        });
        let seed = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8) as u16;
        Ok(Loop {
            poll,
            jobs,
            done,
            wake,
            in_flight,
            tcp_in_flight: Arc::new(AtomicUsize::new(0)),
            udp4,
            udp6,
            pending: HashMap::new(),
            buf: vec![0; 65535],
            next_id: seed,
        })
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            let timeout =
                self.pending.values().map(|p| p.deadline).min().map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!("dns forwarder: {e}");
                    return;
                }
            }
            loop {
                match self.jobs.try_recv() {
                    Ok(job) => self.start(job),
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => return,
                }
            }
            self.receive(false);
            self.receive(true);
            self.expire();
        }
    }

    fn start(&mut self, job: Job<C>) {
        if job.tcp {
            return self.start_tcp(job);
        }
        let p = Pending { job, at: 0, id: 0, deadline: Instant::now() };
        self.ask(p);
    }

    /// Send `p` to its upstream `p.at`, or the next one that takes it; when none is left,
    /// the client gets SERVFAIL.
    fn ask(&mut self, mut p: Pending<C>) {
        while let Some(&up) = p.job.upstreams.get(p.at) {
            let id = self.fresh_id(up);
            let mut q = p.job.query.clone();
            q[..2].copy_from_slice(&id.to_be_bytes()); // the id is the header's first field
            let sock = if up.is_ipv4() { Some(&self.udp4) } else { self.udp6.as_ref() };
            if sock.is_some_and(|s| s.send_to(&q, up).is_ok()) {
                p.id = id;
                p.deadline = Instant::now() + UPSTREAM_TIMEOUT;
                self.pending.insert((up, id), p);
                return;
            }
            p.at += 1;
        }
        self.finish(p.job, None);
    }

    fn fresh_id(&mut self, up: SocketAddr) -> u16 {
        loop {
            self.next_id = self.next_id.wrapping_mul(25173).wrapping_add(13849);
            if !self.pending.contains_key(&(up, self.next_id)) {
                return self.next_id;
            }
        }
    }

    fn receive(&mut self, v6: bool) {
        loop {
            let sock = if v6 { self.udp6.as_ref() } else { Some(&self.udp4) };
            let Some(sock) = sock else { return };
            let (n, from) = match sock.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => continue, // an ICMP error for an earlier send: the timeout handles it
            };
            if n < 12 {
                continue;
            }
            let from = SocketAddr::new(canonical(from.ip()), from.port());
            let id = u16::from_be_bytes([self.buf[0], self.buf[1]]);
            let Some(mut p) = self.pending.remove(&(from, id)) else { continue };
            let answer = &self.buf[..n];
            match answer::rcode(answer) {
                Some(simple_dns::RCODE::ServerFailure | simple_dns::RCODE::Refused) | None => {
                    p.at += 1;
                    self.ask(p);
                }
                Some(_) => {
                    let mut a = answer.to_vec();
                    a[..2].copy_from_slice(&p.job.query[..2]);
                    self.finish(p.job, Some(a));
                }
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<_> = self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(k, _)| *k).collect();
        for k in late {
            let mut p = self.pending.remove(&k).expect("just seen");
            p.at += 1;
            self.ask(p);
        }
    }

    /// Hand the client its answer (None: every upstream failed).
    fn finish(&self, job: Job<C>, answer: Option<Vec<u8>>) {
        finish(&self.done, &self.wake, &self.in_flight, job, answer);
    }

    fn start_tcp(&mut self, job: Job<C>) {
        if self.tcp_in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_TCP {
            self.tcp_in_flight.fetch_sub(1, Ordering::Relaxed);
            return self.finish(job, None);
        }
        let (done, wake, in_flight, tcp) =
            (self.done.clone(), self.wake.clone(), self.in_flight.clone(), self.tcp_in_flight.clone());
        let spawned = std::thread::Builder::new().name("dns-tcp".into()).spawn(move || {
            let answer = job.upstreams.iter().find_map(|&up| ask_tcp(up, &job.query));
            finish(&done, &wake, &in_flight, job, answer);
            tcp.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            self.tcp_in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn finish<C>(
    done: &crossbeam_channel::Sender<Done<C>>,
    wake: &Thread,
    in_flight: &AtomicUsize,
    job: Job<C>,
    answer: Option<Vec<u8>>,
) {
    in_flight.fetch_sub(1, Ordering::Relaxed);
    let fitted = answer.and_then(|a| answer::fit(&a, job.limit));
    let (answer, how) = match fitted {
        Some(a) => (a, Ok(())),
        None => (answer::servfail(&job.query).unwrap_or_default(), Err(Failure::AllFailed)),
    };
    let _ = done.send(Done { client: job.client, answer, how });
    wake.unpark();
}

/// One query over TCP to `up`: None if it fails, times out, or says SERVFAIL/REFUSED.
fn ask_tcp(up: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&up, UPSTREAM_TIMEOUT).ok()?;
    s.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    let mut msg = (query.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(query);
    s.write_all(&msg).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut a = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut a).ok()?;
    match answer::rcode(&a)? {
        simple_dns::RCODE::ServerFailure | simple_dns::RCODE::Refused => None,
        _ if a.len() >= 2 && a[..2] == query[..2] => Some(a),
        _ => None,
    }
}

/// An IPv4 peer seen on an IPv6 socket as ::ffff:a.b.c.d, as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The upstream resolvers in a resolv.conf: its `nameserver` lines, at most 3 (as libc
/// reads them), loopback included (the forwarder runs in the daemon's namespace).
pub fn upstreams_from(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(3)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, RCODE, TYPE};
    use std::net::UdpSocket as StdUdp;

    fn query(id: u16) -> Vec<u8> {
        let mut p = Packet::new_query(id);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(Name::new("example.org").unwrap(), TYPE::A.into(), CLASS::IN.into(), false));
        p.build_bytes_vec().unwrap()
    }

    /// A fake upstream on loopback that answers each query with `rcode`.
    fn upstream(rcode: RCODE) -> SocketAddr {
        let s = StdUdp::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let q = Packet::parse(&buf[..n]).unwrap();
                let mut r = Packet::new_reply(q.id());
                *r.rcode_mut() = rcode;
                r.questions = q.questions.clone();
                let _ = s.send_to(&r.build_bytes_vec().unwrap(), from);
            }
        });
        addr
    }

    fn wait<C: Send + 'static>(f: &Forwarder<C>) -> Done<C> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(d) = f.next_done() {
                return d;
            }
            assert!(Instant::now() < end, "no answer");
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }

    #[test]
    fn servfail_moves_on_nxdomain_is_passed_through() {
        let f: Forwarder<u32> = Forwarder::start(std::thread::current()).unwrap();
        let ups = vec![upstream(RCODE::ServerFailure), upstream(RCODE::NameError)];
        assert!(f.forward(Job { client: 7, query: query(0xabcd), limit: 512, tcp: false, upstreams: ups }).is_ok());
        let d = wait(&f);
        let a = Packet::parse(&d.answer).unwrap();
        assert_eq!((d.client, a.id(), a.rcode(), d.how), (7, 0xabcd, RCODE::NameError, Ok(())));
    }

    #[test]
    fn every_upstream_failing_is_servfail() {
        let f: Forwarder<u32> = Forwarder::start(std::thread::current()).unwrap();
        let ups = vec![upstream(RCODE::Refused), upstream(RCODE::ServerFailure)];
        assert!(f.forward(Job { client: 1, query: query(5), limit: 512, tcp: false, upstreams: ups }).is_ok());
        let d = wait(&f);
        assert_eq!(Packet::parse(&d.answer).unwrap().rcode(), RCODE::ServerFailure);
        assert_eq!(d.how, Err(Failure::AllFailed));
        assert!(f.forward(Job { client: 2, query: query(6), limit: 512, tcp: false, upstreams: vec![] }).is_ok());
        assert_eq!(wait(&f).how, Err(Failure::AllFailed), "no upstream at all");
    }

    #[test]
    fn upstreams_come_from_nameserver_lines() {
        let r = "search x\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n";
        let u = upstreams_from(r);
        assert_eq!(u.len(), 3);
        assert_eq!(u[0], "127.0.0.53:53".parse().unwrap());
        assert_eq!(u[1].ip(), "fe80::1".parse::<IpAddr>().unwrap());
    }
}
