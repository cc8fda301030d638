"""lbctl: an HTTP load balancer and small API gateway that you can simulate before you deploy.

The packages, lowest layer first. A package imports only those above it in this list,
except that health and gateway, and simulate and proxy, are peers that know nothing of each
other (``tests/test_layering.py`` holds every import to this)::

    balancing/  pools of backends, the algorithms that rank them, attempt outcomes (pure
                code: the clock and the random generator are passed in)
    config/     TOML file -> typed, validated, immutable objects; key material loaded
    discovery/  DNS, SRV and file sources: who is in each pool between reloads (decided
                here; the serve root runs the watchers, the data plane applies the result)
    health/     active probes, passive outlier ejection and ``lbctl check``: they write
                the health and ejection state the pools read
    gateway/    per-request decisions before balancing: client address, rate limits,
                API keys, JWTs, allow-lists; the listener's TLS
    simulate/   ``lbctl simulate``: the balancers driven in virtual time
    proxy/      the data plane of one process: the HTTP/1.1 reverse proxy
    observe/    accounting, the access log, explained decisions, ``/stats``, dashboards
    admin/      the admin API (``/stats``, ``/metrics``, backend actions) and its client
    serve/      the composition root of ``lbctl serve``: proxy, health checks, discovery,
                observer and admin API wired together; signals
    demo/       ``lbctl demo``: demo backends, traffic and the live dashboard
    cli/        thin click commands: parse, call one library function, render

``units``, ``errors``, ``exitcodes`` and ``uri`` (the request-target grammar) are shared by
all. The live proxy and the simulator
both drive the objects in ``balancing``; neither carries its own copy of an algorithm.
"""

__version__ = "0.1.0"
