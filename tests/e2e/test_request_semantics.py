"""Request heads that are syntactically valid HTTP but that Edge must refuse or treat specially (RFC 9110,
9112, 9113), checked over raw sockets and raw HTTP/2 frames: CONNECT, malformed request targets, invalid
Host values, expectations from HTTP/1.0 clients, and plain HTTP sent to the HTTPS port."""

from __future__ import annotations

import socket
import subprocess

import hpack
import pytest
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame

from conftest import RawConn, demo_body, unique
from test_http2_abuse import RawH2


def test_connect_over_http1_gets_501_and_the_connection_closes(edge):
    """Edge is not a forward proxy. What follows a CONNECT head would be tunnel bytes, so the connection must
    close after the answer rather than parse them (or hold the connection open). Before: a 404, and the
    connection held until the keep-alive timeout."""
    with RawConn(edge.http.host, edge.http.port, timeout=10) as conn:
        conn.send(b"CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n"
                  b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = conn.read_response()
        assert response.status == 501
        assert response.header("connection") == "close"
        # RFC 9112 §6.3 takes the body away only from a 2xx answer to CONNECT (that one starts the tunnel); this
        # one says why. NIO's response encoder drops the body of every answer to CONNECT, so Edge writes it below.
        assert response.header("content-length") == str(len(response.body))
        assert response.body == b"CONNECT is not supported: Edge is not a forward proxy\n"
        assert conn.is_closed(), "the connection must close after the answer"
        assert conn.buf == b"", "the pipelined request must not be answered"


def test_connect_through_curl_as_a_proxy_names_the_refusal(edge):
    """What a user sees who points a proxy client at Edge: curl's CONNECT is refused with 501 and the reason."""
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-v", "-p", "-x", f"http://{edge.http.host}:{edge.http.port}",
         "http://other.example/"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "CONNECT tunnel failed, response 501" in result.stderr
    assert "< Server: " in result.stderr or "< server: " in result.stderr
    assert "< content-length: 54" in result.stderr.lower()


def test_connect_over_http2_ends_the_stream_and_the_connection_serves_on(edge):
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        block = conn.encoder.encode([(":method", "CONNECT"), (":authority", "other.example:443")])
        connect = HeadersFrame(1, block)
        connect.flags.add("END_HEADERS")
        conn.send(connect, conn.headers(3, "/healthz"))
        conn.read(timeout=3)
        on_connect = [f for f in conn.frames if f.stream_id == 1]
        assert on_connect and all(isinstance(f, (HeadersFrame, DataFrame, RstStreamFrame)) for f in on_connect)
        assert isinstance(on_connect[-1], RstStreamFrame) or "END_STREAM" in on_connect[-1].flags, \
            f"the CONNECT stream was left open: {on_connect}"
        healthz = [f for f in conn.frames if f.stream_id == 3 and isinstance(f, DataFrame)]
        assert b"".join(f.data for f in healthz) == b"ok\n"
        assert not conn.goaways()
    finally:
        conn.close()


@pytest.mark.parametrize("target", ["healthz", "index.html?x=1", "%2Fhealthz"])
def test_http1_target_without_leading_slash_is_400_not_404(edge, target):
    with RawConn(edge.http.host, edge.http.port) as conn:
        conn.send(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        assert conn.read_response().status == 400


def test_http1_absolute_form_target_is_still_served(edge):
    path = f"/{unique('absolute')}"
    with RawConn(edge.http.host, edge.http.port) as conn:
        conn.send(f"GET http://localhost{path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        response = conn.read_response()
        assert response.status == 200 and response.text == demo_body("GET", path)


def test_http2_path_without_leading_slash_is_400(edge):
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        conn.send(conn.headers(1, "healthz"))
        conn.read(timeout=3)
        headers = [f for f in conn.frames if f.stream_id == 1 and isinstance(f, HeadersFrame)]
        resets = [f for f in conn.frames if f.stream_id == 1 and isinstance(f, RstStreamFrame)]
        assert resets or dict(hpack.Decoder().decode(headers[0].data)).get(":status") == "400", conn.frames
    finally:
        conn.close()


@pytest.mark.parametrize("host", ["a b", "a/b", "user@host", "host?x", "host#x", "ho\x01st"])
@pytest.mark.parametrize("path", ["/healthz", "/plain-demo"])
def test_invalid_host_is_400(edge, host, path):
    """RFC 9112 §3.2: a Host with an invalid value gets 400 — on the fast path (cache hits, /healthz) as well
    as on NIO's parser."""
    with RawConn(edge.http.host, edge.http.port) as conn:
        conn.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode("latin-1"))
        assert conn.read_response().status == 400


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8443", "[::1]:8443", "my-host.example", ""])
def test_valid_hosts_are_served(edge, host):
    with RawConn(edge.http.host, edge.http.port) as conn:
        conn.send(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert conn.read_response().status == 200


def test_http10_expect_100_continue_is_ignored(edge):
    """RFC 9110 §10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0 request, so no 1xx
    response (which an HTTP/1.0 client cannot parse) is sent."""
    path = f"/{unique('expect10')}"
    with RawConn(edge.http.host, edge.http.port) as conn:
        conn.send(f"POST {path} HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc".encode())
        response = conn.read_response()
        assert response.status == 200
        assert response.text.startswith(demo_body("POST", path))


def test_plain_http_on_the_https_port_gets_a_readable_400(edge):
    with socket.create_connection((edge.https.host, edge.https.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert received.startswith(b"HTTP/1.1 400 ")
    assert b"HTTPS" in received
