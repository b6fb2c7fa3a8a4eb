"""Static files with real clients: downloads over plain HTTP/1.1 (sendfile), TLS and HTTP/2 compared by
checksum, conditional and range requests, directories, and paths that try to leave the root."""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import RawConn, curl, curl_exchange

SIZES = {"empty.bin": 0, "10k.bin": 10 * 1024, "1m.bin": 1024 * 1024, "50m.bin": 50 * 1024 * 1024}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    for name, size in SIZES.items():
        with open(root / name, "wb") as f:
            remaining = size
            while remaining:
                chunk = os.urandom(min(remaining, 1 << 20))
                f.write(chunk)
                remaining -= len(chunk)
    (root / "index.html").write_text("<h1>home</h1>\n")
    (root / "notes.txt").write_text("some notes\n")
    (root / "app.js").write_text("console.log(1)\n")
    import gzip as gzip_module
    (root / "big.css").write_text("body { color: red; }\n" * 200)
    (root / "big.css.gz").write_bytes(gzip_module.compress((root / "big.css").read_bytes()))
    (root / "sub").mkdir()
    (root / "sub" / "a.txt").write_text("a\n")
    (root / "sub" / "<img src=x onerror=alert(1)>.txt").write_text("x\n")
    (root / ".env").write_text("SECRET=1\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    os.symlink("/etc/passwd", root / "escape")
    os.symlink(root / "notes.txt", root / "inside-link")
    return root


@pytest.fixture(scope="module")
def files(module_edge_factory, site):
    return module_edge_factory.start(config=f"""
[[route]]
path = "/"
demo = {{}}

[[route]]
path = "/files"
static = {{ root = "{site}", listing = true }}

[[route]]
path = "/plain"
static = "{site}"
""")


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.parametrize("name", list(SIZES))
@pytest.mark.parametrize("mode", ["http1", "https1", "http2"])
def test_download_matches(files, site, tmp_path, name, mode):
    base = files.http.url if mode == "http1" else files.https.url
    flags = {"http1": ["--http1.1"], "https1": ["--http1.1", "-k"], "http2": ["--http2", "-k"]}[mode]
    out = tmp_path / "download"
    result = curl(*flags, "-s", "-o", str(out), "-w", "%{http_code} %{http_version} %{size_download}",
                  f"{base}/files/{name}", timeout=120)
    code, version, size = result.stdout.split()
    assert code == "200"
    assert version == ("2" if mode == "http2" else "1.1")
    assert int(size) == SIZES[name]
    assert sha256_file(out) == sha256_file(site / name)


def test_headers_and_head(files, site):
    r = curl("-sI", f"{files.http.url}/files/notes.txt")
    headers = r.stdout.lower()
    assert "content-type: text/plain; charset=utf-8" in headers
    assert "content-length: 11" in headers
    assert "etag: \"" in headers and "last-modified: " in headers
    assert "accept-ranges: bytes" in headers and "x-content-type-options: nosniff" in headers
    js = curl("-sI", f"{files.http.url}/files/app.js").stdout.lower()
    assert "content-type: text/javascript; charset=utf-8" in js


def test_conditional_requests(files):
    url = f"{files.http.url}/files/notes.txt"
    first = curl("-si", url).stdout
    etag = next(line.split(":", 1)[1].strip() for line in first.splitlines() if line.lower().startswith("etag:"))
    modified = next(line.split(":", 1)[1].strip() for line in first.splitlines() if line.lower().startswith("last-modified:"))
    assert curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"If-None-Match: {etag}", url).stdout == "304"
    assert curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", 'If-None-Match: "other"', url).stdout == "200"
    assert curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"If-Modified-Since: {modified}", url).stdout == "304"
    assert curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "-z", "Sat, 01 Jan 2000 00:00:00 GMT", url).stdout == "200"
    # Dates that are no HTTP dates are ignored; a huge year once overflowed the day count and killed the server.
    for bad in ("Sun, 06 Nov 99999999999999999 08:49:37 GMT", "Sun Nov  6 08:49:37 -9223372036854775807",
                "Sunday, 06-Nov-9223372036854775807 08:49:37 GMT"):
        for header in ("If-Modified-Since", "If-Range"):
            assert curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"{header}: {bad}", "-H", "Range: bytes=0-1",
                        url).stdout == ("206" if header == "If-Modified-Since" else "200"), (header, bad)
    over_h2 = curl("-sk", "--http2", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"If-None-Match: {etag}",
                   f"{files.https.url}/files/notes.txt")
    assert over_h2.stdout == "304"


def test_ranges(files, site):
    url = f"{files.http.url}/files/1m.bin"
    data = (site / "1m.bin").read_bytes()
    first = curl("-s", "-r", "0-99", "-D", "-", "-o", "/tmp/edge-range-a", url)
    assert " 206 " in first.stdout.splitlines()[0]
    assert "content-range: bytes 0-99/1048576" in first.stdout.lower()
    assert open("/tmp/edge-range-a", "rb").read() == data[:100]
    curl("-s", "-r", "-100", "-o", "/tmp/edge-range-b", url)
    assert open("/tmp/edge-range-b", "rb").read() == data[-100:], "a suffix range must be the LAST bytes"
    curl("-sk", "--http2", "-r", "1000-1999", "-o", "/tmp/edge-range-c", f"{files.https.url}/files/1m.bin")
    assert open("/tmp/edge-range-c", "rb").read() == data[1000:2000]
    refused = curl("-s", "-r", "2000000-", "-D", "-", "-o", "/dev/null", url).stdout.lower()
    assert " 416 " in refused.splitlines()[0] and "content-range: bytes */1048576" in refused
    stale = curl("-s", "-r", "0-9", "-H", 'If-Range: "stale"', "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url)
    assert stale.stdout == "200 1048576"
    several = curl("-s", "-r", "0-9,20-29", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url)
    assert several.stdout == "200 1048576"


def test_directories(files):
    redirect = curl("-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", f"{files.http.url}/files/sub?x=1")
    assert redirect.stdout == f"301 {files.http.url}/files/sub/?x=1"
    assert curl("-s", f"{files.http.url}/files/").stdout == "<h1>home</h1>\n"
    listing = curl("-s", f"{files.http.url}/files/sub/").stdout
    assert "a.txt" in listing
    assert "<img src=x" not in listing and "&lt;img src=x onerror=alert(1)&gt;.txt" in listing
    # Listings are off by default: a directory without index.html is refused.
    assert curl("-s", "-o", "/dev/null", "-w", "%{http_code}", f"{files.http.url}/plain/sub/").stdout == "403"


@pytest.mark.parametrize("path,statuses", [
    ("/files/../../../../etc/passwd", {400, 404}),
    ("/files/%2e%2e/%2e%2e/etc/passwd", {400, 404}),
    ("/files/..%2f..%2fetc/passwd", {400, 404}),
    ("/files/%2E%2E%5C%2E%2E%5Cetc%5Cpasswd", {400, 404}),
    ("/files/..\\..\\etc\\passwd", {400, 404}),
    ("/files/notes.txt%00.html", {400, 404}),
    ("/files/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd", {400, 404}),
    ("/files/.env", {404}),
    ("/files/.git/config", {404}),
    ("/files/escape", {403, 404}),
])
def test_paths_never_leave_the_root(files, path, statuses):
    with RawConn(files.http.host, files.http.port) as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode("latin-1"))
        r = c.read_response()
    assert r.status in statuses, f"{path}: {r.status}"
    assert b"root:" not in r.body


def test_symlink_inside_root_is_served(files):
    assert curl("-s", f"{files.http.url}/files/inside-link").stdout == "some notes\n"


def test_only_get_and_head(files):
    r = curl("-s", "-X", "POST", "-d", "x", "-D", "-", "-o", "/dev/null", f"{files.http.url}/files/notes.txt").stdout.lower()
    assert " 405 " in r.splitlines()[0] and "allow: get, head" in r


@pytest.mark.parametrize("tls", [False, True], ids=["sendfile", "tls-chunks"])
def test_file_shrinking_while_sent_ends_that_response(files, site, tmp_path, tls):
    """Plain HTTP/1.1 sends with sendfile; over TLS the file goes in chunks read from the page cache (the file was
    just written), so both ways of reading must notice the file ending early."""
    victim = site / f"shrinking-{int(tls)}.bin"
    victim.write_bytes(os.urandom(8 * 1024 * 1024))
    listener = files.https if tls else files.http
    with RawConn(listener.host, listener.port, tls=tls) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        c.send(f"GET /files/{victim.name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.3)
        os.truncate(victim, 1024 * 1024)
        received = 0
        start = time.monotonic()
        c.sock.settimeout(15)
        try:
            while chunk := c.sock.recv(1 << 16):
                received += len(chunk)
        except (ConnectionResetError, socket.timeout, TimeoutError, ssl.SSLError):
            pass
        waited = time.monotonic() - start
    assert received < 8 * 1024 * 1024, "a truncated file cannot have been sent whole"
    assert waited < 6, f"the response to a truncated file did not end (client waited {waited:.1f} s)"
    with RawConn(files.http.host, files.http.port) as c:
        assert c.request("GET", "/files/notes.txt").status == 200


def test_concurrent_tls_downloads_keep_memory_bounded(files, site):
    """20 clients download the 50 MB file over TLS at once (1 GB in all); the server streams in chunks, so its
    resident memory grows by far less than one copy per client."""
    def rss_kib() -> int:
        with open(f"/proc/{files.proc.pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    before = rss_kib()
    peak = before
    procs = [subprocess.Popen(["curl", "-sk", "--http1.1", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                               f"{files.https.url}/files/50m.bin"], stdout=subprocess.PIPE, text=True)
             for _ in range(20)]
    while any(p.poll() is None for p in procs):
        peak = max(peak, rss_kib())
        time.sleep(0.05)
    outputs = [p.communicate()[0] for p in procs]
    assert all(o == f"200 {SIZES['50m.bin']}" for o in outputs), outputs
    assert peak - before < 200 * 1024, f"RSS grew by {(peak - before) // 1024} MiB for 20 concurrent 50 MB downloads"


def test_precompressed_sidecar_is_served_when_accepted(files, site):
    url = f"{files.http.url}/files/big.css"
    plain = curl("-s", "-D", "-", "-o", "/tmp/edge-css-plain", url).stdout.lower()
    assert "content-encoding" not in plain and "vary: accept-encoding" in plain
    assert open("/tmp/edge-css-plain", "rb").read() == (site / "big.css").read_bytes()
    gz = curl("-s", "-H", "Accept-Encoding: gzip", "-D", "-", "-o", "/tmp/edge-css-gz", url).stdout.lower()
    assert "content-encoding: gzip" in gz and "vary: accept-encoding" in gz
    assert "content-type: text/css; charset=utf-8" in gz
    assert open("/tmp/edge-css-gz", "rb").read() == (site / "big.css.gz").read_bytes()
    # curl --compressed decodes it back to the original, over HTTP/2 too.
    decoded = curl("-sk", "--http2", "--compressed", f"{files.https.url}/files/big.css").stdout
    assert decoded == (site / "big.css").read_text()
    refused = curl("-s", "-H", "Accept-Encoding: gzip;q=0", "-D", "-", "-o", "/dev/null", url).stdout.lower()
    assert "content-encoding" not in refused


@pytest.mark.parametrize("protocol", ["--http1.1", "--http2"])
@pytest.mark.parametrize("header,encoding,status", [
    ("gzip;q=0, *", "br", "200"), ("*, gzip;q=0", "br", "200"), ("*", "gzip", "200"), ("gzip;q=0.001", "gzip", "200"),
    ("GZIP ; Q=1.0", "gzip", "200"), ("gzip;q=1.5", None, "200"), ("identity;q=0", None, "406"),
    ("identity;q=0, gzip", "gzip", "200"), ("*;q=0", None, "406"), ("*;q=0, identity", None, "200"),
])
def test_accept_encoding_q_values(files, header, encoding, status, protocol):
    """RFC 9110 §12.5.3: a coding with q=0 is refused even where `*` is present (`gzip;q=0, *` got gzip; now it
    gets brotli, made on the fly, since the .gz sidecar is refused); `*` takes the sidecar; a malformed q-value
    drops its item; with `identity` refused and no coding Edge has acceptable, 406. Over both protocols, for a
    file with a .gz sidecar (twice: from disk, then from the loop's small-file cache)."""
    for _ in range(2):
        exchange = curl_exchange("-sk", protocol, "-H", f"Accept-Encoding: {header}", f"{files.https.url}/files/big.css")
        assert exchange.status == status, (header, exchange.status)
        assert exchange.headers.get("content-encoding") == encoding, (header, exchange.headers)


def test_cached_small_file_changes_are_seen_within_a_second(files, site):
    path = site / "changing.txt"
    path.write_text("version 1\n")
    url = f"{files.http.url}/files/changing.txt"
    first = curl("-s", "-D", "-", url).stdout
    assert first.endswith("version 1\n")
    assert curl("-s", url).stdout == "version 1\n"  # served from the loop's cache
    path.write_text("version 2, longer\n")
    deadline = time.monotonic() + 5
    while curl("-s", url).stdout != "version 2, longer\n":
        assert time.monotonic() < deadline, "a changed file was still served stale after 5 s"
        time.sleep(0.2)
    path.unlink()
    deadline = time.monotonic() + 5
    while curl("-s", "-o", "/dev/null", "-w", "%{http_code}", url).stdout != "404":
        assert time.monotonic() < deadline, "a deleted file was still served after 5 s"
        time.sleep(0.2)


def test_routes_sharing_a_root_keep_their_own_rules(edge_factory, site):
    """A route that serves hidden files must not make them reachable through a route that does not, even
    once they sit in the small-file cache."""
    server = edge_factory.start(config=f"""
[[route]]
path = "/open"
static = {{ root = "{site}", hidden = true }}

[[route]]
path = "/strict"
static = "{site}"
""")
    for _ in range(3):
        assert curl("-s", f"{server.http.url}/open/.env").stdout == "SECRET=1\n"
    for _ in range(3):
        assert curl("-s", "-o", "/dev/null", "-w", "%{http_code}", f"{server.http.url}/strict/.env").stdout == "404"


def test_graceful_shutdown_during_a_file_transfer(edge_factory, site):
    """SIGTERM while a large file is being sent: the transfer completes, then the connection closes and the
    process exits 0 well before the shutdown deadline."""
    import signal
    server = edge_factory.start(config=f"""
shutdown_timeout_seconds = 20
[[route]]
path = "/"
static = "{site}"
""")
    with RawConn(server.http.host, server.http.port) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.send(b"GET /50m.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        received = 0
        c.sock.settimeout(15)
        try:
            while chunk := c.sock.recv(1 << 20):
                received += len(chunk)
        except (socket.timeout, TimeoutError):
            pass
    assert received > SIZES["50m.bin"], "the file transfer in flight was cut short"
    assert server.proc.wait(timeout=15) == 0
    assert time.monotonic() - start < 12, "shutdown waited for the deadline instead of closing after the transfer"


def test_on_the_fly_gzip_for_compressible_files(files, site):
    """A compressible file with no .gz sidecar is gzipped once (off the event loop) for clients that accept it;
    the variants have different ETags and both say Vary: Accept-Encoding."""
    import gzip as gzip_module
    original = ("function f(x) { return x * 2; }\n" * 300).encode()
    (site / "lib.js").write_bytes(original)
    url = f"{files.http.url}/files/lib.js"
    identity = curl("-s", "-D", "-", "-o", "/tmp/edge-lib-identity", url).stdout.lower()
    assert "content-encoding" not in identity and "vary: accept-encoding" in identity
    assert open("/tmp/edge-lib-identity", "rb").read() == original
    for mode in (["--http1.1"], ["--http2", "-k"]):
        base = files.http.url if mode == ["--http1.1"] else files.https.url
        head = curl(*mode, "-s", "-H", "Accept-Encoding: gzip", "-D", "-", "-o", "/tmp/edge-lib-gz", f"{base}/files/lib.js").stdout.lower()
        assert "content-encoding: gzip" in head and "vary: accept-encoding" in head
        compressed = open("/tmp/edge-lib-gz", "rb").read()
        assert len(compressed) < len(original) // 5
        assert gzip_module.decompress(compressed) == original
    etag = lambda text: next(l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("etag:"))
    assert etag(identity) != etag(head), "the gzip and identity variants must have different ETags"
    # Incompressible types are never compressed.
    binary = curl("-s", "-H", "Accept-Encoding: gzip", "-D", "-", "-o", "/dev/null", f"{files.http.url}/files/10k.bin").stdout.lower()
    assert "content-encoding" not in binary


def test_large_compressible_files_are_gzipped_once_and_follow_changes(files, site, tmp_path):
    """A 2 MB JSON file (above the 64 KiB small-file cache) is gzipped on the thread pool into a cache shared by
    all event loops: clients that accept gzip get the same compressed bytes and ETag each time, over HTTP/1.1 and
    HTTP/2; `curl --compressed` yields the original; a client without Accept-Encoding gets the file itself; and
    a change to the file is served (compressed afresh) at once."""
    import gzip as gzip_module
    import json as json_module
    original = json_module.dumps([{"id": i, "name": f"item-{i}", "tags": ["a", "b", "c"]} for i in range(40000)]).encode()
    assert len(original) > 2_000_000
    (site / "big.json").write_bytes(original)
    url = f"{files.http.url}/files/big.json"

    heads = []
    for mode, base in ((["--http1.1"], files.http.url), (["--http2", "-k"], files.https.url), (["--http1.1"], files.http.url)):
        out = tmp_path / "big.gz"
        head = curl(*mode, "-s", "-H", "Accept-Encoding: gzip", "-D", "-", "-o", str(out), f"{base}/files/big.json").stdout.lower()
        assert "content-encoding: gzip" in head and "vary: accept-encoding" in head
        body = out.read_bytes()
        assert len(body) < len(original) // 5
        assert gzip_module.decompress(body) == original
        heads.append(head)
    etags = {next(l for l in h.splitlines() if l.startswith("etag:")) for h in heads}
    assert len(etags) == 1, f"the gzipped variant must be stable (compressed once): {etags}"

    # curl --compressed decodes to the original bytes.
    decoded = tmp_path / "big.decoded"
    curl("-s", "--compressed", "-o", str(decoded), url)
    assert decoded.read_bytes() == original

    # Without Accept-Encoding: the file itself, with Vary.
    plain = tmp_path / "big.plain"
    head = curl("-s", "-D", "-", "-o", str(plain), url).stdout.lower()
    assert "content-encoding" not in head and "vary: accept-encoding" in head
    assert plain.read_bytes() == original

    # A conditional request for the gzip variant with its ETag is a 304.
    etag = next(iter(etags)).split(":", 1)[1].strip()
    status = curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Accept-Encoding: gzip", "-H", f"If-None-Match: {etag}", url).stdout
    assert status == "304"

    # The file changes: the next gzipped response is of the new content.
    changed = original.replace(b"item-", b"ITEM-")
    (site / "big.json").write_bytes(changed)
    out = tmp_path / "big2.gz"
    curl("-s", "-H", "Accept-Encoding: gzip", "-o", str(out), url)
    assert gzip_module.decompress(out.read_bytes()) == changed


def test_hot_small_file_keeps_a_current_date_and_its_exact_bytes(files, site):
    """A hot small file is answered from a response prepared in advance: over one keep-alive connection the
    bytes stay exact, Date follows the clock (the prepared copy is rebuilt each second), and HEAD, HTTP/1.0
    and Connection: close still get their own heads."""
    expected = (site / "10k.bin").read_bytes()
    with RawConn(files.http.host, files.http.port) as c:
        for _ in range(30):
            # The server's clock is the kernel's coarse one, a few ms behind time.time() at a second boundary.
            before = int(time.time() - 0.05)
            r = c.request("GET", "/files/10k.bin")
            after = int(time.time())
            assert r.status == 200 and r.body == expected
            assert r.header("content-length") == str(len(expected))
            assert len(r.header_all("server")) == 1 and len(r.header_all("date")) == 1
            date = int(email.utils.parsedate_to_datetime(r.header("date")).timestamp())
            assert before <= date <= after, f"Date {r.header('date')} outside the request's second(s)"
            time.sleep(0.1)
        head = c.request("HEAD", "/files/10k.bin")
        assert head.status == 200 and head.header("content-length") == str(len(expected))
    with RawConn(files.http.host, files.http.port) as c:
        c.send(b"GET /files/10k.bin HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == expected
    with RawConn(files.http.host, files.http.port) as c:
        r = c.request("GET", "/files/10k.bin", headers={"Connection": "close"})
        assert r.status == 200 and r.body == expected
        assert r.header("connection").lower() == "close"


def test_clients_that_leave_before_a_large_file_starts_leak_no_descriptors(files):
    """A client that resets right after asking for a file over 64 KiB leaves while the file is being opened on
    the thread pool; the handle must be closed then, or every such client costs one descriptor for good."""
    import struct

    def fds() -> int:
        return len(os.listdir(f"/proc/{files.pid}/fd"))

    before = fds()
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", files.http_port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(b"GET /files/1m.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        s.close()
    deadline = time.monotonic() + 10
    while fds() > before + 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fds() <= before + 20, f"{fds() - before} descriptors still open after 300 reset clients"
    assert curl("-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{files.http_port}/files/notes.txt").stdout == "200"


@pytest.fixture(scope="module")
def linked_site(tmp_path_factory):
    """A root whose directory index and precompressed sidecars are symbolic links: some lead out of the root
    (to files an attacker with write access to the root would like served), some stay inside it."""
    import gzip as gzip_module
    outside = tmp_path_factory.mktemp("outside")
    (outside / "index.html").write_text("<h1>outside index</h1>\n")
    (outside / "secret.txt.gz").write_bytes(gzip_module.compress(b"outside secret\n"))
    (outside / "secret.txt.br").write_bytes(b"outside brotli bytes")
    root = tmp_path_factory.mktemp("linked")
    (root / "linkdir").mkdir()
    os.symlink(outside / "index.html", root / "linkdir" / "index.html")
    (root / "page.txt").write_text("inside page\n")
    os.symlink(outside / "secret.txt.gz", root / "page.txt.gz")
    os.symlink(outside / "secret.txt.br", root / "page.txt.br")
    (root / "kept.txt").write_text("inside kept\n")
    (root / "real.gz").write_bytes(gzip_module.compress(b"inside kept\n"))
    os.symlink(root / "real.gz", root / "kept.txt.gz")
    return root


@pytest.fixture(scope="module")
def linked(module_edge_factory, linked_site):
    return module_edge_factory.start(config=f"""
[[route]]
path = "/strict"
static = {{ root = "{linked_site}", listing = true }}

[[route]]
path = "/follow"
static = {{ root = "{linked_site}", follow_symlinks = true }}
""")


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_sidecar_linking_out_of_the_root_is_not_served(linked, encoding):
    """follow_symlinks = false: the requested file passed the realpath check but its sidecar, opened beside
    it, was a link to outside the root and was sent."""
    for mode in ("http1", "http2"):
        base = linked.http.url if mode == "http1" else linked.https.url
        r = curl("-sk", f"--{'http1.1' if mode == 'http1' else 'http2'}", "-H", f"Accept-Encoding: {encoding}",
                 "-D", "-", f"{base}/strict/page.txt").stdout
        head, _, body = r.partition("\n\n")  # (text mode turned CRLF into LF)
        assert " 200" in head.splitlines()[0], r
        assert "content-encoding" not in head.lower() and body == "inside page\n", (mode, r)


def test_index_linking_out_of_the_root_is_refused(linked):
    for url in (f"{linked.http.url}/strict/linkdir/", f"{linked.http.url}/strict/linkdir/index.html"):
        r = curl("-s", "-w", "\n%{http_code}", url).stdout
        assert r.endswith("\n403") and "outside" not in r, (url, r)


def test_links_inside_the_root_still_work(linked):
    r = curl("-s", "-H", "Accept-Encoding: gzip", "-D", "-", "-o", "/dev/null", f"{linked.http.url}/strict/kept.txt")
    assert "content-encoding: gzip" in r.stdout.lower(), r.stdout
    assert curl("-s", "--compressed", f"{linked.http.url}/strict/kept.txt").stdout == "inside kept\n"


def test_follow_symlinks_serves_links_out_of_the_root(linked):
    """The documented meaning of follow_symlinks = true (edge.toml, README): links may lead anywhere, for the
    index and the sidecars as for the file asked for."""
    assert curl("-s", f"{linked.http.url}/follow/linkdir/").stdout == "<h1>outside index</h1>\n"
    gzipped = curl("-s", "-H", "Accept-Encoding: gzip", "--compressed", f"{linked.http.url}/follow/page.txt")
    assert gzipped.stdout == "outside secret\n"


def test_symlink_swapped_in_between_check_and_open_is_not_followed(edge_factory, tmp_path):
    """The root check resolves a path, then the file is opened by that path. A writer of the root who swaps
    the file for a link to outside, over and over, must never win that race: every answer is the inside file
    or a refusal, never the outside one."""
    size = 100 * 1024  # above the small-file cache, so that every request opens the file
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"S" * size)
    root = tmp_path / "root"
    root.mkdir()
    (root / "target.bin").write_bytes(b"P" * size)
    server = edge_factory.start(config=f"""
[[route]]
path = "/files"
static = {{ root = "{root}" }}
""")
    stop = threading.Event()

    def swap():
        i = 0
        while not stop.is_set():
            i += 1
            link, plain = root / f".link{i}", root / f".plain{i}"
            os.symlink(outside / "secret.bin", link)
            os.replace(link, root / "target.bin")
            plain.write_bytes(b"P" * size)
            os.replace(plain, root / "target.bin")

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    outcomes: dict[str, int] = {}
    try:
        conn = http.client.HTTPConnection(server.http.host, server.http.port, timeout=10)
        end = time.monotonic() + 8
        while time.monotonic() < end:
            conn.request("GET", "/files/target.bin")
            response = conn.getresponse()
            body = response.read()
            kind = f"{response.status} {body[:1].decode() if response.status == 200 else ''}".strip()
            outcomes[kind] = outcomes.get(kind, 0) + 1
        conn.close()
    finally:
        stop.set()
        swapper.join(timeout=10)
    assert outcomes.get("200 P", 0) > 50 and outcomes.get("403", 0) > 50, f"the race was not exercised: {outcomes}"
    assert "200 S" not in outcomes, f"the file outside the root was served: {outcomes}"


def test_small_files_over_http2_answer_as_over_http1(files, site):
    """Once a small file is in the event loop's cache, HTTP/2 answers it on the connection (no stream channel);
    every variant must still be what HTTP/1.1 gives: whole file, HEAD, 304, 206, 416, a gzip sidecar, a file
    gzipped on the fly, an If-Range that no longer matches, and an empty file."""
    etag = curl_exchange("--http1.1", "-I", f"{files.http.url}/files/10k.bin").headers["etag"]
    cases = [
        ("10k.bin", []),
        ("10k.bin", ["-I"]),
        ("10k.bin", ["-H", f"If-None-Match: {etag}"]),
        ("10k.bin", ["-H", "Range: bytes=100-199"]),
        ("10k.bin", ["-H", "Range: bytes=-5"]),
        ("10k.bin", ["-H", "Range: bytes=99999-"]),
        ("10k.bin", ["-H", 'If-Range: "old"', "-H", "Range: bytes=0-9"]),
        ("big.css", ["-H", "Accept-Encoding: gzip"]),
        ("app.js", ["-H", "Accept-Encoding: gzip, br"]),
        ("notes.txt", ["-H", "Accept-Encoding: identity"]),
        ("empty.bin", []),
    ]
    for name, extra in cases:
        url = f"{files.https.url}/files/{name}"
        for _ in range(2):  # the first request may fill the cache through the full path
            h2 = curl_exchange("--http2", *extra, url)
        h1 = curl_exchange("--http1.1", *extra, url)
        assert h2.status == h1.status, (name, extra, h2.status, h1.status)
        h2_headers = {k: v for k, v in h2.headers.items() if k != "date"}
        h1_headers = {k: v for k, v in h1.headers.items() if k not in ("date", "connection", "keep-alive")}
        assert h2_headers == h1_headers, (name, extra)
        assert h2.body == h1.body, (name, extra)
    whole = curl_exchange("--http2", f"{files.https.url}/files/10k.bin")
    assert whole.body == (site / "10k.bin").read_bytes()
