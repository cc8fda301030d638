"""Results: flat records turned into per-algorithm summaries, and the machine-readable forms.

Latency percentiles are nearest-rank over every request, errors included at the moment the
client got its error (a timed-out request counts at its timeout, so timeouts are not hidden).
``share`` is a backend's part of all attempts sent; ``utilization`` its busy time during the
arrival window divided by concurrency times that window; ``fairness`` is Jain's index over the
utilizations (1 = perfectly even, 1/n = one backend does everything); ``max_mean_load`` is the
largest utilization over the mean one. ``ejections`` counts how many times passive ejection
took each backend out (table and CSV only: ``--json`` keeps the README's shape).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass

from lbctl.simulate.engine import ERROR_NO_BACKEND, ERROR_TIMEOUT, ERROR_5XX, OK, Records

PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999))


@dataclass(frozen=True)
class BackendResult:
    name: str
    requests: int
    share: float
    utilization: float
    ejections: int = 0                    # times passive ejection took it out


@dataclass(frozen=True)
class AlgorithmResult:
    algorithm: str
    requests: int
    latency: dict[str, float]             # mean, p50, p90, p99, p999, max (seconds)
    errors: int
    errors_by_cause: dict[str, int]       # 5xx, timeout, no_backend
    retries: int
    backends: tuple[BackendResult, ...]
    fairness: float
    max_mean_load: float

    @property
    def ejections(self) -> int:
        return sum(b.ejections for b in self.backends)

    def to_json(self) -> dict:
        """The README's shape, exactly."""
        return {"algorithm": self.algorithm,
                "latency": {k: round(v, 6) for k, v in self.latency.items()},
                "errors": self.errors,
                "backends": [{"name": b.name, "requests": b.requests,
                              "share": round(b.share, 6), "utilization": round(b.utilization, 6)}
                             for b in self.backends],
                "fairness": round(self.fairness, 6)}


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


def summarize(rec: Records) -> AlgorithmResult:
    lat = sorted(rec.latency)
    n = len(lat)
    latency = {"mean": math.fsum(lat) / n if n else 0.0}
    for name, p in PERCENTILES:
        latency[name] = percentile(lat, p)
    latency["max"] = lat[-1] if n else 0.0
    status = rec.status
    errors = n - status.count(OK)
    causes = {"5xx": status.count(ERROR_5XX), "timeout": status.count(ERROR_TIMEOUT),
              "no_backend": status.count(ERROR_NO_BACKEND)}
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
                           jain(util), max(util) / mean_util if mean_util else 1.0)


def to_json(seed: int, results: list[AlgorithmResult]) -> str:
    doc = {"seed": seed, "requests": results[0].requests if results else 0,
           "results": [r.to_json() for r in results]}
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
