"""The listening proxy: sockets, the live runtime, reload and graceful drain.

``ProxyServer`` owns what outlives a single connection: the current ``Runtime`` (swapped
whole by ``reload``), the set of open client connections (for draining), request-id
generation, and a once-a-second sweep of expired idle upstream connections.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
from collections import Counter

from lbctl.config.model import Config
from lbctl.errors import UserError
from lbctl.exitcodes import Exit
from lbctl.proxy.client import ClientConnection
from lbctl.proxy.framing import RequestIds
from lbctl.proxy.runtime import Runtime, build_runtime

log = logging.getLogger("lbctl.proxy")


class ProxyServer:
    def __init__(self, config: Config, *, loop: asyncio.AbstractEventLoop | None = None,
                 rng: random.Random | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.rng = rng or random.Random()
        self.runtime: Runtime = build_runtime(config, clock=self.loop.time, rng=self.rng)
        self.connections: set[ClientConnection] = set()
        self.per_client: Counter[str] = Counter()      # open connections per client address
        self.request_ids = RequestIds()
        self.default_host = str(config.listen.address).encode()
        self.server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port), useful when the config asked for port 0."""
        sock = self.server.sockets[0]
        return sock.getsockname()[:2]

    async def start(self) -> None:
        addr = self.runtime.config.listen.address
        try:
            self.server = await self.loop.create_server(
                lambda: ClientConnection(self), addr.host, addr.port,
                reuse_address=True, backlog=1024)
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else \
                (exc.strerror or str(exc))
            raise UserError(f"cannot listen on {addr}: {reason}", exit_code=Exit.RUNTIME) from None
        self._sweeper = self.loop.create_task(self._sweep())

    def reload(self, config: Config) -> None:
        """Swap in a validated config; requests in flight finish under the old one."""
        old = self.runtime
        if config.listen.address != old.config.listen.address:
            log.warning("listen address changed to %s: takes effect after a restart; "
                        "still listening on %s", config.listen.address, old.config.listen.address)
        self.runtime = build_runtime(config, clock=self.loop.time, rng=self.rng, previous=old)

    def stop_listening(self) -> None:
        """Close the listening socket: new connections are refused from here on."""
        if self.server is not None:
            self.server.close()

    async def drain(self, timeout: float) -> bool:
        """Stop accepting, let requests in flight finish (up to ``timeout``), close the rest.
        Returns True when every connection finished on its own."""
        self.stop_listening()
        for conn in list(self.connections):
            conn.start_drain()
        deadline = self.loop.time() + timeout
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        clean = not self.connections
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        await self.close()
        return clean

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for backend in self.runtime.backends():
            backend.extra["idle"].close_all()
        await asyncio.sleep(0)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = self.loop.time()
            for backend in self.runtime.backends():
                backend.extra["idle"].sweep(now)
