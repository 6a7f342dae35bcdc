//! Figures for the restricted runner: per-execution latency, the latency of
//! a trivial session cell, and the host's memory while sandboxed code floods
//! its output.
//!
//! `cargo bench -p sandbox-restricted` prints them; nothing here asserts a
//! time, since the machines that run it are shared and noisy.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use sandbox_core::{Cell, ExecutionRequest, Executor, Limits, SessionOptions};
use sandbox_restricted::RestrictedExecutor;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// This process's resident and peak resident memory, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("RLMKIT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let executor = RestrictedExecutor::new().unwrap();
    println!(
        "restricted runner, {}",
        executor
            .isolation()
            .get(sandbox_core::Protection::Memory)
            .unwrap()
            .detail
    );

    for (label, request) in [
        ("python print(1)", ExecutionRequest::python("print(1)")),
        ("shell echo 1", ExecutionRequest::shell("echo 1")),
    ] {
        executor.execute(request.clone()).await.unwrap();
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            let result = executor.execute(request.clone()).await.unwrap();
            times.push(started.elapsed());
            assert!(result.success());
        }
        times.sort();
        println!(
            "{label:<16} runs={runs} p50={:?} p95={:?} max={:?}",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            times[times.len() - 1]
        );
    }

    let session = executor
        .open_session(SessionOptions::default())
        .await
        .unwrap();
    session.run(Cell::new("x = 0")).await.unwrap();
    let cells = runs * 4;
    let mut times: Vec<Duration> = Vec::with_capacity(cells);
    for _ in 0..cells {
        let started = Instant::now();
        let result = session.run(Cell::new("x += 1")).await.unwrap();
        times.push(started.elapsed());
        assert!(result.success());
    }
    times.sort();
    println!(
        "{:<16} runs={cells} p50={:?} p95={:?} max={:?}",
        "session x += 1",
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        times[times.len() - 1]
    );
    session.close().await.unwrap();

    // A 100 MB context into a session (over the default 64 MiB scratch limit per file).
    let session = executor
        .open_session(SessionOptions::default().limits(Limits::builder().scratch_bytes(256 << 20)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("context.bin");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&local).unwrap();
        let block = vec![b'c'; 1 << 20];
        for _ in 0..100 {
            file.write_all(&block).unwrap();
        }
    }
    let (rss_before, _) = rss_kib();
    let started = Instant::now();
    let size = session.put_file_from("context.bin", &local).await.unwrap();
    let put = started.elapsed();
    let started = Instant::now();
    session
        .get_file_to("context.bin", &dir.path().join("back.bin"))
        .await
        .unwrap();
    let get = started.elapsed();
    let (rss_after, _) = rss_kib();
    println!(
        "session files     put {size} bytes in {put:?}, got them back in {get:?}; host RSS {rss_before} -> {rss_after} KiB"
    );
    session.close().await.unwrap();

    let (rss_before, peak_before) = rss_kib();
    let flood = ExecutionRequest::python("import sys\nwhile True: sys.stdout.write('x' * 65536)")
        .limits(
            Limits::builder()
                .output_bytes(1 << 20)
                .timeout(Duration::from_secs(20)),
        );
    let mut dropped = 0;
    for _ in 0..5 {
        let result = executor.execute(flood.clone()).await.unwrap();
        dropped += result.stdout_dropped_bytes;
        assert_eq!(result.stdout.len(), 1 << 20);
    }
    let (rss_after, peak_after) = rss_kib();
    println!(
        "output flood x5 (1 MiB cap): host RSS {rss_before} -> {rss_after} KiB, peak {peak_before} -> {peak_after} KiB, {dropped} bytes read past the cap and dropped"
    );
}
