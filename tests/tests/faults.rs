//! Faults from outside the sandbox: a container killed by someone else, the
//! image removed between runs, the daemon going away and coming back, the
//! caller killed outright, a full disk. Each ends with a clear result or
//! error and nothing left behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandbox_core::{
    Error, ExecutionRequest, Executor, Limits, Protection, ProtectionState, Status,
};
use sandbox_docker::DockerExecutor;
use sandbox_restricted::RestrictedExecutor;
use sandbox_tests::docker_support::usable;

const TEST_LABEL: &str = "rlmkit.test";

/// A Docker executor for `test`, or `None` (after saying why) without Docker.
async fn docker_for(test: &str, host: Option<&str>) -> Option<DockerExecutor> {
    let mut builder = DockerExecutor::builder()
        .label(TEST_LABEL, test)
        .pool_size(0);
    if let Some(host) = host {
        builder = builder.host(host);
    }
    usable(builder.build().await)
}

/// Ids of the containers labelled `rlmkit.test=<test>`, optionally only running ones.
fn containers(test: &str, running_only: bool) -> Vec<String> {
    let mut args = vec![
        "ps".to_owned(),
        "-q".to_owned(),
        "--filter".to_owned(),
        format!("label={TEST_LABEL}={test}"),
    ];
    if !running_only {
        args.push("-a".to_owned());
    }
    let output = Command::new("docker").args(&args).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_killed_from_outside_ends_the_run_and_is_removed() {
    let test = "fault-killed";
    let Some(executor) = docker_for(test, None).await else {
        return;
    };
    let run = tokio::spawn(async move {
        executor
            .execute(ExecutionRequest::python(
                "import time\nprint('up', flush=True)\nopen('/tmp/up', 'w').close()\ntime.sleep(60)",
            ))
            .await
    });
    wait_for("a running container", Duration::from_secs(20), || {
        !containers(test, true).is_empty()
    })
    .await;
    let id = containers(test, true).remove(0);
    // Killed once its output is out (the program marks that in /tmp).
    wait_for("the program's first line", Duration::from_secs(20), || {
        Command::new("docker")
            .args(["exec", &id, "test", "-e", "/tmp/up"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .await;
    assert!(
        Command::new("docker")
            .args(["kill", &id])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let outcome = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("the run must end")
        .unwrap();
    match outcome {
        Ok(result) => {
            assert!(
                matches!(result.status, Status::Killed | Status::Signaled),
                "a container killed from outside: {:?} {}",
                result.status,
                result.stderr_text()
            );
            assert_eq!(result.stdout_text(), "up\n");
        }
        Err(error) => assert!(matches!(error, Error::Backend { .. }), "{error:?}"),
    }
    wait_for("no container left", Duration::from_secs(10), || {
        containers(test, false).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_removed_between_runs_is_a_clear_error() {
    let test = "fault-image";
    if docker_for(test, None).await.is_none() {
        return;
    }
    let tag = format!("rlmkit-sandbox:fault-{}", std::process::id());
    assert!(
        Command::new("docker")
            .args(["tag", sandbox_docker::DEFAULT_IMAGE, &tag])
            .status()
            .unwrap()
            .success()
    );
    let executor = DockerExecutor::builder()
        .image(&tag)
        .auto_build(false)
        .label(TEST_LABEL, test)
        .pool_size(0)
        .build()
        .await
        .unwrap();
    let first = executor
        .execute(ExecutionRequest::python("print('first')"))
        .await
        .unwrap();
    assert_eq!(first.stdout_text(), "first\n");
    assert!(
        Command::new("docker")
            .args(["rmi", &tag])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let error = executor
        .execute(ExecutionRequest::python("print('second')"))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&tag),
        "the error names the image: {message}"
    );
    assert!(!message.contains("panicked"));
    wait_for("no container left", Duration::from_secs(10), || {
        containers(test, false).is_empty()
    })
    .await;
}

/// A TCP front for the local daemon socket that can be stopped and started
/// again on the same port, as a daemon that goes away and comes back.
struct Front {
    port: u16,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl Front {
    async fn start(port: u16) -> Front {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut stopped_accepting = stopped.clone();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut tcp, _)) = accepted else { return };
                        let mut stopped = stopped.clone();
                        tokio::spawn(async move {
                            let Ok(mut unix) = tokio::net::UnixStream::connect("/var/run/docker.sock").await else { return };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix) => {}
                                _ = stopped.changed() => {}
                            }
                        });
                    }
                    _ = stopped_accepting.changed() => return,
                }
            }
        });
        Front {
            port,
            stop: Some(stop),
        }
    }

    fn cut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_goes_away_and_comes_back_is_recovered_from() {
    let test = "fault-daemon";
    if docker_for(test, None).await.is_none() {
        return;
    }
    if std::env::var("DOCKER_HOST")
        .is_ok_and(|h| !h.is_empty() && !h.starts_with("unix:///var/run/docker.sock"))
    {
        eprintln!("skipping: this test stands in front of the local socket only");
        return;
    }
    let mut front = Front::start(0).await;
    let port = front.port;
    let address = format!("tcp://127.0.0.1:{port}");
    let executor = docker_for(test, Some(&address)).await.unwrap();
    let running = {
        let executor = executor.clone();
        tokio::spawn(async move {
            executor
                .execute(ExecutionRequest::python("import time; time.sleep(20)"))
                .await
        })
    };
    wait_for("a running container", Duration::from_secs(20), || {
        !containers(test, true).is_empty()
    })
    .await;
    front.cut();
    let outcome = tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("no hang")
        .unwrap();
    let error = outcome.expect_err("the run must fail while the daemon is away");
    assert!(!error.to_string().is_empty());
    // While it is away, a new run is a clear error, not a hang.
    let away = tokio::time::timeout(
        Duration::from_secs(15),
        executor.execute(ExecutionRequest::python("print(1)")),
    )
    .await
    .expect("no hang");
    assert!(away.is_err());

    // The daemon comes back on the same address: the same executor works again,
    // and the container the lost run left is removed.
    let _front = Front::start(port).await;
    let back = executor
        .execute(ExecutionRequest::python("print('back')"))
        .await
        .unwrap();
    assert_eq!(back.stdout_text(), "back\n");
    wait_for(
        "the lost run's container removed",
        Duration::from_secs(45),
        || containers(test, false).is_empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_killed_outright_leaves_a_container_that_gc_removes() {
    let test = "fault-sigkill";
    if docker_for(test, None).await.is_none() {
        return;
    }
    let mut caller = Command::new(env!("CARGO_BIN_EXE_rlmkit-sandbox-testcaller"))
        .args(["docker", test])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "the caller's container running",
        Duration::from_secs(30),
        || !containers(test, true).is_empty(),
    )
    .await;
    caller.kill().unwrap();
    caller.wait().unwrap();
    // Its container outlives it, labelled with the dead owner.
    assert!(!containers(test, false).is_empty());
    let removed = sandbox_docker::gc().await.unwrap();
    assert!(
        removed
            .iter()
            .any(|c| c.labels.get(TEST_LABEL).map(String::as_str) == Some(test)),
        "{removed:#?}"
    );
    assert!(containers(test, false).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_callers_children_die_with_it() {
    let temp = tempfile::tempdir().unwrap();
    let mut caller = Command::new(env!("CARGO_BIN_EXE_rlmkit-sandbox-testcaller"))
        .args(["restricted", temp.path().to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let caller_pid = caller.id();
    // The sandboxed program is the caller's child.
    let mut child_pid = None;
    let started = Instant::now();
    while child_pid.is_none() && started.elapsed() < Duration::from_secs(20) {
        child_pid = children_of(caller_pid).into_iter().next();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let child_pid = child_pid.expect("the caller started its sandboxed program");
    tokio::time::sleep(Duration::from_millis(300)).await;
    caller.kill().unwrap();
    caller.wait().unwrap();
    wait_for(
        "the sandboxed program dead with its caller",
        Duration::from_secs(5),
        || !std::path::Path::new(&format!("/proc/{child_pid}")).exists(),
    )
    .await;
    // The next executor on that temp dir sweeps what the dead caller left.
    let executor = RestrictedExecutor::builder()
        .temp_dir(temp.path())
        .build()
        .unwrap();
    executor
        .execute(ExecutionRequest::shell("true"))
        .await
        .unwrap();
    assert!(
        std::fs::read_dir(temp.path()).unwrap().next().is_none(),
        "the dead caller's working directory was left"
    );
}

fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| stat.rsplit(')').next().map(str::to_owned))
                .and_then(|rest| {
                    rest.split_whitespace()
                        .nth(1)
                        .and_then(|p| p.parse::<u32>().ok())
                })
                == Some(parent)
        })
        .collect()
}

/// The entries of `dir`, but `keep`.
fn entries_but(dir: &Path, keep: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_none_or(|n| n != keep))
        .collect()
}

/// A full disk under the working directories. With a tmpfs of its own per
/// execution (root, the default) a run does not need that disk: its input
/// fits and a program filling its scratch space meets its own cap. Without
/// one, input that does not fit is a clear error naming the file and a
/// program that fills the disk gets its own error. Nothing is left either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_for_working_directories_is_a_clear_error() {
    if !nix_is_root() {
        eprintln!("skipping: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=256k",
            "tmpfs",
            dir.path().to_str().unwrap(),
        ])
        .status()
        .unwrap()
        .success();
    assert!(mounted, "mounting a tmpfs as root");
    let path = dir.path().to_path_buf();
    let result = async move {
        let fill = || {
            // Files of a quarter MiB each, so the total, not RLIMIT_FSIZE, stops it.
            ExecutionRequest::python(
                "i = 0\nwhile True:\n    open(f'fill{i}', 'wb').write(b'x' * 262144)\n    i += 1",
            )
            .limits(
                Limits::builder()
                    .timeout(Duration::from_secs(10))
                    .scratch_bytes(1 << 20),
            )
        };
        let big_input = || {
            ExecutionRequest::python("import os\nprint(os.path.getsize('big.bin'))")
                .file("big.bin", vec![0u8; 1 << 20])
        };

        // Each working directory a tmpfs of its own: the full disk does not matter.
        let own = RestrictedExecutor::builder()
            .temp_dir(path.as_path())
            .build()
            .unwrap();
        assert!(
            own.isolation().is_enforced(Protection::Scratch),
            "{}",
            own.isolation()
        );
        std::fs::write(path.join("filler"), vec![1u8; 512 << 10]).unwrap_err();
        let result = own.execute(big_input()).await.unwrap();
        assert_eq!(
            result.stdout_text(),
            "1048576\n",
            "{}",
            result.stderr_text()
        );
        let result = own.execute(fill()).await.unwrap();
        assert_eq!(result.status, Status::Exited);
        assert!(
            result.stderr_text().contains("No space left"),
            "{}",
            result.stderr_text()
        );
        assert!(
            entries_but(&path, "filler").is_empty(),
            "left behind in the temp dir"
        );
        std::fs::remove_file(path.join("filler")).unwrap();

        // On the temp dir itself.
        let shared = RestrictedExecutor::builder()
            .temp_dir(path.as_path())
            .scratch_tmpfs(false)
            .build()
            .unwrap();
        assert_eq!(
            shared.isolation().state(Protection::Scratch),
            Some(ProtectionState::Partial)
        );
        // Input that does not fit: a clear I/O error, nothing half-written.
        let error = shared.execute(big_input()).await.unwrap_err();
        assert!(matches!(error, Error::Io { .. }), "{error:?}");
        assert!(error.to_string().contains("big.bin"), "{error}");
        assert!(
            std::fs::read_dir(path.as_path()).unwrap().next().is_none(),
            "a half-written directory was left"
        );
        // A program that fills the disk gets its own error and the run ends.
        let result = shared.execute(fill()).await.unwrap();
        assert_eq!(result.status, Status::Exited);
        assert!(
            result.stderr_text().contains("No space left"),
            "{}",
            result.stderr_text()
        );
        assert!(std::fs::read_dir(path.as_path()).unwrap().next().is_none());
    };
    let outcome = tokio::spawn(result).await;
    Command::new("umount").arg(dir.path()).status().unwrap();
    outcome.unwrap();
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
}
