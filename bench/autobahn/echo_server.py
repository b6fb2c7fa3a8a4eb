#!/usr/bin/env python3
"""Tiny WebSocket echo server (reference peer for Autobahn runs / upstream for proxy tests).

Usage:
    python3 echo_server.py --port N [--host 127.0.0.1] [--port-file FILE]
                           [--tls-cert CERT --tls-key KEY] [--no-compression]

* Accepts a WebSocket upgrade on ANY path and echoes every message back with
  the same opcode (text stays text, binary stays binary; fragmented messages
  are reassembled and echoed as one message).
* A plain HTTP request (no `Upgrade: websocket`) gets `200 ok` so the server
  can double as a health-checked upstream behind a proxy.
* `--port 0` binds an ephemeral port; the bound port is printed as
  `LISTENING host=H port=P` on stdout and, with --port-file, written to FILE.
* Needs the `websockets` package (>= 13, the `websockets.asyncio` API).
* Known deviation of websockets (checked with 17.4), so Autobahn case 7.1.5
  FAILs against this reference server: a Close frame arriving in the middle of
  a fragmented message is answered with 1002 instead of 1000.
"""

import argparse
import asyncio
import http
import os
import signal
import ssl
import sys

# websockets refuses messages of more than 4096 fragments with 1009 unless told
# otherwise; Autobahn 9.3/9.4 send 4 MiB in 64-byte fragments (65536 of them).
# Must be set before websockets is imported.
os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 20))

from websockets.asyncio.server import serve  # noqa: E402


async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except Exception:
        # Protocol errors are handled (and the close frame sent) by websockets;
        # nothing to do here for an echo peer.
        pass


def process_request(connection, request):
    upgrade = request.headers.get("Upgrade", "")
    if "websocket" not in upgrade.lower():
        return connection.respond(http.HTTPStatus.OK, "ok\n")
    return None


async def main(args):
    ssl_ctx = None
    if args.tls_cert:
        ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_ctx.load_cert_chain(args.tls_cert, args.tls_key)

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))

    async with serve(
        echo,
        args.host,
        args.port,
        ssl=ssl_ctx,
        process_request=process_request,
        compression=None if args.no_compression else "deflate",
        max_size=args.max_size,   # Autobahn 9.x sends messages up to 16 MiB
        max_queue=None,
        ping_interval=None,       # no keepalive pings interfering with test traffic
        server_header="edge-bench-echo (python-websockets)",
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print("LISTENING host=%s port=%d tls=%s" % (args.host, port, bool(ssl_ctx)), flush=True)
        if args.port_file:
            tmp = args.port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % port)
            os.replace(tmp, args.port_file)
        await stop


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="0 = ephemeral")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--tls-cert", help="PEM certificate (enables wss://)")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--no-compression", action="store_true", help="do not negotiate permessage-deflate")
    p.add_argument("--max-size", type=int, default=64 * 1024 * 1024, help="max message size in bytes")
    a = p.parse_args()
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    try:
        asyncio.run(main(a))
    except KeyboardInterrupt:
        pass
    sys.exit(0)
