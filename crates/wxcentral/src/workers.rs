//! Connections served on one single-threaded runtime per core.
//!
//! A proxied call is a chain of small wakeups: the caller's request is read, the upstream
//! connection's task is woken to write it, then woken again by the answer, which wakes the
//! caller's connection to write it back. On tokio's work-stealing runtime those tasks wander
//! between workers, and on a small machine the cross-thread wakeups cost more than the hub's
//! own work: in `bench/proxy.sh` a bare hyper proxy measured 0.74 of nginx on the multi-threaded
//! runtime and 0.84 to 0.93 on these workers (`BARE_RUNTIME=per-core`; docs/benchmarks.md). So each
//! accepted connection is handed whole to one of these workers (round robin), and everything
//! it does runs there: its requests, the handlers, and the upstream connections the proxy's
//! per-worker client opens ([`index`] tells which one is current), as nginx's workers do.
//!
//! The engine's own work (refresh flights, store feeds, timers) stays on the runtime that
//! started it, so stopping the workers never cuts a refresh short; they are stopped last,
//! after the connections drained and the engine shut down.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running the caller, `None` outside the workers.
pub fn index() -> Option<usize> {
    INDEX.get()
}

/// How many workers [`Workers::start`] runs by default: one per core the process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The running workers; dropping them stops them without waiting.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` (at least one) worker threads, each driving its own runtime.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let mut workers =
            Self { handles: Vec::new(), stops: Vec::new(), threads: Vec::new(), next: AtomicUsize::new(0) };
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            workers.stops.push(stop);
            workers.threads.push(std::thread::Builder::new().name(format!("wxcentral-http-{i}")).spawn(
                move || {
                    INDEX.set(Some(i));
                    // Ends when told to or when the `Workers` are dropped; dropping the
                    // runtime then cancels whatever connection tasks are left.
                    let _ = runtime.block_on(stopped);
                },
            )?);
        }
        Ok(workers)
    }

    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Runs `task` on the next worker.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        drop(self.handles[i].spawn(task));
    }

    /// Stops the workers and waits for their threads to end.
    pub async fn stop(mut self) {
        self.stops.clear();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_workers_in_turn_and_stop_ends_them() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(index(), None);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = oneshot::channel();
            workers.spawn(async move {
                let _ = tx.send((index(), std::thread::current().name().map(str::to_owned)));
            });
            seen.push(rx.await.unwrap());
        }
        let indices: Vec<_> = seen.iter().map(|(i, _)| *i).collect();
        assert_eq!(indices, [Some(0), Some(1), Some(0), Some(1)]);
        assert_eq!(seen[1].1.as_deref(), Some("wxcentral-http-1"));
        // A task still pending when the workers stop is dropped, not leaked or waited for.
        let (tx, rx) = oneshot::channel::<()>();
        workers.spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        workers.stop().await;
        assert!(rx.await.is_err());
    }
}
