//! Attack-style tests of the hardened restricted runner.
//!
//! Each test first proves that its probe works where nothing stops it (an
//! "unhardened" executor with namespaces, Landlock, seccomp and the privilege
//! drop turned off, or the test process itself), then that the default
//! (hardened) executor stops it. A test whose protection the executor reports
//! as not enforced on this machine is skipped with the report's reason, and
//! fails instead when `RLMKIT_SANDBOX_REQUIRE_HARDENING=1` (as in CI).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on failure.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rstest::{fixture, rstest};
use sandbox_core::{
    Error, ExecutionRequest, ExecutionResult, Executor, Limits, Protection, ProtectionState, Status,
};
use sandbox_restricted::{RestrictedExecutor, RestrictedExecutorBuilder};

/// Set to `1` to turn "this machine cannot enforce it" skips into failures.
const REQUIRE_HARDENING: &str = "RLMKIT_SANDBOX_REQUIRE_HARDENING";
/// The first uid of the default sandbox range.
const DEFAULT_FIRST_UID: u32 = 1_500_000_000;
/// How many uids the default range is expected to span (at most).
const UID_SPAN: u32 = 65_536;
/// The variable `.cargo/config.toml` sets in every test process.
const HOST_SECRET_VAR: &str = "RLMKIT_SANDBOX_TEST_SECRET";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn hardening_required() -> bool {
    std::env::var(REQUIRE_HARDENING).is_ok_and(|v| v == "1")
}

/// Prints why a check cannot run here, or fails when hardening is required.
fn cannot_enforce_here(why: &str) {
    if hardening_required() {
        panic!("{REQUIRE_HARDENING}=1 but {why}");
    }
    eprintln!("skipped: {why} (set {REQUIRE_HARDENING}=1 to make this a failure)");
}

/// Whether `executor` reports every protection of `needed` as enforced; when
/// not, prints (or, in CI, fails with) the report's reasons.
fn enforces(executor: &RestrictedExecutor, needed: &[Protection]) -> bool {
    let report = executor.isolation();
    let gaps: Vec<String> = needed
        .iter()
        .filter(|p| !report.is_enforced(**p))
        .map(|p| match report.get(*p) {
            Some(entry) => format!(
                "{} is {}: {}",
                p.as_str(),
                entry.state.as_str(),
                entry.detail
            ),
            None => format!("{} is missing from the report", p.as_str()),
        })
        .collect();
    if gaps.is_empty() {
        return true;
    }
    cannot_enforce_here(&format!(
        "the hardened executor does not enforce what this test needs: {}",
        gaps.join("; ")
    ));
    false
}

/// The effective uid of the test process, read without libc.
fn test_process_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .expect("/proc/self/status has a Uid line")
}

fn is_root() -> bool {
    test_process_uid() == 0
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A temporary directory anyone may write into, so that only the sandbox
/// (not file permissions) can stop a write there.
fn world_writable_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o777);
    dir
}

fn describe(result: &ExecutionResult) -> String {
    format!(
        "status={} exit={:?} signal={:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        result.status,
        result.exit_code,
        result.signal,
        String::from_utf8_lossy(&result.stdout[..result.stdout.len().min(4000)]),
        String::from_utf8_lossy(&result.stderr[..result.stderr.len().min(4000)]),
    )
}

async fn run(executor: &RestrictedExecutor, request: ExecutionRequest) -> ExecutionResult {
    match executor.execute(request).await {
        Ok(result) => result,
        Err(error) => panic!("the execution failed to start: {error} ({error:?})"),
    }
}

/// Runs `request` and checks that the program exited 0 (probes catch their
/// own failures and print them, so a non-zero exit is a broken probe).
async fn run_probe(executor: &RestrictedExecutor, request: ExecutionRequest) -> Probe {
    let result = run(executor, request).await;
    assert_eq!(
        (result.status, result.exit_code),
        (Status::Exited, Some(0)),
        "the probe itself failed: {}",
        describe(&result)
    );
    Probe::new(result)
}

/// A finished probe whose stdout holds `key=value` lines.
struct Probe {
    result: ExecutionResult,
    fields: BTreeMap<String, String>,
}

impl Probe {
    fn new(result: ExecutionResult) -> Self {
        let fields = result
            .stdout_text()
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Probe { result, fields }
    }

    /// The value of `key`; fails (showing the whole run) when it is missing.
    fn get(&self, key: &str) -> &str {
        match self.fields.get(key) {
            Some(value) => value,
            None => panic!("the probe printed no `{key}=`: {}", describe(&self.result)),
        }
    }

    fn describe(&self) -> String {
        describe(&self.result)
    }
}

/// Whether a probe's read of a denied file got nothing: an error, or an empty
/// file (the mount namespace may cover a denied file with an empty one).
fn hidden(outcome: &str) -> bool {
    outcome.is_empty() || outcome.starts_with("error")
}

/// Waits up to `limit` for process `pid` to be gone (reaped, not a zombie).
fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/status")) {
            Err(_) => return true,
            Ok(text)
                if text
                    .lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z')) => {}
            Ok(_) => {}
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill_9(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

/// A Python prelude giving `libc` (with errno) and `call(nr, *args)` for raw syscalls.
const CTYPES_PRELUDE: &str = r#"
import ctypes, errno, os, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def err():
    e = ctypes.get_errno()
    return errno.errorcode.get(e, str(e))
def call(nr, *args):
    ctypes.set_errno(0)
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    r = libc.syscall(ctypes.c_long(nr), *conv)
    return f'{r} {err()}' if r < 0 else f'{r} ok'
def buf(size, fields=()):
    b = ctypes.create_string_buffer(size)
    for offset, fmt, value in fields:
        struct.pack_into(fmt, b, offset, value)
    return b
"#;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// A builder whose working directories go to `temp`.
fn hardened_builder(temp: &Path) -> RestrictedExecutorBuilder {
    RestrictedExecutor::builder().temp_dir(temp)
}

/// The same, with every hardening layer turned off: the baseline that shows a probe works.
fn unhardened_builder(temp: &Path) -> RestrictedExecutorBuilder {
    RestrictedExecutor::builder()
        .temp_dir(temp)
        .namespaces(false)
        .landlock(false)
        .seccomp(false)
        .drop_privileges(false)
}

/// The default (hardened) executor and an unhardened one, both placing their
/// working directories in a directory of the test's own.
struct Sandboxes {
    hardened: RestrictedExecutor,
    unhardened: RestrictedExecutor,
    temp: tempfile::TempDir,
}

#[fixture]
fn sandboxes() -> Sandboxes {
    let temp = tempfile::tempdir().unwrap();
    // tempfile makes 0700 directories; a dropped-privilege sandbox uid must
    // still reach its own working directory below this one.
    chmod(temp.path(), 0o711);
    let hardened = hardened_builder(temp.path())
        .build()
        .expect("the hardened executor builds");
    let unhardened = unhardened_builder(temp.path())
        .build()
        .expect("the unhardened executor builds");
    Sandboxes {
        hardened,
        unhardened,
        temp,
    }
}

impl Sandboxes {
    fn assert_nothing_left(&self) {
        let left: Vec<_> = std::fs::read_dir(self.temp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "working directories left behind: {left:?}");
    }
}

// ---------------------------------------------------------------------------
// 1-2. Network
// ---------------------------------------------------------------------------

const TCP_PROBE: &str = r#"
import os, socket
try:
    s = socket.create_connection(('127.0.0.1', int(os.environ['PORT'])), timeout=3)
    print('outcome=connected')
except OSError as e:
    print(f'outcome=blocked {type(e).__name__} {e}')
"#;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_to_a_host_listener_is_blocked(sandboxes: Sandboxes) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();

    let baseline = run_probe(
        &sandboxes.unhardened,
        ExecutionRequest::python(TCP_PROBE).env("PORT", &port),
    )
    .await;
    assert_eq!(
        baseline.get("outcome"),
        "connected",
        "the probe must reach the listener without hardening: {}",
        baseline.describe()
    );
    assert!(
        listener.accept().is_ok(),
        "the listener saw the baseline connection"
    );

    if !enforces(&sandboxes.hardened, &[Protection::Network]) {
        return;
    }
    let probe = run_probe(
        &sandboxes.hardened,
        ExecutionRequest::python(TCP_PROBE).env("PORT", &port),
    )
    .await;
    assert!(
        probe.get("outcome").starts_with("blocked"),
        "a TCP connection to the host left the sandbox: {}",
        probe.describe()
    );
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the host listener got a connection from the sandbox: {other:?}"),
    }
    assert!(probe.result.isolation.is_enforced(Protection::Network));
    sandboxes.assert_nothing_left();
}

const SOCKET_PROBE: &str = r#"
import os, socket
def make(name, family, kind, proto=0):
    try:
        s = socket.socket(family, kind, proto)
    except OSError as e:
        print(f'{name}=refused {type(e).__name__} {e.errno}')
        return None
    print(f'{name}=created')
    return s
u = make('udp', socket.AF_INET, socket.SOCK_DGRAM)
if u is not None:
    try:
        u.sendto(b'rlmkit-udp-probe', ('127.0.0.1', int(os.environ['PORT'])))
        print('udp_send=sent')
    except OSError as e:
        print(f'udp_send=failed {type(e).__name__} {e}')
make('tcp', socket.AF_INET, socket.SOCK_STREAM)
make('tcp6', socket.AF_INET6, socket.SOCK_STREAM)
make('udp6', socket.AF_INET6, socket.SOCK_DGRAM)
make('raw', socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
make('netlink', socket.AF_NETLINK, socket.SOCK_RAW, 0)
make('packet', socket.AF_PACKET, socket.SOCK_RAW, 0)
make('unix', socket.AF_UNIX, socket.SOCK_STREAM)
make('unix_dgram', socket.AF_UNIX, socket.SOCK_DGRAM)
try:
    a, b = socket.socketpair()
    a.sendall(b'ping')
    print('socketpair=' + b.recv(4).decode())
except OSError as e:
    print(f'socketpair=failed {type(e).__name__} {e}')
"#;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_unix_sockets_can_be_created(sandboxes: Sandboxes) {
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let port = receiver.local_addr().unwrap().port().to_string();
    let families = [
        "udp",
        "tcp",
        "tcp6",
        "udp6",
        "raw",
        "netlink",
        "packet",
        "unix",
        "unix_dgram",
    ];

    let baseline = run_probe(
        &sandboxes.unhardened,
        ExecutionRequest::python(SOCKET_PROBE).env("PORT", &port),
    )
    .await;
    assert_eq!(baseline.get("udp_send"), "sent", "{}", baseline.describe());
    let mut datagram = [0u8; 64];
    let (len, _) = receiver
        .recv_from(&mut datagram)
        .expect("the baseline datagram arrives");
    assert_eq!(&datagram[..len], b"rlmkit-udp-probe");
    for must_work in ["udp", "tcp", "netlink", "unix"] {
        assert_eq!(
            baseline.get(must_work),
            "created",
            "probe: {must_work} sockets work without hardening: {}",
            baseline.describe()
        );
    }
    assert_eq!(
        baseline.get("socketpair"),
        "ping",
        "{}",
        baseline.describe()
    );

    if !enforces(
        &sandboxes.hardened,
        &[Protection::Network, Protection::Syscalls],
    ) {
        return;
    }
    receiver.set_nonblocking(true).unwrap();
    let probe = run_probe(
        &sandboxes.hardened,
        ExecutionRequest::python(SOCKET_PROBE).env("PORT", &port),
    )
    .await;
    for family in families {
        let inside = probe.get(family);
        if family.starts_with("unix") {
            assert_eq!(
                inside,
                "created",
                "AF_UNIX sockets must keep working: {}",
                probe.describe()
            );
            continue;
        }
        if baseline.get(family) != "created" {
            eprintln!(
                "note: {family} sockets cannot be created here even without hardening ({}); the check proves little",
                baseline.get(family)
            );
        }
        assert!(
            inside.starts_with("refused"),
            "creating a {family} socket must be refused by the socket filter, got `{inside}`: {}",
            probe.describe()
        );
    }
    assert!(
        !probe.fields.contains_key("udp_send"),
        "a UDP socket was created: {}",
        probe.describe()
    );
    assert_eq!(probe.get("socketpair"), "ping", "{}", probe.describe());
    match receiver.recv_from(&mut datagram) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a datagram from the sandbox reached the host: {other:?}"),
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abstract_unix_sockets_of_the_host_are_unreachable(sandboxes: Sandboxes) {
    // Abstract AF_UNIX sockets belong to the network namespace: the socket
    // filter allows AF_UNIX, so only the namespace keeps the host's out.
    use std::os::linux::net::SocketAddrExt;
    let name = format!("rlmkit-hardening-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&address).unwrap();
    listener.set_nonblocking(true).unwrap();
    let code = r#"
import os, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect('\0' + os.environ['NAME'])
    print('outcome=connected')
except OSError as e:
    print(f'outcome=blocked {type(e).__name__} {e}')
"#;
    let baseline = run_probe(
        &sandboxes.unhardened,
        ExecutionRequest::python(code).env("NAME", &name),
    )
    .await;
    assert_eq!(
        baseline.get("outcome"),
        "connected",
        "{}",
        baseline.describe()
    );
    assert!(listener.accept().is_ok());

    if !enforces(&sandboxes.hardened, &[Protection::Network]) {
        return;
    }
    let probe = run_probe(
        &sandboxes.hardened,
        ExecutionRequest::python(code).env("NAME", &name),
    )
    .await;
    assert!(
        probe.get("outcome").starts_with("blocked"),
        "the sandbox reached a host abstract socket: {}",
        probe.describe()
    );
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the host's abstract socket got a connection: {other:?}"),
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_socket_is_unreachable(sandboxes: Sandboxes) {
    let socket = "/var/run/docker.sock";
    if !Path::new(socket).exists() {
        eprintln!("skipped: no {socket} here");
        return;
    }
    let code = format!(
        r#"
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect({socket:?})
    print('outcome=connected')
except OSError as e:
    print(f'outcome=blocked {{type(e).__name__}} {{e}}')
"#
    );
    let baseline = run_probe(&sandboxes.unhardened, ExecutionRequest::python(&code)).await;
    if baseline.get("outcome") != "connected" {
        eprintln!(
            "skipped: the test process cannot reach {socket} either: {}",
            baseline.describe()
        );
        return;
    }
    if !enforces(
        &sandboxes.hardened,
        &[Protection::User, Protection::Filesystem],
    ) {
        return;
    }
    let probe = run_probe(&sandboxes.hardened, ExecutionRequest::python(&code)).await;
    assert!(
        probe.get("outcome").starts_with("blocked"),
        "sandboxed code reached the Docker daemon (root on the host): {}",
        probe.describe()
    );
}

// ---------------------------------------------------------------------------
// 3. Reading what is denied
// ---------------------------------------------------------------------------

const LIST_AND_READ: &str = r#"
import os
d = os.environ['DIR']
try:
    print('listing=' + ','.join(sorted(os.listdir(d))))
except OSError as e:
    print(f'listing=error {type(e).__name__}')
try:
    print('secret=' + open(os.path.join(d, 'secret.txt')).read())
except OSError as e:
    print(f'secret=error {type(e).__name__}')
try:
    os.stat(os.path.join(d, 'secret.txt'))
    print('stat=visible')
except OSError as e:
    print(f'stat=error {type(e).__name__}')
"#;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_directory_is_empty_inside(sandboxes: Sandboxes) {
    let secret_dir = tempfile::tempdir().unwrap();
    // World-readable, so that only the deny list can hide it.
    chmod(secret_dir.path(), 0o755);
    let secret = format!("denied-secret-{}-7d1e", std::process::id());
    let file = secret_dir.path().join("secret.txt");
    std::fs::write(&file, &secret).unwrap();
    chmod(&file, 0o644);
    let dir = secret_dir.path().to_str().unwrap().to_owned();

    let baseline = run_probe(
        &sandboxes.unhardened,
        ExecutionRequest::python(LIST_AND_READ).env("DIR", &dir),
    )
    .await;
    assert_eq!(
        baseline.get("listing"),
        "secret.txt",
        "{}",
        baseline.describe()
    );
    assert_eq!(baseline.get("secret"), secret, "{}", baseline.describe());

    let hardened = hardened_builder(sandboxes.temp.path())
        .deny_path(secret_dir.path())
        .build()
        .unwrap();
    if !enforces(&hardened, &[Protection::Filesystem]) {
        return;
    }
    let probe = run_probe(
        &hardened,
        ExecutionRequest::python(LIST_AND_READ).env("DIR", &dir),
    )
    .await;
    let everything = format!(
        "{}{}",
        probe.result.stdout_text(),
        probe.result.stderr_text()
    );
    assert!(
        !everything.contains(&secret),
        "the denied file was read: {}",
        probe.describe()
    );
    assert!(
        hidden(probe.get("secret")),
        "a denied file must read as an error or as empty: {}",
        probe.describe()
    );
    let listing = probe.get("listing");
    assert!(
        listing.is_empty() || listing.starts_with("error"),
        "a denied directory must appear empty inside, listed `{listing}`: {}",
        probe.describe()
    );
    if listing.starts_with("error") {
        eprintln!("note: the denied directory is unlistable rather than empty");
    }
    assert!(
        probe.get("stat").starts_with("error"),
        "the denied file must not even be visible: {}",
        probe.describe()
    );
    // The host's copy is untouched.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), secret);
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_file_is_unreadable_inside(sandboxes: Sandboxes) {
    let secret_dir = tempfile::tempdir().unwrap();
    chmod(secret_dir.path(), 0o755);
    let secret = format!("denied-file-{}-92ab", std::process::id());
    let file = secret_dir.path().join("secret.txt");
    std::fs::write(&file, &secret).unwrap();
    chmod(&file, 0o644);
    let code = "import os\ntry:\n    print('secret=' + open(os.environ['FILE']).read())\nexcept OSError as e:\n    print(f'secret=error {type(e).__name__}')";
    let request = || ExecutionRequest::python(code).env("FILE", file.to_str().unwrap());

    let baseline = run_probe(&sandboxes.unhardened, request()).await;
    assert_eq!(baseline.get("secret"), secret, "{}", baseline.describe());

    let hardened = hardened_builder(sandboxes.temp.path())
        .deny_path(&file)
        .build()
        .unwrap();
    if !enforces(&hardened, &[Protection::Filesystem]) {
        return;
    }
    let probe = run_probe(&hardened, request()).await;
    assert!(
        !probe.result.stdout_text().contains(&secret),
        "the denied file was read: {}",
        probe.describe()
    );
    assert!(
        hidden(probe.get("secret")),
        "a denied file must read as an error or as empty: {}",
        probe.describe()
    );
}

const HOST_SECRETS_PROBE: &str = r#"
import os, sys
for name, path in [('shadow', '/etc/shadow'), ('gshadow', '/etc/gshadow')]:
    try:
        data = open(path).read()
        print(f'{name}=read {len(data)}')
    except OSError as e:
        print(f'{name}=error {type(e).__name__}')
for name, path in [('root', '/root'), ('home', '/home')]:
    try:
        print(f'{name}_listing=' + ','.join(sorted(os.listdir(path))))
    except OSError as e:
        print(f'{name}_listing=error {type(e).__name__}')
print('cargo_exists=' + str(os.path.exists('/root/.cargo')))
print('executable=' + sys.executable)
import json, decimal, hashlib, sqlite3
print('stdlib=' + json.dumps([str(decimal.Decimal('1.5')), hashlib.sha256(b'').hexdigest()[:8]]))
"#;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_secrets_and_home_directories_are_hidden_but_python_runs(sandboxes: Sandboxes) {
    let baseline = run_probe(
        &sandboxes.unhardened,
        ExecutionRequest::python(HOST_SECRETS_PROBE),
    )
    .await;
    let executable = PathBuf::from(baseline.get("executable"));
    assert!(executable.is_absolute(), "{}", baseline.describe());

    if !enforces(&sandboxes.hardened, &[Protection::Filesystem]) {
        return;
    }
    let probe = run_probe(
        &sandboxes.hardened,
        ExecutionRequest::python(HOST_SECRETS_PROBE),
    )
    .await;

    // The interpreter (here under /root/.pyenv) and its standard library work.
    assert_eq!(
        probe.get("executable"),
        baseline.get("executable"),
        "{}",
        probe.describe()
    );
    assert_eq!(
        probe.get("stdlib"),
        baseline.get("stdlib"),
        "{}",
        probe.describe()
    );

    for file in ["shadow", "gshadow"] {
        if baseline.get(file).starts_with("read") {
            assert!(
                probe.get(file) == "read 0" || probe.get(file).starts_with("error"),
                "/etc/{file} was readable inside: {}",
                probe.describe()
            );
        } else {
            eprintln!(
                "note: /etc/{file} is unreadable even without hardening here ({})",
                baseline.get(file)
            );
        }
    }

    for dir in ["root", "home"] {
        let key = format!("{dir}_listing");
        let outside = baseline.get(&key);
        if outside.starts_with("error") || outside.is_empty() {
            eprintln!("note: /{dir} cannot be listed or is empty without hardening ({outside})");
            continue;
        }
        // Only the path to the interpreter may show through.
        let needed = executable
            .strip_prefix(format!("/{dir}"))
            .ok()
            .and_then(|rest| rest.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        let inside = probe.get(&key);
        let leaked: Vec<&str> = if inside.starts_with("error") {
            Vec::new()
        } else {
            inside
                .split(',')
                .filter(|entry| !entry.is_empty() && Some(*entry) != needed.as_deref())
                .collect()
        };
        assert!(
            leaked.is_empty(),
            "/{dir} shows host entries {leaked:?} inside (outside: {outside}): {}",
            probe.describe()
        );
    }
    if Path::new("/root/.cargo").exists() {
        assert_eq!(
            baseline.get("cargo_exists"),
            "True",
            "{}",
            baseline.describe()
        );
        assert_eq!(
            probe.get("cargo_exists"),
            "False",
            "/root/.cargo is visible inside: {}",
            probe.describe()
        );
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_process_environment_cannot_be_read_through_proc(sandboxes: Sandboxes) {
    let secret = std::env::var(HOST_SECRET_VAR)
        .expect("the test process carries the secret (set by .cargo/config.toml)");
    let code = r#"
import os
pid = os.environ['HOST_PID']
try:
    data = open(f'/proc/{pid}/environ', 'rb').read()
    print('environ=' + data.replace(b'\0', b' ').decode(errors='replace'))
except OSError as e:
    print(f'environ=error {type(e).__name__}')
try:
    os.kill(int(pid), 0)
    print('signal=delivered')
except OSError as e:
    print(f'signal=refused {type(e).__name__}')
"#;
    let pid = std::process::id().to_string();
    let baseline = run_probe(
        &sandboxes.unhardened,
        ExecutionRequest::python(code).env("HOST_PID", &pid),
    )
    .await;
    assert!(
        baseline.get("environ").contains(&secret),
        "probe: the test process's environment is readable without hardening: {}",
        baseline.describe()
    );
    assert_eq!(
        baseline.get("signal"),
        "delivered",
        "{}",
        baseline.describe()
    );

    if !enforces(&sandboxes.hardened, &[Protection::User]) {
        return;
    }
    let probe = run_probe(
        &sandboxes.hardened,
        ExecutionRequest::python(code).env("HOST_PID", &pid),
    )
    .await;
    assert!(
        !probe.result.stdout_text().contains(&secret),
        "the host secret leaked through /proc/{pid}/environ: {}",
        probe.describe()
    );
    assert!(
        probe.get("signal").starts_with("refused"),
        "sandboxed code may signal the test process: {}",
        probe.describe()
    );
}

const PROC_PROBE: &str = r#"
import os, subprocess
pid = os.environ['HOST_PID']
print('host_pid=' + str(os.path.exists(f'/proc/{pid}')))
print('init=' + str(os.path.exists('/proc/1')))
child = subprocess.Popen(['sleep', '5'])
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
print('own=' + str(os.getpid() in pids and child.pid in pids))
print(f'visible={len(pids)}')
child.kill(); child.wait()
print('cpuinfo=' + str(open('/proc/cpuinfo').read().startswith('processor')))
"#;

/// As root, each execution gets a `/proc` of its own (`hidepid=2` with a
/// uid of its own): the host's processes, this test process and PID 1
/// included, do not appear; its own processes and `/proc/cpuinfo` do.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_processes_do_not_appear_in_proc(sandboxes: Sandboxes) {
    let pid = std::process::id().to_string();
    let request = || ExecutionRequest::python(PROC_PROBE).env("HOST_PID", &pid);
    let baseline = run_probe(&sandboxes.unhardened, request()).await;
    for (name, expected) in [("host_pid", "True"), ("init", "True"), ("own", "True")] {
        assert_eq!(
            baseline.get(name),
            expected,
            "probe: {}",
            baseline.describe()
        );
    }
    if !is_root() {
        eprintln!("skipped: only a root caller can mount a /proc of its own for the sandbox");
        return;
    }
    if !enforces(&sandboxes.hardened, &[Protection::User]) {
        return;
    }
    let (_, detail) = detail(&sandboxes.hardened, Protection::ProcessGroup);
    assert!(detail.contains("a /proc of its own"), "{detail}");
    let probe = run_probe(&sandboxes.hardened, request()).await;
    for (name, expected) in [
        ("host_pid", "False"),
        ("init", "False"),
        ("own", "True"),
        ("cpuinfo", "True"),
    ] {
        assert_eq!(probe.get(name), expected, "{name}: {}", probe.describe());
    }
    let visible: usize = probe.get("visible").parse().unwrap();
    assert!(
        visible <= 3,
        "{visible} processes visible: {}",
        probe.describe()
    );
    sandboxes.assert_nothing_left();
}

// ---------------------------------------------------------------------------
// 4, 10. Writing outside the working directory
// ---------------------------------------------------------------------------

const WRITE_PROBE: &str = r#"
import os
for i, path in enumerate(os.environ['TARGETS'].split('\n')):
    try:
        with open(path, 'w') as f:
            f.write('escaped')
        print(f't{i}=wrote')
    except OSError as e:
        print(f't{i}=refused {type(e).__name__}')
victim = os.environ['VICTIM']
for name, action in [
    ('append', lambda: open(victim, 'a').write('tampered')),
    ('truncate', lambda: os.truncate(victim, 0)),
    ('rename', lambda: os.rename(victim, victim + '.moved')),
    ('unlink', lambda: os.unlink(victim)),
    ('mkdir', lambda: os.mkdir(os.environ['NEWDIR'])),
]:
    try:
        action()
        print(f'{name}=done')
    except OSError as e:
        print(f'{name}=refused {type(e).__name__}')
for name, path in [('cwd', 'inside.txt'),
                   ('tmpdir', os.path.join(os.environ['TMPDIR'], 'scratch.txt')),
                   ('home', os.path.join(os.environ['HOME'], 'home.txt'))]:
    try:
        with open(path, 'w') as f:
            f.write('ok')
        print(f'{name}=' + open(path).read())
    except OSError as e:
        print(f'{name}=error {type(e).__name__} {e}')
try:
    with open('/dev/null', 'w') as f:
        f.write('x')
    print('devnull=ok')
except OSError as e:
    print(f'devnull=error {e}')
"#;

/// The write probe aimed at `outside`, `/tmp`, `/var/tmp` and `/dev/shm`,
/// with file names unique to `tag`.
fn write_probe(outside: &Path, victim: &Path, tag: &str) -> (ExecutionRequest, Vec<PathBuf>) {
    let unique = format!("rlmkit-escape-{}-{tag}", std::process::id());
    let mut targets = vec![outside.join(format!("{unique}.txt"))];
    for shared in ["/tmp", "/var/tmp", "/dev/shm"] {
        if Path::new(shared).is_dir() {
            targets.push(Path::new(shared).join(format!("{unique}.txt")));
        }
    }
    let joined = targets
        .iter()
        .map(|p| p.to_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let request = ExecutionRequest::python(WRITE_PROBE)
        .env("TARGETS", joined)
        .env("VICTIM", victim.to_str().unwrap())
        .env(
            "NEWDIR",
            outside.join(format!("{unique}-dir")).to_str().unwrap(),
        );
    (request, targets)
}

fn make_victim(outside: &Path) -> PathBuf {
    let victim = outside.join("victim.txt");
    std::fs::write(&victim, "original").unwrap();
    chmod(&victim, 0o666);
    victim
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_outside_the_working_directory_are_refused(sandboxes: Sandboxes) {
    let outside = world_writable_dir();

    // Baseline: every write lands.
    let victim = make_victim(outside.path());
    let (request, targets) = write_probe(outside.path(), &victim, "baseline");
    let baseline = run_probe(&sandboxes.unhardened, request).await;
    for (i, target) in targets.iter().enumerate() {
        let wrote = baseline.get(&format!("t{i}")) == "wrote" && target.exists();
        let _ = std::fs::remove_file(target);
        assert!(
            wrote,
            "probe: {} is writable without hardening: {}",
            target.display(),
            baseline.describe()
        );
    }
    for action in ["append", "truncate", "rename", "mkdir"] {
        assert_eq!(baseline.get(action), "done", "{}", baseline.describe());
    }
    assert_eq!(
        baseline.get("unlink"),
        "refused FileNotFoundError",
        "renamed away first: {}",
        baseline.describe()
    );

    if !enforces(&sandboxes.hardened, &[Protection::Filesystem]) {
        return;
    }
    let victim = make_victim(outside.path());
    let (request, targets) = write_probe(outside.path(), &victim, "hardened");
    let probe = run_probe(&sandboxes.hardened, request).await;
    let mut escaped = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let outcome = probe.get(&format!("t{i}")).to_owned();
        if target.exists() || !outcome.starts_with("refused") {
            escaped.push(format!("{} ({outcome})", target.display()));
            let _ = std::fs::remove_file(target);
        }
    }
    assert!(
        escaped.is_empty(),
        "writes escaped the sandbox: {escaped:?}: {}",
        probe.describe()
    );
    for action in ["append", "truncate", "rename", "unlink", "mkdir"] {
        assert!(
            probe.get(action).starts_with("refused"),
            "`{action}` on a host file outside the working directory was allowed: {}",
            probe.describe()
        );
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original");

    // Writes where they belong keep working.
    for allowed in ["cwd", "tmpdir", "home"] {
        assert_eq!(
            probe.get(allowed),
            "ok",
            "writing to {allowed} must work: {}",
            probe.describe()
        );
    }
    assert_eq!(probe.get("devnull"), "ok", "{}", probe.describe());
    sandboxes.assert_nothing_left();
}

const SYMLINK_PROBE: &str = r#"
import os
os.symlink(os.environ['OUTSIDE'], 'link')
try:
    with open('link/escape.txt', 'w') as f:
        f.write('escaped')
    print('write=wrote')
except OSError as e:
    print(f'write=refused {type(e).__name__}')
try:
    os.link(os.environ['VICTIM'], 'hard')
    print('hardlink=made')
    try:
        with open('hard', 'a') as f:
            f.write('tampered')
        print('hardlink_write=wrote')
    except OSError as e:
        print(f'hardlink_write=refused {type(e).__name__}')
except OSError as e:
    print(f'hardlink=refused {type(e).__name__}')
"#;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_planted_in_the_working_directory_do_not_let_writes_escape(sandboxes: Sandboxes) {
    let outside = world_writable_dir();
    let escape = outside.path().join("escape.txt");
    let request = |victim: &Path| {
        ExecutionRequest::python(SYMLINK_PROBE)
            .env("OUTSIDE", outside.path().to_str().unwrap())
            .env("VICTIM", victim.to_str().unwrap())
    };

    let victim = make_victim(outside.path());
    let baseline = run_probe(&sandboxes.unhardened, request(&victim)).await;
    assert_eq!(baseline.get("write"), "wrote", "{}", baseline.describe());
    assert!(
        escape.exists(),
        "probe: the symlinked write lands outside without hardening"
    );
    std::fs::remove_file(&escape).unwrap();
    let same_filesystem = baseline.get("hardlink") == "made";
    if same_filesystem {
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "originaltampered"
        );
    } else {
        eprintln!(
            "note: the hard-link probe cannot work here ({}): working directories and the test's temp dir are on different filesystems",
            baseline.get("hardlink")
        );
    }

    if !enforces(&sandboxes.hardened, &[Protection::Filesystem]) {
        return;
    }
    let victim = make_victim(outside.path());
    let probe = run_probe(&sandboxes.hardened, request(&victim)).await;
    assert!(
        probe.get("write").starts_with("refused"),
        "a write through a symlink escaped: {}",
        probe.describe()
    );
    assert!(
        !escape.exists(),
        "{} appeared on the host",
        escape.display()
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "original",
        "a host file was modified through a hard link: {}",
        probe.describe()
    );
    sandboxes.assert_nothing_left();
}

const PLANT_PROBE: &str = r#"
import os
root = os.environ['VICTIM_DIR']
candidates = [root] + [os.path.join(root, d) for d in ('work', 'tmp', 'program')]
for dirpath, dirnames, _ in os.walk(root):
    candidates += [dirpath] + [os.path.join(dirpath, n) for n in dirnames]
hits = []
for d in sorted(set(candidates)):
    try:
        with open(os.path.join(d, 'planted.txt'), 'w') as f:
            f.write('x')
        hits.append(d)
    except OSError:
        pass
print('planted=' + ','.join(hits))
"#;

/// Starts a hardened victim, finds its workspace on the host side, and lets
/// `attacker` try to plant a file anywhere in it while the victim runs.
async fn attack_a_running_execution(
    sandboxes: &Sandboxes,
    attacker: &RestrictedExecutor,
) -> (ExecutionResult, Probe) {
    let victim_code =
        "import os, time\ntime.sleep(4)\nprint('files=' + ','.join(sorted(os.listdir('.'))))";
    let victim = sandboxes
        .hardened
        .execute(ExecutionRequest::python(victim_code));
    let attack = async {
        let deadline = Instant::now() + Duration::from_secs(3);
        let target = loop {
            let dirs: Vec<PathBuf> = std::fs::read_dir(sandboxes.temp.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            if let Some(dir) = dirs.first() {
                break dir.clone();
            }
            assert!(Instant::now() < deadline, "the victim never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        run_probe(
            attacker,
            ExecutionRequest::python(PLANT_PROBE).env("VICTIM_DIR", target.to_str().unwrap()),
        )
        .await
    };
    let (victim, attack) = tokio::join!(victim, attack);
    (victim.unwrap(), attack)
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_execution_cannot_write_into_another(sandboxes: Sandboxes) {
    // Probe: without hardening the attacker plants files in the victim's working directory.
    let (victim, baseline) = attack_a_running_execution(&sandboxes, &sandboxes.unhardened).await;
    assert!(
        baseline.get("planted").contains("/work"),
        "probe: the attacker reaches the victim's working directory: {}",
        baseline.describe()
    );
    assert!(
        victim.stdout_text().contains("planted.txt"),
        "probe: the victim sees the planted file: {}",
        describe(&victim)
    );

    if !enforces(&sandboxes.hardened, &[Protection::Filesystem]) {
        return;
    }
    let (victim, attack) = attack_a_running_execution(&sandboxes, &sandboxes.hardened).await;
    assert_eq!(
        attack.get("planted"),
        "",
        "one execution wrote into another's workspace: {}",
        attack.describe()
    );
    assert!(
        !victim.stdout_text().contains("planted.txt"),
        "{}",
        describe(&victim)
    );
    sandboxes.assert_nothing_left();
}

const READ_PEER_PROBE: &str = r#"
import os
path = os.path.join(os.environ['VICTIM_DIR'], 'work', 'input.txt')
try:
    print('peer=' + open(path).read())
except OSError as e:
    print(f'peer=error {type(e).__name__}')
print(f'uid={os.getuid()}')
pid = int(os.environ['VICTIM_PID'])
if pid:
    try:
        os.kill(pid, 0)
        print('signal=delivered')
    except OSError as e:
        print(f'signal=refused {type(e).__name__}')
else:
    print('signal=no-pid')
"#;

/// The pid of a process whose working directory is `dir`, if any.
fn process_in(dir: &Path) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            (std::fs::read_link(entry.path().join("cwd")).ok()? == dir).then_some(pid)
        })
}

/// Starts a hardened victim holding a secret input file, and lets `attacker`
/// read it from the host-side path of the victim's workspace.
async fn read_a_running_execution(
    victim_executor: &RestrictedExecutor,
    temp: &Path,
    attacker: &RestrictedExecutor,
    secret: &str,
) -> (ExecutionResult, Probe) {
    let victim = victim_executor.execute(
        ExecutionRequest::python("import os, time\nprint(f'uid={os.getuid()}')\ntime.sleep(3)")
            .file("input.txt", secret),
    );
    let attack = async {
        let deadline = Instant::now() + Duration::from_secs(3);
        let target = loop {
            let dirs: Vec<PathBuf> = std::fs::read_dir(temp)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            if let Some(dir) = dirs.first() {
                break dir.clone();
            }
            assert!(Instant::now() < deadline, "the victim never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Let the victim get going (and take its uid) before the attacker starts.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pid = process_in(&target.join("work")).unwrap_or(0);
        run_probe(
            attacker,
            ExecutionRequest::python(READ_PEER_PROBE)
                .env("VICTIM_DIR", target.to_str().unwrap())
                .env("VICTIM_PID", pid.to_string()),
        )
        .await
    };
    let (victim, attack) = tokio::join!(victim, attack);
    (victim.unwrap(), attack)
}

#[rstest]
#[case::same_executor(true)]
#[case::two_executors(false)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_execution_cannot_read_another(sandboxes: Sandboxes, #[case] same_executor: bool) {
    let secret = format!("peer-secret-{}-c0ffee", std::process::id());
    let (_, baseline) = read_a_running_execution(
        &sandboxes.hardened,
        sandboxes.temp.path(),
        &sandboxes.unhardened,
        &secret,
    )
    .await;
    assert_eq!(
        baseline.get("peer"),
        secret,
        "probe: without hardening the attacker reads the victim's input: {}",
        baseline.describe()
    );
    let baseline_signal = baseline.get("signal");
    assert!(
        baseline_signal == "delivered" || baseline_signal == "no-pid",
        "probe: without hardening the attacker signals the victim: {}",
        baseline.describe()
    );

    if !enforces(
        &sandboxes.hardened,
        &[Protection::Filesystem, Protection::User],
    ) {
        return;
    }
    // A second executor in the same process, as two tools of one agent would have.
    let other = hardened_builder(sandboxes.temp.path()).build().unwrap();
    let attacker = if same_executor {
        &sandboxes.hardened
    } else {
        &other
    };
    let (victim, attack) = read_a_running_execution(
        &sandboxes.hardened,
        sandboxes.temp.path(),
        attacker,
        &secret,
    )
    .await;
    let victim_uid = Probe::new(victim.clone()).get("uid").to_owned();
    assert!(
        !attack.result.stdout_text().contains(&secret),
        "one execution read another's input file (victim uid {victim_uid}, attacker uid {}): {}",
        attack.get("uid"),
        attack.describe()
    );
    match attack.get("signal") {
        "no-pid" => eprintln!("note: the victim's pid was not found; the signal check did not run"),
        outcome => assert!(
            outcome.starts_with("refused"),
            "one execution may signal another: {}",
            attack.describe()
        ),
    }
    assert_ne!(
        attack.get("uid"),
        victim_uid,
        "two concurrent executions ran as the same uid (same executor: {same_executor})"
    );
}

// ---------------------------------------------------------------------------
// 5-6. Privileges
// ---------------------------------------------------------------------------

const STATUS_PROBE: &str = r#"
for line in open('/proc/self/status'):
    key, _, value = line.partition(':')
    if key in ('NoNewPrivs', 'CapEff', 'CapPrm', 'CapInh', 'CapAmb', 'Seccomp', 'Uid', 'Gid', 'Groups'):
        print(f'{key}={value.strip()}')
"#;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_new_privileges_and_no_capabilities(sandboxes: Sandboxes) {
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(
        own.contains("\nNoNewPrivs:\t") && own.contains("\nCapEff:\t"),
        "{own}"
    );
    let baseline = run_probe(
        &sandboxes.unhardened,
        ExecutionRequest::python(STATUS_PROBE),
    )
    .await;
    if is_root() {
        assert_ne!(
            baseline.get("CapEff"),
            "0000000000000000",
            "probe: root has capabilities without hardening: {}",
            baseline.describe()
        );
    }

    if !enforces(&sandboxes.hardened, &[Protection::Syscalls]) {
        return;
    }
    let probe = run_probe(&sandboxes.hardened, ExecutionRequest::python(STATUS_PROBE)).await;
    assert_eq!(probe.get("NoNewPrivs"), "1", "{}", probe.describe());
    for caps in ["CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(
            probe.get(caps),
            "0000000000000000",
            "{caps}: {}",
            probe.describe()
        );
    }
    assert_eq!(
        probe.get("Seccomp"),
        "2",
        "a seccomp filter is in force: {}",
        probe.describe()
    );
}

const ID_PROBE: &str = "import os\nprint(f'uid={os.getuid()}')\nprint(f'euid={os.geteuid()}')\nprint(f'gid={os.getgid()}')\nprint(f'egid={os.getegid()}')\nprint(f'groups={os.getgroups()}')";

fn assert_ids_in_range(probe: &Probe, first: u32, count: u32) {
    for key in ["uid", "euid", "gid", "egid"] {
        let id: u64 = probe.get(key).parse().unwrap();
        assert!(
            (u64::from(first)..u64::from(first) + u64::from(count)).contains(&id),
            "{key} {id} is outside the sandbox range [{first}, {first}+{count}): {}",
            probe.describe()
        );
    }
    assert_eq!(
        probe.get("groups"),
        "[]",
        "supplementary groups must be dropped: {}",
        probe.describe()
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_callers_run_code_as_an_unprivileged_sandbox_uid(sandboxes: Sandboxes) {
    if !is_root() {
        eprintln!(
            "skipped: the test process is not root (uid {}), so there is nothing to drop",
            test_process_uid()
        );
        return;
    }
    let baseline = run_probe(&sandboxes.unhardened, ExecutionRequest::python(ID_PROBE)).await;
    assert_eq!(
        baseline.get("uid"),
        "0",
        "probe: without the drop the code runs as root: {}",
        baseline.describe()
    );

    if !enforces(&sandboxes.hardened, &[Protection::User]) {
        return;
    }
    let probe = run_probe(&sandboxes.hardened, ExecutionRequest::python(ID_PROBE)).await;
    assert_ne!(probe.get("uid"), "0", "{}", probe.describe());
    assert_ids_in_range(&probe, DEFAULT_FIRST_UID, UID_SPAN);

    // A shell sees the same.
    let shell = run_probe(
        &sandboxes.hardened,
        ExecutionRequest::shell("echo uid=$(id -u); echo groups=$(id -G)"),
    )
    .await;
    assert_eq!(shell.get("uid"), probe.get("uid"), "{}", shell.describe());
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_uid_range_is_configurable(sandboxes: Sandboxes) {
    if !is_root() {
        eprintln!("skipped: the test process is not root");
        return;
    }
    let (first, count) = (1_600_000_000, 1_000);
    let executor = hardened_builder(sandboxes.temp.path())
        .sandbox_uids(first, count)
        .build()
        .unwrap();
    if !enforces(&executor, &[Protection::User]) {
        return;
    }
    let probe = run_probe(&executor, ExecutionRequest::python(ID_PROBE)).await;
    assert_ids_in_range(&probe, first, count);
}

// ---------------------------------------------------------------------------
// 7-8. Process group escapes and fork bombs
// ---------------------------------------------------------------------------

const SESSION_PROBE: &str = r#"
import os
def in_child(name, action):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            action()
            msg = f'{name}=ok'
        except OSError as e:
            msg = f'{name}=refused {type(e).__name__}'
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    data = b''
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    print(data.decode())
in_child('setsid', os.setsid)
in_child('setpgid', lambda: os.setpgid(0, 0))
"#;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_can_leave_the_process_group(sandboxes: Sandboxes) {
    let baseline = run_probe(
        &sandboxes.unhardened,
        ExecutionRequest::python(SESSION_PROBE),
    )
    .await;
    assert_eq!(baseline.get("setsid"), "ok", "{}", baseline.describe());
    assert_eq!(baseline.get("setpgid"), "ok", "{}", baseline.describe());

    if !enforces(&sandboxes.hardened, &[Protection::Syscalls]) {
        return;
    }
    let probe = run_probe(&sandboxes.hardened, ExecutionRequest::python(SESSION_PROBE)).await;
    assert_eq!(
        probe.get("setsid"),
        "refused PermissionError",
        "a child could start its own session: {}",
        probe.describe()
    );
    assert!(
        probe.get("setpgid").starts_with("refused"),
        "a child could start its own process group: {}",
        probe.describe()
    );
}

const ESCAPEE: &str = r#"
import os, time
if os.fork() == 0:
    try:
        os.setsid()
    except OSError:
        pass
    if os.fork() == 0:
        print(os.getpid(), flush=True)
        time.sleep(600)
    os._exit(0)
time.sleep(600)
"#;

#[rstest]
#[case::with_cgroups(true)]
#[case::without_cgroups(false)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_forked_escapee_dies_at_the_timeout(#[case] cgroups: bool) {
    let temp = tempfile::tempdir().unwrap();
    chmod(temp.path(), 0o711);
    let executor = hardened_builder(temp.path())
        .cgroups(cgroups)
        .build()
        .unwrap();
    // Without cgroups only the seccomp rule against setsid keeps the escapee in the group.
    if !enforces(&executor, &[Protection::Syscalls]) {
        return;
    }
    let request =
        ExecutionRequest::python(ESCAPEE).limits(Limits::builder().timeout(Duration::from_secs(2)));
    let result = run(&executor, request).await;
    assert_eq!(result.status, Status::TimedOut, "{}", describe(&result));
    let pid: u32 = result
        .stdout_text()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the grandchild printed its pid: {}", describe(&result)));
    let gone = gone_within(pid, Duration::from_secs(3));
    if !gone {
        kill_9(pid);
    }
    assert!(
        gone,
        "grandchild {pid} survived the timeout (cgroups: {cgroups})"
    );
    assert!(
        std::fs::read_dir(temp.path()).unwrap().next().is_none(),
        "a working directory was left behind"
    );
}

const FORK_LOOP: &str = r#"
import os, time
started = failed = 0
for _ in range(300):
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    started += 1
print(f'started={started}')
print(f'failed={failed}')
"#;

#[rstest]
#[case::with_cgroups(true)]
#[case::without_cgroups(false)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_contained(#[case] cgroups: bool) {
    let temp = tempfile::tempdir().unwrap();
    chmod(temp.path(), 0o711);
    let executor = hardened_builder(temp.path())
        .cgroups(cgroups)
        .build()
        .unwrap();
    let processes = executor.isolation().get(Protection::Processes).cloned();
    match &processes {
        Some(entry) if entry.state != ProtectionState::NotEnforced => {}
        other => {
            // As root without cgroups the limit only holds once privileges are dropped.
            cannot_enforce_here(&format!(
                "the process limit is not in force (cgroups: {cgroups}): {other:?}"
            ));
            return;
        }
    }
    let pids = 32;
    let request = ExecutionRequest::python(FORK_LOOP).limits(
        Limits::builder()
            .pids(pids)
            .timeout(Duration::from_secs(20)),
    );
    let started_at = Instant::now();
    let probe = run_probe(&executor, request).await;
    let started: u32 = probe.get("started").parse().unwrap();
    let failed: u32 = probe.get("failed").parse().unwrap();
    // Without cgroups RLIMIT_NPROC counts the uid's other processes too, which
    // may come and go during the loop: allow some slack, but not 300 forks.
    let ceiling = if cgroups { pids } else { 2 * pids };
    assert!(
        started < ceiling,
        "{started} processes started under a limit of {pids} (cgroups: {cgroups}): {}",
        probe.describe()
    );
    assert!(failed > 0, "no fork was refused: {}", probe.describe());
    assert!(
        started_at.elapsed() < Duration::from_secs(15),
        "{:?}",
        started_at.elapsed()
    );
}

// ---------------------------------------------------------------------------
// 9, 11. Dangerous system calls
// ---------------------------------------------------------------------------

const PTRACE_PROBE: &str = r#"
import os, signal, time
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.process_vm_readv.restype = ctypes.c_ssize_t
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
ctypes.set_errno(0)
r = libc.process_vm_readv(child, None, 0, None, 0, 0)
print(f'vm_readv={r} {err() if r < 0 else "ok"}')
ctypes.set_errno(0)
r = libc.ptrace(16, child, None, None)  # PTRACE_ATTACH
print(f'attach_child={r} {err() if r < 0 else "ok"}')
if r == 0:
    os.waitpid(child, 0)
    libc.ptrace(17, child, None, None)  # PTRACE_DETACH
else:
    # Only once attaching to our own child failed: never stop the parent for real.
    parent = os.getppid()
    ctypes.set_errno(0)
    r = libc.ptrace(16, parent, None, None)
    print(f'attach_parent={r} {err() if r < 0 else "ok"}')
    if r == 0:
        os.waitpid(parent, os.WUNTRACED | 0x40000000)
        libc.ptrace(17, parent, None, ctypes.c_void_p(signal.SIGCONT))
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
"#;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ptrace_and_process_vm_access_are_refused(sandboxes: Sandboxes) {
    let code = format!("{CTYPES_PRELUDE}{PTRACE_PROBE}");
    let baseline = run_probe(&sandboxes.unhardened, ExecutionRequest::python(&code)).await;
    assert_eq!(
        baseline.get("attach_child"),
        "0 ok",
        "probe: ptrace works without hardening: {}",
        baseline.describe()
    );
    assert_eq!(baseline.get("vm_readv"), "0 ok", "{}", baseline.describe());

    if !enforces(&sandboxes.hardened, &[Protection::Syscalls]) {
        return;
    }
    let probe = run_probe(&sandboxes.hardened, ExecutionRequest::python(&code)).await;
    assert!(
        probe.get("attach_child").starts_with("-1"),
        "ptrace(PTRACE_ATTACH) of a sibling worked: {}",
        probe.describe()
    );
    assert!(
        probe.get("attach_parent").starts_with("-1"),
        "ptrace(PTRACE_ATTACH) of the parent worked: {}",
        probe.describe()
    );
    assert!(
        probe.get("vm_readv").starts_with("-1"),
        "process_vm_readv is allowed: {}",
        probe.describe()
    );
}

const NAMESPACE_PROBE: &str = r#"
os.mkdir('mnt')
def in_child(action):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, action().encode())
        os._exit(0)
    os.close(w)
    data = b''
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    print(data.decode())
def user_ns():
    ctypes.set_errno(0)
    r = libc.unshare(0x10000000)  # CLONE_NEWUSER
    return f'unshare_user={r} {err() if r < 0 else "ok"}'
def net_ns():
    ctypes.set_errno(0)
    r = libc.unshare(0x40000000)  # CLONE_NEWNET
    return f'unshare_net={r} {err() if r < 0 else "ok"}'
def mount_in_own_ns():
    ctypes.set_errno(0)
    r = libc.unshare(0x10000000 | 0x00020000)  # CLONE_NEWUSER | CLONE_NEWNS
    out = f'unshare_user_mnt={r} {err() if r < 0 else "ok"}\n'
    ctypes.set_errno(0)
    r = libc.mount(b'none', b'mnt', b'tmpfs', 0, None)
    return out + f'mount={r} {err() if r < 0 else "ok"}'
in_child(user_ns)
in_child(net_ns)
in_child(mount_in_own_ns)
try:
    os.unshare  # Python 3.12+
    try:
        os.unshare(os.CLONE_NEWUSER)
        print('os_unshare=ok')
    except OSError as e:
        print(f'os_unshare=refused {type(e).__name__}')
except AttributeError:
    print('os_unshare=absent')
"#;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_and_mounts_cannot_be_made_inside(sandboxes: Sandboxes) {
    let code = format!("{CTYPES_PRELUDE}{NAMESPACE_PROBE}");
    let baseline = run_probe(&sandboxes.unhardened, ExecutionRequest::python(&code)).await;
    for key in ["unshare_user", "unshare_user_mnt", "mount"] {
        assert_eq!(
            baseline.get(key),
            "0 ok",
            "probe: {key} works without hardening: {}",
            baseline.describe()
        );
    }

    if !enforces(&sandboxes.hardened, &[Protection::Syscalls]) {
        return;
    }
    let probe = run_probe(&sandboxes.hardened, ExecutionRequest::python(&code)).await;
    for key in ["unshare_user", "unshare_net", "unshare_user_mnt", "mount"] {
        assert!(
            probe.get(key).starts_with("-1"),
            "{key} succeeded inside: {}",
            probe.describe()
        );
    }
    let os_unshare = probe.get("os_unshare");
    assert!(
        os_unshare == "absent" || os_unshare == "refused PermissionError",
        "{}",
        probe.describe()
    );
}

/// Calls with arguments that succeed (x86_64) for root without a filter.
const SYSCALL_TABLE_PROBE: &str = r#"
print('keyctl=' + call(250, 0, -3, 1))  # KEYCTL_GET_KEYRING_ID, session keyring, create
print('bpf=' + call(321, 0, buf(72, [(0, 'I', 2), (4, 'I', 4), (8, 'I', 4), (12, 'I', 1)]), 72))  # array map
print('perf_event_open=' + call(298, buf(128, [(0, 'I', 1), (4, 'I', 64)]), 0, -1, -1, 0))  # software cpu clock
print('userfaultfd=' + call(323, 1))  # UFFD_USER_MODE_ONLY
print('io_uring_setup=' + call(425, 1, buf(120)))
print('clone3=' + call(435, 0, 0))
import threading, subprocess
box = []
t = threading.Thread(target=lambda: box.append('ran'))
t.start(); t.join()
print('thread=' + ','.join(box))
print('subprocess=' + subprocess.run(['echo', 'child'], capture_output=True, text=True).stdout.strip())
pid = os.fork()
if pid == 0:
    os._exit(7)
print(f'fork={os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}')
"#;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_attack_surface_syscalls_are_refused(sandboxes: Sandboxes) {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipped: the probe uses x86_64 system call numbers");
        return;
    }
    let code = format!("{CTYPES_PRELUDE}{SYSCALL_TABLE_PROBE}");
    let baseline = run_probe(&sandboxes.unhardened, ExecutionRequest::python(&code)).await;
    assert_ne!(
        baseline.get("clone3"),
        "-1 ENOSYS",
        "{}",
        baseline.describe()
    );

    if !enforces(&sandboxes.hardened, &[Protection::Syscalls]) {
        return;
    }
    let probe = run_probe(&sandboxes.hardened, ExecutionRequest::python(&code)).await;
    let mut allowed = Vec::new();
    for call in [
        "keyctl",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
    ] {
        let outside = baseline.get(call);
        let inside = probe.get(call);
        if !outside.ends_with(" ok") {
            eprintln!(
                "note: {call} fails here even without hardening ({outside}); its check proves little"
            );
        }
        if !inside.starts_with("-1") {
            allowed.push(format!("{call}: {inside}"));
        }
    }
    assert!(
        allowed.is_empty(),
        "refused calls went through: {allowed:?}: {}",
        probe.describe()
    );
    assert_eq!(
        probe.get("clone3"),
        "-1 ENOSYS",
        "clone3 must fail with ENOSYS so libc falls back to clone: {}",
        probe.describe()
    );
    // What ordinary programs need still works.
    assert_eq!(probe.get("thread"), "ran", "{}", probe.describe());
    assert_eq!(probe.get("subprocess"), "child", "{}", probe.describe());
    assert_eq!(probe.get("fork"), "7", "{}", probe.describe());
}

// ---------------------------------------------------------------------------
// 13. The report, degradation and fail-closed requirements
// ---------------------------------------------------------------------------

fn detail(executor: &RestrictedExecutor, protection: Protection) -> (ProtectionState, String) {
    let report = executor.isolation();
    let entry = report
        .get(protection)
        .unwrap_or_else(|| panic!("the report has no {} entry:\n{report}", protection.as_str()));
    (entry.state, entry.detail.clone())
}

fn expect_unavailable(build: Result<RestrictedExecutor, Error>, protection: &str) {
    match build {
        Err(error @ Error::ProtectionUnavailable { .. }) => {
            let message = error.to_string();
            if let Error::ProtectionUnavailable {
                protection: named,
                reason,
                ..
            } = &error
            {
                assert_eq!(named, protection, "{message}");
                assert!(
                    !reason.trim().is_empty(),
                    "the error must say why: {message}"
                );
            }
            assert!(
                message.contains(protection),
                "the message names {protection}: {message}"
            );
            assert_eq!(error.kind(), "protection_unavailable");
            assert!(
                !error.is_unavailable(),
                "a missing protection is not a reason to fall back"
            );
        }
        Err(other) => {
            panic!("expected ProtectionUnavailable for {protection}, got {other} ({other:?})")
        }
        Ok(executor) => panic!(
            "require({protection}) must fail closed, but the executor built with:\n{}",
            executor.isolation()
        ),
    }
}

#[rstest]
fn turning_layers_off_degrades_the_report_and_says_why() {
    let executor = RestrictedExecutor::builder()
        .namespaces(false)
        .seccomp(false)
        .build()
        .unwrap();
    let (state, why) = detail(&executor, Protection::Network);
    assert_ne!(state, ProtectionState::Enforced, "{why}");
    let lower = why.to_lowercase();
    assert!(
        ["namespace", "seccomp", "filter", "disabled"]
            .iter()
            .any(|w| lower.contains(w)),
        "the network detail must say what is missing: {why:?}"
    );

    let executor = RestrictedExecutor::builder()
        .landlock(false)
        .build()
        .unwrap();
    let (state, why) = detail(&executor, Protection::Filesystem);
    assert_ne!(state, ProtectionState::Enforced, "{why}");
    assert!(
        why.to_lowercase().contains("landlock"),
        "the filesystem detail names Landlock: {why:?}"
    );

    let executor = RestrictedExecutor::builder()
        .seccomp(false)
        .build()
        .unwrap();
    let (state, why) = detail(&executor, Protection::Syscalls);
    assert_ne!(state, ProtectionState::Enforced, "{why}");
    // Without seccomp the network is at best partly closed (namespace only).
    let (state, why) = detail(&executor, Protection::Network);
    assert_ne!(
        state,
        ProtectionState::Enforced,
        "network needs the socket filter too: {why}"
    );

    if is_root() {
        let executor = RestrictedExecutor::builder()
            .drop_privileges(false)
            .build()
            .unwrap();
        let (state, why) = detail(&executor, Protection::User);
        assert_ne!(
            state,
            ProtectionState::Enforced,
            "root without the drop: {why}"
        );
    }
}

#[rstest]
fn required_protections_fail_closed_when_turned_off() {
    expect_unavailable(
        RestrictedExecutor::builder()
            .namespaces(false)
            .seccomp(false)
            .require(Protection::Network)
            .build(),
        "network",
    );
    expect_unavailable(
        RestrictedExecutor::builder()
            .namespaces(false)
            .require(Protection::Network)
            .build(),
        "network",
    );
    expect_unavailable(
        RestrictedExecutor::builder()
            .landlock(false)
            .require(Protection::Filesystem)
            .build(),
        "filesystem",
    );
    expect_unavailable(
        RestrictedExecutor::builder()
            .seccomp(false)
            .require(Protection::Syscalls)
            .build(),
        "syscalls",
    );
    if is_root() {
        expect_unavailable(
            RestrictedExecutor::builder()
                .drop_privileges(false)
                .require(Protection::User)
                .build(),
            "user",
        );
    }
    // Requiring something that is in force elsewhere does not hide a gap here.
    expect_unavailable(
        RestrictedExecutor::builder()
            .landlock(false)
            .require(Protection::Network)
            .require(Protection::Filesystem)
            .build(),
        "filesystem",
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_executor_meets_every_hardening_requirement_here() {
    let mut builder = RestrictedExecutor::builder()
        .require(Protection::Network)
        .require(Protection::Filesystem)
        .require(Protection::Syscalls);
    let mut required = vec![
        Protection::Network,
        Protection::Filesystem,
        Protection::Syscalls,
    ];
    if is_root() {
        builder = builder.require(Protection::User);
        required.push(Protection::User);
    }
    let executor = match builder.build() {
        Ok(executor) => executor,
        Err(error) => {
            cannot_enforce_here(&format!(
                "the hardened requirements cannot be met here: {error}"
            ));
            return;
        }
    };
    let report = executor.isolation();
    for protection in &required {
        assert!(
            report.is_enforced(*protection),
            "build() accepted require({}) but the report says otherwise:\n{report}",
            protection.as_str()
        );
    }
    // What one execution reports matches what the executor promised.
    let result = run(&executor, ExecutionRequest::python("print('hardened')")).await;
    assert_eq!(result.stdout_text(), "hardened\n", "{}", describe(&result));
    for protection in &required {
        assert!(
            result.isolation.is_enforced(*protection),
            "the execution's report lost {}:\n{}",
            protection.as_str(),
            result.isolation
        );
    }
}

// ---------------------------------------------------------------------------
// 14. The CLI run by a non-root user
// ---------------------------------------------------------------------------

/// The workspace's `rlmkit-sandbox` binary next to this test's directory.
fn cli_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let binary = exe.parent()?.parent()?.join("rlmkit-sandbox");
    binary.is_file().then_some(binary)
}

#[test]
fn the_cli_run_by_nobody_is_hardened() {
    use std::os::unix::process::CommandExt;
    if !is_root() {
        eprintln!("skipped: only root can start the CLI as uid 65534");
        return;
    }
    let Some(binary) = cli_binary() else {
        eprintln!(
            "skipped: no rlmkit-sandbox binary next to {:?}; run `cargo build -p sandbox-cli` first",
            std::env::current_exe().unwrap()
        );
        return;
    };
    const NOBODY: u32 = 65_534;
    let tmp = world_writable_dir();
    let outside = world_writable_dir();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    // Probe: nobody may write to `outside` outside the sandbox.
    let probe_file = outside.path().join("probe.txt");
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("echo ok > '{}'", probe_file.display()))
        .uid(NOBODY)
        .gid(NOBODY)
        .status()
        .unwrap();
    assert!(
        status.success() && probe_file.exists(),
        "probe: nobody can write to {}",
        outside.path().display()
    );
    std::fs::remove_file(&probe_file).unwrap();

    // Probe: bash's /dev/tcp reaches the listener outside the sandbox.
    let bash = Path::new("/bin/bash").is_file();
    if bash {
        let status = std::process::Command::new("/bin/bash")
            .arg("-c")
            .arg(format!("echo hi > /dev/tcp/127.0.0.1/{port}"))
            .uid(NOBODY)
            .gid(NOBODY)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "probe: /dev/tcp connects outside the sandbox"
        );
        listener.accept().unwrap();
    }
    listener.set_nonblocking(true).unwrap();

    let script = format!(
        r#"
echo "uid=$(id -u)"
echo "gid=$(id -g)"
if echo escaped > "$OUTSIDE/escape.txt" 2>/dev/null; then echo outside=wrote; else echo outside=refused; fi
if echo ok > inside.txt && [ "$(cat inside.txt)" = ok ]; then echo inside=ok; else echo inside=failed; fi
if [ -x /bin/bash ]; then
  if /bin/bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' 2>/dev/null; then echo net=connected; else echo net=refused; fi
else
  echo net=no-bash
fi
"#
    );
    let output = std::process::Command::new(&binary)
        .args([
            "run",
            "--backend",
            "restricted",
            "--json",
            "--lang",
            "shell",
            "--timeout",
            "20s",
        ])
        .arg("--env")
        .arg(format!("OUTSIDE={}", outside.path().display()))
        .arg("--code")
        .arg(&script)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/tmp")
        .env("TMPDIR", tmp.path())
        .current_dir(tmp.path())
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let shown = format!(
        "binary {} (modified {:?})\nexit {:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        binary.display(),
        std::fs::metadata(&binary).and_then(|m| m.modified()).ok(),
        output.status.code()
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the CLI printed no JSON ({e}): {shown}"));
    assert!(json.get("error").is_none(), "the CLI failed: {shown}");
    assert_eq!(json["status"], "exited", "{shown}");
    assert_eq!(json["exit_code"], 0, "{shown}");

    let states: BTreeMap<String, String> = json["isolation"]["protections"]
        .as_array()
        .unwrap_or_else(|| panic!("no isolation report: {shown}"))
        .iter()
        .map(|p| {
            (
                p["protection"].as_str().unwrap_or_default().to_owned(),
                p["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let program_out = json["stdout"].as_str().unwrap_or_default();
    let fields: BTreeMap<&str, &str> = program_out
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let field = |key: &str| -> &str {
        fields
            .get(key)
            .copied()
            .unwrap_or_else(|| panic!("the script printed no `{key}=`: {shown}"))
    };

    assert_eq!(field("uid"), "65534", "{shown}");
    assert_eq!(
        field("inside"),
        "ok",
        "writing to the working directory must work: {shown}"
    );
    let enforced = |name: &str| states.get(name).map(String::as_str) == Some("enforced");
    if enforced("network") {
        if bash {
            assert_eq!(field("net"), "refused", "the network is reachable: {shown}");
            match listener.accept() {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                other => panic!("the host listener got a connection from the sandbox: {other:?}"),
            }
        }
    } else {
        cannot_enforce_here(&format!(
            "the CLI run by nobody does not enforce network: {shown}"
        ));
    }
    if enforced("filesystem") {
        assert_eq!(
            field("outside"),
            "refused",
            "a write escaped the working directory: {shown}"
        );
        assert!(!outside.path().join("escape.txt").exists(), "{shown}");
    } else {
        cannot_enforce_here(&format!(
            "the CLI run by nobody does not enforce filesystem: {shown}"
        ));
    }
    if !enforced("syscalls") {
        cannot_enforce_here(&format!(
            "the CLI run by nobody does not enforce syscalls: {shown}"
        ));
    }
    assert_eq!(
        states.get("user").map(String::as_str),
        Some("partial"),
        "a non-root caller's programs run as the caller's own uid, which Protection::User calls partial: {shown}"
    );

    // The CLI cleaned up after itself.
    let mut left = Vec::new();
    if let Ok(entries) = std::fs::read_dir(tmp.path()) {
        for entry in entries.flatten() {
            left.push(entry.path());
        }
    }
    assert!(left.is_empty(), "the CLI left {left:?} behind: {shown}");
}
