"""A backend's live state: what the algorithms read and what the pool and health checks write.

A ``Backend`` outlives config reloads (the pool carries it over when a backend with the same
name remains), so counters and health survive a SIGHUP. Only the pool changes eligibility
fields; algorithms read ``inflight``, ``effective_weight`` and the EWMA estimate.

Every field is declared here. What a driver keeps per backend it keeps itself, in a map
keyed by the ``Backend`` (identity hashing): the proxy's idle connections in its
``Runtime``, the observer's counters, the health checker's probe records, passive health's
failure streaks; the simulator keeps lists indexed by ``index``.
"""

from __future__ import annotations

import math
from enum import Enum

# Every weight, wherever it enters (config, admin API, CLI, scenarios), is in this range.
# Bounded below so slow start (10% of it) and least_conn (in-flight / weight) stay finite;
# above so a consistent_hash ring and weighted tables stay small.
MIN_WEIGHT = 0.01
MAX_WEIGHT = 1000.0
WEIGHT_RANGE = f"a number from {MIN_WEIGHT:g} to {MAX_WEIGHT:g}"


def checked_weight(value: object) -> float:
    """``value`` as a weight; ``ValueError`` (saying ``WEIGHT_RANGE``) if it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected {WEIGHT_RANGE}")
    try:
        weight = float(value)
    except OverflowError:
        raise ValueError(f"expected {WEIGHT_RANGE}") from None
    if not MIN_WEIGHT <= weight <= MAX_WEIGHT:         # NaN fails this too
        raise ValueError(f"expected {WEIGHT_RANGE}")
    return weight


class AdminState(str, Enum):
    """Operator intent. Independent of health: enabling a backend never marks it healthy."""

    ENABLED = "enabled"
    DISABLED = "disabled"      # no traffic at all
    DRAINING = "draining"      # no new requests; in-flight ones finish


class Backend:
    """One upstream server and the live state the balancer needs about it."""

    __slots__ = (
        "name", "url", "scheme", "host", "port", "weight", "config_weight", "backup",
        "effective_weight", "inflight", "started", "finished", "failures",
        "ewma", "ewma_stamp", "healthy", "admin", "ejected_until", "eligible",
        "eligible_since", "index", "ejections",
    )

    def __init__(self, name: str, url: str = "", *, weight: float = 1.0, backup: bool = False,
                 scheme: str = "http", host: str = "", port: int = 0) -> None:
        self.name = name
        self.url = url
        self.scheme = scheme
        self.host = host
        self.port = port
        self.weight = float(weight)            # configured (or set by an operator)
        # The weight the config file gave. An operator's weight survives a reload while the
        # file's stays the same; a changed file weight replaces it.
        self.config_weight = float(weight)
        self.backup = backup
        self.effective_weight = float(weight)  # weight after slow start; set by the pool
        self.inflight = 0
        self.started = 0
        self.finished = 0
        self.failures = 0
        self.ewma = 0.0                        # peak-EWMA latency estimate, seconds; 0 = none yet
        self.ewma_stamp = 0.0
        self.healthy = True                    # active health verdict (health checks write it)
        self.admin = AdminState.ENABLED
        self.ejected_until = 0.0               # passive ejection (outlier detection)
        self.eligible = True                   # derived by the pool from the three above
        self.eligible_since = 0.0              # for slow start
        self.index = 0                         # position in the pool, for algorithms' tables
        self.ejections = 0                     # passive ejections so far (health.passive)

    def ewma_cost(self, now: float, decay: float) -> float:
        """The estimate decayed toward zero by the time since it was last updated.

        Decaying on read (as tower's PeakEwma does) lets a backend that was slow once and then
        received no traffic be tried again, instead of being starved forever.
        """
        if self.ewma == 0.0:
            return 0.0
        elapsed = now - self.ewma_stamp
        if elapsed <= 0:
            return self.ewma
        return self.ewma * math.exp(-elapsed / decay)

    def observe_latency(self, now: float, latency: float, decay: float) -> None:
        """Peak EWMA: jump up to a slow sample at once, decay toward faster ones gradually."""
        current = self.ewma_cost(now, decay)
        if latency > current:
            self.ewma = latency
        else:
            # Weigh the *stored* estimate by exp(-elapsed / decay): ``current`` already carries
            # that factor, and applying it twice would halve the configured decay time.
            elapsed = max(now - self.ewma_stamp, 0.0)
            w = math.exp(-elapsed / decay)
            self.ewma = self.ewma * w + latency * (1.0 - w)
        self.ewma_stamp = now

    @property
    def state(self) -> str:
        """One word for people: disabled, draining, down, ejected or up."""
        if self.admin is not AdminState.ENABLED:
            return self.admin.value
        if not self.healthy:
            return "down"
        if self.ejected_until:
            return "ejected"
        return "up"

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, w={self.weight:g}, inflight={self.inflight}, {self.state})"
