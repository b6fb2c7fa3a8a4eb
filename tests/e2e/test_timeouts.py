"""Connection timeouts and the connection limit: idle keep-alive, TLS handshake deadline, max_connections."""

from __future__ import annotations

import os
import socket
import time

import pytest

from conftest import H2Client, RawConn, build_request, unique

ROOT_ROUTE = """
[[route]]
path = "/"
demo = { delay_ms = 2 }
"""


@pytest.fixture(scope="module")
def short_timeouts(module_edge_factory):
    return module_edge_factory.start(config="""
[timeouts]
keepalive_seconds = 1
tls_handshake_seconds = 1
""" + ROOT_ROUTE)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_idle_keepalive_connection_is_closed(short_timeouts, scheme):
    listener = short_timeouts.http if scheme == "http" else short_timeouts.https
    with RawConn(listener.host, listener.port, tls=scheme == "https") as c:
        assert c.request("GET", f"/{unique('idle')}").status == 200
        start = time.monotonic()
        assert c.is_closed(timeout=10), "idle keep-alive connection was not closed"
        waited = time.monotonic() - start
        assert 0.5 <= waited <= 8, f"closed after {waited:.2f} s with keepalive_seconds = 1"


def test_idle_timeout_after_hand_over_to_full_parser(short_timeouts):
    """A request with a body goes through NIO's parser; the keep-alive timer must still apply afterwards."""
    s = short_timeouts
    with RawConn(s.http.host, s.http.port) as c:
        c.send(build_request("POST", f"/{unique('idlepost')}", body=b"abc"))
        assert c.read_response().status == 200
        assert c.is_closed(timeout=10), "connection handed to the full parser was never closed when idle"


def test_slow_response_is_not_cut_by_keepalive_timer(short_timeouts):
    s = short_timeouts
    with RawConn(s.http.host, s.http.port) as c:
        r = c.request("GET", f"/{unique('slow')}?delay_ms=2500")
        assert r.status == 200, "a request in progress must not be closed by the keep-alive timeout"


def test_idle_http2_connection_gets_goaway(short_timeouts):
    s = short_timeouts
    client = H2Client(s.https.host, s.https.port)
    try:
        sid = client.request(f"/{unique('h2idle')}")
        client.pump(lambda: client.ended(sid), timeout=10)
        assert client.streams[sid]["status"] == "200"
        start = time.monotonic()
        client.pump(lambda: client.closed, timeout=10)
        waited = time.monotonic() - start
        assert client.goaways == [(0, sid)], f"expected one GOAWAY(NO_ERROR, last stream {sid}): {client.goaways}"
        assert client.closed, "idle HTTP/2 connection was not closed"
        assert 0.5 <= waited <= 8, f"closed after {waited:.2f} s with keepalive_seconds = 1"
    finally:
        client.close()


@pytest.mark.parametrize("cached", [True, False], ids=["cache hits", "cache misses"])
def test_busy_http2_connection_is_not_closed_as_idle(short_timeouts, cached):
    """Requests keep an HTTP/2 connection out of the idle timeout, whether they are answered by the fast
    path (cache hits) or by a stream channel (misses), for well over keepalive_seconds."""
    s = short_timeouts
    client = H2Client(s.https.host, s.https.port)
    path = f"/{unique('h2busy')}"
    try:
        end = time.monotonic() + 3.5
        served = 0
        while time.monotonic() < end:
            sid = client.request(path if cached else f"{path}/{served}")
            assert client.pump(lambda: client.ended(sid), timeout=10), f"stream {sid} did not end"
            assert client.streams[sid]["status"] == "200"
            served += 1
            time.sleep(0.2)
        assert not client.goaways and not client.closed, \
            f"a busy connection was closed as idle after {served} requests: goaways={client.goaways}"
    finally:
        client.close()


def test_tls_handshake_deadline(short_timeouts):
    """A client that connects to the TLS port and never sends a ClientHello is disconnected."""
    s = short_timeouts
    sock = socket.create_connection((s.https.host, s.https.port), timeout=10)
    try:
        start = time.monotonic()
        try:
            data = sock.recv(1024)
        except ConnectionResetError:
            data = b""
        waited = time.monotonic() - start
        assert data == b"", f"expected the server to close, got {data!r}"
        assert waited <= 8, f"closed only after {waited:.2f} s with tls_handshake_seconds = 1"
    finally:
        sock.close()


def test_max_connections(edge_factory):
    server = edge_factory.start(config="""
[limits]
max_connections = 3
""" + ROOT_ROUTE)
    held = [RawConn(server.http.host, server.http.port) for _ in range(3)]
    try:
        for c in held:
            assert c.request("GET", "/healthz").status == 200
        extra = socket.create_connection((server.http.host, server.http.port), timeout=10)
        try:
            extra.sendall(build_request("GET", "/healthz"))
            try:
                data = extra.recv(1024)
            except ConnectionResetError:
                data = b""
            assert data == b"", f"connection over max_connections was served: {data!r}"
        finally:
            extra.close()
        # The held connections still work, and a slot frees up when one closes.
        assert held[0].request("GET", "/healthz").status == 200
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:
            with RawConn(server.http.host, server.http.port) as c:
                try:
                    if c.request("GET", "/healthz").status == 200:
                        break
                except (EOFError, ConnectionError, OSError):
                    pass
            assert time.monotonic() < deadline, "no connection slot was released after a close"
            time.sleep(0.2)
    finally:
        for c in held:
            c.close()


@pytest.fixture(scope="module")
def slow_reader_site(module_edge_factory, tmp_path_factory):
    root = tmp_path_factory.mktemp("slowread")
    (root / "big.bin").write_bytes(os.urandom(2 << 20))
    return module_edge_factory.start(config=f"""
[timeouts]
send_seconds = 1

[[route]]
path = "/files"
static = "{root}"
"""), root


@pytest.mark.parametrize("tls", [False, True])
def test_a_slow_but_steady_reader_is_not_cut_off_by_send_seconds(slow_reader_site, tls):
    """send_seconds means no byte taken for that long, as nginx's send_timeout: a client reading a 2 MB file at
    about 256 KB/s (8 s) with send_seconds = 1 gets all of it. Before, plain HTTP/1.1 (one sendfile region
    unwritten for send_seconds) and TLS (one 128 KiB chunk) closed the connection part-way."""
    server, root = slow_reader_site
    listener = server.https if tls else server.http
    conn = RawConn(listener.host, listener.port, tls=tls, receive_buffer=4096)
    try:
        conn.send(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        conn.sock.settimeout(5)
        data = b""
        while True:
            try:
                chunk = conn.sock.recv(65536)
            except (TimeoutError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
            time.sleep(0.25 * len(chunk) / 65536)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:100]
        assert body == (root / "big.bin").read_bytes(), f"got {len(body)} of {2 << 20} bytes"
    finally:
        conn.close()


def test_an_http2_stream_given_window_slowly_is_not_reset(slow_reader_site):
    """An HTTP/2 client that grants 16 KiB of window every 0.5 s (32 KB/s) keeps its stream: DATA moves, so
    nothing is stalled, although a 128 KiB chunk takes 4 s to pass with send_seconds = 1."""
    from test_http2_abuse import RawH2
    from hyperframe.frame import DataFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame

    server, _ = slow_reader_site
    conn = RawH2(server.https.host, server.https.port)
    try:
        conn.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}))
        conn.send(conn.headers(1, "/files/big.bin"))
        received = 0
        end = time.monotonic() + 6
        while time.monotonic() < end:
            conn.send(WindowUpdateFrame(1, window_increment=16384), WindowUpdateFrame(0, window_increment=16384))
            before = len(conn.frames)
            conn.read(timeout=0.5)
            received += sum(len(f.data) for f in conn.frames[before:] if isinstance(f, DataFrame))
        assert not any(isinstance(f, RstStreamFrame) for f in conn.frames), conn.frames[-3:]
        assert not conn.goaways() and not conn.closed
        assert received >= 150_000, received
    finally:
        conn.close()
