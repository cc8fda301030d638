"""The ``/stats`` document: a plain, JSON-ready view of every pool and backend.

Times are seconds (latencies) or Unix epoch seconds (``loaded_at``, probe ``time``).
Each backend says where it came from (``source``: static, dns, srv, file or admin); a pool
with discovery has a ``discovery`` object (its watcher's status), and backends that left the
pool with requests still in flight are listed with state ``leaving`` until those end.
Counters count attempts on a backend since it joined (they survive reloads); ``latency``
percentiles and ``history`` cover the last ``window`` seconds. A backend's health checker
may leave ``extra["probe"]`` (last probe: ok, time, status, error, latency), and the
counters ``extra["probes"]`` ({"ok": n, "failed": n}) and ``extra["ejections"]``; they are
shown when present.
"""

from __future__ import annotations

import os
import time

from lbctl import __version__
from lbctl.observe.accounting import WINDOW, BackendStats


def backend_state(pool, b) -> tuple[str, float | None]:
    """(state, slow-start progress): up, down, ejected, disabled, draining or slow_start."""
    progress = pool.slow_start_progress(b)
    state = b.state
    if progress is not None and state == "up":
        return "slow_start", progress
    return state, None


def snapshot(server, *, started_at: float | None = None, history: bool = True) -> dict:
    runtime = server.runtime
    observer = getattr(server, "observer", None)
    if started_at is None:
        started_at = observer.started_at if observer is not None else time.time()
    now = server.loop.time()
    pools = []
    watchers = getattr(getattr(server, "members", None), "watchers", {})
    for name, state in runtime.pools.items():
        pool = state.pool
        members = getattr(state, "members", {})
        backends = [backend_doc(pool, b, now, history, source=_source(members, b))
                    for b in pool.backends]
        # Backends that left with requests in flight, until the last one ends.
        backends += [backend_doc(pool, b, now, history, source=None, leaving=True)
                     for b in getattr(state, "leaving", ())]
        doc = {
            "name": name,
            "algorithm": state.config.algorithm,
            "mode": pool.mode,
            "eligible": pool.eligible_count(),
            "requests": sum(b["requests"] for b in backends),
            "errors": sum(b["errors"] for b in backends),
            "retries": sum(b["retries"] for b in backends),
            "backends": backends,
        }
        if name in watchers:
            doc["discovery"] = watchers[name].status.as_dict()
        pools.append(doc)
    doc = {
        "version": __version__,
        "pid": os.getpid(),
        "uptime": time.time() - started_at,
        "started_at": started_at,
        "config": runtime.config.path,
        "loaded_at": runtime.loaded_at,
        "metrics": observer.metrics if observer is not None else False,
        "window": WINDOW,
        "pools": pools,
    }
    if observer is not None:
        front = observer.frontend
        doc["frontend"] = {"requests": front.requests, "responses": front.classes(),
                           "client_aborts": front.aborted}
    return doc


def _source(members: dict, b) -> str:
    bcfg = members.get(b.name)
    return bcfg.source if bcfg is not None else "static"


def backend_doc(pool, b, now: float, history: bool = True, *, source: str | None = "static",
                leaving: bool = False) -> dict:
    state, progress = backend_state(pool, b)
    if leaving:
        state, progress = "leaving", None
    stats: BackendStats = b.extra.get("stats") or BackendStats()
    probe = b.extra.get("probe")
    doc = {
        "name": b.name,
        "url": b.url,
        "source": source,
        "state": state,
        "slow_start_progress": progress,
        "healthy": b.healthy,
        "admin": b.admin.value,
        "backup": b.backup,
        "weight": b.weight,
        "effective_weight": b.effective_weight,
        "inflight": b.inflight,
        "requests": stats.requests if b.extra.get("stats") else b.started,
        "responses": stats.classes(),
        "errors": stats.errors if b.extra.get("stats") else b.failures,
        "failures": b.failures,
        "connect_errors": stats.connect_errors,
        "timeouts": stats.timeouts,
        "resets": stats.resets,
        "invalid": stats.invalid,
        "client_aborts": stats.client_aborts,
        "retries": stats.retries,
        "bytes_in": stats.bytes_in,
        "bytes_out": stats.bytes_out,
        "latency": stats.percentiles(now),
        "ewma": b.ewma_cost(pool.clock(), pool.ewma_decay),
        "last_probe": dict(probe) if isinstance(probe, dict) else None,
        "probes": dict(b.extra["probes"]) if isinstance(b.extra.get("probes"), dict) else None,
        "ejections": b.extra.get("ejections"),
    }
    if history:
        doc["history"] = stats.series(now)
    return doc
