"""One running instance: the data plane and what runs around it, wired together.

``Instance`` builds the ``Observer`` (accounting, access log, explain) and hands it to the
data plane (``ProxyServer``) as its hooks, with the rate-limit store ``[store]`` describes
(``gateway.store``); it runs the active health checks on the data plane's pools, runs
discovery (``lbctl.discovery.Discovery``: who is in each pool) and serves the admin API
beside it. Order matters and lives here:

* start: the first discovery lookups, then initial health states, before anything listens;
  the admin API binds before the listener, so a taken admin port is one clear error with
  nothing left running; the store makes first contact (and logs whether it is up) before
  the listener takes a request; probes start once the listener is up;
* membership: each pool's new list, from discovery or the admin API's add and remove,
  goes to the data plane as data (``ProxyServer.set_members``); the health checker is told
  of newcomers and of those gone; nothing in the data plane calls back into discovery;
* reload: discovery takes the new file first (it says what happened to operators' changes
  and gives every pool's membership), the data plane swaps its runtime built from it (with
  a new store when ``[store]`` changed: the new one makes contact, then the old one is
  closed), then health checks restart on the new pools, the observer and the admin API take
  their new settings;
* drain: stop accepting, stop probing and watching (nothing new will be routed), let
  requests finish.
"""

from __future__ import annotations

import asyncio
import logging
import random

from lbctl.balancing import Backend
from lbctl.config.model import Address, BackendConfig, Config
from lbctl.discovery.membership import MembershipError
from lbctl.discovery.service import Discovery, own_addresses
from lbctl.gateway.store import open_store
from lbctl.health.active import HealthChecks
from lbctl.observe.observer import Observer
from lbctl.proxy.runtime import Runtime
from lbctl.proxy.server import ProxyServer

log = logging.getLogger("lbctl")


class Instance:
    def __init__(self, config: Config, *, loop: asyncio.AbstractEventLoop | None = None,
                 rng: random.Random | None = None, clock=None) -> None:
        self.observer = Observer(config)
        self.store = open_store(config.store)   # nothing connects before start()
        self.proxy = ProxyServer(config, loop=loop, rng=rng, clock=clock, hooks=self.observer,
                                 store=self.store)
        self.loop = self.proxy.loop
        # Probes draw their jitter from their own stream, so they never shift the balancer's.
        self.health = HealthChecks(rng=random.Random(self.proxy.rng.getrandbits(64)))
        self.admin = None                       # the admin API, when [admin] is configured
        # Who is in each pool between reloads: decided here, applied by the data plane.
        self.discovery = Discovery(config, self.set_members, own=self._own_addresses)
        self.started = False

    @property
    def runtime(self) -> Runtime:
        return self.proxy.runtime

    @property
    def address(self) -> tuple[str, int]:
        return self.proxy.address

    def _own_addresses(self) -> list[tuple[str, Address]]:
        return own_addresses(self.runtime.config,
                             self.proxy.address if self.proxy.listener is not None else None,
                             self.admin.bound if self.admin is not None else None)

    # What the admin API also asks of a master with workers; one process has nothing to do.
    async def refresh(self) -> None:
        pass

    async def changed(self) -> None:
        pass

    def worker_rows(self) -> None:
        return None

    async def start(self) -> None:
        # The first lookups, before listening: the first requests find discovered backends.
        await self.discovery.start(self.proxy.runtime.config)
        runtime = self.proxy.runtime
        try:
            # Initial health states are applied before the first connection can be accepted.
            self.health.prepare(runtime)
            if runtime.config.admin is not None:
                # aiohttp and prometheus-client load only when there is an admin API to serve.
                from lbctl.admin.api import start_admin
                self.admin = await start_admin(self)    # fails before the listener starts
            await self.store.start()            # first contact, logged, before any request
            await self.proxy.start()
            self.discovery.listening()
        except BaseException:
            await self.store.close()
            if self.admin is not None:
                await self.admin.close()
                self.admin = None
            await self.discovery.stop()
            raise
        self.started = True
        self.health.start(runtime)

    # ---- membership between reloads ------------------------------------------------------

    def set_members(self, pool: str, members: tuple[BackendConfig, ...]) -> None:
        """A pool's membership changed (discovery, the admin API): the data plane applies it,
        the health checker probes newcomers and stops probing those gone."""
        change = self.proxy.set_members(pool, members)
        if change:
            runtime = self.proxy.runtime
            self.health.sync(runtime)
            self.observer.keep_only(runtime.backends())

    def add_backend(self, pool: str, backend: BackendConfig) -> Backend:
        """The admin API's add, decided by discovery and applied like any other change;
        ``MembershipError`` (404, 409) when it cannot be done."""
        self.discovery.add(pool, backend)
        return self.proxy.runtime.pools[pool].pool.by_name[backend.name]

    def remove_backend(self, pool: str, name: str) -> tuple[Backend, BackendConfig]:
        """The admin API's remove: the backend leaves (drains, then goes); returns it and the
        settings it had. ``MembershipError`` (404, 409) when it cannot be done."""
        state = self.proxy.runtime.pools.get(pool)
        backend = state.pool.by_name.get(name) if state is not None else None
        removed = self.discovery.remove(pool, name)
        if backend is None:             # decided but never applied: cannot happen once started
            raise MembershipError(404, f"pool {pool!r} has no backend named {name!r}")
        return backend, removed

    def reload(self, config: Config) -> None:
        """Swap in a validated config; requests in flight finish under the old one. Backends
        added at run time stay, those removed come back if the file lists them, discovered
        ones stay until their source says otherwise (the event log says which)."""
        store = None
        if config.store != self.store.config:
            old, self.store = self.store, open_store(config.store)
            store = self.store
            self.loop.create_task(self._swap_store(old))
        runtime = self.proxy.reload(config, self.discovery.reconfigure(config), store)
        if self.started:
            self.health.restart(runtime)
        self.observer.configure(config)
        self.observer.keep_only(runtime.backends())
        if self.admin is not None:
            self.admin.reconfigure(config.admin)
        elif config.admin is not None:
            log.warning("[admin] added: the admin API starts after a restart")

    async def _swap_store(self, old) -> None:
        """After a reload that changed [store]: contact the new one, let go of the old one
        (a request still deciding on it falls back as its on_error says)."""
        await self.store.start()
        await old.close()

    async def drain(self, timeout: float) -> bool:
        """Stop accepting, let requests in flight finish (up to ``timeout``), close the rest.
        Returns True when every connection finished on its own."""
        self.proxy.start_drain()
        await self.health.stop()       # nothing new will be routed: verdicts no longer matter
        await self.discovery.stop()    # nor membership
        clean = await self.proxy.wait_drained(timeout)
        await self.close()
        return clean

    async def close(self) -> None:
        await self.discovery.stop()
        if self.admin is not None:
            await self.admin.close()
            self.admin = None
        self.observer.close()
        await self.health.stop()
        await self.proxy.close()
        await self.store.close()
