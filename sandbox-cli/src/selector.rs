//! Picks a backend at run time: Docker where a daemon answers, the restricted
//! runner where Docker is absent, and never a silent fallback when a backend
//! was asked for by name.

use sandbox_core::{Error, Executor, Limits};
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

/// Builds the executor for `choice` with `limits` as its defaults.
///
/// `Auto` falls back to the restricted runner only when Docker is
/// unavailable ([`Error::is_unavailable`]); any other Docker error is returned.
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
    match choice {
        BackendChoice::Restricted => Ok(Selection {
            executor: Box::new(restricted(limits)?),
            notice: None,
        }),
        BackendChoice::Docker => Ok(Selection {
            executor: docker(limits).await?,
            notice: None,
        }),
        BackendChoice::Auto => match docker(limits.clone()).await {
            Ok(executor) => Ok(Selection {
                executor,
                notice: None,
            }),
            Err(error) if error.is_unavailable() => Ok(Selection {
                executor: Box::new(restricted(limits)?),
                notice: Some(format!("{error}; using the restricted runner")),
            }),
            Err(error) => Err(error),
        },
    }
}

fn restricted(limits: Limits) -> Result<RestrictedExecutor, Error> {
    RestrictedExecutor::builder().limits(limits).build()
}

async fn docker(_limits: Limits) -> Result<Box<dyn Executor>, Error> {
    Err(Error::unavailable(
        "docker",
        "this build has no Docker backend yet",
    ))
}
