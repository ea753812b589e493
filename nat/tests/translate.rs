//! Translation end to end over real packet bytes: SNAT, DNAT, hairpin, ICMP errors, GSO
//! partial checksums, state, expiry and limits.

mod common;

use std::net::Ipv4Addr;

use common::*;
use proptest::prelude::*;
use vswitch_nat::*;

const E: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2); // an endpoint
const E2: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 3);
const W: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7); // the world
const U: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10); // the uplink

fn snat(_: &FlowKey) -> Decision {
    Decision::Translate { tag: 1, snat: Some(U), dnat: None }
}

fn table() -> Conntrack {
    Conntrack::new(Config { max_sessions: 1000, ..Config::default() })
}

fn run(ct: &mut Conntrack, p: &mut [u8], now: u32) -> Verdict {
    ct.translate(p, Csum::Full, now, snat)
}

#[test]
fn snat_out_and_back_for_tcp_udp_and_echo() {
    let mut ct = table();
    for (proto, out, back) in [
        (TCP, tcp(40000, 80, SYN, b""), tcp(80, 0, SYN | ACK, b"")),
        (UDP, udp(40001, 53, b"query"), udp(53, 0, b"answer")),
    ] {
        let mut p = ipv4(proto, E, W, &out);
        assert_eq!(run(&mut ct, &mut p, 0), Verdict::Translated(Dir::Orig));
        assert!(verifies(&p));
        let (s, port) = src(&p);
        assert_eq!(s, U);
        assert_eq!(dst(&p), (W, if proto == TCP { 80 } else { 53 }));
        // The reply comes to the uplink's port and goes back to the endpoint's.
        let mut back = back.clone();
        back[2..4].copy_from_slice(&port.to_be_bytes());
        let mut r = ipv4(proto, W, U, &back);
        assert_eq!(run(&mut ct, &mut r, 1), Verdict::Translated(Dir::Reply));
        assert!(verifies(&r));
        assert_eq!(dst(&r), (E, if proto == TCP { 40000 } else { 40001 }));
        assert_eq!(src(&r).0, W);
    }
    let mut ping = ipv4(ICMP, E, W, &echo(true, 99, b"abc"));
    assert_eq!(run(&mut ct, &mut ping, 0), Verdict::Translated(Dir::Orig));
    assert!(verifies(&ping));
    let id = u16::from_be_bytes([ping[24], ping[25]]);
    let mut pong = ipv4(ICMP, W, U, &echo(false, id, b"abc"));
    assert_eq!(run(&mut ct, &mut pong, 0), Verdict::Translated(Dir::Reply));
    assert!(verifies(&pong));
    assert_eq!((dst(&pong).0, u16::from_be_bytes([pong[24], pong[25]])), (E, 99));
    assert_eq!(ct.len(), 3);
}

#[test]
fn unsolicited_packets_do_not_open_sessions() {
    let mut ct = table();
    let mut ack = ipv4(TCP, E, W, &tcp(40000, 80, ACK, b""));
    assert_eq!(run(&mut ct, &mut ack, 0), Verdict::Dropped(Refused::NoSession));
    let mut pong = ipv4(ICMP, E, W, &echo(false, 1, b""));
    assert_eq!(run(&mut ct, &mut pong, 0), Verdict::Dropped(Refused::NoSession));
    let mut gre = ipv4(47, E, W, &[0; 8]);
    assert!(matches!(run(&mut ct, &mut gre, 0), Verdict::Dropped(Refused::Unsupported(_))));
    assert!(ct.is_empty());
}

#[test]
fn the_original_port_is_kept_when_free_and_another_found_when_not() {
    let mut ct = table();
    let mut a = ipv4(UDP, E, W, &udp(40000, 53, b""));
    let mut b = ipv4(UDP, E2, W, &udp(40000, 53, b""));
    run(&mut ct, &mut a, 0);
    run(&mut ct, &mut b, 0);
    assert_eq!(src(&a), (U, 40000));
    assert_ne!(src(&b).1, 40000, "two endpoints never share a mapping toward one remote");
    // Toward another remote the port can be reused (address-and-port-dependent mapping).
    let mut c = ipv4(UDP, E2, Ipv4Addr::new(198, 51, 100, 8), &udp(40000, 53, b""));
    run(&mut ct, &mut c, 0);
    assert_eq!(src(&c), (U, 40000));
}

#[test]
fn reserved_ports_are_never_handed_out() {
    let mut ct = Conntrack::new(Config { max_sessions: 100, ports: 5000..=5002, ..Config::default() });
    let mut r = vswitch_nat::ports::PortSet::default();
    r.insert(5000);
    r.insert(5001);
    ct.set_reserved(Some(std::sync::Arc::new(r)));
    let mut p = ipv4(UDP, E, W, &udp(5000, 53, b""));
    run(&mut ct, &mut p, 0);
    assert_eq!(src(&p), (U, 5002), "the wanted port is published: another");
    let mut q = ipv4(UDP, E2, W, &udp(5000, 53, b""));
    assert_eq!(run(&mut ct, &mut q, 0), Verdict::Dropped(Refused::PortsExhausted));
}

#[test]
fn a_port_range_runs_out() {
    let mut ct = Conntrack::new(Config { max_sessions: 100, ports: 5000..=5001, ..Config::default() });
    for (i, want) in [
        (0, Verdict::Translated(Dir::Orig)),
        (1, Verdict::Translated(Dir::Orig)),
        (2, Verdict::Dropped(Refused::PortsExhausted)),
    ] {
        let mut p = ipv4(UDP, E, W, &udp(40000 + i, 53, b""));
        assert_eq!(run(&mut ct, &mut p, 0), want);
    }
    assert_eq!(ct.stats.ports_exhausted, 1);
}

#[test]
fn dnat_publishes_and_keeps_the_clients_address() {
    let mut ct = table();
    let published = |k: &FlowKey| {
        if k.dst == Endpoint::new(U, 8080) {
            Decision::Translate { tag: 1, snat: None, dnat: Some(Endpoint::new(E, 80)) }
        } else {
            Decision::Drop
        }
    };
    let mut syn = ipv4(TCP, W, U, &tcp(50000, 8080, SYN, b""));
    assert_eq!(ct.translate(&mut syn, Csum::Full, 0, published), Verdict::Translated(Dir::Orig));
    assert_eq!((src(&syn), dst(&syn)), ((W, 50000), (E, 80)));
    assert!(verifies(&syn));
    let mut synack = ipv4(TCP, E, W, &tcp(80, 50000, SYN | ACK, b""));
    assert_eq!(ct.translate(&mut synack, Csum::Full, 0, published), Verdict::Translated(Dir::Reply));
    assert_eq!((src(&synack), dst(&synack)), ((U, 8080), (W, 50000)));
    assert!(verifies(&synack));
    let mut other = ipv4(TCP, W, U, &tcp(50001, 22, SYN, b""));
    assert_eq!(ct.translate(&mut other, Csum::Full, 0, published), Verdict::Dropped(Refused::Policy));
    assert_eq!(ct.sessions().next().unwrap().state, State::TcpEstablished);
}

#[test]
fn hairpin_translates_both_ends() {
    let mut ct = table();
    let gw = Ipv4Addr::new(172, 18, 0, 1);
    let hairpin = |_: &FlowKey| Decision::Translate { tag: 1, snat: Some(gw), dnat: Some(Endpoint::new(E, 80)) };
    let mut syn = ipv4(TCP, E2, U, &tcp(41000, 8080, SYN, b""));
    assert_eq!(ct.translate(&mut syn, Csum::Full, 0, hairpin), Verdict::Translated(Dir::Orig));
    assert_eq!(dst(&syn), (E, 80));
    assert_eq!(src(&syn).0, gw, "the publisher answers through the switch");
    let (_, port) = src(&syn);
    let mut synack = ipv4(TCP, E, gw, &tcp(80, port, SYN | ACK, b""));
    assert_eq!(ct.translate(&mut synack, Csum::Full, 0, hairpin), Verdict::Translated(Dir::Reply));
    assert_eq!((src(&synack), dst(&synack)), ((U, 8080), (E2, 41000)));
    assert!(verifies(&syn) && verifies(&synack));
}

#[test]
fn icmp_errors_reach_the_endpoint_with_the_packet_it_sent() {
    let mut ct = table();
    let sent = ipv4(UDP, E, W, &udp(40000, 53, b"query"));
    let mut out = sent.clone();
    run(&mut ct, &mut out, 0);
    for quote in [28, out.len()] {
        // Port unreachable from W itself, and TTL exceeded from a router on the way.
        for (from, kind) in [(W, 3), (Ipv4Addr::new(203, 0, 113, 1), 11)] {
            let mut err = ipv4(ICMP, from, U, &icmp_error(kind, 3, &out, quote));
            assert_eq!(run(&mut ct, &mut err, 0), Verdict::Translated(Dir::Reply));
            assert!(verifies(&err), "the ICMP checksum");
            assert_eq!((src(&err).0, dst(&err).0), (from, E));
            let inner = &err[28..];
            assert_eq!(inner[..28], sent[..28], "the quoted header is the endpoint's own");
        }
    }
    // An error about a flow nobody tracks is not ours to translate.
    let mut stray = ipv4(ICMP, W, U, &icmp_error(3, 3, &ipv4(UDP, U, W, &udp(1, 2, b"")), 28));
    assert_eq!(run(&mut ct, &mut stray, 0), Verdict::Untracked);
}

#[test]
fn sessions_expire_unless_used() {
    let mut ct = Conntrack::new(Config { max_sessions: 10, timeouts: Timeouts::all(10), ..Config::default() });
    let mut a = ipv4(UDP, E, W, &udp(1000, 53, b""));
    let mut b = ipv4(UDP, E, W, &udp(1001, 53, b""));
    run(&mut ct, &mut a.clone(), 0);
    run(&mut ct, &mut b.clone(), 0);
    run(&mut ct, &mut a, 8);
    assert_eq!(ct.expire(9, 100), 0);
    assert_eq!(ct.expire(10, 100), 1, "b idle for 10 s");
    assert_eq!(ct.expire(17, 100), 0);
    assert_eq!(ct.expire(18, 100), 1, "a, 10 s after its last use");
    assert!(ct.is_empty());
    assert_eq!(ct.stats.expired, 2);
    let _ = &mut b;
}

#[test]
fn a_closed_connection_goes_sooner_than_an_open_one() {
    let t = Timeouts { tcp_established: 1000, tcp_closed: 5, ..Timeouts::default() };
    let mut ct = Conntrack::new(Config { max_sessions: 10, timeouts: t, ..Config::default() });
    for (port, last) in [(1, ACK), (2, RST)] {
        run(&mut ct, &mut ipv4(TCP, E, W, &tcp(port, 80, SYN, b"")), 0);
        let mapped = ct.sessions().find(|s| s.orig.src.port == port).unwrap().reply.dst.port;
        run(&mut ct, &mut ipv4(TCP, W, U, &tcp(80, mapped, SYN | ACK, b"")), 0);
        run(&mut ct, &mut ipv4(TCP, E, W, &tcp(port, 80, last, b"")), 0);
    }
    assert_eq!(ct.expire(5, 100), 1);
    assert_eq!(ct.sessions().next().unwrap().state, State::TcpEstablished);
}

#[test]
fn limits_hold_in_total_and_per_tag() {
    let mut ct = Conntrack::new(Config { max_sessions: 3, max_per_tag: 2, ..Config::default() });
    let tagged = |tag| move |_: &FlowKey| Decision::Translate { tag, snat: Some(U), dnat: None };
    let mut v = vec![];
    for (i, tag) in [1, 1, 1, 2, 3].into_iter().enumerate() {
        v.push(ct.translate(&mut ipv4(UDP, E, W, &udp(100 + i as u16, 53, b"")), Csum::Full, 0, tagged(tag)));
    }
    let limit = Verdict::Dropped(Refused::SessionLimit);
    let ok = Verdict::Translated(Dir::Orig);
    assert_eq!(v, [ok, ok, limit, ok, limit]);
    assert_eq!(ct.stats.session_limit, 2);
    assert_eq!(ct.remove_where(|s| s.tag == 1), 2);
    assert_eq!((ct.tag_count(1), ct.len()), (0, 1));
}

#[test]
fn a_gso_frame_with_a_partial_checksum_is_translated_whole() {
    let mut ct = table();
    let payload = vec![0xab; 65000];
    let mut p = ipv4(TCP, E, W, &tcp(40000, 80, SYN, b""));
    run(&mut ct, &mut p, 0);
    let mut seg = ipv4(TCP, E, W, &tcp(40000, 80, ACK, &payload));
    make_partial(&mut seg);
    assert_eq!(ct.translate(&mut seg, Csum::Partial, 0, snat), Verdict::Translated(Dir::Orig));
    complete_partial(&mut seg);
    assert!(verifies(&seg), "the checksum the kernel finishes is right");
}

#[test]
fn an_edit_touches_only_the_bytes_it_says() {
    let mut ct = table();
    let out = ipv4(UDP, E, W, &udp(40000, 53, &[7; 300]));
    for pkt in [
        ipv4(TCP, E, W, &tcp(40000, 80, SYN, &[9; 500])),
        out.clone(),
        ipv4(ICMP, E, W, &echo(true, 5, &[1; 100])),
        ipv4(
            ICMP,
            W,
            U,
            &icmp_error(
                3,
                3,
                &{
                    let mut o = out.clone();
                    run(&mut ct, &mut o, 0);
                    o
                },
                200,
            ),
        ),
    ] {
        let (v, edit) = ct.track(&pkt, 0, snat);
        assert!(matches!(v, Verdict::Translated(_)), "{v:?}");
        let edit = edit.unwrap();
        let (mut whole, mut head) = (pkt.clone(), pkt.clone());
        edit.apply(&mut whole, Csum::Full);
        edit.apply(&mut head[..edit.len()], Csum::Full);
        assert_eq!(whole, head);
        assert!(edit.len() < pkt.len() || pkt[9] == ICMP, "the payload is not part of it");
        assert!(verifies(&whole));
    }
}

#[test]
fn a_million_sessions_take_at_most_256_bytes_each() {
    let n = 1_000_000u32;
    let mut ct = Conntrack::new(Config { max_sessions: n, ..Config::default() });
    for i in 0..n {
        // 65536 endpoints toward 2^20 remotes: a million distinct flows.
        let e = Endpoint::new(Ipv4Addr::from(0xac12_0000 | (i & 0xffff)), 40000);
        let w = Endpoint::new(Ipv4Addr::from(0x0a00_0000 | (i >> 4)), 443);
        ct.create(FlowKey::new(Proto::Tcp, e, w), 0, Some(U), None, 0).unwrap();
    }
    assert_eq!(ct.len(), n as usize);
    let per_session = ct.memory() / n as usize;
    eprintln!("{per_session} bytes per session at {n} sessions");
    assert!(per_session <= 256, "{per_session} bytes per session");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A packet and its reply through SNAT (and DNAT) restore each other, and every
    /// checksum verifies, for any addresses, ports and payload.
    #[test]
    fn a_reply_restores_the_original(
        e in any::<u32>(), w in any::<u32>(), u in any::<u32>(), d in any::<u32>(),
        sport in 1u16.., dport in 1u16.., dnat_port in 1u16..,
        proto in prop_oneof![Just(TCP), Just(UDP), Just(ICMP)],
        partial in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let (e, w, u, d) = (Ipv4Addr::from(e), Ipv4Addr::from(w), Ipv4Addr::from(u), Ipv4Addr::from(d));
        prop_assume!(e != u && w != u && d != u);
        let dnat = (proto != ICMP).then_some(Endpoint::new(d, dnat_port));
        let mut ct = Conntrack::new(Config { max_sessions: 4, ..Config::default() });
        let decide = |_: &FlowKey| Decision::Translate { tag: 0, snat: Some(u), dnat };
        let l4 = |s, d, req| match proto {
            TCP => tcp(s, d, if req { SYN } else { SYN | ACK }, &payload),
            UDP => udp(s, d, &payload),
            _ => echo(req, if req { s } else { d }, &payload),
        };
        let csum = if partial && proto != ICMP { Csum::Partial } else { Csum::Full };
        let mut out = ipv4(proto, e, w, &l4(sport, dport, true));
        if csum == Csum::Partial { make_partial(&mut out); }
        prop_assert_eq!(ct.translate(&mut out, csum, 0, decide), Verdict::Translated(Dir::Orig));
        if csum == Csum::Partial { complete_partial(&mut out); }
        prop_assert!(verifies(&out));
        let s = ct.sessions().next().unwrap();
        // The reply as the far end sends it: the translated packet, turned around.
        let (to, from) = (s.reply.dst, s.reply.src);
        let mut back = ipv4(proto, from.addr, to.addr, &l4(from.port, to.port, false));
        prop_assert_eq!(ct.translate(&mut back, Csum::Full, 0, decide), Verdict::Translated(Dir::Reply));
        prop_assert!(verifies(&back));
        prop_assert_eq!(back[12..20].to_vec(), [w.octets(), e.octets()].concat());
        if proto != ICMP {
            prop_assert_eq!((src(&back).1, dst(&back).1), (dport, sport));
        } else {
            prop_assert_eq!(u16::from_be_bytes([back[24], back[25]]), sport);
        }
    }
}
