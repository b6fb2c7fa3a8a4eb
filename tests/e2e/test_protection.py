"""Traffic protection: slow clients (slowloris, slow bodies, clients that stop reading), size limits.

Every attack here runs on loopback, bounded in connections and time, and each test also checks that a
normal client is served meanwhile.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time

import pytest

from conftest import RawConn, build_request, unique

ROOT_ROUTE = """
[[route]]
path = "/"
demo = { delay_ms = 2 }
"""


def rss_kib(server) -> int:
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Reads until EOF/RST or timeout; returns the bytes and the seconds it took."""
    start = time.monotonic()
    data = b""
    sock.settimeout(0.5)
    while time.monotonic() - start < timeout:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


def trickle_until_answered(sock: socket.socket, piece: bytes, interval: float, limit: float) -> tuple[bytes, float]:
    """Sends `piece` every `interval` seconds until the server answers a whole head, closes, or `limit` passes;
    returns what was received and the seconds it took."""
    start = time.monotonic()
    got = b""
    while time.monotonic() - start < limit:
        try:
            sock.sendall(piece)
        except OSError:
            break
        time.sleep(interval)
        sock.settimeout(0.01)
        try:
            chunk = sock.recv(4096)
            got += chunk
            if not chunk or b"\r\n\r\n" in got:
                break
        except (socket.timeout, TimeoutError):
            pass
        except ConnectionResetError:
            break
    return got, time.monotonic() - start


def normal_client_latencies(server, count: int) -> list[float]:
    latencies = []
    with RawConn(server.http.host, server.http.port) as c:
        for i in range(count):
            start = time.monotonic()
            r = c.request("GET", f"/normal/{i % 5}")
            latencies.append(time.monotonic() - start)
            assert r.status == 200
    return latencies


def test_slowloris_with_default_settings_does_not_starve_normal_clients(edge_factory):
    """300 connections from 127.0.0.2 each trickle a request head one header line per second for 6 s; a normal
    client on 127.0.0.1 keeps getting fast answers (default settings)."""
    server = edge_factory.start(config=ROOT_ROUTE)
    stop = threading.Event()
    attackers: list[socket.socket] = []
    for _ in range(300):
        s = socket.create_connection((server.http.host, server.http.port), timeout=10, source_address=("127.0.0.2", 0))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        attackers.append(s)

    def trickle():
        line = 0
        while not stop.is_set() and line < 6:
            for s in attackers:
                try:
                    s.sendall(f"X-Slow-{line}: a\r\n".encode())
                except OSError:
                    pass
            line += 1
            stop.wait(1.0)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        latencies = normal_client_latencies(server, 100)
    finally:
        stop.set()
        t.join(timeout=10)
        for s in attackers:
            s.close()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert p99 < 0.5, f"normal client p99 {p99 * 1000:.0f} ms under slowloris (median {statistics.median(latencies) * 1000:.1f} ms)"


@pytest.fixture(scope="module")
def strict(module_edge_factory):
    return module_edge_factory.start(config="""
[timeouts]
request_head_seconds = 2
request_body_grace_seconds = 1
request_body_min_bytes_per_second = 1000
send_seconds = 2

[limits]
max_uri_bytes = 256
max_header_fields = 20

[[route]]
path = "/big"
respond = { status = 200, body = \"""" + "x" * 65536 + """\" }
""" + ROOT_ROUTE)


def test_request_head_deadline_cuts_off_a_trickling_client(strict):
    """Bytes keep arriving, but the whole head does not: 408 after request_head_seconds, not later."""
    s = socket.create_connection((strict.http.host, strict.http.port), timeout=10)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        # Up to 10 s of trickling, one header byte every 0.5 s.
        got, elapsed = trickle_until_answered(s, b"X", interval=0.5, limit=10)
    finally:
        s.close()
    assert got.startswith(b"HTTP/1.1 408 "), f"expected 408, got {got[:80]!r}"
    assert 1.5 <= elapsed <= 6, f"cut off after {elapsed:.1f} s with request_head_seconds = 2"
    with RawConn(strict.http.host, strict.http.port) as c:
        assert c.request("GET", "/healthz").status == 200


def test_request_head_deadline_applies_after_hand_over(strict):
    """After a request with a body (parsed by the full HTTP/1 parser), a slow next head is still cut off."""
    with RawConn(strict.http.host, strict.http.port) as c:
        c.send(build_request("POST", f"/{unique('body')}", body=b"abc"))
        assert c.read_response().status == 200
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        data, elapsed = read_until_closed(c.sock, timeout=10)
    assert data.startswith(b"HTTP/1.1 408 "), f"expected 408, got {data[:80]!r}"
    assert elapsed <= 6


def test_slow_request_body_is_cut_off(strict):
    s = socket.create_connection((strict.http.host, strict.http.port), timeout=10)
    try:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        # 10 bytes every 0.2 s = 50 B/s, far below the 1000 B/s minimum.
        got, elapsed = trickle_until_answered(s, b"0123456789", interval=0.2, limit=10)
    finally:
        s.close()
    assert got.startswith(b"HTTP/1.1 408 "), f"expected 408, got {got[:80]!r}"
    assert elapsed <= 6, f"slow body cut off only after {elapsed:.1f} s"


def test_client_that_stops_reading_is_dropped_and_memory_stays_bounded(strict):
    """Pipelines up to 6,000 requests (4 KiB each, 24 MiB: more than the kernel's socket buffers hold) for a
    64 KiB response and never reads: the server stops reading, does not buffer 375 MiB of responses, and drops
    the connection after send_seconds."""
    before = rss_kib(strict)
    s = socket.create_connection((strict.http.host, strict.http.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    request = build_request("GET", "/big", headers={"X-Pad": "p" * 4000})
    sent = 0
    s.settimeout(0.2)
    deadline = time.monotonic() + 15
    try:
        while sent < 6000 and time.monotonic() < deadline:
            try:
                s.sendall(request)
                sent += 1
            except (socket.timeout, TimeoutError):
                break  # the server stopped reading: our send buffer is full
            except OSError:
                break
        peak = rss_kib(strict)
        # Normal clients are unaffected meanwhile.
        with RawConn(strict.http.host, strict.http.port) as c:
            assert c.request("GET", "/healthz").status == 200
        # Within send_seconds (2 s) plus slack, the server closes the connection.
        closed_at = None
        end = time.monotonic() + 15
        while time.monotonic() < end:
            try:
                s.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic()
                break
            except (socket.timeout, TimeoutError):
                pass
            time.sleep(0.2)
        # Draining what the kernel holds must end in EOF, not more data forever.
        if closed_at is None:
            _, _ = read_until_closed(s, timeout=10)
    finally:
        s.close()
    assert sent < 6000, "the server kept reading requests although the client read no responses"
    assert peak - before < 64 * 1024, f"RSS grew by {(peak - before) // 1024} MiB for one non-reading client"


def test_uri_too_long_gets_414(strict):
    with RawConn(strict.http.host, strict.http.port) as c:
        r = c.request("GET", "/" + "a" * 400)
        assert r.status == 414


def test_too_many_header_fields_get_431(strict):
    with RawConn(strict.http.host, strict.http.port) as c:
        r = c.request("GET", "/x", headers={f"X-H{i}": "v" for i in range(30)})
        assert r.status == 431
