"""Protocol coverage: HTTP/1.1 (plain and TLS), HTTP/2 over TLS, TLS versions, ALPN.

Uses independent clients: curl, h2load, python's ssl module, the `h2` library and httpx.
"""

from __future__ import annotations

import email.utils
import re
import shutil
import socket
import ssl
import subprocess
import time

import httpx
import pytest

from conftest import RawConn, client_tls_context, curl, demo_body, h2_get_many, unique

CURL_MARK = "\n__CURL__ "


def curl_get(url: str, *flags: str):
    """Returns (status, http_version, body) using curl."""
    res = curl("-k", *flags, "-w", CURL_MARK + "%{http_code} %{http_version}", url)
    assert res.returncode == 0, f"curl {flags} {url} failed rc={res.returncode}: {res.stderr}"
    body, _, meta = res.stdout.rpartition(CURL_MARK)
    status, version = meta.split()
    return int(status), version, body


def test_curl_http11_over_tls(edge):
    path = f"/{unique('c11')}?a=1"
    status, version, body = curl_get(edge.https_url + path, "--http1.1")
    assert (status, version) == (200, "1.1")
    assert body == demo_body("GET", path)


def test_curl_http2_over_tls(edge):
    path = f"/{unique('c2')}/x?b=2"
    status, version, body = curl_get(edge.https_url + path, "--http2")
    assert (status, version) == (200, "2")
    assert body == demo_body("GET", path)


def test_curl_plain_http11(edge):
    path = f"/{unique('plain')}"
    status, version, body = curl_get(edge.http_url + path, "--http1.1")
    assert (status, version) == (200, "1.1")
    assert body == demo_body("GET", path)


def test_curl_tls12_only(edge):
    status, version, _ = curl_get(edge.https_url + f"/{unique('t12')}", "--tlsv1.2", "--tls-max", "1.2", "--http2")
    assert (status, version) == (200, "2")
    status, version, _ = curl_get(edge.https_url + f"/{unique('t12')}", "--tlsv1.2", "--tls-max", "1.2", "--http1.1")
    assert (status, version) == (200, "1.1")


def test_curl_tls13(edge):
    status, version, _ = curl_get(edge.https_url + f"/{unique('t13')}", "--tlsv1.3", "--http2")
    assert (status, version) == (200, "2")


@pytest.mark.parametrize("tls_version,expected", [
    (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
    (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
])
def test_python_ssl_negotiates_tls_version(edge, tls_version, expected):
    ctx = client_tls_context(["http/1.1"])
    ctx.minimum_version = tls_version
    ctx.maximum_version = tls_version
    with socket.create_connection((edge.https.host, edge.https.port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == expected
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            for _ in range(1000):
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
            assert data.startswith(b"HTTP/1.1 200"), data[:200]
            assert data.endswith(b"\r\n\r\nok\n"), data[-200:]


@pytest.mark.parametrize("offer,expected", [
    (["h2", "http/1.1"], "h2"),
    (["h2"], "h2"),
    (["http/1.1"], "http/1.1"),
])
def test_alpn_negotiation(edge, offer, expected):
    ctx = client_tls_context(offer)
    with socket.create_connection((edge.https.host, edge.https.port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == expected


def test_tls_without_alpn_falls_back_to_http11(edge):
    conn = RawConn(edge.https.host, edge.https.port, tls=False)
    ctx = client_tls_context(None)
    conn.sock = ctx.wrap_socket(conn.sock, server_hostname="localhost")
    with conn:
        assert conn.sock.selected_alpn_protocol() is None
        path = f"/{unique('noalpn')}"
        resp = conn.request("GET", path)
        assert resp.status == 200
        assert resp.version == "HTTP/1.1"
        assert resp.text == demo_body("GET", path)


def _check_common_headers(get) -> None:
    assert get("server") == "edge"
    date = get("date")
    assert date, "missing Date header"
    parsed = email.utils.parsedate_to_datetime(date)
    assert abs(parsed.timestamp() - time.time()) < 300, f"implausible Date {date!r}"


def test_http1_response_headers(edge):
    path = f"/{unique('hdr')}?q=1"
    with RawConn(edge.http.host, edge.http.port) as c:
        resp = c.request("GET", path)
    assert resp.status == 200
    assert resp.header("content-type") == "text/plain; charset=utf-8"
    assert resp.header("transfer-encoding") is None
    assert resp.header("content-length") == str(len(resp.body))
    assert resp.text == demo_body("GET", path)
    assert re.fullmatch(r"[1-9]\d*", resp.header("x-demo-fetch") or ""), resp.headers
    _check_common_headers(resp.header)


def test_httpx_http2(edge):
    path = f"/{unique('httpx')}/p?z=9"
    with httpx.Client(http2=True, verify=False, timeout=30) as client:
        r = client.get(edge.https_url + path)
        assert r.http_version == "HTTP/2"
        assert r.status_code == 200
        assert r.text == demo_body("GET", path)
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.headers["content-length"] == str(len(r.content))
        assert r.headers["x-cache"] == "MISS"
        _check_common_headers(r.headers.get)
        # second request on the same connection: cached
        r2 = client.get(edge.https_url + path)
        assert r2.http_version == "HTTP/2"
        assert r2.headers["x-cache"] == "HIT"
        assert r2.headers["x-demo-fetch"] == r.headers["x-demo-fetch"]
        h = client.get(edge.https_url + "/healthz")
        assert (h.status_code, h.text) == (200, "ok\n")


def test_healthz_http1(edge):
    with RawConn(edge.http.host, edge.http.port) as c:
        resp = c.request("GET", "/healthz")
    assert resp.status == 200
    assert resp.body == b"ok\n"


def test_h2load(edge):
    if shutil.which("h2load") is None:
        pytest.fail("h2load is not installed (Debian package nghttp2-client)", pytrace=False)
    url = edge.https_url + f"/{unique('h2load')}"
    res = subprocess.run(
        ["h2load", "-n", "2000", "-c", "4", "-m", "32", url],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=180,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    assert m, f"cannot parse h2load output:\n{out}"
    total, started, done, succeeded, failed, errored, timeout = map(int, m.groups())
    assert (succeeded, failed, errored, timeout) == (2000, 0, 0, 0), out
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert m and int(m.group(1)) == 2000, out
    m = re.search(r"Application protocol: (\S+)", out)
    assert m and m.group(1) == "h2", out


def test_h2_fifty_concurrent_streams_one_connection(edge):
    base = unique("h2s")
    paths = [f"/{base}/{i}?delay_ms=300" for i in range(50)]
    results, problems = h2_get_many(edge.https.host, edge.https.port, paths)
    assert not problems, problems
    done = [p for p, r in results.items() if r["ended"]]
    assert len(done) == 50, f"only {len(done)} of 50 streams completed"
    for path in paths:
        r = results[path]
        assert r["status"] == "200", (path, r["status"])
        assert r["body"].decode() == demo_body("GET", path)
        assert r["headers"].get("x-cache") == "MISS"


# --------------------------------------------------------------------------- responses without content

def test_204_and_304_carry_no_content_length(edge_factory, tmp_path):
    """RFC 9110 §8.6: a 204 must not carry Content-Length, a 304 only the one its 200 would have had. Both
    used to go out with `content-length: 0` (fixed responses on every front end, and a static file's 304)."""
    (tmp_path / "page.txt").write_text("some text\n")
    server = edge_factory.start(config=f"""
[[route]]
path = "/"
demo = {{}}

[[route]]
path = "/nothing"
respond = {{ status = 204 }}

[[route]]
path = "/same"
respond = {{ status = 304 }}

[[route]]
path = "/files"
static = "{tmp_path}"
""")
    with RawConn(server.http.host, server.http.port) as c:
        etag = c.request("GET", "/files/page.txt").header("etag")
        # GET: the HTTP/1.1 fast path; POST: NIO's HTTP/1.1 codec. Each answer is followed on the same
        # connection by /healthz, which is read correctly only if nothing was sent after the bodiless head.
        for method, path, headers, status in [
            ("GET", "/nothing", {}, 204),
            ("POST", "/nothing", {"Content-Length": "0"}, 204),
            ("GET", "/same", {}, 304),
            ("GET", "/files/page.txt", {"If-None-Match": etag}, 304),
            ("GET", "/files/page.txt", {"If-None-Match": etag, "Range": "bytes=0-1"}, 304),
        ]:
            r = c.request(method, path, headers=headers)
            assert r.status == status, (method, path, r.status)
            assert r.header("content-length") is None and r.header("transfer-encoding") is None, (method, path, r.headers)
            assert c.request("GET", "/healthz").body == b"ok\n", (method, path)
    with httpx.Client(http2=True, verify=False, timeout=30) as client:
        for path, headers, status in [
            ("/nothing", {}, 204),
            ("/same", {}, 304),
            ("/files/page.txt", {"If-None-Match": etag}, 304),
        ]:
            r = client.get(server.https_url + path, headers=headers)
            assert r.http_version == "HTTP/2" and r.status_code == status, (path, r.status_code)
            assert "content-length" not in r.headers and r.content == b"", (path, r.headers)
        r = client.post(server.https_url + "/nothing", content=b"")
        assert r.status_code == 204 and "content-length" not in r.headers, r.headers
