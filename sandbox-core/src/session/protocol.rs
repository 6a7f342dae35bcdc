//! The frames the host and [`REPL_SOURCE`](super::REPL_SOURCE) exchange.
//!
//! Each frame is a 4-byte big-endian length, a JSON header of that length,
//! then as many raw bytes as the header announces (`size` for files,
//! `stdout_size + stderr_size` for a cell's output).

use serde::{Deserialize, Serialize};

/// The largest header either side accepts.
pub const MAX_HEADER: usize = 1 << 20;

/// A request to the session server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request<'a> {
    /// Run a cell.
    Run {
        /// Python source.
        code: &'a str,
        /// The cell's timeout.
        timeout_ms: u64,
        /// The cap on stdout and on stderr.
        output_bytes: u64,
    },
    /// Write a file; `size` raw bytes follow the header.
    Put {
        /// Where.
        path: &'a str,
        /// How many bytes follow.
        size: u64,
    },
    /// Read a file.
    Get {
        /// Which.
        path: &'a str,
    },
    /// End the server.
    Close,
}

/// A response header from the session server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Response {
    /// Whether the request succeeded.
    #[serde(default)]
    pub ok: bool,
    /// Why not.
    #[serde(default)]
    pub error: Option<String>,
    /// Set on the greeting the server sends once it runs.
    #[serde(default)]
    pub ready: bool,
    /// For a cell: `exited` or `timed_out`.
    #[serde(default)]
    pub status: Option<String>,
    /// For a cell: its exit code (1 after an exception).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// For a cell: stdout bytes that follow.
    #[serde(default)]
    pub stdout_size: u64,
    /// For a cell: stderr bytes that follow stdout.
    #[serde(default)]
    pub stderr_size: u64,
    /// For a cell: stdout bytes dropped past the cap.
    #[serde(default)]
    pub stdout_dropped: u64,
    /// For a cell: stderr bytes dropped past the cap.
    #[serde(default)]
    pub stderr_dropped: u64,
    /// For a file: its size (bytes that follow, for `get`).
    #[serde(default)]
    pub size: u64,
}

impl Response {
    /// The result of a cell the server answered: its status, exit code and
    /// output (`stdout` and `stderr` as read after the header).
    pub fn cell_result(
        &self,
        backend: &str,
        isolation: crate::IsolationReport,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        duration: std::time::Duration,
    ) -> crate::ExecutionResult {
        let status = match self.status.as_deref() {
            Some("timed_out") => crate::Status::TimedOut,
            _ => crate::Status::Exited,
        };
        let mut result = crate::ExecutionResult::new(backend, status, isolation);
        result.exit_code = self.exit_code;
        result.stdout = stdout;
        result.stdout_truncated = self.stdout_dropped > 0;
        result.stdout_dropped_bytes = self.stdout_dropped;
        result.stderr = stderr;
        result.stderr_truncated = self.stderr_dropped > 0;
        result.stderr_dropped_bytes = self.stderr_dropped;
        result.duration = duration;
        result
    }

    /// Raw bytes that follow this header: a cell's output, or a file for `get`.
    pub fn payload_size(&self, for_get: bool) -> u64 {
        if for_get && self.ok {
            self.size
        } else {
            self.stdout_size + self.stderr_size
        }
    }
}

/// A request as a frame: length, then JSON.
///
/// ```
/// use sandbox_core::session::protocol::{Request, encode};
///
/// let frame = encode(&Request::Get { path: "out.csv" });
/// let length = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
/// assert_eq!(length, frame.len() - 4);
/// ```
pub fn encode(request: &Request<'_>) -> Vec<u8> {
    // Serializing this enum of strings and integers cannot fail.
    let json = serde_json::to_vec(request).unwrap_or_default();
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
    frame.extend_from_slice(&json);
    frame
}

/// The header length a frame starts with, refused past [`MAX_HEADER`].
pub fn header_length(prefix: [u8; 4]) -> Result<usize, crate::Error> {
    let length = u32::from_be_bytes(prefix) as usize;
    if length > MAX_HEADER {
        return Err(crate::Error::invalid_request(format!(
            "the session server sent a {length}-byte header; the protocol is out of step"
        )));
    }
    Ok(length)
}

/// Parses a response header.
pub fn decode(header: &[u8]) -> Result<Response, crate::Error> {
    serde_json::from_slice(header).map_err(|e| {
        crate::Error::invalid_request(format!("the session server sent a bad header: {e}"))
    })
}
