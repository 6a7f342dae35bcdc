//! The soak: many executions at once on each backend, mixing normal runs,
//! timeouts, out-of-memory kills and output floods, then checking that every
//! result is accounted for and that nothing is left behind.
//!
//! ```sh
//! cargo bench -p sandbox-tests --bench soak                       # 1,000 runs per backend
//! RLMKIT_SOAK_RUNS=120 cargo bench -p sandbox-tests --bench soak  # the short form CI runs
//! ```
//!
//! Environment: `RLMKIT_SOAK_RUNS` (default 1000), `RLMKIT_SOAK_CONCURRENCY`
//! (default 8), `RLMKIT_SOAK_BACKENDS` (default `restricted,docker`).
//! Docker is skipped, saying why, when no daemon answers or the image is
//! missing, unless `RLMKIT_SANDBOX_REQUIRE_DOCKER=1`. Exits non-zero when
//! any check fails.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sandbox_core::{Error, ExecutionRequest, ExecutionResult, Executor, Limits, Status};
use sandbox_docker::DockerExecutor;
use sandbox_restricted::RestrictedExecutor;
use sandbox_tests::adversarial::{entries_in, processes_of_uids, vm_hwm, vm_rss};
use testcontainers::bollard;

/// The restricted runner's default sandbox uid range.
const SANDBOX_UIDS: std::ops::Range<u32> = 1_500_000_000..1_500_065_536;
/// How much the host process's resident memory may stay above where it started.
const RSS_SETTLE_BOUND: u64 = 64 << 20;
/// A label on the soak's containers, with this process's pid.
const SOAK_LABEL: &str = "rlmkit.soak";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Normal,
    Timeout,
    Oom,
    Flood,
}

impl Kind {
    /// 70 / 10 / 10 / 10, interleaved.
    fn of(index: usize) -> Kind {
        match index % 10 {
            7 => Kind::Timeout,
            8 => Kind::Oom,
            9 => Kind::Flood,
            _ => Kind::Normal,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::Timeout => "timeout",
            Kind::Oom => "oom",
            Kind::Flood => "flood",
        }
    }

    /// The request for run `index`, and the output a normal run must print.
    fn request(self, index: usize) -> (ExecutionRequest, Option<String>) {
        match self {
            Kind::Normal => {
                let n = index * 7 + 3;
                let expected = (0..n).sum::<usize>();
                let request = match index % 3 {
                    0 => ExecutionRequest::python(format!("print(sum(range({n})))")),
                    1 => ExecutionRequest::python("import sys\nn = int(sys.stdin.read())\nprint(sum(range(n)))")
                        .stdin(n.to_string()),
                    _ => ExecutionRequest::shell(format!("echo $(( {n} * ({n} - 1) / 2 ))")),
                };
                let request = request.limits(Limits::builder().timeout(Duration::from_secs(60)));
                (request, Some(format!("{expected}\n")))
            }
            Kind::Timeout => (
                ExecutionRequest::python("import time\nprint('sleeping', flush=True)\ntime.sleep(600)")
                    .limits(Limits::builder().timeout(Duration::from_secs(1))),
                None,
            ),
            Kind::Oom => (
                ExecutionRequest::python(
                    "held = []\nwhile True:\n    held.append(b'\\x01' * (8 << 20))",
                )
                .limits(
                    Limits::builder()
                        .memory_bytes(64 << 20)
                        .timeout(Duration::from_secs(60)),
                ),
                None,
            ),
            Kind::Flood => (
                ExecutionRequest::python(
                    "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n    sys.stderr.write('e' * 4096)",
                )
                .limits(
                    Limits::builder()
                        .output_bytes(64 << 10)
                        .timeout(Duration::from_secs(60)),
                ),
                None,
            ),
        }
    }

    /// Whether `result` is what a run of this kind must give.
    fn accepts(self, result: &ExecutionResult, expected: Option<&str>) -> bool {
        match self {
            Kind::Normal => result.success() && Some(result.stdout_text().as_ref()) == expected,
            Kind::Timeout => {
                result.status == Status::TimedOut && result.stdout_text() == "sleeping\n"
            }
            Kind::Oom => {
                result.status == Status::OomKilled
                    || (result.status == Status::Exited
                        && result.exit_code != Some(0)
                        && result.stderr_text().contains("MemoryError"))
            }
            Kind::Flood => {
                result.status == Status::OutputLimitExceeded
                    && result.stdout.len() <= 64 << 10
                    && result.stderr.len() <= 64 << 10
            }
        }
    }
}

/// One run's outcome.
struct Outcome {
    kind: Kind,
    latency: Duration,
    result: Result<ExecutionResult, Error>,
    accepted: bool,
}

/// What one backend's soak found.
#[derive(Default)]
struct Report {
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, ok: bool, what: String) {
        println!("  [{}] {what}", if ok { "ok" } else { "FAIL" });
        if !ok {
            self.failures.push(what);
        }
    }
}

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// Runs the mix on `executor` and checks every result.
async fn soak(executor: &dyn Executor, runs: usize, concurrency: usize, report: &mut Report) {
    let rss_before = vm_rss();
    let started = Instant::now();
    let outcomes: Vec<Outcome> = futures_util::stream::iter(0..runs)
        .map(|index| async move {
            let kind = Kind::of(index);
            let (request, expected) = kind.request(index);
            let began = Instant::now();
            let result = executor.execute(request).await;
            let latency = began.elapsed();
            let accepted = result
                .as_ref()
                .is_ok_and(|r| kind.accepts(r, expected.as_deref()));
            Outcome {
                kind,
                latency,
                result,
                accepted,
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = started.elapsed();

    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies: BTreeMap<Kind, Vec<Duration>> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for outcome in &outcomes {
        latencies
            .entry(outcome.kind)
            .or_default()
            .push(outcome.latency);
        match &outcome.result {
            Ok(result) => *by_status.entry(result.status.to_string()).or_default() += 1,
            Err(error) => {
                *errors.entry(error.kind().to_owned()).or_default() += 1;
                if unexpected.len() < 5 {
                    unexpected.push(format!("{}: error {error}", outcome.kind.name()));
                }
            }
        }
        if !outcome.accepted && unexpected.len() < 5 {
            if let Ok(result) = &outcome.result {
                unexpected.push(format!(
                    "{}: status={} exit={:?} signal={:?} stdout={:?} stderr={:?}",
                    outcome.kind.name(),
                    result.status,
                    result.exit_code,
                    result.signal,
                    String::from_utf8_lossy(&result.stdout[..result.stdout.len().min(200)]),
                    String::from_utf8_lossy(&result.stderr[..result.stderr.len().min(200)]),
                ));
            }
        }
    }
    let accepted = outcomes.iter().filter(|o| o.accepted).count();

    println!(
        "  runs: {} in {:.1} s ({:.1} runs/s) at concurrency {concurrency}",
        outcomes.len(),
        wall.as_secs_f64(),
        outcomes.len() as f64 / wall.as_secs_f64()
    );
    println!("  results by status: {by_status:?}");
    println!("  errors by kind: {errors:?}");
    for (kind, mut times) in latencies {
        times.sort();
        println!(
            "  latency {:>8}: n={:>4} p50={:>6} ms p95={:>6} ms max={:>6} ms",
            kind.name(),
            times.len(),
            percentile(&times, 50.0).as_millis(),
            percentile(&times, 95.0).as_millis(),
            times.last().copied().unwrap_or_default().as_millis()
        );
    }
    for line in &unexpected {
        println!("  unexpected: {line}");
    }
    report.check(
        outcomes.len() == runs,
        format!("every run returned ({} of {runs})", outcomes.len()),
    );
    report.check(
        accepted == runs,
        format!("every result is what its kind must give ({accepted} of {runs})"),
    );
    report.check(
        errors.is_empty(),
        format!("no execution failed with an error ({errors:?})"),
    );

    // The host's memory settles back near where it started.
    drop(outcomes);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = vm_rss();
    println!(
        "  host RSS: before {} after {} peak (VmHWM) {}",
        mib(rss_before),
        mib(rss_after),
        mib(vm_hwm())
    );
    report.check(
        rss_after.saturating_sub(rss_before) < RSS_SETTLE_BOUND,
        format!(
            "host RSS back near its start (grew {} < {})",
            mib(rss_after.saturating_sub(rss_before)),
            mib(RSS_SETTLE_BOUND)
        ),
    );
}

/// Polls `left` until it is empty or `within` passed; gives what is left.
async fn settle<F, Fut>(within: Duration, mut left: F) -> Vec<String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let started = Instant::now();
    loop {
        let found = left().await;
        if found.is_empty() || started.elapsed() > within {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn soak_restricted(runs: usize, concurrency: usize) -> Report {
    let mut report = Report::default();
    println!("restricted:");
    let temp = tempfile::Builder::new()
        .prefix("rlmkit-soak-")
        .tempdir()
        .expect("a temporary directory");
    let executor = RestrictedExecutor::builder()
        .temp_dir(temp.path())
        .build()
        .expect("the restricted executor builds");
    soak(&executor, runs, concurrency, &mut report).await;
    drop(executor);

    let processes = settle(Duration::from_secs(10), || async {
        processes_of_uids(SANDBOX_UIDS)
    })
    .await;
    report.check(
        processes.is_empty(),
        format!(
            "processes of the sandbox uid range {}..{} left: {} {processes:?}",
            SANDBOX_UIDS.start,
            SANDBOX_UIDS.end,
            processes.len()
        ),
    );
    let path = temp.path().to_owned();
    let dirs = settle(Duration::from_secs(5), || async { entries_in(&path) }).await;
    report.check(
        dirs.is_empty(),
        format!(
            "temporary directories left in {}: {} {dirs:?}",
            temp.path().display(),
            dirs.len()
        ),
    );
    report
}

/// The containers labelled `rlmkit.sandbox` whose owner is this process, listed straight from the daemon.
async fn own_containers(docker: &bollard::Docker) -> Vec<String> {
    let filters = HashMap::from([(
        "label",
        vec![
            "rlmkit.sandbox".to_owned(),
            format!("rlmkit.sandbox.owner={}", std::process::id()),
        ],
    )]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    match docker.list_containers(Some(options)).await {
        Ok(containers) => containers
            .into_iter()
            .map(|c| {
                format!(
                    "{} {:?}",
                    c.id.unwrap_or_default(),
                    c.state.map(|s| s.to_string()).unwrap_or_default()
                )
            })
            .collect(),
        Err(error) => vec![format!("cannot list containers: {error}")],
    }
}

async fn soak_docker(runs: usize, concurrency: usize) -> Option<Report> {
    let required = std::env::var("RLMKIT_SANDBOX_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let built = DockerExecutor::builder()
        .label(SOAK_LABEL, &std::process::id().to_string())
        .build()
        .await;
    let executor = match built {
        Ok(executor) => executor,
        Err(error) if error.is_unavailable() && !required => {
            println!(
                "docker: skipped: {error} (set RLMKIT_SANDBOX_REQUIRE_DOCKER=1 to fail instead)"
            );
            return None;
        }
        Err(error) => {
            println!("docker:");
            let mut report = Report::default();
            report.check(false, format!("the Docker executor builds: {error}"));
            return Some(report);
        }
    };
    println!("docker:");
    let mut report = Report::default();
    soak(&executor, runs, concurrency, &mut report).await;
    drop(executor);

    let docker = bollard::Docker::connect_with_defaults().expect("a Docker client");
    let left = settle(Duration::from_secs(15), || own_containers(&docker)).await;
    report.check(
        left.is_empty(),
        format!(
            "containers labelled rlmkit.sandbox of this process left: {} {left:?}",
            left.len()
        ),
    );
    Some(report)
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`, which this harness-less target ignores.
    let runs = env_number("RLMKIT_SOAK_RUNS", 1000);
    let concurrency = env_number("RLMKIT_SOAK_CONCURRENCY", 8).max(1);
    let backends =
        std::env::var("RLMKIT_SOAK_BACKENDS").unwrap_or_else(|_| "restricted,docker".to_owned());
    println!(
        "soak: {runs} runs per backend at concurrency {concurrency}, mix 70% normal / 10% timeout / 10% oom / 10% flood"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut failures = Vec::new();
    runtime.block_on(async {
        if backends.split(',').any(|b| b.trim() == "restricted") {
            let report = soak_restricted(runs, concurrency).await;
            failures.extend(
                report
                    .failures
                    .into_iter()
                    .map(|f| format!("restricted: {f}")),
            );
        }
        if backends.split(',').any(|b| b.trim() == "docker") {
            if let Some(report) = soak_docker(runs, concurrency).await {
                failures.extend(report.failures.into_iter().map(|f| format!("docker: {f}")));
            }
        }
    });
    if failures.is_empty() {
        println!("soak: every check passed");
        ExitCode::SUCCESS
    } else {
        println!("soak: {} check(s) failed:", failures.len());
        for failure in &failures {
            println!("  {failure}");
        }
        ExitCode::FAILURE
    }
}
