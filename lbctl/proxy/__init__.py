"""The data plane: an HTTP/1.1 reverse proxy on asyncio protocols and httptools (llhttp).

Why protocol-level: an aiohttp server plus ``ClientSession`` proxies about 8% of nginx's
throughput; bare protocols with httptools on uvloop reach over 60%. So requests and
responses flow through ``Protocol`` callbacks, bytes are written straight from one transport
to the other, and back-pressure pauses the reading side when the writing side's buffer fills.

    client.py    ClientConnection: parses requests, runs one handler task per connection
    forward.py   one request's journey: route, select, connect, retry, status on failure
    upstream.py  UpstreamConnection and the per-backend pools of idle keep-alive connections
    framing.py   request/response heads: hop-by-hop stripping, X-Forwarded-*, re-derived framing
    router.py    host/path routing, first match wins
    runtime.py   the live state (config, router, pools) that a SIGHUP swaps atomically
    members.py   a pool's membership changed between reloads (discovery, the admin API):
                 survivors keep their state, newcomers ramp, the gone drain, then go
    server.py    listening sockets, signals, graceful drain

aiohttp is used around the data plane (admin API, health probes, demo backends), not in it.
"""
