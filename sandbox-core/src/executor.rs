//! The [`Executor`] trait every backend implements.

use async_trait::async_trait;

use crate::{
    Error, ExecutionRequest, ExecutionResult, IsolationReport, Limits, Session, SessionOptions,
};

/// Runs untrusted code in a sandbox.
///
/// Object safe: tools hold a `Box<dyn Executor>` and need not know which
/// backend is behind it. Each call to [`execute`](Executor::execute) is
/// independent (a fresh process tree or container, nothing shared), and
/// executors are `Send + Sync`, so one executor serves many concurrent calls.
///
/// ```no_run
/// use sandbox_core::{ExecutionRequest, Executor};
///
/// async fn run(executor: &dyn Executor) -> Result<(), sandbox_core::Error> {
///     let result = executor.execute(ExecutionRequest::python("print(6 * 7)")).await?;
///     assert_eq!(result.stdout_text(), "42\n");
///     Ok(())
/// }
/// ```
#[async_trait]
pub trait Executor: Send + Sync + std::fmt::Debug {
    /// The backend's short name, e.g. `docker` or `restricted`.
    fn name(&self) -> &str;

    /// The limits applied to requests that do not override them.
    fn limits(&self) -> &Limits;

    /// The protections this executor enforces on this machine.
    fn isolation(&self) -> IsolationReport;

    /// Runs one request to its end.
    ///
    /// Returns `Ok` however the program ended (see [`crate::Status`]); `Err`
    /// only when the sandbox could not run it. Dropping the returned future
    /// stops the program and cleans up after it.
    async fn execute(&self, request: ExecutionRequest) -> Result<ExecutionResult, Error>;

    /// Opens a persistent Python session (see [`Session`]).
    ///
    /// The default says the backend has no sessions.
    async fn open_session(&self, options: SessionOptions) -> Result<Box<dyn Session>, Error> {
        let _ = options;
        Err(Error::Unsupported {
            backend: self.name().to_owned(),
            feature: "sessions".to_owned(),
        })
    }

    /// Releases what the executor holds ahead of time (e.g. warm containers)
    /// and waits until it is gone. Dropping the executor releases it too, in
    /// the background; call this before the process exits. The default has
    /// nothing to release.
    async fn shutdown(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[async_trait]
impl<T: Executor + ?Sized> Executor for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn limits(&self) -> &Limits {
        (**self).limits()
    }

    fn isolation(&self) -> IsolationReport {
        (**self).isolation()
    }

    async fn execute(&self, request: ExecutionRequest) -> Result<ExecutionResult, Error> {
        (**self).execute(request).await
    }

    async fn open_session(&self, options: SessionOptions) -> Result<Box<dyn Session>, Error> {
        (**self).open_session(options).await
    }

    async fn shutdown(&self) -> Result<(), Error> {
        (**self).shutdown().await
    }
}

#[async_trait]
impl<T: Executor + ?Sized> Executor for std::sync::Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn limits(&self) -> &Limits {
        (**self).limits()
    }

    fn isolation(&self) -> IsolationReport {
        (**self).isolation()
    }

    async fn execute(&self, request: ExecutionRequest) -> Result<ExecutionResult, Error> {
        (**self).execute(request).await
    }

    async fn open_session(&self, options: SessionOptions) -> Result<Box<dyn Session>, Error> {
        (**self).open_session(options).await
    }

    async fn shutdown(&self) -> Result<(), Error> {
        (**self).shutdown().await
    }
}
