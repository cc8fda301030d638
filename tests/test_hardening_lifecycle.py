"""Reloads and shutdown under load, on a real ``lbctl serve`` process."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import aiohttp
import pytest
from aiohttp import web


async def load_loop(port: int, stop: asyncio.Event, *, workers: int = 8,
                    max_requests: int = 20_000) -> Counter:
    """Bounded load: at most ``max_requests`` in all, ending when ``stop`` is set."""
    outcomes: Counter = Counter()
    budget = iter(range(max_requests))
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def worker():
            for _ in budget:
                if stop.is_set():
                    return
                try:
                    async with session.get(f"http://127.0.0.1:{port}/") as resp:
                        await resp.read()
                        outcomes[resp.status] += 1
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    outcomes[type(exc).__name__] += 1
        await asyncio.gather(*(worker() for _ in range(workers)))
    return outcomes


async def test_twenty_reloads_under_load_lose_no_request(
        backends, serve_process, tmp_path, free_port, write_config):
    a, b = await backends.start("a"), await backends.start("b")
    port = free_port()
    path = tmp_path / "lb.toml"
    write_config({"p": [a.url, b.url]}, port=port, named=False)
    proc = await serve_process("serve", str(path))
    await proc.wait_for_log("listening on")
    stop = asyncio.Event()
    load = asyncio.ensure_future(load_loop(port, stop))
    try:
        for i in range(20):
            if i == 10:
                # an invalid config mid-way is rejected; the old one keeps serving
                path.write_text(path.read_text().replace("round_robin", "round_robbin"))
                mark = len(proc.lines)
                proc.proc.send_signal(signal.SIGHUP)
                await proc.wait_for_log("still serving the previous configuration", start=mark)
            urls = [a.url, b.url] if i % 2 else [b.url]
            write_config({"p": urls}, port=port, named=False)
            mark = len(proc.lines)
            proc.proc.send_signal(signal.SIGHUP)
            await proc.wait_for_log("reloaded", start=mark)
    finally:
        stop.set()
        outcomes = await load
    assert set(outcomes) == {200}, outcomes
    assert outcomes[200] > 20
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0


async def test_sigterm_under_load_completes_in_flight_and_exits_0(
        backends, serve_process, tmp_path, free_port, write_config):
    started = asyncio.Event()
    count = 0

    async def slowish(request, body):
        nonlocal count
        count += 1
        if count >= 20:
            started.set()
        await asyncio.sleep(0.05)
        return web.Response(text="ok")
    a = await backends.start("a", slowish)
    port = free_port()
    write_config({"p": [a.url]}, port=port, named=False)
    proc = await serve_process("serve", str(tmp_path / "lb.toml"))
    await proc.wait_for_log("listening on")
    stop = asyncio.Event()
    load = asyncio.ensure_future(load_loop(port, stop, workers=16))
    await asyncio.wait_for(started.wait(), 10)
    proc.proc.send_signal(signal.SIGTERM)
    await proc.wait_for_log("no longer accepting")
    assert await proc.wait() == 0
    stop.set()
    outcomes = await load
    # Requests in flight at SIGTERM completed with 200; afterwards connections are refused
    # (ClientConnectorError) or closed between keep-alive requests - never a 5xx, never a
    # response cut short.
    assert outcomes[200] >= 20
    assert not [k for k in outcomes if isinstance(k, int) and k != 200], outcomes
    assert "ClientPayloadError" not in outcomes


# ---- SIGTERM with keep-alive connections between requests ---------------------------------

async def keep_alive_client(port: int, stop: asyncio.Event, counts: Counter,
                            warmed: asyncio.Event, limit: int = 2000) -> None:
    """Requests back to back on one connection until the proxy says Connection: close (or
    ``stop``, or ``limit``). A request sent and never answered counts as "lost"; ``warmed``
    is set at the 200th answer of all clients."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(limit):
            if stop.is_set():
                return
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await asyncio.wait_for(reader.readexactly(length), 10)
            except (asyncio.IncompleteReadError, ConnectionError):
                counts["lost"] += 1
                return
            counts["answered"] += 1
            if counts["answered"] >= 200:
                warmed.set()
            if b"connection: close" in head.lower():
                counts["told to close"] += 1
                return
    finally:
        writer.close()


async def test_sigterm_loses_no_request_on_keep_alive_connections(
        backends, serve_process, tmp_path, free_port, write_config):
    a = await backends.start("a")
    port = free_port()
    write_config({"p": [a.url]}, port=port, named=False)
    proc = await serve_process("serve", str(tmp_path / "lb.toml"))
    await proc.wait_for_log("listening on")
    stop, warmed, counts = asyncio.Event(), asyncio.Event(), Counter()
    clients = [asyncio.ensure_future(keep_alive_client(port, stop, counts, warmed))
               for _ in range(10)]
    try:
        await asyncio.wait_for(warmed.wait(), 20)   # every connection busy, back to back
        proc.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*clients), 20)
    finally:
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
    assert await proc.wait() == 0
    # Every connection was told to close by a response; not one request went unanswered.
    assert counts["lost"] == 0, counts
    assert counts["told to close"] == 10, counts


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_during_the_drain_stops_at_once(
        backends, serve_process, tmp_path, free_port, write_config, second):
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hold(request, body):
        arrived.set()
        await release.wait()
        return web.Response(text="late")
    a = await backends.start("a", hold)
    port = free_port()
    write_config({"p": [a.url]}, port=port, named=False, extra='[limits]\ndrain_timeout = "5m"')
    proc = await serve_process("serve", str(tmp_path / "lb.toml"))
    await proc.wait_for_log("listening on")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.wait_for(arrived.wait(), 10)
    proc.proc.send_signal(signal.SIGTERM)
    mark = len(proc.lines)
    await proc.wait_for_log("no longer accepting")
    proc.proc.send_signal(second)
    await proc.wait_for_log("stopping at once, closing 1 connections", start=mark)
    assert await proc.wait(10) == 0                 # not the five minutes of drain_timeout
    try:
        assert await asyncio.wait_for(reader.read(-1), 5) == b""
    except ConnectionError:
        pass                                        # aborted: a reset is as good as an EOF
    writer.close()
    release.set()
