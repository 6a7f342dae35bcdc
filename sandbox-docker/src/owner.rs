//! The labels that mark a sandbox container and name the process that owns
//! it, and the test of whether that process still lives.

use std::collections::HashMap;

/// Every container this crate creates carries this label (value `1`).
pub const LABEL: &str = "rlmkit.sandbox";
/// The pid of the process that created the container.
pub const LABEL_OWNER: &str = "rlmkit.sandbox.owner";
/// The owner's start time (clock ticks since boot, from `/proc/PID/stat`), telling a reused pid apart.
pub const LABEL_OWNER_START: &str = "rlmkit.sandbox.owner.start";
/// The owner's host name: other hosts' containers are never judged here.
pub const LABEL_HOST: &str = "rlmkit.sandbox.host";
/// The owner host's boot id: a container from an earlier boot has no live owner.
pub const LABEL_BOOT: &str = "rlmkit.sandbox.boot";
/// The version of this crate that created the container.
pub const LABEL_VERSION: &str = "rlmkit.sandbox.version";
/// Marks a container of an executor's warm pool (value `1`): created and
/// started ahead of time, used by exactly one execution, then removed.
pub const LABEL_POOL: &str = "rlmkit.sandbox.pool";
/// Marks the container of a session (value: the session's id).
pub const LABEL_SESSION: &str = "rlmkit.sandbox.session";

/// This process, as the labels name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub pid: u32,
    pub start: Option<String>,
    pub host: Option<String>,
    pub boot: Option<String>,
}

impl Owner {
    /// The current process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start: start_time(pid),
            host: read_trimmed("/proc/sys/kernel/hostname"),
            boot: read_trimmed("/proc/sys/kernel/random/boot_id"),
        }
    }

    /// The labels for a container this process creates.
    pub fn labels(&self) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (LABEL.to_owned(), "1".to_owned()),
            (LABEL_OWNER.to_owned(), self.pid.to_string()),
            (
                LABEL_VERSION.to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
        ]);
        for (key, value) in [
            (LABEL_OWNER_START, &self.start),
            (LABEL_HOST, &self.host),
            (LABEL_BOOT, &self.boot),
        ] {
            if let Some(value) = value {
                labels.insert(key.to_owned(), value.clone());
            }
        }
        labels
    }
}

/// Whether the owner named by a container's labels is gone, as seen from this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// The owner runs: leave the container alone.
    Alive,
    /// The owner is gone: the container is a leftover.
    Dead,
    /// Not ours to judge: no owner label, or another host's container.
    Unknown,
}

/// Judges the owner of a container with `labels`, from `here` (this process's view).
pub(crate) fn liveness(labels: &HashMap<String, String>, here: &Owner) -> Liveness {
    let Some(pid) = labels.get(LABEL_OWNER).and_then(|p| p.parse::<u32>().ok()) else {
        return Liveness::Unknown;
    };
    if let (Some(theirs), Some(ours)) = (labels.get(LABEL_HOST), &here.host) {
        if theirs != ours {
            return Liveness::Unknown;
        }
    }
    if let (Some(theirs), Some(ours)) = (labels.get(LABEL_BOOT), &here.boot) {
        if theirs != ours {
            return Liveness::Dead;
        }
    }
    if pid == here.pid {
        return Liveness::Alive;
    }
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Liveness::Dead;
    }
    match (labels.get(LABEL_OWNER_START), start_time(pid)) {
        (Some(theirs), Some(now)) if *theirs != now => Liveness::Dead,
        _ => Liveness::Alive,
    }
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past its last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19).map(str::to_owned)
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_labels_name_it() {
        let here = Owner::current();
        let labels = here.labels();
        assert_eq!(labels[LABEL], "1");
        assert_eq!(labels[LABEL_OWNER], std::process::id().to_string());
        assert!(here.start.is_some());
        assert_eq!(liveness(&labels, &here), Liveness::Alive);
    }

    #[test]
    fn a_finished_child_is_dead_and_a_reused_pid_is_told_apart() {
        let here = Owner::current();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut labels = here.labels();
        labels.insert(LABEL_OWNER.into(), pid.to_string());
        assert_eq!(liveness(&labels, &here), Liveness::Dead);

        // pid 1 lives, but did not start when this label says.
        labels.insert(LABEL_OWNER.into(), "1".into());
        labels.insert(LABEL_OWNER_START.into(), "999999999999".into());
        assert_eq!(liveness(&labels, &here), Liveness::Dead);
        labels.remove(LABEL_OWNER_START);
        assert_eq!(liveness(&labels, &here), Liveness::Alive);
    }

    #[test]
    fn other_hosts_and_unlabelled_containers_are_left_alone() {
        let here = Owner::current();
        let mut labels = here.labels();
        labels.insert(LABEL_OWNER.into(), "4194304".into());
        labels.insert(LABEL_HOST.into(), "some-other-host-4711".into());
        assert_eq!(liveness(&labels, &here), Liveness::Unknown);
        assert_eq!(liveness(&HashMap::new(), &here), Liveness::Unknown);
    }
}
