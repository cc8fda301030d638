"""Results: flat records turned into per-algorithm summaries, series over time and confidence.

Latency percentiles are nearest-rank over every request, errors included at the moment the
client got its error (a timed-out request counts at its timeout, so timeouts are not hidden).
``share`` is a backend's part of all attempts sent; ``utilization`` its busy time during the
arrival window divided by concurrency times that window; ``fairness`` is Jain's index over the
utilizations (1 = perfectly even, 1/n = one backend does everything); ``max_mean_load`` is the
largest utilization over the mean one. ``ejections`` counts how many times passive ejection
took each backend out (table and CSV only: ``--json`` keeps the README's shape).
``statuses`` counts requests by what the client got: a status class (``2xx``, ``5xx``) or
``none`` (the client gave up first).

With several seeds, ``combine`` turns one result per seed into means with 95% confidence
intervals (Student's t over the seeds: each seed is an independent replication of the whole
run, so the spread between seeds is the honest measure of noise).

``series`` cuts a run into intervals by arrival time: requests per second, p50/p99, errors
and each backend's share of the attempts sent in that interval.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Sequence

from lbctl.simulate.driver import CLIENT_STATUS, OK, OUTCOME_NAMES, Records

PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999))
CAUSES = OUTCOME_NAMES[1:]          # every way a request can fail


@dataclass(frozen=True)
class BackendResult:
    name: str
    requests: int
    share: float
    utilization: float
    ejections: int = 0                    # times passive ejection took it out


@dataclass(frozen=True)
class Interval:
    """A 95% confidence interval: ``mean`` +/- ``half`` (``half`` None: one run only)."""
    mean: float
    half: float | None = None

    @property
    def low(self) -> float:
        return self.mean - (self.half or 0.0)

    @property
    def high(self) -> float:
        return self.mean + (self.half or 0.0)

    def overlaps(self, other: "Interval") -> bool:
        return self.low <= other.high and other.low <= self.high


@dataclass(frozen=True)
class AlgorithmResult:
    algorithm: str
    requests: int
    latency: dict[str, float]             # mean, p50, p90, p99, p999, max (seconds)
    errors: int
    errors_by_cause: dict[str, int]       # CAUSES
    retries: int
    backends: tuple[BackendResult, ...]
    fairness: float
    max_mean_load: float
    statuses: dict[str, int] = field(default_factory=dict)      # 2xx, 5xx, none
    seeds: int = 1
    label: str = ""                       # --compare: which config this is ("" otherwise)
    # With several seeds: confidence intervals of the means above (latency keys, "errors",
    # and "share:<backend>").
    ci: dict[str, Interval] = field(default_factory=dict)

    @property
    def ejections(self) -> int:
        return sum(b.ejections for b in self.backends)

    def interval(self, name: str) -> Interval:
        """A measure with its confidence interval: a latency key, "errors" or
        "share:<backend>"."""
        if name in self.ci:
            return self.ci[name]
        if name == "errors":
            return Interval(float(self.errors))
        if name.startswith("share:"):
            target = name[6:]
            return Interval(next(b.share for b in self.backends if b.name == target))
        return Interval(self.latency[name])

    def to_json(self) -> dict:
        """The README's shape, exactly (plus ``ci95`` with several seeds)."""
        doc = {"algorithm": self.algorithm,
               "latency": {k: round(v, 6) for k, v in self.latency.items()},
               "errors": self.errors,
               "backends": [{"name": b.name, "requests": b.requests,
                             "share": round(b.share, 6), "utilization": round(b.utilization, 6)}
                            for b in self.backends],
               "fairness": round(self.fairness, 6)}
        if self.seeds > 1:
            doc["ci95"] = {k: round(v.half or 0.0, 6) for k, v in self.ci.items()}
        return doc


def percentile(sorted_values, p: float) -> float:
    """Nearest rank: the smallest value with at least ``p`` of the values at or below it."""
    if not sorted_values:
        return 0.0
    k = max(math.ceil(p * len(sorted_values)) - 1, 0)
    return sorted_values[k]


def jain(values) -> float:
    """Jain's fairness index (sum x)^2 / (n sum x^2); 1.0 for an empty or all-zero input."""
    values = list(values)
    square_sum = sum(v * v for v in values)
    if not values or square_sum == 0:
        return 1.0
    return sum(values) ** 2 / (len(values) * square_sum)


def utilizations(rec: Records) -> list[float]:
    """Each backend's busy fraction over [0, horizon]: busy time over concurrency x horizon."""
    if rec.horizon <= 0:
        return [0.0] * len(rec.backends)
    # Clamped: the busy time is a difference of sums, so rounding can step just outside.
    return [min(max(b / (c * rec.horizon), 0.0), 1.0) for b, c in zip(rec.busy, rec.concurrency)]


def status_class(code: int) -> str:
    """What the client got, as a class: 2xx, 5xx, or none (it gave up first)."""
    status = CLIENT_STATUS[code]
    return f"{status // 100}xx" if status else "none"


def summarize(rec: Records) -> AlgorithmResult:
    lat = sorted(rec.latency)
    n = len(lat)
    latency = {"mean": math.fsum(lat) / n if n else 0.0}
    for name, p in PERCENTILES:
        latency[name] = percentile(lat, p)
    latency["max"] = lat[-1] if n else 0.0
    status = rec.status
    errors = n - status.count(OK)
    causes = {name: status.count(code + 1) for code, name in enumerate(CAUSES)}
    statuses: dict[str, int] = {}
    for code in range(len(OUTCOME_NAMES)):
        c = status.count(code)
        if c:
            cls = status_class(code)
            statuses[cls] = statuses.get(cls, 0) + c
    # Extra attempts; a request refused before any attempt counts none.
    retries = sum(a - 1 for a in rec.attempts if a > 1)
    counts = [b.started for b in rec.backends]
    total = sum(counts) or 1
    util = utilizations(rec)
    mean_util = sum(util) / len(util) if util else 0.0
    ejections = [0] * len(rec.backends)
    for _, i, _ in rec.ejections:
        ejections[i] += 1
    backends = tuple(BackendResult(b.name, c, c / total, u, e)
                     for b, c, u, e in zip(rec.backends, counts, util, ejections))
    return AlgorithmResult(rec.algorithm, n, latency, errors, causes, retries, backends,
                           jain(util), max(util) / mean_util if mean_util else 1.0, statuses)


# Student's t at 0.975 for 1..30 degrees of freedom; 1.96 beyond.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def confidence(values: Sequence[float]) -> Interval:
    """Mean and 95% confidence half-width of independent replications."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean)
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    return Interval(mean, t * math.sqrt(var / n))


def combine(runs: Sequence[AlgorithmResult]) -> AlgorithmResult:
    """One algorithm's results over several seeds: means, with 95% confidence intervals."""
    first = runs[0]
    if len(runs) == 1:
        return first
    k = len(runs)
    ci: dict[str, Interval] = {}
    latency = {}
    for name in first.latency:
        ci[name] = confidence([r.latency[name] for r in runs])
        latency[name] = ci[name].mean
    ci["errors"] = confidence([float(r.errors) for r in runs])
    backends = []
    for i, b in enumerate(first.backends):
        share = confidence([r.backends[i].share for r in runs])
        ci[f"share:{b.name}"] = share
        backends.append(BackendResult(
            b.name, round(sum(r.backends[i].requests for r in runs) / k), share.mean,
            sum(r.backends[i].utilization for r in runs) / k,
            round(sum(r.backends[i].ejections for r in runs) / k)))
    causes = {c: round(sum(r.errors_by_cause[c] for r in runs) / k) for c in first.errors_by_cause}
    classes = {c for r in runs for c in r.statuses}
    statuses = {c: round(sum(r.statuses.get(c, 0) for r in runs) / k) for c in sorted(classes)}
    return AlgorithmResult(
        first.algorithm, round(sum(r.requests for r in runs) / k), latency,
        round(ci["errors"].mean), causes, round(sum(r.retries for r in runs) / k),
        tuple(backends), sum(r.fairness for r in runs) / k,
        sum(r.max_mean_load for r in runs) / k, statuses, seeds=k, label=first.label, ci=ci)


# ---- series over time ---------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One algorithm's run cut into intervals of ``step`` seconds (by arrival time)."""
    algorithm: str
    step: float
    start: list[float]
    requests: list[int]
    p50: list[float | None]
    p99: list[float | None]
    errors: list[int]
    attempts: list[list[int]]            # per interval, per backend: attempts sent
    names: tuple[str, ...]

    @property
    def rate(self) -> list[float]:
        return [n / self.step for n in self.requests]

    def shares(self, k: int) -> list[float]:
        row = self.attempts[k]
        total = sum(row)
        return [a / total if total else 0.0 for a in row]


NICE_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0,
              30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


# A series holds one interval per step of the run; a run of years in milliseconds would be
# billions of them. A given ``--interval`` finer than this is widened.
MAX_INTERVALS = 10_000


def series_step(span: float, intervals: int = 50) -> float:
    """A round interval length giving about ``intervals`` intervals over ``span`` seconds
    (whole hours past the longest round step, so a long run still gets ``intervals``)."""
    target = span / intervals if span > 0 else 1.0
    if target > NICE_STEPS[-1]:
        return math.ceil(target / NICE_STEPS[-1]) * NICE_STEPS[-1]
    return next(s for s in NICE_STEPS if s >= target)


def bounded_step(step: float, span: float) -> float:
    """``step``, or a wider round one when ``step`` would cut ``span`` into more than
    ``MAX_INTERVALS`` intervals."""
    if span / step > MAX_INTERVALS - 1:
        return max(step, series_step(span, MAX_INTERVALS - 1))
    return step


def series(rec: Records, step: float) -> Series:
    n = len(rec.backends)
    count = max(int(rec.horizon // step) + 1, 1)
    buckets: list[list[float]] = [[] for _ in range(count)]
    errors = [0] * count
    attempts = [[0] * n for _ in range(count)]
    last = count - 1
    for t, lat, code, first in zip(rec.arrival, rec.latency, rec.status, rec.first):
        j = int(t // step)
        if j > last:
            j = last
        buckets[j].append(lat)
        if code:
            errors[j] += 1
        if first >= 0:
            attempts[j][first] += 1
    for t, i in rec.retries:
        j = min(int(t // step), last)
        attempts[j][i] += 1
    p50, p99 = [], []
    for values in buckets:
        values.sort()
        p50.append(percentile(values, 0.5) if values else None)
        p99.append(percentile(values, 0.99) if values else None)
    return Series(rec.algorithm, step, [k * step for k in range(count)],
                  [len(v) for v in buckets], p50, p99, errors, attempts,
                  tuple(b.name for b in rec.backends))


def cdf(rec: Records, points: int = 120) -> list[tuple[float, float]]:
    """The latency distribution as (latency, fraction of requests at or below it): half the
    points evenly over the fractions, half evenly on a log scale of the tail (1 - p) down to
    one request, so both the body and the tail are drawn; one point per distinct rank."""
    lat = sorted(rec.latency)
    n = len(lat)
    if not n:
        return []
    half = points // 2
    fractions = [k / half for k in range(half)]
    fractions += [1.0 - (1.0 / n) ** (k / half) for k in range(1, half + 1)]
    ranks = sorted({min(max(math.ceil(p * n) - 1, 0), n - 1) for p in fractions} | {n - 1})
    return [(lat[r], (r + 1) / n) for r in ranks]


# ---- machine-readable forms -------------------------------------------------------------


def to_json(seed: int, results: list[AlgorithmResult], seeds: Sequence[int] = ()) -> str:
    doc: dict = {"seed": seed, "requests": results[0].requests if results else 0,
                 "results": [r.to_json() for r in results]}
    if len(seeds) > 1:
        doc["seeds"] = list(seeds)
    return json.dumps(doc, indent=1)


CSV_FIELDS = ["algorithm", "backend", "requests", "share", "utilization", "latency_mean",
              "latency_p50", "latency_p90", "latency_p99", "latency_p999", "latency_max",
              "errors", "retries", "fairness", "max_mean_load", "ejections"]


def to_csv(results: list[AlgorithmResult]) -> str:
    """One row per algorithm and backend; the algorithm's summary repeats on each of its rows.
    ``ejections`` is the backend's own count (0 when passive ejection is off)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in results:
        lat = [f"{r.latency[k]:.6f}" for k in ("mean", "p50", "p90", "p99", "p999", "max")]
        for b in r.backends:
            w.writerow([r.algorithm, b.name, b.requests, f"{b.share:.6f}",
                        f"{b.utilization:.6f}", *lat, r.errors, r.retries, f"{r.fairness:.6f}",
                        f"{r.max_mean_load:.6f}", b.ejections])
    return out.getvalue()


def series_csv(all_series: Sequence[Series]) -> str:
    """One row per algorithm and interval: start and end (seconds of virtual time),
    requests, requests/s, p50 and p99 (seconds; empty with no request), errors, then each
    backend's share of the attempts sent in the interval (``share_<backend>``)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    names = all_series[0].names if all_series else ()
    w.writerow(["algorithm", "start", "end", "requests", "rate", "p50", "p99", "errors",
                *(f"share_{name}" for name in names)])
    for s in all_series:
        for k, start in enumerate(s.start):
            w.writerow([s.algorithm, f"{start:g}", f"{start + s.step:g}", s.requests[k],
                        f"{s.requests[k] / s.step:.3f}",
                        "" if s.p50[k] is None else f"{s.p50[k]:.6f}",
                        "" if s.p99[k] is None else f"{s.p99[k]:.6f}", s.errors[k],
                        *(f"{x:.6f}" for x in s.shares(k))])
    return out.getvalue()
