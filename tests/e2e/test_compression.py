"""brotli, zstd and gzip: static files (on the fly and `.br` / `.zst` / `.gz` sidecars) and proxied responses
compressed as they stream, negotiated by Accept-Encoding q-values, checked with independent decoders (Python's
`brotli`, `zstandard` and `zlib`, and curl's own, built with brotli and zstd) over HTTP/1.1 and HTTP/2; compressed
proxied variants stored by the HTTP cache; an event stream stays live while compressed."""

from __future__ import annotations

import gzip
import http.server
import json
import socket
import threading
import time
import zlib

import brotli
import httpx
import pytest
import zstandard

from conftest import curl, curl_exchange

PAGE = "".join(f"<li id=\"item-{i}\">entry {i * 7919 % 1000} of the list</li>\n" for i in range(1500)).encode()
DATA = json.dumps([{"id": i, "name": f"item-{i}", "tags": ["a", "b"]} for i in range(1500)]).encode()
PNG = bytes(range(256)) * 80


def decode(body: bytes, coding: str | None) -> bytes:
    if coding is None:
        return body
    if coding == "br":
        return brotli.decompress(body)
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    if coding == "gzip":
        return gzip.decompress(body)
    raise AssertionError(f"unexpected coding {coding}")


class _Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: dict[str, int] = {}

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.do_GET()

    def _send(self, body: bytes, headers: dict[str, str], *, chunked: bool = False):
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        if chunked:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if chunked:
            for start in range(0, len(body), 7000):
                piece = body[start:start + 7000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        _Origin.hits[path] = _Origin.hits.get(path, 0) + 1
        html = {"content-type": "text/html; charset=utf-8", "etag": '"v1"', "vary": "Origin, accept-encoding"}
        if path == "/page.html":
            if '"v1"' in self.headers.get("if-none-match", ""):
                self.send_response(304)
                self.send_header("etag", '"v1"')
                self.end_headers()
                return
            self._send(PAGE, html)
        elif path == "/identity.html":
            self._send(PAGE, {"content-type": "text/html", "content-encoding": "identity", "accept-ranges": "bytes",
                              "repr-digest": "sha-256=:AAAA:", "content-md5": "AAAA"})
        elif path == "/chunked.txt":
            self._send(PAGE, {"content-type": "text/plain"}, chunked=True)
        elif path == "/image.png":
            self._send(PNG, {"content-type": "image/png"})
        elif path == "/already.css":
            self._send(gzip.compress(PAGE), {"content-type": "text/css", "content-encoding": "gzip"})
        elif path == "/notransform.js":
            self._send(PAGE, {"content-type": "text/javascript", "cache-control": "no-transform"})
        elif path == "/tiny.txt":
            self._send(b"tiny\n", {"content-type": "text/plain"})
        elif path == "/cacheable.json":
            self._send(DATA, {"content-type": "application/json", "cache-control": "max-age=300"})
        elif path == "/events":
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            first = b"data: first event\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(first), first))
            self.wfile.flush()
            time.sleep(2)
            second = b"data: second event\n\n"
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(second), second))
        else:
            self._send(b"not found\n", {"content-type": "text/plain"})


@pytest.fixture(scope="module")
def origin():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    (root / "app.js").write_bytes(PAGE)  # 66 KB: above the 64 KiB small-file cache, compressed into the shared one
    (root / "small.css").write_bytes(PAGE[:20000])
    (root / "side.css").write_bytes(PAGE[:5000])
    # Sidecars with their own marker, so a test can tell a sidecar from on-the-fly compression.
    (root / "side.css.br").write_bytes(brotli.compress(b"from the br sidecar\n"))
    (root / "side.css.zst").write_bytes(zstandard.ZstdCompressor().compress(b"from the zst sidecar\n"))
    (root / "side.css.gz").write_bytes(gzip.compress(b"from the gz sidecar\n"))
    return root


def compressing_proxy(origin: str) -> str:
    """The upstream `app` and a route `/c` that proxies it with `compress = true`."""
    return f"""
[[upstream]]
name = "app"
servers = ["{origin}"]

[[route]]
path = "/c"
proxy = {{ upstream = "app", strip_prefix = true, compress = true }}
"""


@pytest.fixture(scope="module")
def edge(module_edge_factory, origin, root):
    return module_edge_factory.start(config=compressing_proxy(origin) + f"""
[[route]]
path = "/only-gzip"
proxy = {{ upstream = "app", strip_prefix = true, compress = ["gzip"] }}

[[route]]
path = "/cached"
proxy = {{ upstream = "app", strip_prefix = true, compress = true, cache = true }}

[[route]]
path = "/plain"
proxy = {{ upstream = "app", strip_prefix = true }}

[[route]]
path = "/files"
static = {{ root = "{root}" }}
""")


def fetch(url: str, accept: str | None, *mode: str) -> tuple[dict[str, str], bytes]:
    args = ["-sk", *mode]
    if accept is not None:
        args += ["-H", f"Accept-Encoding: {accept}"]
    exchange = curl_exchange(*args, url)
    assert exchange.status == "200", exchange.status
    return exchange.headers, exchange.body


# MARK: static files

@pytest.mark.parametrize("name", ["small.css", "app.js"])
@pytest.mark.parametrize("accept,coding", [
    ("br", "br"), ("zstd", "zstd"), ("gzip", "gzip"), ("gzip, deflate, br, zstd", "br"), ("zstd, gzip", "zstd"),
    ("br;q=0.5, zstd;q=0.8, gzip;q=0.1", "zstd"), ("br;q=0, *", "zstd"), ("identity", None), (None, None),
])
def test_static_files_are_compressed_in_the_preferred_coding(edge, root, name, accept, coding):
    """On the fly, once per file version: in the loop's small-file cache (20 KB) and in the shared cache (66 KB);
    the client's q-values decide, brotli then zstd then gzip breaking ties. Each variant has its own ETag."""
    original = (root / name).read_bytes()
    etags = set()
    for mode, base in ((["--http1.1"], edge.http.url), (["--http2"], edge.https.url)):
        for _ in range(2):  # from disk, then from the cache
            headers, body = fetch(f"{base}/files/{name}", accept, *mode)
            assert headers.get("content-encoding") == coding, (accept, headers)
            assert headers.get("vary", "").lower() == "accept-encoding"
            assert decode(body, coding) == original
            if coding:
                assert len(body) < len(original) // 4
            etags.add(headers["etag"])
    assert len(etags) == 1, etags


def test_static_variants_have_distinct_etags(edge):
    tags = {accept: fetch(f"{edge.http.url}/files/small.css", accept)[0]["etag"] for accept in ("br", "zstd", "gzip", "identity")}
    assert len(set(tags.values())) == 4, tags


@pytest.mark.parametrize("accept,marker", [
    ("br", b"from the br sidecar\n"), ("zstd", b"from the zst sidecar\n"), ("gzip", b"from the gz sidecar\n"),
    ("gzip, zstd, br", b"from the br sidecar\n"), ("gzip;q=1, zstd;q=0.9, br;q=0.8", b"from the gz sidecar\n"),
    ("zstd;q=1, br;q=0.5", b"from the zst sidecar\n"),
])
def test_sidecars_br_zst_gz(edge, root, accept, marker):
    """A `.zst` sidecar beside `.br` and `.gz`: the one with the client's highest q-value is sent as it is."""
    coding = {"br": "br", "zst": "zstd", "gz": "gzip"}[marker.split()[2].decode()]
    suffix = {"br": ".br", "zstd": ".zst", "gzip": ".gz"}[coding]
    headers, body = fetch(f"{edge.http.url}/files/side.css", accept)
    assert headers["content-encoding"] == coding
    assert body == (root / f"side.css{suffix}").read_bytes()
    assert decode(body, coding) == marker


@pytest.mark.parametrize("mode", ["--http1.1", "--http2"])
def test_curl_compressed_decodes_static_files(edge, root, mode):
    """curl --compressed (brotli and zstd built in) asks for every coding and gets the original bytes back."""
    for name in ("small.css", "app.js"):
        out = curl("-sk", mode, "--compressed", f"{edge.https.url}/files/{name}").stdout.encode()
        assert out == (root / name).read_bytes()


# MARK: proxied responses

@pytest.mark.parametrize("path", ["/c/page.html", "/c/chunked.txt"])
@pytest.mark.parametrize("accept,coding", [
    ("zstd", "zstd"), ("br", "br"), ("gzip", "gzip"), ("gzip, deflate, br, zstd", "zstd"), ("br;q=1, zstd;q=0.5", "br"),
    ("deflate", None), (None, None),
])
def test_proxied_responses_are_compressed_as_they_stream(edge, path, accept, coding):
    """A response that arrives uncompressed (with a Content-Length or chunked) is compressed in the client's
    preferred coding, zstd then brotli then gzip breaking ties; it streams (no Content-Length), says Vary, and
    its ETag turns weak. Over HTTP/1.1 and HTTP/2."""
    for mode, base in ((["--http1.1"], edge.http.url), (["--http2"], edge.https.url)):
        headers, body = fetch(f"{base}{path}", accept, *mode)
        assert headers.get("content-encoding") == coding, (accept, headers)
        assert "accept-encoding" in headers.get("vary", "").lower()
        assert decode(body, coding) == PAGE
        if coding:
            assert "content-length" not in headers
            assert len(body) < len(PAGE) // 4
            if path == "/c/page.html":
                assert headers["etag"] == 'W/"v1"'
        elif path == "/c/page.html":
            assert headers["content-length"] == str(len(PAGE)) and headers["etag"] == '"v1"'


def test_vary_is_not_repeated(edge):
    """The upstream's own `Vary: Origin, accept-encoding` already names it: Edge adds no second one; a response
    without Vary gets one."""
    response = httpx.get(f"{edge.http.url}/c/page.html", headers={"accept-encoding": "gzip"})
    assert [v.lower() for v in response.headers.get_list("vary")] == ["origin, accept-encoding"]
    response = httpx.get(f"{edge.http.url}/c/chunked.txt", headers={"accept-encoding": "gzip"})
    assert response.headers.get_list("vary") == ["Accept-Encoding"]


@pytest.mark.parametrize("mode", ["--http1.1", "--http2"])
def test_curl_compressed_decodes_proxied_responses(edge, mode):
    for path in ("/c/page.html", "/c/chunked.txt"):
        assert curl("-sk", mode, "--compressed", f"{edge.https.url}{path}").stdout.encode() == PAGE


@pytest.mark.parametrize("path,why", [
    ("/c/image.png", "an incompressible type"), ("/c/already.css", "already gzip-encoded by the upstream"),
    ("/c/notransform.js", "Cache-Control: no-transform"), ("/c/tiny.txt", "shorter than 256 bytes"),
    ("/plain/page.html", "a route without compress"),
])
def test_proxied_responses_left_as_they_are(edge, path, why):
    exchange = curl_exchange("-s", "-H", "Accept-Encoding: br, zstd, gzip", f"{edge.http.url}{path}")
    upstream = curl_exchange("-s", "-H", "Accept-Encoding: br, zstd, gzip", f"{edge.http.url}/plain{path[path.index('/', 1):]}")
    assert exchange.body == upstream.body, why
    assert exchange.headers.get("content-encoding") == upstream.headers.get("content-encoding"), why


def test_upstream_identity_and_byte_describing_fields_are_replaced(edge):
    """`Content-Encoding: identity` from the upstream is replaced, not added to; digests and Accept-Ranges, which
    describe the upstream's bytes, are dropped from a compressed response."""
    response = httpx.get(f"{edge.http.url}/c/identity.html", headers={"accept-encoding": "br"})
    assert response.headers.get_list("content-encoding") == ["br"]
    for name in ("accept-ranges", "repr-digest", "content-md5", "content-length"):
        assert name not in response.headers, name
    assert response.content == PAGE  # httpx decodes br


def test_a_304_keeps_the_weak_tag_and_vary_of_the_compressed_200(edge):
    """The compressed 200 said `ETag: W/"v1"` and `Vary: Accept-Encoding`; revalidating with that tag, the
    upstream's 304 (strong "v1") reaches the client as `W/"v1"` with Vary (RFC 9110 §15.4.5). A client that
    revalidates the strong tag of an uncompressed 200 gets the 304 as the upstream sent it."""
    first = curl_exchange("-s", "-H", "Accept-Encoding: br", f"{edge.http.url}/c/page.html")
    assert first.headers["etag"] == 'W/"v1"'
    revalidated = curl_exchange("-s", "-H", "Accept-Encoding: br", "-H", 'If-None-Match: W/"v1"', f"{edge.http.url}/c/page.html")
    assert revalidated.status == "304"
    assert revalidated.headers["etag"] == 'W/"v1"' and "accept-encoding" in revalidated.headers["vary"].lower()
    plain = curl_exchange("-s", "-H", 'If-None-Match: "v1"', f"{edge.http.url}/c/page.html")
    assert plain.status == "304" and plain.headers["etag"] == '"v1"'


def test_a_416_on_a_compressed_variant_says_vary(edge):
    exchange = curl_exchange("-s", "-H", "Accept-Encoding: br", "-r", "999999-", f"{edge.http.url}/files/small.css")
    assert exchange.status == "416"
    assert exchange.headers.get("vary", "").lower() == "accept-encoding"


def test_route_codings_limit_what_is_offered(edge):
    """compress = ["gzip"]: a client that accepts only brotli gets the response as it is; one that accepts gzip gets gzip."""
    headers, body = fetch(f"{edge.http.url}/only-gzip/page.html", "br")
    assert "content-encoding" not in headers and body == PAGE
    headers, body = fetch(f"{edge.http.url}/only-gzip/page.html", "br, gzip")
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == PAGE


def test_head_says_what_get_would_send(edge):
    exchange = curl_exchange("-s", "-I", "-H", "Accept-Encoding: zstd", f"{edge.http.url}/c/page.html")
    assert exchange.status == "200"
    assert exchange.headers["content-encoding"] == "zstd"
    assert "content-length" not in exchange.headers


@pytest.mark.parametrize("accept,coding", [("gzip", "gzip"), ("br", "br"), ("zstd", "zstd")])
def test_an_event_stream_stays_live_while_compressed(edge, accept, coding):
    """The upstream sends one event, waits 2 s, sends another: the client decodes the first long before the
    second is sent (the encoder is flushed whenever the upstream has nothing more at hand)."""
    decoder = {
        "gzip": lambda: zlib.decompressobj(wbits=31).decompress,
        "br": lambda: brotli.Decompressor().process,
        "zstd": lambda: zstandard.ZstdDecompressor().decompressobj().decompress,
    }[coding]()
    start = time.monotonic()
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", f"{edge.http.url}/c/events", headers={"accept-encoding": accept}) as response:
            assert response.headers["content-encoding"] == coding
            decoded = b""
            chunks = response.iter_raw()
            for raw in chunks:
                decoded += decoder(raw)
                if b"first event" in decoded:
                    break
            assert b"data: first event\n\n" in decoded
            assert time.monotonic() - start < 1.5, "the first event waited for the second"
            for raw in chunks:
                decoded += decoder(raw)
    assert decoded == b"data: first event\n\ndata: second event\n\n"


def test_the_http_cache_keeps_each_compressed_variant(edge):
    """Compression sits under the cache: the first brotli request is a miss, the next a hit with the same bytes;
    a gzip client and an identity client each get their own variant, and the upstream is asked once per variant."""
    url = f"{edge.http.url}/cached/cacheable.json"
    before = _Origin.hits.get("/cacheable.json", 0)
    seen = {}
    for accept, coding in (("br", "br"), ("br", "br"), ("gzip", "gzip"), ("gzip", "gzip"), (None, None), (None, None)):
        headers, body = fetch(url, accept)
        assert headers.get("content-encoding") == coding
        assert decode(body, coding) == DATA
        status = headers["cache-status"]
        if coding in seen:
            assert status.startswith("edge; hit"), (accept, status)
            assert body == seen[coding]
        else:
            assert "fwd=" in status, (accept, status)
            seen[coding] = body
    assert _Origin.hits["/cacheable.json"] - before == 3


def test_a_budget_bounds_how_many_responses_are_compressed_at_once(module_edge_factory, origin):
    """limits.max_compressing_responses = 1: while one event stream is being compressed, the next response goes
    uncompressed (still with Vary, still whole); once the stream has ended, responses are compressed again."""
    server = module_edge_factory.start(config="[limits]\nmax_compressing_responses = 1\n" + compressing_proxy(origin))
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", f"{server.http.url}/c/events", headers={"accept-encoding": "gzip"}) as events:
            assert events.headers["content-encoding"] == "gzip"
            chunks = events.iter_raw()
            next(chunks)  # the first event: the stream holds the one slot now
            headers, body = fetch(f"{server.http.url}/c/page.html", "gzip")
            assert "content-encoding" not in headers and body == PAGE
            assert headers["vary"].lower().endswith("accept-encoding")
            for _ in chunks:
                pass
    deadline = time.monotonic() + 5
    while True:
        headers, body = fetch(f"{server.http.url}/c/page.html", "gzip")
        if headers.get("content-encoding") == "gzip" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert headers.get("content-encoding") == "gzip" and gzip.decompress(body) == PAGE
