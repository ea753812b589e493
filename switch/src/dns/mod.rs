//! The embedded DNS of user-defined networks, as Docker's 127.0.0.11 resolver behaves:
//! endpoints find each other by name on the networks they share, everything else goes to
//! the host's resolvers. `names` is who is called what, `answer` turns one query into a
//! reply (pure, fuzzed), `forward` asks the upstream resolvers. The sockets on each
//! gateway's port 53 are in `services/dns.rs`.

pub mod answer;
pub mod forward;
pub mod names;

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One network's DNS counters (the services thread writes, `network inspect` reads).
#[derive(Default, Debug)]
pub struct DnsStats {
    answered: AtomicU64,
    forwarded: AtomicU64,
    malformed: AtomicU64,
    dropped: AtomicU64,
    upstream_failed: AtomicU64,
    refused_busy: AtomicU64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
pub struct DnsCounters {
    /// Names the network knows, answered here.
    pub answered: u64,
    /// Sent on to an upstream resolver.
    pub forwarded: u64,
    /// Did not parse, or was not a standard query (FORMERR / NOTIMP sent).
    pub malformed: u64,
    /// Not a query at all (no answer sent).
    pub dropped: u64,
    /// Every upstream failed: SERVFAIL sent.
    pub upstream_failed: u64,
    /// Too many queries in flight: REFUSED sent.
    pub refused_busy: u64,
}

impl DnsStats {
    pub fn count(&self, o: answer::Outcome) {
        let c = match o {
            answer::Outcome::Answered => &self.answered,
            answer::Outcome::Forwarded => &self.forwarded,
            answer::Outcome::Malformed => &self.malformed,
            answer::Outcome::Dropped => &self.dropped,
        };
        c.fetch_add(1, Relaxed);
    }

    pub fn failed(&self, f: forward::Failure) {
        match f {
            forward::Failure::AllFailed => &self.upstream_failed,
            forward::Failure::Busy => &self.refused_busy,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn read(&self) -> DnsCounters {
        DnsCounters {
            answered: self.answered.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            upstream_failed: self.upstream_failed.load(Relaxed),
            refused_busy: self.refused_busy.load(Relaxed),
        }
    }
}
