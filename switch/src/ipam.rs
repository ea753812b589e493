//! IP address management: a subnet, gateway and range per network, an address per endpoint.
//! Defaults follow Docker: 172.18.0.0/16 upwards, then /20s of 192.168.0.0/16.

use crate::mac::MacAddr;
use crate::state::Network;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

fn default_pool() -> impl Iterator<Item = Ipv4Net> {
    let a = (18..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).unwrap());
    let b = (0..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).unwrap());
    a.chain(b)
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The addresses of a new network from the user's options, checked against `taken` subnets.
pub fn plan(
    subnet: Option<Ipv4Net>,
    gateway: Option<Ipv4Addr>,
    ip_range: Option<Ipv4Net>,
    taken: &[Ipv4Net],
) -> Result<(Ipv4Net, Ipv4Addr, Ipv4Net), String> {
    let subnet = match subnet {
        Some(s) => {
            let s = s.trunc();
            if s.prefix_len() > 30 {
                return Err(format!(
                    "subnet {s} is too small: it needs room for a gateway and endpoints (/30 or larger)"
                ));
            }
            if let Some(t) = taken.iter().find(|t| overlaps(t, &s)) {
                return Err(format!("subnet {s} overlaps subnet {t} of another network"));
            }
            s
        }
        None => default_pool()
            .find(|p| !taken.iter().any(|t| overlaps(t, p)))
            .ok_or("no free default subnet left: give one with --subnet")?,
    };
    let gateway = gateway.unwrap_or_else(|| subnet.hosts().next().expect("/30 or larger has hosts"));
    if !subnet.contains(&gateway) || gateway == subnet.network() || gateway == subnet.broadcast() {
        return Err(format!("gateway {gateway} is not a host address of subnet {subnet}"));
    }
    let ip_range = ip_range.map(|r| r.trunc()).unwrap_or(subnet);
    if !subnet.contains(&ip_range.network()) || ip_range.prefix_len() < subnet.prefix_len() {
        return Err(format!("ip range {ip_range} is not inside subnet {subnet}"));
    }
    Ok((subnet, gateway, ip_range))
}

/// An address for a new endpoint of `net`: `want` if given and free, else the first free one.
pub fn allocate(net: &Network, want: Option<Ipv4Addr>) -> Result<Ipv4Addr, String> {
    let used = |ip: Ipv4Addr| ip == net.gateway || net.endpoints.iter().any(|e| e.ipv4 == ip);
    if let Some(ip) = want {
        if !net.subnet.contains(&ip) || ip == net.subnet.network() || ip == net.subnet.broadcast() {
            return Err(format!("address {ip} is not a host address of subnet {} of network {}", net.subnet, net.name));
        }
        if used(ip) {
            return Err(format!("address {ip} is already in use on network {}", net.name));
        }
        return Ok(ip);
    }
    net.ip_range
        .hosts()
        .filter(|ip| net.subnet.contains(ip) && *ip != net.subnet.broadcast())
        .find(|ip| !used(*ip))
        .ok_or_else(|| format!("no free address left in {} of network {}", net.ip_range, net.name))
}

/// Docker's endpoint MAC: 02:42 then the four bytes of the IPv4 address.
pub fn mac_for(ip: Ipv4Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Driver, Endpoint};

    #[test]
    fn defaults_skip_taken_subnets() {
        let (s, g, r) = plan(None, None, None, &[]).unwrap();
        assert_eq!(s.to_string(), "172.18.0.0/16");
        assert_eq!(g.to_string(), "172.18.0.1");
        assert_eq!(r, s);
        let (s2, _, _) = plan(None, None, None, &[s]).unwrap();
        assert_eq!(s2.to_string(), "172.19.0.0/16");
    }

    #[test]
    fn rejects_bad_plans() {
        let s: Ipv4Net = "10.1.0.0/24".parse().unwrap();
        assert!(plan(Some(s), None, None, &["10.0.0.0/8".parse().unwrap()]).unwrap_err().contains("overlaps"));
        assert!(plan(Some(s), Some("10.2.0.1".parse().unwrap()), None, &[]).unwrap_err().contains("gateway"));
        assert!(plan(Some(s), None, Some("10.1.1.0/25".parse().unwrap()), &[]).unwrap_err().contains("range"));
        assert!(plan(Some("10.1.0.0/31".parse().unwrap()), None, None, &[]).is_err());
    }

    #[test]
    fn allocation() {
        let (subnet, gateway, ip_range) = plan(Some("10.9.0.0/29".parse().unwrap()), None, None, &[]).unwrap();
        let mut n = Network {
            name: "n".into(),
            id: "x".into(),
            driver: Driver::Bridge,
            subnet,
            gateway,
            ip_range,
            aging_secs: 300,
            max_learned: 10,
            created: 0,
            endpoints: vec![],
            static_macs: vec![],
        };
        let mut got = vec![];
        while let Ok(ip) = allocate(&n, None) {
            got.push(ip.to_string());
            n.endpoints.push(Endpoint {
                name: ip.to_string(),
                kind: crate::port::PortKind::Tap,
                ipv4: ip,
                mac: mac_for(ip),
                created_tap: false,
            });
        }
        assert_eq!(got, ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]);
        assert!(allocate(&n, Some("10.9.0.1".parse().unwrap())).unwrap_err().contains("in use"));
        assert_eq!(mac_for("172.18.0.2".parse().unwrap()).to_string(), "02:42:ac:12:00:02");
    }
}
