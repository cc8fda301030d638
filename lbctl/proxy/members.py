"""Applying a decided membership to a live pool, between reloads.

``discovery`` decides who is in a pool; this module makes the live pool match, the way a
reload would (``runtime.build_runtime``) but for one pool and without swapping the runtime:

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

from dataclasses import dataclass
from typing import Sequence

from lbctl.balancing import Backend
from lbctl.config.model import BackendConfig
from lbctl.proxy.runtime import PoolRuntime, _backend, retire


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
