"""HTTP/2 to upstream servers: nginx over h2c (prior knowledge) and h2 (TLS with ALPN), and gRPC end to end —
a grpcio client talking to Edge over TLS, Edge talking to a grpcio server over h2c: messages both ways,
streaming, trailers and error statuses arrive as the server sent them."""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
import threading
import time
from concurrent import futures

import httpx
import pytest

from conftest import run_edge
from upstreams import H2cUpstream, Nginx, free_port

grpc = pytest.importorskip("grpc")


@pytest.fixture(scope="module")
def nginx_h2(tmp_path_factory):
    work = tmp_path_factory.mktemp("nginx-h2")
    key, cert = work / "key.pem", work / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    root = work / "root"
    root.mkdir()
    (root / "20m.bin").write_bytes(os.urandom(20 << 20))
    server = Nginx(root, work / "run", tls=(cert, key))
    yield server, root, cert
    server.stop()


def _echo(request, context):
    context.set_trailing_metadata((("x-trailer", "from-the-server"),))
    return request


def _count(request, context):
    for index in range(int(request.decode())):
        yield f"message {index}".encode()


def _fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def _digest(request_iterator, context):
    digest, total = hashlib.sha256(), 0
    for chunk in request_iterator:
        digest.update(chunk)
        total += len(chunk)
    return f"{total} {digest.hexdigest()}".encode()


@pytest.fixture(scope="module")
def grpc_server():
    handlers = grpc.method_handlers_generic_handler("edge.Test", {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Count": grpc.unary_stream_rpc_method_handler(_count),
        "Fail": grpc.unary_unary_rpc_method_handler(_fail),
        "Digest": grpc.stream_unary_rpc_method_handler(_digest),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", 8 << 20)])
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture(scope="module")
def edge_h2(module_edge_factory, nginx_h2, grpc_server):
    nginx, _, cert = nginx_h2
    return module_edge_factory.start(config=f"""
threads = 1

[[upstream]]
name = "cleartext"
servers = ["127.0.0.1:{nginx.h2c_port}"]
protocol = "h2c"

[[upstream]]
name = "tls"
servers = ["https://127.0.0.1:{nginx.h2_port}"]
protocol = "h2"
tls = {{ ca_file = "{cert}", server_name = "localhost" }}

[[upstream]]
name = "no-h2"
servers = ["https://127.0.0.1:{nginx.h1_tls_port}"]
protocol = "h2"
tls = {{ ca_file = "{cert}", server_name = "localhost" }}
retries = 0

[[upstream]]
name = "grpc"
servers = ["{grpc_server}"]
protocol = "h2c"

[[route]]
path = "/c"
proxy = {{ upstream = "cleartext", strip_prefix = true }}

[[route]]
path = "/t"
proxy = {{ upstream = "tls", strip_prefix = true }}

[[route]]
path = "/no-h2"
proxy = {{ upstream = "no-h2", strip_prefix = true }}

[[route]]
path = "/edge.Test"
proxy = {{ upstream = "grpc", max_body_bytes = 134217728 }}
""")


def clients(server):
    return [
        ("http1", httpx.Client(timeout=30), server.http.url),
        ("tls", httpx.Client(verify=False, timeout=30), server.https.url),
        ("http2", httpx.Client(http2=True, verify=False, timeout=30), server.https.url),
    ]


@pytest.mark.parametrize("route", ["/c", "/t"])
def test_every_client_protocol_reaches_the_upstream_over_http2(edge_h2, route):
    for name, http, base in clients(edge_h2):
        with http:
            response = http.get(f"{base}{route}/who")
            assert response.status_code == 200, (name, response.status_code, response.text)
            protocol, _, uri = response.text.split()
            assert (protocol, uri) == ("HTTP/2.0", "/who"), name


def test_concurrent_requests_share_one_connection(edge_h2):
    """Twenty requests at once from twenty client connections: one HTTP/2 connection upstream carries them all
    (nginx's $connection is the same in every answer)."""
    answers = []

    def fetch():
        answers.append(httpx.get(f"{edge_h2.http.url}/c/who", timeout=30).text.split())

    threads = [threading.Thread(target=fetch) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 20 and all(protocol == "HTTP/2.0" for protocol, _, _ in answers)
    assert len({connection for _, connection, _ in answers}) == 1, answers


@pytest.mark.parametrize("route", ["/c", "/t"])
@pytest.mark.parametrize("flags", [["--http1.1"], ["--http2"]], ids=["h1", "h2"])
def test_a_large_file_arrives_whole(edge_h2, nginx_h2, route, flags):
    _, root, _ = nginx_h2
    result = subprocess.run(["curl", "-sk", *flags, f"{edge_h2.https.url}{route}/20m.bin"], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256((root / "20m.bin").read_bytes()).digest()


def test_a_tls_server_that_does_not_agree_to_h2_is_a_502(edge_h2):
    response = httpx.get(f"{edge_h2.http.url}/no-h2/who", timeout=30)
    assert response.status_code == 502
    assert httpx.get(f"{edge_h2.http.url}/c/who", timeout=30).status_code == 200


@pytest.fixture(scope="module")
def grpc_channel(edge_h2):
    """A grpcio client channel to Edge's TLS listener, trusting the certificate Edge presents."""
    certificate = ssl.get_server_certificate((edge_h2.https.host, edge_h2.https.port)).encode()
    channel = grpc.secure_channel(
        f"{edge_h2.https.host}:{edge_h2.https.port}", grpc.ssl_channel_credentials(root_certificates=certificate),
        options=[("grpc.ssl_target_name_override", "localhost"), ("grpc.max_receive_message_length", 8 << 20)],
    )
    yield channel
    channel.close()


def test_grpc_unary_call_with_trailers(grpc_channel):
    echo = grpc_channel.unary_unary("/edge.Test/Echo")
    response, call = echo.with_call(b"hello through edge", timeout=10)
    assert response == b"hello through edge"
    assert call.code() == grpc.StatusCode.OK
    assert ("x-trailer", "from-the-server") in tuple(call.trailing_metadata())


def test_grpc_server_streaming(grpc_channel):
    count = grpc_channel.unary_stream("/edge.Test/Count")
    assert list(count(b"50", timeout=10)) == [f"message {i}".encode() for i in range(50)]


def test_grpc_error_status_reaches_the_client(grpc_channel):
    fail = grpc_channel.unary_unary("/edge.Test/Fail")
    with pytest.raises(grpc.RpcError) as raised:
        fail(b"x", timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "no such thing"


def test_grpc_client_streaming_upload(grpc_channel):
    """64 MiB in 1 MiB messages up through Edge; the server answers with the count and SHA-256 it read."""
    chunks = [os.urandom(1 << 20) for _ in range(8)] * 8
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    upload = grpc_channel.stream_unary("/edge.Test/Digest")
    assert upload(iter(chunks), timeout=60) == f"{64 << 20} {digest}".encode()


@pytest.mark.parametrize("settings, key, message", [
    ('servers = ["127.0.0.1:9"]\nprotocol = "h2"', "servers", "every server must be https://"),
    ('servers = ["https://127.0.0.1:9"]\nprotocol = "h2c"', "servers", "no server may be https://"),
    ('servers = ["127.0.0.1:9"]\nprotocol = "http2"', "protocol", 'expected "http1.1", "h2"'),
])
def test_check_config_names_protocol_mistakes(tmp_path, settings, key, message):
    config = tmp_path / "edge.toml"
    config.write_text(f'[[upstream]]\nname = "u"\n{settings}\n\n[[route]]\npath = "/"\nproxy = "u"\n')
    result = run_edge(["check-config", str(config)])
    assert result.returncode != 0
    assert f"upstream[0].{key}" in result.stderr and message in result.stderr, result.stderr


def test_active_health_checks_speak_http2_to_an_http2_group(edge_factory):
    """`health_check` on an h2c group: the checks go over HTTP/2 with prior knowledge, so a server that speaks only
    HTTP/2 passes them (an HTTP/1.1 check would fail it). A server that is down is taken out after `fall` failed
    checks, and brought back after `rise` passed ones once it listens, its checks reaching it as HTTP/2 requests."""
    late_port = free_port()
    steady = H2cUpstream("steady")
    late = None
    try:
        server = edge_factory.start(config=f"""
[[upstream]]
name = "h"
protocol = "h2c"
servers = ["127.0.0.1:{late_port}", "{steady.address}"]
health_check = {{ path = "/health", interval_seconds = 1, timeout_ms = 500, rise = 2, fall = 2 }}

[[route]]
path = "/"
proxy = "h"
""")
        assert server.wait_for_msg("proxy: health check failed, server out", timeout=15), server.log
        with httpx.Client() as http:
            assert {http.get(f"{server.http.url}/x").text for _ in range(10)} == {"steady\n"}
        late = H2cUpstream("late", port=late_port)
        assert server.wait_for_msg("proxy: health check passed, server back", timeout=15), server.log
        assert late.paths.get("/health", 0) >= 2
        with httpx.Client() as http:
            assert "late\n" in {http.get(f"{server.http.url}/x").text for _ in range(10)}
        out = [event["server"] for event in server.log_events("proxy: health check failed, server out")]
        assert out == [f"127.0.0.1:{late_port}"], server.log
        assert steady.paths.get("/health", 0) >= 2
    finally:
        steady.stop()
        if late:
            late.stop()


def test_an_http2_upstream_that_sends_goaway_and_lingers_gets_new_requests_on_a_new_connection(edge_factory):
    """A server that answers, sends GOAWAY (a graceful shutdown: no new streams) and keeps the connection open
    without reading: the next request goes on a new connection and is answered at once. Before, it was sent on the
    lingering connection and waited for first_byte_timeout_seconds (504)."""
    server_h2 = H2cUpstream("drain", goaway_after=1)
    try:
        server = edge_factory.start(config=f"""
[[upstream]]
name = "d"
protocol = "h2c"
servers = ["{server_h2.address}"]
first_byte_timeout_seconds = 3

[[route]]
path = "/"
proxy = "d"
""")
        with httpx.Client(timeout=10) as http:
            for _ in range(3):
                started = time.monotonic()
                response = http.get(f"{server.http.url}/x")
                assert response.status_code == 200 and response.text == "drain\n"
                assert time.monotonic() - started < 2
                time.sleep(0.2)
    finally:
        server_h2.stop()
