//! The control plane's handle on the workers: starts them, hands them networks and port
//! queues, and takes ports away again, waiting until every worker has let go.

use crate::fdb::{MacTable, PortId};
use crate::port::{Opened, PortShared};
use crate::trace::Tracer;
use crate::worker::{Cmd, Fault, NetId, NewPort, Waker, Worker};
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

struct WorkerHandle {
    cmds: Sender<Cmd>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

pub struct Dataplane {
    workers: Vec<WorkerHandle>,
    pub faults: Receiver<Fault>,
}

impl Dataplane {
    pub fn start(n: usize) -> std::io::Result<Dataplane> {
        let (fault_tx, faults) = unbounded();
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let (cmds, rx) = unbounded();
            let waker = Arc::new(Waker::new()?);
            let w = Worker::new(i, rx, waker.clone(), fault_tx.clone());
            let thread = std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || w.run())?;
            workers.push(WorkerHandle { cmds, waker, thread: Some(thread) });
        }
        Ok(Dataplane { workers, faults })
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    fn send(&self, w: &WorkerHandle, cmd: Cmd) {
        let _ = w.cmds.send(cmd);
        w.waker.wake();
    }

    pub fn add_network(&self, net: NetId, table: &Arc<MacTable>) {
        for w in &self.workers {
            self.send(w, Cmd::AddNetwork { net, table: table.clone() });
        }
    }

    pub fn remove_network(&self, net: NetId) {
        for w in &self.workers {
            self.send(w, Cmd::RemoveNetwork { net });
        }
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

    pub fn stop(&mut self) {
        for w in &self.workers {
            self.send(w, Cmd::Stop);
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop();
    }
}
