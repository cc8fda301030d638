"""Applying a decided membership to a live pool, between reloads.

``discovery`` decides who is in a pool; this module makes the live pool match, the way a
reload would (``runtime.build_runtime``) but for one pool and without swapping the runtime
(``apply_members``; ``LiveMembership`` runs it for every decision of one data plane):

- a backend that stays (same name, same address) keeps its ``Backend`` object, hence its
  in-flight count, EWMA, health verdict, admin state and idle connections; a weight or backup
  flag its source changed applies at once (an operator's weight stays until then);
- a new backend joins with the pool's slow start (``Pool.set_backends``), and the health
  checker starts probing it;
- a backend that is gone *leaves*: the pool stops choosing it at once, requests in flight on
  it finish normally, its idle connections are closed and those still in use are closed
  when their request ends; ``sweep`` drops it once nothing is in flight. A leaving backend
  that comes back (a DNS flap) rejoins with its state, and ramps again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from lbctl.balancing import Backend
from lbctl.config.model import BackendConfig, Config
from lbctl.discovery.dns import ResolverError
from lbctl.discovery.membership import MembershipError, Memberships
from lbctl.discovery.watch import Watcher, Watchers
from lbctl.errors import UserError
from lbctl.exitcodes import Exit
from lbctl.proxy.runtime import PoolRuntime, Runtime, _backend, retire

log = logging.getLogger("lbctl.proxy")


@dataclass(frozen=True)
class Change:
    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.joined or self.left)


def apply_members(state: PoolRuntime, members: Sequence[BackendConfig]) -> Change:
    """Make ``state``'s pool hold exactly ``members`` (see the module docstring)."""
    pool = state.pool
    current = dict(pool.by_name)
    leaving = list(state.leaving)
    backends: list[Backend] = []
    joined = []
    for bcfg in members:
        old = current.get(bcfg.name)
        if old is not None and state.members.get(bcfg.name) == bcfg:
            backends.append(old)        # unchanged: operator changes (weight...) stay as set
            continue
        if old is None:
            joined.append(bcfg.name)
            old = next((b for b in leaving if b.name == bcfg.name and
                        (b.scheme, b.host, b.port) == (bcfg.scheme, bcfg.host, bcfg.port)), None)
            if old is not None:
                leaving.remove(old)     # back before it was gone: _backend reopens its pool
        backends.append(_backend(bcfg, state.config, old))
    pool.set_backends(backends)
    left = [name for name, b in current.items() if pool.by_name.get(name) is not b]
    for name in left:
        retire(current[name])
        leaving.append(current[name])
    state.leaving = [b for b in leaving if b.inflight]
    state.members = {b.name: b for b in members}
    return Change(tuple(joined), tuple(left))


def sweep(state: PoolRuntime) -> list[Backend]:
    """Drop the leaving backends with nothing in flight any more; returns them."""
    done = [b for b in state.leaving if not b.inflight]
    if done:
        state.leaving = [b for b in state.leaving if b.inflight]
        for b in done:
            retire(b)
    return done


class LiveMembership:
    """Pool membership of one data plane between reloads.

    ``discovery`` decides (``Memberships``: the config's backends, operators' additions and
    removals; ``Watchers``: the discovered sets); this applies each decision to the pools of
    the current runtime (``runtime()``), then calls ``on_change`` (the health checker probes
    newcomers and stops probing those gone). Until ``begin()`` (the proxy started) decisions
    are only recorded: the first runtime is built from ``members()`` at once.
    """

    def __init__(self, config: Config, runtime: Callable[[], Runtime],
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.memberships = Memberships(config)
        self.discovery = Watchers(self._discovered)
        self.runtime = runtime
        self.on_change = on_change
        self.applying = False
        self._shadowed: dict[str, set[str]] = {}

    @property
    def watchers(self) -> Mapping[str, Watcher]:
        return self.discovery.watchers

    def members(self) -> Mapping[str, tuple[BackendConfig, ...]]:
        return self.memberships.members()

    async def start(self, config: Config) -> None:
        """The first lookups of every pool with discovery (each up to its timeout), so the
        first requests already find the discovered backends; a failed one starts without."""
        if not any(pool.discovery is not None for pool in config.pools.values()):
            return
        try:
            await self.discovery.start(config)
        except ResolverError as exc:
            await self.discovery.stop()
            raise UserError(f"cannot start discovery: {exc}", exit_code=Exit.RUNTIME) from None

    def begin(self) -> None:
        """The proxy runs: apply decisions to its pools from now on."""
        self.applying = True

    def reconfigure(self, config: Config) -> Mapping[str, tuple[BackendConfig, ...]]:
        """A reload, before the new runtime is built: what the file changed about operators'
        changes goes to the event log; the members to build the runtime from are returned."""
        for note in self.memberships.reconfigure(config):
            log.info("reload: %s", note)
        return self.members()

    def reconfigured(self, config: Config) -> None:
        """A reload, once the new runtime is in place: adjust the watchers."""
        if self.applying:
            for problem in self.discovery.reconfigure(config):
                log.error("reload: %s; still using the previous source", problem)

    async def stop(self) -> None:
        await self.discovery.stop()

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
        if self.applying:
            self.apply(pool)

    def apply(self, pool: str) -> Change:
        """Make the live pool match its decided membership."""
        state = self.runtime().pools.get(pool)
        if state is None:
            return Change()
        change = apply_members(state, self.memberships[pool].members())
        if change:
            self.on_change()
        leaving = {b.name: b.inflight for b in state.leaving}
        for name in change.left:
            if name in leaving:
                log.info("pool %s: backend %s leaves: no new requests; %d in flight finish "
                         "first", pool, name, leaving[name])
        return change

    def add(self, pool: str, backend: BackendConfig) -> Backend:
        """The admin API's add; ``MembershipError`` 404 (no such pool) or 409 (name taken)."""
        members = self.memberships.get(pool)
        if members is None or pool not in self.runtime().pools:
            raise MembershipError(404, f"no pool named {pool!r}")
        members.add(backend)
        self.apply(pool)
        return self.runtime().pools[pool].pool.by_name[backend.name]

    def remove(self, pool: str, name: str) -> Backend:
        """The admin API's remove: the backend leaves (drains, then goes). ``MembershipError``
        404 (unknown) or 409 (discovery owns it)."""
        members = self.memberships.get(pool)
        state = self.runtime().pools.get(pool)
        if members is None or state is None:
            raise MembershipError(404, f"no pool named {pool!r}")
        backend = state.pool.by_name.get(name)
        members.remove(name)
        self.apply(pool)
        if backend is None:         # decided, never applied: only before the proxy started
            raise MembershipError(404, f"pool {pool!r} has no backend named {name!r}")
        return backend

    def sweep(self) -> None:
        """Drop backends that finished leaving (the proxy's once-a-second sweep)."""
        for name, state in self.runtime().pools.items():
            if state.leaving:
                for b in sweep(state):
                    log.info("pool %s: backend %s left (its last request in flight ended)",
                             name, b.name)
