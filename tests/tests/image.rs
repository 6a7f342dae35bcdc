//! The sandbox image itself (`rlmkit-sandbox:<version>`, built by
//! `docker/build-image.sh`), checked through testcontainers: its user, its
//! Python and numpy, and that it starts with no network and a read-only root.
//!
//! Skipped (with a message) without a Docker daemon, unless
//! `RLMKIT_SANDBOX_REQUIRE_DOCKER=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rstest::{fixture, rstest};
use testcontainers::core::{CmdWaitFor, ExecCommand, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, GenericImage, ImageExt, bollard};

/// `rlmkit-sandbox:<version>` as a name and a tag.
fn image_name_and_tag() -> (&'static str, &'static str) {
    sandbox_docker::DEFAULT_IMAGE
        .split_once(':')
        .expect("the default image has a tag")
}

/// The sandbox image as the executor runs it: no network, read-only root,
/// labelled so that leftovers can be found; it idles so checks can exec in.
#[fixture]
fn sandbox_image() -> ContainerRequest<GenericImage> {
    let (name, tag) = image_name_and_tag();
    GenericImage::new(name, tag)
        .with_wait_for(WaitFor::Nothing)
        .with_cmd(["sleep", "300"])
        .with_network("none")
        .with_readonly_rootfs(true)
        .with_label(sandbox_docker::LABEL, "1")
        .with_label(sandbox_docker::LABEL_OWNER, std::process::id().to_string())
        .with_label("rlmkit.test", "image")
}

/// A running sandbox container, or `None` (after saying why) when there is
/// no daemon, or the image is missing and cannot be built here.
#[fixture]
async fn sandbox(
    sandbox_image: ContainerRequest<GenericImage>,
) -> Option<ContainerAsync<GenericImage>> {
    // Building an executor checks the daemon and the image (building it if it can).
    if let Err(error) = sandbox_docker::DockerExecutor::builder().build().await {
        let required = std::env::var("RLMKIT_SANDBOX_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
        if !error.is_unavailable() || required {
            panic!("the sandbox image cannot be used: {error}");
        }
        eprintln!("skipping: {error} (set RLMKIT_SANDBOX_REQUIRE_DOCKER=1 to fail instead)");
        return None;
    }
    Some(
        sandbox_image
            .start()
            .await
            .expect("the sandbox image starts"),
    )
}

/// Runs `cmd` in `container`, returning its exit code, stdout and stderr.
async fn exec(container: &ContainerAsync<GenericImage>, cmd: &[&str]) -> (i64, String, String) {
    let command =
        ExecCommand::new(cmd.iter().copied()).with_cmd_ready_condition(CmdWaitFor::exit());
    let mut result = container.exec(command).await.unwrap();
    let stdout = String::from_utf8(result.stdout_to_vec().await.unwrap()).unwrap();
    let stderr = String::from_utf8(result.stderr_to_vec().await.unwrap()).unwrap();
    let code = result
        .exit_code()
        .await
        .unwrap()
        .expect("the command finished");
    (code, stdout, stderr)
}

fn docker() -> bollard::Docker {
    bollard::Docker::connect_with_defaults().unwrap()
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_as_uid_1000(#[future(awt)] sandbox: Option<ContainerAsync<GenericImage>>) {
    let Some(container) = sandbox else { return };
    let config = docker()
        .inspect_image(sandbox_docker::DEFAULT_IMAGE)
        .await
        .unwrap()
        .config
        .unwrap();
    assert_eq!(config.user.as_deref(), Some("1000:1000"));
    assert_eq!(config.working_dir.as_deref(), Some("/sandbox"));

    assert_eq!(
        exec(&container, &["id", "-u"]).await,
        (0, "1000\n".into(), String::new())
    );
    assert_eq!(exec(&container, &["id", "-g"]).await.1, "1000\n");
    let (code, stdout, _) = exec(
        &container,
        &[
            "python3",
            "-c",
            "import os; print(os.getuid(), os.getcwd())",
        ],
    )
    .await;
    assert_eq!((code, stdout.as_str()), (0, "1000 /sandbox\n"));
    // The working directory is root's: the sandbox user cannot write there.
    let (code, stdout, _) = exec(&container, &["stat", "-c", "%u %a", "/sandbox"]).await;
    assert_eq!((code, stdout.as_str()), (0, "0 755\n"));
    container.rm().await.unwrap();
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python3_and_numpy_work(#[future(awt)] sandbox: Option<ContainerAsync<GenericImage>>) {
    let Some(container) = sandbox else { return };
    let code =
        "import sys, numpy as np; print(sys.version_info[0], np.array([1, 2, 3, 4, 5]).mean())";
    let (status, stdout, stderr) = exec(&container, &["python3", "-c", code]).await;
    assert_eq!((status, stdout.as_str()), (0, "3 3.0\n"), "{stderr}");
    // numpy stays single-threaded so its threads do not eat the pids limit.
    let code = "import os; print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['PYTHONDONTWRITEBYTECODE'])";
    assert_eq!(exec(&container, &["python3", "-c", code]).await.1, "1 1\n");
    container.rm().await.unwrap();
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_starts_with_no_network_and_a_read_only_root(
    #[future(awt)] sandbox: Option<ContainerAsync<GenericImage>>,
) {
    let Some(container) = sandbox else { return };
    let inspected = docker()
        .inspect_container(container.id(), None)
        .await
        .unwrap();
    let host = inspected.host_config.unwrap();
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert_eq!(host.readonly_rootfs, Some(true));
    let labels = inspected.config.unwrap().labels.unwrap_or_default();
    assert_eq!(
        labels.get(sandbox_docker::LABEL).map(String::as_str),
        Some("1")
    );

    // Only loopback inside.
    let (code, stdout, _) = exec(&container, &["ls", "/sys/class/net"]).await;
    assert_eq!((code, stdout.as_str()), (0, "lo\n"));
    // The probe works: writing succeeds where a tmpfs is...
    let (code, _, stderr) = exec(&container, &["sh", "-c", "echo x > /dev/shm/probe"]).await;
    assert_eq!(code, 0, "{stderr}");
    // ...and fails on the read-only root, even where the user could write otherwise.
    for path in ["/probe", "/tmp/probe", "/sandbox/probe"] {
        let (code, _, stderr) = exec(&container, &["sh", "-c", &format!("echo x > {path}")]).await;
        assert_ne!(code, 0, "{path} was writable");
        assert!(
            stderr.contains("Read-only") || stderr.contains("Permission denied"),
            "{path}: {stderr}"
        );
    }
    container.rm().await.unwrap();
}
