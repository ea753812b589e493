//! What identifies a connection: a protocol and two (address, port) endpoints.

use std::fmt;
use std::net::Ipv4Addr;

/// The protocols the NAT translates; anything else is dropped by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Proto {
    Icmp = 1,
    Tcp = 6,
    Udp = 17,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Icmp => "icmp",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// An address and a port. For ICMP echo the "port" is the echo identifier, held by the
/// side that sent the request: a request from A is `(A, id) -> (B, 0)` and its reply
/// `(B, 0) -> (A, id)`, so that every protocol's reply key is its request key reversed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: Ipv4Addr,
    pub port: u16,
}

impl Endpoint {
    pub const fn new(addr: Ipv4Addr, port: u16) -> Endpoint {
        Endpoint { addr, port }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// One direction of a connection, as its packets carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub proto: Proto,
    pub src: Endpoint,
    pub dst: Endpoint,
}

impl FlowKey {
    pub const fn new(proto: Proto, src: Endpoint, dst: Endpoint) -> FlowKey {
        FlowKey { proto, src, dst }
    }

    /// The key of the packets going the other way.
    pub const fn reversed(&self) -> FlowKey {
        FlowKey { proto: self.proto, src: self.dst, dst: self.src }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} {} -> {}", self.proto.name(), self.src, self.dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_sixteen_bytes() {
        // Two keys per session in the index: their size is most of a session's memory.
        assert!(std::mem::size_of::<FlowKey>() <= 16);
    }
}
