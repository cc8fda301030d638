"""Active health checks: background probes of every backend of the pools that have ``[health]``.

One task per backend probes it every ``interval`` (times a random factor within
``JITTER``, so a fleet of balancers does not probe in lockstep). The first round is spread
evenly over one interval, so a pool of 1,000 backends never probes them all at the same
instant. Each result feeds the backend's ``HealthState``; only a *flip* reaches the pool
(``pool.set_healthy``) and the log, as one line with the reason (``status 500``,
``timeout``, ``connection refused``, ``body mismatch``).

Probes run on their own aiohttp session, never on the data plane's connections, and they
only ever go to a configured backend's own address: redirects are not followed (a 3xx is
judged by ``expect_status`` like any other status).

``probe`` is also what ``lbctl check`` runs, so both judge a backend by the same rules.

A probe that cannot even be made because this process ran out of something of its own (file
descriptors, memory, local ports: ``lbctl.errors.local_resource_error``) is no verdict on the
backend: it is logged once per burst and changes neither the health state nor the counts.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import re
import time
from dataclasses import dataclass
from ssl import SSLContext
from typing import TYPE_CHECKING, Callable, Protocol

from lbctl import __version__
from lbctl.balancing import Backend, Pool
from lbctl.errors import Burst, local_resource_error
from lbctl.config.model import Health
from lbctl.config.tls import backend_context, handshake_error
from lbctl.health.state import HealthState

log = logging.getLogger("lbctl.health")

# Each delay is interval x a factor in [1 - JITTER, 1 + JITTER]: enough to break lockstep,
# small enough that "down within fall x interval" still roughly holds.
JITTER = 0.1
# An expect_body regex is searched in at most this much of the body: a health page, not a
# download.
BODY_LIMIT = 64 * 1024
USER_AGENT = f"lbctl-health/{__version__}"


class Target(Protocol):
    """What a probe needs of a backend; ``Backend`` and ``BackendConfig`` both provide it."""
    scheme: str
    host: str
    port: int


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    status: int | None          # HTTP status; None for TCP checks and failures before a response
    latency: float              # seconds from the start of the probe to its verdict
    error: str | None           # why it failed: "status 500", "timeout", "connection refused", ...
    local: bool = False         # not the backend: this process was out of descriptors, memory...

    @property
    def reason(self) -> str:
        if self.error:
            return self.error
        return f"status {self.status}" if self.status is not None else "connected"


def probe_url(target: Target, health: Health) -> "yarl.URL":
    host = f"[{target.host}]" if ":" in target.host else target.host
    # encoded=True: the path was validated at load time and is sent exactly as written.
    import yarl
    return yarl.URL(f"{target.scheme}://{host}:{target.port}{health.path}", encoded=True)


if TYPE_CHECKING:
    import aiohttp
    import yarl

# aiohttp is imported where a probe needs it, not at module load: a proxy without [health]
# tables never pays its ~24 MiB.


def make_session(limit: int = 0) -> aiohttp.ClientSession:
    """A session for probes. A fresh connection per probe (``force_close``): reusing one would
    hide a backend that stopped accepting connections behind a still-open socket."""
    import aiohttp
    connector = aiohttp.TCPConnector(force_close=True, limit=limit)
    return aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT},
                                 auto_decompress=False)


async def probe(target: Target, health: Health, session: aiohttp.ClientSession | None = None, *,
                timeout: float | None = None, ssl: SSLContext | None = None,
                server_name: str | None = None) -> ProbeResult:
    """Probe ``target`` once by ``health``'s rules (``timeout`` overrides ``health.timeout``).
    An https backend is reached with ``ssl`` (``config.tls.backend_context``: its ca, the
    pool's, or the system store) and verified as ``server_name`` (a discovered backend's
    name; None: its host), so a TCP check of it is a TLS handshake too, and a certificate
    the proxy would refuse fails the probe with the reason.
    Never raises for a backend's failure: every way of failing is a ``ProbeResult``."""
    limit = health.timeout if timeout is None else timeout
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        if health.type == "tcp":
            status = await asyncio.wait_for(_tcp(target, ssl, server_name), limit)
            error = None
        else:
            status, error = await asyncio.wait_for(
                _http(target, health, session, ssl, server_name), limit)
    except Exception as exc:   # noqa: BLE001 - every failure is a verdict, not a crash
        local = local_resource_error(exc)
        if local is not None:
            return ProbeResult(False, None, loop.time() - started,
                               f"not probed: {local.strerror or local} (in this process)",
                               local=True)
        return ProbeResult(False, None, loop.time() - started, describe_error(exc))
    return ProbeResult(error is None, status, loop.time() - started, error)


async def _tcp(target: Target, ssl: SSLContext | None = None,
               server_name: str | None = None) -> None:
    _, writer = await asyncio.open_connection(
        target.host, target.port, ssl=ssl,
        server_hostname=server_name if ssl is not None else None)
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return None


async def _http(target: Target, health: Health, session: aiohttp.ClientSession | None,
                ssl: SSLContext | None = None,
                server_name: str | None = None) -> tuple[int, str | None]:
    own = session is None
    if own:
        session = make_session()
    try:
        headers = {"Host": health.host} if health.host else None
        async with session.request(health.method, probe_url(target, health), headers=headers,
                                   allow_redirects=False,
                                   **_tls_options(ssl, server_name)) as resp:
            status = resp.status
            if not any(low <= status <= high for low, high in health.expect_status):
                return status, f"status {status}"
            if health.expect_body is not None:
                body = await _read_limited(resp, BODY_LIMIT)
                if re.search(health.expect_body, body.decode("utf-8", "replace")) is None:
                    return status, "body mismatch"
            return status, None
    finally:
        if own:
            await session.close()


def _tls_options(ssl: SSLContext | None, server_name: str | None) -> dict:
    """aiohttp's request options for an https backend (none for http: its defaults)."""
    if ssl is None:
        return {}
    return {"ssl": ssl, **({"server_hostname": server_name} if server_name else {})}


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await resp.content.read(limit - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def describe_error(exc: BaseException) -> str:
    """A probe failure in the words an operator looks for in a log line."""
    import aiohttp
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        exc = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientSSLError):
        exc = exc.os_error
    tls = handshake_error(exc)
    if tls is not None:
        return tls
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed before a response"
    if isinstance(exc, (aiohttp.ClientResponseError, aiohttp.ClientPayloadError)):
        return "invalid response"
    if isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error
    if isinstance(exc, OSError):
        if exc.errno == errno.ECONNREFUSED or isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if exc.errno == errno.ECONNRESET or isinstance(exc, ConnectionResetError):
            return "connection reset"
        return f"connect failed: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ---- scheduling (pure: the rng is injected) ------------------------------------------------

def first_delays(count: int, interval: float, rng: random.Random) -> list[float]:
    """When each of ``count`` backends gets its first probe: backend i somewhere in the i-th
    slice of one interval, so the first round is spread evenly and never bunched."""
    slot = interval / count if count else interval
    return [slot * (i + rng.random()) for i in range(count)]


def next_delay(interval: float, rng: random.Random) -> float:
    """The gap to a backend's next probe: ``interval`` give or take ``JITTER``."""
    return interval * rng.uniform(1.0 - JITTER, 1.0 + JITTER)


# ---- the live checker -------------------------------------------------------------------

# How a backend is reached: (its TLS context, the name its certificate must carry); both
# None for http.
Tls = tuple[SSLContext | None, str | None]


def _tls(state, b: Backend) -> Tls:
    """As the proxy reaches ``b``: from the settings it was built from (``state.configs``:
    static, discovered or added at run time) and its pool's ``ca`` and verify settings."""
    bcfg = state.configs.get(b)
    if bcfg is None or bcfg.scheme != "https":
        return None, None
    return backend_context(bcfg, state.config), bcfg.server_name

# Told of every probe applied: (pool, backend, result, whether the verdict flipped).
ProbeListener = Callable[[Pool, Backend, ProbeResult, bool], None]


@dataclass
class BackendHealth:
    """What the checker knows of one backend; kept while the backend lives (over reloads)."""

    state: HealthState | None = None    # the verdict's state machine; None: no [health]
    last: dict | None = None            # the last probe: ok, status, latency, error, time
    ok: int = 0                         # probes passed, and failed, since the backend joined
    failed: int = 0

    def counts(self) -> dict[str, int]:
        return {"ok": self.ok, "failed": self.failed}


class HealthChecks:
    """Probes the backends of every pool with ``[health]`` in the current runtime.

    ``start(runtime)`` applies the initial state of backends new to it and starts one task per
    backend; ``restart(runtime)`` (after a reload) does the same for the new runtime, keeping
    the verdicts of backends that survived; ``sync(runtime)`` (membership changed between
    reloads) probes newcomers soon and stops probing those gone; ``stop()`` cancels everything. ``on_probe``, when
    given, hears every probe (tests wait on it instead of sleeping).

    What it learns of each backend is a ``BackendHealth`` in ``backends``, read through
    ``of(backend)`` (``/stats``, ``/metrics``); entries of backends no longer in the runtime
    are dropped by ``prepare``.
    """

    def __init__(self, *, rng: random.Random | None = None, wall: Callable[[], float] = time.time,
                 on_probe: ProbeListener | None = None) -> None:
        self.rng = rng or random.Random()
        self.wall = wall
        self.on_probe = on_probe
        self.backends: dict[Backend, BackendHealth] = {}
        self.tasks: list[asyncio.Task] = []
        self.probing: dict[Backend, asyncio.Task] = {}  # each backend's probe loop
        self.running = False
        self.session: aiohttp.ClientSession | None = None
        # Bumped by every stop/restart. A probe loop also ends when its generation is over,
        # because a cancellation can be lost when it races a finishing wait_for (3.11).
        self.generation = 0
        self.exhausted = Burst(time.monotonic)      # probes this process could not make

    def prepare(self, runtime) -> None:
        """Give every backend its health state before any traffic can reach it: ``initial =
        "down"`` backends of a new pool (or new to a pool) start without traffic. Pools without
        ``[health]`` are assumed up, so a reload that removes the table brings them back."""
        known = self.backends
        self.backends = {}
        for state in runtime.pools.values():
            health, pool = state.config.health, state.pool
            for b in pool.backends:
                record = self.backends[b] = known.get(b) or BackendHealth()
                if health is None:
                    record.state = record.last = None
                    pool.set_healthy(b, True)
                elif record.state is None:
                    record.state = HealthState.initial(health.rise, health.fall, health.initial)
                    pool.set_healthy(b, record.state.healthy)
                else:
                    record.state.retune(health.rise, health.fall)

    def of(self, backend: Backend) -> BackendHealth | None:
        """What is known of ``backend`` (None: not in the runtime last prepared, or probed)."""
        return self.backends.get(backend)

    def start(self, runtime) -> None:
        """Prepare and start probing (call with the event loop running)."""
        self.prepare(runtime)
        self.running = True
        if not any(state.config.health for state in runtime.pools.values()):
            return                          # nothing to probe: no session, no aiohttp import
        if self.session is None or self.session.closed:
            self.session = make_session()
        for state in runtime.pools.values():
            health, pool = state.config.health, state.pool
            if health is None:
                continue
            delays = first_delays(len(pool.backends), health.interval, self.rng)
            for b, delay in zip(pool.backends, delays):
                self._probe(state, health, b, delay)

    def sync(self, runtime) -> None:
        """Membership changed between reloads (discovery, the admin API): give newcomers their
        initial state and a probe loop (first probe within a second), and stop probing
        backends that left. Backends that stayed keep their schedule and verdict."""
        self.prepare(runtime)
        if not self.running:
            return
        members: set[Backend] = set()
        for state in runtime.pools.values():
            health, pool = state.config.health, state.pool
            if health is None:
                continue
            for b in pool.backends:
                members.add(b)
                if b not in self.probing:
                    if self.session is None or self.session.closed:
                        self.session = make_session()
                    # Soon (within a second), not a whole interval: a newcomer with
                    # initial = "down" waits for this probe before it gets traffic.
                    self._probe(state, health, b, self.rng.random() * min(health.interval, 1.0))
        for b in [b for b in self.probing if b not in members]:
            self.probing.pop(b).cancel()

    def _probe(self, state, health: Health, b: Backend, delay: float) -> None:
        """Start ``b``'s probe loop; an https backend is reached as the proxy reaches it."""
        pool = state.pool
        tls = _tls(state, b)
        task = asyncio.get_running_loop().create_task(
            self._loop(pool, health, b, delay, self.generation, tls),
            name=f"health {pool.name}/{b.name}")
        self.tasks.append(task)
        self.probing[b] = task

        def done(t: asyncio.Task) -> None:
            if t in self.tasks:
                self.tasks.remove(t)
            if self.probing.get(b) is t:
                del self.probing[b]
        task.add_done_callback(done)

    def restart(self, runtime) -> None:
        """A reload swapped the runtime: probe the new membership with the new settings."""
        self._cancel()
        self.start(runtime)

    async def stop(self) -> None:
        tasks = self._cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _cancel(self) -> list[asyncio.Task]:
        tasks, self.tasks = self.tasks, []
        self.probing = {}
        self.running = False
        self.generation += 1
        for task in tasks:
            task.cancel()
        return tasks

    async def _loop(self, pool: Pool, health: Health, b: Backend, delay: float,
                    generation: int, tls: Tls = (None, None)) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        while generation == self.generation:
            await asyncio.sleep(max(due - loop.time(), 0.0))
            if generation != self.generation or pool.by_name.get(b.name) is not b:
                return          # stopped, reloaded, or the backend left the pool
            # Start to start: a slow probe does not push the schedule back.
            due = loop.time() + next_delay(health.interval, self.rng)
            await self.probe_backend(pool, health, b, generation, tls)

    async def probe_backend(self, pool: Pool, health: Health, b: Backend,
                            generation: int | None = None,
                            tls: Tls = (None, None)) -> ProbeResult:
        """Probe ``b`` once and apply the result; the one place a probe touches a pool."""
        if self.session is None or self.session.closed:
            self.session = make_session()
        result = await probe(b, health, self.session, ssl=tls[0], server_name=tls[1])
        if generation is not None and generation != self.generation:
            return result       # stopped or reloaded meanwhile: this verdict is stale
        if result.local:
            # Out of descriptors here says nothing of the backend: no verdict, no count.
            if self.exhausted.new():
                log.error("pool %s: backend %s %s; its health is left as it was",
                          pool.name, b.name, result.error)
            if self.on_probe is not None:
                self.on_probe(pool, b, result, False)
            return result
        record = self.backends.get(b)
        if record is None:
            record = self.backends[b] = BackendHealth()
        state = record.state
        if state is None:       # checked before start(): apply the initial state now
            state = record.state = HealthState.initial(health.rise, health.fall, health.initial)
            pool.set_healthy(b, state.healthy)
        flipped = state.observe(result.ok)
        record.last = {"ok": result.ok, "status": result.status,
                       "latency": round(result.latency, 6), "error": result.error,
                       "time": self.wall()}
        if result.ok:
            record.ok += 1
        else:
            record.failed += 1
        if flipped:
            pool.set_healthy(b, state.healthy)
            fields = {"event": "backend_state", "pool": pool.name, "backend": b.name,
                      "state": "up" if state.healthy else "down", "reason": result.reason,
                      "probes": state.streak}
            if state.healthy:
                log.info("pool %s: backend %s is UP (%s)", pool.name, b.name,
                         _streak(state.streak, "successful probe", result.reason), extra=fields)
            else:
                log.warning("pool %s: backend %s is DOWN (%s)", pool.name, b.name,
                            _streak(state.streak, "failed probe", result.reason), extra=fields)
        if self.on_probe is not None:
            self.on_probe(pool, b, result, flipped)
        return result


def _streak(n: int, what: str, reason: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}, last: {reason}"
