//! Control groups: a per-execution cgroup that caps processes, memory and CPU
//! for the whole process tree, detects out-of-memory kills and kills every
//! member, even those that left the process group.
//!
//! Works with cgroup v1 (the `pids`, `memory` and `cpu` controllers) and with
//! cgroup v2 (the unified hierarchy), where the caller may create cgroups
//! (as root, or with a delegated subtree).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use sandbox_core::Limits;

const CGROUP_FS: &str = "/sys/fs/cgroup";
const PARENT_NAME: &str = "rlmkit.sandbox";
const CPU_PERIOD_US: u64 = 100_000;

/// Where this machine's cgroups live, found once.
#[derive(Debug, Clone)]
pub(crate) enum CgroupRoot {
    /// cgroup v1: one directory per controller (the `cpu` one is optional).
    V1 {
        pids: PathBuf,
        memory: PathBuf,
        cpu: Option<PathBuf>,
    },
    /// cgroup v2: the project's parent directory in the unified hierarchy.
    V2 { parent: PathBuf },
}

impl CgroupRoot {
    /// Finds a cgroup hierarchy this process may create cgroups in, or says why not.
    pub fn detect() -> Result<CgroupRoot, String> {
        let base = Path::new(CGROUP_FS);
        if base.join("cgroup.controllers").exists() {
            return Self::detect_v2(base);
        }
        let pids = base.join("pids");
        let memory = base.join("memory");
        if !pids.join("cgroup.procs").exists() || !memory.join("cgroup.procs").exists() {
            return Err(format!(
                "no cgroup v1 pids and memory controllers under {CGROUP_FS}"
            ));
        }
        let cpu = Some(base.join("cpu")).filter(|p| p.join("cpu.cfs_quota_us").exists());
        let root = CgroupRoot::V1 {
            pids: pids.join(PARENT_NAME),
            memory: memory.join(PARENT_NAME),
            cpu: cpu.map(|p| p.join(PARENT_NAME)),
        };
        for dir in root.parent_dirs() {
            fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {} ({e}); run as root", dir.display()))?;
            probe_writable(dir)?;
        }
        Ok(root)
    }

    fn detect_v2(base: &Path) -> Result<CgroupRoot, String> {
        let parent = base.join(PARENT_NAME);
        fs::create_dir_all(&parent)
            .map_err(|e| format!("cannot create {} ({e}); run as root", parent.display()))?;
        for dir in [base, parent.as_path()] {
            let control = dir.join("cgroup.subtree_control");
            let enabled = fs::read_to_string(&control).unwrap_or_default();
            for controller in ["pids", "memory", "cpu"] {
                if !enabled.split_whitespace().any(|c| c == controller) {
                    fs::write(&control, format!("+{controller}")).map_err(|e| {
                        format!(
                            "cannot enable the {controller} controller in {} ({e})",
                            control.display()
                        )
                    })?;
                }
            }
        }
        probe_writable(&parent)?;
        Ok(CgroupRoot::V2 { parent })
    }

    fn parent_dirs(&self) -> Vec<&Path> {
        match self {
            CgroupRoot::V1 { pids, memory, cpu } => {
                let mut dirs = vec![pids.as_path(), memory.as_path()];
                dirs.extend(cpu.as_deref());
                dirs
            }
            CgroupRoot::V2 { parent } => vec![parent.as_path()],
        }
    }

    /// Kills and removes the execution cgroups whose owner process is gone
    /// (left by a caller that was killed outright), returning how many.
    pub fn sweep(&self) -> usize {
        let version = match self {
            CgroupRoot::V1 { .. } => Version::V1,
            CgroupRoot::V2 { .. } => Version::V2,
        };
        let mut removed = 0;
        for parent in self.parent_dirs() {
            let Ok(entries) = fs::read_dir(parent) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name();
                let Some(owner) = name
                    .to_str()
                    .and_then(|n| n.split_once('-'))
                    .and_then(|(pid, _)| pid.parse::<u32>().ok())
                else {
                    continue;
                };
                if owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists() {
                    continue;
                }
                let dir = entry.path();
                let stale = Cgroup {
                    version,
                    members: dir.clone(),
                    memory: dir.clone(),
                    dirs: vec![dir],
                    removed: false,
                };
                stale.remove();
                removed += 1;
            }
        }
        removed
    }

    /// Whether CPU quotas can be set.
    pub fn has_cpu(&self) -> bool {
        matches!(
            self,
            CgroupRoot::V1 { cpu: Some(_), .. } | CgroupRoot::V2 { .. }
        )
    }

    /// A short description for the isolation report.
    pub fn describe(&self) -> &'static str {
        match self {
            CgroupRoot::V1 { .. } => "cgroup v1",
            CgroupRoot::V2 { .. } => "cgroup v2",
        }
    }
}

/// Checks that this process may create cgroups under `parent`.
fn probe_writable(parent: &Path) -> Result<(), String> {
    let probe = parent.join(format!("probe-{}", std::process::id()));
    fs::create_dir(&probe)
        .and_then(|()| fs::remove_dir(&probe))
        .map_err(|e| {
            format!(
                "cannot create cgroups under {} ({e}); run as root or delegate that directory to this user",
                parent.display()
            )
        })
}

/// The cgroup of one execution; dropping it kills its members and removes it.
#[derive(Debug)]
pub(crate) struct Cgroup {
    version: Version,
    /// Every directory of this cgroup (one per v1 controller, one for v2).
    dirs: Vec<PathBuf>,
    /// The directory whose `cgroup.procs` lists every member.
    members: PathBuf,
    /// The memory controller's directory.
    memory: PathBuf,
    removed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl Cgroup {
    /// Creates a fresh cgroup under `root` with `limits` in force.
    pub fn create(root: &CgroupRoot, limits: &Limits) -> io::Result<Cgroup> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let quota = ((limits.cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
        let (version, dirs, settings): (Version, Vec<PathBuf>, Vec<(PathBuf, String)>) = match root
        {
            CgroupRoot::V1 { pids, memory, cpu } => {
                let pids = pids.join(&name);
                let memory = memory.join(&name);
                let mut settings = vec![
                    (pids.join("pids.max"), limits.pids.to_string()),
                    (
                        memory.join("memory.limit_in_bytes"),
                        limits.memory_bytes.to_string(),
                    ),
                    (
                        memory.join("memory.memsw.limit_in_bytes"),
                        limits.memory_bytes.to_string(),
                    ),
                ];
                let mut dirs = vec![pids, memory];
                if let Some(cpu) = cpu {
                    let cpu = cpu.join(&name);
                    settings.push((cpu.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string()));
                    settings.push((cpu.join("cpu.cfs_quota_us"), quota.to_string()));
                    dirs.push(cpu);
                }
                (Version::V1, dirs, settings)
            }
            CgroupRoot::V2 { parent } => {
                let dir = parent.join(&name);
                let settings = vec![
                    (dir.join("pids.max"), limits.pids.to_string()),
                    (dir.join("memory.max"), limits.memory_bytes.to_string()),
                    (dir.join("memory.swap.max"), "0".to_owned()),
                    (dir.join("cpu.max"), format!("{quota} {CPU_PERIOD_US}")),
                ];
                (Version::V2, vec![dir], settings)
            }
        };
        let mut cgroup = Cgroup {
            version,
            members: dirs[0].clone(),
            memory: dirs[if version == Version::V1 { 1 } else { 0 }].clone(),
            dirs: Vec::new(),
            removed: false,
        };
        for dir in dirs {
            fs::create_dir(&dir)?;
            cgroup.dirs.push(dir);
        }
        for (file, value) in settings {
            let optional =
                file.ends_with("memory.memsw.limit_in_bytes") || file.ends_with("memory.swap.max");
            match fs::write(&file, &value) {
                Ok(()) => {}
                Err(e) if optional && e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("writing {value} to {}: {e}", file.display()),
                    ));
                }
            }
        }
        Ok(cgroup)
    }

    /// The `cgroup.procs` files a child writes itself into, opened for writing.
    pub fn procs_files(&self) -> io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|dir| {
                let file: File = OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))?;
                Ok(OwnedFd::from(file))
            })
            .collect()
    }

    /// Kills every member with SIGKILL and waits (up to a few seconds) until none is left.
    pub fn kill_all(&self) {
        if self.version == Version::V2 && fs::write(self.members.join("cgroup.kill"), "1").is_ok() {
            self.wait_until_empty(Duration::from_secs(5));
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let members = self.member_pids();
            if members.is_empty() {
                return;
            }
            for pid in members {
                // A member may have exited since it was listed: nothing to do then.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_until_empty(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.member_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn member_pids(&self) -> Vec<i32> {
        fs::read_to_string(self.members.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// Whether the kernel's OOM killer killed a member for the memory limit.
    pub fn oom_killed(&self) -> bool {
        let (file, key) = match self.version {
            Version::V1 => ("memory.oom_control", "oom_kill"),
            Version::V2 => ("memory.events", "oom_kill"),
        };
        read_key(&self.memory.join(file), key).is_some_and(|count| count > 0)
    }

    /// The peak memory use of the whole cgroup, in bytes, where the kernel reports it.
    pub fn peak_memory(&self) -> Option<u64> {
        let file = match self.version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        };
        fs::read_to_string(self.memory.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills what is left and removes the cgroup's directories.
    pub fn remove(mut self) {
        self.remove_now();
    }

    fn remove_now(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        self.kill_all();
        for dir in self.dirs.iter().rev() {
            // A killed member stays a member until its parent reaps it: retry briefly.
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Err(e) = fs::remove_dir(dir) {
                if e.kind() == io::ErrorKind::NotFound || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.removed {
            let dirs = std::mem::take(&mut self.dirs);
            let mut rest = Cgroup {
                version: self.version,
                dirs,
                members: self.members.clone(),
                memory: self.memory.clone(),
                removed: false,
            };
            self.removed = true;
            // Killing and removing may wait for the kernel: do it off the caller's thread.
            std::thread::spawn(move || rest.remove_now());
        }
    }
}

/// The number after `key` in a "key value" per line file.
fn read_key(file: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(file).ok()?.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}
