//! names: who is called what, as the embedded DNS answers it. The control plane builds a
//! `Names` from its state on every change and hands the services thread the whole of it
//! (an `Arc`); a query never waits for the control plane.
//!
//! Docker's rules: an endpoint answers to its container's name, its network-scoped aliases,
//! the container's 12-character short id, and each of those with `.NETWORK` after it, all
//! lower-cased; it is visible only to endpoints it shares a network with.

use crate::worker::NetId;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// The names of every network with DNS, and which networks each asker sees.
#[derive(Default, Debug)]
pub struct Names {
    nets: HashMap<NetId, NetNames>,
    /// An endpoint's address on a network → everything its sandbox sees: its networks and
    /// the resolvers it forwards to (`--dns`; empty: the host's).
    askers: HashMap<(NetId, IpAddr), Asker>,
    /// Where unknown names are asked when the asker has no `--dns` of its own (the
    /// daemon's resolv.conf).
    pub upstreams: Vec<SocketAddr>,
}

#[derive(Default, Debug)]
pub struct NetNames {
    /// The network's name, lower-cased: `name.NETWORK` resolves too.
    pub network: String,
    /// Name → addresses of either family (a name with none of the asked family gets an empty
    /// answer, not NXDOMAIN).
    by_name: HashMap<String, Vec<IpAddr>>,
    /// Address → `name.network` (the sandbox's name), for PTR.
    by_addr: HashMap<IpAddr, String>,
}

#[derive(Default, Debug, Clone)]
pub struct Asker {
    /// The networks the asker's sandbox is on, the one asked through first.
    pub nets: Vec<NetId>,
    pub upstreams: Vec<IpAddr>,
}

/// One endpoint, as the control plane describes it.
pub struct Entry<'a> {
    pub net: NetId,
    /// The sandbox's name (or the port's, for an endpoint without one).
    pub name: &'a str,
    pub aliases: &'a [String],
    pub short_id: Option<&'a str>,
    pub addrs: Vec<IpAddr>,
    /// The sandbox it is in: endpoints in one sandbox share what they see.
    pub sandbox: Option<&'a str>,
    pub upstreams: &'a [IpAddr],
}

/// What a name is, seen from one asker.
#[derive(Debug, PartialEq)]
pub enum Found<'a> {
    /// A name the networks know, with every address it has (maybe none of the asked family).
    Name(Vec<IpAddr>),
    /// The name an address has (PTR).
    Ptr(&'a str),
    Unknown,
}

impl Names {
    /// `networks` are (id, name) of the networks that run DNS; entries on others are ignored.
    pub fn build<'a>(networks: &[(NetId, &str)], entries: impl IntoIterator<Item = Entry<'a>>) -> Names {
        let mut nets: HashMap<NetId, NetNames> = networks
            .iter()
            .map(|&(id, n)| (id, NetNames { network: n.to_ascii_lowercase(), ..Default::default() }))
            .collect();
        let entries: Vec<Entry> = entries.into_iter().filter(|e| nets.contains_key(&e.net)).collect();
        let mut sandbox_nets: HashMap<&str, Vec<NetId>> = HashMap::new();
        for e in &entries {
            if let Some(s) = e.sandbox {
                sandbox_nets.entry(s).or_default().push(e.net);
            }
        }
        let mut askers = HashMap::new();
        for e in &entries {
            let n = nets.get_mut(&e.net).expect("filtered");
            let mut names: Vec<String> = vec![e.name.to_ascii_lowercase()];
            names.extend(e.aliases.iter().map(|a| a.to_ascii_lowercase()));
            names.extend(e.short_id.map(|s| s.to_ascii_lowercase()));
            for name in names {
                let scoped = format!("{name}.{}", n.network);
                for k in [name, scoped] {
                    let v = n.by_name.entry(k).or_default();
                    for a in &e.addrs {
                        if !v.contains(a) {
                            v.push(*a);
                        }
                    }
                }
            }
            for &a in &e.addrs {
                n.by_addr.entry(a).or_insert_with(|| format!("{}.{}", e.name.to_ascii_lowercase(), n.network));
                let mut seen = vec![e.net];
                if let Some(s) = e.sandbox {
                    seen.extend(sandbox_nets[s].iter().filter(|&&x| x != e.net));
                }
                askers.insert((e.net, a), Asker { nets: seen, upstreams: e.upstreams.to_vec() });
            }
        }
        Names { nets, askers, upstreams: vec![] }
    }

    /// Whether network `net` answers DNS.
    pub fn serves(&self, net: NetId) -> bool {
        self.nets.contains_key(&net)
    }

    /// What `from`, asking through network `net`'s gateway, sees.
    pub fn asker(&self, net: NetId, from: IpAddr) -> Asker {
        self.askers.get(&(net, from)).cloned().unwrap_or_else(|| Asker { nets: vec![net], upstreams: vec![] })
    }

    /// Look `name` (lower-cased, no trailing dot) up on the networks `asker` sees.
    pub fn find(&self, asker: &Asker, name: &str) -> Found<'_> {
        for id in &asker.nets {
            if let Some(a) = self.nets.get(id).and_then(|n| n.by_name.get(name)) {
                return Found::Name(a.clone());
            }
        }
        Found::Unknown
    }

    /// The name `addr` has on the networks `asker` sees.
    pub fn find_addr(&self, asker: &Asker, addr: IpAddr) -> Found<'_> {
        for id in &asker.nets {
            if let Some(n) = self.nets.get(id).and_then(|n| n.by_addr.get(&addr)) {
                return Found::Ptr(n);
            }
        }
        Found::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        let a: IpAddr = "10.1.0.2".parse().unwrap();
        let b: IpAddr = "10.1.0.3".parse().unwrap();
        let c: IpAddr = "10.2.0.2".parse().unwrap();
        let web_alias = vec!["Front".to_string()];
        let api_alias = vec!["front".to_string()];
        Names::build(
            &[(1, "Blue"), (2, "red")],
            vec![
                Entry {
                    net: 1,
                    name: "Web",
                    aliases: &web_alias,
                    short_id: Some("0123456789ab"),
                    addrs: vec![a, "fd00::2".parse().unwrap()],
                    sandbox: Some("Web"),
                    upstreams: &[],
                },
                Entry {
                    net: 1,
                    name: "api",
                    aliases: &api_alias,
                    short_id: None,
                    addrs: vec![b],
                    sandbox: Some("api"),
                    upstreams: &[],
                },
                Entry {
                    net: 2,
                    name: "db",
                    aliases: &[],
                    short_id: None,
                    addrs: vec![c],
                    sandbox: Some("db"),
                    upstreams: &[],
                },
                Entry {
                    net: 2,
                    name: "api",
                    aliases: &[],
                    short_id: None,
                    addrs: vec!["10.2.0.3".parse().unwrap()],
                    sandbox: Some("api"),
                    upstreams: &[],
                },
                Entry {
                    net: 9,
                    name: "ghost",
                    aliases: &[],
                    short_id: None,
                    addrs: vec![a],
                    sandbox: None,
                    upstreams: &[],
                },
            ],
        )
    }

    #[test]
    fn names_aliases_ids_and_scoped_names_resolve_case_insensitively() {
        let n = names();
        let web = n.asker(1, "10.1.0.2".parse().unwrap());
        let Found::Name(mut front) = n.find(&web, "front") else { panic!() };
        front.sort();
        assert_eq!(
            front,
            vec!["10.1.0.2".parse::<IpAddr>().unwrap(), "10.1.0.3".parse().unwrap(), "fd00::2".parse().unwrap()]
        );
        assert!(matches!(n.find(&web, "web.blue"), Found::Name(_)));
        assert!(matches!(n.find(&web, "0123456789ab"), Found::Name(_)));
        assert_eq!(n.find(&web, "db"), Found::Unknown, "db is on a network web is not on");
        assert_eq!(n.find(&web, "ghost"), Found::Unknown, "network 9 has no DNS");
        assert_eq!(n.find_addr(&web, "10.1.0.3".parse().unwrap()), Found::Ptr("api.blue"));
    }

    #[test]
    fn an_asker_on_two_networks_sees_both() {
        let n = names();
        let api = n.asker(1, "10.1.0.3".parse().unwrap());
        assert!(matches!(n.find(&api, "db"), Found::Name(_)));
        assert!(matches!(n.find(&api, "db.red"), Found::Name(_)));
        // A stranger (no endpoint of ours) sees the network it asked through.
        let stranger = n.asker(2, "10.2.0.99".parse().unwrap());
        assert_eq!(stranger.nets, vec![2]);
        assert!(matches!(n.find(&stranger, "db"), Found::Name(_)));
    }
}
