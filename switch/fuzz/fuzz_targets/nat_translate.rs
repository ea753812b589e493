//! The NAT on any bytes: parse, create a session, translate, find it again, and for an
//! ICMP error, translate it against a session for the packet it quotes. Nothing may panic,
//! and a header checksum that verified before a rewrite verifies after it.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use vswitch_nat::packet::{self, Kind};
use vswitch_nat::{checksum, Config, Conntrack, Csum, Decision, Endpoint};

const U: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, frame)) = data.split_first() else { return };
    let csum = if mode & 1 == 0 { Csum::Full } else { Csum::Partial };
    let dnat = (mode & 2 != 0).then_some(Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 80));
    let decide = |_: &_| Decision::Translate { tag: u16::from(mode >> 4), snat: Some(U), dnat };
    let mut ct = Conntrack::new(Config { max_sessions: 8, ports: 40000..=40003, ..Config::default() });
    if let Ok(p) = packet::parse(frame) {
        if let Kind::IcmpError { inner } = p.kind {
            let _ = ct.create(inner.reversed(), 0, Some(U), dnat, 0);
        }
    }
    let header_ok =
        |b: &[u8]| b.len() >= 20 && checksum::checksum(&b[..(usize::from(b[0] & 0xf) * 4).min(b.len())]) == 0;
    for now in [0, 1] {
        let mut buf = frame.to_vec();
        let before = header_ok(&buf);
        let _ = ct.translate(&mut buf, csum, now, decide);
        if before {
            assert!(header_ok(&buf), "a rewrite broke the IP header checksum");
        }
    }
    let _ = ct.sessions().count();
    ct.expire(1000, usize::MAX);
    assert!(ct.is_empty());
});
