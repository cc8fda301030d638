"""What the admin API serves: a running instance, as ``lbctl.serve.Instance`` provides it.

The admin API reads the live pools (``runtime``), the observer's counters, what the health
checker knows, discovery's state, and the loop's clock (the one the counters are kept in);
its actions call the pools' own state-changing methods, except adding and removing a
backend, which go through the instance (``add_backend``, ``remove_backend``): membership is
decided by discovery and applied by the data plane, the way discovery's own changes are.

An instance with workers (``lbctl.serve.Master``) serves the same way: its ``observer``
holds the workers' figures summed, brought up to date by ``refresh`` before each read; it
is told of each operator action (``changed``, which returns once every worker applied it,
membership changes included); and ``worker_rows`` gives ``/stats`` its per-worker
``workers`` list (None for a single process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio

    from lbctl.balancing import Backend
    from lbctl.config.model import BackendConfig
    from lbctl.discovery.service import Discovery
    from lbctl.health.active import HealthChecks
    from lbctl.observe.observer import Observer
    from lbctl.proxy.runtime import Runtime


class Served(Protocol):
    @property
    def runtime(self) -> Runtime: ...

    @property
    def address(self) -> tuple[str, int]:
        """Where the proxy listens (host, port), as bound."""

    observer: Observer
    health: HealthChecks
    discovery: Discovery
    loop: asyncio.AbstractEventLoop

    def add_backend(self, pool: str, backend: BackendConfig) -> Backend:
        """Add ``backend`` to ``pool`` now; ``MembershipError`` (404, 409) if it cannot."""

    def remove_backend(self, pool: str, name: str) -> tuple[Backend, BackendConfig]:
        """Remove ``name`` (it drains, then goes): the backend and the settings it had;
        ``MembershipError`` (404, 409) if it cannot."""

    async def refresh(self) -> None: ...          # figures up to date before a read

    async def changed(self) -> None: ...          # an operator changed a backend or a pool

    def worker_rows(self) -> list[dict] | None: ...
