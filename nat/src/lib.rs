//! Connection tracking and SNAT/DNAT rewriting for IPv4, as pure functions over packet
//! buffers: no I/O, no threads, no dependency on the switch. The switch's route/NAT stage
//! keeps one [`Conntrack`] per worker and hands it the packets that cross a gateway.
//!
//! - [`packet`]: a packet's key, and rewriting its addresses and ports (incremental
//!   checksums from [`checksum`], partial checksums of GSO frames included).
//! - [`conntrack`]: sessions found from either direction, port allocation, expiry.
//! - [`state`]: TCP/UDP/ICMP states and their timeouts.
//! - [`ports`]: splitting the outside port range between workers.
//! - [`publish`]: Docker's `-p` syntax and the table of published ports.

pub mod checksum;
pub mod conntrack;
pub mod key;
pub mod packet;
pub mod ports;
pub mod publish;
pub mod state;

pub use checksum::Csum;
pub use conntrack::{Config, Conntrack, Decision, Edit, Refused, SessionInfo, Stats, Verdict};
pub use key::{Endpoint, FlowKey, Proto};
pub use state::{Dir, State, Timeouts};
