//! A port queue in memory: it receives the same frames over and over and copies whatever it
//! is sent into one buffer, as a ring slot copy would. For the pipeline microbenchmarks and
//! for tests of the worker that need no root.

use super::{RxFrame, TxError, WorkerBuffers};
use crate::frame::{VnetHdr, MAX_FRAME};
use std::io;

pub struct MemoryQueue {
    frames: Vec<Vec<u8>>,
    next: usize,
    /// Frames handed out per `receive`.
    burst: usize,
    slot: Box<[u8]>,
    pub sent: u64,
    pub sent_bytes: u64,
    /// Fail every transmit, as a deleted interface does.
    pub broken: bool,
}

impl MemoryQueue {
    /// A queue that receives `frames` in turn, `burst` at a time (none: it only sends).
    pub fn new(frames: Vec<Vec<u8>>, burst: usize) -> MemoryQueue {
        MemoryQueue {
            frames,
            next: 0,
            burst,
            slot: vec![0; MAX_FRAME].into_boxed_slice(),
            sent: 0,
            sent_bytes: 0,
            broken: false,
        }
    }

    pub fn receive<'q>(
        &'q mut self,
        out: &mut Vec<RxFrame<'q>>,
        max: usize,
        _bufs: &'q mut WorkerBuffers,
    ) -> io::Result<()> {
        let MemoryQueue { frames, next, burst, .. } = self;
        if frames.is_empty() {
            return Ok(());
        }
        for _ in 0..(*burst).min(max) {
            out.push(RxFrame::new(VnetHdr::default(), &frames[*next], None));
            *next = (*next + 1) % frames.len();
        }
        Ok(())
    }

    pub fn transmit(&mut self, _vnet: &VnetHdr, parts: &[&[u8]]) -> Result<(), TxError> {
        if self.broken {
            return Err(TxError::Fault(io::Error::from_raw_os_error(libc::ENETDOWN)));
        }
        let mut at = 0;
        for p in parts {
            self.slot[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        self.sent += 1;
        self.sent_bytes += at as u64;
        Ok(())
    }
}
