//! State files of earlier formats, brought to the current one on load. Never rejected:
//! a release's state must come back whole after an upgrade.
//!
//! Version 1 (the first release): one IPv4 subnet per network in flat fields, the bridge's
//! options beside them, endpoints with an IPv4 address only, no sandboxes.

use super::state::{BridgeOptions, DriverOptions, Endpoint, Network, State, Subnet, FORMAT_VERSION};
use crate::mac::MacAddr;
use crate::port::PortKind;
use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Deserialize)]
struct V1 {
    networks: Vec<V1Network>,
}

#[derive(Deserialize)]
struct V1Network {
    name: String,
    id: String,
    driver: String,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    ip_range: Ipv4Net,
    aging_secs: u32,
    max_learned: usize,
    created: u64,
    endpoints: Vec<V1Endpoint>,
    #[serde(default)]
    static_macs: Vec<super::state::StaticMac>,
}

#[derive(Deserialize)]
struct V1Endpoint {
    name: String,
    kind: PortKind,
    ipv4: Ipv4Addr,
    mac: MacAddr,
    #[serde(default)]
    created_tap: bool,
}

/// A version-1 state as the current format. Gateways get the MAC they will keep from now on;
/// the switch now answers for the gateway address a version-1 network only recorded (a port
/// holding it should move, or the network take `-o com.docker.network.bridge.inhibit_ipv4`).
pub fn from_v1(v: serde_json::Value) -> Result<State, serde_json::Error> {
    let old: V1 = serde_json::from_value(v)?;
    let mut st = State { version: FORMAT_VERSION, networks: Vec::new(), sandboxes: Vec::new() };
    for n in old.networks {
        tracing::warn!(network = %n.name, gateway = %n.gateway,
            "migrated: the switch now answers for the gateway address (it was only recorded before)");
        if n.driver != "bridge" {
            return Err(serde::de::Error::custom(format!("network {} has driver {}", n.name, n.driver)));
        }
        st.networks.push(Network {
            name: n.name,
            id: n.id,
            created: n.created,
            internal: false,
            ipam: vec![Subnet {
                subnet: IpNet::V4(n.subnet),
                gateway: n.gateway.into(),
                ip_range: IpNet::V4(n.ip_range),
                aux_addresses: BTreeMap::new(),
            }],
            driver: DriverOptions::Bridge(BridgeOptions {
                aging_secs: n.aging_secs,
                max_learned: n.max_learned,
                mtu: super::state::DEFAULT_MTU,
                gateway_mac: super::ipam::random_mac(),
                max_learned_per_port: None,
                inhibit_ipv4: false,
                icc: true,
                uplink: None,
            }),
            endpoints: n
                .endpoints
                .into_iter()
                .map(|e| Endpoint {
                    name: e.name,
                    kind: e.kind,
                    mac: e.mac,
                    ipv4: Some(e.ipv4),
                    ipv6: None,
                    created_tap: e.created_tap,
                    sandbox: None,
                    max_learned: None,
                    published: vec![],
                    docker: None,
                })
                .collect(),
            static_macs: n.static_macs,
            docker_id: None,
        });
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file written by the first release (`vswitch` at 22e24e9): two networks, two
    /// TAP ports, one with a static MAC.
    const V1_FILE: &str = include_str!("testdata/state-v1.json");

    #[test]
    fn a_release_1_file_comes_back_whole() {
        let st = from_v1(serde_json::from_str(V1_FILE).unwrap()).unwrap();
        assert_eq!(st.version, FORMAT_VERSION);
        let blue = st.network("blue").unwrap();
        let s = blue.subnet_v4().unwrap();
        assert_eq!(
            (s.subnet.to_string(), s.gateway.to_string(), s.ip_range.to_string()),
            ("10.91.0.0/24".into(), "10.91.0.1".into(), "10.91.0.128/25".into())
        );
        assert_eq!(
            (blue.bridge().unwrap().aging_secs, blue.bridge().unwrap().max_learned, blue.bridge().unwrap().mtu),
            (120, 5000, 1500)
        );
        assert_eq!(blue.endpoints.len(), 2);
        assert_eq!(blue.endpoints[1].ipv4, Some("10.91.0.200".parse().unwrap()));
        assert!(blue.endpoints[1].created_tap);
        assert_eq!(blue.static_macs[0].port, "v1fixt1");
        assert_eq!(st.network("green").unwrap().endpoints.len(), 0);
        assert_ne!(blue.bridge().unwrap().gateway_mac, st.network("green").unwrap().bridge().unwrap().gateway_mac);
    }

    #[test]
    fn load_migrates_saves_and_keeps_the_original() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("state.json"), V1_FILE).unwrap();
        let sd = super::super::state::StateDir::open(d.path()).unwrap();
        let st = sd.load().unwrap();
        assert_eq!(st.networks.len(), 2);
        assert_eq!(std::fs::read_to_string(d.path().join("state.v1.json")).unwrap(), V1_FILE);
        assert_eq!(sd.load().unwrap(), st, "saved in the new format: the gateway MACs stay");
    }
}
