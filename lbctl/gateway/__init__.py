"""The gateway: what the proxy decides about a request before it picks a backend.

``forward.start`` routes a request, then calls ``Gateway.admit`` once; everything here
runs between routing and pool selection, per route, in this order:

    client_ip.py   the client's address: the peer's, or read from X-Forwarded-For/Forwarded
                   only when the peer is a trusted proxy
    rate_limit.py  token buckets (GCRA) keyed by client address or a header (before
                   authentication, so failed attempts count too), or by consumer (right
                   after it); the RateLimit header fields
    store.py       where the buckets live: this process (``local``), or
    redis_store.py Redis, shared by every process that uses it, with on_error when it is down
    api_key.py     named API keys, compared as SHA-256 digests in constant time
    jwt_auth.py    JWTs (PyJWT) checked against keys loaded with the config, never fetched
    authorize.py   per-route allow-lists: consumers, claims, methods, client networks
    policy.py      the steps above in order for one route; 401/403/429 refusals; what the
                   forwarded request carries (X-Consumer, claim headers, X-Forwarded-For)
    tls.py         the listener's TLS, its certificate reloaded on SIGHUP

Key material (digests, HMAC secrets, public keys, certificates) is loaded and checked when
the config is (``lbctl.config.keys`` and ``lbctl.config.tls``), so a bad file is a ``lbctl
validate`` error, never a failure at a request. The gateway reads a request through the
``policy.Request`` protocol (the proxy's ``Exchange`` provides it) and is told the peer
address and whether the listener speaks TLS: it never sees a connection.
"""
