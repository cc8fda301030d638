"""The admin API: a small aiohttp app beside the proxy, on its own (loopback) address.

``api`` serves ``GET /stats`` (the ``observe.snapshot`` document), ``GET /metrics``
(Prometheus text, see ``metrics``) and the operator actions on backends (disable, enable,
drain, weight). It runs in the proxy's event loop and only reads live state or calls the
pool's own state-changing methods, so an action takes effect on the next request.
``client`` is what ``lbctl stats`` and ``lbctl backend`` use to talk to it.
"""
