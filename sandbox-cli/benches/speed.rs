//! Latency and throughput of every way to run a small cell, in one run.
//!
//! `cargo bench -p sandbox-cli --bench speed` prints p50/p95 latency at
//! concurrency 1 and throughput at concurrency 4 for: the seed's
//! `docker run --rm`, Docker cold and pooled one-shot runs, a Docker session
//! cell, restricted one-shot runs and session cells, and bare `python3 -c` on
//! the host; then the time to put a 100 MB file into a session. It writes the
//! table to `docs/benchmarks.md`. Set `RLMKIT_BENCH_RUNS` to change the
//! number of runs per case (default 30). Nothing here asserts a time.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox_core::{Cell, ExecutionRequest, Executor, Limits, Session, SessionOptions};
use sandbox_docker::DockerExecutor;
use sandbox_restricted::RestrictedExecutor;

type Job = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

struct Figures {
    name: String,
    p50: Duration,
    p95: Duration,
    throughput: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn measure(name: &str, runs: usize, job: Job) -> Figures {
    job().await; // warm-up
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        job().await;
        times.push(started.elapsed());
    }
    times.sort();
    let started = Instant::now();
    let total = runs.max(8);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let job = job.clone();
            let next = next.clone();
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                    job().await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let throughput = total as f64 / started.elapsed().as_secs_f64();
    let figures = Figures {
        name: name.to_owned(),
        p50: percentile(&times, 0.5),
        p95: percentile(&times, 0.95),
        throughput,
    };
    println!(
        "{:<32} p50 {:>10.2?}  p95 {:>10.2?}  {:>8.1} runs/s at concurrency 4",
        figures.name, figures.p50, figures.p95, figures.throughput
    );
    figures
}

fn command_job(program: &'static str, args: Vec<String>) -> Job {
    Arc::new(move || {
        let args = args.clone();
        Box::pin(async move {
            let output = tokio::process::Command::new(program)
                .args(&args)
                .output()
                .await
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        })
    })
}

fn executor_job(executor: Arc<dyn Executor>) -> Job {
    Arc::new(move || {
        let executor = executor.clone();
        Box::pin(async move {
            let result = executor
                .execute(ExecutionRequest::python("print(1)"))
                .await
                .unwrap();
            assert!(result.success(), "{}", result.stderr_text());
        })
    })
}

/// Latency of a run that finds a warm container: the pool is refilled
/// (untimed) before each one, as between the cells of an agent that thinks
/// between runs. Throughput is not measured here: see "back to back".
async fn pool_hits(executor: &Arc<DockerExecutor>, runs: usize) -> Figures {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..=runs {
        let waited = Instant::now();
        while executor.pool_stats().ready < executor.pool_size()
            && waited.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let started = Instant::now();
        let result = executor
            .execute(ExecutionRequest::python("print(1)"))
            .await
            .unwrap();
        times.push(started.elapsed());
        assert!(result.success(), "{}", result.stderr_text());
    }
    times.remove(0); // warm-up
    times.sort();
    let figures = Figures {
        name: "docker one-shot, pooled (warm)".to_owned(),
        p50: percentile(&times, 0.5),
        p95: percentile(&times, 0.95),
        throughput: f64::NAN,
    };
    println!(
        "{:<32} p50 {:>10.2?}  p95 {:>10.2?}",
        figures.name, figures.p50, figures.p95
    );
    figures
}

/// Four sessions, so that concurrent cells do not queue behind each other.
async fn session_job(executor: &dyn Executor) -> Option<(Job, Vec<Arc<dyn Session>>)> {
    let mut sessions: Vec<Arc<dyn Session>> = Vec::new();
    for _ in 0..4 {
        // Room in the scratch space for the 100 MB file put into the first one.
        let options = SessionOptions::default().limits(Limits::builder().scratch_bytes(256 << 20));
        match executor.open_session(options).await {
            Ok(session) => sessions.push(Arc::from(session)),
            Err(error) => {
                println!("{} sessions: skipped ({error})", executor.name());
                return None;
            }
        }
    }
    for session in &sessions {
        session.run(Cell::new("x = 0")).await.unwrap();
    }
    let pool = Arc::new(sessions.clone());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let job: Job = Arc::new(move || {
        let pool = pool.clone();
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % pool.len();
        Box::pin(async move {
            let result = pool[i].run(Cell::new("x += 1")).await.unwrap();
            assert!(result.success(), "{}", result.stderr_text());
        })
    });
    Some((job, sessions))
}

async fn put_100mb(session: &dyn Session) -> Duration {
    let dir = std::env::temp_dir().join(format!("rlmkit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let local = dir.join("context.bin");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&local).unwrap();
        let block = vec![b'c'; 1 << 20];
        for _ in 0..100 {
            file.write_all(&block).unwrap();
        }
    }
    let started = Instant::now();
    session.put_file_from("context.bin", &local).await.unwrap();
    let elapsed = started.elapsed();
    std::fs::remove_dir_all(&dir).unwrap();
    elapsed
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let docker = std::process::Command::new("docker")
        .args([
            "version",
            "--format",
            "{{.Server.Version}} (API {{.Server.APIVersion}})",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unavailable".to_owned());
    format!(
        "{cpu}, {cores} cores, Linux {}, Docker {docker}",
        kernel.trim()
    )
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("RLMKIT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mut rows: Vec<Figures> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    let python = "print(1)".to_owned();
    // The real interpreter, not a version manager's shim in front of it.
    let interpreter = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap();
    let interpreter: &'static str = Box::leak(interpreter.into_boxed_str());
    rows.push(
        measure(
            "host python3 -c",
            runs,
            command_job(interpreter, vec!["-c".into(), python.clone()]),
        )
        .await,
    );

    let docker_cold = DockerExecutor::builder().pool_size(0).build().await;
    let docker_available = docker_cold.is_ok();
    if let Ok(cold) = docker_cold {
        let seed: Vec<String> = [
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
            "--user",
            "1000:1000",
            sandbox_docker::DEFAULT_IMAGE,
            "python3",
            "-c",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([python.clone()])
        .collect();
        rows.push(measure("seed: docker run --rm", runs, command_job("docker", seed)).await);
        rows.push(measure("docker one-shot, cold", runs, executor_job(Arc::new(cold))).await);
        let pooled = Arc::new(
            DockerExecutor::builder()
                .pool_size(4)
                .build()
                .await
                .unwrap(),
        );
        rows.push(pool_hits(&pooled, runs).await);
        rows.push(
            measure(
                "docker one-shot, pooled, back to back",
                runs,
                executor_job(pooled.clone()),
            )
            .await,
        );
        let stats = pooled.pool_stats();
        notes.push(format!(
            "pooled back to back: {} runs took a warm container, {} ran cold (the pool refills at container-start speed)",
            stats.pooled_runs, stats.cold_runs
        ));
        pooled.shutdown().await.unwrap();
        let docker = DockerExecutor::builder()
            .pool_size(0)
            .build()
            .await
            .unwrap();
        if let Some((job, sessions)) = session_job(&docker).await {
            rows.push(measure("docker session cell", runs * 10, job).await);
            notes.push(format!(
                "put 100 MB into a Docker session: {:.2?}",
                put_100mb(sessions[0].as_ref()).await
            ));
            for session in sessions {
                session.close().await.unwrap();
            }
        }
    } else {
        notes.push("Docker was unavailable: its rows are missing".to_owned());
    }

    let restricted: Arc<dyn Executor> = Arc::new(RestrictedExecutor::new().unwrap());
    rows.push(
        measure(
            "restricted one-shot",
            runs,
            executor_job(restricted.clone()),
        )
        .await,
    );
    if let Some((job, sessions)) = session_job(restricted.as_ref()).await {
        rows.push(measure("restricted session cell", runs * 10, job).await);
        notes.push(format!(
            "put 100 MB into a restricted session: {:.2?}",
            put_100mb(sessions[0].as_ref()).await
        ));
        for session in sessions {
            session.close().await.unwrap();
        }
    }

    let seed_p50 = rows
        .iter()
        .find(|r| r.name.starts_with("seed"))
        .map(|r| r.p50);
    let mut table = String::new();
    writeln!(
        table,
        "| case | p50 | p95 | runs/s at concurrency 4 | p50 vs `docker run` |"
    )
    .unwrap();
    writeln!(table, "| --- | --- | --- | --- | --- |").unwrap();
    for row in &rows {
        let ratio = seed_p50
            .map(|seed| format!("{:.1}x faster", seed.as_secs_f64() / row.p50.as_secs_f64()))
            .unwrap_or_else(|| "n/a".to_owned());
        let throughput = if row.throughput.is_nan() {
            "-".to_owned()
        } else {
            format!("{:.1}", row.throughput)
        };
        writeln!(
            table,
            "| {} | {:.2?} | {:.2?} | {throughput} | {ratio} |",
            row.name, row.p50, row.p95
        )
        .unwrap();
    }
    println!("\n{table}");
    for note in &notes {
        println!("{note}");
    }
    let doc = format!(
        "# Benchmarks\n\nMeasured by `cargo bench -p sandbox-cli --bench speed` ({runs} runs a case at concurrency 1, session cells {} runs; then the same number, at least 8, at concurrency 4) on: {}.\nEach case runs `print(1)` (a session cell runs `x += 1`). These machines are shared: expect noise of tens of percent.\n\n{table}\n{}\n",
        runs * 10,
        machine(),
        notes.iter().map(|n| format!("- {n}\n")).collect::<String>()
    );
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
    std::fs::write(&path, doc).unwrap();
    println!("wrote {}", path.display());
    if !docker_available {
        println!("(Docker unavailable)");
    }
}
