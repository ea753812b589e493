//! Published ports: Docker's `-p [IP:][HOST[-HOST]]:CONTAINER[-CONTAINER][/tcp|/udp]`
//! parsed as Docker parses it, and the table a new inbound flow is looked up in.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::key::{Endpoint, Proto};

/// Where `-p` with no host port takes one from (Docker's default).
pub const EPHEMERAL: RangeInclusive<u16> = 49153..=65535;

/// One `-p` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub host_ip: Option<Ipv4Addr>,
    /// None: any free port from [`EPHEMERAL`].
    pub host: Option<RangeInclusive<u16>>,
    pub container: RangeInclusive<u16>,
    pub proto: Proto,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("invalid port spec {spec:?}: {why} (expected [IP:][HOST[-HOST]]:CONTAINER[-CONTAINER][/tcp|udp])")]
    Syntax { spec: String, why: String },
    #[error("{proto}/{port} is already published{by}")]
    Taken { proto: &'static str, port: u16, by: String },
    #[error("no free port in {0}-{1}")]
    RangeFull(u16, u16),
}

fn syntax(spec: &str, why: impl Into<String>) -> PublishError {
    PublishError::Syntax { spec: spec.to_string(), why: why.into() }
}

fn range(spec: &str, s: &str) -> Result<RangeInclusive<u16>, PublishError> {
    let port = |p: &str| match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(syntax(spec, format!("{p:?} is not a port (1-65535)"))),
        Ok(n) => Ok(n),
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(syntax(spec, format!("range {a}-{b} ends before it starts")));
            }
            Ok(a..=b)
        }
        None => port(s).map(|p| p..=p),
    }
}

fn len(r: &RangeInclusive<u16>) -> u32 {
    u32::from(*r.end()) - u32::from(*r.start()) + 1
}

impl FromStr for PortSpec {
    type Err = PublishError;

    fn from_str(spec: &str) -> Result<PortSpec, PublishError> {
        let (ports, proto) = match spec.rsplit_once('/') {
            Some((p, "tcp")) => (p, Proto::Tcp),
            Some((p, "udp")) => (p, Proto::Udp),
            Some((_, other)) => return Err(syntax(spec, format!("protocol {other:?} (tcp or udp)"))),
            None => (spec, Proto::Tcp),
        };
        if ports.starts_with('[') {
            return Err(syntax(spec, "IPv6 host addresses are not supported yet"));
        }
        let parts: Vec<&str> = ports.split(':').collect();
        let (ip, host, container) = match parts[..] {
            [c] => (None, None, c),
            [h, c] => (None, Some(h), c),
            [ip, h, c] => (Some(ip), (!h.is_empty()).then_some(h), c),
            _ => return Err(syntax(spec, "too many ':'")),
        };
        let host_ip = match ip {
            None | Some("") => None,
            Some(ip) => Some(ip.parse().map_err(|_| syntax(spec, format!("{ip:?} is not an IPv4 address")))?),
        };
        let container = range(spec, container)?;
        let host = host.map(|h| range(spec, h)).transpose()?;
        if let Some(h) = &host {
            if len(&container) != 1 && len(h) != len(&container) {
                return Err(syntax(
                    spec,
                    format!(
                        "host range {}-{} and container range {}-{} differ in size",
                        h.start(),
                        h.end(),
                        container.start(),
                        container.end()
                    ),
                ));
            }
        }
        Ok(PortSpec { host_ip, host, container, proto })
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let r = |r: &RangeInclusive<u16>| {
            if r.start() == r.end() {
                r.start().to_string()
            } else {
                format!("{}-{}", r.start(), r.end())
            }
        };
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        match &self.host {
            Some(h) => write!(f, "{}:", r(h))?,
            None if self.host_ip.is_some() => write!(f, ":")?,
            None => {}
        }
        write!(f, "{}/{}", r(&self.container), self.proto.name())
    }
}

/// One published port, resolved: `host_port` (on `host_ip`, or every outside address)
/// forwards to `target`. `owner` says whose it is (an endpoint's id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub proto: Proto,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub target: Endpoint,
    pub owner: String,
}

/// Every published port; what a new inbound flow is matched against.
#[derive(Clone, Debug, Default)]
pub struct Publications {
    entries: Vec<Published>,
}

impl Publications {
    pub fn iter(&self) -> impl Iterator<Item = &Published> {
        self.entries.iter()
    }

    /// Where a flow to `dst` goes, if `dst` is published.
    pub fn lookup(&self, proto: Proto, dst: Endpoint) -> Option<&Published> {
        self.entries
            .iter()
            .find(|p| p.proto == proto && p.host_port == dst.port && p.host_ip.is_none_or(|ip| ip == dst.addr))
    }

    fn holder(&self, proto: Proto, ip: Option<Ipv4Addr>, port: u16) -> Option<&Published> {
        self.entries.iter().find(|p| {
            p.proto == proto && p.host_port == port && (p.host_ip.is_none() || ip.is_none() || p.host_ip == ip)
        })
    }

    /// Publish `spec` for `owner` at `target`: all of it, or nothing and an error.
    pub fn publish(&mut self, spec: &PortSpec, target: Ipv4Addr, owner: &str) -> Result<Vec<Published>, PublishError> {
        let free = |port: u16| self.holder(spec.proto, spec.host_ip, port).is_none();
        let pairs: Vec<(u16, u16)> = match &spec.host {
            Some(h) if len(h) == len(&spec.container) => {
                let pairs: Vec<(u16, u16)> = h.clone().zip(spec.container.clone()).collect();
                if let Some(&(port, _)) = pairs.iter().find(|(port, _)| !free(*port)) {
                    let by = self
                        .holder(spec.proto, spec.host_ip, port)
                        .map(|p| format!(" by {}", p.owner))
                        .unwrap_or_default();
                    return Err(PublishError::Taken { proto: spec.proto.name(), port, by });
                }
                pairs
            }
            // A host range for one container port is a pool: the first free port.
            pool => {
                let pool = pool.clone().unwrap_or(EPHEMERAL);
                let Some(port) = pool.clone().find(|&p| free(p)) else {
                    if len(&pool) == 1 {
                        let holder = self.holder(spec.proto, spec.host_ip, *pool.start());
                        let by = holder.map(|p| format!(" by {}", p.owner)).unwrap_or_default();
                        return Err(PublishError::Taken { proto: spec.proto.name(), port: *pool.start(), by });
                    }
                    return Err(PublishError::RangeFull(*pool.start(), *pool.end()));
                };
                vec![(port, *spec.container.start())]
            }
        };
        let added: Vec<Published> = pairs
            .into_iter()
            .map(|(host_port, port)| Published {
                proto: spec.proto,
                host_ip: spec.host_ip,
                host_port,
                target: Endpoint::new(target, port),
                owner: owner.to_string(),
            })
            .collect();
        self.entries.extend(added.iter().cloned());
        Ok(added)
    }

    /// Put back entries saved earlier (a restart), as they were.
    pub fn restore(&mut self, entries: impl IntoIterator<Item = Published>) {
        self.entries.extend(entries);
    }

    /// Unpublish everything `owner` published; returns what went.
    pub fn remove_owner(&mut self, owner: &str) -> Vec<Published> {
        let (gone, kept) = std::mem::take(&mut self.entries).into_iter().partition(|p| p.owner == owner);
        self.entries = kept;
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> PortSpec {
        s.parse().unwrap()
    }

    #[test]
    fn docker_forms_parse() {
        assert_eq!(
            spec("8080:80"),
            PortSpec { host_ip: None, host: Some(8080..=8080), container: 80..=80, proto: Proto::Tcp }
        );
        assert_eq!(spec("5353:53/udp").proto, Proto::Udp);
        assert_eq!(spec("80").host, None);
        let s = spec("192.0.2.10:9000:9000");
        assert_eq!(s.host_ip, Some(Ipv4Addr::new(192, 0, 2, 10)));
        assert_eq!(spec("192.0.2.10::80").host, None);
        assert_eq!(spec("8000-8010:80").host, Some(8000..=8010));
        assert_eq!(spec("8000-8001:80-81").container, 80..=81);
        for s in
            ["8080:80", "5353:53/udp", "80/tcp", "192.0.2.10:9000:9000/tcp", "192.0.2.10::80/tcp", "8000-8010:80/tcp"]
        {
            assert_eq!(spec(&spec(s).to_string()), spec(s), "{s} prints back as itself");
        }
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        for (s, why) in [
            ("8080:80/sctp", "protocol"),
            ("0:80", "not a port"),
            ("70000:80", "not a port"),
            ("8080:", "not a port"),
            ("a:b:c:d", "too many"),
            ("300.1.1.1:80:80", "IPv4"),
            ("8000-8002:80-81", "differ in size"),
            ("90-80:80", "ends before"),
            ("[::1]:80:80", "IPv6"),
        ] {
            let e = s.parse::<PortSpec>().unwrap_err().to_string();
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn a_taken_port_is_refused_and_nothing_changes() {
        let mut p = Publications::default();
        let web = Ipv4Addr::new(172, 18, 0, 2);
        p.publish(&spec("8080:80"), web, "web").unwrap();
        let e = p.publish(&spec("8079-8080:80-81"), web, "api").unwrap_err();
        assert_eq!(e.to_string(), "tcp/8080 is already published by web");
        assert_eq!(p.iter().count(), 1);
        // The same port on another protocol, or on a pool with room, is fine.
        p.publish(&spec("8080:80/udp"), web, "web").unwrap();
        let got = p.publish(&spec("8080-8082:80"), web, "api").unwrap();
        assert_eq!(got[0].host_port, 8081);
        let to = |p: &Publications, port| {
            p.lookup(Proto::Tcp, Endpoint::new(Ipv4Addr::new(192, 0, 2, 10), port)).map(|x| x.target)
        };
        assert_eq!(to(&p, 8080), Some(Endpoint::new(web, 80)));
        assert_eq!(to(&p, 9999), None);
        assert_eq!(p.remove_owner("api").len(), 1);
        assert_eq!(to(&p, 8081), None);
    }

    #[test]
    fn an_address_limits_a_publication() {
        let mut p = Publications::default();
        let (a, b) = (Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11));
        p.publish(&spec("192.0.2.10:80:80"), Ipv4Addr::new(10, 0, 0, 2), "x").unwrap();
        assert!(p.lookup(Proto::Tcp, Endpoint::new(a, 80)).is_some());
        assert!(p.lookup(Proto::Tcp, Endpoint::new(b, 80)).is_none());
        p.publish(&spec("192.0.2.11:80:80"), Ipv4Addr::new(10, 0, 0, 3), "y").unwrap();
        assert!(p.publish(&spec("80:80"), Ipv4Addr::new(10, 0, 0, 4), "z").is_err(), "all addresses overlaps both");
    }
}
