"""HTTP/1.1 connection semantics over raw sockets (plain listener, and TLS where it matters)."""

from __future__ import annotations

import socket

import h11
import pytest

from conftest import RawConn, build_request, demo_body, demo_body_with_request_body, unique


@pytest.fixture(params=["http", "https"])
def conn_factory(request, edge):
    tls = request.param == "https"
    listener = edge.https if tls else edge.http

    def make():
        return RawConn(listener.host, listener.port, tls=tls)
    return make


def test_keep_alive_two_requests_one_socket(conn_factory):
    base = unique("ka")
    with conn_factory() as c:
        r1 = c.request("GET", f"/{base}/1")
        assert r1.status == 200
        assert r1.text == demo_body("GET", f"/{base}/1")
        assert (r1.header("connection") or "").lower() != "close"
        r2 = c.request("GET", f"/{base}/2")
        assert r2.status == 200
        assert r2.text == demo_body("GET", f"/{base}/2")


def test_pipelining_three_requests_in_order(conn_factory):
    base = unique("pipe")
    # The first one is slow so that an out-of-order server would answer 2 and 3 first.
    paths = [f"/{base}/a?delay_ms=300", f"/{base}/b", f"/{base}/c?delay_ms=50"]
    with conn_factory() as c:
        c.send(b"".join(build_request("GET", p) for p in paths))
        for p in paths:
            resp = c.read_response()
            assert resp.status == 200
            assert resp.text == demo_body("GET", p)


def test_pipelined_mix_hands_over_to_full_parser_in_order(conn_factory):
    """Simple GETs take the fast path; a request with a body, chunked encoding or a malformed-looking but
    valid header makes the connection hand over to the full HTTP/1 parser mid-pipeline. Responses must
    stay in order and every request must be answered exactly once."""
    base = unique("mix")
    requests = [
        ("GET", f"/{base}/1?delay_ms=200", {}, b""),                  # fast path, pending (cache miss)
        ("GET", f"/{base}/2", {}, b""),                               # fast path, buffered behind it
        ("POST", f"/{base}/3", {}, b"hello"),                         # hand-over: has a body
        ("GET", f"/{base}/4", {"Transfer-Encoding": "chunked"}, b"0\r\n\r\n"),  # full parser
        ("GET", f"/{base}/5", {}, b""),                               # full parser from now on
    ]
    with conn_factory() as c:
        c.send(b"".join(build_request(m, p, h, b) for m, p, h, b in requests))
        for method, path, _, body in requests:
            resp = c.read_response()
            assert resp.status == 200, (path, resp.status)
            if method == "POST":
                assert demo_body_with_request_body(method, path, len(body), resp.text), resp.text
            else:
                assert resp.text == demo_body(method, path), (path, resp.text)
        # Still usable afterwards.
        again = c.request("GET", f"/{base}/2")
        assert again.status == 200 and again.header("x-cache") == "HIT"


def test_http10_keep_alive_is_confirmed(conn_factory):
    path = f"/{unique('h10ka')}"
    with conn_factory() as c:
        c.send(build_request("GET", path, headers={"Connection": "keep-alive"}, version="HTTP/1.0"))
        resp = c.read_response()
        assert resp.status == 200
        assert (resp.header("connection") or "").lower() == "keep-alive"
        second = c.request("GET", path)
        assert second.status == 200 and second.header("x-cache") == "HIT"


def test_connection_close_closes(conn_factory):
    path = f"/{unique('close')}"
    with conn_factory() as c:
        resp = c.request("GET", path, headers={"Connection": "close"})
        assert resp.status == 200
        assert resp.text == demo_body("GET", path)
        assert (resp.header("connection") or "").lower() == "close"
        assert c.buf == b""
        assert c.is_closed(timeout=10), "server kept the connection open after Connection: close"


@pytest.mark.parametrize("close_request", [
    pytest.param({"Connection": "close"}, id="fast-path"),
    pytest.param({"Connection": "close, x-trace"}, id="full-parser"),  # a token the fast path hands over
    pytest.param({"Connection": "close", "Content-Length": "5"}, id="with-body"),
])
def test_nothing_is_answered_after_connection_close(conn_factory, close_request):
    """RFC 9112 §9.6: after a response with `Connection: close` the server processes no further request; the
    ones pipelined behind get no answer at all (Edge once answered them with a 400)."""
    path = f"/{unique('close-pipe')}"
    body = b"hello" if "Content-Length" in close_request else b""
    with conn_factory() as c:
        c.send(build_request("POST" if body else "GET", path, close_request, body)
               + build_request("GET", "/healthz") + b"GARBAGE\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 200
        assert (resp.header("connection") or "").lower() == "close"
        assert c.is_closed(timeout=10), "the connection ends after the response that said close"
        assert c.buf == b"", f"answered after Connection: close: {c.buf[:200]!r}"


def test_http10_without_keepalive_closes(edge):
    path = f"/{unique('h10')}"
    with RawConn(edge.http.host, edge.http.port) as c:
        c.send(build_request("GET", path, version="HTTP/1.0"))
        resp = c.read_response()
        assert resp.status == 200
        assert resp.text == demo_body("GET", path)
        assert c.is_closed(timeout=10), "HTTP/1.0 request without keep-alive must close the connection"


def test_head_matches_get_without_body(conn_factory):
    path = f"/{unique('head')}?x=1"
    with conn_factory() as c:
        get = c.request("GET", path)
        assert get.status == 200
        head = c.request("HEAD", path)
        assert head.status == 200
        assert head.header("content-length") == get.header("content-length") == str(len(get.body))
        assert head.header("content-type") == get.header("content-type")
        # If HEAD had sent a body, its bytes would precede the next status line.
        nxt = c.request("GET", "/healthz")
        assert nxt.status == 200 and nxt.body == b"ok\n"


def test_expect_100_continue(conn_factory):
    path = f"/{unique('expect')}"
    body = b"hello=world"
    with conn_factory() as c:
        c.send(build_request("POST", path, headers={
            "Content-Length": str(len(body)), "Expect": "100-continue"}))
        interim = c.read_response()
        assert interim.status == 100, f"expected 100 Continue, got {interim.status}"
        assert interim.version == "HTTP/1.1"
        c.send(body)
        final = c.read_response()
        assert final.status == 200
        assert demo_body_with_request_body("POST", path, len(body), final.text), final.text
        assert final.header("x-cache") == "PASS"


def test_expect_other_gives_417(edge):
    with RawConn(edge.http.host, edge.http.port) as c:
        c.send(build_request("POST", f"/{unique('e417')}", headers={
            "Content-Length": "4", "Expect": "something-else"}))
        resp = c.read_response()
        assert resp.status == 417


def test_chunked_request_body_post(conn_factory):
    path = f"/{unique('chunk')}"
    with conn_factory() as c:
        c.send(build_request("POST", path, headers={"Transfer-Encoding": "chunked"}))
        c.send(b"5\r\nhello\r\n")
        c.send(b"6\r\n world\r\n0\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 200
        assert demo_body_with_request_body("POST", path, len("hello world"), resp.text), resp.text
        assert resp.header("x-cache") == "PASS"
        # connection still usable
        assert c.request("GET", "/healthz").status == 200


def test_post_is_not_cached(edge):
    path = f"/{unique('post')}"
    with RawConn(edge.http.host, edge.http.port) as c:
        r1 = c.request("POST", path, body=b"a")
        r2 = c.request("POST", path, body=b"b")
    assert r1.status == r2.status == 200
    assert r1.header("x-cache") == r2.header("x-cache") == "PASS"
    assert int(r2.header("x-demo-fetch")) > int(r1.header("x-demo-fetch"))


def test_h11_client_roundtrip(edge):
    """An independent HTTP/1.1 implementation (h11) parses our responses without complaint."""
    path = f"/{unique('h11')}"
    sock = socket.create_connection((edge.http.host, edge.http.port), timeout=30)
    try:
        conn = h11.Connection(our_role=h11.CLIENT)
        for i in range(2):
            sock.sendall(conn.send(h11.Request(method="GET", target=path,
                                               headers=[("Host", "localhost")])))
            sock.sendall(conn.send(h11.EndOfMessage()))
            resp, body = None, b""
            for _ in range(10000):
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    data = sock.recv(65536)
                    conn.receive_data(data)
                    continue
                if isinstance(ev, h11.Response):
                    resp = ev
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    break
            assert resp is not None and resp.status_code == 200
            assert body.decode() == demo_body("GET", path)
            headers = {k.decode().lower(): v.decode() for k, v in resp.headers}
            assert headers["x-cache"] == ("MISS" if i == 0 else "HIT")
            assert conn.our_state is h11.DONE and conn.their_state is h11.DONE
            conn.start_next_cycle()
    finally:
        sock.close()
