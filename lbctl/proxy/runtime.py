"""The live state a request needs: config, router and pools, swapped whole on reload.

A request takes the ``Runtime`` current when it starts and keeps it to the end, so a
SIGHUP never changes the rules under a request in flight. Backends that survive a reload
(same pool, same name and address) keep their ``Backend`` object: in-flight counts, EWMA,
health and their idle upstream connections carry over.
"""

from __future__ import annotations

import random
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from lbctl.balancing import Backend, Pool, make_pool
from lbctl.config.model import BackendConfig, Config, PoolConfig
from lbctl.gateway.policy import Gateway
from lbctl.gateway.tls import client_context
from lbctl.proxy.router import Router
from lbctl.proxy.upstream import IdlePool


class OutcomeSink:
    """Where the proxy reports each attempt's outcome (passive health plugs in here).

    ``outcome`` is one of "ok", "connect", "reset", "timeout", "invalid", "5xx", or "client"
    (the client broke the exchange: a body too large or too slow; not the backend's fault).
    """

    def record(self, backend: Backend, outcome: str) -> None:
        pass


@dataclass
class PoolRuntime:
    config: PoolConfig
    pool: Pool
    key_of: Callable | None       # consistent_hash: request -> key (None: no key)
    outcomes: OutcomeSink = OutcomeSink()
    # The settings of each member by name (static, discovered or added at run time: their
    # ``source`` says which); ``config.backends`` holds only the config file's.
    members: dict[str, BackendConfig] = field(default_factory=dict)
    # Backends that left the pool with requests still in flight: no new ones reach them; they
    # are dropped (and their connections closed) once the last one ends (proxy/members.py).
    leaving: list[Backend] = field(default_factory=list)


class Runtime:
    def __init__(self, config: Config, pools: dict[str, PoolRuntime], loaded_at: float) -> None:
        self.config = config
        self.router = Router(config.routes)
        self.pools = pools
        self.loaded_at = loaded_at
        self.gateway: Gateway | None = None

    def backends(self):
        for state in self.pools.values():
            yield from state.pool.backends


def build_runtime(config: Config, *, clock: Callable[[], float], rng: random.Random,
                  previous: Runtime | None = None,
                  members: Mapping[str, Sequence[BackendConfig]] | None = None) -> Runtime:
    """Pools for ``config``, reusing live ``Backend`` objects from ``previous``. ``members``
    gives a pool's whole membership (static, discovered and added at run time) where it is
    more than the config file's backends."""
    pools: dict[str, PoolRuntime] = {}
    for name, pcfg in config.pools.items():
        old_state = previous.pools.get(name) if previous else None
        old = old_state.pool.by_name if old_state else {}
        wanted = members.get(name, pcfg.backends) if members is not None else pcfg.backends
        backends = [_backend(bcfg, pcfg, old.get(bcfg.name)) for bcfg in wanted]
        if old_state is not None and old_state.config.algorithm == pcfg.algorithm \
                and old_state.config.slow_start == pcfg.slow_start \
                and old_state.config.panic_threshold == pcfg.panic_threshold \
                and old_state.config.ewma_decay == pcfg.ewma_decay:
            pool = old_state.pool
            pool.set_backends(backends)
        else:
            pool = make_pool(name, backends, pcfg.algorithm, rng=rng, clock=clock,
                             ewma_decay=pcfg.ewma_decay, slow_start=pcfg.slow_start,
                             panic_threshold=pcfg.panic_threshold)
            if old_state is not None:
                pool.set_backends(backends)        # survivors keep state; newcomers ramp
        leaving = [b for b in old_state.leaving if b.inflight] if old_state else []
        for old_backend in old.values():
            if pool.by_name.get(old_backend.name) is not old_backend:
                retire(old_backend)
                if old_backend.inflight:
                    leaving.append(old_backend)
        pools[name] = PoolRuntime(pcfg, pool, key_getter(pcfg.hash_key),
                                  _outcome_sink(pool, pcfg, clock),
                                  {b.name: b for b in wanted}, leaving)
    runtime = Runtime(config, pools, time.time())
    runtime.gateway = Gateway(config, clock, previous.gateway if previous else None)
    return runtime


def _outcome_sink(pool: Pool, pcfg: PoolConfig, clock: Callable[[], float]) -> OutcomeSink:
    """Passive ejection when the pool has ``[outlier]``; otherwise outcomes go nowhere, and
    an ejection left over from a previous config ends now rather than at its time."""
    if pcfg.outlier is not None:
        from lbctl.health.passive import OutlierDetector   # health builds on this module
        return OutlierDetector(pool, pcfg.outlier, clock=clock)
    for b in pool.backends:
        b.extra.pop("outlier", None)
        if b.ejected_until:
            pool.eject(b, 0.0)
    return OutcomeSink()


def retire(b: Backend) -> None:
    """``b`` left its pool: close its idle connections, and those its requests in flight
    give back when they end."""
    idle = b.extra.get("idle")
    if idle is not None:
        idle.max_idle = 0
        idle.close_all()


def _backend(bcfg: BackendConfig, pcfg: PoolConfig, old: Backend | None) -> Backend:
    same_address = old is not None and (old.scheme, old.host, old.port) == \
        (bcfg.scheme, bcfg.host, bcfg.port)
    if same_address:
        b = old
        b.weight = bcfg.weight
        b.backup = bcfg.backup
    else:
        if old is not None and old.extra.get("idle") is not None:
            old.extra["idle"].close_all()
        b = Backend(bcfg.name, bcfg.url, weight=bcfg.weight, backup=bcfg.backup,
                    scheme=bcfg.scheme, host=bcfg.host, port=bcfg.port)
    context = upstream_ssl(bcfg, pcfg)
    idle = b.extra.get("idle")
    # A discovered https backend's host is an address: verify the name it was found under.
    server_name = bcfg.server_name if context is not None else None
    if idle is None:
        b.extra["idle"] = IdlePool(b, max_idle=pcfg.max_idle_connections,
                                   idle_timeout=pcfg.idle_timeout, ssl=context,
                                   server_name=server_name)
    else:
        idle.max_idle, idle.idle_timeout = pcfg.max_idle_connections, pcfg.idle_timeout
        idle.ssl = context          # a changed ca applies to new connections
        idle.server_name = server_name
    return b


def upstream_ssl(bcfg: BackendConfig, pcfg: PoolConfig) -> ssl.SSLContext | None:
    """https backends are verified (the backend's ca, else the pool's, else the system
    store) unless tls_insecure_skip_verify is set on the backend or, failing that, the pool."""
    if bcfg.scheme != "https":
        return None
    insecure = bcfg.tls_insecure_skip_verify
    if insecure is None:
        insecure = pcfg.tls_insecure_skip_verify
    return client_context(bcfg.ca or pcfg.ca, insecure)


def key_getter(spec: str | None) -> Callable | None:
    """Compile ``hash_key`` once: a function (conn, request) -> key or None."""
    if spec is None:
        return None
    if spec == "ip":         # the resolved client address when the gateway resolved one
        return lambda conn, req: req.admitted.client if req.admitted else conn.peer
    if spec == "path":
        return lambda conn, req: req.path
    kind, _, name = spec.partition(":")
    lower = name.lower().encode("latin-1")
    if kind == "header":
        return lambda conn, req: req.header(lower)
    if kind == "cookie":
        wanted = name.encode("latin-1")

        def cookie(conn, req):
            raw = req.header(b"cookie")
            if raw is None:
                return None
            for part in raw.split(b";"):
                key, _, value = part.strip().partition(b"=")
                if key == wanted:
                    return value
            return None
        return cookie
    raise ValueError(f"unknown hash_key {spec!r}")
