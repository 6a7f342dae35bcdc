//! [`DockerExecutorBuilder`]: what an executor runs on and how it checks the daemon.

use std::collections::HashMap;

use sandbox_core::{Error, Limits};

use crate::BACKEND;
use crate::executor::DockerExecutor;
use crate::image::DEFAULT_IMAGE;
use crate::owner::{LABEL, Owner};

/// Configures a [`DockerExecutor`]; [`build`](Self::build) connects and checks.
///
/// ```no_run
/// use sandbox_core::Limits;
/// use sandbox_docker::DockerExecutor;
///
/// # async fn demo() -> Result<(), sandbox_core::Error> {
/// let executor = DockerExecutor::builder()
///     .limits(Limits::builder().memory("256m")?.build()?)
///     .auto_build(false)
///     .build()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DockerExecutorBuilder {
    image: Option<String>,
    limits: Option<Limits>,
    runtime: Option<String>,
    auto_build: bool,
    host: Option<String>,
    labels: HashMap<String, String>,
    pool_size: usize,
}

/// How many containers an executor keeps ready unless told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 2;

/// The largest warm pool an executor may keep.
pub const MAX_POOL_SIZE: usize = 64;

impl Default for DockerExecutorBuilder {
    fn default() -> Self {
        DockerExecutorBuilder {
            image: None,
            limits: None,
            runtime: None,
            auto_build: true,
            host: None,
            labels: HashMap::new(),
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

impl DockerExecutorBuilder {
    /// The image to run code in (default: [`DEFAULT_IMAGE`]). It needs
    /// `python3`, `sh` and a user with uid 1000.
    pub fn image(mut self, image: &str) -> Self {
        self.image = Some(image.to_owned());
        self
    }

    /// The limits for requests that do not override them (default: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The OCI runtime for the containers, e.g. `runsc` for gVisor (default:
    /// the daemon's). A runtime the daemon does not know fails
    /// [`build`](Self::build) with [`Error::ProtectionUnavailable`].
    pub fn runtime(mut self, runtime: &str) -> Self {
        self.runtime = Some(runtime.to_owned());
        self
    }

    /// Whether [`build`](Self::build) builds a missing image through the
    /// Docker API (default: true). When false, a missing image is
    /// [`Error::BackendUnavailable`].
    pub fn auto_build(mut self, enabled: bool) -> Self {
        self.auto_build = enabled;
        self
    }

    /// The daemon's address, `unix:///path/docker.sock`, `tcp://HOST:PORT` or
    /// `http://HOST:PORT` (default: `DOCKER_HOST`, else `unix:///var/run/docker.sock`).
    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }

    /// An extra label on every container, e.g. to tell sessions apart
    /// (labels under `rlmkit.sandbox` are the executor's own and cannot be set).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// How many containers to keep created, attached and started ahead of
    /// time (default [`DEFAULT_POOL_SIZE`]; 0 disables the pool). Each serves
    /// one execution whose container limits (memory, CPUs, processes,
    /// scratch, network) are the executor's, then is removed; a background
    /// task refills the pool. A one-shot tool that runs a single request
    /// should pass 0: the pool would only start containers nobody uses.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), sandbox_core::Error> {
    /// let cold_only = sandbox_docker::DockerExecutor::builder().pool_size(0).build().await?;
    /// assert_eq!(cold_only.pool_size(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Connects to the daemon and checks that it can run sandboxes.
    ///
    /// Pings the daemon (at most [`PING_TIMEOUT`](crate::PING_TIMEOUT)),
    /// agrees on an API version once, checks the runtime and that the image
    /// exists (building it when allowed), then starts filling the warm pool
    /// in the background.
    ///
    /// # Errors
    ///
    /// - [`Error::BackendUnavailable`]: no daemon answers, or the image is
    ///   missing and cannot be built (the message names `docker/build-image.sh`).
    /// - [`Error::Configuration`]: an image other than the sandbox image is missing.
    /// - [`Error::ProtectionUnavailable`]: the daemon does not know the runtime.
    /// - [`Error::InvalidLimit`], [`Error::InvalidRequest`]: bad limits or
    ///   labels, or a pool over [`MAX_POOL_SIZE`].
    /// - [`Error::Unsupported`]: a daemon address this build cannot use.
    pub async fn build(self) -> Result<DockerExecutor, Error> {
        let limits = self.limits.unwrap_or_default();
        limits.validate()?;
        if self.pool_size > MAX_POOL_SIZE {
            return Err(Error::invalid_request(format!(
                "a warm pool of {} containers is too large; keep at most {MAX_POOL_SIZE} (each is a running container), or 0 for none",
                self.pool_size
            )));
        }
        if let Some(key) = self.labels.keys().find(|k| k.starts_with(LABEL)) {
            return Err(Error::invalid_request(format!(
                "the label {key:?} is reserved for the executor; choose a key outside {LABEL}.*"
            )));
        }
        let image = self.image.unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
        if image.trim().is_empty() {
            return Err(Error::invalid_request("the image name is empty"));
        }

        let client = crate::daemon::connect(self.host.as_deref()).await?;
        let facts = client.facts().await?;
        if let Some(runtime) = &self.runtime {
            if !facts.runtimes.is_empty() && !facts.runtimes.contains(runtime) {
                return Err(Error::ProtectionUnavailable {
                    backend: BACKEND.to_owned(),
                    protection: format!("the {runtime:?} container runtime"),
                    reason: format!(
                        "the Docker daemon at {} knows only {}; install {runtime} and register it under \"runtimes\" in /etc/docker/daemon.json (then restart the daemon), or leave the runtime unset",
                        client.address(),
                        facts.runtimes.join(", ")
                    ),
                });
            }
        }
        crate::image::ensure(&client, &image, self.auto_build).await?;

        let mut labels = self.labels;
        labels.extend(Owner::current().labels());
        Ok(DockerExecutor::new(
            client,
            image,
            self.runtime,
            limits,
            facts,
            labels,
            self.pool_size,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing listens there: these errors come before any connection.
    const NOWHERE: &str = "tcp://127.0.0.1:1";

    #[tokio::test]
    async fn reserved_labels_and_bad_limits_fail_before_connecting() {
        let error = DockerExecutor::builder()
            .host(NOWHERE)
            .label("rlmkit.sandbox.owner", "1")
            .build()
            .await
            .unwrap_err();
        assert!(matches!(error, Error::InvalidRequest { .. }), "{error:?}");

        let error = DockerExecutor::builder()
            .host(NOWHERE)
            .pool_size(MAX_POOL_SIZE + 1)
            .build()
            .await
            .unwrap_err();
        assert!(error.to_string().contains("pool"), "{error:?}");

        let mut limits = Limits::default();
        limits.memory_bytes = 0;
        let error = DockerExecutor::builder()
            .host(NOWHERE)
            .limits(limits)
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::InvalidLimit { name: "memory", .. }),
            "{error:?}"
        );

        let error = DockerExecutor::builder()
            .host(NOWHERE)
            .build()
            .await
            .unwrap_err();
        assert!(error.is_unavailable(), "{error:?}");
    }
}
