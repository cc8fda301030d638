"""Slow and greedy clients: deadlines for the whole head and for idle bodies, keep-alive
idle, connection caps, and clients that vanish mid-exchange."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from lbctl.config.model import Limits
from tests.support import backend_config, config, start_recorder


async def read_all(reader, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(reader.read(-1), timeout)


async def served(connection) -> None:
    """One request answered on an open connection: the proxy has accepted (and counts) it."""
    reader, writer = connection
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await asyncio.wait_for(reader.readexactly(length), 5)


async def test_slowloris_is_closed_at_the_whole_head_deadline(backends):
    port, record = await start_recorder(backends)
    proxy = await backends.proxy(config({"p": [backend_config(f"http://127.0.0.1:{port}", "r")]},
                                        limits=Limits(header_timeout=0.5)))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.address[1])
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n")
    sent = 0
    # Keep dripping a header line every 50 ms: a per-read timeout would never fire.
    while not reader.at_eof() and sent < 200:
        try:
            writer.write(b"X-Drip-%d: 1\r\n" % sent)
            await writer.drain()
        except ConnectionError:
            break
        sent += 1
        try:
            data = await asyncio.wait_for(reader.read(65536), 0.05)
            if data:
                assert data.startswith(b"HTTP/1.1 408 ")
                break
        except asyncio.TimeoutError:
            pass
    assert 0 < sent < 200          # closed while the client was still sending, before 10 s
    assert bytes(record.raw) == b""
    writer.close()


async def test_stalled_upload_gets_408_and_the_upstream_request_is_aborted(backends):
    port, record = await start_recorder(backends)
    proxy = await backends.proxy(config({"p": [backend_config(f"http://127.0.0.1:{port}", "r")]},
                                        limits=Limits(body_timeout=0.3)))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.address[1])
    writer.write(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    raw = await read_all(reader)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in raw
    assert record.requests in ([], [{"error": True}])   # the backend never got a whole request
    assert all(b.inflight == 0 for b in proxy.runtime.backends())


async def test_idle_keep_alive_connection_is_closed(backends):
    a = await backends.start("a")
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]},
                                        limits=Limits(keepalive_timeout=0.3)))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.address[1])
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    raw = await read_all(reader)            # the response, then the close after 0.3 s idle
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"a")


async def test_global_connection_cap_answers_503_and_keeps_serving_others(backends):
    a = await backends.start("a")
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]},
                                        limits=Limits(max_connections=2)))
    port = proxy.address[1]
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    for connection in held:
        await served(connection)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    raw = await read_all(reader)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 503 ") and b"too many connections" in raw
    # the held connections are still served
    r, w = held[0]
    w.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert (await read_all(r)).startswith(b"HTTP/1.1 200 ")
    for _, w in held:
        w.close()


async def test_per_client_cap_refuses_one_address_while_another_is_served(backends):
    a = await backends.start("a")
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]},
                                        limits=Limits(max_connections_per_client=2)))
    port = proxy.address[1]
    held = [await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.1", 0))
            for _ in range(2)]
    for connection in held:
        await served(connection)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await read_all(reader)).startswith(b"HTTP/1.1 503 ")
    writer.close()
    # another client address (127.0.0.2 is loopback too) is still served
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert (await read_all(reader)).startswith(b"HTTP/1.1 200 ")
    writer.close()
    for _, w in held:
        w.close()


async def test_client_vanishing_mid_upload_aborts_the_upstream_exchange(backends):
    got_part, upstream_gone = asyncio.Event(), asyncio.Event()

    async def upload(request):
        try:
            async for _ in request.content.iter_chunked(1024):
                got_part.set()
        except (ConnectionError, aiohttp.ClientPayloadError, asyncio.CancelledError):
            upstream_gone.set()
            raise
        upstream_gone.set()          # aiohttp ends the stream early when the peer closes
        return web.Response(text="done")
    app = web.Application()
    app.router.add_post("/up", upload)
    b = await backends.start_app("b", app)
    proxy = await backends.proxy(config({"p": [backend_config(b.url, "b")]}))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.address[1])
    writer.write(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 5000)
    await asyncio.wait_for(got_part.wait(), 5)
    writer.transport.abort()
    await asyncio.wait_for(upstream_gone.wait(), 5)
    backend = proxy.runtime.pools["p"].pool.backends[0]
    for _ in range(200):
        if backend.inflight == 0:
            break
        await asyncio.sleep(0.01)
    assert backend.inflight == 0
    assert len(proxy.runtime.idle[backend]) == 0      # that connection was not pooled
