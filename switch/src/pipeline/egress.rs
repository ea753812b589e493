//! egress: the last stage, written once for the workers and for `explain`. It turns the
//! action into sends: one port, every member but the ingress port, or the services queue;
//! a frame bigger than an egress port's MTU is dropped and counted on that port. What
//! "send" means is the [`Sink`]'s business: real queues, counters and traces in a worker, a
//! list of ports in `explain`.

use super::{Action, DropReason, FrameCx, Note, Observe};
use crate::fdb::PortId;
use crate::port::RxFrame;

pub const NAME: &str = "egress";

/// Where frames go out, as the egress stage sees it.
pub trait Sink {
    /// The largest frame `port` takes, or None if it cannot send now (gone or failed).
    fn max_frame(&self, port: PortId) -> Option<usize>;
    /// Send `f` out of `port` (a worker counts it, its failure, and shows it to traces).
    fn send(&mut self, port: PortId, f: &RxFrame);
    /// Count a frame dropped on its way out of `port`.
    fn drop(&mut self, port: PortId, why: DropReason);
    /// Hand `f` to the network's gateway (the services thread).
    fn to_gateway(&mut self, f: &RxFrame);
    /// Send `f` out of `port` with the route stage's edit `edit` applied on the way.
    fn send_routed(&mut self, port: PortId, f: &RxFrame, edit: u16);
}

#[inline]
pub fn run<S: Sink, O: Observe>(action: Action, cx: &FrameCx, members: &[PortId], sink: &mut S, obs: &mut O) {
    match action {
        Action::Drop(_) => {}
        Action::Port(p) => out(p, cx.frame, sink, obs),
        Action::Flood => {
            for &p in members {
                if p != cx.in_port {
                    out(p, cx.frame, sink, obs);
                }
            }
        }
        Action::Group(_, _, skip) => {
            // `members` is the segment's list (`Pipeline::members`).
            for &p in members {
                if p != cx.in_port && p != skip {
                    out(p, cx.frame, sink, obs);
                }
            }
        }
        Action::Gateway => {
            obs.note(NAME, Note::ToServices);
            sink.to_gateway(cx.frame);
        }
        Action::Routed(p, edit) => {
            // A NAT edit keeps the frame's length: the same MTU check as any frame.
            let Some(max) = sink.max_frame(p) else { return };
            if cx.frame.wire_len() > max && !cx.frame.vnet.is_gso() {
                obs.note(NAME, Note::TooBig(p, max));
                sink.drop(p, DropReason::TooBigForEgress);
                return;
            }
            obs.note(NAME, Note::Out(p));
            sink.send_routed(p, cx.frame, edit);
        }
    }
}

#[inline]
fn out<S: Sink, O: Observe>(p: PortId, f: &RxFrame, sink: &mut S, obs: &mut O) {
    let Some(max) = sink.max_frame(p) else { return };
    if f.wire_len() > max && !f.vnet.is_gso() {
        obs.note(NAME, Note::TooBig(p, max));
        sink.drop(p, DropReason::TooBigForEgress);
        return;
    }
    obs.note(NAME, Note::Out(p));
    sink.send(p, f);
}

#[cfg(test)]
mod tests {
    use super::super::testing::{rx, Record};
    use super::*;

    #[derive(Default)]
    struct Ports {
        sent: Vec<PortId>,
        dropped: Vec<(PortId, DropReason)>,
        gateway: usize,
    }

    impl Sink for Ports {
        fn max_frame(&self, port: PortId) -> Option<usize> {
            match port {
                3 => Some(50),
                9 => None,
                _ => Some(1518),
            }
        }
        fn send(&mut self, port: PortId, _: &RxFrame) {
            self.sent.push(port);
        }
        fn drop(&mut self, port: PortId, why: DropReason) {
            self.dropped.push((port, why));
        }
        fn to_gateway(&mut self, _: &RxFrame) {
            self.gateway += 1;
        }
        fn send_routed(&mut self, port: PortId, _: &RxFrame, _: u16) {
            self.sent.push(port);
        }
    }

    #[test]
    fn flood_skips_ingress_gone_ports_and_small_mtus() {
        let data = [0u8; 60];
        let f = rx(&data);
        let cx = FrameCx { frame: &f, in_port: 1, max_frame: 1518, now: 0 };
        let mut s = Ports::default();
        let mut rec = Record::default();
        run(Action::Flood, &cx, &[1, 2, 3, 9], &mut s, &mut rec);
        assert_eq!(s.sent, [2]);
        assert_eq!(s.dropped, [(3, DropReason::TooBigForEgress)]);
        assert_eq!(rec.0, [(NAME, Note::Out(2)), (NAME, Note::TooBig(3, 50))]);
        run(Action::Gateway, &cx, &[1, 2], &mut s, &mut rec);
        assert_eq!(s.gateway, 1);
    }
}
