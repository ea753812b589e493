//! Everything a command can refuse, one variant per kind of refusal, with the one line the
//! user reads. A command that fails changes nothing.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no network named '{0}' (see: vswitch network ls)")]
    NoNetwork(String),
    #[error("a network named '{0}' already exists")]
    NetworkExists(String),
    #[error(
        "invalid network name '{0}': use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
    )]
    BadNetworkName(String),
    #[error("network {name} still has ports: {ports}; disconnect them first (vswitch network disconnect {name} PORT)")]
    NetworkInUse { name: String, ports: String },
    #[error("the {0} driver is not available yet; use --driver bridge or macvlan")]
    DriverNotYet(String),
    #[error("unknown driver '{0}' (drivers: bridge, macvlan)")]
    UnknownDriver(String),

    #[error("no port named '{0}' (see: vswitch stats)")]
    NoPort(String),
    #[error("interface {iface} is already attached to network {network}")]
    AlreadyAttached { iface: String, network: String },
    #[error("interface {iface} is not attached to network {network}")]
    NotAttached { iface: String, network: String },
    #[error("interface {iface} is attached to network {other}, not {network}")]
    AttachedElsewhere { iface: String, network: String, other: String },
    #[error("port {port} is on network {other}, not {network}")]
    PortElsewhere { port: String, network: String, other: String },
    #[error("no interface named '{0}' (to create a TAP device, add --tap)")]
    NoInterface(String),
    #[error("cannot attach {iface}: {source}")]
    Attach { iface: String, source: io::Error },
    #[error("too many ports ({0})")]
    TooManyPorts(u16),

    /// IPAM refused: a subnet, gateway, range or address that does not fit.
    #[error("{0}")]
    Ipam(String),
    #[error("address {ip} is already in use on network {network}")]
    AddressTaken { ip: std::net::IpAddr, network: String },
    #[error("no free address left in {range} of network {network}")]
    Exhausted { range: ipnet::IpNet, network: String },

    #[error("no sandbox named '{0}' (see: vswitch ps)")]
    NoSandbox(String),
    #[error("a sandbox named '{0}' already exists (see: vswitch ps)")]
    SandboxExists(String),
    #[error("no network namespace at {0} (make one with: ip netns add NAME)")]
    NoNamespace(String),
    #[error("setting up {what}: {source}")]
    Netlink { what: String, source: super::netlink::Error },
    #[error("{what}: {source}")]
    System { what: String, source: io::Error },

    /// An argument that does not make sense; the text says which and why.
    #[error("{0}")]
    Invalid(String),

    #[error("{0}")]
    StateDir(String),
    #[error("{0}")]
    Save(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(text: impl Into<String>) -> Error {
        Error::Invalid(text.into())
    }

    pub fn system(what: impl Into<String>, source: io::Error) -> Error {
        Error::System { what: what.into(), source }
    }

    pub fn netlink(what: impl Into<String>, source: super::netlink::Error) -> Error {
        Error::Netlink { what: what.into(), source }
    }
}
