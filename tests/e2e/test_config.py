"""Configuration, CLI flags, environment variables, check-config and routing."""

from __future__ import annotations

import re
import resource
import shutil
import socket
import ssl
import subprocess

import pytest

from conftest import (REPO, RawConn, assert_logfmt, assert_no_stack_trace, clean_env, client_tls_context, curl,
                      demo_body, parse_logfmt, require_binary, run_edge, unique)

ROOT_ROUTE = """
[[route]]
path = "/"
demo = { delay_ms = 2 }
"""

LOOPBACK = ["--http", "127.0.0.1:0", "--https", "127.0.0.1:0"]

CONTRACT_EXAMPLE = """\
threads = 2
state_dir = "/var/lib/edge"
log_level = "info"
server_name = "edge"
shutdown_timeout_seconds = 30
shutdown_delay_seconds = 0   # /healthz answers 503 this long before listeners close

[[listener]]
address = "127.0.0.1:0"
tls = true               # certificate/private_key optional: self-signed when absent
# certificate = "cert.pem"
# private_key = "key.pem"

[[listener]]
address = "127.0.0.1:0"  # tls = false (default): plain HTTP/1.1

[limits]
max_connections = 16384
max_in_flight = 25000
max_header_bytes = 32768
max_body_bytes = 1048576
http2_max_concurrent_streams = 100

[timeouts]
tls_handshake_seconds = 10
keepalive_seconds = 75

[cache]
max_entries = 10000
max_bytes = 67108864
max_entry_bytes = 1048576
ttl_seconds = 60

[[route]]
path = "/"                      # prefix; longest match wins
demo = { delay_ms = 2 }
cache_ttl_seconds = 60          # optional; 0 disables caching for this route

[[route]]
path = "/hello"
respond = { status = 200, body = "hi\\n", content_type = "text/plain; charset=utf-8" }
"""

# Line numbers matter: see the assertions in test_check_config_reports_every_error.
BAD_CONFIG = """\
threads = "four"
colour = "blue"

[limits]
max_in_flight = 10

[[listener]]
address = "127.0.0.1:99999"

[[route]]
path = "/"
demo = { delay_ms = 2 }

[[route]]
path = "/both"
demo = { delay_ms = 2 }
respond = { status = 200, body = "x" }

[[route]]
path = "/bad"
demo = { delay_ms = "x" }
"""


def error_lines(text: str, fname: str) -> list[str]:
    return [l for l in text.splitlines() if l.startswith(fname + ":")]


def check_bad_config_output(stderr: str) -> None:
    lines = error_lines(stderr, "bad.toml")
    assert len(lines) == 5, f"expected exactly 5 error lines, got {len(lines)}:\n{stderr}"
    patterns = {
        "threads": r"bad\.toml:1: threads: .+",
        "unknown key": r"bad\.toml:2: colour: .+",
        "bad port": r"bad\.toml:8: listener\[\d+\]\.address: .+",
        "two handlers": r"bad\.toml:1[4-7]: route\[(\d+)\](\.demo|\.respond)?: .+",
        # INTERFACE.md's example wording is "expected a non-negative integer, got string "x""
        "wrong type": r'bad\.toml:21: route\[(\d+)\]\.demo\.delay_ms: expected .*integer, got string "x"',
    }
    matched = {}
    for what, pat in patterns.items():
        hits = [re.fullmatch(pat, l) for l in lines]
        hits = [h for h in hits if h]
        assert len(hits) == 1, f"{what}: no (or several) line matching {pat!r} in:\n{stderr}"
        matched[what] = hits[0]
    # the two route errors name consecutive routes
    assert int(matched["wrong type"].group(1)) == int(matched["two handlers"].group(1)) + 1, lines


# --------------------------------------------------------------------------- check-config

def test_check_config_repo_example():
    example = REPO / "edge.toml"
    assert example.is_file(), "edge.toml missing at the repo root"
    res = run_edge(["check-config", "edge.toml"], cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "edge.toml: ok" in (res.stdout + res.stderr).splitlines(), res.stdout + res.stderr


def test_check_config_contract_example(tmp_path):
    (tmp_path / "full.toml").write_text(CONTRACT_EXAMPLE)
    res = run_edge(["check-config", "full.toml"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "full.toml: ok" in (res.stdout + res.stderr).splitlines()


def test_check_config_reports_every_error(tmp_path):
    (tmp_path / "bad.toml").write_text(BAD_CONFIG)
    res = run_edge(["check-config", "bad.toml"], cwd=tmp_path)
    assert res.returncode == 1, f"rc={res.returncode}\n{res.stdout}\n{res.stderr}"
    check_bad_config_output(res.stderr)
    assert "ok" not in res.stdout.split()
    assert_no_stack_trace(res.stdout + res.stderr)


def test_check_config_toml_syntax_error_has_line(tmp_path):
    (tmp_path / "syntax.toml").write_text('threads = 2\n\n[limits\nmax_in_flight = 3\n')
    res = run_edge(["check-config", "syntax.toml"], cwd=tmp_path)
    assert res.returncode == 1
    assert any(l.startswith("syntax.toml:3:") for l in res.stderr.splitlines()), res.stderr
    assert_no_stack_trace(res.stdout + res.stderr)


@pytest.mark.parametrize("header", ["[=]", "[[,]]", "[ #", "["])
def test_table_header_without_a_key_is_a_syntax_error_not_a_crash(tmp_path, header):
    """The toml++ inside TOMLKit asserts that a table header starts with a key and aborts the process;
    Edge finds these first and reports them like any syntax error, for check-config and at start."""
    (tmp_path / "header.toml").write_text(f"threads = 2\n{header}\nmax_in_flight = 3\n")
    for args in (["check-config", "header.toml"], ["serve", "--config", "header.toml", *LOOPBACK]):
        res = run_edge(args, cwd=tmp_path)
        assert res.returncode == 1, res.stdout + res.stderr
        assert error_lines(res.stderr, "header.toml") == [
            "header.toml:2: syntax: a table header must start with a key (a bare key of A-Z a-z 0-9 _ -, or a "
            "quoted one): [name] or [[name]]"], res.stderr
        assert_no_stack_trace(res.stdout + res.stderr)


@pytest.mark.parametrize("value", ["[}", "[ \"::1\", }", "[ # a comment\n}"])
def test_brace_in_an_array_is_a_syntax_error_not_a_crash(tmp_path, value):
    """toml++ hands a `}` where an array expects an element to its value parser, which asserts it never gets
    one and aborts the process (found by fuzzing check-config); Edge finds it first and names the key."""
    (tmp_path / "brace.toml").write_text(f"threads = 2\n[client_address]\ntrusted_proxies = {value}\n")
    line = 3 + value.count("\n")
    for args in (["check-config", "brace.toml"], ["serve", "--config", "brace.toml", *LOOPBACK]):
        res = run_edge(args, cwd=tmp_path)
        assert res.returncode == 1, res.stdout + res.stderr
        assert error_lines(res.stderr, "brace.toml") == [
            f"brace.toml:{line}: client_address.trusted_proxies: syntax: expected an array element or the closing "
            "']', saw '}'"], res.stderr
        assert_no_stack_trace(res.stdout + res.stderr)


def test_check_config_missing_file(tmp_path):
    res = run_edge(["check-config", "nope.toml"], cwd=tmp_path)
    assert res.returncode == 1
    assert "nope.toml" in res.stderr
    assert_no_stack_trace(res.stdout + res.stderr)


# --------------------------------------------------------------------------- files the config names

def make_certificate(directory, name: str):
    """A self-signed EC certificate and its key, as PEM files `name`.pem and `name`.key in directory."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl CLI is not installed", pytrace=False)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_config(tmp_path) -> tuple[str, list[str]]:
    """A config whose every value is valid on its own but names files and folders that cannot be used at
    start (or two listeners on one address); returns it with the error lines check-config must print."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    cert_a, _ = make_certificate(tmp_path, "a")
    _, key_b = make_certificate(tmp_path, "b")
    port = free_port()
    config = f"""\
state_dir = "{a_file}"

[[listener]]
address = "127.0.0.1:0"
tls = true
certificate = "{tmp_path}/missing.pem"
private_key = "{tmp_path}"

[[listener]]
address = "127.0.0.1:0"
tls = true
certificate = "{garbage}"
private_key = "{garbage}"

[[listener]]
address = "127.0.0.1:0"
tls = true
certificate = "{cert_a}"
private_key = "{key_b}"

[[listener]]
address = "0.0.0.0:{port}"
[[listener]]
address = "127.0.0.1:{port}"

[[route]]
path = "/missing"
static = "{tmp_path}/no-such-folder"

[[route]]
path = "/file"
static = {{ root = "{a_file}", listing = true }}

[[route]]
path = "/auth"
demo = {{}}
basic_auth = {{ realm = "r", htpasswd = "{tmp_path}/no-htpasswd" }}

[[route]]
path = "/nul"
respond = {{ status = 200, body = "cut\\u0000here" }}
"""
    expected = [
        f"files.toml:1: state_dir: {a_file} exists and is not a folder",
        f"files.toml:6: listener[0].certificate: cannot read {tmp_path}/missing.pem: no such file or directory",
        f"files.toml:7: listener[0].private_key: {tmp_path} is not a regular file",
        f"files.toml:12: listener[1].certificate: {garbage} is not a PEM certificate",
        f"files.toml:13: listener[1].private_key: {garbage} is not an unencrypted PEM private key",
        f"files.toml:19: listener[2].private_key: {key_b} is not the private key of the certificate {cert_a}",
        f"files.toml:24: listener[4].address: listener[3] (line 22) already listens on 0.0.0.0:{port}, "
        f"which includes 127.0.0.1:{port}",
        f"files.toml:28: route[0].static: cannot serve {tmp_path}/no-such-folder: no such file or directory",
        f"files.toml:32: route[1].static.root: {a_file} is not a folder",
        f"files.toml:37: route[2].basic_auth.htpasswd: {tmp_path}/no-htpasswd: cannot read the htpasswd file: no such file or directory",
        "files.toml:41: route[3].respond: a string with a NUL character (\\u0000) cannot be used: it would be cut short there",
    ]
    return config, expected


def test_check_config_checks_the_files_it_names(tmp_path):
    """Each of these used to pass check-config and then fail at start (or, for the NUL, silently serve a
    shorter body); every one is reported, with its key and line."""
    config, expected = files_config(tmp_path)
    (tmp_path / "files.toml").write_text(config)
    res = run_edge(["check-config", "files.toml"], cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert error_lines(res.stderr, "files.toml") == expected, res.stderr
    assert_no_stack_trace(res.stdout + res.stderr)


def test_start_reports_the_same_file_problems(tmp_path):
    config, expected = files_config(tmp_path)
    (tmp_path / "files.toml").write_text(config)
    res = start_must_fail(["serve", "--config", "files.toml", *LOOPBACK], tmp_path)
    assert error_lines(res.stderr, "files.toml") == expected, res.stderr


def test_check_config_accepts_usable_files(tmp_path):
    cert, key = make_certificate(tmp_path, "site")
    (tmp_path / "www").mkdir()
    (tmp_path / "state").mkdir()
    (tmp_path / "good.toml").write_text(f"""\
state_dir = "{tmp_path}/state"
[[listener]]
address = "127.0.0.1:0"
tls = true
certificate = "{cert}"
private_key = "{key}"
[[listener]]
address = "127.0.0.1:0"
[[route]]
path = "/www"
static = "{tmp_path}/www"
[[route]]
path = "/cut"
respond = {{ status = 200, body = '\\u0000 is only text in a literal string' }}  # and \\u0000 in a comment
""")
    res = run_edge(["check-config", "good.toml"], cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "good.toml: ok", res.stdout + res.stderr


def test_nul_byte_in_the_file_is_refused(tmp_path):
    # toml++ reads the text as a C string: without this check, the route after the NUL would be ignored.
    (tmp_path / "nul.toml").write_bytes(b'threads = 1\n\0\n[[route]]\npath = "x"\ndemo = {}\n')
    res = run_edge(["check-config", "nul.toml"], cwd=tmp_path)
    assert res.returncode == 1
    assert error_lines(res.stderr, "nul.toml") == [
        "nul.toml:2: syntax: the file contains a NUL byte, which TOML does not allow: everything after it would be ignored"
    ], res.stderr


@pytest.mark.parametrize("how", ["flag", "env"])
def test_state_dir_override_that_is_a_file_is_refused(tmp_path, how):
    a_file = tmp_path / "a-file"
    a_file.write_text("x\n")
    if how == "flag":
        res = run_edge(["serve", *LOOPBACK, "--state-dir", str(a_file)], cwd=tmp_path)
        expected = f"command line: --state-dir: {a_file} exists and is not a folder"
    else:
        res = run_edge(["serve", *LOOPBACK], env={"EDGE_STATE_DIR": str(a_file)}, cwd=tmp_path)
        expected = f"environment: EDGE_STATE_DIR: {a_file} exists and is not a folder"
    assert res.returncode == 1, res.stdout + res.stderr
    assert expected in res.stderr.splitlines(), res.stderr
    assert "msg=ready" not in res.stderr


# Nothing can be created in /proc, not even by root (the tests may run as root, for whom permission bits
# make every folder writable).
UNWRITABLE_STATE = "/proc/edge-state"
UNWRITABLE_STATE_PROBLEM = f"cannot create {UNWRITABLE_STATE} for the self-signed certificate: /proc: no such file or directory"


def test_state_dir_that_cannot_take_the_self_signed_certificate(tmp_path):
    """check-config tries the state folder when a TLS listener needs the self-signed certificate, and says
    so with the key and line; start-up says the same; a server with no such listener never writes there."""
    tls = f'state_dir = "{UNWRITABLE_STATE}"\n\n[[listener]]\naddress = "127.0.0.1:0"\ntls = true\n'
    (tmp_path / "state.toml").write_text(tls)
    expected = [f"state.toml:1: state_dir: {UNWRITABLE_STATE_PROBLEM}"]
    res = run_edge(["check-config", "state.toml"], cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert error_lines(res.stderr, "state.toml") == expected, res.stderr
    res = run_edge(["serve", "--config", "state.toml"], cwd=tmp_path)
    assert res.returncode == 1 and "msg=ready" not in res.stderr, res.stdout + res.stderr
    assert error_lines(res.stderr, "state.toml") == expected, res.stderr
    (tmp_path / "plain.toml").write_text(f'state_dir = "{UNWRITABLE_STATE}"\n\n[[listener]]\naddress = "127.0.0.1:0"\n')
    res = run_edge(["check-config", "plain.toml"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_state_dir_flag_that_cannot_take_the_self_signed_certificate(tmp_path):
    res = run_edge(["serve", "--https", "127.0.0.1:0", "--http", "none", "--state-dir", UNWRITABLE_STATE], cwd=tmp_path)
    assert res.returncode == 1 and "msg=ready" not in res.stderr, res.stdout + res.stderr
    assert f"command line: --state-dir: {UNWRITABLE_STATE_PROBLEM}" in res.stderr.splitlines(), res.stderr


def test_host_name_and_the_address_it_resolves_to_clash(tmp_path):
    """`localhost:P` and the address localhost binds (found as the server finds it: the resolver's first
    answer, with glibc's default hints) cannot both listen; check-config says so before start-up fails."""
    first = socket.getaddrinfo("localhost", None, flags=socket.AI_ADDRCONFIG | socket.AI_V4MAPPED)[0][4][0]
    written = f"[{first}]:18093" if ":" in first else f"{first}:18093"
    (tmp_path / "names.toml").write_text(
        f'[[listener]]\naddress = "localhost:18093"\n\n[[listener]]\naddress = "{written}"\n'
        '\n[[listener]]\naddress = "localhost:18094"\n')
    res = run_edge(["check-config", "names.toml"], cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert error_lines(res.stderr, "names.toml") == [
        f"names.toml:5: listener[1].address: listener[0] (line 2) already listens on localhost:18093, "
        f"the same address ({first})"
    ], res.stderr


def test_listener_flag_on_an_address_already_in_the_config(tmp_path):
    port = free_port()
    (tmp_path / "c.toml").write_text(f'[[listener]]\naddress = "127.0.0.1:{port}"\ntls = true\n' + ROOT_ROUTE)
    res = start_must_fail(["serve", "--config", "c.toml", "--http", f"127.0.0.1:{port}"], tmp_path)
    assert f"command line: --http: another listener already listens on 127.0.0.1:{port}" in res.stderr.splitlines(), \
        res.stderr


def test_ip_address_that_is_not_one_is_refused(tmp_path):
    (tmp_path / "ip.toml").write_text('[[listener]]\naddress = "999.1.1.1:80"\n')
    res = run_edge(["check-config", "ip.toml"], cwd=tmp_path)
    assert res.returncode == 1
    assert error_lines(res.stderr, "ip.toml")[0].startswith("ip.toml:2: listener[0].address: expected HOST:PORT"), res.stderr


# --------------------------------------------------------------------------- failing starts

def start_must_fail(args, tmp_path, env=None, timeout=30):
    try:
        res = run_edge(args + ["--state-dir", str(tmp_path / "state")], env=env, cwd=tmp_path,
                       timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"edge {args} env={env} kept running instead of exiting with an error", pytrace=False)
    assert res.returncode == 1, f"rc={res.returncode}\nstdout:{res.stdout}\nstderr:{res.stderr}"
    assert_no_stack_trace(res.stdout + res.stderr)
    assert "msg=ready" not in res.stderr
    return res


def test_serve_with_bad_config_exits_1(tmp_path):
    (tmp_path / "bad.toml").write_text(BAD_CONFIG)
    res = start_must_fail(["serve", "--config", "bad.toml", *LOOPBACK], tmp_path)
    check_bad_config_output(res.stderr)


def test_edge_threads_abc(tmp_path):
    res = start_must_fail(["serve", *LOOPBACK], tmp_path, env={"EDGE_THREADS": "abc"})
    assert 'EDGE_THREADS: expected a positive integer, got "abc"' in res.stderr, res.stderr


@pytest.mark.parametrize("var,value", [
    ("EDGE_MAX_IN_FLIGHT", "lots"),
    ("EDGE_MAX_CONNECTIONS", "-3"),
    ("EDGE_SHUTDOWN_TIMEOUT", "soon"),
    ("EDGE_LOG_LEVEL", "loud"),
])
def test_bad_env_values(tmp_path, var, value):
    res = start_must_fail(["serve", *LOOPBACK], tmp_path, env={var: value})
    assert var in res.stderr, res.stderr


@pytest.mark.parametrize("var,flag,value,message", [
    ("EDGE_THREADS", "--threads", "2147483648", "must be between 1 and 1024, got 2147483648"),
    ("EDGE_MAX_CONNECTIONS", None, "9223372036854775807",
     "must be between 1 and 10000000, got 9223372036854775807"),
    ("EDGE_MAX_IN_FLIGHT", None, "10000001", "must be between 1 and 10000000, got 10000001"),
    ("EDGE_SHUTDOWN_TIMEOUT", "--shutdown-timeout", "9223372036854775807",
     'expected a number of seconds between 0 and 3600, got "9223372036854775807"'),
])
def test_overrides_have_the_config_files_ranges(tmp_path, var, flag, value, message):
    """An environment variable or flag is held to the range of the key it overrides: 2^31 threads once
    made the server try to allocate 32 GiB and abort."""
    res = start_must_fail(["serve", *LOOPBACK], tmp_path, env={var: value})
    assert f"environment: {var}: {message}" in res.stderr.splitlines(), res.stderr
    if flag:
        res = start_must_fail(["serve", *LOOPBACK, flag, value], tmp_path)
        assert f"command line: {flag}: {message}" in res.stderr.splitlines(), res.stderr


def test_bad_edge_http_env(tmp_path):
    (tmp_path / "c.toml").write_text(
        '[[listener]]\naddress = "127.0.0.1:0"\n' + ROOT_ROUTE)
    res = start_must_fail(["serve", "--config", "c.toml"], tmp_path,
                          env={"EDGE_HTTP": "not-an-address", "EDGE_HTTPS": "none"})
    assert "EDGE_HTTP" in res.stderr, res.stderr


@pytest.mark.parametrize("flags,words", [
    (["--threads", "0"], ("threads",)),
    (["--threads", "abc"], ("threads",)),
    (["--log-level", "loud"], ("log-level", "log_level", "loud")),
    (["--shutdown-timeout", "soon"], ("shutdown-timeout", "shutdown_timeout", "soon")),
])
def test_bad_flags_exit_1(tmp_path, flags, words):
    res = start_must_fail(["serve", *LOOPBACK, *flags], tmp_path)
    assert any(w in res.stderr for w in words), res.stderr


def test_bad_listen_address_flag(tmp_path):
    res = start_must_fail(["serve", "--http", "localhost:notaport", "--https", "none"], tmp_path)
    assert "notaport" in res.stderr or "http" in res.stderr, res.stderr


# --------------------------------------------------------------------------- flags, env, precedence

@pytest.mark.parametrize("config,env,args,expected", [
    (None, {}, ["--threads", "3"], "3"),
    (None, {"EDGE_THREADS": "5"}, [], "5"),
    (None, {"EDGE_THREADS": "5"}, ["--threads", "3"], "3"),
    ("threads = 3\n", {}, [], "3"),
    ("threads = 3\n", {"EDGE_THREADS": "4"}, [], "4"),
], ids=["flag", "env", "flag-over-env", "config", "env-over-config"])
def test_threads_precedence(edge_factory, config, env, args, expected):
    server = edge_factory.start(config=None if config is None else config + ROOT_ROUTE, env=env, args=args)
    assert server.ready_fields.get("threads") == expected, server.log
    with RawConn(server.http.host, server.http.port) as c:
        assert c.request("GET", "/healthz").status == 200


def test_bare_command_serves_and_none_disables(edge_factory):
    server = edge_factory.start(subcommand=[], https="none", admin="none")
    assert [l.scheme for l in server.listeners] == ["http"], server.log
    assert server.listeners[0].host == "127.0.0.1"
    path = f"/{unique('bare')}"
    with RawConn(server.http.host, server.http.port) as c:
        r = c.request("GET", path)
    assert r.status == 200 and r.text == demo_body("GET", path)


def test_env_listeners(edge_factory):
    server = edge_factory.start(http=None, https=None, admin=None,
                                env={"EDGE_HTTP": "127.0.0.1:0", "EDGE_HTTPS": "none", "EDGE_ADMIN": "none"})
    assert [l.scheme for l in server.listeners] == ["http"], server.log
    with RawConn(server.http.host, server.http.port) as c:
        assert c.request("GET", "/healthz").status == 200


def test_config_listeners(edge_factory):
    server = edge_factory.start(config="""
[[listener]]
address = "127.0.0.1:0"
tls = true

[[listener]]
address = "127.0.0.1:0"
""" + ROOT_ROUTE, http=None, https=None)
    assert sorted(l.scheme for l in server.listeners) == ["http", "https"], server.log
    res = curl("-k", "--http2", "-w", "%{http_version}", "-o", "/dev/null", server.https_url + "/healthz")
    assert res.returncode == 0 and res.stdout == "2", res
    res = curl(server.http_url + "/healthz")
    assert res.returncode == 0 and res.stdout == "ok\n", res


def test_ipv6_loopback(edge_factory):
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    server = edge_factory.start(http="[::1]:0", https="[::1]:0", admin="[::1]:0")
    assert {l.host for l in server.listeners} == {"::1"}, server.log
    http_addr = server.log_events("listening")
    assert all(re.fullmatch(r"\[::1\]:\d+", e["address"]) for e in http_addr), http_addr
    res = curl(f"http://[::1]:{server.http.port}/healthz")
    assert res.returncode == 0 and res.stdout == "ok\n", res
    res = curl("-k", f"https://[::1]:{server.https.port}/healthz")
    assert res.returncode == 0 and res.stdout == "ok\n", res


def test_configured_certificate_is_served(edge_factory, tmp_path):
    if shutil.which("openssl") is None:
        pytest.fail("openssl CLI is not installed", pytrace=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    server = edge_factory.start(config=f"""
[[listener]]
address = "127.0.0.1:0"
tls = true
certificate = "{cert}"
private_key = "{key}"
""" + ROOT_ROUTE, http=None, https=None)
    with socket.create_connection((server.https.host, server.https.port), timeout=30) as raw:
        with client_tls_context(["h2"]).wrap_socket(raw, server_hostname="localhost") as tls:
            served = tls.getpeercert(binary_form=True)
    assert served == ssl.PEM_cert_to_DER_cert(cert.read_text())
    assert not server.log_events("self-signed certificate"), server.log


# --------------------------------------------------------------------------- routing

ROUTING_CONFIG = """
[[route]]
path = "/"
demo = { delay_ms = 1 }

[[route]]
path = "/hello"
respond = { status = 200, body = "hi\\n", content_type = "text/plain; charset=utf-8" }

[[route]]
path = "/hello/demo"
demo = { delay_ms = 1 }

[[route]]
path = "/x/y"
respond = { status = 418, body = "deep\\n", content_type = "text/plain" }

[[route]]
path = "/x"
respond = { status = 200, body = "shallow\\n", content_type = "text/plain" }
"""


def test_longest_prefix_routing(edge_factory):
    server = edge_factory.start(config=ROUTING_CONFIG)
    with RawConn(server.http.host, server.http.port) as c:
        # X-Demo-Fetch counts backend calls per route (fresh server: both routes start at 1).
        fetches = [c.request("GET", p).header("x-demo-fetch")
                   for p in ("/a1", "/hello/demo/b1", "/a2", "/a3", "/hello/demo/b2")]
        assert fetches == ["1", "1", "2", "3", "2"], fetches
        r = c.request("GET", "/hello")
        assert (r.status, r.body) == (200, b"hi\n")
        assert r.header("content-type") == "text/plain; charset=utf-8"
        assert r.header("content-length") == "3" and r.header("server") == "edge" and r.header("date")
        r = c.request("GET", "/hello/there?z=1")
        assert (r.status, r.body) == (200, b"hi\n")
        p = f"/hello/demo/{unique('r')}"
        r = c.request("GET", p)
        assert (r.status, r.text) == (200, demo_body("GET", p))
        r = c.request("GET", "/x/y/z")
        assert (r.status, r.body) == (418, b"deep\n")
        r = c.request("GET", "/x/other")
        assert (r.status, r.body) == (200, b"shallow\n")
        p = f"/elsewhere/{unique('r')}"
        r = c.request("GET", p)
        assert (r.status, r.text) == (200, demo_body("GET", p))
        assert c.request("GET", "/healthz").body == b"ok\n"


def test_startup_log_lines(edge_factory):
    server = edge_factory.start()
    assert_logfmt(server.log_lines)
    listening = server.log_events("listening")
    # The embedded default's admin listener is on loopback too (the tests move it to an ephemeral port).
    assert sorted(e["scheme"] for e in listening) == ["admin", "http", "https"], server.log
    assert all(re.fullmatch(r"127\.0\.0\.1:[1-9]\d*", e["address"]) for e in listening), listening
    assert re.fullmatch(r"[1-9]\d*", server.ready_fields.get("threads", "")), server.ready_fields
    # `ready` comes after every `listening` line
    msgs = [f.get("msg") for f in map(parse_logfmt, server.log_lines)]
    assert msgs.index("ready") > max(i for i, m in enumerate(msgs) if m == "listening")
    # an example of the documented timestamp format
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", server.log_events("ready")[0]["ts"])


# --------------------------------------------------------------------------- fixed responses

@pytest.mark.parametrize("respond,error", [
    ('{ status = 204, body = "x" }', "route[0].respond.body: must be empty with status 204"),
    ('{ status = 205, body = "x" }', "route[0].respond.body: must be empty with status 205"),
    ('{ status = 304, body = "abc" }', "route[0].respond.body: must be empty with status 304"),
    ('{ status = 101, body = "x" }', "route[0].respond.status: must be between 200 and 599, got 101: a 1xx status"),
    ('{ status = 100 }', "route[0].respond.status: must be between 200 and 599, got 100: a 1xx status"),
    ('{ status = 999, body = "x" }', "route[0].respond.status: must be between 200 and 599, got 999"),
    ('{ status = 42 }', "route[0].respond.status: must be between 200 and 599, got 42"),
])
def test_respond_status_and_body_are_checked(tmp_path, respond, error):
    """A body on a status that has none was sent with Content-Length, which desynchronises HTTP/1.1
    keep-alive (the body is read as the next response) and is a protocol error in HTTP/2."""
    (tmp_path / "r.toml").write_text(f'[[route]]\npath = "/a"\nrespond = {respond}\n')
    res = run_edge(["check-config", "r.toml"], cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = error_lines(res.stderr, "r.toml")
    assert len(lines) == 1 and lines[0].startswith(f"r.toml:3: {error}"), res.stderr


@pytest.mark.parametrize("respond", ['{ status = 204 }', '{ status = 304, body = "" }', '{ status = 299, body = "x" }'])
def test_respond_statuses_that_are_fine(tmp_path, respond):
    (tmp_path / "r.toml").write_text(f'[[route]]\npath = "/a"\nrespond = {respond}\n')
    res = run_edge(["check-config", "r.toml"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_threads_the_system_refuses_are_a_start_error(tmp_path):
    """With address space for about a hundred thread stacks, `--threads 1024` is refused at start with a message
    naming the setting — not NIO's trap on a failed pthread_create, with its long backtrace."""
    def limit_address_space():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    res = subprocess.run([str(require_binary()), "serve", *LOOPBACK, "--threads", "1024",
                          "--state-dir", str(tmp_path / "state")],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                         env=clean_env(), cwd=tmp_path, timeout=60, preexec_fn=limit_address_space)
    assert res.returncode == 1, f"rc={res.returncode}\nstderr:{res.stderr[-2000:]}"
    assert_no_stack_trace(res.stdout + res.stderr)
    assert re.search(r"threads = 1024: the system refused to start more than \d+ threads", res.stderr), res.stderr
    assert "msg=ready" not in res.stderr


def test_http2_engine_is_checked_by_key_and_line_and_by_variable(tmp_path):
    (tmp_path / "engine.toml").write_text('threads = 1\nhttp2_engine = "fast"\n')
    res = run_edge(["check-config", "engine.toml"], cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert 'engine.toml:2: http2_engine: expected "nio" or "edge", got "fast"' in res.stderr, res.stderr
    for engine in ("nio", "edge"):
        (tmp_path / "ok.toml").write_text(f'http2_engine = "{engine}"\n')
        assert run_edge(["check-config", "ok.toml"], cwd=tmp_path).returncode == 0
    res = run_edge(["serve", "--config", "ok.toml", "--state-dir", str(tmp_path / "state")], cwd=tmp_path,
                   env={"EDGE_HTTP2_ENGINE": "h2o"}, timeout=30)
    assert res.returncode == 1 and 'EDGE_HTTP2_ENGINE: expected "nio" or "edge", got "h2o"' in res.stderr, res.stderr
    assert_no_stack_trace(res.stdout + res.stderr)
