/// The admin listener's status page (`GET /`), as HAProxy's stats page is for its users: one self-contained HTML
/// page (no external scripts or styles) that reads `/status` every two seconds and shows live connections,
/// requests per second, the cache hit ratio, upstream health and the latest 5xx answers. The page sends the same
/// bearer token it was opened with (`#token=` in its address), so that a token-guarded listener works too.
enum StatusPage {
    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Edge status</title>
    <style>
    body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1b1f24; background: #f6f8fa; }
    h1 { font-size: 20px; margin: 0 0 4px; }
    .sub { color: #57606a; margin-bottom: 16px; }
    .tiles { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 20px; }
    .tile { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 14px; min-width: 140px; }
    .tile .v { font-size: 24px; font-weight: 600; }
    .tile .k { color: #57606a; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
    table { border-collapse: collapse; background: #fff; margin-bottom: 20px; min-width: 480px; }
    th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; font-variant-numeric: tabular-nums; }
    th { background: #eaeef2; }
    .up { color: #1a7f37; font-weight: 600; } .down { color: #cf222e; font-weight: 600; }
    h2 { font-size: 16px; margin: 8px 0; }
    #error { color: #cf222e; }
    </style>
    </head>
    <body>
    <h1>Edge</h1>
    <div class="sub" id="sub">loading…</div>
    <div id="error"></div>
    <div class="tiles">
      <div class="tile"><div class="k">Connections</div><div class="v" id="connections">–</div></div>
      <div class="tile"><div class="k">Requests / s</div><div class="v" id="rps">–</div></div>
      <div class="tile"><div class="k">Requests</div><div class="v" id="requests">–</div></div>
      <div class="tile"><div class="k">In flight</div><div class="v" id="inflight">–</div></div>
      <div class="tile"><div class="k">Cache hit ratio</div><div class="v" id="hit">–</div></div>
      <div class="tile"><div class="k">Cache entries</div><div class="v" id="entries">–</div></div>
      <div class="tile"><div class="k">5xx</div><div class="v" id="errors5">–</div></div>
      <div class="tile"><div class="k">Memory</div><div class="v" id="rss">–</div></div>
    </div>
    <h2>Connections by protocol</h2>
    <table id="protocols"><tr><th>Protocol</th><th>TLS</th><th>Open</th></tr></table>
    <h2>Upstreams</h2>
    <table id="upstreams"><tr><th>Upstream</th><th>Server</th><th>Health</th><th>Active</th><th>Requests</th><th>Failures</th></tr></table>
    <h2>Recent errors</h2>
    <table id="recent"><tr><th>Time</th><th>Status</th><th>Method</th><th>Target</th><th>Route</th></tr></table>
    <script>
    "use strict";
    const token = new URLSearchParams(location.hash.slice(1)).get("token");
    let last = null;
    function text(id, value) { document.getElementById(id).textContent = value; }
    function row(table, cells, classes) {
      const tr = document.createElement("tr");
      cells.forEach((cell, i) => {
        const td = document.createElement("td");
        td.textContent = cell;
        if (classes && classes[i]) td.className = classes[i];
        tr.appendChild(td);
      });
      table.appendChild(tr);
    }
    function reset(table) { while (table.rows.length > 1) table.deleteRow(1); }
    function bytes(n) {
      const units = ["B", "KiB", "MiB", "GiB"];
      let i = 0;
      while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
      return n.toFixed(i ? 1 : 0) + " " + units[i];
    }
    async function refresh() {
      try {
        const response = await fetch("status", { headers: token ? { Authorization: "Bearer " + token } : {} });
        if (!response.ok) throw new Error("/status answered " + response.status);
        const s = await response.json();
        const now = performance.now();
        text("sub", "version " + s.version + " · up " + Math.round(s.uptime_seconds) + " s · configuration generation "
          + s.generation + (s.draining ? " · DRAINING" : ""));
        text("connections", s.connections);
        text("requests", s.requests);
        text("inflight", s.in_flight);
        const lookups = s.cache_hits + s.cache_misses;
        text("hit", lookups ? (100 * s.cache_hits / lookups).toFixed(1) + " %" : "–");
        text("entries", s.cache_entries);
        text("errors5", s.requests_by_status["5xx"] || 0);
        text("rss", bytes(s.resident_bytes));
        if (last) text("rps", ((s.requests - last.requests) / ((now - last.at) / 1000)).toFixed(1));
        last = { requests: s.requests, at: now };
        const protocols = document.getElementById("protocols");
        reset(protocols);
        s.connections_by_protocol.forEach(c => row(protocols, [c.protocol, c.tls || "none", c.open]));
        const upstreams = document.getElementById("upstreams");
        reset(upstreams);
        s.upstreams.forEach(u => u.servers.forEach(v => row(upstreams,
          [u.name, v.server, v.up ? "up" : "down", v.active, v.requests, v.failures], [null, null, v.up ? "up" : "down"])));
        const recent = document.getElementById("recent");
        reset(recent);
        s.recent_errors.slice().reverse().forEach(e => row(recent,
          [new Date(e.unix_milliseconds).toISOString(), e.status, e.method, e.target, e.route]));
        text("error", "");
      } catch (e) {
        text("error", String(e));
      }
    }
    refresh();
    setInterval(refresh, 2000);
    </script>
    </body>
    </html>
    """#
}
