//! classify: is this a frame the switch can take at all? Runts, frames over the ingress
//! port's MTU, frames the kernel truncated and frames from a group or all-zero source MAC
//! stop here; the rest go on with their Ethernet addresses read once, through smoltcp's
//! typed view.

use super::{Action, DropReason, FrameCx, Note, Observe};
use crate::mac::MacAddr;
use smoltcp::wire::EthernetFrame;
use std::ops::ControlFlow;

pub const NAME: &str = "classify";

/// The Ethernet header as the later stages need it.
pub struct Eth<'a> {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// The typed view, for stages that look further (the gateway).
    pub frame: EthernetFrame<&'a [u8]>,
}

#[inline]
pub fn run<'a, O: Observe>(cx: &FrameCx<'_, 'a>, obs: &mut O) -> ControlFlow<Action, Eth<'a>> {
    let f = cx.frame;
    let why = if f.truncated {
        DropReason::Truncated
    } else if f.wire_len() > cx.max_frame && !f.vnet.is_gso() {
        DropReason::Oversize
    } else {
        match EthernetFrame::new_checked(f.data()) {
            Ok(frame) => {
                let (dst, src) = (MacAddr(frame.dst_addr().0), MacAddr(frame.src_addr().0));
                if src.is_multicast() || src == MacAddr::default() {
                    DropReason::BadSource
                } else {
                    return ControlFlow::Continue(Eth { dst, src, frame });
                }
            }
            Err(_) => DropReason::Runt,
        }
    };
    obs.note(NAME, Note::Dropped(why));
    ControlFlow::Break(Action::Drop(why))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{rx, Record};
    use super::*;
    use crate::frame::max_frame_for_mtu;

    fn classify(data: &[u8], gso: bool) -> Result<MacAddr, DropReason> {
        let mut f = rx(data);
        if gso {
            f.vnet.0[1] = 1; // GSO TCPv4
        }
        let cx = FrameCx { frame: &f, in_port: 1, max_frame: max_frame_for_mtu(1500), now: 0 };
        match run(&cx, &mut Record::default()) {
            ControlFlow::Continue(eth) => Ok(eth.dst),
            ControlFlow::Break(Action::Drop(why)) => Err(why),
            ControlFlow::Break(a) => panic!("classify decided {a:?}"),
        }
    }

    #[test]
    fn sizes() {
        let mut f = crate::frame::test_frame("02:00:00:00:00:02", "02:00:00:00:00:01");
        assert_eq!(classify(&f, false), Ok("02:00:00:00:00:02".parse().unwrap()));
        assert_eq!(classify(&f[..13], false), Err(DropReason::Runt));
        f.resize(1518, 0);
        assert!(classify(&f, false).is_ok());
        f.push(0);
        assert_eq!(classify(&f, false), Err(DropReason::Oversize));
        f.resize(65000, 0);
        assert!(classify(&f, true).is_ok(), "GSO frames cross whole");
    }

    #[test]
    fn truncated() {
        let data = crate::frame::test_frame("02:00:00:00:00:02", "02:00:00:00:00:01");
        let mut f = rx(&data);
        f.truncated = true;
        let cx = FrameCx { frame: &f, in_port: 1, max_frame: 1518, now: 0 };
        assert!(matches!(run(&cx, &mut Record::default()), ControlFlow::Break(Action::Drop(DropReason::Truncated))));
    }
}
