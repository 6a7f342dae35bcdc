//! The contract every rlmkit-sandbox backend meets.
//!
//! An [`Executor`] runs an [`ExecutionRequest`] (Python source, a shell script
//! or a command, with stdin, environment variables, input files and
//! [`Limits`]) and returns an [`ExecutionResult`]: the output, how the program
//! ended, and the [`IsolationReport`] of what was in force. Failures of the
//! sandbox itself are one [`Error`] type.
//!
//! This crate depends on no backend and no OS-specific crate, so tools can
//! program against it alone and pick a backend at run time.
//!
//! ```no_run
//! use std::time::Duration;
//! use sandbox_core::{ExecutionRequest, Executor, Limits, Status};
//!
//! async fn demo(executor: Box<dyn Executor>) -> Result<(), sandbox_core::Error> {
//!     let request = ExecutionRequest::python("while True: pass")
//!         .limits(Limits::builder().timeout(Duration::from_secs(1)));
//!     let result = executor.execute(request).await?;
//!     assert_eq!(result.status, Status::TimedOut);
//!     Ok(())
//! }
//! ```

mod bytes;
mod error;
mod executor;
mod isolation;
mod limits;
mod request;
mod result;
pub mod session;
pub mod units;

pub use error::{BoxError, Error, Result};
pub use executor::Executor;
pub use isolation::{IsolationReport, Protection, ProtectionState, ProtectionStatus};
pub use limits::{Limits, LimitsBuilder, NetworkMode};
pub use request::{ExecutionRequest, InputFile, Program, check_relative_path};
pub use result::{ExecutionResult, ResourceUsage, Status};
pub use session::{Cell, Session, SessionOptions, SessionState};

/// Re-exported so backends implement [`Executor`] with the same macro version.
pub use async_trait::async_trait;
