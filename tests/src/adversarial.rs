//! The adversarial battery: what hostile or broken code does to a sandbox,
//! written once and run on every backend.
//!
//! Each case is a `pub async fn(&dyn Executor)` run by [`adversarial_suite!`](crate::adversarial_suite)
//! in a backend's test file, which builds a fresh [`Sandbox`] per case and,
//! after the case, checks that the executor still works and that nothing was
//! left behind (no container, process, or temporary directory).
//!
//! Every case asserts a defined result (an exit status, `TimedOut`,
//! `OomKilled`, `OutputLimitExceeded`, or a clear `Err`), that it returned
//! within [`SLACK`] of its timeout, and, for the cases that move a lot of
//! output or input through this process, that this process's resident
//! memory grew by less than [`RSS_BOUND`]. Protection cases first show that
//! their probe works where nothing stops it (run on the host by this
//! process), then that the sandbox stops it. Where a backend cannot hide
//! something, the case asserts what the README claims and says so in a
//! comment.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sandbox_core::{
    Error, ExecutionRequest, ExecutionResult, Executor, Limits, Protection, ProtectionState, Status,
};
use tokio::sync::RwLock;

/// How long past its timeout (or its expected end) a case may take to return.
pub const SLACK: Duration = Duration::from_secs(5);

/// How much this process's resident memory may grow around a heavy case.
pub const RSS_BOUND: u64 = 64 << 20;

/// The variable `.cargo/config.toml` sets in every test process.
pub const HOST_SECRET_VAR: &str = "RLMKIT_SANDBOX_TEST_SECRET";

/// The first uid of the ranges [`private_uid_range`] hands out: above the
/// restricted runner's default range, so the default-range scans of other
/// tests and of the soak never see the battery's processes.
pub const BATTERY_FIRST_UID: u32 = 1_600_000_000;

/// How many uids each [`private_uid_range`] spans.
pub const BATTERY_UIDS_PER_CASE: u32 = 256;

/// Cases that measure this process's memory (or move a lot of data through
/// it) hold this lock exclusively; every other case holds it shared, so the
/// measurements see no other case's buffers.
static EXCLUSIVE: RwLock<()> = RwLock::const_new(());

/// The names of every case, in the order [`adversarial_suite!`](crate::adversarial_suite) lists them.
pub const CASES: &[&str] = &[
    "fork_bomb",
    "memory_bomb_one_allocation",
    "memory_bomb_slow_growth",
    "disk_fill_of_the_scratch_space",
    "output_flood_on_both_streams",
    "a_million_tiny_lines",
    "a_100_mb_line_without_newline",
    "binary_garbage_on_both_streams",
    "closing_stdout_early",
    "sleep_forever",
    "busy_loop",
    "child_ignoring_sigterm",
    "double_forked_setsid_grandchild",
    "signals_to_the_parent_and_everyone",
    "host_secrets_are_out_of_reach",
    "tcp_to_host_listeners",
    "udp_to_a_host_socket",
    "dns_resolution",
    "raw_sockets",
    "netlink_sockets",
    "vsock_sockets",
    "proc_and_sys_snooping",
    "symlink_and_hardlink_tricks",
    "writing_to_the_code",
    "ten_mb_of_code",
    "fifty_mb_of_stdin",
    "nul_byte_in_source",
    "nul_bytes_in_requests",
    "invalid_utf8_source",
];

// ---------------------------------------------------------------------------
// The per-case sandbox and its leftover check
// ---------------------------------------------------------------------------

/// A future listing what an execution left behind, one line per leftover.
pub type Leftovers = Pin<Box<dyn Future<Output = Vec<String>> + Send>>;

type LeftoverCheck = Box<dyn Fn() -> Leftovers + Send + Sync>;

/// One case's executor, with the means to find what its executions left behind.
pub struct Sandbox {
    executor: Box<dyn Executor>,
    leftovers: LeftoverCheck,
    _keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("executor", &self.executor)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// `executor`, and `leftovers`: lists what is left (containers, processes,
    /// directories); empty when nothing is.
    pub fn new(
        executor: Box<dyn Executor>,
        leftovers: impl Fn() -> Leftovers + Send + Sync + 'static,
    ) -> Self {
        Sandbox {
            executor,
            leftovers: Box::new(leftovers),
            _keep: Vec::new(),
        }
    }

    /// Keeps `guard` (a temporary directory, ...) alive as long as the sandbox.
    pub fn keep(mut self, guard: impl std::any::Any + Send + Sync) -> Self {
        self._keep.push(Box::new(guard));
        self
    }

    /// The executor the case runs on.
    pub fn executor(&self) -> &dyn Executor {
        self.executor.as_ref()
    }

    /// After a case: the executor still works; then, once it is dropped
    /// (a backend may keep containers or processes ready while its executor
    /// lives), within a few seconds nothing of the case's executions is left.
    pub async fn finish(self) {
        let request = ExecutionRequest::python("print('still here')")
            .limits(Limits::builder().timeout(Duration::from_secs(20)));
        let result = run(self.executor(), request).await;
        assert_exited(&result, 0);
        assert_eq!(result.stdout_text(), "still here\n");

        let backend = self.executor.name().to_owned();
        let executor = self.executor;
        // Dropping may wait for the backend's own cleanup: off the runtime.
        tokio::task::spawn_blocking(move || drop(executor))
            .await
            .expect("dropping the executor does not panic");
        let started = Instant::now();
        loop {
            let left = (self.leftovers)().await;
            if left.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "left behind by the {backend} backend:\n{}",
                left.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A uid range of its own for one case's restricted executor (so that a
/// leftover process can be told apart from the processes of cases running
/// at the same time): `(first, count)`.
pub fn private_uid_range() -> (u32, u32) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let index = NEXT.fetch_add(1, Ordering::Relaxed);
    (
        BATTERY_FIRST_UID + (std::process::id() % 64) * 1_000_000 + index * BATTERY_UIDS_PER_CASE,
        BATTERY_UIDS_PER_CASE,
    )
}

/// The entries of `dir` (each as a path), or the error reading it.
pub fn entries_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| match e {
                Ok(entry) => format!("directory entry {}", entry.path().display()),
                Err(error) => format!("unreadable entry in {}: {error}", dir.display()),
            })
            .collect(),
        Err(error) => vec![format!("cannot list {}: {error}", dir.display())],
    }
}

/// The live (not zombie) processes whose real, effective, saved or
/// filesystem uid lies in `uids`, as `pid uid name` lines.
pub fn processes_of_uids(uids: std::ops::Range<u32>) -> Vec<String> {
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return vec!["/proc cannot be listed".to_owned()];
    };
    let mut found = Vec::new();
    for entry in proc_dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue; // gone meanwhile
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        if field("State:").starts_with('Z') {
            continue;
        }
        let ids: Vec<u32> = field("Uid:")
            .split_whitespace()
            .filter_map(|id| id.parse().ok())
            .collect();
        if let Some(uid) = ids.iter().find(|id| uids.contains(id)) {
            found.push(format!("process {pid} uid {uid} {}", field("Name:")));
        }
    }
    found
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// This process's resident memory (VmRSS), in bytes.
pub fn vm_rss() -> u64 {
    status_kb("VmRSS:")
}

/// This process's peak resident memory (VmHWM), in bytes.
pub fn vm_hwm() -> u64 {
    status_kb("VmHWM:")
}

fn status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Asserts that this process's resident memory grew by less than [`RSS_BOUND`] since `before`.
fn assert_rss_bounded(before: u64, what: &str) {
    let after = vm_rss();
    let growth = after.saturating_sub(before);
    assert!(
        growth < RSS_BOUND,
        "{what}: this process's resident memory grew by {} MiB ({} -> {} MiB)",
        growth >> 20,
        before >> 20,
        after >> 20
    );
}

fn describe(result: &ExecutionResult) -> String {
    format!(
        "status={} exit={:?} signal={:?} duration={:?} stdout_len={} stderr_len={}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        result.status,
        result.exit_code,
        result.signal,
        result.duration,
        result.stdout.len(),
        result.stderr.len(),
        String::from_utf8_lossy(&result.stdout[..result.stdout.len().min(3000)]),
        String::from_utf8_lossy(&result.stderr[..result.stderr.len().min(3000)]),
    )
}

fn assert_exited(result: &ExecutionResult, code: i32) {
    assert_eq!(
        (result.status, result.exit_code),
        (Status::Exited, Some(code)),
        "{}",
        describe(result)
    );
}

/// Runs `request`, failing the case if the sandbox could not run it.
async fn run(executor: &dyn Executor, request: ExecutionRequest) -> ExecutionResult {
    match executor.execute(request).await {
        Ok(result) => result,
        Err(error) => panic!(
            "{} could not run the request: {error} ({error:?})",
            executor.name()
        ),
    }
}

/// Runs `request` with `timeout`, asserting that it returned within [`SLACK`]
/// of it; gives the outcome and how long it took.
async fn bounded(
    executor: &dyn Executor,
    request: ExecutionRequest,
    timeout: Duration,
) -> (Result<ExecutionResult, Error>, Duration) {
    let mut request = request;
    request.limits = request.limits.clone().timeout(timeout);
    let started = Instant::now();
    let outcome = executor.execute(request).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < timeout + SLACK,
        "{} returned {elapsed:?} after the start, past its {timeout:?} timeout + {SLACK:?}: {:?}",
        executor.name(),
        outcome.as_ref().map(describe)
    );
    (outcome, elapsed)
}

/// [`bounded`], failing the case on `Err`.
async fn run_bounded(
    executor: &dyn Executor,
    request: ExecutionRequest,
    timeout: Duration,
) -> ExecutionResult {
    let (outcome, _) = bounded(executor, request, timeout).await;
    match outcome {
        Ok(result) => result,
        Err(error) => panic!(
            "{} could not run the request: {error} ({error:?})",
            executor.name()
        ),
    }
}

/// Asserts a timed-out run: status, its duration at least the timeout, output kept.
fn assert_timed_out(result: &ExecutionResult, timeout: Duration) {
    assert_eq!(result.status, Status::TimedOut, "{}", describe(result));
    assert!(
        result.duration + Duration::from_millis(50) >= timeout,
        "timed out after {:?}, before its {timeout:?} timeout: {}",
        result.duration,
        describe(result)
    );
    assert_eq!(result.shell_exit_code(), 124);
}

/// The `key=value` lines of a probe's stdout.
fn fields(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The value of `key` in `fields`, failing with the whole run when missing.
fn field<'a>(fields: &'a BTreeMap<String, String>, key: &str, context: &str) -> &'a str {
    match fields.get(key) {
        Some(value) => value,
        None => panic!("the probe printed no `{key}=`:\n{context}"),
    }
}

/// Runs Python `code` on the host, as this process's user, with `env` added
/// (the probe that shows a protection case's code works where nothing stops it).
fn host_python(code: &str, env: &[(&str, &str)], cwd: Option<&Path>) -> String {
    let mut command = std::process::Command::new("python3");
    command.arg("-c").arg(code).envs(env.iter().copied());
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let output = command.output().expect("python3 runs on the host");
    assert!(
        output.status.success(),
        "the probe failed on the host ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether a probe's outcome means the action was stopped.
fn refused(outcome: &str) -> bool {
    outcome.starts_with("refused") || outcome.starts_with("error")
}

/// The IPv4 address of the host's `docker0` bridge, if there is one.
fn docker_bridge_address() -> Option<Ipv4Addr> {
    let output = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show", "docker0"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let cidr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)?;
    cidr.split('/').next()?.parse().ok()
}

/// A temporary directory of the test's own, outside any sandbox.
fn host_temp_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rlmkit-adversarial-{}-{tag}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a host temporary directory");
    dir
}

/// Removes a host temporary directory when dropped.
struct HostDir(PathBuf);

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

// ---------------------------------------------------------------------------
// Processes, memory, disk
// ---------------------------------------------------------------------------

/// A fork bomb, a counted fork loop and a thread bomb end within their
/// timeouts under a small pids limit, and the host can still fork afterwards.
pub async fn fork_bomb(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let pids = 32;
    // The classic shell bomb: ends by itself or at the timeout.
    let timeout = Duration::from_secs(5);
    let bomb = ExecutionRequest::shell("bomb() { bomb | bomb & }; bomb; sleep 60")
        .limits(Limits::builder().pids(pids));
    let result = run_bounded(executor, bomb, timeout).await;
    assert!(
        matches!(result.status, Status::Exited | Status::TimedOut),
        "{}",
        describe(&result)
    );

    // Counted: the limit holds (fewer than `pids` processes started) and the
    // refusals are ordinary errors the program can see.
    let code = r#"
import os, time
started = failed = 0
for _ in range(500):
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    started += 1
print(f"started={started}")
print(f"failed={failed}", flush=True)
"#;
    let request = ExecutionRequest::python(code).limits(Limits::builder().pids(pids));
    let result = run_bounded(executor, request, Duration::from_secs(20)).await;
    assert_exited(&result, 0);
    let stdout = result.stdout_text();
    let found = fields(&stdout);
    let started: u32 = field(&found, "started", &describe(&result))
        .parse()
        .unwrap();
    let failed: u32 = field(&found, "failed", &describe(&result)).parse().unwrap();
    assert!(started > 0, "no fork succeeded: {}", describe(&result));
    assert!(
        started < pids,
        "{started} processes under a limit of {pids}"
    );
    assert!(failed > 0, "no fork was refused: {}", describe(&result));

    // Threads count too.
    let code = r#"
import threading, time
started = 0
try:
    for _ in range(1000):
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        started += 1
except RuntimeError as e:
    print(f"refused={e}")
print(f"threads={started}", flush=True)
import os; os._exit(0)
"#;
    let request = ExecutionRequest::python(code).limits(Limits::builder().pids(pids));
    let result = run_bounded(executor, request, Duration::from_secs(20)).await;
    assert_exited(&result, 0);
    let stdout = result.stdout_text();
    let found = fields(&stdout);
    let threads: u32 = field(&found, "threads", &describe(&result))
        .parse()
        .unwrap();
    assert!(threads < pids, "{threads} threads under a limit of {pids}");
    assert!(found.contains_key("refused"), "{}", describe(&result));

    // The host itself is unharmed.
    let status = std::process::Command::new("true")
        .status()
        .expect("the host can fork");
    assert!(status.success());
}

/// One allocation far past the memory limit is killed (or refused as a
/// MemoryError) at once; the same program under a roomy limit finishes.
pub async fn memory_bomb_one_allocation(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let code =
        "import os\nblob = b'\\x01' * int(os.environ['BYTES'])\nprint('allocated', len(blob))";
    // The probe works: 32 MiB under a 256 MiB limit.
    let roomy = ExecutionRequest::python(code)
        .env("BYTES", (32u64 << 20).to_string())
        .limits(Limits::builder().memory_bytes(256 << 20));
    let result = run_bounded(executor, roomy, Duration::from_secs(20)).await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout_text(), format!("allocated {}\n", 32u64 << 20));

    // 4 GiB at once under 128 MiB.
    let bomb = ExecutionRequest::python(code)
        .env("BYTES", (4u64 << 30).to_string())
        .limits(Limits::builder().memory_bytes(128 << 20));
    let result = run_bounded(executor, bomb, Duration::from_secs(20)).await;
    assert_memory_stopped(&result);
}

fn assert_memory_stopped(result: &ExecutionResult) {
    assert!(
        !result.stdout_text().contains("allocated"),
        "{}",
        describe(result)
    );
    let stopped = match result.status {
        Status::OomKilled => true,
        Status::Exited => {
            result.exit_code != Some(0) && result.stderr_text().contains("MemoryError")
        }
        _ => false,
    };
    assert!(
        stopped,
        "expected an OOM kill or a MemoryError: {}",
        describe(result)
    );
}

/// Memory that grows slowly is stopped when it passes the limit, long before the timeout.
pub async fn memory_bomb_slow_growth(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let code = r#"
import os, time
held = []
for i in range(int(os.environ['STEPS'])):
    held.append(b'\x01' * (2 << 20))
    time.sleep(0.01)
print('allocated', len(held) * 2, 'MiB')
"#;
    // The probe works: 40 MiB over a second fits under 256 MiB.
    let roomy = ExecutionRequest::python(code)
        .env("STEPS", "20")
        .limits(Limits::builder().memory_bytes(256 << 20));
    let result = run_bounded(executor, roomy, Duration::from_secs(20)).await;
    assert_exited(&result, 0);

    // 2 GiB, 2 MiB at a time, under 128 MiB: stopped long before the timeout.
    let timeout = Duration::from_secs(30);
    let bomb = ExecutionRequest::python(code)
        .env("STEPS", "1000")
        .limits(Limits::builder().memory_bytes(128 << 20));
    let (outcome, elapsed) = bounded(executor, bomb, timeout).await;
    let result = outcome.unwrap();
    assert_memory_stopped(&result);
    assert!(
        elapsed < Duration::from_secs(15),
        "the growth was stopped only after {elapsed:?}"
    );
}

/// Filling the scratch space (TMPDIR and HOME) stops at the scratch limit:
/// per file everywhere, and in total where the backend reports the scratch
/// limit as enforced.
pub async fn disk_fill_of_the_scratch_space(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let scratch: u64 = 8 << 20;
    let code = r#"
import errno, os
limit = int(os.environ['SCRATCH'])
chunk = b'\x5a' * 65536
def fill(path, cap):
    written, err = 0, 'none'
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        return 0, errno.errorcode.get(e.errno, str(e.errno))
    try:
        while written < cap:
            written += os.write(fd, chunk)
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
    finally:
        os.close(fd)
    return written, err
for name in ('TMPDIR', 'HOME'):
    base = os.environ[name]
    big = os.path.join(base, f'big-{name}')
    w, e = fill(big, 4 * limit)
    print(f'big_{name}={w} {e}', flush=True)
    try:
        os.unlink(big)
    except OSError:
        pass
    total, last = 0, 'none'
    for i in range(8):
        w, e = fill(os.path.join(base, f'part-{name}-{i}'), limit // 2)
        total += w
        if e != 'none':
            last = e
            break
    print(f'many_{name}={total} {last}', flush=True)
    for i in range(8):
        try:
            os.unlink(os.path.join(base, f'part-{name}-{i}'))
        except OSError:
            pass
"#;
    let request = ExecutionRequest::python(code)
        .env("SCRATCH", scratch.to_string())
        .limits(Limits::builder().scratch_bytes(scratch));
    let result = run_bounded(executor, request, Duration::from_secs(60)).await;
    assert_exited(&result, 0);
    let stdout = result.stdout_text();
    let found = fields(&stdout);
    let bytes = |key: &str| -> (u64, String) {
        let value = field(&found, key, &describe(&result));
        let (n, err) = value.split_once(' ').unwrap();
        (n.parse().unwrap(), err.to_owned())
    };
    let enforced = result.isolation.is_enforced(Protection::Scratch);
    for dir in ["TMPDIR", "HOME"] {
        let (big, err) = bytes(&format!("big_{dir}"));
        // The probe works: the program can write there at all.
        assert!(
            big >= 1 << 20,
            "{dir}: only {big} bytes written: {}",
            describe(&result)
        );
        assert!(
            big <= scratch,
            "{dir}: one file grew to {big} bytes past the {scratch}-byte scratch limit"
        );
        assert_ne!(err, "none", "{dir}: 4x the scratch limit was written");
        let (many, err) = bytes(&format!("many_{dir}"));
        if enforced {
            assert!(
                many <= scratch,
                "{dir}: {many} bytes in several files past the {scratch}-byte scratch limit"
            );
            assert_ne!(err, "none");
        } else {
            // Gap, as the README says for the restricted runner: the limit is
            // per file (RLIMIT_FSIZE), the total written is not capped, so a
            // program can fill the host's temporary filesystem until its
            // timeout. The report must say so.
            let entry = result.isolation.get(Protection::Scratch).unwrap();
            assert_eq!(entry.state, ProtectionState::Partial, "{entry:?}");
            assert!(entry.detail.contains("per file"), "{entry:?}");
        }
    }

    // A shell tool killed by SIGXFSZ (or stopped by ENOSPC) is an ordinary end.
    let script = "head -c 33554432 /dev/zero > \"$TMPDIR/shell-fill\"; echo \"rc=$?\"; echo \"size=$(wc -c < \"$TMPDIR/shell-fill\")\"";
    let request = ExecutionRequest::shell(script).limits(Limits::builder().scratch_bytes(scratch));
    let result = run_bounded(executor, request, Duration::from_secs(30)).await;
    assert_exited(&result, 0);
    let stdout = result.stdout_text();
    let found = fields(&stdout);
    assert_ne!(
        field(&found, "rc", &describe(&result)),
        "0",
        "{}",
        describe(&result)
    );
    let size: u64 = field(&found, "size", &describe(&result)).parse().unwrap();
    assert!(
        size <= scratch,
        "{size} bytes in one file: {}",
        describe(&result)
    );
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// stdout and stderr flooded at once, by threads of one process and by two
/// processes: stopped at the cap, both streams capped, promptly, without
/// this process's memory growing.
pub async fn output_flood_on_both_streams(executor: &dyn Executor) {
    let _exclusive = EXCLUSIVE.write().await;
    let cap: u64 = 256 << 10;
    let python = r#"
import os, threading
def flood(fd, ch):
    block = ch * 65536
    while True:
        os.write(fd, block)
threading.Thread(target=flood, args=(2, b'e'), daemon=True).start()
flood(1, b'o')
"#;
    let shell = "yes oooooooooooooooooooooo & yes eeeeeeeeeeeeeeeeeeeeeeeeeee >&2 & wait";
    for (request, out, err) in [
        (ExecutionRequest::python(python), b'o', b'e'),
        (ExecutionRequest::shell(shell), b'o', b'e'),
    ] {
        let before = vm_rss();
        let request = request.limits(Limits::builder().output_bytes(cap));
        let (outcome, elapsed) = bounded(executor, request, Duration::from_secs(30)).await;
        let result = outcome.unwrap();
        assert_eq!(
            result.status,
            Status::OutputLimitExceeded,
            "{}",
            describe(&result)
        );
        assert!(
            elapsed < Duration::from_secs(10),
            "stopped after {elapsed:?}"
        );
        assert!(result.stdout.len() as u64 <= cap && result.stderr.len() as u64 <= cap);
        assert!(
            result.stdout_truncated || result.stderr_truncated,
            "{}",
            describe(&result)
        );
        assert!(
            result.stdout_dropped_bytes > 0 || result.stderr_dropped_bytes > 0,
            "{}",
            describe(&result)
        );
        assert!(result.stdout.iter().all(|b| *b == out || *b == b'\n'));
        assert!(result.stderr.iter().all(|b| *b == err || *b == b'\n'));
        assert_eq!(result.shell_exit_code(), 137);
        assert_rss_bounded(before, "a flood on both streams");
    }
}

/// A million tiny lines all arrive, in order, under a cap that holds them.
pub async fn a_million_tiny_lines(executor: &dyn Executor) {
    let _exclusive = EXCLUSIVE.write().await;
    let before = vm_rss();
    let code = "import sys\nw = sys.stdout.write\nfor i in range(1000000):\n    w(f'{i}\\n')";
    let request = ExecutionRequest::python(code).limits(Limits::builder().output_bytes(16 << 20));
    let result = run_bounded(executor, request, Duration::from_secs(120)).await;
    assert_exited(&result, 0);
    assert!(!result.stdout_truncated, "{}", describe(&result));
    let text = result.stdout_utf8().unwrap();
    let mut count = 0usize;
    for (i, line) in text.lines().enumerate() {
        assert_eq!(line, i.to_string(), "line {i} is wrong");
        count += 1;
    }
    assert_eq!(count, 1_000_000);
    assert!(result.stderr.is_empty(), "{}", describe(&result));
    assert_rss_bounded(before, "a million lines");

    // Under the default cap (1 MiB) the same program is stopped at the cap.
    let before = vm_rss();
    let request = ExecutionRequest::python(code).limits(Limits::builder().output_bytes(1 << 20));
    let result = run_bounded(executor, request, Duration::from_secs(120)).await;
    assert_eq!(
        result.status,
        Status::OutputLimitExceeded,
        "{}",
        describe(&result)
    );
    assert_eq!(result.stdout.len(), 1 << 20);
    assert!(result.stdout.starts_with(b"0\n1\n2\n"));
    assert_rss_bounded(before, "a million lines, capped");
}

/// One 100 MB line without a newline on each stream, in one write each: cut
/// at the cap, the rest dropped, promptly, without this process holding it.
pub async fn a_100_mb_line_without_newline(executor: &dyn Executor) {
    let _exclusive = EXCLUSIVE.write().await;
    let cap: u64 = 1 << 20;
    let code = r#"
import os, sys, threading
line = b'x' * (100 << 20)
t = threading.Thread(target=lambda: sys.stderr.buffer.write(line.replace(b'x', b'y')))
t.start()
sys.stdout.buffer.write(line)
t.join()
"#;
    let before = vm_rss();
    let request = ExecutionRequest::python(code)
        .limits(Limits::builder().output_bytes(cap).memory_bytes(512 << 20));
    let (outcome, elapsed) = bounded(executor, request, Duration::from_secs(60)).await;
    let result = outcome.unwrap();
    assert_eq!(
        result.status,
        Status::OutputLimitExceeded,
        "{}",
        describe(&result)
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "stopped after {elapsed:?}"
    );
    assert!(result.stdout.len() as u64 <= cap && result.stderr.len() as u64 <= cap);
    assert!(result.stdout.len() as u64 == cap || result.stderr.len() as u64 == cap);
    assert!(result.stdout.iter().all(|b| *b == b'x'));
    assert!(result.stderr.iter().all(|b| *b == b'y'));
    assert!(result.stdout_truncated || result.stderr_truncated);
    assert_rss_bounded(before, "a 100 MB line");
}

/// Binary garbage and invalid UTF-8 on both streams arrive byte for byte.
pub async fn binary_garbage_on_both_streams(executor: &dyn Executor) {
    let _exclusive = EXCLUSIVE.write().await;
    let before = vm_rss();
    let invalid: &[u8] =
        b"\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x90\x28\xbc\xff\xfe\xfd\x00\xed\xa0\x80";
    let size = 256 * 1024;
    let garbage: Vec<u8> = (0..size).map(|i| ((i * 131 + 7) % 256) as u8).collect();
    let code = r#"
import os, sys
invalid = bytes.fromhex(os.environ['INVALID'])
garbage = bytes((i * 131 + 7) % 256 for i in range(int(os.environ['SIZE'])))
sys.stdout.buffer.write(garbage + invalid)
sys.stderr.buffer.write(invalid + garbage[::-1])
"#;
    let hex: String = invalid.iter().map(|b| format!("{b:02x}")).collect();
    let request = ExecutionRequest::python(code)
        .env("INVALID", hex)
        .env("SIZE", size.to_string());
    let result = run_bounded(executor, request, Duration::from_secs(30)).await;
    assert_exited(&result, 0);
    let mut expected_out = garbage.clone();
    expected_out.extend_from_slice(invalid);
    let mut expected_err = invalid.to_vec();
    expected_err.extend(garbage.iter().rev());
    assert!(
        result.stdout == expected_out,
        "stdout differs ({} bytes)",
        result.stdout.len()
    );
    assert!(
        result.stderr == expected_err,
        "stderr differs ({} bytes)",
        result.stderr.len()
    );
    assert!(result.stdout_utf8().is_err() && result.stderr_utf8().is_err());

    // The same from a shell, with NUL bytes and no newline at the end.
    let script = r"printf '\377\376\000\303\050' ; printf '\000\355\240\200' >&2";
    let result = run_bounded(
        executor,
        ExecutionRequest::shell(script),
        Duration::from_secs(10),
    )
    .await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout, b"\xff\xfe\x00\xc3\x28");
    assert_eq!(result.stderr, b"\x00\xed\xa0\x80");
    assert_rss_bounded(before, "binary garbage");
}

/// Programs that close stdout (and stderr) early: the sandbox neither ends
/// the run at end-of-file nor hangs; it waits for the program, then its timeout.
pub async fn closing_stdout_early(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    // Close stdout, write to it anyway, say so on stderr, exit 3.
    let code = r#"
import os, sys
print('before', flush=True)
os.close(1)
try:
    os.write(1, b'more')
    sys.stderr.write('write=done\n')
except OSError as e:
    sys.stderr.write(f'write=refused {e.errno}\n')
sys.stderr.flush()
os._exit(3)
"#;
    let result = run_bounded(
        executor,
        ExecutionRequest::python(code),
        Duration::from_secs(10),
    )
    .await;
    assert_exited(&result, 3);
    assert_eq!(result.stdout_text(), "before\n");
    assert!(
        result.stderr_text().contains("write=refused"),
        "{}",
        describe(&result)
    );

    // Close both, keep working a second, exit 5: the run waits for the exit.
    let code = "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(1)\nos._exit(5)";
    let result = run_bounded(
        executor,
        ExecutionRequest::python(code),
        Duration::from_secs(10),
    )
    .await;
    assert_exited(&result, 5);
    assert!(
        result.duration >= Duration::from_millis(900),
        "the run ended at end-of-file, not at the exit: {}",
        describe(&result)
    );

    // Close both and never exit: the timeout ends it.
    let timeout = Duration::from_secs(2);
    let code =
        "import os, time\nos.close(1)\nos.close(2)\nos.close(0)\nwhile True:\n    time.sleep(100)";
    let result = run_bounded(executor, ExecutionRequest::python(code), timeout).await;
    assert_timed_out(&result, timeout);

    // From a shell: stdout closed, more written (an error), a code of its own.
    let script = "echo before; exec 1>&-; echo more 2>/dev/null; echo \"rc=$?\" >&2; exit 4";
    let result = run_bounded(
        executor,
        ExecutionRequest::shell(script),
        Duration::from_secs(10),
    )
    .await;
    assert_exited(&result, 4);
    assert_eq!(result.stdout_text(), "before\n");
    assert!(
        !result.stderr_text().contains("rc=0"),
        "{}",
        describe(&result)
    );
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/// Sleeping forever, in Python, in a shell and with `pause()`: timed out,
/// output so far kept.
pub async fn sleep_forever(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let timeout = Duration::from_millis(1500);
    for request in [
        ExecutionRequest::python("import time\nprint('zzz', flush=True)\ntime.sleep(10**8)"),
        ExecutionRequest::python("import signal\nprint('zzz', flush=True)\nsignal.pause()"),
        ExecutionRequest::shell("echo zzz; sleep 100000"),
        ExecutionRequest::command(["sh", "-c", "echo zzz; exec sleep 100000"]),
    ] {
        let result = run_bounded(executor, request, timeout).await;
        assert_timed_out(&result, timeout);
        assert_eq!(result.stdout_text(), "zzz\n", "{}", describe(&result));
    }
}

/// A busy loop, single and on several processes: timed out.
pub async fn busy_loop(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let timeout = Duration::from_millis(1500);
    for request in [
        ExecutionRequest::python("print('spin', flush=True)\nwhile True: pass"),
        ExecutionRequest::python(
            "import os\nfor _ in range(3):\n    if os.fork() == 0: break\nprint('spin', flush=True)\nwhile True: pass",
        ),
        ExecutionRequest::shell("echo spin; while :; do :; done"),
    ] {
        let result = run_bounded(executor, request, timeout).await;
        assert_timed_out(&result, timeout);
        assert!(
            result.stdout_text().contains("spin"),
            "{}",
            describe(&result)
        );
    }
}

/// A parent and child that ignore SIGTERM, SIGINT and SIGHUP (and catch
/// everything else they can) die at the timeout anyway.
pub async fn child_ignoring_sigterm(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let code = r#"
import os, signal, time
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGPIPE):
    signal.signal(s, signal.SIG_IGN)
if os.fork() == 0:
    print('child ignoring', flush=True)
    while True:
        try:
            time.sleep(1000)
        except BaseException:
            pass
print('parent ignoring', flush=True)
while True:
    try:
        time.sleep(1000)
    except BaseException:
        pass
"#;
    let timeout = Duration::from_secs(2);
    let result = run_bounded(executor, ExecutionRequest::python(code), timeout).await;
    assert_timed_out(&result, timeout);
    let stdout = result.stdout_text();
    assert!(
        stdout.contains("child ignoring") && stdout.contains("parent ignoring"),
        "{}",
        describe(&result)
    );
    // `trap '' TERM` in a shell, with a child of its own.
    let script = "trap '' TERM INT HUP; (trap '' TERM INT HUP; echo sub; while :; do sleep 1; done) & echo main; while :; do sleep 1; done";
    let result = run_bounded(executor, ExecutionRequest::shell(script), timeout).await;
    assert_timed_out(&result, timeout);
}

/// A grandchild that double forks and calls `setsid` (a backend may refuse
/// the `setsid`): while the program waits, the run ends at its timeout; when
/// the program exits at once, the run ends then. The suite's leftover check
/// proves the grandchild is gone either way.
pub async fn double_forked_setsid_grandchild(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let code = r#"
import os, sys, time
if os.fork() == 0:
    try:
        os.setsid()
        print('setsid=done', flush=True)
    except OSError as e:
        print(f'setsid=refused {e.errno}', flush=True)
    if os.fork() == 0:
        print('grandchild=alive', flush=True)
        if os.environ.get('DETACH') == '1':
            # A real daemon: stdio closed, nothing left for the sandbox to read.
            for fd in (0, 1, 2):
                os.close(fd)
        for s in range(1, 32):
            try:
                import signal
                if s not in (9, 19):
                    signal.signal(s, signal.SIG_IGN)
            except (OSError, ValueError, RuntimeError):
                pass
        while True:
            time.sleep(0.2)
    os._exit(0)
os.wait()
if os.environ.get('WAIT') == '1':
    time.sleep(10**6)
time.sleep(0.5)
print('main=exiting', flush=True)
"#;
    let timeout = Duration::from_secs(3);
    for (wait, detach) in [("1", "0"), ("1", "1"), ("0", "0"), ("0", "1")] {
        let request = ExecutionRequest::python(code)
            .env("WAIT", wait)
            .env("DETACH", detach);
        let result = run_bounded(executor, request, timeout).await;
        let stdout = result.stdout_text();
        let found = fields(&stdout);
        let setsid = field(&found, "setsid", &describe(&result));
        assert!(
            setsid == "done" || setsid.starts_with("refused"),
            "{setsid}"
        );
        assert_eq!(field(&found, "grandchild", &describe(&result)), "alive");
        if wait == "1" {
            assert_timed_out(&result, timeout);
        } else {
            // The program exits; a backend may still be waiting on the
            // grandchild's open stdout, but must end by the timeout.
            assert!(
                matches!(result.status, Status::Exited | Status::TimedOut),
                "{}",
                describe(&result)
            );
            if result.status == Status::Exited {
                assert_eq!(result.exit_code, Some(0), "{}", describe(&result));
                assert!(stdout.contains("main=exiting"), "{}", describe(&result));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------

/// Code that signals its parent, pid 1, every process (-1) and the test
/// process by pid: the host survives (this test process, and a canary
/// process of the host's), the run ends with a defined result, and the
/// executor still works. Where the sandboxed program's parent is this test
/// process itself (no pid namespace), or it can see this process's pid, the
/// signal must be refused.
pub async fn signals_to_the_parent_and_everyone(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let mut canary = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("a canary process on the host");
    let code = r#"
import os, signal, time
target = os.environ['TARGET']
sig = getattr(signal, os.environ['SIG'])
pid = {'parent': os.getppid(), 'pid1': 1, 'all': -1, 'self': os.getpid(),
       'host': int(os.environ['HOST_PID']), 'canary': int(os.environ['CANARY_PID'])}[target]
print(f'ppid={os.getppid()}', flush=True)
try:
    os.kill(pid, sig)
    print('kill=sent', flush=True)
except OSError as e:
    print(f'kill=refused {e.errno}', flush=True)
time.sleep(0.3)
print('alive=yes', flush=True)
"#;
    let host_pid = std::process::id().to_string();
    let canary_pid = canary.id().to_string();
    let request = |target: &str, sig: &str| {
        ExecutionRequest::python(code)
            .env("TARGET", target)
            .env("SIG", sig)
            .env("HOST_PID", &host_pid)
            .env("CANARY_PID", &canary_pid)
    };
    let timeout = Duration::from_secs(10);

    // The probe works: a program that signals itself dies of it.
    let result = run_bounded(executor, request("self", "SIGTERM"), timeout).await;
    let died = (result.status == Status::Signaled && result.signal == Some(15))
        || (result.status == Status::Exited && result.exit_code == Some(143));
    assert!(
        died,
        "the probe's SIGTERM to itself did not land: {}",
        describe(&result)
    );
    assert!(!result.stdout_text().contains("alive=yes"));

    for target in ["parent", "pid1", "all", "host", "canary"] {
        for sig in ["SIGTERM", "SIGKILL", "SIGSTOP"] {
            let result = run_bounded(executor, request(target, sig), timeout).await;
            assert!(
                matches!(
                    result.status,
                    Status::Exited | Status::Signaled | Status::Killed
                ),
                "{target} {sig}: {}",
                describe(&result)
            );
            let stdout = result.stdout_text();
            let found = fields(&stdout);
            let ppid = found.get("ppid").cloned().unwrap_or_default();
            let kill = found.get("kill").cloned().unwrap_or_default();
            let is_host = |pid: &str| pid == host_pid;
            if target == "host" || target == "canary" || (target == "parent" && is_host(&ppid)) {
                assert!(
                    refused(&kill),
                    "sandboxed code signalled a host process ({target}, {sig}, ppid {ppid}): {}",
                    describe(&result)
                );
            }
            assert_eq!(
                canary.try_wait().expect("the canary can be polled"),
                None,
                "{target} {sig} killed a host process"
            );
            let status = std::fs::read_to_string(format!("/proc/{canary_pid}/status")).unwrap();
            assert!(
                !status
                    .lines()
                    .any(|l| l.starts_with("State:") && l.contains('T')),
                "{target} {sig} stopped a host process"
            );
        }
    }
    let _ = canary.kill();
    let _ = canary.wait();
}

// ---------------------------------------------------------------------------
// Secrets and snooping
// ---------------------------------------------------------------------------

const SECRETS_PROBE: &str = r#"
import base64, os
def read(path):
    try:
        with open(path, 'rb') as f:
            return 'read ' + base64.b64encode(f.read()).decode()
    except OSError as e:
        return f'error {type(e).__name__}'
def listing(path):
    try:
        return 'list ' + ','.join(sorted(os.listdir(path)))
    except OSError as e:
        return f'error {type(e).__name__}'
print('shadow=' + read('/etc/shadow'))
print('gshadow=' + read('/etc/gshadow'))
print('cargo_exists=' + str(os.path.exists(os.environ['CARGO_DIR'])))
print('cargo_list=' + listing(os.environ['CARGO_DIR']))
print('home_list=' + listing(os.environ['HOST_HOME']))
print('env=' + base64.b64encode(repr(dict(os.environ)).encode()).decode())
print('env_host_home=' + str(os.environ.get('HOME') == os.environ['HOST_HOME']))
print('environ_1=' + read('/proc/1/environ'))
print('environ_parent=' + read(f'/proc/{os.getppid()}/environ'))
print('environ_host=' + read(f"/proc/{os.environ['HOST_PID']}/environ"))
hits = []
for pid in os.listdir('/proc'):
    if pid.isdigit() and pid != str(os.getpid()):
        content = read(f'/proc/{pid}/environ')
        if content.startswith('read '):
            hits.append(pid + ':' + content[5:])
print('environ_all=' + ';'.join(hits))
"#;

/// Host secrets: `/etc/shadow`, the caller's home (`~/.cargo`), the
/// caller's environment (directly and through `/proc/1/environ`,
/// `/proc/<parent>/environ` and `/proc/<this test's pid>/environ`, and every
/// other `/proc/*/environ`) are out of reach.
pub async fn host_secrets_are_out_of_reach(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let secret = std::env::var(HOST_SECRET_VAR)
        .expect("the test process carries the secret (set by .cargo/config.toml)");
    let host_home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
    let cargo_dir = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{host_home}/.cargo"));
    let host_pid = std::process::id().to_string();
    let env = [
        ("HOST_PID", host_pid.as_str()),
        ("CARGO_DIR", cargo_dir.as_str()),
        ("HOST_HOME", host_home.as_str()),
    ];

    // The probe works on the host: it reads this process's environment and
    // sees the caller's home (and, as root, /etc/shadow).
    let baseline = host_python(SECRETS_PROBE, &env, None);
    let base = fields(&baseline);
    assert!(
        decode(field(&base, "environ_host", &baseline)).contains(&secret),
        "probe: the host reads this process's environment"
    );
    assert_eq!(
        field(&base, "cargo_exists", &baseline),
        "True",
        "{cargo_dir} exists on the host"
    );
    let shadow_on_host = field(&base, "shadow", &baseline).starts_with("read ");

    let mut request =
        ExecutionRequest::python(SECRETS_PROBE).limits(Limits::builder().output_bytes(8 << 20));
    for (k, v) in env {
        request = request.env(k, v);
    }
    let result = run_bounded(executor, request, Duration::from_secs(30)).await;
    assert_exited(&result, 0);
    assert!(!result.stdout_truncated, "{}", describe(&result));
    let stdout = result.stdout_text();
    let found = fields(&stdout);
    let context = describe(&result);

    // Nothing anywhere in the output decodes to the secret.
    let mut decoded = String::new();
    for value in found.values() {
        decoded.push_str(&decode(value));
        decoded.push('\n');
    }
    for part in field(&found, "environ_all", &context).split(';') {
        if let Some((_, b64)) = part.split_once(':') {
            decoded.push_str(&decode(&format!("read {b64}")));
        }
    }
    assert!(
        !decoded.contains(&secret) && !stdout.contains(&secret),
        "the host secret leaked:\n{decoded}"
    );
    for key in ["environ_host", "environ_1", "environ_parent"] {
        let value = decode(field(&found, key, &context));
        assert!(!value.contains(HOST_SECRET_VAR), "{key}: {value}");
    }
    // /etc/shadow is unreadable or empty (the restricted runner shows /dev/null there).
    if shadow_on_host {
        for file in ["shadow", "gshadow"] {
            let inside = field(&found, file, &context);
            assert!(
                inside == "read" || inside.starts_with("error"),
                "/etc/{file} was readable inside: {inside}"
            );
        }
    }
    assert_eq!(
        field(&found, "cargo_exists", &context),
        "False",
        "{cargo_dir} is visible inside"
    );
    assert!(refused(field(&found, "cargo_list", &context)));
    assert_eq!(field(&found, "env_host_home", &context), "False");
    let home = field(&found, "home_list", &context);
    assert!(
        refused(home) || !home.contains(".cargo"),
        "the caller's home is listed inside: {home}"
    );
}

/// Decodes a probe's `read <base64>` value (other values pass through).
fn decode(value: &str) -> String {
    let Some(b64) = value.strip_prefix("read ") else {
        return value.to_owned();
    };
    let bytes = base64_decode(b64);
    String::from_utf8_lossy(&bytes).replace('\0', "\n")
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let Some(value) = ALPHABET.iter().position(|a| *a == c) else {
            continue; // padding, whitespace
        };
        buffer = (buffer << 6) | value as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

const SNOOP_PROBE: &str = r#"
import os
pid = os.environ['HOST_PID']
def read(path):
    try:
        with open(path, 'rb') as f:
            return 'read ' + f.read(200).hex()
    except OSError as e:
        return f'error {type(e).__name__}'
def listing(path):
    try:
        return 'list ' + ','.join(sorted(os.listdir(path)))
    except OSError as e:
        return f'error {type(e).__name__}'
print('host_pid_exists=' + str(os.path.exists(f'/proc/{pid}')))
for name in ('cmdline', 'environ', 'maps', 'mem', 'stack', 'syscall', 'auxv', 'status'):
    print(f'{name}=' + read(f'/proc/{pid}/{name}'))
for name in ('fd', 'cwd', 'root', 'map_files'):
    print(f'{name}=' + listing(f'/proc/{pid}/{name}'))
pids = [p for p in os.listdir('/proc') if p.isdigit()]
print(f'visible_processes={len(pids)}')
print('sys_net=' + listing('/sys/class/net'))
print('kmsg=' + read('/dev/kmsg'))
print('kcore=' + read('/proc/kcore'))
"#;

/// `/proc` and `/sys` snooping for the host's processes: this test process's
/// memory, environment, files and working directory are out of reach
/// everywhere; where the backend has a pid namespace (Docker) or a `/proc`
/// of the program's own (restricted, as root), it does not exist at all in
/// the sandbox's view; the host's network interfaces are not listed.
pub async fn proc_and_sys_snooping(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let host_pid = std::process::id().to_string();
    let env = [("HOST_PID", host_pid.as_str())];
    let baseline = host_python(SNOOP_PROBE, &env, None);
    let base = fields(&baseline);
    // The probe works on the host.
    for name in ["cmdline", "environ", "maps", "status"] {
        assert!(
            field(&base, name, &baseline).starts_with("read "),
            "probe: the host reads /proc/{host_pid}/{name}: {baseline}"
        );
    }
    for name in ["fd", "cwd"] {
        assert!(
            field(&base, name, &baseline).starts_with("list "),
            "{baseline}"
        );
    }
    let host_interfaces = field(&base, "sys_net", &baseline).to_owned();
    let host_has_more_than_lo = host_interfaces
        .trim_start_matches("list ")
        .split(',')
        .any(|i| !i.is_empty() && i != "lo");

    let mut request = ExecutionRequest::python(SNOOP_PROBE);
    for (k, v) in env {
        request = request.env(k, v);
    }
    let result = run_bounded(executor, request, Duration::from_secs(20)).await;
    assert_exited(&result, 0);
    let stdout = result.stdout_text();
    let found = fields(&stdout);
    let context = describe(&result);

    // Everywhere: what needs ptrace access to this process is out of reach.
    for name in ["environ", "maps", "mem", "stack", "syscall", "auxv"] {
        assert!(
            refused(field(&found, name, &context)),
            "/proc/{host_pid}/{name} was readable inside: {context}"
        );
    }
    for name in ["fd", "cwd", "root", "map_files"] {
        assert!(
            refused(field(&found, name, &context)),
            "/proc/{host_pid}/{name} was listable inside: {context}"
        );
    }
    for name in ["kmsg", "kcore"] {
        assert!(refused(field(&found, name, &context)), "{name}: {context}");
    }
    // No host interface (eth0, docker0, ...) is listed inside.
    if host_has_more_than_lo {
        let inside = field(&found, "sys_net", &context);
        let leaked: Vec<&str> = inside
            .strip_prefix("list ")
            .unwrap_or_default()
            .split(',')
            .filter(|i| !i.is_empty() && *i != "lo")
            .collect();
        assert!(
            leaked.is_empty(),
            "the host's interfaces are listed inside: {leaked:?} (host: {host_interfaces})"
        );
    } else {
        eprintln!("note: the host has no interface but lo; the /sys/class/net check is moot here");
    }

    let own_proc = result
        .isolation
        .get(Protection::ProcessGroup)
        .is_some_and(|p| p.detail.contains("a /proc of its own"));
    if executor.name() == "restricted" && !own_proc {
        // Gap, as the report says when the restricted runner cannot mount a
        // /proc of its own (a caller that is not root): the host's processes
        // are visible and world-readable files such as /proc/<pid>/cmdline
        // of this test process can be read. What it claims (a uid of its
        // own, Landlock, no ptrace) is asserted above: nothing that needs
        // ptrace access is readable.
        eprintln!(
            "note: restricted: {} host processes visible; /proc/{host_pid}/cmdline: {}",
            field(&found, "visible_processes", &context),
            field(&found, "cmdline", &context)
        );
    } else {
        // A pid namespace (Docker) or a /proc showing only the program's own
        // uid (restricted, hidepid): this process does not exist in the
        // sandbox's view (or, if a sandbox pid happens to carry the same
        // number, it is not this process).
        let our_cmdline = field(&base, "cmdline", &baseline);
        let inside = field(&found, "cmdline", &context);
        assert!(
            field(&found, "host_pid_exists", &context) == "False" || inside != our_cmdline,
            "this test process is visible inside: {context}"
        );
        let visible: usize = field(&found, "visible_processes", &context)
            .parse()
            .unwrap();
        assert!(
            visible < 10,
            "{visible} processes visible inside: {context}"
        );
    }
}

// ---------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------

/// A TCP listener on `address` that counts connections, accepted in a thread.
struct CountingListener {
    address: String,
    accepted: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl CountingListener {
    fn bind(ip: IpAddr) -> Option<CountingListener> {
        let listener = TcpListener::bind((ip, 0)).ok()?;
        listener.set_nonblocking(true).ok()?;
        let address = listener.local_addr().ok()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (count, halt) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let address = match address.ip() {
            IpAddr::V6(ip) => format!("[{ip}]:{}", address.port()),
            IpAddr::V4(ip) => format!("{ip}:{}", address.port()),
        };
        Some(CountingListener {
            address,
            accepted,
            stop,
        })
    }

    fn count(&self) -> usize {
        // Let an accept that raced the check land first.
        std::thread::sleep(Duration::from_millis(100));
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CountingListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

const TCP_PROBE: &str = r#"
import os, socket
for target in os.environ['TARGETS'].split(','):
    host, port = target.rsplit(':', 1)
    host = host.strip('[]')
    try:
        s = socket.create_connection((host, int(port)), timeout=3)
        s.sendall(b'hello')
        s.close()
        print(f'{target}=connected')
    except OSError as e:
        print(f'{target}=refused {type(e).__name__} {e.errno}')
"#;

/// TCP to listeners this test binds on the host: 127.0.0.1, ::1 and the
/// docker0 bridge address (where there is one). The probe connects from the
/// host first.
pub async fn tcp_to_host_listeners(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let mut listeners = vec![
        CountingListener::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("a listener on 127.0.0.1"),
    ];
    if let Some(ipv6) = CountingListener::bind("::1".parse().unwrap()) {
        listeners.push(ipv6);
    }
    match docker_bridge_address() {
        Some(bridge) => listeners
            .push(CountingListener::bind(IpAddr::V4(bridge)).expect("a listener on docker0")),
        None => eprintln!("note: no docker0 bridge here; its address is not tried"),
    }
    let targets = listeners
        .iter()
        .map(|l| l.address.clone())
        .collect::<Vec<_>>()
        .join(",");

    let baseline = host_python(TCP_PROBE, &[("TARGETS", &targets)], None);
    for listener in &listeners {
        assert_eq!(
            fields(&baseline).get(&listener.address).map(String::as_str),
            Some("connected"),
            "probe: the host connects to {}: {baseline}",
            listener.address
        );
        assert_eq!(
            listener.count(),
            1,
            "probe: {} saw the connection",
            listener.address
        );
    }

    let request = ExecutionRequest::python(TCP_PROBE).env("TARGETS", &targets);
    let result = run_bounded(executor, request, Duration::from_secs(30)).await;
    assert_exited(&result, 0);
    let stdout = result.stdout_text();
    let found = fields(&stdout);
    for listener in &listeners {
        let outcome = field(&found, &listener.address, &describe(&result));
        assert!(
            refused(outcome),
            "{} reached from inside: {outcome}",
            listener.address
        );
        assert_eq!(
            listener.count(),
            1,
            "{} accepted a connection from inside",
            listener.address
        );
    }
}

const UDP_PROBE: &str = r#"
import os, socket
for target in os.environ['TARGETS'].split(','):
    host, port = target.rsplit(':', 1)
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(5):
            s.sendto(b'leak', (host, int(port)))
        print(f'{target}=sent')
    except OSError as e:
        print(f'{target}=refused {type(e).__name__} {e.errno}')
"#;

/// UDP datagrams to a socket this test binds on 127.0.0.1 (and docker0) never arrive.
pub async fn udp_to_a_host_socket(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let mut sockets = vec![UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()];
    if let Some(bridge) = docker_bridge_address() {
        sockets.push(UdpSocket::bind((bridge, 0)).unwrap());
    }
    let targets = sockets
        .iter()
        .map(|s| s.local_addr().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let received = |socket: &UdpSocket| {
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut count = 0;
        let mut buffer = [0u8; 64];
        while socket.recv_from(&mut buffer).is_ok() {
            count += 1;
        }
        count
    };

    let baseline = host_python(UDP_PROBE, &[("TARGETS", &targets)], None);
    for socket in &sockets {
        assert!(
            received(socket) > 0,
            "probe: the host's datagrams arrive: {baseline}"
        );
    }

    let request = ExecutionRequest::python(UDP_PROBE).env("TARGETS", &targets);
    let result = run_bounded(executor, request, Duration::from_secs(20)).await;
    assert_exited(&result, 0);
    for socket in &sockets {
        let address = socket.local_addr().unwrap();
        assert_eq!(
            received(socket),
            0,
            "datagrams from inside reached {address}: {}",
            describe(&result)
        );
    }
}

const DNS_PROBE: &str = r#"
import socket
for name in ('deb.debian.org', 'example.com'):
    try:
        addresses = sorted({a[4][0] for a in socket.getaddrinfo(name, 80)})
        print(f'{name}=resolved ' + ' '.join(addresses))
    except OSError as e:
        print(f'{name}=refused {type(e).__name__} {e}')
"#;

/// DNS names do not resolve inside (where the host resolves them).
pub async fn dns_resolution(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let baseline = host_python(DNS_PROBE, &[], None);
    let base = fields(&baseline);
    let resolvable: Vec<&String> = base
        .iter()
        .filter(|(_, v)| v.starts_with("resolved"))
        .map(|(k, _)| k)
        .collect();
    let result = run_bounded(
        executor,
        ExecutionRequest::python(DNS_PROBE),
        Duration::from_secs(30),
    )
    .await;
    assert_exited(&result, 0);
    let stdout = result.stdout_text();
    let found = fields(&stdout);
    if resolvable.is_empty() {
        eprintln!(
            "note: the host resolves none of the probe's names here ({baseline}); only the inside result is shown"
        );
    }
    for name in resolvable {
        let outcome = field(&found, name, &describe(&result));
        assert!(refused(outcome), "{name} resolved inside: {outcome}");
    }
}

const RAW_PROBE: &str = r#"
import socket
for name, family, kind, proto in [
    ('inet_raw_icmp', socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    ('inet_raw_tcp', socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
    ('inet6_raw', socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
    ('packet_raw', socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)),
    ('packet_dgram', socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3)),
]:
    try:
        socket.socket(family, kind, proto).close()
        print(f'{name}=created')
    except OSError as e:
        print(f'{name}=refused {type(e).__name__} {e.errno}')
"#;

/// Raw IP and packet sockets cannot be created inside (the probe creates them as root on the host).
pub async fn raw_sockets(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let baseline = host_python(RAW_PROBE, &[], None);
    let base = fields(&baseline);
    let result = run_bounded(
        executor,
        ExecutionRequest::python(RAW_PROBE),
        Duration::from_secs(20),
    )
    .await;
    assert_exited(&result, 0);
    let stdout = result.stdout_text();
    let found = fields(&stdout);
    let mut proven = 0;
    for (name, outcome) in &base {
        if outcome != "created" {
            continue; // not even the host may (a non-root caller)
        }
        proven += 1;
        let inside = field(&found, name, &describe(&result));
        assert!(refused(inside), "{name} created inside: {inside}");
    }
    if proven == 0 {
        eprintln!("note: the host itself cannot create raw sockets here (not root?): {baseline}");
    }
}

const NETLINK_PROBE: &str = r#"
import socket
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()
    print('netlink=created')
except OSError as e:
    print(f'netlink=refused {type(e).__name__} {e.errno}')
try:
    print('interfaces=list ' + ','.join(sorted(name for _, name in socket.if_nameindex())))
except OSError as e:
    print(f'interfaces=error {type(e).__name__} {e.errno}')
"#;

/// AF_NETLINK: refused on the restricted runner (its seccomp filter allows
/// only AF_UNIX, as the README says); wherever it can be created, it shows
/// no host interface (the route netlink dump lists only the sandbox's own).
pub async fn netlink_sockets(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let baseline = host_python(NETLINK_PROBE, &[], None);
    let base = fields(&baseline);
    assert_eq!(
        field(&base, "netlink", &baseline),
        "created",
        "probe: {baseline}"
    );
    let host_interfaces = field(&base, "interfaces", &baseline).to_owned();
    let result = run_bounded(
        executor,
        ExecutionRequest::python(NETLINK_PROBE),
        Duration::from_secs(20),
    )
    .await;
    assert_exited(&result, 0);
    let stdout = result.stdout_text();
    let found = fields(&stdout);
    let context = describe(&result);
    let interfaces = field(&found, "interfaces", &context);
    let leaked: Vec<&str> = interfaces
        .strip_prefix("list ")
        .unwrap_or_default()
        .split(',')
        .filter(|i| !i.is_empty() && *i != "lo")
        .collect();
    assert!(
        leaked.is_empty(),
        "netlink shows host interfaces inside: {leaked:?} (host: {host_interfaces})"
    );
    if executor.name() == "restricted" && result.isolation.is_enforced(Protection::Syscalls) {
        assert!(
            refused(field(&found, "netlink", &context)),
            "the restricted runner's seccomp filter should refuse AF_NETLINK: {context}"
        );
    }
}

const VSOCK_PROBE: &str = r#"
import socket
for name, kind in (('stream', socket.SOCK_STREAM), ('dgram', socket.SOCK_DGRAM), ('seqpacket', socket.SOCK_SEQPACKET)):
    try:
        socket.socket(socket.AF_VSOCK, kind).close()
        print(f'vsock_{name}=created')
    except OSError as e:
        print(f'vsock_{name}=refused {type(e).__name__} {e.errno}')
"#;

/// AF_VSOCK sockets cannot be created inside. vsock is not network
/// namespaced: a socket made inside talks to the hypervisor (CID 2) and to
/// local vsock services whatever the network mode, so "no network" must
/// refuse the family itself. (The probe only creates sockets: connecting to
/// the hypervisor's services is not this test's business.)
pub async fn vsock_sockets(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let baseline = host_python(VSOCK_PROBE, &[], None);
    let base = fields(&baseline);
    let result = run_bounded(
        executor,
        ExecutionRequest::python(VSOCK_PROBE),
        Duration::from_secs(20),
    )
    .await;
    assert_exited(&result, 0);
    let stdout = result.stdout_text();
    let found = fields(&stdout);
    let mut proven = 0;
    for (name, outcome) in &base {
        if outcome != "created" {
            continue;
        }
        proven += 1;
        let inside = field(&found, name, &describe(&result));
        assert!(
            refused(inside),
            "AF_VSOCK {name} socket created inside: {inside}"
        );
    }
    if proven == 0 {
        eprintln!("note: this host has no AF_VSOCK support ({baseline}); nothing to prove here");
    }
}

// ---------------------------------------------------------------------------
// The working directory and the code
// ---------------------------------------------------------------------------

const LINK_PROBE: &str = r#"
import os, sys
out = os.environ['OUTSIDE']
prog = os.path.abspath(sys.argv[0]) if sys.argv[0] else os.environ.get('PROGRAM', '')
original = open(prog, 'rb').read() if prog and os.path.exists(prog) else None
def attempt(name, action):
    try:
        value = action()
        print(f'{name}=done {value!r}'[:400], flush=True)
    except OSError as e:
        print(f'{name}=refused {type(e).__name__} {e.errno}', flush=True)
def symlink_then(target, link, then):
    def go():
        os.symlink(target, link)
        return then(link)
    return go
def hardlink_then(target, link, then):
    def go():
        os.link(target, link)
        return then(link)
    return go
read = lambda p: open(p).read()
def write(p):
    with open(p, 'w') as f:
        f.write('escaped')
    return 'written'
attempt('symlink_read_secret', symlink_then(out + '/secret.txt', 'sl_secret', read))
attempt('symlink_write_victim', symlink_then(out + '/victim.txt', 'sl_victim', write))
attempt('symlink_dir_write', symlink_then(out, 'sl_dir', lambda p: write(p + '/new.txt')))
attempt('symlink_dir_list', lambda: os.listdir('sl_dir'))
attempt('symlink_shadow', symlink_then('/etc/shadow', 'sl_shadow', read))
attempt('hardlink_secret', hardlink_then(out + '/secret.txt', 'hl_secret', read))
attempt('hardlink_victim', hardlink_then(out + '/victim.txt', 'hl_victim', write))
attempt('hardlink_shadow', hardlink_then('/etc/shadow', 'hl_shadow', read))
attempt('symlink_program', symlink_then(prog, 'sl_prog', write))
attempt('hardlink_program', hardlink_then(prog, 'hl_prog', write))
attempt('parent_symlink', symlink_then('..', 'up', lambda p: write(p + '/escaped.txt')))
print('program_intact=' + str(original is not None and open(prog, 'rb').read() == original))
"#;

/// Symlinks and hard links made in the working directory to files outside
/// it (a secret and a victim file of the test's, `/etc/shadow`, the
/// program file): reads get nothing, writes change nothing, and the cleanup
/// does not follow the links.
pub async fn symlink_and_hardlink_tricks(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let outside = HostDir(host_temp_dir("links"));
    chmod(&outside.0, 0o755);
    let secret_text = format!("link-secret-{}", std::process::id());
    let secret = outside.0.join("secret.txt");
    let victim = outside.0.join("victim.txt");
    std::fs::write(&secret, &secret_text).unwrap();
    std::fs::write(&victim, "original").unwrap();
    chmod(&secret, 0o644);
    chmod(&victim, 0o666);
    let out = outside.0.to_str().unwrap().to_owned();

    // The probe works on the host (in a scratch directory, on a copy of
    // itself), one level down so that what it writes through `..` stays in
    // the directory removed afterwards.
    let scratch = HostDir(host_temp_dir("links-probe"));
    let work = scratch.0.join("work");
    std::fs::create_dir(&work).unwrap();
    let program = work.join("probe.py");
    std::fs::write(&program, LINK_PROBE).unwrap();
    let output = std::process::Command::new("python3")
        .arg(&program)
        .env("OUTSIDE", &out)
        .current_dir(&work)
        .output()
        .unwrap();
    let baseline = String::from_utf8_lossy(&output.stdout).into_owned();
    let base = fields(&baseline);
    for key in [
        "symlink_read_secret",
        "symlink_write_victim",
        "symlink_dir_write",
        "hardlink_secret",
    ] {
        assert!(
            field(&base, key, &baseline).starts_with("done"),
            "probe: {key} works on the host: {baseline}"
        );
    }
    assert!(field(&base, "symlink_read_secret", &baseline).contains(&secret_text));
    // Reset what the probe changed.
    std::fs::write(&victim, "original").unwrap();
    let _ = std::fs::remove_file(outside.0.join("new.txt"));
    assert_eq!(std::fs::read_dir(&outside.0).unwrap().count(), 2);

    let request = ExecutionRequest::python(LINK_PROBE).env("OUTSIDE", &out);
    let result = run_bounded(executor, request, Duration::from_secs(20)).await;
    assert_exited(&result, 0);
    let stdout = result.stdout_text();
    let found = fields(&stdout);
    let context = describe(&result);
    assert!(
        !stdout.contains(&secret_text),
        "the secret was read through a link: {context}"
    );
    for key in [
        "symlink_read_secret",
        "symlink_write_victim",
        "symlink_dir_write",
        "symlink_dir_list",
        "hardlink_secret",
        "hardlink_victim",
        "symlink_program",
        "hardlink_program",
    ] {
        assert!(
            refused(field(&found, key, &context)),
            "{key} worked inside: {context}"
        );
    }
    for key in ["symlink_shadow", "hardlink_shadow"] {
        let outcome = field(&found, key, &context);
        assert!(
            refused(outcome) || outcome == "done ''",
            "/etc/shadow through a link: {outcome}"
        );
    }
    assert_eq!(
        field(&found, "program_intact", &context),
        "True",
        "{context}"
    );
    // Nothing outside changed, and the cleanup did not follow the links.
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), secret_text);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original");
    assert_eq!(
        std::fs::read_dir(&outside.0).unwrap().count(),
        2,
        "a file appeared outside"
    );
    let parent = field(&found, "parent_symlink", &context);
    if parent.starts_with("done") {
        // `..` of the working directory is still the sandbox's own; what it
        // wrote there is removed with it (the suite checks nothing is left).
        eprintln!("note: writing through a `..` link worked inside the sandbox's own tree");
    }
}

const CODE_TAMPER_PROBE: &str = r#"
import os, sys
prog = os.path.abspath(sys.argv[0])
original = open(prog, 'rb').read()
def attempt(name, action):
    try:
        action()
        print(f'{name}=done', flush=True)
    except OSError as e:
        print(f'{name}=refused {type(e).__name__} {e.errno}', flush=True)
def write(mode):
    def go():
        with open(prog, mode) as f:
            f.write('# tampered\n')
    return go
attempt('open_w', write('w'))
attempt('open_a', write('a'))
attempt('open_rplus', write('r+'))
attempt('truncate', lambda: os.truncate(prog, 0))
attempt('chmod', lambda: os.chmod(prog, 0o777))
attempt('utime', lambda: os.utime(prog, (0, 0)))
attempt('rename', lambda: os.rename(prog, prog + '.moved'))
attempt('unlink', lambda: os.unlink(prog))
attempt('sibling', lambda: open(os.path.join(os.path.dirname(prog), 'evil.py'), 'w').write('x'))
attempt('chmod_dir', lambda: os.chmod(os.path.dirname(prog), 0o777))
print('intact=' + str(os.path.exists(prog) and open(prog, 'rb').read() == original))
"#;

/// The program cannot change, replace or remove its own code.
pub async fn writing_to_the_code(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    // The probe works on the host, on a file of the test's.
    let scratch = HostDir(host_temp_dir("tamper"));
    let program = scratch.0.join("probe.py");
    std::fs::write(&program, CODE_TAMPER_PROBE).unwrap();
    let output = std::process::Command::new("python3")
        .arg(&program)
        .output()
        .unwrap();
    let baseline = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        fields(&baseline).get("open_a").is_some_and(|v| v == "done"),
        "probe: {baseline}"
    );

    let result = run_bounded(
        executor,
        ExecutionRequest::python(CODE_TAMPER_PROBE),
        Duration::from_secs(20),
    )
    .await;
    assert_exited(&result, 0);
    let stdout = result.stdout_text();
    let found = fields(&stdout);
    let context = describe(&result);
    for key in [
        "open_w",
        "open_a",
        "open_rplus",
        "truncate",
        "chmod",
        "utime",
        "rename",
        "unlink",
        "sibling",
        "chmod_dir",
    ] {
        assert!(
            refused(field(&found, key, &context)),
            "{key} worked on the code: {context}"
        );
    }
    assert_eq!(field(&found, "intact", &context), "True");

    // A shell script cannot append to itself either.
    let script =
        "echo 'echo tampered' >> \"$0\" 2>/dev/null && echo appended=yes || echo appended=no";
    let result = run_bounded(
        executor,
        ExecutionRequest::shell(script),
        Duration::from_secs(10),
    )
    .await;
    assert_exited(&result, 0);
    assert_eq!(
        result.stdout_text(),
        "appended=no\n",
        "{}",
        describe(&result)
    );
}

// ---------------------------------------------------------------------------
// Big, odd and malformed input
// ---------------------------------------------------------------------------

/// 10 MB of source (one big literal; and 10 MB of comments) runs, or is
/// refused with a clear error; this process's memory stays bounded.
pub async fn ten_mb_of_code(executor: &dyn Executor) {
    let _exclusive = EXCLUSIVE.write().await;
    let size = 10 << 20;
    let literal = format!("data = '{}'\nprint(len(data))\n", "a".repeat(size));
    let comments = format!(
        "{}print('end of comments')\n",
        "# a comment line of 32 bytes....\n".repeat(size / 33)
    );
    for (source, expected) in [
        (literal, format!("{size}\n")),
        (comments, "end of comments\n".to_owned()),
    ] {
        let before = vm_rss();
        let (outcome, _) = bounded(
            executor,
            ExecutionRequest::python(source),
            Duration::from_secs(60),
        )
        .await;
        match outcome {
            Ok(result) => {
                assert_exited(&result, 0);
                assert_eq!(result.stdout_text(), expected);
            }
            Err(Error::InvalidRequest { reason }) => {
                assert!(
                    reason.contains("large") || reason.contains("size"),
                    "{reason}"
                );
            }
            Err(error) => panic!("10 MB of code: neither run nor clearly refused: {error:?}"),
        }
        assert_rss_bounded(before, "10 MB of code");
    }
}

/// 50 MB of stdin: read in full and intact; ignored by a program that exits
/// at once (no hang, no error); never read by a program that sleeps (timed out).
pub async fn fifty_mb_of_stdin(executor: &dyn Executor) {
    let _exclusive = EXCLUSIVE.write().await;
    let size: usize = 50 << 20;
    let pattern = || (0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    let before = vm_rss();
    let code = r#"
import sys
data = sys.stdin.buffer.read()
n = len(data)
expected = (bytes(range(251)) * (n // 251 + 1))[:n]
print(n, data == expected)
"#;
    let request = ExecutionRequest::python(code).stdin(pattern());
    let result = run_bounded(executor, request, Duration::from_secs(60)).await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout_text(), format!("{size} True\n"));

    let request = ExecutionRequest::python("print('not reading')").stdin(pattern());
    let result = run_bounded(executor, request, Duration::from_secs(30)).await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout_text(), "not reading\n");
    assert!(
        result.duration < Duration::from_secs(10),
        "a program that ignores its stdin took {:?}",
        result.duration
    );

    let timeout = Duration::from_secs(2);
    let request =
        ExecutionRequest::python("import time\nprint('asleep', flush=True)\ntime.sleep(10**6)")
            .stdin(pattern());
    let result = run_bounded(executor, request, timeout).await;
    assert_timed_out(&result, timeout);
    assert_eq!(result.stdout_text(), "asleep\n");
    assert_rss_bounded(before, "50 MB of stdin");
}

/// A NUL byte in Python source (which a `String` can carry) gives a defined
/// result: the interpreter's error, or a clear refusal of the request; never
/// the program silently cut at the NUL and reported as a success, never a
/// hang or a crash. Shell source with a NUL ends in a defined way too.
pub async fn nul_byte_in_source(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let timeout = Duration::from_secs(10);
    for request in [
        ExecutionRequest::python("print('before')\0print('after')\n"),
        ExecutionRequest::python("\0"),
        ExecutionRequest::python("x = '\0'\nprint(len(x))\n"),
    ] {
        let (outcome, _) = bounded(executor, request.clone(), timeout).await;
        match outcome {
            Ok(result) => {
                assert!(
                    !result.stdout_text().contains("after"),
                    "{}",
                    describe(&result)
                );
                assert_eq!(result.status, Status::Exited, "{}", describe(&result));
                assert_ne!(
                    result.exit_code,
                    Some(0),
                    "{:?}: the program was cut at the NUL byte and reported a success: {}",
                    request.program,
                    describe(&result)
                );
                assert!(
                    result.stderr_text().to_lowercase().contains("null"),
                    "the interpreter should say why: {}",
                    describe(&result)
                );
            }
            Err(Error::InvalidRequest { reason }) => {
                assert!(reason.contains("NUL"), "{reason}");
            }
            Err(error) => panic!("{:?}: not a defined result: {error:?}", request.program),
        }
    }
    // The shell: dash drops NUL bytes or stops; either way a defined end.
    let (outcome, _) = bounded(
        executor,
        ExecutionRequest::shell("echo a\0echo b\necho c\n"),
        timeout,
    )
    .await;
    match outcome {
        Ok(result) => assert_eq!(result.status, Status::Exited, "{}", describe(&result)),
        Err(Error::InvalidRequest { reason }) => assert!(reason.contains("NUL"), "{reason}"),
        Err(error) => panic!("shell source with NUL: not a defined result: {error:?}"),
    }
}

/// A NUL byte in a command argument, an environment variable or a file path
/// cannot reach the kernel: the request is refused as invalid.
pub async fn nul_bytes_in_requests(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    for request in [
        ExecutionRequest::command(["echo", "a\0b"]),
        ExecutionRequest::command(["ec\0ho", "a"]),
        ExecutionRequest::python("pass").env("NAME", "va\0lue"),
        ExecutionRequest::python("pass").env("NA\0ME", "value"),
        ExecutionRequest::python("pass").file("a\0b.txt", "x"),
    ] {
        match executor.execute(request.clone()).await {
            Err(Error::InvalidRequest { .. }) => {}
            other => panic!("{request:?} must be an invalid request, got {other:?}"),
        }
    }
}

/// Source that is not UTF-8 (which a `String` cannot carry, so a shell
/// script and a command write it to a file and run it): Python's own error,
/// a defined exit, and the same bytes with a coding declaration run.
pub async fn invalid_utf8_source(executor: &dyn Executor) {
    let _shared = EXCLUSIVE.read().await;
    let timeout = Duration::from_secs(20);
    // The probe works: latin-1 bytes under a coding declaration are valid Python.
    let script = r#"printf '# -*- coding: latin-1 -*-\nprint(len("\377\376"))\n' > "$TMPDIR/ok.py"; python3 "$TMPDIR/ok.py"; echo "rc=$?""#;
    let result = run_bounded(executor, ExecutionRequest::shell(script), timeout).await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout_text(), "2\nrc=0\n", "{}", describe(&result));

    let script = r#"printf 'print("\377\376")\n' > "$TMPDIR/bad.py"; python3 "$TMPDIR/bad.py"; echo "rc=$?""#;
    let result = run_bounded(executor, ExecutionRequest::shell(script), timeout).await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout_text(), "rc=1\n", "{}", describe(&result));
    assert!(
        result.stderr_text().contains("SyntaxError"),
        "{}",
        describe(&result)
    );

    let code = r#"
import os, subprocess, sys
path = os.path.join(os.environ['TMPDIR'], 'bad.py')
with open(path, 'wb') as f:
    f.write(b'print(1)\n# \xff\xfe\xc3\x28 not utf-8\n')
run = subprocess.run([sys.executable, path], capture_output=True)
print('rc', run.returncode)
sys.stderr.buffer.write(run.stderr)
"#;
    let request = ExecutionRequest::command(["python3", "-c", code]);
    let result = run_bounded(executor, request, timeout).await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout_text(), "rc 1\n", "{}", describe(&result));
    assert!(
        result.stderr_text().contains("SyntaxError"),
        "{}",
        describe(&result)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes() {
        assert_eq!(base64_decode("aGVsbG8="), b"hello");
        assert_eq!(base64_decode("AP8="), vec![0, 255]);
    }

    #[test]
    fn uid_ranges_do_not_overlap() {
        let (a, n) = private_uid_range();
        let (b, _) = private_uid_range();
        assert!(b >= a + n);
        assert!(a >= BATTERY_FIRST_UID);
    }

    #[test]
    fn rss_is_read() {
        // The peak is read after the current size: it can only have grown since.
        let rss = vm_rss();
        assert!(rss > 0 && vm_hwm() >= rss);
    }
}
