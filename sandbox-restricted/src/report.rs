//! The isolation report: what the restricted runner enforces on this machine.

use sandbox_core::units::format_bytes;
use sandbox_core::{IsolationReport, Limits, NetworkMode, Protection, ProtectionState};

use crate::executor::BACKEND;
use crate::host::Host;

/// What is in force for one execution (or would be, for the executor's report).
#[derive(Debug, Clone, Copy)]
pub(crate) struct InForce {
    pub cgroup: bool,
    pub namespaces: bool,
    pub landlock: Option<LandlockLevel>,
    pub seccomp: bool,
    /// Whether `/proc` shows only the program's own processes.
    pub private_proc: bool,
    /// Whether the working directory is a size-capped tmpfs of its own.
    pub scratch_tmpfs: bool,
    /// The uid the program runs as, when it is one of the sandbox's own.
    pub sandbox_uid: Option<SandboxUid>,
}

/// The sandbox's own uid: one execution's, or any of a range (for the executor's report).
#[derive(Debug, Clone, Copy)]
pub(crate) enum SandboxUid {
    /// The uid of one execution.
    One(u32),
    /// Any uid of `first..end`.
    Range(u32, u32),
}

impl std::fmt::Display for SandboxUid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SandboxUid::One(uid) => write!(f, "uid {uid}"),
            SandboxUid::Range(first, end) => write!(f, "a uid of its own from {first}..{end}"),
        }
    }
}

/// What the Landlock ruleset covers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LandlockLevel {
    pub abi: u32,
    pub tcp_refused: bool,
    pub scoped: bool,
}

fn reason<T>(probe: &Result<T, String>) -> String {
    match probe {
        Ok(_) => "not applied to this execution".to_owned(),
        Err(reason) => reason.clone(),
    }
}

/// The report for `limits` with `in_force`.
pub(crate) fn build(host: &Host, limits: &Limits, in_force: InForce) -> IsolationReport {
    use ProtectionState::{Enforced, NotEnforced, Partial};

    let mut report = IsolationReport::new(BACKEND);
    let memory = format_bytes(limits.memory_bytes);
    let no_cgroup = format!("cgroups unavailable: {}", reason(&host.cgroups));
    let kind = host
        .cgroups
        .as_ref()
        .map(|c| c.describe())
        .unwrap_or("cgroup");
    let group_kill_reaches_all = in_force.cgroup || in_force.seccomp;

    let timeout = match (in_force.cgroup, in_force.seccomp) {
        (true, _) => (
            Enforced,
            format!(
                "wall clock {:?}, then every process of the execution's {kind} is killed",
                limits.timeout
            ),
        ),
        (false, true) => (
            Enforced,
            format!(
                "wall clock {:?}, then the process group is killed; seccomp keeps every descendant in it (setsid and setpgid refused)",
                limits.timeout
            ),
        ),
        (false, false) => (
            Partial,
            format!(
                "wall clock {:?}, then the process group is killed; a process that calls setsid escapes ({no_cgroup}; seccomp: {})",
                limits.timeout,
                reason(&host.seccomp)
            ),
        ),
    };
    report.set(Protection::Timeout, timeout.0, timeout.1);

    if in_force.cgroup {
        report.set(
            Protection::Memory,
            Enforced,
            format!("{kind} memory limit {memory} for the whole process tree, no swap"),
        );
        let has_cpu = host.cgroups.as_ref().is_ok_and(|c| c.has_cpu());
        if has_cpu {
            report.set(
                Protection::Cpu,
                Enforced,
                format!("{kind} CPU quota of {} CPUs", limits.cpus),
            );
        } else {
            report.set(
                Protection::Cpu,
                Partial,
                "RLIMIT_CPU caps CPU seconds per process; no cpu controller for a rate limit",
            );
        }
        report.set(
            Protection::Processes,
            Enforced,
            format!("{kind} pids limit of {} processes and threads", limits.pids),
        );
    } else {
        report.set(
            Protection::Memory,
            Partial,
            format!("RLIMIT_DATA {memory} per process, not for the tree ({no_cgroup})"),
        );
        report.set(
            Protection::Cpu,
            Partial,
            format!("RLIMIT_CPU caps CPU seconds per process; no rate limit ({no_cgroup})"),
        );
        let processes = match in_force.sandbox_uid {
            Some(uid) => (
                Enforced,
                format!(
                    "RLIMIT_NPROC {} for {uid}, which this execution alone uses",
                    limits.pids
                ),
            ),
            None if host.uid == 0 => (
                NotEnforced,
                format!("root is exempt from RLIMIT_NPROC ({no_cgroup})"),
            ),
            None => (
                Partial,
                format!(
                    "RLIMIT_NPROC: {} more processes for uid {}, shared with the caller's own ({no_cgroup})",
                    limits.pids, host.uid
                ),
            ),
        };
        report.set(Protection::Processes, processes.0, processes.1);
    }
    report.set(
        Protection::Cleanup,
        if group_kill_reaches_all { Enforced } else { Partial },
        if group_kill_reaches_all {
            "every process is killed (and dies with the caller) and the working directory removed at the end"
        } else {
            "the process group is killed and the working directory removed; a process that calls setsid survives"
        },
    );
    report.set(
        Protection::Output,
        Enforced,
        format!(
            "{} of stdout and of stderr kept while streaming; the program is stopped past the cap",
            format_bytes(limits.output_bytes)
        ),
    );
    let scratch = format_bytes(limits.scratch_bytes);
    if in_force.scratch_tmpfs {
        report.set(
            Protection::Scratch,
            Enforced,
            format!(
                "the working directory, TMPDIR and the code are a tmpfs of their own: {scratch} for what the program writes, besides its code and input files (pages count against the memory limit); RLIMIT_FSIZE {scratch} per file"
            ),
        );
    } else {
        report.set(
            Protection::Scratch,
            Partial,
            format!(
                "RLIMIT_FSIZE {scratch} per file; the total written is not capped ({})",
                reason(&host.scratch_tmpfs)
            ),
        );
    }

    let network = if limits.network != NetworkMode::None {
        (
            NotEnforced,
            "network requested: the host's network is reachable".to_owned(),
        )
    } else {
        let tcp = in_force.landlock.is_some_and(|l| l.tcp_refused);
        match (in_force.namespaces, in_force.seccomp) {
            (true, true) => (
                Enforced,
                format!(
                    "a network namespace with only a downed loopback, and seccomp refuses every socket family but AF_UNIX{}",
                    if tcp { "; Landlock refuses TCP" } else { "" }
                ),
            ),
            (true, false) => (
                Partial,
                format!(
                    "a network namespace with only a downed loopback; no socket filter (seccomp: {})",
                    reason(&host.seccomp)
                ),
            ),
            (false, true) => (
                Partial,
                format!(
                    "seccomp refuses every socket family but AF_UNIX; no network namespace ({})",
                    reason(&host.namespaces)
                ),
            ),
            (false, false) => (
                NotEnforced,
                format!(
                    "the host's network is reachable (namespaces: {}; seccomp: {})",
                    reason(&host.namespaces),
                    reason(&host.seccomp)
                ),
            ),
        }
    };
    report.set(Protection::Network, network.0, network.1);

    let filesystem = match (in_force.landlock, in_force.namespaces) {
        (Some(l), true) => (
            Enforced,
            format!(
                "Landlock ABI {} allows reading the system and the interpreter and writing only the working directory, TMPDIR and /dev/null; a mount namespace hides the deny list",
                l.abi
            ),
        ),
        (Some(l), false) => (
            Partial,
            format!(
                "Landlock ABI {} allows reading the system and writing only the working directory; denied paths are not hidden ({})",
                l.abi,
                reason(&host.namespaces)
            ),
        ),
        (None, true) => (
            Partial,
            format!(
                "a mount namespace hides the deny list; everything else the user may touch is reachable (Landlock: {})",
                reason(&host.landlock_abi)
            ),
        ),
        (None, false) => (
            NotEnforced,
            format!(
                "the program may read and write whatever its user may (Landlock: {}; namespaces: {})",
                reason(&host.landlock_abi),
                reason(&host.namespaces)
            ),
        ),
    };
    report.set(Protection::Filesystem, filesystem.0, filesystem.1);

    let user = match in_force.sandbox_uid {
        Some(uid) => (
            Enforced,
            format!(
                "runs as {uid} (gid alike), which no account uses, without supplementary groups"
            ),
        ),
        None if host.uid == 0 => (
            NotEnforced,
            format!("runs as root ({})", reason(&host.uids)),
        ),
        None => (
            Partial,
            format!("runs as the caller's uid {}, not root", host.uid),
        ),
    };
    report.set(Protection::User, user.0, user.1);
    report.set(
        Protection::Environment,
        Enforced,
        "the host's environment is cleared; only PATH, HOME, LANG, TMPDIR, thread caps and the request's variables are set",
    );
    let visibility = if in_force.private_proc {
        "a /proc of its own (hidepid=2): other users' processes, the caller's included, do not appear in it".to_owned()
    } else {
        format!(
            "no PID namespace: the host's processes appear in /proc and their command lines can be read, not their memory, environment or files ({})",
            reason(&host.private_proc)
        )
    };
    report.set(
        Protection::ProcessGroup,
        Enforced,
        format!(
            "its own session and process group, killed as a whole; killed when the caller dies; {visibility}"
        ),
    );
    let syscalls = if in_force.seccomp {
        let scope = if in_force.landlock.is_some_and(|l| l.scoped) {
            "; Landlock scopes signals and abstract sockets to the sandbox"
        } else {
            ""
        };
        (
            Enforced,
            format!(
                "seccomp refuses ptrace, process_vm_*, mount, namespaces, bpf, perf_event_open, keyrings, userfaultfd, io_uring, modules, reboot, setsid and setpgid; no_new_privs{scope}"
            ),
        )
    } else {
        (
            NotEnforced,
            format!(
                "no seccomp filter ({}); no_new_privs only",
                reason(&host.seccomp)
            ),
        )
    };
    report.set(Protection::Syscalls, syscalls.0, syscalls.1);
    report
}
