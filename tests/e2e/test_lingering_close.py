"""Lingering close, as nginx's `lingering_close`: when Edge ends an HTTP/1.1 connection while the client may
still be sending (an answer with `Connection: close`, a 400 for a malformed request), the answers queued before
the close reach the client whole, although the client goes on sending bytes Edge will never answer.

Closing a TCP socket with unread input, or receiving data on one already closed, makes the kernel reset the
connection and discard whatever it had not yet sent. The client here advertises a small receive window, so
most of a 300 KB answer is still in Edge's socket when Edge closes, and sends more requests half a second later,
after Edge has answered and closed. Without the lingering close the answer stops after a few kilobytes with a
reset (plain TCP); over TLS, NIOSSL's close_notify exchange keeps reading, and these tests are the control."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

from conftest import RawConn, start_demo_and_files, unique

BIG = 300_000
IN_MEMORY = 60_000  # under the static cache's 64 KiB: answered from memory, not with sendfile
SMALL_WINDOW = 4096
MORE_REQUESTS = b"GET /more HTTP/1.1\r\nHost: localhost\r\n\r\n" * 8


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("www-linger")
    (root / "big.bin").write_bytes(os.urandom(BIG))
    (root / "memory.bin").write_bytes(os.urandom(IN_MEMORY))
    return root


@pytest.fixture(scope="module")
def server(module_edge_factory, site):
    return start_demo_and_files(module_edge_factory, site)


@pytest.fixture(params=["plain", "tls"])
def target(request, server):
    listener = server.listener("http" if request.param == "plain" else "https")
    return listener.host, listener.port, request.param == "tls"


def send_then_keep_sending(target, requests: str) -> RawConn:
    """Sends `requests` over a connection with a small receive window, reads nothing for half a second (Edge
    answers and closes meanwhile, its answer waiting for the window), then sends more requests."""
    host, port, tls = target
    conn = RawConn(host, port, tls=tls, receive_buffer=SMALL_WINDOW)
    conn.send(requests.encode())
    time.sleep(0.5)
    conn.send_tolerant(MORE_REQUESTS)
    return conn


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_file_answered_before_a_malformed_request_arrives_whole_then_the_400(target, site):
    with send_then_keep_sending(
        target, "GET /files/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\nNOT A REQUEST\r\n\r\n"
    ) as conn:
        first = conn.read_response()
        assert first.status == 200
        assert len(first.body) == BIG and digest(first.body) == digest((site / "big.bin").read_bytes())
        second = conn.read_response()
        assert second.status == 400
        assert second.header("connection") == "close"
        assert conn.is_closed(), "the connection ends after the 400"


@pytest.mark.parametrize("path, connection, size, pipelined", [
    pytest.param("big.bin", "close", BIG, "memory.bin", id="file"),
    pytest.param("memory.bin", "close", IN_MEMORY, "big.bin", id="from-memory"),
    # A `Connection` token the fast path does not handle hands the connection to NIO's HTTP/1 pipeline, whose
    # close passes through the same lingering close.
    pytest.param("big.bin", "close, x-trace", BIG, "memory.bin", id="full-parser"),
])
def test_answer_with_connection_close_arrives_whole(target, site, path, connection, size, pipelined):
    with send_then_keep_sending(
        target,
        f"GET /files/{path} HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\n\r\n"
        f"GET /files/{pipelined} HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ) as conn:
        answer = conn.read_response()
        assert answer.status == 200 and answer.header("connection") == "close"
        assert len(answer.body) == size and digest(answer.body) == digest((site / path).read_bytes())
        assert conn.is_closed() and conn.buf == b"", "nothing is answered after Connection: close"


def test_server_keeps_serving_after_lingering_connections(server):
    listener = server.listener("http")
    with RawConn(listener.host, listener.port) as conn:
        assert conn.request("GET", "/healthz").status == 200


def test_client_still_sending_a_too_large_body_gets_the_413_and_a_clean_end(server):
    """The classic case for lingering: Edge answers 413 as soon as the declared body exceeds the limit, while the
    client is still uploading. The client reads the 413 and then the end of the stream, and its upload is drained,
    not reset (a client hit by the reset mid-send, as curl is, never sees the 413). Plain TCP only: Python's TLS
    socket cannot be written and read from two threads at once."""
    listener = server.listener("http")
    conn = RawConn(listener.host, listener.port)
    declared = 8 * 1024 * 1024  # the default limit is 1 MiB
    conn.send(f"POST /{unique('upload')} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {declared}\r\n\r\n".encode())
    stop = threading.Event()
    upload_errors: list[OSError] = []

    def upload() -> None:
        chunk = b"x" * 65536
        try:
            for _ in range(declared // len(chunk)):
                if stop.is_set():
                    return
                conn.sock.sendall(chunk)
        except OSError as error:
            upload_errors.append(error)

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    try:
        answer = conn.read_response()
        assert answer.status == 413
        received, reset = b"", False
        try:
            while chunk := conn.sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            reset = True
        assert not reset, "the connection was reset after the 413"
        assert received == b""
        uploader.join(timeout=2)
        assert upload_errors == [], "the rest of the upload was reset rather than drained"
    finally:
        stop.set()
        conn.sock.shutdown(socket.SHUT_RDWR)
        uploader.join(timeout=5)
        conn.close()
