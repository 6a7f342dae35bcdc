//! The isolation report: what the restricted runner enforces on this machine.

use sandbox_core::units::format_bytes;
use sandbox_core::{IsolationReport, Limits, NetworkMode, Protection, ProtectionState};

use crate::cgroup::CgroupRoot;
use crate::executor::BACKEND;

/// What the runner can put in force on this machine.
#[derive(Debug, Clone)]
pub(crate) struct HostCapabilities {
    /// The cgroup hierarchy, or why none can be used.
    pub cgroups: Result<CgroupRoot, String>,
    /// The effective uid of the caller.
    pub uid: u32,
}

/// The report for `limits` when `cgroup` (if any) is in force.
pub(crate) fn build(
    host: &HostCapabilities,
    limits: &Limits,
    cgroup: Option<&CgroupRoot>,
) -> IsolationReport {
    use ProtectionState::{Enforced, NotEnforced, Partial};

    let no_cgroup = match (&host.cgroups, cgroup) {
        (Err(reason), _) => format!("cgroups unavailable: {reason}"),
        (Ok(_), None) => "the execution's cgroup could not be created".to_owned(),
        (Ok(_), Some(_)) => String::new(),
    };
    let memory = format_bytes(limits.memory_bytes);
    let mut report = IsolationReport::new(BACKEND);

    match cgroup {
        Some(root) => {
            let kind = root.describe();
            report.set(
                Protection::Timeout,
                Enforced,
                format!(
                    "wall clock {:?}, then every process of the execution's {kind} is killed",
                    limits.timeout
                ),
            );
            report.set(
                Protection::Memory,
                Enforced,
                format!("{kind} memory limit {memory} for the whole process tree, no swap"),
            );
            if root.has_cpu() {
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
            report.set(
                Protection::Cleanup,
                Enforced,
                "every process of the cgroup is killed and the working directory removed at the end",
            );
        }
        None => {
            report.set(
                Protection::Timeout,
                Partial,
                format!(
                    "wall clock {:?}, then the process group is killed; a process that calls setsid escapes ({no_cgroup})",
                    limits.timeout
                ),
            );
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
            if host.uid == 0 {
                report.set(
                    Protection::Processes,
                    NotEnforced,
                    format!("root is exempt from RLIMIT_NPROC ({no_cgroup})"),
                );
            } else {
                report.set(
                    Protection::Processes,
                    Partial,
                    format!(
                        "RLIMIT_NPROC: {} more processes for uid {}, shared with the caller's own ({no_cgroup})",
                        limits.pids, host.uid
                    ),
                );
            }
            report.set(
                Protection::Cleanup,
                Partial,
                "the process group is killed and the working directory removed; a process that calls setsid survives",
            );
        }
    }
    report.set(
        Protection::Output,
        Enforced,
        format!(
            "{} of stdout and of stderr kept while streaming; the program is stopped past the cap",
            format_bytes(limits.output_bytes)
        ),
    );
    report.set(
        Protection::Scratch,
        Partial,
        format!(
            "RLIMIT_FSIZE {} per file; the total written is not capped",
            format_bytes(limits.scratch_bytes)
        ),
    );
    let network = match limits.network {
        NetworkMode::None => {
            "the host's network is reachable: no network namespace or socket filter is applied"
        }
        _ => "network requested: the host's network is reachable",
    };
    report.set(Protection::Network, NotEnforced, network);
    report.set(
        Protection::Filesystem,
        NotEnforced,
        format!(
            "the program may read and write whatever uid {} may; only its working directory is fresh",
            host.uid
        ),
    );
    let user = if host.uid == 0 {
        "runs as root, the caller's user".to_owned()
    } else {
        format!("runs as the caller's uid {}", host.uid)
    };
    report.set(Protection::User, NotEnforced, user);
    report.set(
        Protection::Environment,
        Enforced,
        "the host's environment is cleared; only PATH, HOME, LANG, TMPDIR, thread caps and the request's variables are set",
    );
    report.set(
        Protection::ProcessGroup,
        Enforced,
        "its own session and process group, killed as a whole",
    );
    report.set(
        Protection::Syscalls,
        NotEnforced,
        "no seccomp filter is applied",
    );
    report
}
