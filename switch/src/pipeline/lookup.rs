//! lookup: where the destination MAC lives. Known unicast goes to its port (never back out
//! of the ingress one), the gateway's MAC to the gateway, group and unknown destinations are
//! flooded, and IEEE 802.1D link-local frames (STP, LACP, LLDP) are never forwarded, as the
//! Linux bridge does not forward them.

use super::classify::Eth;
use super::{Action, DropReason, FrameCx, Note, Observe, Table};
use crate::fdb::{MacTable, GATEWAY_PORT};
use crate::mac::{is_link_local, MacAddr};
use crate::port::RxFrame;
use std::ops::ControlFlow;

pub const NAME: &str = "lookup";

#[inline]
pub fn run<T: Table, O: Observe>(table: &T, cx: &FrameCx, eth: &Eth, obs: &mut O) -> ControlFlow<Action, Action> {
    let dst = eth.dst;
    let action = if dst.is_multicast() {
        if is_link_local(&dst.0) {
            Action::Drop(DropReason::LinkLocal)
        } else {
            obs.note(NAME, Note::Group(dst));
            Action::Flood
        }
    } else {
        match table.lookup(dst) {
            Some(p) if p == cx.in_port => Action::Drop(DropReason::SamePort),
            Some(p) => {
                obs.note(NAME, Note::Found(dst, p));
                if p == GATEWAY_PORT {
                    Action::Gateway
                } else {
                    Action::Port(p)
                }
            }
            None => {
                obs.note(NAME, Note::Unknown(dst));
                Action::Flood
            }
        }
    };
    match action {
        Action::Drop(why) => {
            obs.note(NAME, Note::Dropped(why));
            ControlFlow::Break(action)
        }
        _ => ControlFlow::Continue(action),
    }
}

/// Start loading the table lines a batch will touch: in a big table the cache misses then
/// overlap instead of following one another. A small table stays in cache: nothing to do.
#[inline]
pub fn prefetch(table: &MacTable, batch: &[RxFrame]) {
    if !table.outgrows_cache() {
        return;
    }
    for f in batch {
        let d = f.data();
        if d.len() >= 12 {
            table.prefetch(MacAddr::from_slice(&d[..6]), false);
            table.prefetch(MacAddr::from_slice(&d[6..12]), true);
        }
    }
}
