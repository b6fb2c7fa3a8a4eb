"""WebSocket routes: the echo endpoint and the relay to upstream servers, over HTTP/1.1 (ws://, wss://) and HTTP/2
(RFC 8441 extended CONNECT), with real clients — Python `websockets`, a raw socket for frames a library would
never send, and `h2` for HTTP/2 — and a `websockets` echo server as the upstream.

What a user checks: messages come back as sent; a bad handshake gets the RFC's answer (426, 400, 405); limits
close with 1009, bad text with 1007, protocol errors with 1002; the closing handshake; idle connections are
pinged and closed; route policies apply to the handshake; a proxied WebSocket reaches the upstream with the
proxy's fields and the upstream's refusal comes back; shutdown and reload close with 1001. Cases the Autobahn
suite found are kept here (CI cannot run the suite's whole campaign: bench/autobahn/campaign does)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import socket
import ssl
import struct
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

from conftest import basic, client_tls_context, unique
from upstreams import free_port

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ---------------------------------------------------------------------------------------------------------------
# A raw WebSocket client: frames exactly as written, for what libraries refuse to send.

def mask_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawWS:
    def __init__(self, port: int, path: str = "/ws", headers: dict[str, str] | None = None, *, tls: bool = False,
                 host: str = "127.0.0.1"):
        sock = socket.create_connection((host, port), timeout=10)
        if tls:
            sock = client_tls_context(["http/1.1"]).wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.buffer = b""
        self.key = base64.b64encode(os.urandom(16)).decode()
        fields = {"Host": "localhost", "Upgrade": "websocket", "Connection": "Upgrade",
                  "Sec-WebSocket-Key": self.key, "Sec-WebSocket-Version": "13"}
        for name, value in (headers or {}).items():
            if value is None:
                fields.pop(name, None)
            else:
                fields[name] = value
        self.request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"

    def handshake(self, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        request = self.request.replace("GET ", method + " ", 1)
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        body = b""
        if "content-length" in fields:
            while len(self.buffer) < int(fields["content-length"]):
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buffer += chunk
            body, self.buffer = self.buffer[:int(fields["content-length"])], self.buffer[int(fields["content-length"]):]
        return status, fields, body

    def send(self, opcode: int, payload: bytes, **kw) -> None:
        self.sock.sendall(mask_frame(opcode, payload, **kw))

    def _need(self, n: int) -> bytes:
        if len(self.buffer) < n:
            pending = bytearray(self.buffer)
            while len(pending) < n:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise EOFError("connection closed")
                pending += chunk
            self.buffer = bytes(pending)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._need(2)
        assert b1 & 0x80 == 0, "server frames must not be masked"
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._need(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._need(8))
        return bool(b0 & 0x80), b0 & 0x0F, self._need(length)

    def recv_close(self) -> tuple[int | None, str]:
        """Frames until a close; its code and reason."""
        while True:
            _, opcode, payload = self.recv()
            if opcode == 0x8:
                if len(payload) >= 2:
                    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")
                return None, ""

    def at_eof(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def accept_value(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


# ---------------------------------------------------------------------------------------------------------------
# A `websockets` echo upstream that records each handshake's path and fields.

class UpstreamEcho:
    def __init__(self, *, refuse_status: int | None = None, subprotocols: list[str] | None = None, tls=None):
        self.tls = tls
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.port = free_port()
        self.refuse_status = refuse_status
        self.subprotocols = subprotocols
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def echo(ws):
            try:
                async for message in ws:
                    await ws.send(message)
            except websockets.ConnectionClosed:
                pass

        def process_request(connection, request):
            self.requests.append((request.path, {k.lower(): v for k, v in request.headers.raw_items()}))
            if self.refuse_status:
                return connection.respond(self.refuse_status, "refused by the upstream\n")
            return None

        async def main():
            self.stop_event = asyncio.Event()
            async with ws_serve(echo, "127.0.0.1", self.port, process_request=process_request,
                                subprotocols=self.subprotocols, ssl=self.tls):
                self.ready.set()
                await self.stop_event.wait()

        self.loop.run_until_complete(main())

    def stop(self):
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)


@pytest.fixture(scope="module")
def upstream():
    server = UpstreamEcho(subprotocols=["chat.v2", "chat.v1"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def refusing_upstream():
    server = UpstreamEcho(refuse_status=403)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory):
    import bcrypt
    path = tmp_path_factory.mktemp("ws-auth") / "htpasswd"
    path.write_text("alice:" + bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode() + "\n")
    return path


@pytest.fixture(scope="module")
def ws_edge(module_edge_factory, upstream, refusing_upstream, htpasswd):
    dead = free_port()
    return module_edge_factory.start(config=f"""
[[upstream]]
name = "echo"
servers = ["127.0.0.1:{upstream.port}"]

[[upstream]]
name = "refusing"
servers = ["127.0.0.1:{refusing_upstream.port}"]

[[upstream]]
name = "dead"
servers = ["127.0.0.1:{dead}"]
retries = 0

[[route]]
path = "/ws"
websocket = {{ echo = true, max_message_bytes = 100000, max_frame_bytes = 70000 }}

[[route]]
path = "/private"
websocket = {{ echo = true }}
basic_auth = {{ htpasswd = "{htpasswd}" }}

[[route]]
path = "/idle"
websocket = {{ echo = true, ping_seconds = 1, idle_seconds = 3 }}

[[route]]
path = "/chat"
websocket = {{ upstream = "echo", strip_prefix = true }}

[[route]]
path = "/refused"
websocket = {{ upstream = "refusing" }}

[[route]]
path = "/down"
websocket = {{ upstream = "dead" }}

[[route]]
path = "/deflate"
websocket = {{ echo = true, permessage_deflate = true, max_message_bytes = 100000 }}

[[route]]
path = "/hub"
websocket = {{ hub = true, replay = 3, max_queued_messages = 4, ping_seconds = 1 }}

[[route]]
path = "/closed-hub"
websocket = {{ hub = true, publish_from = ["10.0.0.0/8"] }}

[[route]]
path = "/"
respond = {{ body = "plain\\n" }}
""")


# ---------------------------------------------------------------------------------------------------------------
# Echo over HTTP/1.1 with a real client.

def test_echo_text_binary_and_fragmented_over_ws_and_wss(ws_edge):
    async def scenario(url, **kw):
        async with ws_connect(url, **kw) as ws:
            await ws.send("héllo wörld")
            assert await ws.recv() == "héllo wörld"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            await ws.send(["frag-1 ", "frag-2"])
            assert await ws.recv() == "frag-1 frag-2"
            await ws.send(b"z" * 65000)
            assert await ws.recv() == b"z" * 65000
            await ws.close()
            assert ws.close_code == 1000

    run(scenario(f"ws://127.0.0.1:{ws_edge.http_port}/ws"))
    run(scenario(f"wss://127.0.0.1:{ws_edge.https_port}/ws", ssl=client_tls_context()))


def test_handshake_answer_fields(ws_edge):
    ws = RawWS(ws_edge.http_port)
    status, fields, _ = ws.handshake()
    assert status == 101
    assert fields["upgrade"].lower() == "websocket"
    assert "upgrade" in fields["connection"].lower()
    assert fields["sec-websocket-accept"] == accept_value(ws.key)
    assert "sec-websocket-protocol" not in fields and "sec-websocket-extensions" not in fields
    ws.close()


# ---------------------------------------------------------------------------------------------------------------
# Bad handshakes get the RFC's answers.

def test_plain_request_to_websocket_route_gets_426(ws_edge):
    import httpx
    response = httpx.get(f"{ws_edge.http_url}/ws")
    assert response.status_code == 426
    assert response.headers["upgrade"].lower() == "websocket"


@pytest.mark.parametrize("change, status, header", [
    ({"Sec-WebSocket-Version": "8"}, 426, ("sec-websocket-version", "13")),
    ({"Sec-WebSocket-Version": None}, 426, ("sec-websocket-version", "13")),
    ({"Sec-WebSocket-Key": None}, 400, None),
    ({"Sec-WebSocket-Key": "c2hvcnQ="}, 400, None),
    ({"Connection": "keep-alive"}, 400, None),
])
def test_bad_handshakes(ws_edge, change, status, header):
    ws = RawWS(ws_edge.http_port, headers=change)
    got, fields, _ = ws.handshake()
    assert got == status
    if header:
        assert fields[header[0]] == header[1]
    ws.close()


def test_post_handshake_is_405_and_connection_closes(ws_edge):
    ws = RawWS(ws_edge.http_port)
    status, fields, _ = ws.handshake(method="POST")
    assert status == 405
    assert fields["allow"] == "GET"
    # NIO's parser reads nothing after a request asking to upgrade: the connection closes after the answer rather
    # than wait for requests it would never read.
    assert fields.get("connection") == "close"
    assert ws.at_eof()


def test_upgrade_request_to_other_route_closes_after_answer(ws_edge):
    ws = RawWS(ws_edge.http_port, path="/")
    status, fields, body = ws.handshake()
    assert status == 200 and body == b"plain\n"
    assert fields.get("connection") == "close"
    assert ws.at_eof()


def test_handshake_needs_basic_auth_on_a_private_route(ws_edge):
    ws = RawWS(ws_edge.http_port, path="/private")
    status, fields, _ = ws.handshake()
    assert status == 401 and "www-authenticate" in fields
    ws.close()

    async def scenario():
        async with ws_connect(f"ws://127.0.0.1:{ws_edge.http_port}/private",
                              additional_headers={"Authorization": basic("alice", "secret")}) as ws:
            await ws.send("authorised")
            assert await ws.recv() == "authorised"
    run(scenario())


# ---------------------------------------------------------------------------------------------------------------
# Protocol rules (cases of the Autobahn suite: 1.x, 2.x, 3.x, 5.x, 6.x, 7.x).

def open_raw(ws_edge, path="/ws") -> RawWS:
    ws = RawWS(ws_edge.http_port, path=path)
    assert ws.handshake()[0] == 101
    return ws


def test_message_over_limit_closes_1009(ws_edge):
    ws = open_raw(ws_edge)
    # Two frames under max_frame_bytes (70000) whose message exceeds max_message_bytes (100000).
    ws.send(0x2, b"a" * 60000, fin=False)
    ws.send(0x0, b"b" * 60000, fin=True)
    assert ws.recv_close()[0] == 1009
    assert ws.at_eof()


def test_frame_over_limit_closes_1009(ws_edge):
    ws = open_raw(ws_edge)
    ws.send(0x2, b"a" * 80000)
    assert ws.recv_close()[0] == 1009


def test_invalid_utf8_closes_1007_at_the_bad_fragment(ws_edge):
    ws = open_raw(ws_edge)
    ws.send(0x1, "κόσμε".encode(), fin=False)
    ws.send(0x0, b"\xed\xa0\x80", fin=False)  # a surrogate: never UTF-8, whatever follows
    assert ws.recv_close()[0] == 1007  # without waiting for the message's last fragment
    assert ws.at_eof()


def test_text_split_inside_a_code_point_is_fine(ws_edge):
    ws = open_raw(ws_edge)
    data = "κόσμε".encode()
    ws.send(0x1, data[:3], fin=False)
    ws.send(0x0, data[3:], fin=True)
    assert ws.recv() == (True, 0x1, data)


@pytest.mark.parametrize("frame", [
    mask_frame(0x1, b"x", masked=False),                 # a client frame must be masked
    mask_frame(0x1, b"x", rsv=4),                        # RSV1 without an extension
    mask_frame(0x3, b""),                                # reserved opcode
    mask_frame(0x0, b"x"),                               # continuation outside a message
    mask_frame(0x9, b"x" * 126),                         # control frame over 125 bytes
    mask_frame(0x9, b"x", fin=False),                    # fragmented control frame
    mask_frame(0x1, b"a", fin=False) + mask_frame(0x1, b"b"),  # a new message inside a fragmented one
    mask_frame(0x8, b"\x03"),                            # one-byte close body
    mask_frame(0x8, struct.pack("!H", 1005)),            # a code no endpoint may send
    mask_frame(0x8, struct.pack("!H", 999)),
])
def test_protocol_errors_close_1002(ws_edge, frame):
    ws = open_raw(ws_edge)
    ws.sock.sendall(frame)
    assert ws.recv_close()[0] == 1002
    assert ws.at_eof()


def test_close_reason_must_be_utf8(ws_edge):
    ws = open_raw(ws_edge)
    ws.send(0x8, struct.pack("!H", 1000) + b"\xff")
    assert ws.recv_close()[0] == 1007


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 3000, 4999])
def test_close_handshake_echoes_the_code_then_closes(ws_edge, code):
    ws = open_raw(ws_edge)
    ws.send(0x8, struct.pack("!H", code) + b"bye")
    assert ws.recv_close()[0] == code
    assert ws.at_eof()


def test_ping_is_answered_with_its_payload_between_fragments(ws_edge):
    ws = open_raw(ws_edge)
    ws.send(0x1, b"one ", fin=False)
    ws.send(0x9, b"ping-data")
    ws.send(0x0, b"two", fin=True)
    assert ws.recv() == (True, 0xA, b"ping-data")
    assert ws.recv() == (True, 0x1, b"one two")


def test_data_after_close_is_ignored(ws_edge):
    ws = open_raw(ws_edge)
    ws.sock.sendall(mask_frame(0x8, struct.pack("!H", 1000)) + mask_frame(0x1, b"late"))
    assert ws.recv() == (True, 0x8, struct.pack("!H", 1000))
    assert ws.at_eof()


def test_idle_connection_is_pinged_then_closed_1001(ws_edge):
    ws = open_raw(ws_edge, "/idle")
    ws.sock.settimeout(10)
    started = time.monotonic()
    fin, opcode, _ = ws.recv()
    assert opcode == 0x9  # ping after ping_seconds (1)
    assert ws.recv_close()[0] == 1001  # nothing answered: closed after idle_seconds (3)
    assert 2 <= time.monotonic() - started <= 8


def test_a_client_answering_pings_stays_open(ws_edge):
    async def scenario():
        async with ws_connect(f"ws://127.0.0.1:{ws_edge.http_port}/idle") as ws:  # websockets answers pings
            await asyncio.sleep(4.5)
            await ws.send("still here")
            assert await ws.recv() == "still here"
    run(scenario())


def test_a_client_that_does_not_read_is_held_by_backpressure(ws_edge):
    """Echoes to a client that never reads fill its socket; Edge then stops reading it (its own send blocks) rather
    than buffer every echo in memory."""
    ws = open_raw(ws_edge)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    ws.sock.settimeout(3)
    frame = mask_frame(0x2, b"q" * 60000)
    sent = 0
    with pytest.raises(socket.timeout):
        for _ in range(2000):  # 120 MB if nothing held it back
            ws.sock.sendall(frame)
            sent += len(frame)
    assert sent < 40_000_000
    # The connection still works once the client reads again.
    ws.sock.settimeout(10)
    assert ws.recv()[1] == 0x2


# ---------------------------------------------------------------------------------------------------------------
# HTTP/2: RFC 8441 extended CONNECT.

class H2WS:
    def __init__(self, port: int):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = client_tls_context(["h2"]).wrap_socket(sock, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.settings: dict = {}
        self.events: list = []
        while not self.settings:
            self.pump()

    def pump(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settings.update({k: v.new_value for k, v in event.changed_settings.items()})
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.events.append(event)
        self.sock.sendall(self.conn.data_to_send())

    def connect(self, path: str, protocol: str = "websocket", extra=()) -> int:
        stream = self.conn.get_next_available_stream_id()
        headers = [(":method", "CONNECT"), (":protocol", protocol), (":scheme", "https"), (":path", path),
                   (":authority", "localhost"), ("sec-websocket-version", "13"), *extra]
        self.conn.send_headers(stream, headers)
        self.sock.sendall(self.conn.data_to_send())
        return stream

    def wait(self, kind, stream: int, timeout: float = 10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if isinstance(event, kind) and getattr(event, "stream_id", None) == stream:
                    self.events.remove(event)
                    return event
            self.pump()
        raise AssertionError(f"no {kind.__name__} on stream {stream}")

    def send(self, stream: int, data: bytes, end: bool = False):
        self.conn.send_data(stream, data, end_stream=end)
        self.sock.sendall(self.conn.data_to_send())

    def read_bytes(self, stream: int, n: int) -> bytes:
        data = b""
        while len(data) < n:
            data += self.wait(h2.events.DataReceived, stream).data
        return data


def test_http2_settings_offer_extended_connect(ws_edge):
    client = H2WS(ws_edge.https_port)
    assert client.settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL) == 1


def _h2_echo(client: H2WS, path: str):
    stream = client.connect(path)
    response = client.wait(h2.events.ResponseReceived, stream)
    status = dict(response.headers)[b":status"]
    assert status == b"200"
    client.send(stream, mask_frame(0x1, "über h2".encode()))
    echoed = client.read_bytes(stream, 2 + len("über h2".encode()))
    assert echoed == bytes([0x81, len("über h2".encode())]) + "über h2".encode()
    client.send(stream, mask_frame(0x8, struct.pack("!H", 1000)))
    assert client.read_bytes(stream, 4) == bytes([0x88, 2]) + struct.pack("!H", 1000)
    client.wait(h2.events.StreamEnded, stream)  # Edge ends its side of the stream after the close
    return stream


def test_http2_extended_connect_echo(ws_edge):
    client = H2WS(ws_edge.https_port)
    _h2_echo(client, "/ws")
    # The connection serves on: a second WebSocket, then a plain request.
    _h2_echo(client, "/ws")
    stream = client.conn.get_next_available_stream_id()
    client.conn.send_headers(stream, [(":method", "GET"), (":scheme", "https"), (":path", "/"),
                                      (":authority", "localhost")], end_stream=True)
    client.sock.sendall(client.conn.data_to_send())
    assert dict(client.wait(h2.events.ResponseReceived, stream).headers)[b":status"] == b"200"


def test_http2_extended_connect_to_a_plain_route_is_refused(ws_edge):
    client = H2WS(ws_edge.https_port)
    stream = client.connect("/")
    assert dict(client.wait(h2.events.ResponseReceived, stream).headers)[b":status"] == b"501"


def test_http2_extended_connect_for_another_protocol_is_reset(ws_edge):
    client = H2WS(ws_edge.https_port)
    stream = client.connect("/ws", protocol="webtransport")
    reset = client.wait(h2.events.StreamReset, stream)
    assert reset.error_code == 1  # PROTOCOL_ERROR: a malformed request


def test_http2_extended_connect_without_version_gets_426(ws_edge):
    client = H2WS(ws_edge.https_port)
    stream = client.conn.get_next_available_stream_id()
    client.conn.send_headers(stream, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                                      (":path", "/ws"), (":authority", "localhost")])
    client.sock.sendall(client.conn.data_to_send())
    headers = dict(client.wait(h2.events.ResponseReceived, stream).headers)
    assert headers[b":status"] == b"426" and headers[b"sec-websocket-version"] == b"13"


def test_without_websocket_routes_http2_does_not_offer_extended_connect(edge_factory):
    server = edge_factory.start(config='[[route]]\npath = "/"\nrespond = { body = "x" }\n')
    client = H2WS(server.https_port)
    assert client.settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0) == 0
    stream = client.connect("/")
    assert client.wait(h2.events.StreamReset, stream).error_code == 1


# ---------------------------------------------------------------------------------------------------------------
# The relay to upstream servers.

def test_relay_to_upstream_echo_with_proxy_fields_and_subprotocol(ws_edge, upstream):
    before = len(upstream.requests)

    async def scenario():
        async with ws_connect(f"ws://127.0.0.1:{ws_edge.http_port}/chat/room-1?x=1",
                              subprotocols=["chat.v1"]) as ws:
            assert ws.subprotocol == "chat.v1"
            await ws.send("relayed")
            assert await ws.recv() == "relayed"
            await ws.send(b"b" * 300000)  # larger than any socket buffer on the way
            assert await ws.recv() == b"b" * 300000
    run(scenario())
    path, fields = upstream.requests[before]
    assert path == "/room-1?x=1"  # strip_prefix
    assert fields["x-forwarded-for"] == "127.0.0.1"
    assert fields["x-forwarded-proto"] == "http"
    assert "edge" in fields["via"]
    assert fields["sec-websocket-protocol"] == "chat.v1"


def test_relay_over_wss(ws_edge):
    async def scenario():
        async with ws_connect(f"wss://127.0.0.1:{ws_edge.https_port}/chat/x", ssl=client_tls_context(),
                              subprotocols=["chat.v2"]) as ws:
            await ws.send("tls relayed")
            assert await ws.recv() == "tls relayed"
    run(scenario())


def test_relay_from_http2_client_to_http1_upstream(ws_edge, upstream):
    before = len(upstream.requests)
    client = H2WS(ws_edge.https_port)
    stream = client.connect("/chat/h2", extra=[("sec-websocket-protocol", "chat.v1")])
    headers = dict(client.wait(h2.events.ResponseReceived, stream).headers)
    assert headers[b":status"] == b"200" and headers[b"sec-websocket-protocol"] == b"chat.v1"
    client.send(stream, mask_frame(0x1, b"from h2"))
    assert client.read_bytes(stream, 9) == bytes([0x81, 7]) + b"from h2"
    path, fields = upstream.requests[before]
    assert path == "/h2"
    # Edge made the key for the HTTP/1.1 upstream (an HTTP/2 client sends none).
    assert len(base64.b64decode(fields["sec-websocket-key"])) == 16


def test_relay_passes_on_the_upstream_refusal(ws_edge):
    ws = RawWS(ws_edge.http_port, path="/refused")
    status, _, _ = ws.handshake()
    assert status == 403


def test_relay_to_a_dead_upstream_is_502(ws_edge):
    ws = RawWS(ws_edge.http_port, path="/down")
    status, _, body = ws.handshake()
    assert status == 502
    assert b"upstream" in body


def relayed_to(upstream: "UpstreamEcho", edge_factory):
    """An Edge whose `/` relays WebSocket to `upstream`, and a client connection through it, past its handshake."""
    server = edge_factory.start(config=f"""
[[upstream]]
name = "u"
servers = ["127.0.0.1:{upstream.port}"]

[[route]]
path = "/"
websocket = {{ upstream = "u" }}
""")
    ws = RawWS(server.http_port, path="/")
    assert ws.handshake()[0] == 101
    return server, ws


def test_relay_closes_the_client_when_the_upstream_goes(edge_factory):
    upstream = UpstreamEcho()
    server, ws = relayed_to(upstream, edge_factory)
    ws.send(0x1, b"hi")
    assert ws.recv() == (True, 0x1, b"hi")
    upstream.stop()
    assert ws.at_eof(10)


# ---------------------------------------------------------------------------------------------------------------
# Shutdown and reload.

def test_shutdown_closes_websockets_with_1001(edge_factory):
    server = edge_factory.start(config='[[route]]\npath = "/ws"\nwebsocket = { echo = true }\n')
    ws = RawWS(server.http_port)
    assert ws.handshake()[0] == 101
    client = H2WS(server.https_port)
    stream = client.connect("/ws")
    client.wait(h2.events.ResponseReceived, stream)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert ws.recv_close()[0] == 1001
    ws.send(0x8, struct.pack("!H", 1001))
    assert ws.at_eof()
    assert client.read_bytes(stream, 4)[2:4] == struct.pack("!H", 1001)
    client.send(stream, mask_frame(0x8, struct.pack("!H", 1001)))
    # Python's h2 stops at the shutdown's GOAWAY and never acknowledges its PING, so the HTTP/2 connection would
    # stay to the shutdown deadline; the client closes it once its WebSocket is done.
    client.sock.close()
    assert server.wait_exit(20) == 0
    assert time.monotonic() - started < 15


def test_reload_closes_older_websockets_after_the_grace(edge_factory):
    config = ('[[route]]\npath = "/ws"\nwebsocket = {{ echo = true, reload_grace_seconds = 1 }}\n'
              '[[route]]\npath = "/"\nrespond = {{ body = "{}" }}\n')
    server = edge_factory.start(config=config.format("one"))
    ws = RawWS(server.http_port)
    assert ws.handshake()[0] == 101
    (server.cwd / "edge.toml").write_text(config.format("two"))
    server.signal(signal.SIGHUP)
    server.wait_for_msg("configuration reloaded")
    started = time.monotonic()
    code, reason = ws.recv_close()
    assert code == 1001 and "reload" in reason
    assert 0.5 <= time.monotonic() - started <= 6
    # A new connection is served under the new configuration.
    fresh = RawWS(server.http_port)
    assert fresh.handshake()[0] == 101
    fresh.send(0x1, b"new")
    assert fresh.recv() == (True, 0x1, b"new")


# ---------------------------------------------------------------------------------------------------------------
# Configuration errors name the key.

@pytest.mark.parametrize("route, message", [
    ('websocket = { }', "needs echo = true, hub = true or upstream"),
    ('websocket = { echo = true, upstream = "x" }', "not both"),
    ('websocket = { echo = true, replay = 3 }', "applies to a hub"),
    ('websocket = { hub = true, publish_from = ["10.0.0.0/33"] }', "publish_from[0]"),
    ('websocket = { upstream = "nowhere" }', 'names upstream "nowhere"'),
    ('websocket = { echo = true, max_frame_bytes = 2000000 }', "max_frame_bytes"),
    ('websocket = { echo = true, ping_secs = 3 }', 'ping_secs: unknown key'),
])
def test_config_errors(tmp_path, route, message):
    from conftest import run_edge
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[[route]]\npath = "/ws"\n{route}\n')
    result = run_edge(["check-config", str(cfg)])
    assert result.returncode == 1
    assert "route[0].websocket" in result.stdout + result.stderr
    assert message in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------------
# The publish/subscribe hub.

def publish(server, path: str, body: bytes, content_type: str | None = None):
    import httpx
    headers = {"content-type": content_type} if content_type else {}
    return httpx.post(f"{server.http_url}{path}", content=body, headers=headers)


class EventStream:
    """A raw Server-Sent Events subscriber over HTTP/1.1."""

    def __init__(self, port: int, path: str, last_event_id: int | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{extra}\r\n".encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(65536)
        self.head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        return self.buffer


def test_hub_fans_out_to_websocket_and_event_stream_subscribers(ws_edge):
    channel = "/hub/" + unique("ch")
    stream = EventStream(ws_edge.http_port, channel)
    assert b"200" in stream.head.split(b"\r\n")[0]
    assert b"text/event-stream" in stream.head
    stream.until(b": subscribed")

    async def scenario():
        subscribers = [await ws_connect(f"ws://127.0.0.1:{ws_edge.http_port}{channel}") for _ in range(20)]
        other = await ws_connect(f"ws://127.0.0.1:{ws_edge.http_port}/hub/elsewhere")
        response = await asyncio.to_thread(publish, ws_edge, channel, "line one\nline two".encode())
        assert response.status_code == 200
        assert response.json()["subscribers"] == 21 and response.json()["id"] == 1
        for ws in subscribers:
            assert await ws.recv() == "line one\nline two"  # UTF-8 without a binary type: a text frame
        response = await asyncio.to_thread(publish, ws_edge, channel, b"\x00\xff", "application/octet-stream")
        for ws in subscribers:
            assert await ws.recv() == b"\x00\xff"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(other.recv(), 0.5)  # another channel hears nothing
        for ws in subscribers + [other]:
            await ws.close()
    run(scenario())
    assert b"id: 1\ndata: line one\ndata: line two\n\n" in stream.until(b"data: line two\n\n")


def test_hub_replays_what_a_reconnecting_subscriber_missed(ws_edge):
    channel = "/hub/" + unique("replay")
    for text in ["m1", "m2", "m3", "m4"]:
        assert publish(ws_edge, channel, text.encode()).status_code == 200

    async def scenario():
        async with ws_connect(f"ws://127.0.0.1:{ws_edge.http_port}{channel}?last_event_id=2") as ws:
            assert [await ws.recv(), await ws.recv()] == ["m3", "m4"]
        async with ws_connect(f"ws://127.0.0.1:{ws_edge.http_port}{channel}") as ws:
            with pytest.raises(asyncio.TimeoutError):  # a new subscriber starts from now
                await asyncio.wait_for(ws.recv(), 0.5)
    run(scenario())
    stream = EventStream(ws_edge.http_port, channel, last_event_id=1)
    data = stream.until(b"data: m4\n")
    assert b"data: m1" not in data and b"id: 2\ndata: m2\n" in data  # only 3 are kept: m2, m3, m4


def test_hub_closes_a_subscriber_that_does_not_read_1008(ws_edge):
    channel = "/hub/" + unique("slow")
    ws = RawWS(ws_edge.http_port, path=channel)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    assert ws.handshake()[0] == 101
    time.sleep(0.2)
    big = b"x" * 200_000
    for _ in range(40):  # far beyond the socket buffers plus max_queued_messages (4)
        publish(ws_edge, channel, big, "application/octet-stream")
    # Dropped from the channel: the next message goes to nobody.
    assert publish(ws_edge, channel, b"after", "application/octet-stream").json()["subscribers"] == 0
    # The client gets what was already in flight, then 1008 (or the end of the connection, when the close frame
    # itself could not get past a full socket before the close timeout).
    ws.sock.settimeout(30)
    codes = []
    try:
        while True:
            _, opcode, payload = ws.recv()
            if opcode == 0x8:
                codes.append(struct.unpack("!H", payload[:2])[0])
                break
    except (EOFError, ConnectionResetError):
        pass
    assert codes in ([1008], [])
    assert ws.at_eof(10)


def test_hub_publishing_is_limited_to_publish_from(ws_edge):
    response = publish(ws_edge, "/closed-hub/x", b"no")
    assert response.status_code == 403


def test_hub_refuses_text_that_is_not_utf8(ws_edge):
    assert publish(ws_edge, "/hub/x", b"\xff\xfe", "text/plain").status_code == 400


def test_hub_message_over_the_limit_is_413(ws_edge):
    assert publish(ws_edge, "/hub/x", b"x" * (1 << 20 + 1)).status_code == 413


# ---------------------------------------------------------------------------------------------------------------
# permessage-deflate (Autobahn 12.x and 13.x run the whole matrix: bench/autobahn/campaign --compression).

def test_permessage_deflate_is_negotiated_and_messages_round_trip(ws_edge):
    async def scenario():
        async with ws_connect(f"ws://127.0.0.1:{ws_edge.http_port}/deflate") as ws:  # websockets offers it
            assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
            for message in ["compress me " * 500, "compress me " * 500, b"\x00" * 50000, "", "é" * 10]:
                await ws.send(message)
                assert await ws.recv() == message
        async with ws_connect(f"ws://127.0.0.1:{ws_edge.http_port}/ws") as ws:  # not offered: off by default
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
    run(scenario())


def test_compressed_frames_are_compressed_on_the_wire(ws_edge):
    ws = RawWS(ws_edge.http_port, path="/deflate", headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    status, fields, _ = ws.handshake()
    assert status == 101 and fields["sec-websocket-extensions"] == "permessage-deflate"
    import zlib
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(b"a" * 20000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    ws.send(0x2, data[:-4], rsv=4)  # RSV1: compressed
    fin, opcode, payload = ws.recv()
    assert opcode == 0x2 and len(payload) < 1000  # sent back compressed
    assert zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff") == b"a" * 20000


def test_a_message_that_inflates_beyond_the_limit_closes_1009(ws_edge):
    ws = RawWS(ws_edge.http_port, path="/deflate", headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    assert ws.handshake()[0] == 101
    import zlib
    compressor = zlib.compressobj(wbits=-15)
    bomb = compressor.compress(b"\x00" * 10_000_000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    ws.send(0x2, bomb[:-4], rsv=4)
    assert ws.recv_close()[0] == 1009


def test_reload_keeps_an_unchanged_hub_and_its_subscribers(edge_factory):
    config = ('[[route]]\npath = "/hub"\nwebsocket = {{ hub = true, reload_grace_seconds = 1 }}\n'
              '[[route]]\npath = "/"\nrespond = {{ body = "{}" }}\n')
    server = edge_factory.start(config=config.format("one"))
    ws = RawWS(server.http_port, path="/hub/news")
    assert ws.handshake()[0] == 101
    time.sleep(0.2)
    (server.cwd / "edge.toml").write_text(config.format("two"))
    server.signal(signal.SIGHUP)
    server.wait_for_msg("configuration reloaded")
    time.sleep(2)  # past the grace: a retired connection would have been closed by now
    answer = publish(server, "/hub/news", b"still subscribed")
    assert answer.json()["subscribers"] == 1
    assert ws.recv() == (True, 0x1, b"still subscribed")


def test_relay_to_a_wss_upstream_verified_by_its_ca(edge_factory, tmp_path):
    import subprocess
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    upstream = UpstreamEcho(tls=context)
    try:
        server = edge_factory.start(config=f"""
[[upstream]]
name = "secure"
servers = ["https://127.0.0.1:{upstream.port}"]
tls = {{ ca_file = "{cert}", server_name = "localhost" }}

[[upstream]]
name = "unverified"
servers = ["https://127.0.0.1:{upstream.port}"]

[[route]]
path = "/secure"
websocket = {{ upstream = "secure" }}

[[route]]
path = "/unverified"
websocket = {{ upstream = "unverified" }}
""")
        async def scenario():
            async with ws_connect(f"ws://127.0.0.1:{server.http_port}/secure") as ws:
                await ws.send("over tls")
                assert await ws.recv() == "over tls"
        run(scenario())
        # The system's CAs do not know the test's certificate: the handshake fails, no relay.
        ws = RawWS(server.http_port, path="/unverified")
        assert ws.handshake()[0] == 502
    finally:
        upstream.stop()


def test_hub_event_stream_over_http2_with_curl(ws_edge):
    import subprocess
    channel = "/hub/" + unique("curl")
    subscriber = subprocess.Popen(
        ["curl", "-sN", "-k", "--http2", "--max-time", "6", "-H", "Accept: text/event-stream",
         f"https://127.0.0.1:{ws_edge.https_port}{channel}"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert subscriber.stdout.readline() == ": subscribed\n"
        published = subprocess.run(
            ["curl", "-s", "-d", "from curl", f"http://127.0.0.1:{ws_edge.http_port}{channel}"],
            capture_output=True, text=True, timeout=10,
        )
        assert '"subscribers":1' in published.stdout
        lines = [subscriber.stdout.readline() for _ in range(4)]
        assert lines == ["\n", "id: 1\n", "data: from curl\n", "\n"]
    finally:
        subscriber.kill()
        subscriber.wait()


def test_shutdown_closes_relayed_websockets_with_1001_between_frames(edge_factory):
    upstream = UpstreamEcho()
    try:
        server, ws = relayed_to(upstream, edge_factory)
        ws.send(0x1, b"before")
        assert ws.recv() == (True, 0x1, b"before")
        # Half a frame on its way when the shutdown comes: the close frame waits for its end.
        frame = mask_frame(0x1, b"x" * 1000)
        ws.sock.sendall(frame[:500])
        server.signal(signal.SIGTERM)
        time.sleep(0.3)
        ws.sock.sendall(frame[500:])
        code, _ = ws.recv_close()  # the echo of the whole frame may come first; then 1001
        assert code == 1001
        assert ws.at_eof(10)
        assert server.wait_exit(20) == 0
    finally:
        upstream.stop()
