"""Broken backends, in raw bytes: the client gets a 502, a 504 or a truncation, on time;
no stray byte reaches a later request; no task or descriptor is left behind."""

from __future__ import annotations

import asyncio
import os

import pytest

from lbctl.config.model import Limits, Timeouts
from tests.support import backend_config, config, raw_exchange, split_responses


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def settle(proxy, fds: int | None = None, tasks: int | None = None) -> None:
    """Wait (bounded) until the proxy has no client connection, no handler task runs and,
    when given, descriptors and tasks are back to a baseline. The raw test backends live in
    this process too, so their side of each connection must have closed as well."""
    for _ in range(500):
        if not proxy.proxy.connections and not any(
                "ClientConnection._run" in repr(t.get_coro()) for t in asyncio.all_tasks()) \
                and (fds is None or open_fds() <= fds) \
                and (tasks is None or len(asyncio.all_tasks()) <= tasks):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"did not settle: {len(proxy.proxy.connections)} connections, "
                         f"{open_fds()} fds (baseline {fds}), {len(asyncio.all_tasks())} tasks "
                         f"(baseline {tasks})")


def closing(behaviour):
    """Run a raw backend behaviour and always close its side when it returns."""
    async def on_connect(reader, writer):
        try:
            await behaviour(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
    return on_connect


def replying(*responses: bytes, then_close: bool = False):
    """A raw backend answering the n-th request on a connection with responses[n]."""
    async def on_connect(reader, writer):
        try:
            for response in responses:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(response)
                await writer.drain()
            if then_close:
                writer.close()
                return
            await reader.read(-1)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
    return on_connect


CLEAN = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nclean"


def tainted_then_clean(first: bytes):
    """A backend whose first connection answers ``first`` and every later one ``CLEAN``;
    returns it with the list that counts its connections."""
    connections = []

    async def on_connect(reader, writer):
        connections.append(1)
        await replying(first if len(connections) == 1 else CLEAN)(reader, writer)
    return on_connect, connections


async def two_requests_after(backends, first: bytes, method: bytes = b"GET"):
    """Two pipelined requests through a proxy in front of ``tainted_then_clean(first)``."""
    on_connect, connections = tainted_then_clean(first)
    port = await backends.start_raw(on_connect)
    proxy = await backends.proxy(config({"p": [backend_config(f"http://127.0.0.1:{port}", "b")]}))
    raw = await raw_exchange(proxy.address[1], method + b" /1 HTTP/1.1\r\nHost: t\r\n\r\n"
                             b"GET /2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    return raw, connections


INVALID_RESPONSES = [
    ("CL with TE", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    ("duplicate CL", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    ("negative CL", b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabc"),
    ("malformed status line", b"HTTP/1.1 OK 200\r\n\r\n"),
    ("four-digit status", b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"),
    ("whitespace before colon", b"HTTP/1.1 200 OK\r\nContent-Length : 3\r\n\r\nabc"),
    ("control byte in header", b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 3\r\n\r\nabc"),
    ("gzip then chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    ("not HTTP", b"220 smtp.example ESMTP ready\r\n"),
]


@pytest.mark.parametrize("name, response", INVALID_RESPONSES, ids=[c[0] for c in INVALID_RESPONSES])
async def test_invalid_response_framing_is_a_502(backends, name, response):
    port = await backends.start_raw(replying(response))
    proxy = await backends.proxy(config({"p": [backend_config(f"http://127.0.0.1:{port}", "b")]},
                                        retries=0))
    raw = await raw_exchange(proxy.address[1], b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 502 ")
    assert b"abc" not in raw


async def test_bytes_beyond_the_declared_length_never_reach_a_later_request(backends):
    raw, connections = await two_requests_after(
        backends, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                  b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
    assert [body for _, _, body in split_responses(raw)] == [b"ok", b"clean"]
    assert b"EVIL" not in raw
    assert len(connections) == 2           # the tainted upstream connection was not reused


@pytest.mark.parametrize("status", [204, 304])
async def test_body_after_204_or_304_is_never_forwarded(backends, status):
    raw, _ = await two_requests_after(backends, b"HTTP/1.1 %d X\r\n\r\nSTRAY" % status)
    assert b"STRAY" not in raw
    assert raw.startswith(b"HTTP/1.1 %d" % status) and raw.endswith(b"clean")


async def test_head_response_body_is_never_forwarded(backends):
    raw, _ = await two_requests_after(
        backends, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY", method=b"HEAD")
    assert b"STRAY" not in raw and raw.endswith(b"clean")


async def never_answer(reader, writer):
    await reader.read(-1)


async def close_at_once(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


async def reset_mid_body(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
    await writer.drain()
    writer.transport.abort()


async def garbage(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"\x00\xff\x13garbage\r\n\r\n")
    await writer.drain()
    await reader.read(-1)


async def stall_mid_body(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    await writer.drain()
    await reader.read(-1)                  # never sends the rest


BROKEN = [
    ("accepts and never answers", never_answer, 504),
    ("closes without a response", close_at_once, 502),
    ("resets mid-body", reset_mid_body, "truncated"),
    ("answers garbage", garbage, 502),
    ("stalls mid-body", stall_mid_body, "truncated"),
]


@pytest.mark.parametrize("name, behaviour, outcome", BROKEN, ids=[b[0] for b in BROKEN])
async def test_broken_backends_end_on_time_without_leaks(backends, name, behaviour, outcome):
    port = await backends.start_raw(closing(behaviour))
    refused = backend_config("http://127.0.0.1:1", "refused")
    proxy = await backends.proxy(config(
        {"p": [backend_config(f"http://127.0.0.1:{port}", "b")], "dead": [refused]},
        timeouts=Timeouts(connect=0.5, response=0.3), retries=0,
        limits=Limits(body_timeout=0.3)))
    port_ = proxy.address[1]
    await raw_exchange(port_, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")  # warm-up
    await settle(proxy)
    fds, tasks = open_fds(), len(asyncio.all_tasks())
    for _ in range(5):
        raw = await asyncio.wait_for(
            raw_exchange(port_, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"), 5)
        if outcome == "truncated":
            head, _, body = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and 0 < len(body) < 1000
        else:
            assert raw.startswith(b"HTTP/1.1 %d " % outcome), raw[:60]
    await settle(proxy, fds, tasks)         # raises if descriptors or tasks stay above baseline
    assert all(b.inflight == 0 for b in proxy.runtime.backends())
