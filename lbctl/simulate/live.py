"""The live twin: a scenario built from a running serve's ``GET /stats``.

It reads the pool (``--pool``, else the only one, else the busiest), each backend's weight
and backup flag, its measured attempt durations over the last minute
(``latency_histogram``) and the current rate, and simulates every algorithm on that
traffic. When the serve config named in ``/stats`` is readable here, its pool settings
(retries, retry_on, timeouts, health, outlier, slow start) are used; otherwise serve's
defaults. Nothing is ever sent to the admin API but one GET: the operator decides.

Assumptions, stated in the scenario's title and the README:

* **Service times** are drawn from each backend's histogram, uniformly within each bucket
  (a backend without traffic in the window takes the pool's histogram). Measured times
  include any queueing inside the backend.
* **Concurrency.** Each backend serves ``concurrency`` requests at once (``--concurrency``);
  the default is twice its mean in-flight count by Little's law (its rate times its mean
  time), and at least 4, so that at today's load the simulated queue adds little to times
  that already hold the backend's own queueing.
* **Arrivals** are Poisson at the pool's current rate (attempts per second over the window).
* Backends that are down, ejected, disabled or draining are left out (they take no traffic
  now).
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from dataclasses import replace

from lbctl.balancing import ALGORITHMS
from lbctl.balancing.backend import MAX_WEIGHT, MIN_WEIGHT, checked_weight
from lbctl.errors import UserError
from lbctl.exitcodes import Exit
from lbctl.simulate.scenario import (BackendSpec, Scenario, Service, Workload, proxy_settings)

FIVE = ("round_robin", "random", "least_conn", "p2c", "ewma")
MAX_ANSWER = 64 * 1024 * 1024        # bytes of /stats read at most
MAX_BUCKETS = 1000                   # histogram buckets (serve's have 20 or so)
MAX_FIGURE = 1e15                    # counts and seconds beyond this are not measurements
MAX_SAMPLES = 5000                   # per backend: the histogram spread into this many values
RUN_SECONDS = 120.0                  # virtual time simulated at the measured rate
MIN_REQUESTS, MAX_REQUESTS = 20_000, 200_000


def fetch_stats(url: str, token: str | None, timeout: float = 5.0) -> dict:
    """``GET /stats?history=0`` from the admin API at ``url``; a ``UserError`` (exit 1)
    says why when it cannot be had."""
    base = url if "://" in url else f"http://{url}"
    target = base.rstrip("/") + "/stats?history=0"
    request = urllib.request.Request(target, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = resp.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as exc:
        hint = "; give --token (or LBCTL_ADMIN_TOKEN)" if exc.code == 401 else ""
        raise UserError(f"--from-admin {url}: the admin API answered {exc.code}{hint}",
                        exit_code=Exit.RUNTIME) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"--from-admin {url}: cannot reach the admin API: {reason}",
                        exit_code=Exit.RUNTIME) from None
    try:
        if len(body) > MAX_ANSWER:
            raise ValueError("too large")
        doc = json.loads(body)
        doc["pools"]
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        raise UserError(f"--from-admin {url}: expected the /stats document of lbctl serve, "
                        f"found something else", exit_code=Exit.RUNTIME) from None
    where = unusable(doc)
    if where is not None:
        raise UserError(f"--from-admin {url}: expected the /stats document of lbctl serve, "
                        f"found {where}", exit_code=Exit.RUNTIME)
    return doc


def _number(value, *, integer: bool = False) -> bool:
    """A finite number >= 0 (an integer if asked), never a JSON boolean."""
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return False
    return math.isfinite(value) and 0 <= value <= MAX_FIGURE


def unusable(doc) -> str | None:
    """What in a /stats document the live twin cannot use (a key path and what is wrong
    with it), or None. Every value read below is checked here first: the document comes
    over the network, from whatever answers at that address."""
    if not isinstance(doc, dict) or not isinstance(doc.get("pools"), list):
        return "no list of pools"
    for key in ("uptime", "window"):
        if doc.get(key) is not None and not _number(doc[key]):
            return f"{key}: not a number of seconds"
    if doc.get("config") is not None and not isinstance(doc["config"], str):
        return "config: not a path"
    for i, pool in enumerate(doc["pools"]):
        where = f"pools[{i}]"
        if not isinstance(pool, dict) or not isinstance(pool.get("name"), str):
            return f"{where}: not a pool with a name"
        if pool.get("algorithm") is not None and not isinstance(pool["algorithm"], str):
            return f"{where}.algorithm: not a name"
        if not isinstance(pool.get("backends") or [], list):
            return f"{where}.backends: not a list"
        for j, b in enumerate(pool.get("backends") or []):
            at = f"{where}.backends[{j}]"
            if not isinstance(b, dict) or not isinstance(b.get("name"), str):
                return f"{at}: not a backend with a name"
            if b.get("weight") is not None:
                try:
                    checked_weight(b["weight"])
                except ValueError:
                    return f"{at}.weight: not a weight from {MIN_WEIGHT:g} to {MAX_WEIGHT:g}"
            h = b.get("latency_histogram")
            if h is None:
                continue
            if not isinstance(h, dict):
                return f"{at}.latency_histogram: not an object"
            bounds, counts = h.get("le") or [], h.get("counts") or []
            if not isinstance(bounds, list) or not isinstance(counts, list) or \
                    len(bounds) != len(counts) or len(bounds) > MAX_BUCKETS:
                return f"{at}.latency_histogram: not bounds and counts of one length"
            if not all(_number(c, integer=True) for c in counts):
                return f"{at}.latency_histogram.counts: not counts of requests"
            finite = [x for x in bounds[:-1]] + ([bounds[-1]] if bounds and
                                                 bounds[-1] is not None else [])
            if not all(_number(x) for x in finite) or finite != sorted(finite):
                return f"{at}.latency_histogram.le: not increasing bounds in seconds"
    return None


def scenario_from_admin(url: str, token: str | None, pool: str | None = None, *,
                        concurrency: int | None = None) -> Scenario:
    return scenario_from_stats(fetch_stats(url, token), url, pool, concurrency=concurrency)


def samples_of(histogram: dict | None, limit: int = MAX_SAMPLES) -> list[float]:
    """A histogram's attempts as values spread evenly within their buckets (the +Inf
    bucket at the last bound)."""
    if not histogram:
        return []
    bounds, counts = histogram.get("le") or [], histogram.get("counts") or []
    total = sum(counts)
    if not total:
        return []
    scale = min(1.0, limit / total)
    out: list[float] = []
    low = 0.0
    for bound, count in zip(bounds, counts):
        n = round(count * scale) if count else 0
        if count and not n:
            n = 1
        high = bound if bound is not None else low
        for j in range(n):
            out.append(max(low + (high - low) * (j + 0.5) / n, 1e-6))
        if bound is not None:
            low = bound
    return out


def scenario_from_stats(doc: dict, url: str, pool: str | None = None, *,
                        concurrency: int | None = None) -> Scenario:
    pools = doc.get("pools") or []
    if not pools:
        raise UserError(f"--from-admin {url}: the running serve has no pools")
    names = [p.get("name") for p in pools]
    if pool is not None:
        chosen = next((p for p in pools if p.get("name") == pool), None)
        if chosen is None:
            raise UserError(f"--pool: expected one of the running serve's pools "
                            f"({', '.join(map(str, names))}), found {pool!r}")
    elif len(pools) == 1:
        chosen = pools[0]
    else:
        chosen = max(pools, key=lambda p: sum(
            sum((b.get("latency_histogram") or {}).get("counts") or [])
            for b in p.get("backends") or []))
    uptime = float(doc.get("uptime") or 0.0)
    window = float(doc.get("window") or 60.0)
    span = min(window, uptime) if uptime > 0 else window
    live = [b for b in chosen.get("backends") or [] if b.get("state") in ("up", "slow_start")]
    left_out = [b.get("name") for b in chosen.get("backends") or [] if b not in live]
    if not live:
        raise UserError(f"--from-admin {url}: no backend of pool {chosen.get('name')!r} is up")
    pooled: list[float] = []
    per: list[list[float]] = []
    for b in live:
        values = samples_of(b.get("latency_histogram"))
        per.append(values)
        pooled.extend(values)
    if not pooled:
        raise UserError(f"--from-admin {url}: pool {chosen.get('name')!r} served no request "
                        f"in the last {span:g}s (or its metrics are off): there is no traffic "
                        f"to simulate")
    attempts = [sum((b.get("latency_histogram") or {}).get("counts") or []) for b in live]
    rate = sum(attempts) / span if span > 0 else float(sum(attempts))
    specs = []
    for b, values, count in zip(live, per, attempts):
        values = values or pooled
        mean = math.fsum(values) / len(values)
        c = concurrency or max(4, math.ceil(2 * (count / span) * mean))
        specs.append(BackendSpec(str(b.get("name")),
                                 Service("empirical", mean=mean, values=tuple(values)),
                                 concurrency=c, weight=float(b.get("weight") or 1.0),
                                 backup=bool(b.get("backup"))))
    proxy, config_path = _pool_settings(doc, chosen.get("name"))
    requests = int(min(max(rate * RUN_SECONDS, MIN_REQUESTS), MAX_REQUESTS))
    configured = chosen.get("algorithm")
    if configured not in ALGORITHMS:
        configured = None               # another version's name: nothing to compare with
    algorithms = FIVE if configured in FIVE or configured is None else (*FIVE, configured)
    if configured == "consistent_hash" and proxy.hash_key is None:
        proxy = replace(proxy, hash_key="path")
    title = (f"live twin of pool {chosen.get('name')!r} at {url}: {len(specs)} backends, "
             f"{rate:,.1f} req/s measured over {span:g}s")
    if left_out:
        title += f" ({', '.join(map(str, left_out))} not up, left out)"
    return Scenario(backends=tuple(specs), workload=Workload(rate=rate, requests=requests),
                    algorithms=algorithms, proxy=proxy, title=title, configured=configured,
                    config_path=config_path, pool_name=chosen.get("name"))


def _pool_settings(doc: dict, pool: str | None):
    """The pool's settings from the config file /stats names, when it is readable here."""
    path = doc.get("config")
    if isinstance(path, str) and os.path.isfile(path) and pool:
        from lbctl.config.loader import load_config
        try:
            config = load_config(path)
        except UserError:
            return proxy_settings(), path
        if pool in config.pools:
            return config.pools[pool], path
    return proxy_settings(), path if isinstance(path, str) else None
