"""Operations: the admin listener (Prometheus metrics, status JSON, the running configuration, a reload trigger, the
status page), and the access log. Metrics are checked as a user checks them: parsed by `prometheus_client`'s own
parser and scraped by a real Prometheus server whose HTTP API is queried; the access log is read as lines of JSON
(or nginx's combined format) from its file."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import bcrypt
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import RawConn, unique
from upstreams import Upstream, free_port


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape, keyed by (name, sorted labels); parsed by prometheus_client."""
    found: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def total(scrape: dict, name: str, **labels) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in scrape.items() if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


def wait_until(condition, timeout: float = 10, step: float = 0.1):
    """Calls `condition` until it returns something true or `timeout` passes; returns its last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(step)


def admin_url(server) -> str:
    return server.listener("admin").url.replace("admin://", "http://")


def assert_families_grouped(text: str) -> None:
    """The text format's rule that prometheus_client's parser lets pass: all lines of a metric family form one
    group (its HELP, TYPE and samples, a histogram's _bucket, _sum and _count included)."""
    groups: list[str] = []
    for line in filter(None, text.splitlines()):
        if line.startswith("#"):
            family = line.split()[2]
        else:
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            current = groups[-1] if groups else ""
            family = current if name in (current, current + "_bucket", current + "_sum", current + "_count") else name
        if not groups or groups[-1] != family:
            assert family not in groups, f"{family} appears in two groups"
            groups.append(family)


def scrape(server) -> dict:
    response = httpx.get(admin_url(server) + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert_families_grouped(response.text)
    return samples(response.text)


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "htpasswd"
    alice = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"alice:{alice}\n")
    return path


@pytest.fixture(scope="module")
def upstream():
    server = Upstream("metrics")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def observed(module_edge_factory, htpasswd, upstream, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "access.log"
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    server = module_edge_factory.start(config=f"""
[admin]
address = "127.0.0.1:0"

[access_log]
path = "{log}"

[[upstream]]
name = "app"
servers = ["{upstream.address}"]

[[upstream]]
name = "gone"
servers = ["127.0.0.1:{dead_port}"]
retries = 0

[[route]]
path = "/"
demo = {{ delay_ms = 1 }}

[[route]]
path = "/fixed"
respond = {{ status = 200, body = "fixed\\n" }}

[[route]]
path = "/limited"
respond = {{ status = 200, body = "ok\\n" }}
rate_limit = {{ per_second = 1, burst = 2 }}

[[route]]
path = "/private"
respond = {{ status = 200, body = "secret\\n" }}
basic_auth = {{ realm = "ops", htpasswd = "{htpasswd}" }}

[[route]]
path = "/app"
proxy = {{ upstream = "app" }}

[[route]]
path = "/gone"
proxy = {{ upstream = "gone" }}
""")
    server.access_log = log  # type: ignore[attr-defined]
    return server


# --- metrics -------------------------------------------------------------------------------------


def test_requests_are_counted_by_route_protocol_status_and_cache_outcome(observed):
    before = scrape(observed)
    with httpx.Client(base_url=observed.http_url) as h1:
        for _ in range(3):
            assert h1.get("/fixed").status_code == 200
        path = "/" + unique("page")
        assert h1.get(path).headers["x-cache"] == "MISS"
        assert h1.get(path).headers["x-cache"] == "HIT"
        assert h1.get("/nothing/../../x").status_code in (200, 400)
    with httpx.Client(base_url=observed.https_url, http2=True, verify=False) as h2:
        for _ in range(2):
            response = h2.get("/fixed")
            assert response.http_version == "HTTP/2" and response.status_code == 200
    after = scrape(observed)

    def delta(**labels):
        return total(after, "edge_http_requests_total", **labels) - total(before, "edge_http_requests_total", **labels)

    assert delta(route="/fixed", protocol="HTTP/1.1", code="2xx") == 3
    assert delta(route="/fixed", protocol="HTTP/2", code="2xx") == 2
    assert delta(route="/", protocol="HTTP/1.1", cache="MISS") >= 1
    assert delta(route="/", protocol="HTTP/1.1", cache="HIT") >= 1
    # The duration histogram counts every request once, and its buckets are cumulative.
    count = value(after, "edge_http_request_duration_seconds_count", route="/fixed")
    assert count - value(before, "edge_http_request_duration_seconds_count", route="/fixed") == 5
    assert value(after, "edge_http_request_duration_seconds_bucket", route="/fixed", le="+Inf") == count
    assert value(after, "edge_http_request_duration_seconds_bucket", route="/fixed", le="10.0") <= count
    # Body bytes: "fixed\n" is 6 bytes, five times.
    sent = value(after, "edge_http_response_body_bytes_total", route="/fixed") - value(
        before, "edge_http_response_body_bytes_total", route="/fixed")
    assert sent == 30
    # The cache family agrees with the request family.
    assert value(after, "edge_cache_requests_total", result="HIT") >= 1
    assert value(after, "edge_cache_entries") >= 1


def test_errors_policies_and_refusals_are_counted_by_kind(observed):
    before = scrape(observed)
    with httpx.Client(base_url=observed.http_url) as client:
        statuses = [client.get("/limited").status_code for _ in range(6)]
        assert 429 in statuses
        assert client.get("/private").status_code == 401
        assert client.get("/private", auth=("alice", "wrong")).status_code == 401
        assert client.get("/private", auth=("alice", "wonderland")).status_code == 200
    with RawConn("127.0.0.1", observed.http_port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
        assert conn.read_head().status == 400
    after = scrape(observed)
    refused = lambda reason: value(after, "edge_requests_refused_total", reason=reason) - value(
        before, "edge_requests_refused_total", reason=reason)
    assert refused("rate_limited") == statuses.count(429)
    assert refused("auth_failed") == 2
    assert total(after, "edge_http_requests_total", route="/limited", code="4xx") - total(
        before, "edge_http_requests_total", route="/limited", code="4xx") == statuses.count(429)
    # The malformed request is counted with no route, as a 4xx.
    assert total(after, "edge_http_requests_total", route="", code="4xx") - total(
        before, "edge_http_requests_total", route="", code="4xx") >= 1


def test_connections_and_tls_handshakes_are_counted_by_protocol_version_and_failure_reason(observed):
    before = scrape(observed)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", observed.https_port)) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /fixed HTTP/1.1\r\nHost: a\r\n\r\n")
            assert tls.recv(100).startswith(b"HTTP/1.1 200")
            mid = scrape(observed)
            assert value(mid, "edge_connections_open", protocol="http/1.1", tls="TLSv1.2") >= 1
    # Plain HTTP sent to the HTTPS port, and a client that offers only TLS 1.0.
    with socket.create_connection(("127.0.0.1", observed.https_port)) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")
    old = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{observed.https_port}", "-tls1", "-brief"],
        input=b"", capture_output=True, timeout=20,
    )
    assert old.returncode != 0
    deadline = time.monotonic() + 10
    while True:
        after = scrape(observed)
        failures = lambda reason: value(after, "edge_tls_handshake_failures_total", reason=reason) - value(
            before, "edge_tls_handshake_failures_total", reason=reason)
        if (failures("plain_http") >= 1 and failures("protocol_version") >= 1
                and value(after, "edge_connections_open", protocol="http/1.1", tls="TLSv1.2") == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert value(after, "edge_tls_handshakes_total", version="TLSv1.2") - value(before, "edge_tls_handshakes_total", version="TLSv1.2") >= 1
    assert failures("plain_http") >= 1
    assert failures("protocol_version") >= 1
    assert value(after, "edge_connections_open", protocol="http/1.1", tls="TLSv1.2") == 0
    assert value(after, "edge_connections_opened_total", protocol="http/1.1", tls="TLSv1.2") >= 1


def test_upstream_requests_failures_latency_and_health(observed, upstream):
    before = scrape(observed)
    with httpx.Client(base_url=observed.http_url) as client:
        for _ in range(4):
            assert client.get("/app/x").status_code == 200
        assert client.get("/gone/x").status_code == 502
    after = scrape(observed)
    server = upstream.address
    assert value(after, "edge_upstream_requests_total", upstream="app", server=server) - value(
        before, "edge_upstream_requests_total", upstream="app", server=server) == 4
    assert value(after, "edge_upstream_response_head_seconds_count", upstream="app", server=server) >= 4
    assert value(after, "edge_upstream_server_up", upstream="app", server=server) == 1
    assert value(after, "edge_upstream_idle_connections", upstream="app", server=server) >= 1
    gone = [key for (name, labels), _ in after.items() if name == "edge_upstream_failures_total"
            for key in [dict(labels)] if key["upstream"] == "gone" and key["cause"] == "connect"]
    assert gone and value(after, "edge_upstream_failures_total", **gone[0]) >= 1


def test_process_figures_and_build_info(observed):
    scraped = scrape(observed)
    assert value(scraped, "process_resident_memory_bytes") > 1_000_000
    assert value(scraped, "process_open_fds") > 3
    assert value(scraped, "process_threads") >= 2
    assert value(scraped, "process_start_time_seconds") > time.time() - 3600
    assert any(name == "edge_build_info" for name, _ in scraped)


def test_a_real_prometheus_server_scrapes_the_admin_listener(observed, tmp_path):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("Debian's prometheus is not installed (scripts/test installs it)")
    with httpx.Client(base_url=observed.http_url) as client:
        for _ in range(7):
            client.get("/fixed")
    port = free_port()
    admin = observed.listener("admin")
    (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: edge
    static_configs:
      - targets: ["127.0.0.1:{admin.port}"]
""")
    process = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        result = None
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/query",
                    params={"query": 'sum(edge_http_requests_total{route="/fixed",code="2xx"})'}, timeout=5,
                ).json()
                if answer["status"] == "success" and answer["data"]["result"]:
                    result = answer["data"]["result"]
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        assert result, "Prometheus never scraped Edge"
        assert float(result[0]["value"][1]) >= 7
        targets = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()
        health = [t["health"] for t in targets["data"]["activeTargets"]]
        assert health == ["up"], targets
    finally:
        process.terminate()
        process.wait(timeout=20)


# --- the admin listener's endpoints and guards ---------------------------------------------------


def test_status_json_reports_connections_requests_cache_and_upstreams(observed, upstream):
    with httpx.Client(base_url=observed.http_url) as client:
        client.get("/app/y")
        with httpx.Client(base_url=observed.https_url, http2=True, verify=False) as h2:
            h2.get("/fixed")
            status = httpx.get(admin_url(observed) + "/status", timeout=10).json()
    assert status["version"]
    assert status["generation"] == 0
    assert status["draining"] is False
    assert status["requests"] > 0 and status["requests_by_status"]["2xx"] > 0
    assert {"protocol": "h2", "tls": "TLSv1.3", "open": 1} in status["connections_by_protocol"]
    app = next(u for u in status["upstreams"] if u["name"] == "app")
    assert app["servers"][0]["server"] == upstream.address and app["servers"][0]["up"] is True
    assert status["resident_bytes"] > 0


def test_recent_errors_list_5xx_answers(observed):
    with httpx.Client(base_url=observed.http_url) as client:
        assert client.get("/gone/recent").status_code == 502
    status = httpx.get(admin_url(observed) + "/status", timeout=10).json()
    assert any(e["target"] == "/gone/recent" and e["status"] == 502 and e["route"] == "/gone" for e in status["recent_errors"])


def test_admin_endpoints_answer_404_405_and_are_not_on_the_public_listeners(observed):
    base = admin_url(observed)
    assert httpx.get(base + "/nope").status_code == 404
    response = httpx.post(base + "/metrics")
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
    assert httpx.get(base + "/reload").status_code == 405
    # The public listener's /metrics is a route like any other (the demo backend here), never the metrics.
    public = httpx.get(observed.http_url + "/metrics")
    assert "edge_http_requests_total" not in public.text


def test_admin_allow_ranges_and_bearer_token(edge_factory, tmp_path):
    token = "s3cr3t-admin-token-0123"
    server = edge_factory.start(config=f"""
[admin]
address = "127.0.0.1:0"
token = "{token}"

[[route]]
path = "/"
respond = {{ status = 200, body = "ok\\n" }}
""")
    base = admin_url(server)
    missing = httpx.get(base + "/metrics")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(base + "/metrics", headers={"authorization": "Bearer wrong-token-000000000"}).status_code == 401
    assert httpx.get(base + "/metrics", headers={"authorization": f"Bearer {token}"}).status_code == 200
    config = httpx.get(base + "/config", headers={"authorization": f"Bearer {token}"}).text
    assert token not in config and "<redacted>" in config
    json.loads(config)

    fenced = edge_factory.start(config="""
[admin]
address = "127.0.0.1:0"
allow = ["10.0.0.0/8"]

[[route]]
path = "/"
respond = { status = 200, body = "ok\\n" }
""")
    refused = httpx.get(admin_url(fenced) + "/status")
    assert refused.status_code == 403 and "127.0.0.1" in refused.text


def test_config_shows_the_running_configuration_with_secrets_redacted(edge_factory, upstream):
    server = edge_factory.start(config=f"""
[admin]
address = "127.0.0.1:0"

[[upstream]]
name = "app"
servers = ["{upstream.address}"]

[[route]]
path = "/api"
proxy = {{ upstream = "app", request_headers = {{ set = {{ authorization = "Bearer upstream-secret-value" }} }}, cache = {{ purge_token = "purge-secret-token-1234" }} }}
""")
    text = httpx.get(admin_url(server) + "/config").text
    config = json.loads(text)
    assert "upstream-secret-value" not in text and "purge-secret-token-1234" not in text
    assert any(route["path"] == "/api" for route in config["routes"])
    assert config["upstreams"][0]["name"] == "app"


def test_reload_trigger_applies_a_new_configuration_and_refuses_a_bad_one(edge_factory):
    server = edge_factory.start(config="""
[admin]
address = "127.0.0.1:0"

[[route]]
path = "/v"
respond = { status = 200, body = "one\\n" }
""")
    base = admin_url(server)
    config = server.cwd / "edge.toml"
    config.write_text(config.read_text().replace("one", "two"))
    answer = httpx.post(base + "/reload", timeout=30)
    assert answer.status_code == 200 and answer.json() == {"result": "applied", "generation": 1}
    assert httpx.get(server.http_url + "/v").text == "two\n"
    assert httpx.post(base + "/reload", timeout=30).json() == {"result": "unchanged", "generation": 1}
    config.write_text(config.read_text() + "\n[[route]]\npath = 7\n")
    refused = httpx.post(base + "/reload", timeout=30)
    assert refused.status_code == 422 and refused.json()["result"] == "failed"
    assert "route[1].path" in refused.json()["reason"]
    assert httpx.get(server.http_url + "/v").text == "two\n"
    scraped = scrape(server)
    assert value(scraped, "edge_config_reloads_total", result="applied") == 1
    assert value(scraped, "edge_config_reloads_total", result="failed") == 1
    assert value(scraped, "edge_config_generation") == 1


def test_admin_settings_are_checked_with_the_key_named(edge_factory):
    for body, key in [
        ('[admin]\naddress = "nowhere"\n', "admin.address"),
        ('[admin]\nallow = ["bogus"]\n', "admin.allow[0]"),
        ('[admin]\ntoken = "short"\n', "admin.token"),
        ('[admin]\nlisten = "127.0.0.1:1"\n', "admin.listen"),
        ('[access_log]\nformat = "xml"\n', "access_log.format"),
        ('[[listener]]\naddress = "127.0.0.1:18999"\n[admin]\naddress = "127.0.0.1:18999"\n', "admin.address"),
    ]:
        server = edge_factory.start(config=body + '\n[[route]]\npath = "/"\nrespond = { status = 200, body = "ok" }\n', wait=False)
        assert server.wait_exit(30) == 1
        assert key in server.log + server.stdout, (key, server.log)


def test_embedded_default_serves_the_admin_listener_on_loopback_9901_unless_overridden(edge_factory):
    server = edge_factory.start(admin="none")
    assert not [l for l in server.listeners if l.scheme == "admin"]
    other = edge_factory.start()
    assert other.listener("admin").host == "127.0.0.1"


# --- the access log ------------------------------------------------------------------------------


def read_log(path: Path, count: int, timeout: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in path.read_text().splitlines() if line]
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.1)


def test_access_log_json_lines_carry_the_request_and_redact_queries_and_credentials(observed, upstream):
    log: Path = observed.access_log
    start = len(read_log(log, 0, timeout=0))
    marker = unique("m")
    with httpx.Client(base_url=observed.http_url) as client:
        client.get(f"/fixed/{marker}?token=hunter2&page=3", headers={"user-agent": 'ua "quoted" \\ back'})
        client.get(f"/private/{marker}", auth=("alice", "wonderland"))
        client.get(f"/app/{marker}")
    with httpx.Client(base_url=observed.https_url, http2=True, verify=False) as h2:
        h2.get(f"/fixed/{marker}-h2", headers={"referer": "https://example.test/"})
    lines = [e for e in read_log(log, start + 4)[start:] if marker in e["target"]]
    assert len(lines) == 4, lines
    def line(fragment: str) -> dict:
        return next(e for e in lines if fragment in e["target"])

    first, private, proxied, over_h2 = line("?token"), line("/private/"), line("/app/"), line("-h2")
    assert first["target"] == f"/fixed/{marker}?token=REDACTED&page=3"
    assert first["user_agent"] == 'ua "quoted" \\ back'
    assert first["status"] == 200 and first["bytes"] == 6 and first["route"] == "/fixed"
    assert first["protocol"] == "HTTP/1.1" and first["tls"] == "none" and first["client"] == "127.0.0.1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert re.fullmatch(r"[0-9a-f]{32}", first["request_id"])
    assert first["duration_ms"] >= 0
    text = log.read_text()
    assert "wonderland" not in text and "hunter2" not in text and "Basic " not in text
    assert private["status"] == 200 and private["route"] == "/private"
    assert proxied["upstream"] == upstream.address and proxied["upstream_ms"] >= 0
    assert over_h2["protocol"] == "HTTP/2" and over_h2["tls"] == "TLSv1.3" and over_h2["referer"] == "https://example.test/"


def test_access_log_request_id_is_the_one_sent_upstream(observed):
    log: Path = observed.access_log
    start = len(read_log(log, 0, timeout=0))
    marker = unique("rid")
    echo = httpx.get(observed.http_url + f"/app/{marker}").json()
    sent = next(v for k, v in echo["headers"] if k == "x-request-id")
    line = next(e for e in read_log(log, start + 1)[start:] if marker in e["target"])
    assert line["request_id"] == sent


def test_access_log_escapes_control_and_invalid_bytes(observed):
    log: Path = observed.access_log
    start = len(read_log(log, 0, timeout=0))
    marker = unique("esc")
    with RawConn("127.0.0.1", observed.http_port) as conn:
        conn.send(f"GET /fixed/{marker} HTTP/1.1\r\nHost: a\r\nUser-Agent: bad\xff\xfe\tbyte\r\n\r\n".encode("latin-1"))
        assert conn.read_response().status == 200
    raw = wait_until(lambda: [line for line in log.read_text().splitlines()[start:] if marker in line])
    assert len(raw) == 1
    # One line of valid UTF-8 JSON: the tab escaped, the bytes that are not UTF-8 replaced (U+FFFD).
    assert "\\u0009byte" in raw[0]
    raw[0].encode("utf-8")
    assert json.loads(raw[0])["user_agent"] == "bad\ufffd\ufffd\tbyte"


def test_combined_format_and_reopen_on_sigusr1(edge_factory, tmp_path):
    log = tmp_path / "access.log"
    server = edge_factory.start(config=f"""
[access_log]
path = "{log}"
format = "combined"

[[route]]
path = "/"
respond = {{ status = 200, body = "hello\\n" }}
""")
    httpx.get(server.http_url + "/a?key=k1", headers={"user-agent": "tester/1", "referer": "http://r/"})
    wait_until(log.read_text)
    line = log.read_text().splitlines()[0]
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /a\?key=REDACTED HTTP/1\.1" 200 6 "http://r/" "tester/1"',
        line,
    ), line
    # logrotate: move the file, signal, and the next lines go to a new file at the same path.
    rotated = tmp_path / "access.log.1"
    log.rename(rotated)
    start = len(server.log_lines)
    server.signal(signal.SIGUSR1)
    assert server.wait_for_msg("access log reopened", start=start) is not None
    httpx.get(server.http_url + "/after")
    wait_until(lambda: log.exists() and log.read_text())
    assert '"GET /after HTTP/1.1" 200' in log.read_text()
    assert "/after" not in rotated.read_text()


def test_a_log_that_cannot_be_written_drops_lines_and_counts_them_without_stalling(edge_factory):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    server = edge_factory.start(config="""
[admin]
address = "127.0.0.1:0"

[access_log]
path = "/dev/full"

[[route]]
path = "/"
respond = { status = 200, body = "ok\\n" }
""")
    with httpx.Client(base_url=server.http_url) as client:
        for _ in range(50):
            assert client.get("/x").status_code == 200
    wait_until(lambda: value(scrape(server), "edge_access_log_dropped_lines_total") >= 50, step=0.2)
    scraped = scrape(server)
    assert value(scraped, "edge_access_log_dropped_lines_total") >= 50
    assert value(scraped, "edge_access_log_lines_total") == 0


def test_an_access_log_path_that_cannot_be_opened_stops_the_start_with_the_key_named(edge_factory, tmp_path):
    server = edge_factory.start(config=f"""
[access_log]
path = "{tmp_path}/no/such/dir/access.log"

[[route]]
path = "/"
respond = {{ status = 200, body = "ok" }}
""", wait=False)
    assert server.wait_exit(30) == 1
    assert "access_log.path" in server.log


# --- the status page in a real browser -----------------------------------------------------------


def test_status_page_renders_live_figures_in_headless_chromium(observed, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (scripts/test installs it)")
    with httpx.Client(base_url=observed.http_url) as client:
        for _ in range(5):
            client.get("/fixed")
    url = admin_url(observed) + "/"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    requests = re.search(r'id="requests">(\d+)<', html)
    assert requests and int(requests.group(1)) >= 5, html[:3000]
    assert re.search(r'id="connections">\d+<', html)
    assert "version " in html and "configuration generation 0" in html
    assert re.search(r"<td>app</td><td>127\.0\.0\.1:\d+</td><td class=\"up\">up</td>", html), html
    shot = tmp_path / "status.png"
    subprocess.run(common + ["--window-size=1100,900", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    target = os.environ.get("EDGE_STATUS_SCREENSHOT")
    if target:
        shutil.copy(shot, target)


def test_admin_purge_by_prefix_and_by_tag_reaches_every_route(edge_factory):
    from test_http_cache import ScriptedOrigin

    origin = ScriptedOrigin()
    try:
        server = edge_factory.start(config=f"""
[admin]
address = "127.0.0.1:0"

[[upstream]]
name = "o"
servers = ["{origin.address}"]

[[route]]
path = "/c"
proxy = {{ upstream = "o", cache = true }}
""")
        base = admin_url(server)
        tagged = origin.script(f"/c/{unique('t')}", {"headers": [("cache-control", "max-age=60"), ("surrogate-key", "blue green")]})
        plain = origin.script(f"/c/{unique('p')}/x", {"headers": [("cache-control", "max-age=60")]})
        with httpx.Client(base_url=server.http_url) as client:
            for target in (tagged, plain):
                client.get(target)
                assert client.get(target).headers["x-cache"] == "HIT"
            assert httpx.post(base + "/purge").status_code == 400
            answer = httpx.post(base + "/purge", params={"tag": "green"})
            assert answer.status_code == 200 and answer.json() == {"purged": 1, "soft": False}
            assert client.get(tagged).headers["x-cache"] == "MISS"
            prefix = plain.rsplit("/", 1)[0]
            answer = httpx.post(base + "/purge", params={"host": server.http.host + f":{server.http.port}", "prefix": prefix})
            assert answer.json()["purged"] == 1, answer.text
            assert client.get(plain).headers["x-cache"] == "MISS"
        assert len(origin.requests(tagged)) == 2 and len(origin.requests(plain)) == 2
    finally:
        origin.stop()


# --- tracing -------------------------------------------------------------------------------------


class OTLPReceiver:
    """A small OTLP/HTTP trace receiver: takes `POST /v1/traces` (protobuf, gzip or not), decodes each
    ExportTraceServiceRequest with opentelemetry-proto and keeps every span."""

    def __init__(self):
        import gzip
        import http.server
        import threading

        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.spans: list = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    for resource in request.resource_spans:
                        service = next((a.value.string_value for a in resource.resource.attributes if a.key == "service.name"), "")
                        for scope in resource.scope_spans:
                            for span in scope.spans:
                                receiver.spans.append((service, span))
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout: float = 20) -> list:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [s for s in self.spans if predicate(s)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def attributes(span) -> dict:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value if v.HasField("string_value") else v.int_value if v.HasField("int_value") else v
    return out


def test_tracing_exports_a_server_span_per_request_and_a_client_span_per_upstream_attempt(edge_factory):
    from test_http_cache import ScriptedOrigin

    receiver = OTLPReceiver()
    origin = ScriptedOrigin()
    try:
        server = edge_factory.start(config=f"""
[tracing]
endpoint = "http://127.0.0.1:{receiver.port}/v1/traces"
service_name = "edge-under-test"

[[upstream]]
name = "o"
servers = ["{origin.address}"]

[[route]]
path = "/api"
proxy = "o"

[[route]]
path = "/fixed"
respond = {{ status = 200, body = "ok\\n" }}
""")
        target = origin.script(f"/api/{unique('t')}", {"status": 200, "body": b"hi\n"})
        trace_id = os.urandom(16).hex()
        parent_id = os.urandom(8).hex()
        answer = httpx.get(server.http_url + target, headers={
            "traceparent": f"00-{trace_id}-{parent_id}-01", "tracestate": "vendor=opaque"})
        assert answer.status_code == 200
        with httpx.Client(base_url=server.https_url, http2=True, verify=False) as h2:
            assert h2.get("/fixed").status_code == 200

        servers = receiver.wait_for(lambda s: s[1].kind == 2 and s[1].trace_id.hex() == trace_id)
        clients = receiver.wait_for(lambda s: s[1].kind == 3 and s[1].trace_id.hex() == trace_id)
        assert len(servers) == 1 and len(clients) == 1, receiver.spans
        service, span = servers[0]
        assert service == "edge-under-test"
        # The server span continues the client's trace, under the client's span.
        assert span.parent_span_id.hex() == parent_id
        assert span.name == "GET /api"
        attrs = attributes(span)
        assert attrs["http.response.status_code"] == 200 and attrs["http.route"] == "/api"
        assert span.end_time_unix_nano > span.start_time_unix_nano > 0
        # The upstream attempt is the server span's child, and the upstream got that attempt's context.
        _, client = clients[0]
        assert client.parent_span_id == span.span_id
        sent = origin.requests(target)[0]["headers"]
        assert sent["traceparent"] == f"00-{trace_id}-{client.span_id.hex()}-01"
        assert sent["tracestate"] == "vendor=opaque"
        # A request without trace fields starts a trace of its own (over HTTP/2, answered on the fast path).
        own = receiver.wait_for(lambda s: s[1].kind == 2 and s[1].name == "GET /fixed")
        assert own and own[0][1].parent_span_id == b""
    finally:
        origin.stop()
        receiver.stop()


def test_tracing_sampling_ratio_zero_records_no_new_trace_but_follows_a_sampled_parent(edge_factory):
    receiver = OTLPReceiver()
    try:
        server = edge_factory.start(config=f"""
[tracing]
endpoint = "http://127.0.0.1:{receiver.port}/v1/traces"
sampling_ratio = 0

[[route]]
path = "/"
respond = {{ status = 200, body = "ok\\n" }}
""")
        with httpx.Client(base_url=server.http_url) as client:
            for _ in range(20):
                client.get("/unsampled")
            trace_id = os.urandom(16).hex()
            client.get("/sampled", headers={"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"})
        spans = receiver.wait_for(lambda s: s[1].trace_id.hex() == trace_id)
        assert len(spans) == 1
        time.sleep(1.5)  # past the exporter's batch delay: nothing else arrives
        assert len(receiver.spans) == 1, [s[1].name for s in receiver.spans]
    finally:
        receiver.stop()


def test_access_log_names_the_client_a_trusted_proxy_forwarded_for_on_every_path(edge_factory, tmp_path):
    log = tmp_path / "access.log"
    server = edge_factory.start(config=f"""
[client_address]
trusted_proxies = ["127.0.0.1"]

[access_log]
path = "{log}"

[[route]]
path = "/fixed"
respond = {{ status = 200, body = "ok\\n" }}

[[route]]
path = "/demo"
demo = {{ delay_ms = 1 }}
""")
    marker = unique("xff")
    forwarded = {"x-forwarded-for": "203.0.113.9"}
    with httpx.Client(base_url=server.http_url, headers=forwarded) as h1:
        h1.get(f"/fixed/{marker}-h1")          # answered on the HTTP/1.1 fast path
        h1.get(f"/demo/{marker}-miss")          # through the dispatcher (a miss)
    with httpx.Client(base_url=server.https_url, http2=True, verify=False, headers=forwarded) as h2:
        h2.get(f"/fixed/{marker}-h2")           # answered on the HTTP/2 fast path
    lines = [e for e in read_log(log, 3) if marker in e["target"]]
    assert len(lines) == 3, lines
    assert {e["client"] for e in lines} == {"203.0.113.9"}, lines
