"""Support for health tests: backends whose behaviour a test switches, a clock it moves,
a log capture, and a client that tells which backend answered.

A ``Behaviour`` backend answers every path with its name in ``X-Backend``, or with whatever
the test switched it to: another status, another body, a hold (answers only when released).
``kill`` closes its listener and connections; ``revive`` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web

from lbctl.serve.instance import Instance
from tests.support import Backends, TestBackend, named_app  # noqa: F401


class Behaviour:
    """What a switchable backend does; the test changes the fields between requests."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.status = 200
        self.body: str | None = None        # None: the backend's name
        self.delay = 0.0
        self.hold: asyncio.Event | None = None
        self.entered = asyncio.Event()      # set when a request reaches the handler
        self.traffic = 0                    # requests other than health probes

    async def __call__(self, request: web.Request, body: bytes) -> web.Response:
        if request.path != "/healthz":
            self.traffic += 1
        self.entered.set()
        if self.hold is not None and request.path != "/healthz":
            await self.hold.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text=self.name if self.body is None else self.body,
                            headers={"X-Backend": self.name})


async def start(backends: Backends, name: str) -> tuple[TestBackend, Behaviour]:
    behaviour = Behaviour(name)
    tb = await backends.start(name, behaviour)
    tb.behaviour = behaviour
    return tb, behaviour


async def kill(tb: TestBackend) -> None:
    """The backend process dies: listener and open connections closed."""
    await tb.runner.cleanup()


async def revive(tb: TestBackend) -> None:
    """The backend comes back on the same port, with the same behaviour."""
    ref = [tb]
    runner = web.AppRunner(named_app(tb.name, ref, tb.behaviour), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", tb.port, reuse_address=True).start()
    tb.runner = runner


async def proxy(backends: Backends, cfg, *, on_probe=None, **kwargs) -> Instance:
    """A started in-process instance; ``on_probe`` hears every probe; ``kwargs`` go to
    Instance (clock, rng)."""
    server = Instance(cfg, **kwargs)
    if on_probe is not None:
        server.health.on_probe = on_probe
    await server.start()
    backends.proxies.append(server)
    return server


async def get(session: aiohttp.ClientSession, port: int, path: str = "/") -> tuple[int, str, dict]:
    async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
        await resp.read()
        return resp.status, resp.headers.get("X-Backend", ""), dict(resp.headers)


async def load(port: int, n: int, path: str = "/") -> list[tuple[int, str]]:
    """``n`` sequential requests through the proxy: (status, backend that answered)."""
    out = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            status, who, _ = await get(session, port, path)
            out.append((status, who))
    return out


class LogLines(logging.Handler):
    """Collects the messages of one logger, whatever the root logger is set up to do."""

    def __init__(self, name: str = "lbctl.health") -> None:
        super().__init__(logging.DEBUG)
        self.logger = logging.getLogger(name)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> "LogLines":
        self.old_level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.old_level)

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]
