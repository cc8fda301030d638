"""After a wave of client connections has closed, the proxy gives the freed heap back to
the system (``lbctl/proxy/trim.py``): once per wave, not on every close, and not for a
few connections coming and going."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import backend_config, config


async def until(condition, what: str) -> None:
    """Wait (bounded) for ``condition()``: connection_lost runs after the client's close."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_the_heap_is_trimmed_once_after_a_wave_of_connections_closes(backends):
    a = await backends.start("a")
    instance = await backends.proxy(config({"p": [backend_config(a.url)]}))
    server = instance.proxy
    trimmer = server.trimmer
    if trimmer.trim is None:
        pytest.skip("this C library has no malloc_trim")
    trimmer.wave = 8                            # a small wave, to keep the test light
    port = server.address[1]
    clients = []
    for _ in range(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        clients.append(writer)
    assert trimmer.peak == 10

    # Down to 6 of a peak of 10: not yet a wave's end.
    for writer in clients[:4]:
        writer.close()
    await until(lambda: len(server.connections) == 6, "6 connections left")
    assert trimmer.pending is None and trimmer.trims == 0
    # Down to half: one trim, shortly after; the peak starts again from what is open.
    clients[4].close()
    await until(lambda: trimmer.trims == 1, "a trim")
    assert trimmer.peak == 5 and trimmer.pending is None
    # The rest closing is not another wave: 5 open was below the wave's size.
    for writer in clients[5:]:
        writer.close()
    await until(lambda: not server.connections, "every connection closed")
    assert trimmer.pending is None and trimmer.trims == 1
