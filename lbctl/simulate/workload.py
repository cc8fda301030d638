"""Workload: the random streams, arrival times, request keys, and service-time samplers.

Each sampler is bound to the ``random.Random`` stream it draws from (the engine keeps separate
streams for arrivals, service times, failures, keys and the balancer), and is built from
C-level callables where possible (``functools.partial`` over a bound method,
``itertools.repeat``) because the engine calls them once per request. The two cheapest and
commonest draws, exponential service times and Poisson inter-arrival gaps, are inlined in the
engine's loop as ``-log(1 - U) * mean``.
"""

from __future__ import annotations

import itertools
import math
import random
from array import array
from functools import partial
from typing import Callable

from lbctl.simulate.scenario import Service, Workload

# Standard normal quantile at 0.99.
Z99 = 2.3263478740408408


def lognormal_params(mean: float, p99: float) -> tuple[float, float]:
    """(mu, sigma) of the lognormal with this mean and 99th percentile.

    mean = exp(mu + s^2/2) and p99 = exp(mu + Z99 s), so with d = ln(p99/mean):
    s^2/2 - Z99 s + d = 0. The smaller root is the one whose p99 lies on the near side of the
    mode; it exists when d <= Z99^2/2 (the scenario loader checks this).
    """
    d = math.log(p99 / mean)
    sigma = Z99 - math.sqrt(max(Z99 * Z99 - 2.0 * d, 0.0))
    mu = math.log(mean) - sigma * sigma / 2.0
    return mu, sigma


def service_sampler(service: Service, rng: random.Random) -> Callable[[], float]:
    """Service times at speed 1, in seconds."""
    dist = service.dist
    if dist == "exponential":
        return partial(rng.expovariate, 1.0 / service.mean)
    if dist == "constant":
        return itertools.repeat(service.mean).__next__
    if dist == "uniform":
        return partial(rng.uniform, service.low, service.high)
    if dist == "lognormal":
        mu, sigma = lognormal_params(service.mean, service.p99)
        return partial(rng.lognormvariate, mu, sigma)
    if dist == "empirical":
        return partial(rng.choice, service.values)
    raise ValueError(f"unknown distribution {dist!r}")


def streams(seed: int) -> dict[str, random.Random]:
    """Independent streams derived from one seed.

    Seeding with a string goes through SHA-512, so the streams are unrelated to each other and
    the same in every process (no PYTHONHASHSEED dependence). Each algorithm gets fresh copies,
    so every algorithm sees the very same arrivals and service-time draws (common random
    numbers: differences between algorithms are not sampling noise between workloads).
    """
    return {name: random.Random(f"lbctl-simulate:{seed}:{name}")
            for name in ("arrivals", "service", "failures", "balancer", "keys", "health",
                         "workers")}


def arrival_times(workload: Workload, seed: int) -> array:
    """Every arrival time of one run, in order: drawn once per seed and shared by every
    algorithm (the engine reads them from this array), or a replayed log's own times."""
    trace = workload.trace
    if trace is not None:
        return trace.times
    rng = random.Random(f"lbctl-simulate:{seed}:arrivals")
    rand = rng.random
    spacing = 1.0 / workload.rate
    total = workload.requests
    stop = workload.duration if workload.duration else math.inf
    out = array("d")
    append = out.append
    log = math.log
    t = 0.0
    if workload.arrivals == "poisson":
        if total:
            for _ in range(total):
                t -= log(1.0 - rand()) * spacing
                append(t)
        else:
            while True:
                t -= log(1.0 - rand()) * spacing
                if t > stop:
                    break
                append(t)
    else:
        n = total if total else int(stop / spacing + 1e-9)
        out = array("d", (spacing * (k + 1) for k in range(n)))
    return out


def request_keys(workload: Workload, seed: int, count: int) -> list:
    """The hash key of each request: a replayed log's, or drawn uniformly from
    ``workload.keys`` distinct ones (only algorithms that use keys ask)."""
    trace = workload.trace
    if trace is not None and trace.keys is not None:
        return trace.keys
    rng = random.Random(f"lbctl-simulate:{seed}:keys")
    names = [f"client-{k}" for k in range(workload.keys)]
    n = workload.keys
    draw = rng.random
    return [names[int(draw() * n)] for _ in range(count)]
