"""Process lifecycle: graceful shutdown (SIGTERM/SIGINT), SIGHUP, shutdown deadline, self-signed certificate."""

from __future__ import annotations

import hashlib
import re
import signal
import socket
import ssl
import threading
import time


from conftest import H2Client, RawConn, assert_logfmt, client_tls_context, curl, demo_body, unique

SLOW_MS = 2000

ROOT_ROUTE = """
[[route]]
path = "/"
demo = { delay_ms = 2 }
"""


def connect_refused(host: str, port: int) -> bool:
    try:
        s = socket.create_connection((host, port), timeout=5)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    s.close()
    return False


def test_graceful_shutdown_completes_in_flight(edge_factory):
    server = edge_factory.start()
    base = unique("drain")

    # Connections are established before the slow requests start, so that the requests
    # reach the server well before SIGTERM even on a slow machine.
    h1 = [RawConn(server.http.host, server.http.port) for _ in range(3)]
    h2c = [H2Client(server.https.host, server.https.port) for _ in range(2)]
    for c in h1:
        assert c.request("GET", "/healthz").status == 200
    for c in h2c:
        sid = c.request("/healthz")
        assert c.pump(lambda: c.ended(sid), timeout=30) and c.streams[sid]["status"] == "200"

    results: dict[str, tuple] = {}

    def run_h1(i: int, c: RawConn) -> None:
        path = f"/{base}/h1-{i}?delay_ms={SLOW_MS}"
        try:
            r = c.request("GET", path)
            results[path] = (r.status, r.text)
        except Exception as exc:  # recorded, asserted below
            results[path] = ("error", repr(exc))

    def run_h2(i: int, c: H2Client) -> None:
        path = f"/{base}/h2-{i}?delay_ms={SLOW_MS}"
        try:
            sid = c.request(path)
            c.pump(lambda: c.ended(sid), timeout=60)
            s = c.streams[sid]
            results[path] = (int(s["status"]) if s["ended"] and s["status"] else
                             f"incomplete (closed={c.closed}, resets={c.resets}, goaways={c.goaways})",
                             s["body"].decode())
        except Exception as exc:
            results[path] = ("error", repr(exc))

    threads = [threading.Thread(target=run_h1, args=(i, c)) for i, c in enumerate(h1)]
    threads += [threading.Thread(target=run_h2, args=(i, c)) for i, c in enumerate(h2c)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    server.signal(signal.SIGTERM)

    time.sleep(0.5)
    still_running_at_check = server.proc.poll() is None
    http_refused = connect_refused(server.http.host, server.http.port)
    https_refused = connect_refused(server.https.host, server.https.port)

    for t in threads:
        t.join(timeout=60)
    for c in h2c:  # collect a GOAWAY that may follow the last response
        c.pump(lambda c=c: bool(c.goaways) or c.closed, timeout=10)
    rc = server.wait_exit(timeout=30)
    for c in h1:
        c.close()
    for c in h2c:
        c.close()

    expected = {f"/{base}/h1-{i}?delay_ms={SLOW_MS}" for i in range(3)}
    expected |= {f"/{base}/h2-{i}?delay_ms={SLOW_MS}" for i in range(2)}
    assert set(results) == expected
    # Collect every problem, so that one run shows the whole picture.
    problems = []
    for path, (status, body) in sorted(results.items()):
        if status != 200 or body != demo_body("GET", path):
            problems.append(f"in-flight request {path} did not complete: {status} {body!r}")
    if not still_running_at_check:
        problems.append("server exited within 0.5 s of SIGTERM, before its in-flight requests completed")
    if not http_refused:
        problems.append("a new plain connection was accepted 0.5 s into the drain")
    if not https_refused:
        problems.append("a new TLS connection was accepted 0.5 s into the drain")
    for i, c in enumerate(h2c):
        if not c.goaways:
            problems.append(f"HTTP/2 connection {i} got no GOAWAY (closed={c.closed})")
        elif any(code != 0 for code, _ in c.goaways):
            problems.append(f"HTTP/2 connection {i} got GOAWAY with an error: {c.goaways}")
    if rc != 0:
        problems.append(f"exit code {rc} after SIGTERM")
    if not server.log_events("draining"):
        problems.append("no msg=draining")
    if not server.log_events("stopped"):
        problems.append("no msg=stopped")
    try:
        assert_logfmt(server.log_lines)
    except AssertionError as exc:
        problems.append(str(exc))
    assert not problems, "\n".join(problems) + "\n--- log ---\n" + server.log


def test_healthz_503_during_shutdown_delay(edge_factory):
    """With shutdown_delay_seconds, /healthz answers 503 `draining` for that long on existing
    and new connections (HTTP/1.1 and HTTP/2), other requests are still served, then the
    listeners close and the process exits 0."""
    server = edge_factory.start(config="shutdown_delay_seconds = 3\n" + ROOT_ROUTE)
    h1 = RawConn(server.http.host, server.http.port)
    assert h1.request("GET", "/healthz").body == b"ok\n"
    h2 = H2Client(server.https.host, server.https.port)
    first = h2.request("/healthz")
    assert h2.pump(lambda: h2.ended(first), timeout=30)
    assert (h2.streams[first]["status"], h2.streams[first]["body"]) == ("200", b"ok\n")

    server.signal(signal.SIGTERM)
    assert server.wait_for_msg("draining", timeout=10) is not None, server.log
    t_drain = time.monotonic()

    problems = []
    draining = (503, b"draining\n")
    r = h1.request("GET", "/healthz")
    if (r.status, r.body) != draining:
        problems.append(f"HTTP/1.1 keep-alive /healthz: {r.status} {r.body!r}")
    sid = h2.request("/healthz")
    h2.pump(lambda: h2.ended(sid), timeout=10)
    got = (h2.streams[sid]["status"], h2.streams[sid]["body"])
    if got != ("503", b"draining\n"):
        problems.append(f"HTTP/2 /healthz: {got} goaways={h2.goaways} resets={h2.resets}")
    try:
        with RawConn(server.http.host, server.http.port) as fresh:
            r = fresh.request("GET", "/healthz")
            if (r.status, r.body) != draining:
                problems.append(f"new connection /healthz: {r.status} {r.body!r}")
            path = f"/{unique('delay')}"
            r = fresh.request("GET", path)
            if (r.status, r.text) != (200, demo_body("GET", path)):
                problems.append(f"normal request during the delay: {r.status} {r.text!r}")
    except OSError as exc:
        problems.append(f"new connection during the delay failed: {exc!r}")
    checked_within = time.monotonic() - t_drain
    h1.close()
    h2.close()

    # After the delay the listeners close; the process exits 0.
    refused = False
    for _ in range(100):  # bounded: up to ~20 s
        if connect_refused(server.http.host, server.http.port) or server.proc.poll() is not None:
            refused = True
            break
        time.sleep(0.2)
    rc = server.wait_exit(timeout=30)
    assert checked_within < 3, f"checks took {checked_within:.1f}s, longer than the 3 s delay (machine too slow?)"
    assert not problems, "\n".join(problems) + "\n--- log ---\n" + server.log
    assert refused, "listeners still open long after shutdown_delay_seconds"
    assert rc == 0


def test_healthz_during_drain_without_delay(edge_factory):
    """Without a shutdown delay, an open connection that asks for /healthz during the drain
    gets 503 `draining`, or is turned away (idle HTTP/1.1 closed; HTTP/2 stream refused or above
    the GOAWAY's last stream), never 200; the in-flight request on that connection completes."""
    server = edge_factory.start()
    idle = RawConn(server.http.host, server.http.port)
    assert idle.request("GET", "/healthz").status == 200
    busy = H2Client(server.https.host, server.https.port)
    first = busy.request("/healthz")
    assert busy.pump(lambda: busy.ended(first), timeout=30)
    slow_path = f"/{unique('busy')}?delay_ms=3000"
    slow = busy.request(slow_path)
    time.sleep(0.3)
    server.signal(signal.SIGTERM)
    assert server.wait_for_msg("draining", timeout=10) is not None, server.log

    sid = busy.request("/healthz")
    busy.pump(lambda: busy.ended(slow) and (busy.ended(sid) or sid in dict(busy.resets)), timeout=30)
    h2_health = (busy.streams[sid]["status"], busy.streams[sid]["body"])
    refused = (dict(busy.resets).get(sid) == 7  # REFUSED_STREAM
               or any(last < sid for _code, last in busy.goaways))
    h2_slow = (busy.streams[slow]["status"], busy.streams[slow]["body"].decode())
    h2_state = f"closed={busy.closed} goaways={busy.goaways} resets={busy.resets}"

    try:
        idle.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        r = idle.read_response()
        h1_result = (str(r.status), r.body)
    except (EOFError, ConnectionError):
        h1_result = "closed"
    idle.close()
    busy.close()
    rc = server.wait_exit(timeout=30)

    draining = ("503", b"draining\n")
    assert h2_health == draining or (h2_health == (None, b"") and refused), \
        f"HTTP/2 /healthz during drain: {h2_health} ({h2_state})"
    assert h2_slow == ("200", demo_body("GET", slow_path)), f"slow stream: {h2_slow} ({h2_state})"
    assert busy.goaways, "HTTP/2 connection got no GOAWAY"
    assert h1_result in ("closed", draining), f"idle HTTP/1.1 connection during drain: {h1_result}"
    assert rc == 0


def test_http2_drain_warns_with_goaway_and_ping_then_names_the_last_stream(edge_factory):
    """RFC 9113 §6.8: the first GOAWAY (last stream 2^31-1) and a PING tell the client to stop opening
    streams; once it acknowledges the PING, the second GOAWAY names the last stream processed. The stream in
    flight completes and the connection closes."""
    server = edge_factory.start()
    client = H2Client(server.https.host, server.https.port)
    first = client.request("/healthz")
    assert client.pump(lambda: client.ended(first), timeout=30)
    slow_path = f"/{unique('drain-h2')}?delay_ms=1500"
    slow = client.request(slow_path)
    time.sleep(0.3)
    server.signal(signal.SIGTERM)
    client.pump(lambda: client.closed, timeout=30)
    assert client.goaways == [(0, 2**31 - 1), (0, slow)], client.goaways
    assert (client.streams[slow]["status"], client.streams[slow]["body"].decode()) == ("200", demo_body("GET", slow_path))
    assert client.closed
    assert server.wait_exit(timeout=30) == 0


def test_idle_keepalive_closed_on_drain(edge_factory):
    server = edge_factory.start()
    idle = RawConn(server.http.host, server.http.port)
    assert idle.request("GET", "/healthz").status == 200
    busy = RawConn(server.http.host, server.http.port)
    busy_path = f"/{unique('busy')}?delay_ms=4000"
    busy.send(b"GET " + busy_path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    time.sleep(0.3)
    server.signal(signal.SIGTERM)
    closed = idle.is_closed(timeout=3)
    alive = server.proc.poll() is None
    r = busy.read_response()
    idle.close()
    busy.close()
    assert closed, "idle keep-alive connection stayed open during drain"
    assert alive, "server exited before its in-flight request completed"
    assert r.status == 200 and r.text == demo_body("GET", busy_path)
    assert server.wait_exit(timeout=30) == 0


def test_sigint_is_graceful(edge_factory):
    server = edge_factory.start()
    with RawConn(server.http.host, server.http.port) as c:
        assert c.request("GET", "/healthz").status == 200
    server.signal(signal.SIGINT)
    rc = server.wait_exit(timeout=30)
    assert rc == 0, server.log
    assert server.log_events("draining") and server.log_events("stopped"), server.log


def test_sighup_rereads_htpasswd_and_keeps_serving(edge_factory, tmp_path):
    """SIGHUP used to take its default action and end the process. With the configuration unchanged it
    re-reads the htpasswd files at once. The file is rewritten with the same size and modification time, so
    the change watcher (which compares those) cannot be what picks it up."""
    import os

    import bcrypt

    from conftest import basic

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt.hashpw(b'wonderland', bcrypt.gensalt(rounds=4)).decode()}\n")
    before = os.stat(htpasswd)
    server = edge_factory.start(config=ROOT_ROUTE + f"""
[[route]]
path = "/private"
demo = {{ delay_ms = 2 }}
basic_auth = {{ realm = "r", htpasswd = "{htpasswd}" }}
""")
    with RawConn(server.http.host, server.http.port) as c:
        assert c.request("GET", "/private/a", headers={"Authorization": basic("alice", "wonderland")}).status == 200
    htpasswd.write_text(f"bobby:{bcrypt.hashpw(b'builder', bcrypt.gensalt(rounds=4)).decode()}\n")
    os.utime(htpasswd, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(htpasswd).st_size == before.st_size
    start = len(server.log_lines)
    server.signal(signal.SIGHUP)
    notice = server.wait_for_msg("SIGHUP: configuration unchanged, certificates and htpasswd files re-read",
                                 timeout=10, start=start)
    assert notice is not None and notice["level"] == "notice" and notice["htpasswd_files"] == "1", server.log
    assert server.proc.poll() is None, f"edge exited on SIGHUP (rc {server.proc.returncode})"
    with RawConn(server.http.host, server.http.port) as c:
        assert c.request("GET", "/healthz").status == 200
        assert c.request("GET", "/private/b", headers={"Authorization": basic("bobby", "builder")}).status == 200
        assert c.request("GET", "/private/c", headers={"Authorization": basic("alice", "wonderland")}).status == 401
    assert_logfmt(server.log_lines)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=30) == 0, server.log


def sigterm_and_time_exit(server) -> tuple[int | None, float]:
    """Lets the requests just sent reach the server, sends SIGTERM, and returns the exit code and the seconds
    from the signal to the exit."""
    time.sleep(0.3)
    t0 = time.monotonic()
    server.signal(signal.SIGTERM)
    rc = server.wait_exit(timeout=30)
    return rc, time.monotonic() - t0


def test_shutdown_timeout_bounds_drain(edge_factory):
    server = edge_factory.start(args=["--shutdown-timeout", "1"])
    c = RawConn(server.http.host, server.http.port)
    c.send(f"GET /{unique('stuck')}?delay_ms=9000 HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    rc, elapsed = sigterm_and_time_exit(server)
    c.close()
    assert rc is not None
    assert elapsed < 7, f"exit took {elapsed:.1f}s with --shutdown-timeout 1 and a 9 s request"
    assert rc == 0, server.log


def test_shutdown_deadline_holds_with_tls_and_http2_connections_open(edge_factory):
    """TLS connections still open at the deadline are closed without waiting (5 s, NIOSSL's default) for a
    close_notify the client never sends: the process exits within the configured deadline."""
    server = edge_factory.start(args=["--shutdown-timeout", "2"])
    stuck_tls = RawConn(server.https.host, server.https.port, tls=True)
    stuck_tls.send(f"GET /{unique('stuck-tls')}?delay_ms=9000 HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    h2 = H2Client(server.https.host, server.https.port)
    h2.request(f"/{unique('stuck-h2')}?delay_ms=9000")
    rc, elapsed = sigterm_and_time_exit(server)
    stuck_tls.close()
    h2.close()
    assert rc == 0, server.log
    assert elapsed < 2.9, f"exit took {elapsed:.1f}s with --shutdown-timeout 2"
    # Connections left at the deadline are closed while the event loops still run: closing them by stopping
    # the loops made their handlers schedule work on dead loops, which SwiftNIO reports (and will make fatal).
    assert "Cannot schedule tasks" not in server.log, server.log


def _served_cert(server) -> bytes:
    with socket.create_connection((server.https.host, server.https.port), timeout=30) as raw:
        with client_tls_context(["http/1.1"]).wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def _pem_cert_der(path) -> bytes:
    text = open(path).read()
    m = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S)
    assert m, f"no certificate in {path}"
    return ssl.PEM_cert_to_DER_cert(m.group(0))


def _cert_event(server) -> dict:
    events = server.log_events("self-signed certificate")
    assert len(events) == 1, f"expected one msg=\"self-signed certificate\" line:\n{server.log}"
    return events[0]


def test_self_signed_certificate_reused_across_restarts(edge_factory, tmp_path):
    state = tmp_path / "state"
    expected_path = state / "self-signed-cert.pem"

    first = edge_factory.start(state_dir=state)
    ev1 = _cert_event(first)
    assert ev1.get("action") == "generated", ev1
    assert ev1.get("path") == str(expected_path), ev1
    assert expected_path.is_file()
    pem1 = expected_path.read_bytes()
    served1 = _served_cert(first)
    assert served1 == _pem_cert_der(expected_path), "served certificate differs from the one in the state dir"

    # The certificate is valid for localhost and 127.0.0.1 when trusted explicitly.
    port = first.https.port
    for url, extra in ((f"https://localhost:{port}/healthz", ["--resolve", f"localhost:{port}:127.0.0.1"]),
                       (f"https://127.0.0.1:{port}/healthz", [])):
        res = curl("--cacert", str(expected_path), *extra, url)
        assert res.returncode == 0 and res.stdout == "ok\n", f"{url}: rc={res.returncode} {res.stderr}"

    assert first.stop() == 0

    second = edge_factory.start(state_dir=state)
    ev2 = _cert_event(second)
    assert ev2.get("action") == "reused", ev2
    assert ev2.get("path") == str(expected_path), ev2
    assert expected_path.read_bytes() == pem1
    served2 = _served_cert(second)
    assert hashlib.sha256(served2).hexdigest() == hashlib.sha256(served1).hexdigest()

    # A different state dir gets a different certificate (it is generated, not baked in).
    third = edge_factory.start(state_dir=tmp_path / "other-state")
    ev3 = _cert_event(third)
    assert ev3.get("action") == "generated", ev3
    assert _served_cert(third) != served1
