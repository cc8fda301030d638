"""One running instance: the data plane and what runs around it, wired together.

``Instance`` builds the ``Observer`` (accounting, access log, explain) and hands it to the
data plane (``ProxyServer``) as its hooks, with the rate-limit store ``[store]`` describes
(``gateway.store``); it runs the active health checks on the data plane's pools and serves
the admin API beside it. Order matters and lives here:

* start: initial health states before anything listens; the admin API binds before the
  listener, so a taken admin port is one clear error with nothing left running; the store
  makes first contact (and logs whether it is up) before the listener takes a request;
  probes start once the listener is up;
* reload: the data plane swaps its runtime first (with a new store when ``[store]``
  changed: the new one makes contact, then the old one is closed), then health checks
  restart on the new pools, the observer and the admin API take their new settings;
* drain: stop accepting, stop probing (nothing new will be routed), let requests finish.
"""

from __future__ import annotations

import asyncio
import logging
import random

from lbctl.config.model import Config
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
        self.started = False

    @property
    def runtime(self) -> Runtime:
        return self.proxy.runtime

    @property
    def address(self) -> tuple[str, int]:
        return self.proxy.address

    # What the admin API also asks of a master with workers; one process has nothing to do.
    async def refresh(self) -> None:
        pass

    async def changed(self) -> None:
        pass

    def worker_rows(self) -> None:
        return None

    async def start(self) -> None:
        runtime = self.proxy.runtime
        # Initial health states are applied before the first connection can be accepted.
        self.health.prepare(runtime)
        if runtime.config.admin is not None:
            # aiohttp and prometheus-client load only when there is an admin API to serve.
            from lbctl.admin.api import start_admin
            self.admin = await start_admin(self)    # fails before anything else is started
        try:
            await self.store.start()            # first contact, logged, before any request
            await self.proxy.start()
        except BaseException:
            await self.store.close()
            if self.admin is not None:
                await self.admin.close()
                self.admin = None
            raise
        self.started = True
        self.health.start(runtime)

    def reload(self, config: Config) -> None:
        """Swap in a validated config; requests in flight finish under the old one."""
        store = None
        if config.store != self.store.config:
            old, self.store = self.store, open_store(config.store)
            store = self.store
            self.loop.create_task(self._swap_store(old))
        runtime = self.proxy.reload(config, store)
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
        clean = await self.proxy.wait_drained(timeout)
        await self.close()
        return clean

    async def close(self) -> None:
        if self.admin is not None:
            await self.admin.close()
            self.admin = None
        self.observer.close()
        await self.health.stop()
        await self.proxy.close()
        await self.store.close()
