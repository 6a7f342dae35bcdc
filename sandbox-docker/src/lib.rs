//! The Docker backend of rlmkit-sandbox.
//!
//! [`DockerExecutor`] runs each [`ExecutionRequest`](sandbox_core::ExecutionRequest)
//! in a fresh container with no network, a read-only root, uid 1000 without
//! capabilities, cgroup limits, capped output and a timeout that kills the
//! container, and removes the container afterwards on every path. It talks
//! to the daemon through the Docker API (bollard), so `DOCKER_HOST=tcp://...`
//! works as well as the local socket.
//!
//! It keeps a warm pool of containers started ahead of time (each used by
//! one execution only, then removed), so a request skips the container
//! start: see [`DockerExecutor`] and [`DockerExecutorBuilder::pool_size`].
//! [`Executor::open_session`](sandbox_core::Executor::open_session) gives a
//! persistent Python session in one container of its own, spoken to in
//! frames over the container's attached stream.
//!
//! Around it: [`is_available`] / [`probe`] for a backend selector,
//! [`build_image`] to build the sandbox image through the API, and [`gc`] to
//! remove containers left behind by processes that died.
//!
//! ```no_run
//! use std::time::Duration;
//! use sandbox_core::{ExecutionRequest, Executor, Limits, SessionOptions, Status};
//! use sandbox_docker::DockerExecutor;
//!
//! # async fn demo() -> Result<(), sandbox_core::Error> {
//! let executor = DockerExecutor::builder()
//!     .limits(Limits::builder().timeout(Duration::from_secs(5)).build()?)
//!     .build()
//!     .await?;
//! let result = executor.execute(ExecutionRequest::python("print(6 * 7)")).await?;
//! assert_eq!(result.stdout_text(), "42\n");
//!
//! let result = executor.execute(ExecutionRequest::python("while True: pass")).await?;
//! assert_eq!(result.status, Status::TimedOut);
//!
//! let session = executor.open_session(SessionOptions::default()).await?;
//! session.run("x = 6 * 7".into()).await?;
//! assert_eq!(session.run("print(x)".into()).await?.stdout_text(), "42\n");
//! session.close().await?;
//! executor.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod archive;
mod client;
mod config;
mod container;
mod daemon;
mod executor;
mod gc;
mod image;
mod launcher;
mod output;
mod owner;
mod pool;
mod report;
mod seccomp;
mod session;
mod spec;

pub use config::{DEFAULT_POOL_SIZE, DockerExecutorBuilder, MAX_POOL_SIZE};
pub use daemon::{PING_TIMEOUT, is_available, probe};
pub use executor::DockerExecutor;
pub use gc::{SandboxContainer, gc};
pub use image::{BASE_IMAGE, BUILD_COMMAND, DEFAULT_IMAGE, DOCKERFILE, build_image};
pub use owner::{
    LABEL, LABEL_BOOT, LABEL_HOST, LABEL_OWNER, LABEL_OWNER_START, LABEL_POOL, LABEL_SESSION,
    LABEL_VERSION,
};
pub use pool::PoolStats;
pub use seccomp::seccomp_profile;

/// The backend's name in results, reports and errors.
pub const BACKEND: &str = "docker";
