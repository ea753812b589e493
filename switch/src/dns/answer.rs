//! answer: one query in, what to do with it out. Names the networks know are answered here
//! (A, AAAA, PTR; an empty answer for a known name without an address of the asked family
//! or for any other type); everything else is for the upstream resolvers. Pure: no I/O,
//! so the fuzz target and unit tests drive it directly. The wire format is simple-dns's.

use super::names::{Asker, Found, Names};
use simple_dns::rdata::{RData, A, AAAA, OPT, PTR};
use simple_dns::{Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, OPCODE, QCLASS, QTYPE, RCODE, TYPE};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Docker's TTL for the names it answers.
pub const TTL: u32 = 600;
/// A UDP answer's limit without EDNS (RFC 1035).
pub const UDP_LIMIT: usize = 512;
/// A TCP message's limit (its 2-byte length).
pub const TCP_LIMIT: usize = 65535;

#[derive(Debug, PartialEq)]
pub enum Reply {
    /// Send this back.
    Local(Vec<u8>),
    /// Ask the upstream resolvers; their answer may be at most `limit` bytes for this client.
    Forward { limit: usize },
    /// Not a query (a response, or too short to carry an id): nothing is sent.
    Drop,
}

/// What became of a query, for the counters.
#[derive(Debug, PartialEq, Clone, Copy)]
pub enum Outcome {
    Answered,
    Forwarded,
    /// Did not parse, or asked something a resolver does not do (FORMERR / NOTIMP sent).
    Malformed,
    Dropped,
}

/// Answer `query` from `asker` (who asked through a gateway with room for `max_udp` bytes
/// of DNS in one UDP datagram; `tcp`: it came over TCP).
pub fn answer(query: &[u8], names: &Names, asker: &Asker, tcp: bool, max_udp: usize) -> (Reply, Outcome) {
    let Ok(q) = Packet::parse(query) else {
        return match error_reply(query, RCODE::FormatError) {
            Some(r) => (Reply::Local(r), Outcome::Malformed),
            None => (Reply::Drop, Outcome::Dropped),
        };
    };
    if q.has_flags(PacketFlag::RESPONSE) {
        return (Reply::Drop, Outcome::Dropped);
    }
    let limit = if tcp { TCP_LIMIT } else { udp_limit(&q, max_udp) };
    if q.opcode() != OPCODE::StandardQuery {
        return (Reply::Local(reply(&q, RCODE::NotImplemented, vec![], limit)), Outcome::Malformed);
    }
    let [question] = &q.questions[..] else {
        return (Reply::Local(reply(&q, RCODE::FormatError, vec![], limit)), Outcome::Malformed);
    };
    if !matches!(question.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY) {
        return (Reply::Forward { limit }, Outcome::Forwarded);
    }
    let name = question.qname.to_string().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    let found = match question.qtype {
        QTYPE::TYPE(TYPE::PTR) => match reverse_addr(name) {
            Some(a) => names.find_addr(asker, a),
            None => Found::Unknown,
        },
        _ => names.find(asker, name),
    };
    let answers = match found {
        Found::Unknown => return (Reply::Forward { limit }, Outcome::Forwarded),
        Found::Ptr(target) => match Name::new(target) {
            Ok(t) => vec![record(question, RData::PTR(PTR(t)))],
            Err(_) => return (Reply::Forward { limit }, Outcome::Forwarded),
        },
        Found::Name(mut addrs) => {
            shuffle(&mut addrs);
            addrs
                .into_iter()
                .filter_map(|a| match (question.qtype, a) {
                    (QTYPE::TYPE(TYPE::A), IpAddr::V4(v4)) => Some(RData::A(A { address: v4.into() })),
                    (QTYPE::TYPE(TYPE::AAAA), IpAddr::V6(v6)) => Some(RData::AAAA(AAAA { address: v6.into() })),
                    _ => None, // another family or type: the name exists, the answer is empty
                })
                .map(|d| record(question, d))
                .collect()
        }
    };
    (Reply::Local(reply(&q, RCODE::NoError, answers, limit)), Outcome::Answered)
}

fn record<'a>(q: &Question<'a>, data: RData<'a>) -> ResourceRecord<'a> {
    ResourceRecord::new(q.qname.clone(), CLASS::IN, TTL, data)
}

/// The largest UDP answer this client takes: 512 bytes, or what its EDNS record says (but
/// never more than one unfragmented datagram through the gateway).
fn udp_limit(q: &Packet, max_udp: usize) -> usize {
    let edns = q.opt().map_or(UDP_LIMIT, |o| o.udp_packet_size as usize);
    edns.max(UDP_LIMIT).min(max_udp.max(UDP_LIMIT))
}

/// A response to `q` with `answers`, truncated (TC set, no answers) if over `limit` bytes.
fn reply<'a>(q: &Packet<'a>, rcode: RCODE, answers: Vec<ResourceRecord<'a>>, limit: usize) -> Vec<u8> {
    let mut r = Packet::new_reply(q.id());
    *r.opcode_mut() = q.opcode();
    *r.rcode_mut() = rcode;
    r.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if q.has_flags(PacketFlag::RECURSION_DESIRED) {
        r.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    r.questions = q.questions.clone();
    if q.opt().is_some() {
        *r.opt_mut() = Some(OPT { opt_codes: vec![], udp_packet_size: limit.min(65535) as u16, version: 0 });
    }
    r.answers = answers;
    let bytes = r.build_bytes_vec_compressed().unwrap_or_default();
    if bytes.len() <= limit {
        return bytes;
    }
    r.answers.clear();
    r.set_flags(PacketFlag::TRUNCATION);
    r.build_bytes_vec_compressed().unwrap_or_default()
}

/// An upstream's answer cut to `limit` bytes for its client: as it is when it fits, else
/// its header and question with TC set (the client asks again over TCP). None: it does not
/// parse (the caller answers SERVFAIL).
pub fn fit(answer: &[u8], limit: usize) -> Option<Vec<u8>> {
    if answer.len() <= limit {
        return Some(answer.to_vec());
    }
    let a = Packet::parse(answer).ok()?;
    let mut r = Packet::new_reply(a.id());
    *r.opcode_mut() = a.opcode();
    *r.rcode_mut() = a.rcode();
    for f in [PacketFlag::RECURSION_AVAILABLE, PacketFlag::RECURSION_DESIRED, PacketFlag::AUTHORITATIVE_ANSWER] {
        if a.has_flags(f) {
            r.set_flags(f);
        }
    }
    r.set_flags(PacketFlag::TRUNCATION);
    r.questions = a.questions.clone();
    r.build_bytes_vec_compressed().ok()
}

/// The response code of an upstream's answer, None if it does not parse.
pub fn rcode(answer: &[u8]) -> Option<RCODE> {
    Packet::parse(answer).ok().map(|p| p.rcode())
}

/// A header-only error response to `query` (whose question did not parse), if it has at
/// least a header and is not itself a response.
pub fn error_reply(query: &[u8], rcode: RCODE) -> Option<Vec<u8>> {
    let header: &[u8; 12] = query.get(..12)?.try_into().ok()?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    if header[2] & 0x80 != 0 {
        return None;
    }
    let mut r = Packet::new_reply(id);
    *r.rcode_mut() = rcode;
    r.set_flags(PacketFlag::RECURSION_AVAILABLE);
    r.build_bytes_vec().ok()
}

/// SERVFAIL for a query that parsed before (every upstream failed).
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    status(query, RCODE::ServerFailure)
}

/// REFUSED (too many queries in flight), as Docker answers then.
pub fn refused(query: &[u8]) -> Option<Vec<u8>> {
    status(query, RCODE::Refused)
}

fn status(query: &[u8], rcode: RCODE) -> Option<Vec<u8>> {
    let q = Packet::parse(query).ok()?;
    Some(reply(&q, rcode, vec![], TCP_LIMIT))
}

/// The address a reverse name (`4.3.2.1.in-addr.arpa`, 32 nibbles `.ip6.arpa`) stands for.
pub fn reverse_addr(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() != 4 {
            return None;
        }
        for (i, l) in labels.iter().rev().enumerate() {
            octets[i] = l.parse().ok()?;
        }
        return Some(Ipv4Addr::from(octets).into());
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = rest.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut v: u128 = 0;
    for n in nibbles.iter().rev() {
        let d = u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1)?;
        v = v << 4 | d as u128;
    }
    Some(Ipv6Addr::from(v).into())
}

/// Several addresses in a random order each time (Docker's round robin).
fn shuffle(v: &mut [IpAddr]) {
    use std::hash::{BuildHasher, RandomState};
    let s = RandomState::new();
    for i in (1..v.len()).rev() {
        let j = (s.hash_one(i) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::super::names::Entry;
    use super::*;

    fn names() -> Names {
        let alias = vec!["front".to_string()];
        Names::build(
            &[(1, "blue")],
            vec![
                Entry {
                    net: 1,
                    name: "web",
                    aliases: &alias,
                    short_id: None,
                    addrs: vec!["10.1.0.2".parse().unwrap()],
                    sandbox: Some("web"),
                    upstreams: &[],
                },
                Entry {
                    net: 1,
                    name: "api",
                    aliases: &alias,
                    short_id: None,
                    addrs: vec!["10.1.0.3".parse().unwrap(), "fd00::3".parse().unwrap()],
                    sandbox: Some("api"),
                    upstreams: &[],
                },
            ],
        )
    }

    fn query(name: &str, ty: TYPE, edns: Option<u16>) -> Vec<u8> {
        let mut p = Packet::new_query(0x1234);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(Name::new(name).unwrap(), ty.into(), CLASS::IN.into(), false));
        if let Some(size) = edns {
            *p.opt_mut() = Some(OPT { opt_codes: vec![], udp_packet_size: size, version: 0 });
        }
        p.build_bytes_vec().unwrap()
    }

    fn ask(name: &str, ty: TYPE) -> Reply {
        let n = names();
        answer(&query(name, ty, None), &n, &n.asker(1, "10.1.0.2".parse().unwrap()), false, 1472).0
    }

    fn local(r: Reply) -> Vec<u8> {
        let Reply::Local(b) = r else { panic!("{r:?}") };
        b
    }

    #[test]
    fn a_aaaa_and_ptr_for_known_names() {
        let b = local(ask("WEB", TYPE::A));
        let r = Packet::parse(&b).unwrap();
        assert_eq!((r.id(), r.rcode(), r.answers.len()), (0x1234, RCODE::NoError, 1));
        assert_eq!(r.answers[0].ttl, TTL);
        assert_eq!(r.answers[0].rdata, RData::A(A { address: Ipv4Addr::new(10, 1, 0, 2).into() }));
        assert!(r.has_flags(PacketFlag::RECURSION_AVAILABLE) && r.has_flags(PacketFlag::RESPONSE));
        let b = local(ask("api.blue.", TYPE::AAAA));
        let r = Packet::parse(&b).unwrap();
        assert_eq!(r.answers.len(), 1);
        let b = local(ask("2.0.1.10.in-addr.arpa", TYPE::PTR));
        let r = Packet::parse(&b).unwrap();
        assert_eq!(r.answers[0].rdata, RData::PTR(PTR(Name::new("web.blue").unwrap())));
        let b = local(ask("front", TYPE::A));
        let mut alias = Packet::parse(&b).unwrap().answers;
        alias.sort_by_key(|a| format!("{:?}", a.rdata));
        assert_eq!(alias.len(), 2, "every endpoint under an alias");
    }

    #[test]
    fn a_known_name_without_that_family_is_an_empty_noerror() {
        let b = local(ask("web", TYPE::AAAA));
        let r = Packet::parse(&b).unwrap();
        assert_eq!((r.rcode(), r.answers.len()), (RCODE::NoError, 0));
        let b = local(ask("web", TYPE::MX));
        let r = Packet::parse(&b).unwrap();
        assert_eq!((r.rcode(), r.answers.len()), (RCODE::NoError, 0));
    }

    #[test]
    fn unknown_names_and_addresses_go_upstream() {
        assert_eq!(ask("example.org", TYPE::A), Reply::Forward { limit: 512 });
        assert_eq!(ask("9.9.9.9.in-addr.arpa", TYPE::PTR), Reply::Forward { limit: 512 });
        let n = names();
        let asker = n.asker(1, "10.1.0.2".parse().unwrap());
        assert_eq!(
            answer(&query("x.org", TYPE::A, Some(4096)), &n, &asker, false, 1472).0,
            Reply::Forward { limit: 1472 }
        );
        assert_eq!(
            answer(&query("x.org", TYPE::A, None), &n, &asker, true, 1472).0,
            Reply::Forward { limit: TCP_LIMIT }
        );
    }

    #[test]
    fn garbage_gets_formerr_or_nothing() {
        let n = names();
        let asker = n.asker(1, "10.1.0.2".parse().unwrap());
        let mut bad = query("web", TYPE::A, None);
        bad.truncate(15);
        let (Reply::Local(r), Outcome::Malformed) = answer(&bad, &n, &asker, false, 1472) else { panic!() };
        assert_eq!((r[0], r[1], r[3] & 0xf), (0x12, 0x34, 1));
        assert_eq!(answer(&bad[..5], &n, &asker, false, 1472).0, Reply::Drop);
        let mut response = query("web", TYPE::A, None);
        response[2] |= 0x80;
        assert_eq!(answer(&response, &n, &asker, false, 1472).0, Reply::Drop);
    }

    #[test]
    fn big_answers_are_truncated_to_the_clients_limit() {
        let many: Vec<IpAddr> = (1..=60).map(|i| IpAddr::V4(Ipv4Addr::new(10, 1, 1, i))).collect();
        let alias = vec!["pool".to_string()];
        let entries = many.iter().enumerate().map(|(i, a)| Entry {
            net: 1,
            name: ["a", "b", "c", "d", "e", "f"][i % 6],
            aliases: &alias,
            short_id: None,
            addrs: vec![*a],
            sandbox: None,
            upstreams: &[],
        });
        let n = Names::build(&[(1, "blue")], entries);
        let asker = n.asker(1, "10.1.0.2".parse().unwrap());
        let b = local(answer(&query("pool", TYPE::A, None), &n, &asker, false, 1472).0);
        let r = Packet::parse(&b).unwrap();
        assert!(r.has_flags(PacketFlag::TRUNCATION) && r.answers.is_empty());
        let b = local(answer(&query("pool", TYPE::A, Some(1232)), &n, &asker, false, 1472).0);
        let r = Packet::parse(&b).unwrap();
        assert_eq!(r.answers.len(), 60, "60 records fit in 1232 bytes");
        let b = local(answer(&query("pool", TYPE::A, None), &n, &asker, true, 1472).0);
        let r = Packet::parse(&b).unwrap();
        assert_eq!(r.answers.len(), 60);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_addr("4.3.2.1.in-addr.arpa"), Some("1.2.3.4".parse().unwrap()));
        let v6 = "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(reverse_addr(v6), Some("fd00::3".parse().unwrap()));
        assert_eq!(reverse_addr("1.2.3.in-addr.arpa"), None);
        assert_eq!(reverse_addr("300.2.3.4.in-addr.arpa"), None);
    }
}
