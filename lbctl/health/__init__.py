"""Health: deciding which backends deserve traffic, from probes and from real traffic.

Two sources feed one decision (the pool's eligibility = healthy AND admin enabled AND not
ejected):

    state.py    the rise/fall state machine; ``observe`` says whether the verdict flipped
    active.py   background HTTP/TCP probes per pool, spread over the interval, jittered;
                a flip calls ``pool.set_healthy`` and logs one line with the reason; what
                is known of each backend (verdict, last probe, counts) is a ``BackendHealth``
    passive.py  outlier detection: the proxy and the simulator report every attempt's
                ``Outcome`` into the pool's ``OutcomeSink`` (both from ``lbctl.balancing``);
                consecutive failures eject a backend for a growing time
    report.py   the report behind ``lbctl check``: every backend probed once (a pool's
                discovery resolved first, the shared store probed beside), judged,
                reported for cron and monitoring (plugin status line, JSON, Prometheus
                textfile, state file)
    render.py   that report as a table for people (rich)

The probe itself (``active.probe``) is shared by ``serve`` and ``check``, so both judge a
backend by the same rules. Health builds on ``balancing``, ``config`` and ``discovery``
only: the proxy reports into it, the serve root runs it.
"""
