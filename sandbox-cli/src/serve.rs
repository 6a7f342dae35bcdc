//! `rlmkit-sandbox serve --stdio`: JSON-RPC 2.0 over a byte stream, one JSON
//! object per line, so any language can drive the sandbox as a subprocess.
//!
//! # Methods
//!
//! | method             | params                                                        | result                             |
//! |--------------------|---------------------------------------------------------------|------------------------------------|
//! | `execute`          | `code`, `language` (`python`, `shell`), `limits`, `stdin`, `files`, `env` | what `run --json` prints |
//! | `session.open`     | `limits`, `lifetime_ms`, `env` (all optional)                 | `{"session": ID}`                  |
//! | `session.run`      | `session`, `code`, `timeout_ms`, `output_bytes`               | what `run --json` prints           |
//! | `session.put_file` | `session`, `path`, and `contents` or `local_path`             | `{"size": N}`                      |
//! | `session.get_file` | `session`, `path`, optional `local_path`                      | `{"contents": C}` or `{"size": N}` |
//! | `session.close`    | `session`                                                     | `{"closed": true}`                 |
//! | `doctor`           | none                                                          | what `doctor --json` prints        |
//!
//! `limits` is a [`LimitsBuilder`] object (`memory_bytes`, `cpus`,
//! `timeout_ms`, `pids`, `output_bytes`, `scratch_bytes`, `network`) over
//! the server's own limits, which its command-line flags set. File contents
//! and `stdin` are a string (UTF-8) or `{"base64": "..."}`; `files` is an
//! array of `{"path", "contents"}`. A `local_path` names a file on the
//! server's machine that is streamed, never held in memory whole: the
//! client is trusted with the server's own file system, the code is not.
//!
//! # Errors
//!
//! Malformed JSON gets [`PARSE_ERROR`], a line that is not a request object
//! [`INVALID_REQUEST`], an unknown method [`METHOD_NOT_FOUND`], parameters
//! that are missing, unknown, mistyped or out of range [`INVALID_PARAMS`]. A
//! failure of the sandbox itself gets [`SANDBOX_ERROR`] with
//! `data: {"kind": ...}` ([`Error::kind`]); a request cut short at shutdown
//! gets [`CANCELLED`]. How the code ended (exit code, timeout, out of
//! memory) is never an error: it is in the result.
//!
//! # Concurrency and shutdown
//!
//! A request is one line holding one object with `"jsonrpc": "2.0"`, a
//! `method`, named `params` (unknown ones are refused) and an `id` (a
//! string, a number or null); batches are not supported. Each request runs
//! on its own task and is answered when it finishes, so responses may come
//! out of order: match them by `id`. Requests naming the same session
//! (`session.run`, `put_file`, `get_file`, `close`) are carried out one
//! after another in the order they arrived. One task owns the output, so
//! lines never interleave. Notifications (requests without `id`) are
//! carried out and never answered. At end of input every session is closed, in-flight
//! requests get [`ServeOptions::shutdown_grace`] to finish before they are
//! cancelled, and [`serve`] returns.
//!
//! ```text
//! → {"jsonrpc":"2.0","id":1,"method":"session.open","params":{"limits":{"timeout_ms":5000}}}
//! ← {"jsonrpc":"2.0","id":1,"result":{"session":"..."}}
//! → {"jsonrpc":"2.0","id":2,"method":"session.run","params":{"session":"...","code":"x = 41"}}
//! ← {"jsonrpc":"2.0","id":2,"result":{"backend":"restricted","status":"exited","exit_code":0,...}}
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use sandbox_core::{
    Cell, Error, ExecutionRequest, Executor, LimitsBuilder, Session, SessionOptions,
};

/// The line was not valid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// The line was JSON but not a request object.
pub const INVALID_REQUEST: i64 = -32600;
/// No such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// The parameters are missing, unknown, of the wrong type or out of range.
pub const INVALID_PARAMS: i64 = -32602;
/// The server failed while handling the request (a bug).
pub const INTERNAL_ERROR: i64 = -32603;
/// The sandbox could not do what was asked; `data.kind` says why.
pub const SANDBOX_ERROR: i64 = -32000;
/// The request was cancelled because the server is shutting down.
pub const CANCELLED: i64 = -32001;

/// How many response lines may wait for the writer before handlers wait.
const OUTPUT_BACKLOG: usize = 256;

/// How long closing the sessions at shutdown may take before they are
/// dropped instead (which removes what they held too, less gracefully).
const CLOSE_PATIENCE: Duration = Duration::from_secs(30);

/// How [`serve`] behaves.
///
/// ```
/// use std::time::Duration;
/// use sandbox_cli::serve::ServeOptions;
///
/// let options = ServeOptions::default().shutdown_grace(Duration::from_secs(2));
/// assert_eq!(options.shutdown_grace, Duration::from_secs(2));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeOptions {
    /// How long in-flight requests may take to finish, counted from the end
    /// of input, before they are cancelled (sessions are closed first,
    /// whatever the grace).
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl ServeOptions {
    /// Sets [`ServeOptions::shutdown_grace`].
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }
}

/// Resolves when the process gets SIGINT or SIGTERM; never, if the signals
/// cannot be watched. Pass it to [`serve`] so a signal shuts down as end of
/// input does, closing every session.
pub async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut interrupt), Ok(mut terminate)) => {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// Serves JSON-RPC 2.0 requests read from `input`, one per line, writing one
/// response per line to `output`, until `input` ends or `shutdown` resolves.
///
/// Then it closes every session, lets in-flight requests finish for
/// [`ServeOptions::shutdown_grace`], cancels the rest (answering them with
/// [`CANCELLED`]) and returns. Bad requests are answered with errors and
/// never end the loop; the only error returned is a failure to read `input`.
///
/// ```no_run
/// use std::sync::Arc;
/// use sandbox_cli::serve::{ServeOptions, serve};
/// use sandbox_restricted::RestrictedExecutor;
///
/// # async fn demo() -> Result<(), sandbox_core::Error> {
/// let executor = Arc::new(RestrictedExecutor::new()?);
/// let input: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"execute","params":{"code":"print(1)"}}"#;
/// serve(executor, input, tokio::io::stdout(), std::future::pending(), ServeOptions::default()).await
/// # }
/// ```
pub async fn serve<R, W, S>(
    executor: Arc<dyn Executor>,
    input: R,
    output: W,
    shutdown: S,
    options: ServeOptions,
) -> Result<(), Error>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    S: Future<Output = ()>,
{
    let (out, lines_out) = mpsc::channel(OUTPUT_BACKLOG);
    let writer = tokio::spawn(write_lines(output, lines_out));
    let (lines_in, mut incoming) = mpsc::channel(16);
    let reader = tokio::spawn(read_lines(input, lines_in));

    let server = Arc::new(Server {
        executor,
        sessions: Mutex::new(Sessions::default()),
        turns: Arc::default(),
    });
    let out = Responder(out);
    let mut tasks = Tasks::default();
    let mut read_error = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            line = incoming.recv() => match line {
                Some(Ok(line)) => server.dispatch(&line, &mut tasks, &out).await,
                Some(Err(error)) => {
                    read_error = Some(Error::io("reading requests", error));
                    break;
                }
                None => break,
            },
            Some(done) = tasks.set.join_next_with_id(), if !tasks.set.is_empty() => {
                tasks.reap(done, &out).await;
            }
            () = &mut shutdown => break,
        }
    }
    reader.abort();
    server
        .shut_down(&mut tasks, &out, options.shutdown_grace)
        .await;
    drop(out);
    // The writer ends once every handler's copy of the sender is gone.
    if let Err(error) = writer.await {
        eprintln!("rlmkit-sandbox: the response writer failed: {error}");
    }
    match read_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Reads lines (without interpreting them) and hands them over until end of input.
async fn read_lines<R: AsyncRead + Unpin>(input: R, lines: mpsc::Sender<std::io::Result<Vec<u8>>>) {
    let mut input = BufReader::new(input);
    loop {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {
                if lines.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                let _ = lines.send(Err(error)).await;
                return;
            }
        }
    }
}

/// Owns the output: writes each response as one line and flushes it.
async fn write_lines<W: AsyncWrite + Unpin>(mut output: W, mut lines: mpsc::Receiver<String>) {
    let mut broken = false;
    while let Some(line) = lines.recv().await {
        if broken {
            // Keep draining so handlers never wait on a reader that is gone.
            continue;
        }
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        let written = async {
            output.write_all(&bytes).await?;
            output.flush().await
        }
        .await;
        if let Err(error) = written {
            eprintln!("rlmkit-sandbox: cannot write responses any more: {error}");
            broken = true;
        }
    }
    let _ = output.shutdown().await;
}

/// Sends responses to the writer.
#[derive(Clone, Debug)]
struct Responder(mpsc::Sender<String>);

impl Responder {
    /// Answers request `id` with `outcome`.
    ///
    /// The result is spliced in as it was serialized, so it is byte for byte
    /// what the command line prints for the same value.
    async fn answer(&self, id: Value, outcome: Outcome) {
        // Neither a JSON value nor this error type can fail to serialize.
        let id = serde_json::to_string(&id).unwrap_or_else(|_| "null".to_owned());
        let line = match outcome {
            Ok(Json(result)) => format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#),
            Err(error) => {
                let error = serde_json::to_string(&error).unwrap_or_default();
                format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{error}}}"#)
            }
        };
        // The writer only goes away once every sender has.
        let _ = self.0.send(line).await;
    }
}

/// A method's result, serialized.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Json(String);

/// What a method gives: its result or an error.
type Outcome = Result<Json, RpcError>;

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct RpcError {
    code: i64,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    fn with_kind(mut self, kind: &str) -> Self {
        self.data = Some(json!({ "kind": kind }));
        self
    }

    /// Parameters the server refused before doing anything.
    fn params(message: impl Into<String>) -> Self {
        RpcError::new(INVALID_PARAMS, message)
    }

    /// A sandbox error found while checking the parameters.
    fn invalid(error: &Error) -> Self {
        RpcError::params(error.to_string()).with_kind(error.kind())
    }
}

impl From<Error> for RpcError {
    /// The sandbox failed while doing what was asked.
    fn from(error: Error) -> Self {
        RpcError::new(SANDBOX_ERROR, error.to_string()).with_kind(error.kind())
    }
}

/// The in-flight requests, and the id each must be answered with if it is
/// cancelled or fails (none for a notification).
#[derive(Default)]
struct Tasks {
    set: JoinSet<()>,
    ids: HashMap<tokio::task::Id, Option<Value>>,
}

impl Tasks {
    /// Forgets a finished task; answers for it if it did not answer itself.
    async fn reap(&mut self, done: Result<(tokio::task::Id, ()), JoinError>, out: &Responder) {
        let error = match done {
            Ok((task, ())) => {
                self.ids.remove(&task);
                return;
            }
            Err(error) => error,
        };
        let Some(Some(id)) = self.ids.remove(&error.id()) else {
            return;
        };
        let answer = if error.is_cancelled() {
            RpcError::new(
                CANCELLED,
                "cancelled: the server is shutting down (its input ended)",
            )
            .with_kind("cancelled")
        } else {
            RpcError::new(
                INTERNAL_ERROR,
                format!("the server failed while handling this request: {error}"),
            )
        };
        out.answer(id, Err(answer)).await;
    }
}

/// The open sessions, by id.
#[derive(Default)]
struct Sessions {
    open: HashMap<String, Arc<dyn Session>>,
    /// Set at shutdown: sessions opened after it are closed at once.
    closing: bool,
}

/// The state every request handler shares.
struct Server {
    executor: Arc<dyn Executor>,
    sessions: Mutex<Sessions>,
    turns: Arc<Mutex<Turns>>,
}

/// Per session id, the end of the last request queued on it.
#[derive(Default)]
struct Turns {
    last: HashMap<String, (u64, oneshot::Receiver<()>)>,
    next: u64,
}

/// A request's place in its session's queue: it starts when the request
/// before it has ended, and ends (letting the next one start) when dropped,
/// whether the request finished or was cancelled.
struct Turn {
    turns: Arc<Mutex<Turns>>,
    session: String,
    number: u64,
    before: Option<oneshot::Receiver<()>>,
    /// Dropped with the turn, which wakes the next request.
    _done: oneshot::Sender<()>,
}

impl Turn {
    /// Queues a request on `session`, behind those queued before it.
    fn take(turns: &Arc<Mutex<Turns>>, session: &str) -> Turn {
        let (done, ended) = oneshot::channel();
        let mut queue = turns.lock().unwrap_or_else(PoisonError::into_inner);
        let number = queue.next;
        queue.next += 1;
        let before = queue
            .last
            .insert(session.to_owned(), (number, ended))
            .map(|(_, before)| before);
        Turn {
            turns: Arc::clone(turns),
            session: session.to_owned(),
            number,
            before,
            _done: done,
        }
    }

    /// Waits until the request before this one has ended.
    async fn wait(mut self) -> Turn {
        if let Some(before) = self.before.take() {
            // An error only means the sender was dropped: the same signal.
            let _ = before.await;
        }
        self
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut queue = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget the session's queue when this was its last request.
        if queue
            .last
            .get(&self.session)
            .is_some_and(|(number, _)| *number == self.number)
        {
            queue.last.remove(&self.session);
        }
    }
}

/// The methods this server knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Execute,
    SessionOpen,
    SessionRun,
    SessionPutFile,
    SessionGetFile,
    SessionClose,
    Doctor,
}

impl Method {
    fn parse(name: &str) -> Option<Method> {
        Some(match name {
            "execute" => Method::Execute,
            "session.open" => Method::SessionOpen,
            "session.run" => Method::SessionRun,
            "session.put_file" => Method::SessionPutFile,
            "session.get_file" => Method::SessionGetFile,
            "session.close" => Method::SessionClose,
            "doctor" => Method::Doctor,
            _ => return None,
        })
    }
}

/// A request that passed the envelope checks.
struct Call {
    /// `None` for a notification.
    id: Option<Value>,
    method: Method,
    params: Value,
}

impl Server {
    /// Checks one line and starts its request, or answers it with an error.
    async fn dispatch(self: &Arc<Self>, line: &[u8], tasks: &mut Tasks, out: &Responder) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let call = match envelope(line) {
            Ok(Some(call)) => call,
            // An unknown method in a notification: nothing to answer.
            Ok(None) => return,
            Err((id, error)) => {
                out.answer(id, Err(error)).await;
                return;
            }
        };
        // Requests on one session take turns in the order they arrived: the
        // turn is taken here, in reading order, not when the task first runs.
        let turn = match call.method {
            Method::SessionRun
            | Method::SessionPutFile
            | Method::SessionGetFile
            | Method::SessionClose => call
                .params
                .get("session")
                .and_then(Value::as_str)
                .map(|session| Turn::take(&self.turns, session)),
            Method::Execute | Method::SessionOpen | Method::Doctor => None,
        };
        let server = Arc::clone(self);
        let responder = out.clone();
        let id = call.id.clone();
        let handle = tasks.set.spawn(async move {
            let turn = match turn {
                Some(turn) => Some(turn.wait().await),
                None => None,
            };
            let outcome = server.call(call.method, call.params).await;
            // The next request on this session may start; it need not wait
            // for this answer to be written.
            drop(turn);
            if let Some(id) = call.id {
                responder.answer(id, outcome).await;
            }
        });
        tasks.ids.insert(handle.id(), id);
    }

    /// Runs one method.
    async fn call(&self, method: Method, params: Value) -> Outcome {
        match method {
            Method::Execute => self.execute(parse(params)?).await,
            Method::SessionOpen => self.open(parse(params)?).await,
            Method::SessionRun => self.run(parse(params)?).await,
            Method::SessionPutFile => self.put_file(parse(params)?).await,
            Method::SessionGetFile => self.get_file(parse(params)?).await,
            Method::SessionClose => self.close(parse(params)?).await,
            Method::Doctor => {
                let NoParams {} = parse(params)?;
                to_json(&crate::doctor::diagnose().await)
            }
        }
    }

    async fn execute(&self, params: ExecuteParams) -> Outcome {
        let code = params.code;
        let mut request = match params.language {
            Language::Python => ExecutionRequest::python(code),
            Language::Shell => ExecutionRequest::shell(code),
        };
        let limits = limits(params.limits)?;
        limits
            .build_over(self.executor.limits())
            .map_err(|e| RpcError::invalid(&e))?;
        request = request.limits(limits);
        if let Some(stdin) = params.stdin {
            request = request.stdin(stdin.0);
        }
        for (name, value) in params.env {
            request = request.env(name, value);
        }
        for file in params.files {
            request = request.file(file.path, file.contents.0);
        }
        request.validate().map_err(|e| RpcError::invalid(&e))?;
        to_json(&self.executor.execute(request).await?)
    }

    async fn open(&self, params: OpenParams) -> Outcome {
        let limits = limits(params.limits)?;
        limits
            .build_over(self.executor.limits())
            .map_err(|e| RpcError::invalid(&e))?;
        let mut options = SessionOptions::default().limits(limits);
        if let Some(lifetime_ms) = params.lifetime_ms {
            if lifetime_ms == 0 {
                return Err(RpcError::params("lifetime_ms must be at least 1"));
            }
            options = options.lifetime(Duration::from_millis(lifetime_ms));
        }
        for (name, value) in params.env {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                return Err(RpcError::params(format!(
                    "environment variable {name:?} is not valid; names are non-empty without '=' and neither part holds a NUL byte"
                )));
            }
            options = options.env(name, value);
        }
        let session: Arc<dyn Session> = Arc::from(self.executor.open_session(options).await?);
        let id = session.id().to_owned();
        let refused = {
            let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            if sessions.closing {
                true
            } else {
                sessions.open.insert(id.clone(), Arc::clone(&session));
                false
            }
        };
        if refused {
            let _ = session.close().await;
            return Err(RpcError::new(
                CANCELLED,
                "cancelled: the server is shutting down (its input ended); the session was closed",
            )
            .with_kind("cancelled"));
        }
        to_json(&json!({ "session": id }))
    }

    async fn run(&self, params: RunParams) -> Outcome {
        let session = self.session(&params.session)?;
        let mut cell = Cell::new(params.code);
        let mut check = LimitsBuilder::default();
        if let Some(timeout_ms) = params.timeout_ms {
            cell = cell.timeout(Duration::from_millis(timeout_ms));
            check = check.timeout(Duration::from_millis(timeout_ms));
        }
        if let Some(output_bytes) = params.output_bytes {
            cell = cell.output_bytes(output_bytes);
            check = check.output_bytes(output_bytes);
        }
        check
            .build_over(self.executor.limits())
            .map_err(|e| RpcError::invalid(&e))?;
        to_json(&session.run(cell).await?)
    }

    async fn put_file(&self, params: PutParams) -> Outcome {
        let session = self.session(&params.session)?;
        let size = match (params.contents, params.local_path) {
            (Some(contents), None) => session.put_file(&params.path, contents.0).await?,
            (None, Some(local)) => session.put_file_from(&params.path, &local).await?,
            _ => {
                return Err(RpcError::params(
                    "give exactly one of `contents` (a string or {\"base64\": ...}) and `local_path`",
                ));
            }
        };
        to_json(&json!({ "size": size }))
    }

    async fn get_file(&self, params: GetParams) -> Outcome {
        let session = self.session(&params.session)?;
        match params.local_path {
            Some(local) => {
                let size = session.get_file_to(&params.path, &local).await?;
                to_json(&json!({ "size": size }))
            }
            None => {
                let contents = session.get_file(&params.path).await?;
                to_json(&json!({ "contents": bytes_to_json(&contents) }))
            }
        }
    }

    async fn close(&self, params: SessionParams) -> Outcome {
        let session = {
            let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            sessions.open.remove(&params.session)
        };
        let session = session.ok_or_else(|| unknown_session(&params.session))?;
        session.close().await?;
        to_json(&json!({ "closed": true }))
    }

    /// The open session `id`.
    fn session(&self, id: &str) -> Result<Arc<dyn Session>, RpcError> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .open
            .get(id)
            .cloned()
            .ok_or_else(|| unknown_session(id))
    }

    /// Closes every session, lets in-flight requests finish within `grace`
    /// (counted from the start of the shutdown), cancels the rest, and waits
    /// until all are gone.
    async fn shut_down(&self, tasks: &mut Tasks, out: &Responder, grace: Duration) {
        let deadline = Instant::now() + grace;
        let sessions: Vec<Arc<dyn Session>> = {
            let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            sessions.closing = true;
            sessions.open.drain().map(|(_, session)| session).collect()
        };
        // Closing is what removes a session's container or process: it gets
        // its own patience, not the grace meant for in-flight requests.
        let closing = futures_util::future::join_all(sessions.iter().map(|s| s.close()));
        match tokio::time::timeout(CLOSE_PATIENCE, closing).await {
            Ok(closed) => {
                for (session, closed) in sessions.iter().zip(closed) {
                    if let Err(error) = closed {
                        eprintln!("rlmkit-sandbox: closing session {}: {error}", session.id());
                    }
                }
            }
            Err(_) => {
                eprintln!(
                    "rlmkit-sandbox: sessions still closing after {CLOSE_PATIENCE:?}; dropping them"
                )
            }
        }
        while !tasks.set.is_empty() {
            match tokio::time::timeout_at(deadline, tasks.set.join_next_with_id()).await {
                Ok(Some(done)) => tasks.reap(done, out).await,
                Ok(None) => break,
                Err(_) => {
                    tasks.set.abort_all();
                    break;
                }
            }
        }
        // Cancelled tasks end at their next await; reaping answers for them.
        while let Some(done) = tasks.set.join_next_with_id().await {
            tasks.reap(done, out).await;
        }
        // The last references: dropping a session removes what it held.
        drop(sessions);
    }
}

/// Checks the JSON-RPC envelope of one line.
///
/// `Ok(None)` is a notification for an unknown method (ignored); `Err` holds
/// the id to answer with (null when it cannot be known) and the error.
fn envelope(line: &[u8]) -> Result<Option<Call>, (Value, RpcError)> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        (
            Value::Null,
            RpcError::new(PARSE_ERROR, format!("parse error: {e}")),
        )
    })?;
    let Value::Object(mut request) = value else {
        return Err((
            Value::Null,
            RpcError::new(
                INVALID_REQUEST,
                "a request is one JSON object per line (batches are not supported)",
            ),
        ));
    };
    let id = match request.remove("id") {
        None => None,
        Some(id @ (Value::Null | Value::String(_) | Value::Number(_))) => Some(id),
        Some(_) => {
            return Err((
                Value::Null,
                RpcError::new(INVALID_REQUEST, "`id` must be a string, a number or null"),
            ));
        }
    };
    let reply_to = id.clone().unwrap_or(Value::Null);
    let invalid = |message: &str| (reply_to.clone(), RpcError::new(INVALID_REQUEST, message));
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("`jsonrpc` must be \"2.0\""));
    }
    let name = match request.remove("method") {
        Some(Value::String(name)) => name,
        _ => return Err(invalid("`method` must be a string")),
    };
    let params = match request.remove("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(params @ Value::Object(_)) => params,
        Some(Value::Array(_)) => {
            return Err((
                reply_to,
                RpcError::params("`params` must be an object: parameters are named"),
            ));
        }
        Some(_) => return Err(invalid("`params` must be an object")),
    };
    let Some(method) = Method::parse(&name) else {
        return match id {
            None => Ok(None),
            Some(id) => Err((
                id,
                RpcError::new(
                    METHOD_NOT_FOUND,
                    format!(
                        "no method {name:?}; use execute, session.open, session.run, session.put_file, session.get_file, session.close or doctor"
                    ),
                ),
            )),
        };
    };
    Ok(Some(Call { id, method, params }))
}

/// Deserializes a method's parameters, refusing unknown fields.
fn parse<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    serde_json::from_value(params).map_err(|e| RpcError::params(format!("invalid params: {e}")))
}

/// Serializes a result.
fn to_json<T: Serialize>(value: &T) -> Outcome {
    serde_json::to_string(value)
        .map(Json)
        .map_err(|e| RpcError::new(INTERNAL_ERROR, format!("cannot encode the result: {e}")))
}

fn unknown_session(id: &str) -> RpcError {
    RpcError::params(format!(
        "no open session {id:?} (never opened, or closed); open one with session.open"
    ))
    .with_kind("unknown_session")
}

/// Reads a `limits` object, refusing fields [`LimitsBuilder`] does not
/// know (it would ignore them, and a misspelt limit must not pass unseen).
fn limits(value: Option<Value>) -> Result<LimitsBuilder, RpcError> {
    let Some(value) = value else {
        return Ok(LimitsBuilder::default());
    };
    if let (Value::Object(given), Ok(Value::Object(known))) =
        (&value, serde_json::to_value(LimitsBuilder::default()))
    {
        if let Some(unknown) = given.keys().find(|key| !known.contains_key(*key)) {
            let names: Vec<&str> = known.keys().map(String::as_str).collect();
            return Err(RpcError::params(format!(
                "unknown limit {unknown:?}; limits are {}",
                names.join(", ")
            )));
        }
    }
    serde_json::from_value(value).map_err(|e| RpcError::params(format!("invalid limits: {e}")))
}

/// Bytes as JSON: a string when they are UTF-8, `{"base64": ...}` otherwise.
fn bytes_to_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "base64": STANDARD.encode(bytes) }),
    }
}

/// Bytes given as a string (its UTF-8) or as `{"base64": "..."}`.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Value")]
struct Bytes(Vec<u8>);

impl TryFrom<Value> for Bytes {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        const SHAPE: &str = "contents must be a string or {\"base64\": \"...\"}";
        match value {
            Value::String(text) => Ok(Bytes(text.into_bytes())),
            Value::Object(object) if object.len() == 1 => match object.get("base64") {
                Some(Value::String(encoded)) => STANDARD
                    .decode(encoded)
                    .map(Bytes)
                    .map_err(|e| format!("invalid base64: {e}")),
                _ => Err(SHAPE.to_owned()),
            },
            _ => Err(SHAPE.to_owned()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Language {
    #[default]
    Python,
    Shell,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileParam {
    path: String,
    contents: Bytes,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteParams {
    code: String,
    #[serde(default)]
    language: Language,
    #[serde(default)]
    limits: Option<Value>,
    #[serde(default)]
    stdin: Option<Bytes>,
    #[serde(default)]
    files: Vec<FileParam>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenParams {
    #[serde(default)]
    limits: Option<Value>,
    #[serde(default)]
    lifetime_ms: Option<u64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunParams {
    session: String,
    code: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    output_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutParams {
    session: String,
    path: String,
    #[serde(default)]
    contents: Option<Bytes>,
    #[serde(default)]
    local_path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetParams {
    session: String,
    path: String,
    #[serde(default)]
    local_path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionParams {
    session: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    use sandbox_core::{ExecutionResult, IsolationReport, Limits, SessionState, Status};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, DuplexStream, Lines};

    /// A backend whose programs are not run: `execute` echoes the code (or
    /// sleeps for `sleep:MS`, or panics for `panic`), and sessions record
    /// their cells.
    #[derive(Debug, Default)]
    struct Fake {
        limits: Limits,
        opened: AtomicUsize,
        closed: Arc<AtomicUsize>,
    }

    #[derive(Debug)]
    struct FakeSession {
        id: String,
        cells: tokio::sync::Mutex<Vec<String>>,
        files: Mutex<HashMap<String, Vec<u8>>>,
        closed: Arc<AtomicUsize>,
    }

    fn fake_result(stdout: String) -> ExecutionResult {
        let mut result = ExecutionResult::new("fake", Status::Exited, IsolationReport::new("fake"));
        result.exit_code = Some(0);
        result.stdout = stdout.into_bytes();
        result
    }

    async fn act(code: &str) {
        if code == "panic" {
            panic!("a bug in the backend");
        }
        if let Some(ms) = code.strip_prefix("sleep:") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        }
    }

    #[sandbox_core::async_trait]
    impl Executor for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        fn limits(&self) -> &Limits {
            &self.limits
        }
        fn isolation(&self) -> IsolationReport {
            IsolationReport::new("fake")
        }
        async fn execute(&self, request: ExecutionRequest) -> Result<ExecutionResult, Error> {
            let sandbox_core::Program::Python(code) = request.program else {
                return Err(Error::invalid_request("python only"));
            };
            act(&code).await;
            Ok(fake_result(code))
        }
        async fn open_session(&self, _options: SessionOptions) -> Result<Box<dyn Session>, Error> {
            let n = self.opened.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(FakeSession {
                id: format!("s{n}"),
                cells: tokio::sync::Mutex::default(),
                files: Mutex::default(),
                closed: Arc::clone(&self.closed),
            }))
        }
    }

    #[sandbox_core::async_trait]
    impl Session for FakeSession {
        fn id(&self) -> &str {
            &self.id
        }
        fn state(&self) -> SessionState {
            SessionState::Alive
        }
        async fn run(&self, cell: Cell) -> Result<ExecutionResult, Error> {
            // No lock held while acting: ordering must come from the server.
            act(&cell.code).await;
            let mut cells = self.cells.lock().await;
            cells.push(cell.code);
            Ok(fake_result(cells.join(",")))
        }
        async fn put_file(&self, path: &str, contents: Vec<u8>) -> Result<u64, Error> {
            let size = contents.len() as u64;
            self.files.lock().unwrap().insert(path.to_owned(), contents);
            Ok(size)
        }
        async fn put_file_from(&self, path: &str, local: &std::path::Path) -> Result<u64, Error> {
            let contents = std::fs::read(local).map_err(|e| Error::io("reading", e))?;
            self.put_file(path, contents).await
        }
        async fn get_file(&self, path: &str) -> Result<Vec<u8>, Error> {
            self.files
                .lock()
                .unwrap()
                .get(path)
                .cloned()
                .ok_or_else(|| Error::invalid_request(format!("no file {path}")))
        }
        async fn get_file_to(&self, path: &str, local: &std::path::Path) -> Result<u64, Error> {
            let contents = self.get_file(path).await?;
            std::fs::write(local, &contents).map_err(|e| Error::io("writing", e))?;
            Ok(contents.len() as u64)
        }
        async fn close(&self) -> Result<(), Error> {
            self.closed.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// A client of a server running on `Fake`.
    struct Client {
        input: Option<DuplexStream>,
        output: Lines<BufReader<DuplexStream>>,
        server: tokio::task::JoinHandle<Result<(), Error>>,
    }

    impl Client {
        fn start(executor: Arc<Fake>, grace: Duration) -> Client {
            let (input, server_input) = tokio::io::duplex(1 << 16);
            let (server_output, output) = tokio::io::duplex(1 << 16);
            let options = ServeOptions::default().shutdown_grace(grace);
            let server = tokio::spawn(serve(
                executor,
                server_input,
                server_output,
                std::future::pending(),
                options,
            ));
            Client {
                input: Some(input),
                output: BufReader::new(output).lines(),
                server,
            }
        }

        async fn send(&mut self, requests: &[Value]) {
            let mut text = String::new();
            for request in requests {
                text.push_str(&format!("{request}\n"));
            }
            let input = self.input.as_mut().unwrap();
            input.write_all(text.as_bytes()).await.unwrap();
        }

        async fn next(&mut self) -> Value {
            let line = tokio::time::timeout(Duration::from_secs(10), self.output.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            serde_json::from_str(&line).unwrap()
        }

        async fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
            self.send(&[request(id, method, params)]).await;
            let response = self.next().await;
            assert_eq!(response["id"], id, "{response}");
            response
        }

        /// Ends the input; returns the lines written after it.
        async fn finish(mut self) -> Vec<Value> {
            drop(self.input.take());
            let mut rest = Vec::new();
            while let Ok(Some(line)) = self.output.next_line().await {
                rest.push(serde_json::from_str(&line).unwrap());
            }
            self.server.await.unwrap().unwrap();
            rest
        }
    }

    fn request(id: u64, method: &str, params: Value) -> Value {
        json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn requests_on_one_session_keep_their_order() {
        let fake = Arc::new(Fake::default());
        let mut client = Client::start(Arc::clone(&fake), Duration::from_secs(5));
        let opened = client.call(1, "session.open", json!({})).await;
        let session = opened["result"]["session"].as_str().unwrap().to_owned();
        // Early cells sleep longest: without queueing, later ones would overtake.
        let cells: Vec<Value> = (0..20)
            .map(|n| {
                let code = if n < 5 {
                    format!("sleep:{}", 50 - 10 * n)
                } else {
                    n.to_string()
                };
                request(
                    100 + n,
                    "session.run",
                    json!({ "session": session, "code": code }),
                )
            })
            .collect();
        client.send(&cells).await;
        let mut last = Value::Null;
        for _ in 0..20 {
            let response = client.next().await;
            if response["id"] == 119 {
                last = response;
            }
        }
        let expected: Vec<String> = (0..20)
            .map(|n| {
                if n < 5 {
                    format!("sleep:{}", 50 - 10 * n)
                } else {
                    n.to_string()
                }
            })
            .collect();
        assert_eq!(last["result"]["stdout"], expected.join(","));

        let put = client
            .call(
                2,
                "session.put_file",
                json!({ "session": session, "path": "b", "contents": { "base64": "AP8B" } }),
            )
            .await;
        assert_eq!(put["result"]["size"], 3);
        let got = client
            .call(
                3,
                "session.get_file",
                json!({ "session": session, "path": "b" }),
            )
            .await;
        assert_eq!(got["result"]["contents"], json!({ "base64": "AP8B" }));
        let missing = client
            .call(
                4,
                "session.get_file",
                json!({ "session": session, "path": "nope" }),
            )
            .await;
        assert_eq!(missing["error"]["code"], SANDBOX_ERROR);
        assert_eq!(missing["error"]["data"]["kind"], "invalid_request");
        let closed = client
            .call(5, "session.close", json!({ "session": session }))
            .await;
        assert_eq!(closed["result"]["closed"], true);
        assert_eq!(fake.closed.load(Ordering::SeqCst), 1);
        assert!(client.finish().await.is_empty());
        assert_eq!(fake.closed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn end_of_input_closes_sessions_and_cancels_what_runs_on() {
        let fake = Arc::new(Fake::default());
        let mut client = Client::start(Arc::clone(&fake), Duration::from_millis(300));
        for id in 1..=3 {
            let opened = client.call(id, "session.open", json!({})).await;
            assert!(opened["result"]["session"].is_string(), "{opened}");
        }
        client
            .send(&[
                request(10, "execute", json!({ "code": "sleep:60000" })),
                request(11, "session.run", json!({ "session": "s0", "code": "sleep:60000" })),
                request(12, "execute", json!({ "code": "sleep:50" })),
                // A notification that outlives the grace: cancelled silently.
                json!({ "jsonrpc": "2.0", "method": "execute", "params": { "code": "sleep:60000" } }),
            ])
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let mut rest = client.finish().await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(fake.closed.load(Ordering::SeqCst), 3);
        rest.sort_by_key(|r| r["id"].as_u64());
        assert_eq!(rest.len(), 3, "{rest:?}");
        assert_eq!(rest[0]["error"]["code"], CANCELLED, "{}", rest[0]);
        assert_eq!(rest[1]["error"]["code"], CANCELLED, "{}", rest[1]);
        assert_eq!(rest[2]["result"]["stdout"], "sleep:50", "{}", rest[2]);
    }

    #[tokio::test]
    async fn a_panicking_handler_is_an_internal_error_not_a_crash() {
        let fake = Arc::new(Fake::default());
        let mut client = Client::start(fake, Duration::from_secs(5));
        let response = client.call(1, "execute", json!({ "code": "panic" })).await;
        assert_eq!(response["error"]["code"], INTERNAL_ERROR, "{response}");
        let response = client
            .call(2, "execute", json!({ "code": "print(1)" }))
            .await;
        assert_eq!(response["result"]["stdout"], "print(1)");
        assert!(client.finish().await.is_empty());
    }

    fn error_of(line: &str) -> (Value, i64) {
        match envelope(line.as_bytes()) {
            Err((id, error)) => (id, error.code),
            Ok(_) => panic!("{line} passed"),
        }
    }

    #[test]
    fn envelopes_are_checked() {
        assert_eq!(error_of("{"), (Value::Null, PARSE_ERROR));
        assert_eq!(error_of("[1]"), (Value::Null, INVALID_REQUEST));
        assert_eq!(error_of("3"), (Value::Null, INVALID_REQUEST));
        assert_eq!(
            error_of(r#"{"jsonrpc":"2.0","id":{},"method":"doctor"}"#),
            (Value::Null, INVALID_REQUEST)
        );
        assert_eq!(
            error_of(r#"{"jsonrpc":"1.0","id":4,"method":"doctor"}"#),
            (json!(4), INVALID_REQUEST)
        );
        assert_eq!(
            error_of(r#"{"jsonrpc":"2.0","id":"a"}"#),
            (json!("a"), INVALID_REQUEST)
        );
        assert_eq!(
            error_of(r#"{"jsonrpc":"2.0","id":5,"method":"nope"}"#),
            (json!(5), METHOD_NOT_FOUND)
        );
        assert_eq!(
            error_of(r#"{"jsonrpc":"2.0","id":6,"method":"doctor","params":[1]}"#),
            (json!(6), INVALID_PARAMS)
        );
        assert!(matches!(
            envelope(br#"{"jsonrpc":"2.0","method":"nope"}"#),
            Ok(None)
        ));
        let call = envelope(br#"{"jsonrpc":"2.0","method":"doctor"}"#)
            .ok()
            .flatten()
            .unwrap();
        assert_eq!((call.id, call.method), (None, Method::Doctor));
    }

    #[test]
    fn params_refuse_unknown_fields_and_misspelt_limits() {
        let bad: Result<ExecuteParams, _> = parse(json!({ "code": "1", "timeout": 5 }));
        assert_eq!(bad.unwrap_err().code, INVALID_PARAMS);
        let bad = limits(Some(json!({ "memory": "1g" }))).unwrap_err();
        assert!(bad.message.contains("memory_bytes"), "{}", bad.message);
        let good = limits(Some(json!({ "memory_bytes": 1 << 30, "timeout_ms": 500 }))).unwrap();
        assert_eq!(good.memory_bytes, Some(1 << 30));
        assert_eq!(good.timeout, Some(Duration::from_millis(500)));
    }

    #[test]
    fn contents_are_text_or_base64() {
        let text: Bytes = serde_json::from_value(json!("héllo")).unwrap();
        assert_eq!(text.0, "héllo".as_bytes());
        let binary: Bytes = serde_json::from_value(json!({ "base64": "//4A" })).unwrap();
        assert_eq!(binary.0, vec![0xff, 0xfe, 0x00]);
        assert!(serde_json::from_value::<Bytes>(json!({ "base64": "!" })).is_err());
        assert!(serde_json::from_value::<Bytes>(json!(3)).is_err());
        assert_eq!(
            bytes_to_json(&[0xff, 0xfe, 0x00]),
            json!({ "base64": "//4A" })
        );
        assert_eq!(bytes_to_json(b"ok"), json!("ok"));
    }
}
