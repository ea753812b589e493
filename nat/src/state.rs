//! A session's state and how long it may stay idle in it (RFC 5382 for TCP, RFC 4787 for
//! UDP, RFC 5508 for ICMP; the kernel's conntrack for the short transitory ones).

use crate::packet::TcpFlags;

/// Which way a packet goes through its session: as the connection was opened, or back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Orig = 0,
    Reply = 1,
}

impl Dir {
    pub fn other(self) -> Dir {
        match self {
            Dir::Orig => Dir::Reply,
            Dir::Reply => Dir::Orig,
        }
    }
}

/// Each state has its own idle timeout and so its own expiry list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// A SYN went out, nothing came back yet.
    TcpSynSent,
    TcpEstablished,
    /// One side sent FIN.
    TcpFinWait,
    /// Both sides sent FIN.
    TcpTimeWait,
    /// A RST was seen.
    TcpClosed,
    /// UDP that has not been answered yet.
    UdpNew,
    UdpReplied,
    Icmp,
}

impl State {
    pub const COUNT: usize = 8;

    pub fn name(self) -> &'static str {
        match self {
            State::TcpSynSent => "syn_sent",
            State::TcpEstablished => "established",
            State::TcpFinWait => "fin_wait",
            State::TcpTimeWait => "time_wait",
            State::TcpClosed => "closed",
            State::UdpNew => "new",
            State::UdpReplied => "replied",
            State::Icmp => "echo",
        }
    }

    /// The state after a TCP packet with `flags` going `dir`; `fins` holds which directions
    /// have sent FIN (bit 0: orig, bit 1: reply) and is updated.
    pub fn after_tcp(self, dir: Dir, flags: TcpFlags, fins: &mut u8) -> State {
        if flags.rst {
            return State::TcpClosed;
        }
        let opening = flags.syn && !flags.ack && dir == Dir::Orig;
        match self {
            // The same client reusing its port after the last connection closed.
            State::TcpTimeWait | State::TcpClosed if opening => {
                *fins = 0;
                State::TcpSynSent
            }
            State::TcpSynSent if flags.syn && flags.ack && dir == Dir::Reply => State::TcpEstablished,
            State::TcpEstablished | State::TcpFinWait if flags.fin => {
                *fins |= 1 << dir as u8;
                if *fins == 0b11 {
                    State::TcpTimeWait
                } else {
                    State::TcpFinWait
                }
            }
            s => s,
        }
    }

    /// The state after a UDP packet going `dir`.
    pub fn after_udp(self, dir: Dir) -> State {
        if dir == Dir::Reply {
            State::UdpReplied
        } else {
            self
        }
    }
}

/// Idle timeouts in seconds, per state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn: u32,
    pub tcp_established: u32,
    pub tcp_fin_wait: u32,
    pub tcp_time_wait: u32,
    pub tcp_closed: u32,
    pub udp_new: u32,
    pub udp: u32,
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_syn: 120,
            tcp_established: 7440, // RFC 5382: at least 2 h 4 min
            tcp_fin_wait: 120,
            tcp_time_wait: 120,
            tcp_closed: 10,
            udp_new: 30,
            udp: 300, // RFC 4787 recommends 5 min
            icmp: 60, // RFC 5508
        }
    }
}

impl Timeouts {
    /// Every timeout `secs` (tests that watch sessions expire).
    pub fn all(secs: u32) -> Timeouts {
        Timeouts {
            tcp_syn: secs,
            tcp_established: secs,
            tcp_fin_wait: secs,
            tcp_time_wait: secs,
            tcp_closed: secs,
            udp_new: secs,
            udp: secs,
            icmp: secs,
        }
    }

    pub fn of(&self, state: State) -> u32 {
        match state {
            State::TcpSynSent => self.tcp_syn,
            State::TcpEstablished => self.tcp_established,
            State::TcpFinWait => self.tcp_fin_wait,
            State::TcpTimeWait => self.tcp_time_wait,
            State::TcpClosed => self.tcp_closed,
            State::UdpNew => self.udp_new,
            State::UdpReplied => self.udp,
            State::Icmp => self.icmp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(syn: bool, ack: bool, fin: bool, rst: bool) -> TcpFlags {
        TcpFlags { syn, ack, fin, rst }
    }

    #[test]
    fn a_connection_opens_and_closes() {
        let mut fins = 0;
        let s = State::TcpSynSent;
        let s = s.after_tcp(Dir::Orig, f(true, false, false, false), &mut fins);
        assert_eq!(s, State::TcpSynSent, "a retransmitted SYN");
        let s = s.after_tcp(Dir::Reply, f(true, true, false, false), &mut fins);
        assert_eq!(s, State::TcpEstablished);
        let s = s.after_tcp(Dir::Orig, f(false, true, true, false), &mut fins);
        assert_eq!(s, State::TcpFinWait);
        let s = s.after_tcp(Dir::Orig, f(false, true, true, false), &mut fins);
        assert_eq!(s, State::TcpFinWait, "a retransmitted FIN is not the other side's");
        let s = s.after_tcp(Dir::Reply, f(false, true, true, false), &mut fins);
        assert_eq!(s, State::TcpTimeWait);
        let s = s.after_tcp(Dir::Orig, f(true, false, false, false), &mut fins);
        assert_eq!((s, fins), (State::TcpSynSent, 0), "the port reused");
    }

    #[test]
    fn a_reset_closes_from_any_state() {
        for s in [State::TcpSynSent, State::TcpEstablished, State::TcpFinWait] {
            assert_eq!(s.after_tcp(Dir::Reply, f(false, false, false, true), &mut 0), State::TcpClosed);
        }
    }

    #[test]
    fn a_syn_ack_from_the_opener_does_not_establish() {
        assert_eq!(State::TcpSynSent.after_tcp(Dir::Orig, f(true, true, false, false), &mut 0), State::TcpSynSent);
    }
}
