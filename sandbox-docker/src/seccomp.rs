//! The seccomp profile every container gets: an allowlist of the system
//! calls ordinary programs make, in Docker's profile format.
//!
//! Docker's default profile allows every socket family, AF_VSOCK included,
//! and vsock is not network-namespaced: with network mode none a program
//! could still reach the hypervisor and local vsock services. This profile
//! allows only the families a sandboxed program needs (unix, inet, inet6,
//! netlink, all confined by the container's network namespace), and beyond
//! that refuses what the restricted runner refuses: namespaces, mounts,
//! ptrace and cross-process memory access, BPF, perf, io_uring, keyrings,
//! kernel modules and clock, swap, reboot and quota administration.
//!
//! A call outside the list fails with `EPERM`; `clone3` fails with `ENOSYS`,
//! so the C library falls back to `clone`, whose flags the profile can see.
//! Names a daemon's libseccomp does not know are skipped by the runtime, so
//! one profile serves x86_64 and aarch64 daemons alike. Calls made by
//! 32-bit code (other ABIs) match no architecture of the profile and fail.
//!
//! ```
//! let profile: serde_json::Value = serde_json::from_str(sandbox_docker::seccomp_profile()).unwrap();
//! assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
//! ```

use std::sync::LazyLock;

use serde_json::{Value, json};

/// Calls allowed whatever their arguments.
const ALLOWED: &[&str] = &[
    // Files and descriptors.
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "open",
    "openat",
    "openat2",
    "creat",
    "close",
    "close_range",
    "lseek",
    "dup",
    "dup2",
    "dup3",
    "pipe",
    "pipe2",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "syncfs",
    "sync_file_range",
    "truncate",
    "ftruncate",
    "fallocate",
    "fadvise64",
    "readahead",
    "sendfile",
    "splice",
    "tee",
    "vmsplice",
    "copy_file_range",
    "ioctl",
    "stat",
    "fstat",
    "lstat",
    "newfstatat",
    "statx",
    "statfs",
    "fstatfs",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getdents",
    "getdents64",
    "getcwd",
    "chdir",
    "fchdir",
    "mkdir",
    "mkdirat",
    "rmdir",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "umask",
    "utime",
    "utimes",
    "futimesat",
    "utimensat",
    "mknod",
    "mknodat",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "getxattrat",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "listxattrat",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "setxattrat",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "removexattrat",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    // Memory.
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "mincore",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "msync",
    "remap_file_pages",
    "membarrier",
    "memfd_create",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "map_shadow_stack",
    "mseal",
    "cachestat",
    // Processes and threads (`clone` and `personality` are below, by argument).
    "fork",
    "vfork",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "kill",
    "tkill",
    "tgkill",
    "pidfd_open",
    "pidfd_send_signal",
    "getpid",
    "getppid",
    "gettid",
    "getpgid",
    "getpgrp",
    "setpgid",
    "getsid",
    "setsid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "setfsuid",
    "setfsgid",
    "capget",
    "capset",
    "prctl",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "set_thread_area",
    "get_thread_area",
    "rseq",
    "futex",
    "futex_waitv",
    "futex_wake",
    "futex_wait",
    "futex_requeue",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getparam",
    "sched_setparam",
    "sched_getscheduler",
    "sched_setscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "sched_getattr",
    "sched_setattr",
    "getpriority",
    "setpriority",
    "ioprio_get",
    "ioprio_set",
    "getrlimit",
    "setrlimit",
    "prlimit64",
    "getrusage",
    "times",
    "sysinfo",
    "uname",
    "getcpu",
    "getrandom",
    "restart_syscall",
    "seccomp",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    "uretprobe",
    // Signals.
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigsuspend",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "pause",
    "alarm",
    "signalfd",
    "signalfd4",
    // Time.
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "time",
    "getitimer",
    "setitimer",
    "timer_create",
    "timer_settime",
    "timer_gettime",
    "timer_getoverrun",
    "timer_delete",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    // Waiting on descriptors.
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    // Sockets (`socket` and `socketpair` are below, by family).
    "bind",
    "listen",
    "accept",
    "accept4",
    "connect",
    "getsockname",
    "getpeername",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "setsockopt",
    "getsockopt",
    // IPC, private to the container's IPC namespace.
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    // Asynchronous I/O (io_uring is not allowed).
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_getevents",
    "io_pgetevents",
    "io_cancel",
];

/// The socket families `socket` may create: all are confined by the
/// container's network namespace (AF_VSOCK is not, and is left out).
pub(crate) const SOCKET_FAMILIES: [(&str, u64); 4] = [
    ("AF_UNIX", 1),
    ("AF_INET", 2),
    ("AF_INET6", 10),
    ("AF_NETLINK", 16),
];

/// `AF_UNIX`, the one family `socketpair` may use.
const AF_UNIX: u64 = 1;

/// The `clone` flags that create namespaces (`CLONE_NEWNS`, `CLONE_NEWCGROUP`,
/// `CLONE_NEWUTS`, `CLONE_NEWIPC`, `CLONE_NEWUSER`, `CLONE_NEWPID`,
/// `CLONE_NEWNET`): `clone` is allowed only with none of them.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// The `personality` values allowed: `PER_LINUX` and the query.
const PERSONALITIES: [u64; 2] = [0, 0xFFFF_FFFF];

/// The low 32 bits, where the kernel reads an `int` argument: comparing
/// through this mask means a value with junk in the high half cannot slip
/// past a rule the kernel would then read as a refused family.
const INT_MASK: u64 = 0xFFFF_FFFF;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The profile, in the JSON form Docker takes as `--security-opt seccomp=<json>`.
pub fn seccomp_profile() -> &'static str {
    static PROFILE: LazyLock<String> = LazyLock::new(|| profile().to_string());
    &PROFILE
}

/// An allow rule for `name` when argument `index`, masked by `mask`, equals `value`.
fn allow_when(name: &str, index: u32, mask: u64, value: u64) -> Value {
    json!({
        "names": [name],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}],
    })
}

fn profile() -> Value {
    let mut rules = vec![json!({"names": ALLOWED, "action": "SCMP_ACT_ALLOW"})];
    rules.extend(
        SOCKET_FAMILIES
            .iter()
            .map(|&(_, family)| allow_when("socket", 0, INT_MASK, family)),
    );
    rules.push(allow_when("socketpair", 0, INT_MASK, AF_UNIX));
    rules.push(allow_when("clone", 0, CLONE_NAMESPACE_FLAGS, 0));
    rules.extend(
        PERSONALITIES
            .iter()
            .map(|&persona| allow_when("personality", 0, INT_MASK, persona)),
    );
    rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": []},
        ],
        "syscalls": rules,
    })
}

/// How many calls the profile allows, unconditionally or by argument.
pub(crate) fn allowed_count() -> usize {
    ALLOWED.len() + ["socket", "socketpair", "clone", "personality"].len()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn rules() -> Vec<Value> {
        let profile: Value = serde_json::from_str(seccomp_profile()).unwrap();
        profile["syscalls"].as_array().unwrap().clone()
    }

    fn names(rule: &Value) -> Vec<&str> {
        rule["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect()
    }

    #[test]
    fn every_name_is_listed_once() {
        let mut seen = HashSet::new();
        for name in ALLOWED {
            assert!(seen.insert(name), "{name} is listed twice");
        }
    }

    #[test]
    fn dangerous_calls_are_not_allowed() {
        let allowed: HashSet<&str> = ALLOWED.iter().copied().collect();
        for call in [
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "pidfd_getfd",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "unshare",
            "setns",
            "open_tree",
            "move_mount",
            "fsopen",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "keyctl",
            "add_key",
            "request_key",
            "io_uring_setup",
            "io_uring_enter",
            "init_module",
            "finit_module",
            "kexec_load",
            "reboot",
            "swapon",
            "settimeofday",
            "clock_settime",
            "open_by_handle_at",
            "sync",
            "socket",
            "clone",
            "clone3",
        ] {
            assert!(!allowed.contains(call), "{call} is allowed unconditionally");
        }
    }

    #[test]
    fn sockets_are_allowed_by_family_and_never_vsock() {
        let families: Vec<u64> = rules()
            .iter()
            .filter(|rule| names(rule) == ["socket"])
            .map(|rule| {
                let arg = &rule["args"][0];
                assert_eq!(arg["op"], "SCMP_CMP_MASKED_EQ");
                assert_eq!(arg["value"], INT_MASK);
                arg["valueTwo"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(families, [1, 2, 10, 16]);
        assert!(!families.contains(&40), "AF_VSOCK must not be allowed");
    }

    #[test]
    fn clone_is_allowed_only_without_namespace_flags_and_clone3_says_enosys() {
        let rules = rules();
        let clone = rules.iter().find(|r| names(r) == ["clone"]).unwrap();
        assert_eq!(clone["args"][0]["value"], 0x7E02_0000_u64);
        assert_eq!(clone["args"][0]["valueTwo"], 0);
        let clone3 = rules.iter().find(|r| names(r) == ["clone3"]).unwrap();
        assert_eq!(clone3["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3["errnoRet"], 38);
    }
}
