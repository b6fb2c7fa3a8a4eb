"""HTTP/1.1 request smuggling and framing abuse: every ambiguous or invalid message gets a 4xx/501 and the
connection is closed, so no bytes of it can be read as another request; other clients keep being served."""

from __future__ import annotations

import pytest

from conftest import RawConn

CASES = {
    "content-length and transfer-encoding": (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "two content-lengths": (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    "repeated equal content-length": (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    "content-length list": (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    "signed content-length": (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", 400),
    "negative content-length": (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    "invalid chunk size": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    "overflowing chunk size": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", 400),
    "obs-fold": (b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
    "bare LF line ends": (b"GET /a HTTP/1.1\nHost: x\n\n", 400),
    "bare CR": (b"GET /a HTTP/1.1\rHost: x\r\n\r\n", 400),
    "space before colon": (b"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
    "NUL in a header": (b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
    "transfer-encoding not ending in chunked": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400),
    "chunked then gzip": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    "transfer-encoding twice": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "unknown coding": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
    "undecodable coding before chunked": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    "HTTP/1.1 without Host": (b"GET /a HTTP/1.1\r\n\r\n", 400),
    "two Host headers": (b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
}


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("name", list(CASES))
def test_rejected_and_closed(edge, scheme, name):
    request, status = CASES[name]
    listener = edge.http if scheme == "http" else edge.https
    with RawConn(listener.host, listener.port, tls=scheme == "https") as c:
        c.send_tolerant(request)
        response = c.read_response()
        assert response.status == status, f"{name}: got {response.status}"
        assert c.is_closed(timeout=10), f"{name}: connection left open after {status}"
    with RawConn(listener.host, listener.port, tls=scheme == "https") as c:
        assert c.request("GET", "/healthz").status == 200
