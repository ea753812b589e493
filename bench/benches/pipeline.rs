//! Microbenchmarks of the in-memory pipeline (no root, no devices): frame classification,
//! MAC table lookups and learning from 1 k to 1 M entries, and a worker forwarding 32-frame
//! batches between in-memory ports. `cargo bench -p vswitch-bench`.

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use std::sync::Arc;
use vswitch::fdb::MacTable;
use vswitch::frame::{max_frame_for_mtu, VnetHdr};
use vswitch::mac::MacAddr;
use vswitch::pipeline::{Bridge, Env, FrameCx, Gateway, Nat, NoObserve, Pipeline, Routes};
use vswitch::port::memory::MemoryQueue;
use vswitch::port::RxFrame;
use vswitch::port::{PortShared, Queue};
use vswitch::services::link::Link;
use vswitch::worker::{Cmd, NewPort, Waker, Worker};

fn main() {
    divan::main();
}

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
/// Lookups per measured iteration.
const PER_ITER: usize = 1024;

fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = dst.0.to_vec();
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(60, 0);
    f
}

/// `n` distinct unicast MACs in a scrambled order (no two neighbours share a cache line).
fn macs(n: usize) -> Vec<MacAddr> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut v: Vec<MacAddr> = (0..n as u64).map(|i| MacAddr::from_u64(0x0200_0000_0000 | i)).collect();
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

fn full_table(n: usize) -> (MacTable, Vec<MacAddr>) {
    let t = MacTable::new(n);
    let keys = macs(n);
    for (i, m) in keys.iter().enumerate() {
        t.learn(*m, (i % 32 + 1) as u16, 0);
    }
    (t, keys)
}

/// A bridge network's pipeline as every network has it: with its gateway.
fn bridge(table: Arc<MacTable>) -> Pipeline {
    let mac = MacAddr([2, 0x56, 0x53, 0, 0, 1]);
    table.add_static(mac, vswitch::fdb::GATEWAY_PORT).unwrap();
    let gateway =
        Gateway { net: 0, mac, ipv4: Some("10.0.0.1".parse().unwrap()), ipv6: Some("fd00::1".parse().unwrap()) };
    Pipeline::Bridge(Bridge { table, gateway: Some(gateway), icc: true })
}

/// One 64-byte frame through a bridge network's stages (classify, learn, lookup, gateway),
/// the source already learned, the destination known (`unicast`) or broadcast (`flood`: the
/// gateway stage looks whether it asks for the gateway).
#[divan::bench(args = ["unicast", "flood"])]
fn pipeline_64_byte_frame(b: Bencher, to: &str) {
    let (a, d) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    let table = Arc::new(MacTable::new(1024));
    table.learn(a, 1, 0);
    table.learn(d, 2, 0);
    let p = bridge(table);
    let data = frame(if to == "flood" { MacAddr::BROADCAST } else { d }, a);
    let f = RxFrame::new(VnetHdr::default(), &data, None);
    let routes = Routes::default();
    let max = max_frame_for_mtu(1500);
    let mut nat = Nat::new(1024..=65535, 16);
    b.counter(ItemsCount::new(1usize)).bench_local(|| {
        let cx = FrameCx { frame: black_box(&f), in_port: 1, max_frame: max, now: 0 };
        p.run(&Env { routes: &routes }, &mut nat, &cx, &mut NoObserve)
    });
}

/// One 64-byte frame from a macvlan parent through classify and dispatch, to one of `n`
/// endpoints in turn (the whole table is probed over the run).
#[divan::bench(args = [4, 256, 4096])]
fn macvlan_dispatch_64_byte_frame(b: Bencher, n: usize) {
    use vswitch::pipeline::dispatch::{Dispatch, Mode, Role};
    let endpoints = macs(n);
    let members = endpoints.iter().enumerate().map(|(i, &m)| (i as u16 + 2, m, Role::Endpoint)).collect();
    let p = Pipeline::Macvlan(Arc::new(Dispatch::build(Some(1), &[(None, Mode::Bridge, members)])));
    let lan = MacAddr([2, 0xff, 0, 0, 0, 1]);
    let frames: Vec<Vec<u8>> = endpoints.iter().map(|&m| frame(m, lan)).collect();
    let routes = Routes::default();
    let max = max_frame_for_mtu(1500);
    let mut nat = Nat::new(1024..=65535, 16);
    let mut at = 0;
    b.counter(ItemsCount::new(1usize)).bench_local(|| {
        let f = RxFrame::new(VnetHdr::default(), &frames[at], None);
        at = if at + 1 == frames.len() { 0 } else { at + 1 };
        let cx = FrameCx { frame: black_box(&f), in_port: 1, max_frame: max, now: 0 };
        p.run(&Env { routes: &routes }, &mut nat, &cx, &mut NoObserve)
    });
}

#[divan::bench(args = SIZES)]
fn mac_lookup(b: Bencher, n: usize) {
    let (t, keys) = full_table(n);
    let mut at = 0;
    b.counter(ItemsCount::new(PER_ITER)).bench_local(|| {
        for _ in 0..PER_ITER {
            black_box(t.lookup(keys[at]));
            at = if at + 1 == keys.len() { 0 } else { at + 1 };
        }
    });
}

/// Lookups as a worker does them: a batch's lines are prefetched, then looked up.
#[divan::bench(args = SIZES)]
fn mac_lookup_batched(b: Bencher, n: usize) {
    let (t, keys) = full_table(n);
    let mut at = 0;
    b.counter(ItemsCount::new(PER_ITER)).bench_local(|| {
        for _ in 0..PER_ITER / 32 {
            let batch = &keys[at..at + 32];
            if t.outgrows_cache() {
                for m in batch {
                    t.prefetch(*m, false);
                }
            }
            for m in batch {
                black_box(t.lookup(*m));
            }
            at = if at + 64 > keys.len() { 0 } else { at + 32 };
        }
    });
}

#[divan::bench(args = SIZES)]
fn mac_learn_known(b: Bencher, n: usize) {
    let (t, keys) = full_table(n);
    let mut at = 0;
    b.counter(ItemsCount::new(PER_ITER)).bench_local(|| {
        for _ in 0..PER_ITER {
            black_box(t.learn(keys[at], (at % 32 + 1) as u16, 1));
            at = if at + 1 == keys.len() { 0 } else { at + 1 };
        }
    });
}

#[divan::bench]
fn mac_learn_new(b: Bencher) {
    let keys = macs(PER_ITER);
    b.counter(ItemsCount::new(PER_ITER)).with_inputs(|| MacTable::new(4 * PER_ITER)).bench_local_refs(|t| {
        for m in &keys {
            black_box(t.learn(*m, 1, 0));
        }
    });
}

/// A worker with `ports` in-memory ports on one network; port 1 receives 32-frame bursts
/// of 64-byte frames to `dst`, from a MAC learned on port 1.
fn worker(ports: u16, dst: MacAddr) -> Worker {
    let (tx, rx) = crossbeam_channel::unbounded();
    let (faults, _) = crossbeam_channel::unbounded();
    let waker = Arc::new(Waker::new().expect("eventfd"));
    let link = Arc::new(Link::new(vec![waker.clone()]));
    let mut w = Worker::new(0, rx, waker, faults, link);
    let table = Arc::new(MacTable::new(1024));
    let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    table.learn(a, 1, 0);
    table.learn(b, 2, 0);
    tx.send(Cmd::AddNetwork { net: 0, pipeline: bridge(table), gateway: None }).unwrap();
    for p in 1..=ports {
        let frames = if p == 1 { vec![frame(dst, a)] } else { vec![] };
        let queue = Queue::Memory(MemoryQueue::new(frames, 32));
        let shared = Arc::new(PortShared::new(1, max_frame_for_mtu(1500)));
        tx.send(Cmd::AddPort(NewPort { port: p, net: 0, queue, rx: true, shared })).unwrap();
    }
    w.pass();
    w
}

#[divan::bench]
fn forward_batch_32_unicast(b: Bencher) {
    let mut w = worker(2, MacAddr([2, 0, 0, 0, 0, 2]));
    b.counter(ItemsCount::new(32usize)).bench_local(|| black_box(w.pass()));
}

#[divan::bench(args = [4, 16])]
fn forward_batch_32_flood(b: Bencher, ports: u16) {
    let mut w = worker(ports, MacAddr([0xff; 6]));
    b.counter(ItemsCount::new(32usize)).bench_local(|| black_box(w.pass()));
}
