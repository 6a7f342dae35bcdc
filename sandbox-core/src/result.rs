//! What happened: how the program ended, its output, and what was in force.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits::duration_ms;
use crate::{IsolationReport, bytes};

/// How an execution ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// The program exited by itself; see [`ExecutionResult::exit_code`].
    Exited,
    /// The program died of a signal it did not get from the sandbox; see
    /// [`ExecutionResult::signal`].
    Signaled,
    /// The wall-clock timeout struck and the sandbox killed everything.
    TimedOut,
    /// The memory limit was exceeded and the kernel killed the program.
    OomKilled,
    /// stdout or stderr passed its cap and the sandbox stopped the program.
    OutputLimitExceeded,
    /// Something outside the program killed it (the sandbox's CPU-time backstop,
    /// or an operator).
    Killed,
}

impl Status {
    /// The status as JSON spells it: `exited`, `timed_out`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Exited => "exited",
            Status::Signaled => "signaled",
            Status::TimedOut => "timed_out",
            Status::OomKilled => "oom_killed",
            Status::OutputLimitExceeded => "output_limit_exceeded",
            Status::Killed => "killed",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the program used, where the backend can measure it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResourceUsage {
    /// User plus system CPU time, in milliseconds.
    pub cpu_time_ms: Option<u64>,
    /// Peak memory, in bytes.
    pub peak_memory_bytes: Option<u64>,
}

/// The outcome of one execution.
///
/// How the program ended is data here, never an error: a timeout, an
/// out-of-memory kill or a flood of output each give a result, and the output
/// written before the end is kept (up to the cap).
///
/// JSON holds `stdout` and `stderr` as strings when they are UTF-8 and as
/// `{"base64": "..."}` otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExecutionResult {
    /// The backend that ran it, e.g. `restricted` or `docker`.
    pub backend: String,
    /// How it ended.
    pub status: Status,
    /// The exit code when [`Status::Exited`]; `None` otherwise.
    pub exit_code: Option<i32>,
    /// The signal that ended the program, when it died of one.
    pub signal: Option<i32>,
    /// What the program wrote to stdout, up to the cap.
    #[serde(with = "bytes")]
    pub stdout: Vec<u8>,
    /// What the program wrote to stderr, up to the cap.
    #[serde(with = "bytes")]
    pub stderr: Vec<u8>,
    /// Whether stdout was cut at the cap.
    pub stdout_truncated: bool,
    /// Whether stderr was cut at the cap.
    pub stderr_truncated: bool,
    /// Bytes of stdout read past the cap and dropped (a lower bound: the
    /// program is stopped soon after the cap).
    pub stdout_dropped_bytes: u64,
    /// Bytes of stderr read past the cap and dropped.
    pub stderr_dropped_bytes: u64,
    /// Wall-clock time from start to end.
    #[serde(with = "duration_ms", rename = "duration_ms")]
    pub duration: Duration,
    /// The protections that were in force for this execution.
    pub isolation: IsolationReport,
    /// Resources used, where known.
    pub usage: ResourceUsage,
}

impl ExecutionResult {
    /// A result with the given backend and status and everything else empty;
    /// backends fill in the rest.
    pub fn new(backend: impl Into<String>, status: Status, isolation: IsolationReport) -> Self {
        ExecutionResult {
            backend: backend.into(),
            status,
            exit_code: None,
            signal: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            stdout_dropped_bytes: 0,
            stderr_dropped_bytes: 0,
            duration: Duration::ZERO,
            isolation,
            usage: ResourceUsage::default(),
        }
    }

    /// Whether the program exited by itself with code 0.
    ///
    /// ```
    /// # use sandbox_core::{ExecutionResult, IsolationReport, Status};
    /// let mut result = ExecutionResult::new("demo", Status::Exited, IsolationReport::new("demo"));
    /// result.exit_code = Some(0);
    /// assert!(result.success());
    /// ```
    pub fn success(&self) -> bool {
        self.status == Status::Exited && self.exit_code == Some(0)
    }

    /// stdout as text, with invalid UTF-8 replaced by U+FFFD.
    pub fn stdout_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// stderr as text, with invalid UTF-8 replaced by U+FFFD.
    pub fn stderr_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }

    /// stdout as text, or an error when it is not valid UTF-8 (nothing is replaced).
    pub fn stdout_utf8(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.stdout)
    }

    /// stderr as text, or an error when it is not valid UTF-8.
    pub fn stderr_utf8(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.stderr)
    }

    /// The exit code a shell would report: the program's own when it exited,
    /// 124 on timeout (as `timeout(1)`), 137 when killed for memory, output or
    /// by an operator (128 + SIGKILL, as `docker run`), 128 + N for signal N.
    pub fn shell_exit_code(&self) -> i32 {
        match self.status {
            Status::Exited => self.exit_code.unwrap_or(1),
            Status::TimedOut => 124,
            Status::Signaled => 128 + self.signal.unwrap_or(9),
            Status::OomKilled | Status::OutputLimitExceeded | Status::Killed => 137,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_round_trips_through_json_text_or_base64() {
        let mut result =
            ExecutionResult::new("demo", Status::TimedOut, IsolationReport::new("demo"));
        result.stdout = "héllo ✓\n".into();
        result.stderr = vec![0xff, 0xfe, 0x00];
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["status"], "timed_out");
        assert_eq!(json["stdout"], "héllo ✓\n");
        assert_eq!(json["stderr"]["base64"], "//4A");
        let back: ExecutionResult = serde_json::from_value(json).unwrap();
        assert_eq!(back, result);
        assert_eq!(back.shell_exit_code(), 124);
        assert!(back.stderr_utf8().is_err());
        assert_eq!(back.stderr_text(), "\u{fffd}\u{fffd}\0");
    }
}
