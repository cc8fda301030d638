"""The admin API: a small aiohttp app beside the proxy, on its own (loopback) address.

``api`` serves ``GET /stats`` (the ``observe.snapshot`` document), ``GET /metrics``
(Prometheus text, see ``metrics``) and the operator actions on backends (disable, enable,
drain, weight). It runs in the proxy's event loop and only reads live state or calls the
pool's own state-changing methods, so an action takes effect on the next request. What it
reads is a ``Served`` instance (``served.py``: the runtime, the observer, the health
checker), which the serve root (``lbctl.serve.Instance``) provides. ``client`` is what
``lbctl stats`` and ``lbctl backend`` use to talk to it.
"""
