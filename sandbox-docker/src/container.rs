//! One execution's container, from creation to removal.
//!
//! [`run`] creates a fresh container, copies the code in, attaches, starts
//! it, streams its output under the caps, enforces the wall-clock timeout,
//! reads how it ended and removes it. [`Container`] removes the container on
//! every path: awaited at the end of [`run`] (success or error), and from
//! `Drop` when the caller drops the future or panics, on a cleanup thread of
//! its own that outlives the caller's runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bollard::models::ContainerCreateBody;
use futures_util::StreamExt;
use sandbox_core::{Error, Limits, Status};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio::time::sleep_until;

use crate::BACKEND;
use crate::archive::WORK_DIR;
use crate::client::{Chunk, Client, ExitState, InputSink, OutputStream};
use crate::launcher::{self, End, Marker, Matched, Oom, Payload, Trailer};
use crate::output::Capture;
use crate::pool::Token;

/// How long output may keep arriving after the sandbox killed the container.
const DRAIN_GRACE: Duration = Duration::from_secs(3);

/// How long a killed container may take to be reported stopped.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often, and how far apart, a SIGKILLed container is asked again
/// whether the OOM killer struck.
const OOM_FLAG_CHECKS: usize = 20;
const OOM_FLAG_PAUSE: Duration = Duration::from_millis(50);

/// What one execution produced.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Capture,
    pub stderr: Capture,
    pub duration: Duration,
}

/// What to run in the container.
#[derive(Debug)]
pub(crate) struct Job<'a> {
    pub body: ContainerCreateBody,
    pub tar: Option<Vec<u8>>,
    pub stdin: Option<Vec<u8>>,
    pub limits: &'a Limits,
}

/// Runs `job` in a fresh container and removes the container, whatever happens.
pub(crate) async fn run(client: &Client, job: Job<'_>) -> Result<Outcome, Error> {
    let container = Container::create(client, unique_name(), job.body, None).await?;
    let outcome = drive(client, container.name(), job.tar, job.stdin, job.limits).await;
    let removed = container.remove().await;
    let outcome = outcome?;
    removed?;
    Ok(outcome)
}

/// A name no other container has: this process, its start and a counter.
pub(crate) fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static EPOCH: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let epoch = EPOCH.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("rlmkit-sandbox-{}-{epoch:x}-{n}", std::process::id())
}

/// Copies the code in, starts the container and follows it to its end.
async fn drive(
    client: &Client,
    name: &str,
    tar: Option<Vec<u8>>,
    stdin: Option<Vec<u8>>,
    limits: &Limits,
) -> Result<Outcome, Error> {
    if let Some(tar) = tar {
        client.upload(name, WORK_DIR, tar).await?;
    }
    let attached = client.attach(name, stdin.is_some()).await?;
    client.start(name).await?;
    let started = Instant::now();
    let _feeder = match (attached.input, stdin) {
        (Some(input), Some(bytes)) => Some(AbortOnDrop(tokio::spawn(feed(input, bytes)))),
        _ => None,
    };
    follow(client, name, attached.output, limits, started, None).await
}

/// Hands `payload` to the launcher of the started container `name` and
/// follows the program to its end. The timeout counts from the hand-over.
pub(crate) async fn drive_warm(
    client: &Client,
    name: &str,
    output: OutputStream,
    input: InputSink,
    payload: Payload<'_>,
    limits: &Limits,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    let framing = Framing::new(&payload);
    let feeding = payload.feed(input);
    let following = follow(client, name, output, limits, started, Some(framing));
    tokio::pin!(feeding, following);
    // The program may end (or be stopped) before it read all its stdin:
    // then the rest of the payload is simply not sent.
    tokio::select! {
        outcome = &mut following => outcome,
        () = &mut feeding => following.await,
    }
}

/// What a pooled container's launcher writes around the program's output
/// (see `launcher.rs`): [`launcher::EXEC`] first on stdout, a trailer last
/// on each stream.
#[derive(Debug)]
struct Framing {
    exec: Marker,
    stdout: Trailer,
    stderr: Trailer,
    /// Whether something other than [`launcher::EXEC`] came first.
    broken: bool,
    /// What came on stdout instead of [`launcher::EXEC`] (the launcher's, not the program's).
    unexpected: Vec<u8>,
}

impl Framing {
    fn new(payload: &Payload<'_>) -> Framing {
        Framing {
            exec: Marker::new(launcher::EXEC),
            stdout: payload.trailer(),
            stderr: payload.trailer(),
            broken: false,
            unexpected: Vec::new(),
        }
    }

    /// The program's bytes in a stdout chunk.
    fn stdout(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.exec.is_done() {
            return self.stdout.feed(bytes);
        }
        if !self.broken {
            match self.exec.feed(bytes) {
                Matched::Partial => return Vec::new(),
                Matched::Done(rest) => return self.stdout.feed(rest),
                Matched::Mismatch => self.broken = true,
            }
        }
        let said = self.stdout.feed(bytes);
        self.unexpected.extend_from_slice(&said);
        Vec::new()
    }

    /// Whether the launcher started the program.
    fn started(&self) -> bool {
        self.exec.is_done() && !self.broken
    }

    /// How the program ended, once both trailers arrived.
    fn end(&self) -> Option<End> {
        self.stderr.end().and(self.stdout.end())
    }
}

/// Streams the output of the started container `name` until it ends, the
/// timeout (counted from `started`) strikes or a stream passes its cap, and
/// reads how it ended. With `framing`, the launcher's marker and trailers
/// are taken out of the output, and the trailers say how the program ended.
async fn follow(
    client: &Client,
    name: &str,
    mut output: OutputStream,
    limits: &Limits,
    started: Instant,
    mut framing: Option<Framing>,
) -> Result<Outcome, Error> {
    let deadline = tokio::time::Instant::from_std(started + limits.timeout);
    let mut stdout = Capture::new(limits.output_bytes);
    let mut stderr = Capture::new(limits.output_bytes);
    let mut stopped_by: Option<Status> = None;
    let mut killing: Option<JoinHandle<Result<(), Error>>> = None;
    let mut drain_until = deadline;
    // Stream the output until it ends (the container exited, or both
    // trailers came), the timeout strikes or a stream passes its cap. The
    // kill runs as its own task while the output is drained: the daemon
    // does not finish a kill while the container's output waits for a reader.
    loop {
        tokio::select! {
            item = output.next() => match item {
                None => break,
                // After a kill, a broken stream is just the end of it.
                Some(Err(_)) if stopped_by.is_some() => break,
                Some(Err(error)) => return Err(error),
                Some(Ok(chunk)) => {
                    let overflow = match (chunk, framing.as_mut()) {
                        (Chunk::Stdout(bytes), None) => stdout.push(&bytes),
                        (Chunk::Stderr(bytes), None) => stderr.push(&bytes),
                        (Chunk::Stdout(bytes), Some(framing)) => stdout.push(&framing.stdout(&bytes)),
                        (Chunk::Stderr(bytes), Some(framing)) => stderr.push(&framing.stderr.feed(&bytes)),
                    };
                    if overflow && stopped_by.is_none() {
                        stopped_by = Some(Status::OutputLimitExceeded);
                        killing = Some(spawn_kill(client, name));
                        drain_until = tokio::time::Instant::now() + DRAIN_GRACE;
                    }
                    if stopped_by.is_none() && framing.as_ref().and_then(Framing::end).is_some() {
                        break;
                    }
                }
            },
            () = sleep_until(drain_until) => {
                if stopped_by.is_some() {
                    // Killed, yet the stream did not end: stop reading.
                    break;
                }
                stopped_by = Some(Status::TimedOut);
                killing = Some(spawn_kill(client, name));
                drain_until = tokio::time::Instant::now() + DRAIN_GRACE;
            }
        }
    }
    drop(output);
    if let Some(kill) = killing {
        tokio::time::timeout(STOP_GRACE, kill)
            .await
            .map_err(|_| not_stopping(name))?
            .map_err(|e| Error::backend(BACKEND, "the task killing the container failed", e))??;
    }
    let ended = match framing.as_mut() {
        None => None,
        Some(framing) => {
            let end = framing.end();
            if end.is_none() {
                // No trailer: what was held back was the program's.
                stdout.push(&framing.stdout.finish());
                stderr.push(&framing.stderr.finish());
            }
            if stopped_by.is_none() && !framing.started() {
                // The stream ended before the program started: ask the
                // daemon first (a lost connection is its error, not the
                // launcher's), then blame the launcher.
                wait_for_end(client, name, deadline).await?;
                return Err(launcher_failed(name, &framing.unexpected, &stderr));
            }
            end
        }
    };

    // The launcher's trailers tell how the program ended, and whether the
    // OOM killer struck (read as the daemon would: a non-zero end with an
    // OOM kill in the container is an OOM kill), except when a SIGKILL
    // came with no word on that: ask the daemon then.
    let (status, exit_code, signal) = match (stopped_by, ended) {
        (Some(status), _) => {
            // Killed: make sure it is gone before saying so.
            tokio::time::timeout(STOP_GRACE, client.wait(name))
                .await
                .map_err(|_| not_stopping(name))??;
            (status, None, Some(9))
        }
        (None, Some(End::Failed)) => return Err(launcher_failed(name, &[], &stderr)),
        (None, Some(End::Exit(0, _))) => (Status::Exited, Some(0), None),
        (None, Some(End::Exit(_, Oom::Yes))) => (Status::OomKilled, None, None),
        (None, Some(End::Exit(code, _))) => (Status::Exited, Some(code), None),
        (None, Some(End::Signal(signal, Oom::Yes))) => {
            (Status::OomKilled, None, (signal == 9).then_some(9))
        }
        (None, Some(End::Signal(signal, oom))) if signal != 9 || oom == Oom::No => {
            (Status::Signaled, None, Some(signal))
        }
        (None, _) => match wait_for_end(client, name, deadline).await? {
            Some(ended) => ended,
            None => {
                // Timed out while the daemon reported the end.
                (Status::TimedOut, None, Some(9))
            }
        },
    };
    Ok(Outcome {
        status,
        exit_code,
        signal,
        stdout,
        stderr,
        duration: started.elapsed(),
    })
}

/// Waits for the container to stop (killing it at `deadline`) and reads
/// how it ended from the daemon; `None` when the timeout struck first.
async fn wait_for_end(
    client: &Client,
    name: &str,
    deadline: tokio::time::Instant,
) -> Result<Option<(Status, Option<i32>, Option<i32>)>, Error> {
    let exit_code = match tokio::time::timeout_at(deadline, client.wait(name)).await {
        Ok(result) => result?,
        Err(_) => {
            client.kill(name).await?;
            tokio::time::timeout(STOP_GRACE, client.wait(name))
                .await
                .map_err(|_| not_stopping(name))??;
            return Ok(None);
        }
    };
    // Exit code 0 cannot be an OOM kill: no need to ask the daemon.
    if exit_code == Some(0) {
        return Ok(Some(natural_end(0, false)));
    }
    let state = settled_exit_state(client, name).await?;
    if state.running {
        return Err(not_stopping(name));
    }
    Ok(Some(natural_end(state.exit_code, state.oom_killed)))
}

/// How a stopped container ended. The daemon learns of an OOM kill and of
/// the exit from separate events, in either order: a SIGKILL without the
/// OOM flag is asked about again, briefly.
pub(crate) async fn settled_exit_state(client: &Client, name: &str) -> Result<ExitState, Error> {
    let mut state = client.exit_state(name).await?;
    for _ in 0..OOM_FLAG_CHECKS {
        if state.running || state.oom_killed || state.exit_code != 137 {
            break;
        }
        tokio::time::sleep(OOM_FLAG_PAUSE).await;
        state = client.exit_state(name).await?;
    }
    Ok(state)
}

/// The error of a pooled container whose launcher failed before the program
/// started: what it wrote says why.
fn launcher_failed(name: &str, stdout: &[u8], stderr: &Capture) -> Error {
    let said = String::from_utf8_lossy(&stderr.bytes);
    let said = said.trim();
    let unexpected = if stdout.is_empty() {
        String::new()
    } else {
        format!(
            " (and wrote {:?} on stdout)",
            String::from_utf8_lossy(&stdout[..stdout.len().min(200)])
        )
    };
    Error::Backend {
        backend: BACKEND.to_owned(),
        message: format!(
            "the launcher of the pooled container {name} could not start the program: {}{unexpected}; build the executor with pool_size(0) to run every request in a cold container",
            if said.is_empty() {
                "it exited without a word"
            } else {
                said
            }
        ),
        source: None,
    }
}

/// Sends SIGKILL to the container from a task of its own.
fn spawn_kill(client: &Client, name: &str) -> JoinHandle<Result<(), Error>> {
    let client = client.clone();
    let name = name.to_owned();
    tokio::spawn(async move { client.kill(&name).await })
}

/// How a program the sandbox did not stop ended, from the exit code of the
/// container's init (which reports death by signal N as 128 + N, as a shell
/// does; a program that exits with such a code by itself reads the same).
pub(crate) fn natural_end(exit_code: i64, oom_killed: bool) -> (Status, Option<i32>, Option<i32>) {
    let code = i32::try_from(exit_code).unwrap_or(-1);
    if oom_killed && code != 0 {
        return (Status::OomKilled, None, (code == 137).then_some(9));
    }
    match code {
        129..=159 => (Status::Signaled, None, Some(code - 128)),
        _ => (Status::Exited, Some(code), None),
    }
}

fn not_stopping(name: &str) -> Error {
    Error::Backend {
        backend: BACKEND.to_owned(),
        message: format!(
            "the container {name} did not stop within {STOP_GRACE:?} of SIGKILL; the daemon may be overloaded"
        ),
        source: None,
    }
}

/// Writes the request's stdin, then closes it so the program sees end-of-file.
async fn feed(mut input: InputSink, bytes: Vec<u8>) {
    // The program may exit without reading it all: that is its business.
    let _ = input.write_all(&bytes).await;
    let _ = input.shutdown().await;
}

/// A container that is removed (forcefully, with its volumes) when dropped.
///
/// [`Container::remove`] removes it and waits; `Drop` hands the removal to
/// the cleanup thread (see [`in_background`]), so a dropped or panicking
/// caller leaves nothing behind even while its runtime shuts down. A drop
/// during creation waits for the creation to finish before removing.
///
/// A [`Token`] given at creation is held until the container is removed
/// (or its removal given up), so its pool can wait for that.
#[derive(Debug)]
pub(crate) struct Container {
    client: Client,
    name: String,
    creating: Option<JoinHandle<Result<(), Error>>>,
    armed: bool,
    token: Option<Token>,
}

impl Container {
    /// Creates the container `name` from `body`.
    pub async fn create(
        client: &Client,
        name: String,
        body: ContainerCreateBody,
        token: Option<Token>,
    ) -> Result<Container, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::backend(
                BACKEND,
                "the Docker backend must run inside a Tokio runtime",
                e,
            )
        })?;
        // The creation runs as its own task: dropping this future mid-request
        // cannot leave a container that nobody knows about.
        let task = {
            let client = client.clone();
            let name = name.clone();
            runtime.spawn(async move { client.create(&name, body).await })
        };
        let mut container = Container {
            client: client.clone(),
            name,
            creating: None,
            armed: true,
            token,
        };
        let joined = container.creating.insert(task).await;
        container.creating = None;
        let created = joined
            .map_err(|e| Error::backend(BACKEND, "the task creating the container failed", e));
        match created {
            Ok(Ok(())) => Ok(container),
            Ok(Err(error)) | Err(error) => {
                // Usually nothing was created; make sure of it.
                let _ = container.remove().await;
                Err(error)
            }
        }
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Removes the container and its volumes now. Dropped before it is
    /// done, or failing, the removal goes on (and is retried) in the background.
    pub async fn remove(mut self) -> Result<(), Error> {
        let removed = self.client.remove(&self.name).await;
        self.armed = removed.is_err();
        removed
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let client = self.client.clone();
        let name = std::mem::take(&mut self.name);
        let creating = self.creating.take();
        let token = self.token.take();
        // If the removal keeps failing (the daemon is gone for good), the
        // owner label lets `gc` find the container later.
        in_background(async move {
            // A creation cut short by its runtime's shutdown may still reach
            // the daemon after a first removal: remove again a little later.
            let cut_short = match creating {
                Some(creating) => creating.await.is_err(),
                None => false,
            };
            remove_patiently(&client, &name).await;
            if cut_short {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let _ = client.remove(&name).await;
            }
            drop(token);
        });
    }
}

/// Removes a container, retrying for about half a minute: a daemon that
/// restarts, or a mount that is busy for a moment, does not leave it behind.
async fn remove_patiently(client: &Client, name: &str) {
    let mut delay = Duration::from_millis(500);
    for _ in 0..6 {
        if client.remove(name).await.is_ok() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    let _ = client.remove(name).await;
}

type Chore = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The name of the crate's background thread.
const BACKGROUND_THREAD: &str = "rlmkit-sandbox-cleanup";

/// Whether the current thread is the crate's background thread (which must
/// never block waiting for its own work).
pub(crate) fn on_background_thread() -> bool {
    std::thread::current().name() == Some(BACKGROUND_THREAD)
}

/// Runs `job` on the crate's cleanup thread, a current-thread runtime
/// started on first use: it finishes even when the caller's runtime is
/// shutting down (a panicking `#[tokio::test]`) or when there is none.
/// Falls back to the current runtime if the thread cannot be started.
pub(crate) fn in_background(job: impl Future<Output = ()> + Send + 'static) {
    static WORKER: OnceLock<Option<tokio::sync::mpsc::UnboundedSender<Chore>>> = OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (sender, mut jobs) = tokio::sync::mpsc::unbounded_channel::<Chore>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        std::thread::Builder::new()
            .name(BACKGROUND_THREAD.to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some(job) = jobs.recv().await {
                        drop(tokio::spawn(job));
                    }
                });
            })
            .ok()?;
        Some(sender)
    });
    let job: Chore = Box::pin(job);
    let job = match worker {
        Some(sender) => match sender.send(job) {
            Ok(()) => return,
            Err(unsent) => unsent.0,
        },
        None => job,
    };
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        drop(runtime.spawn(job));
    }
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_statuses() {
        assert_eq!(natural_end(0, false), (Status::Exited, Some(0), None));
        assert_eq!(natural_end(3, false), (Status::Exited, Some(3), None));
        assert_eq!(natural_end(127, false), (Status::Exited, Some(127), None));
        assert_eq!(natural_end(137, false), (Status::Signaled, None, Some(9)));
        assert_eq!(natural_end(143, false), (Status::Signaled, None, Some(15)));
        assert_eq!(natural_end(137, true), (Status::OomKilled, None, Some(9)));
        assert_eq!(natural_end(1, true), (Status::OomKilled, None, None));
        assert_eq!(natural_end(0, true), (Status::Exited, Some(0), None));
        assert_eq!(natural_end(255, false), (Status::Exited, Some(255), None));
    }

    #[test]
    fn framing_takes_the_launchers_bytes_out() {
        let program = sandbox_core::Program::Python("print(1)".into());
        let layout = crate::archive::layout(&program, &[]).unwrap();
        let env = std::collections::BTreeMap::new();
        let payload = Payload::new(&layout, &env, None).unwrap();
        let mut framing = Framing::new(&payload);
        let mut first = launcher::EXEC[..4].to_vec();
        assert!(framing.stdout(&first).is_empty());
        first = launcher::EXEC[4..].to_vec();
        first.extend_from_slice(b"hello\n");
        assert_eq!(framing.stdout(&first), b"hello\n");
        assert!(framing.started());
        assert_eq!(framing.stdout(b"more"), b"more");

        // Anything else first: the launcher failed, whatever comes later.
        let mut framing = Framing::new(&payload);
        assert!(framing.stdout(b"oops").is_empty());
        assert!(framing.stdout(launcher::EXEC).is_empty());
        assert!(!framing.started());
        assert_eq!(
            framing.unexpected,
            [b"oops".as_slice(), launcher::EXEC].concat()
        );
    }

    #[test]
    fn names_are_unique() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("rlmkit-sandbox-{}-", std::process::id())));
    }
}
