//! The Docker executor's warm pool: pooled runs behave as cold ones, each
//! gets a fresh container, and nothing is left behind.
//!
//! Without a Docker daemon every test prints why and passes as skipped,
//! unless `RLMKIT_SANDBOX_REQUIRE_DOCKER=1`, which turns the skip into a
//! failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use sandbox_core::{
    Error, ExecutionRequest, ExecutionResult, Executor, IsolationReport, Limits, NetworkMode,
    Status, async_trait,
};
use sandbox_docker::{DockerExecutor, DockerExecutorBuilder, SandboxContainer};
use sandbox_tests::docker_support::usable;

/// The label each test puts on its containers, to find exactly its own.
const TEST_LABEL: &str = "rlmkit.test";

/// Waits until the pool has `ready` containers ready.
async fn until_ready(executor: &DockerExecutor, ready: usize) {
    let started = Instant::now();
    loop {
        let stats = executor.pool_stats();
        if stats.ready >= ready {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the pool did not fill: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pooled executor for the conformance suite that waits, before each
/// request, until a pooled container is ready, so the cases really run in
/// pooled containers (those with other limits, or run at once beyond the
/// pool's size, still run cold, as they would in use).
#[derive(Debug)]
struct Pooled(DockerExecutor);

#[async_trait]
impl Executor for Pooled {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn limits(&self) -> &Limits {
        self.0.limits()
    }

    fn isolation(&self) -> IsolationReport {
        self.0.isolation()
    }

    async fn execute(&self, request: ExecutionRequest) -> Result<ExecutionResult, Error> {
        let started = Instant::now();
        while self.0.pool_stats().ready == 0 && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.0.execute(request).await
    }
}

/// The conformance suite's maker: sync, so the async build runs on a
/// current-thread runtime of its own in a scoped thread (the pool lives
/// on, on the crate's background thread).
fn pooled() -> Option<Box<dyn Executor>> {
    sandbox_tests::docker_support::build_blocking(|| async {
        let executor = DockerExecutor::builder().pool_size(2).build().await?;
        until_ready(&executor, 2).await;
        Ok(executor)
    })
    .map(|executor| Box::new(Pooled(executor)) as Box<dyn Executor>)
}

sandbox_tests::conformance_suite!(pooled);

/// An executor whose containers carry `rlmkit.test=<test>`, with its pool full.
async fn executor_for(test: &str, builder: DockerExecutorBuilder) -> Option<DockerExecutor> {
    let executor = usable(builder.label(TEST_LABEL, test).build().await)?;
    until_ready(&executor, executor.pool_size()).await;
    Some(executor)
}

/// The containers of `test` created by this process.
async fn labelled(executor: &DockerExecutor, test: &str) -> Vec<SandboxContainer> {
    executor
        .containers()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.labels.get(TEST_LABEL).map(String::as_str) == Some(test))
        .filter(|c| c.owner_pid == Some(std::process::id()))
        .collect()
}

/// Polls until no container of `test` is left, failing after `within`.
async fn assert_none_left(executor: &DockerExecutor, test: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let left = labelled(executor, test).await;
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

/// Runs `request` in a pooled container (waiting for one to be ready) and
/// checks that it was pooled.
async fn run_pooled(executor: &DockerExecutor, request: ExecutionRequest) -> ExecutionResult {
    until_ready(executor, 1).await;
    let before = executor.pool_stats();
    let result = executor.execute(request).await.unwrap();
    let after = executor.pool_stats();
    assert_eq!(
        after.pooled_runs,
        before.pooled_runs + 1,
        "the run did not use the pool: {after:?}"
    );
    result
}

/// Runs `request` and checks that it ran cold.
async fn run_cold(executor: &DockerExecutor, request: ExecutionRequest) -> ExecutionResult {
    let before = executor.pool_stats();
    let result = executor.execute(request).await.unwrap();
    let after = executor.pool_stats();
    assert_eq!(
        after.cold_runs,
        before.cold_runs + 1,
        "the run did not run cold: {after:?}"
    );
    result
}

/// What a program sees of itself and its sandbox, as JSON: identity,
/// capabilities, environment, working directory, and which writes fail.
const PROBE: &str = r#"
import json, os, subprocess, sys
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
seen = {k: status[k].strip() for k in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")}
def attempt(name, action):
    try:
        action()
        seen[name] = "ok"
    except OSError as e:
        seen[name] = type(e).__name__
def write(path, mode="w"):
    with open(path, mode) as f:
        f.write("x")
attempt("tmp", lambda: write("/tmp/scratch.txt"))
attempt("root", lambda: write("/evil"))
attempt("etc", lambda: write("/etc/passwd", "a"))
attempt("code", lambda: write(__file__, "a"))
attempt("code_dir", lambda: write("/sandbox/.rlmkit/other.py"))
attempt("workdir", lambda: write("/sandbox/new.txt"))
attempt("input", lambda: write("data/in.txt", "a"))
attempt("input_dir", lambda: write("data/new.txt"))
attempt("chmod", lambda: os.chmod("data/in.txt", 0o666))
attempt("chmod_dir", lambda: os.chmod("data", 0o777))
attempt("unlink", lambda: os.unlink("data/in.txt"))
write("/tmp/run.sh")
os.chmod("/tmp/run.sh", 0o755)
attempt("exec_tmp", lambda: subprocess.run(["/tmp/run.sh"]))
for path in ("data/in.txt", "data", ".rlmkit", __file__, "/sandbox"):
    st = os.stat(path)
    seen["stat " + path] = f"{st.st_uid}:{st.st_gid}:{oct(st.st_mode & 0o7777)}"
seen["ls"] = sorted(os.listdir("/sandbox"))
seen["argv"] = sys.argv
seen["file"] = __file__
seen["cwd"] = os.getcwd()
seen["umask"] = oct(os.umask(0))
seen["env"] = {k: v for k, v in os.environ.items() if k != "HOSTNAME"}
seen["stdin"] = sys.stdin.read()
seen["input"] = open("data/in.txt").read()
seen["processes"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid())
print(json.dumps(seen, sort_keys=True))
"#;

fn probe_request() -> ExecutionRequest {
    ExecutionRequest::python(PROBE)
        .file("data/in.txt", "original")
        .env("GREETING", "hi")
        .stdin("some stdin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_run_sees_what_a_cold_run_sees() {
    let test = "pool-same";
    let Some(executor) = executor_for(test, DockerExecutor::builder().pool_size(1)).await else {
        return;
    };
    let pooled = run_pooled(&executor, probe_request()).await;
    assert!(pooled.success(), "{}", describe(&pooled));
    let cold = DockerExecutor::builder()
        .pool_size(0)
        .label(TEST_LABEL, test)
        .build()
        .await
        .unwrap();
    let cold = run_cold(&cold, probe_request()).await;
    assert!(cold.success(), "{}", describe(&cold));

    let parse = |result: &ExecutionResult| -> BTreeMap<String, serde_json::Value> {
        serde_json::from_str(&result.stdout_text()).unwrap()
    };
    let (mut pooled_seen, mut cold_seen) = (parse(&pooled), parse(&cold));
    // The probe works: writing succeeds where it is allowed, and the
    // identity is the one the cold container has always had.
    assert_eq!(cold_seen["tmp"], "ok");
    assert_eq!(cold_seen["Uid"], "1000\t1000\t1000\t1000");
    assert_eq!(cold_seen["CapBnd"], "0000000000000000");
    assert_eq!(cold_seen["NoNewPrivs"], "1");
    assert_eq!(cold_seen["stat data/in.txt"], "0:0:0o444");
    assert_eq!(cold_seen["stat data"], "0:0:0o555");
    assert_eq!(cold_seen["input"], "original");
    assert_eq!(cold_seen["stdin"], "some stdin");
    for denied in [
        "root",
        "etc",
        "code",
        "code_dir",
        "workdir",
        "input",
        "input_dir",
        "chmod",
        "chmod_dir",
        "unlink",
        "exec_tmp",
    ] {
        assert_ne!(cold_seen[denied], "ok", "{denied}: {cold_seen:?}");
    }
    // In the pooled container the launcher waits beside the program (as
    // another user) where the cold one has only docker-init: its pid is
    // the only difference.
    let processes = |seen: &mut BTreeMap<String, serde_json::Value>| {
        seen.remove("processes").unwrap().as_array().unwrap().len()
    };
    assert_eq!(processes(&mut cold_seen), 1, "docker-init");
    assert_eq!(
        processes(&mut pooled_seen),
        2,
        "docker-init and the launcher"
    );
    assert_eq!(pooled_seen, cold_seen);
    assert_eq!(pooled.isolation, executor.isolation());
    executor.shutdown().await.unwrap();
    assert_none_left(&executor, test, Duration::from_secs(10)).await;
}

/// The id of the container a program runs in, from its `/etc/hostname` mount.
const CONTAINER_ID: &str = r#"
import os
mount = [l for l in open("/proc/self/mountinfo") if " /etc/hostname " in l][0]
print(mount.split()[3].split("/")[-2])
print(sorted(os.listdir("/tmp")), sorted(os.listdir("/sandbox")))
open("/tmp/mine", "w").write("x")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pooled_execution_gets_a_fresh_container() {
    let test = "pool-fresh";
    let Some(executor) = executor_for(test, DockerExecutor::builder().pool_size(2)).await else {
        return;
    };
    let pooled: HashSet<String> = labelled(&executor, test)
        .await
        .into_iter()
        .filter(|c| c.labels.contains_key(sandbox_docker::LABEL_POOL))
        .map(|c| c.id)
        .collect();
    assert_eq!(pooled.len(), 2, "the pool holds two containers");

    let mut seen = HashSet::new();
    for i in 0..4 {
        let request = ExecutionRequest::python(CONTAINER_ID).file(format!("in{i}.txt"), "x");
        let result = run_pooled(&executor, request).await;
        assert!(result.success(), "{}", describe(&result));
        let stdout = result.stdout_text();
        let mut lines = stdout.lines();
        let id = lines.next().unwrap().to_owned();
        assert_eq!(
            lines.next().unwrap(),
            format!("[] ['.rlmkit', 'in{i}.txt']"),
            "a container was reused"
        );
        assert!(seen.insert(id.clone()), "container {id} ran twice");
        if i < 2 {
            assert!(
                pooled.contains(&id),
                "run {i} did not use a pooled container"
            );
        }
    }
    // Used containers are removed in the background: none of the four stays.
    let started = Instant::now();
    loop {
        let left: HashSet<String> = labelled(&executor, test)
            .await
            .into_iter()
            .map(|c| c.id)
            .collect();
        if left.is_disjoint(&seen) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    executor.shutdown().await.unwrap();
    assert_none_left(&executor, test, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_and_drop_leave_no_container() {
    let test = "pool-shutdown";
    let Some(executor) = executor_for(test, DockerExecutor::builder().pool_size(2)).await else {
        return;
    };
    let waiting = labelled(&executor, test).await;
    assert_eq!(waiting.len(), 2, "{waiting:#?}");
    assert!(waiting.iter().all(|c| c.state == "running"
        && c.labels.get(sandbox_docker::LABEL_POOL).map(String::as_str) == Some("1")
        && c.labels.get(sandbox_docker::LABEL).map(String::as_str) == Some("1")));

    // A clone shares the pool: dropping it removes nothing.
    drop(executor.clone());
    assert_eq!(labelled(&executor, test).await.len(), 2);

    let result = run_pooled(&executor, ExecutionRequest::python("print(6 * 7)")).await;
    assert_eq!(result.stdout_text(), "42\n");
    executor.shutdown().await.unwrap();
    // Removed by the time shutdown returns: the waiting containers and the used one.
    assert!(labelled(&executor, test).await.is_empty());
    // The executor still works, cold, and leaves nothing either.
    let result = run_cold(&executor, ExecutionRequest::python("print(7)")).await;
    assert_eq!(result.stdout_text(), "7\n");
    assert_eq!(executor.pool_stats().ready, 0);
    assert!(labelled(&executor, test).await.is_empty());

    // Dropping the last clone removes the pool before `drop` returns.
    let test = "pool-drop";
    let Some(dropped) = executor_for(test, DockerExecutor::builder().pool_size(2)).await else {
        return;
    };
    let result = run_pooled(&dropped, ExecutionRequest::python("print(1)")).await;
    assert!(result.success(), "{}", describe(&result));
    let clone = dropped.clone();
    drop(dropped);
    assert!(!labelled(&executor, test).await.is_empty());
    drop(clone);
    assert!(labelled(&executor, test).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_container_limits_run_cold_and_still_hold() {
    let test = "pool-limits";
    let Some(executor) = executor_for(test, DockerExecutor::builder().pool_size(1)).await else {
        return;
    };
    let allocate = "b = bytearray(256 * 1024 * 1024)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\nprint('allocated')";
    // The probe works: 256 MiB fit in the executor's 512 MiB, in a pooled container.
    let fits = run_pooled(&executor, ExecutionRequest::python(allocate)).await;
    assert_eq!(fits.stdout_text(), "allocated\n", "{}", describe(&fits));

    until_ready(&executor, 1).await;
    let tight = ExecutionRequest::python(allocate).limits(
        Limits::builder()
            .memory_bytes(64 << 20)
            .timeout(Duration::from_secs(20)),
    );
    let result = run_cold(&executor, tight).await;
    assert_eq!(result.status, Status::OomKilled, "{}", describe(&result));

    let bridge = ExecutionRequest::python(
        "import socket; print(sorted(n for _, n in socket.if_nameindex()))",
    )
    .limits(Limits::builder().network(NetworkMode::Bridge));
    let result = run_cold(&executor, bridge).await;
    assert!(
        result.stdout_text().contains("eth0"),
        "{}",
        describe(&result)
    );
    let result = run_pooled(
        &executor,
        ExecutionRequest::python(
            "import socket; print(sorted(n for _, n in socket.if_nameindex()))",
        ),
    )
    .await;
    assert_eq!(result.stdout_text(), "['lo']\n", "{}", describe(&result));

    let forks = "import os\nn = 0\ntry:\n    for _ in range(64):\n        if os.fork() == 0:\n            import time; time.sleep(5); os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)";
    let few = ExecutionRequest::python(forks)
        .limits(Limits::builder().pids(8).timeout(Duration::from_secs(20)));
    let result = run_cold(&executor, few).await;
    let forked: u32 = result.stdout_text().trim().parse().unwrap();
    assert!(forked < 8, "{}", describe(&result));

    let scratch = "open('/tmp/big', 'wb').write(b'x' * (4 << 20)); print('wrote')";
    let small = ExecutionRequest::python(scratch).limits(Limits::builder().scratch_bytes(1 << 20));
    let result = run_cold(&executor, small).await;
    assert!(!result.success(), "{}", describe(&result));

    // The timeout and the output cap are the host's: they change nothing
    // in the container, so such requests still run pooled, and hold.
    let limit = Duration::from_millis(1500);
    let slow = ExecutionRequest::python("import time\nprint('up', flush=True)\ntime.sleep(30)")
        .limits(Limits::builder().timeout(limit));
    let started = Instant::now();
    let result = run_pooled(&executor, slow).await;
    assert_eq!(result.status, Status::TimedOut, "{}", describe(&result));
    assert_eq!(result.stdout_text(), "up\n");
    assert!(result.duration >= limit);
    assert!(started.elapsed() < limit + Duration::from_secs(2));
    let flood = ExecutionRequest::python("while True: print('y' * 1000)").limits(
        Limits::builder()
            .output_bytes(10_000)
            .timeout(Duration::from_secs(20)),
    );
    let result = run_pooled(&executor, flood).await;
    assert_eq!(
        result.status,
        Status::OutputLimitExceeded,
        "{}",
        describe(&result)
    );
    assert_eq!(result.stdout.len(), 10_000);
    executor.shutdown().await.unwrap();
    assert_none_left(&executor, test, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pools_own_memory_limit_gives_oom_killed() {
    let test = "pool-oom";
    let limits = Limits::builder().memory_bytes(64 << 20).build().unwrap();
    let builder = DockerExecutor::builder().pool_size(1).limits(limits);
    let Some(executor) = executor_for(test, builder).await else {
        return;
    };
    let code = "b = bytearray(SIZE * 1024 * 1024)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\nprint('allocated')";
    // The probe works: 16 MiB fit in 64 MiB beside the launcher.
    let fits = run_pooled(
        &executor,
        ExecutionRequest::python(code.replace("SIZE", "16")),
    )
    .await;
    assert_eq!(fits.stdout_text(), "allocated\n", "{}", describe(&fits));
    let result = run_pooled(
        &executor,
        ExecutionRequest::python(code.replace("SIZE", "256")),
    )
    .await;
    assert_eq!(result.status, Status::OomKilled, "{}", describe(&result));
    assert_eq!(result.shell_exit_code(), 137);
    assert!(!result.stdout_text().contains("allocated"));
    executor.shutdown().await.unwrap();
    assert_none_left(&executor, test, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_signals_and_forged_trailers_read_as_in_a_cold_container() {
    let test = "pool-ends";
    let Some(executor) = executor_for(test, DockerExecutor::builder().pool_size(1)).await else {
        return;
    };
    let cases = [
        (
            "import sys; print('bye'); sys.exit(3)",
            Status::Exited,
            Some(3),
            None,
        ),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
            Status::Signaled,
            None,
            Some(15),
        ),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
            Status::Signaled,
            None,
            Some(9),
        ),
        ("import os; os.abort()", Status::Signaled, None, Some(6)),
    ];
    for (code, status, exit_code, signal) in cases {
        let result = run_pooled(&executor, ExecutionRequest::python(code)).await;
        assert_eq!(
            (result.status, result.exit_code, result.signal),
            (status, exit_code, signal),
            "{code}: {}",
            describe(&result)
        );
    }

    // A program that writes something like the launcher's trailer (it
    // cannot know the request's nonce) does not end its run early.
    let forged = r#"
import sys, time
for stream in (sys.stdout, sys.stderr):
    stream.write("\0rlmkit:end:00000000000000000000000000000000:exit:0\n")
    stream.write("\0rlmkit:exec\n\0rlmkit:end:")
    stream.flush()
time.sleep(0.5)
print("still here")
sys.exit(4)
"#;
    let result = run_pooled(&executor, ExecutionRequest::python(forged)).await;
    assert_eq!(result.exit_code, Some(4), "{}", describe(&result));
    assert!(
        result
            .stdout_text()
            .ends_with("\0rlmkit:exec\n\0rlmkit:end:still here\n")
    );
    assert!(result.stderr_text().starts_with("\0rlmkit:end:0000"));

    // A missing command reads as a shell's "not found".
    let result = run_pooled(
        &executor,
        ExecutionRequest::command(["definitely-not-a-command-4711"]),
    )
    .await;
    assert_eq!(result.exit_code, Some(127), "{}", describe(&result));
    assert!(
        result
            .stderr_text()
            .contains("definitely-not-a-command-4711")
    );

    // Large input files and stdin travel through the launcher intact.
    let blob: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
    let code = "import hashlib, sys\nprint(hashlib.sha256(open('blob.bin', 'rb').read()).hexdigest())\nprint(len(sys.stdin.buffer.read()))";
    let request = ExecutionRequest::python(code)
        .file("blob.bin", blob.clone())
        .stdin(vec![7u8; 3 << 20]);
    let result = run_pooled(&executor, request).await;
    let expected = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&blob)?;
            child.wait_with_output()
        })
        .unwrap();
    let digest = String::from_utf8_lossy(&expected.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        result.stdout_text(),
        format!("{digest}\n{}\n", 3 << 20),
        "{}",
        describe(&result)
    );
    executor.shutdown().await.unwrap();
    assert_none_left(&executor, test, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_pooled_run_midway_leaves_no_container() {
    let test = "pool-abort";
    let Some(executor) = executor_for(test, DockerExecutor::builder().pool_size(2)).await else {
        return;
    };
    let request = ExecutionRequest::python("import time\nprint('up', flush=True)\ntime.sleep(60)");
    for delay_ms in [0, 5, 50, 300] {
        until_ready(&executor, 1).await;
        let run = executor.execute(request.clone());
        let outcome = tokio::time::timeout(Duration::from_millis(delay_ms), run).await;
        assert!(outcome.is_err(), "the run ended within {delay_ms} ms");
    }
    assert!(executor.pool_stats().pooled_runs >= 4);
    executor.shutdown().await.unwrap();
    assert_none_left(&executor, test, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_at_once_beyond_the_pool_fall_back_to_cold() {
    let test = "pool-burst";
    let Some(executor) = executor_for(test, DockerExecutor::builder().pool_size(2)).await else {
        return;
    };
    let runs = (0..6).map(|i| executor.execute(ExecutionRequest::python(format!("print({i})"))));
    let results = futures_util::future::join_all(runs).await;
    for (i, result) in results.into_iter().enumerate() {
        let result = result.unwrap();
        assert_eq!(
            result.stdout_text(),
            format!("{i}\n"),
            "{}",
            describe(&result)
        );
    }
    let stats = executor.pool_stats();
    assert_eq!((stats.pooled_runs, stats.cold_runs), (2, 4), "{stats:?}");
    executor.shutdown().await.unwrap();
    assert_none_left(&executor, test, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_size_of_zero_starts_nothing() {
    let test = "pool-zero";
    let Some(executor) = executor_for(test, DockerExecutor::builder().pool_size(0)).await else {
        return;
    };
    assert_eq!(executor.pool_size(), 0);
    assert!(labelled(&executor, test).await.is_empty());
    let result = run_cold(&executor, ExecutionRequest::python("print(1)")).await;
    assert!(result.success(), "{}", describe(&result));
    assert!(labelled(&executor, test).await.is_empty());
}

/// Set in the helper process of [`a_dead_owner_leaves_its_pool_to_gc`].
const HELPER_VAR: &str = "RLMKIT_POOL_TEST_HELPER";

/// Not a test: the process that [`a_dead_owner_leaves_its_pool_to_gc`]
/// starts and kills. It fills a pool and waits to die.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a helper process of a_dead_owner_leaves_its_pool_to_gc"]
async fn pool_holder_helper() {
    let Ok(test) = std::env::var(HELPER_VAR) else {
        return;
    };
    let executor = DockerExecutor::builder()
        .pool_size(2)
        .label(TEST_LABEL, &test)
        .build()
        .await
        .unwrap();
    until_ready(&executor, 2).await;
    println!("pool ready");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owner_leaves_its_pool_to_gc() {
    use std::io::BufRead;

    let test = "pool-dead-owner";
    let Some(executor) = executor_for(test, DockerExecutor::builder().pool_size(0)).await else {
        return;
    };
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "pool_holder_helper", "--ignored", "--nocapture"])
        .env(HELPER_VAR, test)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let helper_pid = helper.id();
    let mut lines = std::io::BufReader::new(helper.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|line| line.unwrap().contains("pool ready")),
        "the helper did not fill its pool"
    );
    let theirs = |all: Vec<SandboxContainer>| -> Vec<SandboxContainer> {
        all.into_iter()
            .filter(|c| c.labels.get(TEST_LABEL).map(String::as_str) == Some(test))
            .filter(|c| c.owner_pid == Some(helper_pid))
            .collect()
    };
    let before = theirs(executor.containers().await.unwrap());
    assert_eq!(before.len(), 2, "{before:#?}");
    helper.kill().unwrap();
    helper.wait().unwrap();

    // With its owner gone, each launcher sees its stdin end and exits: the
    // containers stop instead of waiting forever...
    let started = Instant::now();
    loop {
        let left = theirs(executor.containers().await.unwrap());
        if left.iter().all(|c| c.state == "exited") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{left:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... and gc removes them.
    let removed: HashSet<String> = executor
        .gc()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    for container in &before {
        assert!(removed.contains(&container.id), "{removed:?}");
    }
    assert!(theirs(executor.containers().await.unwrap()).is_empty());
}
