//! What this machine lets the runner enforce, probed once when an executor
//! is built: cgroups, namespaces, Landlock, seccomp, identities; and the
//! plans built from it that every execution reuses.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::cgroup::CgroupRoot;
use crate::identity::UidPool;
use crate::sys::{self, ChildSetup, MAX_EXPOSURES, MountStep, Namespaces};

/// Paths hidden from sandboxed code by default: homes and credentials.
pub const DEFAULT_DENY: &[&str] = &[
    "/root",
    "/home",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh",
    "/etc/ssl/private",
];

/// Directories whose contents a program needs to read and run.
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/sys/devices/system/cpu",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
];

/// What the runner was asked to use.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    pub cgroups: bool,
    pub namespaces: bool,
    pub landlock: bool,
    pub seccomp: bool,
    pub drop_privileges: bool,
    pub scratch_tmpfs: bool,
    pub uid_range: (u32, u32),
    pub deny: Vec<PathBuf>,
}

/// The Python interpreter and the directories of its installation.
#[derive(Debug, Clone)]
pub(crate) struct Interpreter {
    pub executable: PathBuf,
    pub prefixes: Vec<PathBuf>,
    /// A directory above the installation that only its owner may enter
    /// (e.g. `/root`): another uid reaches it only through a mount namespace.
    pub private_ancestor: Option<PathBuf>,
}

/// The mount namespace's plan, shared by every execution.
#[derive(Debug)]
pub(crate) struct MountPlan {
    pub steps: Vec<MountStep>,
}

/// What this machine offers, each with the reason when it does not.
#[derive(Debug)]
pub(crate) struct Host {
    pub uid: u32,
    pub gid: u32,
    pub cgroups: Result<CgroupRoot, String>,
    /// Namespaces (network and mount), and whether they need a user namespace.
    pub namespaces: Result<NamespaceKind, String>,
    pub landlock_abi: Result<u32, String>,
    pub seccomp: Result<Arc<Vec<seccompiler::BpfProgram>>, String>,
    pub uids: Result<Arc<UidPool>, String>,
    pub interpreter: Result<Interpreter, String>,
    /// Read-only paths of the system, the interpreter and `/etc` (less the deny list).
    pub readable: Vec<PathBuf>,
    pub mounts: Arc<MountPlan>,
    /// A `/proc` of the program's own, showing only its uid's processes.
    pub private_proc: Result<(), String>,
    /// A size-capped tmpfs of its own for each working directory.
    pub scratch_tmpfs: Result<(), String>,
}

/// The reason a protection turned off by its builder option is not in force.
fn disabled<T>() -> Result<T, String> {
    Err("disabled by configuration".to_owned())
}

/// How the child gets its namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NamespaceKind {
    /// As root: `unshare` directly.
    Privileged,
    /// Not root: inside a new user namespace mapping the caller's own ids.
    User,
}

impl Host {
    /// Probes the machine for what `wanted` asks, with working directories in `temp_dir`.
    pub fn probe(wanted: &Wanted, python: Option<&Path>, temp_dir: &Path) -> Host {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let cgroups = if wanted.cgroups {
            CgroupRoot::detect()
        } else {
            disabled()
        };
        let seccomp = if wanted.seccomp {
            crate::seccomp::programs()
                .map(Arc::new)
                .and_then(|programs| {
                    probe_child(ChildSetup {
                        seccomp: programs.to_vec(),
                        ..ChildSetup::default()
                    })
                    .map(|()| programs)
                    .map_err(|e| format!("the kernel refused a seccomp filter ({e})"))
                })
        } else {
            disabled()
        };
        let landlock_abi = if wanted.landlock {
            sys::landlock_abi()
                .map_err(|e| format!("Landlock is not available on this kernel ({e})"))
        } else {
            disabled()
        };
        let uids = if uid != 0 {
            Err(format!(
                "the caller is not root (uid {uid}), so it cannot switch users"
            ))
        } else if wanted.drop_privileges {
            UidPool::new(wanted.uid_range.0, wanted.uid_range.1)
        } else {
            disabled()
        };
        let interpreter = resolve_interpreter(python);
        let deny = canonical_existing(&wanted.deny);
        let exposures: Vec<PathBuf> = interpreter
            .as_ref()
            .map(|i| i.prefixes.clone())
            .unwrap_or_default();
        let mounts = Arc::new(mount_plan(&deny, &exposures));
        let namespaces = if wanted.namespaces {
            probe_namespaces(uid, gid, &mounts)
        } else {
            disabled()
        };
        let private_proc = probe_private_proc(&namespaces, &uids, &mounts);
        let scratch_tmpfs = if !wanted.scratch_tmpfs {
            disabled()
        } else if uid != 0 {
            Err(format!(
                "the caller is not root (uid {uid}), so it cannot mount a tmpfs per execution"
            ))
        } else {
            crate::workspace::probe_own_tmpfs(temp_dir)
        };
        let mut readable: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
        readable.extend(exposures);
        readable.extend(etc_entries(&deny));
        Host {
            uid,
            gid,
            cgroups,
            namespaces,
            landlock_abi,
            seccomp,
            uids,
            interpreter,
            readable,
            mounts,
            private_proc,
            scratch_tmpfs,
        }
    }

    /// The namespaces for one execution; `network` says whether to cut the network.
    pub fn namespaces_for(&self, network: bool) -> Option<Namespaces> {
        let kind = *self.namespaces.as_ref().ok()?;
        let mut flags = libc::CLONE_NEWNS;
        if network {
            flags |= libc::CLONE_NEWNET;
        }
        let id_maps = match kind {
            NamespaceKind::Privileged => None,
            NamespaceKind::User => {
                flags |= libc::CLONE_NEWUSER;
                Some(id_maps(self.uid, self.gid)?)
            }
        };
        Some(Namespaces {
            flags,
            id_maps,
            mounts: Arc::clone(&self.mounts),
            private_proc: self.private_proc.is_ok(),
        })
    }
}

fn id_maps(uid: u32, gid: u32) -> Option<(CString, CString)> {
    Some((
        CString::new(format!("{uid} {uid} 1")).ok()?,
        CString::new(format!("{gid} {gid} 1")).ok()?,
    ))
}

/// Whether a child may enter new mount and network namespaces here.
fn probe_namespaces(uid: u32, gid: u32, mounts: &Arc<MountPlan>) -> Result<NamespaceKind, String> {
    let kind = if uid == 0 {
        NamespaceKind::Privileged
    } else {
        NamespaceKind::User
    };
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWNET;
    let mut id_maps_for_probe = None;
    if kind == NamespaceKind::User {
        flags |= libc::CLONE_NEWUSER;
        id_maps_for_probe = id_maps(uid, gid);
    }
    probe_child(ChildSetup {
        namespaces: Some(Namespaces {
            flags,
            id_maps: id_maps_for_probe,
            mounts: Arc::clone(mounts),
            private_proc: false,
        }),
        ..ChildSetup::default()
    })
    .map(|()| kind)
    .map_err(|e| match kind {
        NamespaceKind::Privileged => format!("the kernel refused new namespaces ({e})"),
        NamespaceKind::User => format!(
            "unprivileged user namespaces are not available ({e}); check kernel.unprivileged_userns_clone or apparmor_restrict_unprivileged_userns"
        ),
    })
}

/// Whether each execution can have a `/proc` showing only its own
/// processes: a proc mount with `hidepid=2` in its mount namespace. That
/// needs root (a user namespace cannot mount the host PID namespace's
/// proc), and hides something only when the program has a uid of its own.
fn probe_private_proc(
    namespaces: &Result<NamespaceKind, String>,
    uids: &Result<Arc<UidPool>, String>,
    mounts: &Arc<MountPlan>,
) -> Result<(), String> {
    match namespaces {
        Ok(NamespaceKind::Privileged) => {}
        Ok(NamespaceKind::User) => {
            return Err(
                "the caller is not root, and a user namespace cannot mount the host's /proc"
                    .to_owned(),
            );
        }
        Err(reason) => return Err(format!("no mount namespace ({reason})")),
    }
    if let Err(reason) = uids {
        return Err(format!(
            "the program has no uid of its own to hide others' processes from ({reason})"
        ));
    }
    probe_child(ChildSetup {
        namespaces: Some(Namespaces {
            flags: libc::CLONE_NEWNS,
            id_maps: None,
            mounts: Arc::clone(mounts),
            private_proc: true,
        }),
        ..ChildSetup::default()
    })
    .map_err(|e| format!("the kernel refused a proc mount with hidepid=2 ({e})"))
}

/// Runs `/bin/sh -c :` with `setup` applied: Ok when every step succeeded.
fn probe_child(mut setup: ChildSetup) -> Result<(), String> {
    setup.parent = std::process::id() as libc::pid_t;
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", ":"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    sys::apply_before_exec(&mut command, setup);
    let status = command.status().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the probe ended with {status}"))
    }
}

/// The real executable behind `python` (or `python3` on the caller's PATH,
/// following pyenv-style shims) and its installation's directories.
fn resolve_interpreter(python: Option<&Path>) -> Result<Interpreter, String> {
    let program = python.map_or_else(|| PathBuf::from("python3"), Path::to_path_buf);
    let output = Command::new(&program)
        .args([
            "-c",
            "import sys; print(sys.executable); print(sys.prefix); print(sys.base_prefix); print(sys.exec_prefix)",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{} could not be started ({e})", program.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines().map(|line| PathBuf::from(line.trim()));
    let executable = lines
        .next()
        .filter(|p| output.status.success() && p.is_absolute());
    let Some(executable) = executable else {
        return Err(format!(
            "{} did not report its executable ({})",
            program.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    };
    let mut prefixes: Vec<PathBuf> = lines
        .chain(executable.parent().map(Path::to_path_buf))
        .chain(
            std::fs::canonicalize(&executable)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
        )
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    prefixes.sort();
    prefixes.dedup();
    // Keep only the outermost of nested directories.
    let outermost: Vec<PathBuf> = prefixes
        .iter()
        .filter(|p| !prefixes.iter().any(|q| q != *p && p.starts_with(q)))
        .cloned()
        .collect();
    let private_ancestor = outermost
        .iter()
        .flat_map(|prefix| prefix.ancestors())
        .find(|dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 == 0)
        })
        .map(Path::to_path_buf);
    Ok(Interpreter {
        executable,
        prefixes: outermost,
        private_ancestor,
    })
}

fn canonical_existing(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = paths
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The entries of `/etc`, less the denied ones and those holding a denied path.
fn etc_entries(deny: &[PathBuf]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/etc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            !deny
                .iter()
                .any(|d| d.starts_with(path) || path.starts_with(d))
        })
        .collect()
}

/// Hides every denied path and brings the exposures under them back.
fn mount_plan(deny: &[PathBuf], exposures: &[PathBuf]) -> MountPlan {
    let mut steps = Vec::new();
    let mut slot = 0;
    for hidden in deny {
        // A path inside another hidden directory is hidden already.
        if deny
            .iter()
            .any(|outer| outer != hidden && hidden.starts_with(outer))
        {
            continue;
        }
        let Some(target) = c_path(hidden) else {
            continue;
        };
        if !hidden.is_dir() {
            steps.push(MountStep::MaskFile { target });
            continue;
        }
        let inside: Vec<&PathBuf> = exposures
            .iter()
            .filter(|e| e.starts_with(hidden) && *e != hidden)
            .collect();
        let mut attach = Vec::new();
        for exposure in inside {
            let (Some(source), Some(exposed)) = (c_path(exposure), c_path(exposure)) else {
                continue;
            };
            if slot == MAX_EXPOSURES {
                break;
            }
            steps.push(MountStep::CloneTree { slot, source });
            let mut dir = hidden.clone();
            if let Ok(rest) = exposure.strip_prefix(hidden) {
                for component in rest.components() {
                    dir.push(component);
                    if let Some(path) = c_path(&dir) {
                        attach.push(MountStep::MakeDir { path });
                    }
                }
            }
            attach.push(MountStep::AttachTree {
                slot,
                target: exposed,
            });
            slot += 1;
        }
        steps.push(MountStep::HideDir {
            target: target.clone(),
        });
        steps.extend(attach);
        steps.push(MountStep::Seal { target });
    }
    MountPlan { steps }
}

fn c_path(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_bytes()).ok()
}
