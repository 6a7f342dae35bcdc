//! The isolation report: what a Docker container enforces for given limits
//! on the daemon at hand.

use sandbox_core::units::format_bytes;
use sandbox_core::{IsolationReport, Limits, NetworkMode, Protection, ProtectionState};

use crate::BACKEND;
use crate::client::DaemonFacts;
use crate::seccomp::{self, SOCKET_FAMILIES};
use crate::spec::{MAX_OPEN_FILES, SCRATCH_DIR, SHM_BYTES, USER, granted_cpus};

/// The report for containers run with `limits` (and `runtime`, if any) on
/// a daemon with `facts`; `pooled` when the executor keeps a warm pool, so
/// a request may run in a container started ahead of time.
pub(crate) fn build(
    facts: &DaemonFacts,
    limits: &Limits,
    runtime: Option<&str>,
    pooled: bool,
) -> IsolationReport {
    use ProtectionState::{Enforced, NotEnforced, Partial};

    let memory = format_bytes(limits.memory_bytes);
    let scratch = format_bytes(limits.scratch_bytes);
    let runtime_name = runtime
        .map(str::to_owned)
        .or_else(|| facts.default_runtime.clone())
        .unwrap_or_else(|| "runc".to_owned());
    let gvisor = runtime_name.contains("runsc") || runtime_name.contains("gvisor");
    let mut report = IsolationReport::new(BACKEND);

    report.set(
        Protection::Timeout,
        Enforced,
        format!(
            "wall clock {:?}, then the container is killed (SIGKILL to every process of its PID namespace)",
            limits.timeout
        ),
    );
    report.set(
        Protection::Memory,
        Enforced,
        format!("cgroup memory limit {memory} for the whole container, swap disabled (memory-swap = memory); tmpfs pages count too"),
    );
    let cpus = granted_cpus(limits, facts.cpus);
    let cpu_detail = if cpus < limits.cpus {
        format!(
            "CFS quota of {cpus} CPUs (the {} CPUs asked for, capped at the daemon's count)",
            limits.cpus
        )
    } else {
        format!("CFS quota of {cpus} CPUs")
    };
    report.set(Protection::Cpu, Enforced, cpu_detail);
    report.set(
        Protection::Processes,
        Enforced,
        format!(
            "cgroup pids limit of {} processes and threads (docker-init included); {MAX_OPEN_FILES} open files per process",
            limits.pids
        ),
    );
    report.set(
        Protection::Output,
        Enforced,
        format!(
            "{} of stdout and of stderr kept while streaming from the attach stream; the container is killed past the cap; the daemon logs nothing",
            format_bytes(limits.output_bytes)
        ),
    );
    report.set(
        Protection::Scratch,
        Enforced,
        format!(
            "tmpfs {SCRATCH_DIR} of {scratch} (noexec, nosuid, nodev) and a {} /dev/shm, both counted against the memory limit; RLIMIT_FSIZE {scratch}; everything else is read-only",
            format_bytes(SHM_BYTES as u64)
        ),
    );
    let families = SOCKET_FAMILIES
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ");
    match limits.network {
        NetworkMode::None if gvisor => report.set(
            Protection::Network,
            Enforced,
            "network mode none, networking disabled: a loopback interface only; gVisor offers no AF_VSOCK",
        ),
        NetworkMode::None if facts.seccomp => report.set(
            Protection::Network,
            Enforced,
            format!(
                "network mode none, networking disabled: a loopback interface only; the seccomp profile allows only the socket families {families}, all confined to the container's network namespace, so AF_VSOCK (which no network namespace covers) is refused"
            ),
        ),
        NetworkMode::None => report.set(
            Protection::Network,
            Partial,
            "network mode none, networking disabled: a loopback interface only; but the daemon applies no seccomp profile, so code can create AF_VSOCK sockets, which reach the host's vsock services where it has them (virtual machines); --runtime runsc closes that",
        ),
        _ => report.set(
            Protection::Network,
            NotEnforced,
            "bridge network requested: the program reaches whatever Docker's default bridge reaches",
        ),
    }
    report.set(
        Protection::Filesystem,
        Enforced,
        format!(
            "read-only root filesystem; no host path is mounted; code and input files are root-owned and read-only in an anonymous volume at /sandbox; only {SCRATCH_DIR} is writable"
        ),
    );
    let user = if facts.userns {
        format!(
            "runs as {USER} with no capabilities and no-new-privileges; the daemon remaps users into a user namespace"
        )
    } else if facts.rootless {
        format!(
            "runs as {USER} with no capabilities and no-new-privileges, under a rootless daemon"
        )
    } else {
        format!(
            "runs as {USER} with every capability dropped and no-new-privileges; not user-namespaced: uid 1000 is the host's uid 1000"
        )
    };
    report.set(Protection::User, Enforced, user);
    report.set(
        Protection::Environment,
        Enforced,
        "only the image's variables, HOME and TMPDIR (/tmp), LANG, thread caps and the request's variables",
    );
    report.set(
        Protection::ProcessGroup,
        Enforced,
        "its own PID namespace with docker-init as PID 1; killed as a whole",
    );
    let syscalls = match (gvisor, facts.seccomp) {
        (true, _) => (
            Enforced,
            format!(
                "the {runtime_name} runtime (gVisor) serves every system call in its own kernel"
            ),
        ),
        (false, true) => (
            Enforced,
            format!(
                "rlmkit's seccomp profile under {runtime_name}: an allowlist of {} system calls (socket families {families} only; no namespaces, mounts, ptrace, BPF, perf, io_uring or keyrings); all capabilities dropped; no-new-privileges",
                seccomp::allowed_count()
            ),
        ),
        (false, false) => (
            NotEnforced,
            format!(
                "the daemon applies no seccomp profile; only dropped capabilities and no-new-privileges ({runtime_name})"
            ),
        ),
    };
    report.set(Protection::Syscalls, syscalls.0, syscalls.1);
    report.set(
        Protection::Cleanup,
        Partial,
        "the container and its volume are force-removed at the end and on errors; when the caller drops the run, or the removal fails, a cleanup thread removes them (retrying for about 30 s); if this process dies mid-run, the container runs until its program ends and stays until `gc` (labels rlmkit.sandbox and rlmkit.sandbox.owner) removes it",
    );
    if pooled {
        describe_pool(&mut report);
    }
    report
}

/// The report for a session's container: the same container as a
/// one-shot execution's, with the session's per-cell timeout and output
/// cap, its lifetime and its files described.
pub(crate) fn session(
    facts: &DaemonFacts,
    limits: &Limits,
    runtime: Option<&str>,
    lifetime: std::time::Duration,
) -> IsolationReport {
    use ProtectionState::{Enforced, Partial};

    let mut report = build(facts, limits, runtime, false);
    report.set(
        Protection::Timeout,
        Enforced,
        format!(
            "per cell ({:?} unless the cell says otherwise): the session server interrupts the cell (an exception in it) and the session lives on; a cell that does not stop within {:?} more has its container killed and the session is lost; the whole session ends after {lifetime:?}",
            limits.timeout,
            crate::session::CELL_GRACE
        ),
    );
    report.set(
        Protection::Output,
        Enforced,
        format!(
            "per cell, {} of stdout and of stderr: the server captures a cell's output in files in {SCRATCH_DIR} (so a flood is bounded by the scratch space) and sends back at most the cap",
            format_bytes(limits.output_bytes)
        ),
    );
    report.set(
        Protection::Filesystem,
        Enforced,
        format!(
            "read-only root filesystem; no host path is mounted; the working directory is the scratch space {SCRATCH_DIR}, where put_file writes and the only writable place"
        ),
    );
    report.set(
        Protection::Cleanup,
        Partial,
        format!(
            "one container per session, removed with its volume by close, by dropping the session, when the session is lost and at the end of its lifetime ({lifetime:?}); if this process dies, its server sees stdin end and exits, and `gc` (labels rlmkit.sandbox and rlmkit.sandbox.session) removes the container"
        ),
    );
    report
}

/// What differs when a request runs in a container of the warm pool.
fn describe_pool(report: &mut IsolationReport) {
    let notes = [
        (
            Protection::Timeout,
            "; in a pooled container the clock starts when the code is handed over",
        ),
        (
            Protection::Filesystem,
            "; in a pooled container the launcher writes them there (same owner, modes and paths) before the program starts",
        ),
        (
            Protection::User,
            "; a pooled container (created and started ahead of time, used by one execution only) starts a launcher as root holding only CAP_SETUID, CAP_SETGID and CAP_SETPCAP, which writes the code and input files, empties the capability bounding set and becomes 1000:1000 with no capabilities before the program starts; its docker-init stays root with those three capabilities, out of the program's reach",
        ),
        (
            Protection::Cleanup,
            "; a used pooled container is removed in the background right after its execution; waiting pooled containers (label rlmkit.sandbox.pool) are removed when the executor is shut down or dropped, and their launcher exits when this process's connection closes, so `gc` removes them after a crash",
        ),
    ];
    for (protection, note) in notes {
        if let Some(entry) = report.get(protection).cloned() {
            report.set(protection, entry.state, format!("{}{note}", entry.detail));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protection_is_reported() {
        let facts = DaemonFacts {
            seccomp: true,
            cpus: Some(2),
            ..DaemonFacts::default()
        };
        let report = build(&facts, &Limits::default(), None, false);
        for protection in [
            Protection::Timeout,
            Protection::Memory,
            Protection::Cpu,
            Protection::Processes,
            Protection::Output,
            Protection::Scratch,
            Protection::Network,
            Protection::Filesystem,
            Protection::User,
            Protection::Environment,
            Protection::ProcessGroup,
            Protection::Syscalls,
            Protection::Cleanup,
        ] {
            assert!(report.get(protection).is_some(), "{protection:?}");
        }
        // No IP network, and the profile refuses AF_VSOCK.
        assert!(report.is_enforced(Protection::Network));
        assert!(
            report
                .get(Protection::Network)
                .unwrap()
                .detail
                .contains("AF_VSOCK")
        );
        assert!(report.is_enforced(Protection::Syscalls));

        // Without seccomp at the daemon, AF_VSOCK stays open: partial, and said.
        let no_seccomp = DaemonFacts::default();
        let report = build(&no_seccomp, &Limits::default(), None, false);
        assert_eq!(
            report.state(Protection::Network),
            Some(ProtectionState::Partial)
        );
        assert!(
            report
                .get(Protection::Network)
                .unwrap()
                .detail
                .contains("AF_VSOCK")
        );

        let bridge = Limits::builder()
            .network(NetworkMode::Bridge)
            .build()
            .unwrap();
        let no_seccomp = DaemonFacts::default();
        let report = build(&no_seccomp, &bridge, None, false);
        assert_eq!(
            report.state(Protection::Network),
            Some(ProtectionState::NotEnforced)
        );
        assert_eq!(
            report.state(Protection::Syscalls),
            Some(ProtectionState::NotEnforced)
        );

        let pooled = build(&facts, &Limits::default(), None, true);
        let user = pooled.get(Protection::User).unwrap();
        assert_eq!(user.state, ProtectionState::Enforced);
        assert!(user.detail.contains("CAP_SETPCAP"), "{}", user.detail);
    }
}
