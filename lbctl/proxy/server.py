"""The data plane of one process: the listening socket, its connections, the live runtime.

``ProxyServer`` owns what outlives a single connection: the current ``Runtime`` (swapped
whole by ``reload``), the listener's TLS, the set of open client connections (for the
connection caps and for draining), request-id generation, and a once-a-second sweep that
closes expired idle upstream connections, lets the pools apply what time changed (a ramp
step, an ejection ending) with or without traffic, and drops backends that finished
leaving. It reports to the ``Hooks`` it is given and knows nothing of health checks,
discovery, the admin API, the access log or signals: ``lbctl.serve`` runs those around it.

Membership decided outside (discovery, the admin API's additions and removals) comes in as
data, two ways: ``reload(config, members)`` builds the new runtime from it, and
``set_members(pool, members)`` applies one pool's new list to the live pool
(``proxy/members.py``).

``soon`` runs work later in the same turn of the loop, after every read that turn brought:
each request is parsed in its read and started here, each response relayed in its read and
its attempt ended here. Done in two batches rather than one request at a time, the requests
of a turn reach the backends (and the responses the clients) in a burst of writes, which
wakes each reader once, and the same code runs back to back: about 10% less CPU per request
than doing it all inside each read, measured.

File descriptors: each client connection may need one more for its backend, so the
connection cap is ``max_connections`` or what the open-files limit leaves room for
(``fd_cap``), whichever is lower. Past the cap a client gets a 503 at once, rather than the
kernel refusing, or libuv silently dropping, connections the process cannot hold; running
out anyway (descriptors held elsewhere) is a 503 as well (``Outcome.LOCAL``). Both are logged
once per burst.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import resource
import socket
from typing import Mapping, Sequence

from lbctl.config.model import BackendConfig, Config
from lbctl.errors import Burst, UserError
from lbctl.exitcodes import Exit
from lbctl.gateway.store import LocalStore, Store
from lbctl.gateway.tls import Terminator
from lbctl.proxy.client import ClientConnection
from lbctl.proxy.deadline import Timers
from lbctl.proxy.framing import RequestIds
from lbctl.proxy.hooks import Hooks, NoHooks
from lbctl.proxy.members import Change, apply_members, sweep
from lbctl.proxy.runtime import Runtime, build_runtime
from lbctl.proxy.trim import Trimmer

log = logging.getLogger("lbctl.proxy")

# Descriptors kept aside from client and upstream connections: the listener, the admin API
# and its clients, log files, uvloop's own, and slack for health probes (one more per backend).
FD_RESERVE = 64


def fds_needed(config: Config) -> int:
    """Open files for ``max_connections`` clients, an upstream connection each, and the rest."""
    backends = sum(len(pool.backends) for pool in config.pools.values())
    return 2 * config.limits.max_connections + FD_RESERVE + backends


def fd_cap(config: Config) -> int | None:
    """Client connections the current open-files limit has room for (None: no limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    backends = sum(len(pool.backends) for pool in config.pools.values())
    return max((soft - FD_RESERVE - backends) // 2, 1)


class ProxyServer:
    def __init__(self, config: Config, *, loop: asyncio.AbstractEventLoop | None = None,
                 rng: random.Random | None = None, clock=None, hooks: Hooks | None = None,
                 store: Store | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.rng = rng or random.Random()
        self.clock = clock or self.loop.time      # injected by tests (rate limits, ramps)
        # Where rate-limit buckets live: handed in by whoever runs this data plane (and
        # started and closed there), this process's memory when nobody does.
        self.store: Store = store if store is not None else LocalStore()
        self.runtime: Runtime = build_runtime(config, clock=self.clock, rng=self.rng,
                                              store=self.store)
        tls = config.listen.tls                   # loaded once already by the config loader
        self.tls = Terminator(tls.cert, tls.key, tls.min_version) if tls is not None else None
        self.observer: Hooks = hooks if hooks is not None else NoHooks()
        self.connections: set[ClientConnection] = set()
        # Memory back to the system after a wave of connections has closed (trim.py).
        self.trimmer = Trimmer(self.loop, self.connections.__len__)
        self.per_client: dict[str, int] = {}          # open connections per client address
        self.request_ids = RequestIds()
        self.default_host = str(config.listen.address).encode()
        self.upgrades = frozenset(u.encode() for u in config.listen.upgrades)
        self.max_connections, self.fd_bound = self._cap(config)
        self.over_cap = Burst(self.loop.time)          # refusals at the connection cap
        self.exhausted = Burst(self.loop.time)         # local resource failures
        self.listener: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task | None = None
        self._drained: asyncio.Event | None = None    # set when draining and none are left
        self._soon: list = []             # fn, arg, fn, arg...: run by _run_soon this turn
        self.timers = Timers(self.loop)   # the connections' deadlines (deadline.py)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port), useful when the config asked for port 0."""
        sock = self.listener.sockets[0]
        return sock.getsockname()[:2]

    async def start(self, *, sock: socket.socket | None = None, port: int | None = None,
                    reuse_port: bool = False) -> None:
        """Listen; a port in use is a ``UserError`` (exit 1).

        One of several workers of an instance either listens on a socket it inherited
        (``sock``) or binds the config's address itself with ``reuse_port`` (the kernel
        spreads connections over the workers), on ``port`` when the config said 0."""
        addr = self.runtime.config.listen.address
        try:
            # No ssl= here: a TLS connection's handshake runs inside ClientConnection, so it
            # is counted, capped and timed from the accept (see client.py).
            if sock is not None:
                self.listener = await self.loop.create_server(
                    lambda: ClientConnection(self), sock=sock, backlog=1024)
            else:
                self.listener = await self.loop.create_server(
                    lambda: ClientConnection(self), addr.host,
                    addr.port if port is None else port, reuse_address=True,
                    reuse_port=reuse_port or None, backlog=1024)
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else \
                (exc.strerror or str(exc))
            raise UserError(f"cannot listen on {addr}: {reason}", exit_code=Exit.RUNTIME) from None
        self._sweeper = self.loop.create_task(self._sweep())

    def reload(self, config: Config,
               members: Mapping[str, Sequence[BackendConfig]] | None = None,
               store: Store | None = None) -> Runtime:
        """Swap in a validated config (and a new rate-limit store, when [store] changed);
        requests in flight finish under the old one. ``members``: each pool's whole
        membership, where it is more than the config file's backends (what discovery and
        operators decided)."""
        old = self.runtime
        if config.listen.address != old.config.listen.address:
            log.warning("listen address changed to %s: takes effect after a restart; "
                        "still listening on %s", config.listen.address, old.config.listen.address)
        if self.tls is not None and config.listen.tls is not None:
            tls = config.listen.tls
            if self.tls.reload(tls.cert, tls.key, tls.min_version):
                log.info("TLS certificate reloaded from %s", tls.cert,
                         extra={"event": "tls_reloaded", "path": tls.cert})
        elif (self.tls is None) != (config.listen.tls is None):
            log.warning("listen.tls changed: takes effect after a restart")
        if store is not None:
            self.store = store
        self.runtime = build_runtime(config, clock=self.clock, rng=self.rng, previous=old,
                                     members=members, store=self.store)
        self.max_connections, self.fd_bound = self._cap(config)
        self.upgrades = frozenset(u.encode() for u in config.listen.upgrades)
        return self.runtime

    @staticmethod
    def _cap(config: Config) -> tuple[int, bool]:
        """The connection cap, and whether the open-files limit (not max_connections) set it."""
        configured = config.limits.max_connections
        room = fd_cap(config)
        if room is not None and room < configured:
            return room, True
        return configured, False

    def refused_over_cap(self) -> None:
        """A connection got 503 at the cap: said once per burst, with what set the cap."""
        if self.over_cap.new():
            if self.fd_bound:
                soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
                why = f"the open-files limit ({soft}) has room for no more"
            else:
                why = "max_connections"
            log.warning("connection limit reached: %d client connections open (%s); new "
                        "connections get 503 until some close", len(self.connections), why)

    def out_of_resources(self, exc: OSError, doing: str) -> None:
        """The process itself ran out of something (EMFILE...): said once per burst. It is
        never a backend's failure; the client gets a 503."""
        if self.exhausted.new():
            log.error("out of resources while %s: %s (errno %s); clients get 503 (raise the "
                      "open-files limit, or lower max_connections)", doing,
                      exc.strerror or exc, errno.errorcode.get(exc.errno, exc.errno))

    def set_members(self, pool: str, members: Sequence[BackendConfig]) -> Change:
        """Make the live pool ``pool`` hold exactly ``members`` (survivors keep their state,
        newcomers ramp, the gone leave: ``proxy/members.py``). Before ``start`` the pool takes
        them as at startup, with no ramp. An unknown pool changes nothing."""
        state = self.runtime.pools.get(pool)
        if state is None:
            return Change()
        change = apply_members(state, members, self.runtime.idle,
                               starting=self.listener is None)
        inflight = {b.name: b.inflight for b in state.leaving}
        for name in change.left:
            if name in inflight:
                log.info("pool %s: backend %s leaves: no new requests; %d in flight finish "
                         "first", pool, name, inflight[name])
        return change

    def soon(self, fn, arg) -> None:
        """Call ``fn(arg)`` after this turn's reads (one loop callback for the whole batch)."""
        soon = self._soon
        if not soon:
            self.loop.call_soon(self._run_soon)
        soon.append(fn)
        soon.append(arg)

    def _run_soon(self) -> None:
        batch, self._soon = self._soon, []
        for i in range(0, len(batch), 2):
            batch[i](batch[i + 1])

    def forget(self, conn: ClientConnection) -> None:
        """A client connection closed."""
        if conn in self.connections:
            self.connections.discard(conn)
            counts = self.per_client
            left = counts[conn.peer] - 1
            if left > 0:
                counts[conn.peer] = left
            else:
                del counts[conn.peer]
            self.trimmer.closed(len(self.connections))
            if not self.connections and self._drained is not None:
                self._drained.set()

    def stop_listening(self) -> None:
        """Close the listening socket: new connections are refused from here on."""
        if self.listener is not None:
            self.listener.close()

    def start_drain(self) -> None:
        """Stop accepting; each connection finishes its request in flight, then closes."""
        self.stop_listening()
        self._drained = asyncio.Event()
        for conn in list(self.connections):
            conn.start_drain()

    async def wait_drained(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the connections to finish; abort the rest. True when
        every connection finished on its own."""
        if self._drained is None:
            self.start_drain()
        if self.connections:
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        clean = not self.connections
        self.abort_all()
        return clean

    def abort_all(self) -> int:
        """Close every client connection now, whatever it is doing; how many there were."""
        connections = list(self.connections)
        for conn in connections:
            if conn.transport is not None:
                conn.transport.abort()
        return len(connections)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.listener is not None:
            self.listener.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for idle in self.runtime.idle.values():
            idle.close_all()
        await asyncio.sleep(0)
        self.timers.close()
        self.trimmer.cancel()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = self.loop.time()
            for idle in self.runtime.idle.values():
                idle.sweep(now)
            for name, state in self.runtime.pools.items():
                state.pool.advance()    # ramps and ejections end on time, traffic or not
                if state.leaving:
                    for b in sweep(state, self.runtime.idle):
                        log.info("pool %s: backend %s left (its last request in flight "
                                 "ended)", name, b.name)
