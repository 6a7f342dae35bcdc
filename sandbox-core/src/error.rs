//! The one error type every backend returns.
//!
//! How a program ended (exit code, timeout, out of memory, ...) is never an
//! error: it is data in [`crate::ExecutionResult`]. An [`Error`] means the
//! sandbox itself could not do what was asked.

use std::error::Error as StdError;

/// A boxed error kept as the source of an [`Error`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why the sandbox could not run a request.
///
/// Every variant says what to do about it in its message, and keeps the
/// underlying error as its [`source`](std::error::Error::source).
///
/// ```
/// use sandbox_core::{Error, Limits};
///
/// let err = Limits::builder().memory_bytes(0).build().unwrap_err();
/// assert!(matches!(err, Error::InvalidLimit { name: "memory", .. }));
/// assert!(err.to_string().contains("memory"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend cannot be used on this machine (no daemon, no image, no kernel support).
    #[error("the {backend} backend is unavailable: {reason}")]
    BackendUnavailable {
        /// The backend's name, e.g. `docker`.
        backend: String,
        /// What is missing and what to do about it.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A limit is zero, negative, absurd or could not be parsed.
    #[error("invalid limit `{name}`: {reason}")]
    InvalidLimit {
        /// The limit's name, e.g. `memory`.
        name: &'static str,
        /// What is wrong and what a valid value looks like.
        reason: String,
    },

    /// The request itself is malformed (bad file path, empty command, bad variable name, ...).
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The backend does not offer what the request needs.
    #[error("the {backend} backend does not support {feature}")]
    Unsupported {
        /// The backend's name.
        backend: String,
        /// The feature that was asked for.
        feature: String,
    },

    /// The backend is present but configured wrongly (an image that does not
    /// exist, a daemon setting it cannot work with, ...). Never a reason to
    /// fall back to another backend.
    #[error("the {backend} backend is misconfigured: {reason}")]
    Configuration {
        /// The backend's name.
        backend: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// A session's process is gone, and its state with it.
    #[error("session {session} is lost: {reason}; open a new session")]
    SessionLost {
        /// The session's id.
        session: String,
        /// What ended it.
        reason: String,
    },

    /// A protection that was required could not be put in force.
    #[error("the {backend} backend cannot enforce {protection}: {reason}")]
    ProtectionUnavailable {
        /// The backend's name.
        backend: String,
        /// The protection, e.g. `network`.
        protection: String,
        /// Why it cannot be enforced here.
        reason: String,
    },

    /// The backend failed while running the request (daemon error, lost connection, ...).
    #[error("the {backend} backend failed: {message}")]
    Backend {
        /// The backend's name.
        backend: String,
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A local I/O operation of the sandbox failed (temporary directory, pipes, ...).
    #[error("{context}: {source}")]
    Io {
        /// What the sandbox was doing.
        context: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An [`Error::Io`] with a description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::InvalidRequest`].
    pub fn invalid_request(reason: impl Into<String>) -> Self {
        Error::InvalidRequest {
            reason: reason.into(),
        }
    }

    /// An [`Error::BackendUnavailable`] without a source.
    pub fn unavailable(backend: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::BackendUnavailable {
            backend: backend.into(),
            reason: reason.into(),
            source: None,
        }
    }

    /// An [`Error::Backend`] with its source.
    pub fn backend(
        backend: impl Into<String>,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            backend: backend.into(),
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The kind as a stable snake_case name, for JSON and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BackendUnavailable { .. } => "backend_unavailable",
            Error::InvalidLimit { .. } => "invalid_limit",
            Error::InvalidRequest { .. } => "invalid_request",
            Error::Unsupported { .. } => "unsupported",
            Error::Configuration { .. } => "configuration",
            Error::SessionLost { .. } => "session_lost",
            Error::ProtectionUnavailable { .. } => "protection_unavailable",
            Error::Backend { .. } => "backend",
            Error::Io { .. } => "io",
        }
    }

    /// Whether the error means the backend is absent (so a selector may fall back),
    /// as opposed to a misconfiguration or a failed run.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::BackendUnavailable { .. })
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
