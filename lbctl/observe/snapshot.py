"""The ``/stats`` document: a plain, JSON-ready view of every pool and backend."""

from __future__ import annotations

import time

from lbctl import __version__


def snapshot(server, *, started_at: float) -> dict:
    runtime = server.runtime
    now = server.loop.time()
    pools = []
    for name, state in runtime.pools.items():
        pool = state.pool
        backends = []
        for b in pool.backends:
            progress = pool.slow_start_progress(b)
            backends.append({
                "name": b.name,
                "url": b.url,
                "state": b.state if progress is None else "slow_start",
                "slow_start_progress": progress,
                "backup": b.backup,
                "weight": b.weight,
                "effective_weight": b.effective_weight,
                "inflight": b.inflight,
                "requests": b.started,
                "failures": b.failures,
                "ewma": b.ewma_cost(now, pool.ewma_decay),
            })
        pools.append({"name": name, "algorithm": state.config.algorithm, "mode": pool.mode,
                      "backends": backends})
    return {
        "version": __version__,
        "uptime": time.time() - started_at,
        "config": runtime.config.path,
        "loaded_at": runtime.loaded_at,
        "pools": pools,
    }
