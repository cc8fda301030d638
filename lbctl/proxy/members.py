"""Applying a membership decided elsewhere to a live pool, between reloads.

Who is in a pool is decided outside the data plane (``lbctl.discovery``: the watchers and
operators' additions and removals, run by the serve root; with workers, by the master). The
decision arrives as plain data, a pool's whole list of ``BackendConfig``, and this module
makes the live pool match it, the way a reload would (``runtime.build_runtime``) but for one
pool and without swapping the runtime:

- a backend that stays (same name) keeps its ``Backend`` object, hence its in-flight count,
  EWMA, health verdict, admin state and idle connections; a weight or backup flag its source
  changed applies at once (an operator's weight stays until then), and a new address gets
  new connections;
- a new backend joins with the pool's slow start (``Pool.set_backends``); before the proxy
  listens (``starting``) nobody ramps, as at startup;
- a backend that is gone *leaves*: the pool stops choosing it at once, requests in flight on
  it finish normally, its idle connections are closed and those still in use are closed
  when their request ends; ``sweep`` drops it once nothing is in flight. A leaving backend
  that comes back at the same address (a DNS flap) rejoins with its state, and ramps again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from lbctl.balancing import Backend
from lbctl.config.model import BackendConfig
from lbctl.proxy.runtime import PoolRuntime, _backend, _idle_pool, retire
from lbctl.proxy.upstream import IdlePool


@dataclass(frozen=True)
class Change:
    """What applying a membership did to a pool, by backend name."""
    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.joined or self.left)


def apply_members(state: PoolRuntime, members: Sequence[BackendConfig],
                  idle: dict[Backend, IdlePool], *, starting: bool = False) -> Change:
    """Make ``state``'s pool hold exactly ``members`` (see the module docstring); ``idle`` is
    the runtime's map of idle connections, kept in step."""
    pool = state.pool
    current = dict(pool.by_name)
    leaving = list(state.leaving)
    backends: list[Backend] = []
    joined = []
    for bcfg in members:
        old = current.get(bcfg.name)
        if old is not None and state.configs.get(old) == bcfg:
            backends.append(old)        # unchanged: operator changes (weight...) stay as set
            continue
        if old is None:
            joined.append(bcfg.name)
            old = next((b for b in leaving if b.name == bcfg.name and
                        (b.scheme, b.host, b.port) == (bcfg.scheme, bcfg.host, bcfg.port)), None)
            if old is not None:
                leaving.remove(old)     # back before it was gone: it takes up its state again
        backends.append(_backend(bcfg, old, pool.name))
    pool.set_backends(backends, starting=starting)
    by_name = {bcfg.name: bcfg for bcfg in members}
    for b in pool.backends:
        if b.name in joined or state.configs.get(b) != by_name[b.name]:
            state.configs[b] = by_name[b.name]
            previous = idle.get(b)
            idle[b] = _idle_pool(b, state.configs[b], state.config, previous)
            if previous is not None and previous is not idle[b]:
                retire(previous)        # moved to a new address
    left = [name for name, b in current.items() if pool.by_name.get(name) is not b]
    for name in left:
        leaving.append(current[name])
    state.leaving = []
    for b in leaving:
        if b.inflight:
            state.leaving.append(b)
            retire(idle[b])
        else:
            _drop(state, b, idle)
    return Change(tuple(joined), tuple(left))


def sweep(state: PoolRuntime, idle: dict[Backend, IdlePool]) -> list[Backend]:
    """Drop the leaving backends with nothing in flight any more; returns them."""
    done = [b for b in state.leaving if not b.inflight]
    if done:
        state.leaving = [b for b in state.leaving if b.inflight]
        for b in done:
            _drop(state, b, idle)
    return done


def _drop(state: PoolRuntime, b: Backend, idle: dict[Backend, IdlePool]) -> None:
    state.configs.pop(b, None)
    connections = idle.pop(b, None)
    if connections is not None:
        connections.close_all()
