//! The calls that need `unsafe`: preparing the child between fork and exec,
//! the Landlock system calls, and reaping the child with its resource usage.
//!
//! Everything the child does is planned in the parent ([`ChildSetup`]): paths
//! are C strings, files are open descriptors, the seccomp programs are
//! compiled. Between fork and exec the child is single-threaded (so it may
//! enter new namespaces) and only makes raw system calls: it allocates
//! nothing and takes no lock.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::resource::{Resource, setrlimit};

/// A mount the child makes in its own mount namespace.
#[derive(Debug)]
pub(crate) enum MountStep {
    /// An empty, read-only tmpfs over a directory (hides what it holds).
    HideDir { target: CString },
    /// `/dev/null` bound over a file (makes it empty and unreadable as data).
    MaskFile { target: CString },
    /// A directory created inside a hidden one (a path component of an exposure).
    MakeDir { path: CString },
    /// A detached copy of the mount tree at `source`, taken before the hiding
    /// and kept in slot `slot` (at most [`MAX_EXPOSURES`]).
    CloneTree { slot: usize, source: CString },
    /// The copy in slot `slot` attached at `target`, bringing it back into view.
    AttachTree { slot: usize, target: CString },
    /// Makes a hidden directory's tmpfs read-only once exposures are in place.
    Seal { target: CString },
}

/// How many directories a mount plan may bring back into view.
pub(crate) const MAX_EXPOSURES: usize = 8;

/// How the child enters its namespaces.
#[derive(Debug)]
pub(crate) struct Namespaces {
    /// `CLONE_NEW*` flags for `unshare`.
    pub flags: libc::c_int,
    /// For a user namespace: the `uid_map` and `gid_map` contents.
    pub id_maps: Option<(CString, CString)>,
    /// Mounts to make (needs `CLONE_NEWNS` in `flags`).
    pub mounts: std::sync::Arc<crate::host::MountPlan>,
    /// Whether to mount a `/proc` of its own over the host's, showing only
    /// the processes of the program's own uid (`hidepid=2`; needs root, so
    /// that the program's uid differs from everyone else's).
    pub private_proc: bool,
}

/// The unprivileged identity a root caller's child takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// A Landlock ruleset for the child to enforce.
#[derive(Debug)]
pub(crate) struct ChildLandlock {
    pub ruleset: OwnedFd,
    /// The rights to grant beneath the child's own `/proc`, when it mounts one
    /// (the parent's rule names the host's `/proc`, which that mount hides).
    pub proc_rights: u64,
}

/// What the child applies to itself after fork and before exec, in this order.
#[derive(Debug, Default)]
pub(crate) struct ChildSetup {
    /// `cgroup.procs` files, open for writing, that the child joins.
    pub cgroup_procs: Vec<OwnedFd>,
    /// Namespaces and mounts.
    pub namespaces: Option<Namespaces>,
    /// An identity to switch to (root callers only).
    pub identity: Option<Identity>,
    /// The parent's pid, for the parent-death signal.
    pub parent: libc::pid_t,
    /// Resource limits, as (resource, soft = hard value).
    pub rlimits: Vec<(Resource, u64)>,
    /// A Landlock ruleset to enforce.
    pub landlock: Option<ChildLandlock>,
    /// seccomp programs to install, last.
    pub seccomp: Vec<seccompiler::BpfProgram>,
}

/// The error the child reports when a step fails (the kernel's errno).
fn last_error() -> io::Error {
    io::Error::last_os_error()
}

fn check(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 { Err(last_error()) } else { Ok(()) }
}

/// Writes `data` to the file at `path` (no allocation).
fn write_file(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: `data` is valid for `data.len()` bytes and `fd` is open.
    let written = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    if written < 0 {
        Err(last_error())
    } else {
        Ok(())
    }
}

fn mount(
    source: Option<&std::ffi::CStr>,
    target: &std::ffi::CStr,
    fstype: Option<&std::ffi::CStr>,
    flags: libc::c_ulong,
    data: Option<&std::ffi::CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&std::ffi::CStr>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is null or a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    };
    check(rc.into())
}

const OPEN_TREE_CLONE: u32 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

fn enter_namespaces(namespaces: &Namespaces) -> io::Result<()> {
    // SAFETY: unshare takes flags only; the child is single-threaded here.
    check(unsafe { libc::unshare(namespaces.flags) }.into())?;
    if let Some((uid_map, gid_map)) = &namespaces.id_maps {
        write_file(c"/proc/self/setgroups", b"deny")?;
        write_file(c"/proc/self/uid_map", uid_map.as_bytes())?;
        write_file(c"/proc/self/gid_map", gid_map.as_bytes())?;
    }
    if namespaces.mounts.steps.is_empty() && !namespaces.private_proc {
        return Ok(());
    }
    // Nothing mounted here propagates back to the host.
    mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    follow_mount_plan(&namespaces.mounts)?;
    if namespaces.private_proc {
        // Mounted over the host's /proc, so that Landlock's rule on it covers
        // this one too (a walk up from here passes through its root).
        mount(
            Some(c"proc"),
            c"/proc",
            Some(c"proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(c"hidepid=2"),
        )?;
    }
    Ok(())
}

fn follow_mount_plan(plan: &crate::host::MountPlan) -> io::Result<()> {
    let mut trees: [libc::c_int; MAX_EXPOSURES] = [-1; MAX_EXPOSURES];
    for step in &plan.steps {
        match step {
            MountStep::HideDir { target } => mount(
                Some(c"tmpfs"),
                target,
                Some(c"tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some(c"mode=0755,size=64k"),
            )?,
            MountStep::MaskFile { target } => {
                mount(Some(c"/dev/null"), target, None, libc::MS_BIND, None)?
            }
            MountStep::MakeDir { path } => {
                // SAFETY: `path` is a valid NUL-terminated string.
                if unsafe { libc::mkdir(path.as_ptr(), 0o755) } < 0 {
                    let error = last_error();
                    if error.raw_os_error() != Some(libc::EEXIST) {
                        return Err(error);
                    }
                }
            }
            MountStep::CloneTree { slot, source } => {
                // SAFETY: `source` is a valid NUL-terminated string; flags only.
                let fd = unsafe {
                    libc::syscall(
                        libc::SYS_open_tree,
                        libc::AT_FDCWD,
                        source.as_ptr(),
                        OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_RECURSIVE as u32,
                    )
                };
                check(fd)?;
                if let Some(entry) = trees.get_mut(*slot) {
                    *entry = fd as libc::c_int;
                }
            }
            MountStep::AttachTree { slot, target } => {
                let fd = trees.get(*slot).copied().unwrap_or(-1);
                // SAFETY: `fd` is a mount tree opened above, `target` a valid
                // NUL-terminated string, the empty path a valid string.
                check(unsafe {
                    libc::syscall(
                        libc::SYS_move_mount,
                        fd,
                        c"".as_ptr(),
                        libc::AT_FDCWD,
                        target.as_ptr(),
                        MOVE_MOUNT_F_EMPTY_PATH,
                    )
                })?;
            }
            MountStep::Seal { target } => mount(
                None,
                target,
                None,
                libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC,
                Some(c"mode=0755,size=64k"),
            )?,
        }
    }
    Ok(())
}

fn switch_identity(identity: Identity) -> io::Result<()> {
    // SAFETY: an empty group list; the pointer is not read when the size is 0.
    check(unsafe { libc::setgroups(0, std::ptr::null()) }.into())?;
    // SAFETY: plain id arguments.
    check(unsafe { libc::setresgid(identity.gid, identity.gid, identity.gid) }.into())?;
    // SAFETY: plain id arguments.
    check(unsafe { libc::setresuid(identity.uid, identity.uid, identity.uid) }.into())
}

fn child_setup(setup: &ChildSetup) -> io::Result<()> {
    nix::unistd::setsid().map_err(io::Error::from)?;
    for procs in &setup.cgroup_procs {
        // "0" names the writing process itself.
        // SAFETY: `procs` is an open descriptor and the buffer is one valid byte.
        check(unsafe { libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) } as libc::c_long)?;
    }
    if let Some(namespaces) = &setup.namespaces {
        enter_namespaces(namespaces)?;
        if let Some(landlock) = &setup.landlock
            && namespaces.private_proc
        {
            allow_in_child(landlock.ruleset.as_raw_fd(), c"/proc", landlock.proc_rights)?;
        }
    }
    if let Some(identity) = setup.identity {
        switch_identity(identity)?;
    }
    // After any identity change, which clears it: die with the parent.
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) }.into())?;
    // SAFETY: getppid has no arguments.
    if unsafe { libc::getppid() } != setup.parent {
        // The parent is already gone.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }.into())?;
    for &(resource, value) in &setup.rlimits {
        setrlimit(resource, value, value).map_err(io::Error::from)?;
    }
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }.into())?;
    if let Some(landlock) = &setup.landlock {
        // SAFETY: a raw system call on an open ruleset descriptor, flags 0.
        check(unsafe {
            libc::syscall(
                libc::SYS_landlock_restrict_self,
                landlock.ruleset.as_raw_fd(),
                0,
            )
        })?;
    }
    for program in &setup.seccomp {
        seccompiler::apply_filter(program).map_err(|_| last_error())?;
    }
    Ok(())
}

/// Makes `command` apply `setup` in its child between fork and exec.
pub(crate) fn apply_before_exec(command: &mut Command, setup: ChildSetup) {
    // SAFETY: the closure runs in the forked, single-threaded child before
    // exec. It only makes async-signal-safe system calls on data built before
    // the fork (C strings, open descriptors, compiled programs), allocates
    // nothing and takes no lock.
    unsafe {
        command.pre_exec(move || child_setup(&setup));
    }
}

/// The Landlock ABI version this kernel offers, or the errno that says why none.
pub(crate) fn landlock_abi() -> Result<u32, io::Error> {
    // SAFETY: a null attribute with size 0 and the VERSION flag only queries the ABI.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if abi < 0 {
        Err(last_error())
    } else {
        Ok(abi as u32)
    }
}

/// `struct landlock_ruleset_attr`.
#[repr(C)]
pub(crate) struct RulesetAttr {
    pub handled_access_fs: u64,
    pub handled_access_net: u64,
    pub scoped: u64,
}

/// `struct landlock_path_beneath_attr` (packed, as the kernel declares it).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Creates a Landlock ruleset handling `attr`'s rights.
pub(crate) fn landlock_create_ruleset(attr: &RulesetAttr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid struct of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// Allows `access` beneath the file or directory open as `parent`.
pub(crate) fn landlock_add_path_rule(
    ruleset: &OwnedFd,
    parent: &OwnedFd,
    access: u64,
) -> io::Result<()> {
    add_path_rule(ruleset.as_raw_fd(), parent.as_raw_fd(), access)
}

/// `landlock_add_rule` for a path-beneath rule (no allocation: the child uses it too).
fn add_path_rule(ruleset: RawFd, parent: RawFd, access: u64) -> io::Result<()> {
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd: parent,
    };
    // SAFETY: `attr` is a valid packed struct; both descriptors are open.
    check(unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            1u32, // LANDLOCK_RULE_PATH_BENEATH
            &attr as *const PathBeneathAttr,
            0u32,
        )
    })
}

/// Adds a rule granting `access` beneath `path`, from the child: for a
/// mount it made itself, which no rule built in the parent can name.
fn allow_in_child(ruleset: RawFd, path: &std::ffi::CStr, access: u64) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_error());
    }
    let added = add_path_rule(ruleset, fd, access);
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    added
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
