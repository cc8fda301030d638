"""Hostile and ambiguous requests, in raw bytes: refused with the right status, the client
connection closed, and not one byte reaching the backend; or, where the request can be read
one way only, exactly one request upstream with framing the proxy re-derived."""

from __future__ import annotations

import pytest

from lbctl.config.model import Limits, Route
from tests.support import backend_config, config, raw_exchange, start_recorder

# (name, request bytes, expected status). Each request is followed by a valid pipelined
# request, which must never be forwarded either.
REFUSED = [
    ("CL with TE", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("duplicate CL", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    ("different CLs", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    ("CL list", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    ("CL sign", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc", 400),
    ("CL negative", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -3\r\n\r\nabc", 400),
    ("CL hex", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0x3\r\n\r\nabc", 400),
    ("CL empty", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: \r\n\r\nabc", 400),
    ("CL overflow", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
    ("TE unknown coding", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501),
    ("TE identity", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\nabc", 501),
    ("TE chunked not last", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\nabc", 400),
    ("TE gzip then chunked", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501),
    ("TE repeated", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("TE leading comma", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: ,chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("TE space before colon", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("TE control byte", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \x0bchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("obsolete line folding", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b\r\n c\r\n\r\n", 400),
    ("bare LF", b"GET / HTTP/1.1\nHost: t\n\n", 400),
    ("bare CR", b"GET / HTTP/1.1\rHost: t\r\n\r\n", 400),
    ("NUL in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b\x00c\r\n\r\n", 400),
    ("control byte in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b\x01c\r\n\r\n", 400),
    ("NUL in name", b"GET / HTTP/1.1\r\nHost: t\r\nX\x00A: b\r\n\r\n", 400),
    ("space in name", b"GET / HTTP/1.1\r\nHost: t\r\nX A: b\r\n\r\n", 400),
    ("invalid chunk size", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"fffffffffffffffff1\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk extension with bare LF", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"3;x\nabc\r\n0\r\n\r\n", 400),
    ("chunk data longer than its size", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                        b"3\r\nabcdef\r\n0\r\n\r\n", 400),
    ("trailer declaring Content-Length", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                         b"3\r\nabc\r\n0\r\nContent-Length: 9\r\n\r\n", 400),
    ("HTTP/0.9", b"GET /\r\n\r\n", 505),
    ("HTTP/2.0 request line", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: t\r\n\r\n", 400),
    ("tab in request line", b"GET\t/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("space in target", b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("target without slash", b"GET foo HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("asterisk target for GET", b"GET * HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("lower-case method", b"get / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("CONNECT", b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n", 405),
    ("missing Host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("duplicate Host", b"GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", 400),
    ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: evil@t\r\n\r\n", 400),
    ("Host with space", b"GET / HTTP/1.1\r\nHost: t u\r\n\r\n", 400),
    ("Host with slash", b"GET / HTTP/1.1\r\nHost: t/x\r\n\r\n", 400),
    ("absolute-form other authority", b"GET http://other.test/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("Upgrade with a body", b"POST / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            b"Content-Length: 3\r\n\r\nabc", 400),
    ("encoded NUL in path", b"GET /a%00b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("bad percent escape", b"GET /a%zzb HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ("backslash in path", b"GET /public\\..\\admin HTTP/1.1\r\nHost: t\r\n\r\n", 400),
]

FOLLOWER = b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture
async def guarded(backends):
    port, record = await start_recorder(backends)
    limits = Limits(max_uri_length=256, max_header_size=2048, max_headers=20, max_body_size=1000)
    proxy = await backends.proxy(config({"p": [backend_config(f"http://127.0.0.1:{port}", "r")]},
                                        limits=limits))
    return proxy.address[1], record


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1.1 "), raw[:80]
    return int(raw[9:12])


@pytest.mark.parametrize("name, request_bytes, status", REFUSED, ids=[c[0] for c in REFUSED])
async def test_refused_with_status_close_and_zero_bytes_upstream(guarded, name, request_bytes, status):
    port, record = guarded
    raw = await raw_exchange(port, request_bytes + FOLLOWER)   # returns once the proxy closes
    assert status_of(raw) == status
    assert raw.count(b"HTTP/1.1 ") == 1                         # the follower was not answered
    assert b"Connection: close" in raw
    assert bytes(record.raw) == b"" and record.connections == 0


LIMITS = [
    ("URI too long", b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    ("header too large", b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 3000 + b"\r\n\r\n", 431),
    ("too many headers", b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30))
                         + b"\r\n", 431),
    ("declared body too large", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n", 413),
    ("chunked body too large", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                               + b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n", 413),
]


@pytest.mark.parametrize("name, request_bytes, status", LIMITS, ids=[c[0] for c in LIMITS])
async def test_limits_answer_their_status_and_forward_nothing(guarded, name, request_bytes, status):
    port, record = guarded
    raw = await raw_exchange(port, request_bytes + FOLLOWER)
    assert status_of(raw) == status
    assert raw.count(b"HTTP/1.1 ") == 1
    assert bytes(record.raw) == b""


async def test_expect_continue_over_the_limit_gets_413_without_100(guarded):
    port, record = guarded
    raw = await raw_exchange(port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
                                   b"Expect: 100-continue\r\n\r\n")
    assert status_of(raw) == 413 and b" 100 " not in raw
    assert bytes(record.raw) == b""


# Requests that can be read only one way: forwarded once, with framing the proxy re-derived.
ACCEPTED = [
    ("double space in request line", b"GET  /x HTTP/1.1\r\nHost: t\r\n\r\n", "/x"),
    ("upper-case chunked", b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: CHUNKED\r\n\r\n"
                           b"3\r\nabc\r\n0\r\n\r\n", "/x"),
    ("chunk extensions", b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3;name=value\r\nabc\r\n0\r\n\r\n", "/x"),
    ("absolute-form same authority", b"GET http://t/x?q=1 HTTP/1.1\r\nHost: t\r\n\r\n", "/x?q=1"),
    ("OPTIONS asterisk", b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", "*"),
]


@pytest.mark.parametrize("name, request_bytes, target", ACCEPTED, ids=[c[0] for c in ACCEPTED])
async def test_unambiguous_requests_are_forwarded_once_with_rederived_framing(
        guarded, name, request_bytes, target):
    port, record = guarded
    raw = await raw_exchange(port, request_bytes.replace(b"Host: t\r\n",
                                                         b"Host: t\r\nConnection: close\r\n", 1))
    assert status_of(raw) == 200
    assert len(record.requests) == 1 and "error" not in record.requests[0]
    sent = bytes(record.raw)
    assert sent.split(b"\r\n", 1)[0] == b"%s %s HTTP/1.1" % (record.requests[0]["method"],
                                                             target.encode())
    assert not (b"content-length:" in sent.lower() and b"transfer-encoding:" in sent.lower())
    if b"abc" in request_bytes:
        assert record.requests[0]["body"] == b"abc"
        assert b";name" not in sent                # extensions are not forwarded


async def test_trailers_cannot_smuggle_headers(guarded):
    port, record = guarded
    raw = await raw_exchange(port, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                                   b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\nX-Evil: 1\r\n"
                                   b"X-Forwarded-For: 6.6.6.6\r\n\r\n")
    assert status_of(raw) == 200
    assert b"X-Evil" not in bytes(record.raw) and b"6.6.6.6" not in bytes(record.raw)
    assert record.requests[0]["body"] == b"abc"


async def test_underscored_headers_are_dropped(guarded):
    port, record = guarded
    await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\nX_Forwarded_For: 6.6.6.6\r\n"
                             b"X_User: admin\r\nConnection: close\r\n\r\n")
    assert b"_" not in bytes(record.raw).split(b"\r\n\r\n")[0].split(b"\r\n", 1)[1]


async def test_proxy_set_headers_cannot_be_spoofed_or_named_away(guarded):
    port, record = guarded
    await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close, X-Forwarded-For, "
                             b"X-Request-ID\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\r\n")
    headers = dict(record.requests[0]["headers"])
    assert headers[b"X-Forwarded-For"] == b"127.0.0.1"
    assert headers[b"X-Forwarded-Proto"] == b"http"
    assert b"X-Request-ID" in headers


async def test_a_body_turning_bad_after_the_head_was_forwarded_never_completes_upstream(guarded):
    """The head of a chunked request may leave before its body is seen; a malformed chunk
    later aborts the upstream exchange, so the backend never sees a complete request."""
    import asyncio
    port, record = guarded
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    await writer.drain()
    await asyncio.wait_for(record.arrived.wait(), 5)    # the head reached the backend
    writer.write(b"zz\r\n")
    raw = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    assert status_of(raw) == 400
    assert record.requests in ([], [{"error": True}])   # never a complete request


PATHS = [
    (b"/public/../admin", 404),
    (b"/public/%2e%2e/admin", 404),
    (b"/public/%2E%2E/admin", 404),
    (b"//admin", 404),
    (b"/public/./../admin", 404),
    (b"/public/x/../../admin", 404),
]


@pytest.mark.parametrize("path, status", PATHS, ids=[p[0].decode() for p in PATHS])
async def test_dot_segments_and_encodings_cannot_escape_a_route(backends, path, status):
    port, record = await start_recorder(backends)
    cfg = config({"public": [backend_config(f"http://127.0.0.1:{port}", "pub")]},
                 routes=[Route(pool="public", path_prefix="/public")])
    proxy = await backends.proxy(cfg)
    raw = await raw_exchange(proxy.address[1], b"GET %s HTTP/1.1\r\nHost: t\r\n"
                                               b"Connection: close\r\n\r\n" % path)
    assert status_of(raw) == status
    assert bytes(record.raw) == b""


async def test_the_canonical_path_is_the_one_forwarded(backends):
    port, record = await start_recorder(backends)
    cfg = config({"public": [backend_config(f"http://127.0.0.1:{port}", "pub")]},
                 routes=[Route(pool="public", path_prefix="/public")])
    proxy = await backends.proxy(cfg)
    raw = await raw_exchange(proxy.address[1], b"GET /public/./a//b/%7Euser/%2F/../c?x=%2e HTTP/1.1\r\n"
                                               b"Host: t\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 200
    assert record.requests[0]["url"] == b"/public/a/b/~user/c?x=%2e"
