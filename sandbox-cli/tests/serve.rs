//! `rlmkit-sandbox serve --stdio`, driven as a client drives it: JSON-RPC
//! lines on a pipe.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long any one answer may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running `serve --stdio`.
struct Served {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Responses read while waiting for another one.
    held: Vec<Value>,
    next_id: u64,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rlmkit-sandbox"))
            .args(["serve", "--stdio"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut child_stderr = child.stderr.take().unwrap();
        let collected = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = child_stderr.read(&mut buffer) {
                if n == 0 {
                    return;
                }
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Served {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            held: Vec::new(),
            next_id: 1000,
        }
    }

    /// Starts a server on the restricted runner.
    fn restricted() -> Served {
        Served::start(&["--backend", "restricted"])
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Writes raw bytes (one or more lines).
    fn write(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Sends a request with a fresh id; returns the id.
    fn request(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let line = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.write(format!("{line}\n").as_bytes());
        id
    }

    /// The next line the server writes, parsed.
    fn next_line(&mut self, patience: Duration) -> Option<Value> {
        let line = self.lines.recv_timeout(patience).ok()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
    }

    /// The response with `id`, in whatever order responses come.
    fn response(&mut self, id: &Value) -> Value {
        if let Some(at) = self.held.iter().position(|r| &r["id"] == id) {
            return self.held.remove(at);
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(response) = self.next_line(left) else {
                panic!("no response to {id} in time; stderr: {}", self.stderr());
            };
            if &response["id"] == id {
                return response;
            }
            self.held.push(response);
        }
    }

    /// Sends a request and waits for its whole response.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.request(method, params);
        let response = self.response(&json!(id));
        assert_eq!(response["jsonrpc"], "2.0", "{response}");
        response
    }

    /// Sends a request and returns its result, failing on an error.
    fn ok(&mut self, method: &str, params: Value) -> Value {
        let response = self.call(method, params);
        assert!(response.get("error").is_none(), "{method}: {response}");
        response["result"].clone()
    }

    /// Sends a raw line and returns the next response (nothing else in flight).
    fn raw(&mut self, line: &[u8]) -> Value {
        self.write(line);
        self.write(b"\n");
        let response = self.next_line(PATIENCE).expect("no response");
        assert_eq!(response["jsonrpc"], "2.0", "{response}");
        response
    }

    /// Closes stdin, reads every remaining line, and waits for the exit.
    fn finish(&mut self) -> (ExitStatus, Vec<Value>) {
        drop(self.stdin.take());
        let mut rest = std::mem::take(&mut self.held);
        while let Some(line) = self.next_line(PATIENCE) {
            rest.push(line);
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, rest);
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit after EOF; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The error code of a response, failing if it has none.
fn code(response: &Value) -> i64 {
    response["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {response}"))
}

/// Opens a session, or says why the backend has none (and the test skips).
fn open_session(served: &mut Served, params: Value) -> Option<String> {
    let response = served.call("session.open", params);
    if response["error"]["data"]["kind"] == "unsupported" {
        eprintln!(
            "skipping: the backend has no sessions yet: {}",
            response["error"]["message"]
        );
        return None;
    }
    assert!(response.get("error").is_none(), "{response}");
    Some(response["result"]["session"].as_str().unwrap().to_owned())
}

/// Whether Docker tests must run (CI), rather than skip where no daemon answers.
fn docker_required() -> bool {
    std::env::var("RLMKIT_SANDBOX_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// `run --json` for the same program, parsed.
fn run_json(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_rlmkit-sandbox"))
        .args(["run", "--json", "--backend", "restricted"])
        .args(args)
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Keys of a JSON object, recursively for nested objects, as dotted paths.
fn shape(value: &Value, prefix: &str, into: &mut Vec<String>) {
    if let Value::Object(object) = value {
        for (key, inner) in object {
            let path = format!("{prefix}{key}");
            shape(inner, &format!("{path}."), into);
            into.push(path);
        }
    }
    into.sort();
}

#[test]
fn execute_answers_what_run_json_prints() {
    let mut served = Served::restricted();
    let code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(2)";
    let result = served.ok("execute", json!({ "code": code }));
    let expected = run_json(&["--code", code]);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    shape(&result, "", &mut ours);
    shape(&expected, "", &mut theirs);
    assert_eq!(ours, theirs);
    for key in [
        "backend",
        "status",
        "exit_code",
        "signal",
        "stdout",
        "stderr",
        "stdout_truncated",
        "stderr_truncated",
    ] {
        assert_eq!(result[key], expected[key], "{key}");
    }
    // The same protections in the same states (details name a per-run uid).
    let protections = |v: &Value| -> Vec<(String, String)> {
        v["isolation"]["protections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["protection"].to_string(), p["state"].to_string()))
            .collect()
    };
    assert_eq!(protections(&result), protections(&expected));
    assert_eq!(result["stdout"], "out\n");
    assert_eq!(result["exit_code"], 2);

    // Shell, stdin, environment, text and binary files, per-request limits.
    let result = served.ok(
        "execute",
        json!({
            "code": "cat data/a.txt; od -An -tx1 b.bin | tr -d ' \\n'; echo \" $GREETING\"; cat",
            "language": "shell",
            "stdin": "piped",
            "env": { "GREETING": "hello" },
            "files": [
                { "path": "data/a.txt", "contents": "text file " },
                { "path": "b.bin", "contents": { "base64": "AP8B" } }
            ]
        }),
    );
    assert_eq!(
        result["stdout"], "text file 00ff01 hello\npiped",
        "{result}"
    );
    let result = served.ok(
        "execute",
        json!({ "code": "while True: pass", "limits": { "timeout_ms": 300 } }),
    );
    assert_eq!(result["status"], "timed_out");
    let result = served.ok(
        "execute",
        json!({ "code": "import sys; sys.stdout.buffer.write(b'\\xff\\x00')" }),
    );
    assert_eq!(result["stdout"], json!({ "base64": "/wA=" }));

    let (status, rest) = served.finish();
    assert!(status.success(), "{status}");
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn pipelined_requests_are_answered_as_they_finish() {
    let mut served = Served::restricted();
    let mut batch = String::new();
    for id in 1..=5 {
        let code = if id == 3 {
            "import time; time.sleep(3); print('slow')".to_owned()
        } else {
            format!("print({id})")
        };
        let request =
            json!({ "jsonrpc": "2.0", "id": id, "method": "execute", "params": { "code": code } });
        batch.push_str(&format!("{request}\n"));
    }
    // All five at once, before reading any answer.
    served.write(batch.as_bytes());
    let mut order = Vec::new();
    for _ in 1..=5 {
        let response = served.next_line(PATIENCE).expect("a response");
        let id = response["id"].as_i64().unwrap();
        let expected = if id == 3 {
            "slow\n".to_owned()
        } else {
            format!("{id}\n")
        };
        assert_eq!(
            response["result"]["stdout"],
            expected.as_str(),
            "{response}"
        );
        order.push(id);
    }
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, [1, 2, 3, 4, 5]);
    assert_eq!(
        order.last(),
        Some(&3),
        "the slow one must come last: {order:?}"
    );
    let (status, rest) = served.finish();
    assert!(status.success());
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn bad_requests_get_errors_and_the_server_keeps_serving() {
    let mut served = Served::restricted();
    let cases: &[(&[u8], i64, Value)] = &[
        (b"{\"jsonrpc\":\"2.0\",", -32700, Value::Null),
        (b"not json at all", -32700, Value::Null),
        (b"\xff\xfe{}", -32700, Value::Null),
        (b"[1, 2]", -32600, Value::Null),
        (b"42", -32600, Value::Null),
        (br#"{"jsonrpc":"2.0","id":1}"#, -32600, json!(1)),
        (br#"{"jsonrpc":"2.0","id":2,"method":7}"#, -32600, json!(2)),
        (br#"{"id":3,"method":"doctor"}"#, -32600, json!(3)),
        (br#"{"jsonrpc":"2.0","id":4,"method":"frobnicate"}"#, -32601, json!(4)),
        (br#"{"jsonrpc":"2.0","id":5,"method":"execute"}"#, -32602, json!(5)),
        (br#"{"jsonrpc":"2.0","id":6,"method":"execute","params":{"code":5}}"#, -32602, json!(6)),
        (br#"{"jsonrpc":"2.0","id":7,"method":"execute","params":{"code":"1","timeout":1}}"#, -32602, json!(7)),
        (br#"{"jsonrpc":"2.0","id":8,"method":"execute","params":{"code":"1","limits":{"memory":"1g"}}}"#, -32602, json!(8)),
        (br#"{"jsonrpc":"2.0","id":9,"method":"execute","params":{"code":"1","limits":{"memory_bytes":1}}}"#, -32602, json!(9)),
        (br#"{"jsonrpc":"2.0","id":10,"method":"execute","params":{"code":"1","files":[{"path":"/etc/x","contents":"a"}]}}"#, -32602, json!(10)),
        (br#"{"jsonrpc":"2.0","id":11,"method":"execute","params":{"code":"1","stdin":{"base64":"!!"}}}"#, -32602, json!(11)),
        (br#"{"jsonrpc":"2.0","id":12,"method":"execute","params":[1]}"#, -32602, json!(12)),
        (br#"{"jsonrpc":"2.0","id":"s","method":"session.run","params":{"session":"nope","code":"1"}}"#, -32602, json!("s")),
        (br#"{"jsonrpc":"2.0","id":13,"method":"doctor","params":{"verbose":true}}"#, -32602, json!(13)),
    ];
    for (line, expected, id) in cases {
        let response = served.raw(line);
        assert_eq!(
            code(&response),
            *expected,
            "{}: {response}",
            String::from_utf8_lossy(line)
        );
        assert_eq!(&response["id"], id, "{response}");
        assert!(
            response["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // Invalid values carry the sandbox's kind.
    let response = served.raw(
        br#"{"jsonrpc":"2.0","id":20,"method":"execute","params":{"code":"1","limits":{"cpus":0}}}"#,
    );
    assert_eq!(response["error"]["data"]["kind"], "invalid_limit");
    // Blank lines are ignored, and the server still serves.
    served.write(b"\n  \n");
    let result = served.ok("execute", json!({ "code": "print('still here')" }));
    assert_eq!(result["stdout"], "still here\n");
    let (status, rest) = served.finish();
    assert!(status.success(), "{status}");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(!served.stderr().contains("panicked"), "{}", served.stderr());
}

#[test]
fn notifications_get_no_answer() {
    let mut served = Served::restricted();
    served.write(
        concat!(
            r#"{"jsonrpc":"2.0","method":"execute","params":{"code":"print(1)"}}"#,
            "\n",
            r#"{"jsonrpc":"2.0","method":"no.such.method"}"#,
            "\n",
            r#"{"jsonrpc":"2.0","method":"execute","params":{"nonsense":true}}"#,
            "\n",
            r#"{"jsonrpc":"2.0","id":"last","method":"execute","params":{"code":"print(2)"}}"#,
            "\n",
        )
        .as_bytes(),
    );
    let (status, rest) = served.finish();
    assert!(status.success(), "{status}");
    assert_eq!(
        rest.len(),
        1,
        "only the request with an id is answered: {rest:?}"
    );
    assert_eq!(rest[0]["id"], "last");
    assert_eq!(rest[0]["result"]["stdout"], "2\n");
}

#[test]
fn doctor_answers_what_doctor_json_prints() {
    let mut served = Served::restricted();
    let ours = served.ok("doctor", json!({}));
    let output = Command::new(env!("CARGO_BIN_EXE_rlmkit-sandbox"))
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let theirs: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(ours["auto"], theirs["auto"]);
    let backends = |v: &Value| -> Vec<(String, bool)> {
        v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["backend"].as_str().unwrap().to_owned(),
                    b["available"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(backends(&ours), backends(&theirs));
    let restricted = |v: &Value| {
        v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["backend"] == "restricted")
            .unwrap()
            .clone()
    };
    assert_eq!(restricted(&ours), restricted(&theirs));
    // Without params too.
    let response = served.raw(br#"{"jsonrpc":"2.0","id":"d","method":"doctor"}"#);
    assert!(response["result"]["backends"].is_array(), "{response}");
}

#[test]
fn sessions_keep_state_move_files_and_close() {
    let mut served = Served::restricted();
    let Some(session) = open_session(
        &mut served,
        json!({ "limits": { "timeout_ms": 20000 }, "lifetime_ms": 600000, "env": { "MODE": "rlm" } }),
    ) else {
        return;
    };
    let run = |served: &mut Served, code: &str| {
        served.ok("session.run", json!({ "session": session, "code": code }))
    };
    let result = run(
        &mut served,
        "import os\nx = 41\ndef double(v):\n    return 2 * v",
    );
    assert_eq!(result["exit_code"], 0, "{result}");
    let result = run(
        &mut served,
        "x += 1\nprint(x, double(x), os.environ['MODE'])",
    );
    assert_eq!(result["stdout"], "42 84 rlm\n", "{result}");
    assert_eq!(result["backend"], "restricted");
    assert!(result["isolation"].is_object() && result["duration_ms"].is_u64());

    // Files in and out, as text, as base64 and through local files.
    let put = served.ok(
        "session.put_file",
        json!({ "session": session, "path": "data/in.txt", "contents": "hello file" }),
    );
    assert_eq!(put["size"], 10);
    let put = served.ok(
        "session.put_file",
        json!({ "session": session, "path": "bin.dat", "contents": { "base64": "AP8B" } }),
    );
    assert_eq!(put["size"], 3);
    let result = run(
        &mut served,
        "open('out.txt', 'w').write(open('data/in.txt').read().upper())\nprint(list(open('bin.dat', 'rb').read()))",
    );
    assert_eq!(result["stdout"], "[0, 255, 1]\n", "{result}");
    let got = served.ok(
        "session.get_file",
        json!({ "session": session, "path": "out.txt" }),
    );
    assert_eq!(got["contents"], "HELLO FILE");
    let got = served.ok(
        "session.get_file",
        json!({ "session": session, "path": "bin.dat" }),
    );
    assert_eq!(got["contents"], json!({ "base64": "AP8B" }));

    let dir = tempfile::tempdir().unwrap();
    let local_in = dir.path().join("in.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local_in, &data).unwrap();
    let put = served.ok(
        "session.put_file",
        json!({ "session": session, "path": "big.bin", "local_path": local_in }),
    );
    assert_eq!(put["size"], data.len());
    let local_out = dir.path().join("out.bin");
    let got = served.ok(
        "session.get_file",
        json!({ "session": session, "path": "big.bin", "local_path": local_out }),
    );
    assert_eq!(got["size"], data.len());
    assert!(std::fs::read(&local_out).unwrap() == data);

    // Bad file requests.
    let missing = served.call(
        "session.get_file",
        json!({ "session": session, "path": "missing.txt" }),
    );
    assert_eq!(code(&missing), -32000, "{missing}");
    assert!(missing["error"]["data"]["kind"].is_string(), "{missing}");
    let both = served.call(
        "session.put_file",
        json!({ "session": session, "path": "x", "contents": "a", "local_path": "/tmp/x" }),
    );
    assert_eq!(code(&both), -32602, "{both}");

    // A cell that times out is data, and the session lives on.
    let result = served.ok(
        "session.run",
        json!({ "session": session, "code": "import time\ntime.sleep(60)", "timeout_ms": 500 }),
    );
    assert_eq!(result["status"], "timed_out", "{result}");
    let result = served.ok(
        "session.run",
        json!({ "session": session, "code": "print('x' * 5000)", "output_bytes": 100 }),
    );
    assert_eq!(result["stdout_truncated"], true, "{result}");
    assert_eq!(run(&mut served, "print(x)")["stdout"], "42\n");

    // Pipelined cells of one session run in the order they were sent.
    let mut batch = String::new();
    let cells = [
        "y = []",
        "y.append(1)",
        "y.append(2)",
        "y.append(3)",
        "print(y)",
    ];
    for (n, cell) in cells.iter().enumerate() {
        let request = json!({ "jsonrpc": "2.0", "id": format!("cell{n}"), "method": "session.run", "params": { "session": session, "code": cell } });
        batch.push_str(&format!("{request}\n"));
    }
    served.write(batch.as_bytes());
    let last = served.response(&json!("cell4"));
    assert_eq!(last["result"]["stdout"], "[1, 2, 3]\n", "{last}");
    for n in 0..4 {
        let response = served.response(&json!(format!("cell{n}")));
        assert_eq!(response["result"]["exit_code"], 0, "{response}");
    }

    let closed = served.ok("session.close", json!({ "session": session }));
    assert_eq!(closed["closed"], true);
    let after = served.call(
        "session.run",
        json!({ "session": session, "code": "print(1)" }),
    );
    assert_eq!(code(&after), -32602, "{after}");
    assert_eq!(after["error"]["data"]["kind"], "unknown_session");
    let again = served.call("session.close", json!({ "session": session }));
    assert_eq!(code(&again), -32602, "{again}");

    let (status, rest) = served.finish();
    assert!(status.success(), "{status}");
    assert!(rest.is_empty(), "{rest:?}");
}

/// The host pids whose environment holds `marker`.
fn host_pids_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) {
            if environ
                .split(|b| *b == 0)
                .any(|var| var == marker.as_bytes())
            {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Whether `pid` still runs holding `marker` (a zombie or a reused pid does not count).
fn still_runs(pid: u32, marker: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit(") ")
        .next()
        .and_then(|rest| rest.chars().next());
    state != Some('Z') && host_pids_with(marker).contains(&pid)
}

#[test]
fn end_of_input_closes_every_session() {
    let mut served = Served::start(&["--backend", "restricted", "--shutdown-grace", "1s"]);
    let marker_value = format!("{}-{}", std::process::id(), line!());
    let marker = format!("RLMKIT_SERVE_TEST={marker_value}");
    let Some(first) = open_session(
        &mut served,
        json!({ "env": { "RLMKIT_SERVE_TEST": marker_value } }),
    ) else {
        return;
    };
    let Some(second) = open_session(
        &mut served,
        json!({ "env": { "RLMKIT_SERVE_TEST": marker_value } }),
    ) else {
        return;
    };
    let mut pids = Vec::new();
    for session in [&first, &second] {
        let result = served.ok(
            "session.run",
            json!({ "session": session, "code": "import os\nprint(os.getpid())" }),
        );
        let pid: u32 = result["stdout"].as_str().unwrap().trim().parse().unwrap();
        pids.push(pid);
    }
    // The pids the sessions see are host pids only without a pid namespace;
    // otherwise find their processes by the marker in their environment.
    let host_pids: Vec<u32> = if pids.iter().all(|pid| still_runs(*pid, &marker)) {
        pids.clone()
    } else {
        host_pids_with(&marker)
    };
    if host_pids.is_empty() {
        eprintln!(
            "skipping the process check: the session pids {pids:?} are not host pids and no host process carries the marker"
        );
    }
    // The second session is busy with a long cell when input ends.
    let busy = served.request(
        "session.run",
        json!({ "session": second, "code": "import time\ntime.sleep(60)", "timeout_ms": 120000 }),
    );
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (status, rest) = served.finish();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "shutdown took {:?}",
        started.elapsed()
    );
    // The busy request was answered (cut short or cancelled), not dropped.
    let answer = rest
        .iter()
        .find(|r| r["id"] == busy)
        .unwrap_or_else(|| panic!("no answer to the busy cell: {rest:?}"));
    assert!(
        answer.get("error").is_some() || answer["result"]["status"] != "exited",
        "{answer}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in host_pids {
        while still_runs(pid, &marker) {
            assert!(
                Instant::now() < deadline,
                "the session process {pid} outlived the server"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `docker ps -aq` with the given filters, or `None` when the CLI fails.
fn docker_ps(filters: &[String]) -> Option<Vec<String>> {
    let mut command = Command::new("docker");
    command.args(["ps", "-aq"]);
    for filter in filters {
        command.args(["--filter", filter]);
    }
    let output = command.output().ok()?;
    if !output.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

#[test]
fn docker_serves_and_leaves_no_container_after_end_of_input() {
    let mut served = Served::start(&["--backend", "docker", "--shutdown-grace", "1s"]);
    let pid = served.child.id();
    // Without Docker the server exits at once: the write may find no reader.
    let request = json!({ "jsonrpc": "2.0", "id": 1, "method": "execute", "params": { "code": "print('hi')" } });
    let sent = served
        .stdin
        .as_mut()
        .unwrap()
        .write_all(format!("{request}\n").as_bytes())
        .and_then(|()| served.stdin.as_mut().unwrap().flush());
    let first = match sent {
        Ok(()) => served.next_line(Duration::from_secs(300)),
        Err(_) => None,
    };
    let Some(first) = first else {
        // The backend is chosen before serving: without Docker the server
        // exits 125 and says why.
        let (status, _) = served.finish();
        let stderr = served.stderr();
        if status.code() == Some(125) && stderr.contains("unavailable") && !docker_required() {
            eprintln!("skipping: {stderr}");
            return;
        }
        panic!("the server answered nothing ({status}): {stderr}");
    };
    assert_eq!(first["id"], 1, "{first}");
    assert!(first.get("error").is_none(), "{first}");
    assert_eq!(first["result"]["backend"], "docker");
    assert_eq!(first["result"]["stdout"], "hi\n");

    let mine = vec![
        "label=rlmkit.sandbox".to_owned(),
        format!("label=rlmkit.sandbox.owner={pid}"),
    ];
    if let Some(session) = open_session(&mut served, json!({})) {
        served.ok(
            "session.run",
            json!({ "session": session, "code": "x = 1" }),
        );
        let result = served.ok(
            "session.run",
            json!({ "session": session, "code": "x += 1\nprint(x)" }),
        );
        assert_eq!(result["stdout"], "2\n", "{result}");
        assert_eq!(result["backend"], "docker");
        let put = served.ok(
            "session.put_file",
            json!({ "session": session, "path": "in.txt", "contents": "docker file" }),
        );
        assert_eq!(put["size"], 11);
        served.ok(
            "session.run",
            json!({ "session": session, "code": "open('out.txt', 'w').write(open('in.txt').read().upper())" }),
        );
        let got = served.ok(
            "session.get_file",
            json!({ "session": session, "path": "out.txt" }),
        );
        assert_eq!(got["contents"], "DOCKER FILE");
        let alive = docker_ps(&mine).expect("docker ps");
        assert!(!alive.is_empty(), "the session's container must exist");
        // A cell still running when input ends.
        served.request(
            "session.run",
            json!({ "session": session, "code": "import time\ntime.sleep(60)", "timeout_ms": 120000 }),
        );
    }
    // A one-shot program still running when input ends.
    served.request("execute", json!({ "code": "import time\ntime.sleep(60)" }));
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let (status, rest) = served.finish();
    assert!(status.success(), "{status}: {}", served.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(
        rest.iter().all(|r| r["id"].is_u64()),
        "every request in flight is answered: {rest:?}"
    );
    let left = docker_ps(&mine).expect("docker ps");
    assert!(
        left.is_empty(),
        "containers of server {pid} left after end of input: {left:?}"
    );
}

#[test]
fn auto_says_which_backend_it_picked() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rlmkit-sandbox"))
        .args(["serve", "--stdio"])
        .env("RLMKIT_SANDBOX_BACKEND", "auto")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let request =
        json!({ "jsonrpc": "2.0", "id": 1, "method": "execute", "params": { "code": "print(1)" } });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{request}\n").as_bytes()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let response: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(response["result"]["backend"], "restricted", "{response}");
    assert!(stderr.contains("using the restricted runner"), "{stderr}");
}
