"""The ``/stats`` document: a plain, JSON-ready view of every pool and backend.

Times are seconds (latencies) or Unix epoch seconds (``loaded_at``, probe ``time``).
Each backend says where it came from (``source``: static, dns, srv, file or admin); a pool
with discovery has a ``discovery`` object (its watcher's status, from the ``Discovery`` the
serve root runs), and backends that left the pool with requests still in flight are listed
with state ``leaving`` until those end.
Counters count attempts on a backend since it joined (they survive reloads); ``latency``
percentiles and ``history`` cover the last ``window`` seconds. What the active health
checker knows of a backend (``HealthChecks.of``: the last probe, with ok, time, status,
error and latency, and the probe counts) and the passive ejections counted on it are shown
once there is something to show; so is ``last_error``, why the last connect or TLS handshake
to the backend failed (kept by the proxy's idle pool, cleared by the next good connect).
"""

from __future__ import annotations

import os
import time

from typing import TYPE_CHECKING

from lbctl import __version__
from lbctl.observe.accounting import WINDOW, BackendStats

if TYPE_CHECKING:
    from lbctl.discovery.service import Discovery
    from lbctl.gateway.store import Store
    from lbctl.health.active import HealthChecks
    from lbctl.observe.observer import Observer
    from lbctl.proxy.runtime import PoolRuntime, Runtime
    from lbctl.proxy.upstream import IdlePool


def backend_state(pool, b) -> tuple[str, float | None]:
    """(state, slow-start progress): up, down, ejected, disabled, draining or slow_start."""
    pool.advance()          # a ramp or an ejection may have ended with no request since
    progress = pool.slow_start_progress(b)
    state = b.state
    if progress is not None and state == "up":
        return "slow_start", progress
    return state, None


def snapshot(runtime: Runtime, observer: Observer | None, health: HealthChecks | None,
             now: float, *, discovery: Discovery | None = None, started_at: float | None = None,
             history: bool = True) -> dict:
    """The document for ``runtime``'s pools; ``now`` is the clock the observer counts in."""
    if started_at is None:
        started_at = observer.started_at if observer is not None else time.time()
    pools = []
    for name, state in runtime.pools.items():
        pool = state.pool
        backends = [backend_doc(pool, b, now, history, observer=observer, health=health,
                                source=source_of(state, b), upstream=runtime.idle.get(b))
                    for b in pool.backends]
        # Backends that left with requests in flight, until the last one ends.
        backends += [backend_doc(pool, b, now, history, observer=observer, health=health,
                                 source=source_of(state, b), leaving=True,
                                 upstream=runtime.idle.get(b))
                     for b in state.leaving]
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
        status = discovery.status(name) if discovery is not None else None
        if status is not None:
            doc["discovery"] = status.as_dict()
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
    gateway = runtime.gateway
    if gateway is not None:
        doc["store"] = store_doc(gateway.store)
    if observer is not None:
        front = observer.frontend
        doc["frontend"] = {"requests": front.requests, "responses": front.classes(),
                           "client_aborts": front.aborted}
    return doc


def source_of(state: PoolRuntime, b) -> str:
    """Where ``b`` came from: static, dns, srv, file or admin (the settings it was built from)."""
    bcfg = state.configs.get(b)
    return bcfg.source if bcfg is not None else "static"


def store_doc(store: Store) -> dict:
    """Where rate-limit buckets live and whether it answers; the URL never has a password."""
    config = store.config
    doc = {"backend": config.backend, "up": store.up, "errors": store.errors}
    if config.backend != "local":
        doc.update(url=config.url, on_error=config.on_error)
    return doc


def backend_doc(pool, b, now: float, history: bool = True, *, observer: Observer | None = None,
                health: HealthChecks | None = None, source: str = "static",
                leaving: bool = False, upstream: IdlePool | None = None) -> dict:
    """One backend's entry; ``upstream`` is its idle pool in the proxy's runtime (where a
    failed connect leaves ``last_error``)."""
    state, progress = backend_state(pool, b)
    if leaving:
        state, progress = "leaving", None
    counted = observer.stats.get(b) if observer is not None else None
    stats: BackendStats = counted or BackendStats()
    checked = health.of(b) if health is not None else None
    probe = checked.last if checked is not None else None
    probes = checked.counts() if checked is not None and (checked.ok or checked.failed) \
        else None
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
        "requests": stats.requests if counted else b.started,
        "responses": stats.classes(),
        "errors": stats.errors if counted else b.failures,
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
        "latency_histogram": stats.histogram(now),
        "ewma": b.ewma_cost(pool.clock(), pool.ewma_decay),
        "last_probe": dict(probe) if probe is not None else None,
        "probes": probes,
        "ejections": b.ejections or None,        # null until the first passive ejection
        # Why the last connect or TLS handshake failed; None once one succeeds.
        "last_error": upstream.last_error if upstream is not None else None,
    }
    if history:
        doc["history"] = stats.series(now)
    return doc
