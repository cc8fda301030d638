"""Workload: the random streams, and service-time distributions as zero-argument samplers.

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
from functools import partial
from typing import Callable

from lbctl.simulate.scenario import Service

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
            for name in ("arrivals", "service", "failures", "balancer", "keys")}
