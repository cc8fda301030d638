"""The scenario file's shape, declared with the config's own machinery (``lbctl.config.schema``).

Each TOML table of a scenario is a ``Section`` naming its keys and their kinds, so a scenario
is checked exactly as ``lbctl validate`` checks a config: every problem is collected, and each
reads ``FILE: KEY.PATH: expected ..., found ...`` with "did you mean" hints. The ``[proxy]``
table *is* serve's pool: its keys are taken from ``schema.POOL`` (same kinds, and defaults
from ``model.PoolConfig``), so an unset response timeout is serve's 30 s and ``[proxy.health]``
or ``[proxy.outlier]`` accept exactly what ``[pools.X.health]`` and ``[pools.X.outlier]`` do.

Checks that involve several keys (a distribution's own keys, backend names in the timeline)
live in ``scenario.py``.
"""

from __future__ import annotations

from typing import Any

from lbctl.balancing import ALGORITHMS
from lbctl.config import schema as serve
from lbctl.config.kinds import (
    MAX_WORKERS, Bool, Choice, Duration, FilePath, HashKey, Int, Invalid, Kind, ListOf, Name, Number, Str,
)
from lbctl.config.schema import Section
from lbctl.units import DURATION_EXPECTED, parse_duration

DISTRIBUTIONS = ("exponential", "constant", "uniform", "lognormal", "empirical")
# How a backend fails: refuse a connection, reset it before answering, never answer, answer
# a 5xx, or answer slowly.
FAULTS = ("refuse", "reset", "blackhole", "error", "slow")
# Timeline events: the faults, plus down/up (failing until health checks notice) and recover.
# "fail" is the older spelling of "error".
EVENTS = ("down", "up", *FAULTS, "recover", "fail")
ARRIVALS = ("poisson", "uniform")
LOG_FORMATS = ("auto", "lbctl", "nginx", "haproxy")


class Durations(Kind):
    """A non-empty array of durations; repeats are allowed (they are samples)."""

    expected = f"a non-empty array, each {DURATION_EXPECTED}"

    def parse(self, value: Any) -> tuple[float, ...]:
        if not isinstance(value, list) or not value:
            raise Invalid(self.expected)
        try:
            return tuple(parse_duration(v) for v in value)
        except ValueError:
            raise Invalid(self.expected) from None


class Names(Kind):
    """One backend name, or an array of them."""

    expected = "a backend name or an array of backend names"

    def parse(self, value: Any) -> tuple[str, ...]:
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v for v in items):
            raise Invalid(self.expected)
        return tuple(items)


Fraction = Number(min=0, max=1)

# Arrival rates a simulation can hold: slower than one request in 1000 s, virtual times grow
# so large that a millisecond no longer adds to them in a double; faster than a billion a
# second is not a pool. A load is a fraction of the capacity; 1000 is a thousandfold overload.
MIN_RATE, MAX_RATE, MAX_LOAD = 0.001, 1e9, 1000.0

SERVICE = Section(
    dict,
    dist=Choice(DISTRIBUTIONS),
    mean=Duration(positive=True),
    p99=Duration(positive=True),
    min=Duration(),
    max=Duration(positive=True),
    file=FilePath("samples file (one duration per line)"),
    values=Durations(),
)

# A way of failing, from the start (``[[backends]] failure = {...}``) or from a time on
# (``[[timeline]]``).
FAILURE = Section(
    dict,
    mode=Choice(FAULTS, required=True),
    fraction=Fraction,               # share of attempts affected; default 1
    latency=Duration(),              # refuse, reset, error: how soon the failure comes back
    factor=Number(positive=True),    # slow: service takes this many times longer
)

BACKENDS = Section(
    dict,
    name=Name(),
    count=Int(min=1, max=100_000),
    concurrency=Int(min=1),
    service=SERVICE,
    speed=Number(positive=True),
    weight=serve.BACKEND.fields["weight"],
    backup=Bool(),
    failure=FAILURE,
)

EVENT = Section(
    dict,
    at=Duration(required=True),
    backend=Names(required=True),
    event=Choice(EVENTS, required=True),
    mode=Choice(("refuse", "reset", "blackhole", "error")),   # down: how it fails
    factor=Number(positive=True),
    fraction=Fraction,
    latency=Duration(),
)

WORKLOAD = Section(
    dict,
    arrivals=Choice(ARRIVALS),
    rate=Number(min=MIN_RATE, max=MAX_RATE,
                expected=f"a number of requests per second from {MIN_RATE:g} to {MAX_RATE:g}"),
    load=Number(positive=True, max=MAX_LOAD,
                expected=f"a fraction of the capacity above 0, at most {MAX_LOAD:g}"),
    requests=Int(min=1),
    duration=Duration(positive=True),
    keys=Int(min=1),
    replay=FilePath("access log (lbctl JSON, nginx or HAProxy)"),
    format=Choice(LOG_FORMATS),
    log_format=Str(expected="an nginx log_format string, like '$remote_addr [$time_local] "
                            "\"$request\" $status $request_time $upstream_response_time'"),
    speedup=Number(positive=True),
    key=HashKey(),
)

# Serve's pool keys that mean something in virtual time (names, kinds and defaults from
# schema.POOL and model.PoolConfig), plus ``timeout``: a shorthand for timeouts.response.
PROXY = Section(
    dict,
    timeout=Duration(positive=True),
    # serve's worker processes, each balancing with its own pool (serve's [server] workers)
    workers=Int(min=1, max=MAX_WORKERS),
    **{key: serve.POOL.fields[key] for key in (
        "hash_key", "retries", "retry_on", "slow_start", "panic_threshold", "ewma_decay",
        "timeouts", "health", "outlier")},
)

CLIENT = Section(dict, timeout=Duration(positive=True))

SCENARIO = Section(
    dict, extra=("backends", "timeline"),
    seed=Int(min=0),
    algorithms=ListOf(Choice(ALGORITHMS)),
    config=FilePath("serve config file"),
    pool=Name(expected="the name of a pool in that config"),
    workload=WORKLOAD,
    proxy=PROXY,
    client=CLIENT,
)
