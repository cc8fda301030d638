"""Test support: backends that answer with their name, configs built in code, a raw client.

Backends are real aiohttp servers on 127.0.0.1 with an ephemeral port. Each records what it
received (method, path, headers, body length, connection id), so tests assert what
actually crossed the proxy.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
from dataclasses import dataclass, field

from aiohttp import web

from lbctl.config.model import (Address, BackendConfig, Config, Limits, Listen, PoolConfig,
                                Route, Timeouts)
from lbctl.serve.instance import Instance


@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    raw_headers: list
    body: bytes
    conn_id: int


@dataclass
class TestBackend:
    name: str
    port: int
    runner: web.AppRunner
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


_conn_ids = itertools.count(1)


class ManualClock:
    """A clock the test moves by hand (slow start, ejection expiry, rate-limit refills, EWMA
    decay): time is whatever ``now`` says."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def named_app(name: str, backend_ref: list, handler=None) -> web.Application:
    """A backend app that answers ``<name>`` with ``X-Backend: <name>``, or runs ``handler``."""

    async def default(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        transport = request.transport
        conn_id = getattr(transport, "_lbctl_id", None)
        if conn_id is None and transport is not None:
            conn_id = next(_conn_ids)
            try:
                transport._lbctl_id = conn_id
            except AttributeError:
                pass
        backend_ref[0].seen.append(Seen(request.method, request.path_qs, dict(request.headers),
                                        list(request.raw_headers), body, conn_id or 0))
        if handler is not None:
            return await handler(request, body)
        return web.Response(text=name, headers={"X-Backend": name})

    app = web.Application(client_max_size=2**31)
    app.router.add_route("*", "/{tail:.*}", default)
    return app


class Backends:
    """A group of test backends, cleaned up by the fixture."""

    def __init__(self) -> None:
        self.items: list[TestBackend] = []
        self.servers: list[asyncio.AbstractServer] = []
        self.proxies: list[Instance] = []

    async def start(self, name: str, handler=None, *,
                    ssl_context: ssl.SSLContext | None = None) -> TestBackend:
        """A named backend; on TLS with ``ssl_context`` (its ``url`` still says http)."""
        ref: list = [None]
        backend = await self.start_app(name, named_app(name, ref, handler),
                                       ssl_context=ssl_context)
        ref[0] = backend
        return backend

    async def start_app(self, name: str, app: web.Application, *,
                        ssl_context: ssl.SSLContext | None = None) -> TestBackend:
        """Any aiohttp app (for handlers that must stream rather than read the whole body)."""
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = runner.addresses[0][1]
        backend = TestBackend(name, port, runner)
        self.items.append(backend)
        return backend

    async def start_raw(self, on_connect) -> int:
        """A raw TCP backend: ``on_connect(reader, writer)`` speaks whatever bytes it likes."""
        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def proxy(self, config: Config, **options) -> Instance:
        """A started instance of ``serve`` for ``config`` (options: clock, rng)."""
        server = Instance(config, **options)
        await server.start()
        self.proxies.append(server)
        return server

    async def close(self) -> None:
        for proxy in self.proxies:
            await proxy.close()
        for server in self.servers:
            server.close()
        for backend in self.items:
            await backend.runner.cleanup()


def backend_config(url: str, name: str | None = None, weight: float = 1.0,
                   backup: bool = False) -> BackendConfig:
    hostport = url.split("://", 1)[1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    return BackendConfig(url=url, name=name or hostport, scheme="http", host=host,
                         port=int(port), weight=weight, backup=backup)


def config(pools: dict[str, list[BackendConfig]], routes: list[Route] | None = None,
           limits: Limits | None = None, **pool_options) -> Config:
    """A Config listening on an ephemeral loopback port; pool options apply to every pool."""
    timeouts = pool_options.pop("timeouts", Timeouts(connect=1.0, response=5.0))
    built = {name: PoolConfig(name=name, backends=tuple(bs), timeouts=timeouts, **pool_options)
             for name, bs in pools.items()}
    return Config(path="<test>", listen=Listen(Address("127.0.0.1", 0)),
                  routes=tuple(routes or [Route(pool=next(iter(pools)))]),
                  pools=Config.freeze(built), limits=limits or Limits())


def free_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def raw_exchange(port: int, data: bytes, *, read_until_close: bool = True,
                       timeout: float = 5.0) -> bytes:
    """Send raw bytes to the proxy and return everything it answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if read_until_close:
            return await asyncio.wait_for(reader.read(-1), timeout)
        return await asyncio.wait_for(reader.read(65536), timeout)
    finally:
        writer.close()


def split_responses(raw: bytes) -> list[tuple[int, dict, bytes]]:
    """Parse a stream of Content-Length or chunked HTTP/1.1 responses (test-side parser)."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode()
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, raw = rest[:n], rest[n:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    rest = rest[2:]
                    break
                body += rest[:size]
                rest = rest[size + 2:]
            raw = rest
        else:
            body, raw = rest, b""
        out.append((status, headers, body))
    return out


@dataclass
class Recorded:
    """What a recording backend received: raw bytes and the requests it parsed; ``arrived``
    is set at its first byte."""
    raw: bytearray = field(default_factory=bytearray)
    requests: list[dict] = field(default_factory=list)
    connections: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


async def start_recorder(backends: "Backends", response: bytes = b"HTTP/1.1 200 OK\r\n"
                         b"Content-Length: 2\r\nX-Backend: recorder\r\n\r\nok") -> tuple[int, Recorded]:
    """A raw backend that records every byte and answers each complete request with
    ``response``. Its own parser is httptools, so framing errors show up as a parse error."""
    import httptools

    record = Recorded()

    async def on_connect(reader, writer):
        record.connections += 1
        current: dict = {}

        class Callbacks:
            def on_message_begin(self):
                current.clear()
                current.update(url=b"", headers=[], body=b"")

            def on_url(self, url):
                current["url"] += url

            def on_header(self, name, value):
                current["headers"].append((name, value))

            def on_body(self, body):
                current["body"] += body

            def on_message_complete(self):
                current["method"] = parser.get_method()
                record.requests.append(dict(current))
                writer.write(response)

        parser = httptools.HttpRequestParser(Callbacks())
        try:
            while data := await reader.read(65536):
                record.raw += data
                record.arrived.set()
                parser.feed_data(data)
        except (httptools.HttpParserError, ConnectionError):
            record.requests.append({"error": True})
        finally:
            writer.close()

    port = await backends.start_raw(on_connect)
    return port, record
