"""Clients that shut down their sending side after their requests (`shutdown(SHUT_WR)`, as `nc -N` or a
piped HTTP/1.0 client does) still get every response they asked for, then the server closes (RFC 9112 §9.6).
Checked over plain TCP and over TLS (a TCP half-close without close_notify, as the socket API makes it),
for answers that are ready at once and for ones that are not: cache misses, POST bodies, pipelined requests
and a large static file (sendfile on plain TCP, streamed chunks under TLS)."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl

import h2.config
import h2.events
import pytest

from conftest import (IO_TIMEOUT, _GoawayTolerantH2Connection, client_tls_context, demo_body, start_demo_and_files,
                      unique)

BIG = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("www-half-close")
    (root / "big.bin").write_bytes(os.urandom(BIG))
    return root


@pytest.fixture(scope="module")
def server(module_edge_factory, site):
    return start_demo_and_files(module_edge_factory, site)


def exchange_half_closed(host: str, port: int, request: bytes, tls: bool, alpn: str = "http/1.1") -> bytes:
    """Sends `request`, shuts down the write side of the TCP connection, and returns every byte received
    until the server closes. Under TLS the records are decrypted through a memory BIO, because Python's
    SSLSocket cannot read after a TCP half-close."""
    sock = socket.create_connection((host, port), timeout=IO_TIMEOUT)
    try:
        if not tls:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(1 << 16):
                received += chunk
            return received
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls_object = client_tls_context([alpn]).wrap_bio(incoming, outgoing, server_hostname="localhost")

        def pump_out() -> None:
            if pending := outgoing.read():
                sock.sendall(pending)

        while True:
            try:
                tls_object.do_handshake()
                break
            except ssl.SSLWantReadError:
                pump_out()
                handshake_bytes = sock.recv(1 << 16)
                assert handshake_bytes, "closed during the TLS handshake"
                incoming.write(handshake_bytes)
        pump_out()
        assert tls_object.selected_alpn_protocol() == alpn
        tls_object.write(request)
        pump_out()
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            incoming.write(chunk)
            while True:
                try:
                    plaintext = tls_object.read(1 << 16)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    break
                if not plaintext:  # the server's close_notify
                    break
                received += plaintext
        return received
    finally:
        sock.close()


def split_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Parses consecutive HTTP/1.1 responses framed by Content-Length; fails on anything left over."""
    out = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {head[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        assert len(data) >= length, f"body cut short: {len(data)} of {length} bytes"
        out.append((int(lines[0].split()[1]), headers, data[:length]))
        data = data[length:]
    return out


@pytest.fixture(params=["plain", "tls"])
def target(request, server):
    scheme = "http" if request.param == "plain" else "https"
    listener = server.listener(scheme)
    return listener.host, listener.port, request.param == "tls"


def test_cache_miss_is_answered_after_the_client_half_closes(target):
    host, port, tls = target
    path = f"/{unique('half')}?delay_ms=300"
    [(status, headers, body)] = split_responses(
        exchange_half_closed(host, port, f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode(), tls)
    )
    assert status == 200
    assert headers["x-cache"] == "MISS"
    assert body.decode() == demo_body("GET", path)


def test_post_body_is_answered_after_the_client_half_closes(target):
    host, port, tls = target
    path = f"/{unique('half-post')}"
    request = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello".encode()
    [(status, _, body)] = split_responses(exchange_half_closed(host, port, request, tls))
    assert status == 200
    assert body.decode().startswith(demo_body("POST", path))


def test_pipelined_requests_are_all_answered_in_order_after_the_client_half_closes(target):
    host, port, tls = target
    slow, fast = f"/{unique('half-a')}?delay_ms=300", f"/{unique('half-b')}"
    request = (
        f"GET {slow} HTTP/1.1\r\nHost: localhost\r\n\r\n"
        f"GET {fast} HTTP/1.1\r\nHost: localhost\r\n\r\n"
        f"POST {fast} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        f"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    ).encode()
    responses = split_responses(exchange_half_closed(host, port, request, tls))
    assert [status for status, _, _ in responses] == [200, 200, 200, 200]
    assert responses[0][2].decode() == demo_body("GET", slow)
    assert responses[1][2].decode() == demo_body("GET", fast)
    assert responses[2][2].decode().startswith(demo_body("POST", fast))
    assert responses[3][2] == b"ok\n"


def test_large_static_file_arrives_whole_after_the_client_half_closes(target, site):
    host, port, tls = target
    [(status, headers, body)] = split_responses(
        exchange_half_closed(host, port, b"GET /files/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n", tls)
    )
    assert status == 200
    assert len(body) == BIG
    assert hashlib.sha256(body).digest() == hashlib.sha256((site / "big.bin").read_bytes()).digest()


def test_unfinished_request_is_dropped_and_the_connection_closed(target):
    host, port, tls = target
    assert exchange_half_closed(host, port, b"GET /never-finished HTTP/1.1\r\nHost: loc", tls) == b""


def test_http2_streams_in_flight_finish_then_goaway_and_close_after_the_client_half_closes(server):
    listener = server.listener("https")
    client = _GoawayTolerantH2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    client.initiate_connection()
    paths = {1: f"/{unique('half-h2')}?delay_ms=300", 3: "/healthz"}
    for stream_id, path in paths.items():
        client.send_headers(stream_id, [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                                        (":path", path)], end_stream=True)
    received = exchange_half_closed(listener.host, listener.port, client.data_to_send(), True, alpn="h2")
    bodies: dict[int, bytes] = {}
    statuses: dict[int, str] = {}
    ended, goaway = set(), None
    for event in client.receive_data(received):
        if isinstance(event, h2.events.ResponseReceived):
            statuses[event.stream_id] = dict(event.headers)[":status"]
        elif isinstance(event, h2.events.DataReceived):
            bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
        elif isinstance(event, h2.events.StreamEnded):
            ended.add(event.stream_id)
        elif isinstance(event, h2.events.ConnectionTerminated):
            goaway = event
    assert statuses == {1: "200", 3: "200"}
    assert ended == {1, 3}
    assert bodies[1].decode() == demo_body("GET", paths[1])
    assert bodies[3] == b"ok\n"
    assert goaway is not None and goaway.error_code == 0, "a graceful GOAWAY precedes the close"
    assert goaway.last_stream_id == 3
