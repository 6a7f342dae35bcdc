# The rlmkit-sandbox session server: runs Python cells against one namespace.
#
# Frames both ways: a 4-byte big-endian length, a JSON header of that length,
# then `size` raw bytes when the header names a size. Requests:
#   {"op": "run", "code": str, "timeout_ms": int, "output_bytes": int}
#   {"op": "put", "path": str, "size": int} + bytes
#   {"op": "get", "path": str}
#   {"op": "close"}
# Output of a cell (print, sys.stdout, and subprocesses alike) goes to files in
# TMPDIR, read back up to the cap; the protocol keeps a private copy of fd 1.
import json
import os
import signal
import struct
import sys
import traceback

_proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
_proto_out = os.fdopen(os.dup(1), "wb")
_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 0)
# Between cells, fd 1 leads nowhere: a thread a cell left behind may print
# without touching the protocol stream.
os.dup2(_null, 1)
os.close(_null)
_scratch = os.environ.get("TMPDIR") or "/tmp"
_namespace = {"__name__": "__main__", "__builtins__": __builtins__}
_CHUNK = 1 << 20


class CellTimeout(BaseException):
    """Raised in the cell when its time is up."""


def _on_alarm(signum, frame):
    raise CellTimeout()


signal.signal(signal.SIGALRM, _on_alarm)


def _read_exact(n):
    parts = []
    while n:
        part = _proto_in.read(min(n, _CHUNK))
        if not part:
            raise EOFError
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def _read_frame():
    head = _proto_in.read(4)
    if not head:
        return None
    if len(head) < 4:
        head += _read_exact(4 - len(head))
    return json.loads(_read_exact(struct.unpack(">I", head)[0]))


def _write_frame(header, payload=b""):
    data = json.dumps(header).encode()
    _proto_out.write(struct.pack(">I", len(data)) + data)
    if payload:
        _proto_out.write(payload)
    _proto_out.flush()


def _capture(path, cap):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        data = f.read(cap)
    os.unlink(path)
    return data, max(size - cap, 0)


def _run(request):
    cap = int(request.get("output_bytes", 1 << 20))
    timeout = max(int(request.get("timeout_ms", 30000)), 1) / 1000.0
    paths = [os.path.join(_scratch, ".rlmkit-cell-%s" % name) for name in ("out", "err")]
    files = [os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600) for p in paths]
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    os.dup2(files[0], 1)
    os.dup2(files[1], 2)
    status, exit_code = "exited", 0
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            exec(compile(request["code"], "<cell>", "exec"), _namespace)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except CellTimeout:
        status, exit_code = "timed_out", None
        print("rlmkit-sandbox: the cell was interrupted at its timeout", file=sys.stderr)
    except SystemExit as stop:
        code = stop.code
        exit_code = code if isinstance(code, int) else (0 if code is None else 1)
        if not isinstance(code, (int, type(None))):
            print(code, file=sys.stderr)
    except BaseException:
        exit_code = 1
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + files:
            os.close(fd)
    (out, out_dropped), (err, err_dropped) = (_capture(p, cap) for p in paths)
    _write_frame(
        {
            "ok": True,
            "status": status,
            "exit_code": exit_code,
            "stdout_size": len(out),
            "stderr_size": len(err),
            "stdout_dropped": out_dropped,
            "stderr_dropped": err_dropped,
        },
        out + err,
    )


def _put(request):
    size = int(request["size"])
    try:
        path = request["path"]
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(path, "wb") as f:
            while size:
                part = _proto_in.read(min(size, _CHUNK))
                if not part:
                    raise EOFError
                size -= len(part)
                f.write(part)
        _write_frame({"ok": True, "size": int(request["size"])})
    except EOFError:
        raise
    except BaseException as error:
        while size:
            part = _proto_in.read(min(size, _CHUNK))
            if not part:
                raise EOFError
            size -= len(part)
        _write_frame({"ok": False, "error": "%s: %s" % (type(error).__name__, error)})


def _get(request):
    try:
        path = request["path"]
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            _write_frame({"ok": True, "size": size})
            # Exactly the size announced, even if the file changes meanwhile.
            left = size
            while left:
                part = f.read(min(left, _CHUNK)) or b"\0" * min(left, _CHUNK)
                _proto_out.write(part)
                left -= len(part)
            _proto_out.flush()
    except BaseException as error:
        _write_frame({"ok": False, "error": "%s: %s" % (type(error).__name__, error)})


def _serve():
    _write_frame({"ok": True, "ready": True, "pid": os.getpid(), "python": sys.version.split()[0]})
    while True:
        try:
            request = _read_frame()
        except CellTimeout:
            continue
        if request is None or request.get("op") == "close":
            return
        op = request.get("op")
        if op == "run":
            _run(request)
        elif op == "put":
            _put(request)
        elif op == "get":
            _get(request)
        else:
            _write_frame({"ok": False, "error": "unknown op %r" % (op,)})


_serve()
