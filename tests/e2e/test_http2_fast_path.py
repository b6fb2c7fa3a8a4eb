"""HTTP/2 cache hits are answered on the connection (no stream channel); these tests check that the answers are
the same as the full path's, that everything else still reaches the full path on the same connection, that the
limits still apply, and that a client which stops reading cannot make the server buffer responses without bound."""

from __future__ import annotations

import email.utils
import socket
import threading
import time

import h2.connection
import h2.config
import pytest
from hpack import NeverIndexedHeaderTuple
from hyperframe.frame import HeadersFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame

from conftest import H2Client, RawConn, curl, curl_exchange, demo_body, unique
from test_http2_abuse import RawH2
from test_protection import rss_kib

ROOT_ROUTE = """
[[route]]
path = "/"
demo = { delay_ms = 2 }
"""


def h2_exchange(server, requests: list[tuple[str, str, bytes | None, list[tuple[str, str]]]], timeout: float = 30):
    """Sends every (method, path, body, extra headers) on ONE connection, all streams open at once; returns the
    streams in request order."""
    client = H2Client(server.https.host, server.https.port, timeout=timeout)
    try:
        sids = []
        for method, path, body, extra in requests:
            sid = client.conn.get_next_available_stream_id()
            client.streams[sid] = {"path": path, "status": None, "headers": {}, "body": b"", "ended": False}
            client.conn.send_headers(sid, [(":method", method), (":scheme", "https"), (":authority", "localhost"),
                                           (":path", path), *extra], end_stream=body is None)
            if body is not None:
                client.conn.send_data(sid, body, end_stream=True)
            sids.append(sid)
        client.sock.sendall(client.conn.data_to_send())
        assert client.pump(timeout=timeout), f"streams did not all end (closed={client.closed})"
        assert not client.resets and not client.goaways, (client.resets, client.goaways)
        return [client.streams[sid] for sid in sids]
    finally:
        client.close()


def test_hit_has_the_headers_of_the_miss_plus_age(edge):
    path = f"/{unique('fp')}?q=1"
    miss, hit = h2_exchange(edge, [("GET", path, None, [])]) + h2_exchange(edge, [("GET", path, None, [])])
    assert (miss["status"], hit["status"]) == ("200", "200")
    assert (miss["headers"]["x-cache"], hit["headers"]["x-cache"]) == ("MISS", "HIT")
    assert miss["body"] == hit["body"] == demo_body("GET", path).encode()
    assert int(hit["headers"]["content-length"]) == len(hit["body"])
    assert hit["headers"]["age"] == "0"
    assert set(hit["headers"]) == set(miss["headers"]) | {"age"}, (miss["headers"], hit["headers"])
    for name in ("content-type", "content-length", "server", "x-demo-fetch"):
        assert hit["headers"][name] == miss["headers"][name], name


def test_hit_age_and_date_move_on(edge):
    """Hits share a header block per second: a later hit still shows its own Age and Date."""
    path = f"/{unique('fp-age')}"
    h2_exchange(edge, [("GET", path, None, [])])
    # Several connections, so that every event loop (connections are spread over them) makes a block.
    first = [s for _ in range(4) for s in h2_exchange(edge, [("GET", path, None, [])] * 3)]
    time.sleep(2.2)
    later = [s for _ in range(4) for s in h2_exchange(edge, [("GET", path, None, [])] * 3)]
    assert {s["headers"]["age"] for s in first} <= {"0", "1"}, first
    assert all(int(s["headers"]["age"]) >= 2 for s in later), [s["headers"]["age"] for s in later]
    dates = [email.utils.parsedate_to_datetime(s["headers"]["date"]) for s in first + later]
    assert (dates[-1] - dates[0]).total_seconds() >= 2, [s["headers"]["date"] for s in first + later]
    assert all(s["headers"]["x-cache"] == "HIT" for s in first + later)


def test_hits_on_one_connection_keep_their_own_age_and_date(edge):
    """Edge's HTTP/2 connection copies a hit's header block while its HPACK table is unchanged: on one connection,
    hits of two entries interleaved, across two second boundaries, each still decode (h2 checks every block) to
    their own body, Age and Date."""
    paths = [f"/{unique('fp-one-conn')}-{i}" for i in range(2)]
    for path in paths:
        h2_exchange(edge, [("GET", path, None, [])])
    client = H2Client(edge.https.host, edge.https.port)
    try:
        def round_of_hits():
            sids = [client.request(path) for _ in range(3) for path in paths]
            assert client.pump(until=lambda: all(client.ended(sid) for sid in sids))
            return [client.streams[sid] for sid in sids]

        first = round_of_hits() + round_of_hits()
        time.sleep(2.2)
        later = round_of_hits() + round_of_hits()
    finally:
        client.close()
    for stream in first + later:
        assert stream["headers"]["x-cache"] == "HIT", stream["headers"]
        assert stream["body"] == demo_body("GET", stream["path"]).encode(), stream
    assert {s["headers"]["age"] for s in first} <= {"0", "1"}, [s["headers"]["age"] for s in first]
    assert all(int(s["headers"]["age"]) >= 2 for s in later), [s["headers"]["age"] for s in later]
    dates = [email.utils.parsedate_to_datetime(s["headers"]["date"]) for s in first + later]
    assert (dates[-1] - dates[0]).total_seconds() >= 2, [s["headers"]["date"] for s in first + later]


def test_hit_headers_match_http1(edge):
    """The same cached entry over HTTP/1.1 and HTTP/2 carries the same fields (HTTP/1.1's connection aside)."""
    path = f"/{unique('fp1')}"
    curl_exchange("--http1.1", edge.https_url + path)  # MISS, fills the cache
    h1 = curl_exchange("--http1.1", edge.https_url + path).headers
    response = curl_exchange("--http2", edge.https_url + path)
    h2, status = response.headers, response.status_line
    assert status.startswith("HTTP/2 200"), status
    assert h1["x-cache"] == h2["x-cache"] == "HIT"
    assert set(h1) - {"connection"} == set(h2), (h1, h2)


def test_head_hit_has_length_and_no_body(edge):
    path = f"/{unique('fph')}"
    get = curl("-sk", "--http2", edge.https_url + path)
    response = curl_exchange("--http2", "-I", edge.https_url + path)
    headers, status = response.headers, response.status_line
    assert status.startswith("HTTP/2 200"), status
    assert headers["x-cache"] == "HIT"
    assert headers["content-length"] == str(len(get.stdout.encode()))
    res = curl("-sk", "--http2", "-I", "-o", "/dev/null", "-w", "%{size_download}", edge.https_url + path)
    assert res.stdout.strip() == "0"


def test_hits_misses_bodies_and_health_share_one_connection(edge):
    """Fast-path answers and stream-channel answers interleave on one connection, each on its own stream."""
    base = unique("mix")
    warm = [f"/{base}/hit{i}" for i in range(10)]
    h2_exchange(edge, [("GET", p, None, []) for p in warm])
    requests = []
    for i in range(10):
        requests.append(("GET", warm[i], None, []))                              # hit: fast path
        requests.append(("GET", f"/{base}/miss{i}?delay_ms=100", None, []))      # miss: stream channel
        requests.append(("POST", f"/{base}/post{i}", b"x" * (i + 1), []))        # body: stream channel
        requests.append(("HEAD", warm[i], None, []))                             # HEAD hit: fast path
    requests.append(("GET", "/healthz", None, []))
    results = h2_exchange(edge, requests)
    for (method, path, body, _), r in zip(requests, results):
        if path == "/healthz":
            assert (r["status"], r["body"]) == ("200", b"ok\n")
        elif method == "GET" and "/hit" in path:
            assert (r["status"], r["headers"]["x-cache"]) == ("200", "HIT")
            assert r["body"] == demo_body("GET", path).encode()
        elif method == "GET":
            assert (r["status"], r["headers"]["x-cache"]) == ("200", "MISS")
            assert r["body"] == demo_body("GET", path).encode()
        elif method == "POST":
            assert r["status"] == "200", r
            assert r["body"].decode().startswith(demo_body("POST", path)), r["body"]
        else:
            assert (r["status"], r["body"], r["headers"]["x-cache"]) == ("200", b"", "HIT")


@pytest.fixture(scope="module")
def limited(module_edge_factory):
    return module_edge_factory.start(config="""
[timeouts]
send_seconds = 2

[limits]
max_in_flight = 3
max_in_flight_per_client = 3
max_uri_bytes = 256
max_header_fields = 20

[[route]]
path = "/big"
respond = { status = 200, body = \"""" + "x" * 65536 + """\" }
""" + ROOT_ROUTE)


def test_limits_still_apply_to_cached_paths(limited):
    """A request over a limit gets the full path's answer, even when its path is cached."""
    path = f"/{unique('lim')}"
    h2_exchange(limited, [("GET", path, None, [])])
    many = [(f"x-field-{i}", "v") for i in range(25)]
    long_target = path + "?" + "a" * 300
    ok, too_many, too_long = h2_exchange(limited, [("GET", path, None, []), ("GET", path, None, many),
                                                   ("GET", long_target, None, [])])
    assert (ok["status"], ok["headers"]["x-cache"]) == ("200", "HIT")
    assert too_many["status"] == "431", too_many
    assert too_long["status"] == "414", too_long


def test_in_flight_limit_spares_cached_paths(limited):
    """While max_in_flight slow requests are pending, a request that would wait gets 503, but a cache hit, which
    holds no slot, is still served (it used to get 503 too, so a busy backend turned every hit into an error)."""
    path = f"/{unique('busy')}"
    h2_exchange(limited, [("GET", path, None, [])])
    slow = H2Client(limited.https.host, limited.https.port, timeout=30)
    try:
        for i in range(3):
            slow.request(f"/{unique('slow')}?delay_ms=3000")
        time.sleep(0.5)
        hit, miss = h2_exchange(limited, [("GET", path, None, []), ("GET", f"/{unique('miss')}", None, [])])
        assert (hit["status"], hit["headers"].get("x-cache")) == ("200", "HIT"), hit
        assert miss["status"] == "503", miss
        assert miss["headers"].get("retry-after") == "1"
        assert slow.pump(timeout=20)
        assert all(s["status"] == "200" for s in slow.streams.values())
    finally:
        slow.close()
    after, = h2_exchange(limited, [("GET", path, None, [])])
    assert (after["status"], after["headers"]["x-cache"]) == ("200", "HIT")


def test_http2_client_that_stops_reading_is_dropped_and_memory_stays_bounded(limited):
    """A client opens huge flow-control windows, then asks for a 64 KiB response on stream after stream with
    padded HEADERS frames and never reads: the server stops reading (its memory does not grow by the hundreds
    of MiB asked for) and drops the connection after send_seconds; other clients are served meanwhile."""
    before = rss_kib(limited)
    conn = RawH2(limited.https.host, limited.https.port)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    # A small send buffer, so that our sends block soon after the server stops reading (with the kernel's
    # autotuned one, megabytes of requests fit in it, and the server's send_seconds can end the connection first).
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    settings = SettingsFrame(0)
    settings.settings = {SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1}
    conn.send(settings, WindowUpdateFrame(0, 2**31 - 1 - 65535))
    pad = [NeverIndexedHeaderTuple("x-pad", "p" * 4000)]
    sent, stream_id = 0, 1
    conn.sock.settimeout(0.2)
    deadline = time.monotonic() + 15
    blocked = False
    while sent < 6000 and time.monotonic() < deadline:
        try:
            conn.sock.sendall(conn.headers(stream_id, "/big", extra=pad).serialize())
        except (socket.timeout, TimeoutError):
            blocked = True  # the server stopped reading: our send buffer is full
            break
        except OSError:
            blocked = True  # the server stopped reading, then dropped us (send_seconds) before our buffer filled
            break
        sent += 1
        stream_id += 2
    try:
        assert blocked, f"the server read all {sent} requests from a client that reads nothing"
        peak = rss_kib(limited)
        assert peak - before < 150 * 1024, f"RSS grew {(peak - before) // 1024} MiB for {sent} unread 64 KiB responses"
        with RawConn(limited.http.host, limited.http.port) as c:
            assert c.request("GET", "/healthz").status == 200
        # Within send_seconds (2 s) plus slack, the server closes the connection.
        closed = False
        end = time.monotonic() + 15
        while time.monotonic() < end and not closed:
            try:
                conn.sock.sendall(conn.headers(stream_id, "/big").serialize())
                stream_id += 2
            except (socket.timeout, TimeoutError):
                pass
            except OSError:
                closed = True
            time.sleep(0.2)
        assert closed, "the connection of a client that reads nothing was kept open"
    finally:
        conn.close()


def test_client_that_floods_streams_while_not_reading_cannot_crash_the_server(limited):
    """500 requests in one write, past the 100 concurrent streams the server allows, from a client that
    reads slowly: the server stops reading when its socket fills and holds the rest; the flush that resumes
    it can end the connection (the stream limit was broken), which once emptied the held frames under the
    loop releasing them and killed the process. The server must live on and serve everyone else.

    NIOHTTP2 (`http2_engine = "nio"`) ends such a connection with GOAWAY; Edge's own connection layer refuses
    each stream past the limit with RST_STREAM(REFUSED_STREAM) (RFC 9113 §5.1.2) and serves on: either way
    every stream is accounted for."""
    conn = RawH2(limited.https.host, limited.https.port)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    settings = SettingsFrame(0)
    settings.settings = {SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1}
    conn.send(settings, WindowUpdateFrame(0, 2**31 - 1 - 65535))
    conn.send(*[conn.headers(stream_id, "/big") for stream_id in range(1, 1000, 2)])
    time.sleep(1)
    try:
        conn.read(timeout=10)
        if not conn.closed:
            answered = {f.stream_id for f in conn.frames if isinstance(f, HeadersFrame)}
            refused = {f.stream_id for f in conn.frames if isinstance(f, RstStreamFrame) and f.error_code == 7}
            assert answered | refused == set(range(1, 1000, 2)) and len(answered) < 200, \
                f"the connection stayed open and left streams unanswered: {len(answered)} answered, {len(refused)} refused"
        time.sleep(0.5)
        assert limited.proc.poll() is None, f"edge exited:\n{limited.log[-2000:]}"
        assert "Fatal error" not in limited.log
        with RawConn(limited.http.host, limited.http.port) as c:
            assert c.request("GET", "/healthz").status == 200
    finally:
        conn.close()
