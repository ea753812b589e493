//! Any bytes as a DNS query to the embedded resolver (a stranger's datagram to a gateway's
//! port 53), and as an upstream's answer cut to a client's size: nothing panics, every reply
//! parses, and none is larger than the client can take.
#![no_main]
use libfuzzer_sys::fuzz_target;
use simple_dns::Packet;
use std::sync::OnceLock;
use vswitch::dns::answer::{answer, fit, Reply, UDP_LIMIT};
use vswitch::dns::names::{Entry, Names};

fn names() -> &'static Names {
    static N: OnceLock<Names> = OnceLock::new();
    N.get_or_init(|| {
        let alias = vec!["front".to_string()];
        let e = |name: &'static str, ip: &str| Entry {
            net: 1,
            name,
            aliases: &alias,
            short_id: Some("0123456789ab"),
            addrs: vec![ip.parse().unwrap(), "fd00::5".parse().unwrap()],
            sandbox: Some(name),
            upstreams: &[],
        };
        Names::build(&[(1, "blue")], vec![e("web", "10.1.0.2"), e("api", "10.1.0.3")])
    })
}

fuzz_target!(|data: &[u8]| {
    let n = names();
    let asker = n.asker(1, "10.1.0.2".parse().unwrap());
    for (tcp, max_udp) in [(false, 1452), (true, 1452), (false, 100)] {
        if let (Reply::Local(r), _) = answer(data, n, &asker, tcp, max_udp) {
            assert!(r.len() >= 12, "a reply has a header");
            assert!(Packet::parse(&r).is_ok(), "our reply parses");
            if !tcp {
                assert!(r.len() <= max_udp.max(UDP_LIMIT), "{} > {max_udp}", r.len());
            }
        }
    }
    if let Some(a) = fit(data, UDP_LIMIT) {
        assert!(a.len() <= UDP_LIMIT, "fit keeps what fits and cuts the rest to a header and question");
    }
});
