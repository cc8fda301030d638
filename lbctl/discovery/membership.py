"""A pool's members, decided: the config's backends, what discovery found, what operators did.

Three layers, merged under stable names (a name is what ``/stats``, metrics and admin paths
use, so it never depends on order):

1. ``static``: ``[[pools.X.backends]]`` from the config file, less those an operator removed
   at run time (until the next reload: a SIGHUP applies the file, and the file lists them);
2. ``added``: backends added through the admin API. They survive a SIGHUP, like every other
   operator change, unless the new file lists a backend of the same name, which then takes
   over; a restart forgets them (write them into the file to keep them);
3. ``discovered``: the pool's discovery source's last good set. A discovered name already
   taken by a layer above is shadowed (and logged), never merged.

Pure: no asyncio, no live pool. ``members()`` is what the proxy applies, or what a master
sends to its workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from lbctl.config.model import BackendConfig, Config, PoolConfig


class MembershipError(Exception):
    """An operation that cannot be done; ``status`` is the HTTP status the admin API answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class PoolMembers:
    name: str
    static: tuple[BackendConfig, ...]
    discovered: tuple[BackendConfig, ...] = ()
    added: dict[str, BackendConfig] = field(default_factory=dict)   # admin, in order
    removed: set[str] = field(default_factory=set)      # static names removed at run time

    def members(self) -> tuple[BackendConfig, ...]:
        out = [b for b in self.static if b.name not in self.removed]
        taken = {b.name for b in out}
        out.extend(b for name, b in self.added.items() if name not in taken)
        taken.update(self.added)
        out.extend(b for b in self.discovered if b.name not in taken)
        return tuple(out)

    def shadowed(self) -> list[str]:
        """Discovered names hidden by a static or added backend of the same name."""
        taken = {b.name for b in self.static if b.name not in self.removed} | set(self.added)
        return [b.name for b in self.discovered if b.name in taken]

    def source_of(self, name: str) -> str | None:
        for b in self.members():
            if b.name == name:
                return b.source
        return None

    # ---- operator changes ---------------------------------------------------------------

    def add(self, backend: BackendConfig) -> None:
        """Add ``backend`` (source "admin"); 409 when the name is taken."""
        source = self.source_of(backend.name)
        if source is not None:
            raise MembershipError(409, f"pool {self.name!r} already has a backend named "
                                       f"{backend.name!r} ({source}); remove it first or "
                                       "choose another name")
        self.added[backend.name] = backend

    def remove(self, name: str) -> BackendConfig:
        """Take ``name`` out of the pool; 404 when unknown, 409 when discovery owns it."""
        for b in self.members():
            if b.name != name:
                continue
            if b.source == "admin":
                del self.added[name]
            elif b.source == "static":
                self.removed.add(name)
            else:
                raise MembershipError(409, f"backend {name!r} of pool {self.name!r} comes from "
                                           f"{b.source} discovery and would come back at the "
                                           "next lookup; remove it at the source (or drain or "
                                           "disable it meanwhile)")
            return b
        raise MembershipError(404, f"pool {self.name!r} has no backend named {name!r}")

    # ---- a reload -----------------------------------------------------------------------

    def reconfigure(self, pool: PoolConfig) -> list[str]:
        """Take the reloaded config's view of this pool; notes for the event log say what
        happened to the operators' changes."""
        notes = []
        self.static = pool.backends
        names = {b.name for b in pool.backends}
        back = sorted(self.removed & names)
        if back:
            notes.append(f"pool {self.name}: {_names(back)} removed at run time "
                         f"{_be(back)} back: the config file lists {_them(back)}")
        self.removed.clear()
        replaced = [name for name in self.added if name in names]
        for name in replaced:
            del self.added[name]
        if replaced:
            notes.append(f"pool {self.name}: {_names(replaced)} added at run time "
                         f"{_be(replaced)} now the config file's")
        if self.added:
            kept = list(self.added)
            notes.append(f"pool {self.name}: keeps {_names(kept)} added at run time; a "
                         f"restart forgets {_them(kept)} unless the config file lists "
                         f"{_them(kept)}")
        if pool.discovery is None and self.discovered:
            notes.append(f"pool {self.name}: no [discovery] any more; "
                         f"{len(self.discovered)} discovered backend(s) leave")
            self.discovered = ()
        return notes


class Memberships:
    """Every pool's ``PoolMembers``, carried across reloads."""

    def __init__(self, config: Config) -> None:
        self.pools: dict[str, PoolMembers] = {
            name: PoolMembers(name, pool.backends) for name, pool in config.pools.items()}

    def __getitem__(self, pool: str) -> PoolMembers:
        return self.pools[pool]

    def get(self, pool: str) -> PoolMembers | None:
        return self.pools.get(pool)

    def members(self) -> Mapping[str, tuple[BackendConfig, ...]]:
        return {name: p.members() for name, p in self.pools.items()}

    def reconfigure(self, config: Config) -> list[str]:
        notes = []
        for name in list(self.pools):
            if name not in config.pools:
                gone = self.pools.pop(name)
                if gone.added:
                    notes.append(f"pool {name} is gone from the config file, and with it "
                                 f"{_names(list(gone.added))} added at run time")
        for name, pool in config.pools.items():
            if name in self.pools:
                notes.extend(self.pools[name].reconfigure(pool))
            else:
                self.pools[name] = PoolMembers(name, pool.backends)
        return notes


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"backend {shown}" if len(names) == 1 else f"backends {shown}"


def _be(names: list[str]) -> str:
    return "is" if len(names) == 1 else "are"


def _them(names: list[str]) -> str:
    return "it" if len(names) == 1 else "them"
