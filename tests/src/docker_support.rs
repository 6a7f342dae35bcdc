//! What every Docker test file needs: whether Docker is required, and
//! building an executor that skips (saying why) when Docker is absent.

use std::future::Future;

use sandbox_core::Error;
use sandbox_docker::DockerExecutor;

/// Whether Docker tests must run (`RLMKIT_SANDBOX_REQUIRE_DOCKER=1`, as in CI)
/// rather than skip where no daemon answers.
pub fn docker_required() -> bool {
    std::env::var("RLMKIT_SANDBOX_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// The builder's result, or `None` (after saying why) when Docker is
/// unavailable here and not required; any other error fails the test.
pub fn usable(built: Result<DockerExecutor, Error>) -> Option<DockerExecutor> {
    match built {
        Ok(executor) => Some(executor),
        Err(error) if error.is_unavailable() && !docker_required() => {
            eprintln!("skipping: {error} (set RLMKIT_SANDBOX_REQUIRE_DOCKER=1 to fail instead)");
            None
        }
        Err(error) => panic!("the Docker executor did not build: {error:?}"),
    }
}

/// Runs an async build from sync code (the suites' makers are sync): on a
/// current-thread runtime of its own, in a scoped thread.
pub fn build_blocking<F>(build: impl FnOnce() -> F + Send) -> Option<DockerExecutor>
where
    F: Future<Output = Result<DockerExecutor, Error>>,
{
    let built = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(build())
            })
            .join()
            .unwrap()
    });
    usable(built)
}
