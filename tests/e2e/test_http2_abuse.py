"""HTTP/2 abuse on loopback with raw frames (hyperframe, h2's frame layer): the abusive connection is closed
with GOAWAY (or the abusive streams refused) after bounded work, and a normal client on another connection is
served meanwhile."""

from __future__ import annotations

import os
import socket
import struct
import time

import hpack
import pytest
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

from conftest import client_tls_context, h2_get_many, unique

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NIO_HTTP2 = os.environ.get("EDGE_HTTP2_ENGINE") == "nio"  # scripts/test's second pass, on NIOHTTP2


class RawH2:
    """An HTTP/2 connection that sends whatever frames it is given, valid or not."""

    def __init__(self, host: str, port: int):
        raw = socket.create_connection((host, port), timeout=10)
        self.sock = client_tls_context(["h2"]).wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.encoder = hpack.Encoder()
        self.buf = b""
        self.frames: list[Frame] = []
        self.closed = False
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())

    def send(self, *frames: Frame) -> bool:
        try:
            self.sock.sendall(b"".join(f.serialize() for f in frames))
            return True
        except OSError:
            self.closed = True
            return False

    def headers(self, stream_id: int, path: str = "/", end_stream: bool = True, extra=()) -> HeadersFrame:
        block = self.encoder.encode([(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                                     (":path", path), *extra])
        frame = HeadersFrame(stream_id, block)
        frame.flags.add("END_HEADERS")
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame

    def read(self, timeout: float) -> None:
        """Reads frames until the connection closes or `timeout` passes."""
        end = time.monotonic() + timeout
        while not self.closed and time.monotonic() < end:
            self.sock.settimeout(max(0.05, end - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                break
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self.buf += chunk
            while len(self.buf) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) < 9 + length:
                    break
                frame.parse_body(memoryview(self.buf[9:9 + length]))
                self.buf = self.buf[9 + length:]
                self.frames.append(frame)

    def goaways(self) -> list[GoAwayFrame]:
        return [f for f in self.frames if isinstance(f, GoAwayFrame)]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def assert_normal_client_served(edge):
    paths = [f"/{unique('bystander')}/{i}" for i in range(10)]
    results, problems = h2_get_many(edge.https.host, edge.https.port, paths)
    assert not problems, problems
    assert all(r["status"] == "200" for r in results.values()), results


def assert_cut_off(conn: RawH2, what: str, goaway_seen: bool = True):
    """The server closed the connection, after a GOAWAY carrying an error code. When the client is still
    flooding as the server closes, the kernel answers with RST and the GOAWAY may never be read, so floods
    pass `goaway_seen=False`."""
    conn.read(timeout=10)
    assert conn.closed, f"{what}: connection was left open (frames: {conn.frames[-5:]})"
    if goaway_seen:
        assert any(g.error_code != 0 for g in conn.goaways()), f"{what}: no GOAWAY with an error code: {conn.frames[-5:]}"


def test_rapid_reset_is_cut_off(edge):
    """CVE-2023-44487: open a stream and reset it at once, thousands of times."""
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        stream = 1
        for _ in range(50):  # 50 bursts of 40 streams, bounded
            batch = []
            for _ in range(40):
                batch += [conn.headers(stream), RstStreamFrame(stream, error_code=8)]
                stream += 2
            if not conn.send(*batch):
                break
        assert_cut_off(conn, "rapid reset", goaway_seen=False)
    finally:
        conn.close()
    assert_normal_client_served(edge)


def test_continuation_flood_is_cut_off(edge):
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        first = conn.headers(1)
        first.flags.discard("END_HEADERS")
        frames = [first] + [ContinuationFrame(1, b"\x40\x01a\x01b") for _ in range(2000)]
        conn.send(*frames)
        assert_cut_off(conn, "CONTINUATION flood", goaway_seen=False)
    finally:
        conn.close()
    assert_normal_client_served(edge)


def test_hpack_bomb_is_refused(edge):
    """A small header block that decodes to far more than the header list limit: one 4 KB header inserted in
    the dynamic table, then referenced by index hundreds of times (1 byte each)."""
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        big = ("x-bomb", "b" * 4000)
        block = conn.encoder.encode([(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                                     (":path", "/"), big])
        index = 62  # the entry just added to the dynamic table
        block += bytes([0x80 | index]) * 400  # 400 one-byte references: ~1.6 MB decoded
        frame = HeadersFrame(1, block)
        frame.flags.add("END_HEADERS")
        frame.flags.add("END_STREAM")
        conn.send(frame)
        conn.read(timeout=10)
        answered = any(isinstance(f, HeadersFrame) and f.stream_id == 1 for f in conn.frames)
        refused = conn.goaways() or conn.closed or any(isinstance(f, RstStreamFrame) and f.stream_id == 1 for f in conn.frames)
        assert refused and not answered, f"HPACK bomb was not refused: {conn.frames}"
    finally:
        conn.close()
    assert_normal_client_served(edge)


REFUSED_STREAM = 7

SMALL_HTTP2_LIMITS = """
[limits]
http2_max_concurrent_streams = 7
http2_header_table_size = 1024
max_header_bytes = 8192

[[route]]
path = "/"
demo = {}
"""


def open_many_slow_streams(conn: RawH2, count: int, acknowledge_settings: bool) -> None:
    """Opens `count` streams at once whose responses take 600 ms, after acknowledging the server's SETTINGS if
    asked, and reads until they are answered."""
    if acknowledge_settings:
        conn.read(timeout=0.5)
        assert any(isinstance(f, SettingsFrame) and "ACK" not in f.flags for f in conn.frames)
        conn.send(SettingsFrame(0, flags=["ACK"]))
    base = unique("many")
    conn.send(*[conn.headers(1 + 2 * i, f"/{base}/{i}?delay_ms=600") for i in range(count)])
    conn.read(timeout=2.5)


def streams_answered(conn: RawH2) -> list[int]:
    return sorted({f.stream_id for f in conn.frames if isinstance(f, DataFrame) and "END_STREAM" in f.flags})


def streams_refused(conn: RawH2) -> list[int]:
    return sorted(f.stream_id for f in conn.frames if isinstance(f, RstStreamFrame) and f.error_code == REFUSED_STREAM)


def test_streams_beyond_the_concurrency_limit_are_refused(edge):
    """RFC 9113 §5.1.2: with max_concurrent_streams = 100 advertised and acknowledged, 300 slow streams opened at
    once get 100 answers and 200 RST_STREAM(REFUSED_STREAM) — a stream error the client may retry, as nginx
    sends — and the connection serves on. (NIOHTTP2 alone would close the connection with GOAWAY.)"""
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        open_many_slow_streams(conn, 300, acknowledge_settings=True)
        assert not conn.goaways() and not conn.closed, conn.frames[-5:]
        assert streams_answered(conn) == [1 + 2 * i for i in range(100)]
        assert streams_refused(conn) == [1 + 2 * i for i in range(100, 300)]
        conn.send(conn.headers(601, "/healthz"))
        conn.read(timeout=1)
        assert 601 in streams_answered(conn), "the connection stopped serving after refusing streams"
    finally:
        conn.close()
    assert_normal_client_served(edge)


def test_streams_beyond_the_limit_before_settings_are_acknowledged_are_refused(edge):
    """A client that opens streams before acknowledging the server's SETTINGS (RFC 9113 §6.5.3 lets it) gets the
    excess refused too, never GOAWAY, and the advertised 100 served (as `h2load -m100` opens them). On NIOHTTP2,
    which holds a client to 100 open streams until the acknowledgement, Edge refuses from the 100th."""
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        open_many_slow_streams(conn, 150, acknowledge_settings=False)
        assert not conn.goaways() and not conn.closed, conn.frames[-5:]
        answered, refused = streams_answered(conn), streams_refused(conn)
        served = 99 if NIO_HTTP2 else 100
        assert len(answered) == served and len(refused) == 150 - served, (len(answered), len(refused))
        assert set(answered) | set(refused) == {1 + 2 * i for i in range(150)}
    finally:
        conn.close()


def test_streams_within_a_lower_limit_are_served_and_the_rest_refused(edge_factory):
    server = edge_factory.start(config=SMALL_HTTP2_LIMITS)
    conn = RawH2(server.https.host, server.https.port)
    try:
        open_many_slow_streams(conn, 20, acknowledge_settings=False)
        assert not conn.goaways(), conn.frames[-5:]
        assert streams_answered(conn) == [1 + 2 * i for i in range(7)]
        assert streams_refused(conn) == [1 + 2 * i for i in range(7, 20)]
    finally:
        conn.close()


def test_window_update_overflow_is_a_connection_error(edge):
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        conn.send(WindowUpdateFrame(0, window_increment=2**31 - 1), WindowUpdateFrame(0, window_increment=2**31 - 1))
        assert_cut_off(conn, "window overflow")
        assert any(g.error_code == 3 for g in conn.goaways())  # FLOW_CONTROL_ERROR
    finally:
        conn.close()
    assert_normal_client_served(edge)


@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_control_frame_flood_is_cut_off(edge, kind):
    """Thousands of PING or SETTINGS frames whose acks the client never reads."""
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        frames = [PingFrame(0, opaque_data=struct.pack(">Q", i)) if kind == "ping" else SettingsFrame(0)
                  for i in range(20000)]
        for start in range(0, len(frames), 1000):
            if not conn.send(*frames[start:start + 1000]):
                break
        assert_cut_off(conn, f"{kind} flood", goaway_seen=False)
    finally:
        conn.close()
    assert_normal_client_served(edge)


def test_http2_limits_are_advertised(edge_factory):
    server = edge_factory.start(config=SMALL_HTTP2_LIMITS)
    conn = RawH2(server.https.host, server.https.port)
    try:
        conn.read(timeout=1)
        settings = next(f for f in conn.frames if isinstance(f, SettingsFrame) and "ACK" not in f.flags)
        assert settings.settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 7
        assert settings.settings[SettingsFrame.HEADER_TABLE_SIZE] == 1024
        assert settings.settings[SettingsFrame.MAX_HEADER_LIST_SIZE] == 8192
    finally:
        conn.close()


@pytest.mark.parametrize("http2", [False, True])
def test_edge_responses_carry_nosniff(edge, http2):
    import httpx
    with httpx.Client(http2=http2, verify=False, timeout=30) as client:
        response = client.get(edge.https.url + "/healthz")
        assert response.headers["x-content-type-options"] == "nosniff"


def test_streams_stalled_by_a_zero_window_are_reset_and_release_their_files(edge_factory, tmp_path):
    """A client that advertises INITIAL_WINDOW_SIZE = 0 and never grants credit stalls every file it asks for
    while the socket stays writable. Each stalled stream is reset after `send_seconds` and its file
    descriptor released, instead of being held for as long as the client stays connected."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "big.bin").write_bytes(b"x" * (1 << 20))
    server = edge_factory.start(config=f"""
[timeouts]
send_seconds = 2

[[route]]
path = "/files"
static = {{ root = "{root}" }}
""")

    def open_copies() -> int:
        """Descriptors the server holds on the file (other descriptors, such as the signal descriptors the
        runtime opens around start-up, come and go on their own)."""
        count = 0
        for fd in os.listdir(f"/proc/{server.pid}/fd"):
            try:
                count += os.readlink(f"/proc/{server.pid}/fd/{fd}") == str(root / "big.bin")
            except OSError:
                pass
        return count

    conn = RawH2(server.https.host, server.https.port)
    try:
        conn.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}))
        streams = [1 + 2 * i for i in range(20)]
        conn.send(*[conn.headers(stream, "/files/big.bin") for stream in streams])
        conn.read(timeout=1)
        assert open_copies() == 20, "the files were not opened: the test would prove nothing"
        conn.read(timeout=6)
        reset = {f.stream_id for f in conn.frames if isinstance(f, RstStreamFrame)}
        assert reset == set(streams), f"streams not reset: {sorted(set(streams) - reset)}"
        # Nothing moved on the whole connection: it gets a GOAWAY and closes (a connection with one flowing
        # stream is kept: test_only_the_stalled_stream_is_reset_while_another_flows).
        conn.read(timeout=3)
        assert conn.goaways() and conn.closed, conn.frames[-5:]
        # A file is closed as its stream channel closes, just after the RST_STREAM goes out: allow a moment.
        deadline = time.monotonic() + 2
        while open_copies() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_copies() == 0, "file descriptors of the stalled streams are still open"
    finally:
        conn.close()


def test_request_answered_before_its_body_ends_gets_rst_stream_no_error(edge):
    """RFC 9113 §8.1: a complete response sent before the request is complete (here 413 for a declared body
    over the limit) is followed by RST_STREAM(NO_ERROR), so that the client stops sending and the stream
    does not stay open for as long as the connection does."""
    conn = RawH2(edge.https.host, edge.https.port)
    try:
        block = conn.encoder.encode([(":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
                                     (":path", f"/{unique('too-big')}"), ("content-length", str(1 << 40))])
        headers = HeadersFrame(1, block)
        headers.flags.add("END_HEADERS")
        conn.send(headers, DataFrame(1, b"x" * 100))
        conn.read(timeout=3)
        on_stream = [f for f in conn.frames if f.stream_id == 1]
        kinds = [type(f).__name__ for f in on_stream]
        assert kinds[:1] == ["HeadersFrame"] and kinds[-1] == "RstStreamFrame", kinds
        assert dict(hpack.Decoder().decode(on_stream[0].data)).get(":status") == "413"
        assert any(isinstance(f, DataFrame) and "END_STREAM" in f.flags for f in on_stream), "response not ended"
        assert on_stream[-1].error_code == 0, f"RST_STREAM error code {on_stream[-1].error_code}, expected NO_ERROR"
        assert not conn.closed and not conn.goaways()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def stalling(module_edge_factory, tmp_path_factory):
    root = tmp_path_factory.mktemp("stall")
    (root / "big.bin").write_bytes(b"y" * (4 << 20))
    return module_edge_factory.start(config=f"""
[timeouts]
send_seconds = 2

[[route]]
path = "/"
demo = {{ delay_ms = 1 }}

[[route]]
path = "/fixed"
respond = {{ status = 200, body = "a fixed answer\\n" }}

[[route]]
path = "/files"
static = "{root}"
""")


@pytest.mark.parametrize("path", ["/fixed", "/demo-hit", "/demo-miss"])
def test_a_response_that_cannot_send_a_byte_is_reset_and_the_connection_closed(stalling, path):
    """A client with INITIAL_WINDOW_SIZE = 0 that never sends WINDOW_UPDATE kept its streams, and so its
    connection, forever: three such connections held all of max_connections = 3. The response is now reset
    (RST_STREAM(CANCEL)) after send_seconds without a byte sent — answers of the fast path (a fixed response, a
    cache hit) and of the full path (a miss) alike — and the connection, on which nothing moved, gets a GOAWAY
    and closes."""
    target = path
    if path != "/fixed":
        target = f"/{unique('stall')}"
        if path == "/demo-hit":
            results, problems = h2_get_many(stalling.https.host, stalling.https.port, [target])
            assert not problems and results[target]["status"] == "200"
    conn = RawH2(stalling.https.host, stalling.https.port)
    try:
        conn.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}))
        conn.send(conn.headers(1, target))
        start = time.monotonic()
        conn.read(timeout=1.5)
        assert any(isinstance(f, HeadersFrame) and f.stream_id == 1 for f in conn.frames), "no response HEADERS"
        assert not any(isinstance(f, RstStreamFrame) for f in conn.frames), "reset before send_seconds"
        deadline = start + 6
        while not conn.closed and time.monotonic() < deadline:
            conn.read(timeout=0.5)
        resets = [f for f in conn.frames if isinstance(f, RstStreamFrame)]
        assert [(f.stream_id, f.error_code) for f in resets] == [(1, 8)], conn.frames  # 8: CANCEL
        assert conn.goaways() and conn.goaways()[0].last_stream_id == 1, conn.frames
        assert conn.closed, "the connection on which nothing moved was left open"
    finally:
        conn.close()


def test_only_the_stalled_stream_is_reset_while_another_flows(stalling):
    """Stream 1 never gets window; stream 3 gets window as it reads. After send_seconds stream 1 is reset, and the
    connection, on which stream 3 keeps moving, stays open and completes stream 3."""
    conn = RawH2(stalling.https.host, stalling.https.port)
    try:
        conn.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}))
        conn.send(conn.headers(1, "/files/big.bin"), conn.headers(3, "/files/big.bin"))
        received, end = 0, time.monotonic() + 8
        done = False
        while time.monotonic() < end and not conn.closed and not done:
            # A slow reader: 64 KiB of window for stream 3 (and the connection) every 0.25 s.
            conn.send(WindowUpdateFrame(3, window_increment=65536), WindowUpdateFrame(0, window_increment=65536))
            before = len(conn.frames)
            conn.read(timeout=0.25)
            for frame in conn.frames[before:]:
                if isinstance(frame, DataFrame) and frame.stream_id == 3:
                    received += len(frame.data)
                    done = "END_STREAM" in frame.flags
        resets = {f.stream_id: f.error_code for f in conn.frames if isinstance(f, RstStreamFrame)}
        assert resets.get(1) == 8, conn.frames[-5:]
        assert 3 not in resets and not conn.goaways() and not conn.closed, conn.frames[-5:]
        assert received > 0
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/fixed", "/slow"])
def test_headers_on_a_stream_the_client_ended_gets_stream_closed(stalling, path):
    """RFC 9113 §5.1 (h2spec http2/5.1/6): a second HEADERS frame on a stream in half-closed (remote) state is a
    stream error of type STREAM_CLOSED. NIOHTTP2 answered RST_STREAM(PROTOCOL_ERROR) while the response was still
    unsent (sent in the same write as the request, or a slow response); the connection serves on."""
    target = f"/{unique('slow')}?delay_ms=500" if path == "/slow" else path
    conn = RawH2(stalling.https.host, stalling.https.port)
    try:
        conn.send(conn.headers(1, target), conn.headers(1, target))
        conn.read(timeout=1.5)
        resets = [(f.stream_id, f.error_code) for f in conn.frames if isinstance(f, RstStreamFrame)]
        goaways = [g.error_code for g in conn.goaways()]
        assert resets == [(1, 5)] or goaways == [5], conn.frames  # 5: STREAM_CLOSED
        if resets:
            conn.send(conn.headers(3, "/fixed"))
            conn.read(timeout=1.5)
            assert any(isinstance(f, DataFrame) and f.stream_id == 3 for f in conn.frames), conn.frames[-5:]
    finally:
        conn.close()


def test_other_stream_errors_keep_protocol_error(stalling):
    """Only a header block on an ended stream is rewritten: a WINDOW_UPDATE of 0 on a stream (RFC 9113 §6.9,
    h2spec 6.9/2) and a trailer block without END_STREAM keep RST_STREAM(PROTOCOL_ERROR)."""
    conn = RawH2(stalling.https.host, stalling.https.port)
    try:
        conn.send(conn.headers(1, f"/{unique('wu')}?delay_ms=500"), WindowUpdateFrame(1, window_increment=0))
        body = conn.headers(3, "/fixed", end_stream=False, extra=[("content-length", "1")])
        trailer = HeadersFrame(3, conn.encoder.encode([("x-trailer", "1")]))
        trailer.flags.add("END_HEADERS")
        conn.send(body, trailer)
        conn.read(timeout=1.5)
        resets = {f.stream_id: f.error_code for f in conn.frames if isinstance(f, RstStreamFrame)}
        assert resets.get(1) == 1 and resets.get(3) == 1, conn.frames
    finally:
        conn.close()
