"""``lbctl demo``: built-in backends, the proxy in front of them, and traffic to watch.

The demo backends are small aiohttp apps with distinct personalities (fast, slower, flaky),
so the balancing and the health story are visible without any server of the user's own.
The proxy, its health checks and admin API run as ``lbctl serve`` runs them (an
``lbctl.serve.Instance``), and the dashboard is the one ``lbctl stats`` draws.

    backends.py  the demo backends
    traffic.py   gentle, bounded traffic to every route
    run.py       all of it together, with the live dashboard
"""
