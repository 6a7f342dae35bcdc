//! [`DockerSession`]: one container per session, running the shared session
//! server ([`REPL_SOURCE`]) as its process, spoken to in framed requests and
//! responses over the container's one attached stream (stdin for requests,
//! stdout for answers; the server's own stderr is kept for diagnostics). No
//! `docker exec` per cell, no files polled.
//!
//! The container is isolated exactly as a one-shot execution's (the same
//! specification: no network, read-only root, uid 1000 without
//! capabilities, cgroup limits held for the whole session), with the
//! scratch tmpfs `/tmp` as its working directory, where `put_file` writes.
//! Cells run one at a time behind an async mutex. The server interrupts a
//! cell at its timeout; if it has not answered [`CELL_GRACE`] later, the
//! host kills the container and the session is lost. A watchdog kills it at
//! the end of its lifetime. Whoever ends the session (a cell, a transfer,
//! the watchdog, `close`, `Drop`) removes the container.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use sandbox_core::session::REPL_SOURCE;
use sandbox_core::session::protocol::{self, MAX_HEADER, Request, Response};
use sandbox_core::units::format_bytes;
use sandbox_core::{
    Cell, Error, ExecutionResult, IsolationReport, Limits, LimitsBuilder, Session, SessionState,
    Status, async_trait,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::BACKEND;
use crate::client::{Chunk, Client, InputSink, OutputStream};
use crate::container::{self, Container, natural_end};
use crate::spec::USER;

/// How long past a cell's timeout the host waits for the server's answer
/// before it kills the container (the server interrupts the cell itself).
pub(crate) const CELL_GRACE: Duration = Duration::from_secs(2);

/// How long the container may take to be created, started and to greet.
const STARTUP: Duration = Duration::from_secs(60);

/// How long a file transfer may go without progress before the session is
/// given up as hung.
const TRANSFER_STALL: Duration = Duration::from_secs(30);

/// How long `close` waits for a running cell, and for the server to exit.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// How long the daemon may take to report how a dead container ended.
const END_REPORT: Duration = Duration::from_secs(5);

/// How long recovering a killed cell's output may take.
const RECOVERY: Duration = Duration::from_secs(2);

/// Files move in chunks of this size; neither side holds more of a file at once.
const CHUNK: usize = 1 << 20;

/// How much of the server's own stderr (outside cells) is kept, its last bytes.
const STDERR_CAP: usize = 64 * 1024;

/// The longest lifetime a session may be given.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where the server writes a cell's output while it runs (`_run` in the
/// server): read back, best effort, when the cell has to be killed.
const CELL_OUTPUT: [&str; 2] = ["/tmp/.rlmkit-cell-out", "/tmp/.rlmkit-cell-err"];

/// The session container's command line.
pub(crate) fn argv() -> Vec<String> {
    vec![
        "python3".to_owned(),
        "-c".to_owned(),
        REPL_SOURCE.to_owned(),
    ]
}

/// A fresh session id: the backend, this process, a counter and the time.
pub(crate) fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "docker-{}-{}-{nanos:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A persistent Python session in one Docker container.
///
/// Returned by [`DockerExecutor::open_session`](sandbox_core::Executor::open_session);
/// see [`Session`] for the contract.
#[derive(Debug)]
pub(crate) struct DockerSession {
    inner: Arc<Inner>,
    /// Dropping it stops the lifetime watchdog.
    watchdog: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// What the session's calls, its watchdog and its cleanup share.
#[derive(Debug)]
struct Inner {
    id: String,
    client: Client,
    /// The container's name (it stays known after the container is gone).
    name: String,
    lifetime: Duration,
    deadline: Instant,
    limits: Limits,
    isolation: IsolationReport,
    phase: Mutex<Phase>,
    /// The protocol stream: one request and its answer at a time.
    io: tokio::sync::Mutex<Io>,
    /// The container, until it is removed (once).
    container: Mutex<Option<Container>>,
    /// The last of what the server wrote to its own stderr.
    stderr: Arc<Mutex<Vec<u8>>>,
}

/// The session's state, with what ended it.
#[derive(Debug, Clone)]
enum Phase {
    Alive,
    Lost { cause: Cause, reason: String },
    Closed,
}

/// What ended a session that its owner did not close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The server's process ended by itself (crash, OOM kill, exit).
    Ended,
    /// A cell ignored its timeout and the container was killed.
    Backstop,
    /// The total lifetime ran out.
    Lifetime,
    /// The server broke the protocol, or a transfer stalled.
    Protocol,
    /// A call was cancelled mid-request.
    Abandoned,
}

/// Why an exchange with the server failed.
#[derive(Debug)]
enum Failure {
    /// The stream ended or broke: the container is gone.
    Ended,
    /// The server's answer made no sense.
    OutOfStep(String),
    /// No answer in time.
    Stalled,
}

/// Locks `mutex`, recovering the data if a panicking thread poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Both ends of the protocol stream.
struct Io {
    input: InputSink,
    reader: Reader,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("buffered", &self.reader.buffered())
            .field("ended", &self.reader.ended)
            .finish_non_exhaustive()
    }
}

impl Io {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.input
            .write_all(bytes)
            .await
            .map_err(|_| Failure::Ended)?;
        self.input.flush().await.map_err(|_| Failure::Ended)
    }
}

/// The server's answers as a byte stream, out of the attach stream's
/// stdout chunks; stderr chunks go to the diagnostics tail.
struct Reader {
    output: OutputStream,
    buffer: Vec<u8>,
    start: usize,
    ended: bool,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Reader {
    fn buffered(&self) -> usize {
        self.buffer.len() - self.start
    }

    fn absorb(&mut self, chunk: Chunk) {
        match chunk {
            Chunk::Stdout(bytes) => {
                if self.start == self.buffer.len() {
                    self.buffer.clear();
                    self.start = 0;
                } else if self.start >= CHUNK {
                    self.buffer.drain(..self.start);
                    self.start = 0;
                }
                self.buffer.extend_from_slice(&bytes);
            }
            Chunk::Stderr(bytes) => {
                let mut tail = lock(&self.stderr);
                tail.extend_from_slice(&bytes);
                let excess = tail.len().saturating_sub(STDERR_CAP);
                tail.drain(..excess);
            }
        }
    }

    /// Waits for the next chunk.
    async fn more(&mut self) -> Result<(), Failure> {
        if self.ended {
            return Err(Failure::Ended);
        }
        match self.output.next().await {
            Some(Ok(chunk)) => {
                self.absorb(chunk);
                Ok(())
            }
            Some(Err(_)) | None => {
                self.ended = true;
                Err(Failure::Ended)
            }
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let taken = self.buffer[self.start..self.start + n].to_vec();
        self.start += n;
        taken
    }

    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, Failure> {
        while self.buffered() < n {
            self.more().await?;
        }
        Ok(self.take(n))
    }

    /// Up to `max` bytes, as soon as any are there.
    async fn read_some(&mut self, max: usize) -> Result<Vec<u8>, Failure> {
        while self.buffered() == 0 {
            self.more().await?;
        }
        Ok(self.take(self.buffered().min(max)))
    }

    /// Takes in whatever arrived while no call was waiting; `false` once
    /// the stream has ended (the container is gone).
    fn poll_idle(&mut self) -> bool {
        while !self.ended {
            match self.output.next().now_or_never() {
                None => return true,
                Some(Some(Ok(chunk))) => self.absorb(chunk),
                Some(Some(Err(_)) | None) => self.ended = true,
            }
        }
        false
    }

    async fn read_header(&mut self) -> Result<Response, Failure> {
        let prefix = self.read_exact(4).await?;
        let prefix = [prefix[0], prefix[1], prefix[2], prefix[3]];
        let length =
            protocol::header_length(prefix).map_err(|e| Failure::OutOfStep(e.to_string()))?;
        let header = self.read_exact(length).await?;
        protocol::decode(&header).map_err(|e| Failure::OutOfStep(e.to_string()))
    }
}

/// Runs `step`, failing with [`Failure::Stalled`] past `limit`.
async fn within<T>(
    limit: Duration,
    step: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(limit, step)
        .await
        .unwrap_or(Err(Failure::Stalled))
}

/// Encodes `request`, refusing one whose header the server would not accept.
fn frame(request: &Request<'_>) -> Result<Vec<u8>, Error> {
    let frame = protocol::encode(request);
    if frame.len() - 4 > MAX_HEADER {
        return Err(Error::invalid_request(format!(
            "the request is {} bytes long, over the protocol's {} (a cell's source travels in the header); put large data into a file with put_file and read it from a cell",
            frame.len() - 4,
            MAX_HEADER
        )));
    }
    Ok(frame)
}

/// Checks a path given to `put_file` / `get_file`: relative to the working
/// directory, and never leaving it.
fn check_path(path: &str) -> Result<(), Error> {
    sandbox_core::check_relative_path("session file path", path)
}

/// The I/O error a refused `put` or `get` reports, from the server's
/// `"ExceptionName: message"`.
fn server_file_error(doing: String, error: Option<String>, limits: &Limits) -> Error {
    let message = error.unwrap_or_else(|| "the session server refused".to_owned());
    let kind = match message.split(':').next().unwrap_or_default() {
        "FileNotFoundError" => std::io::ErrorKind::NotFound,
        "PermissionError" => std::io::ErrorKind::PermissionDenied,
        "IsADirectoryError" => std::io::ErrorKind::IsADirectory,
        "NotADirectoryError" => std::io::ErrorKind::NotADirectory,
        "FileExistsError" => std::io::ErrorKind::AlreadyExists,
        _ => std::io::ErrorKind::Other,
    };
    let hint = if message.contains("File too large") || message.contains("No space left") {
        format!(
            " (the session's files live in its scratch space, {} in all and per file; raise the scratch limit, and the memory limit it counts against, in SessionOptions::limits)",
            format_bytes(limits.scratch_bytes)
        )
    } else {
        String::new()
    };
    Error::io(doing, std::io::Error::new(kind, format!("{message}{hint}")))
}

impl Inner {
    fn lifetime_reason(&self) -> String {
        format!(
            "its lifetime of {:?} ended and its container was killed",
            self.lifetime
        )
    }

    /// The error every call on a session that cannot run gets.
    fn lost_error(&self, reason: String) -> Error {
        Error::SessionLost {
            session: self.id.clone(),
            reason,
        }
    }

    /// Marks the session lost unless it already is lost or closed; returns
    /// the phase it had before.
    fn set_lost(&self, cause: Cause, reason: String) -> Phase {
        let mut phase = lock(&self.phase);
        let before = phase.clone();
        if matches!(*phase, Phase::Alive) {
            *phase = Phase::Lost { cause, reason };
        }
        before
    }

    fn set_closed(&self) {
        *lock(&self.phase) = Phase::Closed;
    }

    fn phase(&self) -> Phase {
        lock(&self.phase).clone()
    }

    /// The error for a call on a session that is no longer alive.
    fn not_alive(&self) -> Error {
        match self.phase() {
            Phase::Lost { reason, .. } => self.lost_error(reason),
            _ => self.lost_error("it was closed".to_owned()),
        }
    }

    /// Fails unless the session can take a request; a container found
    /// gone, or a lifetime found over, loses the session on the way.
    async fn check_alive(&self, io: &mut Io) -> Result<(), Error> {
        if !matches!(self.phase(), Phase::Alive) {
            return Err(self.not_alive());
        }
        if Instant::now() >= self.deadline {
            self.set_lost(Cause::Lifetime, self.lifetime_reason());
        } else if !io.reader.poll_idle() {
            let reason = self.describe_end().await;
            self.set_lost(Cause::Ended, reason);
        } else {
            return Ok(());
        }
        let _ = self.dismantle().await;
        Err(self.not_alive())
    }

    /// Sends SIGKILL to the container (it stays, to be inspected and removed).
    async fn kill(&self) {
        let _ = self.client.kill(&self.name).await;
    }

    /// Removes the container, once.
    async fn dismantle(&self) -> Result<(), Error> {
        let container = lock(&self.container).take();
        match container {
            Some(container) => container.remove().await,
            None => Ok(()),
        }
    }

    /// Removes the container in the background (for `Drop` and cancelled calls).
    fn dismantle_in_background(&self) {
        // The container's own `Drop` hands the removal to the cleanup thread.
        drop(lock(&self.container).take());
    }

    /// How the container ended: its status, exit code and signal as a
    /// one-shot result would say, and in words. The container must have
    /// stopped (or be about to).
    async fn end_of_container(&self) -> ((Status, Option<i32>, Option<i32>), String) {
        let waited = tokio::time::timeout(END_REPORT, self.client.wait(&self.name)).await;
        let state = match waited {
            Ok(Ok(_)) => container::settled_exit_state(&self.client, &self.name)
                .await
                .ok(),
            _ => None,
        };
        let Some(state) = state.filter(|s| !s.running) else {
            return (
                (Status::Killed, None, None),
                format!(
                    "its container ended{}",
                    self.stderr_tail("; the server's stderr: ")
                ),
            );
        };
        let ended = natural_end(state.exit_code, state.oom_killed);
        let what = match ended {
            (Status::OomKilled, ..) => format!(
                "its process was killed by the kernel at the memory limit of {}",
                format_bytes(self.limits.memory_bytes)
            ),
            (_, _, Some(signal)) => format!("its process was killed by signal {signal}"),
            (_, Some(code), _) => format!("its process exited with code {code}"),
            _ => "its process ended".to_owned(),
        };
        (
            ended,
            format!("{what}{}", self.stderr_tail("; the server's stderr: ")),
        )
    }

    async fn describe_end(&self) -> String {
        self.end_of_container().await.1
    }

    /// Ends the session at its lifetime: kills the container, lets a
    /// running call see that, then removes it.
    async fn expire(&self) {
        self.set_lost(Cause::Lifetime, self.lifetime_reason());
        self.kill().await;
        // A running call now fails fast and reports the cell.
        let _io = self.io.lock().await;
        let _ = self.dismantle().await;
    }

    /// The end of what the server wrote to its own stderr, after `prefix`, or nothing.
    fn stderr_tail(&self, prefix: &str) -> String {
        let tail = lock(&self.stderr).clone();
        let text = String::from_utf8_lossy(&tail);
        let text = text.trim();
        if text.is_empty() {
            return String::new();
        }
        let start = text
            .char_indices()
            .rev()
            .nth(400)
            .map_or(0, |(index, _)| index);
        format!("{prefix}{}", &text[start..])
    }

    /// What a cell wrote before it had to be killed, read (best effort,
    /// at most `cap` bytes of each stream) from the files the server
    /// captures it in, while the container still runs.
    async fn recover_output(&self, cap: u64) -> [Vec<u8>; 2] {
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        let mut recovered = [Vec::new(), Vec::new()];
        for (slot, path) in recovered.iter_mut().zip(CELL_OUTPUT) {
            let limit = cap.to_string();
            // `head` reads no more than the cap; a planted FIFO or link only
            // fools the recovery of the program's own output.
            let argv = ["timeout", "1", "head", "-c", &limit, path];
            if let Ok(bytes) = self
                .client
                .exec_output(&self.name, &argv, USER, cap, RECOVERY)
                .await
            {
                *slot = bytes;
            }
        }
        recovered
    }
}

/// Marks the session lost and removes its container if a call is dropped
/// before its answer arrives: the protocol is then out of step.
struct Armed {
    inner: Option<Arc<Inner>>,
}

impl Armed {
    fn new(inner: &Arc<Inner>) -> Armed {
        Armed {
            inner: Some(inner.clone()),
        }
    }

    fn disarm(mut self) {
        self.inner = None;
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        inner.set_lost(
            Cause::Abandoned,
            "a call was cancelled before the session server answered, so the protocol is out of step; its container was removed".to_owned(),
        );
        inner.dismantle_in_background();
    }
}

/// Where `get` sends a file's bytes.
enum Sink<'a> {
    Memory(Vec<u8>),
    File(&'a Path, Option<tokio::fs::File>),
}

/// Where `put` takes a file's bytes from.
enum PutSource<'a> {
    Memory(&'a [u8]),
    File(tokio::fs::File),
}

impl DockerSession {
    /// Creates, attaches and starts the session's container from `body`
    /// and waits for the server's greeting.
    pub(crate) async fn open(
        client: &Client,
        body: bollard::models::ContainerCreateBody,
        id: String,
        limits: Limits,
        lifetime: Duration,
        isolation: IsolationReport,
    ) -> Result<DockerSession, Error> {
        let deadline = Instant::now() + lifetime;
        let container = Container::create(client, container::unique_name(), body, None).await?;
        let name = container.name().to_owned();
        let attached = client.attach(&name, true).await?;
        let input = attached.input.ok_or_else(|| {
            Error::backend(
                BACKEND,
                "attaching to the session's container",
                "the daemon gave no stdin",
            )
        })?;
        client.start(&name).await?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let inner = Arc::new(Inner {
            id,
            client: client.clone(),
            name,
            lifetime,
            deadline,
            limits,
            isolation,
            phase: Mutex::new(Phase::Alive),
            io: tokio::sync::Mutex::new(Io {
                input,
                reader: Reader {
                    output: attached.output,
                    buffer: Vec::new(),
                    start: 0,
                    ended: false,
                    stderr: stderr.clone(),
                },
            }),
            container: Mutex::new(Some(container)),
            stderr,
        });

        let greeting = {
            let mut io = inner.io.lock().await;
            tokio::time::timeout(STARTUP, io.reader.read_header()).await
        };
        let why = match greeting {
            Ok(Ok(response)) if response.ok && response.ready => None,
            Ok(Ok(response)) => Some(format!(
                "it greeted with {:?}",
                response.error.unwrap_or_default()
            )),
            Ok(Err(Failure::Ended)) => Some("it ended at once".to_owned()),
            Ok(Err(Failure::OutOfStep(what))) => Some(what),
            Ok(Err(Failure::Stalled)) | Err(_) => {
                Some(format!("it did not greet within {STARTUP:?}"))
            }
        };
        if let Some(why) = why {
            inner.set_closed();
            let _ = inner.dismantle().await;
            return Err(Error::Backend {
                backend: BACKEND.to_owned(),
                message: format!(
                    "the session server did not start ({why}){}",
                    inner.stderr_tail("; its stderr: ")
                ),
                source: None,
            });
        }

        // The watchdog runs on the crate's background thread: the lifetime
        // holds even if the runtime that opened the session goes away.
        let (watchdog, stopped) = tokio::sync::oneshot::channel::<()>();
        let watched = inner.clone();
        container::in_background(async move {
            let deadline = tokio::time::Instant::from_std(watched.deadline);
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => watched.expire().await,
                _ = stopped => {}
            }
        });
        Ok(DockerSession {
            inner,
            watchdog: Mutex::new(Some(watchdog)),
        })
    }

    /// Stops the lifetime watchdog.
    fn stop_watchdog(&self) {
        drop(lock(&self.watchdog).take());
    }

    /// The cell's timeout and output cap over the session's limits.
    fn cell_limits(&self, cell: &Cell) -> Result<Limits, Error> {
        let mut builder = LimitsBuilder::default();
        if let Some(timeout) = cell.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(bytes) = cell.output_bytes {
            builder = builder.output_bytes(bytes);
        }
        builder.build_over(&self.inner.limits)
    }

    /// The result of a cell whose container died, or had to be killed,
    /// before it answered; the session is lost.
    async fn lost_cell(
        &self,
        failure: Failure,
        started: Instant,
        timeout: Duration,
        cap: u64,
    ) -> ExecutionResult {
        let inner = &self.inner;
        let (cause, ended, reason) = match failure {
            Failure::Stalled => {
                let [stdout, stderr] = inner.recover_output(cap).await;
                inner.kill().await;
                let reason = format!(
                    "a cell ignored its timeout of {timeout:?}, so its container was killed {CELL_GRACE:?} later"
                );
                (
                    Cause::Backstop,
                    (Status::TimedOut, None, Some(9)),
                    (reason, stdout, stderr),
                )
            }
            Failure::OutOfStep(what) => {
                inner.kill().await;
                let reason = format!(
                    "the session server broke the protocol ({what}); its container was killed"
                );
                (
                    Cause::Protocol,
                    (Status::Killed, None, Some(9)),
                    (reason, Vec::new(), Vec::new()),
                )
            }
            Failure::Ended => {
                let (ended, reason) = inner.end_of_container().await;
                (Cause::Ended, ended, (reason, Vec::new(), Vec::new()))
            }
        };
        let (reason, stdout, mut stderr) = reason;
        let before = inner.set_lost(cause, reason);
        let (status, exit_code, signal) = match before {
            Phase::Lost {
                cause: Cause::Lifetime,
                ..
            } => (Status::TimedOut, None, Some(9)),
            Phase::Lost { .. } | Phase::Closed => (Status::Killed, None, Some(9)),
            Phase::Alive => ended,
        };
        let _ = inner.dismantle().await;
        let reason = match inner.phase() {
            Phase::Lost { reason, .. } => reason,
            _ => "the session was closed while the cell ran".to_owned(),
        };
        if !stderr.is_empty() && !stderr.ends_with(b"\n") {
            stderr.push(b'\n');
        }
        stderr.extend_from_slice(
            format!("rlmkit-sandbox: the session is lost: {reason}\n").as_bytes(),
        );
        let mut result = ExecutionResult::new(BACKEND, status, inner.isolation.clone());
        result.exit_code = exit_code;
        result.signal = signal;
        result.stdout = stdout;
        result.stderr = stderr;
        result.duration = started.elapsed();
        result
    }

    /// Gives up on the session after a failed transfer: the container is
    /// removed; returns the error to report.
    async fn lost_transfer(&self, failure: Failure, doing: &str) -> Error {
        let (cause, reason) = match failure {
            Failure::Ended => (Cause::Ended, self.inner.describe_end().await),
            Failure::Stalled => (
                Cause::Protocol,
                format!(
                    "the session server made no progress for {TRANSFER_STALL:?} while {doing}; its container was killed"
                ),
            ),
            Failure::OutOfStep(what) => (
                Cause::Protocol,
                format!(
                    "the session server broke the protocol while {doing} ({what}); its container was killed"
                ),
            ),
        };
        self.inner.set_lost(cause, reason);
        let _ = self.inner.dismantle().await;
        self.inner.not_alive()
    }

    /// Sends a `put` of `size` bytes from `source` and reads the answer.
    async fn put(&self, path: &str, size: u64, source: PutSource<'_>) -> Result<u64, Error> {
        check_path(path)?;
        let scratch = self.inner.limits.scratch_bytes;
        if size > scratch {
            // The scratch tmpfs (and RLIMIT_FSIZE) would stop the server's
            // write part way: refuse up front.
            return Err(Error::invalid_request(format!(
                "{path:?} would be {size} bytes, over the session's scratch limit of {} (its files live in its scratch space, which counts against its memory limit); raise both in SessionOptions::limits",
                format_bytes(scratch)
            )));
        }
        let request = frame(&Request::Put { path, size })?;
        let mut io = self.inner.io.lock().await;
        self.inner.check_alive(&mut io).await?;
        let armed = Armed::new(&self.inner);
        let doing = format!("writing {path:?}");
        let mut local_error = None;
        let exchange = async {
            let io = &mut *io;
            within(TRANSFER_STALL, io.send(&request)).await?;
            match source {
                PutSource::Memory(bytes) => {
                    for chunk in bytes.chunks(CHUNK) {
                        within(TRANSFER_STALL, io.send(chunk)).await?;
                    }
                }
                PutSource::File(mut file) => {
                    let mut buffer = vec![0u8; CHUNK];
                    let mut left = size;
                    while left > 0 {
                        let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
                        let read = if local_error.is_some() {
                            // The local file failed: keep the protocol in step with zeros.
                            buffer[..want].fill(0);
                            want
                        } else {
                            match file.read(&mut buffer[..want]).await {
                                Ok(0) => {
                                    local_error = Some(std::io::Error::new(
                                        std::io::ErrorKind::UnexpectedEof,
                                        "the local file shrank while it was sent",
                                    ));
                                    continue;
                                }
                                Ok(n) => n,
                                Err(e) => {
                                    local_error = Some(e);
                                    continue;
                                }
                            }
                        };
                        within(TRANSFER_STALL, io.send(&buffer[..read])).await?;
                        left -= read as u64;
                    }
                }
            }
            within(TRANSFER_STALL, io.reader.read_header()).await
        };
        let response = match exchange.await {
            Ok(response) => response,
            Err(failure) => {
                armed.disarm();
                drop(io);
                return Err(self.lost_transfer(failure, &doing).await);
            }
        };
        armed.disarm();
        if let Some(error) = local_error {
            return Err(Error::io(
                format!("reading the local file for {path:?}; the session's copy is incomplete"),
                error,
            ));
        }
        if !response.ok {
            return Err(server_file_error(
                format!("{doing} in session {}", self.inner.id),
                response.error,
                &self.inner.limits,
            ));
        }
        Ok(size)
    }

    /// Sends a `get` and streams the file into `sink`; returns the size and the sink.
    async fn get<'a>(&self, path: &str, mut sink: Sink<'a>) -> Result<(u64, Sink<'a>), Error> {
        check_path(path)?;
        let request = frame(&Request::Get { path })?;
        let mut io = self.inner.io.lock().await;
        self.inner.check_alive(&mut io).await?;
        let armed = Armed::new(&self.inner);
        let doing = format!("reading {path:?}");
        let header = async {
            within(TRANSFER_STALL, io.send(&request)).await?;
            within(TRANSFER_STALL, io.reader.read_header()).await
        };
        let response = match header.await {
            Ok(response) => response,
            Err(failure) => {
                armed.disarm();
                drop(io);
                return Err(self.lost_transfer(failure, &doing).await);
            }
        };
        if !response.ok {
            armed.disarm();
            return Err(server_file_error(
                format!("{doing} in session {}", self.inner.id),
                response.error,
                &self.inner.limits,
            ));
        }
        let size = response.size;
        // A file of the session lies in its scratch space (or is a link to
        // the image's files): a larger size is the protocol out of step.
        let plausible = self
            .inner
            .limits
            .scratch_bytes
            .saturating_add(self.inner.limits.memory_bytes);
        if size > plausible {
            armed.disarm();
            drop(io);
            let what = format!("it announced a {size}-byte file");
            return Err(self.lost_transfer(Failure::OutOfStep(what), &doing).await);
        }
        let mut local_error: Option<std::io::Error> = None;
        match &mut sink {
            Sink::File(local, file) => match tokio::fs::File::create(local).await {
                Ok(created) => *file = Some(created),
                Err(e) => local_error = Some(e),
            },
            // Room for the whole file at once, so it is never copied while it grows.
            Sink::Memory(bytes) => {
                let room = usize::try_from(size)
                    .map_err(|_| std::io::ErrorKind::OutOfMemory.into())
                    .and_then(|size| {
                        bytes
                            .try_reserve_exact(size)
                            .map_err(|e| std::io::Error::new(std::io::ErrorKind::OutOfMemory, e))
                    });
                if let Err(e) = room {
                    local_error = Some(e);
                }
            }
        }
        let body = async {
            let mut left = size;
            while left > 0 {
                let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
                let part = within(TRANSFER_STALL, io.reader.read_some(want)).await?;
                left -= part.len() as u64;
                if local_error.is_some() {
                    // Drain the rest to keep the protocol in step.
                    continue;
                }
                match &mut sink {
                    Sink::Memory(bytes) => bytes.extend_from_slice(&part),
                    Sink::File(_, Some(file)) => {
                        if let Err(e) = file.write_all(&part).await {
                            local_error = Some(e);
                        }
                    }
                    Sink::File(_, None) => {}
                }
            }
            Ok::<(), Failure>(())
        };
        if let Err(failure) = body.await {
            armed.disarm();
            drop(io);
            return Err(self.lost_transfer(failure, &doing).await);
        }
        armed.disarm();
        drop(io);
        if let Sink::File(_, Some(file)) = &mut sink {
            if let Err(e) = file.flush().await {
                local_error.get_or_insert(e);
            }
        }
        if let Some(error) = local_error {
            let local = match &sink {
                Sink::File(local, _) => local.display().to_string(),
                Sink::Memory(_) => "memory".to_owned(),
            };
            return Err(Error::io(
                format!("writing {path:?} of session {} to {local}", self.inner.id),
                error,
            ));
        }
        Ok((size, sink))
    }
}

#[async_trait]
impl Session for DockerSession {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn state(&self) -> SessionState {
        match self.inner.phase() {
            Phase::Closed => SessionState::Closed,
            Phase::Lost { reason, .. } => SessionState::Lost { reason },
            Phase::Alive if Instant::now() >= self.inner.deadline => SessionState::Lost {
                reason: self.inner.lifetime_reason(),
            },
            Phase::Alive => {
                // Between calls, a container that died shows as an ended stream.
                let ended = match self.inner.io.try_lock() {
                    Ok(mut io) => !io.reader.poll_idle(),
                    Err(_) => false,
                };
                if ended {
                    SessionState::Lost {
                        reason: "its container ended; the next call tells how".to_owned(),
                    }
                } else {
                    SessionState::Alive
                }
            }
        }
    }

    async fn run(&self, cell: Cell) -> Result<ExecutionResult, Error> {
        let limits = self.cell_limits(&cell)?;
        let mut io = self.inner.io.lock().await;
        self.inner.check_alive(&mut io).await?;
        // Never past the lifetime: the server interrupts the cell by then.
        let left = self
            .inner
            .deadline
            .saturating_duration_since(Instant::now());
        let timeout = limits.timeout.min(left).max(Duration::from_millis(1));
        let cap = limits.output_bytes;
        let request = frame(&Request::Run {
            code: &cell.code,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            output_bytes: cap,
        })?;
        let armed = Armed::new(&self.inner);
        let started = Instant::now();
        let exchange = async {
            let io = &mut *io;
            io.send(&request).await?;
            let response = io.reader.read_header().await?;
            if !response.ok || response.stdout_size > cap || response.stderr_size > cap {
                return Err(Failure::OutOfStep(format!(
                    "an unexpected answer to a cell: ok {}, {} + {} bytes of output over a cap of {cap}",
                    response.ok, response.stdout_size, response.stderr_size
                )));
            }
            let stdout = io
                .reader
                .read_exact(usize::try_from(response.stdout_size).unwrap_or(usize::MAX))
                .await?;
            let stderr = io
                .reader
                .read_exact(usize::try_from(response.stderr_size).unwrap_or(usize::MAX))
                .await?;
            Ok((response, stdout, stderr))
        };
        let outcome = within(timeout + CELL_GRACE, exchange).await;
        let (response, stdout, stderr) = match outcome {
            Ok(answer) => answer,
            Err(failure) => {
                armed.disarm();
                drop(io);
                return Ok(self.lost_cell(failure, started, timeout, cap).await);
            }
        };
        armed.disarm();
        drop(io);
        Ok(response.cell_result(
            BACKEND,
            self.inner.isolation.clone(),
            stdout,
            stderr,
            started.elapsed(),
        ))
    }

    async fn put_file(&self, path: &str, contents: Vec<u8>) -> Result<u64, Error> {
        let size = contents.len() as u64;
        self.put(path, size, PutSource::Memory(&contents)).await
    }

    async fn put_file_from(&self, path: &str, local: &Path) -> Result<u64, Error> {
        check_path(path)?;
        let file = tokio::fs::File::open(local)
            .await
            .map_err(|e| Error::io(format!("opening {}", local.display()), e))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| Error::io(format!("reading the size of {}", local.display()), e))?
            .len();
        self.put(path, size, PutSource::File(file)).await
    }

    async fn get_file(&self, path: &str) -> Result<Vec<u8>, Error> {
        match self.get(path, Sink::Memory(Vec::new())).await? {
            (_, Sink::Memory(bytes)) => Ok(bytes),
            (_, Sink::File(..)) => Ok(Vec::new()),
        }
    }

    async fn get_file_to(&self, path: &str, local: &Path) -> Result<u64, Error> {
        let (size, _) = self.get(path, Sink::File(local, None)).await?;
        Ok(size)
    }

    async fn close(&self) -> Result<(), Error> {
        let io = match tokio::time::timeout(CLOSE_WAIT, self.inner.io.lock()).await {
            Ok(io) => io,
            Err(_) => {
                // A cell runs in another task: closing stops it.
                self.inner.set_closed();
                self.inner.kill().await;
                self.inner.io.lock().await
            }
        };
        let mut io = io;
        let was_alive = matches!(self.inner.phase(), Phase::Alive) && io.reader.poll_idle();
        self.inner.set_closed();
        self.stop_watchdog();
        if was_alive {
            // Let the server end by itself; the removal below stops whatever is left.
            let goodbye = async {
                io.send(&protocol::encode(&Request::Close)).await?;
                while io.reader.more().await.is_ok() {}
                Ok::<(), Failure>(())
            };
            let _ = tokio::time::timeout(CLOSE_WAIT, goodbye).await;
        }
        drop(io);
        self.inner.dismantle().await
    }
}

impl Drop for DockerSession {
    fn drop(&mut self) {
        self.stop_watchdog();
        if matches!(self.inner.phase(), Phase::Alive) {
            self.inner.set_closed();
        }
        self.inner.dismantle_in_background();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SCRATCH_DIR;

    #[test]
    fn paths_stay_in_the_working_directory() {
        for good in ["a.txt", "data/in.txt", "./x"] {
            assert!(check_path(good).is_ok(), "{good}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", ".", "a\0b"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_are_unique_and_name_the_backend() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert!(a.starts_with("docker-"));
    }

    #[test]
    fn the_server_runs_from_its_source() {
        let argv = argv();
        assert_eq!(argv[..2], ["python3", "-c"]);
        assert!(argv[2].contains("def _serve"));
        assert_eq!(SCRATCH_DIR, "/tmp");
        assert!(CELL_OUTPUT.iter().all(|p| p.starts_with(SCRATCH_DIR)));
    }
}
