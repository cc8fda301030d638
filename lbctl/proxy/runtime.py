"""The live state a request needs: config, router and pools, swapped whole on reload.

A request takes the ``Runtime`` current when it starts and keeps it to the end, so a
SIGHUP never changes the rules under a request in flight. Backends that survive a reload
(same pool, same name and address) keep their ``Backend`` object: in-flight counts, EWMA,
health and their idle upstream connections carry over, and so do the pools' passive-health
failure streaks.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

from lbctl.balancing import DISCARD, Backend, OutcomeSink, Pool, make_pool
from lbctl.balancing.attempts import AttemptPolicy
from lbctl.config.model import BackendConfig, Config, PoolConfig
from lbctl.config.tls import backend_context
from lbctl.gateway.policy import Gateway
from lbctl.gateway.store import Store
from lbctl.health.passive import TRUNCATIONS, OutlierDetector
from lbctl.proxy.router import Router
from lbctl.proxy.upstream import IdlePool

log = logging.getLogger("lbctl")


@dataclass
class PoolRuntime:
    config: PoolConfig
    pool: Pool
    key_of: Callable | None       # consistent_hash: exchange -> key (None: no key)
    outcomes: OutcomeSink = DISCARD   # where each attempt's outcome goes (passive health)
    policy: AttemptPolicy | None = None   # retries: the rule lbctl simulate shares; built once
    # The settings each backend was built from, for the pool's members and the leaving ones:
    # static, discovered or added at run time (``source`` says which). ``config.backends``
    # holds only the config file's.
    configs: dict[Backend, BackendConfig] = field(default_factory=dict)
    # Backends that left the pool with requests still in flight: no new ones reach them; they
    # are dropped (and their connections closed) once the last one ends (``proxy/members.py``).
    leaving: list[Backend] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.policy is None:
            self.policy = AttemptPolicy.of(self.config)


class Runtime:
    """One config's live state. ``idle`` maps every backend (leaving ones included) to its
    idle upstream connections; it is the proxy's own, built here and carried over by the next
    ``build_runtime``."""

    def __init__(self, config: Config, pools: dict[str, PoolRuntime],
                 idle: dict[Backend, IdlePool], gateway: Gateway, loaded_at: float) -> None:
        self.config = config
        self.router = Router(config.routes, config.paths)
        self.pools = pools
        self.idle = idle
        self.gateway = gateway
        self.loaded_at = loaded_at

    def backends(self) -> Iterator[Backend]:
        """Every backend requests may be on: the pools' members, then the leaving ones."""
        for state in self.pools.values():
            yield from state.pool.backends
        for state in self.pools.values():
            yield from state.leaving


def build_runtime(config: Config, *, clock: Callable[[], float], rng: random.Random,
                  previous: Runtime | None = None,
                  members: Mapping[str, Sequence[BackendConfig]] | None = None,
                  store: Store | None = None) -> Runtime:
    """Pools for ``config``, reusing live ``Backend`` objects (and their idle connections)
    from ``previous``; rate limits in ``store`` (default: this process's memory). ``members``
    gives a pool's whole membership (static, discovered, added at run time) where it is more
    than the config file's backends; backends ``previous`` had leaving stay leaving, and so do
    those that leave now with requests in flight."""
    pools: dict[str, PoolRuntime] = {}
    old_idle = previous.idle if previous is not None else {}
    idle: dict[Backend, IdlePool] = {}
    for name, pcfg in config.pools.items():
        old_state = previous.pools.get(name) if previous else None
        old = old_state.pool.by_name if old_state else {}
        wanted = members.get(name, pcfg.backends) if members is not None else pcfg.backends
        backends = [_backend(bcfg, old.get(bcfg.name), name) for bcfg in wanted]
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
        by_name = {bcfg.name: bcfg for bcfg in wanted}
        configs = {}
        for b in pool.backends:
            configs[b] = by_name[b.name]
            idle[b] = _idle_pool(b, configs[b], pcfg, old_idle.get(b))
        leaving = []
        if old_state is not None:
            # ``old`` is the previous membership even when ``pool`` is the same object.
            gone = [b for b in old.values() if pool.by_name.get(b.name) is not b]
            for b in old_state.leaving + gone:
                if b.inflight and b not in configs:
                    # Still answering requests: its connections close as they end.
                    leaving.append(b)
                    configs[b] = old_state.configs[b]
                    idle[b] = retire(old_idle[b])
        pools[name] = PoolRuntime(pcfg, pool, key_getter(pcfg.hash_key),
                                  _outcome_sink(pool, pcfg, clock,
                                                old_state.outcomes if old_state else None),
                                  configs=configs, leaving=leaving)
    for b, connections in old_idle.items():
        if idle.get(b) is not connections:
            retire(connections)                # a backend gone, or moved to a new address
    gateway = Gateway(config, clock, previous.gateway if previous else None, store)
    return Runtime(config, pools, idle, gateway, time.time())


def _outcome_sink(pool: Pool, pcfg: PoolConfig, clock: Callable[[], float],
                  previous: OutcomeSink | None) -> OutcomeSink:
    """Passive ejection by the pool's ``[outlier]``, or, without one, for truncated responses
    only (``passive.TRUNCATIONS``); failure streaks are carried over. An ejection left over
    from a removed ``[outlier]`` ends now rather than at its time."""
    policy = pcfg.outlier if pcfg.outlier is not None else TRUNCATIONS
    old = previous if isinstance(previous, OutlierDetector) else None
    if pcfg.outlier is None and old is not None and old.config is not TRUNCATIONS:
        for b in pool.backends:
            if b.ejected_until:
                pool.eject(b, 0.0)
    return OutlierDetector(pool, policy, clock=clock, previous=old)


def retire(idle: IdlePool) -> IdlePool:
    """A backend left its pool: close its idle connections now, and those its requests in
    flight give back when they end."""
    idle.max_idle = 0
    idle.close_all()
    return idle


def _backend(bcfg: BackendConfig, old: Backend | None, pool_name: str = "") -> Backend:
    weight = _reloaded_weight(bcfg, old, pool_name)
    if old is not None and (old.scheme, old.host, old.port) == (bcfg.scheme, bcfg.host, bcfg.port):
        b = old
        b.weight = weight
        b.backup = bcfg.backup
    else:
        b = Backend(bcfg.name, bcfg.url, weight=weight, backup=bcfg.backup,
                    scheme=bcfg.scheme, host=bcfg.host, port=bcfg.port)
    b.config_weight = bcfg.weight
    return b


def _idle_pool(b: Backend, bcfg: BackendConfig, pcfg: PoolConfig, old: IdlePool | None) -> IdlePool:
    """The backend's idle connections: the previous ones while its address is unchanged."""
    context = backend_context(bcfg, pcfg)
    # A discovered https backend's host is an address: verify the name it was found under.
    server_name = bcfg.server_name if context is not None else None
    if old is None or old.address != (b.scheme, b.host, b.port):
        return IdlePool(b, max_idle=pcfg.max_idle_connections, idle_timeout=pcfg.idle_timeout,
                        ssl=context, server_name=server_name, pool=pcfg.name)
    old.max_idle, old.idle_timeout = pcfg.max_idle_connections, pcfg.idle_timeout
    old.ssl = context          # a changed ca applies to new connections
    old.server_name = server_name
    return old


def _reloaded_weight(bcfg: BackendConfig, old: Backend | None, pool_name: str) -> float:
    """An operator's weight (admin API, ``lbctl backend weight``) survives a reload while the
    file's weight for that backend is unchanged; a changed file weight wins, and says so."""
    if old is None or old.weight == old.config_weight:
        return bcfg.weight
    if bcfg.weight == old.config_weight:
        return old.weight
    new = "the config file's new weight" if bcfg.source == "static" else \
        f"the new weight from {bcfg.source}"
    log.warning("pool %s: backend %s weight %g (set by an operator) replaced by %s %g",
                pool_name, bcfg.name, old.weight, new, bcfg.weight)
    return bcfg.weight


def key_getter(spec: str | None) -> Callable | None:
    """Compile ``hash_key`` once: a function (exchange) -> key or None.

    An empty value (``X-User:`` with nothing after it, ``Cookie: sid=``, ``sid=""``) is no
    key at all: used as one, every such request would land on the same backend."""
    if spec is None:
        return None
    if spec == "ip":         # the resolved client address when the gateway resolved one
        return lambda exchange: exchange.admitted.client if exchange.admitted \
            else exchange.conn.peer
    if spec == "path":
        return lambda exchange: exchange.path
    kind, _, name = spec.partition(":")
    lower = name.lower().encode("latin-1")
    if kind == "header":
        def header(exchange):
            value = exchange.header(lower)
            return value.strip() or None if value is not None else None
        return header
    if kind == "cookie":
        wanted = name.encode("latin-1")

        def cookie(exchange):
            raw = exchange.header(b"cookie")
            if raw is None:
                return None
            for part in raw.split(b";"):
                key, _, value = part.strip().partition(b"=")
                if key == wanted and value.strip() not in (b"", b'""'):
                    return value.strip()
            return None
        return cookie
    raise ValueError(f"unknown hash_key {spec!r}")
