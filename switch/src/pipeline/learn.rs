//! learn: the source MAC into the network's table, on the ingress port. A station that moves
//! follows at once; static entries never move; past the table's cap nothing new is learned
//! (the table counts it). A port may have a quota of MACs (port security): a new MAC past it
//! is dropped and counted. (Group and zero sources never get here: classify drops them.)

use super::classify::Eth;
use super::{Action, DropReason, FrameCx, Note, Observe, Table};
use crate::fdb::Learn;
use std::ops::ControlFlow;

pub const NAME: &str = "learn";

#[inline]
pub fn run<T: Table, O: Observe>(table: &T, cx: &FrameCx, eth: &Eth, obs: &mut O) -> ControlFlow<Action> {
    let learned = table.learn(eth.src, cx.in_port, cx.now);
    obs.note(NAME, Note::Learned(eth.src, learned));
    if learned == Learn::OverQuota {
        // Port security: a new MAC past its port's quota is not let in at all.
        obs.note(NAME, Note::Dropped(DropReason::PortQuota));
        return ControlFlow::Break(Action::Drop(DropReason::PortQuota));
    }
    ControlFlow::Continue(())
}
