//! The few calls that need `unsafe`: preparing the child between fork and
//! exec, and reaping it with its resource usage.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::resource::{Resource, setrlimit};

/// What the child applies to itself after fork and before exec.
#[derive(Debug, Default)]
pub(crate) struct ChildSetup {
    /// Resource limits, as (resource, soft = hard value).
    pub rlimits: Vec<(Resource, u64)>,
    /// `cgroup.procs` files, open for writing, that the child joins.
    pub cgroup_procs: Vec<OwnedFd>,
}

/// Makes `command` start its child in a new session, in the given cgroups,
/// under the given resource limits.
pub(crate) fn apply_before_exec(command: &mut Command, setup: ChildSetup) {
    let pre_exec = move || -> io::Result<()> {
        nix::unistd::setsid().map_err(io::Error::from)?;
        for procs in &setup.cgroup_procs {
            // "0" names the writing process itself.
            nix::unistd::write(procs.as_fd(), b"0").map_err(io::Error::from)?;
        }
        for &(resource, value) in &setup.rlimits {
            setrlimit(resource, value, value).map_err(io::Error::from)?;
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec. It only makes
    // async-signal-safe system calls (setsid, write, setrlimit) on data built
    // before the fork, allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(pre_exec);
    }
}

/// How a reaped child ended, and what it used.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reaped {
    /// The raw wait status.
    pub status: i32,
    /// User plus system CPU time of the child and the descendants it reaped, in ms.
    pub cpu_time_ms: u64,
    /// Peak resident set size of the child, in bytes.
    pub max_rss_bytes: u64,
}

impl Reaped {
    /// The exit code, when the child exited normally.
    pub fn exit_code(&self) -> Option<i32> {
        libc::WIFEXITED(self.status).then(|| libc::WEXITSTATUS(self.status))
    }

    /// The signal that ended the child, if one did.
    pub fn signal(&self) -> Option<i32> {
        libc::WIFSIGNALED(self.status).then(|| libc::WTERMSIG(self.status))
    }
}

/// Blocks until child `pid` ends, reaps it and returns its status and usage.
pub(crate) fn wait_for_child(pid: i32) -> io::Result<Reaped> {
    let mut status = 0;
    // SAFETY: all-zero bytes are a valid `rusage` (a struct of integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid, writable locals that outlive the call.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    let millis = |t: libc::timeval| (t.tv_sec as u64) * 1000 + (t.tv_usec as u64) / 1000;
    Ok(Reaped {
        status,
        cpu_time_ms: millis(usage.ru_utime) + millis(usage.ru_stime),
        max_rss_bytes: (usage.ru_maxrss as u64) * 1024,
    })
}
