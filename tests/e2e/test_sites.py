"""Virtual hosts (`[[site]]`), certificates chosen by SNI and key type, the TLS policy, HTTPS redirects, security
headers, access rules and exact routes — with curl, openssl s_client and Python's ssl as the clients."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import H2Client, RawConn, curl

PLAIN = {"http": None, "https": None}


def cert(directory, name: str, cn: str, *, kind: str = "ec", sans: list[str] | None = None):
    """A self-signed certificate for `cn` (EC P-256 or RSA 2048) and its key, as PEM files."""
    crt, key = directory / f"{name}.pem", directory / f"{name}.key"
    alt = ",".join(f"DNS:{n}" for n in (sans or [cn]))
    algorithm = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if kind == "ec" else ["-newkey", "rsa:2048"]
    subprocess.run(["openssl", "req", "-x509", *algorithm, "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2",
                    "-subj", f"/CN={cn}", "-addext", f"subjectAltName={alt}"], check=True, capture_output=True, timeout=60)
    return crt, key


def peer(port: int, server_name: str | None, *, ciphers: str | None = None, tls12: bool = False) -> dict:
    """The certificate Edge serves to a client sending `server_name` (None: no SNI): its CN and key type."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if ciphers:
        context.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
            version = tls.version()
    text = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject", "-text"], input=der,
                          capture_output=True, check=True).stdout.decode()
    subject = text.splitlines()[0]
    return {"cn": subject.split("CN", 1)[1].lstrip(" =").strip(), "rsa": "rsaEncryption" in text, "version": version}


def body_for(port: int, host: str, path: str = "/", scheme: str = "http", extra: list[str] | None = None) -> tuple[int, str]:
    out = curl("-sk", "-o", "-", "-w", "\n%{http_code}", "-H", f"Host: {host}", *(extra or []), f"{scheme}://127.0.0.1:{port}{path}")
    text, _, code = out.stdout.rpartition("\n")
    return int(code), text


def headers_of(url: str, *args: str) -> dict[str, str]:
    out = curl("-sk", "-D", "-", "-o", "/dev/null", *args, url)
    fields: dict[str, str] = {}
    for line in out.stdout.splitlines()[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    status = out.stdout.split(" ", 2)[1] if out.stdout else "0"
    fields[":status"] = status
    return fields


VHOSTS = """
[[listener]]
address = "127.0.0.1:0"

[[route]]
path = "/"
respond = { body = "fallback" }

[[site]]
names = ["a.test", "www.a.test"]
[[site.route]]
path = "/"
respond = { body = "site a" }
[[site.route]]
path = "/api"
respond = { body = "site a api" }

[[site]]
names = ["*.b.test"]
[[site.route]]
path = "/"
respond = { body = "site b" }
"""


def test_the_host_chooses_the_site_exact_then_wildcard_then_the_fallback(edge_factory):
    server = edge_factory.start(config=VHOSTS, **PLAIN)
    port = server.http.port
    assert body_for(port, "a.test") == (200, "site a")
    assert body_for(port, "www.a.test", "/api/v1") == (200, "site a api")
    # Host names are case-insensitive; the port and one trailing dot are not part of the name.
    assert body_for(port, "A.Test:8080") == (200, "site a")
    assert body_for(port, "a.test.") == (200, "site a")
    assert body_for(port, "x.b.test") == (200, "site b")
    assert body_for(port, "deep.x.b.test") == (200, "site b"), "a leading wildcard covers every depth, as nginx's"
    # The wildcard's own parent is not one of its names.
    assert body_for(port, "b.test") == (200, "fallback")
    assert body_for(port, "other.test") == (200, "fallback")
    assert body_for(port, "xa.test") == (200, "fallback")
    # HTTP/1.0 without Host goes to the fallback too.
    with RawConn(server.http.host, server.http.port) as conn:
        conn.send(b"GET / HTTP/1.0\r\n\r\n")
        response = conn.read_response()
    assert response.status == 200 and response.body == b"fallback"


def test_an_absolute_form_target_names_the_host(edge_factory):
    server = edge_factory.start(config=VHOSTS, **PLAIN)
    with RawConn(server.http.host, server.http.port) as conn:
        conn.send(b"GET http://a.test/api HTTP/1.1\r\nHost: other.test\r\n\r\n")
        response = conn.read_response()
    assert response.body == b"site a api", "RFC 9112 3.2.2: the target's authority replaces Host"


@pytest.mark.parametrize("policy,status", [("421", 421), ("404", 404)])
def test_unknown_hosts_get_421_or_404_when_configured(edge_factory, policy, status):
    config = f"unknown_host = {policy}\n" + VHOSTS.split("[[route]]")[0] + "[[site]]" + VHOSTS.split("[[site]]", 1)[1]
    server = edge_factory.start(config=config, **PLAIN)
    assert body_for(server.http.port, "a.test")[0] == 200
    assert body_for(server.http.port, "nobody.test")[0] == status


def test_a_default_site_answers_unknown_hosts(edge_factory):
    config = """
[[listener]]
address = "127.0.0.1:0"
[[site]]
names = ["a.test"]
[[site.route]]
path = "/"
respond = { body = "a" }
[[site]]
names = ["c.test"]
default = true
[[site.route]]
path = "/"
respond = { body = "c" }
"""
    server = edge_factory.start(config=config, **PLAIN)
    assert body_for(server.http.port, "a.test") == (200, "a")
    assert body_for(server.http.port, "zzz.test") == (200, "c")


def test_routes_of_one_site_are_not_reachable_from_another(edge_factory):
    server = edge_factory.start(config=VHOSTS, **PLAIN)
    assert body_for(server.http.port, "x.b.test", "/api") == (200, "site b"), "b has no /api route: its / answers"


def test_sites_over_http2_use_the_authority(edge_factory, tmp_path):
    crt, key = cert(tmp_path, "fallback", "localhost")
    config = VHOSTS.replace('address = "127.0.0.1:0"', f'address = "127.0.0.1:0"\ntls = true\ncertificate = "{crt}"\nprivate_key = "{key}"', 1)
    server = edge_factory.start(config=config, **PLAIN)
    for host, expected in [("a.test", "site a"), ("x.b.test", "site b"), ("nobody.test", "fallback")]:
        code, text = body_for(server.https.port, host, scheme="https", extra=["--http2"])
        assert (code, text) == (200, expected)
        out = curl("-sk", "--http2", "--resolve", f"{host}:{server.https.port}:127.0.0.1", f"https://{host}:{server.https.port}/")
        assert out.stdout == expected


def sni_config(tmp_path, extra_site: str = "") -> tuple[str, dict]:
    files = {
        "fallback": cert(tmp_path, "fallback", "fallback.test"),
        "a": cert(tmp_path, "a", "a.test"),
        "b": cert(tmp_path, "b", "*.b.test"),
        "c-rsa": cert(tmp_path, "c-rsa", "c.test", kind="rsa"),
        "c-ec": cert(tmp_path, "c-ec", "c.test"),
    }
    config = f"""
[[listener]]
address = "127.0.0.1:0"
tls = true
certificate = "{files['fallback'][0]}"
private_key = "{files['fallback'][1]}"

[[route]]
path = "/"
respond = {{ body = "fallback" }}

[[site]]
names = ["a.test"]
certificate = "{files['a'][0]}"
private_key = "{files['a'][1]}"
[[site.route]]
path = "/"
respond = {{ body = "a" }}

[[site]]
names = ["*.b.test"]
certificate = "{files['b'][0]}"
private_key = "{files['b'][1]}"
[[site.route]]
path = "/"
respond = {{ body = "b" }}

[[site]]
names = ["c.test"]
certificates = [
  {{ certificate = "{files['c-rsa'][0]}", private_key = "{files['c-rsa'][1]}" }},
  {{ certificate = "{files['c-ec'][0]}", private_key = "{files['c-ec'][1]}" }},
]
[[site.route]]
path = "/"
respond = {{ body = "c" }}
""" + extra_site
    return config, files


def test_the_certificate_is_chosen_by_sni(edge_factory, tmp_path):
    config, _ = sni_config(tmp_path)
    server = edge_factory.start(config=config, **PLAIN)
    port = server.https.port
    assert peer(port, "a.test")["cn"] == "a.test"
    assert peer(port, "A.TEST")["cn"] == "a.test", "server names are case-insensitive"
    assert peer(port, "x.b.test")["cn"] == "*.b.test"
    # A certificate wildcard covers one label (RFC 6125 6.4.3): deeper names get the listener's own.
    assert peer(port, "y.x.b.test")["cn"] == "fallback.test"
    assert peer(port, "unknown.test")["cn"] == "fallback.test"
    assert peer(port, None)["cn"] == "fallback.test", "a client without SNI gets the listener's certificate"
    # openssl s_client, an independent client, sees the same.
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "a.test"],
                         input=b"", capture_output=True, timeout=30)
    assert b"CN = a.test" in out.stdout or b"CN=a.test" in out.stdout, out.stdout[-2000:]


def test_ecdsa_or_rsa_is_chosen_by_what_the_client_supports(edge_factory, tmp_path):
    config, _ = sni_config(tmp_path)
    server = edge_factory.start(config=config, **PLAIN)
    port = server.https.port
    modern = peer(port, "c.test")
    assert modern["cn"] == "c.test" and not modern["rsa"], "a client that verifies ECDSA gets the ECDSA certificate"
    rsa_only = peer(port, "c.test", ciphers="ECDHE-RSA-AES128-GCM-SHA256", tls12=True)
    assert rsa_only["cn"] == "c.test" and rsa_only["rsa"], "a TLS 1.2 client offering only RSA suites gets the RSA one"
    ec12 = peer(port, "c.test", ciphers="ECDHE-ECDSA-AES128-GCM-SHA256", tls12=True)
    assert not ec12["rsa"]
    # TLS 1.3 with RSA-PSS signatures only.
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "c.test", "-tls1_3",
                          "-sigalgs", "rsa_pss_rsae_sha256"], input=b"", capture_output=True, timeout=30)
    assert b"Server public key is 2048 bit" in out.stdout, out.stdout[-2000:]


def test_every_site_answers_through_its_certificate_with_curl_resolve(edge_factory, tmp_path):
    config, files = sni_config(tmp_path)
    server = edge_factory.start(config=config, **PLAIN)
    port = server.https.port
    for name, file_key, expected in [("a.test", "a", "a"), ("x.b.test", "b", "b"), ("c.test", "c-ec", "c")]:
        out = curl("-s", "--cacert", str(files[file_key][0]), "--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/")
        assert out.returncode == 0 and out.stdout == expected, (name, out.stderr)


def test_a_reload_serves_a_new_site_certificate_to_new_connections_and_keeps_open_ones(edge_factory, tmp_path):
    config, files = sni_config(tmp_path)
    server = edge_factory.start(config=config, **PLAIN)
    port = server.https.port
    context = ssl.create_default_context(cafile=str(files["a"][0]))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = context.wrap_socket(raw, server_hostname="a.test")
    tls.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert tls.recv(4096).endswith(b"a")
    renewed = cert(tmp_path, "a2", "a.test")
    start = len(server.log_lines)
    (server.cwd / "edge.toml").write_text(config.replace(str(files["a"][0]), str(renewed[0])).replace(str(files["a"][1]), str(renewed[1])))
    server.signal(signal.SIGHUP)
    assert server.wait_for_msg("configuration reloaded", timeout=15, start=start) is not None, server.log
    tls.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert tls.recv(4096).endswith(b"a"), "the open connection was dropped by the reload"
    tls.close()
    served = ssl.PEM_cert_to_DER_cert(renewed[0].read_text())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw2:
        with context.wrap_socket(raw2, server_hostname="a.test") as tls2:
            assert tls2.getpeercert(binary_form=True) == served


def plain_and_tls_with_site_a(tmp_path) -> str:
    """A plain and a TLS listener, a fallback route, and the start of a site `a.test` (its keys follow)."""
    crt, key = cert(tmp_path, "a", "a.test")
    return f"""
[[listener]]
address = "127.0.0.1:0"
[[listener]]
address = "127.0.0.1:0"
tls = true
certificate = "{crt}"
private_key = "{key}"

[[route]]
path = "/"
respond = {{ body = "fallback" }}

[[site]]
names = ["a.test"]
"""


def test_plain_http_is_redirected_to_https_per_site(edge_factory, tmp_path):
    config = plain_and_tls_with_site_a(tmp_path) + f"""redirect_https = 8443
[[site.route]]
path = "/"
respond = {{ body = "a" }}
"""
    server = edge_factory.start(config=config, **PLAIN)
    fields = headers_of(f"http://127.0.0.1:{server.http.port}/x/y?q=1", "-H", "Host: A.test:80")
    assert fields[":status"] == "308"
    assert fields["location"] == "https://A.test:8443/x/y?q=1"
    # The site over TLS is served; other hosts over plain HTTP are not redirected.
    assert body_for(server.https.port, "a.test", scheme="https") == (200, "a")
    assert body_for(server.http.port, "other.test") == (200, "fallback")
    # The ACME HTTP-01 path is exempt: it must be answerable over plain HTTP.
    assert headers_of(f"http://127.0.0.1:{server.http.port}/.well-known/acme-challenge/abc", "-H", "Host: a.test")[":status"] != "308"


def test_hsts_over_tls_only_and_security_headers_everywhere(edge_factory, tmp_path):
    config = plain_and_tls_with_site_a(tmp_path) + f"""hsts = true
security_headers = true
[[site.route]]
path = "/"
demo = {{ delay_ms = 1 }}
[[site.route]]
path = "/fixed"
respond = {{ body = "fixed" }}
"""
    server = edge_factory.start(config=config, **PLAIN)
    tls_url = f"https://127.0.0.1:{server.https.port}"
    plain_url = f"http://127.0.0.1:{server.http.port}"
    for path in ["/fixed", "/cached", "/cached", "/missing-is-demo"]:
        for extra in ([], ["--http2"]):
            fields = headers_of(tls_url + path, "-H", "Host: a.test", *extra)
            assert fields[":status"] == "200", (path, fields)
            assert fields.get("strict-transport-security") == "max-age=63072000", (path, extra, fields)
            assert fields.get("x-content-type-options") == "nosniff"
            assert fields.get("x-frame-options") == "SAMEORIGIN"
            assert fields.get("referrer-policy") == "strict-origin-when-cross-origin"
        plain = headers_of(plain_url + path, "-H", "Host: a.test")
        assert "strict-transport-security" not in plain, "RFC 6797 7.2: no HSTS over plain HTTP"
        assert plain.get("x-content-type-options") == "nosniff"
    # Other sites get none of them.
    other = headers_of(tls_url + "/", "-H", "Host: other.test")
    assert "strict-transport-security" not in other and "x-frame-options" not in other
    # A cached hit over plain HTTP after TLS hits (a prepared answer is shared per loop) still carries no HSTS.
    for _ in range(3):
        assert "strict-transport-security" not in headers_of(plain_url + "/cached", "-H", "Host: a.test")
        assert "strict-transport-security" in headers_of(tls_url + "/cached", "-H", "Host: a.test")


ACCESS = """
[[listener]]
address = "127.0.0.1:0"

[client_address]
trusted_proxies = ["127.0.0.2"]

[admin]
address = "127.0.0.1:0"

[[route]]
path = "/"
respond = { body = "open" }

[[route]]
path = "/internal"
allow = ["10.0.0.0/8", "::1"]
respond = { body = "internal" }

[[route]]
path = "/local"
allow = ["127.0.0.0/8"]
deny = ["127.0.0.3"]
respond = { body = "local" }

[[route]]
path = "/blocked"
deny = ["127.0.0.1"]
basic_auth = { realm = "r", htpasswd = "HTPASSWD" }
respond = { body = "blocked" }
"""


def test_access_rules_allow_and_deny_by_address_before_authentication(edge_factory, tmp_path):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("u:$2y$05$8GgpkwQYb0x6b5G0wCk0Je5k3p3hz0qQn2I2m6z5J7JrKpM3C9pWa\n")
    server = edge_factory.start(config=ACCESS.replace("HTPASSWD", str(htpasswd)), **PLAIN)
    port = server.http.port
    assert body_for(port, "x") == (200, "open")
    assert body_for(port, "x", "/internal") == (403, "access denied\n")
    assert body_for(port, "x", "/local/a") == (200, "local")
    # Denied before authentication: 403, not 401 (no credentials asked of a client that cannot get in).
    fields = headers_of(f"http://127.0.0.1:{port}/blocked")
    assert fields[":status"] == "403" and "www-authenticate" not in fields
    # A trusted proxy's X-Forwarded-For names the client the rules see.
    out = curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "--interface", "127.0.0.2", "-H", "X-Forwarded-For: 127.0.0.3",
               f"http://127.0.0.1:{port}/local")
    assert out.stdout == "403"
    out = curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "--interface", "127.0.0.2", "-H", "X-Forwarded-For: 10.1.2.3",
               f"http://127.0.0.1:{port}/internal")
    assert out.stdout == "200"
    # The refusals are counted.
    admin = server.listener("admin")
    metrics = curl("-s", f"http://127.0.0.1:{admin.port}/metrics").stdout
    assert 'edge_requests_refused_total{reason="access_denied"} 3' in metrics, metrics


def test_exact_routes_match_their_path_alone_and_win_over_prefixes(edge_factory):
    config = """
[[listener]]
address = "127.0.0.1:0"
[[route]]
path = "/"
respond = { body = "root" }
[[route]]
path = "/x"
respond = { body = "prefix x" }
[[route]]
path = "/x"
match = "exact"
respond = { body = "exact x" }
[[route]]
path = "/only"
match = "exact"
respond = { body = "exact only" }
"""
    server = edge_factory.start(config=config, **PLAIN)
    port = server.http.port
    assert body_for(port, "h", "/x") == (200, "exact x")
    assert body_for(port, "h", "/x/") == (200, "prefix x")
    assert body_for(port, "h", "/x/y") == (200, "prefix x")
    assert body_for(port, "h", "/only") == (200, "exact only")
    assert body_for(port, "h", "/only/more") == (200, "root")
    assert body_for(port, "h", "/x?q=1") == (200, "exact x"), "the query is not part of the path"
    assert body_for(port, "h", "/a/../x") == (200, "exact x"), "paths are matched in normal form"


def handshake(port: int, *, version: ssl.TLSVersion, ciphers: str | None = None) -> str | None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = version
    context.maximum_version = version
    if ciphers:
        context.set_ciphers(ciphers)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.cipher()[0]
    except (ssl.SSLError, ConnectionResetError):
        return None


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_the_default_tls_policy_is_mozilla_intermediate(edge_factory, tmp_path):
    crt, key = cert(tmp_path, "ec", "localhost")
    server = edge_factory.start(config=f"""
[[listener]]
address = "127.0.0.1:0"
tls = true
certificate = "{crt}"
private_key = "{key}"
[[route]]
path = "/"
respond = {{ body = "ok" }}
""", **PLAIN)
    port = server.https.port
    assert handshake(port, version=ssl.TLSVersion.TLSv1_3) is not None
    assert handshake(port, version=ssl.TLSVersion.TLSv1_2) == "ECDHE-ECDSA-AES128-GCM-SHA256"
    for weak in ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "AES256-SHA", "AES128-GCM-SHA256"]:
        assert handshake(port, version=ssl.TLSVersion.TLSv1_2, ciphers=weak) is None, f"{weak} was accepted"
    for strong in ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"]:
        assert handshake(port, version=ssl.TLSVersion.TLSv1_2, ciphers=strong) == strong
    assert handshake(port, version=ssl.TLSVersion.TLSv1_1) is None
    # The server's order decides (testssl.sh rates a client-chosen order HIGH): a client preferring ChaCha20 still
    # gets the policy's first suite it offers.
    assert handshake(port, version=ssl.TLSVersion.TLSv1_2,
                     ciphers="ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256") \
        == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_the_modern_policy_is_tls13_only_and_ciphers_can_be_listed(edge_factory, tmp_path):
    crt, key = cert(tmp_path, "ec", "localhost")
    base = f"""
[[listener]]
address = "127.0.0.1:0"
tls = true
certificate = "{crt}"
private_key = "{key}"
[[route]]
path = "/"
respond = {{ body = "ok" }}
"""
    modern = edge_factory.start(config='[tls]\npolicy = "modern"\n' + base, **PLAIN)
    assert handshake(modern.https.port, version=ssl.TLSVersion.TLSv1_2) is None
    assert handshake(modern.https.port, version=ssl.TLSVersion.TLSv1_3) is not None
    listed = edge_factory.start(config='[tls]\nciphers = ["ECDHE-ECDSA-CHACHA20-POLY1305"]\n' + base, **PLAIN)
    assert handshake(listed.https.port, version=ssl.TLSVersion.TLSv1_2) == "ECDHE-ECDSA-CHACHA20-POLY1305"
    assert handshake(listed.https.port, version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256") is None


def check_config(edge_factory, tmp_path, text: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    from conftest import run_edge
    out = run_edge(["check-config", str(path)])
    assert out.returncode != 0, out.stdout
    return out.stdout + out.stderr


@pytest.mark.parametrize("text,expected", [
    ('[[site]]\nnames = ["a.test"]\n[[site.route]]\npath = "/"\nrespond = { body = "a" }\n'
     '[[site]]\nnames = ["A.test"]\n[[site.route]]\npath = "/"\nrespond = { body = "b" }\n',
     'site[1].names[0]'),
    ('[[site]]\nnames = ["bad name"]\n[[site.route]]\npath = "/"\nrespond = { body = "a" }\n', 'site[0].names[0]'),
    ('[[site]]\nnames = ["a.test"]\n', 'site[0].route'),
    ('[[site]]\nnames = ["a.test"]\ndefault = true\n[[site.route]]\npath = "/"\nrespond = { body = "a" }\n'
     '[[site]]\nnames = ["b.test"]\ndefault = true\n[[site.route]]\npath = "/"\nrespond = { body = "b" }\n', 'site[1].default'),
    ('[tls]\nciphers = ["ECDHE-ECDSA-AES128-GCM-SHA265"]\n', 'did you mean "ECDHE-ECDSA-AES128-GCM-SHA256"'),
    ('[tls]\npolicy = "old"\n', 'tls.policy'),
    ('unknown_host = 500\n', 'unknown_host'),
    ('unknown_host = 421\n[[route]]\npath = "/"\nrespond = { body = "a" }\n', 'unknown_host'),
    ('unknown_host = 404\n[[site]]\nnames = ["a.test"]\n[[site.route]]\npath = "/"\nrespond = { body = "a" }\n'
     '[[route]]\npath = "/"\nrespond = { body = "b" }\n', 'would answer nothing'),
    ('[[site]]\nnames = ["a.test"]\ntls = "acme"\n[[site.route]]\npath = "/"\nrespond = { body = "a" }\n', 'site[0].tls'),
    ('[[route]]\npath = "/"\nallow = ["10.0.0.300"]\nrespond = { body = "a" }\n', 'route[0].allow[0]'),
    ('[[route]]\npath = "/"\nmatch = "regex"\nrespond = { body = "a" }\n', 'route[0].match'),
    ('[[site]]\nnames = ["a.test"]\nredirect_https = "yes"\n[[site.route]]\npath = "/"\nrespond = { body = "a" }\n',
     'site[0].redirect_https'),
    ('[[site]]\nnames = ["a.test"]\n[[site.route]]\npath = "/"\nrespond = { body = "a" }\n[[site.route]]\npath = "/"\nrespond = { body = "b" }\n',
     'site[0].route[1].path'),
])
def test_site_configuration_errors_name_the_key(edge_factory, tmp_path, text, expected):
    assert expected in check_config(edge_factory, tmp_path, text)


# Findings a self-signed test certificate causes by itself: no CA chain, no CRL/OCSP address, short validity.
CERTIFICATE_FINDINGS = {"cert_chain_of_trust", "cert_revocation", "cert_trust", "cert_validityPeriod", "cert_expirationStatus",
                        "cert_caIssuers", "cert_crlDistributionPoints", "cert_ocspURL", "OCSP_stapling", "cert_mustStapleExtension"}


@pytest.mark.skipif(shutil.which("testssl") is None, reason="testssl.sh is not installed (Debian: testssl.sh)")
def test_testssl_finds_nothing_above_low_in_the_default_policy(edge_factory, tmp_path):
    """testssl.sh (Debian's 3.0) on a TLS listener with the default policy: every finding rated MEDIUM or worse is
    one a self-signed certificate causes. (NIOSSL's defaults earned HIGH for the CBC-SHA1 suites and for letting
    the client choose the suite.)"""
    import json

    server = edge_factory.start(config="""
[[listener]]
address = "127.0.0.1:0"
tls = true
[[route]]
path = "/"
respond = { body = "ok" }
""", **PLAIN)
    report = tmp_path / "testssl.json"
    out = subprocess.run(["testssl", "--quiet", "--color", "0", "--warnings", "off", "--fast", "--jsonfile", str(report),
                          f"127.0.0.1:{server.https.port}"], capture_output=True, text=True, timeout=900)
    findings = json.loads(report.read_text())
    assert findings, out.stdout[-3000:]
    serious = [f for f in findings if f["severity"] in ("MEDIUM", "HIGH", "CRITICAL") and f["id"] not in CERTIFICATE_FINDINGS]
    assert not serious, serious
    ids = {f["id"] for f in findings}
    assert "cipher_order" in ids or "cipher_order-tls1_2" in ids, "testssl did not check the cipher order"
