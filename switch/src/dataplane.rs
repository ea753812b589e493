//! The control plane's handle on the data plane: starts the workers and the services
//! thread, hands them networks and port queues, and takes ports away again, waiting until
//! every worker has let go.

use crate::fdb::PortId;
use crate::pipeline::{Pipeline, Routes};
use crate::poll::PollMode;
use crate::port::{Opened, PortShared};
use crate::services::host::GatewayAddrs;
use crate::services::link::Link;
use crate::services::Services;
use crate::trace::Tracer;
use crate::worker::{Cmd, Fault, NetId, NewPort, Waker, Worker};
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use vswitch_nat::{SessionInfo, Stats as NatStats};

struct WorkerHandle {
    cmds: Sender<Cmd>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

pub struct Dataplane {
    workers: Vec<WorkerHandle>,
    services: Services,
    pub faults: Receiver<Fault>,
}

impl Dataplane {
    pub fn start(n: usize) -> std::io::Result<Dataplane> {
        Dataplane::start_with(n, PollMode::default(), &[])
    }

    /// `n` workers that sleep as `poll` says, worker i on `cpus[i % len]` (none: unpinned).
    pub fn start_with(n: usize, poll: PollMode, cpus: &[usize]) -> std::io::Result<Dataplane> {
        let (fault_tx, faults) = unbounded();
        let wakers = (0..n).map(|_| Waker::new().map(Arc::new)).collect::<std::io::Result<Vec<_>>>()?;
        let link = Arc::new(Link::new(wakers.clone()));
        let services = Services::start(link.clone())?;
        let mut workers = Vec::with_capacity(n);
        for (i, waker) in wakers.into_iter().enumerate() {
            let (cmds, rx) = unbounded();
            let w = Worker::new(i, rx, waker.clone(), fault_tx.clone(), link.clone());
            let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            let thread = std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
                if let Some(c) = cpu {
                    if let Err(e) = crate::poll::pin_to(c) {
                        tracing::warn!(worker = i, cpu = c, "cannot pin the worker: {e}");
                    }
                }
                w.run(poll)
            })?;
            workers.push(WorkerHandle { cmds, waker, thread: Some(thread) });
        }
        Ok(Dataplane { workers, services, faults })
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    fn send(&self, w: &WorkerHandle, cmd: Cmd) {
        let _ = w.cmds.send(cmd);
        w.waker.wake();
    }

    /// Start forwarding for network `net`, and bring its gateway up if it has one.
    pub fn add_network(&self, net: NetId, pipeline: &Pipeline, gateway: Option<(&Arc<PortShared>, GatewayAddrs)>) {
        for w in &self.workers {
            let cmd =
                Cmd::AddNetwork { net, pipeline: pipeline.clone(), gateway: gateway.as_ref().map(|g| g.0.clone()) };
            self.send(w, cmd);
        }
        if let Some((stats, addrs)) = gateway {
            self.services.add(net, addrs, stats.clone());
        }
    }

    /// Replace network `net`'s pipeline (its ports stay).
    pub fn set_pipeline(&self, net: NetId, pipeline: &Pipeline) {
        for w in &self.workers {
            self.send(w, Cmd::SetPipeline { net, pipeline: pipeline.clone() });
        }
    }

    pub fn remove_network(&self, net: NetId) {
        for w in &self.workers {
            self.send(w, Cmd::RemoveNetwork { net });
        }
        self.services.remove(net);
    }

    /// Every network's subnets, for the gateway stage.
    /// The embedded DNS's names, for the services thread.
    pub fn set_names(&self, names: Arc<crate::dns::names::Names>) {
        self.services.set_names(names);
    }

    pub fn set_routes(&self, routes: Routes) {
        let routes = Arc::new(routes);
        for w in &self.workers {
            self.send(w, Cmd::SetRoutes(routes.clone()));
        }
    }

    /// Have network `net`'s gateway announce itself (gratuitous ARP, unsolicited NA).
    pub fn announce(&self, net: NetId) {
        self.services.announce(net);
    }

    /// Give each worker its queue of a newly opened port.
    pub fn add_port(&self, port: PortId, net: NetId, opened: Opened, shared: &Arc<PortShared>) {
        let rx_queues = opened.rx_queues;
        for (i, (w, queue)) in self.workers.iter().zip(opened.queues).enumerate() {
            let p = NewPort { port, net, queue, rx: i < rx_queues, shared: shared.clone() };
            self.send(w, Cmd::AddPort(p));
        }
    }

    /// Take a port away from every worker; returns once all its queues are closed.
    pub fn remove_port(&self, port: PortId) {
        self.send_all_and_wait(|done| Cmd::RemovePort { port, done });
    }

    /// Send every worker a command and wait until each has answered on its `done`.
    fn send_all_and_wait(&self, cmd: impl Fn(Sender<()>) -> Cmd) {
        let (done, acks) = crossbeam_channel::bounded(self.workers.len());
        for w in &self.workers {
            self.send(w, cmd(done.clone()));
        }
        drop(done);
        // Ends when every worker has answered and let go of its sender (a worker that is
        // gone drops it unanswered: never wait for it forever).
        while acks.recv().is_ok() {}
    }

    /// Hand every worker the traces now running; returns once all of them use the new list.
    pub fn set_traces(&self, traces: Arc<[Arc<Tracer>]>) {
        self.send_all_and_wait(|done| Cmd::SetTraces { traces: traces.clone(), done });
    }

    /// Idle timeouts for every worker's NAT.
    pub fn set_nat_timeouts(&self, t: vswitch_nat::Timeouts) {
        for w in &self.workers {
            self.send(w, Cmd::NatTimeouts(t));
        }
    }

    /// Every worker's NAT sessions (at most `limit` from each), with the worker's index, and
    /// its counters.
    pub fn nat_sessions(&self, limit: usize) -> Vec<(usize, Vec<SessionInfo>, NatStats)> {
        let (reply, got) = crossbeam_channel::bounded(self.workers.len());
        for w in &self.workers {
            self.send(w, Cmd::NatSessions { limit, reply: reply.clone() });
        }
        drop(reply);
        let mut all: Vec<_> = got.iter().collect();
        all.sort_by_key(|(w, _, _)| *w);
        all
    }

    pub fn stop(&mut self) {
        for w in &self.workers {
            self.send(w, Cmd::Stop);
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
        crate::port::wait_for_closes();
        self.services.stop();
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop();
    }
}
