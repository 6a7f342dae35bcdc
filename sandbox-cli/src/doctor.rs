//! What each backend can do on this machine: whether it is available and
//! which protections it would enforce.

use serde::Serialize;

use sandbox_core::{Executor, IsolationReport};
use sandbox_docker::DockerExecutor;
use sandbox_restricted::RestrictedExecutor;

/// One backend's state here.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct BackendDiagnosis {
    /// The backend's name.
    pub backend: String,
    /// Whether it can run code here now.
    pub available: bool,
    /// Why not, when it cannot (or what is wrong with its configuration).
    pub reason: Option<String>,
    /// The protections it would enforce, when available.
    pub isolation: Option<IsolationReport>,
}

/// Every backend's state, and what `auto` would pick.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Diagnosis {
    /// One entry per backend.
    pub backends: Vec<BackendDiagnosis>,
    /// The backend `--backend auto` would use.
    pub auto: Option<String>,
}

impl BackendDiagnosis {
    fn from_build<E: Executor>(backend: &str, built: Result<E, sandbox_core::Error>) -> Self {
        match built {
            Ok(executor) => BackendDiagnosis {
                backend: backend.to_owned(),
                available: true,
                reason: None,
                isolation: Some(executor.isolation()),
            },
            Err(error) => BackendDiagnosis {
                backend: backend.to_owned(),
                available: false,
                reason: Some(error.to_string()),
                isolation: None,
            },
        }
    }
}

/// Probes both backends. Builds nothing: a missing Docker image is reported,
/// not built.
///
/// ```no_run
/// # async fn demo() {
/// let diagnosis = sandbox_cli::doctor::diagnose().await;
/// for backend in &diagnosis.backends {
///     println!("{}: {}", backend.backend, if backend.available { "available" } else { "unavailable" });
/// }
/// # }
/// ```
pub async fn diagnose() -> Diagnosis {
    let docker = BackendDiagnosis::from_build(
        sandbox_docker::BACKEND,
        DockerExecutor::builder()
            .auto_build(false)
            .pool_size(0)
            .build()
            .await,
    );
    let restricted =
        BackendDiagnosis::from_build(sandbox_restricted::BACKEND, RestrictedExecutor::new());
    let auto = [&docker, &restricted]
        .into_iter()
        .find(|b| b.available)
        .map(|b| b.backend.clone());
    Diagnosis {
        backends: vec![docker, restricted],
        auto,
    }
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for backend in &self.backends {
            if backend.available {
                writeln!(f, "{}: available", backend.backend)?;
            } else {
                writeln!(f, "{}: unavailable", backend.backend)?;
            }
            if let Some(reason) = &backend.reason {
                writeln!(f, "  {reason}")?;
            }
            if let Some(isolation) = &backend.isolation {
                write!(f, "{isolation}")?;
            }
            writeln!(f)?;
        }
        match &self.auto {
            Some(backend) => writeln!(f, "auto picks: {backend}"),
            None => writeln!(f, "auto picks: nothing (no backend is available)"),
        }
    }
}
