//! A caller for the fault tests to kill outright: it starts one long
//! execution and waits. `testcaller docker LABEL` or `testcaller restricted TEMP_DIR`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandbox_core::{ExecutionRequest, Executor};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let request = ExecutionRequest::python("import time\ntime.sleep(120)");
    match args.first().map(String::as_str) {
        Some("docker") => {
            let executor = sandbox_docker::DockerExecutor::builder()
                .label("rlmkit.test", &args[1])
                .pool_size(0)
                .build()
                .await
                .unwrap();
            let _ = executor.execute(request).await;
        }
        Some("restricted") => {
            let executor = sandbox_restricted::RestrictedExecutor::builder()
                .temp_dir(&args[1])
                .build()
                .unwrap();
            let _ = executor.execute(request).await;
        }
        _ => eprintln!("usage: testcaller docker LABEL | testcaller restricted TEMP_DIR"),
    }
}
