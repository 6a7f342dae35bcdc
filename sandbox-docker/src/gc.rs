//! Finding sandbox containers by label, and removing those whose owner
//! process is gone (left behind by a crash, a `kill -9` or a lost daemon).

use std::collections::BTreeMap;

use sandbox_core::Error;
use serde::Serialize;

use crate::client::{Client, Labelled};
use crate::owner::{self, LABEL, LABEL_OWNER, Liveness, Owner};

/// A container created by this crate, as the daemon lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SandboxContainer {
    /// The container's id.
    pub id: String,
    /// The container's name, e.g. `rlmkit-sandbox-4242-...`.
    pub name: String,
    /// Docker's state: `created`, `running`, `exited`, ...
    pub state: String,
    /// The pid of the process that created it (label `rlmkit.sandbox.owner`).
    pub owner_pid: Option<u32>,
    /// All its labels.
    pub labels: BTreeMap<String, String>,
}

impl From<Labelled> for SandboxContainer {
    fn from(found: Labelled) -> Self {
        SandboxContainer {
            owner_pid: found.labels.get(LABEL_OWNER).and_then(|p| p.parse().ok()),
            id: found.id,
            name: found.name,
            state: found.state,
            labels: found.labels.into_iter().collect(),
        }
    }
}

/// Removes the sandbox containers (label `rlmkit.sandbox`) whose owner process
/// no longer exists on this host, from the daemon at `DOCKER_HOST` or the
/// local socket, and returns them.
///
/// A container is a leftover when its owner pid (label
/// `rlmkit.sandbox.owner`) has no `/proc/PID` here, belongs to a later
/// process (its start time differs), or ran before this host's last boot.
/// Containers of live processes, of other hosts (label
/// `rlmkit.sandbox.host`) and without an owner label are left alone.
///
/// ```no_run
/// # async fn demo() -> Result<(), sandbox_core::Error> {
/// for container in sandbox_docker::gc().await? {
///     println!("removed {} (owner {:?})", container.name, container.owner_pid);
/// }
/// # Ok(())
/// # }
/// ```
pub async fn gc() -> Result<Vec<SandboxContainer>, Error> {
    let client = crate::daemon::connect(None).await?;
    collect(&client).await
}

/// Every sandbox container on the daemon, whoever owns it.
pub(crate) async fn list(client: &Client) -> Result<Vec<SandboxContainer>, Error> {
    Ok(client
        .list_labelled(LABEL)
        .await?
        .into_iter()
        .map(SandboxContainer::from)
        .collect())
}

/// Removes the leftovers among the daemon's sandbox containers.
pub(crate) async fn collect(client: &Client) -> Result<Vec<SandboxContainer>, Error> {
    let here = Owner::current();
    let mut removed = Vec::new();
    let mut failures = Vec::new();
    for container in client.list_labelled(LABEL).await? {
        if owner::liveness(&container.labels, &here) != Liveness::Dead {
            continue;
        }
        match client.remove(&container.id).await {
            Ok(()) => removed.push(SandboxContainer::from(container)),
            Err(error) => failures.push(format!("{}: {error}", container.name)),
        }
    }
    if !failures.is_empty() {
        return Err(Error::Backend {
            backend: crate::BACKEND.to_owned(),
            message: format!(
                "removed {} leftover container(s) but could not remove {}: {}",
                removed.len(),
                failures.len(),
                failures.join("; ")
            ),
            source: None,
        });
    }
    Ok(removed)
}
