"""Health: deciding which backends deserve traffic, from probes and from real traffic.

Two sources feed one decision (the pool's eligibility = healthy AND admin enabled AND not
ejected):

    state.py    the rise/fall state machine; ``observe`` says whether the verdict flipped
    active.py   background HTTP/TCP probes per pool, spread over the interval, jittered;
                a flip calls ``pool.set_healthy`` and logs one line with the reason
    passive.py  outlier detection: the proxy reports every attempt's outcome into an
                ``OutcomeSink``; consecutive failures eject a backend for a growing time
    check.py    ``lbctl check``: every backend probed once (a pool's discovery resolved
                first), judged, reported for cron and monitoring (plugin status line, JSON,
                Prometheus textfile, state file)

The probe itself (``active.probe``) is shared by ``serve`` and ``check``, so both judge a
backend by the same rules.
"""
