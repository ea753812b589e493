//! The bounded path between the workers and the services thread. Frames for a gateway go
//! up, the gateway's replies come down to the worker that will send them, all in packets
//! taken from one fixed pool: a flood of requests to the gateway empties the pool, and what
//! does not fit is dropped and counted by the worker (`gateway_busy`), never queued without
//! bound and never waited for. Workers never block here; they wake the services thread
//! only when it sleeps, once per batch.

use crate::worker::{NetId, Waker};
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;

/// Packets in flight between workers and services, all queues together.
pub const PACKETS: usize = 1024;
/// A packet's buffer: an MTU-1500 frame fits; a bigger one grows it for once.
const PACKET_CAPACITY: usize = 2048;

/// A frame on its way to or from a gateway.
pub struct Packet {
    pub net: NetId,
    /// Up: the worker that received it. Down: the worker that sends it.
    pub worker: usize,
    pub data: Vec<u8>,
}

pub struct Link {
    free: ArrayQueue<Packet>,
    up: ArrayQueue<Packet>,
    /// Per worker: frames the gateways send.
    down: Box<[ArrayQueue<Packet>]>,
    wakers: Box<[Arc<Waker>]>,
    services: OnceLock<Thread>,
    sleeping: AtomicBool,
}

impl Link {
    pub fn new(wakers: Vec<Arc<Waker>>) -> Link {
        let free = ArrayQueue::new(PACKETS);
        for _ in 0..PACKETS {
            let _ = free.push(Packet { net: 0, worker: 0, data: Vec::with_capacity(PACKET_CAPACITY) });
        }
        Link {
            free,
            up: ArrayQueue::new(PACKETS),
            down: wakers.iter().map(|_| ArrayQueue::new(PACKETS)).collect(),
            wakers: wakers.into(),
            services: OnceLock::new(),
            sleeping: AtomicBool::new(false),
        }
    }

    pub fn workers(&self) -> usize {
        self.wakers.len()
    }

    /// Worker side: queue a copy of `frame` for network `net`'s gateway. False when the
    /// pool is empty (the frame is dropped).
    #[inline]
    pub fn to_services(&self, net: NetId, worker: usize, frame: &[u8]) -> bool {
        let Some(mut p) = self.free.pop() else { return false };
        p.net = net;
        p.worker = worker;
        p.data.clear();
        p.data.extend_from_slice(frame);
        // Packets circulate between queues each as large as the pool: never full.
        let _ = self.up.push(p);
        true
    }

    /// Worker side, once per batch that queued something: wake the services thread if it
    /// sleeps.
    pub fn notify_services(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            if let Some(t) = self.services.get() {
                t.unpark();
            }
        }
    }

    /// Worker side: the next frame a gateway sends through this worker.
    #[inline]
    pub fn next_down(&self, worker: usize) -> Option<Packet> {
        self.down[worker].pop()
    }

    /// Either side: give a packet back to the pool.
    pub fn recycle(&self, mut p: Packet) {
        p.data.shrink_to(PACKET_CAPACITY);
        let _ = self.free.push(p);
    }

    /// Services side: register the thread the workers wake.
    pub fn serve_from(&self, t: Thread) {
        let _ = self.services.set(t);
    }

    /// Services side: the next frame for a gateway.
    pub fn next_up(&self) -> Option<Packet> {
        self.up.pop()
    }

    /// Services side: send `frame` from network `net`'s gateway through `worker`, and wake
    /// it. False when the pool is empty.
    pub fn send_down(&self, net: NetId, worker: usize, frame: &[u8]) -> bool {
        let worker = worker % self.down.len();
        let Some(mut p) = self.free.pop() else { return false };
        p.net = net;
        p.worker = worker;
        p.data.clear();
        p.data.extend_from_slice(frame);
        let _ = self.down[worker].push(p);
        self.wakers[worker].wake();
        true
    }

    /// Services side: sleep until a worker queues a frame, or `timeout` passes.
    pub fn sleep(&self, timeout: std::time::Duration) {
        self.sleeping.store(true, Ordering::SeqCst);
        // A frame queued before the flag was seen set would wait for the timeout: look again.
        if self.up.is_empty() {
            std::thread::park_timeout(timeout);
        }
        self.sleeping.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_both_ways() {
        let link = Link::new(vec![Arc::new(Waker::new().unwrap())]);
        let mut sent = 0;
        while link.to_services(3, 0, &[1, 2, 3]) {
            sent += 1;
        }
        assert_eq!(sent, PACKETS, "the pool bounds what waits");
        assert!(!link.send_down(3, 0, &[4]), "replies come from the same pool");
        let p = link.next_up().unwrap();
        assert_eq!((p.net, p.worker, &p.data[..]), (3, 0, &[1u8, 2, 3][..]));
        link.recycle(p);
        assert!(link.send_down(3, 7, &[4]), "any worker index maps onto a worker");
        assert_eq!(link.next_down(0).unwrap().data, [4]);
    }
}
