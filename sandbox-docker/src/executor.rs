//! [`DockerExecutor`]: one fresh, locked-down container per execution.

use std::collections::HashMap;

use sandbox_core::{
    Error, ExecutionRequest, ExecutionResult, Executor, IsolationReport, Limits, ResourceUsage,
    async_trait,
};

use crate::client::{Client, DaemonFacts};
use crate::config::DockerExecutorBuilder;
use crate::container::{self, Job};
use crate::gc::{self, SandboxContainer};
use crate::spec::Spec;
use crate::{BACKEND, archive, report};

/// Runs code in a fresh Docker container per execution.
///
/// Each container has no network (unless the limits ask for `bridge`), a
/// read-only root filesystem, a tmpfs at `/tmp` as its only writable place,
/// uid 1000 with every capability dropped and no-new-privileges, Docker's
/// seccomp profile, cgroup limits on memory (no swap), CPU and processes,
/// and `docker-init` as PID 1. The code and input files are copied into an
/// anonymous volume at `/sandbox` (root-owned, read-only), so a remote
/// daemon works too. Output is capped while it streams; the timeout kills
/// the container; the container and its volume are removed on every path,
/// including a dropped future. [`Executor::isolation`] says what is in force.
///
/// ```no_run
/// use sandbox_core::{ExecutionRequest, Executor};
/// use sandbox_docker::DockerExecutor;
///
/// # async fn demo() -> Result<(), sandbox_core::Error> {
/// let executor = DockerExecutor::builder().build().await?;
/// let request = ExecutionRequest::python("import numpy as np; print(np.arange(5).sum())");
/// let result = executor.execute(request).await?;
/// assert_eq!(result.stdout_text(), "10\n");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DockerExecutor {
    client: Client,
    image: String,
    runtime: Option<String>,
    limits: Limits,
    facts: DaemonFacts,
    labels: HashMap<String, String>,
}

impl DockerExecutor {
    /// A builder with every default.
    pub fn builder() -> DockerExecutorBuilder {
        DockerExecutorBuilder::default()
    }

    pub(crate) fn new(
        client: Client,
        image: String,
        runtime: Option<String>,
        limits: Limits,
        facts: DaemonFacts,
        labels: HashMap<String, String>,
    ) -> Self {
        DockerExecutor {
            client,
            image,
            runtime,
            limits,
            facts,
            labels,
        }
    }

    /// The image code runs in.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The OCI runtime asked for, if any.
    pub fn runtime(&self) -> Option<&str> {
        self.runtime.as_deref()
    }

    /// The Docker daemon's address.
    pub fn host(&self) -> &str {
        self.client.address()
    }

    /// Every sandbox container on this executor's daemon (label
    /// `rlmkit.sandbox`), whoever created it.
    pub async fn containers(&self) -> Result<Vec<SandboxContainer>, Error> {
        gc::list(&self.client).await
    }

    /// Removes the leftover sandbox containers on this executor's daemon, as
    /// [`gc`](crate::gc()) does, and returns them.
    pub async fn gc(&self) -> Result<Vec<SandboxContainer>, Error> {
        gc::collect(&self.client).await
    }
}

#[async_trait]
impl Executor for DockerExecutor {
    fn name(&self) -> &str {
        BACKEND
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn isolation(&self) -> IsolationReport {
        report::build(&self.facts, &self.limits, self.runtime.as_deref())
    }

    async fn execute(&self, request: ExecutionRequest) -> Result<ExecutionResult, Error> {
        request.validate()?;
        let limits = request.limits.build_over(&self.limits)?;
        let workspace = archive::build(&request.program, &request.files)?;
        let isolation = report::build(&self.facts, &limits, self.runtime.as_deref());
        let body = Spec {
            image: &self.image,
            runtime: self.runtime.as_deref(),
            limits: &limits,
            daemon_cpus: self.facts.cpus,
            argv: &workspace.argv,
            env: &request.env,
            stdin: request.stdin.is_some(),
            labels: self.labels.clone(),
        }
        .body();
        let job = Job {
            body,
            tar: workspace.tar,
            stdin: request.stdin,
            limits: &limits,
        };
        let outcome = container::run(&self.client, job).await?;

        let mut result = ExecutionResult::new(BACKEND, outcome.status, isolation);
        result.exit_code = outcome.exit_code;
        result.signal = outcome.signal;
        result.stdout = outcome.stdout.bytes;
        result.stdout_truncated = outcome.stdout.truncated;
        result.stdout_dropped_bytes = outcome.stdout.dropped;
        result.stderr = outcome.stderr.bytes;
        result.stderr_truncated = outcome.stderr.truncated;
        result.stderr_dropped_bytes = outcome.stderr.dropped;
        result.duration = outcome.duration;
        // The container's cgroup is gone once it stopped: nothing is cheaply known.
        result.usage = ResourceUsage::default();
        Ok(result)
    }
}
