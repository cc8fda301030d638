"""The proxy relays requests through real sockets: rotation, weights, framing, headers."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from lbctl.config.model import Route
from tests.support import backend_config, config, raw_exchange, split_responses


async def get_names(port: int, n: int, path: str = "/", headers=None) -> list[str]:
    names = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as resp:
                assert resp.status == 200
                names.append(resp.headers["X-Backend"])
    return names


async def test_round_robin_rotation_through_the_proxy(backends):
    a, b, c = [await backends.start(n) for n in "abc"]
    proxy = await backends.proxy(config({"p": [backend_config(x.url, x.name) for x in (a, b, c)]}))
    names = await get_names(proxy.address[1], 9)
    assert names == ["a", "b", "c"] * 3


async def test_weighted_shares_follow_weights_through_the_proxy(backends):
    a, b = await backends.start("a"), await backends.start("b")
    cfg = config({"p": [backend_config(a.url, "a", weight=3), backend_config(b.url, "b")]},
                 algorithm="weighted")
    proxy = await backends.proxy(cfg)
    names = await get_names(proxy.address[1], 8)
    # Smooth WRR with 3:1 interleaves: a a b a | a a b a
    assert names == ["a", "a", "b", "a"] * 2


async def test_routes_by_host_and_path_first_match_wins_and_404(backends):
    api, web_, other = [await backends.start(n) for n in ("api", "web", "other")]
    cfg = config(
        {"api": [backend_config(api.url, "api")], "web": [backend_config(web_.url, "web")],
         "other": [backend_config(other.url, "other")]},
        routes=[Route(pool="api", host="API.example.com", path_prefix="/v1"),
                Route(pool="other", host="*.example.com"),
                Route(pool="web", host="www.example.com")])
    proxy = await backends.proxy(cfg)
    port = proxy.address[1]
    assert await get_names(port, 1, "/v1/users", {"Host": "api.example.com:8080"}) == ["api"]
    # "/v1x" is not below "/v1": falls through to the wildcard route
    assert await get_names(port, 1, "/v1x", {"Host": "api.example.com"}) == ["other"]
    assert await get_names(port, 1, "/", {"Host": "www.example.com"}) == ["other"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/", headers={"Host": "example.com"}) as r:
            assert r.status == 404
            assert "no route" in await r.text()


async def test_forwarded_headers_request_id_and_hop_by_hop_stripping(backends):
    a = await backends.start("a")
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]}))
    request = (b"GET /x?q=1 HTTP/1.1\r\nHost: shop.test\r\nConnection: keep-alive, X-Secret\r\n"
               b"X-Secret: dropme\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
               b"Proxy-Connection: keep-alive\r\nX-Forwarded-For: 6.6.6.6\r\n"
               b"X-Forwarded-Host: evil\r\nX-Request-ID: abc-123\r\nX-Kept: yes\r\n\r\n"
               b"GET /y HTTP/1.1\r\nHost: shop.test\r\nX-Request-ID: bad id\r\n"
               b"Connection: close\r\n\r\n")
    raw = await raw_exchange(proxy.address[1], request)
    responses = split_responses(raw)
    assert [r[0] for r in responses] == [200, 200]
    first, second = a.seen
    assert first.path == "/x?q=1"
    lower = {k.lower() for k in first.headers}
    for hop in ("x-secret", "keep-alive", "te", "proxy-connection", "connection"):
        assert hop not in lower, hop
    assert first.headers["X-Kept"] == "yes"
    assert first.headers["X-Forwarded-For"] == "127.0.0.1"
    assert first.headers["X-Forwarded-Host"] == "shop.test"
    assert first.headers["X-Forwarded-Proto"] == "http"
    assert first.headers["Host"] == "shop.test"
    assert first.headers["X-Request-ID"] == "abc-123"
    # An invalid id is replaced by a generated one.
    assert second.headers["X-Request-ID"] != "bad id" and second.headers["X-Request-ID"]


async def test_response_hop_by_hop_headers_are_stripped(backends):
    async def handler(request, body):
        return web.Response(text="ok", headers={"Connection": "X-Internal", "X-Internal": "1",
                                                "Keep-Alive": "timeout=9", "X-Public": "2"})
    a = await backends.start("a", handler)
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]}))
    raw = await raw_exchange(proxy.address[1],
                             b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    (status, headers, body), = split_responses(raw)
    assert status == 200 and body == b"ok"
    assert "x-internal" not in headers and "keep-alive" not in headers
    assert headers["x-public"] == "2"
    assert headers["connection"] == "close"


async def test_pipelined_requests_are_answered_in_order(backends):
    async def handler(request, body):
        # The first request is the slowest: responses must still come back in request order.
        delay = {"/1": 0.05, "/2": 0.0, "/3": 0.01}.get(request.path, 0)
        await asyncio.sleep(delay)
        return web.Response(text=request.path)
    a = await backends.start("a", handler)
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]}))
    pipeline = b"".join(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in (1, 2, 3))
    raw = await raw_exchange(proxy.address[1], pipeline + b"GET /4 HTTP/1.1\r\nHost: t\r\n"
                             b"Connection: close\r\n\r\n")
    assert [body for _, _, body in split_responses(raw)] == [b"/1", b"/2", b"/3", b"/4"]


async def test_chunked_request_and_response_bodies(backends):
    async def handler(request, body):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (body[:3], body[3:]):
            await resp.write(part)
        await resp.write_eof()
        return resp
    a = await backends.start("a", handler)
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]}))
    request = (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    raw = await raw_exchange(proxy.address[1], request)
    (status, headers, body), = split_responses(raw)
    assert status == 200 and body == b"hello world"
    assert headers["transfer-encoding"] == "chunked"
    seen = a.seen[0]
    assert seen.body == b"hello world"
    assert seen.headers.get("Transfer-Encoding") == "chunked"


async def test_http10_client_gets_close_delimited_body_for_unknown_length(backends):
    async def handler(request, body):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"streamed")
        await resp.write_eof()
        return resp
    a = await backends.start("a", handler)
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]}))
    raw = await raw_exchange(proxy.address[1], b"GET / HTTP/1.0\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    assert body == b"streamed"


async def test_head_204_and_304_carry_no_body(backends):
    async def handler(request, body):
        if request.path == "/204":
            return web.Response(status=204)
        if request.path == "/304":
            return web.Response(status=304)
        return web.Response(text="a body the HEAD must not see")
    a = await backends.start("a", handler)
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]}))
    raw = await raw_exchange(proxy.address[1],
                             b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n"
                             b"GET /204 HTTP/1.1\r\nHost: t\r\n\r\n"
                             b"GET /304 HTTP/1.1\r\nHost: t\r\n\r\n"
                             b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    # Parse by hand: the HEAD response declares a length but has no body.
    parts = raw.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"200", b"204", b"304", b"200"]
    head_response = parts[0]
    assert head_response.endswith(b"\r\n\r\n")
    assert b"content-length: 28" in head_response.lower()
    assert parts[1].endswith(b"\r\n\r\n") and parts[2].endswith(b"\r\n\r\n")
    assert parts[3].endswith(b"a body the HEAD must not see")


async def test_upstream_connections_are_reused_for_keep_alive(backends):
    a = await backends.start("a")
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]}))
    await get_names(proxy.address[1], 5)
    assert len(a.seen) == 5
    assert len({s.conn_id for s in a.seen}) == 1


async def test_expect_100_continue_is_answered_by_the_proxy(backends):
    a = await backends.start("a")
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]}))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.address[1])
    writer.write(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                 b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100")
    writer.write(b"data")
    rest = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    assert rest.startswith(b"HTTP/1.1 200")
    assert a.seen[0].body == b"data"
    assert "Expect" not in a.seen[0].headers


async def test_websocket_echo_through_the_proxy(backends):
    async def handler(request, body):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str("echo:" + msg.data)
        return ws
    a = await backends.start("a", handler)
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]}))
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{proxy.address[1]}/ws") as ws:
            for text in ("one", "two", "x" * 100_000):
                await ws.send_str(text)
                reply = await asyncio.wait_for(ws.receive(), 5)
                assert reply.data == "echo:" + text
