"""Observability: what the data plane reports, kept, logged and shown to people.

    observer.py    ``Observer``: the proxy's hooks (``lbctl.proxy.hooks``); per attempt and
                   per request it reads the ``Exchange`` and feeds the accounting and the
                   access log, and it explains decisions on request
    accounting.py  per-backend counters, histogram and sliding window (``BackendStats``, one
                   per backend, kept by the observer); front-end status counts
    access_log.py  one line per request, JSON or combined, redacted, written off the loop
    explain.py     ``X-LB-Decision``: the pool's own choice, traced (``Pool.select(trace=)``)
    snapshot.py    the plain ``GET /stats`` document, from the runtime's pools, the
                   observer's counters and what the health checker knows
    render.py      such a document as rich renderables (pure: only commands print)
    dashboard.py   the live ``lbctl stats`` loop
    events.py      the event log's JSON form

Observe sits above the proxy, health and gateway and reads them; nothing below it imports it.
"""
