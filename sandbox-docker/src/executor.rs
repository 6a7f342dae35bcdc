//! [`DockerExecutor`]: one fresh, locked-down container per execution.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sandbox_core::{
    Error, ExecutionRequest, ExecutionResult, Executor, IsolationReport, Limits, ResourceUsage,
    Session, SessionOptions, async_trait,
};

use crate::client::{Client, DaemonFacts};
use crate::config::DockerExecutorBuilder;
use crate::container::{self, Job, Outcome};
use crate::gc::{self, SandboxContainer};
use crate::launcher::{self, Payload};
use crate::owner::{LABEL_POOL, LABEL_SESSION};
use crate::pool::{Pool, PoolStats, Warm};
use crate::session::{self, DockerSession};
use crate::spec::{Mode, Spec, USER};
use crate::{BACKEND, archive, report};

/// Runs code in a fresh Docker container per execution.
///
/// Each container has no network (unless the limits ask for `bridge`), a
/// read-only root filesystem, a tmpfs at `/tmp` as its only writable place,
/// uid 1000 with every capability dropped and no-new-privileges, a seccomp
/// allowlist of its own ([`seccomp_profile`](crate::seccomp_profile)), cgroup limits on memory (no swap), CPU and processes,
/// and `docker-init` as PID 1. The code and input files are copied into an
/// anonymous volume at `/sandbox` (root-owned, read-only), so a remote
/// daemon works too. Output is capped while it streams; the timeout kills
/// the container; the container and its volume are removed on every path,
/// including a dropped future. [`Executor::isolation`] says what is in force.
///
/// # Warm pool
///
/// Starting a container takes most of an execution's time, so the executor
/// keeps [`pool_size`](DockerExecutorBuilder::pool_size) containers (2 by
/// default) created, attached and started ahead of time, from the same
/// specification, each waiting for one request; a request whose memory,
/// CPU, process, scratch and network limits are the executor's takes one
/// (other requests, or all when none is ready, run in a cold container).
/// Every execution still gets a fresh container, used once and then
/// removed; a background task refills the pool. The pool's containers are
/// removed by [`shutdown`](DockerExecutor::shutdown) or when the last clone
/// of the executor is dropped (which waits briefly for that).
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
/// executor.shutdown().await?;
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
    pool: Option<Arc<Pool>>,
    counters: Arc<Counters>,
}

/// Executions by kind, shared by an executor's clones.
#[derive(Debug, Default)]
struct Counters {
    pooled: AtomicU64,
    cold: AtomicU64,
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
        pool_size: usize,
    ) -> Self {
        let pool = (pool_size > 0).then(|| {
            let mut pool_labels = labels.clone();
            pool_labels.insert(LABEL_POOL.to_owned(), "1".to_owned());
            let argv = launcher::argv(USER);
            let env = Default::default();
            let body = Spec {
                mode: Mode::Pooled,
                image: &image,
                runtime: runtime.as_deref(),
                limits: &limits,
                daemon_cpus: facts.cpus,
                argv: &argv,
                env: &env,
                stdin: true,
                labels: pool_labels,
                seccomp: facts.seccomp,
            }
            .body();
            Arc::new(Pool::start(client.clone(), body, limits.clone(), pool_size))
        });
        DockerExecutor {
            client,
            image,
            runtime,
            limits,
            facts,
            labels,
            pool,
            counters: Arc::default(),
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

    /// How many containers the warm pool keeps ready (0: no pool).
    pub fn pool_size(&self) -> usize {
        self.pool.as_ref().map_or(0, |pool| pool.size())
    }

    /// What the warm pool is doing: its size, how many containers are
    /// ready, how many executions ran pooled and cold, its last failure.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), sandbox_core::Error> {
    /// let executor = sandbox_docker::DockerExecutor::builder().pool_size(4).build().await?;
    /// while executor.pool_stats().ready < 4 {
    ///     tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn pool_stats(&self) -> PoolStats {
        let mut stats = PoolStats {
            pooled_runs: self.counters.pooled.load(Ordering::Relaxed),
            cold_runs: self.counters.cold.load(Ordering::Relaxed),
            ..PoolStats::default()
        };
        if let Some(pool) = &self.pool {
            stats.size = pool.size();
            stats.ready = pool.ready();
            stats.last_error = pool.last_error();
        }
        stats
    }

    /// Closes the warm pool and waits until its containers are removed:
    /// those waiting at once, those in use when their executions end.
    /// The executor stays usable; every request then runs in a cold
    /// container. Dropping the last clone of the executor does the same
    /// (waiting at most 10 s); call this to wait without blocking a thread.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), sandbox_core::Error> {
    /// let executor = sandbox_docker::DockerExecutor::builder().build().await?;
    /// // ... executions ...
    /// executor.shutdown().await?;
    /// assert_eq!(executor.pool_stats().ready, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(&self) -> Result<(), Error> {
        if let Some(pool) = &self.pool {
            pool.shutdown().await;
        }
        Ok(())
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

    fn report(&self, limits: &Limits) -> IsolationReport {
        report::build(
            &self.facts,
            limits,
            self.runtime.as_deref(),
            self.pool.is_some(),
        )
    }

    /// Runs `request` in a ready pooled container, if its limits fit the
    /// pool and one is ready; `Ok(None)` otherwise.
    async fn execute_warm(
        &self,
        request: &ExecutionRequest,
        limits: &Limits,
    ) -> Result<Option<Outcome>, Error> {
        let Some(pool) = self.pool.as_deref().filter(|pool| pool.fits(limits)) else {
            return Ok(None);
        };
        // Checked before a container is taken: a bad request uses none.
        let layout = archive::layout(&request.program, &request.files)?;
        let payload = Payload::new(&layout, &request.env, request.stdin.as_deref())?;
        let Some(Warm {
            container,
            output,
            input,
        }) = pool.take()
        else {
            return Ok(None);
        };
        self.counters.pooled.fetch_add(1, Ordering::Relaxed);
        let outcome = container::drive_warm(
            &self.client,
            container.name(),
            output,
            input,
            payload,
            limits,
        )
        .await;
        pool.retire(container);
        outcome.map(Some)
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
        self.report(&self.limits)
    }

    async fn shutdown(&self) -> Result<(), Error> {
        DockerExecutor::shutdown(self).await
    }

    async fn execute(&self, request: ExecutionRequest) -> Result<ExecutionResult, Error> {
        request.validate()?;
        let limits = request.limits.build_over(&self.limits)?;
        let isolation = self.report(&limits);
        let outcome = match self.execute_warm(&request, &limits).await? {
            Some(outcome) => outcome,
            None => {
                self.counters.cold.fetch_add(1, Ordering::Relaxed);
                let workspace = archive::build(&request.program, &request.files)?;
                let body = Spec {
                    mode: Mode::Cold,
                    image: &self.image,
                    runtime: self.runtime.as_deref(),
                    limits: &limits,
                    daemon_cpus: self.facts.cpus,
                    argv: &workspace.argv,
                    env: &request.env,
                    stdin: request.stdin.is_some(),
                    labels: self.labels.clone(),
                    seccomp: self.facts.seccomp,
                }
                .body();
                let job = Job {
                    body,
                    tar: workspace.tar,
                    stdin: request.stdin,
                    limits: &limits,
                };
                container::run(&self.client, job).await?
            }
        };

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

    /// Opens a session: one container, isolated as a one-shot execution's,
    /// whose process is the shared session server, spoken to over its
    /// attached stdin and stdout. State (variables, imports, functions)
    /// lives on between cells. The session's limits hold for its whole
    /// life; `timeout` and `output_bytes` are each cell's defaults. Its
    /// working directory is the scratch space `/tmp`, where `put_file`
    /// writes: files count against the scratch and memory limits.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use sandbox_core::{Cell, Executor, SessionOptions};
    /// use sandbox_docker::DockerExecutor;
    ///
    /// # async fn demo() -> Result<(), sandbox_core::Error> {
    /// let executor = DockerExecutor::builder().build().await?;
    /// let session = executor
    ///     .open_session(SessionOptions::default().lifetime(Duration::from_secs(600)))
    ///     .await?;
    /// session.put_file("context.txt", b"a long context".to_vec()).await?;
    /// session.run("context = open('context.txt').read()".into()).await?;
    /// let result = session
    ///     .run(Cell::new("print(len(context))").timeout(Duration::from_secs(5)))
    ///     .await?;
    /// assert_eq!(result.stdout_text(), "14\n");
    /// session.close().await?;
    /// # Ok(())
    /// # }
    /// ```
    async fn open_session(&self, options: SessionOptions) -> Result<Box<dyn Session>, Error> {
        if options.lifetime.is_zero() || options.lifetime > session::MAX_LIFETIME {
            return Err(Error::InvalidLimit {
                name: "lifetime",
                reason: format!(
                    "{:?} is out of range; give a lifetime from 1ms to {} days",
                    options.lifetime,
                    session::MAX_LIFETIME.as_secs() / 86_400
                ),
            });
        }
        let limits = options.limits.build_over(&self.limits)?;
        // The same checks as a request's variables.
        let mut check = ExecutionRequest::python("");
        check.env = options.env.clone();
        check.validate()?;
        let id = session::new_id();
        let mut labels = self.labels.clone();
        labels.insert(LABEL_SESSION.to_owned(), id.clone());
        let argv = session::argv();
        let body = Spec {
            mode: Mode::Session,
            image: &self.image,
            runtime: self.runtime.as_deref(),
            limits: &limits,
            daemon_cpus: self.facts.cpus,
            argv: &argv,
            env: &options.env,
            stdin: true,
            labels,
            seccomp: self.facts.seccomp,
        }
        .body();
        let isolation = report::session(
            &self.facts,
            &limits,
            self.runtime.as_deref(),
            options.lifetime,
        );
        let session =
            DockerSession::open(&self.client, body, id, limits, options.lifetime, isolation)
                .await?;
        Ok(Box::new(session))
    }
}
