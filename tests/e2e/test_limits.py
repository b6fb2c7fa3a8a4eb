"""Limits and malformed input: max_in_flight, header/body size limits, 400 on bad HTTP/1."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import RawConn, build_request, demo_body, demo_body_with_request_body, h2_get_many, unique

ROOT_ROUTE = """
[[route]]
path = "/"
demo = { delay_ms = 2 }
"""


def healthy(server) -> bool:
    with RawConn(server.http.host, server.http.port) as c:
        r = c.request("GET", "/healthz")
        return r.status == 200 and r.body == b"ok\n"


@pytest.fixture(scope="module")
def small_limits(module_edge_factory):
    return module_edge_factory.start(config="""
[limits]
max_in_flight = 4
# The whole limit for one client, so that this module's single client meets the global limit (503), not its share.
max_in_flight_per_client = 4
max_header_bytes = 4096
max_body_bytes = 1024
""" + ROOT_ROUTE)


def test_max_in_flight_http1(small_limits):
    server = small_limits
    n = 12
    base = unique("mif")
    conns = [RawConn(server.http.host, server.http.port) for _ in range(n)]
    barrier = threading.Barrier(n, timeout=30)

    def one(i):
        barrier.wait()
        return conns[i].request("GET", f"/{base}/{i}?delay_ms=1500")

    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            results = list(pool.map(one, range(n), timeout=120))
    finally:
        for c in conns:
            c.close()
    statuses = sorted(r.status for r in results)
    assert set(statuses) <= {200, 503}, statuses
    ok = [r for r in results if r.status == 200]
    rejected = [r for r in results if r.status == 503]
    assert rejected, f"no request was rejected with max_in_flight = 4: {statuses}"
    assert len(ok) >= 4, f"fewer than max_in_flight = 4 requests were admitted: {statuses}"
    for r in rejected:
        assert r.header("retry-after") == "1", r.headers
    for i, r in enumerate(results):
        if r.status == 200:
            assert r.text == demo_body("GET", f"/{base}/{i}?delay_ms=1500")
    # still serving afterwards
    assert healthy(server)
    with RawConn(server.http.host, server.http.port) as c:
        assert c.request("GET", f"/{unique('after')}").status == 200


def test_max_in_flight_http2_streams(small_limits):
    server = small_limits
    base = unique("mif2")
    paths = [f"/{base}/{i}?delay_ms=1500" for i in range(12)]
    results, problems = h2_get_many(server.https.host, server.https.port, paths)
    assert not problems, problems
    statuses = sorted(int(r["status"]) for r in results.values())
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses, statuses
    assert statuses.count(200) >= 4, statuses
    for r in results.values():
        if r["status"] == "503":
            assert r["headers"].get("retry-after") == "1", r["headers"]
    assert healthy(server)


def test_header_limit_custom(small_limits):
    server = small_limits
    with RawConn(server.http.host, server.http.port) as c:
        ok = c.request("GET", f"/{unique('hs')}", headers={"X-Pad": "a" * 2000})
        assert ok.status == 200
    with RawConn(server.http.host, server.http.port) as c:
        big = c.request("GET", f"/{unique('hb')}", headers={"X-Pad": "a" * 6000})
        assert big.status == 431
        assert c.is_closed(), "connection not closed after 431"


def test_body_limit_custom(small_limits):
    server = small_limits
    with RawConn(server.http.host, server.http.port) as c:
        path = f"/{unique('b')}"
        r = c.request("POST", path, body=b"x" * 1024)
        assert r.status == 200
        assert demo_body_with_request_body("POST", path, 1024, r.text), r.text
    with RawConn(server.http.host, server.http.port) as c:
        r = c.request("POST", f"/{unique('b')}", body=b"x" * 1025)
        assert r.status == 413


def test_chunked_body_over_limit(small_limits):
    server = small_limits
    with RawConn(server.http.host, server.http.port) as c:
        c.send(build_request("POST", f"/{unique('cb')}", headers={"Transfer-Encoding": "chunked"}))
        # The server may answer 413 and close as soon as the limit is crossed.
        for _ in range(4):
            if not c.send_tolerant(b"200\r\n" + b"y" * 0x200 + b"\r\n"):
                break
        else:
            c.send_tolerant(b"0\r\n\r\n")
        r = c.read_response()
        assert r.status == 413


def test_oversized_header_default_limit(edge):
    with RawConn(edge.http.host, edge.http.port) as c:
        ok = c.request("GET", f"/{unique('h20k')}", headers={"X-Pad": "a" * 20000})
        assert ok.status == 200, "a 20 KB header is within the default 32768-byte limit"
    with RawConn(edge.http.host, edge.http.port) as c:
        r = c.request("GET", f"/{unique('h40k')}", headers={"X-Pad": "a" * 40000})
        assert r.status == 431
        assert c.is_closed(), "connection not closed after 431"
    assert healthy(edge)


def test_content_length_over_default_body_limit(edge):
    with RawConn(edge.http.host, edge.http.port) as c:
        c.send(build_request("POST", f"/{unique('big')}", headers={"Content-Length": "2000000"}))
        r = c.read_response()
        assert r.status == 413
    assert healthy(edge)


def test_expect_100_with_oversized_body_gets_413_without_100(edge):
    with RawConn(edge.http.host, edge.http.port) as c:
        c.send(build_request("POST", f"/{unique('big')}", headers={
            "Content-Length": "2000000", "Expect": "100-continue"}))
        r = c.read_response()
        assert r.status == 413, f"expected 413 first (no 100 Continue), got {r.status}"


MALFORMED = {
    "garbage_request_line": (b"GARBAGE\r\n\r\n", {400}),
    "bad_header_syntax": (b"GET / HTTP/1.1\r\nHost: localhost\r\nThis Is Not A Header\r\n\r\n", {400}),
    "bad_content_length": (b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n", {400}),
    "invalid_chunk_size": (
        b"POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        None),
    "content_length_and_transfer_encoding": (
        b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        None),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_request_400_and_close(edge, name):
    payload, allowed = MALFORMED[name]
    with RawConn(edge.http.host, edge.http.port) as c:
        c.send(payload)
        r = c.read_response()
        if allowed is None:
            assert 400 <= r.status < 500, f"{name}: got {r.status}"
        else:
            assert r.status in allowed, f"{name}: got {r.status}"
        assert (r.header("connection") or "").lower() == "close", f"{name}: no Connection: close {r.headers}"
        assert c.is_closed(timeout=10), f"{name}: connection left open after {r.status}"
    # the server is fine afterwards
    path = f"/{unique('after-bad')}"
    with RawConn(edge.http.host, edge.http.port) as c:
        r = c.request("GET", path)
        assert r.status == 200 and r.text == demo_body("GET", path)


def test_listener_at_the_open_file_limit_backs_off_logs_and_recovers(edge_factory):
    """With every descriptor in use, `accept` fails at once for as long as connections wait in the backlog.
    The listener must pause instead of retrying in a loop (before: about 2,400 failed accepts a second, most of a
    core), log a warning that names the cause, and accept again once descriptors are free."""
    server = edge_factory.start(https=None, open_files=64)
    clients = []
    try:
        for _ in range(100):  # more than the limit: the rest wait in the backlog
            clients.append(socket.create_connection((server.http.host, server.http.port), timeout=5))
        assert server.wait_for_log(lambda e, _line: e.get("msg") == "accept failed", timeout=10), server.log
        ticks = lambda: sum(int(v) for v in open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()[11:13])
        before = ticks()
        time.sleep(2)
        used = ticks() - before
        assert used < 40, f"the server used {used} of 200 CPU ticks in 2 s at the descriptor limit: accept is spinning"
        warning = server.log_events("accept failed")[0]
        assert warning["level"] == "warning" and "Too many open files" in warning["error"], warning
        assert len(server.log_events("accept failed")) == 1, "warnings are rate-limited"
    finally:
        for client in clients:
            client.close()
    time.sleep(1)
    with RawConn(server.http.host, server.http.port) as conn:
        assert conn.request("GET", "/healthz").status == 200


@pytest.fixture(scope="module")
def shared_limits(module_edge_factory):
    return module_edge_factory.start(config="""
[limits]
max_in_flight = 40
""" + ROOT_ROUTE)


def test_one_client_holds_only_its_share_of_max_in_flight(shared_limits):
    """One HTTP/2 connection with 40 slow streams (`max_in_flight = 40`) used to turn /healthz, cache hits and every
    other client's requests into 503. Now that client gets its share (a quarter by default: 10) and 429 with
    Retry-After beyond it; /healthz, a cache hit and another address are served meanwhile."""
    server = shared_limits
    hit = f"/{unique('hit')}"
    with RawConn(server.http.host, server.http.port) as c:
        assert c.request("GET", hit).status == 200  # stored
    base = unique("hold")
    paths = [f"/{base}/{i}?delay_ms=4000" for i in range(40)]
    outcome: dict = {}
    holder = threading.Thread(target=lambda: outcome.update(zip(("results", "problems"), h2_get_many(
        server.https.host, server.https.port, paths))))
    holder.start()
    try:
        time.sleep(1.0)  # the slow streams are in flight
        with RawConn(server.http.host, server.http.port) as c:
            assert c.request("GET", "/healthz").status == 200
            cached = c.request("GET", hit)
            assert cached.status == 200 and cached.header("x-cache") == "HIT"
        other = socket.create_connection((server.http.host, server.http.port), timeout=10, source_address=("127.0.0.7", 0))
        try:
            other.sendall(build_request("GET", f"/{unique('other')}?delay_ms=10", {"Connection": "close"}))
            assert other.recv(1024).startswith(b"HTTP/1.1 200 "), "another address was refused"
        finally:
            other.close()
    finally:
        holder.join(timeout=30)
    results, problems = outcome["results"], outcome["problems"]
    assert not problems, problems
    statuses = sorted(int(r["status"]) for r in results.values())
    assert statuses.count(200) == 10 and statuses.count(429) == 30, statuses
    for r in results.values():
        if r["status"] == "429":
            assert r["headers"].get("retry-after") == "1"


def test_healthz_is_served_while_max_in_flight_is_full(small_limits):
    """A load balancer polls /healthz to decide whether the node is alive: it answers 200 while every in-flight slot is
    taken, instead of the 503 that pulled a busy node out of rotation."""
    server = small_limits
    base = unique("full")
    conns = [RawConn(server.http.host, server.http.port) for _ in range(4)]
    try:
        for i, c in enumerate(conns):
            c.send(build_request("GET", f"/{base}/{i}?delay_ms=3000"))
        time.sleep(0.7)
        with RawConn(server.http.host, server.http.port) as c:
            assert c.request("GET", f"/{unique('busy')}?delay_ms=10").status == 503
            health = c.request("GET", "/healthz")
            assert (health.status, health.body) == (200, b"ok\n")
        results, problems = h2_get_many(server.https.host, server.https.port, ["/healthz"])
        assert not problems and results["/healthz"]["status"] == "200", (results, problems)
        for c in conns:
            assert c.read_response().status == 200
    finally:
        for c in conns:
            c.close()
