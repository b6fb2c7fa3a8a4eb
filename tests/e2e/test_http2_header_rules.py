"""HTTP/2 header blocks that RFC 9113 §8.2–8.3 calls malformed, sent as raw frames: each is a stream error
(RST_STREAM with PROTOCOL_ERROR), no response is produced, and the connection serves on. Well-formed blocks on
the edge of the rules are served. A client that keeps sending malformed blocks is cut off with
GOAWAY(ENHANCE_YOUR_CALM), as NIOHTTP2 does for repeated stream errors."""

from __future__ import annotations

import hpack
import pytest
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, RstStreamFrame

from conftest import curl, unique
from test_http2_abuse import RawH2

PROTOCOL_ERROR = 1
ENHANCE_YOUR_CALM = 11


def request(path: str, *extra, method: str = "GET") -> list[tuple[str, str]]:
    return [(":method", method), (":scheme", "https"), (":authority", "localhost"), (":path", path), *extra]


def malformed_heads(path: str) -> dict[str, list[tuple[str, str]]]:
    base = request(path)
    return {
        "upper-case name": base + [("X-Upper", "1")],
        "space in name": base + [("x bad", "1")],
        "colon in name": base + [("x:bad", "1")],
        "connection": base + [("connection", "keep-alive")],
        "keep-alive": base + [("keep-alive", "timeout=5")],
        "proxy-connection": base + [("proxy-connection", "keep-alive")],
        "transfer-encoding": base + [("transfer-encoding", "chunked")],
        "upgrade": base + [("upgrade", "websocket")],
        "te other than trailers": base + [("te", "gzip")],
        "CR in value": base + [("x-a", "a\rb")],
        "LF in value": base + [("x-a", "a\nb")],
        "NUL in value": base + [("x-a", "a\x00b")],
        "pseudo after regular": [(":method", "GET"), (":scheme", "https"), ("x-a", "1"), (":path", path)],
        "duplicate pseudo": base + [(":path", "/other")],
        "unknown pseudo": base[:3] + [(":foo", "x")] + base[3:],
        "status in request": [(":status", "200")] + base,
        "protocol without extended CONNECT": [(":method", "CONNECT"), (":protocol", "websocket"),
                                              (":scheme", "https"), (":path", "/"), (":authority", "localhost")],
        "missing method": [f for f in base if f[0] != ":method"],
        "missing scheme": [f for f in base if f[0] != ":scheme"],
        "missing path": [f for f in base if f[0] != ":path"],
        "empty path": request(""),
        "space in path": request("/a b"),
        "DEL in path": request("/a\x7f"),
        "tab in authority": [(":method", "GET"), (":scheme", "https"), (":authority", "local\thost"), (":path", path)],
        "CONNECT with path": [(":method", "CONNECT"), (":authority", "localhost:443"), (":path", "/")],
        "CONNECT without authority": [(":method", "CONNECT")],
        # RFC 9113 §8.3.1: host must not name another host than :authority, and an https request needs one of them.
        "host other than authority": base + [("host", "other.example")],
        "two different hosts": [f for f in base if f[0] != ":authority"] + [("host", "localhost"), ("host", "other")],
        "neither authority nor host": [f for f in base if f[0] != ":authority"],
        "neither, with another scheme": [(":method", "GET"), (":scheme", "urn"), (":path", path)],
    }


def well_formed_heads(path: str) -> dict[str, list[tuple[str, str]]]:
    return {
        "te trailers": request(path, ("te", "trailers")),
        "obs-text in value": request(path, ("x-a", "café")),
        "space and tab inside value": request(path, ("x-a", "a b\tc")),
        "every token character in name": request(path, ("x-a!#$%&'*+.^_`|~09", "1")),
        "host equal to authority but for case": request(path, ("host", "LocalHost")),
        "host instead of authority": [f for f in request(path) if f[0] != ":authority"] + [("host", "localhost")],
    }


class Stream:
    """Reads what a RawH2 connection received on one stream."""

    def __init__(self, conn: RawH2):
        self.conn = conn
        self.decoder = hpack.Decoder()
        self.decoded = 0
        self.statuses: dict[int, list[str]] = {}

    def wait(self, stream_id: int, timeout: float = 5) -> tuple[str, int | str]:
        """('rst', error code) or ('status', :status) for `stream_id`, whichever comes first."""
        for _ in range(int(timeout / 0.2)):
            self._decode()
            for frame in self.conn.frames:
                if frame.stream_id == stream_id and isinstance(frame, RstStreamFrame):
                    return "rst", frame.error_code
            if self.statuses.get(stream_id):
                return "status", self.statuses[stream_id][0]
            if self.conn.closed:
                break
            self.conn.read(timeout=0.2)
        return "nothing", 0

    def _decode(self) -> None:
        # The decoder's dynamic table follows every HEADERS frame in order.
        while self.decoded < len(self.conn.frames):
            frame = self.conn.frames[self.decoded]
            self.decoded += 1
            if isinstance(frame, HeadersFrame):
                fields = dict(self.decoder.decode(frame.data))
                if ":status" in fields:
                    self.statuses.setdefault(frame.stream_id, []).append(fields[":status"])


def send_head(conn: RawH2, stream_id: int, fields, end_stream: bool = True) -> None:
    frame = HeadersFrame(stream_id, conn.encoder.encode(fields))
    frame.flags.add("END_HEADERS")
    if end_stream:
        frame.flags.add("END_STREAM")
    assert conn.send(frame)


@pytest.fixture(scope="module")
def cached_path(edge):
    """A path in the cache, so that a well-formed GET of it is answered by the HTTP/2 fast path."""
    path = f"/{unique('rules')}"
    for _ in range(2):
        assert curl("-sk", "--http2", "-o", "/dev/null", f"{edge.https.url}{path}").returncode == 0
    return path


@pytest.mark.parametrize("case", list(malformed_heads("/x")))
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_malformed_request_head_is_a_stream_error(edge, cached_path, case, method):
    fields = malformed_heads(cached_path)[case]
    if method == "POST":
        fields = [(n, "POST" if n == ":method" and v == "GET" else v) for n, v in fields]
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        reader = Stream(conn)
        send_head(conn, 1, fields)
        assert reader.wait(1) == ("rst", PROTOCOL_ERROR), f"{case}: {conn.frames}"
        assert 1 not in reader.statuses, f"{case}: a response was sent for a malformed request"
        send_head(conn, 3, request(cached_path))
        assert reader.wait(3) == ("status", "200"), f"{case}: the connection did not serve on"
        assert not conn.goaways()
    finally:
        conn.close()


@pytest.mark.parametrize("case", list(well_formed_heads("/x")))
def test_well_formed_edge_cases_are_served(edge, cached_path, case):
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        reader = Stream(conn)
        send_head(conn, 1, well_formed_heads(cached_path)[case])
        assert reader.wait(1) == ("status", "200"), f"{case}: {conn.frames}"
    finally:
        conn.close()


def trailer_cases() -> dict[str, list[tuple[str, str]] | None]:
    return {
        "pseudo-header in trailers": [(":path", "/x")],
        "connection in trailers": [("connection", "close")],
        "LF in trailer value": [("x-t", "a\nb")],
        "upper-case trailer name": [("X-T", "1")],
    }


@pytest.mark.parametrize("case", list(trailer_cases()))
def test_malformed_trailers_are_a_stream_error(edge, case):
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        reader = Stream(conn)
        send_head(conn, 1, request(f"/{unique('trailers')}", method="POST"), end_stream=False)
        assert conn.send(DataFrame(1, b"abc"))
        send_head(conn, 1, trailer_cases()[case])
        assert reader.wait(1) == ("rst", PROTOCOL_ERROR), f"{case}: {conn.frames}"
        assert reader.statuses.get(1, []) == [], f"{case}: a response was sent"
        send_head(conn, 3, request("/healthz"))
        assert reader.wait(3) == ("status", "200"), f"{case}: the connection did not serve on"
    finally:
        conn.close()


def test_well_formed_trailers_are_accepted(edge):
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        reader = Stream(conn)
        send_head(conn, 1, request(f"/{unique('trailers')}", method="POST"), end_stream=False)
        assert conn.send(DataFrame(1, b"abc"))
        send_head(conn, 1, [("x-checksum", "abc"), ("te-like", "x")])
        assert reader.wait(1) == ("status", "200"), conn.frames
    finally:
        conn.close()


def test_a_client_that_keeps_sending_malformed_heads_is_cut_off(edge, cached_path):
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        stream_id = 1
        for _ in range(5):
            for _ in range(50):
                if not conn.send(HeadersFrame(stream_id, conn.encoder.encode(request(cached_path, ("X-Bad", "1"))),
                                              flags=["END_HEADERS", "END_STREAM"])):
                    break
                stream_id += 2
            conn.read(timeout=0.3)
        conn.read(timeout=5)
        goaways = [f for f in conn.frames if isinstance(f, GoAwayFrame)]
        resets = [f for f in conn.frames if isinstance(f, RstStreamFrame)]
        assert goaways and goaways[-1].error_code == ENHANCE_YOUR_CALM, (len(resets), goaways)
        assert conn.closed, "the connection was left open"
        assert 150 <= len(resets) <= 201, len(resets)
        assert all(r.error_code == PROTOCOL_ERROR for r in resets)
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_host_stands_in_for_a_missing_authority(edge, method):
    """RFC 9113 §8.3.1: a request may carry `host` instead of `:authority`. It is served (before, NIO's HTTP/1
    codec refused it and the stream was reset with CANCEL), and its host is the cache key's: a GET fetched that
    way is a HIT for the same host given as `:authority`, and a MISS for another."""
    path = f"/{unique('host-only')}"
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        reader = Stream(conn)
        send_head(conn, 1, [(":method", method), (":scheme", "https"), (":path", path), ("host", "a.example")])
        assert reader.wait(1) == ("status", "200"), conn.frames
        body = b"".join(f.data for f in conn.frames if f.stream_id == 1 and isinstance(f, DataFrame))
        assert body.decode().endswith(f"{method} {path}\n")
    finally:
        conn.close()
    if method == "GET":
        for authority, cache in (("a.example", "HIT"), ("b.example", "MISS")):
            res = curl("-sk", "--http2", "-o", "/dev/null", "-w", "%{header_json}", "-H", f"Host: {authority}",
                       f"{edge.https.url}{path}")
            assert f'"x-cache":["{cache}"]' in res.stdout.replace(" ", ""), (authority, res.stdout)
