//! vswitch: a userspace virtual switch. See ARCHITECTURE.md for how the pieces fit.

pub mod cli;
pub mod client;
pub mod clock;
pub mod cni;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod dns;
pub mod docker;
pub mod explain;
pub mod fdb;
pub mod frame;
pub mod frame_spec;
pub mod gso;
pub mod hugemem;
pub mod mac;
pub mod netdev;
pub mod pipeline;
pub mod poll;
pub mod port;
pub mod protocol;
pub mod services;
pub mod stats;
pub mod trace;
pub mod worker;
