"""edge-bench, the load generator, against the real Edge server: its counts must match the server's,
its JSON must carry what scripts read, and bad input must give a clear message and a non-zero exit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, curl, unique

BENCH_BIN = Path(os.environ.get("EDGE_BENCH_BIN") or (REPO / ".build" / "debug" / "edge-bench"))


def bench(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    assert BENCH_BIN.exists(), f"no edge-bench binary at {BENCH_BIN} (build it, or set EDGE_BENCH_BIN)"
    return subprocess.run([str(BENCH_BIN), *args], capture_output=True, text=True, timeout=timeout)


def bench_json(*args: str, timeout: float = 120.0) -> dict:
    result = bench(*args, "--json", timeout=timeout)
    assert result.returncode == 0, f"edge-bench failed ({result.returncode}):\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def server(module_edge_factory):
    return module_edge_factory.start(config="""
threads = 2

[[route]]
path = "/"
demo = { delay_ms = 0 }

[[route]]
path = "/uncached"
demo = { delay_ms = 1 }
cache_ttl_seconds = 0

[[route]]
path = "/unavailable"
respond = { status = 503, body = "down\\n" }

[[route]]
path = "/slow"
demo = { delay_ms = 1500 }
cache_ttl_seconds = 0
""")


def demo_fetches(server) -> int:
    """The demo backend's process-wide fetch counter, read with curl (this read is one fetch itself)."""
    r = curl("-sS", "-o", "/dev/null", "-D", "-", f"{server.http_url}/uncached/{unique('probe')}")
    for line in r.stdout.splitlines():
        if line.lower().startswith("x-demo-fetch:"):
            return int(line.split(":", 1)[1])
    raise AssertionError(f"no X-Demo-Fetch in:\n{r.stdout}")


@pytest.mark.parametrize("flavour", ["http1", "https-http1", "https-h2", "http1-pipelined"])
def test_request_count_matches_the_servers(server, flavour):
    """-n 400: edge-bench reports 400 responses and the server's backend saw exactly 400 requests."""
    path = f"/uncached/{unique('count')}"
    args = {
        "http1": [f"{server.http_url}{path}"],
        "https-http1": [f"{server.https_url}{path}", "--insecure", "--http1"],
        "https-h2": [f"{server.https_url}{path}", "--insecure", "--http2", "--streams", "8"],
        "http1-pipelined": [f"{server.http_url}{path}", "--pipeline", "4"],
    }[flavour]
    before = demo_fetches(server)
    report = bench_json(*args, "-n", "400", "-c", "5", "-t", "2")
    after = demo_fetches(server)
    # +1 for the preflight request edge-bench makes before the run, +1 for our own probe.
    assert report["requests"] == 400
    assert report["errors_total"] == 0, report["error_messages"]
    assert report["status_codes"] == {"200": 400}
    assert after - before == 400 + 1 + 1
    assert report["protocol"] == ("h2" if flavour == "https-h2" else "http/1.1")


def test_json_has_the_documented_fields(server):
    report = bench_json(f"{server.http_url}/", "-d", "1s", "-c", "4", "-t", "1")
    for key in ("requests", "errors", "duration_s", "requests_per_second", "bytes_per_second", "latency_ms", "unfinished"):
        assert key in report
    assert set(report["errors"]) == {"connect", "tls", "timeout", "reset", "protocol", "status"}
    lat = report["latency_ms"]
    assert set(("p50", "p90", "p99", "p999", "p9999", "max")) <= set(lat)
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["p9999"] <= lat["max"]
    assert 0.9 < report["duration_s"] < 1.5
    assert report["requests"] > 100
    assert abs(report["requests_per_second"] - report["requests"] / report["duration_s"]) < 1
    assert report["bytes"] > report["requests"] * 100  # every response has a head and a body
    assert report["mode"] == "closed" and report["coordinated_omission_corrected"] is False


def test_human_table_and_no_progress_line_when_not_a_terminal(server):
    result = bench(f"{server.http_url}/", "-d", "1s", "-c", "2", "-t", "1")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the progress line is for terminals only
    for label in ("requests", "latency", "p99.9", "errors", "status"):
        assert label in result.stdout


def test_non_2xx_responses_are_counted_as_status_errors(server):
    report = bench_json(f"{server.http_url}/unavailable", "-n", "200", "-c", "2", "-t", "1")
    assert report["requests"] == 200
    assert report["status_codes"] == {"503": 200}
    assert report["errors"]["status"] == 200
    assert report["errors_total"] == 200


def test_slow_responses_count_as_timeouts(server):
    report = bench_json(f"{server.http_url}/slow/{unique('t')}", "-d", "2s", "-c", "2", "-t", "1", "--timeout", "400ms",
                        timeout=60)
    assert report["requests"] == 0
    assert report["errors"]["timeout"] >= 4  # each connection times out about every 0.4 s
    assert "timeout" in report["error_messages"]


def test_open_loop_keeps_the_requested_rate(server):
    report = bench_json(f"{server.http_url}/", "-R", "300", "-d", "2s", "-c", "6", "-t", "1")
    assert report["mode"] == "open" and report["coordinated_omission_corrected"] is True
    assert 540 <= report["requests"] <= 620, report["requests"]
    assert report["errors_total"] == 0


def test_open_loop_latency_includes_the_wait_a_slow_server_causes(server):
    """Coordinated omission: one connection, a 1.5 s backend, 4 requests/s wanted. A closed-loop tool would
    report ~1.5 s; the corrected latency also counts how long each request waited to be sent."""
    path = f"{server.http_url}/slow/{unique('co')}"
    closed = bench_json(path, "-d", "4s", "-c", "1", "-t", "1", timeout=60)
    # Due at 0, 0.25, 0.5 s…; sent at 0, 1.5, 3.0 s…; so the third answer (at 4.5 s) is 4 s late.
    opened = bench_json(path, "-R", "4", "-d", "6s", "-c", "1", "-t", "1", timeout=60)
    assert 1400 <= closed["latency_ms"]["p50"] <= 1700
    assert closed["latency_ms"]["max"] < 1800
    assert opened["latency_ms"]["max"] > 2 * closed["latency_ms"]["max"]
    assert opened["latency_ms"]["max"] > 3500


def test_idle_mode_holds_connections_open(server):
    report = bench_json(f"{server.http_url}/", "--idle", "-c", "300", "-d", "1s", "-t", "2")
    assert report["mode"] == "idle"
    assert report["requests"] == 300  # one request per connection, then quiet
    assert report["connections_open_at_end"] == 300
    assert report["errors_total"] == 0


def test_many_connections_from_one_process(server):
    report = bench_json(f"{server.http_url}/", "-c", "2000", "-d", "4s", "-t", "2", timeout=120)
    assert report["connections_opened"] >= 2000
    assert report["errors"]["connect"] == 0
    assert report["requests"] >= 2000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["http://127.0.0.1:{port}/"], "cannot connect to 127.0.0.1:{port}"),
    (["ftp://127.0.0.1/"], "unsupported URL scheme"),
    (["not a url"], "not a URL"),
    (["http://host.invalid/"], "cannot resolve host"),
    (["http://127.0.0.1:1/", "--duration", "soon"], "--duration"),
    (["http://127.0.0.1:1/", "-c", "0"], "--connections"),
    (["http://127.0.0.1:1/", "--header", "no colon"], "--header"),
    (["http://127.0.0.1:1/", "-c", "1000000"], "file descriptors"),
])
def test_bad_input_gives_a_clear_message(args, message):
    port = free_port()
    result = bench(*[a.format(port=port) for a in args], "-n", "5")
    assert result.returncode != 0
    assert message.format(port=port) in result.stderr
    assert "Fatal error" not in result.stderr and "Backtrace" not in result.stderr


def test_tls_failures_are_clear(server):
    # Self-signed certificate without --insecure.
    result = bench(f"{server.https_url}/", "-n", "5")
    assert result.returncode == 1
    assert "TLS handshake" in result.stderr and "--insecure" in result.stderr
    # TLS to a plain HTTP port.
    result = bench(f"https://{server.host}:{server.http_port}/", "-n", "5", "--insecure")
    assert result.returncode == 1
    assert "TLS handshake" in result.stderr
    # HTTP/2 forced against a plain HTTP/1.1 port (no h2c).
    result = bench(f"{server.http_url}/", "-n", "5", "--http2")
    assert result.returncode == 1
    assert "first request" in result.stderr


def test_tls_versions(server):
    for version in ("1.2", "1.3"):
        report = bench_json(f"{server.https_url}/", "--insecure", "--tls-version", version, "-n", "50", "-c", "2", "-t", "1")
        assert report["requests"] == 50 and report["errors_total"] == 0
