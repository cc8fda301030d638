"""The listening proxy: sockets, the live runtime, reload and graceful drain.

``ProxyServer`` owns what outlives a single connection: the current ``Runtime`` (swapped
whole by ``reload``), the set of open client connections (for draining), request-id
generation, a once-a-second sweep of expired idle upstream connections and of backends that
finished leaving, the active health checks of the current runtime (restarted on reload,
stopped on drain and close), and pool membership between reloads: the discovery watchers and
the admin API's additions and removals are decided in ``discovery`` (``memberships``) and
applied to the live pools here (``proxy/members.py``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
from collections import Counter

from lbctl.balancing import Backend
from lbctl.config.model import BackendConfig, Config
from lbctl.discovery.dns import ResolverError
from lbctl.discovery.membership import MembershipError, Memberships
from lbctl.discovery.watch import Watchers
from lbctl.errors import UserError
from lbctl.exitcodes import Exit
from lbctl.gateway.tls import Terminator
from lbctl.health.active import HealthChecks
from lbctl.observe.observer import Observer
from lbctl.proxy.client import ClientConnection
from lbctl.proxy.framing import RequestIds
from lbctl.proxy import members as live
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
        # Who is in each pool (static, discovered, added at run time), and the watchers that
        # keep the discovered part current; applied to the live pools once started.
        self.memberships = Memberships(config)
        self.discovery = Watchers(self._discovered)
        self._shadowed: dict[str, set[str]] = {}
        self.started = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port), useful when the config asked for port 0."""
        sock = self.server.sockets[0]
        return sock.getsockname()[:2]

    async def start(self) -> None:
        config = self.runtime.config
        addr = config.listen.address
        if any(pool.discovery is not None for pool in config.pools.values()):
            # The first lookups are awaited (each up to its timeout), so the first requests
            # already find the discovered backends; a failed one starts without them.
            try:
                await self.discovery.start(config)
            except ResolverError as exc:
                await self.discovery.stop()
                raise UserError(f"cannot start discovery: {exc}", exit_code=Exit.RUNTIME) from None
            self.runtime = build_runtime(config, clock=self.clock, rng=self.rng,
                                         members=self.memberships.members())
        # Initial health states are applied before the first connection can be accepted.
        self.health.prepare(self.runtime)
        if config.admin is not None:
            # aiohttp and prometheus-client load only when there is an admin API to serve.
            from lbctl.admin.api import start_admin
            try:
                self.admin = await start_admin(self)    # fails before anything else is started
            except UserError:
                await self.discovery.stop()
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
            await self.discovery.stop()
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else \
                (exc.strerror or str(exc))
            raise UserError(f"cannot listen on {addr}: {reason}", exit_code=Exit.RUNTIME) from None
        self._sweeper = self.loop.create_task(self._sweep())
        self.health.start(self.runtime)
        self.started = True

    # ---- membership between reloads ------------------------------------------------------

    def _discovered(self, pool: str, backends: tuple[BackendConfig, ...]) -> None:
        """A watcher's new discovered set for ``pool``."""
        members = self.memberships.get(pool)
        if members is None:
            return
        members.discovered = backends
        shadowed = set(members.shadowed())
        for name in sorted(shadowed - self._shadowed.get(pool, set())):
            log.warning("pool %s: discovered backend %s is ignored: the pool already has a "
                        "backend of that name", pool, name)
        self._shadowed[pool] = shadowed
        if self.started:
            self.apply_members(pool)

    def apply_members(self, pool: str) -> live.Change:
        """Make the live pool match its decided membership."""
        state = self.runtime.pools.get(pool)
        if state is None:
            return live.Change()
        change = live.apply_members(state, self.memberships[pool].members())
        if change:
            self.health.sync(self.runtime)
        leaving = {b.name: b.inflight for b in state.leaving}
        for name in change.left:
            if name in leaving:
                log.info("pool %s: backend %s leaves: no new requests; %d in flight finish "
                         "first", pool, name, leaving[name])
        return change

    def add_backend(self, pool: str, backend: BackendConfig) -> Backend:
        """The admin API's add: ``MembershipError`` (404 no pool, 409 name taken)."""
        members = self.memberships.get(pool)
        if members is None or pool not in self.runtime.pools:
            raise MembershipError(404, f"no pool named {pool!r}")
        members.add(backend)
        self.apply_members(pool)
        return self.runtime.pools[pool].pool.by_name[backend.name]

    def remove_backend(self, pool: str, name: str) -> Backend:
        """The admin API's remove: the backend leaves (drains, then goes). ``MembershipError``:
        404 unknown, 409 owned by discovery."""
        members = self.memberships.get(pool)
        state = self.runtime.pools.get(pool)
        if members is None or state is None:
            raise MembershipError(404, f"no pool named {pool!r}")
        backend = state.pool.by_name.get(name)
        members.remove(name)
        self.apply_members(pool)
        if backend is None:         # decided but not applied yet: cannot happen once started
            raise MembershipError(404, f"pool {pool!r} has no backend named {name!r}")
        return backend

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
        # Operators' run-time changes survive a reload; the notes say what the file changed.
        for note in self.memberships.reconfigure(config):
            log.info("reload: %s", note)
        self.runtime = build_runtime(config, clock=self.clock, rng=self.rng, previous=old,
                                     members=self.memberships.members())
        if self.started:
            for problem in self.discovery.reconfigure(config):
                log.error("reload: %s; still using the previous source", problem)
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
        await self.discovery.stop()
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
            for name, state in self.runtime.pools.items():
                if state.leaving:
                    for b in live.sweep(state):
                        log.info("pool %s: backend %s left (its last request in flight "
                                 "ended)", name, b.name)
