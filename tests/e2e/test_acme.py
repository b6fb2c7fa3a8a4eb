"""Automatic HTTPS (`[acme]`, sites with `tls = "acme"`) against a real Pebble ACME test CA.

Pebble (Debian's `pebble` package) runs on loopback with a throwaway HTTPS CA made here (the package lacks
Pebble's minica), and `pebble-challtestsrv` as its DNS server, answering 127.0.0.1 for every name. Pebble's
validation authority connects to its configured `httpPort` (HTTP-01) and `tlsPort` (TLS-ALPN-01), so the Edge
under test listens on exactly those ports. The tests that need Pebble are skipped where it is not installed.

Time: renewal needs a minute (Edge waits at least its one-minute backoff step after an issuance before the next
order), so the renewal fixture is started by the first Pebble test and the renewal test, the last one, collects
the result: the minute passes while the other tests run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import curl, run_edge

NAMES = ("acme.test", "www.acme.test")
FALLBACK_ISSUER = "Edge (self-signed)"
PLAIN = {"http": None, "https": None}  # listeners come from the TOML only
ISSUE_TIMEOUT = 60.0


# --------------------------------------------------------------------------
# Ports, certificates, clients
# --------------------------------------------------------------------------

def free_port(udp_too: bool = False) -> int:
    """A loopback port nobody listens on right now (TCP, and UDP too when asked)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not udp_too:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def openssl(*args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True, timeout=60).stdout


def make_https_identity(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and, signed by it, a certificate for 127.0.0.1: Pebble's HTTPS identity (what `ca_roots` names)."""
    ca_key, ca, key, csr, crt = (folder / n for n in ("ca.key", "ca.pem", "key.pem", "req.csr", "cert.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=Edge e2e Pebble HTTPS CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    openssl("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = folder / "leaf.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
            "-extfile", str(ext), "-out", str(crt))
    return ca, crt, key


@dataclass
class Served:
    """The leaf certificate a TLS client got."""
    serial: int
    names: set[str]
    issuer: str
    rsa: bool
    der: bytes


def describe(der: bytes) -> Served:
    text = openssl("x509", "-inform", "DER", "-noout", "-serial", "-text", data=der).decode()
    serial = int(re.search(r"^serial=([0-9A-Fa-f]+)$", text, re.M).group(1), 16)
    issuer = re.search(r"^\s*Issuer: (.*)$", text, re.M).group(1)
    return Served(serial, set(re.findall(r"DNS:([^,\s]+)", text)), issuer, "rsaEncryption" in text, der)


def served(port: int, server_name: str | None, cafile: Path | None = None) -> Served:
    """The certificate Edge serves on `port` for SNI `server_name`. With `cafile`, the handshake verifies the chain
    Edge sends against those roots only, and the name: it raises ssl.SSLCertVerificationError otherwise."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return describe(tls.getpeercert(binary_form=True))


def serial_of(fields: dict[str, str]) -> int:
    """The serial of an `acme certificate in use` event (hex, lower case, no leading zeros)."""
    return int(fields["serial"], 16)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --------------------------------------------------------------------------
# Pebble
# --------------------------------------------------------------------------

def tools_installed() -> bool:
    return shutil.which("pebble") is not None and shutil.which("pebble-challtestsrv") is not None


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM to this process id, SIGKILL if it does not exit within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class DNS:
    """pebble-challtestsrv as Pebble's DNS server only: every A query answers 127.0.0.1."""

    def __init__(self, folder: Path):
        self.port = free_port(udp_too=True)
        self.log = folder / "challtestsrv.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["pebble-challtestsrv", "-dns01", f"127.0.0.1:{self.port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                 "-management", f"127.0.0.1:{free_port()}", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=folder)

    def stop(self) -> None:
        stop_process(self.proc)


class Pebble:
    """One Pebble CA; `http_port` and `tls_port` are where its validation authority connects."""

    def __init__(self, folder: Path, dns: DNS, *, http_port: int, tls_port: int, validity_seconds: int | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.http_port, self.tls_port = http_port, tls_port
        self.acme_port, self.management_port = free_port(), free_port()
        self.ca_roots, certificate, key = make_https_identity(folder)
        settings = {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(certificate), "privateKey": str(key),
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }
        if validity_seconds is not None:
            settings["certificateValidityPeriod"] = validity_seconds
        (folder / "pebble.json").write_text(json.dumps({"pebble": settings}))
        self.log_path = folder / "pebble.log"
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_AUTHZREUSE="0")
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                ["pebble", "-config", str(folder / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns.port}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=folder, env=env)
        self._context = ssl.create_default_context(cafile=str(self.ca_roots))
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.directory, context=self._context, timeout=2).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"Pebble did not answer at {self.directory}:\n{self.log()}", pytrace=False)
                time.sleep(0.1)
        # Pebble makes a new root and intermediate at each start; a client of a site trusts the root only.
        self.root = folder / "root.pem"
        self.root.write_text(self.management("/roots/0"))
        self.bundle = folder / "root-and-intermediate.pem"
        self.bundle.write_text(self.root.read_text() + self.management("/intermediates/0"))

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    def management(self, path: str) -> str:
        with urllib.request.urlopen(f"https://127.0.0.1:{self.management_port}{path}", context=self._context, timeout=10) as r:
            return r.read().decode()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def issued_count(self) -> int:
        return self.log().count("Issued certificate serial")

    def orders_count(self) -> int:
        return self.log().count("There are now")  # "There are now N orders in the DB" (and accounts)

    def stop(self) -> None:
        stop_process(self.proc)


def acme_config(directory: str, *, ca_roots: Path | None, http: str | None, tls: str | None = "127.0.0.1:0",
                acme_extra: str = "", names: tuple[str, ...] = NAMES, top: str = "", site_extra: str = "") -> str:
    listeners = ""
    if http:
        listeners += f'[[listener]]\naddress = "{http}"\n\n'
    if tls:
        listeners += f'[[listener]]\naddress = "{tls}"\ntls = true\n\n'
    roots = f'ca_roots = "{ca_roots}"\n' if ca_roots else ""
    quoted = ", ".join(f'"{n}"' for n in names)
    return f"""{top}
{listeners}[acme]
directory = "{directory}"
contact = ["mailto:ops@acme.test"]
{roots}{acme_extra}

[[route]]
path = "/"
respond = {{ body = "fallback" }}

[[site]]
names = [{quoted}]
tls = "acme"
{site_extra}
[[site.route]]
path = "/"
respond = {{ body = "acme site" }}
"""


def wait_in_use(server, pebble: Pebble | None, timeout: float = ISSUE_TIMEOUT, start: int = 0) -> dict[str, str]:
    fields = server.wait_for_msg("acme certificate in use", timeout=timeout, start=start)
    assert fields is not None, (
        f"no `acme certificate in use` within {timeout} s\n--- edge ---\n{server.log}"
        + (f"\n--- pebble ---\n{pebble.log()[-4000:]}" if pebble else ""))
    return fields


def site_body(port: int, name: str, cafile: Path) -> subprocess.CompletedProcess:
    """What a browser-like client trusting only `cafile` gets from https://name:port/ (curl, name resolved to loopback)."""
    return curl("--cacert", str(cafile), "--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/")


# --------------------------------------------------------------------------
# Fixtures: one DNS stand-in and one Pebble per module; a second Pebble with short-lived certificates for renewal
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    if not tools_installed():
        pytest.skip("needs pebble and pebble-challtestsrv (apt-get install pebble)")
    server = DNS(tmp_path_factory.mktemp("dns"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pebble(tmp_path_factory, dns):
    """Validates HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`: the tests' Edge binds them, one at a time."""
    ca = Pebble(tmp_path_factory.mktemp("pebble"), dns, http_port=free_port(), tls_port=free_port())
    yield ca
    ca.stop()


RENEWAL_VALIDITY = 90  # seconds: due after 60 (two thirds), which is also Edge's floor after an issuance


@dataclass
class Renewal:
    pebble: Pebble
    server: object
    first: dict[str, str]
    first_seen: float
    tls_port: int
    conn: ssl.SSLSocket


def keepalive_get(conn: ssl.SSLSocket, host: str = "acme.test") -> bytes:
    """One HTTP/1.1 GET on an open connection; returns the body (Content-Length framed)."""
    conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed; got {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "connection closed in the body"
        body += chunk
    assert b"connection: close" not in head.lower(), head
    return body


@pytest.fixture(scope="module")
def renewal(tmp_path_factory, dns, module_edge_factory):
    """Pebble issuing 90-second certificates, and an Edge that got its first one, with a keep-alive TLS connection
    open (made with that first certificate). Requested by the first Pebble test so that the minute before renewal
    runs alongside the other tests."""
    http_port = free_port()
    ca = Pebble(tmp_path_factory.mktemp("pebble-renewal"), dns, http_port=http_port, tls_port=free_port(),
                validity_seconds=RENEWAL_VALIDITY)
    server, conn = None, None
    try:  # Pebble is stopped even when the first issuance fails here
        config = acme_config(ca.directory, ca_roots=ca.ca_roots, http=f"127.0.0.1:{http_port}",
                             top="[timeouts]\nkeepalive_seconds = 600\n")
        server = module_edge_factory.start(config=config, **PLAIN)
        first = wait_in_use(server, ca)
        first_seen = time.monotonic()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=str(ca.root))
        context.set_alpn_protocols(["http/1.1"])
        conn = context.wrap_socket(socket.create_connection(("127.0.0.1", server.https.port), timeout=10),
                                   server_hostname="acme.test")
        assert describe(conn.getpeercert(binary_form=True)).serial == serial_of(first)
        assert keepalive_get(conn) == b"acme site"
        yield Renewal(ca, server, first, first_seen, server.https.port, conn)
    finally:
        if conn is not None:
            conn.close()
        if server is not None:
            server.stop()
        ca.stop()


# --------------------------------------------------------------------------
# 1. HTTP-01
# --------------------------------------------------------------------------

def test_http01_certificate_is_obtained_and_served_by_sni(edge_factory, pebble, renewal):
    server = edge_factory.start(config=acme_config(
        pebble.directory, ca_roots=pebble.ca_roots, http=f"127.0.0.1:{pebble.http_port}", tls=f"127.0.0.1:{pebble.tls_port}"),
        **PLAIN)
    in_use = wait_in_use(server, pebble)
    assert in_use["names"] == ",".join(NAMES)

    for name in NAMES:
        # Verified against Pebble's root alone: Edge sends the intermediate with the leaf.
        cert = served(pebble.tls_port, name, cafile=pebble.root)
        assert cert.serial == serial_of(in_use)
        assert cert.names == set(NAMES), "one certificate for all the site's names"
        body = site_body(pebble.tls_port, name, pebble.bundle)
        assert (body.returncode, body.stdout) == (0, "acme site"), body.stderr

    # Names no ACME site has still get the listener's own (self-signed) certificate, and the fallback routes.
    other = served(pebble.tls_port, "other.test")
    assert FALLBACK_ISSUER in other.issuer and other.serial != serial_of(in_use)
    with pytest.raises(ssl.SSLCertVerificationError):
        served(pebble.tls_port, "other.test", cafile=pebble.bundle)
    out = curl("-k", "--resolve", f"other.test:{pebble.tls_port}:127.0.0.1", f"https://other.test:{pebble.tls_port}/")
    assert out.stdout == "fallback"

    # Files: the key is readable by Edge's user only; the chain on disk is what is served.
    folder = Path(server.state_dir) / "acme" / f"127.0.0.1_{pebble.acme_port}" / "certificates" / "acme.test"
    assert mode(folder / "key.pem") == 0o600
    on_disk = ssl.PEM_cert_to_DER_cert(re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                                                 (folder / "cert.pem").read_text(), re.S).group(0))
    assert describe(on_disk).serial == serial_of(in_use)
    assert pebble.management(f"/cert-status-by-serial/{in_use['serial']}").count('"Valid"') == 1
    assert server.proc.poll() is None


def test_http01_works_for_a_site_that_redirects_plain_http(edge_factory, pebble):
    # The usual automatic-HTTPS site: plain HTTP is redirected, except the CA's validation requests.
    server = edge_factory.start(config=acme_config(
        pebble.directory, ca_roots=pebble.ca_roots, http=f"127.0.0.1:{pebble.http_port}", tls=f"127.0.0.1:{pebble.tls_port}",
        site_extra="redirect_https = true\nhsts = true"), **PLAIN)
    in_use = wait_in_use(server, pebble)
    assert served(pebble.tls_port, "www.acme.test", cafile=pebble.root).serial == serial_of(in_use)
    out = curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "--resolve", f"acme.test:{pebble.http_port}:127.0.0.1",
               f"http://acme.test:{pebble.http_port}/x")
    assert out.stdout.split()[0] == "308" and out.stdout.split()[1].startswith("https://acme.test"), out.stdout
    out = curl("--cacert", str(pebble.bundle), "-D", "-", "--resolve", f"acme.test:{pebble.tls_port}:127.0.0.1",
               f"https://acme.test:{pebble.tls_port}/")
    assert out.stdout.endswith("acme site") and "strict-transport-security" in out.stdout.lower(), out.stdout


# --------------------------------------------------------------------------
# 2. TLS-ALPN-01
# --------------------------------------------------------------------------

def test_tls_alpn01_certificate_is_obtained_on_the_tls_listener_alone(edge_factory, pebble):
    # No plain listener at all: Pebble can only validate over TLS with ALPN acme-tls/1. An RSA key this time.
    server = edge_factory.start(config=acme_config(
        pebble.directory, ca_roots=pebble.ca_roots, http=None, tls=f"127.0.0.1:{pebble.tls_port}",
        acme_extra='challenge = "tls-alpn-01"\nkey_type = "rsa-2048"\n'), **PLAIN)
    in_use = wait_in_use(server, pebble)
    for name in NAMES:
        cert = served(pebble.tls_port, name, cafile=pebble.root)
        assert cert.serial == serial_of(in_use) and cert.names == set(NAMES) and cert.rsa
        body = site_body(pebble.tls_port, name, pebble.bundle)
        assert (body.returncode, body.stdout) == (0, "acme site"), body.stderr
    # An ordinary client offering h2 and http/1.1 is not taken for a validation attempt.
    out = curl("--http2", "--cacert", str(pebble.bundle), "--resolve", f"acme.test:{pebble.tls_port}:127.0.0.1",
               "-o", "/dev/null", "-w", "%{http_version}", f"https://acme.test:{pebble.tls_port}/")
    assert out.stdout == "2", out.stderr


# --------------------------------------------------------------------------
# 3. Restart
# --------------------------------------------------------------------------

def test_a_restart_serves_the_certificate_from_disk_without_a_new_order(edge_factory, pebble, tmp_path):
    state = tmp_path / "state"
    config = acme_config(pebble.directory, ca_roots=pebble.ca_roots, http=f"127.0.0.1:{pebble.http_port}",
                         tls=f"127.0.0.1:{pebble.tls_port}")
    first = edge_factory.start(config=config, state_dir=state, **PLAIN)
    issued = wait_in_use(first, pebble)
    assert first.stop() == 0
    issued_before = pebble.issued_count()

    second = edge_factory.start(config=config, state_dir=state, **PLAIN)
    again = wait_in_use(second, pebble, timeout=5)  # at once, from disk
    assert again["serial"] == issued["serial"]
    assert served(pebble.tls_port, "acme.test", cafile=pebble.root).serial == serial_of(issued)
    time.sleep(2)  # an order, were one made, would show by now
    assert pebble.issued_count() == issued_before, "no new certificate issued"
    assert second.log_events("ACME certificate loaded") and not second.log_events("ACME certificate issued")
    assert not second.log_events("ACME certificate order failed")


# --------------------------------------------------------------------------
# 5. Failures keep the certificate in use and say why
# --------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_directory_down_at_start_serves_the_fallback_and_backs_off(edge_factory):
    dead = free_port()  # no CA there: the directory is unreachable
    directory = f"https://127.0.0.1:{dead}/dir"
    server = edge_factory.start(config=acme_config(directory, ca_roots=None, http=None), **PLAIN)
    failed = server.wait_for_msg("ACME certificate order failed", timeout=30)
    assert failed is not None, server.log
    assert f"127.0.0.1:{dead}" in failed["error"], f"the error names the directory: {failed}"
    assert failed["keeping"] == "none" and int(failed["retry_in_seconds"]) >= 30

    # Still serving: the fallback certificate for the ACME site's names, and the site's routes.
    port = server.https.port
    cert = served(port, "acme.test")
    assert FALLBACK_ISSUER in cert.issuer
    out = curl("-k", "--resolve", f"acme.test:{port}:127.0.0.1", f"https://acme.test:{port}/")
    assert out.stdout == "acme site"

    # Not spinning: no further attempts and almost no CPU for a few seconds.
    lines, cpu = len(server.log_lines), cpu_seconds(server.pid)
    time.sleep(4)
    assert cpu_seconds(server.pid) - cpu < 0.5
    new = [l for l in server.log_lines[lines:] if "ACME" in l or "acme" in l]
    assert not new, "retries wait for the backoff:\n" + "\n".join(new)
    assert len(server.log_events("ACME certificate order failed")) == 1
    assert server.proc.poll() is None


def test_unreachable_challenge_is_logged_and_the_fallback_stays(edge_factory, pebble):
    # Edge listens elsewhere: Pebble's HTTP-01 validation connects to pebble.http_port, where nobody listens.
    server = edge_factory.start(config=acme_config(pebble.directory, ca_roots=pebble.ca_roots, http="127.0.0.1:0"), **PLAIN)
    failed = server.wait_for_msg("ACME certificate order failed", timeout=ISSUE_TIMEOUT)
    assert failed is not None, server.log + "\n--- pebble ---\n" + pebble.log()[-4000:]
    assert re.search(r"challenge for (www\.)?acme\.test failed", failed["error"]), failed
    assert failed.get("problem_detail"), f"Pebble's reason is logged: {failed}"
    assert str(pebble.http_port) in failed["problem_detail"] or "connect" in failed["problem_detail"].lower(), failed
    assert failed["keeping"] == "none"
    assert not server.log_events("acme certificate in use")
    cert = served(server.https.port, "acme.test")
    assert FALLBACK_ISSUER in cert.issuer
    assert server.proc.poll() is None


# --------------------------------------------------------------------------
# 6. Configuration errors
# --------------------------------------------------------------------------

SITE = """
[[site]]
names = [{names}]
tls = "acme"
[[site.route]]
path = "/"
respond = {{ body = "x" }}
"""


def check_config(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return run_edge(["check-config", str(path)])


def test_acme_site_without_acme_table_is_refused(tmp_path):
    res = check_config(tmp_path, SITE.format(names='"acme.test"'))
    assert res.returncode != 0 and "site[0].tls" in res.stderr, res
    assert "[acme]" in res.stderr


def test_acme_wildcard_site_is_refused(tmp_path):
    acme = '[acme]\ndirectory = "https://127.0.0.1:14000/dir"\n'
    ok = check_config(tmp_path, acme + SITE.format(names='"acme.test"'))
    assert ok.returncode == 0, ok.stderr
    res = check_config(tmp_path, acme + SITE.format(names='"acme.test", "*.acme.test"'))
    assert res.returncode != 0 and "site[0].tls" in res.stderr and "wildcard" in res.stderr, res


# --------------------------------------------------------------------------
# 4. Renewal (last: its fixture started with the first Pebble test)
# --------------------------------------------------------------------------

def test_renewal_serves_the_new_certificate_to_new_connections_only(renewal):
    server, first = renewal.server, renewal.first
    # Keep using the open connection while Edge renews: every request is answered on it.
    deadline = renewal.first_seen + RENEWAL_VALIDITY + 15
    renewed = None
    requests = 0
    while renewed is None and time.monotonic() < deadline:
        assert keepalive_get(renewal.conn) == b"acme site"
        requests += 1
        renewed = server.wait_for_log(
            lambda f, _l: f.get("msg") == "acme certificate in use" and f.get("serial") != first["serial"], timeout=2)
    assert renewed is not None, f"no renewal within the certificate's lifetime\n{server.log}\n--- pebble ---\n{renewal.pebble.log()[-4000:]}"
    assert time.monotonic() < renewal.first_seen + RENEWAL_VALIDITY, "renewed before the first certificate expired"

    new = served(renewal.tls_port, "acme.test", cafile=renewal.pebble.root)
    assert new.serial == serial_of(renewed) != serial_of(first)
    assert new.names == set(NAMES)
    # The connection opened before the renewal still works, with the certificate it started with.
    assert keepalive_get(renewal.conn) == b"acme site"
    assert describe(renewal.conn.getpeercert(binary_form=True)).serial == serial_of(first)
    assert requests >= 2
    assert not server.log_events("ACME certificate order failed"), server.log
