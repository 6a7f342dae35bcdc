//! The session suite, and Docker-only session checks, on the Docker backend.
//!
//! Without a Docker daemon every test prints why and passes as skipped,
//! unless `RLMKIT_SANDBOX_REQUIRE_DOCKER=1`, which turns the skip into a
//! failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sandbox_core::{
    Cell, Error, ExecutionResult, Executor, Limits, NetworkMode, Protection, Session,
    SessionOptions, SessionState, Status,
};
use sandbox_docker::{DockerExecutor, SandboxContainer};
use sandbox_tests::docker_support::usable;

/// The label each test puts on its containers, to find exactly its own.
const TEST_LABEL: &str = "rlmkit.test";

/// The session suite's maker (sessions need no warm pool).
fn docker() -> Option<Box<dyn Executor>> {
    sandbox_tests::docker_support::build_blocking(|| DockerExecutor::builder().pool_size(0).build())
        .map(|executor| Box::new(executor) as Box<dyn Executor>)
}

sandbox_tests::session_suite!(docker);

/// An executor whose containers carry `rlmkit.test=<test>`, without a pool.
async fn executor_for(test: &str) -> Option<DockerExecutor> {
    usable(
        DockerExecutor::builder()
            .pool_size(0)
            .label(TEST_LABEL, test)
            .build()
            .await,
    )
}

/// The containers of `session`.
async fn containers_of(executor: &DockerExecutor, session: &str) -> Vec<SandboxContainer> {
    executor
        .containers()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| {
            c.labels
                .get(sandbox_docker::LABEL_SESSION)
                .map(String::as_str)
                == Some(session)
        })
        .collect()
}

/// Polls until `session` has no container left, failing after `within`.
async fn assert_gone(executor: &DockerExecutor, session: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let left = containers_of(executor, session).await;
        if left.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < within,
            "containers left behind: {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn open(executor: &DockerExecutor, options: SessionOptions) -> Box<dyn Session> {
    executor.open_session(options).await.unwrap()
}

async fn run(session: &dyn Session, cell: impl Into<Cell>) -> ExecutionResult {
    session.run(cell.into()).await.unwrap()
}

fn describe(result: &ExecutionResult) -> String {
    format!(
        "status={} exit={:?} signal={:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        result.status,
        result.exit_code,
        result.signal,
        result.stdout_text(),
        result.stderr_text()
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_container_holds_the_state_isolated_as_a_one_shot_run() {
    let Some(executor) = executor_for("session-state").await else {
        return;
    };
    let session = open(&executor, SessionOptions::default().env("MODE", "rlm")).await;
    let containers = containers_of(&executor, session.id()).await;
    assert_eq!(containers.len(), 1, "{containers:#?}");
    assert_eq!(containers[0].state, "running");
    assert_eq!(
        containers[0]
            .labels
            .get(sandbox_docker::LABEL)
            .map(String::as_str),
        Some("1")
    );

    run(
        session.as_ref(),
        "import json, os, socket\ncounter = 0\ndef bump():\n    global counter\n    counter += 1\n    return counter",
    )
    .await;
    let code = r#"
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
def writable(path):
    try:
        open(path, "w").close()
        return True
    except OSError:
        return False
print(json.dumps({
    "bump": [bump(), bump()],
    "uid": os.getuid(),
    "cap": status["CapEff"].strip(),
    "nnp": status["NoNewPrivs"].strip(),
    "cwd": os.getcwd(),
    "mode": os.environ.get("MODE"),
    "net": sorted(n for _, n in socket.if_nameindex()),
    "root": writable("/evil"),
    "usr": writable("/usr/evil"),
    "tmp": writable("/tmp/ok"),
}, sort_keys=True))
"#;
    let result = run(session.as_ref(), code).await;
    assert!(result.stdout_text().len() > 2, "{}", describe(&result));
    let seen: serde_json::Value = serde_json::from_str(&result.stdout_text()).unwrap();
    assert_eq!(
        seen,
        serde_json::json!({
            "bump": [1, 2], "uid": 1000, "cap": "0000000000000000", "nnp": "1",
            "cwd": "/tmp", "mode": "rlm", "net": ["lo"], "root": false, "usr": false, "tmp": true,
        })
    );
    assert_eq!(
        run(session.as_ref(), "print(bump())").await.stdout_text(),
        "3\n"
    );
    // No IP network (and no AF_VSOCK).
    assert!(
        result
            .isolation
            .get(Protection::Network)
            .is_some_and(|n| n.detail.contains("network mode none")),
        "{:?}",
        result.isolation.get(Protection::Network)
    );
    assert!(
        result
            .isolation
            .get(Protection::Timeout)
            .unwrap()
            .detail
            .contains("per cell")
    );

    // A trivial cell costs a round trip on the attached stream, no container start.
    let mut times = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        let result = run(session.as_ref(), "counter += 1").await;
        times.push(started.elapsed());
        assert_eq!(result.exit_code, Some(0));
    }
    times.sort();
    eprintln!(
        "docker session cell: p50 {:.2} ms, p95 {:.2} ms",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3
    );
    assert_eq!(
        run(session.as_ref(), "print(counter)").await.stdout_text(),
        "103\n"
    );
    session.close().await.unwrap();
    assert!(containers_of(&executor, session.id()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_cell_keeps_its_output_and_the_session() {
    let Some(executor) = executor_for("session-timeout").await else {
        return;
    };
    let session = open(&executor, SessionOptions::default()).await;
    run(session.as_ref(), "kept = 'yes'").await;
    let cell = Cell::new("import time\nfor i in range(3):\n    print('tick', i, flush=True)\nwhile True:\n    sum(range(1000))")
        .timeout(Duration::from_millis(700));
    let started = Instant::now();
    let result = run(session.as_ref(), cell).await;
    assert_eq!(result.status, Status::TimedOut, "{}", describe(&result));
    assert_eq!(result.stdout_text(), "tick 0\ntick 1\ntick 2\n");
    assert!(
        result.stderr_text().contains("interrupted"),
        "{}",
        describe(&result)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(session.state(), SessionState::Alive);
    assert_eq!(
        run(session.as_ref(), "print(kept)").await.stdout_text(),
        "yes\n"
    );
    session.close().await.unwrap();
}

/// Checks that `code`, which the server cannot interrupt, loses the
/// session: the cell reports a timeout with what it printed, the next call
/// says the session is lost and why, and the container is gone.
async fn uninterruptible(executor: &DockerExecutor, code: &str) {
    let session = open(executor, SessionOptions::default()).await;
    run(session.as_ref(), "state = 1").await;
    let started = Instant::now();
    let result = run(
        session.as_ref(),
        Cell::new(code).timeout(Duration::from_millis(500)),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(result.status, Status::TimedOut, "{}", describe(&result));
    assert!(
        elapsed >= Duration::from_millis(2500) && elapsed < Duration::from_secs(8),
        "the backstop struck after {elapsed:?}"
    );
    // What the cell printed before it was killed is recovered.
    assert!(
        result.stdout_text().contains("stuck"),
        "{}",
        describe(&result)
    );
    assert!(
        result.stderr_text().contains("the session is lost"),
        "{}",
        describe(&result)
    );
    let SessionState::Lost { reason } = session.state() else {
        panic!("{:?}", session.state());
    };
    assert!(reason.contains("ignored its timeout"), "{reason}");
    match session.run("print(state)".into()).await {
        Err(error @ Error::SessionLost { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("is lost") && message.contains("ignored its timeout"),
                "{message}"
            );
        }
        other => panic!("a lost session must say so, got {other:?}"),
    }
    assert!(session.put_file("x", b"x".to_vec()).await.is_err());
    assert!(containers_of(executor, session.id()).await.is_empty());
    session.close().await.unwrap();
    assert_eq!(session.state(), SessionState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_ignoring_the_alarm_loses_the_session() {
    let Some(executor) = executor_for("session-ignore").await else {
        return;
    };
    uninterruptible(
        &executor,
        "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nprint('stuck', flush=True)\ntime.sleep(60)",
    )
    .await;
    uninterruptible(
        &executor,
        "import signal, time\nsignal.setitimer(signal.ITIMER_REAL, 0)\nprint('stuck', flush=True)\nwhile True:\n    time.sleep(0.1)",
    )
    .await;
    // A C-level sleep loop with the alarm blocked.
    uninterruptible(
        &executor,
        "import ctypes, signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT})\nprint('stuck', flush=True)\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.usleep(100000)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_floods_are_capped_by_the_cell_and_the_scratch_space() {
    let Some(executor) = executor_for("session-flood").await else {
        return;
    };
    let session = open(&executor, SessionOptions::default()).await;
    let cell = Cell::new(
        "import sys\nwhile True:\n    print('x' * 1000)\n    print('e' * 1000, file=sys.stderr)",
    )
    .output_bytes(10_000)
    .timeout(Duration::from_secs(3));
    let result = run(session.as_ref(), cell).await;
    assert_eq!(result.stdout.len(), 10_000, "{}", describe(&result));
    assert!(result.stdout_truncated && result.stdout_dropped_bytes > 0);
    assert!(result.stderr_truncated);
    assert_ne!(result.exit_code, Some(0));
    assert_eq!(session.state(), SessionState::Alive);
    assert_eq!(
        run(session.as_ref(), "print('after')").await.stdout_text(),
        "after\n"
    );
    session.close().await.unwrap();
}

/// This process's peak resident memory.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_file_streams_in_and_out() {
    let Some(executor) = executor_for("session-100mb").await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("rlmkit-docker-session-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let local = dir.join("context.bin");
    let size: u64 = 100 << 20;
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&local).unwrap());
        for i in 0..(size >> 20) {
            file.write_all(&vec![(i % 251) as u8; 1 << 20]).unwrap();
        }
    }
    // Files live in the scratch space, which counts against memory.
    let options = SessionOptions::default().limits(
        Limits::builder()
            .scratch_bytes(256 << 20)
            .memory_bytes(768 << 20),
    );
    let session = open(&executor, options).await;
    let before = peak_rss();
    let started = Instant::now();
    assert_eq!(
        session
            .put_file_from("data/context.bin", &local)
            .await
            .unwrap(),
        size
    );
    eprintln!(
        "put 100 MB into a docker session in {:?}",
        started.elapsed()
    );
    let result = run(
        session.as_ref(),
        "import hashlib\ndata = open('data/context.bin', 'rb').read()\nprint(len(data), hashlib.sha256(data).hexdigest())\ndel data",
    )
    .await;
    let expected = {
        use std::io::Read;
        let mut child = std::process::Command::new("sha256sum")
            .arg(&local)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child.wait().unwrap();
        out.split_whitespace().next().unwrap().to_owned()
    };
    assert_eq!(
        result.stdout_text(),
        format!("{size} {expected}\n"),
        "{}",
        describe(&result)
    );
    let back = dir.join("back.bin");
    let started = Instant::now();
    assert_eq!(
        session
            .get_file_to("data/context.bin", &back)
            .await
            .unwrap(),
        size
    );
    eprintln!(
        "got 100 MB out of a docker session in {:?}",
        started.elapsed()
    );
    let grown = peak_rss().saturating_sub(before);
    assert!(
        grown < 50 << 20,
        "streaming 100 MB both ways grew this process's peak memory by {grown} bytes"
    );
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&local).unwrap(),
        "the file came back changed"
    );

    // In memory, once: put_file sends from the caller's buffer, get_file
    // fills one buffer of the file's size.
    let blob: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 253) as u8).collect();
    session.put_file("blob.bin", blob.clone()).await.unwrap();
    assert_eq!(session.get_file("blob.bin").await.unwrap(), blob);

    // Over the scratch space: refused up front, the session lives on.
    let error = session
        .put_file("too-big.bin", vec![0u8; 300 << 20])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("scratch"), "{error}");
    assert_eq!(session.state(), SessionState::Alive);
    let error = session.get_file("missing.bin").await.unwrap_err();
    assert!(error.to_string().contains("missing.bin"), "{error}");
    assert!(session.get_file("../etc/passwd").await.is_err());
    session.close().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_drop_remove_the_container() {
    let Some(executor) = executor_for("session-cleanup").await else {
        return;
    };
    let session = open(&executor, SessionOptions::default()).await;
    run(session.as_ref(), "x = 1").await;
    let id = session.id().to_owned();
    assert_eq!(containers_of(&executor, &id).await.len(), 1);
    session.close().await.unwrap();
    assert!(containers_of(&executor, &id).await.is_empty());
    assert_eq!(session.state(), SessionState::Closed);
    match session.run("print(x)".into()).await {
        Err(Error::SessionLost { reason, .. }) => assert!(reason.contains("closed"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Closing twice is fine.
    session.close().await.unwrap();

    let session = open(&executor, SessionOptions::default()).await;
    let id = session.id().to_owned();
    run(session.as_ref(), "x = 1").await;
    drop(session);
    assert_gone(&executor, &id, Duration::from_secs(10)).await;

    // Closing while a cell runs in another task stops the cell.
    let session: std::sync::Arc<dyn Session> =
        std::sync::Arc::from(open(&executor, SessionOptions::default()).await);
    let id = session.id().to_owned();
    let running = {
        let session = session.clone();
        tokio::spawn(async move { session.run("import time\ntime.sleep(60)".into()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    session.close().await.unwrap();
    let result = running.await.unwrap().unwrap();
    assert_eq!(result.status, Status::Killed, "{}", describe(&result));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(containers_of(&executor, &id).await.is_empty());

    // A call dropped midway leaves the protocol out of step: the session
    // is lost and its container removed.
    let session = open(&executor, SessionOptions::default()).await;
    let id = session.id().to_owned();
    let cut = tokio::time::timeout(
        Duration::from_millis(300),
        session.run("import time\ntime.sleep(60)".into()),
    )
    .await;
    assert!(cut.is_err());
    assert!(matches!(session.state(), SessionState::Lost { .. }));
    assert!(matches!(
        session.run("print(1)".into()).await,
        Err(Error::SessionLost { .. })
    ));
    assert_gone(&executor, &id, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifetime_ends_a_running_cell_and_the_session() {
    let Some(executor) = executor_for("session-lifetime").await else {
        return;
    };
    let options = SessionOptions::default().lifetime(Duration::from_secs(3));
    let session = open(&executor, options).await;
    let id = session.id().to_owned();
    run(session.as_ref(), "a = 1").await;
    let started = Instant::now();
    // The cell asks for more time than the session has left: it is
    // interrupted at the end of the lifetime, or killed with the container.
    let result = run(
        session.as_ref(),
        Cell::new("import time\ntime.sleep(60)").timeout(Duration::from_secs(30)),
    )
    .await;
    assert_eq!(result.status, Status::TimedOut, "{}", describe(&result));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let SessionState::Lost { reason } = session.state() else {
        panic!("{:?}", session.state());
    };
    assert!(reason.contains("lifetime"), "{reason}");
    match session.run("print(a)".into()).await {
        Err(Error::SessionLost { reason, .. }) => assert!(reason.contains("lifetime"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_gone(&executor, &id, Duration::from_secs(10)).await;
    session.close().await.unwrap();

    let error = executor
        .open_session(SessionOptions::default().lifetime(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidLimit {
                name: "lifetime",
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_kills_the_server_and_says_so() {
    let Some(executor) = executor_for("session-oom").await else {
        return;
    };
    let options = SessionOptions::default().limits(Limits::builder().memory_bytes(96 << 20));
    let session = open(&executor, options).await;
    let id = session.id().to_owned();
    // The probe works: 16 MiB fit.
    let fits = run(session.as_ref(), "small = bytearray(16 << 20)\nprint('ok')").await;
    assert_eq!(fits.stdout_text(), "ok\n", "{}", describe(&fits));
    let result = run(
        session.as_ref(),
        "hog = [bytearray(16 << 20) for _ in range(40)]",
    )
    .await;
    assert_eq!(result.status, Status::OomKilled, "{}", describe(&result));
    match session.run("print(1)".into()).await {
        Err(Error::SessionLost { reason, .. }) => {
            assert!(reason.contains("memory limit"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_gone(&executor, &id, Duration::from_secs(10)).await;
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limits_are_the_containers() {
    let Some(executor) = executor_for("session-limits").await else {
        return;
    };
    let options =
        SessionOptions::default().limits(Limits::builder().pids(16).network(NetworkMode::None));
    let session = open(&executor, options).await;
    let code = "import os\nn = 0\ntry:\n    for _ in range(64):\n        if os.fork() == 0:\n            import time; time.sleep(30); os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)";
    let result = run(session.as_ref(), code).await;
    let forked: u32 = result.stdout_text().trim().parse().unwrap();
    assert!(forked < 16, "{}", describe(&result));
    // The session lives on.
    assert_eq!(
        run(session.as_ref(), "print(2 + 2)").await.stdout_text(),
        "4\n"
    );
    session.close().await.unwrap();
}

/// Set in the helper process of [`a_dead_owner_leaves_its_session_to_gc`].
const HELPER_VAR: &str = "RLMKIT_SESSION_TEST_HELPER";

/// Not a test: the process that [`a_dead_owner_leaves_its_session_to_gc`]
/// starts and kills. It opens a session and waits to die.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a helper process of a_dead_owner_leaves_its_session_to_gc"]
async fn session_holder_helper() {
    if std::env::var(HELPER_VAR).is_err() {
        return;
    }
    let executor = DockerExecutor::builder()
        .pool_size(0)
        .build()
        .await
        .unwrap();
    let session = executor
        .open_session(SessionOptions::default())
        .await
        .unwrap();
    session.run("x = 1".into()).await.unwrap();
    println!("session {}", session.id());
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owner_leaves_its_session_to_gc() {
    use std::io::BufRead;

    let Some(executor) = executor_for("session-dead-owner").await else {
        return;
    };
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "session_holder_helper",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_VAR, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(helper.stdout.take().unwrap()).lines();
    let id = lines
        .find_map(|line| line.unwrap().strip_prefix("session ").map(str::to_owned))
        .expect("the helper opened a session");
    assert_eq!(containers_of(&executor, &id).await.len(), 1);
    helper.kill().unwrap();
    helper.wait().unwrap();
    // The server sees its stdin end and exits; gc removes the container.
    let started = Instant::now();
    loop {
        let left = containers_of(&executor, &id).await;
        if left.iter().all(|c| c.state == "exited") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{left:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let removed: Vec<String> = executor
        .gc()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.labels.get(sandbox_docker::LABEL_SESSION).cloned())
        .collect();
    assert!(removed.contains(&id), "{removed:?}");
    assert!(containers_of(&executor, &id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_refused_before_any_container() {
    let Some(executor) = executor_for("session-bad").await else {
        return;
    };
    let before: HashMap<String, String> = executor
        .containers()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    let bad_env = SessionOptions::default().env("A=B", "x");
    assert!(matches!(
        executor.open_session(bad_env).await,
        Err(Error::InvalidRequest { .. })
    ));
    let bad_limit = SessionOptions::default().limits(Limits::builder().memory_bytes(0));
    assert!(matches!(
        executor.open_session(bad_limit).await,
        Err(Error::InvalidLimit { .. })
    ));
    let session = open(&executor, SessionOptions::default()).await;
    assert!(matches!(
        session.put_file("/etc/evil", b"x".to_vec()).await,
        Err(Error::InvalidRequest { .. })
    ));
    let huge_cell = "x = 1\n".repeat(300_000);
    assert!(matches!(
        session.run(huge_cell.into()).await,
        Err(Error::InvalidRequest { .. })
    ));
    assert_eq!(session.state(), SessionState::Alive);
    session.close().await.unwrap();
    let after: HashMap<String, String> = executor
        .containers()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.labels.get(TEST_LABEL).map(String::as_str) == Some("session-bad"))
        .map(|c| (c.id, c.state))
        .collect();
    assert!(after.keys().all(|id| before.contains_key(id)), "{after:?}");
}
