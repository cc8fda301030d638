"""Balancing: pools of backends and the algorithms that rank them.

Pure code. No asyncio, sockets, ``time`` or module-level ``random``: a ``Pool`` is given a
clock and each algorithm a ``random.Random``, so ``lbctl serve`` (wall clock, real sockets)
and ``lbctl simulate`` (virtual clock, seeded) drive the very same objects.

An algorithm ranks candidates (``candidates``); the pool decides (eligibility, exclusion,
bounded attempts) and feeds load back (``on_start``/``on_end``). Every attempt ends with an
``Outcome`` (``outcome.py``), which a driver reports to the pool's ``OutcomeSink``. The registry below maps the
TOML value ``algorithm = "..."`` to its class; the module carries the same name.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from lbctl.balancing.backend import AdminState, Backend
from lbctl.balancing.base import Algorithm
from lbctl.balancing.consistent_hash import ConsistentHash
from lbctl.balancing.ewma import Ewma
from lbctl.balancing.least_conn import LeastConn
from lbctl.balancing.outcome import DISCARD, Outcome, OutcomeSink
from lbctl.balancing.p2c import PowerOfTwo
from lbctl.balancing.pool import Pool
from lbctl.balancing.random import Random
from lbctl.balancing.round_robin import RoundRobin
from lbctl.balancing.weighted import Weighted

ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls
    for cls in (RoundRobin, Random, Weighted, LeastConn, PowerOfTwo, Ewma, ConsistentHash)
}


def make_pool(name: str, backends: Sequence[Backend], algorithm: str, *, rng: random.Random,
              clock: Callable[[], float], ewma_decay: float = 10.0, slow_start: float = 0.0,
              panic_threshold: float = 0.0) -> Pool:
    """Build a pool with a fresh instance of the named algorithm."""
    algo = ALGORITHMS[algorithm](rng, clock, ewma_decay=ewma_decay)
    return Pool(name, backends, algo, clock=clock, ewma_decay=ewma_decay,
                slow_start=slow_start, panic_threshold=panic_threshold)


__all__ = ["ALGORITHMS", "DISCARD", "AdminState", "Algorithm", "Backend", "Outcome",
           "OutcomeSink", "Pool", "make_pool"]
