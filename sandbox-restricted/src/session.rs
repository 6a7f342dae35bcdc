//! [`RestrictedSession`]: one hardened Python process per session, running
//! the shared session server ([`REPL_SOURCE`](sandbox_core::session::REPL_SOURCE))
//! with its stdin and stdout as the protocol stream.
//!
//! The process is isolated exactly as a one-shot execution (it is prepared by
//! the same code) and held for the session's life. Cells run one at a time:
//! the protocol stream sits behind an async mutex. The server interrupts a
//! cell at its timeout; the host waits a grace period more, then kills the
//! whole tree and the session is lost. Whoever sees the process end (a cell,
//! a file transfer, the lifetime watchdog, `close`, `Drop`) kills what is
//! left, reaps it and removes the cgroup, the workspace and the uid lease,
//! exactly once.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::Notify;

use sandbox_core::session::protocol::{self, MAX_HEADER, Request, Response};
use sandbox_core::units::format_bytes;
use sandbox_core::{
    Cell, Error, ExecutionResult, IsolationReport, Limits, LimitsBuilder, Session, SessionState,
    Status, async_trait,
};

use crate::executor::{BACKEND, Started, missing_pipe, natural_status};
use crate::identity::Lease;
use crate::output::{SharedCapture, read_capped, snapshot};
use crate::process::{AbortOnDrop, ProcessTree};
use crate::sys::{self, Reaped};
use crate::workspace::Workspace;

/// How long past a cell's timeout the host waits for the server's answer
/// before it kills the process (the server interrupts the cell itself).
const CELL_GRACE: Duration = Duration::from_secs(2);

/// How long the server may take to start and greet.
const STARTUP: Duration = Duration::from_secs(20);

/// How long a file transfer may go without progress before the session is
/// given up as hung.
const TRANSFER_STALL: Duration = Duration::from_secs(30);

/// How long `close` waits for a running cell, and for the server to exit.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// Files move in chunks of this size; neither side holds more of a file at once.
const CHUNK: usize = 1 << 20;

/// How much of the server's own stderr (outside cells) is kept for diagnostics.
const STDERR_CAP: u64 = 64 * 1024;

/// Where the server writes a cell's output while it runs (see `_run` in
/// `repl.py`): read back from the host when the process dies mid-cell.
const CELL_OUTPUT: [&str; 2] = [".rlmkit-cell-out", ".rlmkit-cell-err"];

/// A persistent Python session in one hardened process.
///
/// Returned by [`RestrictedExecutor::open_session`](sandbox_core::Executor::open_session);
/// see [`Session`] for the contract.
///
/// ```no_run
/// use sandbox_core::{Executor, SessionOptions, SessionState};
/// use sandbox_restricted::RestrictedExecutor;
///
/// # async fn demo() -> Result<(), sandbox_core::Error> {
/// let executor = RestrictedExecutor::new()?;
/// let session = executor.open_session(SessionOptions::default()).await?;
/// session.run("x = 41".into()).await?;
/// assert_eq!(session.run("x += 1\nprint(x)".into()).await?.stdout_text(), "42\n");
/// session.close().await?;
/// assert_eq!(session.state(), SessionState::Closed);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub(crate) struct RestrictedSession {
    inner: Arc<Inner>,
    watchdog: AbortOnDrop,
    _stderr_reader: AbortOnDrop,
}

/// What the session's calls, its watchdog and its cleanup share.
#[derive(Debug)]
struct Inner {
    id: String,
    pid: i32,
    lifetime: Duration,
    deadline: Instant,
    limits: Limits,
    isolation: IsolationReport,
    /// The server's scratch directory, where a cell's output lies while it runs.
    tmp_dir: PathBuf,
    phase: Mutex<Phase>,
    /// The protocol stream: one request and its answer at a time.
    io: tokio::sync::Mutex<Stream>,
    /// What the process holds, until it is dismantled (once).
    held: Mutex<Option<Held>>,
    /// How the process ended, once reaped (only ever reaped once).
    exit: Mutex<Option<Reaped>>,
    /// The server's own stderr (outside cells), capped.
    stderr: SharedCapture,
}

/// The two ends of the protocol stream.
#[derive(Debug)]
struct Stream {
    to_server: ChildStdin,
    from_server: BufReader<ChildStdout>,
}

/// What one session's process holds while it lives.
#[derive(Debug)]
struct Held {
    tree: ProcessTree,
    workspace: Workspace,
    lease: Option<Lease>,
}

/// The session's state, with what ended it.
#[derive(Debug, Clone)]
enum Phase {
    Alive,
    Lost { cause: Cause, reason: String },
    Closed,
}

/// Who or what ended a session that was not closed by its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The process ended by itself (crash, OOM kill, exit).
    Ended,
    /// A cell ignored its timeout and was killed.
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
    /// The stream ended or broke: the process is gone.
    Ended,
    /// The server's answer made no sense.
    OutOfStep(String),
    /// No answer in time.
    Stalled,
}

impl Failure {
    fn from_io(_: std::io::Error) -> Failure {
        Failure::Ended
    }
}

/// Locks `mutex`, recovering the data if a panicking thread poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh session id.
fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "restricted-{}-{}-{nanos:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl RestrictedSession {
    /// Takes over a started session server and waits for its greeting.
    pub(crate) async fn start(
        started: Started,
        lifetime: Duration,
    ) -> Result<RestrictedSession, Error> {
        let Started {
            mut child,
            pid,
            tree,
            workspace,
            lease,
            limits,
            isolation,
        } = started;
        let tmp_dir = workspace.tmp_dir();
        let held = Held {
            tree,
            workspace,
            lease,
        };
        let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        drop(child);
        let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
            dismantle_in_background(pid, held, false);
            return Err(missing_pipe());
        };
        let streams = (
            ChildStdin::from_std(stdin),
            ChildStdout::from_std(stdout),
            tokio::process::ChildStderr::from_std(stderr),
        );
        let (to_server, from_server, stderr) = match streams {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                dismantle_in_background(pid, held, false);
                return Err(Error::io("watching the session's pipes", e));
            }
        };
        let stderr_capture = SharedCapture::default();
        let stderr_reader = AbortOnDrop(tokio::spawn(read_capped(
            stderr,
            STDERR_CAP,
            stderr_capture.clone(),
            Arc::new(Notify::new()),
        )));
        let inner = Arc::new(Inner {
            id: new_id(),
            pid,
            lifetime,
            deadline: Instant::now() + lifetime,
            limits,
            isolation,
            tmp_dir,
            phase: Mutex::new(Phase::Alive),
            io: tokio::sync::Mutex::new(Stream {
                to_server,
                from_server: BufReader::with_capacity(64 * 1024, from_server),
            }),
            held: Mutex::new(Some(held)),
            exit: Mutex::new(None),
            stderr: stderr_capture,
        });

        let greeting = {
            let mut io = inner.io.lock().await;
            tokio::time::timeout(STARTUP, read_header(&mut io.from_server)).await
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
            let cleanup = inner.clone();
            let _ = tokio::task::spawn_blocking(move || cleanup.dismantle()).await;
            // The server's stderr says why; give its reader a moment to finish.
            let _ = tokio::time::timeout(Duration::from_secs(1), stderr_reader.join()).await;
            return Err(Error::Backend {
                backend: BACKEND.to_owned(),
                message: format!(
                    "the session server did not start ({why}){}",
                    inner.stderr_tail(": ", 2000)
                ),
                source: None,
            });
        }

        let watched = inner.clone();
        let watchdog = AbortOnDrop(tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(watched.deadline)).await;
            watched.expire().await;
        }));
        Ok(RestrictedSession {
            inner,
            watchdog,
            _stderr_reader: stderr_reader,
        })
    }
}

impl Inner {
    fn lifetime_reason(&self) -> String {
        format!(
            "its lifetime of {:?} ended and its process was killed",
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

    /// Whether the process has ended (without reaping it).
    fn has_ended(&self) -> bool {
        let exit = match self.exit.try_lock() {
            Ok(exit) => exit,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // Someone is reaping it right now.
            Err(TryLockError::WouldBlock) => return true,
        };
        if exit.is_some() {
            return true;
        }
        // Not reaped yet, so the pid is still our child's: peek without reaping.
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        matches!(
            waitid(Id::Pid(Pid::from_raw(self.pid)), flags),
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..))
        )
    }

    /// Fails unless the session can take a request; a process found dead is
    /// dismantled and the session marked lost on the way.
    async fn check_alive(self: &Arc<Self>) -> Result<(), Error> {
        match self.phase() {
            Phase::Alive => {}
            Phase::Lost { reason, .. } => return Err(self.lost_error(reason)),
            Phase::Closed => return Err(self.lost_error("it was closed".to_owned())),
        }
        if Instant::now() >= self.deadline {
            self.set_lost(Cause::Lifetime, self.lifetime_reason());
        } else if self.has_ended() {
            let (reaped, oom) = self.clone().kill_and_reap().await;
            self.set_lost(Cause::Ended, self.describe_end(reaped.as_ref(), oom));
        } else {
            return Ok(());
        }
        let _ = self.clone().dismantle_async().await;
        match self.phase() {
            Phase::Lost { reason, .. } => Err(self.lost_error(reason)),
            _ => Err(self.lost_error("it was closed".to_owned())),
        }
    }

    /// Kills every process of the session (blocking until the cgroup is empty).
    fn kill(&self) {
        if lock(&self.exit).is_some() {
            // Reaped: the group's number may be someone else's now.
            return;
        }
        if let Some(held) = lock(&self.held).as_ref() {
            held.tree.kill_blocking();
        }
    }

    /// Reaps the killed process once, returning how it ended.
    fn reap(&self) -> Option<Reaped> {
        let mut exit = lock(&self.exit);
        if exit.is_none() {
            *exit = sys::wait_for_child(self.pid).ok();
        }
        *exit
    }

    /// Kills everything, reaps the process and tells how it ended and
    /// whether the OOM killer struck; off the runtime.
    async fn kill_and_reap(self: Arc<Self>) -> (Option<Reaped>, bool) {
        tokio::task::spawn_blocking(move || {
            self.kill();
            let reaped = self.reap();
            let oom = lock(&self.held)
                .as_ref()
                .is_some_and(|held| held.tree.oom_killed());
            (reaped, oom)
        })
        .await
        .unwrap_or((None, false))
    }

    /// Kills, reaps and removes everything the process held, once; a second
    /// caller waits until the first is done. Blocking.
    fn dismantle(&self) -> Result<(), Error> {
        let mut held = lock(&self.held);
        let Some(taken) = held.take() else {
            return Ok(());
        };
        taken.tree.kill_blocking();
        self.reap();
        release(taken)
    }

    async fn dismantle_async(self: Arc<Self>) -> Result<(), Error> {
        tokio::task::spawn_blocking(move || self.dismantle())
            .await
            .map_err(|e| Error::backend(BACKEND, "the session's cleanup task failed", e))?
    }

    /// Ends the session at its lifetime: kills the process, lets a running
    /// call see that, then removes everything.
    async fn expire(self: Arc<Self>) {
        self.set_lost(Cause::Lifetime, self.lifetime_reason());
        let killer = self.clone();
        let _ = tokio::task::spawn_blocking(move || killer.kill()).await;
        // A running call now fails fast; it recovers the cell's output first.
        let _io = self.io.lock().await;
        let _ = self.clone().dismantle_async().await;
    }

    /// Why the process ended, in words.
    fn describe_end(&self, reaped: Option<&Reaped>, oom: bool) -> String {
        let what = if oom {
            format!(
                "its process was killed by the kernel at the memory limit of {}",
                format_bytes(self.limits.memory_bytes)
            )
        } else {
            match (
                reaped.and_then(Reaped::signal),
                reaped.and_then(Reaped::exit_code),
            ) {
                (Some(libc::SIGXCPU), _) => {
                    "its process used up its CPU-time allowance and was killed".to_owned()
                }
                (Some(signal), _) => format!("its process was killed by signal {signal}"),
                (None, Some(code)) => format!("its process exited with code {code}"),
                (None, None) => "its process ended".to_owned(),
            }
        };
        format!("{what}{}", self.stderr_tail("; the server's stderr: ", 400))
    }

    /// The last `chars` characters the server wrote to its own stderr, after
    /// `prefix`, or nothing.
    fn stderr_tail(&self, prefix: &str, chars: usize) -> String {
        let captured = snapshot(&self.stderr);
        let text = String::from_utf8_lossy(&captured.bytes);
        let text = text.trim();
        if text.is_empty() {
            return String::new();
        }
        let start = text
            .char_indices()
            .rev()
            .nth(chars.saturating_sub(1))
            .map_or(0, |(index, _)| index);
        format!("{prefix}{}", &text[start..])
    }

    /// What a cell wrote before its process died, from the files the server
    /// captures it in; at most `cap` bytes of each, and never through a link.
    fn recover_output(&self, cap: u64) -> [(Vec<u8>, u64); 2] {
        CELL_OUTPUT.map(|name| read_planted(&self.tmp_dir.join(name), cap))
    }
}

/// Reads at most `cap` bytes of a file the sandboxed code could have
/// replaced: only a regular file with one link, opened without following a
/// symlink or blocking on a FIFO. Returns the bytes and how many were left.
fn read_planted(path: &Path, cap: u64) -> (Vec<u8>, u64) {
    let open = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let Ok(file) = open else {
        return (Vec::new(), 0);
    };
    let Ok(meta) = file.metadata() else {
        return (Vec::new(), 0);
    };
    if !meta.is_file() || meta.nlink() != 1 {
        return (Vec::new(), 0);
    }
    let mut kept = Vec::new();
    if file.take(cap).read_to_end(&mut kept).is_err() {
        return (Vec::new(), 0);
    }
    let dropped = meta.len().saturating_sub(kept.len() as u64);
    (kept, dropped)
}

/// Removes the cgroup and the workspace and frees the uid, once every
/// process is dead and reaped.
fn release(held: Held) -> Result<(), Error> {
    let Held {
        tree,
        workspace,
        lease,
    } = held;
    tree.finish_blocking();
    let removed = workspace.remove();
    drop(lease);
    removed
}

/// Kills, reaps and releases on a thread of its own (for `Drop` and for
/// failures before the session exists).
fn dismantle_in_background(pid: i32, held: Held, reaped: bool) {
    let work = move || {
        held.tree.kill_blocking();
        if !reaped {
            let _ = sys::wait_for_child(pid);
        }
        let _ = release(held);
    };
    if std::thread::Builder::new()
        .name("rlmkit-session-cleanup".to_owned())
        .spawn(work)
        .is_err()
    {
        // No thread to be had: the tree's and the workspace's own drops
        // still kill the group, remove the cgroup and remove the files.
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Reached with something held only when the session never finished
        // starting (its future was dropped); sessions clean up in their own drop.
        let held = match self.held.get_mut() {
            Ok(held) => held.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(held) = held {
            let reaped = lock(&self.exit).is_some();
            dismantle_in_background(self.pid, held, reaped);
        }
    }
}

/// Marks the session lost and dismantles it if a call is dropped before its
/// answer arrives: the protocol is then out of step.
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
            "a call was cancelled before the session server answered, so the protocol is out of step; its process was killed".to_owned(),
        );
        let spawned = std::thread::Builder::new()
            .name("rlmkit-session-cleanup".to_owned())
            .spawn(move || {
                let _ = inner.dismantle();
            });
        // Without a thread, the session's own drop cleans up.
        drop(spawned);
    }
}

/// Reads one response header.
async fn read_header<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Response, Failure> {
    let mut prefix = [0u8; 4];
    reader
        .read_exact(&mut prefix)
        .await
        .map_err(Failure::from_io)?;
    let length = protocol::header_length(prefix).map_err(|e| Failure::OutOfStep(e.to_string()))?;
    let mut header = vec![0u8; length];
    reader
        .read_exact(&mut header)
        .await
        .map_err(Failure::from_io)?;
    protocol::decode(&header).map_err(|e| Failure::OutOfStep(e.to_string()))
}

/// Reads exactly `size` bytes (announced by the server, at most the cap).
async fn read_payload<R: AsyncRead + Unpin>(reader: &mut R, size: u64) -> Result<Vec<u8>, Failure> {
    let size =
        usize::try_from(size).map_err(|_| Failure::OutOfStep("a huge payload".to_owned()))?;
    let mut bytes = vec![0u8; size];
    reader
        .read_exact(&mut bytes)
        .await
        .map_err(Failure::from_io)?;
    Ok(bytes)
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

/// Writes a request frame.
async fn send<W: AsyncWrite + Unpin>(writer: &mut W, frame: &[u8]) -> Result<(), Failure> {
    writer.write_all(frame).await.map_err(Failure::from_io)?;
    writer.flush().await.map_err(Failure::from_io)
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
    let hint = if message.contains("File too large") {
        format!(
            " (a file in the session may hold at most the scratch limit, {}; raise it in SessionOptions::limits)",
            format_bytes(limits.scratch_bytes)
        )
    } else {
        String::new()
    };
    Error::io(doing, std::io::Error::new(kind, format!("{message}{hint}")))
}

/// Where `get` sends a file's bytes.
enum Sink<'a> {
    Memory(Vec<u8>),
    File(&'a Path, Option<tokio::fs::File>),
}

impl RestrictedSession {
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

    /// The result of a cell whose process died, or was killed, before it answered.
    async fn lost_cell(
        &self,
        failure: Failure,
        started: Instant,
        timeout: Duration,
        cap: u64,
    ) -> ExecutionResult {
        let inner = self.inner.clone();
        let (reaped, oom, [(mut stdout, out_dropped), (mut stderr, err_dropped)]) =
            tokio::task::spawn_blocking(move || {
                inner.kill();
                let reaped = inner.reap();
                let oom = lock(&inner.held)
                    .as_ref()
                    .is_some_and(|held| held.tree.oom_killed());
                (reaped, oom, inner.recover_output(cap))
            })
            .await
            .unwrap_or_default();
        let duration = started.elapsed();
        let (cause, reason) = match failure {
            Failure::Stalled => (
                Cause::Backstop,
                format!(
                    "a cell ignored its timeout of {timeout:?}, so its process was killed {CELL_GRACE:?} later"
                ),
            ),
            Failure::OutOfStep(what) => (
                Cause::Protocol,
                format!("the session server broke the protocol ({what}); its process was killed"),
            ),
            Failure::Ended => (Cause::Ended, self.inner.describe_end(reaped.as_ref(), oom)),
        };
        let before = self.inner.set_lost(cause, reason);
        let status = match &before {
            Phase::Lost {
                cause: Cause::Lifetime,
                ..
            } => Status::TimedOut,
            Phase::Lost { .. } | Phase::Closed => Status::Killed,
            Phase::Alive => match cause {
                Cause::Backstop => Status::TimedOut,
                Cause::Ended => reaped.map_or(Status::Killed, |r| natural_status(&r, oom)),
                _ => Status::Killed,
            },
        };
        let _ = self.inner.clone().dismantle_async().await;

        let reason = match self.inner.phase() {
            Phase::Lost { reason, .. } => reason,
            _ => "the session was closed while the cell ran".to_owned(),
        };
        if !stderr.is_empty() && !stderr.ends_with(b"\n") {
            stderr.push(b'\n');
        }
        stderr.extend_from_slice(
            format!("rlmkit-sandbox: the session is lost: {reason}\n").as_bytes(),
        );
        stdout.truncate(usize::try_from(cap).unwrap_or(usize::MAX));
        let mut result = ExecutionResult::new(BACKEND, status, self.inner.isolation.clone());
        result.exit_code = match cause {
            Cause::Ended if status == Status::Exited => reaped.and_then(|r| r.exit_code()),
            _ => None,
        };
        result.signal = reaped.and_then(|r| r.signal());
        result.stdout = stdout;
        result.stdout_truncated = out_dropped > 0;
        result.stdout_dropped_bytes = out_dropped;
        result.stderr = stderr;
        result.stderr_truncated = err_dropped > 0;
        result.stderr_dropped_bytes = err_dropped;
        result.duration = duration;
        result
    }

    /// Gives up on the session after a failed transfer: the process is
    /// killed and everything removed; returns the error to report.
    async fn lost_transfer(&self, failure: Failure, doing: &str) -> Error {
        let (reaped, oom) = self.inner.clone().kill_and_reap().await;
        let (cause, reason) = match failure {
            Failure::Ended => (Cause::Ended, self.inner.describe_end(reaped.as_ref(), oom)),
            Failure::Stalled => (
                Cause::Protocol,
                format!(
                    "the session server made no progress for {TRANSFER_STALL:?} while {doing}; its process was killed"
                ),
            ),
            Failure::OutOfStep(what) => (
                Cause::Protocol,
                format!(
                    "the session server broke the protocol while {doing} ({what}); its process was killed"
                ),
            ),
        };
        self.inner.set_lost(cause, reason);
        let _ = self.inner.clone().dismantle_async().await;
        match self.inner.phase() {
            Phase::Lost { reason, .. } => self.inner.lost_error(reason),
            _ => self.inner.lost_error("it was closed".to_owned()),
        }
    }

    /// Sends a `put` of `size` bytes that `fill` writes, and reads the answer.
    async fn put(&self, path: &str, size: u64, source: PutSource<'_>) -> Result<u64, Error> {
        check_path(path)?;
        let scratch = self.inner.limits.scratch_bytes;
        if size > scratch {
            // RLIMIT_FSIZE would stop the server's write part way: refuse up front.
            return Err(Error::invalid_request(format!(
                "{path:?} would be {size} bytes, over the session's scratch limit of {} per file; raise it in SessionOptions::limits",
                format_bytes(scratch)
            )));
        }
        let request = frame(&Request::Put { path, size })?;
        let mut io = self.inner.io.lock().await;
        self.inner.check_alive().await?;
        let armed = Armed::new(&self.inner);
        let doing = format!("writing {path:?}");
        let mut local_error = None;
        let exchange = async {
            let io = &mut *io;
            within(TRANSFER_STALL, send(&mut io.to_server, &request)).await?;
            match source {
                PutSource::Memory(bytes) => {
                    for chunk in bytes.chunks(CHUNK) {
                        within(TRANSFER_STALL, send(&mut io.to_server, chunk)).await?;
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
                        within(TRANSFER_STALL, send(&mut io.to_server, &buffer[..read])).await?;
                        left -= read as u64;
                    }
                }
            }
            within(TRANSFER_STALL, read_header(&mut io.from_server)).await
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
        self.inner.check_alive().await?;
        let armed = Armed::new(&self.inner);
        let doing = format!("reading {path:?}");
        let header = async {
            within(TRANSFER_STALL, send(&mut io.to_server, &request)).await?;
            within(TRANSFER_STALL, read_header(&mut io.from_server)).await
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
            let mut buffer = vec![0u8; CHUNK];
            let mut left = size;
            while left > 0 {
                let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
                let read = within(TRANSFER_STALL, async {
                    match io.from_server.read(&mut buffer[..want]).await {
                        Ok(0) | Err(_) => Err(Failure::Ended),
                        Ok(n) => Ok(n),
                    }
                })
                .await?;
                left -= read as u64;
                if local_error.is_some() {
                    // Drain the rest to keep the protocol in step.
                    continue;
                }
                match &mut sink {
                    Sink::Memory(bytes) => bytes.extend_from_slice(&buffer[..read]),
                    Sink::File(_, Some(file)) => {
                        if let Err(e) = file.write_all(&buffer[..read]).await {
                            local_error = Some(e);
                        }
                    }
                    Sink::File(_, None) => {}
                }
            }
            Ok(())
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

/// Where `put` takes a file's bytes from.
enum PutSource<'a> {
    Memory(&'a [u8]),
    File(tokio::fs::File),
}

#[async_trait]
impl Session for RestrictedSession {
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
            Phase::Alive if self.inner.has_ended() => SessionState::Lost {
                reason: "its process ended; the next call tells how".to_owned(),
            },
            Phase::Alive => SessionState::Alive,
        }
    }

    async fn run(&self, cell: Cell) -> Result<ExecutionResult, Error> {
        let limits = self.cell_limits(&cell)?;
        let mut io = self.inner.io.lock().await;
        self.inner.check_alive().await?;
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
            send(&mut io.to_server, &request).await?;
            let response = read_header(&mut io.from_server).await?;
            if !response.ok || response.stdout_size > cap || response.stderr_size > cap {
                return Err(Failure::OutOfStep(format!(
                    "an unexpected answer to a cell: ok {}, {} + {} bytes of output over a cap of {cap}",
                    response.ok, response.stdout_size, response.stderr_size
                )));
            }
            let stdout = read_payload(&mut io.from_server, response.stdout_size).await?;
            let stderr = read_payload(&mut io.from_server, response.stderr_size).await?;
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
            Ok(io) => Some(io),
            Err(_) => {
                // A cell runs in another task: closing stops it.
                self.inner.set_closed();
                let killer = self.inner.clone();
                let _ = tokio::task::spawn_blocking(move || killer.kill()).await;
                None
            }
        };
        let mut io = match io {
            Some(io) => io,
            None => self.inner.io.lock().await,
        };
        let was_alive = matches!(self.inner.phase(), Phase::Alive) && !self.inner.has_ended();
        self.inner.set_closed();
        self.watchdog.abort();
        if was_alive {
            // Let the server end by itself; whatever is left is killed below.
            let goodbye = async {
                let close = protocol::encode(&Request::Close);
                send(&mut io.to_server, &close).await?;
                let mut rest = [0u8; 256];
                while io
                    .from_server
                    .read(&mut rest)
                    .await
                    .map_err(Failure::from_io)?
                    > 0
                {}
                Ok::<(), Failure>(())
            };
            let _ = tokio::time::timeout(CLOSE_WAIT, goodbye).await;
        }
        drop(io);
        self.inner.clone().dismantle_async().await
    }
}

impl Drop for RestrictedSession {
    fn drop(&mut self) {
        self.watchdog.abort();
        if matches!(self.inner.phase(), Phase::Alive) {
            self.inner.set_closed();
        }
        let pending = match self.inner.held.try_lock() {
            Ok(held) => held.is_some(),
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().is_some(),
            // Someone is dismantling it right now.
            Err(TryLockError::WouldBlock) => false,
        };
        if pending {
            // Never block the caller's thread (it may be the runtime's): kill,
            // reap and remove on a thread of its own. Without a thread, the
            // last handle's drop does it.
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name("rlmkit-session-cleanup".to_owned())
                .spawn(move || {
                    let _ = inner.dismantle();
                });
            drop(spawned);
        }
    }
}
