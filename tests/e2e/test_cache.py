"""Response cache: MISS/HIT, cache key, HEAD sharing GET's entry, request coalescing, TTL."""

from __future__ import annotations

import email.utils
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import H2Client, RawConn, demo_body, unique


def get(edge, path, method="GET"):
    with RawConn(edge.http.host, edge.http.port) as c:
        return c.request(method, path)


def test_miss_then_hit(edge):
    path = f"/{unique('mh')}?a=1"
    r1 = get(edge, path)
    r2 = get(edge, path)
    assert r1.status == r2.status == 200
    assert r1.header("x-cache") == "MISS"
    assert r2.header("x-cache") == "HIT"
    assert r1.body == r2.body == demo_body("GET", path).encode()
    assert r1.header("x-demo-fetch") == r2.header("x-demo-fetch")
    age = r2.header("age")
    assert age is not None and age.isdigit(), f"HIT without a valid Age header: {r2.headers}"


def test_age_grows(edge):
    path = f"/{unique('age')}"
    assert get(edge, path).header("x-cache") == "MISS"
    time.sleep(2.2)
    r = get(edge, path)
    assert r.header("x-cache") == "HIT"
    assert int(r.header("age")) >= 1, r.headers


def test_hits_on_one_connection_keep_current_age_and_date(edge):
    """Hot hits are answered from a response prepared per loop; over one keep-alive connection each still
    carries the Date of its own second, an Age that grows with time, and the exact body."""
    path = f"/{unique('prep')}"
    with RawConn(edge.http.host, edge.http.port) as c:
        first = c.request("GET", path)
        stored = time.monotonic()
        assert first.header("x-cache") == "MISS"
        ages = []
        for _ in range(30):
            # The server's clock is the kernel's coarse one, a few ms behind time.time() at a second boundary.
            before = int(time.time() - 0.05)
            r = c.request("GET", path)
            after = int(time.time())
            assert (r.status, r.header("x-cache")) == (200, "HIT")
            assert r.body == demo_body("GET", path).encode()
            assert r.header("content-length") == str(len(r.body))
            for name in ("date", "age", "server", "x-cache"):
                assert len(r.header_all(name)) == 1, (name, r.headers)
            date = int(email.utils.parsedate_to_datetime(r.header("date")).timestamp())
            assert before <= date <= after, f"Date {r.header('date')} outside the request's second(s)"
            ages.append(int(r.header("age")))
            assert ages[-1] <= time.monotonic() - stored + 1, ages
            time.sleep(0.1)
        assert ages == sorted(ages) and ages[-1] >= 2, ages
        head = c.request("HEAD", path)
        assert head.status == 200 and head.body == b"" and head.header("x-cache") == "HIT"


def test_a_request_that_waited_behind_a_slow_one_is_not_served_an_expired_entry(edge_factory):
    """A pipelined request waits while the one before it is at the backend; when its turn comes, freshness
    and Age are judged at that moment, not when its bytes arrived. One event loop, so the second request
    meets the entry in the loop's own cache (the fast path's shortcut)."""
    server = edge_factory.start(config="""
[[route]]
path = "/"
demo = { delay_ms = 1 }
cache_ttl_seconds = 1
""", args=["--threads", "1"])
    path = f"/{unique('wait')}"
    assert get(server, path).header("x-cache") == "MISS"
    with RawConn(server.http.host, server.http.port) as c:
        c.send(b"GET /" + unique("slow").encode() + b"?delay_ms=2500 HTTP/1.1\r\nHost: localhost\r\n\r\n"
               + b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        slow = c.read_response()
        waited = c.read_response()
    assert slow.status == waited.status == 200
    assert waited.header("x-cache") == "MISS", \
        f"an entry with cache_ttl_seconds = 1 was served 2.5 s after it was stored: {waited.headers}"


def test_query_is_part_of_key(edge):
    base = f"/{unique('q')}"
    r1 = get(edge, base + "?a=1")
    r2 = get(edge, base + "?a=2")
    r3 = get(edge, base)
    assert [r.header("x-cache") for r in (r1, r2, r3)] == ["MISS", "MISS", "MISS"]
    fetches = [int(r.header("x-demo-fetch")) for r in (r1, r2, r3)]
    assert len(set(fetches)) == 3, fetches
    assert r2.text == demo_body("GET", base + "?a=2")
    assert get(edge, base + "?a=1").header("x-cache") == "HIT"


def test_head_after_get_is_hit(edge):
    path = f"/{unique('hg')}"
    g = get(edge, path)
    h = get(edge, path, method="HEAD")
    assert g.header("x-cache") == "MISS"
    assert h.status == 200
    assert h.header("x-cache") == "HIT"
    assert h.header("x-demo-fetch") == g.header("x-demo-fetch")
    assert h.header("content-length") == g.header("content-length")


def test_cache_shared_between_http1_and_http2(edge):
    # Same authority ("localhost") on both: the cache key includes the host.
    path = f"/{unique('x')}"
    r1 = get(edge, path)
    client = H2Client(edge.https.host, edge.https.port)
    try:
        sid = client.request(path)
        assert client.pump(lambda: client.ended(sid), timeout=30)
        r2 = client.streams[sid]
    finally:
        client.close()
    assert r1.header("x-cache") == "MISS"
    assert r2["status"] == "200"
    assert r2["headers"].get("x-cache") == "HIT"
    assert r2["headers"].get("x-demo-fetch") == r1.header("x-demo-fetch")
    assert r2["body"] == r1.body


def test_delay_ms_delays(edge):
    path = f"/{unique('d')}?delay_ms=300"
    t0 = time.monotonic()
    r = get(edge, path)
    elapsed = time.monotonic() - t0
    assert r.status == 200 and r.header("x-cache") == "MISS"
    assert elapsed >= 0.3, f"delay_ms=300 took only {elapsed:.3f}s"


def test_concurrent_misses_coalesce(edge):
    n = 30
    path = f"/{unique('co')}?delay_ms=500"
    conns = [RawConn(edge.http.host, edge.http.port) for _ in range(n)]
    barrier = threading.Barrier(n, timeout=30)

    def one(c):
        barrier.wait()
        return c.request("GET", path)

    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            results = list(pool.map(one, conns, timeout=120))
    finally:
        for c in conns:
            c.close()

    assert [r.status for r in results] == [200] * n
    fetches = {r.header("x-demo-fetch") for r in results}
    assert len(fetches) == 1, f"expected one backend fetch, saw X-Demo-Fetch values {sorted(fetches)}"
    caches = [r.header("x-cache") for r in results]
    assert caches.count("MISS") == 1, caches
    assert caches.count("HIT") == n - 1, caches
    assert {r.body for r in results} == {demo_body("GET", path).encode()}

    # The next backend call gets the very next sequence number: only one call was made.
    after = get(edge, f"/{unique('co-after')}")
    assert after.header("x-cache") == "MISS"
    assert int(after.header("x-demo-fetch")) == int(fetches.pop()) + 1


def test_ttl_and_uncached_route(edge_factory):
    server = edge_factory.start(config="""
[[route]]
path = "/"
demo = { delay_ms = 1 }
cache_ttl_seconds = 2

[[route]]
path = "/nocache"
demo = { delay_ms = 1 }
cache_ttl_seconds = 0
""")
    path = f"/{unique('ttl')}"
    r1, r2 = get(server, path), get(server, path)
    assert (r1.header("x-cache"), r2.header("x-cache")) == ("MISS", "HIT")
    time.sleep(3.5)
    r3 = get(server, path)
    assert r3.header("x-cache") == "MISS", "entry outlived cache_ttl_seconds = 2"
    assert int(r3.header("x-demo-fetch")) > int(r1.header("x-demo-fetch"))

    nc = f"/nocache/{unique('nc')}"
    n1, n2 = get(server, nc), get(server, nc)
    assert n1.status == n2.status == 200
    assert n1.header("x-cache") != "HIT" and n2.header("x-cache") != "HIT"
    assert int(n2.header("x-demo-fetch")) == int(n1.header("x-demo-fetch")) + 1
