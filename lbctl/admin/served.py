"""What the admin API serves: a running instance, as ``lbctl.serve.Instance`` provides it.

The admin API reads the live pools (``runtime``), the observer's counters, what the health
checker knows, and the loop's clock (the one the counters are kept in); its actions call the
pools' own state-changing methods.
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
