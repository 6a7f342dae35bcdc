//! Picks a backend at run time: Docker where a daemon answers, the restricted
//! runner where Docker is absent, and never a silent fallback when a backend
//! was asked for by name.

use sandbox_core::{Error, Executor, Limits};
use sandbox_docker::DockerExecutor;
use sandbox_restricted::RestrictedExecutor;

/// Which backend to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendChoice {
    /// Docker when it is available, otherwise the restricted runner (saying why).
    #[default]
    Auto,
    /// Docker or an error; never falls back.
    Docker,
    /// The restricted plain-process runner.
    Restricted,
}

impl std::str::FromStr for BackendChoice {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "docker" => Ok(BackendChoice::Docker),
            "restricted" => Ok(BackendChoice::Restricted),
            _ => Err(Error::invalid_request(format!(
                "{text:?} is not a backend; use auto, docker or restricted"
            ))),
        }
    }
}

/// The executor picked, and what the user should be told about the choice.
#[derive(Debug)]
#[non_exhaustive]
pub struct Selection {
    /// The executor to run requests on.
    pub executor: Box<dyn Executor>,
    /// Why this backend was picked when it is not the one asked for by name
    /// (e.g. "Docker is unavailable: ..., using the restricted runner").
    pub notice: Option<String>,
}

/// What to select and how to configure the executor it builds.
///
/// ```no_run
/// use sandbox_cli::selector::{BackendChoice, Selector};
/// use sandbox_core::Limits;
///
/// # async fn demo() -> Result<(), sandbox_core::Error> {
/// let selection = Selector::new(BackendChoice::Docker)
///     .limits(Limits::builder().memory("1g")?.build()?)
///     .runtime("runsc")
///     .select()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Selector {
    choice: BackendChoice,
    limits: Limits,
    image: Option<String>,
    runtime: Option<String>,
    pool_size: Option<usize>,
}

impl Selector {
    /// A selector for `choice` with the default limits.
    pub fn new(choice: BackendChoice) -> Self {
        Selector {
            choice,
            ..Selector::default()
        }
    }

    /// The executor's limits for requests that do not override them.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The Docker image (default: [`sandbox_docker::DEFAULT_IMAGE`]).
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// The Docker runtime, e.g. `runsc` (default: the daemon's).
    pub fn runtime(mut self, runtime: impl Into<String>) -> Self {
        self.runtime = Some(runtime.into());
        self
    }

    /// How many Docker containers to keep warm (default: the backend's;
    /// 0 for a process that runs once).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = Some(size);
        self
    }

    /// Builds the executor.
    ///
    /// `Auto` falls back to the restricted runner only when Docker is
    /// unavailable ([`Error::is_unavailable`]: no daemon answers, or the image
    /// is missing and cannot be built); any other Docker error, such as an
    /// unknown runtime, is returned. `Docker` never falls back.
    pub async fn select(self) -> Result<Selection, Error> {
        match self.choice {
            BackendChoice::Restricted => Ok(Selection {
                executor: Box::new(self.restricted()?),
                notice: None,
            }),
            BackendChoice::Docker => Ok(Selection {
                executor: self.docker().await?,
                notice: None,
            }),
            BackendChoice::Auto => match self.docker().await {
                Ok(executor) => Ok(Selection {
                    executor,
                    notice: None,
                }),
                Err(error) if error.is_unavailable() => Ok(Selection {
                    executor: Box::new(self.restricted()?),
                    notice: Some(format!("{error}; using the restricted runner")),
                }),
                Err(error) => Err(error),
            },
        }
    }

    fn restricted(&self) -> Result<RestrictedExecutor, Error> {
        RestrictedExecutor::builder()
            .limits(self.limits.clone())
            .build()
    }

    async fn docker(&self) -> Result<Box<dyn Executor>, Error> {
        let mut builder = DockerExecutor::builder().limits(self.limits.clone());
        if let Some(image) = &self.image {
            builder = builder.image(image);
        }
        if let Some(runtime) = &self.runtime {
            builder = builder.runtime(runtime);
        }
        if let Some(size) = self.pool_size {
            builder = builder.pool_size(size);
        }
        Ok(Box::new(builder.build().await?))
    }
}

/// Builds the executor for `choice` with `limits` as its defaults; see
/// [`Selector::select`] for when `Auto` falls back.
///
/// ```no_run
/// use sandbox_cli::selector::{BackendChoice, select};
/// use sandbox_core::Limits;
///
/// # async fn demo() -> Result<(), sandbox_core::Error> {
/// let selection = select(BackendChoice::Auto, Limits::default()).await?;
/// if let Some(notice) = &selection.notice {
///     eprintln!("{notice}");
/// }
/// println!("running on {}", selection.executor.name());
/// # Ok(())
/// # }
/// ```
pub async fn select(choice: BackendChoice, limits: Limits) -> Result<Selection, Error> {
    Selector::new(choice).limits(limits).select().await
}
