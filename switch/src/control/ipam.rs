//! IP address management, as Docker's default IPAM does it: a network has at most one subnet
//! per family; the gateway is the subnet's first address unless given; addresses are handed
//! out from `--ip-range` (default: the whole subnet), first free first, never the gateway or
//! an `--aux-address`. With no `--subnet`, IPv4 comes from the default pools (172.17-31.0.0/16,
//! then the /20s of 192.168.0.0/16) and IPv6 (with `--ipv6`) from a unique local /64.

use super::error::{Error, Result};
use super::state::{Network, Subnet};
use crate::mac::MacAddr;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a user asked for a new network's addresses (`network create` flags).
#[derive(Default, Debug, Clone)]
pub struct Request {
    pub subnets: Vec<IpNet>,
    pub gateways: Vec<IpAddr>,
    pub ip_ranges: Vec<IpNet>,
    pub aux_addresses: Vec<(String, IpAddr)>,
    pub ipv6: bool,
}

fn default_v4_pool() -> impl Iterator<Item = IpNet> {
    let a = (17..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("valid"));
    let b = (0..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).expect("valid"));
    a.chain(b).map(IpNet::V4)
}

/// Unique local /64s (RFC 4193): a random /48 for this call, then its subnets in turn.
fn default_v6_pool() -> impl Iterator<Item = IpNet> {
    let r = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now()).to_be_bytes();
    (0..=u16::MAX).map(move |i| {
        let s = i.to_be_bytes();
        let a = Ipv6Addr::from([0xfd, r[0], r[1], r[2], r[3], r[4], s[0], s[1], 0, 0, 0, 0, 0, 0, 0, 0]);
        IpNet::V6(Ipv6Net::new(a, 64).expect("valid"))
    })
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn family(n: &IpNet) -> &'static str {
    if n.addr().is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// The subnets of a new network, checked against `taken` (other networks' subnets).
pub fn plan(req: &Request, taken: &[(IpNet, String)]) -> Result<Vec<Subnet>> {
    let bad = |s: String| Err(Error::Ipam(s));
    let mut subnets: Vec<IpNet> = Vec::new();
    for s in &req.subnets {
        let s = s.trunc();
        if subnets.iter().any(|x| family(x) == family(&s)) {
            return bad(format!("at most one {} --subnet per network", family(&s)));
        }
        if s.addr().is_ipv6() && !req.ipv6 {
            return bad(format!("subnet {s} is IPv6: add --ipv6 to give endpoints IPv6 addresses"));
        }
        let too_small = match s {
            IpNet::V4(n) => n.prefix_len() > 30,
            IpNet::V6(n) => n.prefix_len() > 126,
        };
        if too_small {
            return bad(format!("subnet {s} is too small: it needs room for a gateway and endpoints"));
        }
        if let Some((t, name)) = taken.iter().find(|(t, _)| overlaps(t, &s)) {
            return bad(format!("subnet {s} overlaps subnet {t} of network {name}"));
        }
        subnets.push(s);
    }
    let free = |mut pool: Box<dyn Iterator<Item = IpNet>>| pool.find(|p| !taken.iter().any(|(t, _)| overlaps(t, p)));
    if !subnets.iter().any(|s| s.addr().is_ipv4()) {
        let s = free(Box::new(default_v4_pool()))
            .ok_or_else(|| Error::Ipam("no free default subnet left: give one with --subnet".into()))?;
        subnets.insert(0, s);
    }
    if req.ipv6 && !subnets.iter().any(|s| s.addr().is_ipv6()) {
        let s = free(Box::new(default_v6_pool()))
            .ok_or_else(|| Error::Ipam("no free IPv6 subnet: give one with --subnet".into()))?;
        subnets.push(s);
    }
    let within = |ip: IpAddr, what: &str| -> Result<IpNet> {
        subnets.iter().find(|s| s.contains(&ip)).copied().ok_or_else(|| {
            Error::Ipam(format!("{what} {ip} is not in any subnet of the network (give the --subnet it belongs to)"))
        })
    };
    let mut out: Vec<Subnet> = subnets
        .iter()
        .map(|&s| Subnet { subnet: s, gateway: first_host(&s), ip_range: s, aux_addresses: BTreeMap::new() })
        .collect();
    let slot = |out: &mut Vec<Subnet>, s: IpNet| out.iter().position(|x| x.subnet == s).expect("planned");
    let mut gw_given = HashSet::new();
    for &g in &req.gateways {
        let s = within(g, "gateway")?;
        if !gw_given.insert(s) {
            return bad(format!("more than one --gateway for subnet {s}"));
        }
        if !is_host(&s, g) {
            return bad(format!("gateway {g} is not a host address of subnet {s}"));
        }
        let i = slot(&mut out, s);
        out[i].gateway = g;
    }
    let mut range_given = HashSet::new();
    for r in &req.ip_ranges {
        let r = r.trunc();
        let s = subnets.iter().find(|s| s.contains(&r.network()) && r.prefix_len() >= s.prefix_len()).copied();
        let Some(s) = s else { return bad(format!("ip range {r} is not inside a subnet of the network")) };
        if !range_given.insert(s) {
            return bad(format!("more than one --ip-range for subnet {s}"));
        }
        let i = slot(&mut out, s);
        out[i].ip_range = r;
    }
    for (name, ip) in &req.aux_addresses {
        let s = within(*ip, "auxiliary address")?;
        let i = slot(&mut out, s);
        if out.iter().any(|x| x.aux_addresses.contains_key(name)) {
            return bad(format!("auxiliary address name '{name}' is given twice"));
        }
        out[i].aux_addresses.insert(name.clone(), *ip);
    }
    Ok(out)
}

/// The subnet's first host address (the default gateway).
fn first_host(s: &IpNet) -> IpAddr {
    match s {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 1)),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + 1)),
    }
}

/// An address an endpoint or gateway may have: in the subnet, not its network address,
/// and for IPv4 not its broadcast.
fn is_host(s: &IpNet, ip: IpAddr) -> bool {
    s.contains(&ip)
        && ip != s.network()
        && match s {
            IpNet::V4(n) => ip != IpAddr::V4(n.broadcast()),
            IpNet::V6(_) => true,
        }
}

/// Addresses a new endpoint of `net` gets: `want` if given and free, else the first free
/// one of each family the network has. An address of a family the network lacks is refused.
pub fn allocate(
    net: &Network,
    want4: Option<Ipv4Addr>,
    want6: Option<Ipv6Addr>,
) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let used: HashSet<IpAddr> = net
        .endpoints
        .iter()
        .flat_map(|e| [e.ipv4.map(IpAddr::V4), e.ipv6.map(IpAddr::V6)])
        .flatten()
        .chain(net.ipam.iter().flat_map(|s| std::iter::once(s.gateway).chain(s.aux_addresses.values().copied())))
        .collect();
    let pick = |sub: Option<&Subnet>, want: Option<IpAddr>, flag: &str| -> Result<Option<IpAddr>> {
        let Some(s) = sub else {
            return match want {
                Some(ip) => Err(Error::Ipam(format!("network {} has no subnet for {flag} {ip}", net.name))),
                None => Ok(None),
            };
        };
        if let Some(ip) = want {
            if !is_host(&s.subnet, ip) {
                return Err(Error::Ipam(format!(
                    "address {ip} is not a host address of subnet {} of network {}",
                    s.subnet, net.name
                )));
            }
            if used.contains(&ip) {
                return Err(Error::AddressTaken { ip, network: net.name.clone() });
            }
            return Ok(Some(ip));
        }
        first_free(s, &used).map(Some).ok_or_else(|| Error::Exhausted { range: s.ip_range, network: net.name.clone() })
    };
    // An address of a family the network lacks is the clearer error: say it first.
    if let (None, Some(ip)) = (net.subnet_v6(), want6) {
        return Err(Error::Ipam(format!("network {} has no subnet for --ip6 {ip}", net.name)));
    }
    let v4 = pick(net.subnet_v4(), want4.map(IpAddr::V4), "--ip")?;
    let v6 = pick(net.subnet_v6(), want6.map(IpAddr::V6), "--ip6")?;
    let as4 = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!("IPv4 subnet"),
    };
    let as6 = |ip: IpAddr| match ip {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => unreachable!("IPv6 subnet"),
    };
    Ok((v4.map(as4), v6.map(as6)))
}

/// The first address of the subnet's range nobody uses.
fn first_free(s: &Subnet, used: &HashSet<IpAddr>) -> Option<IpAddr> {
    match s.ip_range {
        IpNet::V4(r) => {
            let (lo, hi) = (u32::from(r.network()), u32::from(r.broadcast()));
            (lo..=hi).map(|a| IpAddr::V4(Ipv4Addr::from(a))).find(|&ip| is_host(&s.subnet, ip) && !used.contains(&ip))
        }
        IpNet::V6(r) => {
            // Bounded: a /64 has more addresses than any network has endpoints.
            let lo = u128::from(r.network());
            (0..=used.len() as u128 + 1)
                .map(|i| IpAddr::V6(Ipv6Addr::from(lo + i)))
                .find(|&ip| s.ip_range.contains(&ip) && is_host(&s.subnet, ip) && !used.contains(&ip))
        }
    }
}

/// Docker's endpoint MAC: 02:42 then the four bytes of the IPv4 address (or the last four of
/// the IPv6 address on an IPv6-only network).
pub fn mac_for(ipv4: Option<Ipv4Addr>, ipv6: Option<Ipv6Addr>) -> MacAddr {
    let o = match (ipv4, ipv6) {
        (Some(a), _) => a.octets(),
        (None, Some(a)) => {
            let b = a.octets();
            [b[12], b[13], b[14], b[15]]
        }
        (None, None) => {
            let r = std::collections::hash_map::RandomState::new().hash_one(0u8).to_be_bytes();
            [r[0], r[1], r[2], r[3]]
        }
    };
    MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
}

/// A MAC for a network's gateway: locally administered, and outside Docker's 02:42 range
/// so it never meets an endpoint's.
pub fn random_mac() -> MacAddr {
    let r = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now()).to_be_bytes();
    MacAddr([0x02, 0x56, 0x53, r[0], r[1], r[2]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::state::{BridgeOptions, DriverOptions, Endpoint};

    fn req(subnets: &[&str]) -> Request {
        Request { subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(), ..Default::default() }
    }

    fn network(ipam: Vec<Subnet>) -> Network {
        Network {
            name: "n".into(),
            id: "x".into(),
            created: 0,
            internal: false,
            ipam,
            driver: DriverOptions::Bridge(BridgeOptions {
                aging_secs: 300,
                max_learned: 10,
                mtu: 1500,
                gateway_mac: random_mac(),
                max_learned_per_port: None,
                inhibit_ipv4: false,
                icc: true,
                uplink: None,
            }),
            endpoints: vec![],
            static_macs: vec![],
            docker_id: None,
        }
    }

    #[test]
    fn defaults_follow_docker_and_skip_taken_subnets() {
        let p = plan(&Request::default(), &[]).unwrap();
        assert_eq!((p[0].subnet.to_string(), p[0].gateway.to_string()), ("172.17.0.0/16".into(), "172.17.0.1".into()));
        assert_eq!(p[0].ip_range, p[0].subnet);
        let taken = [(p[0].subnet, "a".to_string())];
        assert_eq!(plan(&Request::default(), &taken).unwrap()[0].subnet.to_string(), "172.18.0.0/16");
        let all: Vec<_> = default_v4_pool().map(|s| (s, "x".to_string())).collect();
        assert!(plan(&Request::default(), &all).unwrap_err().to_string().contains("no free default subnet"));
        let v6 = plan(&Request { ipv6: true, ..Default::default() }, &[]).unwrap();
        assert_eq!(v6.len(), 2);
        assert!(v6[1].subnet.to_string().starts_with("fd") && v6[1].subnet.prefix_len() == 64, "{:?}", v6[1]);
    }

    #[test]
    fn one_subnet_per_family_with_its_own_gateway_range_and_aux() {
        let mut r = req(&["10.1.0.0/24", "fd00:1::/64"]);
        r.ipv6 = true;
        r.gateways = vec!["10.1.0.254".parse().unwrap(), "fd00:1::fe".parse().unwrap()];
        r.ip_ranges = vec!["10.1.0.128/25".parse().unwrap()];
        r.aux_addresses = vec![("router".into(), "10.1.0.130".parse().unwrap())];
        let p = plan(&r, &[]).unwrap();
        assert_eq!(p[0].gateway.to_string(), "10.1.0.254");
        assert_eq!(p[1].gateway.to_string(), "fd00:1::fe");
        assert_eq!(p[0].ip_range.to_string(), "10.1.0.128/25");
        assert_eq!(p[0].aux_addresses["router"].to_string(), "10.1.0.130");
    }

    #[test]
    fn says_what_is_wrong() {
        let e = |r: Request, taken: &[(IpNet, String)]| plan(&r, taken).unwrap_err().to_string();
        assert_eq!(
            e(req(&["10.1.0.0/24"]), &[("10.0.0.0/8".parse().unwrap(), "blue".into())]),
            "subnet 10.1.0.0/24 overlaps subnet 10.0.0.0/8 of network blue"
        );
        assert!(e(req(&["10.1.0.0/24", "10.2.0.0/24"]), &[]).contains("at most one IPv4 --subnet"));
        assert!(e(req(&["fd00::/64"]), &[]).contains("add --ipv6"));
        assert!(e(req(&["10.1.0.0/31"]), &[]).contains("too small"));
        let mut r = req(&["10.1.0.0/24"]);
        r.gateways = vec!["10.2.0.1".parse().unwrap()];
        assert!(e(r, &[]).contains("gateway 10.2.0.1 is not in any subnet"));
        let mut r = req(&["10.1.0.0/24"]);
        r.gateways = vec!["10.1.0.255".parse().unwrap()];
        assert!(e(r, &[]).contains("not a host address"));
        let mut r = req(&["10.1.0.0/24"]);
        r.ip_ranges = vec!["10.1.1.0/25".parse().unwrap()];
        assert!(e(r, &[]).contains("ip range 10.1.1.0/25 is not inside"));
    }

    #[test]
    fn allocation_skips_gateway_aux_and_used_and_runs_out() {
        let mut r = req(&["10.9.0.0/29"]);
        r.aux_addresses = vec![("x".into(), "10.9.0.3".parse().unwrap())];
        let mut n = network(plan(&r, &[]).unwrap());
        let mut got = vec![];
        while let Ok((Some(ip), None)) = allocate(&n, None, None) {
            got.push(ip.to_string());
            n.endpoints.push(Endpoint {
                name: ip.to_string(),
                kind: crate::port::PortKind::Tap,
                ipv4: Some(ip),
                ipv6: None,
                mac: mac_for(Some(ip), None),
                created_tap: false,
                sandbox: None,
                max_learned: None,
                published: vec![],
                docker: None,
            });
        }
        assert_eq!(got, ["10.9.0.2", "10.9.0.4", "10.9.0.5", "10.9.0.6"]);
        assert_eq!(
            allocate(&n, None, None).unwrap_err().to_string(),
            "no free address left in 10.9.0.0/29 of network n"
        );
        assert_eq!(
            allocate(&n, Some("10.9.0.1".parse().unwrap()), None).unwrap_err().to_string(),
            "address 10.9.0.1 is already in use on network n"
        );
        assert!(allocate(&n, None, Some("fd00::5".parse().unwrap()))
            .unwrap_err()
            .to_string()
            .contains("no subnet for --ip6"));
        assert_eq!(mac_for(Some("172.18.0.2".parse().unwrap()), None).to_string(), "02:42:ac:12:00:02");
    }

    #[test]
    fn ipv6_allocation() {
        let mut r = req(&["10.9.0.0/24", "fd00:9::/64"]);
        r.ipv6 = true;
        let n = network(plan(&r, &[]).unwrap());
        let (v4, v6) = allocate(&n, None, None).unwrap();
        assert_eq!((v4.unwrap().to_string(), v6.unwrap().to_string()), ("10.9.0.2".into(), "fd00:9::2".into()));
        let (_, v6) = allocate(&n, None, Some("fd00:9::99".parse().unwrap())).unwrap();
        assert_eq!(v6.unwrap().to_string(), "fd00:9::99");
    }
}
