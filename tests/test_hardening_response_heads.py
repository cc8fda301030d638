"""Response heads are held to limits, as request heads are.

Before, a backend sending 2,000,000 headers (222 MB) had them buffered and relayed whole:
the proxy's RSS went from 30 to 548 MB and stayed there. Now past ``[limits]
max_response_header_size`` or ``max_response_headers`` the client gets a 502, the upstream
connection is closed, and the proxy stops reading after a bounded number of bytes.
"""

from __future__ import annotations

import asyncio

import pytest

from lbctl.config.model import Limits
from tests.support import backend_config, config, raw_exchange, split_responses

GET = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


async def proxy_in_front(backends, on_connect, limits: Limits | None = None):
    port = await backends.start_raw(on_connect)
    cfg = config({"p": [backend_config(f"http://127.0.0.1:{port}", "raw")]}, retries=0,
                 limits=limits)
    return await backends.proxy(cfg)


class Flood:
    """A backend that answers with a head that never ends: ``piece`` written until the proxy
    hangs up (or ``limit`` bytes, so a proxy that never does cannot hang the test)."""

    def __init__(self, start: bytes, piece: bytes, limit: int = 240 * 2**20) -> None:
        self.start, self.piece, self.limit = start, piece, limit
        self.sent = 0
        self.cut = asyncio.Event()          # the proxy closed the connection

    async def __call__(self, reader, writer) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.start)
            batch = self.piece * max(1, 65536 // len(self.piece))
            while self.sent < self.limit:
                writer.write(batch)
                self.sent += len(batch)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            self.cut.set()
        finally:
            writer.close()


@pytest.mark.parametrize("piece", [b"X-Flood: 1\r\n",                 # 2,000,000 headers...
                                   b"a" * 1024],                      # ...or one endless line
                         ids=["many headers", "one endless header"])
async def test_an_endless_response_head_is_a_502_and_reading_stops(backends, piece):
    flood = Flood(b"HTTP/1.1 200 OK\r\nX-First: " if piece[:1] == b"a" else b"HTTP/1.1 200 OK\r\n",
                  piece)
    proxy = await proxy_in_front(backends, flood)
    raw = await raw_exchange(proxy.address[1], GET, timeout=30)
    [(status, headers, body)] = split_responses(raw)
    assert status == 502 and b"head over the limits" in body
    await asyncio.wait_for(flood.cut.wait(), 30)
    # 222 MB would have crossed before; now the proxy hangs up after its 64 KiB limit plus
    # what the kernel's socket buffers on both sides absorbed meanwhile.
    assert flood.sent < 32 * 2**20, flood.sent
    backend = proxy.runtime.pools["p"].pool.backends[0]
    assert len(proxy.runtime.idle[backend]) == 0                            # not kept


async def test_endless_interim_heads_are_bounded_too(backends):
    flood = Flood(b"", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
    proxy = await proxy_in_front(backends, flood)
    raw = await raw_exchange(proxy.address[1], GET, timeout=30)
    assert split_responses(raw)[0][0] == 502
    await asyncio.wait_for(flood.cut.wait(), 30)
    assert flood.sent < 32 * 2**20


def answering(head: bytes):
    async def on_connect(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head + b"Content-Length: 2\r\n\r\nok")
            await writer.drain()
            await reader.read(-1)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
    return on_connect


HEADERS_150 = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150))


@pytest.mark.parametrize("limits, status", [
    (None, 502),                                            # default: 100 headers
    (Limits(max_response_headers=200), 200),
    (Limits(max_response_headers=200, max_response_header_size=1024), 502),
])
async def test_the_limits_are_configurable(backends, limits, status):
    proxy = await proxy_in_front(backends, answering(HEADERS_150), limits)
    [(got, headers, body)] = split_responses(await raw_exchange(proxy.address[1], GET))
    assert got == status
    if status == 200:
        assert body == b"ok" and headers["x-h149"] == "v"


async def test_a_head_just_under_the_limits_passes_whole(backends):
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(98))
    proxy = await proxy_in_front(backends, answering(head))
    [(status, headers, body)] = split_responses(await raw_exchange(proxy.address[1], GET))
    assert (status, body) == (200, b"ok") and headers["x-h97"] == "v"
