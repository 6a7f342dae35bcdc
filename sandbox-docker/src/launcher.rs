//! The launcher of pooled containers, and what the host sends it.
//!
//! A pooled container is created, attached and started before any request
//! exists: its command is [`argv`], a small Python program (already
//! imported, so a request does not wait for an interpreter to start) that
//! writes [`READY`] on stdout and blocks on stdin. A request hands it one
//! [`Payload`]:
//!
//! ```text
//! u32 (big endian) N | N bytes of JSON {argv, env, dirs, files: [[path, size]], nonce}
//! | the files' bytes, back to back | the program's stdin ... end of file
//! ```
//!
//! The launcher runs as root holding only `CAP_SETUID`, `CAP_SETGID` and
//! `CAP_SETPCAP` (see [`crate::spec::Mode::Pooled`]). It creates the
//! directories and files under `/sandbox` exactly as a cold container's
//! archive does (root-owned, files 0444, directories 0555) and forks:
//!
//! - the child empties the capability bounding set, sets its groups, gid
//!   and uid to 1000 (which clears every capability), checks that none is
//!   left, writes [`EXEC`] on stdout and execs the program with the
//!   container's environment plus the request's variables. It inherits
//!   stdin where the payload ended, so the program reads its own stdin
//!   bytes and then end-of-file.
//! - the parent drops in the same way to uid and gid 65534 (out of the
//!   program's reach: another user, no capabilities), waits for the
//!   program, writes the trailer `\0rlmkit:end:<nonce>:exit:N:ok\n` (or
//!   `signal:N`; `:oom` when the container's memory cgroup counted an OOM
//!   kill, nothing when it cannot tell) on stdout and on stderr, and exits
//!   with the shell's code
//!   for that end (N, or 128 + N), taking the container and whatever the
//!   program left running with it, as a cold container's init does. Should
//!   it fail to drop its privileges, it kills the program and writes the
//!   trailer `failed` instead, which the host reports as an error.
//!
//! The host learns how the program ended from the trailers, without
//! waiting for the daemon to notice the container stopped (which takes
//! longer than running `print(1)`). The nonce is the host's, random per
//! request and never visible to the program, so program output cannot end
//! a run early by accident. A SIGKILL when the cgroup cannot tell whether
//! the OOM killer struck, or a missing trailer, falls back to the daemon's
//! account, as for a cold container. Until [`EXEC`], a failure is the launcher's (exit 125,
//! message on stderr) and the host reports it as an error. An end of stdin
//! before any payload (the pool retiring the container, or this process
//! dying) makes the launcher exit 0.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};

use sandbox_core::Error;
use tokio::io::AsyncWriteExt;

use crate::BACKEND;
use crate::archive::Layout;
use crate::client::InputSink;

/// What the launcher writes on stdout once it waits for a payload.
pub(crate) const READY: &[u8] = b"\0rlmkit:ready\n";

/// What the launcher writes on stdout just before it execs the program.
pub(crate) const EXEC: &[u8] = b"\0rlmkit:exec\n";

/// How a trailer starts, before the request's nonce.
const TRAILER: &[u8] = b"\0rlmkit:end:";

/// The longest status a trailer carries after its prefix (`signal:NNN`).
const MAX_STATUS: usize = 32;

/// The launcher. `{UID}` and `{GID}` are filled from [`crate::spec::USER`].
const SCRIPT: &str = r#"
import ctypes, json, os
READY = b"\0rlmkit:ready\n"
EXEC = b"\0rlmkit:exec\n"
UID, GID = {UID}, {GID}
WAITER = 65534
PR_CAPBSET_DROP = 24

def put(fd, data):
    while data:
        data = data[os.write(fd, data):]

def fail(message):
    put(2, ("rlmkit-sandbox launcher: %s\n" % message).encode("utf-8", "replace"))
    os._exit(125)

def read_exact(n):
    parts = []
    while n > 0:
        chunk = os.read(0, min(n, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)

def checked(path):
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        fail("refusing the path %r" % path)
    return path

def become(uid, gid):
    for cap in range(last_cap + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError("cannot drop capability %d: %s" % (cap, os.strerror(ctypes.get_errno())))
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise OSError("the user did not change")
    status = open("/proc/self/status").read().splitlines()
    left = [l for l in status if l.startswith("Cap") and int(l.split(":")[1], 16) != 0]
    if left:
        raise OSError("capabilities left: %r" % left)

def oom_kills():
    # The container's own cgroup: v1, then v2.
    for path in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        try:
            for line in open(path):
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
    return None

libc = ctypes.CDLL(None, use_errno=True)
last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())
put(1, READY)
head = read_exact(4)
if head is None:
    os._exit(0)
spec = read_exact(int.from_bytes(head, "big"))
if spec is None:
    fail("the request ended early")
spec = json.loads(spec)
try:
    for d in spec["dirs"]:
        os.mkdir(checked(d), 0o755)
    for path, size in spec["files"]:
        fd = os.open(checked(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444)
        while size > 0:
            chunk = os.read(0, min(size, 1 << 20))
            if not chunk:
                fail("the request ended early")
            put(fd, chunk)
            size -= len(chunk)
        os.close(fd)
    for d in reversed(spec["dirs"]):
        os.chmod(d, 0o555)
    child = os.fork()
except OSError as e:
    fail(str(e))
if child == 0:
    try:
        become(UID, GID)
    except OSError as e:
        fail(str(e))
    env = dict(os.environ)
    env.update(spec["env"])
    argv = spec["argv"]
    put(1, EXEC)
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        put(2, ("%s: command not found\n" % argv[0]).encode("utf-8", "replace"))
        os._exit(127)
    except OSError as e:
        put(2, ("%s: %s\n" % (argv[0], e.strerror)).encode("utf-8", "replace"))
        os._exit(126)
try:
    os.close(0)
    become(WAITER, WAITER)
except OSError as e:
    # Never wait beside the program with privileges: stop it, say so.
    try:
        os.kill(child, 9)
    except OSError:
        pass
    put(2, ("rlmkit-sandbox launcher: %s\n" % e).encode("utf-8", "replace"))
    end, code = "failed", 125
else:
    _, status = os.waitpid(child, 0)
    if os.WIFEXITED(status):
        end, code = "exit:%d" % os.WEXITSTATUS(status), os.WEXITSTATUS(status)
    else:
        end, code = "signal:%d" % os.WTERMSIG(status), 128 + os.WTERMSIG(status)
    kills = oom_kills()
    if kills is not None:
        end += ":oom" if kills > 0 else ":ok"
trailer = ("\0rlmkit:end:%s:%s\n" % (spec["nonce"], end)).encode()
put(1, trailer)
put(2, trailer)
os._exit(code)
"#;

/// The pooled container's command line: the launcher for `uid` and `gid`.
pub(crate) fn argv(user: &str) -> Vec<String> {
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    let script = SCRIPT.replace("{UID}", uid).replace("{GID}", gid);
    // -I: no user site, no PYTHON* variables; -S: no site module. The
    // program itself runs in a fresh interpreter of its own.
    ["python3", "-I", "-S", "-c", &script]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// One request as the launcher reads it, borrowing the request's bytes.
#[derive(Debug)]
pub(crate) struct Payload<'a> {
    head: Vec<u8>,
    files: Vec<&'a [u8]>,
    stdin: Option<&'a [u8]>,
    nonce: String,
}

#[derive(serde::Serialize)]
struct Head<'a> {
    argv: &'a [String],
    env: &'a BTreeMap<String, String>,
    dirs: Vec<&'a str>,
    files: Vec<(&'a str, usize)>,
    nonce: &'a str,
}

/// 128 unpredictable bits as hex: SipHash under the process's random keys
/// (std's `RandomState`, seeded from the OS) of a counter and the time.
fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut halves = [0u64; 2];
    for (i, half) in halves.iter_mut().enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(n);
        hasher.write_u128(nanos);
        hasher.write_usize(i);
        *half = hasher.finish();
    }
    format!("{:016x}{:016x}", halves[0], halves[1])
}

impl<'a> Payload<'a> {
    /// The payload running `layout` with `env` and `stdin`.
    pub fn new(
        layout: &'a Layout<'a>,
        env: &'a BTreeMap<String, String>,
        stdin: Option<&'a [u8]>,
    ) -> Result<Payload<'a>, Error> {
        let nonce = nonce();
        let head = Head {
            argv: &layout.argv,
            env,
            nonce: &nonce,
            dirs: layout.all_dirs().collect(),
            files: layout
                .all_files()
                .map(|(path, contents)| (path, contents.len()))
                .collect(),
        };
        let json = serde_json::to_vec(&head)
            .map_err(|e| Error::backend(BACKEND, "encoding the request for the launcher", e))?;
        let length = u32::try_from(json.len()).map_err(|_| {
            Error::invalid_request(
                "the command line, environment and file names take more than 4 GiB",
            )
        })?;
        let mut framed = Vec::with_capacity(json.len() + 4);
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&json);
        Ok(Payload {
            head: framed,
            files: layout.all_files().map(|(_, contents)| contents).collect(),
            stdin,
            nonce,
        })
    }

    /// A scanner for the trailer the launcher will write on one stream.
    pub fn trailer(&self) -> Trailer {
        let mut needle = TRAILER.to_vec();
        needle.extend_from_slice(self.nonce.as_bytes());
        needle.push(b':');
        Trailer {
            needle,
            held: Vec::new(),
            status: None,
            end: None,
        }
    }

    /// Writes the payload and the program's stdin, then closes stdin so the
    /// program sees end-of-file. A launcher or program that stops reading
    /// is not an error here: how it ended is read from the container.
    pub async fn feed(self, mut input: InputSink) {
        let parts = std::iter::once(self.head.as_slice())
            .chain(self.files)
            .chain(self.stdin);
        for part in parts {
            if input.write_all(part).await.is_err() {
                return;
            }
        }
        let _ = input.shutdown().await;
    }
}

/// Whether the container's memory cgroup counted an OOM kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Oom {
    /// It did.
    Yes,
    /// It did not.
    No,
    /// The launcher could not read the count.
    Unknown,
}

/// How the launcher saw the program end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// It exited with this code.
    Exit(i32, Oom),
    /// A signal killed it.
    Signal(i32, Oom),
    /// The launcher could not wait for it without privileges, so killed it.
    Failed,
    /// The trailer was garbled (which the launcher never writes).
    Unknown,
}

/// Finds the launcher's trailer at the end of one output stream, passing
/// on every byte before it as the program's.
///
/// Bytes that could begin the trailer are held back until the next chunk
/// tells; the program cannot write the trailer itself, as it does not know
/// the nonce.
#[derive(Debug)]
pub(crate) struct Trailer {
    needle: Vec<u8>,
    held: Vec<u8>,
    /// The status bytes after the needle, while collecting them.
    status: Option<Vec<u8>>,
    end: Option<End>,
}

impl Trailer {
    /// How the program ended, once the trailer is complete.
    pub fn end(&self) -> Option<End> {
        self.end
    }

    /// Takes in a chunk of the stream and returns the program's bytes in it
    /// (nothing after the trailer counts).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.end.is_some() {
            return Vec::new();
        }
        if let Some(status) = &mut self.status {
            status.extend_from_slice(chunk);
            self.parse_status();
            return Vec::new();
        }
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(chunk);
        if let Some(at) = find(&data, &self.needle) {
            self.status = Some(data[at + self.needle.len()..].to_vec());
            self.parse_status();
            data.truncate(at);
            return data;
        }
        // Hold back the longest tail that could begin the needle.
        let keep = (1..self.needle.len().min(data.len() + 1))
            .rev()
            .find(|&k| data[data.len() - k..] == self.needle[..k])
            .unwrap_or(0);
        self.held = data.split_off(data.len() - keep);
        data
    }

    /// The bytes held back when the stream ended without a trailer: the program's.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    fn parse_status(&mut self) {
        let Some(status) = &self.status else { return };
        let Some(newline) = status.iter().position(|&b| b == b'\n') else {
            if status.len() > MAX_STATUS {
                self.end = Some(End::Unknown);
            }
            return;
        };
        let text = String::from_utf8_lossy(&status[..newline]);
        let mut fields = text.split(':');
        let (kind, number, oom) = (fields.next(), fields.next(), fields.next());
        let oom = match oom {
            Some("oom") => Oom::Yes,
            Some("ok") => Oom::No,
            _ => Oom::Unknown,
        };
        let number = number.and_then(|n| n.parse().ok());
        let parsed = match (kind, number) {
            (Some("exit"), Some(n)) => Some(End::Exit(n, oom)),
            (Some("signal"), Some(n)) => Some(End::Signal(n, oom)),
            (Some("failed"), None) => Some(End::Failed),
            _ => None,
        };
        self.end = Some(parsed.unwrap_or(End::Unknown));
    }
}

/// Where `needle` (which starts with a NUL byte) first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let last_start = haystack.len().checked_sub(needle.len())?;
    (0..=last_start)
        .filter(|&i| haystack[i] == first)
        .find(|&i| haystack[i..].starts_with(needle))
}

/// Matches a marker the launcher writes at the start of stdout, across
/// however the attach stream splits it.
#[derive(Debug)]
pub(crate) struct Marker {
    marker: &'static [u8],
    matched: usize,
}

/// What [`Marker::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Matched<'a> {
    /// The chunk was all (part of) the marker; more is expected.
    Partial,
    /// The marker is complete; these bytes came after it.
    Done(&'a [u8]),
    /// Something else came first.
    Mismatch,
}

impl Marker {
    /// Expects `marker`.
    pub fn new(marker: &'static [u8]) -> Marker {
        Marker { marker, matched: 0 }
    }

    /// Whether the whole marker was seen.
    pub fn is_done(&self) -> bool {
        self.matched == self.marker.len()
    }

    /// Consumes the marker's bytes at the start of `chunk`.
    pub fn feed<'a>(&mut self, chunk: &'a [u8]) -> Matched<'a> {
        let wanted = &self.marker[self.matched..];
        let n = wanted.len().min(chunk.len());
        if chunk[..n] != wanted[..n] {
            return Matched::Mismatch;
        }
        self.matched += n;
        if self.is_done() {
            Matched::Done(&chunk[n..])
        } else {
            Matched::Partial
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_core::{InputFile, Program};

    #[test]
    fn markers_match_across_chunks() {
        let mut marker = Marker::new(EXEC);
        assert_eq!(marker.feed(&EXEC[..3]), Matched::Partial);
        let mut rest = EXEC[3..].to_vec();
        rest.extend_from_slice(b"hello");
        assert_eq!(marker.feed(&rest), Matched::Done(b"hello"));
        assert!(marker.is_done());

        let mut marker = Marker::new(EXEC);
        assert_eq!(marker.feed(b"\0rlmkit:oops"), Matched::Mismatch);
        let mut marker = Marker::new(READY);
        assert_eq!(marker.feed(READY), Matched::Done(b""));
    }

    #[test]
    fn the_payload_lists_dirs_and_files_in_order() {
        let program = Program::Python("print(1)".into());
        let files = [InputFile::new("data/in.txt", "abc")];
        let layout = crate::archive::layout(&program, &files).unwrap();
        let env = BTreeMap::from([("A".to_owned(), "b".to_owned())]);
        let payload = Payload::new(&layout, &env, Some(b"stdin")).unwrap();
        let length = u32::from_be_bytes(payload.head[..4].try_into().unwrap()) as usize;
        assert_eq!(length, payload.head.len() - 4);
        let head: serde_json::Value = serde_json::from_slice(&payload.head[4..]).unwrap();
        assert_eq!(
            head,
            serde_json::json!({
                "argv": ["python3", "/sandbox/.rlmkit/main.py"],
                "env": {"A": "b"},
                "dirs": [".rlmkit", "data"],
                "files": [[".rlmkit/main.py", 8], ["data/in.txt", 3]],
                "nonce": payload.nonce,
            })
        );
        assert_eq!(payload.files, [&b"print(1)"[..], b"abc"]);
        assert_eq!(payload.stdin, Some(&b"stdin"[..]));
    }

    #[test]
    fn trailers_are_found_across_chunks_and_program_bytes_pass() {
        let program = Program::Command(vec!["true".into()]);
        let layout = crate::archive::layout(&program, &[]).unwrap();
        let env = BTreeMap::new();
        let payload = Payload::new(&layout, &env, None).unwrap();
        let trailer = format!("\0rlmkit:end:{}:exit:3:ok\n", payload.nonce);
        assert_eq!(payload.nonce.len(), 32);
        assert_ne!(
            payload.nonce,
            Payload::new(&layout, &env, None).unwrap().nonce
        );

        // Split at every position, with program bytes before (some of them
        // looking like the start of a trailer) and garbage after.
        let mut stream = b"out\0rlmkit:end:\0rlmkit:e".to_vec();
        stream.extend_from_slice(trailer.as_bytes());
        stream.extend_from_slice(b"late output");
        for split in 0..stream.len() {
            let mut scanner = payload.trailer();
            let mut passed = scanner.feed(&stream[..split]);
            passed.extend(scanner.feed(&stream[split..]));
            assert_eq!(passed, b"out\0rlmkit:end:\0rlmkit:e", "split at {split}");
            assert_eq!(
                scanner.end(),
                Some(End::Exit(3, Oom::No)),
                "split at {split}"
            );
        }

        // Another nonce is program output.
        let mut scanner = payload.trailer();
        let forged = b"\0rlmkit:end:00000000000000000000000000000000:exit:0\n";
        assert_eq!(scanner.feed(forged), forged);
        assert_eq!(scanner.end(), None);
        let mut scanner = payload.trailer();
        assert_eq!(scanner.feed(b"x\0rlm"), b"x");
        assert_eq!(scanner.finish(), b"\0rlm");

        let mut scanner = payload.trailer();
        let failed = format!("\0rlmkit:end:{}:failed\n", payload.nonce);
        assert!(scanner.feed(failed.as_bytes()).is_empty());
        assert_eq!(scanner.end(), Some(End::Failed));

        let mut scanner = payload.trailer();
        let signal = format!("\0rlmkit:end:{}:signal:9:oom\n", payload.nonce);
        assert!(scanner.feed(signal.as_bytes()).is_empty());
        assert_eq!(scanner.end(), Some(End::Signal(9, Oom::Yes)));

        let mut scanner = payload.trailer();
        let bare = format!("\0rlmkit:end:{}:signal:9\n", payload.nonce);
        assert!(scanner.feed(bare.as_bytes()).is_empty());
        assert_eq!(scanner.end(), Some(End::Signal(9, Oom::Unknown)));
    }

    #[test]
    fn the_launcher_is_filled_with_the_user() {
        let argv = argv("1000:1001");
        assert_eq!(argv[..4], ["python3", "-I", "-S", "-c"]);
        assert!(argv[4].contains("UID, GID = 1000, 1001"));
        assert!(!argv[4].contains("{UID}"));
    }
}
