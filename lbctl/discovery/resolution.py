"""What one lookup said, and when to look again.

A ``Resolution`` is one of three things, and they are treated differently on purpose:

- ``found``: these backends (at least one). The discovered part becomes exactly this set.
- ``empty``: an authoritative "nothing" (NXDOMAIN, no records, a file listing no backend).
  The discovered part is emptied: scaling to zero is a real answer.
- ``failed``: no answer to trust (timeout, SERVFAIL, an unreachable nameserver, an unreadable
  or broken file). The last good set stays, since dropping healthy backends because a
  resolver hiccupped would turn a DNS incident into an outage.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbctl.config.model import BackendConfig

FOUND, EMPTY, FAILED = "found", "empty", "failed"

# A record's TTL never makes lookups more frequent than this (a TTL of 0 is common behind
# some service registries and would otherwise mean a lookup per loop turn); an ``interval``
# below it is the user's explicit choice and is honoured.
MIN_TTL = 1.0
# A pool's discovered set at most: a DNS answer over TCP holds about 4,000 addresses and a
# 16 MiB file hundreds of thousands of entries; beyond this it is a mistake or an attack,
# and the last good set is kept rather than probing and balancing over all of them.
MAX_BACKENDS = 10_000


@dataclass(frozen=True)
class Resolution:
    kind: str                                   # FOUND | EMPTY | FAILED
    backends: tuple[BackendConfig, ...] = ()    # FOUND: unique names, in the source's order
    ttl: float | None = None                    # seconds the answer holds; None: no TTL
    reason: str = ""                            # EMPTY/FAILED: "NXDOMAIN", "timeout", ...

    @classmethod
    def found(cls, backends: tuple[BackendConfig, ...] | list[BackendConfig],
              ttl: float | None = None, empty_reason: str = "no backends") -> Resolution:
        """The backends, with duplicate names dropped (first kept); none at all is EMPTY."""
        seen: dict[str, BackendConfig] = {}
        for b in backends:
            seen.setdefault(b.name, b)
        if not seen:
            return cls(EMPTY, (), ttl, empty_reason)
        if len(seen) > MAX_BACKENDS:
            return cls.failed(f"{len(seen):,} backends, more than the {MAX_BACKENDS:,} a pool "
                              "takes from discovery")
        return cls(FOUND, tuple(seen.values()), ttl)

    @classmethod
    def empty(cls, reason: str, ttl: float | None = None) -> Resolution:
        return cls(EMPTY, (), ttl, reason)

    @classmethod
    def failed(cls, reason: str) -> Resolution:
        return cls(FAILED, (), None, reason)


def next_delay(interval: float, ttl: float | None) -> float:
    """Seconds until the next lookup: ``min(TTL, interval)``, the TTL floored at ``MIN_TTL``."""
    if ttl is None:
        return interval
    return min(interval, max(ttl, MIN_TTL))
