//! The behaviour every backend shows, written once.
//!
//! Each case states what a user of any backend may rely on. Cases that test a
//! protection first show that the probe works, then that the sandbox stops it.

use std::time::{Duration, Instant};

use sandbox_core::{Error, ExecutionRequest, ExecutionResult, Executor, Limits, Status};

/// The variable `.cargo/config.toml` sets in every test process, which must never reach sandboxed code.
pub const HOST_SECRET_VAR: &str = "RLMKIT_SANDBOX_TEST_SECRET";

async fn run(executor: &dyn Executor, request: ExecutionRequest) -> ExecutionResult {
    match executor.execute(request).await {
        Ok(result) => result,
        Err(error) => panic!("{} failed to execute: {error:?}", executor.name()),
    }
}

fn describe(result: &ExecutionResult) -> String {
    format!(
        "status={} exit={:?} signal={:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        result.status,
        result.exit_code,
        result.signal,
        String::from_utf8_lossy(&result.stdout[..result.stdout.len().min(2000)]),
        String::from_utf8_lossy(&result.stderr[..result.stderr.len().min(2000)]),
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

pub async fn hello_world(executor: &dyn Executor) {
    let result = run(executor, ExecutionRequest::python("print('hello, world')")).await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout_utf8().unwrap(), "hello, world\n");
    assert!(result.stderr.is_empty(), "{}", describe(&result));
    assert_eq!(result.backend, executor.name());
    assert!(!result.stdout_truncated && !result.stderr_truncated);
    assert!(!result.isolation.protections.is_empty());
}

pub async fn exit_codes(executor: &dyn Executor) {
    let python = run(
        executor,
        ExecutionRequest::python("import sys; sys.exit(3)"),
    )
    .await;
    assert_exited(&python, 3);
    let shell = run(executor, ExecutionRequest::shell("echo from-shell; exit 7")).await;
    assert_exited(&shell, 7);
    assert_eq!(shell.stdout_text(), "from-shell\n");
    let command = run(executor, ExecutionRequest::command(["sh", "-c", "exit 5"])).await;
    assert_exited(&command, 5);
    let raised = run(
        executor,
        ExecutionRequest::python("raise ValueError('boom')"),
    )
    .await;
    assert_exited(&raised, 1);
    assert!(
        raised.stderr_text().contains("ValueError: boom"),
        "{}",
        describe(&raised)
    );
}

pub async fn stderr_is_separate(executor: &dyn Executor) {
    let code = "import sys\nprint('to out')\nprint('to err', file=sys.stderr)";
    let result = run(executor, ExecutionRequest::python(code)).await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout_text(), "to out\n");
    assert_eq!(result.stderr_text(), "to err\n");
}

pub async fn stdin_is_fed(executor: &dyn Executor) {
    let code = "import sys\ndata = sys.stdin.read()\nprint(len(data), data.upper())";
    let result = run(executor, ExecutionRequest::python(code).stdin("abc\ndef")).await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout_text(), "7 ABC\nDEF\n");

    // Without stdin the program sees end-of-file at once instead of hanging.
    let result = run(
        executor,
        ExecutionRequest::python("import sys; print(repr(sys.stdin.read()))"),
    )
    .await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout_text(), "''\n");

    // More stdin than a pipe holds, read in full.
    let big = "x".repeat(1 << 20);
    let code = "import sys; print(len(sys.stdin.buffer.read()))";
    let result = run(executor, ExecutionRequest::python(code).stdin(big)).await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout_text(), format!("{}\n", 1 << 20));
}

pub async fn env_is_given_and_host_env_is_not(executor: &dyn Executor) {
    // The probe works: the secret is in this process's environment.
    let secret = std::env::var(HOST_SECRET_VAR)
        .expect("the test process must carry the secret (set by .cargo/config.toml)");
    let code = format!(
        "import os\nprint(os.environ.get('GREETING'))\nprint(os.environ.get('{HOST_SECRET_VAR}'))\nprint(sorted(os.environ))"
    );
    let result = run(
        executor,
        ExecutionRequest::python(code).env("GREETING", "hi there"),
    )
    .await;
    assert_exited(&result, 0);
    let stdout = result.stdout_text();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("hi there"), "{}", describe(&result));
    assert_eq!(lines.next(), Some("None"), "{}", describe(&result));
    assert!(
        !stdout.contains(&secret),
        "the host secret leaked: {stdout}"
    );
    for host_only in ["CARGO_MANIFEST_DIR", "CARGO_PKG_NAME"] {
        assert!(
            std::env::var(host_only).is_ok(),
            "probe: {host_only} is set on the host"
        );
        assert!(!stdout.contains(host_only), "{host_only} leaked: {stdout}");
    }
}

pub async fn input_files_are_placed(executor: &dyn Executor) {
    let code =
        "print(open('data/in.txt').read().strip())\nprint(len(open('blob.bin', 'rb').read()))";
    let request = ExecutionRequest::python(code)
        .file("data/in.txt", "first file\n")
        .file("blob.bin", vec![0u8; 100_000]);
    let result = run(executor, request).await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout_text(), "first file\n100000\n");

    let escape = ExecutionRequest::python("pass").file("../outside.txt", "x");
    match executor.execute(escape).await {
        Err(Error::InvalidRequest { .. }) => {}
        other => panic!("a path leaving the working directory must be refused, got {other:?}"),
    }
}

pub async fn unicode_and_binary_output(executor: &dyn Executor) {
    let result = run(
        executor,
        ExecutionRequest::python("print('héllo ✓ 🌍 日本')"),
    )
    .await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout_utf8().unwrap(), "héllo ✓ 🌍 日本\n");

    let code = "import sys; sys.stdout.buffer.write(bytes(range(256)))";
    let result = run(executor, ExecutionRequest::python(code)).await;
    assert_exited(&result, 0);
    assert_eq!(result.stdout, (0u8..=255).collect::<Vec<u8>>());
    assert!(result.stdout_utf8().is_err());
}

pub async fn timeout_keeps_partial_output(executor: &dyn Executor) {
    let limit = Duration::from_secs(2);
    let code = "import time\nprint('started', flush=True)\ntime.sleep(60)\nprint('never')";
    let request = ExecutionRequest::python(code).limits(Limits::builder().timeout(limit));
    let started = Instant::now();
    let result = run(executor, request).await;
    let elapsed = started.elapsed();
    assert_eq!(result.status, Status::TimedOut, "{}", describe(&result));
    assert_eq!(result.stdout_text(), "started\n");
    assert!(
        elapsed < limit + Duration::from_secs(1),
        "returned {elapsed:?} after a {limit:?} timeout"
    );
    assert!(result.duration >= limit, "{:?}", result.duration);

    // A busy loop is stopped the same way.
    let request = ExecutionRequest::python("while True: pass")
        .limits(Limits::builder().timeout(Duration::from_millis(800)));
    let result = run(executor, request).await;
    assert_eq!(result.status, Status::TimedOut, "{}", describe(&result));
}

pub async fn output_flood_is_capped(executor: &dyn Executor) {
    let cap = 64 * 1024;
    let code = "import sys\nwhile True:\n    print('x' * 99)\n    print('e' * 99, file=sys.stderr)";
    let request = ExecutionRequest::python(code).limits(
        Limits::builder()
            .output_bytes(cap)
            .timeout(Duration::from_secs(20)),
    );
    let started = Instant::now();
    let result = run(executor, request).await;
    assert_eq!(
        result.status,
        Status::OutputLimitExceeded,
        "{}",
        describe(&result)
    );
    assert!(result.stdout.len() as u64 <= cap && result.stderr.len() as u64 <= cap);
    assert!(result.stdout_truncated || result.stderr_truncated);
    assert!(result.stdout.len() as u64 == cap || result.stderr.len() as u64 == cap);
    assert!(result.stdout.starts_with(b"xxxx"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the flood was not stopped promptly"
    );
}

pub async fn memory_hog_is_stopped(executor: &dyn Executor) {
    let code = "chunks = []\nfor i in range(200):\n    chunks.append(bytearray(16 * 1024 * 1024))\nprint('allocated 3.2 GB')";
    // The probe works: the same program finishes when the limit allows it.
    let roomy = ExecutionRequest::python(code.replace("range(200)", "range(2)"))
        .limits(Limits::builder().memory_bytes(256 << 20));
    assert_exited(&run(executor, roomy).await, 0);

    let request = ExecutionRequest::python(code).limits(
        Limits::builder()
            .memory_bytes(128 << 20)
            .timeout(Duration::from_secs(20)),
    );
    let result = run(executor, request).await;
    assert!(
        !result.stdout_text().contains("allocated"),
        "{}",
        describe(&result)
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
        describe(&result)
    );
}

pub async fn fork_bomb_is_contained(executor: &dyn Executor) {
    let code = r#"
import os, time
started = failed = 0
for _ in range(300):
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    started += 1
print(started, failed, flush=True)
"#;
    let request = ExecutionRequest::python(code)
        .limits(Limits::builder().pids(32).timeout(Duration::from_secs(20)));
    let started = Instant::now();
    let result = run(executor, request).await;
    assert_exited(&result, 0);
    let counts: Vec<u32> = result
        .stdout_text()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 2, "{}", describe(&result));
    assert!(
        counts[0] < 32,
        "{} processes started under a limit of 32",
        counts[0]
    );
    assert!(counts[1] > 0, "no fork was refused: {}", describe(&result));
    // The sleeping children die with the program instead of holding the run open.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // A real shell fork bomb ends, by timeout at the latest.
    let bomb = ExecutionRequest::shell("bomb() { bomb | bomb & }; bomb; sleep 2")
        .limits(Limits::builder().pids(32).timeout(Duration::from_secs(4)));
    let result = run(executor, bomb).await;
    assert!(
        matches!(result.status, Status::Exited | Status::TimedOut),
        "{}",
        describe(&result)
    );
}

pub async fn grandchild_is_killed_on_timeout(executor: &dyn Executor) {
    // The grandchild tries to leave the session (a sandbox may refuse that)
    // and keeps stdout open: the run must still end at its timeout, with the
    // output written so far.
    let code = r#"
import os, sys, time
if os.fork() == 0:
    try:
        os.setsid()
    except OSError:
        pass
    if os.fork() == 0:
        while True:
            print('grandchild alive', flush=True)
            time.sleep(0.2)
    os._exit(0)
time.sleep(60)
"#;
    let limit = Duration::from_secs(2);
    let request = ExecutionRequest::python(code).limits(Limits::builder().timeout(limit));
    let started = Instant::now();
    let result = run(executor, request).await;
    assert_eq!(result.status, Status::TimedOut, "{}", describe(&result));
    assert!(
        result.stdout_text().contains("grandchild alive"),
        "{}",
        describe(&result)
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < limit + Duration::from_secs(2),
        "returned after {elapsed:?}"
    );
}

pub async fn ten_executions_at_once(executor: &dyn Executor) {
    let runs = (0..10).map(|i| {
        let code = format!("import time\ntime.sleep(0.3)\nprint({i} * {i})");
        executor.execute(ExecutionRequest::python(code))
    });
    let results = futures_util::future::join_all(runs).await;
    for (i, result) in results.into_iter().enumerate() {
        let result = result.unwrap();
        assert_exited(&result, 0);
        assert_eq!(result.stdout_text(), format!("{}\n", i * i));
    }
}

pub async fn bad_limits_are_rejected(executor: &dyn Executor) {
    let bad = [
        Limits::builder().memory_bytes(0),
        Limits::builder().timeout(Duration::ZERO),
        Limits::builder().cpus(-1.0),
        Limits::builder().pids(0),
        Limits::builder().output_bytes(0),
    ];
    for limits in bad {
        match executor
            .execute(ExecutionRequest::python("print(1)").limits(limits.clone()))
            .await
        {
            Err(Error::InvalidLimit { .. }) => {}
            other => panic!("{limits:?} must be rejected, got {other:?}"),
        }
    }
}

pub async fn missing_command_is_an_error(executor: &dyn Executor) {
    let request = ExecutionRequest::command(["definitely-not-a-command-4711"]);
    match executor.execute(request).await {
        Err(error) => assert!(
            error.to_string().contains("definitely-not-a-command-4711"),
            "{error}"
        ),
        Ok(result) => assert_eq!(result.exit_code, Some(127), "{}", describe(&result)),
    }
}
