//! End-to-end latency of `print(1)`: the seed's `docker run --rm`, the
//! Docker executor with cold containers, with its warm pool, and as a cell
//! of a session, in one run.
//!
//! `cargo bench -p sandbox-docker --bench latency [-- RUNS]` prints p50, p95
//! and max over RUNS executions of each (default 20), after one warm-up
//! run, and the ratio of each p50 to `docker run`'s. The pooled figures are
//! taken twice: with the pool refilled between runs (a request finds a
//! ready container, as in a loop that waits for a model between cells) and
//! back to back (refills compete with the runs and some run cold). Skips
//! with a message when no Docker daemon answers.

use std::future::Future;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sandbox_core::{ExecutionRequest, Executor, Session, SessionOptions};
use sandbox_docker::{DEFAULT_IMAGE, DockerExecutor};

/// The seed's command line, as `docker run` ran it.
const SEED_FLAGS: [&str; 12] = [
    "run",
    "--rm",
    "--network",
    "none",
    "--memory",
    "512m",
    "--cpus",
    "1",
    "--pids-limit",
    "128",
    "--read-only",
    "--user=1000:1000",
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Times `runs` calls of `once` after one warm-up; `before` runs untimed
/// ahead of each. `None` (after a message) when a run fails.
async fn measure<B, BF, F, Fut>(
    label: &str,
    runs: usize,
    mut before: B,
    mut once: F,
) -> Option<Vec<Duration>>
where
    B: FnMut() -> BF,
    BF: Future<Output = ()>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut times = Vec::with_capacity(runs);
    for i in 0..=runs {
        before().await;
        let started = Instant::now();
        if let Err(error) = once().await {
            eprintln!("latency: {label}: {error}");
            return None;
        }
        // The first run warms caches and connections.
        if i > 0 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    Some(times)
}

fn report(label: &str, times: &[Duration], baseline: Option<Duration>) {
    let p50 = percentile(times, 0.50);
    let ratio = baseline
        .map(|b| {
            format!(
                ", {:.1}x faster than docker run",
                b.as_secs_f64() / p50.as_secs_f64()
            )
        })
        .unwrap_or_default();
    println!(
        "{label:<34} p50 {:>6.1} ms  p95 {:>6.1} ms  max {:>6.1} ms{ratio}",
        ms(p50),
        ms(percentile(times, 0.95)),
        ms(times[times.len() - 1]),
    );
}

async fn docker_run() -> Result<(), String> {
    let output = tokio::process::Command::new("docker")
        .args(SEED_FLAGS)
        .args([DEFAULT_IMAGE, "python3", "-c", "print(1)"])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if output.status.success() && output.stdout == b"1\n" {
        Ok(())
    } else {
        Err(format!(
            "docker run went wrong: {:?} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

async fn print_one(executor: &DockerExecutor) -> Result<(), String> {
    match executor.execute(ExecutionRequest::python("print(1)")).await {
        Ok(result) if result.success() && result.stdout_text() == "1\n" => Ok(()),
        Ok(result) => Err(format!("print(1) went wrong: {result:?}")),
        Err(error) => Err(format!("print(1) failed: {error}")),
    }
}

/// Waits (untimed) until the pool is full again.
async fn full(executor: &DockerExecutor) {
    let started = Instant::now();
    while executor.pool_stats().ready < executor.pool_size()
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the last launcher settle in its read.
    tokio::time::sleep(Duration::from_millis(20)).await;
}

async fn cell(session: &dyn Session) -> Result<(), String> {
    match session.run("print(1)".into()).await {
        Ok(result) if result.success() && result.stdout_text() == "1\n" => Ok(()),
        Ok(result) => Err(format!("the cell went wrong: {result:?}")),
        Err(error) => Err(format!("the cell failed: {error}")),
    }
}

async fn nothing() {}

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
        let cold = match DockerExecutor::builder()
            .auto_build(false)
            .pool_size(0)
            .build()
            .await
        {
            Ok(executor) => executor,
            Err(error) => {
                eprintln!("latency: skipped, the Docker backend is not usable here: {error}");
                return;
            }
        };
        println!("print(1), {runs} runs each, one after another:");
        let Some(seed) = measure("docker run", runs, nothing, docker_run).await else {
            return;
        };
        report("docker run --rm (seed flags)", &seed, None);
        let baseline = Some(percentile(&seed, 0.5));

        if let Some(times) = measure("cold", runs, nothing, || print_one(&cold)).await {
            report("executor, cold container", &times, baseline);
        }

        let pooled = match DockerExecutor::builder().auto_build(false).build().await {
            Ok(executor) => executor,
            Err(error) => {
                eprintln!("latency: the pooled executor did not build: {error}");
                return;
            }
        };
        let refilled = measure("pooled", runs, || full(&pooled), || print_one(&pooled)).await;
        if let Some(times) = refilled {
            report(
                &format!("executor, pool of {} (refilled)", pooled.pool_size()),
                &times,
                baseline,
            );
        }
        full(&pooled).await;
        let back_to_back = measure("pooled", runs, nothing, || print_one(&pooled)).await;
        if let Some(times) = back_to_back {
            report(
                &format!("executor, pool of {} (back to back)", pooled.pool_size()),
                &times,
                baseline,
            );
        }
        let stats = pooled.pool_stats();
        println!(
            "(pooled executor: {} runs pooled, {} cold)",
            stats.pooled_runs, stats.cold_runs
        );
        if let Some(error) = stats.last_error {
            eprintln!("latency: the pool reported: {error}");
        }
        if let Err(error) = pooled.shutdown().await {
            eprintln!("latency: shutting the pool down failed: {error}");
        }

        match cold.open_session(SessionOptions::default()).await {
            Ok(session) => {
                let cells = runs * 10;
                if let Some(times) =
                    measure("session", cells, nothing, || cell(session.as_ref())).await
                {
                    report(&format!("session cell ({cells} cells)"), &times, baseline);
                }
                if let Err(error) = session.close().await {
                    eprintln!("latency: closing the session failed: {error}");
                }
            }
            Err(error) => eprintln!("latency: no session: {error}"),
        }
    });
}
