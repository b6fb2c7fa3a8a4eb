"""Real upstream servers for the proxy tests: a small threaded HTTP/1.1 server (Python's http.server) with
behaviours chosen by path, that counts requests and connections; an HTTP/2-only server (PyPI h2, prior
knowledge); and nginx (Debian) serving files."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1
            self.server.open_connections += 1

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.lock:
                self.server.open_connections -= 1

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self):
        with self.server.lock:
            self.server.requests += 1
            self.server.paths.append(self.path)
            if getattr(self, "ambiguous", False):
                # A request on a connection whose last response had both Content-Length and chunked framing.
                self.server.ambiguous_reuses += 1
        path = self.path.split("?")[0]
        name = self.server.name
        if path.endswith("/stall"):
            time.sleep(float(self.headers.get("x-stall", "5")))
            self._send(200, b"late\n")
        elif path.endswith("/reset"):
            self._read_body()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
            self.close_connection = True
        elif path.endswith("/raw"):
            # Answers the bytes named by ?kind=, as a broken or hostile upstream would.
            kind = self.path.split("kind=")[1]
            self._read_body()
            self.wfile.write({
                "te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
                "gzip-under-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                "status-600": b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok",
                "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
                "folded": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok",
                "switching": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
                "te-and-length": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"5\r\nhello\r\n0\r\n\r\n",
                "interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
                           b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
            }[kind])
            self.wfile.flush()
            if kind == "te-and-length":
                self.ambiguous = True
            elif kind != "interim":
                self.close_connection = True
        elif path.endswith("/garbage"):
            self.wfile.write(b"this is not HTTP at all\r\n\r\n")
            self.close_connection = True
        elif path.endswith("/cut"):
            # Promises 1 MB, sends 100 KB, then dies.
            self.send_response(200)
            self.send_header("content-length", str(1 << 20))
            self.end_headers()
            self.wfile.write(b"c" * 100_000)
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
            self.close_connection = True
        elif path.endswith("/bytes"):
            size = int(self.path.split("n=")[1]) if "n=" in self.path else 1000
            body = (b"0123456789abcdef" * (size // 16 + 1))[:size]
            self._send(200, body, {"content-type": "application/octet-stream"})
        elif path.endswith("/hop"):
            self._send(200, b"hop\n", {"connection": "x-secret", "x-secret": "leak", "keep-alive": "timeout=5",
                                       "server": "python-upstream", "proxy-authenticate": "Basic"})
        elif path.endswith("/stream"):
            # n bytes written in 64 KiB chunks from one buffer (no body held in memory), Content-Length framed.
            size = int(self.path.split("n=")[1])
            self.send_response(200)
            self.send_header("content-length", str(size))
            self.end_headers()
            chunk = b"s" * 65536
            while size > 0:
                self.wfile.write(chunk[:min(size, 65536)])
                size -= 65536
        elif path.endswith("/slowsink"):
            # Reads the body slowly for `x-slow` seconds, then at full speed; answers with the byte count.
            remaining = int(self.headers.get("content-length") or 0)
            got, until = 0, time.monotonic() + float(self.headers.get("x-slow", "3"))
            while remaining > 0:
                data = self.rfile.read(min(remaining, 65536 if time.monotonic() >= until else 4096))
                if not data:
                    break
                got += len(data)
                remaining -= len(data)
                if time.monotonic() < until:
                    time.sleep(0.05)
            self._send(200, str(got).encode())
        elif path.endswith("/chunked"):
            # Three chunks written apart (so that they reach Edge in separate reads), then a trailer.
            self._read_body()
            parts = [b"alpha ", b"beta ", b"gamma\n"]
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("trailer", "x-checksum")
            self.end_headers()
            if self.command == "HEAD":
                return
            for part in parts:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                time.sleep(0.05)
            self.wfile.write(b"0\r\nx-checksum: " + hashlib.sha256(b"".join(parts)).hexdigest().encode() + b"\r\n\r\n")
        elif path.endswith("/bighead"):
            self._read_body()
            self._send(200, b"ok\n", {"x-big": "b" * 30000})
        elif path.endswith("/bigtrailer"):
            self._read_body()
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n0\r\nx-t: " + b"t" * 30000 + b"\r\n\r\n")
        elif path.endswith("/trailer-close"):
            # Says `Connection: close` only in its trailer section, and keeps the connection open.
            self._read_body()
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n0\r\nconnection: close\r\nx-sum: 5\r\n\r\n")
        elif path.endswith("/no-content-with-length"):
            self._read_body()
            self.send_response(204)
            self.send_header("content-length", "5")
            self.end_headers()
        elif path.endswith("/never-reads"):
            # Takes the head, never the body, and answers nothing for x-stall seconds.
            time.sleep(float(self.headers.get("x-stall", "10")))
            self.close_connection = True
        elif path.endswith("/tinychunks"):
            # n one-byte chunks ("a"), written in large blocks: each chunk is a body part of its own for Edge.
            self._read_body()
            n = int(self.path.split("n=")[1]) if "n=" in self.path else 100000
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            block = b"1\r\na\r\n" * 10000
            for _ in range(n // 10000):
                self.wfile.write(block)
            self.wfile.write(b"1\r\na\r\n" * (n % 10000) + b"0\r\n\r\n")
        elif path.endswith("/trickle"):
            # Promises 100 bytes, sends 10, then says nothing for x-stall seconds before the rest.
            self.send_response(200)
            self.send_header("content-length", "100")
            self.end_headers()
            self.wfile.write(b"t" * 10)
            self.wfile.flush()
            time.sleep(float(self.headers.get("x-stall", "5")))
            self.wfile.write(b"t" * 90)
        elif path.endswith("/once-per-connection"):
            # Answers the first request of a connection; at a later one it closes without a word, as a server whose
            # keep-alive timeout ends just as a request arrives.
            self.served = getattr(self, "served", 0) + 1
            if self.served > 1:
                self.close_connection = True
                return
            self._send(200, b"first on its connection\n")
        elif path.endswith("/flaky-keepalive"):
            # Answers, keeping the connection alive by the headers, then in about a third of the cases closes it
            # anyway after 0–20 ms: a server that drops idle keep-alive connections at random.
            self._send(200, b"flaky\n")
            if random.random() < 0.35:
                self.wfile.flush()
                time.sleep(random.random() * 0.02)
                self.close_connection = True
        elif path.endswith("/notmodified"):
            self.send_response(304)
            self.send_header("etag", '"v1"')
            self.end_headers()
        elif path.endswith("/notmodified-with-length"):
            # The length of the 200 it stands for (RFC 9110 §8.6 allows it), and no body.
            self.send_response(304)
            self.send_header("etag", '"v1"')
            self.send_header("content-length", "1234")
            self.end_headers()
        elif path.endswith("/sink"):
            # Reads a Content-Length body in 1 MiB pieces (none held whole) and answers its length and SHA-256.
            remaining, digest, got = int(self.headers.get("content-length") or 0), hashlib.sha256(), 0
            while remaining > 0:
                data = self.rfile.read(min(remaining, 1 << 20))
                if not data:
                    break
                digest.update(data)
                got += len(data)
                remaining -= len(data)
            self._send(200, json.dumps({"body_len": got, "body_sha256": digest.hexdigest()}).encode(),
                       {"content-type": "application/json"})
        elif path.endswith("/status503"):
            self._send(503, b"busy\n")
        else:
            body = self._read_body()
            echo = {
                "server": name, "method": self.command, "path": self.path,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
                "body_sha256": hashlib.sha256(body).hexdigest(), "body_len": len(body),
            }
            self._send(200, json.dumps(echo).encode(), {"content-type": "application/json"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str, port: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.name = name
        self.lock = threading.Lock()
        self.requests = 0
        self.connections = 0
        self.open_connections = 0
        self.ambiguous_reuses = 0
        self.paths: list[str] = []


class Upstream:
    """One echo server on an ephemeral loopback port, started in a thread."""

    def __init__(self, name: str, port: int = 0):
        self.server = _Server(name, port)
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> int:
        return self.server.requests

    @property
    def connections(self) -> int:
        return self.server.connections

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed by the client."""
        return self.server.open_connections

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class H2cUpstream:
    """A server that speaks only HTTP/2 with prior knowledge (PyPI `h2` on raw sockets, one thread per connection):
    every request is answered 200 with the server's name and counted by path. An HTTP/1.1 request gets no answer
    (h2 refuses its bytes as a connection preface, and the connection closes)."""

    def __init__(self, name: str, port: int = 0, goaway_after: int = 0):
        """`goaway_after`: after answering that many requests on a connection, send GOAWAY (no error, the last
        stream answered) and keep the connection open without reading from it, as a server draining slowly does."""
        self.name = name
        self.goaway_after = goaway_after
        self.paths: dict[str, int] = {}
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        import h2.config
        import h2.connection
        import h2.events
        h2conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
        try:
            h2conn.initiate_connection()
            conn.sendall(h2conn.data_to_send())
            while data := conn.recv(65536):
                for event in h2conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        path = dict(event.headers).get(b":path", b"").decode()
                        with self._lock:
                            self.paths[path] = self.paths.get(path, 0) + 1
                        body = f"{self.name}\n".encode()
                        h2conn.send_headers(event.stream_id, [
                            (":status", "200"), ("content-type", "text/plain"), ("content-length", str(len(body)))])
                        h2conn.send_data(event.stream_id, body, end_stream=True)
                        answered = getattr(self, "_answered", 0) + 1
                        self._answered = answered
                        if self.goaway_after and answered % self.goaway_after == 0:
                            h2conn.close_connection(last_stream_id=event.stream_id)
                            conn.sendall(h2conn.data_to_send())
                            time.sleep(20)
                            return
                conn.sendall(h2conn.data_to_send())
        except Exception:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self._sock.close()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """Debian's nginx serving `root` on an ephemeral port, one worker, in its own prefix. With `tls` (certificate
    and key files) it also listens for HTTP/2 with prior knowledge (`h2c_port`), HTTP/2 over TLS (`h2_port`) and
    HTTP/1.1 only over TLS (`h1_tls_port`); those answer `PROTOCOL CONNECTION URI` to every GET."""

    def __init__(self, root: Path, workdir: Path, tls: tuple[Path, Path] | None = None):
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.port = free_port()
        extra = ""
        if tls:
            self.h2c_port, self.h2_port, self.h1_tls_port = free_port(), free_port(), free_port()
            answer = 'default_type text/plain; return 200 "$server_protocol $connection $request_uri\\n";'
            certs = f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};"
            extra = f"""
    server {{ listen 127.0.0.1:{self.h2c_port} http2; root {root}; location = /who {{ {answer} }} }}
    server {{ listen 127.0.0.1:{self.h2_port} ssl http2; {certs} root {root}; location = /who {{ {answer} }} }}
    server {{ listen 127.0.0.1:{self.h1_tls_port} ssl; {certs} root {root}; location = /who {{ {answer} }} }}
"""
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "nginx.conf"
        # As root (CI), nginx's workers would drop to nobody and could not read pytest's private temporary folders.
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{self.port};
        root {root};
        location = /small {{ return 200 "small answer from nginx\\n"; }}
    }}
{extra}
}}
""")
        self.process = subprocess.Popen([binary, "-c", str(conf), "-p", str(workdir)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("nginx did not start: " + (self.process.stderr.read() or b"").decode())
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
