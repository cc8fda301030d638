"""What the admin API serves: a running instance, as ``lbctl.serve.Instance`` provides it.

The admin API reads the live pools (``runtime``), the observer's counters, what the health
checker knows, and the loop's clock (the one the counters are kept in); its actions call the
pools' own state-changing methods.

An instance with workers (``lbctl.serve.Master``) serves the same way: its ``observer``
holds the workers' figures summed, brought up to date by ``refresh`` before each read; it
is told of each operator action (``changed``, which returns once every worker applied it);
and
``worker_rows`` gives ``/stats`` its per-worker ``workers`` list (None for a single process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio

    from lbctl.health.active import HealthChecks
    from lbctl.observe.observer import Observer
    from lbctl.proxy.runtime import Runtime


class Served(Protocol):
    @property
    def runtime(self) -> Runtime: ...

    observer: Observer
    health: HealthChecks
    loop: asyncio.AbstractEventLoop

    async def refresh(self) -> None: ...          # figures up to date before a read

    async def changed(self) -> None: ...          # an operator changed a backend's state

    def worker_rows(self) -> list[dict] | None: ...
