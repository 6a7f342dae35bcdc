//! The plain-process backend of rlmkit-sandbox, for machines without Docker.
//!
//! [`RestrictedExecutor`] runs each request as a child process in a fresh
//! temporary directory, with a cleared environment, its own session, rlimits,
//! a per-execution cgroup where the machine allows one, capped output and a
//! timeout that kills the whole process tree. Its
//! [`isolation`](sandbox_core::Executor::isolation) report says exactly which
//! protections are in force on the machine at hand.
//!
//! Its [sessions](sandbox_core::Executor::open_session) keep one such
//! process per session, isolated alike, running the shared session server.

mod cgroup;
mod executor;
mod host;
mod identity;
mod landlock;
mod output;
mod process;
mod report;
mod seccomp;
mod session;
mod sys;
mod workspace;

pub use executor::{BACKEND, RestrictedExecutor, RestrictedExecutorBuilder};
pub use host::DEFAULT_DENY;
pub use identity::{DEFAULT_FIRST_UID, DEFAULT_UID_COUNT};
