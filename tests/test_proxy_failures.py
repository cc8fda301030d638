"""Broken backends end in the documented status, within the configured time, never a hang."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web

from lbctl.config.model import Timeouts
from tests.support import backend_config, config, raw_exchange, split_responses


async def fetch(port: int, method: str = "GET", path: str = "/", data: bytes | None = None):
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"http://127.0.0.1:{port}{path}", data=data) as resp:
            return resp.status, resp.headers, await resp.read()


async def test_refused_backend_never_costs_a_client_a_failed_request(backends, free_port):
    a, b = await backends.start("a"), await backends.start("b")
    dead = backend_config(f"http://127.0.0.1:{free_port()}", "dead")
    proxy = await backends.proxy(config({"p": [dead, backend_config(a.url, "a"),
                                               backend_config(b.url, "b")]}))
    port = proxy.address[1]
    for method in ("GET", "POST"):      # nothing was sent: any method moves on
        for _ in range(6):
            status, headers, _ = await fetch(port, method, data=b"x" if method == "POST" else None)
            assert status == 200
    assert len(a.seen) + len(b.seen) == 12


async def test_hanging_backend_gives_504_at_the_response_timeout(backends):
    accepted = asyncio.Event()

    async def hang(reader, writer):
        accepted.set()
        await reader.read(-1)            # read the request, never answer
    port = await backends.start_raw(hang)
    cfg = config({"p": [backend_config(f"http://127.0.0.1:{port}", "hang")]},
                 timeouts=Timeouts(connect=1.0, response=0.3), retries=0)
    proxy = await backends.proxy(cfg)
    status, _, body = await asyncio.wait_for(fetch(proxy.address[1]), 5)
    assert accepted.is_set()
    assert status == 504 and b"in time" in body


async def test_garbage_speaking_backend_gives_502(backends):
    async def garbage(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.0\r\nthis is not http\r\n\r\n")
        await writer.drain()
        await reader.read(-1)
    port = await backends.start_raw(garbage)
    proxy = await backends.proxy(config({"p": [backend_config(f"http://127.0.0.1:{port}", "g")]},
                                        retries=0))
    status, _, body = await asyncio.wait_for(fetch(proxy.address[1]), 5)
    assert status == 502 and b"invalid response" in body


async def _closing_backend(backends):
    """A backend that reads the request and closes without a byte of response."""
    hits = []

    async def close_early(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        hits.append(head.split(b" ", 1)[0])
        writer.close()
    return await backends.start_raw(close_early), hits


async def test_reset_before_response_is_retried_for_idempotent_requests_only(backends):
    closing_port, hits = await _closing_backend(backends)
    good = await backends.start("good")
    proxy = await backends.proxy(config({"p": [
        backend_config(f"http://127.0.0.1:{closing_port}", "closer"),
        backend_config(good.url, "good")]}, retries=1))
    port = proxy.address[1]
    status, headers, _ = await fetch(port, "GET")
    assert status == 200 and headers["X-Backend"] == "good"
    assert hits == [b"GET"]
    # the rotation went closer -> good, so the next pick is the closer again
    status, _, body = await fetch(port, "POST", data=b"payment")
    assert status == 502
    assert hits == [b"GET", b"POST"]
    assert [s.method for s in good.seen] == ["GET"]   # the POST was not replayed


async def test_backend_dying_mid_body_truncates_and_closes(backends):
    async def half(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40)
        await writer.drain()
        writer.transport.abort()
    port = await backends.start_raw(half)
    proxy = await backends.proxy(config({"p": [backend_config(f"http://127.0.0.1:{port}", "h")]}))
    raw = await raw_exchange(proxy.address[1], b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 100" in head
    assert body == b"x" * 40           # truncated, and the connection was closed (read(-1) ended)
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(proxy.address[1])


async def test_chunked_response_dying_mid_body_never_gets_a_clean_end(backends):
    async def half(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        writer.transport.abort()
    port = await backends.start_raw(half)
    proxy = await backends.proxy(config({"p": [backend_config(f"http://127.0.0.1:{port}", "h")]}))
    raw = await raw_exchange(proxy.address[1], b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert b"hello" in raw and not raw.endswith(b"0\r\n\r\n")


async def test_no_eligible_backend_is_a_fast_503_with_retry_after(backends):
    a = await backends.start("a")
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]}))
    state = proxy.runtime.pools["p"]
    state.pool.set_healthy(state.pool.backends[0], False)
    status, headers, body = await fetch(proxy.address[1])
    assert status == 503 and headers["Retry-After"] == "1"
    assert a.seen == []


async def test_failed_upstream_connection_is_not_reused(backends):
    calls = []

    async def flaky(reader, writer):
        calls.append(1)
        await reader.readuntil(b"\r\n\r\n")
        if len(calls) == 1:
            # declares 10 bytes, sends 12: the extra bytes must not leak into the next exchange
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789XX")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
    port = await backends.start_raw(flaky)
    proxy = await backends.proxy(config({"p": [backend_config(f"http://127.0.0.1:{port}", "f")]}))
    raw = await raw_exchange(proxy.address[1], b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n"
                             b"GET /2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    responses = split_responses(raw)
    assert [b for _, _, b in responses] == [b"0123456789", b"ok"]
    assert len(calls) == 2                # the tainted connection was closed, a new one opened


async def test_client_disconnect_mid_download_closes_the_upstream_exchange(backends):
    upstream_closed = asyncio.Event()

    async def endless(request, body):
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            for _ in range(10_000):
                await resp.write(b"z" * 65536)
        except (ConnectionError, RuntimeError):
            upstream_closed.set()
        return resp
    a = await backends.start("a", endless)
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]}))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.address[1])
    writer.write(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
    await reader.readexactly(1000)
    writer.transport.abort()
    await asyncio.wait_for(upstream_closed.wait(), 5)
    backend = proxy.runtime.pools["p"].pool.backends[0]
    assert len(proxy.runtime.idle[backend]) == 0   # nothing pooled
    assert backend.inflight == 0


async def test_a_client_vanishing_is_not_held_against_the_backend(backends):
    arrived = asyncio.Event()

    async def slow(request, body):
        arrived.set()
        await asyncio.sleep(5)
        return web.Response(text="late")
    a = await backends.start("a", slow)
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]}))
    heard = []
    state = proxy.runtime.pools["p"]
    state.outcomes = type("Sink", (), {"record": lambda self, b, o: heard.append(o)})()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.address[1])
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.wait_for(arrived.wait(), 5)
    # SO_LINGER 0 makes close send a reset; a plain close is a half-close, which the proxy
    # answers (as HAProxy does without abortonclose).
    import struct
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
    writer.transport.abort()
    for _ in range(200):
        if heard:
            break
        await asyncio.sleep(0.01)
    assert heard == ["client"]
