//! The CLI ↔ daemon protocol: one JSON request per line on the Unix socket, one JSON
//! response line back (`{"ok": ...}` or `{"error": "..."}`).

use crate::control::state::{Endpoint, Network};
use crate::mac::MacAddr;
use crate::stats::Totals;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

pub const DEFAULT_SOCKET: &str = "/run/vswitch/vswitch.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vswitch";

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    NetworkLs,
    NetworkCreate(CreateNetwork),
    NetworkInspect {
        names: Vec<String>,
    },
    NetworkConnect(Connect),
    NetworkDisconnect {
        network: String,
        /// A port (interface) name, or a sandbox name.
        target: String,
    },
    NetworkRm {
        names: Vec<String>,
    },
    NetworkPrune,
    Fdb {
        network: String,
    },
    FdbAdd {
        network: String,
        mac: MacAddr,
        port: String,
    },
    FdbDel {
        network: String,
        mac: MacAddr,
    },
    Stats,
    /// Start a trace; after the answer the connection carries `trace::stream` messages.
    Trace(TraceRequest),
    /// Run frames through a network's pipeline without sending them.
    Explain(ExplainRequest),
    /// Make a sandbox for `vswitch run`: a namespace, connected as its mode says.
    SandboxCreate(CreateSandbox),
    /// The process `vswitch run` started in a sandbox.
    SandboxSetPid {
        name: String,
        pid: u32,
    },
    /// Remove a sandbox: stop its process, disconnect its endpoints, remove its namespace.
    SandboxRm {
        name: String,
    },
    Ps,
    /// Make an interface the switch's outside (`vswitch uplink set`).
    UplinkSet {
        iface: String,
        address: ipnet::Ipv4Net,
        gateway: Option<std::net::Ipv4Addr>,
    },
    UplinkShow,
    UplinkRm,
    /// The NAT's connection table.
    NatSessions {
        network: Option<String>,
    },
    /// The ports a sandbox (or an endpoint's port) publishes, as `docker port` lists them.
    Port {
        name: String,
    },
}

/// One NAT session as `vswitch nat sessions` shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NatSession {
    pub network: String,
    pub proto: String,
    /// The endpoint's address and port.
    pub inside: String,
    /// What the outside sees: the uplink's address and the port handed out.
    pub outside: String,
    /// The far end.
    pub remote: String,
    pub state: String,
    pub idle_secs: u32,
    /// The worker whose table holds it.
    pub worker: usize,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct NatCounters {
    pub created: u64,
    pub expired: u64,
    pub removed: u64,
    pub session_limit: u64,
    pub ports_exhausted: u64,
    pub clash: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NatSessions {
    pub sessions: Vec<NatSession>,
    /// Summed over the workers.
    pub counters: NatCounters,
    /// More sessions exist than were listed.
    pub truncated: bool,
}

/// The uplink as `vswitch uplink` shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct UplinkView {
    pub interface: String,
    /// The switch's own address on the outside, with its prefix length.
    pub address: String,
    /// The next hop toward everything else.
    pub gateway: Option<std::net::Ipv4Addr>,
    /// The switch's own MAC on the outside.
    pub mac: MacAddr,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct TraceRequest {
    /// Every port of this network (also ports that join later)...
    pub network: Option<String>,
    /// ...or these ports (of `network`, if it is given).
    pub ports: Vec<String>,
    /// A tcpdump filter expression.
    pub filter: Option<String>,
    /// Bytes kept of each frame.
    pub snaplen: u32,
    /// Copies that may wait to be streamed before further copies are dropped.
    pub queue: usize,
}

/// The answer to a trace request, before the stream starts.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct TraceStarted {
    pub ports: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ExplainRequest {
    pub network: String,
    pub in_port: String,
    /// Each frame's bytes, as hex.
    pub frames: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct CreateNetwork {
    pub name: String,
    pub driver: Option<String>,
    /// At most one per address family.
    #[serde(default)]
    pub subnets: Vec<IpNet>,
    #[serde(default)]
    pub gateways: Vec<IpAddr>,
    #[serde(default)]
    pub ip_ranges: Vec<IpNet>,
    /// `name=IP` pairs kept out of allocation.
    #[serde(default)]
    pub aux_addresses: Vec<(String, IpAddr)>,
    #[serde(default)]
    pub ipv6: bool,
    #[serde(default)]
    pub internal: bool,
    /// Driver options (`-o key=value`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub aging_secs: Option<u32>,
    pub max_learned: Option<usize>,
    #[serde(default)]
    pub max_learned_per_port: Option<u32>,
    /// Set by the Docker plugin: the Docker network this one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_id: Option<String>,
}

/// What an endpoint is given on a network.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct EndpointOptions {
    pub ip: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Addr>,
    pub mac: Option<MacAddr>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// This port's quota of learned MACs [default: the network's].
    #[serde(default)]
    pub max_learned: Option<u32>,
    /// Ports to publish at the uplink's address, in Docker's `-p` syntax.
    #[serde(default)]
    pub publish: Vec<String>,
    /// The interface's name inside the namespace [default: eth0, then eth1...].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Connect {
    pub network: String,
    /// An existing interface (or, with `tap`, a TAP device) to attach as a port...
    pub iface: Option<String>,
    #[serde(default)]
    pub tap: bool,
    /// ...or a network namespace (a name under /run/netns or a path) to give an endpoint.
    pub netns: Option<String>,
    /// The sandbox's name for a namespace [default: the namespace's name].
    pub name: Option<String>,
    /// A new sandbox's id: the engine's container id (CNI), so that its short id resolves
    /// and the engine can disconnect it by that id [default: a new one].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    #[serde(default)]
    pub endpoint: EndpointOptions,
}

/// How `vswitch run` networks its command, as `docker run --network` takes it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunNetwork {
    Network(String),
    None,
    Host,
    Container(String),
}

impl std::str::FromStr for RunNetwork {
    type Err = String;
    fn from_str(s: &str) -> Result<RunNetwork, String> {
        Ok(match s {
            "none" => RunNetwork::None,
            "host" => RunNetwork::Host,
            _ => match s.strip_prefix("container:") {
                Some("") => return Err("container: needs a sandbox name (container:NAME)".into()),
                Some(c) => RunNetwork::Container(c.into()),
                None => RunNetwork::Network(s.into()),
            },
        })
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct CreateSandbox {
    pub name: Option<String>,
    pub network: RunNetwork,
    #[serde(default)]
    pub endpoint: EndpointOptions,
    /// Resolvers the embedded DNS forwards this sandbox's other names to (Docker's `--dns`),
    /// instead of the daemon's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(serde_json::Value),
    Error(String),
}

/// One line of `network ls`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct NetworkSummary {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub subnets: Vec<IpNet>,
    pub internal: bool,
    pub ports: usize,
}

/// `network inspect`: the persisted network plus live figures.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct NetworkDetail {
    #[serde(flatten)]
    pub network: Network,
    pub learned_macs: usize,
    /// Source MACs flooded, not learned, because the cap was reached.
    pub not_learned_over_cap: u64,
    /// Frames from new MACs dropped because their port was at its quota.
    #[serde(default)]
    pub dropped_over_port_quota: u64,
    /// The embedded DNS's counters (none on the uplink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<crate::dns::DnsCounters>,
    /// A macvlan network's parent is attached (false: missing, waited for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_attached: Option<bool>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub port: String,
    /// Seconds since the MAC was last seen (static entries: since they were set).
    pub age: u32,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PortStatsView {
    pub port: String,
    pub network: String,
    pub kind: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// An endpoint as `connect` and `ps` show it: the network's record and where it is.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct EndpointView {
    pub network: String,
    #[serde(flatten)]
    pub endpoint: Endpoint,
}

/// A sandbox as `ps` and `run` show it.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SandboxView {
    pub name: String,
    pub id: String,
    /// bridge, none, host or container:NAME.
    pub mode: String,
    pub netns: Option<PathBuf>,
    /// The name whose /etc/netns files the sandbox's processes see.
    pub etc_name: Option<String>,
    pub pid: Option<u32>,
    pub running: bool,
    pub endpoints: Vec<EndpointView>,
}
