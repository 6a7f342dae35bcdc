//! The session suite, and restricted-only session checks, on the restricted backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on failure.

use std::path::Path;
use std::time::{Duration, Instant};

use rstest::{fixture, rstest};
use sandbox_core::{
    Cell, Error, Executor, Limits, Protection, ProtectionState, Session, SessionOptions,
    SessionState, Status,
};
use sandbox_restricted::{DEFAULT_FIRST_UID, DEFAULT_UID_COUNT, RestrictedExecutor};

fn restricted() -> Option<Box<dyn Executor>> {
    Some(Box::new(
        RestrictedExecutor::new().expect("the restricted executor builds"),
    ))
}

sandbox_tests::session_suite!(restricted);

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

impl Isolated {
    async fn open(&self, options: SessionOptions) -> Box<dyn Session> {
        self.executor.open_session(options).await.unwrap()
    }
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// Waits up to `limit` for `dir` to be empty.
fn emptied_within(dir: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !is_empty(dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    is_empty(dir)
}

/// Whether process `pid` is gone (reaped; a zombie still counts as there).
fn is_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_err()
}

/// Whether process `pid` is dead: gone, or a zombie waiting for its parent
/// (a grandchild's parent is then init, which reaps it in its own time).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(text) => text
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
    }
}

/// Waits up to `limit` for process `pid` to be gone.
fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !is_gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    is_gone(pid)
}

async fn run(session: &dyn Session, cell: impl Into<Cell>) -> sandbox_core::ExecutionResult {
    let result = session.run(cell.into()).await.unwrap();
    assert_eq!(result.backend, "restricted");
    result
}

/// The session's pid and the pid of a background child it started.
async fn pids(session: &dyn Session) -> (u32, u32) {
    let code = "import os, subprocess\nchild = subprocess.Popen(['sleep', '600'])\nprint(os.getpid(), child.pid)";
    let result = run(session, code).await;
    let text = result.stdout_text();
    let mut numbers = text.split_whitespace().map(|n| n.parse::<u32>().unwrap());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_leaves_no_process_and_no_directory(isolated: Isolated) {
    let session = isolated.open(SessionOptions::default()).await;
    assert!(
        !is_empty(isolated.temp.path()),
        "the session has a workspace"
    );
    session.put_file("f.txt", b"x".to_vec()).await.unwrap();
    let (server, child) = pids(session.as_ref()).await;
    session.close().await.unwrap();
    assert_eq!(session.state(), SessionState::Closed);
    // close returns once everything is gone: no waiting here.
    assert!(is_gone(server), "server {server} lives");
    assert!(is_dead(child), "child {child} lives");
    assert!(
        is_empty(isolated.temp.path()),
        "a working directory was left behind"
    );
    match session.run("print(1)".into()).await {
        Err(Error::SessionLost { reason, .. }) => assert!(reason.contains("closed"), "{reason}"),
        other => panic!("a closed session must refuse cells, got {other:?}"),
    }
    assert!(session.get_file("f.txt").await.is_err());
    // Closing twice is fine.
    session.close().await.unwrap();
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_leaves_no_process_and_no_directory(isolated: Isolated) {
    let session = isolated.open(SessionOptions::default()).await;
    let (server, child) = pids(session.as_ref()).await;
    let started = Instant::now();
    drop(session);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "drop blocked for {:?}",
        started.elapsed()
    );
    assert!(
        gone_within(server, Duration::from_secs(5)),
        "server {server} lives"
    );
    assert!(
        gone_within(child, Duration::from_secs(5)),
        "child {child} lives"
    );
    assert!(
        emptied_within(isolated.temp.path(), Duration::from_secs(5)),
        "a working directory was left behind"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_leaves_nothing_behind(isolated: Isolated) {
    let session = isolated.open(SessionOptions::default()).await;
    let (server, child) = pids(session.as_ref()).await;
    // The server dies mid-cell, by its own hand.
    let result = run(
        session.as_ref(),
        "import os, signal\nprint('last words', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)",
    )
    .await;
    assert_eq!(result.status, Status::Signaled, "{}", result.stderr_text());
    assert_eq!(result.signal, Some(9));
    assert!(
        result.stdout_text().contains("last words"),
        "the cell's output is recovered: {:?}",
        result.stdout_text()
    );
    assert!(
        result.stderr_text().contains("signal 9"),
        "{}",
        result.stderr_text()
    );
    let SessionState::Lost { reason } = session.state() else {
        panic!("{:?}", session.state());
    };
    assert!(reason.contains("signal 9"), "{reason}");
    match session.run("print(1)".into()).await {
        Err(Error::SessionLost { reason, .. }) => assert!(reason.contains("signal 9")),
        other => panic!("{other:?}"),
    }
    // Everything is gone already, before close.
    assert!(gone_within(server, Duration::from_secs(5)));
    assert!(gone_within(child, Duration::from_secs(5)));
    assert!(emptied_within(isolated.temp.path(), Duration::from_secs(5)));
    session.close().await.unwrap();
    assert_eq!(session.state(), SessionState::Closed);
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_dies_between_cells_is_reported(isolated: Isolated) {
    let session = isolated.open(SessionOptions::default()).await;
    // A background thread ends the process after the cell has answered.
    run(
        session.as_ref(),
        "import os, threading, time\nthreading.Thread(target=lambda: (time.sleep(0.3), os._exit(7))).start()",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        matches!(session.state(), SessionState::Lost { .. }),
        "{:?}",
        session.state()
    );
    match session.run("print(1)".into()).await {
        Err(Error::SessionLost { reason, .. }) => assert!(reason.contains("code 7"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(emptied_within(isolated.temp.path(), Duration::from_secs(5)));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_loses_the_session_and_kills_it(isolated: Isolated) {
    let session = isolated.open(SessionOptions::default()).await;
    let (server, _) = pids(session.as_ref()).await;
    let slow = session.run("import time\ntime.sleep(60)".into());
    assert!(
        tokio::time::timeout(Duration::from_millis(500), slow)
            .await
            .is_err()
    );
    assert!(
        gone_within(server, Duration::from_secs(5)),
        "server {server} lives"
    );
    let SessionState::Lost { reason } = session.state() else {
        panic!("{:?}", session.state());
    };
    assert!(reason.contains("cancelled"), "{reason}");
    assert!(matches!(
        session.run("print(1)".into()).await,
        Err(Error::SessionLost { .. })
    ));
    assert!(emptied_within(isolated.temp.path(), Duration::from_secs(5)));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_is_isolated_like_an_execution(isolated: Isolated) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let session = isolated.open(SessionOptions::default()).await;
    let result = run(
        session.as_ref(),
        "import os\nprint(os.getuid(), os.getgid(), os.getcwd())",
    )
    .await;
    let report = &result.isolation;
    assert_eq!(report.backend, "restricted");
    let text = result.stdout_text();
    let fields: Vec<&str> = text.split_whitespace().collect();
    let (uid, gid): (u32, u32) = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
    assert!(fields[2].starts_with(isolated.temp.path().to_str().unwrap()));
    if report.is_enforced(Protection::User) {
        assert!(
            (DEFAULT_FIRST_UID..DEFAULT_FIRST_UID + DEFAULT_UID_COUNT).contains(&uid),
            "uid {uid}"
        );
        assert_eq!(uid, gid);
        let detail = &report.get(Protection::User).unwrap().detail;
        assert!(detail.contains(&format!("uid {uid}")), "{detail}");
    } else {
        eprintln!("no sandbox uid here: {:?}", report.get(Protection::User));
    }
    // The same report as a one-shot execution with the same limits.
    let one_shot = isolated
        .executor
        .execute(sandbox_core::ExecutionRequest::python("pass"))
        .await
        .unwrap();
    for protection in [
        Protection::Network,
        Protection::Filesystem,
        Protection::Syscalls,
        Protection::Memory,
        Protection::Processes,
        Protection::User,
    ] {
        assert_eq!(
            report.state(protection),
            one_shot.isolation.state(protection),
            "{protection:?}"
        );
    }

    // No network.
    let code = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n    print('connected')\nexcept OSError as e:\n    print('refused', e)"
    );
    let result = run(session.as_ref(), code).await;
    if report.state(Protection::Network) == Some(ProtectionState::Enforced) {
        assert!(
            result.stdout_text().starts_with("refused"),
            "{}",
            result.stdout_text()
        );
    }
    // Nothing outside the working directory is writable, not even next to it.
    let outside = isolated.temp.path().join("escaped.txt");
    let code = format!(
        "try:\n    open({:?}, 'w').write('x')\n    print('wrote')\nexcept OSError as e:\n    print('refused', e)",
        outside.to_str().unwrap()
    );
    let result = run(session.as_ref(), code).await;
    if report.is_enforced(Protection::Filesystem) {
        assert!(result.stdout_text().starts_with("refused"));
        assert!(!outside.exists());
    }
    // The host's environment is not there.
    let result = run(
        session.as_ref(),
        "import os\nprint(sorted(k for k in os.environ if k not in ('PATH', 'HOME', 'TMPDIR', 'LANG', 'PYTHONUNBUFFERED', 'PYTHONDONTWRITEBYTECODE', 'OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'LC_CTYPE')))",
    )
    .await;
    assert_eq!(result.stdout_text(), "[]\n");
    session.close().await.unwrap();
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_env_is_given(isolated: Isolated) {
    let session = isolated
        .open(SessionOptions::default().env("MODE", "rlm"))
        .await;
    let result = run(session.as_ref(), "import os\nprint(os.environ['MODE'])").await;
    assert_eq!(result.stdout_text(), "rlm\n");
    session.close().await.unwrap();
    let bad = SessionOptions::default().env("A=B", "x");
    assert!(matches!(
        isolated.executor.open_session(bad).await,
        Err(Error::InvalidRequest { .. })
    ));
    let zero = SessionOptions::default().lifetime(Duration::ZERO);
    assert!(matches!(
        isolated.executor.open_session(zero).await,
        Err(Error::InvalidLimit { .. })
    ));
    assert!(is_empty(isolated.temp.path()));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_at_once_keep_separate_state(isolated: Isolated) {
    let a = isolated.open(SessionOptions::default()).await;
    let b = isolated.open(SessionOptions::default()).await;
    run(a.as_ref(), "x = 'a'\nopen('mine.txt', 'w').write('a')").await;
    run(b.as_ref(), "x = 'b'").await;
    let code =
        "import os, time\ntime.sleep(0.3)\nprint(x, os.path.exists('mine.txt'), os.getuid())";
    let started = Instant::now();
    let (ra, rb) = tokio::join!(a.run(code.into()), b.run(code.into()));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(
        started.elapsed() < Duration::from_millis(550),
        "the two cells ran one after the other: {:?}",
        started.elapsed()
    );
    let (ta, tb) = (ra.stdout_text(), rb.stdout_text());
    assert!(ta.starts_with("a True "), "{ta}");
    assert!(tb.starts_with("b False "), "{tb}");
    if ra.isolation.is_enforced(Protection::User) {
        assert_ne!(
            ta.split_whitespace().nth(2),
            tb.split_whitespace().nth(2),
            "two sessions share a uid"
        );
    }
    assert_ne!(a.id(), b.id());
    // One cannot reach the other's files.
    let other = b
        .run("import glob\nprint(glob.glob('../../*/work/mine.txt'))".into())
        .await
        .unwrap();
    assert_eq!(other.stdout_text(), "[]\n");
    a.close().await.unwrap();
    assert_eq!(run(b.as_ref(), "print(x)").await.stdout_text(), "b\n");
    b.close().await.unwrap();
    assert!(is_empty(isolated.temp.path()));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_queue_behind_each_other_in_one_session(isolated: Isolated) {
    let session = isolated.open(SessionOptions::default()).await;
    run(session.as_ref(), "n = 0").await;
    let cells =
        (0..10).map(|_| session.run("import time\nn += 1\ntime.sleep(0.01)\nprint(n)".into()));
    let results = futures_util::future::join_all(cells).await;
    let mut seen: Vec<u32> = results
        .into_iter()
        .map(|r| r.unwrap().stdout_text().trim().parse().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
    session.close().await.unwrap();
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_paths_must_stay_in_the_working_directory(isolated: Isolated) {
    let session = isolated.open(SessionOptions::default()).await;
    for path in ["/etc/passwd", "../escape.txt", "a/../../b", "", ".", "a\0b"] {
        assert!(
            matches!(
                session.put_file(path, b"x".to_vec()).await,
                Err(Error::InvalidRequest { .. })
            ),
            "put {path:?}"
        );
        assert!(
            matches!(
                session.get_file(path).await,
                Err(Error::InvalidRequest { .. })
            ),
            "get {path:?}"
        );
    }
    // A missing file is an I/O error of kind NotFound, and the session lives on.
    match session.get_file("missing.txt").await {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    // A symlink planted inside cannot make the session write outside.
    let victim = isolated.temp.path().join("victim.txt");
    std::fs::write(&victim, "untouched").unwrap();
    let code = format!(
        "import os\nos.symlink({:?}, 'link.txt')",
        victim.to_str().unwrap()
    );
    run(session.as_ref(), code).await;
    let written = session.put_file("link.txt", b"overwritten".to_vec()).await;
    if session
        .run("pass".into())
        .await
        .unwrap()
        .isolation
        .is_enforced(Protection::Filesystem)
    {
        assert!(written.is_err(), "{written:?}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    }
    assert_eq!(session.state(), SessionState::Alive);
    assert_eq!(
        run(session.as_ref(), "print('alive')").await.stdout_text(),
        "alive\n"
    );
    session.close().await.unwrap();
    std::fs::remove_file(victim).unwrap();
    assert!(is_empty(isolated.temp.path()));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_scratch_limit_is_refused_clearly(isolated: Isolated) {
    let options = SessionOptions::default().limits(Limits::builder().scratch_bytes(1 << 20));
    let session = isolated.open(options).await;
    let error = session
        .put_file("big.bin", vec![0u8; 2 << 20])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("scratch"), "{error}");
    assert_eq!(session.state(), SessionState::Alive);
    session
        .put_file("small.bin", vec![1u8; 1000])
        .await
        .unwrap();
    assert_eq!(
        session.get_file("small.bin").await.unwrap(),
        vec![1u8; 1000]
    );
    session.close().await.unwrap();
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cell_keeps_its_output_but_never_through_a_planted_link(isolated: Isolated) {
    let secret = isolated.temp.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    let session = isolated.open(SessionOptions::default()).await;
    // The cell swaps its own output file for a link to a host file, then
    // ignores its timeout: the host must not follow the link when it
    // recovers the output of the killed cell.
    let code = format!(
        "import os, signal, time\nprint('partial', flush=True)\nsignal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGALRM}})\nerr = os.path.join(os.environ['TMPDIR'], '.rlmkit-cell-err')\nos.unlink(err)\nos.symlink({:?}, err)\nwhile True:\n    time.sleep(0.05)",
        secret.to_str().unwrap()
    );
    let result = run(
        session.as_ref(),
        Cell::new(code).timeout(Duration::from_millis(300)),
    )
    .await;
    assert_eq!(result.status, Status::TimedOut);
    assert_eq!(result.stdout_text(), "partial\n");
    assert!(
        !result.stderr_text().contains("host secret"),
        "{}",
        result.stderr_text()
    );
    assert!(
        result.stderr_text().contains("ignored its timeout"),
        "{}",
        result.stderr_text()
    );
    session.close().await.unwrap();
    std::fs::remove_file(secret).unwrap();
    assert!(is_empty(isolated.temp.path()));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_reported_as_such(isolated: Isolated) {
    if !isolated
        .executor
        .isolation()
        .is_enforced(Protection::Memory)
    {
        eprintln!("skipped: no cgroup memory controller here (the report says why)");
        return;
    }
    let options = SessionOptions::default().limits(Limits::builder().memory_bytes(128 << 20));
    let session = isolated.open(options).await;
    run(session.as_ref(), "kept = 1").await;
    let result = run(
        session.as_ref(),
        "hog = [bytearray(16 << 20) for _ in range(100)]",
    )
    .await;
    assert_eq!(result.status, Status::OomKilled, "{}", result.stderr_text());
    let SessionState::Lost { reason } = session.state() else {
        panic!("{:?}", session.state());
    };
    assert!(reason.contains("memory limit"), "{reason}");
    session.close().await.unwrap();
    assert!(is_empty(isolated.temp.path()));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifetime_cuts_a_running_cell_short(isolated: Isolated) {
    let options = SessionOptions::default().lifetime(Duration::from_secs(1));
    let session = isolated.open(options).await;
    let started = Instant::now();
    let result = run(session.as_ref(), "import time\ntime.sleep(30)").await;
    assert_eq!(result.status, Status::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let SessionState::Lost { reason } = session.state() else {
        panic!("{:?}", session.state());
    };
    assert!(reason.contains("lifetime"), "{reason}");
    match session.run("print(1)".into()).await {
        Err(Error::SessionLost { reason, .. }) => assert!(reason.contains("lifetime")),
        other => panic!("{other:?}"),
    }
    // The watchdog removed everything without waiting for close.
    assert!(emptied_within(isolated.temp.path(), Duration::from_secs(5)));
    session.close().await.unwrap();
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_the_working_directory_are_importable(isolated: Isolated) {
    let session = isolated.open(SessionOptions::default()).await;
    session
        .put_file("helpers.py", b"def triple(v):\n    return 3 * v\n".to_vec())
        .await
        .unwrap();
    let result = run(
        session.as_ref(),
        "from helpers import triple\nprint(triple(14))",
    )
    .await;
    assert_eq!(result.stdout_text(), "42\n", "{}", result.stderr_text());
    session.close().await.unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Prints the latency of a trivial cell (no timed assertion: machines are noisy).
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trivial_cell_latency(isolated: Isolated) {
    let session = isolated.open(SessionOptions::default()).await;
    run(session.as_ref(), "x = 0").await;
    for _ in 0..20 {
        run(session.as_ref(), "x += 1").await;
    }
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        let started = Instant::now();
        let result = session.run("x += 1".into()).await.unwrap();
        times.push(started.elapsed());
        assert!(result.success());
    }
    times.sort();
    println!(
        "restricted session, trivial cell over {} runs: p50 {:?}, p95 {:?}, max {:?}",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        times[times.len() - 1]
    );
    assert_eq!(
        run(session.as_ref(), "print(x)").await.stdout_text(),
        "220\n"
    );
    session.close().await.unwrap();
}

#[rstest]
#[case::garbage("b'\\x00\\x00\\x00\\x05hello'")]
#[case::an_output_over_the_cap(
    "(lambda h: len(h).to_bytes(4, 'big') + h)(b'{\"ok\": true, \"status\": \"exited\", \"stdout_size\": 10000000000}')"
)]
#[case::a_header_over_the_limit("b'\\x7f\\xff\\xff\\xff'")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_that_garbles_the_protocol_loses_only_its_session(
    isolated: Isolated,
    #[case] bytes: &str,
) {
    let session = isolated.open(SessionOptions::default()).await;
    let (server, _) = pids(session.as_ref()).await;
    // The server's private copy of the protocol stream is reachable from a cell.
    let code =
        format!("import __main__\n__main__._proto_out.write({bytes})\n__main__._proto_out.flush()");
    let result = tokio::time::timeout(Duration::from_secs(10), session.run(code.into()))
        .await
        .expect("the host never hangs on a garbled stream")
        .unwrap();
    assert_eq!(result.status, Status::Killed, "{}", result.stderr_text());
    let SessionState::Lost { reason } = session.state() else {
        panic!("{:?}", session.state());
    };
    assert!(reason.contains("protocol"), "{reason}");
    assert!(gone_within(server, Duration::from_secs(5)));
    assert!(emptied_within(isolated.temp.path(), Duration::from_secs(5)));
    session.close().await.unwrap();
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_start_is_a_clear_error(isolated: Isolated) {
    let options = SessionOptions::default().env("PYTHONHOME", "/nonexistent/python-home");
    let error = isolated.executor.open_session(options).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    assert!(
        message.contains("did not start") && message.contains("Fatal Python error"),
        "the server's own stderr says why: {message}"
    );
    assert!(emptied_within(isolated.temp.path(), Duration::from_secs(5)));
}
