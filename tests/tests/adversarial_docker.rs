//! The adversarial battery on the Docker backend.
//!
//! Without a Docker daemon (or the sandbox image) every case prints why and
//! passes as skipped, unless `RLMKIT_SANDBOX_REQUIRE_DOCKER=1`, which turns
//! the skip into a failure. Each case's containers carry
//! `rlmkit.test=adversarial-<case>`, so that afterwards "nothing left
//! behind" means exactly: no container labelled `rlmkit.sandbox` of this
//! process and this case remains.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on failure.

use std::collections::HashMap;

use sandbox_docker::DockerExecutor;
use sandbox_tests::adversarial::{self, Sandbox};
use sandbox_tests::docker_support::usable;
use testcontainers::bollard;

/// The label each case puts on its containers.
const TEST_LABEL: &str = "rlmkit.test";

async fn docker(case: &'static str) -> Option<Sandbox> {
    let label = format!("adversarial-{case}");
    let executor = usable(
        DockerExecutor::builder()
            .label(TEST_LABEL, &label)
            .build()
            .await,
    )?;
    // Listed straight from the daemon, not through the executor (whose clones
    // would keep it, and any containers it holds ready, alive).
    let docker = bollard::Docker::connect_with_defaults().expect("a Docker client");
    let leftovers = move || -> adversarial::Leftovers {
        let docker = docker.clone();
        let filters = HashMap::from([(
            "label",
            vec![
                "rlmkit.sandbox".to_owned(),
                format!("rlmkit.sandbox.owner={}", std::process::id()),
                format!("{TEST_LABEL}={label}"),
            ],
        )]);
        Box::pin(async move {
            let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            match docker.list_containers(Some(options)).await {
                Ok(containers) => containers
                    .into_iter()
                    .map(|c| {
                        format!(
                            "container {:?} {} {:?}",
                            c.names.unwrap_or_default(),
                            c.id.unwrap_or_default(),
                            c.state.map(|s| s.to_string())
                        )
                    })
                    .collect(),
                Err(error) => vec![format!("cannot list containers: {error}")],
            }
        })
    };
    Some(Sandbox::new(Box::new(executor), leftovers))
}

// Every case.
sandbox_tests::adversarial_suite!(docker;
    fork_bomb, memory_bomb_one_allocation, memory_bomb_slow_growth,
    disk_fill_of_the_scratch_space, output_flood_on_both_streams, a_million_tiny_lines,
    a_100_mb_line_without_newline, binary_garbage_on_both_streams, closing_stdout_early,
    sleep_forever, busy_loop, child_ignoring_sigterm, double_forked_setsid_grandchild,
    signals_to_the_parent_and_everyone, host_secrets_are_out_of_reach,
    tcp_to_host_listeners, udp_to_a_host_socket, dns_resolution, raw_sockets,
    netlink_sockets, vsock_sockets,
    proc_and_sys_snooping, symlink_and_hardlink_tricks,
    writing_to_the_code, ten_mb_of_code, fifty_mb_of_stdin,
    nul_byte_in_source,
    nul_bytes_in_requests, invalid_utf8_source
);
