//! icc: inter-container communication. On a network created with `-o icc=false` (Docker's
//! `com.docker.network.bridge.enable_icc=false`) endpoints reach the gateway, and through it
//! the outside and published ports, but never each other: a frame from one endpoint to
//! another, or flooded from an endpoint, is dropped. The gateway's own frames (its ARP
//! requests, its replies, routed traffic it delivers) pass.

use super::{Action, DropReason, FrameCx, Note, Observe};
use crate::fdb::GATEWAY_PORT;
use std::ops::ControlFlow;

pub const NAME: &str = "icc";

#[inline]
pub fn run<O: Observe>(cx: &FrameCx, action: Action, obs: &mut O) -> ControlFlow<Action, Action> {
    match action {
        Action::Port(_) | Action::Flood if cx.in_port != GATEWAY_PORT => {
            obs.note(NAME, Note::Dropped(DropReason::IccDenied));
            ControlFlow::Break(Action::Drop(DropReason::IccDenied))
        }
        _ => ControlFlow::Continue(action),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{bridge_with, run};
    use super::super::{Gateway, Routes};
    use super::*;
    use crate::frame::test_frame as frame;

    const GW: &str = "02:42:0a:01:00:01";
    const A: &str = "02:00:00:00:00:0a";
    const B: &str = "02:00:00:00:00:0b";

    #[test]
    fn endpoints_reach_the_gateway_but_not_each_other() {
        let gw = Gateway { net: 1, mac: GW.parse().unwrap(), ipv4: Some("10.1.0.1".parse().unwrap()), ipv6: None };
        let p = bridge_with(Some(gw), false);
        p.table().unwrap().add_static(GW.parse().unwrap(), GATEWAY_PORT).unwrap();
        let r = Routes::new(vec![("10.1.0.0/16".parse().unwrap(), 1)]);
        p.table().unwrap().learn(B.parse().unwrap(), 2, 0);
        let (a, notes) = run(&p, &r, 1, &frame(B, A));
        assert_eq!(a, Action::Drop(DropReason::IccDenied));
        assert_eq!(notes.last(), Some(&(NAME, Note::Dropped(DropReason::IccDenied))));
        assert_eq!(run(&p, &r, 1, &frame("ff:ff:ff:ff:ff:ff", A)).0, Action::Drop(DropReason::IccDenied));
        // ARP for the gateway, and the gateway's own frames, pass.
        let who_has = crate::frame_spec::parse("src 02:00:00:00:00:0a arp tell 10.1.0.5 who-has 10.1.0.1").unwrap();
        assert_eq!(run(&p, &r, 1, &who_has).0, Action::Gateway);
        assert_eq!(run(&p, &r, GATEWAY_PORT, &frame(A, GW)).0, Action::Port(1));
        assert_eq!(run(&p, &r, GATEWAY_PORT, &frame("ff:ff:ff:ff:ff:ff", GW)).0, Action::Flood);
    }
}
