"""Request heads that are syntactically valid HTTP but that Edge must refuse or treat specially (RFC 9110,
9112, 9113), checked over raw sockets and raw HTTP/2 frames: CONNECT, malformed request targets, invalid
Host values, expectations from HTTP/1.0 clients, plain HTTP sent to the HTTPS port, and HTTP/1 request lines
with an unknown method or another version of HTTP."""

from __future__ import annotations

import socket
import subprocess
import time

import hpack
import pytest
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame

from conftest import (RawConn, build_request, curl, curl_exchange, demo_body, demo_body_with_request_body,
                      start_demo_and_files, unique)
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


def test_options_asterisk_is_answered_for_the_server_as_a_whole(raw_conn):
    """RFC 9110 §9.3.7: `OPTIONS *` asks about the server, not a resource. It gets 200 with an empty body (as Go's
    net/http, and so Caddy, answers it), not the 404 of a missing route; the connection stays open."""
    with raw_conn() as c:
        c.send(b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n" + build_request("GET", "/healthz"))
        response = c.read_response()
        assert (response.status, response.header("content-length"), response.body) == (200, "0", b"")
        assert c.read_response().body == b"ok\n", "the connection must serve on after OPTIONS *"


@pytest.mark.parametrize("protocol", ["--http1.1", "--http2"])
def test_options_asterisk_through_curl(edge, protocol):
    exchange = curl_exchange(protocol, "-X", "OPTIONS", "--request-target", "*", f"{edge.https.url}/")
    assert (exchange.status_line.split()[0], exchange.status) == ("HTTP/2" if protocol == "--http2" else "HTTP/1.1", "200")
    assert exchange.body == b""


@pytest.mark.parametrize("protocol", ["--http1.1", "--http2"])
def test_asterisk_target_for_other_methods_is_400(edge, protocol):
    """The asterisk form is for OPTIONS only (RFC 9112 §3.2.4)."""
    exchange = curl_exchange(protocol, "--request-target", "*", f"{edge.https.url}/")
    assert exchange.status == "400"


def test_absolute_form_host_replaces_host_in_the_cache_key(edge):
    """RFC 9112 §3.2.2: the authority of an absolute-form target, not `Host`, is the request's host. A response
    fetched as `http://a.example/…` with `Host: b.example` is a.example's: it must not be served from the cache
    to b.example (the way to poison a cache keyed on `Host`)."""
    path = f"/{unique('absolute-host')}"

    def get(target: str, host: str):
        with RawConn(edge.http.host, edge.http.port) as conn:
            conn.send(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            response = conn.read_response()
            assert response.status == 200 and response.text == demo_body("GET", path)
            return response.header("x-cache"), response.header("x-demo-fetch")

    cache, fetch = get(f"http://a.example{path}", "b.example")
    assert cache == "MISS"
    assert get(path, "a.example") == ("HIT", fetch), "the absolute-form request was stored under its own host"
    assert get(path, "b.example")[0] == "MISS", "b.example was served a.example's response"


def test_absolute_form_query_without_a_path(edge):
    query = f"q={unique('query')}"
    with RawConn(edge.http.host, edge.http.port) as conn:
        conn.send(f"GET http://localhost?{query} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        response = conn.read_response()
        assert response.status == 200 and response.text == demo_body("GET", f"/?{query}")


@pytest.mark.parametrize("target", ["http:///healthz", "http://user@localhost/healthz"])
def test_absolute_form_with_an_invalid_host_is_400(edge, target):
    """The absolute form's host stands in for `Host`, so it is held to the same rules; an http(s) URI with an
    empty host is invalid (RFC 9110 §4.2.1), and userinfo in one is an error (RFC 9110 §4.2.4)."""
    with RawConn(edge.http.host, edge.http.port) as conn:
        conn.send(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        response = conn.read_response()
        assert (response.status, response.body) == (400, b"invalid host in request target\n")


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


# --- Request lines llhttp would call malformed: unknown methods, other versions (HTTP1RequestLineCheck) -----------

@pytest.fixture(params=["http", "https"])
def raw_conn(request, edge):
    tls = request.param == "https"
    listener = edge.https if tls else edge.http
    return lambda: RawConn(listener.host, listener.port, tls=tls)


@pytest.mark.parametrize("method", ["FOO", "get", "BREW", "PRI"])
def test_unknown_method_gets_501_and_the_connection_closes(raw_conn, method):
    """RFC 9110 §9.1: a method the server does not recognise gets 501, not the 400 of a malformed request (the
    answer before; NIO's parser knows a fixed list of methods). Methods are case-sensitive, so `get` is one too.
    What is pipelined behind is not answered: its framing is unknown."""
    with raw_conn() as c:
        c.send(build_request(method, "/", {"Content-Length": "5"}, b"hello") + build_request("GET", "/healthz"))
        response = c.read_response()
        assert (response.status, response.reason) == (501, "Not Implemented")
        assert response.body == b"request method not recognised\n"
        assert response.header("connection") == "close"
        assert c.is_closed(), "the connection must close after the 501"
        assert c.buf == b""


def test_unknown_method_after_answered_requests_keeps_their_answers(edge):
    """Requests before the unknown one are answered in order; the 501 comes last."""
    with RawConn(edge.http.host, edge.http.port) as c:
        c.send(build_request("GET", "/healthz") + build_request("FOO", "/") + build_request("GET", "/healthz"))
        assert [c.read_response().status, c.read_response().status] == [200, 501]
        assert c.is_closed() and c.buf == b""


def test_unknown_method_split_across_segments_gets_the_same_501(edge):
    """The answer does not depend on how the request line arrives: byte by byte, it is still 501 (not the 400
    that handing an incomplete line to the full parser would give)."""
    with RawConn(edge.http.host, edge.http.port) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in b"FOO /slow HTTP/1.1\r\n":
            c.send(bytes([byte]))
            time.sleep(0.01)
        c.send(b"Host: localhost\r\n\r\n")
        assert c.read_response().status == 501


def test_curl_with_an_unknown_method(edge):
    """What a user sees with curl: 501 over HTTP/1.1 (plain and TLS). Over HTTP/2 NIO's parser is not involved
    and any method token reaches the route, as POST does (the demo backend answers it, uncached)."""
    for url in (f"{edge.http_url}/", f"{edge.https_url}/"):
        result = curl("-sk", "--http1.1", "-X", "FOO", "-o", "/dev/null", "-w", "%{http_code}", url)
        assert result.stdout == "501", (url, result.stdout, result.stderr)
    result = curl("-sk", "--http2", "-X", "FOO", "-D", "-", f"{edge.https_url}/unknown-method")
    assert result.stdout.startswith("HTTP/2 200"), result.stdout
    assert "x-cache: PASS" in result.stdout
    assert result.stdout.endswith(demo_body("FOO", "/unknown-method"))


def test_known_but_unusual_methods_still_reach_the_route(edge):
    """Methods NIO's parser knows (WebDAV's, PATCH) are unaffected: the demo backend answers them."""
    with RawConn(edge.http.host, edge.http.port) as c:
        for method in ("PROPFIND", "PATCH", "PURGE"):
            response = c.request(method, "/known-method")
            assert response.status == 200, method
            assert response.text.startswith(demo_body(method, "/known-method")), response.text


@pytest.fixture(scope="module")
def demo_and_files(module_edge_factory, tmp_path_factory):
    root = tmp_path_factory.mktemp("www-trace")
    (root / "index.html").write_text("<p>hi</p>\n")
    return start_demo_and_files(module_edge_factory, root)


@pytest.mark.parametrize("protocol", ["--http1.1", "--http2"])
@pytest.mark.parametrize("path, allow", [("/trace-me", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                                         ("/files/index.html", "GET, HEAD")])
def test_trace_gets_405_on_every_route(demo_and_files, protocol, path, allow):
    """TRACE echoes a request back, credentials and cookies included (cross-site tracing); nginx refuses it with
    405 whatever the location. Edge does the same on every route instead of passing it to the backend (which
    answered 200 before), and says in `Allow` what the route serves (RFC 9110 §15.5.6)."""
    exchange = curl_exchange(protocol, "-X", "TRACE", "-H", "Cookie: session=secret", f"{demo_and_files.https.url}{path}")
    assert exchange.status == "405"
    assert exchange.headers["allow"] == allow
    assert b"secret" not in exchange.body
    assert "x-cache" not in exchange.headers, "TRACE must not reach the demo backend"


def test_trace_does_not_close_the_connection(edge):
    with RawConn(edge.http.host, edge.http.port) as conn:
        assert conn.request("TRACE", "/").status == 405
        assert conn.request("GET", "/healthz").body == b"ok\n"


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/3.0", "HTTP/0.9"])
def test_other_major_versions_get_505(raw_conn, version):
    """RFC 9110 §15.6.6: a major version the server does not speak gets 505 (as nginx answers), not 400."""
    with raw_conn() as c:
        c.send(build_request("GET", "/healthz", version=version))
        response = c.read_response()
        assert response.status == 505
        assert response.reason == "HTTP Version Not Supported"
        assert response.body == b"HTTP version not supported: use HTTP/1.1, or HTTP/2 over TLS\n"
        assert c.is_closed()


def test_http2_prior_knowledge_on_the_plain_port_gets_505(edge):
    """HTTP/2's connection preface sent to the plain HTTP/1.1 port (`curl --http2-prior-knowledge`) reads as a
    request line with version 2.0: a readable 505 that says where HTTP/2 is offered, then the close."""
    with RawConn(edge.http.host, edge.http.port) as c:
        c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        response = c.read_response()
        assert response.status == 505
        assert b"HTTP/2 over TLS" in response.body
        assert c.is_closed()
    result = curl("-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", f"{edge.http_url}/")
    assert result.returncode != 0, "curl cannot read an HTTP/1.1 answer as HTTP/2; Edge must not have hung"


@pytest.mark.parametrize("version", ["HTTP/1.2", "HTTP/1.9"])
def test_higher_minor_versions_are_served_as_http11(raw_conn, version):
    """RFC 9112 §2.3: a higher minor version of HTTP/1 is processed as HTTP/1.1 (nginx does the same); llhttp
    alone refused it with 400. Simple requests stay on the fast path, keep-alive included; a request with a
    body goes through the full parser."""
    path = f"/{unique('minor')}"
    with raw_conn() as c:
        c.send(build_request("GET", path, version=version))
        first = c.read_response()
        assert (first.version, first.status) == ("HTTP/1.1", 200)
        assert first.text == demo_body("GET", path)
        c.send(build_request("POST", path, {"Connection": "close"}, b"body!", version=version))
        second = c.read_response()
        assert second.status == 200
        assert demo_body_with_request_body("POST", path, 5, second.text)
        assert second.header("connection") == "close"
        assert c.is_closed()


@pytest.mark.parametrize("line", [
    b"G@T / HTTP/1.1",       # not a token
    b"GET / HTTP/1.10",      # two-digit minor version
    b"GET / HTTP/11.1",
    b"GET / http/1.1",       # HTTP-name is case-sensitive
])
def test_malformed_request_lines_still_get_400(edge, line):
    with RawConn(edge.http.host, edge.http.port) as c:
        c.send(line + b"\r\nHost: localhost\r\n\r\n")
        assert c.read_response().status == 400
        assert c.is_closed()
