//! The CLI ↔ daemon protocol: one JSON request per line on the Unix socket, one JSON
//! response line back (`{"ok": ...}` or `{"error": "..."}`).

use crate::mac::MacAddr;
use crate::stats::Totals;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

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
    NetworkConnect {
        network: String,
        iface: String,
        tap: bool,
        ip: Option<Ipv4Addr>,
    },
    NetworkDisconnect {
        network: String,
        iface: String,
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
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    pub aging_secs: Option<u32>,
    pub max_learned: Option<usize>,
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
    pub subnet: Ipv4Net,
    pub ports: usize,
}

/// `network inspect`: the persisted network plus live figures.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct NetworkDetail {
    #[serde(flatten)]
    pub network: crate::state::Network,
    pub learned_macs: usize,
    /// Source MACs flooded, not learned, because the cap was reached.
    pub not_learned_over_cap: u64,
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
