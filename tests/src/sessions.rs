//! The behaviour every backend's sessions show, written once.

use std::time::{Duration, Instant};

use sandbox_core::{Cell, Error, Executor, Limits, Session, SessionOptions, SessionState, Status};

async fn open(executor: &dyn Executor, options: SessionOptions) -> Box<dyn Session> {
    match executor.open_session(options).await {
        Ok(session) => session,
        Err(error) => panic!("{} could not open a session: {error:?}", executor.name()),
    }
}

async fn run(session: &dyn Session, cell: impl Into<Cell>) -> sandbox_core::ExecutionResult {
    match session.run(cell.into()).await {
        Ok(result) => result,
        Err(error) => panic!("the cell failed to run: {error:?}"),
    }
}

pub async fn state_is_kept_between_cells(executor: &dyn Executor) {
    let session = open(executor, SessionOptions::default()).await;
    assert_eq!(session.state(), SessionState::Alive);
    run(
        session.as_ref(),
        "import math\nx = 41\ndef double(v):\n    return 2 * v",
    )
    .await;
    let result = run(
        session.as_ref(),
        "x += 1\nprint(x, double(x), math.floor(2.5))",
    )
    .await;
    assert_eq!(result.status, Status::Exited);
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(result.stdout_text(), "42 84 2\n");
    assert_eq!(result.backend, executor.name());
    // Output of subprocesses is captured as well.
    let result = run(
        session.as_ref(),
        "import subprocess\nsubprocess.run(['echo', 'from a child'])",
    )
    .await;
    assert_eq!(result.stdout_text(), "from a child\n");
    session.close().await.unwrap();
    assert_eq!(session.state(), SessionState::Closed);
    assert!(session.run("print(1)".into()).await.is_err());
}

pub async fn an_exception_is_data_and_the_session_lives_on(executor: &dyn Executor) {
    let session = open(executor, SessionOptions::default()).await;
    run(session.as_ref(), "y = 'kept'").await;
    let result = run(session.as_ref(), "1 / 0").await;
    assert_eq!((result.status, result.exit_code), (Status::Exited, Some(1)));
    assert!(
        result.stderr_text().contains("ZeroDivisionError"),
        "{}",
        result.stderr_text()
    );
    let result = run(session.as_ref(), "print(y)").await;
    assert_eq!(result.stdout_text(), "kept\n");
    session.close().await.unwrap();
}

pub async fn a_timed_out_cell_is_interrupted_and_the_session_lives_on(executor: &dyn Executor) {
    let session = open(executor, SessionOptions::default()).await;
    run(session.as_ref(), "z = 7").await;
    let started = Instant::now();
    let cell = Cell::new("import time\nprint('before', flush=True)\ntime.sleep(60)")
        .timeout(Duration::from_millis(500));
    let result = run(session.as_ref(), cell).await;
    assert_eq!(result.status, Status::TimedOut, "{}", result.stderr_text());
    assert!(result.stdout_text().contains("before"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(session.state(), SessionState::Alive);
    assert_eq!(run(session.as_ref(), "print(z)").await.stdout_text(), "7\n");
    session.close().await.unwrap();
}

pub async fn a_cell_that_ignores_interruption_loses_the_session(executor: &dyn Executor) {
    let session = open(executor, SessionOptions::default()).await;
    // The cell blocks the timer's signal: only a kill stops it.
    let code = "import signal, time\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT})\nwhile True:\n    time.sleep(0.05)";
    let started = Instant::now();
    let result = session
        .run(Cell::new(code).timeout(Duration::from_millis(500)))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    if let Ok(result) = &result {
        assert_ne!(result.status, Status::Exited, "{}", result.stderr_text());
    }
    assert!(
        matches!(session.state(), SessionState::Lost { .. }),
        "{:?}",
        session.state()
    );
    match session.run("print(1)".into()).await {
        Err(Error::SessionLost { reason, .. }) => assert!(!reason.is_empty()),
        other => panic!("a lost session must say so, got {other:?}"),
    }
    session.close().await.unwrap();
}

pub async fn cell_output_is_capped(executor: &dyn Executor) {
    let session = open(executor, SessionOptions::default()).await;
    let result = run(
        session.as_ref(),
        Cell::new("print('x' * 100000)").output_bytes(1000),
    )
    .await;
    assert_eq!(result.stdout.len(), 1000);
    assert!(result.stdout_truncated);
    assert!(result.stdout_dropped_bytes > 0);
    assert_eq!(
        run(session.as_ref(), "print('ok')").await.stdout_text(),
        "ok\n"
    );
    session.close().await.unwrap();
}

pub async fn files_move_in_and_out(executor: &dyn Executor) {
    let session = open(executor, SessionOptions::default()).await;
    session
        .put_file("data/in.txt", b"hello file".to_vec())
        .await
        .unwrap();
    let result = run(
        session.as_ref(),
        "data = open('data/in.txt').read()\nopen('out.txt', 'w').write(data.upper())",
    )
    .await;
    assert_eq!(result.exit_code, Some(0), "{}", result.stderr_text());
    assert_eq!(session.get_file("out.txt").await.unwrap(), b"HELLO FILE");
    assert!(session.get_file("missing.txt").await.is_err());

    // A large file streams both ways.
    let dir = tempfile_dir();
    let local = dir.join("big.bin");
    let size: u64 = 20 << 20;
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&local).unwrap();
        let block = vec![7u8; 1 << 20];
        for _ in 0..(size >> 20) {
            file.write_all(&block).unwrap();
        }
    }
    assert_eq!(
        session.put_file_from("big.bin", &local).await.unwrap(),
        size
    );
    let result = run(
        session.as_ref(),
        "import os\nprint(os.path.getsize('big.bin'))",
    )
    .await;
    assert_eq!(result.stdout_text(), format!("{size}\n"));
    let back = dir.join("back.bin");
    assert_eq!(session.get_file_to("big.bin", &back).await.unwrap(), size);
    assert_eq!(std::fs::metadata(&back).unwrap().len(), size);
    std::fs::remove_dir_all(&dir).unwrap();
    session.close().await.unwrap();
}

pub async fn the_lifetime_limit_ends_the_session(executor: &dyn Executor) {
    let options = SessionOptions::default().lifetime(Duration::from_secs(2));
    let session = open(executor, options).await;
    run(session.as_ref(), "a = 1").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(session.run("print(a)".into()).await.is_err());
    assert_ne!(session.state(), SessionState::Alive);
    session.close().await.unwrap();
}

pub async fn session_limits_hold(executor: &dyn Executor) {
    let options = SessionOptions::default().limits(Limits::builder().memory_bytes(128 << 20));
    let session = open(executor, options).await;
    let result = run(
        session.as_ref(),
        "hog = [bytearray(16 << 20) for _ in range(100)]",
    )
    .await;
    assert_ne!((result.status, result.exit_code), (Status::Exited, Some(0)));
    session.close().await.unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rlmkit-session-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
