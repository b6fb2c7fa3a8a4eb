"""Mutation fuzzing of the HTTP/1.1 and HTTP/2 front ends: valid requests and frame sequences, mutated at
random (bytes flipped, inserted, deleted, duplicated, spliced between messages, numbers blown up, frames
dropped, repeated, reordered or invented), sent to the real server over plain TCP and TLS.

What must hold for every input, as a user of the server would check it:
- the server stays up and keeps answering everyone else (`/healthz` between batches, HTTP/1.1 and HTTP/2);
- over HTTP/1.1, whatever comes back is a sequence of well-formed responses, none of them a 500, and once the
  client has sent everything and half-closed, the server finishes and closes: no connection is left hanging;
- over HTTP/2, whatever comes back is a well-formed frame sequence;
- once the clients are gone, the server holds no more file descriptors than before (no leaked connection or
  file), and its log has no crash report;
- a mutated TLS ClientHello gets an alert, a close or a handshake, never a crash;
- a mutated configuration file gets `edge check-config`'s exit status 0 or 1, never a crash, and on 1 an
  error naming the file and line.

The run is seeded and bounded: `EDGE_FUZZ_CASES` (default 1200 HTTP/1.1 and 600 HTTP/2 inputs) and
`EDGE_FUZZ_SEED` (default: a fixed seed, so a failure names the case that reproduces it).
"""

from __future__ import annotations

import os
import random
import re
import socket
import ssl
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import h2.config
import h2.connection
import h2.settings
import pytest

from conftest import REPO, RawConn, assert_no_stack_trace, client_tls_context, curl, run_edge

CASES = int(os.environ.get("EDGE_FUZZ_CASES", "1200"))
# Below this many inputs (a quick run with a small EDGE_FUZZ_CASES) the random mutations may all land on one
# side, so the checks that they reached both sides (success and error) are left out.
COVERAGE_MIN_CASES = 100
SEED = int(os.environ.get("EDGE_FUZZ_SEED", "20261123"))
WORKERS = 6
# After the client's half-close the server must answer and close within this (it needs milliseconds).
HANG_SECONDS = 4.0

CONFIG = """
[limits]
max_header_bytes = 4096
max_body_bytes = 65536
# Far longer than a case waits (HANG_SECONDS), so that no timer can close a connection the server forgot.
[timeouts]
request_head_seconds = 60
keepalive_seconds = 60
request_body_grace_seconds = 60

[[route]]
path = "/"
demo = {{ delay_ms = 1, max_delay_ms = 20 }}

[[route]]
path = "/hello"
respond = {{ status = 200, body = "hello\\n" }}

[[route]]
path = "/static"
static = "{root}"

[[route]]
path = "/limited"
demo = {{}}
rate_limit = {{ per_second = 1000, burst = 1000 }}
"""

HTTP1_SEEDS = [
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /page?x=1&y=2 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\r\n",
    b"HEAD /hello HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\nGET /a HTTP/1.1\r\nHost: localhost\r\n\r\nHEAD /b HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world",
    b"POST /up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
    b"PUT /up HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
    b"GET /static/small.txt HTTP/1.1\r\nHost: localhost\r\nRange: bytes=10-99\r\n\r\n",
    b"GET /static/page.html HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip, br\r\nIf-None-Match: \"x\"\r\n\r\n",
    b"GET /static/big.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-0,5-9,-3\r\n\r\n",
    b"GET /static/ HTTP/1.1\r\nHost: localhost\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
    b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /hello HTTP/1.0\r\n\r\n",
    b"GET http://localhost/abs?q HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /limited HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic YWxpY2U6eA==\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n",
    b"DELETE /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
]

INTERESTING_BYTES = b"\r\n\x00 \t:;,/?#%=\"'\\\x7f\x80\xff0123456789-+AaZz"
BIG_NUMBERS = [b"0", b"-1", b"18446744073709551616", b"99999999999999999999999", b"ffffffffffffffff", b"00000000000000000001"]


def mutate_bytes(rng: random.Random, data: bytes, corpus: list[bytes], alphabet: bytes = INTERESTING_BYTES) -> bytes:
    """One to four random edits of `data`; inserted bytes come from `alphabet`."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(9)
        pos = rng.randrange(len(out) + 1) if out else 0
        if choice == 0 and out:  # flip bits of one byte
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif choice == 1:  # insert a byte parsers care about
            out[pos:pos] = bytes([rng.choice(alphabet)])
        elif choice == 2 and out:  # delete a span
            end = min(len(out), pos + rng.randint(1, 8))
            del out[pos:end]
        elif choice == 3 and out:  # duplicate a span
            start = rng.randrange(len(out))
            span = out[start:start + rng.randint(1, 40)]
            out[pos:pos] = span
        elif choice == 4 and corpus:  # splice in part of another message
            other = rng.choice(corpus)
            start = rng.randrange(len(other))
            out[pos:pos] = other[start:start + rng.randint(1, 60)]
        elif choice == 5:  # replace a number with an extreme one
            numbers = list(re.finditer(rb"\d+", bytes(out)))
            if numbers:
                m = rng.choice(numbers)
                out[m.start():m.end()] = rng.choice(BIG_NUMBERS)
        elif choice == 6:  # truncate
            del out[pos:]
        elif choice == 7:  # a long run of one byte
            out[pos:pos] = bytes([rng.choice(alphabet)]) * rng.choice([64, 600, 5000])
        else:  # change a byte to a random one
            if out:
                out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def check_http1_responses(data: bytes) -> list[int]:
    """Parses what the server sent as HTTP/1.1 responses; returns their status codes. Raises on bytes that are
    not a response. A body is taken by Content-Length (a HEAD answer may carry one without a body, so a length
    that does not end where the next status line starts is tolerated once it runs to the end)."""
    statuses = []
    rest = data
    while rest:
        head, sep, after = rest.partition(b"\r\n\r\n")
        assert sep, f"unterminated response head: {rest[:200]!r}"
        lines = head.split(b"\r\n")
        m = re.fullmatch(rb"HTTP/1\.1 (\d{3}) [ -~]*", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        status = int(m.group(1))
        statuses.append(status)
        fields = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            assert colon and re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name), f"bad field line {line!r}"
            fields.setdefault(name.lower(), value.strip())
        if status == 100 or status == 304 or status == 204:
            rest = after
            continue
        if b"content-length" in fields:
            length = int(fields[b"content-length"])
            if after.startswith(b"HTTP/1.1 ") or len(after) == 0:
                rest = after  # a HEAD answer, or the last response
            else:
                assert len(after) >= length, f"body shorter than its Content-Length {length}: {after[:100]!r}"
                rest = after[length:]
        elif fields.get(b"transfer-encoding", b"").lower().endswith(b"chunked"):
            body = after
            while True:
                size_line, crlf, body = body.partition(b"\r\n")
                assert crlf, "unterminated chunk size"
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    _, end, body = body.partition(b"\r\n")
                    break
                body = body[size + 2:]
            rest = body
        else:
            rest = b""  # delimited by the close
    return statuses


def read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """Everything the server sends within `seconds`, and whether it closed (end of stream or an error) by then."""
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except (OSError, ssl.SSLError):
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def http1_case(host: str, port: int, payload: bytes, tls: bool, pieces: int) -> tuple[list[int], bool]:
    """Sends `payload` in `pieces` writes, half-closes (plain TCP) and reads everything the server sends.
    Returns the statuses and whether the server closed within the deadline."""
    sock = socket.create_connection((host, port), timeout=10)
    if tls:
        sock = client_tls_context(["http/1.1"]).wrap_socket(sock, server_hostname="localhost")
    cuts = sorted(random.Random(len(payload) * 31 + pieces).sample(range(1, len(payload)), min(pieces - 1, len(payload) - 1))) \
        if len(payload) > 1 else []
    parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
    try:
        try:
            for part in parts:
                sock.sendall(part)
            if not tls:
                sock.shutdown(socket.SHUT_WR)
        except (OSError, ssl.SSLError):
            pass  # the server answered and closed before taking everything: read what it sent
        received, closed = read_until_closed(sock, HANG_SECONDS if not tls else 1.5)
    finally:
        sock.close()
    return check_http1_responses(received), closed


# --- HTTP/2 -----------------------------------------------------------------------------------------------

def h2_seed_streams() -> list[bytes]:
    """Valid client byte streams after the preface: settings, requests, bodies, pings, resets, window updates."""
    seeds = []
    for script in range(6):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        base = [(":scheme", "https"), (":authority", "localhost")]
        if script == 0:
            conn.send_headers(1, [(":method", "GET"), (":path", "/hello"), *base], end_stream=True)
        elif script == 1:
            for sid, path in ((1, "/a?x=1"), (3, "/static/small.txt"), (5, "/healthz"), (7, "/static/page.html")):
                conn.send_headers(sid, [(":method", "GET"), (":path", path), *base, ("accept-encoding", "gzip")],
                                  end_stream=True)
        elif script == 2:
            conn.send_headers(1, [(":method", "POST"), (":path", "/form"), *base, ("content-length", "10")])
            conn.send_data(1, b"0123456789", end_stream=True)
        elif script == 3:
            conn.send_headers(1, [(":method", "GET"), (":path", "/static/big.bin"), *base, ("range", "bytes=0-99")],
                              end_stream=True)
            conn.ping(b"12345678")
            conn.increment_flow_control_window(65535)
            conn.reset_stream(1)
        elif script == 4:
            conn.send_headers(1, [(":method", "HEAD"), (":path", "/"), *base, ("cookie", "a=b"), ("cookie", "c=d")],
                              end_stream=True)
            conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1})
        else:
            conn.send_headers(1, [(":method", "GET"), (":path", "/limited"), *base, ("x-forwarded-for", "1.2.3.4"),
                                  ("te", "trailers")], end_stream=False)
            conn.send_headers(1, [("x-trailer", "1")], end_stream=True)
        data = conn.data_to_send()
        assert data.startswith(b"PRI * HTTP/2.0")
        seeds.append(data[24:])
    return seeds


def split_frames(data: bytes) -> list[bytes]:
    frames = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        frames.append(data[:9 + length])
        data = data[9 + length:]
    if data:
        frames.append(data)
    return frames


def random_frame(rng: random.Random) -> bytes:
    frame_type = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0x10, 0xFF])
    payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 4, 5, 8, 9, 20, 64])))
    stream = rng.choice([0, 1, 2, 3, 5, 0x7FFFFFFF, 0x80000001, rng.randrange(1 << 31)])
    return len(payload).to_bytes(3, "big") + bytes([frame_type, rng.randrange(256)]) + struct.pack(">I", stream) + payload


def mutate_frames(rng: random.Random, stream: bytes) -> bytes:
    frames = split_frames(stream)
    for _ in range(rng.randint(1, 3)):
        choice = rng.randrange(7)
        i = rng.randrange(len(frames)) if frames else 0
        if choice == 0 and frames:  # corrupt the frame header (length, type, flags, stream)
            frame = bytearray(frames[i])
            j = rng.randrange(min(9, len(frame)))
            frame[j] ^= 1 << rng.randrange(8)
            frames[i] = bytes(frame)
        elif choice == 1 and frames and len(frames[i]) > 9:  # corrupt the payload
            frames[i] = frames[i][:9] + bytes(b ^ (rng.randrange(256) if rng.random() < 0.1 else 0) for b in frames[i][9:])
        elif choice == 2 and frames:  # drop a frame
            del frames[i]
        elif choice == 3 and frames:  # repeat a frame
            frames.insert(i, frames[i])
        elif choice == 4:  # invent a frame
            frames.insert(i, random_frame(rng))
        elif choice == 5 and len(frames) > 1:  # swap two frames
            j = rng.randrange(len(frames))
            frames[i], frames[j] = frames[j], frames[i]
        else:  # cut the stream short
            frames = frames[:i]
    return b"".join(frames)


def check_h2_frames(data: bytes) -> None:
    """What the server sent must be whole frames of known types (the last may be cut by our read deadline)."""
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        assert data[3] <= 9, f"unknown frame type {data[3]} from the server"
        assert length <= 16384, f"frame of {length} bytes beyond the default SETTINGS_MAX_FRAME_SIZE"
        data = data[9 + length:]


def h2_case(host: str, port: int, body: bytes, mutate_preface: bool, rng: random.Random) -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    if mutate_preface:
        preface = mutate_bytes(rng, preface, [])
    sock = socket.create_connection((host, port), timeout=10)
    tls = client_tls_context(["h2"]).wrap_socket(sock, server_hostname="localhost")
    received = b""
    try:
        tls.sendall(preface + body)
        received, _ = read_until_closed(tls, 0.6)
    except (OSError, ssl.SSLError):
        pass  # the server closed before taking everything
    finally:
        tls.close()
    check_h2_frames(received)


# --- the tests ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_edge(module_edge_factory, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-www")
    (root / "small.txt").write_bytes(b"0123456789abcdef" * 128)
    (root / "page.html").write_text("<html><body>" + "fuzz " * 800 + "</body></html>\n")
    (root / "big.bin").write_bytes(os.urandom(300 * 1024))
    (root / "index.html").write_text("<p>index</p>\n")
    return module_edge_factory.start(CONFIG.format(root=root), args=["--threads", "2"])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def assert_serving(edge) -> None:
    with RawConn(edge.http.host, edge.http.port, timeout=5) as c:
        assert c.request("GET", "/healthz").status == 200
    res = curl("-sk", "--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", f"{edge.https_url}/healthz",
               timeout=20)
    assert res.stdout == "200 2", (res.stdout, res.stderr)


def wait_for_fds(pid: int, limit: int, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    count = open_fds(pid)
    while count > limit and time.monotonic() < deadline:
        time.sleep(0.25)
        count = open_fds(pid)
    return count


def run_in_batches(edge, cases: list, run, batch_size: int, label: str):
    """Runs `run` over `cases` on the worker pool, `batch_size` at a time, and yields each case's result; after
    every batch the server must still be running and answering `/healthz`."""
    with ThreadPoolExecutor(WORKERS) as pool:
        for batch_start in range(0, len(cases), batch_size):
            yield from pool.map(run, cases[batch_start:batch_start + batch_size])
            assert edge.proc.poll() is None, f"edge exited during {label} batch at {batch_start}:\n{edge.log[-4000:]}"
            assert_serving(edge)


def assert_nothing_left_behind(edge, baseline_fds: int, what: str) -> None:
    """After a campaign: no more descriptors than `baseline_fds` (and two of slack), and no crash report."""
    assert wait_for_fds(edge.pid, baseline_fds + 2) <= baseline_fds + 2, f"{what} left open after the clients closed"
    assert_no_stack_trace(edge.log)


def test_mutated_http1_requests(fuzz_edge):
    edge = fuzz_edge
    assert_serving(edge)
    baseline = open_fds(edge.pid)
    rng = random.Random(SEED)
    corpus = list(HTTP1_SEEDS)
    cases = []
    for index in range(CASES):
        payload = mutate_bytes(rng, rng.choice(corpus), corpus)
        cases.append((index, payload, rng.random() < 0.25, rng.choice([1, 1, 1, 2, 3, 7])))

    def run(case):
        index, payload, tls, pieces = case
        listener = edge.https if tls else edge.http
        try:
            statuses, closed = http1_case(listener.host, listener.port, payload, tls, pieces)
        except AssertionError as error:
            raise AssertionError(f"case {index} (seed {SEED}, tls={tls}): {error}\nsent: {payload!r}") from None
        assert 500 not in statuses, f"case {index}: 500 for {payload!r}"
        assert tls or closed, f"case {index}: still open {HANG_SECONDS} s after the client half-closed; sent {payload!r}, got {statuses}"
        return statuses

    seen: dict[int, int] = {}
    for statuses in run_in_batches(edge, cases, run, 200, "HTTP/1.1"):
        for status in statuses:
            seen[status] = seen.get(status, 0) + 1
    print(f"statuses over {CASES} inputs: {dict(sorted(seen.items()))}")
    # Mutations reach both the fast path and the full parser: successes and client errors alike.
    if CASES >= COVERAGE_MIN_CASES:
        assert seen.get(200, 0) > 0 and seen.get(400, 0) > 0, seen
    assert_nothing_left_behind(edge, baseline, "connections")


def test_mutated_http2_frames(fuzz_edge):
    edge = fuzz_edge
    assert_serving(edge)
    baseline = open_fds(edge.pid)
    rng = random.Random(SEED + 1)
    seeds = h2_seed_streams()
    cases = [(i, mutate_frames(rng, rng.choice(seeds)), rng.random() < 0.05, rng.randrange(1 << 30))
             for i in range(CASES // 2)]

    def run(case):
        index, body, mutate_preface, case_seed = case
        try:
            h2_case(edge.https.host, edge.https.port, body, mutate_preface, random.Random(case_seed))
        except AssertionError as error:
            raise AssertionError(f"h2 case {index} (seed {SEED}): {error}\nsent: {body!r}") from None

    list(run_in_batches(edge, cases, run, 100, "HTTP/2"))
    assert_nothing_left_behind(edge, baseline, "HTTP/2 connections")


def client_hellos() -> list[bytes]:
    """Real ClientHellos from Python's TLS stack (TLS 1.3 and 1.2 only, ALPN h2 and http/1.1, with and without
    SNI), taken from a memory BIO before any server answers."""
    hellos = []
    for maximum, alpn, sni in ((ssl.TLSVersion.TLSv1_3, ["h2", "http/1.1"], "localhost"),
                               (ssl.TLSVersion.TLSv1_2, ["http/1.1"], None)):
        context = client_tls_context(alpn)
        context.maximum_version = maximum
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hellos.append(outgoing.read())
    return hellos


def test_mutated_tls_client_hellos(fuzz_edge):
    edge = fuzz_edge
    assert_serving(edge)
    baseline = open_fds(edge.pid)
    rng = random.Random(SEED + 3)
    hellos = client_hellos()
    assert all(hello[:1] == b"\x16" for hello in hellos), "not TLS handshake records"
    cases = [(i, mutate_bytes(rng, rng.choice(hellos), hellos)) for i in range(CASES // 4)]

    def run(case):
        index, hello = case
        sock = socket.create_connection((edge.https.host, edge.https.port), timeout=10)
        received = b""
        try:
            sock.sendall(hello)
            received, _ = read_until_closed(sock, 0.5)
        except OSError:
            pass  # the server closed before taking everything
        finally:
            sock.close()
        # A TLS record (alert or ServerHello) or, for bytes that look like an HTTP request line, Edge's 400.
        assert received == b"" or received[:1] in (b"\x15", b"\x16") or received.startswith(b"HTTP/1.1 400 "), \
            f"TLS case {index}: unexpected answer {received[:80]!r} to {hello!r}"

    list(run_in_batches(edge, cases, run, max(1, len(cases)), "ClientHello"))
    assert_nothing_left_behind(edge, baseline, "TLS connections")


CONFIG_SEED = b"""threads = 2
server_name = "e\\u0041dge"
[limits]
max_connections = 100
max_body_bytes = 65536
[timeouts]
keepalive_seconds = 5
[client_address]
trusted_proxies = [ "127.0.0.1", '10.0.0.0/8',
  "::1", ] # a comment
[[listener]]
address = "127.0.0.1:0"
[[route]]
path = "/a"
respond = { status = 200, body = \"\"\"two
lines\"\"\", content_type = 'text/plain' }
[[route]]
path = "/b"
demo = { delay_ms = 1, max_delay_ms = 5 }
rate_limit = { per_second = 1.5, burst = 3 }
[[route]]
path = "/c"
static = { root = "/tmp", index = [ "index.html", "i.htm" ], listing = true }
"""
TOML_BYTES = b"[]{}=.,#\"'\n \t\\01azAZ-_+:"
EXTREME_VALUES = [b"0", b"-1", b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808", b"1e308",
                  b"nan", b"-inf", b"0.0000001", b"4294967296", b"1_000", b"0x10", b"1979-05-27T07:32:00Z", b"[]", b"{}"]


def test_mutated_configuration_files(tmp_path):
    """The TOML parser inside TOMLKit (toml++) aborts the process on some malformed input instead of reporting
    it; this found one such input (a `}` where an array expects an element). Edge must answer every file with
    a verdict: valid, or errors naming the file and line."""
    rng = random.Random(SEED + 2)
    corpus = [CONFIG_SEED, (REPO / "edge.toml").read_bytes()]
    path = tmp_path / "fuzz.toml"
    verdicts = {0: 0, 1: 0}
    for index in range(CASES // 2):
        source = rng.choice(corpus)
        numbers = list(re.finditer(rb"(?<== )-?\d[\d_.]*", source))
        if rng.random() < 0.3 and numbers:
            m = rng.choice(numbers)
            data = source[:m.start()] + rng.choice(EXTREME_VALUES) + source[m.end():]
        else:
            data = mutate_bytes(rng, source, corpus, TOML_BYTES)
        path.write_bytes(data)
        res = run_edge(["check-config", path.name], cwd=tmp_path)
        detail = f"case {index} (seed {SEED}): exit {res.returncode} for\n{data!r}\n{res.stderr[-2000:]}"
        assert res.returncode in (0, 1), detail
        assert_no_stack_trace(res.stdout + res.stderr)
        if res.returncode == 1:
            assert re.search(r"^fuzz\.toml(:\d+)?: ", res.stderr, re.M), detail
        verdicts[res.returncode] += 1
    if CASES // 2 >= COVERAGE_MIN_CASES:
        assert verdicts[0] > 0 and verdicts[1] > 0, verdicts
