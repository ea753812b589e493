//! learn: the source MAC into the network's table, on the ingress port. A station that moves
//! follows at once; static entries never move; past the table's cap nothing new is learned
//! (the table counts it). Group source addresses are never learned.

use super::classify::Eth;
use super::{FrameCx, Note, Observe, Table};

pub const NAME: &str = "learn";

#[inline]
pub fn run<T: Table, O: Observe>(table: &T, cx: &FrameCx, eth: &Eth, obs: &mut O) {
    if eth.src.is_multicast() {
        obs.note(NAME, Note::GroupSource(eth.src));
        return;
    }
    let learned = table.learn(eth.src, cx.in_port, cx.now);
    obs.note(NAME, Note::Learned(eth.src, learned));
}
