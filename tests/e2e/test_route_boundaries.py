"""Route prefixes match by bytes and at segment boundaries, never by Unicode characters or as string prefixes.

Found by trying Edge as an attacker would: with `/` public and `/private` behind Basic auth over the same
folder, an HTTP/2 `:path` of `/` + U+0301 + `private/secret.txt` was served by `/` with the prefix cut by
*characters* (the accent went with the slash), so the file path became `/private/secret.txt`; and a route
`/files` answered `/filesprivate/secret.txt` from its root, past the more specific `/files/private` route.
"""

from __future__ import annotations

import pytest

from conftest import H2Client, RawConn, basic, run_edge


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory):
    import bcrypt

    path = tmp_path_factory.mktemp("auth") / "htpasswd"
    path.write_text(f"alice:{bcrypt.hashpw(b'wonderland', bcrypt.gensalt(rounds=4)).decode()}\n")
    return path


@pytest.fixture(scope="module")
def layouts(module_edge_factory, htpasswd, tmp_path_factory):
    """The README's layouts: `/` over a folder with `/private` guarded; `/docs/` (written with a trailing slash)
    over another with `/docs/private` guarded; `/files` over a third, whose subfolder is also served by
    `/files/private` behind Basic auth."""
    root = tmp_path_factory.mktemp("www")
    (root / "private").mkdir()
    (root / "private" / "secret.txt").write_text("root secret\n")
    docs = tmp_path_factory.mktemp("docs")
    (docs / "private").mkdir()
    (docs / "private" / "secret.txt").write_text("docs secret\n")
    (docs / "guide.txt").write_text("guide\n")
    files = tmp_path_factory.mktemp("files")
    (files / "private").mkdir()
    (files / "private" / "secret.txt").write_text("files secret\n")
    (files / "a.txt").write_text("a\n")
    auth = f'basic_auth = {{ realm = "edge test", htpasswd = "{htpasswd}" }}'
    return module_edge_factory.start(config=f"""
[[route]]
path = "/"
static = "{root}"

[[route]]
path = "/private"
static = "{root / "private"}"
{auth}

[[route]]
path = "/docs/"
static = "{docs}"

[[route]]
path = "/docs/private"
static = "{docs / "private"}"
{auth}

[[route]]
path = "/files"
static = "{files}"

[[route]]
path = "/files/private"
static = "{files / "private"}"
{auth}
""")


def http1(server, path: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET `path` (raw bytes, sent as they are) over a raw HTTP/1.1 socket."""
    head = b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n"
    head += b"".join(f"{k}: {v}\r\n".encode() for k, v in (headers or {}).items())
    with RawConn(server.http.host, server.http.port) as conn:
        conn.send(head + b"Connection: close\r\n\r\n")
        response = conn.read_response()
        return response.status, response.body


def http2(server, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET `path` as an HTTP/2 `:path` (UTF-8 bytes, sent as they are)."""
    client = H2Client(server.https.host, server.https.port)
    try:
        sid = client.request(path, headers=headers)
        assert client.pump(until=lambda: client.ended(sid) or "reset" in client.streams[sid]), f"no answer for {path!r}"
        stream = client.streams[sid]
        return (0 if "reset" in stream else int(stream["status"])), stream["body"]
    finally:
        client.close()


MARKS = ["\u0301", "\u200d", "\u0600", "\ufe0f", "\u0308"]


@pytest.mark.parametrize("mark", MARKS)
@pytest.mark.parametrize("template", ["/{m}private/secret.txt", "/docs/{m}private/secret.txt", "/files/{m}private/secret.txt",
                                      "/{m}/private/secret.txt"])
def test_a_mark_that_joins_the_slash_does_not_reach_a_guarded_file(layouts, mark, template):
    """Raw non-ASCII bytes in a request target get 400 over both protocols (HTTP/1.1's parser refuses them; an
    HTTP/2 `:path` is held to the same rule), and never a guarded file."""
    path = template.format(m=mark)
    assert http2(layouts, path) == (400, b"invalid byte in the request target\n"), path
    status, body = http1(layouts, path.encode())
    assert status == 400 and b"secret" not in body, (path, status, body)


@pytest.mark.parametrize("mark", ["%CC%81", "%E2%80%8D", "%D8%80"])
@pytest.mark.parametrize("prefix,secret", [("", b"root secret"), ("/docs", b"docs secret"), ("/files", b"files secret")])
def test_an_escaped_mark_is_a_file_name_byte_not_a_way_past_the_route(layouts, mark, prefix, secret):
    """Escaped, the same marks are legal: they stay part of the segment they begin (a file that does not exist),
    over both protocols."""
    path = f"{prefix}/{mark}private/secret.txt"
    for status, body in (http1(layouts, path.encode()), http2(layouts, path)):
        assert status == 404 and secret not in body, (path, status, body)


@pytest.mark.parametrize("path,secret", [
    ("/filesprivate/secret.txt", b"files secret"), ("/files/../filesprivate/secret.txt", b"files secret"),
    ("/docsprivate/secret.txt", b"docs secret"), ("/privatex/../private/secret.txt", b"root secret"),
])
def test_a_prefix_matches_only_at_a_segment_boundary(layouts, path, secret):
    """`/files` does not serve `/filesprivate/…` (no `/` is inserted after a prefix): the request falls to `/`,
    which has no such file."""
    for status, body in (http1(layouts, path.encode()), http2(layouts, path)):
        assert status in (401, 404) and secret not in body, (path, status, body)


@pytest.mark.parametrize("path,body", [
    ("/files/private/secret.txt", b"files secret\n"), ("/docs/private/secret.txt", b"docs secret\n"),
    ("/private/secret.txt", b"root secret\n"),
])
def test_the_guarded_routes_still_serve_with_credentials(layouts, path, body):
    assert http1(layouts, path.encode()) == (401, b"authentication required\n")
    assert http2(layouts, path) == (401, b"authentication required\n")
    auth = {"Authorization": basic("alice", "wonderland")}
    assert http1(layouts, path.encode(), auth) == (200, body)
    assert http2(layouts, path, auth) == (200, body)


@pytest.mark.parametrize("path,expected", [
    ("/docs/guide.txt", (200, b"guide\n")), ("/docs", (301, None)), ("/files/a.txt", (200, b"a\n")),
    ("/files", (301, None)),
])
def test_both_spellings_of_a_prefix_serve_their_own_paths(layouts, path, expected):
    """`/docs/` (written with its slash) and `/files` (without) both serve the prefix itself and below it."""
    for status, body in (http1(layouts, path.encode()), http2(layouts, path)):
        assert status == expected[0], (path, status, body)
        if expected[1] is not None:
            assert body == expected[1]


def test_check_config_takes_both_spellings_and_refuses_them_together(tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    config = tmp_path / "edge.toml"
    config.write_text(f'[[route]]\npath = "/docs/"\nstatic = "{folder}"\n\n[[route]]\npath = "/files"\nstatic = "{folder}"\n')
    assert run_edge(["check-config", str(config)]).returncode == 0
    config.write_text(f'[[route]]\npath = "/docs/"\nstatic = "{folder}"\n\n[[route]]\npath = "/docs"\nstatic = "{folder}"\n')
    result = run_edge(["check-config", str(config)])
    assert result.returncode != 0
    assert 'route[1].path' in result.stderr and 'matches the same requests as another route\'s "/docs/"' in result.stderr, result.stderr
