"""PROXY protocol (v1 and v2) on listeners: behind an L4 balancer (HAProxy with send-proxy-v2, Debian's haproxy)
Edge sees the client's address, for X-Forwarded-For, rate limits and per-address limits; only the configured
balancers may send the header."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import time

import pytest

from conftest import run_edge
from upstreams import Upstream, free_port


@pytest.fixture(scope="module")
def echo():
    server = Upstream("echo")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def behind_balancer(module_edge_factory, echo):
    return module_edge_factory.start(config=f"""
[[listener]]
address = "127.0.0.1:0"
proxy_protocol = true
proxy_protocol_from = ["127.0.0.1/32", "::1"]

[[upstream]]
name = "echo"
servers = ["{echo.address}"]

[[route]]
path = "/"
proxy = "echo"

[[route]]
path = "/limited"
respond = {{ status = 200, body = "ok\\n" }}
rate_limit = {{ per_second = 0.001, burst = 2 }}
""", http=None, https=None)


def exchange(port: int, preface: bytes, path: str = "/echo", source: str = "127.0.0.1") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(preface + f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data


def forwarded_for(data: bytes) -> str:
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    return dict(json.loads(body)["headers"])["x-forwarded-for"]


def v2(source: str, port: int = 40000, family: str = "v4") -> bytes:
    if family == "v4":
        addresses = socket.inet_pton(socket.AF_INET, source) + socket.inet_pton(socket.AF_INET, "192.0.2.1") + struct.pack("!HH", port, 80)
        return bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses
    addresses = socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + struct.pack("!HH", port, 80)
    return bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x21]) + struct.pack("!H", len(addresses)) + addresses


def test_v1_header_names_the_client(behind_balancer):
    data = exchange(behind_balancer.http.port, b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\n")
    assert forwarded_for(data) == "203.0.113.7"


def test_v2_header_names_the_client_ipv4_and_ipv6(behind_balancer):
    assert forwarded_for(exchange(behind_balancer.http.port, v2("198.51.100.9"))) == "198.51.100.9"
    assert forwarded_for(exchange(behind_balancer.http.port, v2("2001:db8::42", family="v6"))) == "2001:db8:0:0:0:0:0:42"


def test_local_and_unknown_keep_the_peer_address(behind_balancer):
    local = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00])
    assert forwarded_for(exchange(behind_balancer.http.port, local)) == "127.0.0.1"
    assert forwarded_for(exchange(behind_balancer.http.port, b"PROXY UNKNOWN\r\n")) == "127.0.0.1"


@pytest.mark.parametrize("preface", [b"", b"PROXY TCP4 1.2.3.4\r\n", b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
                                     b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n", b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x00"])
def test_a_missing_or_malformed_header_closes_the_connection(behind_balancer, preface):
    assert exchange(behind_balancer.http.port, preface) == b""


def test_only_configured_balancers_may_send_the_header(behind_balancer):
    """From 127.0.0.2, not in proxy_protocol_from: closed, whatever it sends."""
    assert exchange(behind_balancer.http.port, b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\n", source="127.0.0.2") == b""


def test_rate_limits_apply_to_the_client_named_by_the_header(behind_balancer):
    def status(client: str) -> bytes:
        data = exchange(behind_balancer.http.port, f"PROXY TCP4 {client} 192.0.2.1 51000 80\r\n".encode(), path="/limited")
        return data.split(b" ", 2)[1]

    assert [status("203.0.113.50") for _ in range(3)] == [b"200", b"200", b"429"]
    assert status("203.0.113.51") == b"200", "another client behind the same balancer was limited"


def test_behind_haproxy_with_send_proxy_v2(edge_factory, echo, tmp_path):
    """The deployment the README describes: HAProxy (mode tcp, send-proxy-v2) in front of Edge; curl connects to
    HAProxy from 127.0.0.9, and the upstream sees that address, not HAProxy's."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    edge = edge_factory.start(config=f"""
[[listener]]
address = "127.0.0.1:0"
proxy_protocol = true
proxy_protocol_from = ["127.0.0.1"]

[[upstream]]
name = "echo"
servers = ["{echo.address}"]

[[route]]
path = "/"
proxy = "echo"
""", http=None, https=None)
    front = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend in
    bind 127.0.0.1:{front}
    default_backend edge
backend edge
    server e 127.0.0.1:{edge.http.port} send-proxy-v2
""")
    process = subprocess.Popen([haproxy, "-f", str(config), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        result = subprocess.run(["curl", "-s", "--interface", "127.0.0.9", f"http://127.0.0.1:{front}/echo"],
                                capture_output=True, timeout=30)
        echo_seen = json.loads(result.stdout)
        assert dict(echo_seen["headers"])["x-forwarded-for"] == "127.0.0.9", echo_seen
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_check_config_requires_the_balancer_addresses(tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text('[[listener]]\naddress = "127.0.0.1:0"\nproxy_protocol = true\n')
    result = run_edge(["check-config", str(config)])
    assert result.returncode != 0 and "listener[0].proxy_protocol_from: is required with proxy_protocol = true" in result.stderr, result.stderr
