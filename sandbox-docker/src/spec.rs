//! What one execution's container looks like: image, command, user,
//! limits, mounts, labels.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};
use sandbox_core::{Limits, NetworkMode};

use crate::archive::WORK_DIR;
use crate::seccomp::seccomp_profile;

/// The user sandboxed code runs as (the image's `sandbox` user).
pub(crate) const USER: &str = "1000:1000";

/// Where the scratch tmpfs is mounted (also `HOME` and `TMPDIR`).
pub(crate) const SCRATCH_DIR: &str = "/tmp";

/// The size of `/dev/shm`: enough for Python's multiprocessing semaphores.
pub(crate) const SHM_BYTES: i64 = 1 << 20;

/// Open files allowed per process.
pub(crate) const MAX_OPEN_FILES: i64 = 1024;

/// Variables every program gets, before the request's own.
const BASE_ENV: [(&str, &str); 8] = [
    ("HOME", SCRATCH_DIR),
    ("TMPDIR", SCRATCH_DIR),
    ("LANG", "C.UTF-8"),
    ("PYTHONUNBUFFERED", "1"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
    ("OPENBLAS_NUM_THREADS", "1"),
    ("OMP_NUM_THREADS", "1"),
    ("MKL_NUM_THREADS", "1"),
];

/// How the container's first process gets its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The program is the container's command and runs as [`USER`] from
    /// the start; code and input files are uploaded before the start.
    Cold,
    /// The command is the pool's launcher (see `launcher.rs`): it starts as
    /// root holding only [`LAUNCHER_CAPS`], waits for the program on stdin,
    /// writes the code and input files (root-owned, read-only), empties the
    /// capability bounding set, becomes [`USER`] and execs the program.
    Pooled,
    /// The command is a session's server, run as [`USER`] with the scratch
    /// space [`SCRATCH_DIR`] as its working directory (where `put_file`
    /// writes), talking over the attached stdin and stdout.
    Session,
}

/// The only capabilities a pooled container's launcher holds, to write the
/// code as root and then drop to [`USER`] (all are gone before the program runs).
pub(crate) const LAUNCHER_CAPS: [&str; 3] = ["SETUID", "SETGID", "SETPCAP"];

/// The user a pooled container's launcher starts as.
const LAUNCHER_USER: &str = "0:0";

/// Everything the container body is made from.
#[derive(Debug)]
pub(crate) struct Spec<'a> {
    pub mode: Mode,
    pub image: &'a str,
    pub runtime: Option<&'a str>,
    pub limits: &'a Limits,
    /// The daemon's CPU count: `nano_cpus` may not exceed it.
    pub daemon_cpus: Option<u32>,
    pub argv: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub stdin: bool,
    pub labels: HashMap<String, String>,
    /// Whether to send [`seccomp_profile`] (the daemon applies seccomp).
    pub seccomp: bool,
}

/// The CPUs granted for `limits` on a daemon with `daemon_cpus`.
pub(crate) fn granted_cpus(limits: &Limits, daemon_cpus: Option<u32>) -> f64 {
    match daemon_cpus {
        Some(n) => limits.cpus.min(f64::from(n)),
        None => limits.cpus,
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Spec<'_> {
    /// The body of the create-container request.
    pub fn body(self) -> ContainerCreateBody {
        let limits = self.limits;
        let scratch = saturating_i64(limits.scratch_bytes);
        let memory = saturating_i64(limits.memory_bytes);
        let nano_cpus = (granted_cpus(limits, self.daemon_cpus) * 1e9).round() as i64;
        let (network_mode, network_disabled) = match limits.network {
            NetworkMode::Bridge => ("bridge", false),
            _ => ("none", true),
        };
        let env = BASE_ENV
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain(self.env.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        let (entrypoint, cmd) = match self.argv.split_first() {
            Some((program, args)) => (vec![program.clone()], args.to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        let ulimit = |name: &str, value: i64| ResourcesUlimits {
            name: Some(name.to_owned()),
            soft: Some(value),
            hard: Some(value),
        };
        let host_config = HostConfig {
            network_mode: Some(network_mode.to_owned()),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some(nano_cpus),
            pids_limit: Some(i64::from(limits.pids)),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                SCRATCH_DIR.to_owned(),
                format!("rw,noexec,nosuid,nodev,size={scratch},mode=1777"),
            )])),
            shm_size: Some(SHM_BYTES),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: (self.mode == Mode::Pooled)
                .then(|| LAUNCHER_CAPS.iter().map(|c| (*c).to_owned()).collect()),
            security_opt: Some(
                std::iter::once("no-new-privileges".to_owned())
                    .chain(
                        self.seccomp
                            .then(|| format!("seccomp={}", seccomp_profile())),
                    )
                    .collect(),
            ),
            ulimits: Some(vec![
                ulimit("nofile", MAX_OPEN_FILES),
                ulimit("fsize", scratch),
                ulimit("core", 0),
            ]),
            init: Some(true),
            oom_score_adj: Some(1000),
            runtime: self.runtime.map(str::to_owned),
            // Output travels on the attach stream; the daemon keeps no log file of it.
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".to_owned()),
                config: None,
            }),
            ..HostConfig::default()
        };
        ContainerCreateBody {
            image: Some(self.image.to_owned()),
            entrypoint: Some(entrypoint),
            cmd: Some(cmd),
            user: Some(
                match self.mode {
                    Mode::Cold | Mode::Session => USER,
                    Mode::Pooled => LAUNCHER_USER,
                }
                .to_owned(),
            ),
            working_dir: Some(
                match self.mode {
                    Mode::Cold | Mode::Pooled => WORK_DIR,
                    Mode::Session => SCRATCH_DIR,
                }
                .to_owned(),
            ),
            hostname: Some("sandbox".to_owned()),
            env: Some(env),
            labels: Some(self.labels),
            // An anonymous volume: the code and input files are copied into it
            // before the start, and it is removed with the container.
            volumes: Some(vec![WORK_DIR.to_owned()]),
            network_disabled: Some(network_disabled),
            attach_stdin: Some(self.stdin),
            open_stdin: Some(self.stdin),
            stdin_once: Some(self.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_every_protection() {
        let limits = Limits::builder()
            .memory("256m")
            .unwrap()
            .cpus(4.0)
            .pids(32)
            .scratch_bytes(1 << 20)
            .build()
            .unwrap();
        let argv = vec!["python3".to_owned(), "/sandbox/.rlmkit/main.py".to_owned()];
        let env = BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]);
        let body = Spec {
            mode: Mode::Cold,
            image: "img:1",
            runtime: Some("runsc"),
            limits: &limits,
            daemon_cpus: Some(2),
            argv: &argv,
            env: &env,
            stdin: false,
            labels: HashMap::from([("rlmkit.sandbox".to_owned(), "1".to_owned())]),
            seccomp: true,
        }
        .body();
        let host = body.host_config.as_ref().unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(body.network_disabled, Some(true));
        assert_eq!(host.memory, Some(256 << 20));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(
            host.nano_cpus,
            Some(2_000_000_000),
            "clamped to the daemon's CPUs"
        );
        assert_eq!(host.pids_limit, Some(32));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(
            host.tmpfs.as_ref().unwrap()["/tmp"],
            "rw,noexec,nosuid,nodev,size=1048576,mode=1777"
        );
        assert_eq!(host.cap_drop.as_deref(), Some(&["ALL".to_owned()][..]));
        let security = host.security_opt.as_deref().unwrap();
        assert_eq!(security[0], "no-new-privileges");
        assert_eq!(security[1], format!("seccomp={}", seccomp_profile()));
        assert_eq!(security.len(), 2);
        assert_eq!(host.init, Some(true));
        assert_eq!(host.runtime.as_deref(), Some("runsc"));
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.entrypoint.as_deref(), Some(&argv[..1]));
        assert_eq!(body.cmd.as_deref(), Some(&argv[1..]));
        let env = body.env.unwrap();
        assert!(env.contains(&"HOME=/tmp".to_owned()));
        assert!(env.contains(&"PYTHONUNBUFFERED=1".to_owned()));
        assert_eq!(env.last().map(String::as_str), Some("GREETING=hi"));
        assert_eq!(body.open_stdin, Some(false));
        assert_eq!(body.volumes, Some(vec!["/sandbox".to_owned()]));
        assert_eq!(host.cap_add, None);
    }

    #[test]
    fn a_pooled_body_differs_only_in_its_launcher() {
        let limits = Limits::default();
        let env = BTreeMap::new();
        let argv = vec!["python3".to_owned()];
        let spec = |mode| Spec {
            mode,
            image: "img:1",
            runtime: None,
            limits: &limits,
            daemon_cpus: Some(2),
            argv: &argv,
            env: &env,
            stdin: true,
            labels: HashMap::new(),
            seccomp: false,
        };
        let cold = spec(Mode::Cold).body();
        let mut pooled = spec(Mode::Pooled).body();
        assert_eq!(pooled.user.as_deref(), Some("0:0"));
        let host = pooled.host_config.as_mut().unwrap();
        assert_eq!(
            host.cap_add.take().unwrap(),
            ["SETUID", "SETGID", "SETPCAP"]
        );
        pooled.user = cold.user.clone();
        assert_eq!(pooled, cold);
    }
}
