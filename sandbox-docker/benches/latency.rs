//! Per-execution latency of `print(1)` through the Docker executor.
//!
//! `cargo bench -p sandbox-docker --bench latency [-- RUNS]` prints p50, p95
//! and max over RUNS executions (default 20), after one warm-up run. Skips
//! with a message when no Docker daemon answers.

use std::time::{Duration, Instant};

use sandbox_core::{ExecutionRequest, Executor};
use sandbox_docker::DockerExecutor;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(20)
        .max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("latency: cannot start a Tokio runtime: {error}");
            return;
        }
    };
    runtime.block_on(async {
        let executor = match DockerExecutor::builder().auto_build(false).build().await {
            Ok(executor) => executor,
            Err(error) => {
                eprintln!("latency: skipped, the Docker backend is not usable here: {error}");
                return;
            }
        };
        let request = ExecutionRequest::python("print(1)");
        let mut times = Vec::with_capacity(runs);
        for i in 0..=runs {
            let started = Instant::now();
            match executor.execute(request.clone()).await {
                Ok(result) if result.success() && result.stdout_text() == "1\n" => {}
                Ok(result) => {
                    eprintln!("latency: print(1) went wrong: {result:?}");
                    return;
                }
                Err(error) => {
                    eprintln!("latency: print(1) failed: {error}");
                    return;
                }
            }
            // The first run warms caches and connections.
            if i > 0 {
                times.push(started.elapsed());
            }
        }
        times.sort();
        println!(
            "docker print(1) over {runs} runs: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            percentile(&times, 0.50).as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
        );
    });
}
