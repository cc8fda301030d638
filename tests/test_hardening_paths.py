"""Request targets and the paths backends read from them.

The auth bypass: with an api_key route on ``/admin`` followed by a catch-all, ``GET /admin#``
used to take the catch-all (no auth) to a backend that reads ``/admin``. Every character
outside the RFC 9112/3986 request-target grammar is now a 400 and a close; and a path that
a common backend reads differently (``/ADMIN`` on IIS, ``/admin;x`` on Tomcat, ``/admin%2Fx``
on frameworks that decode slashes) must be routed the same under every reading, or it is
refused. Raw bytes in, status and what the backend received out.
"""

from __future__ import annotations

import string

import pytest

from lbctl.config.model import Paths
from lbctl.proxy.paths import PathRefused, canonical_path, readings
from tests.gateway_support import load, sha256_hex
from tests.support import raw_exchange, start_recorder

KEY = "a-long-random-api-key-for-the-admin-route-0123456789"
FOLLOWER = b"GET /public HTTP/1.1\r\nHost: t\r\n\r\n"


def gateway_toml(port: int, paths: str = "", routes: str | None = None) -> str:
    routes = routes if routes is not None else '''
[[routes]]
path_prefix = "/admin"
pool = "api"
auth = { type = "api_key" }

[[routes]]
pool = "api"
'''
    return f'''
{paths}
[keys.ops]
hash = "{sha256_hex(KEY)}"
{routes}
[pools.api]
[[pools.api.backends]]
url = "http://127.0.0.1:{port}"
name = "r"
'''


async def gateway(backends, tmp_path, paths: str = "", routes: str | None = None):
    port, record = await start_recorder(backends)
    proxy = await backends.proxy(load(tmp_path, gateway_toml(port, paths, routes)))
    return proxy.address[1], record


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1.1 "), raw[:80]
    return int(raw[9:12])


async def get(port: int, target: bytes, extra: bytes = b"") -> bytes:
    return await raw_exchange(port, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n" + extra +
                              b"Connection: close\r\n\r\n")


# ---- the bypass, byte for byte --------------------------------------------------------------

async def test_a_fragment_mark_cannot_take_an_admin_request_past_its_auth(backends, tmp_path):
    port, record = await gateway(backends, tmp_path)
    raw = await raw_exchange(port, b"GET /admin# HTTP/1.1\r\nHost: t\r\n\r\n" + FOLLOWER)
    assert status_of(raw) == 400 and b"'#'" in raw
    assert raw.count(b"HTTP/1.1 ") == 1                 # the pipelined follower is not read
    assert b"Connection: close" in raw                  # and raw_exchange saw the close
    assert bytes(record.raw) == b"" and record.connections == 0


async def test_the_same_gateway_lets_through_what_it_should(backends, tmp_path):
    """The control for the test above: the route and the catch-all work as configured."""
    port, record = await gateway(backends, tmp_path)
    assert status_of(await get(port, b"/admin")) == 401
    assert status_of(await get(port, b"/admin", b"X-API-Key: " + KEY.encode() + b"\r\n")) == 200
    assert status_of(await get(port, b"/public?q=1")) == 200
    assert [r["url"] for r in record.requests] == [b"/admin", b"/public?q=1"]


# ---- the grammar, derived from the ABNF ----------------------------------------------------
# RFC 3986: pchar = unreserved / pct-encoded / sub-delims / ":" / "@";
# query = *( pchar / "/" / "?" ). Written out here, independently of lbctl/uri.py.
ALLOWED_IN_QUERY = set((string.ascii_letters + string.digits + "-._~" + "!$&'()*+,;=" + ":@" +
                        "/?").encode())
# A space ends the target and "%" starts an escape (tested on its own); every other byte is
# either in the grammar or must be refused, wherever it appears.
SINGLE_BYTES = [b for b in range(256) if b not in (ord(" "), ord("%"))]


@pytest.mark.parametrize("byte", SINGLE_BYTES, ids=[f"0x{b:02x}" for b in SINGLE_BYTES])
async def test_every_byte_outside_the_grammar_is_refused_in_path_and_query(backends, tmp_path, byte):
    port, record = await gateway(backends, tmp_path)
    for target in (b"/public/a%cb" % byte, b"/public?a=%cb" % byte):
        raw = await raw_exchange(port, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n"
                                       b"Connection: close\r\n\r\n")
        if byte in ALLOWED_IN_QUERY and not (target.startswith(b"/public/") and byte == ord("?")):
            assert status_of(raw) == 200, (target, raw)
        elif byte in ALLOWED_IN_QUERY:
            assert status_of(raw) == 200              # "?" in the path starts the query
        else:
            assert status_of(raw) == 400, (target, raw)
            assert b"Connection: close" in raw
    forwarded = [r["url"] for r in record.requests]
    assert all(set(url) <= ALLOWED_IN_QUERY | {ord("%")} for url in forwarded)
    assert len(forwarded) == (2 if byte in ALLOWED_IN_QUERY else 0)


@pytest.mark.parametrize("target", [b"/a%", b"/a%4", b"/a%zz", b"/a?x=%", b"/a?x=%g1",
                                    b"/a?x=100%"])
async def test_a_percent_sign_must_start_an_escape_in_path_and_query(backends, tmp_path, target):
    port, record = await gateway(backends, tmp_path)
    assert status_of(await get(port, target)) == 400
    assert bytes(record.raw) == b""


async def test_absolute_form_targets_are_held_to_the_grammar_too(backends, tmp_path):
    port, record = await gateway(backends, tmp_path)
    assert status_of(await get(port, b"http://t/admin#")) == 400
    assert status_of(await get(port, b"http://t/a|b")) == 400
    assert status_of(await get(port, b"http://t?x=1")) == 200      # an empty path is "/"
    assert [r["url"] for r in record.requests] == [b"/?x=1"]


async def test_the_http2_preface_gets_505_and_a_close(backends, tmp_path):
    port, record = await gateway(backends, tmp_path)
    raw = await raw_exchange(port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert status_of(raw) == 505 and b"Connection: close" in raw
    assert bytes(record.raw) == b""


# ---- readings backends make: refused unless every one lands on the same route ---------------

BYPASSES = [
    b"/ADMIN",                     # IIS, case-insensitive file systems
    b"/Admin/users",
    b"/%41dmin",                   # an escaped letter is the letter
    b"/admin;x",                   # Tomcat, Jetty, Spring strip path parameters
    b"/admin;x/users",
    b"/admin%2Fusers",             # frameworks that decode %2F before routing
    b"/admin%5Cusers",             # ...or read a backslash as a slash
    b"/public/..;/admin",          # Tomcat's traversal: /public/../admin
    b"/public/.;/../admin",
    b"/admin%3Busers",             # an encoded ";": data or a delimiter, by decoding order
    b"/public%2F..%2Fadmin",
    b"/ADMIN;x",
]


@pytest.mark.parametrize("target", BYPASSES, ids=[t.decode() for t in BYPASSES])
async def test_no_reading_of_the_path_reaches_the_backend_without_the_admin_route(
        backends, tmp_path, target):
    port, record = await gateway(backends, tmp_path)
    raw = await get(port, target)
    assert status_of(raw) in (400, 401), raw          # refused, or the admin route's auth
    assert bytes(record.raw) == b""


@pytest.mark.parametrize("target", [b"/ADMIN", b"/admin;x", b"/admin%2Fx"])
async def test_an_ambiguous_path_is_refused_like_a_malformed_request(backends, tmp_path, target):
    """400, Connection: close, the pipelined follower never answered nor forwarded."""
    port, record = await gateway(backends, tmp_path)
    raw = await raw_exchange(port, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n" + FOLLOWER)
    assert status_of(raw) == 400 and b"Connection: close" in raw
    assert raw.count(b"HTTP/1.1 ") == 1
    assert bytes(record.raw) == b""


async def test_a_stricter_catch_all_is_not_escaped_through_a_permissive_prefix(backends, tmp_path):
    """Routes in the other order: /public is open and everything else needs a key. Folding
    case or stripping parameters must not move a request *into* the open route either."""
    port, record = await gateway(backends, tmp_path, routes='''
[[routes]]
path_prefix = "/public"
pool = "api"

[[routes]]
pool = "api"
auth = { type = "api_key" }
''')
    for target in (b"/PUBLIC/secret", b"/public;x/secret", b"/public%2Fsecret"):
        assert status_of(await get(port, target)) == 400, target
    assert status_of(await get(port, b"/public/a")) == 200
    assert [r["url"] for r in record.requests] == [b"/public/a"]


UNAMBIGUOUS = [
    b"/api/projects/group%2Fproject",      # an escaped slash deep under one route
    b"/shop/cart;jsessionid=ABC123",       # a parameter that routes the same either way
    b"/static/Logo.PNG",                   # case that changes no route
    b"/public/a/../b/./c",                 # dot segments are removed, then routed
]


@pytest.mark.parametrize("target", UNAMBIGUOUS, ids=[t.decode() for t in UNAMBIGUOUS])
async def test_paths_every_reading_routes_the_same_way_pass_unchanged(backends, tmp_path, target):
    port, record = await gateway(backends, tmp_path)
    assert status_of(await get(port, target)) == 200
    expected = b"/public/b/c" if b".." in target else target
    assert [r["url"] for r in record.requests] == [expected]


# ---- the [paths] options --------------------------------------------------------------------

OPTIONS = [
    # (paths table, target, status, what the backend receives)
    ('case = "insensitive"', b"/ADMIN", 401, None),
    ('case = "insensitive"', b"/Public", 200, b"/Public"),
    ('case = "sensitive"', b"/ADMIN", 200, b"/ADMIN"),
    ('path_parameters = "strip"', b"/admin;x", 401, None),
    ('path_parameters = "strip"', b"/shop/cart;jsessionid=1/items", 200, b"/shop/cart/items"),
    ('path_parameters = "reject"', b"/shop/cart;jsessionid=1", 400, None),
    ('path_parameters = "keep"', b"/admin;x", 200, b"/admin;x"),
    ('path_parameters = "keep"', b"/public/..;/admin", 200, b"/public/..;/admin"),
    ('escaped_slashes = "reject"', b"/api/group%2Fproject", 400, None),
    ('escaped_slashes = "unescape"', b"/admin%2Fusers", 401, None),
    ('escaped_slashes = "unescape"', b"/a%2Fb%5Cc", 200, b"/a/b/c"),
    ('escaped_slashes = "keep"', b"/admin%2Fusers", 200, b"/admin%2Fusers"),
    ("merge_slashes = false", b"/a//b", 200, b"/a//b"),
    ("merge_slashes = false", b"//admin", 400, None),
    ("merge_slashes = true", b"//admin", 401, None),
]


@pytest.mark.parametrize("paths, target, status, forwarded", OPTIONS,
                         ids=[f"{o[0]} {o[1].decode()}" for o in OPTIONS])
async def test_paths_options(backends, tmp_path, paths, target, status, forwarded):
    port, record = await gateway(backends, tmp_path, paths=f"[paths]\n{paths}\n")
    raw = await get(port, target)
    assert status_of(raw) == status, raw
    assert [r["url"] for r in record.requests] == ([forwarded] if forwarded else [])


# ---- the pure functions ---------------------------------------------------------------------

DEFAULT = Paths()


@pytest.mark.parametrize("path, canonical", [
    ("/a/b", "/a/b"),
    ("/a//b/./c/../d", "/a/b/d"),
    ("/%7euser/%2f", "/~user/%2F"),
    ("/a;b/c", "/a;b/c"),
    ("/..", "/"),
])
def test_canonical_path(path, canonical):
    assert canonical_path(path, DEFAULT) == canonical


@pytest.mark.parametrize("path", ["/a\\b", "/a%00", "/a%2", "/..;/x", "/a/.;x/b", "/a%3Bb"])
def test_canonical_path_refuses(path):
    with pytest.raises(PathRefused):
        canonical_path(path, DEFAULT)


def test_readings_cover_each_doubt_and_their_combinations():
    assert readings("/a/b", DEFAULT, cased_prefixes=False) == []
    assert readings("/a/B", DEFAULT, cased_prefixes=False) == [("/a/B", True)]
    assert ("/x/y", False) in readings("/x;p/y", DEFAULT, False)
    both = readings("/X;p%2Fy", DEFAULT, False)
    assert ("/X/y", False) in both and ("/X/y", True) in both and ("/X;p/y", True) in both
    assert readings("/a/B", Paths(case="sensitive"), False) == []
    assert readings("/a;b", Paths(path_parameters="keep"), False) == []
    assert readings("/a//b", Paths(merge_slashes=False), False) == [("/a/b", False)]


# ---- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("toml, message", [
    ('[paths]\ncase = "ignore"\n', 'paths.case: expected one of "reject_ambiguous", "sensitive", '
                                   '"insensitive", found "ignore"'),
    ('[[routes]]\npath_prefix = "/a;b"\npool = "api"\n', 'routes[0].path_prefix: expected no ";"'),
    ('[[routes]]\npath_prefix = "/%7Euser"\npool = "api"\n', "write '~' for %7E"),
    ('[[routes]]\npath_prefix = "/a/../b"\npool = "api"\n', 'without "." or ".." segments'),
    ('[[routes]]\npath_prefix = "/a#b"\npool = "api"\n', "percent-encode '#'"),
    ('[paths]\nescaped_slashes = "unescape"\n[[routes]]\npath_prefix = "/a%2Fb"\npool = "api"\n',
     "expected no %2F or %5C"),
])
def test_paths_and_prefixes_are_validated(tmp_path, toml, message):
    from lbctl.config.loader import ConfigError
    text = toml + '[pools.api]\n[[pools.api.backends]]\nurl = "http://127.0.0.1:9"\n'
    if "[[routes]]" not in toml:
        text = toml + '[[routes]]\npool = "api"\n' + text[len(toml):]
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert message in str(caught.value), str(caught.value)
