//! Steering the uplink's frames to workers (PACKET_FANOUT_CBPF): a reply belongs to the
//! worker whose NAT handed out its destination port (each worker has a slice of the outside
//! ports, `nat::ports::PortSplit`), so the kernel is told to pick the socket by that port,
//! and no worker ever needs another's connection table. A classic BPF program returns the
//! socket's index (the kernel takes it modulo the group's size):
//!
//! - TCP and UDP: the destination port;
//! - ICMP echo reply: the identifier (the echo's "port");
//! - ICMP errors: the source port (or identifier) of the packet they quote, which left with
//!   one of our ports (an outer header without options is assumed: routers send those);
//! - anything else: socket 0.
//!
//! Offsets are from the network header (`SKF_NET_OFF`): the kernel runs fanout programs on
//! received frames whose data starts there, not at the Ethernet header.
//!
//! An endpoint that publishes ports is pinned to one worker (its DNAT sessions live there),
//! with one exception: what it sends to the uplink's own address is hairpin traffic (a reply
//! to a neighbour that reached it through a published port), whose session lives on the
//! worker whose slice holds the destination port. So its program is [`pinned`] with the
//! uplink's address and the slices.
//!
//! Written by hand: it is twenty instructions, and eBPF would need a loader for them.

use libc::{
    sock_filter, BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_DIV, BPF_H, BPF_IND, BPF_JA, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD,
    BPF_LDX, BPF_MSH, BPF_RET, BPF_SUB, BPF_W, SKF_AD_OFF, SKF_AD_PROTOCOL, SKF_NET_OFF,
};

/// Where each instruction's jumps go: by label, resolved when the program is built.
enum Ins {
    Op(u16, u32),
    /// Jump if A == k to the label, else fall through.
    JeqTo(u32, &'static str),
    JaTo(&'static str),
    Label(&'static str),
    /// If A == k, return `ret`; else go on (two instructions, no far jump: any number of
    /// these fits).
    ReturnIf(u32, u32),
}

/// A published host port (protocol number, port) and the worker that owns its sessions.
pub type Published = (u8, u16, u32);

/// How the outside ports are split between workers: `per_worker` ports each from `lo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slices {
    pub lo: u16,
    pub per_worker: u32,
}

/// The instructions that return the worker whose slice holds the port in A.
fn slice_of_a(s: Slices) -> [Ins; 4] {
    use Ins::*;
    [
        Label("slice"),
        Op((BPF_ALU | BPF_SUB | BPF_K) as u16, u32::from(s.lo)),
        Op((BPF_ALU | BPF_DIV | BPF_K) as u16, s.per_worker.max(1)),
        Op((BPF_RET | BPF_A) as u16, 0),
    ]
}

/// Bytes `c` into the IPv4 header (and beyond, with X added).
fn net(c: u32) -> u32 {
    (SKF_NET_OFF as u32).wrapping_add(c)
}

fn ld(size: u32, mode: u32, c: u32) -> Ins {
    Ins::Op((BPF_LD | size | mode) as u16, net(c))
}

fn ihl_to_x(c: u32) -> Ins {
    Ins::Op((BPF_LDX | BPF_B | BPF_MSH) as u16, net(c))
}

fn ret(k: u32) -> Ins {
    Ins::Op((BPF_RET | BPF_K) as u16, k)
}

/// Every frame to one worker: the port of an endpoint that publishes ports, whose sessions
/// (and so whose replies) live on that worker. With `uplink` (its address and how its ports
/// are split), TCP and UDP to that address go by their destination port's slice instead:
/// hairpin replies, to the worker holding their session.
pub fn pinned(worker: u32, uplink: Option<(std::net::Ipv4Addr, Slices)>) -> Vec<sock_filter> {
    use Ins::*;
    let Some((addr, slices)) = uplink else { return assemble(&[ret(worker)]) };
    let prog: Vec<Ins> = [
        Op((BPF_LD | BPF_H | BPF_ABS) as u16, (SKF_AD_OFF + SKF_AD_PROTOCOL) as u32), // ethertype
        JeqTo(0x0800, "ipv4"),
        ret(worker),
        Label("ipv4"),
        ld(BPF_W, BPF_ABS, 16), // destination address
        JeqTo(u32::from(addr), "to_uplink"),
        ret(worker),
        Label("to_uplink"),
        ld(BPF_B, BPF_ABS, 9), // protocol
        JeqTo(6, "ports"),
        JeqTo(17, "ports"),
        ret(worker),
        Label("ports"),
        ihl_to_x(0),
        ld(BPF_H, BPF_IND, 2), // destination port
    ]
    .into_iter()
    .chain(slice_of_a(slices))
    .collect();
    assemble(&prog)
}

/// The program for outside ports from `lo`, `per_worker` ports per worker; a published host
/// port goes to the worker that owns its endpoint instead.
pub fn by_outside_port(slices: Slices, published: &[Published]) -> Vec<sock_filter> {
    use Ins::*;
    // A holds the destination port: a published one goes to its endpoint's worker.
    let publications = |proto: u8| -> Vec<Ins> {
        let mut v: Vec<Ins> =
            published.iter().filter(|p| p.0 == proto).map(|p| ReturnIf(u32::from(p.1), p.2)).collect();
        v.push(JaTo("slice"));
        v
    };
    let head = [
        Op((BPF_LD | BPF_H | BPF_ABS) as u16, (SKF_AD_OFF + SKF_AD_PROTOCOL) as u32), // ethertype
        JeqTo(0x0800, "ipv4"),
        Op((BPF_RET | BPF_K) as u16, 0),
        Label("ipv4"),
        ld(BPF_B, BPF_ABS, 9), // protocol
        JeqTo(6, "to_tcp"),
        JeqTo(17, "to_udp"),
        JeqTo(1, "to_icmp"),
        Op((BPF_RET | BPF_K) as u16, 0),
        // Conditional jumps reach 255 instructions at most; the published ports between
        // here and ICMP may be more: jump there unconditionally.
        Label("to_tcp"),
        JaTo("tcp"),
        Label("to_udp"),
        JaTo("udp"),
        Label("to_icmp"),
        JaTo("icmp"),
        Label("tcp"),
        ihl_to_x(0),
        ld(BPF_H, BPF_IND, 2), // destination port
    ];
    let udp = [Label("udp"), ihl_to_x(0), ld(BPF_H, BPF_IND, 2)];
    let tail = [
        Label("icmp"),
        ihl_to_x(0),
        ld(BPF_B, BPF_IND, 0), // ICMP type
        JeqTo(0, "echo"),
        JeqTo(3, "error"),
        JeqTo(11, "error"),
        JeqTo(12, "error"),
        Op((BPF_RET | BPF_K) as u16, 0),
        Label("echo"),
        ld(BPF_H, BPF_IND, 4), // identifier
        JaTo("slice"),
        Label("error"),
        ld(BPF_B, BPF_ABS, 20 + 8 + 9), // the quoted packet's protocol
        ihl_to_x(20 + 8),               // and header length
        JeqTo(1, "quoted_echo"),
        ld(BPF_H, BPF_IND, 20 + 8), // its source port
        JaTo("slice"),
        Label("quoted_echo"),
        ld(BPF_H, BPF_IND, 20 + 8 + 4), // its identifier
    ];
    let prog: Vec<Ins> = head
        .into_iter()
        .chain(publications(6))
        .chain(udp)
        .chain(publications(17))
        .chain(tail)
        .chain(slice_of_a(slices))
        .collect();
    assemble(&prog)
}

fn assemble(prog: &[Ins]) -> Vec<sock_filter> {
    let mut at = std::collections::HashMap::new();
    let mut n = 0usize;
    for i in prog {
        match i {
            Ins::Label(l) => {
                at.insert(*l, n);
            }
            Ins::ReturnIf(..) => n += 2,
            _ => n += 1,
        }
    }
    let mut out = Vec::with_capacity(n);
    for i in prog {
        let here = out.len();
        let off = |l: &str| at[l] - here - 1;
        let near = |l: &str| u8::try_from(off(l)).expect("a conditional jump within 255 instructions");
        match i {
            Ins::Op(code, k) => out.push(sock_filter { code: *code, jt: 0, jf: 0, k: *k }),
            Ins::JeqTo(k, l) => {
                out.push(sock_filter { code: (BPF_JMP | BPF_JEQ | BPF_K) as u16, jt: near(l), jf: 0, k: *k })
            }
            Ins::JaTo(l) => out.push(sock_filter { code: (BPF_JMP | BPF_JA) as u16, jt: 0, jf: 0, k: off(l) as u32 }),
            Ins::ReturnIf(k, ret) => {
                out.push(sock_filter { code: (BPF_JMP | BPF_JEQ | BPF_K) as u16, jt: 0, jf: 1, k: *k });
                out.push(sock_filter { code: (BPF_RET | BPF_K) as u16, jt: 0, jf: 0, k: *ret });
            }
            Ins::Label(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! The program run by a small interpreter of the instructions it uses, over real frames.
    use super::*;
    use crate::frame_spec;

    /// Run over an Ethernet frame as the kernel does: network-relative offsets, and the
    /// ancillary protocol word.
    fn run(prog: &[sock_filter], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let at = |i: u32| match i as i32 {
            k if (SKF_NET_OFF..SKF_AD_OFF).contains(&k) => (k - SKF_NET_OFF) as usize + 14,
            k if k >= 0 => k as usize,
            k => panic!("offset {k} not interpreted"),
        };
        let byte = |i: u32| {
            if i == (SKF_AD_OFF + SKF_AD_PROTOCOL) as u32 {
                panic!("the protocol word is read as a half word");
            }
            u32::from(*pkt.get(at(i)).unwrap_or(&0))
        };
        let half = |i: u32| byte(i) << 8 | byte(i + 1);
        loop {
            let f = prog[pc];
            pc += 1;
            let code = u32::from(f.code);
            match code {
                c if c == BPF_LD | BPF_H | BPF_ABS && f.k == (SKF_AD_OFF + SKF_AD_PROTOCOL) as u32 => {
                    a = u32::from(pkt[12]) << 8 | u32::from(pkt[13])
                }
                c if c == BPF_LD | BPF_H | BPF_ABS => a = half(f.k),
                c if c == BPF_LD | BPF_W | BPF_ABS => a = half(f.k) << 16 | half(f.k + 2),
                c if c == BPF_LD | BPF_B | BPF_ABS => a = byte(f.k),
                c if c == BPF_LD | BPF_H | BPF_IND => a = half(f.k.wrapping_add(x)),
                c if c == BPF_LD | BPF_B | BPF_IND => a = byte(f.k.wrapping_add(x)),
                c if c == BPF_LDX | BPF_B | BPF_MSH => x = 4 * (byte(f.k) & 0xf),
                c if c == BPF_JMP | BPF_JEQ | BPF_K => pc += if a == f.k { f.jt as usize } else { f.jf as usize },
                c if c == BPF_JMP | BPF_JA => pc += f.k as usize,
                c if c == BPF_ALU | BPF_SUB | BPF_K => a = a.wrapping_sub(f.k),
                c if c == BPF_ALU | BPF_DIV | BPF_K => a /= f.k,
                c if c == BPF_RET | BPF_K => return f.k,
                c if c == BPF_RET | BPF_A => return a,
                c => panic!("instruction {c:#x} not interpreted"),
            }
        }
    }

    /// 1024..=65535 in 2: worker 0 has 1024..=33279, worker 1 from 33280.
    const SLICES: Slices = Slices { lo: 1024, per_worker: 32256 };

    fn frame(spec: &str) -> Vec<u8> {
        frame_spec::parse(spec).unwrap()
    }

    #[test]
    fn replies_go_to_the_owner_of_their_port() {
        let p = by_outside_port(SLICES, &[]);
        let owner = |spec: &str| run(&p, &frame(spec));
        assert_eq!(owner("ip src 198.51.100.7 dst 192.0.2.10 tcp sport 80 dport 2000"), 0);
        assert_eq!(owner("ip src 198.51.100.7 dst 192.0.2.10 tcp sport 80 dport 40000"), 1);
        assert_eq!(owner("ip src 198.51.100.7 dst 192.0.2.10 udp sport 53 dport 33280"), 1);
        assert_eq!(owner("ip src 198.51.100.7 dst 192.0.2.10 udp sport 53 dport 33279"), 0);
        assert_eq!(owner("arp who-has 192.0.2.10 tell 192.0.2.1"), 0);
        assert_eq!(owner("ipv6 src fd00::1 dst fd00::2 udp"), 0);
    }

    #[test]
    fn a_published_port_goes_to_its_endpoints_worker() {
        let published: Vec<Published> = (0..300).map(|i| (6, 20000 + i, 1)).chain([(17, 8080, 1)]).collect();
        let p = by_outside_port(SLICES, &published);
        let owner = |spec: &str| run(&p, &frame(spec));
        assert_eq!(owner("ip src 198.51.100.7 dst 192.0.2.10 tcp sport 5000 dport 20299"), 1, "by the slice: 0");
        assert_eq!(owner("ip src 198.51.100.7 dst 192.0.2.10 tcp sport 5000 dport 8080"), 0, "udp only");
        assert_eq!(owner("ip src 198.51.100.7 dst 192.0.2.10 udp sport 5000 dport 8080"), 1);
        assert_eq!(owner("ip src 198.51.100.7 dst 192.0.2.10 udp sport 5000 dport 40000"), 1);
        assert_eq!(owner("ip src 198.51.100.7 dst 192.0.2.10 udp sport 5000 dport 2000"), 0);
        assert_eq!(run(&pinned(1, None), &frame("arp who-has 10.0.0.1 tell 10.0.0.2")), 1);
    }

    #[test]
    fn a_pinned_port_sends_hairpin_replies_to_the_owner_of_their_session() {
        let p = pinned(1, Some(("192.0.2.10".parse().unwrap(), SLICES)));
        let owner = |spec: &str| run(&p, &frame(spec));
        // To the uplink's address: by the destination port's slice.
        assert_eq!(owner("ip src 10.1.0.5 dst 192.0.2.10 tcp sport 80 dport 2000"), 0);
        assert_eq!(owner("ip src 10.1.0.5 dst 192.0.2.10 udp sport 53 dport 33279"), 0);
        assert_eq!(owner("ip src 10.1.0.5 dst 192.0.2.10 udp sport 53 dport 40000"), 1);
        // Everything else: the endpoint's own worker.
        assert_eq!(owner("ip src 10.1.0.5 dst 198.51.100.7 tcp sport 80 dport 2000"), 1);
        assert_eq!(owner("ip src 10.1.0.5 dst 192.0.2.10 icmp"), 1);
        assert_eq!(owner("arp who-has 10.1.0.1 tell 10.1.0.5"), 1);
        assert_eq!(owner("ipv6 src fd00::1 dst fd00::2 udp"), 1);
    }

    #[test]
    fn echo_replies_and_errors_follow_their_flow() {
        let p = by_outside_port(SLICES, &[]);
        let mut reply = frame("ip src 198.51.100.7 dst 192.0.2.10 icmp");
        // Make it an echo reply (type 0) with identifier 40000.
        let l4 = 14 + 20;
        reply[l4] = 0;
        reply[l4 + 4..l4 + 6].copy_from_slice(&40000u16.to_be_bytes());
        assert_eq!(run(&p, &reply), 1);
        reply[l4 + 4..l4 + 6].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(run(&p, &reply), 0);
        // Port unreachable quoting UDP that left from port 40000.
        let quoted = frame("ip src 192.0.2.10 dst 198.51.100.7 udp sport 40000 dport 53");
        let mut err = frame("ip src 198.51.100.7 dst 192.0.2.10 icmp");
        err.truncate(l4);
        err.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
        err.extend_from_slice(&quoted[14..14 + 28]);
        assert_eq!(run(&p, &err), 1);
        // TTL exceeded quoting an echo request with identifier 40000 (traceroute -I).
        let mut ping = frame("ip src 192.0.2.10 dst 198.51.100.7 icmp");
        ping[l4 + 4..l4 + 6].copy_from_slice(&40000u16.to_be_bytes());
        err.truncate(l4 + 8);
        err.extend_from_slice(&ping[14..14 + 28]);
        err[l4] = 11;
        assert_eq!(run(&p, &err), 1);
        ping[l4 + 4..l4 + 6].copy_from_slice(&1500u16.to_be_bytes());
        err.truncate(l4 + 8);
        err.extend_from_slice(&ping[14..14 + 28]);
        assert_eq!(run(&p, &err), 0);
    }
}
