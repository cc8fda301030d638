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

from lbctl.config.kinds import loops_back
from lbctl.config.model import Address, BackendConfig, Config
from lbctl.discovery.dns import ResolverError
from lbctl.discovery.membership import MembershipError, Memberships
from lbctl.discovery.watch import Status, Watcher, Watchers
from lbctl.errors import UserError
from lbctl.exitcodes import Exit

log = logging.getLogger("lbctl.discovery")

OnMembers = Callable[[str, "tuple[BackendConfig, ...]"], None]
LISTENER, ADMIN = "the proxy's listening address", "the admin API's address"
Own = Callable[[], "list[tuple[str, Address]]"]


def configured_addresses(config: Config) -> list[tuple[str, Address]]:
    """lbctl's own addresses as the config gives them: the listener's, the admin API's."""
    own = [(LISTENER, config.listen.address)]
    if config.admin is not None:
        own.append((ADMIN, config.admin.address))
    return own


def own_addresses(config: Config, listener: tuple[str, int] | None,
                  admin: tuple[str, int] | None) -> list[tuple[str, Address]]:
    """Where lbctl listens: as bound where it is already (a port 0 in the config is a real
    port by then), else as configured. No discovered backend may be one of them."""
    own = dict(configured_addresses(config))
    if listener is not None:
        own[LISTENER] = Address(*listener)
    if admin is not None:
        own[ADMIN] = Address(*admin)
    return list(own.items())


class Discovery:
    """Who is in each pool between reloads (see the module docstring).

    ``start`` does every pool's first lookup (so the first requests already find the
    discovered backends) and keeps watching; ``reconfigure`` follows a reload; ``add`` and
    ``remove`` are the admin API's operations; ``stop`` ends the watching. Each change of a
    pool's membership, the first lookups' included, is told to ``on_members``.
    """

    def __init__(self, config: Config, on_members: OnMembers,
                 *, wall: Callable[[], float] = time.time, own: Own | None = None) -> None:
        self.memberships = Memberships(config)
        self.watching = Watchers(self._discovered, wall=wall)
        self.on_members = on_members
        self.running = False
        self._shadowed: dict[str, set[str]] = {}
        self._looping: dict[str, set[str]] = {}
        # lbctl's own addresses (the serve root gives the bound ones once it listens): a
        # source never adds a backend there, since each request would come back in.
        self.config = config
        self.own: Own = own if own is not None else lambda: configured_addresses(self.config)

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
        self.config = config
        for note in self.memberships.reconfigure(config):
            log.info("reload: %s", note)
        if self.running:
            for problem in self.watching.reconfigure(config):
                log.error("reload: %s; still using the previous source", problem)
        return self.members()

    def listening(self) -> None:
        """lbctl now listens: with a port 0 in the config, its own addresses are known only
        now, so the first lookups' sets are checked against them again."""
        for pool, watcher in self.watching.watchers.items():
            if self._not_lbctl(pool, watcher.discovered) != self.memberships[pool].discovered:
                self._discovered(pool, watcher.discovered)

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
        backends = self._not_lbctl(pool, backends)
        members.discovered = backends
        shadowed = set(members.shadowed())
        for name in sorted(shadowed - self._shadowed.get(pool, set())):
            log.warning("pool %s: discovered backend %s is ignored: the pool already has a "
                        "backend of that name", pool, name)
        self._shadowed[pool] = shadowed
        self._decided(pool)

    def _not_lbctl(self, pool: str, backends: tuple[BackendConfig, ...]
                   ) -> tuple[BackendConfig, ...]:
        """``backends`` less those at lbctl's own addresses, each logged once while a source
        keeps naming it (a file or a nameserver may list anything)."""
        own = self.own()
        kept, looping = [], {}
        for b in backends:
            what = next((w for w, a in own if loops_back(b.host, b.port, a)), None)
            if what is None:
                kept.append(b)
            else:
                looping[b.name] = what
        for name in sorted(set(looping) - self._looping.get(pool, set())):
            log.warning("pool %s: discovered backend %s is ignored: it is %s, and each "
                        "request sent there would come back into lbctl", pool, name,
                        looping[name])
        self._looping[pool] = set(looping)
        return tuple(kept) if looping else backends

    def _decided(self, pool: str) -> None:
        self.on_members(pool, self.memberships[pool].members())
