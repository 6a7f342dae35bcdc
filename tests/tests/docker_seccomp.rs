//! The Docker backend's seccomp profile (`sandbox_docker::seccomp_profile`):
//! what it refuses that Docker's default profile allows, and that ordinary
//! programs still run under it, in one-shot, pooled and session containers.
//!
//! Each refusal is first shown to work in the same image under Docker's
//! default profile (a testcontainers container, same user and flags), then
//! shown to fail through the executor.
//!
//! Skipped (with a message) without a Docker daemon, unless
//! `RLMKIT_SANDBOX_REQUIRE_DOCKER=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use sandbox_core::{ExecutionRequest, ExecutionResult, Executor, SessionOptions, Status};
use sandbox_docker::DockerExecutor;
use sandbox_tests::docker_support::usable;
use testcontainers::core::{CmdWaitFor, ExecCommand, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// Calls Docker's default profile allows and ours must refuse, made raw
/// (ctypes) so that no library fallback hides the answer: io_uring, vsock
/// (also with junk in the family's high half, which the kernel ignores),
/// and ptrace. Prints `name=ok` or `name=refused <errno>`.
const REFUSAL_PROBE: &str = r#"
import ctypes, os, platform
numbers = {
    "x86_64": {"socket": 41, "ptrace": 101, "io_uring_setup": 425},
    "aarch64": {"socket": 198, "ptrace": 117, "io_uring_setup": 425},
}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(name, nr, *args, keeps_fd=True):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    print(f"{name}=" + (f"refused {ctypes.get_errno()}" if result == -1 else "ok"), flush=True)
    if result >= 0 and keeps_fd:
        os.close(result)
params = ctypes.create_string_buffer(120)
call("io_uring_setup", numbers["io_uring_setup"], 1, ctypes.addressof(params))
call("vsock_socket", numbers["socket"], 40, 1, 0)
call("vsock_socket_high_bits", numbers["socket"], (1 << 32) | 40, 1, 0)
call("ptrace_traceme", numbers["ptrace"], 0, 0, 0, 0, keeps_fd=False)
"#;

/// What ordinary programs do: threads (clone3 falls back to clone),
/// subprocesses (vfork, posix_spawn), a multiprocessing pool (fork and
/// semaphores in /dev/shm), asyncio subprocesses (pidfd), unix and inet
/// sockets, sqlite, file copies (copy_file_range, sendfile), signals,
/// timers, epoll and numpy. Prints one `name=ok` per step.
const WORKLOAD: &str = r#"
import asyncio, multiprocessing, os, selectors, shutil, signal, socket, sqlite3
import subprocess, tempfile, threading, time
import numpy as np

def ok(name):
    print(f"{name}=ok", flush=True)

box = []
thread = threading.Thread(target=lambda: box.append(1)); thread.start(); thread.join()
assert box == [1]; ok("thread")
assert subprocess.run(["sh", "-c", "echo hi | tr h H"], capture_output=True).stdout == b"Hi\n"; ok("subprocess")
with multiprocessing.Pool(2) as pool:
    assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]
ok("multiprocessing")
async def child():
    proc = await asyncio.create_subprocess_exec("true")
    return await proc.wait()
assert asyncio.run(child()) == 0; ok("asyncio_subprocess")
left, right = socket.socketpair(); left.sendall(b"x"); assert right.recv(1) == b"x"; ok("socketpair")
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM); server.bind(("127.0.0.1", 0)); server.listen()
client = socket.create_connection(server.getsockname()); peer, _ = server.accept()
client.sendall(b"y"); assert peer.recv(1) == b"y"; ok("loopback_tcp")
assert sqlite3.connect(":memory:").execute("select 6 * 7").fetchone() == (42,); ok("sqlite")
with tempfile.TemporaryDirectory() as scratch:
    source = os.path.join(scratch, "a"); target = os.path.join(scratch, "b")
    with open(source, "wb") as f: f.write(os.urandom(1 << 20))
    shutil.copyfile(source, target); assert os.path.getsize(target) == 1 << 20
ok("file_copy")
fired = []
signal.signal(signal.SIGALRM, lambda *_: fired.append(1)); signal.setitimer(signal.ITIMER_REAL, 0.01)
time.sleep(0.2); assert fired == [1]; ok("signal_timer")
selector = selectors.DefaultSelector(); read_end, write_end = os.pipe()
selector.register(read_end, selectors.EVENT_READ); os.write(write_end, b"z")
assert len(selector.select(timeout=1)) == 1; ok("epoll")
assert os.sched_getaffinity(0); ok("affinity")
assert np.ones((64, 64)).dot(np.ones((64, 64))).sum() == 64 ** 3; ok("numpy")
"#;

/// The steps [`WORKLOAD`] reports.
const WORKLOAD_STEPS: [&str; 12] = [
    "thread",
    "subprocess",
    "multiprocessing",
    "asyncio_subprocess",
    "socketpair",
    "loopback_tcp",
    "sqlite",
    "file_copy",
    "signal_timer",
    "epoll",
    "affinity",
    "numpy",
];

/// `name=value` lines as a map.
fn fields(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

fn describe(result: &ExecutionResult) -> String {
    format!(
        "status={} exit={:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        result.status,
        result.exit_code,
        result.stdout_text(),
        result.stderr_text()
    )
}

async fn executor(pool_size: usize) -> Option<DockerExecutor> {
    usable(
        DockerExecutor::builder()
            .pool_size(pool_size)
            .label("rlmkit.test", "seccomp")
            .build()
            .await,
    )
}

/// Runs `code` in the sandbox image under Docker's default profile, with
/// the executor's user, network mode and flags but not its profile.
async fn under_dockers_default_profile(code: &str) -> String {
    let (name, tag) = sandbox_docker::DEFAULT_IMAGE.split_once(':').unwrap();
    let container: ContainerAsync<GenericImage> = GenericImage::new(name, tag)
        .with_wait_for(WaitFor::Nothing)
        .with_cmd(["sleep", "300"])
        .with_network("none")
        .with_readonly_rootfs(true)
        .with_user("1000:1000")
        .with_security_opt("no-new-privileges")
        .with_label(sandbox_docker::LABEL, "1")
        .with_label(sandbox_docker::LABEL_OWNER, std::process::id().to_string())
        .with_label("rlmkit.test", "seccomp-baseline")
        .start()
        .await
        .expect("the sandbox image starts");
    let command =
        ExecCommand::new(["python3", "-c", code]).with_cmd_ready_condition(CmdWaitFor::exit());
    let mut result = container.exec(command).await.unwrap();
    let stdout = String::from_utf8(result.stdout_to_vec().await.unwrap()).unwrap();
    let stderr = String::from_utf8(result.stderr_to_vec().await.unwrap()).unwrap();
    assert_eq!(
        result.exit_code().await.unwrap(),
        Some(0),
        "{stdout}{stderr}"
    );
    container.rm().await.unwrap();
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_refuses_what_dockers_default_allows() {
    let Some(executor) = executor(0).await else {
        return;
    };
    let baseline = under_dockers_default_profile(REFUSAL_PROBE).await;
    let allowed: Vec<String> = fields(&baseline)
        .into_iter()
        .filter(|(_, outcome)| outcome == "ok")
        .map(|(name, _)| name)
        .collect();
    // ptrace(PTRACE_TRACEME) is allowed by every default profile since
    // Docker 19.03 on kernels from 4.8: the probe is not vacuous.
    assert!(
        allowed.iter().any(|name| name == "ptrace_traceme"),
        "probe: {baseline}"
    );
    let result = executor
        .execute(ExecutionRequest::python(REFUSAL_PROBE))
        .await
        .unwrap();
    assert_eq!(result.status, Status::Exited, "{}", describe(&result));
    let inside = fields(&result.stdout_text());
    for name in &allowed {
        assert_eq!(
            inside.get(name).map(String::as_str),
            Some("refused 1"),
            "{name} under Docker's default profile: ok; under ours:\n{}",
            describe(&result)
        );
    }
    eprintln!("refused here, allowed by Docker's default: {allowed:?}");
    executor.shutdown().await.unwrap();
}

fn assert_workload_ran(result: &ExecutionResult, how: &str) {
    assert_eq!(result.exit_code, Some(0), "{how}: {}", describe(result));
    let found = fields(&result.stdout_text());
    for step in WORKLOAD_STEPS {
        assert_eq!(
            found.get(step).map(String::as_str),
            Some("ok"),
            "{how}, {step}: {}",
            describe(result)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_programs_run_under_the_profile() {
    let Some(cold) = executor(0).await else {
        return;
    };
    let request = || ExecutionRequest::python(WORKLOAD);
    let result = cold.execute(request()).await.unwrap();
    assert_workload_ran(&result, "a cold container");

    let pooled = executor(1).await.unwrap();
    // Wait until the container is warm, so the run goes through the launcher.
    let waited = std::time::Instant::now();
    while pooled.pool_stats().ready == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the pool never filled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result = pooled.execute(request()).await.unwrap();
    assert_workload_ran(&result, "a pooled container");
    assert_eq!(pooled.pool_stats().pooled_runs, 1);

    let session = cold.open_session(SessionOptions::default()).await.unwrap();
    let cell = session
        .run(sandbox_core::Cell::new(WORKLOAD).timeout(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_workload_ran(&cell, "a session");
    session.close().await.unwrap();
    pooled.shutdown().await.unwrap();
    cold.shutdown().await.unwrap();
}
