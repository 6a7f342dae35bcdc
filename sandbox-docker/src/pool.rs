//! The warm pool: containers created, attached and started ahead of time,
//! each waiting in its launcher for one request (see `launcher.rs`).
//!
//! A background task keeps up to `size` containers ready, on the crate's
//! background thread (so the pool outlives the runtime that built the
//! executor, and its containers' connections are driven whichever runtime
//! runs the request). [`Pool::take`] hands one out; it is used once and then
//! [`retired`](Pool::retire): removed in the background, off the request's
//! critical path, and the filler is woken to replace it only then, so that
//! starting a container does not compete with the execution for the CPU.
//! Every container of the pool holds a [`Token`] until it is removed (which
//! also wakes the filler, for runs dropped midway), so [`Pool::shutdown`]
//! and the pool's `Drop` can wait until none is left.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use futures_util::{FutureExt, StreamExt};
use sandbox_core::{Error, Limits};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::client::{Chunk, Client, InputSink, OutputStream};
use crate::container::{self, Container, in_background};
use crate::launcher::{self, Marker, Matched};

/// How long a new container may take to be created, started and ready.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest pause between attempts after failed warm-ups.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long dropping the last executor waits for its pooled containers to be removed.
const DROP_GRACE: Duration = Duration::from_secs(10);

/// What an executor's warm pool is doing, from
/// [`DockerExecutor::pool_stats`](crate::DockerExecutor::pool_stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// How many containers the pool keeps ready (0: no pool).
    pub size: usize,
    /// How many are ready now.
    pub ready: usize,
    /// Executions that ran in a pooled container.
    pub pooled_runs: u64,
    /// Executions that ran in a cold container: the pool was disabled,
    /// closed or empty, or the request's container limits differed.
    pub cold_runs: u64,
    /// Why the last attempt to start a pooled container failed, if it did
    /// (the pool retries with a growing pause; requests meanwhile run cold).
    pub last_error: Option<String>,
}

/// A started container whose launcher waits for a request.
pub(crate) struct Warm {
    pub container: Container,
    pub output: OutputStream,
    pub input: InputSink,
}

impl std::fmt::Debug for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warm")
            .field("container", &self.container.name())
            .finish_non_exhaustive()
    }
}

/// Counts the live containers of a pool; waits until there are none.
/// Each container that goes wakes the filler (`wake`): a run dropped
/// midway frees its place in the pool too.
#[derive(Debug, Default)]
struct Tracker {
    live: Mutex<usize>,
    gone: Condvar,
    notify: Notify,
    wake: Notify,
}

impl Tracker {
    fn count(&self) -> MutexGuard<'_, usize> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn token(self: &Arc<Self>) -> Token {
        *self.count() += 1;
        Token(self.clone())
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the count is read: no wake-up is missed.
            notified.as_mut().enable();
            if *self.count() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn wait_blocking(&self, timeout: Duration) -> bool {
        let live = self.count();
        let (live, _) = self
            .gone
            .wait_timeout_while(live, timeout, |live| *live > 0)
            .unwrap_or_else(|e| e.into_inner());
        *live == 0
    }
}

/// Held by each pooled container until it is removed.
#[derive(Debug)]
pub(crate) struct Token(Arc<Tracker>);

impl Drop for Token {
    fn drop(&mut self) {
        let mut live = self.0.count();
        *live = live.saturating_sub(1);
        if *live == 0 {
            self.0.gone.notify_all();
            self.0.notify.notify_waiters();
        }
        drop(live);
        self.0.wake.notify_one();
    }
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Warm>,
    closed: bool,
    /// The last warm-up failure, for `Debug` and the report.
    last_error: Option<String>,
}

#[derive(Debug)]
struct Shared {
    client: Client,
    body: ContainerCreateBody,
    limits: Limits,
    size: usize,
    state: Mutex<State>,
    tracker: Arc<Tracker>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An executor's warm pool; closed (its containers removed) when dropped.
#[derive(Debug)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// A pool of `size` containers made from `body` (whose limits are
    /// `limits`), filled from now on in the background.
    pub fn start(client: Client, body: ContainerCreateBody, limits: Limits, size: usize) -> Pool {
        let shared = Arc::new(Shared {
            client,
            body,
            limits,
            size,
            state: Mutex::new(State::default()),
            tracker: Arc::new(Tracker::default()),
        });
        in_background(fill(shared.clone()));
        Pool { shared }
    }

    /// How many containers the pool keeps ready.
    pub fn size(&self) -> usize {
        self.shared.size
    }

    /// How many containers are ready now.
    pub fn ready(&self) -> usize {
        self.shared.state().ready.len()
    }

    /// Why the last warm-up failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.shared.state().last_error.clone()
    }

    /// Whether a request with `limits` can run in one of the pool's
    /// containers: every limit enforced by the container itself matches
    /// (the timeout and the output cap are the host's business).
    pub fn fits(&self, limits: &Limits) -> bool {
        let own = &self.shared.limits;
        limits.memory_bytes == own.memory_bytes
            && limits.cpus == own.cpus
            && limits.pids == own.pids
            && limits.scratch_bytes == own.scratch_bytes
            && limits.network == own.network
    }

    /// A ready container, or `None` when none is (the request then runs
    /// cold). Containers that died while waiting are retired on the way.
    pub fn take(&self) -> Option<Warm> {
        let mut taken = None;
        while taken.is_none() {
            let mut warm = self.shared.state().ready.pop_front()?;
            // A waiting launcher writes nothing: anything else (or the end
            // of its output) means it is gone.
            match warm.output.next().now_or_never() {
                None => taken = Some(warm),
                Some(_) => self.retire(warm.container),
            }
        }
        taken
    }

    /// Removes a used (or broken) container in the background, and has the
    /// pool refilled: after the execution, so that starting a container
    /// does not compete with it.
    pub fn retire(&self, container: Container) {
        self.shared.tracker.wake.notify_one();
        in_background(async move {
            // On failure the container's `Drop` keeps trying.
            let _ = container.remove().await;
        });
    }

    /// Stops refilling and removes the ready containers; returns how many
    /// containers are still to be removed.
    fn close(&self) {
        let ready = {
            let mut state = self.shared.state();
            state.closed = true;
            std::mem::take(&mut state.ready)
        };
        self.shared.tracker.wake.notify_one();
        for warm in ready {
            self.retire(warm.container);
        }
    }

    /// Closes the pool and waits until its containers are removed (those in
    /// use are removed when their executions end).
    pub async fn shutdown(&self) {
        self.close();
        self.shared.tracker.wait().await;
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.close();
        // The removals run on the background thread: wait for them here
        // (briefly), so a process that exits right after dropping its
        // executor leaves nothing behind. Never on that thread itself.
        if !container::on_background_thread() {
            let _ = self.shared.tracker.wait_blocking(DROP_GRACE);
        }
    }
}

/// Keeps the pool full until it is closed.
async fn fill(shared: Arc<Shared>) {
    let mut fills: JoinSet<Result<Warm, Error>> = JoinSet::new();
    let mut failures: u32 = 0;
    loop {
        {
            let state = shared.state();
            if state.closed {
                break;
            }
            while state.ready.len() + fills.len() < shared.size {
                fills.spawn(warm_up(shared.clone()));
            }
        }
        let joined = tokio::select! {
            Some(joined) = fills.join_next() => joined,
            () = shared.tracker.wake.notified() => continue,
        };
        match joined {
            Ok(Ok(warm)) => {
                failures = 0;
                let mut state = shared.state();
                state.last_error = None;
                if state.closed {
                    drop(state);
                    drop(warm);
                } else {
                    state.ready.push_back(warm);
                }
            }
            Ok(Err(error)) => {
                failures = failures.saturating_add(1);
                shared.state().last_error = Some(error.to_string());
                // Back off (1 s, 2 s, 4 s, ... a minute), waking early to close.
                let pause = Duration::from_secs(1 << failures.min(6)).min(MAX_BACKOFF);
                let pause = tokio::time::sleep(pause);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        () = &mut pause => break,
                        () = shared.tracker.wake.notified() => {
                            if shared.state().closed {
                                break;
                            }
                        }
                    }
                }
            }
            Err(_) => {}
        }
    }
    // Dropping the fills in flight removes their containers.
    drop(fills);
}

/// Creates, attaches and starts one container and waits for its launcher's [`launcher::READY`].
async fn warm_up(shared: Arc<Shared>) -> Result<Warm, Error> {
    let token = shared.tracker.token();
    let client = &shared.client;
    let container = Container::create(
        client,
        container::unique_name(),
        shared.body.clone(),
        Some(token),
    )
    .await?;
    let ready = async {
        let attached = client.attach(container.name(), true).await?;
        let input = attached.input.ok_or_else(|| {
            Error::backend(
                crate::BACKEND,
                "attaching to a pooled container",
                "the daemon gave no stdin",
            )
        })?;
        let mut output = attached.output;
        client.start(container.name()).await?;
        let mut marker = Marker::new(launcher::READY);
        let mut said = Vec::new();
        while !marker.is_done() {
            match output.next().await {
                Some(Ok(Chunk::Stdout(bytes))) => match marker.feed(&bytes) {
                    Matched::Partial | Matched::Done(b"") => {}
                    Matched::Done(_) | Matched::Mismatch => {
                        said.extend_from_slice(&bytes);
                        break;
                    }
                },
                Some(Ok(Chunk::Stderr(bytes))) => said.extend_from_slice(&bytes),
                Some(Err(error)) => return Err(error),
                None => break,
            }
        }
        if !marker.is_done() || !said.is_empty() {
            return Err(Error::Backend {
                backend: crate::BACKEND.to_owned(),
                message: format!(
                    "the launcher of a pooled container did not start: {}",
                    String::from_utf8_lossy(&said).trim()
                ),
                source: None,
            });
        }
        Ok((output, input))
    };
    match tokio::time::timeout(WARM_UP_TIMEOUT, ready).await {
        Ok(Ok((output, input))) => Ok(Warm {
            container,
            output,
            input,
        }),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(Error::Backend {
            backend: crate::BACKEND.to_owned(),
            message: format!(
                "a pooled container was not ready within {WARM_UP_TIMEOUT:?}; the daemon may be overloaded"
            ),
            source: None,
        }),
    }
}
