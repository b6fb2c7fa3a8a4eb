"""Fixtures and helpers for the Edge end-to-end tests.

Every test talks to the real `edge` binary (env EDGE_BIN, default
<repo>/.build/debug/edge) started on ephemeral loopback ports. The bound
addresses are read from the `msg=listening` log lines on stderr.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EDGE_BIN = Path(os.environ.get("EDGE_BIN") or (REPO / ".build" / "debug" / "edge"))

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
IO_TIMEOUT = 30.0

# Every EDGE_* variable the server reads; scrubbed from the environment we pass
# so that the developer's shell cannot change what a test sees.
EDGE_ENV_VARS = (
    "EDGE_THREADS",
    "EDGE_HTTP",
    "EDGE_HTTPS",
    "EDGE_STATE_DIR",
    "EDGE_LOG_LEVEL",
    "EDGE_SHUTDOWN_TIMEOUT",
    "EDGE_MAX_CONNECTIONS",
    "EDGE_MAX_IN_FLIGHT",
)
# EDGE_HTTP2_ENGINE and EDGE_IO are left through on purpose: scripts/test runs the HTTP/2 tests once more with
# EDGE_HTTP2_ENGINE=nio, on NIOHTTP2's connection layer, the reference for Edge's own.

STACK_TRACE_MARKERS = (
    "Fatal error",
    "Backtrace",
    "Stack dump",
    "Current stack trace",
    "💣",
)

_LOGFMT_RE = re.compile(r'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line: str) -> dict[str, str]:
    """Parse one logfmt line into a dict (quoted values unquoted)."""
    out: dict[str, str] = {}
    for key, value in _LOGFMT_RE.findall(line):
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out[key] = value
    return out


def split_host_port(address: str) -> tuple[str, int]:
    """'127.0.0.1:4000' -> ('127.0.0.1', 4000); '[::1]:4000' -> ('::1', 4000)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", address)
    if m:
        return m.group(1), int(m.group(2))
    host, _, port = address.rpartition(":")
    return host, int(port)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


DEMO_AND_FILES_CONFIG = """
[[route]]
path = "/"
demo = {{ delay_ms = 2 }}

[[route]]
path = "/files"
static = {{ root = "{root}" }}
"""


def start_demo_and_files(factory, root) -> "EdgeServer":
    """Starts Edge from `factory` with the demo backend at `/` and the files under `root` at `/files`."""
    return factory.start(config=DEMO_AND_FILES_CONFIG.format(root=root))


def basic(user: str, password: str) -> str:
    """An `Authorization` value for HTTP Basic authentication."""
    import base64
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class BackgroundH2load:
    """h2load runs, one per name, in threads: for tests that do something to the server while it is under load.
    `join()` waits for them and returns each run's output."""

    def __init__(self, runs: dict[str, list[str]], timeout: float = 60.0):
        self.results: dict[str, str] = {}

        def run(name: str, args: list[str]) -> None:
            self.results[name] = subprocess.run(["h2load", *args], capture_output=True, text=True, timeout=timeout).stdout

        self.threads = [threading.Thread(target=run, args=(name, args)) for name, args in runs.items()]
        for thread in self.threads:
            thread.start()

    def join(self) -> dict[str, str]:
        for thread in self.threads:
            thread.join()
        return self.results


def unique(prefix: str = "k") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EDGE_ENV_VARS}
    # Never touch the developer's ~/.local/state/edge even if a test forgets --state-dir.
    env.pop("XDG_STATE_HOME", None)
    if extra:
        env.update(extra)
    return env


def require_binary() -> Path:
    if not EDGE_BIN.is_file() or not os.access(EDGE_BIN, os.X_OK):
        pytest.fail(
            f"edge binary not found or not executable at {EDGE_BIN} "
            "(build it with `swift build` or set EDGE_BIN)",
            pytrace=False,
        )
    return EDGE_BIN


def run_edge(args: list[str], *, env: dict[str, str] | None = None, cwd: str | Path | None = None,
             timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run the edge binary to completion (for check-config and failing starts)."""
    binary = require_binary()
    return subprocess.run(
        [str(binary), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        env=clean_env(env),
        cwd=cwd,
        timeout=timeout,
    )


@dataclass
class Listener:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"{self.scheme}://{url_host(self.host)}:{self.port}"


class EdgeServer:
    """A running edge process plus the log it writes on stderr."""

    _all: list["EdgeServer"] = []

    def __init__(self, args: list[str], env: dict[str, str] | None, cwd: Path, open_files: int | None = None):
        self.args = args
        self.env = env or {}
        self.cwd = cwd
        self._cond = threading.Condition()
        self._lines: list[str] = []
        self._stdout: list[str] = []
        self._stderr_eof = False
        self.listeners: list[Listener] = []
        self.ready_fields: dict[str, str] = {}
        binary = require_binary()
        self.proc = subprocess.Popen(
            [str(binary), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(self.env),
            cwd=str(cwd),
            text=True,
            errors="replace",
            bufsize=1,
            # A descriptor limit from the start: io_uring's accept does not see a limit lowered later (prlimit).
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))) if open_files else None,
        )
        EdgeServer._all.append(self)
        self._t_err = threading.Thread(target=self._pump_stderr, daemon=True)
        self._t_out = threading.Thread(target=self._pump_stdout, daemon=True)
        self._t_err.start()
        self._t_out.start()

    # -- log handling -------------------------------------------------------
    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._stderr_eof = True
            self._cond.notify_all()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self._stdout.append(line.rstrip("\n"))

    @property
    def log_lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    @property
    def log(self) -> str:
        return "\n".join(self.log_lines)

    @property
    def stdout(self) -> str:
        with self._cond:
            return "\n".join(self._stdout)

    def log_events(self, msg: str) -> list[dict[str, str]]:
        return [f for f in map(parse_logfmt, self.log_lines) if f.get("msg") == msg]

    def wait_for_log(self, predicate, timeout: float = IO_TIMEOUT, start: int = 0):
        """Wait until a log line (index >= start) satisfies predicate(fields, line).

        Returns the parsed fields, or None on timeout / stderr EOF.
        """
        deadline = time.monotonic() + timeout
        idx = start
        with self._cond:
            while True:
                while idx < len(self._lines):
                    line = self._lines[idx]
                    idx += 1
                    fields = parse_logfmt(line)
                    if predicate(fields, line):
                        return fields
                if self._stderr_eof:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 0.5))

    def wait_for_msg(self, msg: str, timeout: float = IO_TIMEOUT, start: int = 0):
        return self.wait_for_log(lambda f, _l: f.get("msg") == msg, timeout=timeout, start=start)

    # -- startup ------------------------------------------------------------
    def wait_ready(self, timeout: float = READY_TIMEOUT) -> "EdgeServer":
        fields = self.wait_for_msg("ready", timeout=timeout)
        if fields is None:
            rc = self.proc.poll()
            self.stop()
            pytest.fail(
                f"edge did not log msg=ready within {timeout}s (exit code {rc}).\n"
                f"args: {self.args}\n--- stderr ---\n{self.log}\n--- stdout ---\n{self.stdout}",
                pytrace=False,
            )
        self.ready_fields = fields
        for f in self.log_events("listening"):
            host, port = split_host_port(f["address"])
            self.listeners.append(Listener(f["scheme"], host, port))
        return self

    def listener(self, scheme: str) -> Listener:
        found = [l for l in self.listeners if l.scheme == scheme]
        assert found, f"no {scheme} listener in log:\n{self.log}"
        return found[0]

    @property
    def http(self) -> Listener:
        return self.listener("http")

    @property
    def https(self) -> Listener:
        return self.listener("https")

    @property
    def http_url(self) -> str:
        return self.http.url

    @property
    def https_url(self) -> str:
        return self.https.url

    @property
    def host(self) -> str:
        return self.http.host

    @property
    def http_port(self) -> int:
        return self.http.port

    @property
    def https_port(self) -> int:
        return self.https.port

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- shutdown -----------------------------------------------------------
    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT seconds. Returns the exit code."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=STOP_TIMEOUT)
        self._t_err.join(timeout=5)
        self._t_out.join(timeout=5)
        return self.proc.returncode


class EdgeFactory:
    """Starts edge servers; each gets its own state dir unless one is given."""

    def __init__(self, base: Path):
        self.base = base
        self.servers: list[EdgeServer] = []

    def start(
        self,
        config: str | None = None,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        http: str | None = "127.0.0.1:0",
        https: str | None = "127.0.0.1:0",
        admin: str | None = "127.0.0.1:0",
        state_dir: Path | None = None,
        subcommand: list[str] | None = None,
        wait: bool = True,
        open_files: int | None = None,
    ) -> EdgeServer:
        run_dir = self.base / unique("edge")
        run_dir.mkdir(parents=True)
        if state_dir is None:
            state_dir = run_dir / "state"
        argv: list[str] = list(["serve"] if subcommand is None else subcommand)
        if config is not None:
            cfg = run_dir / "edge.toml"
            cfg.write_text(config)
            argv += ["--config", str(cfg)]
        if http is not None:
            argv += ["--http", http]
        if https is not None:
            argv += ["--https", https]
        if config is None and admin is not None and subcommand in (None, [], ["serve"]):
            # The embedded default has an admin listener on 127.0.0.1:9901: tests run many servers at once.
            argv += ["--admin", admin]
        argv += ["--state-dir", str(state_dir)]
        argv += list(args or [])
        server = EdgeServer(argv, env, run_dir, open_files)
        server.state_dir = state_dir  # type: ignore[attr-defined]
        self.servers.append(server)
        if wait:
            server.wait_ready()
        return server

    def stop_all(self) -> None:
        for s in self.servers:
            s.stop()


@pytest.fixture
def edge_factory(tmp_path):
    factory = EdgeFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def module_edge_factory(tmp_path_factory):
    factory = EdgeFactory(tmp_path_factory.mktemp("edge-module"))
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def edge(module_edge_factory) -> EdgeServer:
    """A default server (embedded config) with loopback http + https listeners."""
    return module_edge_factory.start()


def pytest_sessionfinish(session, exitstatus):
    # Safety net: never leave a server running.
    for s in EdgeServer._all:
        try:
            s.stop()
        except Exception:
            pass


# --------------------------------------------------------------------------
# Small independent clients
# --------------------------------------------------------------------------

def client_tls_context(alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def curl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed", pytrace=False)
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", str(int(timeout) - 5), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )


@dataclass
class CurlExchange:
    """One request made with curl: the status line, the header fields (names in lower case) and the body."""
    status_line: str
    headers: dict[str, str]
    body: bytes

    @property
    def status(self) -> str:
        return self.status_line.split()[1]


def curl_exchange(*args: str) -> CurlExchange:
    """Runs `curl -sk -D - ARGS` and splits what it printed; the body is bytes as sent (empty with `-I`)."""
    quiet = ["-o", "/dev/null"] if "-I" in args else []  # -I would print the head twice
    res = subprocess.run(["curl", "-sk", "-D", "-", *quiet, *args], capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    head, _, body = res.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return CurlExchange(lines[0], headers, body)


@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class RawConn:
    """A raw HTTP/1.1 client socket with a minimal, strict response reader."""

    def __init__(self, host: str, port: int, timeout: float = IO_TIMEOUT, tls: bool = False,
                 receive_buffer: int | None = None):
        """`receive_buffer` sets SO_RCVBUF before connecting, which bounds the window the client advertises."""
        if receive_buffer is None:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))
        if tls:
            self.sock = client_tls_context(["http/1.1"]).wrap_socket(self.sock, server_hostname="localhost")
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_tolerant(self, data: bytes) -> bool:
        """Send, but accept that the server may already have answered and closed. Returns success."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_until(self, marker: bytes, limit: int = 1 << 20) -> bytes:
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise AssertionError(f"no {marker!r} within {limit} bytes")
            if not self._fill():
                raise EOFError(f"connection closed while waiting for {marker!r}; got {self.buf[:500]!r}")
        idx = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:idx], self.buf[idx:]
        return out

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"connection closed after {len(self.buf)} of {n} body bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self) -> RawResponse:
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        m = re.fullmatch(r"(HTTP/\d\.\d) (\d{3})(?: (.*))?", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        headers = []
        for line in lines[1:]:
            if not line:
                continue
            k, sep, v = line.partition(":")
            assert sep, f"bad header line {line!r}"
            headers.append((k.strip(), v.strip()))
        return RawResponse(m.group(1), int(m.group(2)), m.group(3) or "", headers, b"")

    def read_response(self, head_request: bool = False) -> RawResponse:
        """Read one final response (interim 1xx are returned as-is too)."""
        resp = self.read_head()
        if head_request or 100 <= resp.status < 200 or resp.status in (204, 304):
            return resp
        te = resp.header("transfer-encoding")
        cl = resp.header("content-length")
        if te and "chunked" in te.lower():
            body = b""
            for _ in range(100000):
                size_line = self.read_until(b"\r\n").strip()
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    self.read_until(b"\r\n")
                    break
                body += self.read_exact(size)
                self.read_exact(2)
            resp.body = body
        elif cl is not None:
            resp.body = self.read_exact(int(cl))
        else:
            # read to EOF
            for _ in range(100000):
                if not self._fill():
                    break
            resp.body, self.buf = self.buf, b""
        return resp

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes = b"") -> RawResponse:
        self.send(build_request(method, path, headers, body))
        return self.read_response(head_request=(method == "HEAD"))

    def is_closed(self, timeout: float = 10.0) -> bool:
        """True if the peer closes (EOF/RST) within timeout with no further bytes."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except (socket.timeout, TimeoutError):
            return False
        finally:
            self.sock.settimeout(IO_TIMEOUT)
        if data:
            self.buf += data
            return False
        return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def build_request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
                  version: str = "HTTP/1.1") -> bytes:
    hdrs = {"Host": "localhost"}
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in (headers or {})):
        hdrs["Content-Length"] = str(len(body))
    hdrs.update(headers or {})
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    return head.encode("latin-1") + body


def demo_body(method: str, target: str) -> str:
    return f"Hello from the Edge demo backend\n{method} {target}\n"


_LOGFMT_LINE_RE = re.compile(r'[A-Za-z_][\w.\-]*=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)'
                             r'(?: [A-Za-z_][\w.\-]*=(?:"(?:[^"\\]|\\.)*"|[^\s"]*))*')


def assert_logfmt(lines: list[str]) -> None:
    """Every stderr line is one logfmt event with ts, level and msg (INTERFACE.md, Logs)."""
    bad = []
    for line in lines:
        fields = parse_logfmt(line)
        if not _LOGFMT_LINE_RE.fullmatch(line) or not {"ts", "level", "msg"} <= fields.keys():
            bad.append(line)
    assert not bad, "stderr lines that are not logfmt events:\n" + "\n".join(bad)


def demo_body_with_request_body(method: str, target: str, body_len: int, text: str) -> bool:
    """The demo body for a request that carried a body.

    INTERFACE.md documents only the two lines; the server may add `request body: N bytes`.
    """
    base = demo_body(method, target)
    return text in (base, base + f"request body: {body_len} bytes\n")


def assert_no_stack_trace(text: str) -> None:
    for marker in STACK_TRACE_MARKERS:
        assert marker not in text, f"output contains {marker!r} (crash/stack trace):\n{text}"


def _make_goaway_tolerant_class():
    import h2.connection

    class GoawayTolerantH2Connection(h2.connection.H2Connection):
        """h2 moves the whole connection to CLOSED on GOAWAY and then rejects the frames of
        streams that the server still completes (graceful shutdown). Keep it open instead;
        H2Client itself refuses to open streams above the GOAWAY's last_stream_id."""

        def _receive_goaway_frame(self, frame):
            frames, events = super()._receive_goaway_frame(frame)
            self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
            return frames, events

    return GoawayTolerantH2Connection


_GoawayTolerantH2Connection = _make_goaway_tolerant_class()


class H2Client:
    """A minimal HTTP/2-over-TLS client built on the `h2` state machine (one thread at a time)."""

    def __init__(self, host: str, port: int, timeout: float = IO_TIMEOUT):
        import h2.config
        import h2.connection

        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = client_tls_context(["h2"]).wrap_socket(raw, server_hostname="localhost")
        self.alpn = self.sock.selected_alpn_protocol()
        assert self.alpn == "h2", f"ALPN selected {self.alpn!r}, expected 'h2'"
        self.conn = _GoawayTolerantH2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.streams: dict[int, dict] = {}
        self.goaways: list[tuple[int, int]] = []  # (error_code, last_stream_id)
        self.resets: list[tuple[int, int]] = []   # (stream_id, error_code)
        self.closed = False

    def next_stream_id(self) -> int:
        return self.conn.highest_outbound_stream_id + 2 if self.conn.highest_outbound_stream_id else 1

    def may_open_stream(self) -> bool:
        return all(last >= self.next_stream_id() for _code, last in self.goaways)

    def request(self, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
        assert self.may_open_stream(), f"server sent GOAWAY {self.goaways}; no new streams allowed"
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = {"path": path, "status": None, "headers": {}, "body": b"", "ended": False}
        self.conn.send_headers(sid, [
            (":method", method), (":scheme", "https"), (":authority", "localhost"), (":path", path),
            *((name.lower(), value) for name, value in (headers or {}).items()),
        ], end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        return sid

    def ended(self, sid: int) -> bool:
        return self.streams[sid]["ended"]

    def all_ended(self) -> bool:
        return all(s["ended"] for s in self.streams.values())

    def pump(self, until=None, timeout: float = IO_TIMEOUT) -> bool:
        """Process frames until until() is true, the connection closes, or timeout. Returns until()."""
        import h2.events
        import h2.exceptions

        until = until or self.all_ended
        deadline = time.monotonic() + timeout
        while not until() and not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(min(remaining, 0.25))
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
                continue
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                break
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                raise AssertionError(f"HTTP/2 protocol error from server: {exc!r}")
            for ev in events:
                if isinstance(ev, h2.events.ResponseReceived):
                    hdrs = dict(ev.headers)
                    self.streams[ev.stream_id]["status"] = hdrs.get(":status")
                    self.streams[ev.stream_id]["headers"] = hdrs
                elif isinstance(ev, h2.events.DataReceived):
                    self.streams[ev.stream_id]["body"] += ev.data
                    # Each DATA frame: its length, and whether it ended the stream.
                    self.streams[ev.stream_id].setdefault("data_frames", []).append(
                        (len(ev.data), ev.stream_ended is not None))
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    self.streams[ev.stream_id]["trailers"] = dict(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded):
                    self.streams[ev.stream_id]["ended"] = True
                elif isinstance(ev, h2.events.StreamReset):
                    self.resets.append((ev.stream_id, ev.error_code))
                    if ev.stream_id in self.streams:
                        self.streams[ev.stream_id]["reset"] = ev.error_code
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.goaways.append((int(ev.error_code), ev.last_stream_id))
            out = self.conn.data_to_send()
            if out:
                try:
                    self.sock.sendall(out)
                except OSError:
                    self.closed = True
        self.sock.settimeout(IO_TIMEOUT)
        return until()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def h2_get_many(host: str, port: int, paths: list[str], timeout: float = 60.0,
                method: str = "GET") -> tuple[dict[str, dict], list[str]]:
    """Open ONE TLS+h2 connection and send one request per path on concurrent streams.

    Returns ({path: {"status": str, "headers": dict, "body": bytes, "ended": bool}}, problems).
    """
    client = H2Client(host, port, timeout=timeout)
    try:
        sids = [client.request(p, method=method) for p in paths]
        client.pump(timeout=timeout)
        problems = [f"stream {sid} reset, code {code}" for sid, code in client.resets]
        problems += [f"GOAWAY error={code} last_stream={last}" for code, last in client.goaways]
        if not client.all_ended():
            problems.append("connection closed" if client.closed else "timed out")
        return {client.streams[sid]["path"]: client.streams[sid] for sid in sids}, problems
    finally:
        client.close()
