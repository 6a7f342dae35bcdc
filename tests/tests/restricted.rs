//! The conformance suite, and restricted-only checks, on the restricted backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on failure.

use std::path::Path;
use std::time::{Duration, Instant};

use rstest::{fixture, rstest};
use sandbox_core::{ExecutionRequest, Executor, Limits, Protection, ProtectionState, Status};
use sandbox_restricted::RestrictedExecutor;

fn restricted() -> Option<Box<dyn Executor>> {
    Some(Box::new(
        RestrictedExecutor::new().expect("the restricted executor builds"),
    ))
}

sandbox_tests::conformance_suite!(restricted);

/// An executor whose working directories go to a directory of the test's own.
struct Isolated {
    executor: RestrictedExecutor,
    temp: tempfile::TempDir,
}

#[fixture]
fn isolated() -> Isolated {
    let temp = tempfile::tempdir().unwrap();
    let executor = RestrictedExecutor::builder()
        .temp_dir(temp.path())
        .build()
        .unwrap();
    Isolated { executor, temp }
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// Waits up to `limit` for process `pid` to be gone (reaped, not a zombie).
fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
        match status {
            Err(_) => return true,
            Ok(text)
                if text
                    .lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z')) => {}
            Ok(_) => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchild_that_left_the_session_is_dead_after_timeout(isolated: Isolated) {
    let code = r#"
import os, time
if os.fork() == 0:
    try:
        os.setsid()
    except OSError:
        pass
    if os.fork() == 0:
        print(os.getpid(), flush=True)
        time.sleep(600)
    os._exit(0)
time.sleep(600)
"#;
    let request =
        ExecutionRequest::python(code).limits(Limits::builder().timeout(Duration::from_secs(2)));
    let result = isolated.executor.execute(request).await.unwrap();
    assert_eq!(result.status, Status::TimedOut);
    let pid: u32 = result
        .stdout_text()
        .trim()
        .parse()
        .expect("the grandchild printed its pid");
    let cgroups = isolated
        .executor
        .isolation()
        .is_enforced(Protection::Cleanup);
    if cgroups {
        assert!(
            gone_within(pid, Duration::from_secs(3)),
            "grandchild {pid} survived the timeout"
        );
    } else {
        eprintln!(
            "skipped the survival check: without cgroups a setsid grandchild escapes (the report says so)"
        );
        let _ = nix_kill(pid);
    }
    assert!(
        is_empty(isolated.temp.path()),
        "a working directory was left behind"
    );
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map(|_| ())
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_future_kills_the_program_and_removes_its_files() {
    // The program tells its pid through a file outside its sandbox: allow that
    // by turning off the filesystem protections, which this test is not about.
    let temp = tempfile::tempdir().unwrap();
    let isolated = Isolated {
        executor: RestrictedExecutor::builder()
            .temp_dir(temp.path())
            .landlock(false)
            .namespaces(false)
            .drop_privileges(false)
            .build()
            .unwrap(),
        temp,
    };
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("pid");
    let code = format!(
        "import os, time\nopen({:?}, 'w').write(str(os.getpid()))\ntime.sleep(600)",
        marker.to_str().unwrap()
    );
    let running = isolated.executor.execute(ExecutionRequest::python(code));
    let outcome = tokio::time::timeout(Duration::from_secs(2), running).await;
    assert!(
        outcome.is_err(),
        "the program should still have been running"
    );
    let pid: u32 = std::fs::read_to_string(&marker).unwrap().parse().unwrap();
    assert!(
        gone_within(pid, Duration::from_secs(3)),
        "process {pid} outlived its dropped future"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while !is_empty(isolated.temp.path()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        is_empty(isolated.temp.path()),
        "a working directory was left behind"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn working_directories_are_removed_on_every_path(isolated: Isolated) {
    let requests = [
        ExecutionRequest::python("open('out.txt', 'w').write('x' * 1000)"),
        ExecutionRequest::python("import time; time.sleep(60)")
            .limits(Limits::builder().timeout(Duration::from_millis(300))),
        ExecutionRequest::python("while True: print('y' * 1000)")
            .limits(Limits::builder().output_bytes(10_000)),
        ExecutionRequest::python("raise SystemExit(4)").file("a/b/c.txt", "nested"),
    ];
    for request in requests {
        isolated.executor.execute(request).await.unwrap();
    }
    // A request refused before it starts leaves nothing either.
    assert!(
        isolated
            .executor
            .execute(ExecutionRequest::command(["no-such-program-xyz"]))
            .await
            .is_err()
    );
    assert!(
        is_empty(isolated.temp.path()),
        "a working directory was left behind"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_temp_dir_is_a_clear_error() {
    let executor = RestrictedExecutor::builder()
        .temp_dir("/nonexistent/rlmkit-sandbox")
        .build()
        .unwrap();
    let error = executor
        .execute(ExecutionRequest::python("print(1)"))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("/nonexistent/rlmkit-sandbox") && message.contains("temp_dir"),
        "{message}"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_report_matches_what_code_can_reach(isolated: Isolated) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=5)\nprint('connected')"
    );
    // Without namespaces and seccomp the report must not claim a network
    // protection, and indeed code reaches a listener on the host.
    let open = RestrictedExecutor::builder()
        .namespaces(false)
        .seccomp(false)
        .landlock(false)
        .drop_privileges(false)
        .build()
        .unwrap();
    let result = open
        .execute(ExecutionRequest::python(code.clone()))
        .await
        .unwrap();
    assert_eq!(
        result.stdout_text(),
        "connected\n",
        "{}",
        result.stderr_text()
    );
    assert_eq!(
        result.isolation.state(Protection::Network),
        Some(ProtectionState::NotEnforced)
    );
    assert_eq!(
        result.isolation.state(Protection::Filesystem),
        Some(ProtectionState::NotEnforced)
    );

    // Hardened (the default), the report says enforced, and it is.
    let result = isolated
        .executor
        .execute(ExecutionRequest::python(code))
        .await
        .unwrap();
    assert_eq!(
        result.isolation.state(Protection::Network),
        Some(ProtectionState::Enforced)
    );
    assert_ne!(result.exit_code, Some(0), "{}", result.stdout_text());
    assert!(!result.stdout_text().contains("connected"));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cgroups_rlimits_still_bound_memory_and_the_report_says_partial() {
    let executor = RestrictedExecutor::builder()
        .cgroups(false)
        .build()
        .unwrap();
    let report = executor.isolation();
    assert_eq!(
        report.state(Protection::Memory),
        Some(ProtectionState::Partial)
    );
    assert!(
        report
            .get(Protection::Memory)
            .unwrap()
            .detail
            .contains("disabled by configuration")
    );

    let hog = "chunks = [bytearray(16 << 20) for _ in range(100)]\nprint('allocated')";
    let request = ExecutionRequest::python(hog).limits(Limits::builder().memory_bytes(128 << 20));
    let result = executor.execute(request).await.unwrap();
    assert_eq!(result.status, Status::Exited);
    assert_ne!(result.exit_code, Some(0));
    assert!(
        result.stderr_text().contains("MemoryError"),
        "{}",
        result.stderr_text()
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cgroups_a_memory_hog_is_oom_killed(isolated: Isolated) {
    if !isolated
        .executor
        .isolation()
        .is_enforced(Protection::Memory)
    {
        eprintln!("skipped: no cgroup memory controller here (the report says why)");
        return;
    }
    let hog = "chunks = [bytearray(16 << 20) for _ in range(100)]\nprint('allocated')";
    let request = ExecutionRequest::python(hog).limits(Limits::builder().memory_bytes(128 << 20));
    let result = isolated.executor.execute(request).await.unwrap();
    assert_eq!(result.status, Status::OomKilled, "{}", result.stderr_text());
    assert_eq!(result.shell_exit_code(), 137);
    let peak = result.usage.peak_memory_bytes.unwrap();
    assert!(peak <= 128 << 20, "peak {peak} above the limit");
}
