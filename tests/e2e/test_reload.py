"""Configuration reload on SIGHUP: every connection's next request gets the new routes, policies and upstreams
without the connection being closed; a change to a setting fixed per connection retires the older connections
as nginx's reload does; an invalid file changes nothing; settings only a restart can change keep their running
values."""

from __future__ import annotations

import signal
import time

from conftest import BackgroundH2load, H2Client, RawConn, assert_no_stack_trace, curl, unique


def routes(text: str, extra: str = "") -> str:
    return extra + f"""
[[route]]
path = "/"
demo = {{ delay_ms = 2 }}

[[route]]
path = "/r"
respond = {{ status = 200, body = "{text}" }}
"""


def reload(server, config_path, text: str, msg: str = "configuration reloaded"):
    start = len(server.log_lines)
    config_path.write_text(text)
    server.signal(signal.SIGHUP)
    event = server.wait_for_msg(msg, timeout=15, start=start)
    assert event is not None, server.log
    return event


def config_file(server):
    return server.cwd / "edge.toml"


def test_reload_reaches_the_next_request_of_open_connections_without_closing_them(edge_factory):
    """Routes, policies and upstreams are read per request from the configuration in force (as Envoy applies
    route updates): after SIGHUP an open keep-alive connection and an open HTTP/2 connection get the new answer on
    their next request, and neither is closed."""
    server = edge_factory.start(config=routes("one"))
    idle = RawConn(server.http.host, server.http.port)
    assert idle.request("GET", "/r").text == "one"
    h2 = H2Client(server.https.host, server.https.port)
    first = h2.request("/r")
    assert h2.pump(lambda: h2.ended(first), timeout=10) and h2.streams[first]["body"] == b"one"

    event = reload(server, config_file(server), routes("two"))
    assert event["level"] == "notice" and event["connections_retired"] == "0", event

    response = idle.request("GET", "/r")
    assert response.text == "two" and (response.header("connection") or "") != "close", response.headers
    second = h2.request("/r")
    assert h2.pump(lambda: h2.ended(second), timeout=10) and h2.streams[second]["body"] == b"two"
    assert not h2.goaways and not h2.closed
    idle.close()
    h2.close()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=30) == 0


def test_a_per_connection_setting_retires_the_old_connections(edge_factory):
    """A setting a connection takes at accept (here `server_name`) cannot reach an open connection: then, as
    before, new connections get it and older ones finish what they are doing and close (HTTP/2 with the
    graceful GOAWAY sequence)."""
    server = edge_factory.start(config=routes("one"))
    idle = RawConn(server.http.host, server.http.port)
    assert idle.request("GET", "/r").text == "one"
    h2 = H2Client(server.https.host, server.https.port)
    first = h2.request("/r")
    assert h2.pump(lambda: h2.ended(first), timeout=10)

    event = reload(server, config_file(server), routes("two", extra='server_name = "edge-2"\n'))
    assert int(event["connections_retired"]) >= 2, event
    assert idle.is_closed(timeout=5), "an idle keep-alive connection of the old configuration stayed open"
    h2.pump(lambda: h2.closed, timeout=10)
    assert h2.goaways == [(0, 2**31 - 1), (0, first)] and h2.closed, (h2.goaways, h2.closed)
    with RawConn(server.http.host, server.http.port) as fresh:
        response = fresh.request("GET", "/r")
        assert (response.text, response.header("server")) == ("two", "edge-2")


def test_request_in_flight_during_a_reload_finishes_and_the_connection_serves_on(edge_factory):
    server = edge_factory.start(config=routes("one"))
    busy = RawConn(server.http.host, server.http.port)
    path = f"/{unique('slow')}?delay_ms=1500"
    busy.send(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    time.sleep(0.3)
    reload(server, config_file(server), routes("two"))
    response = busy.read_response()
    assert response.status == 200 and (response.header("connection") or "").lower() != "close", response.headers
    assert busy.request("GET", "/r").text == "two"
    busy.close()


def test_five_reloads_under_load_lose_no_request(edge_factory, tmp_path):
    """Under h2load over HTTP/1.1 (50 connections) and HTTP/2 (20 connections × 5 streams), five reloads in a row
    cost no request: before, each reload retired every connection and clients that do not retry lost one request
    per connection."""
    server = edge_factory.start(config=routes("v0"))
    load = BackgroundH2load({
        "h1": ["--h1", "-t1", "-c50", "-D", "8", f"{server.http.url}/r"],
        "h2": ["-t1", "-c20", "-m5", "-D", "8", f"{server.https.url}/r"],
    })
    time.sleep(1.5)
    for version in range(1, 6):
        reload(server, config_file(server), routes(f"v{version}"))
        assert curl("-s", f"{server.http.url}/r").stdout == f"v{version}"
        time.sleep(1)
    for name, output in load.join().items():
        done = [line for line in output.splitlines() if line.startswith("requests:")]
        assert done and " 0 failed, 0 errored" in done[0], (name, output[-800:])
        assert "status codes: " in output and ", 0 3xx, 0 4xx, 0 5xx" in output, (name, output[-800:])


def test_invalid_configuration_is_reported_and_the_running_one_kept(edge_factory):
    server = edge_factory.start(config=routes("one"))
    event = reload(server, config_file(server), routes("two", extra="bogus_key = 1\n"),
                   msg="reload failed, the running configuration is kept")
    assert event["level"] == "error" and "bogus_key" in event["reason"] and ":1" in event["reason"], event
    assert curl("-s", f"{server.http.url}/r").stdout == "one"
    assert server.proc.poll() is None


def test_a_file_toml_plus_plus_would_abort_on_is_reported_and_the_server_keeps_running(edge_factory):
    server = edge_factory.start(config=routes("one"))
    event = reload(server, config_file(server), routes("two", extra="x = [ 1, }\n"),
                   msg="reload failed, the running configuration is kept")
    assert "expected an array element" in event["reason"] and ":1" in event["reason"], event
    assert curl("-s", f"{server.http.url}/r").stdout == "one"
    assert server.proc.poll() is None
    assert_no_stack_trace(server.log)


def test_restart_only_settings_keep_their_running_values(edge_factory):
    server = edge_factory.start(config=routes("one"))
    start = len(server.log_lines)
    event = reload(server, config_file(server), routes("two", extra="threads = 1\nlog_level = \"debug\"\n"))
    warning = server.wait_for_msg("reload: these settings change only at restart and keep their running values",
                                  timeout=5, start=start)
    assert warning is not None and warning["keys"] == "threads,log_level", server.log
    assert curl("-s", f"{server.http.url}/r").stdout == "two", "the rest of the configuration was not applied"
    assert event["generation"] == "1"


def test_sighup_with_nothing_changed_retires_nothing(edge_factory):
    server = edge_factory.start(config=routes("one"))
    idle = RawConn(server.http.host, server.http.port)
    assert idle.request("GET", "/r").text == "one"
    reload(server, config_file(server), routes("one"),
           msg="SIGHUP: configuration unchanged, certificates and htpasswd files re-read")
    assert idle.request("GET", "/r").text == "one", "an unchanged configuration closed a connection"
    idle.close()


def test_connection_opened_before_the_reload_gets_the_new_configuration(edge_factory):
    """A client that connected just before the reload but has not sent its request yet gets the reloaded answer on
    a connection that stays open."""
    server = edge_factory.start(config=routes("one"))
    early = RawConn(server.http.host, server.http.port)
    time.sleep(0.2)
    reload(server, config_file(server), routes("two"))
    response = early.request("GET", "/r")
    assert (response.status, response.text) == (200, "two"), response
    assert (response.header("connection") or "").lower() != "close", response.headers
    early.close()


def test_connection_still_negotiating_tls_during_a_retiring_reload_is_retired_once_it_speaks_http(edge_factory):
    """A reload that retires connections (a per-connection setting changed) reaches a connection whose TLS
    handshake has not finished yet once the protocol is chosen: its first request is answered with
    `Connection: close` instead of the connection serving on under the old settings."""
    import socket

    from conftest import client_tls_context

    server = edge_factory.start(config=routes("one"))
    raw = socket.create_connection((server.https.host, server.https.port), timeout=10)
    time.sleep(0.2)  # accepted, but no ClientHello yet
    reload(server, config_file(server), routes("two", extra='server_name = "edge-2"\n'))
    with client_tls_context(["http/1.1"]).wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET /r HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b"two", data
    assert b"\r\nconnection: close" in head.lower(), head


def test_renewed_certificate_is_served_to_new_connections_after_sighup(edge_factory, tmp_path):
    """The usual reason for a reload: the certificate files were renewed in place (certbot and the like)."""
    import shutil
    import socket
    import ssl

    from test_config import make_certificate

    first, first_key = make_certificate(tmp_path, "first")
    second, second_key = make_certificate(tmp_path, "second")
    live, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(first, live)
    shutil.copy(first_key, live_key)
    server = edge_factory.start(config=f"""
[[listener]]
address = "127.0.0.1:0"
tls = true
certificate = "{live}"
private_key = "{live_key}"
""" + routes("one"), http=None, https=None)

    def served_certificate() -> bytes:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection((server.https.host, server.https.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.getpeercert(binary_form=True)

    der = lambda path: ssl.PEM_cert_to_DER_cert(path.read_text())
    assert served_certificate() == der(first)
    shutil.copy(second, live)
    shutil.copy(second_key, live_key)
    reload(server, config_file(server), config_file(server).read_text(),
           msg="SIGHUP: configuration unchanged, certificates and htpasswd files re-read")
    assert served_certificate() == der(second), "the renewed certificate was not served after SIGHUP"
