//! The `rlmkit-sandbox` binary, run as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on failure.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use rstest::rstest;

fn sandbox(args: &[&str]) -> Output {
    sandbox_with_stdin(args, b"")
}

fn sandbox_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rlmkit-sandbox"))
        .args(args)
        .env("RLMKIT_SANDBOX_BACKEND", "restricted")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[rstest]
#[case::success(&["run", "--code", "print('hi')"], 0, "hi\n")]
#[case::exit_code(&["run", "--code", "import sys; print('x'); sys.exit(42)"], 42, "x\n")]
#[case::shell(&["run", "--lang", "shell", "--code", "echo $((6 * 7)); exit 3"], 3, "42\n")]
#[case::timeout(&["run", "--timeout", "500ms", "--code", "import time; print('a', flush=True); time.sleep(30)"], 124, "a\n")]
#[case::oom(&["run", "--memory", "64m", "--code", "x = [bytearray(8 << 20) for _ in range(64)]"], 137, "")]
#[case::flood(&["run", "--output-limit", "10k", "--code", "while True: print('z' * 100)"], 137, "")]
fn exit_code_mirrors_the_program(#[case] args: &[&str], #[case] code: i32, #[case] stdout: &str) {
    let output = sandbox(args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "stderr: {}",
        text(&output.stderr)
    );
    if !stdout.is_empty() {
        assert_eq!(text(&output.stdout), stdout);
    }
}

#[rstest]
#[case::zero_memory(&["run", "--memory", "0", "--code", "print(1)"], "invalid limit `memory`")]
#[case::bad_unit(&["run", "--timeout", "5 fortnights", "--code", "print(1)"], "invalid limit `timeout`")]
#[case::bad_cpus(&["run", "--cpus", "-1", "--code", "print(1)"], "invalid limit `cpus`")]
#[case::bad_network(&["run", "--network", "wifi", "--code", "print(1)"], "network")]
#[case::missing_file(&["run", "/nonexistent/program.py"], "/nonexistent/program.py")]
#[case::missing_input(&["run", "--file", "/nonexistent/data.csv", "--code", "print(1)"], "/nonexistent/data.csv")]
#[case::bad_env(&["run", "--env", "NOEQUALS", "--code", "print(1)"], "NAME=VALUE")]
#[case::no_program(&["run"], "no program given")]
#[case::bad_backend(&["run", "--backend", "vm", "--code", "print(1)"], "auto, docker or restricted")]
fn sandbox_failures_exit_125_with_the_reason(#[case] args: &[&str], #[case] reason: &str) {
    let output = sandbox(args);
    assert_eq!(
        output.status.code(),
        Some(125),
        "stdout: {}",
        text(&output.stdout)
    );
    let stderr = text(&output.stderr);
    assert!(stderr.contains(reason), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn docker_by_name_never_falls_back() {
    let output = Command::new(env!("CARGO_BIN_EXE_rlmkit-sandbox"))
        .args(["run", "--backend", "docker", "--code", "print(1)"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
    assert!(
        text(&output.stderr).contains("docker"),
        "{}",
        text(&output.stderr)
    );
    assert!(output.stdout.is_empty(), "the program must not have run");
}

#[test]
fn json_holds_the_whole_result() {
    let output = sandbox(&[
        "run",
        "--json",
        "--code",
        "import sys; print('out'); print('err', file=sys.stderr); sys.exit(2)",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["backend"], "restricted");
    assert_eq!(json["status"], "exited");
    assert_eq!(json["exit_code"], 2);
    assert_eq!(json["stdout"], "out\n");
    assert_eq!(json["stderr"], "err\n");
    assert_eq!(json["stdout_truncated"], false);
    assert_eq!(json["stderr_truncated"], false);
    assert!(json["duration_ms"].as_u64().is_some());
    assert!(
        json["isolation"]["protections"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    );

    let timed_out = sandbox(&[
        "run",
        "--json",
        "--timeout",
        "300ms",
        "--code",
        "while True: pass",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&timed_out.stdout).unwrap();
    assert_eq!(json["status"], "timed_out");

    let failed = sandbox(&["run", "--json", "--memory", "1k", "--code", "print(1)"]);
    assert_eq!(failed.status.code(), Some(125));
    let json: serde_json::Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert_eq!(json["error"]["kind"], "invalid_limit");
}

#[test]
fn program_from_stdin_files_env_and_program_stdin() {
    let output = sandbox_with_stdin(&["run", "-"], b"print(sum(range(10)))\n");
    assert_eq!(text(&output.stdout), "45\n", "{}", text(&output.stderr));

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.txt");
    std::fs::write(&data, "from a local file").unwrap();
    let script = dir.path().join("job.sh");
    std::fs::write(&script, "cat input/data.txt; echo \" $GREETING\"; cat").unwrap();
    let file_arg = format!("{}:input/data.txt", data.display());
    let output = sandbox_with_stdin(
        &[
            "run",
            script.to_str().unwrap(),
            "--file",
            &file_arg,
            "--env",
            "GREETING=hello",
            "--stdin",
            "-",
        ],
        b"piped input",
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "from a local file hello\npiped input");
}

#[test]
fn auto_says_which_backend_it_picked() {
    let output = Command::new(env!("CARGO_BIN_EXE_rlmkit-sandbox"))
        .args(["run", "--json", "--code", "print(1)"])
        .env("RLMKIT_SANDBOX_BACKEND", "auto")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["backend"], "restricted");
    assert!(
        text(&output.stderr).contains("using the restricted runner"),
        "{}",
        text(&output.stderr)
    );
}

/// Whether Docker tests must run (CI), rather than skip where no daemon answers.
fn docker_required() -> bool {
    std::env::var("RLMKIT_SANDBOX_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

#[test]
fn numpy_runs_through_docker() {
    let output = Command::new(env!("CARGO_BIN_EXE_rlmkit-sandbox"))
        .args([
            "run",
            "--backend",
            "docker",
            "--code",
            "import numpy as np, os; print(np.array([1,2,3,4,5]).mean(), os.getuid())",
        ])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    if output.status.code() == Some(125) && stderr.contains("unavailable") && !docker_required() {
        eprintln!("skipping: {stderr}");
        return;
    }
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&output.stdout), "3.0 1000\n");
}

#[test]
fn gc_reports_what_it_removed() {
    let output = Command::new(env!("CARGO_BIN_EXE_rlmkit-sandbox"))
        .args(["gc", "--json"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    if output.status.code() == Some(125) && stderr.contains("unavailable") && !docker_required() {
        eprintln!("skipping: {stderr}");
        return;
    }
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let removed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(removed.is_array(), "{removed}");
}

#[test]
fn doctor_tells_both_backends_in_words_and_json() {
    let words = sandbox(&["doctor"]);
    let text_out = text(&words.stdout);
    assert!(text_out.contains("restricted: available"), "{text_out}");
    assert!(text_out.contains("docker:"), "{text_out}");
    assert!(text_out.contains("auto picks:"), "{text_out}");

    let json = sandbox(&["doctor", "--json"]);
    assert_eq!(json.status.code(), Some(0), "{}", text(&json.stderr));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let backends = value["backends"].as_array().unwrap();
    let restricted = backends
        .iter()
        .find(|b| b["backend"] == "restricted")
        .unwrap();
    assert_eq!(restricted["available"], true);
    // The words and the JSON tell the same protections.
    for protection in restricted["isolation"]["protections"].as_array().unwrap() {
        let line = format!(
            "{:<14} {:<13} {}",
            protection["protection"].as_str().unwrap(),
            protection["state"].as_str().unwrap(),
            protection["detail"].as_str().unwrap()
        );
        assert!(text_out.contains(&line), "missing from the words: {line}");
    }
    let docker = backends.iter().find(|b| b["backend"] == "docker").unwrap();
    if docker["available"] == false {
        assert!(docker["reason"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(
            !docker_required(),
            "Docker is required here: {}",
            docker["reason"]
        );
    }
}
