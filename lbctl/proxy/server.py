"""The listening proxy: sockets, the live runtime, reload and graceful drain.

``ProxyServer`` owns what outlives a single connection: the current ``Runtime`` (swapped
whole by ``reload``), the set of open client connections (for draining), request-id
generation, a once-a-second sweep of expired idle upstream connections, the active health
checks of the current runtime (restarted on reload, stopped on drain and close), and pool
membership between reloads (``members``: discovery and the admin API's additions and
removals, applied to the live pools by ``proxy/members.py``).
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
from lbctl.gateway.tls import Terminator
from lbctl.health.active import HealthChecks
from lbctl.observe.observer import Observer
from lbctl.proxy.client import ClientConnection
from lbctl.proxy.framing import RequestIds
from lbctl.proxy.members import LiveMembership
from lbctl.proxy.runtime import Runtime, build_runtime

log = logging.getLogger("lbctl.proxy")


class ProxyServer:
    def __init__(self, config: Config, *, loop: asyncio.AbstractEventLoop | None = None,
                 rng: random.Random | None = None, clock=None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.rng = rng or random.Random()
        self.clock = clock or self.loop.time      # injected by tests (rate limits, ramps)
        self.runtime: Runtime = build_runtime(config, clock=self.clock, rng=self.rng)
        tls = config.listen.tls                   # loaded once already by the config loader
        self.tls = Terminator(tls.cert, tls.key, tls.min_version) if tls is not None else None
        # Probes draw their jitter from their own stream, so they never shift the balancer's.
        self.health = HealthChecks(rng=random.Random(self.rng.getrandbits(64)))
        self.connections: set[ClientConnection] = set()
        self.per_client: Counter[str] = Counter()      # open connections per client address
        self.request_ids = RequestIds()
        self.default_host = str(config.listen.address).encode()
        self.server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task | None = None
        self.observer = Observer(self)          # accounting, access log, explain
        self.health.observer = self.observer.probe      # counts probes for /metrics
        self.admin = None                       # the admin API, when [admin] is configured
        self.members = LiveMembership(config, lambda: self.runtime,
                                      on_change=lambda: self.health.sync(self.runtime))

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port), useful when the config asked for port 0."""
        sock = self.server.sockets[0]
        return sock.getsockname()[:2]

    async def start(self) -> None:
        addr = self.runtime.config.listen.address
        if any(pool.discovery is not None for pool in self.runtime.config.pools.values()):
            await self.members.start(self.runtime.config)     # the first lookups
            self.runtime = build_runtime(self.runtime.config, clock=self.clock, rng=self.rng,
                                         members=self.members.members())
        # Initial health states are applied before the first connection can be accepted.
        self.health.prepare(self.runtime)
        if self.runtime.config.admin is not None:
            # aiohttp and prometheus-client load only when there is an admin API to serve.
            from lbctl.admin.api import start_admin
            try:
                self.admin = await start_admin(self)    # fails before anything else is started
            except UserError:
                await self.members.stop()
                raise
        try:
            self.server = await self.loop.create_server(
                lambda: ClientConnection(self), addr.host, addr.port,
                reuse_address=True, backlog=1024,
                ssl=self.tls.front if self.tls is not None else None)
        except OSError as exc:
            if self.admin is not None:
                await self.admin.close()
                self.admin = None
            await self.members.stop()
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else \
                (exc.strerror or str(exc))
            raise UserError(f"cannot listen on {addr}: {reason}", exit_code=Exit.RUNTIME) from None
        self._sweeper = self.loop.create_task(self._sweep())
        self.health.start(self.runtime)
        self.members.begin()

    def reload(self, config: Config) -> None:
        """Swap in a validated config; requests in flight finish under the old one."""
        old = self.runtime
        if config.listen.address != old.config.listen.address:
            log.warning("listen address changed to %s: takes effect after a restart; "
                        "still listening on %s", config.listen.address, old.config.listen.address)
        if self.tls is not None and config.listen.tls is not None:
            tls = config.listen.tls
            if self.tls.reload(tls.cert, tls.key, tls.min_version):
                log.info("TLS certificate reloaded from %s", tls.cert)
        elif (self.tls is None) != (config.listen.tls is None):
            log.warning("listen.tls changed: takes effect after a restart")
        # Operators' run-time changes survive a reload (the event log says how).
        self.runtime = build_runtime(config, clock=self.clock, rng=self.rng, previous=old,
                                     members=self.members.reconfigure(config))
        self.members.reconfigured(config)
        if self.server is not None:
            self.health.restart(self.runtime)
        self.observer.configure(config)
        if self.admin is not None:
            self.admin.reconfigure(config.admin)
        elif config.admin is not None:
            log.warning("[admin] added: the admin API starts after a restart")

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
        await self.health.stop()       # nothing new will be routed: verdicts no longer matter
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
        if self.admin is not None:
            await self.admin.close()
            self.admin = None
        await self.members.stop()
        self.observer.close()
        await self.health.stop()
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
            self.members.sweep()            # backends that finished leaving
