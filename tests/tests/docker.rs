//! The conformance suite, and Docker-only checks, on the Docker backend.
//!
//! Without a Docker daemon every test prints why and passes as skipped,
//! unless `RLMKIT_SANDBOX_REQUIRE_DOCKER=1`, which turns the skip into a
//! failure. Each protection test first shows that its probe works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sandbox_core::{
    Error, ExecutionRequest, ExecutionResult, Executor, Limits, NetworkMode, Protection,
    ProtectionState, Status,
};
use sandbox_docker::{DockerExecutor, DockerExecutorBuilder, SandboxContainer};
use sandbox_tests::docker_support::usable;
use testcontainers::bollard;
use tokio::io::AsyncWriteExt;

/// The label each test puts on its containers, to find exactly its own.
const TEST_LABEL: &str = "rlmkit.test";

/// The conformance suite's maker: sync, so the async build runs on a
/// current-thread runtime of its own in a scoped thread.
fn docker() -> Option<Box<dyn Executor>> {
    sandbox_tests::docker_support::build_blocking(|| DockerExecutor::builder().build())
        .map(|executor| Box::new(executor) as Box<dyn Executor>)
}

sandbox_tests::conformance_suite!(docker);

/// An executor whose containers carry `rlmkit.test=<test>`.
/// Without a warm pool: these tests follow each execution's own container.
async fn executor_for(test: &str, builder: DockerExecutorBuilder) -> Option<DockerExecutor> {
    usable(builder.pool_size(0).label(TEST_LABEL, test).build().await)
}

/// The containers of `test` created by this process (leftovers of an
/// earlier, failed run belong to a dead process and are `gc`'s business).
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

/// Polls until a container of `test` runs, proving the run really started.
async fn wait_until_running(executor: &DockerExecutor, test: &str) -> SandboxContainer {
    let started = Instant::now();
    loop {
        let found = labelled(executor, test).await;
        if let Some(running) = found.into_iter().find(|c| c.state == "running") {
            return running;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no running container for {test}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(executor: &DockerExecutor, request: ExecutionRequest) -> ExecutionResult {
    executor.execute(request).await.unwrap()
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

fn bollard_client() -> bollard::Docker {
    bollard::Docker::connect_with_defaults().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_runs_as_uid_1000_without_capabilities() {
    let Some(executor) = executor_for("uid", DockerExecutor::builder()).await else {
        return;
    };
    let code = r#"
import os
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
print(os.getuid(), os.geteuid(), os.getgid(), status["CapEff"].strip(), status["NoNewPrivs"].strip())
"#;
    let result = run(&executor, ExecutionRequest::python(code)).await;
    assert!(result.success(), "{}", describe(&result));
    assert_eq!(result.stdout_text(), "1000 1000 1000 0000000000000000 1\n");
    let shell = run(&executor, ExecutionRequest::command(["id", "-u"])).await;
    assert_eq!(shell.stdout_text(), "1000\n", "{}", describe(&shell));
}

/// The IPv4 gateway of Docker's default bridge: this host's own address on
/// it (the IPAM gateway, else the first address of the bridge's subnet).
async fn bridge_gateway() -> Ipv4Addr {
    let network = bollard_client()
        .inspect_network("bridge", None)
        .await
        .unwrap();
    let configs = network
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default();
    let gateway = configs
        .iter()
        .find_map(|c| c.gateway.as_deref()?.parse().ok());
    let first_host = || {
        configs.iter().find_map(|c| {
            let (address, _) = c.subnet.as_deref()?.split_once('/')?;
            let network: Ipv4Addr = address.parse().ok()?;
            Some(Ipv4Addr::from(u32::from(network) + 1))
        })
    };
    gateway
        .or_else(first_host)
        .expect("the bridge network has an IPv4 subnet")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_none_cannot_reach_what_bridge_reaches() {
    let Some(executor) = executor_for("network", DockerExecutor::builder()).await else {
        return;
    };
    // A listener of this test on the host's own bridge address: the only
    // thing a container could reach, and nothing outside this machine.
    let gateway = bridge_gateway().await;
    let Ok(listener) = tokio::net::TcpListener::bind((gateway, 0)).await else {
        eprintln!("skipping: {gateway} is not an address of this host (a remote daemon?)");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let server = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let _ = socket.write_all(b"pong\n").await;
            }
        })
    };
    let code = format!(
        r#"
import socket
try:
    s = socket.create_connection(("{gateway}", {port}), timeout=3)
    print("reached", s.recv(16).decode().strip())
except OSError as e:
    print("blocked", type(e).__name__)
print(sorted(name for _, name in socket.if_nameindex()))
"#
    );

    // The probe works: on the bridge the program reaches the listener.
    let bridge = Limits::builder().network(NetworkMode::Bridge);
    let reached = run(&executor, ExecutionRequest::python(&code).limits(bridge)).await;
    assert!(
        reached.stdout_text().starts_with("reached pong\n"),
        "{}",
        describe(&reached)
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(
        reached.isolation.state(Protection::Network),
        Some(ProtectionState::NotEnforced)
    );

    // With the default network mode, nothing is reachable: only loopback exists.
    let blocked = run(&executor, ExecutionRequest::python(&code)).await;
    assert!(blocked.success(), "{}", describe(&blocked));
    let stdout = blocked.stdout_text();
    assert!(
        stdout.starts_with("blocked OSError\n"),
        "{}",
        describe(&blocked)
    );
    assert!(stdout.ends_with("['lo']\n"), "{}", describe(&blocked));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the sandbox reached the host"
    );
    // No IP network, and the seccomp profile closes AF_VSOCK (tests/src/adversarial.rs).
    let network = blocked.isolation.get(Protection::Network).unwrap();
    assert_eq!(network.state, ProtectionState::Enforced);
    assert!(network.detail.contains("AF_VSOCK"), "{}", network.detail);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_code_and_inputs_are_read_only_and_tmp_is_scratch() {
    let Some(executor) = executor_for("readonly", DockerExecutor::builder()).await else {
        return;
    };
    let code = r#"
import json, os, subprocess
results = {}
def attempt(name, action):
    try:
        action()
        results[name] = "ok"
    except OSError as e:
        results[name] = type(e).__name__
def write(path, mode="w"):
    with open(path, mode) as f:
        f.write("x")
attempt("tmp", lambda: write("/tmp/scratch.txt"))
attempt("root", lambda: write("/evil"))
attempt("etc", lambda: write("/etc/passwd", "a"))
attempt("usr", lambda: write("/usr/bin/evil"))
attempt("code", lambda: write(__file__, "a"))
attempt("code_dir", lambda: write("/sandbox/.rlmkit/other.py"))
attempt("workdir", lambda: write("/sandbox/new.txt"))
attempt("input", lambda: write("data/in.txt", "a"))
attempt("input_dir", lambda: write("data/new.txt"))
attempt("chmod", lambda: os.chmod("data/in.txt", 0o666))
attempt("unlink", lambda: os.unlink("data/in.txt"))
write("/tmp/run.sh")
os.chmod("/tmp/run.sh", 0o755)
attempt("exec_tmp", lambda: subprocess.run(["/tmp/run.sh"]))
st = os.stat("data/in.txt")
results["input_owner_mode"] = f"{st.st_uid}:{oct(st.st_mode & 0o777)}"
st = os.stat(__file__)
results["code_owner_mode"] = f"{st.st_uid}:{oct(st.st_mode & 0o777)}"
results["cwd"] = os.getcwd()
results["input"] = open("data/in.txt").read()
print(json.dumps(results, sort_keys=True))
"#;
    let request = ExecutionRequest::python(code).file("data/in.txt", "original");
    let result = run(&executor, request).await;
    assert!(result.success(), "{}", describe(&result));
    let results: HashMap<String, String> = serde_json::from_str(&result.stdout_text()).unwrap();
    // The probe works: writing itself succeeds where it is allowed.
    assert_eq!(results["tmp"], "ok", "{results:?}");
    for denied in [
        "root",
        "etc",
        "usr",
        "code",
        "code_dir",
        "workdir",
        "input",
        "input_dir",
        "chmod",
        "unlink",
        "exec_tmp",
    ] {
        assert_ne!(results[denied], "ok", "{denied} was allowed: {results:?}");
    }
    assert_eq!(results["input_owner_mode"], "0:0o444");
    assert_eq!(results["code_owner_mode"], "0:0o444");
    assert_eq!(results["cwd"], "/sandbox");
    assert_eq!(results["input"], "original");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_space_is_capped() {
    let Some(executor) = executor_for("scratch", DockerExecutor::builder()).await else {
        return;
    };
    let code = "import os\nwith open('/tmp/big', 'wb') as f:\n    for _ in range(SIZE):\n        f.write(b'x' * 1048576)\nprint(os.path.getsize('/tmp/big'))";
    let limits = || Limits::builder().scratch_bytes(8 << 20);
    // The probe works: 4 MiB fit in 8 MiB.
    let fits = run(
        &executor,
        ExecutionRequest::python(code.replace("SIZE", "4")).limits(limits()),
    )
    .await;
    assert_eq!(fits.stdout_text(), "4194304\n", "{}", describe(&fits));
    let overflows = run(
        &executor,
        ExecutionRequest::python(code.replace("SIZE", "16")).limits(limits()),
    )
    .await;
    assert!(!overflows.success(), "{}", describe(&overflows));
    let stderr = overflows.stderr_text();
    assert!(
        stderr.contains("No space left")
            || stderr.contains("File too large")
            || overflows.status == Status::Signaled,
        "{}",
        describe(&overflows)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_gives_oom_killed() {
    let Some(executor) = executor_for("oom", DockerExecutor::builder()).await else {
        return;
    };
    let code = "b = bytearray(SIZE * 1024 * 1024)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\nprint('allocated')";
    // The probe works: 32 MiB fit in 256 MiB.
    let roomy = Limits::builder().memory_bytes(256 << 20);
    let fits = run(
        &executor,
        ExecutionRequest::python(code.replace("SIZE", "32")).limits(roomy),
    )
    .await;
    assert_eq!(fits.stdout_text(), "allocated\n", "{}", describe(&fits));

    let tight = Limits::builder()
        .memory_bytes(64 << 20)
        .timeout(Duration::from_secs(20));
    let result = run(
        &executor,
        ExecutionRequest::python(code.replace("SIZE", "256")).limits(tight),
    )
    .await;
    assert_eq!(result.status, Status::OomKilled, "{}", describe(&result));
    assert_eq!(result.exit_code, None);
    assert!(!result.stdout_text().contains("allocated"));
    assert_eq!(result.shell_exit_code(), 137);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_meets_the_pids_limit() {
    let Some(executor) = executor_for("pids", DockerExecutor::builder()).await else {
        return;
    };
    let code = r#"
import os, time
started = failed = 0
for _ in range(FORKS):
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    started += 1
print(started, failed, flush=True)
"#;
    let counts = |result: &ExecutionResult| -> (u32, u32) {
        let text = result.stdout_text();
        let mut numbers = text.split_whitespace().map(|n| n.parse::<u32>().unwrap());
        (numbers.next().unwrap(), numbers.next().unwrap())
    };
    // The probe works: 30 children start under a limit of 64.
    let roomy = Limits::builder().pids(64);
    let fits = run(
        &executor,
        ExecutionRequest::python(code.replace("FORKS", "30")).limits(roomy),
    )
    .await;
    assert_eq!(counts(&fits), (30, 0), "{}", describe(&fits));

    let started = Instant::now();
    let tight = Limits::builder().pids(16).timeout(Duration::from_secs(20));
    let result = run(
        &executor,
        ExecutionRequest::python(code.replace("FORKS", "200")).limits(tight),
    )
    .await;
    assert!(result.success(), "{}", describe(&result));
    let (forked, refused) = counts(&result);
    assert!(forked < 16, "{forked} children under a limit of 16");
    assert!(refused > 0, "no fork was refused: {}", describe(&result));
    // The sleeping children died with the container instead of holding the run open.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // A shell fork bomb ends (its shell gives up when a fork fails, or the
    // timeout strikes) and takes every process with its container.
    let bomb = ExecutionRequest::shell("bomb() { bomb | bomb & }; bomb; sleep 30")
        .limits(Limits::builder().pids(16).timeout(Duration::from_secs(3)));
    let started = Instant::now();
    let result = run(&executor, bomb).await;
    let contained = match result.status {
        Status::TimedOut => true,
        Status::Exited => result.exit_code != Some(0) && result.stderr_text().contains("fork"),
        _ => false,
    };
    assert!(contained, "{}", describe(&result));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_none_left(&executor, "pids", Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_leaves_no_container() {
    let Some(executor) = executor_for("timeout", DockerExecutor::builder()).await else {
        return;
    };
    let request = ExecutionRequest::python("print('spinning', flush=True)\nwhile True: pass")
        .limits(Limits::builder().timeout(Duration::from_secs(1)));
    let result = run(&executor, request).await;
    assert_eq!(result.status, Status::TimedOut, "{}", describe(&result));
    assert_eq!(result.stdout_text(), "spinning\n");
    assert_eq!(result.signal, Some(9));
    // Removed before execute returned: nothing to wait for.
    assert!(labelled(&executor, "timeout").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_future_mid_run_leaves_no_container() {
    let test = "drop";
    let Some(executor) = executor_for(test, DockerExecutor::builder()).await else {
        return;
    };
    let executor = Arc::new(executor);
    let request = ExecutionRequest::python("import time\nprint('up', flush=True)\ntime.sleep(60)");

    // Dropped while running: the container is seen running first.
    let task = {
        let (executor, request) = (executor.clone(), request.clone());
        tokio::spawn(async move { executor.execute(request).await })
    };
    wait_until_running(&executor, test).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_none_left(&executor, test, Duration::from_secs(10)).await;

    // Dropped at every stage: creating, copying, attaching, starting.
    for delay_ms in [0, 5, 20, 50, 100, 200] {
        let run = executor.execute(request.clone());
        let outcome = tokio::time::timeout(Duration::from_millis(delay_ms), run).await;
        assert!(outcome.is_err(), "the run ended within {delay_ms} ms");
    }
    assert_none_left(&executor, test, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_callers_task_leaves_no_container() {
    let test = "panic";
    let Some(executor) = executor_for(test, DockerExecutor::builder()).await else {
        return;
    };
    let executor = Arc::new(executor);
    let task = {
        let executor = executor.clone();
        tokio::spawn(async move {
            let run = executor.execute(ExecutionRequest::python("import time; time.sleep(60)"));
            tokio::pin!(run);
            loop {
                tokio::select! {
                    _ = &mut run => panic!("the run should not end by itself"),
                    () = tokio::time::sleep(Duration::from_millis(50)) => {
                        if !labelled(&executor, "panic").await.is_empty() {
                            panic!("the caller panics mid-run");
                        }
                    }
                }
            }
        })
    };
    assert!(task.await.unwrap_err().is_panic());
    assert_none_left(&executor, test, Duration::from_secs(10)).await;
}

/// The caller's runtime shuts down with the run in flight (as when a
/// `#[tokio::test]` panics): the container is still removed.
#[test]
fn a_runtime_shutting_down_mid_run_leaves_no_container() {
    let test = "shutdown";
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let doomed = runtime();
    let Some(executor) = doomed.block_on(executor_for(test, DockerExecutor::builder())) else {
        return;
    };
    let run = doomed.spawn({
        let executor = executor.clone();
        async move {
            let request = ExecutionRequest::python("import time; time.sleep(60)");
            executor.execute(request).await
        }
    });
    doomed.block_on(wait_until_running(&executor, test));
    drop(doomed);
    drop(run);
    runtime().block_on(assert_none_left(&executor, test, Duration::from_secs(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_executions_at_once_each_get_a_fresh_container() {
    let test = "ten";
    let Some(executor) = executor_for(test, DockerExecutor::builder()).await else {
        return;
    };
    let code = "import os, time\nprint(sorted(os.listdir('/tmp')))\nopen('/tmp/mine', 'w').write('x')\ntime.sleep(0.5)";
    let runs = (0..10).map(|_| executor.execute(ExecutionRequest::python(code)));
    let started = Instant::now();
    let results = futures_util::future::join_all(runs).await;
    for result in results {
        let result = result.unwrap();
        assert!(result.success(), "{}", describe(&result));
        assert_eq!(result.stdout_text(), "[]\n", "a container was shared");
    }
    eprintln!("ten executions at once took {:?}", started.elapsed());
    assert!(labelled(&executor, test).await.is_empty());
}

/// A pid that no process has: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    pid
}

async fn create_leftover(docker: &bollard::Docker, owner: u32) -> String {
    use bollard::models::{ContainerCreateBody, HostConfig};
    let labels = HashMap::from([
        (sandbox_docker::LABEL.to_owned(), "1".to_owned()),
        (sandbox_docker::LABEL_OWNER.to_owned(), owner.to_string()),
        (TEST_LABEL.to_owned(), "gc".to_owned()),
    ]);
    let body = ContainerCreateBody {
        image: Some(sandbox_docker::DEFAULT_IMAGE.to_owned()),
        cmd: Some(vec!["sleep".to_owned(), "60".to_owned()]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_owned()),
            init: Some(true),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let created = docker.create_container(None, body).await.unwrap();
    docker.start_container(&created.id, None).await.unwrap();
    created.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_containers_whose_owner_is_gone() {
    let Some(executor) = executor_for("gc", DockerExecutor::builder()).await else {
        return;
    };
    let docker = bollard_client();
    let orphan = create_leftover(&docker, dead_pid()).await;
    let owned = create_leftover(&docker, std::process::id()).await;
    let ids = |containers: Vec<SandboxContainer>| -> Vec<String> {
        containers.into_iter().map(|c| c.id).collect()
    };
    // The probe works: both are listed as sandboxes, with their owners.
    let before = ids(executor.containers().await.unwrap());

    let removed = sandbox_docker::gc().await;
    let after = ids(executor.containers().await.unwrap());
    let again = executor.gc().await;
    let remove = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    for id in [&orphan, &owned] {
        let _ = docker.remove_container(id, Some(remove.clone())).await;
    }

    assert!(
        before.contains(&orphan) && before.contains(&owned),
        "{before:?}"
    );
    let removed = ids(removed.unwrap());
    assert!(
        removed.contains(&orphan),
        "the orphan was not removed: {removed:?}"
    );
    assert!(
        !removed.contains(&owned),
        "a live owner's container was removed"
    );
    assert!(
        !after.contains(&orphan) && after.contains(&owned),
        "{after:?}"
    );
    assert!(ids(again.unwrap()).is_empty(), "a second gc found more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_runtime_is_a_clear_error_not_unavailability() {
    if executor_for("runtime", DockerExecutor::builder())
        .await
        .is_none()
    {
        return;
    }
    let error = DockerExecutor::builder()
        .runtime("no-such-runtime-4711")
        .build()
        .await
        .unwrap_err();
    assert!(!error.is_unavailable(), "{error:?}");
    assert!(
        matches!(error, Error::ProtectionUnavailable { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("no-such-runtime-4711") && message.contains("daemon.json"),
        "{message}"
    );
    assert!(
        message.contains("runc"),
        "the known runtimes are listed: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_without_auto_build_names_the_build_command() {
    if executor_for("image", DockerExecutor::builder())
        .await
        .is_none()
    {
        return;
    }
    let error = DockerExecutor::builder()
        .image("rlmkit-sandbox:no-such-tag-4711")
        .auto_build(false)
        .build()
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("docker/build-image.sh"), "{message}");
    assert!(
        message.contains("rlmkit-sandbox:no-such-tag-4711"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_of_another_name_is_a_configuration_error_even_for_auto() {
    if executor_for("image", DockerExecutor::builder())
        .await
        .is_none()
    {
        return;
    }
    let error = DockerExecutor::builder()
        .image("no-such-image-4711:1")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Configuration { .. }), "{error:?}");
    assert!(
        !error.is_unavailable(),
        "a wrong image must not read as Docker being absent"
    );
    assert!(
        error.to_string().contains("no-such-image-4711:1"),
        "{error}"
    );
    let images = bollard_client()
        .list_images(None::<bollard::query_parameters::ListImagesOptions>)
        .await
        .unwrap();
    assert!(
        images
            .iter()
            .all(|i| !i.repo_tags.iter().any(|t| t.contains("no-such-image-4711"))),
        "nothing may be built under a name the caller chose"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_built_through_the_api() {
    let Some(executor) = executor_for("build", DockerExecutor::builder()).await else {
        return;
    };
    let tag = format!("rlmkit-sandbox:build-test-{}", std::process::id());
    let docker = bollard_client();
    let mut lines = Vec::new();
    sandbox_docker::build_image(&tag, |line| lines.push(line.to_owned()))
        .await
        .unwrap();
    assert!(lines.iter().any(|l| l.contains("Step")), "{lines:#?}");
    let built = DockerExecutor::builder()
        .image(&tag)
        .auto_build(false)
        .label(TEST_LABEL, "build")
        .pool_size(0)
        .build()
        .await
        .unwrap();
    let result = run(
        &built,
        ExecutionRequest::python("import numpy as np; print(np.array([1, 2, 3, 4, 5]).mean())"),
    )
    .await;
    assert_eq!(result.stdout_text(), "3.0\n", "{}", describe(&result));
    docker
        .remove_image(
            &tag,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
        .unwrap();

    // With auto_build (the default), a missing image is built by `build`.
    let rebuilt = DockerExecutor::builder()
        .image(&tag)
        .pool_size(0)
        .build()
        .await
        .unwrap();
    assert_eq!(rebuilt.image(), tag);
    docker
        .remove_image(
            &tag,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
        .unwrap();
    assert_none_left(&executor, "build", Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_or_silent_daemon_is_unavailable_quickly() {
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = DockerExecutor::builder()
        .host(&format!("tcp://127.0.0.1:{port}"))
        .build()
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(error.to_string().contains("start it"), "{error}");

    // A daemon that accepts but never answers: unavailable after the ping timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("tcp://{}", silent.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let error = DockerExecutor::builder()
        .host(&address)
        .build()
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    holder.abort();

    let error = DockerExecutor::builder()
        .host("unix:///nonexistent/docker.sock")
        .build()
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");

    // A misconfigured address is not "unavailable": a selector must not fall back.
    let error = DockerExecutor::builder()
        .host("ftp://example.invalid")
        .build()
        .await
        .unwrap_err();
    assert!(!error.is_unavailable(), "{error:?}");
}

/// The local daemon's socket, when the tests talk to one.
fn local_socket() -> Option<String> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => host.strip_prefix("unix://").map(str::to_owned),
        _ => Some("/var/run/docker.sock".to_owned()),
    }
}

/// A TCP front for the daemon's socket that can be cut: live connections
/// drop and new ones are refused, as when the daemon goes away.
struct Proxy {
    address: String,
    cut: tokio::sync::watch::Sender<bool>,
}

async fn proxy(socket: String) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("tcp://{}", listener.local_addr().unwrap());
    let (cut, cut_seen) = tokio::sync::watch::channel(false);
    let mut stop = cut_seen.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut tcp, _)) = accepted else { return };
                    let socket = socket.clone();
                    let mut stop = cut_seen.clone();
                    tokio::spawn(async move {
                        let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix) => {}
                            _ = stop.changed() => {}
                        }
                    });
                }
                _ = stop.changed() => return,
            }
        }
    });
    Proxy { address, cut }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_going_away_mid_run_is_an_error() {
    let test = "daemon-gone";
    let Some(direct) = executor_for(test, DockerExecutor::builder()).await else {
        return;
    };
    let Some(socket) = local_socket() else {
        eprintln!("skipping: DOCKER_HOST is not a local socket this test can stand in front of");
        return;
    };
    let proxy = proxy(socket).await;
    let executor = DockerExecutor::builder()
        .host(&proxy.address)
        .pool_size(0)
        .label(TEST_LABEL, test)
        .build()
        .await
        .unwrap();
    // The probe works, and a remote-style daemon (tcp://, no shared
    // filesystem) gets the code, the input files and stdin through the API.
    let request = ExecutionRequest::python(
        "import sys; print('via tcp', open('data/in.txt').read(), sys.stdin.read())",
    )
    .file("data/in.txt", "file")
    .stdin("stdin");
    let result = run(&executor, request).await;
    assert_eq!(
        result.stdout_text(),
        "via tcp file stdin\n",
        "{}",
        describe(&result)
    );

    let task = {
        let executor = executor.clone();
        tokio::spawn(async move {
            executor
                .execute(ExecutionRequest::python("import time; time.sleep(30)"))
                .await
        })
    };
    let container = wait_until_running(&direct, test).await;
    proxy.cut.send(true).unwrap();
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the run must end when the daemon goes away, not hang")
        .expect("no panic");
    let error = outcome.unwrap_err();
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    assert!(error.to_string().contains("Docker daemon"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Its container could not be removed through the lost connection; the
    // daemon still runs here, so clean up directly.
    assert!(
        labelled(&direct, test)
            .await
            .iter()
            .any(|c| c.id == container.id)
    );
    for left in labelled(&direct, test).await {
        let remove = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let _ = bollard_client()
            .remove_container(&left.id, Some(remove))
            .await;
    }
    assert_none_left(&direct, test, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_isolation_report_lists_every_protection() {
    let Some(executor) = executor_for("report", DockerExecutor::builder()).await else {
        return;
    };
    let report = executor.isolation();
    assert_eq!(report.backend, "docker");
    for protection in [
        Protection::Timeout,
        Protection::Memory,
        Protection::Cpu,
        Protection::Processes,
        Protection::Output,
        Protection::Scratch,
        Protection::Network,
        Protection::Filesystem,
        Protection::User,
        Protection::Environment,
        Protection::ProcessGroup,
        Protection::Syscalls,
        Protection::Cleanup,
    ] {
        assert!(
            report.get(protection).is_some(),
            "{protection:?} missing:\n{report}"
        );
    }
    // No IP network, and AF_VSOCK closed by the seccomp profile.
    for enforced in [
        Protection::Memory,
        Protection::Network,
        Protection::Filesystem,
        Protection::User,
    ] {
        assert!(report.is_enforced(enforced), "{enforced:?}:\n{report}");
    }
    // The seccomp claim matches the daemon: this one lists seccomp.
    let info = bollard_client().info().await.unwrap();
    let seccomp = info
        .security_options
        .unwrap_or_default()
        .iter()
        .any(|o| o.contains("seccomp"));
    assert_eq!(
        report.is_enforced(Protection::Syscalls),
        seccomp,
        "{report}"
    );
    let result = run(&executor, ExecutionRequest::python("print(1)")).await;
    assert_eq!(result.isolation, report);
    assert_eq!(result.backend, "docker");
    assert!(result.duration > Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_caps_count_what_was_dropped() {
    let Some(executor) = executor_for("output", DockerExecutor::builder()).await else {
        return;
    };
    // Under the cap: everything kept, nothing flagged.
    let small = run(&executor, ExecutionRequest::python("print('x' * 999)")).await;
    assert_eq!(small.stdout.len(), 1000);
    assert!(!small.stdout_truncated && small.stdout_dropped_bytes == 0);

    let request = ExecutionRequest::python("import sys\nwhile True: sys.stdout.write('y' * 65536)")
        .limits(
            Limits::builder()
                .output_bytes(100_000)
                .timeout(Duration::from_secs(20)),
        );
    let started = Instant::now();
    let result = run(&executor, request).await;
    assert_eq!(
        result.status,
        Status::OutputLimitExceeded,
        "{}",
        describe(&result)
    );
    assert_eq!(result.stdout.len(), 100_000);
    assert!(result.stdout_truncated && result.stdout_dropped_bytes > 0);
    assert!(!result.stderr_truncated);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
