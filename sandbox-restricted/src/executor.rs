//! [`RestrictedExecutor`]: one supervised child process per execution.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::resource::Resource;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use sandbox_core::session::REPL_SOURCE;
use sandbox_core::{
    Error, ExecutionRequest, ExecutionResult, Executor, IsolationReport, Limits, NetworkMode,
    Program, Protection, ResourceUsage, Session, SessionOptions, Status, async_trait,
};

use crate::cgroup::Cgroup;
use crate::host::{DEFAULT_DENY, Host, Wanted};
use crate::identity::{DEFAULT_FIRST_UID, DEFAULT_UID_COUNT, Lease};
use crate::landlock::{Access, Ruleset};
use crate::output::{SharedCapture, read_capped, snapshot};
use crate::process::{AbortOnDrop, ProcessTree, on_spawner_thread};
use crate::report::{self, InForce, LandlockLevel, SandboxUid};
use crate::session::RestrictedSession;
use crate::sys::{self, ChildLandlock, ChildSetup, Reaped};
use crate::workspace::Workspace;

/// The backend's name in results and reports.
pub const BACKEND: &str = "restricted";

/// The `PATH` sandboxed programs see.
const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Open files allowed per process.
const MAX_OPEN_FILES: u64 = 1024;

/// How long output readers may take to finish once every process is gone.
const READER_GRACE: Duration = Duration::from_secs(1);

/// The longest a session may live.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a sandboxed child is for; the isolation is the same either way.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    /// One execution: stdin is a pipe only when the request brings bytes for
    /// it, and the CPU-time backstop covers the request's timeout.
    Execution,
    /// A session's server: stdin and stdout carry the session protocol,
    /// Python runs its source with `-c` (so the working directory is on
    /// `sys.path`, as in an interactive interpreter), and the CPU-time
    /// backstop covers the session's whole lifetime.
    Session {
        /// The session's total lifetime.
        lifetime: Duration,
    },
}

/// A sandboxed child ready to start: its command, with every isolation step
/// planned for the moment between fork and exec, and what must outlive it.
#[derive(Debug)]
pub(crate) struct Prepared {
    command: Command,
    program: PathBuf,
    workspace: Workspace,
    lease: Option<Lease>,
    cgroup: Option<Cgroup>,
    limits: Limits,
    isolation: IsolationReport,
}

/// A started sandboxed child and what it holds.
#[derive(Debug)]
pub(crate) struct Started {
    /// The child, its pipes still in place.
    pub child: std::process::Child,
    /// Its pid, also its process group's id.
    pub pid: i32,
    /// Its process group and cgroup.
    pub tree: ProcessTree,
    /// Its directories, removed when it is done.
    pub workspace: Workspace,
    /// Its sandbox uid, free again once every process of it is gone.
    pub lease: Option<Lease>,
    /// Its limits.
    pub limits: Limits,
    /// What is in force for it.
    pub isolation: IsolationReport,
}

impl Prepared {
    /// Starts the child; on failure everything prepared is removed again.
    pub fn start(self) -> Result<Started, Error> {
        let Prepared {
            mut command,
            program,
            workspace,
            lease,
            cgroup,
            limits,
            isolation,
        } = self;
        let child = command.spawn().map_err(|e| spawn_error(&program, e))?;
        // The plan holds descriptors (the Landlock ruleset, cgroup files): close ours.
        drop(command);
        let pid = match i32::try_from(child.id()) {
            Ok(pid) => pid,
            Err(e) => {
                return Err(Error::backend(
                    BACKEND,
                    "the child's pid is out of range",
                    e,
                ));
            }
        };
        Ok(Started {
            child,
            pid,
            tree: ProcessTree::new(pid, cgroup),
            workspace,
            lease,
            limits,
            isolation,
        })
    }
}

/// Runs code as a hardened child process of this one.
///
/// Each execution gets a fresh temporary working directory (removed
/// afterwards), a cleared environment, its own session and process group,
/// output capped while it streams, and a wall-clock timeout that kills the
/// whole process tree. Where the machine allows, the child also gets: a
/// cgroup (memory, CPU, processes), an unprivileged uid of its own when the
/// caller is root, new network and mount namespaces (no network; homes and
/// credentials hidden), a Landlock allowlist (read the system and the
/// interpreter, write only its own directories), and a seccomp filter
/// (no sockets but AF_UNIX, no ptrace, mount, namespaces, setsid, ...).
/// Everything is probed when the executor is built;
/// [`Executor::isolation`] says what is in force and why anything is not,
/// and [`RestrictedExecutorBuilder::require`] fails closed instead.
///
/// ```no_run
/// use sandbox_core::{ExecutionRequest, Executor, Limits, Protection};
/// use sandbox_restricted::RestrictedExecutor;
///
/// # async fn demo() -> Result<(), sandbox_core::Error> {
/// let executor = RestrictedExecutor::builder()
///     .limits(Limits::builder().memory("256m")?.build()?)
///     .require(Protection::Network)
///     .build()?;
/// let result = executor.execute(ExecutionRequest::python("print(2 + 2)")).await?;
/// assert_eq!(result.stdout_text(), "4\n");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RestrictedExecutor {
    limits: Limits,
    temp_dir: PathBuf,
    shell: PathBuf,
    required: Vec<Protection>,
    host: Host,
}

/// Configures a [`RestrictedExecutor`]. Every protection is on by default.
#[derive(Debug)]
#[non_exhaustive]
pub struct RestrictedExecutorBuilder {
    limits: Option<Limits>,
    temp_dir: Option<PathBuf>,
    python: Option<PathBuf>,
    shell: Option<PathBuf>,
    wanted: Wanted,
    required: Vec<Protection>,
}

impl Default for RestrictedExecutorBuilder {
    fn default() -> Self {
        RestrictedExecutorBuilder {
            limits: None,
            temp_dir: None,
            python: None,
            shell: None,
            wanted: Wanted {
                cgroups: true,
                namespaces: true,
                landlock: true,
                seccomp: true,
                drop_privileges: true,
                scratch_tmpfs: true,
                uid_range: (DEFAULT_FIRST_UID, DEFAULT_UID_COUNT),
                deny: DEFAULT_DENY.iter().map(PathBuf::from).collect(),
            },
            required: Vec::new(),
        }
    }
}

impl RestrictedExecutorBuilder {
    /// The limits for requests that do not override them (default: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Where working directories are created (default: the system's temporary directory).
    pub fn temp_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_dir = Some(dir.into());
        self
    }

    /// The Python interpreter (default: the real executable behind `python3` on the caller's PATH).
    pub fn python(mut self, interpreter: impl Into<PathBuf>) -> Self {
        self.python = Some(interpreter.into());
        self
    }

    /// The shell for shell scripts (default: `/bin/sh`).
    pub fn shell(mut self, shell: impl Into<PathBuf>) -> Self {
        self.shell = Some(shell.into());
        self
    }

    /// Whether to use a cgroup per execution when the machine allows it (default: true).
    pub fn cgroups(mut self, enabled: bool) -> Self {
        self.wanted.cgroups = enabled;
        self
    }

    /// Whether to use new network and mount namespaces (through a user
    /// namespace when the caller is not root) (default: true).
    pub fn namespaces(mut self, enabled: bool) -> Self {
        self.wanted.namespaces = enabled;
        self
    }

    /// Whether to confine the filesystem with Landlock (default: true).
    pub fn landlock(mut self, enabled: bool) -> Self {
        self.wanted.landlock = enabled;
        self
    }

    /// Whether to install the seccomp filter (default: true).
    pub fn seccomp(mut self, enabled: bool) -> Self {
        self.wanted.seccomp = enabled;
        self
    }

    /// Whether a root caller's working directories are each a tmpfs of their
    /// own, holding the scratch space (the limit's `scratch_bytes`) besides
    /// the code and input files, so that a program cannot fill the host's
    /// disk (default: true).
    pub fn scratch_tmpfs(mut self, enabled: bool) -> Self {
        self.wanted.scratch_tmpfs = enabled;
        self
    }

    /// Whether a root caller's programs run as an unprivileged uid of their
    /// own (default: true).
    pub fn drop_privileges(mut self, enabled: bool) -> Self {
        self.wanted.drop_privileges = enabled;
        self
    }

    /// The uids (and gids of the same numbers) handed to executions, one
    /// each: `first..first + count` (default: 1_500_000_000, 65536 of them).
    /// No account or group of the host may use one.
    pub fn sandbox_uids(mut self, first: u32, count: u32) -> Self {
        self.wanted.uid_range = (first, count);
        self
    }

    /// Hides one more path from sandboxed code (default list: homes and
    /// credential files, see [`DEFAULT_DENY`]). The Python interpreter's own
    /// installation stays readable even under a hidden directory.
    pub fn deny_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.wanted.deny.push(path.into());
        self
    }

    /// Fails closed: [`build`](Self::build), and any execution, returns
    /// [`Error::ProtectionUnavailable`] unless `protection` is fully enforced.
    pub fn require(mut self, protection: Protection) -> Self {
        self.required.push(protection);
        self
    }

    /// Builds the executor, checking its limits and probing the machine.
    pub fn build(self) -> Result<RestrictedExecutor, Error> {
        let limits = self.limits.unwrap_or_default();
        limits.validate()?;
        let temp_dir = self.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        // What callers killed outright left behind goes now.
        crate::workspace::sweep(&temp_dir);
        let host = Host::probe(&self.wanted, self.python.as_deref(), &temp_dir);
        if let Ok(cgroups) = &host.cgroups {
            cgroups.sweep();
        }
        if let Err(reason) = &host.uids {
            if self.wanted.drop_privileges && host.uid == 0 && reason.contains("range") {
                return Err(Error::Configuration {
                    backend: BACKEND.to_owned(),
                    reason: reason.clone(),
                });
            }
        }
        let executor = RestrictedExecutor {
            limits,
            temp_dir,
            shell: self.shell.unwrap_or_else(|| PathBuf::from("/bin/sh")),
            required: self.required,
            host,
        };
        executor.check_required(&executor.isolation())?;
        Ok(executor)
    }
}

impl RestrictedExecutor {
    /// A builder with every default.
    pub fn builder() -> RestrictedExecutorBuilder {
        RestrictedExecutorBuilder::default()
    }

    /// An executor with the default limits and every protection the machine offers.
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// The Python interpreter to run.
    fn python(&self) -> Result<PathBuf, Error> {
        let interpreter = self.host.interpreter.as_ref().map_err(|reason| Error::Unsupported {
            backend: BACKEND.to_owned(),
            feature: format!(
                "Python here: {reason}; install python3 or set RestrictedExecutorBuilder::python"
            ),
        })?;
        let switches_user = self.host.uids.is_ok();
        if let (true, Err(why), Some(private)) = (
            switches_user,
            &self.host.namespaces,
            &interpreter.private_ancestor,
        ) {
            return Err(Error::Configuration {
                backend: BACKEND.to_owned(),
                reason: format!(
                    "the interpreter {} lies under {}, which the sandbox's own user cannot enter without a mount namespace ({why}); install python3 outside it and set RestrictedExecutorBuilder::python, or allow namespaces",
                    interpreter.executable.display(),
                    private.display()
                ),
            });
        }
        Ok(interpreter.executable.clone())
    }

    /// Fails when a required protection is not fully enforced in `report`.
    fn check_required(&self, report: &IsolationReport) -> Result<(), Error> {
        for &protection in &self.required {
            if !report.is_enforced(protection) {
                let detail = report
                    .get(protection)
                    .map_or_else(|| "not reported".to_owned(), |p| p.detail.clone());
                return Err(Error::ProtectionUnavailable {
                    backend: BACKEND.to_owned(),
                    protection: protection.as_str().to_owned(),
                    reason: detail,
                });
            }
        }
        Ok(())
    }

    /// What an execution with `limits` gets, given what the machine offers.
    fn in_force(&self, limits: &Limits, cgroup: bool, sandbox_uid: Option<SandboxUid>) -> InForce {
        let landlock = self
            .host
            .landlock_abi
            .as_ref()
            .ok()
            .map(|&abi| LandlockLevel {
                abi,
                tcp_refused: abi >= 4 && limits.network == NetworkMode::None,
                scoped: abi >= 6,
            });
        InForce {
            cgroup,
            namespaces: self.host.namespaces.is_ok(),
            landlock,
            seccomp: self.host.seccomp.is_ok(),
            private_proc: self.host.private_proc.is_ok() && sandbox_uid.is_some(),
            scratch_tmpfs: self.host.scratch_tmpfs.is_ok(),
            sandbox_uid,
        }
    }

    /// The argv that runs `program`, writing source files into `workspace`.
    fn argv(
        &self,
        program: &Program,
        workspace: &Workspace,
        purpose: Purpose,
    ) -> Result<Vec<OsString>, Error> {
        Ok(match program {
            Program::Python(source) if matches!(purpose, Purpose::Session { .. }) => {
                vec![self.python()?.into(), "-c".into(), source.into()]
            }
            Program::Python(source) => {
                let python = self.python()?;
                let file = workspace.write_program("main.py", source)?;
                vec![python.into(), file.into()]
            }
            Program::Shell(script) => {
                let file = workspace.write_program("main.sh", script)?;
                vec![self.shell.clone().into(), file.into()]
            }
            Program::Command(argv) => argv.iter().map(OsString::from).collect(),
            other => {
                return Err(Error::Unsupported {
                    backend: BACKEND.to_owned(),
                    feature: format!("{} programs", other.kind()),
                });
            }
        })
    }

    fn command(
        &self,
        argv: &[OsString],
        request: &ExecutionRequest,
        workspace: &Workspace,
        purpose: Purpose,
    ) -> Result<Command, Error> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Error::invalid_request("the command is empty"))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(workspace.work_dir())
            .env_clear()
            .env("PATH", SANDBOX_PATH)
            .env("HOME", workspace.work_dir())
            .env("TMPDIR", workspace.tmp_dir())
            .env("LANG", "C.UTF-8")
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("OPENBLAS_NUM_THREADS", "1")
            .env("OMP_NUM_THREADS", "1")
            .env("MKL_NUM_THREADS", "1")
            .envs(&request.env)
            .stdin(
                if request.stdin.is_some() || matches!(purpose, Purpose::Session { .. }) {
                    Stdio::piped()
                } else {
                    Stdio::null()
                },
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok(command)
    }

    fn rlimits(
        &self,
        limits: &Limits,
        in_force: &InForce,
        purpose: Purpose,
    ) -> Vec<(Resource, u64)> {
        let wall = match purpose {
            Purpose::Execution => limits.timeout,
            Purpose::Session { lifetime } => lifetime,
        };
        let cpu_seconds = (wall.as_secs_f64() * limits.cpus.max(1.0)).ceil() as u64 + 1;
        let open_files = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE)
            .map(|(_, hard)| hard.min(MAX_OPEN_FILES))
            .unwrap_or(MAX_OPEN_FILES);
        let mut rlimits = vec![
            (Resource::RLIMIT_CORE, 0),
            (Resource::RLIMIT_CPU, cpu_seconds),
            (Resource::RLIMIT_FSIZE, limits.scratch_bytes),
            (Resource::RLIMIT_NOFILE, open_files),
        ];
        if !in_force.cgroup {
            rlimits.push((Resource::RLIMIT_DATA, limits.memory_bytes));
        }
        if in_force.sandbox_uid.is_some() {
            // The uid is this execution's alone: its process count is exact.
            rlimits.push((Resource::RLIMIT_NPROC, u64::from(limits.pids)));
        } else if !in_force.cgroup && self.host.uid != 0 {
            let running = processes_of_uid(self.host.uid);
            rlimits.push((Resource::RLIMIT_NPROC, running + u64::from(limits.pids)));
        }
        rlimits
    }

    /// Prepares one sandboxed child for `request`: validates it, creates its
    /// workspace, leases its uid, creates its cgroup and plans every step of
    /// its isolation (namespaces, identity, rlimits, Landlock, seccomp).
    /// One-shot executions and sessions share this, so they are isolated alike.
    pub(crate) fn prepare(
        &self,
        request: &ExecutionRequest,
        purpose: Purpose,
    ) -> Result<Prepared, Error> {
        request.validate()?;
        let limits = request.limits.build_over(&self.limits)?;
        let own_tmpfs = self
            .host
            .scratch_tmpfs
            .is_ok()
            .then(|| limits.scratch_bytes.saturating_add(footprint(request)));
        let workspace = Workspace::create(&self.temp_dir, &request.files, own_tmpfs)?;
        let argv = self.argv(&request.program, &workspace, purpose)?;
        let mut command = self.command(&argv, request, &workspace, purpose)?;

        let lease = match &self.host.uids {
            Ok(pool) => Some(pool.lease().ok_or_else(|| {
                Error::unavailable(
                    BACKEND,
                    format!("every sandbox uid in {} is in use", pool.describe()),
                )
            })?),
            Err(_) => None,
        };
        let identity = lease.as_ref().map(|lease| lease.identity());
        if let Some(identity) = identity {
            workspace.grant(identity.uid, identity.gid)?;
        }
        let cgroup = self.cgroup(&limits);
        let in_force = self.in_force(
            &limits,
            cgroup.is_some(),
            identity.map(|i| SandboxUid::One(i.uid)),
        );
        let isolation = report::build(&self.host, &limits, in_force);
        self.check_required(&isolation)?;
        let cgroup_procs = match &cgroup {
            Some(cgroup) => cgroup
                .procs_files()
                .map_err(|e| Error::io("opening the execution's cgroup", e))?,
            None => Vec::new(),
        };
        sys::apply_before_exec(
            &mut command,
            ChildSetup {
                cgroup_procs,
                namespaces: self
                    .host
                    .namespaces_for(limits.network == NetworkMode::None),
                identity,
                parent: std::process::id() as libc::pid_t,
                rlimits: self.rlimits(&limits, &in_force, purpose),
                landlock: self.landlock(&workspace, &limits)?,
                seccomp: match &self.host.seccomp {
                    Ok(programs) if limits.network == NetworkMode::None => programs.to_vec(),
                    Ok(_) => Vec::new(),
                    Err(_) => Vec::new(),
                },
            },
        );
        Ok(Prepared {
            command,
            program: argv.first().map(PathBuf::from).unwrap_or_default(),
            workspace,
            lease,
            cgroup,
            limits,
            isolation,
        })
    }

    /// The Landlock ruleset for one execution in `workspace`.
    fn landlock(
        &self,
        workspace: &Workspace,
        limits: &Limits,
    ) -> Result<Option<ChildLandlock>, Error> {
        let Ok(&abi) = self.host.landlock_abi.as_ref() else {
            return Ok(None);
        };
        let build = || -> std::io::Result<ChildLandlock> {
            let mut ruleset = Ruleset::new(abi, limits.network == NetworkMode::None)?;
            for path in &self.host.readable {
                ruleset.allow(path, Access::Browse)?;
            }
            ruleset.allow(&workspace.program_path(), Access::Browse)?;
            ruleset.allow(&self.shell, Access::Browse)?;
            ruleset.allow(&workspace.work_dir(), Access::Modify)?;
            ruleset.allow(&workspace.tmp_dir(), Access::Modify)?;
            ruleset.allow(Path::new("/dev/null"), Access::Device)?;
            Ok(ruleset.into_child())
        };
        build()
            .map(Some)
            .map_err(|e| Error::io("building the Landlock ruleset", e))
    }

    /// Creates the execution's cgroup when the machine allows it.
    fn cgroup(&self, limits: &Limits) -> Option<Cgroup> {
        let root = self.host.cgroups.as_ref().ok()?;
        Cgroup::create(root, limits).ok()
    }
}

#[async_trait]
impl Executor for RestrictedExecutor {
    fn name(&self) -> &str {
        BACKEND
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn isolation(&self) -> IsolationReport {
        let cgroup = self.host.cgroups.is_ok();
        let sandbox_uid = self.host.uids.as_ref().ok().map(|pool| {
            let (first, end) = pool.bounds();
            SandboxUid::Range(first, end)
        });
        report::build(
            &self.host,
            &self.limits,
            self.in_force(&self.limits, cgroup, sandbox_uid),
        )
    }

    async fn execute(&self, request: ExecutionRequest) -> Result<ExecutionResult, Error> {
        let prepared = self.prepare(&request, Purpose::Execution)?;
        let started = Instant::now();
        let Started {
            mut child,
            pid,
            tree,
            workspace,
            lease,
            limits,
            isolation,
        } = prepared.start()?;

        let stdout =
            tokio::process::ChildStdout::from_std(child.stdout.take().ok_or_else(missing_pipe)?)
                .map_err(|e| Error::io("watching the child's stdout", e))?;
        let stderr =
            tokio::process::ChildStderr::from_std(child.stderr.take().ok_or_else(missing_pipe)?)
                .map_err(|e| Error::io("watching the child's stderr", e))?;
        let stdin = match (child.stdin.take(), request.stdin) {
            (Some(pipe), Some(bytes)) => {
                let mut pipe = tokio::process::ChildStdin::from_std(pipe)
                    .map_err(|e| Error::io("feeding the child's stdin", e))?;
                Some(AbortOnDrop(tokio::spawn(async move {
                    // The program may exit without reading all of it: that is its business.
                    let _ = pipe.write_all(&bytes).await;
                })))
            }
            _ => None,
        };
        drop(child);

        let overflow = Arc::new(Notify::new());
        let out_capture = SharedCapture::default();
        let err_capture = SharedCapture::default();
        let readers = [
            AbortOnDrop(tokio::spawn(read_capped(
                stdout,
                limits.output_bytes,
                out_capture.clone(),
                overflow.clone(),
            ))),
            AbortOnDrop(tokio::spawn(read_capped(
                stderr,
                limits.output_bytes,
                err_capture.clone(),
                overflow.clone(),
            ))),
        ];

        let mut waiter = tokio::task::spawn_blocking(move || sys::wait_for_child(pid));
        let mut stopped_by = None;
        let reaped = tokio::select! {
            reaped = &mut waiter => reaped,
            () = tokio::time::sleep(limits.timeout) => {
                stopped_by = Some(Status::TimedOut);
                tree.kill().await;
                (&mut waiter).await
            }
            () = overflow.notified() => {
                stopped_by = Some(Status::OutputLimitExceeded);
                tree.kill().await;
                (&mut waiter).await
            }
        };
        let duration = started.elapsed();
        let reaped = reaped
            .map_err(|e| Error::backend(BACKEND, "the task waiting for the child failed", e))?
            .map_err(|e| Error::io("waiting for the child", e))?;

        // Whatever the program left running in the background ends with it.
        tree.kill().await;
        for reader in readers {
            let _ = tokio::time::timeout(READER_GRACE, reader.join()).await;
        }
        drop(stdin);
        let (oom_killed, peak_memory) = tree.finish().await;

        let stdout = snapshot(&out_capture);
        let stderr = snapshot(&err_capture);
        let mut result = ExecutionResult::new(BACKEND, Status::Exited, isolation);
        result.status = stopped_by.unwrap_or_else(|| natural_status(&reaped, oom_killed));
        result.exit_code = reaped.exit_code();
        result.signal = reaped.signal();
        result.stdout = stdout.bytes;
        result.stdout_truncated = stdout.truncated;
        result.stdout_dropped_bytes = stdout.dropped;
        result.stderr = stderr.bytes;
        result.stderr_truncated = stderr.truncated;
        result.stderr_dropped_bytes = stderr.dropped;
        result.duration = duration;
        result.usage = ResourceUsage::default();
        result.usage.cpu_time_ms = Some(reaped.cpu_time_ms);
        result.usage.peak_memory_bytes = Some(peak_memory.unwrap_or(reaped.max_rss_bytes));
        workspace.remove()?;
        drop(lease);
        Ok(result)
    }

    /// Opens a session: one hardened Python process, isolated exactly as a
    /// one-shot execution (workspace, cgroup, uid, namespaces, Landlock,
    /// seccomp, rlimits, environment) and held for the session's life. Its
    /// stdin and stdout carry the session protocol; see [`Session`].
    ///
    /// Give a cell its time with [`Cell::timeout`](sandbox_core::Cell::timeout):
    /// the server interrupts it and the session lives on. Dropping a call's
    /// future before it finishes (under `tokio::time::timeout`, say) leaves
    /// the protocol out of step, so the session's process is killed and the
    /// session is lost.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use sandbox_core::{Cell, Executor, SessionOptions};
    /// use sandbox_restricted::RestrictedExecutor;
    ///
    /// # async fn demo() -> Result<(), sandbox_core::Error> {
    /// let executor = RestrictedExecutor::new()?;
    /// let session = executor
    ///     .open_session(SessionOptions::default().lifetime(Duration::from_secs(600)))
    ///     .await?;
    /// session.put_file("data/context.txt", b"a long context".to_vec()).await?;
    /// session.run("context = open('data/context.txt').read()".into()).await?;
    /// let result = session
    ///     .run(Cell::new("print(len(context))").timeout(Duration::from_secs(5)))
    ///     .await?;
    /// assert_eq!(result.stdout_text(), "14\n");
    /// session.close().await?;
    /// # Ok(())
    /// # }
    /// ```
    async fn open_session(&self, options: SessionOptions) -> Result<Box<dyn Session>, Error> {
        if options.lifetime.is_zero() || options.lifetime > MAX_LIFETIME {
            return Err(Error::InvalidLimit {
                name: "lifetime",
                reason: format!(
                    "{:?} is out of range; give a lifetime from 1ms to {} days",
                    options.lifetime,
                    MAX_LIFETIME.as_secs() / 86_400
                ),
            });
        }
        let mut request = ExecutionRequest::python(REPL_SOURCE).limits(options.limits);
        request.env = options.env;
        let purpose = Purpose::Session {
            lifetime: options.lifetime,
        };
        let prepared = self.prepare(&request, purpose)?;
        // The process must outlive the thread that opens the session.
        let started = on_spawner_thread(move || prepared.start()).await?;
        let session = RestrictedSession::start(started, options.lifetime).await?;
        Ok(Box::new(session))
    }
}

/// How a program that the sandbox did not stop ended.
pub(crate) fn natural_status(reaped: &Reaped, oom_killed: bool) -> Status {
    match reaped.signal() {
        None => Status::Exited,
        Some(libc::SIGKILL) if oom_killed => Status::OomKilled,
        Some(libc::SIGXCPU) => Status::Killed,
        Some(_) => Status::Signaled,
    }
}

pub(crate) fn missing_pipe() -> Error {
    Error::backend(
        BACKEND,
        "a pipe to the child is missing",
        std::io::Error::other("pipe not created"),
    )
}

fn spawn_error(program: &Path, error: std::io::Error) -> Error {
    if error.kind() == std::io::ErrorKind::NotFound {
        Error::invalid_request(format!(
            "{} was not found (the sandbox's PATH is {SANDBOX_PATH}); give an absolute path or install it",
            program.display()
        ))
    } else {
        Error::io(format!("starting {}", program.display()), error)
    }
}

/// How many processes run as `uid` now.
fn processes_of_uid(uid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|entry| entry.metadata().is_ok_and(|meta| meta.uid() == uid))
        .count() as u64
}

/// The bytes a request's code and input files take on a tmpfs (whole pages),
/// which its working directory holds besides the scratch space.
fn footprint(request: &ExecutionRequest) -> u64 {
    const PAGE: u64 = 4096;
    let pages = |len: usize| (len as u64).div_ceil(PAGE) * PAGE;
    let source = match &request.program {
        Program::Python(source) | Program::Shell(source) => pages(source.len()),
        _ => 0,
    };
    request
        .files
        .iter()
        .map(|file| pages(file.contents.len()))
        .sum::<u64>()
        + source
}
