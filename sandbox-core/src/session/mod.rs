//! Persistent sessions: Python state (variables, imports, functions) kept
//! between cells, for REPL loops such as Recursive Language Models.
//!
//! A backend that offers sessions returns them from
//! [`Executor::open_session`](crate::Executor::open_session). Every backend
//! runs the same in-sandbox server, [`REPL_SOURCE`], and speaks the framed
//! [`protocol`] to it over one stream.

pub mod protocol;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Error, ExecutionResult, LimitsBuilder};

/// The Python source of the session server every backend runs in its sandbox.
pub const REPL_SOURCE: &str = include_str!("repl.py");

/// How to open a session.
///
/// ```
/// use std::time::Duration;
/// use sandbox_core::{Limits, SessionOptions};
///
/// let options = SessionOptions::default()
///     .limits(Limits::builder().memory("1g")?.timeout(Duration::from_secs(10)))
///     .lifetime(Duration::from_secs(600))
///     .env("MODE", "rlm");
/// assert_eq!(options.lifetime, Duration::from_secs(600));
/// # Ok::<(), sandbox_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Limits over the executor's: memory, CPUs, processes, network and
    /// scratch hold for the whole session; `timeout` and `output_bytes` are
    /// each cell's defaults.
    #[serde(default)]
    pub limits: LimitsBuilder,
    /// How long the session may live in all; then it is closed.
    #[serde(
        with = "crate::limits::duration_ms",
        rename = "lifetime_ms",
        default = "default_lifetime"
    )]
    pub lifetime: Duration,
    /// Environment variables of the session's process.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_lifetime() -> Duration {
    Duration::from_secs(3600)
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            limits: LimitsBuilder::default(),
            lifetime: default_lifetime(),
            env: BTreeMap::new(),
        }
    }
}

impl SessionOptions {
    /// Sets the limits.
    pub fn limits(mut self, limits: LimitsBuilder) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the total lifetime.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }
}

/// One cell to run in a session.
///
/// ```
/// use std::time::Duration;
/// use sandbox_core::Cell;
///
/// let cell = Cell::new("x = 1").timeout(Duration::from_secs(2));
/// let plain: Cell = "print(x)".into();
/// assert_eq!(plain.code, "print(x)");
/// # let _ = cell;
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Cell {
    /// Python source, run in the session's namespace.
    pub code: String,
    /// This cell's timeout (default: the session's).
    #[serde(
        default,
        with = "crate::limits::opt_duration_ms",
        rename = "timeout_ms"
    )]
    pub timeout: Option<Duration>,
    /// This cell's cap on stdout and on stderr (default: the session's).
    #[serde(default)]
    pub output_bytes: Option<u64>,
}

impl Cell {
    /// A cell running `code` with the session's defaults.
    pub fn new(code: impl Into<String>) -> Self {
        Cell {
            code: code.into(),
            timeout: None,
            output_bytes: None,
        }
    }

    /// Sets this cell's timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets this cell's output cap per stream.
    pub fn output_bytes(mut self, bytes: u64) -> Self {
        self.output_bytes = Some(bytes);
        self
    }
}

impl From<&str> for Cell {
    fn from(code: &str) -> Self {
        Cell::new(code)
    }
}

impl From<String> for Cell {
    fn from(code: String) -> Self {
        Cell::new(code)
    }
}

/// Whether a session can still run cells.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SessionState {
    /// Its process runs and its state is intact.
    Alive,
    /// Its process is gone and its state with it; every later call fails
    /// with [`Error::SessionLost`].
    Lost {
        /// What happened.
        reason: String,
    },
    /// Closed by its owner or at the end of its lifetime.
    Closed,
}

/// A persistent Python process in a sandbox.
///
/// Cells run one at a time, in the order they are called. A cell that times
/// out is interrupted and the session lives on; when the process must be
/// killed (a cell that ignores the interruption, the memory limit, the
/// lifetime), that cell's result says how it ended, [`Session::state`] turns
/// to [`SessionState::Lost`], and later calls fail with
/// [`Error::SessionLost`]. Dropping a session removes what it held, as
/// [`close`](Session::close) does.
///
/// ```no_run
/// use sandbox_core::{Executor, SessionOptions};
///
/// # async fn demo(executor: &dyn Executor) -> Result<(), sandbox_core::Error> {
/// let session = executor.open_session(SessionOptions::default()).await?;
/// session.run("import math\nx = math.sqrt(16)".into()).await?;
/// let result = session.run("print(x)".into()).await?;
/// assert_eq!(result.stdout_text(), "4.0\n");
/// session.close().await?;
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Session: Send + Sync + std::fmt::Debug {
    /// A unique id for this session.
    fn id(&self) -> &str;

    /// Whether it can still run cells.
    fn state(&self) -> SessionState;

    /// Runs one cell. How it ended (including an exception, exit code 1 with
    /// the traceback on stderr, or a timeout) is in the result.
    async fn run(&self, cell: Cell) -> Result<ExecutionResult, Error>;

    /// Writes `contents` to `path` (relative to the session's working
    /// directory, or under its scratch space).
    async fn put_file(&self, path: &str, contents: Vec<u8>) -> Result<u64, Error>;

    /// Streams the local file `local` to `path` without holding it in memory.
    async fn put_file_from(&self, path: &str, local: &Path) -> Result<u64, Error>;

    /// Reads `path` whole.
    async fn get_file(&self, path: &str) -> Result<Vec<u8>, Error>;

    /// Streams `path` to the local file `local` without holding it in memory.
    async fn get_file_to(&self, path: &str, local: &Path) -> Result<u64, Error>;

    /// Ends the session and removes everything it held.
    async fn close(&self) -> Result<(), Error>;
}
