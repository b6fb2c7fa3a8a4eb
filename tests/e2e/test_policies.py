"""Per-route policies (rate limit, Basic auth) and the per-client connection limit, with real clients."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import statistics
import subprocess
import time

import bcrypt
import pytest

from conftest import H2Client, RawConn, basic, build_request, run_edge, unique, assert_no_stack_trace


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "htpasswd"
    alice = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(rounds=10)).decode()
    path.write_text(f"# users\nalice:{alice}\n")
    return path


@pytest.fixture(scope="module")
def guarded(module_edge_factory, htpasswd):
    return module_edge_factory.start(config=f"""
[limits]
max_connections_per_ip = 4

[[route]]
path = "/"
demo = {{ delay_ms = 2 }}

[[route]]
path = "/limited"
respond = {{ status = 200, body = "ok\\n" }}
rate_limit = {{ per_second = 2, burst = 5 }}

[[route]]
path = "/private"
demo = {{ delay_ms = 2 }}
basic_auth = {{ realm = "edge test", htpasswd = "{htpasswd}" }}
""")


def test_rate_limit_allows_the_burst_then_429_with_retry_after(guarded):
    with RawConn(guarded.http.host, guarded.http.port, ) as c:
        statuses = [c.request("GET", "/limited").status for _ in range(5)]
        assert statuses == [200] * 5, statuses
        refused = c.request("GET", "/limited")
        assert refused.status == 429
        assert int(refused.header("retry-after")) >= 1
        # Other routes are not limited.
        assert c.request("GET", f"/{unique('free')}").status == 200
    # Tokens come back at 2 per second.
    time.sleep(1.2)
    with RawConn(guarded.http.host, guarded.http.port) as c:
        assert c.request("GET", "/limited").status == 200


def test_rate_limit_is_per_client_address(guarded):
    """Another source address (127.0.0.3) has its own budget while 127.0.0.1 is limited."""
    with RawConn(guarded.http.host, guarded.http.port) as c:
        for _ in range(8):
            c.request("GET", "/limited")
        assert c.request("GET", "/limited").status == 429
    other = socket.create_connection((guarded.http.host, guarded.http.port), timeout=10, source_address=("127.0.0.3", 0))
    other.sendall(b"GET /limited HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := other.recv(4096):
        data += chunk
    other.close()
    assert data.startswith(b"HTTP/1.1 200 "), data[:60]


@pytest.mark.parametrize("protocol", ["http1", "http2"])
def test_basic_auth(guarded, protocol):
    import httpx
    url = (guarded.http.url if protocol == "http1" else guarded.https.url) + f"/private/{unique('p')}"
    with httpx.Client(http2=protocol == "http2", verify=False, timeout=30) as client:
        anonymous = client.get(url)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == 'Basic realm="edge test", charset="UTF-8"'
        wrong = client.get(url, headers={"Authorization": basic("alice", "queen")})
        assert wrong.status_code == 401
        unknown = client.get(url, headers={"Authorization": basic("bob", "wonderland")})
        assert unknown.status_code == 401
        garbage = client.get(url, headers={"Authorization": "Basic !!!notbase64"})
        assert garbage.status_code == 401
        ok = client.get(url, headers={"Authorization": basic("alice", "wonderland")})
        assert ok.status_code == 200
        assert ok.text.startswith("Hello from the Edge demo backend")
        again = client.get(url, headers={"Authorization": basic("alice", "wonderland")})
        assert again.status_code == 200 and again.headers["x-cache"] == "HIT"


@pytest.fixture(scope="module")
def shared_folder(module_edge_factory, htpasswd, tmp_path_factory):
    """The common nginx layout: `/` serves a folder, `/private` serves its subfolder behind Basic auth."""
    root = tmp_path_factory.mktemp("www")
    (root / "private").mkdir()
    (root / "private" / "secret.txt").write_text("the secret\n")
    (root / "public.txt").write_text("public\n")
    return module_edge_factory.start(config=f"""
[[route]]
path = "/"
static = "{root}"

[[route]]
path = "/private"
static = "{root / "private"}"
basic_auth = {{ realm = "edge test", htpasswd = "{htpasswd}" }}

[[route]]
path = "/caf%C3%A9"
respond = {{ status = 200, body = "café\\n" }}
""")


def fetch_both_ways(server, path: str, headers: dict[str, str] | None = None) -> list[tuple[int, bytes]]:
    """(status, body) of GET `path` sent as is over a raw HTTP/1.1 socket and as an HTTP/2 `:path`."""
    with RawConn(server.http.host, server.http.port) as conn:
        response = conn.request("GET", path, headers)
        results = [(response.status, response.body)]
    client = H2Client(server.https.host, server.https.port)
    try:
        sid = client.request(path, headers=headers)
        assert client.pump(until=lambda: client.ended(sid)), f"no answer over HTTP/2 for {path}"
        results.append((int(client.streams[sid]["status"]), client.streams[sid]["body"]))
    finally:
        client.close()
    return results


@pytest.mark.parametrize("path", [
    "/private/secret.txt", "/%70rivate/secret.txt", "/%70%72%69%76%61%74%65/secret.txt", "//private/secret.txt",
    "/./private/secret.txt", "/public.txt/../private/secret.txt", "/x/%2e%2e/private/secret.txt",
    "/private//secret.txt",
])
def test_basic_auth_cannot_be_bypassed_by_spelling_the_path_differently(shared_folder, path):
    """Routes are matched against the path in normal form (unreserved escapes decoded, slashes merged, dot
    segments resolved), as nginx matches locations against its normalised URI. Before, `/%70rivate/…` and
    `//private/…` missed the `/private` prefix, fell to `/`, and `/` served the same file without a password."""
    for status, body in fetch_both_ways(shared_folder, path):
        assert status == 401 and b"secret" not in body, (path, status, body)
    authorised = fetch_both_ways(shared_folder, path, {"Authorization": basic("alice", "wonderland")})
    assert authorised == [(200, b"the secret\n")] * 2, (path, authorised)


@pytest.mark.parametrize("path", ["/caf%C3%A9", "/caf%c3%a9", "/caf%C3%a9/x", "//caf%c3%A9"])
def test_escapes_match_a_route_whatever_the_case_of_their_hex_digits(shared_folder, path):
    """RFC 3986 §6.2.2.1: `%c3` and `%C3` are the same; the route `/café` (written `/caf%C3%A9`, as
    `edge check-config` asks) is reached by both."""
    assert fetch_both_ways(shared_folder, path) == [(200, "café\n".encode())] * 2


def test_normal_form_paths_leave_a_route_the_way_nginx_does(shared_folder):
    """`..` out of the guarded prefix lands on the public route; `..` above the root and a malformed
    percent-escape are 400 (a second decoding could read either as another path)."""
    assert fetch_both_ways(shared_folder, "/private/../public.txt") == [(200, b"public\n")] * 2
    for path, reason in (("/../public.txt", b"request path climbs above the root\n"),
                         ("/%zz/public.txt", b"malformed percent-escape in the request path\n"),
                         ("/%%37%30rivate/secret.txt", b"malformed percent-escape in the request path\n")):
        assert fetch_both_ways(shared_folder, path) == [(400, reason)] * 2, path


def test_htpasswd_is_reloaded_when_it_changes(guarded, htpasswd):
    url = f"/private/{unique('reload')}"
    bob = bcrypt.hashpw(b"builder", bcrypt.gensalt(rounds=10)).decode()
    original = htpasswd.read_text()
    try:
        htpasswd.write_text(original + f"bob:{bob}\n")
        deadline = time.monotonic() + 15
        while True:
            with RawConn(guarded.http.host, guarded.http.port) as c:
                status = c.request("GET", url, headers={"Authorization": basic("bob", "builder")}).status
            if status == 200:
                break
            assert time.monotonic() < deadline, "new htpasswd user not accepted within 15 s"
            time.sleep(0.5)
        assert guarded.log_events("htpasswd reloaded"), guarded.log
    finally:
        htpasswd.write_text(original)


def test_htpasswd_caught_mid_write_keeps_the_users(edge_factory, tmp_path):
    """A file cut short inside a line (a writer still at work, or one that died) must not drop users: the
    previous ones stay, one warning says why (not one every two seconds), and the finished file is taken."""
    path = tmp_path / "htpasswd"
    hashes = {name: bcrypt.hashpw(name.encode(), bcrypt.gensalt(rounds=4)).decode() for name in ("alice", "bob")}
    path.write_text("".join(f"{name}:{hashes[name]}\n" for name in ("alice", "bob")))
    server = edge_factory.start(config=f"""
[[route]]
path = "/"
demo = {{ delay_ms = 2 }}
basic_auth = {{ realm = "r", htpasswd = "{path}" }}
""")

    def status(user: str) -> int:
        with RawConn(server.http.host, server.http.port) as c:
            return c.request("GET", f"/{unique('mid')}", headers={"Authorization": basic(user, user)}).status

    path.write_text(f"alice:{hashes['alice']}\nbob:{hashes['bob'][:20]}")
    time.sleep(6.5)  # three checks of the watcher
    assert (status("alice"), status("bob")) == (200, 200)
    warnings = server.log_events("htpasswd not reloaded, keeping the previous users")
    assert len(warnings) == 1, server.log
    assert ":2: a bcrypt hash has 60 characters, this one 20" in warnings[0]["reason"], warnings
    path.write_text(f"bob:{hashes['bob']}\n")
    deadline = time.monotonic() + 15
    while status("alice") != 401:
        assert time.monotonic() < deadline, "the finished file was not taken within 15 s"
        time.sleep(0.5)
    assert status("bob") == 200
    assert [e["users"] for e in server.log_events("htpasswd reloaded")] == ["1"], server.log


def test_credentials_never_logged(guarded):
    with RawConn(guarded.http.host, guarded.http.port) as c:
        c.request("GET", "/private/x", headers={"Authorization": basic("alice", "wonderland")})
    time.sleep(0.3)
    log = guarded.log
    assert "wonderland" not in log
    assert base64.b64encode(b"alice:wonderland").decode() not in log


def test_max_connections_per_ip(guarded):
    held = [RawConn(guarded.http.host, guarded.http.port) for _ in range(4)]
    try:
        for c in held:
            assert c.request("GET", "/healthz").status == 200
        extra = socket.create_connection((guarded.http.host, guarded.http.port), timeout=10)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = extra.recv(1024)
        except ConnectionResetError:
            data = b""
        extra.close()
        assert data == b"", "fifth connection from one address was served with max_connections_per_ip = 4"
        # Another address is not affected.
        other = socket.create_connection((guarded.http.host, guarded.http.port), timeout=10, source_address=("127.0.0.4", 0))
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert other.recv(1024).startswith(b"HTTP/1.1 200 ")
        other.close()
    finally:
        for c in held:
            c.close()


@pytest.mark.parametrize("hash_,error", [
    ("plaintext", "not a password hash Edge can verify"),
    # bcrypt allows costs 04 to 31; HummingbirdBcrypt traps on others (the dummy hash made at start).
    ("$2b$99$OcA2cH3heCQ3P7Z4h27dxOQ0t1olxj5hJfNDepHYbUMhLKkbvZsEq", "the bcrypt cost (the number after $2b$) must be 04 to 31"),
    ("$2b$03$OcA2cH3heCQ3P7Z4h27dxOQ0t1olxj5hJfNDepHYbUMhLKkbvZsEq", "the bcrypt cost (the number after $2b$) must be 04 to 31"),
])
def test_unusable_htpasswd_is_refused_at_start(tmp_path, hash_, error):
    bad = tmp_path / "htpasswd"
    bad.write_text(f"alice:{hash_}\n")
    config = tmp_path / "edge.toml"
    config.write_text(f"""
[[listener]]
address = "127.0.0.1:0"
[[route]]
path = "/"
demo = {{}}
basic_auth = {{ realm = "x", htpasswd = "{bad}" }}
""")
    result = run_edge(["--config", str(config), "--state-dir", str(tmp_path / "state")])
    assert result.returncode == 1
    assert f"route[0].basic_auth.htpasswd: {bad}:1: {error}" in result.stderr, result.stderr
    assert_no_stack_trace(result.stderr)
    checked = run_edge(["check-config", str(config)])
    assert checked.returncode == 1 and f"{bad}:1: {error}" in checked.stderr, checked.stderr


@pytest.mark.parametrize("rate", ["5e-324", "1e-10", "0.0009", "0"])
def test_rate_limit_below_one_request_per_1000_seconds_is_refused(tmp_path, rate):
    """A tiny rate once made the limiter's nanoseconds per request infinite or overflow, and the server
    trapped at start."""
    config = tmp_path / "edge.toml"
    config.write_text(f"""
[[listener]]
address = "127.0.0.1:0"
[[route]]
path = "/"
demo = {{}}
rate_limit = {{ per_second = {rate}, burst = 1000000 }}
""")
    result = run_edge(["check-config", str(config)])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "route[0].rate_limit.per_second: expected a number of requests per second from 0.001 to 1000000" in result.stderr
    assert_no_stack_trace(result.stderr)


def test_slowest_rate_limit_with_the_largest_burst_serves(edge_factory):
    server = edge_factory.start(config="""
[[route]]
path = "/"
demo = { delay_ms = 0 }
rate_limit = { per_second = 0.001, burst = 1000000 }
""")
    with RawConn(server.http.host, server.http.port) as c:
        assert c.request("GET", "/x").status == 200


def test_rate_limit_keys_on_x_forwarded_for_only_from_trusted_proxies(edge_factory):
    server = edge_factory.start(config="""
[client_address]
trusted_proxies = ["127.0.0.1"]

[[route]]
path = "/"
respond = { status = 200, body = "ok\\n" }
rate_limit = { per_second = 1, burst = 2 }
""")

    def status(source: str, forwarded: str | None) -> int:
        s = socket.create_connection((server.http.host, server.http.port), timeout=10, source_address=(source, 0))
        extra = f"X-Forwarded-For: {forwarded}\r\n" if forwarded else ""
        s.sendall(f"GET / HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        s.close()
        return int(data.split(b" ", 2)[1])

    # Behind the trusted proxy 127.0.0.1, each forwarded client has its own budget of 2.
    assert [status("127.0.0.1", "203.0.113.5") for _ in range(3)] == [200, 200, 429]
    assert status("127.0.0.1", "203.0.113.6") == 200
    # An untrusted peer cannot pick its identity: its X-Forwarded-For is ignored.
    assert [status("127.0.0.5", f"198.51.100.{i}") for i in range(3)] == [200, 200, 429]


def htpasswd_tool(path, *args: str) -> None:
    """Apache's own `htpasswd` (Debian's apache2-utils), the tool people make these files with: `args` are its
    options, then the user and the password."""
    subprocess.run(["htpasswd", *args[:-2], str(path), *args[-2:]], check=True, capture_output=True)


@pytest.fixture(scope="module")
def apache_formats(module_edge_factory, tmp_path_factory):
    """One user per format Apache's tools write: bcrypt as `htpasswd -B` writes it ($2y$), MD5-crypt ($apr1$,
    `htpasswd -m`), SHA-1 (`htpasswd -s`), and salted SHA-1 ({SSHA}, from LDAP tools)."""
    folder = tmp_path_factory.mktemp("apache")
    path = folder / "htpasswd"
    path.write_text("")
    htpasswd_tool(path, "-bB", "-C", "5", "bea", "bcrypt pass")
    htpasswd_tool(path, "-bm", "amy", "md5 pass")
    htpasswd_tool(path, "-bs", "sam", "sha pass")
    salt = b"\x07\x08\x09\x0a"
    ssha = base64.b64encode(hashlib.sha1(b"ssha pass" + salt).digest() + salt).decode()
    with open(path, "a") as f:
        f.write(f"sue:{{SSHA}}{ssha}\n")
    assert path.read_text().startswith("bea:$2y$05$"), path.read_text()
    server = module_edge_factory.start(config=f"""
[[route]]
path = "/"
respond = {{ status = 200, body = "in\\n" }}
basic_auth = {{ realm = "r", htpasswd = "{path}" }}
""")
    return server, path


@pytest.mark.parametrize("user,password", [("bea", "bcrypt pass"), ("amy", "md5 pass"), ("sam", "sha pass"), ("sue", "ssha pass")])
@pytest.mark.parametrize("protocol", ["http1", "http2"])
def test_htpasswd_formats_from_apache_tools(apache_formats, user, password, protocol):
    """`htpasswd -B` writes $2y$ hashes: the file loaded, but no password ever matched, locking every user out."""
    server, _ = apache_formats

    def status(credentials: str) -> int:
        if protocol == "http1":
            with RawConn(server.http.host, server.http.port) as c:
                return c.request("GET", "/x", headers={"Authorization": credentials}).status
        client = H2Client(server.https.host, server.https.port)
        try:
            sid = client.request("/x", headers={"authorization": credentials})
            assert client.pump(until=lambda: client.ended(sid))
            return int(client.streams[sid]["status"])
        finally:
            client.close()

    assert status(basic(user, password)) == 200
    assert status(basic(user, password + "!")) == 401
    assert status(basic(user + "x", password)) == 401


def test_weak_formats_are_named_in_one_warning_each(apache_formats):
    server, path = apache_formats
    warnings = [e["line"] for e in server.log_events("htpasswd: weak password hash")]
    assert len(warnings) == 3, server.log
    assert f'{path}:2: user "amy" has a $apr1$ (MD5-crypt) hash' in warnings[0]
    assert f'{path}:3: user "sam" has a {{SHA}} (unsalted SHA-1) hash' in warnings[1]
    assert f'{path}:4: user "sue" has a {{SSHA}} (salted SHA-1) hash' in warnings[2]


def test_check_config_names_every_line_it_cannot_verify(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text("ok:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\nplain:secret\ndes:ab01FAX.bQRSU\n# fine\nmd5:$1$salt$hash\n")
    config = tmp_path / "edge.toml"
    config.write_text(f'[[route]]\npath = "/"\ndemo = {{}}\nbasic_auth = {{ realm = "r", htpasswd = "{path}" }}\n')
    result = run_edge(["check-config", str(config)])
    assert result.returncode != 0
    for line in (2, 3, 5):
        assert f"{path}:{line}: not a password hash Edge can verify" in result.stderr, result.stderr
    assert f"{path}:1:" not in result.stderr


def median_check_times(edge_factory, tmp_path, users: dict[str, list[str]], names: list[str], rounds: int) -> dict[str, float]:
    """Starts Edge with a route behind an htpasswd file holding `users` (name → htpasswd options, password "right")
    and returns, for each of `names`, the median time of a wrong-password request (interleaved rounds, a new
    password each time so that no verdict is remembered)."""
    path = tmp_path / "htpasswd"
    path.write_text("")
    for user, options in users.items():
        htpasswd_tool(path, *options, user, "right")
    server = edge_factory.start(config=f"""
[[route]]
path = "/"
respond = {{ status = 200, body = "in\\n" }}
basic_auth = {{ realm = "r", htpasswd = "{path}" }}
""")

    def timed(user: str, attempt: int) -> float:
        with RawConn(server.http.host, server.http.port) as c:
            start = time.monotonic()
            assert c.request("GET", "/", headers={"Authorization": basic(user, f"wrong {attempt}")}).status == 401
            return time.monotonic() - start

    times: dict[str, list[float]] = {name: [] for name in names}
    for attempt in range(rounds):
        for name in names:
            times[name].append(timed(name, attempt))
    return {name: statistics.median(values) for name, values in times.items()}


def test_unknown_and_known_users_cost_the_same(edge_factory, tmp_path):
    """No timing oracle: a known user with a wrong password and an unknown user each cost one check at the file's
    cost. Before, a $2y$ user failed in about 1 ms while an unknown user took a full bcrypt."""
    medians = median_check_times(edge_factory, tmp_path, {"alice": ["-bB", "-C", "10"]}, ["alice", "mallory"], 7)
    assert min(medians.values()) > 0.01, medians  # both ran a cost-10 bcrypt
    assert 0.5 < medians["alice"] / medians["mallory"] < 2.0, medians


def test_a_file_mixing_formats_does_not_tell_which_kind_of_hash_a_user_has(edge_factory, tmp_path):
    """Every check runs one verification per kind of hash in the file (the user's own for its kind, a dummy for
    the others), so a user with an $apr1$ hash, one with bcrypt and an unknown name cost the same. Before, the
    $apr1$ user paid its own check on top of the dummy bcrypt: about twice as long."""
    medians = median_check_times(
        edge_factory, tmp_path, {"alice": ["-bB", "-C", "8"], "bob": ["-bm"], "carol": ["-bs"]},
        ["alice", "bob", "carol", "mallory"], 9,
    )
    assert max(medians.values()) / min(medians.values()) < 1.5, medians


def test_password_checks_queue_is_bounded_and_files_do_not_wait_behind_it(edge_factory, tmp_path):
    """Two dozen requests with distinct wrong passwords (cost 12) made a 200 KB file wait 5–8 s on the thread pool
    they shared. Checks now run on their own threads behind a bounded queue: beyond it a request gets 503 with
    Retry-After at once, and file serving never waits for them."""
    path = tmp_path / "htpasswd"
    path.write_text("")
    htpasswd_tool(path, "-bB", "-C", "12", "alice", "right")
    www = tmp_path / "www"
    www.mkdir()
    payload = os.urandom(200 * 1024)
    (www / "big.bin").write_bytes(payload)
    server = edge_factory.start(config=f"""
[limits]
password_check_threads = 1
password_check_queue = 8

[[route]]
path = "/files"
static = "{www}"

[[route]]
path = "/private"
respond = {{ status = 200, body = "in\\n" }}
basic_auth = {{ realm = "r", htpasswd = "{path}" }}
""")
    conns = [RawConn(server.http.host, server.http.port) for _ in range(24)]
    try:
        for i, c in enumerate(conns):
            c.send(build_request("GET", "/private/", {"Authorization": basic("alice", f"guess {i}")}))
        time.sleep(0.3)
        start = time.monotonic()
        with RawConn(server.http.host, server.http.port) as c:
            got = c.request("GET", "/files/big.bin")
        file_seconds = time.monotonic() - start
        assert got.status == 200 and got.body == payload
        responses = [c.read_response() for c in conns]
        checks_seconds = time.monotonic() - start
    finally:
        for c in conns:
            c.close()
    statuses = sorted(r.status for r in responses)
    assert statuses.count(401) == 9 and statuses.count(503) == 15, statuses  # one running + 8 queued
    assert all(r.header("retry-after") == "1" for r in responses if r.status == 503)
    # The file came while the password checks (9 × cost 12, one thread) were still running.
    assert file_seconds < checks_seconds / 2, (file_seconds, checks_seconds)
