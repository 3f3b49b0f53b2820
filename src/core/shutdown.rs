//! Shutdown is passed around as a value, never a global: every long-running task takes
//! a `Shutdown` and stops at a point where stopping is safe.

use std::future::Future;

use tokio::sync::watch;

/// The trigger side: `trigger()` asks every `Shutdown` clone to stop.
#[derive(Clone)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// The listening side, cheap to clone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn shutdown_pair() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// A shutdown that never fires.
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        Shutdown(rx)
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown is asked for (or every trigger is gone).
    pub async fn wait(&mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Tasks that stop together: the first to fail, or the parent's shutdown, stops the
/// others at their next safe point; `join` waits for all and returns the first error.
pub struct TaskGroup<E> {
    runs: tokio::task::JoinSet<Result<(), E>>,
    stop_all: ShutdownTrigger,
    stop: Shutdown,
    relay: tokio::task::JoinHandle<()>,
}

impl<E: Send + 'static> TaskGroup<E> {
    pub fn new(parent: &Shutdown) -> Self {
        let (stop_all, stop) = shutdown_pair();
        let mut outer = parent.clone();
        let trigger = stop_all.clone();
        let relay = tokio::spawn(async move {
            outer.wait().await;
            trigger.trigger();
        });
        TaskGroup {
            runs: tokio::task::JoinSet::new(),
            stop_all,
            stop,
            relay,
        }
    }

    /// What the group's tasks stop on.
    pub fn shutdown(&self) -> Shutdown {
        self.stop.clone()
    }

    pub fn spawn(&mut self, task: impl Future<Output = Result<(), E>> + Send + 'static) {
        self.runs.spawn(task);
    }

    /// A task that already ended, if any (without waiting).
    pub fn try_ended(&mut self) -> Option<Result<(), E>>
    where
        E: From<tokio::task::JoinError>,
    {
        self.runs
            .try_join_next()
            .map(|r| r.unwrap_or_else(|e| Err(E::from(e))))
    }

    /// Waits for every task; the first error (a task that panicked is one) stops the rest.
    pub async fn join(mut self) -> Result<(), E>
    where
        E: From<tokio::task::JoinError>,
    {
        let mut first = None;
        while let Some(done) = self.runs.join_next().await {
            if let Err(e) = done.unwrap_or_else(|e| Err(E::from(e))) {
                first.get_or_insert(e);
                self.stop_all.trigger();
            }
        }
        self.relay.abort();
        first.map_or(Ok(()), Err)
    }
}
