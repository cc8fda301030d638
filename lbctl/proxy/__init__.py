"""The data plane: an HTTP/1.1 reverse proxy on asyncio protocols and httptools (llhttp).

Why protocol-level: an aiohttp server plus ``ClientSession`` proxies about 8% of nginx's
throughput; bare protocols with httptools on uvloop reach over 60%. So requests and
responses flow through ``Protocol`` callbacks, bytes are written straight from one transport
to the other, and back-pressure pauses the reading side when the writing side's buffer fills.

One request, followed through the modules (client -> exchange -> forward -> upstream)::

    client.py    ClientConnection: parses requests into exchanges within a per-turn budget,
                 queues them in order and starts each from a callback (no task per
                 connection or request); TLS handshakes, flow control, lingering close, timers
    exchange.py  Exchange: everything about one request and its response, the response
                 callbacks that relay it to the client, and the request body (``Body``)
    forward.py   the request's journey: route, gateway, select, attempts, retries, the status
                 on failure; each attempt ends with one ``Outcome``
    upstream.py  UpstreamConnection (parses a response into its exchange) and the idle pools,
                 which make new connections and keep why the last one failed (``last_error``)
    framing.py   heads across the proxy: hop-by-hop stripping, X-Forwarded-*, and the
                 response-framing decision (a pure function)
    refusals.py  what the proxy refuses beyond the parser: framing, Host, the target grammar
    paths.py     the canonical path, and the other readings backends make of it ([paths])
    router.py    host/path routing, first match wins; a path read two ways is refused
    runtime.py   the live state (config, router, pools, gateway, idle pools) a SIGHUP swaps
    members.py   a pool's membership decided elsewhere (discovery, the admin API), applied to
                 the live pool: survivors keep their state, newcomers ramp, the gone drain
    deadline.py  per-connection deadlines in slots of one shared timer, none per request
    trim.py      the freed heap given back to the system after a wave of connections closed
    hooks.py     what the data plane reports to (``Hooks``: per attempt, per request, explain)
    server.py    ProxyServer: the listener, its connections, the runtime swap and the drain

This package is the data plane of one process and nothing more: health checks, discovery,
the admin API, the access log and signals are wired around it by ``lbctl.serve``. aiohttp is used
around the data plane (admin API, health probes, demo backends), not in it.
"""
