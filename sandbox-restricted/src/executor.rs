//! [`RestrictedExecutor`]: one supervised child process per execution.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use nix::sys::resource::Resource;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, OnceCell};

use sandbox_core::{
    Error, ExecutionRequest, ExecutionResult, Executor, IsolationReport, Limits, Program,
    ResourceUsage, Status, async_trait,
};

use crate::cgroup::{Cgroup, CgroupRoot};
use crate::output::{SharedCapture, read_capped, snapshot};
use crate::report::{self, HostCapabilities};
use crate::sys::{self, ChildSetup, Reaped};
use crate::workspace::Workspace;

/// The backend's name in results and reports.
pub const BACKEND: &str = "restricted";

/// The `PATH` sandboxed programs see.
const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Open files allowed per process.
const MAX_OPEN_FILES: u64 = 1024;

/// How long output readers may take to finish once every process is gone.
const READER_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs code as a child process of this one, bounded by rlimits and, where
/// the caller may create them, a cgroup per execution.
///
/// Each execution gets a fresh temporary working directory (removed
/// afterwards), a cleared environment, its own session and process group,
/// output capped while it streams, and a wall-clock timeout that kills the
/// whole process tree. [`Executor::isolation`] says which protections are in
/// force here: this runner does not isolate the network or the filesystem.
///
/// ```no_run
/// use sandbox_core::{ExecutionRequest, Executor, Limits};
/// use sandbox_restricted::RestrictedExecutor;
///
/// # async fn demo() -> Result<(), sandbox_core::Error> {
/// let executor = RestrictedExecutor::builder()
///     .limits(Limits::builder().memory("256m")?.build()?)
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
    python: Option<PathBuf>,
    resolved_python: OnceCell<Result<PathBuf, String>>,
    shell: PathBuf,
    host: HostCapabilities,
}

/// Configures a [`RestrictedExecutor`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RestrictedExecutorBuilder {
    limits: Option<Limits>,
    temp_dir: Option<PathBuf>,
    python: Option<PathBuf>,
    shell: Option<PathBuf>,
    cgroups: Option<bool>,
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
        self.cgroups = Some(enabled);
        self
    }

    /// Builds the executor, checking its limits and probing the machine.
    pub fn build(self) -> Result<RestrictedExecutor, Error> {
        let limits = self.limits.unwrap_or_default();
        limits.validate()?;
        let cgroups = if self.cgroups.unwrap_or(true) {
            CgroupRoot::detect()
        } else {
            Err("disabled by configuration".to_owned())
        };
        Ok(RestrictedExecutor {
            limits,
            temp_dir: self.temp_dir.unwrap_or_else(std::env::temp_dir),
            python: self.python,
            resolved_python: OnceCell::new(),
            shell: self.shell.unwrap_or_else(|| PathBuf::from("/bin/sh")),
            host: HostCapabilities {
                cgroups,
                uid: nix::unistd::geteuid().as_raw(),
            },
        })
    }
}

impl RestrictedExecutor {
    /// A builder with every default.
    pub fn builder() -> RestrictedExecutorBuilder {
        RestrictedExecutorBuilder::default()
    }

    /// An executor with the default limits.
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// The Python interpreter to run, found once.
    async fn python(&self) -> Result<PathBuf, Error> {
        if let Some(python) = &self.python {
            return Ok(python.clone());
        }
        self.resolved_python
            .get_or_init(|| async { resolve_python().await })
            .await
            .clone()
            .map_err(|reason| Error::Unsupported {
                backend: BACKEND.to_owned(),
                feature: format!(
                    "Python here: {reason}; install python3 or set RestrictedExecutorBuilder::python"
                ),
            })
    }

    /// The argv that runs `program`, writing source files into `workspace`.
    async fn argv(&self, program: &Program, workspace: &Workspace) -> Result<Vec<PathBuf>, Error> {
        Ok(match program {
            Program::Python(source) => {
                let file = workspace.write_program("main.py", source)?;
                vec![self.python().await?, file]
            }
            Program::Shell(script) => {
                let file = workspace.write_program("main.sh", script)?;
                vec![self.shell.clone(), file]
            }
            Program::Command(argv) => argv.iter().map(PathBuf::from).collect(),
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
        argv: &[PathBuf],
        request: &ExecutionRequest,
        workspace: &Workspace,
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
            .stdin(if request.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok(command)
    }

    fn rlimits(&self, limits: &Limits, cgroup: bool) -> Vec<(Resource, u64)> {
        let cpu_seconds = (limits.timeout.as_secs_f64() * limits.cpus.max(1.0)).ceil() as u64 + 1;
        let open_files = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE)
            .map(|(_, hard)| hard.min(MAX_OPEN_FILES))
            .unwrap_or(MAX_OPEN_FILES);
        let mut rlimits = vec![
            (Resource::RLIMIT_CORE, 0),
            (Resource::RLIMIT_CPU, cpu_seconds),
            (Resource::RLIMIT_FSIZE, limits.scratch_bytes),
            (Resource::RLIMIT_NOFILE, open_files),
        ];
        if !cgroup {
            rlimits.push((Resource::RLIMIT_DATA, limits.memory_bytes));
            if self.host.uid != 0 {
                let running = processes_of_uid(self.host.uid);
                rlimits.push((Resource::RLIMIT_NPROC, running + u64::from(limits.pids)));
            }
        }
        rlimits
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
        report::build(&self.host, &self.limits, self.host.cgroups.as_ref().ok())
    }

    async fn execute(&self, request: ExecutionRequest) -> Result<ExecutionResult, Error> {
        request.validate()?;
        let limits = request.limits.build_over(&self.limits)?;
        let workspace = Workspace::create(&self.temp_dir, &request.files)?;
        let argv = self.argv(&request.program, &workspace).await?;
        let mut command = self.command(&argv, &request, &workspace)?;

        let cgroup = self.cgroup(&limits);
        let cgroup_root = cgroup.as_ref().and(self.host.cgroups.as_ref().ok());
        let isolation = report::build(&self.host, &limits, cgroup_root);
        let cgroup_procs = match &cgroup {
            Some(cgroup) => cgroup
                .procs_files()
                .map_err(|e| Error::io("opening the execution's cgroup", e))?,
            None => Vec::new(),
        };
        sys::apply_before_exec(
            &mut command,
            ChildSetup {
                rlimits: self.rlimits(&limits, cgroup.is_some()),
                cgroup_procs,
            },
        );

        let started = Instant::now();
        let mut child = command.spawn().map_err(|e| spawn_error(&argv[0], e))?;
        drop(command);
        let pid = i32::try_from(child.id())
            .map_err(|e| Error::backend(BACKEND, "the child's pid is out of range", e))?;
        let tree = ProcessTree {
            pid,
            cgroup: cgroup.map(Arc::new),
        };

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
        Ok(result)
    }
}

/// How a program that the sandbox did not stop ended.
fn natural_status(reaped: &Reaped, oom_killed: bool) -> Status {
    match reaped.signal() {
        None => Status::Exited,
        Some(libc::SIGKILL) if oom_killed => Status::OomKilled,
        Some(libc::SIGXCPU) => Status::Killed,
        Some(_) => Status::Signaled,
    }
}

/// Every process of one execution: the child's process group and, when
/// there is one, its cgroup. Dropping it kills them all.
#[derive(Debug)]
struct ProcessTree {
    pid: i32,
    cgroup: Option<Arc<Cgroup>>,
}

impl ProcessTree {
    /// Kills the process group and every cgroup member.
    async fn kill(&self) {
        self.kill_group();
        if let Some(cgroup) = self.cgroup.clone() {
            // Listing and killing members may take a few rounds: keep it off the runtime.
            let _ = tokio::task::spawn_blocking(move || cgroup.kill_all()).await;
        }
    }

    fn kill_group(&self) {
        // The group may be gone already: nothing to do then.
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
    }

    /// Removes the cgroup, returning whether the OOM killer struck and the peak memory.
    async fn finish(mut self) -> (bool, Option<u64>) {
        let Some(cgroup) = self.cgroup.take() else {
            return (false, None);
        };
        let facts = (cgroup.oom_killed(), cgroup.peak_memory());
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(cgroup) = Arc::try_unwrap(cgroup) {
                cgroup.remove();
            }
        })
        .await;
        facts
    }
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        // Reached with a live tree only when the caller dropped the future or an
        // error cut the run short; the cgroup's own drop kills its members.
        self.kill_group();
    }
}

/// A task aborted when its handle is dropped, so a cancelled run stops its helpers.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    async fn join(mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn missing_pipe() -> Error {
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

/// The interpreter behind `python3` on the caller's PATH (following pyenv-style shims).
async fn resolve_python() -> Result<PathBuf, String> {
    let output = tokio::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("python3 could not be started ({e})"))?;
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || path.is_empty() {
        return Err(format!(
            "python3 did not report its executable ({})",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(PathBuf::from(path))
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
