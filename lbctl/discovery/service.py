"""``Discovery``: every pool's membership, decided and kept current while lbctl runs.

It holds what decides (``membership.Memberships``: the config's backends and operators'
additions and removals; ``watch.Watchers``: the discovered sets) and hands every decision
on as plain data, ``on_members(pool, members)``, a pool's whole list of ``BackendConfig``.
It never touches a live pool: the serve root passes each list to the data plane, which
applies it (``ProxyServer.set_members``); with workers, a master would send the same list
to every worker.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Mapping

from lbctl.config.model import BackendConfig, Config
from lbctl.discovery.dns import ResolverError
from lbctl.discovery.membership import MembershipError, Memberships
from lbctl.discovery.watch import Status, Watcher, Watchers
from lbctl.errors import UserError
from lbctl.exitcodes import Exit

log = logging.getLogger("lbctl.discovery")

OnMembers = Callable[[str, "tuple[BackendConfig, ...]"], None]


class Discovery:
    """Who is in each pool between reloads (see the module docstring).

    ``start`` does every pool's first lookup (so the first requests already find the
    discovered backends) and keeps watching; ``reconfigure`` follows a reload; ``add`` and
    ``remove`` are the admin API's operations; ``stop`` ends the watching. Each change of a
    pool's membership, the first lookups' included, is told to ``on_members``.
    """

    def __init__(self, config: Config, on_members: OnMembers,
                 *, wall: Callable[[], float] = time.time) -> None:
        self.memberships = Memberships(config)
        self.watching = Watchers(self._discovered, wall=wall)
        self.on_members = on_members
        self.running = False
        self._shadowed: dict[str, set[str]] = {}

    @property
    def watchers(self) -> Mapping[str, Watcher]:
        return self.watching.watchers

    def status(self, pool: str) -> Status | None:
        """The pool's discovery as ``/stats`` and ``/metrics`` show it; None without one."""
        watcher = self.watching.watchers.get(pool)
        return watcher.status if watcher is not None else None

    def members(self) -> Mapping[str, tuple[BackendConfig, ...]]:
        """Every pool's whole membership, as decided now."""
        return self.memberships.members()

    async def start(self, config: Config) -> None:
        """The first lookups of every pool with discovery (each up to its timeout), then
        watch. A failed lookup starts its pool without discovered backends. No nameserver
        to ask is a ``UserError``."""
        self.running = True
        if not any(pool.discovery is not None for pool in config.pools.values()):
            return
        try:
            await self.watching.start(config)
        except ResolverError as exc:
            await self.stop()
            raise UserError(f"cannot start discovery: {exc}", exit_code=Exit.RUNTIME) from None

    def reconfigure(self, config: Config) -> Mapping[str, tuple[BackendConfig, ...]]:
        """A reload: take the new file's view (the event log says what became of operators'
        changes), adjust the watchers, and return every pool's membership to build the new
        runtime from. Watchers started here report only once the caller has swapped it in."""
        for note in self.memberships.reconfigure(config):
            log.info("reload: %s", note)
        if self.running:
            for problem in self.watching.reconfigure(config):
                log.error("reload: %s; still using the previous source", problem)
        return self.members()

    async def stop(self) -> None:
        self.running = False
        await self.watching.stop()

    # ---- operators' changes (the admin API) ---------------------------------------------

    def add(self, pool: str, backend: BackendConfig) -> None:
        """Add ``backend`` to ``pool``; ``MembershipError`` 404 (no such pool) or 409 (the
        name is taken)."""
        members = self.memberships.get(pool)
        if members is None:
            raise MembershipError(404, f"no pool named {pool!r}")
        members.add(backend)
        self._decided(pool)

    def remove(self, pool: str, name: str) -> BackendConfig:
        """Take ``name`` out of ``pool`` (it drains, then goes); returns what it was.
        ``MembershipError`` 404 (unknown) or 409 (discovery owns it)."""
        members = self.memberships.get(pool)
        if members is None:
            raise MembershipError(404, f"no pool named {pool!r}")
        removed = members.remove(name)
        self._decided(pool)
        return removed

    # ---- decisions ----------------------------------------------------------------------

    def _discovered(self, pool: str, backends: tuple[BackendConfig, ...]) -> None:
        members = self.memberships.get(pool)
        if members is None:
            return
        members.discovered = backends
        shadowed = set(members.shadowed())
        for name in sorted(shadowed - self._shadowed.get(pool, set())):
            log.warning("pool %s: discovered backend %s is ignored: the pool already has a "
                        "backend of that name", pool, name)
        self._shadowed[pool] = shadowed
        self._decided(pool)

    def _decided(self, pool: str) -> None:
        self.on_members(pool, self.memberships[pool].members())
