"""The model: simulated backends, the ways they fail, and the health checks that notice.

``Servers`` holds every simulated backend's state in flat lists indexed by
``Backend.index`` (faster to read on the driver's hot path than attributes):

* **Service.** A backend serves ``concurrency`` requests at once in FIFO order. FIFO makes
  its schedule known at dispatch: an attempt starts when the earliest slot frees up (or
  now), so ``occupy`` returns its end time at once and the driver pushes one event per
  attempt. Work abandoned by a timeout still occupies the backend (it does not know the
  client left), as a real server would.
* **Faults.** Each backend has at most one fault at a time, for a ``fraction`` of the
  attempts sent to it: ``refuse`` (the connection is refused: the proxy's outcome
  "connect"), ``reset`` (closed before any response byte: "reset"), ``blackhole`` (accepted,
  never answered: the proxy's response timeout, "timeout"; it occupies nothing) and
  ``error`` (a 5xx after ``latency``). Independently, ``slow`` multiplies service times for
  attempts sent from then on. A group's ``failure`` is its fault from the start; timeline
  events set and clear faults (``down`` sets one, default ``refuse``; ``up`` and
  ``recover`` clear them).
* **Health checks.** With ``[proxy.health]`` (a config pool's ``[health]``), ``Prober``
  probes every backend on serve's own schedule (``health.active.first_delays`` and
  ``next_delay``: the first round spread over one interval, then every interval +/- 10%)
  and feeds serve's ``HealthState`` (rise/fall); only a flip reaches the pool
  (``set_healthy``), exactly as the live checker does. A probe of a faulty backend fails
  with the fault's fraction (a black-holed probe fails after the probe timeout), a slow
  backend passes. So ``down`` costs what it costs in serve: traffic goes on failing until
  ``fall`` probes have failed, and with ``panic_threshold`` the pool may send traffic to
  backends known to be down.
"""

from __future__ import annotations

import heapq
import random
from typing import Callable, Sequence

from lbctl.balancing import Backend, Pool
from lbctl.config.model import Health
from lbctl.health.active import first_delays, next_delay
from lbctl.health.state import HealthState
from lbctl.simulate.scenario import BackendSpec, Event, Fault
from lbctl.simulate.workload import service_sampler

# Fault modes (``Servers.mode``); 0 = none.
NONE, REFUSE, RESET, BLACKHOLE, ERROR = range(5)
MODES = {"refuse": REFUSE, "reset": RESET, "blackhole": BLACKHOLE, "error": ERROR}


class Servers:
    """Every simulated backend: service, FIFO slots, busy time and faults."""

    def __init__(self, specs: Sequence[BackendSpec], service_rng: random.Random) -> None:
        n = len(specs)
        self.specs = specs
        self.sample = [service_sampler(s.service, service_rng) for s in specs]
        self.base_scale = [1.0 / s.speed for s in specs]
        self.scale = list(self.base_scale)          # times the slow-down factor
        # Exponential service is drawn inline by the driver: -log(1 - U) * mean / speed;
        # 0.0 = use sample[i] x scale[i].
        self.base_expo = [s.service.mean / s.speed if s.service.dist == "exponential" else 0.0
                          for s in specs]
        self.expo = list(self.base_expo)
        self.multi = [s.concurrency > 1 for s in specs]
        # When each concurrency slot frees up: a float for one slot, a heap of floats for more.
        self.free: list = [[0.0] * s.concurrency if s.concurrency > 1 else 0.0 for s in specs]
        self.busy = [0.0] * n                       # service time of attempts sent so far
        self.mode = [NONE] * n                      # the current fault
        self.fraction = [0.0] * n
        self.latency = [0.0] * n
        self.trouble = [False] * n                  # a fault is set
        for i, s in enumerate(specs):
            if s.failure is not None:
                self.set_fault(i, s.failure)

    def occupy(self, i: int, now: float, svc: float) -> float:
        """Queue ``svc`` seconds of work on backend ``i`` (FIFO over its slots): its end."""
        if self.multi[i]:
            slots = self.free[i]
            start = slots[0]
            if start < now:
                start = now
            end = start + svc
            heapq.heapreplace(slots, end)
            return end
        start = self.free[i]
        if start < now:
            start = now
        end = self.free[i] = start + svc
        return end

    def set_fault(self, i: int, fault: Fault) -> None:
        if fault.mode == "slow":
            self.scale[i] = self.base_scale[i] * fault.factor
            self.expo[i] = self.base_expo[i] * fault.factor
            return
        self.mode[i] = MODES[fault.mode]
        self.fraction[i] = fault.fraction
        self.latency[i] = fault.latency
        self.trouble[i] = fault.fraction > 0

    def clear(self, i: int, *, speed: bool = True) -> None:
        self.mode[i], self.fraction[i], self.trouble[i] = NONE, 0.0, False
        if speed:
            self.scale[i], self.expo[i] = self.base_scale[i], self.base_expo[i]

    def apply(self, ev: Event, index: dict[str, int]) -> list[int]:
        """A timeline event happens now; returns the backends it touched."""
        touched = [index[name] for name in ev.backends]
        for i in touched:
            action = ev.action
            if action == "down":
                self.set_fault(i, Fault(ev.mode, 1.0, ev.latency))
            elif action == "up":
                self.clear(i, speed=False)
            elif action == "recover":
                self.clear(i)
            elif action == "slow":
                self.set_fault(i, Fault("slow", factor=ev.factor))
            else:
                self.set_fault(i, Fault(action, ev.fraction, ev.latency))
        return touched


class Prober:
    """Serve's active health checks in virtual time (see the module docstring)."""

    def __init__(self, health: Health, pool: Pool, backends: Sequence[Backend],
                 servers: Servers, rng: random.Random,
                 on_flip: Callable[[Backend, bool], None] | None = None) -> None:
        self.health = health
        self.pool = pool
        self.backends = backends
        self.servers = servers
        self.rng = rng
        self.on_flip = on_flip
        self.states = [HealthState.initial(health.rise, health.fall, health.initial)
                       for _ in backends]
        for b, state in zip(backends, self.states):
            pool.set_healthy(b, state.healthy)

    def first(self) -> list[tuple[float, int]]:
        """(time, backend index) of every backend's first probe."""
        delays = first_delays(len(self.backends), self.health.interval, self.rng)
        return [(d, i) for i, d in enumerate(delays)]

    def probe(self, i: int, now: float) -> tuple[float, bool]:
        """Probe backend ``i`` now: (when its verdict is known, whether it passed)."""
        servers = self.servers
        mode = servers.mode[i]
        if mode and self.rng.random() < servers.fraction[i]:
            if mode == BLACKHOLE:
                return now + self.health.timeout, False
            return now + min(servers.latency[i], self.health.timeout), False
        return now, True

    def verdict(self, i: int, ok: bool) -> None:
        """A probe's result: feed the state machine; a flip reaches the pool."""
        state = self.states[i]
        if state.observe(ok):
            b = self.backends[i]
            self.pool.set_healthy(b, state.healthy)
            if self.on_flip is not None:
                self.on_flip(b, state.healthy)

    def next(self, now: float) -> float:
        return now + next_delay(self.health.interval, self.rng)
