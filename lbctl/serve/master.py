"""The master of an instance with workers: one view, one state, N data planes.

The master never accepts a client connection. It holds the config (validated here, sent to
the workers as text), the listening address (``listen.claim``), the instance's pools, and
everything that must happen once per instance rather than once per worker:

* active health checks: one probe per backend per interval, on the master's pools;
* discovery (``lbctl.discovery``): who is in each pool; every pool's new membership is sent
  to every worker as data, which each applies with ``ProxyServer.set_members``;
* operator actions through the admin API, which it alone serves;
* passive ejection: the workers' outcomes (``outcomes.py``) replayed into the pools' own
  ``OutlierDetector``;
* slow start: a ramp begins when the master's pool says so, and workers ramp in step.

Every change of a backend's state is pushed to every worker as it happens (``state.py``):
a health flip or an ejection before its line is logged, an operator's action before the
admin API answers (``changed``). ``/stats`` and ``/metrics`` ask every worker for its figures
first (``refresh``) and show their sum (``observe.merge``), with a row per worker
(``worker_rows``).

Lifecycle: ``start`` claims the address and binds the admin API before any worker starts,
then starts them all and waits until each is ready (or stops them all and fails with the
first one's reason). A worker that exits unexpectedly is logged and replaced at once; one
that keeps exiting soon after it starts is restarted after a delay that doubles, up to
``MAX_BACKOFF``. ``reload`` asks every worker to load the new text first and swaps only when
all of them could (``prepare`` then ``commit``). ``drain`` tells every worker to drain and
returns when the last one has exited.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from dataclasses import asdict

from lbctl.balancing import Backend
from lbctl.config.loader import ConfigError, load_config, read_text
from lbctl.config.model import Address, BackendConfig, Config
from lbctl.discovery.membership import MembershipError
from lbctl.discovery.service import Discovery, own_addresses
from lbctl.errors import UserError
from lbctl.exitcodes import Exit
from lbctl.gateway.rate_limit import Limit, TokenBuckets
from lbctl.gateway.shared_store import SharedTable
from lbctl.health.active import HealthChecks
from lbctl.health.passive import OutlierDetector
from lbctl.observe.merge import Merged, fold
from lbctl.proxy.members import apply_members, sweep
from lbctl.proxy.runtime import Runtime, build_runtime
from lbctl.proxy.server import fd_cap, fds_needed
from lbctl.serve import listen, openfiles
from lbctl.serve.forkserver import ForkServer
from lbctl.serve.outcomes import replay
from lbctl.serve.state import StateTracker
from lbctl.serve.workers import WorkerFailed, WorkerProcess, describe_exit

log = logging.getLogger("lbctl")

# A worker that exits within this many seconds of starting counts towards a crash loop.
STEADY = 10.0
# Restart delays in a crash loop: the first replacement is immediate, then this, doubling.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# How long a worker may take to start (a fresh interpreter on a loaded machine).
START_TIMEOUT = 30.0
# How long /stats waits for a worker's figures before showing its last ones.
STATS_TIMEOUT = 1.0
# How long a reload waits for every worker to load the new config.
PREPARE_TIMEOUT = 10.0
# A line the workers pass on (``worker.RELAYED``) is logged once in this many seconds.
RELAYED_QUIET = 60.0


class Master:
    def __init__(self, config: Config, text: str, count: int, *, log_format: str = "text",
                 rng: random.Random | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.clock = self.loop.time
        self.rng = rng or random.Random()
        self.config = config
        self.text = text
        self.version = 1
        self.count = count
        self.log_format = log_format
        self.store = WorkersStore(config.store)
        self.ejections = HeldLog(logging.getLogger("lbctl.health"))
        self._runtime: Runtime = build_runtime(config, clock=self.clock, rng=self.rng,
                                               store=self.store)
        self._hold_ejection_logs()
        self.health = HealthChecks(rng=random.Random(self.rng.getrandbits(64)),
                                   on_probe=self._probed)
        # Who is in each pool between reloads: decided here, applied by every worker.
        self.discovery = Discovery(config, self.set_members, own=self._own_addresses)
        self.observer = Merged(time.time())
        self.observer.metrics = config.admin.metrics if config.admin is not None else True
        self.tracker = StateTracker()
        self.workers: dict[int, WorkerProcess] = {}
        self.retired: dict | None = None        # the last figures of exited workers, summed
        self.restarts: dict[int, int] = {}      # worker index -> replacements so far
        self.quick_exits: dict[int, int] = {}   # worker index -> exits soon after starting
        self.claim: listen.Claim | None = None
        self.forkserver = ForkServer(self._exited, self._forkserver_lost)
        # Rate-limit buckets every worker shares (``[store] backend = "local"``).
        self.table = SharedTable.create()
        self.admin = None
        self.stopping = False
        self.hurried = False                    # a second signal stopped the drain
        self._hurry: asyncio.Task | None = None
        self.running = False                    # every worker of the first start is ready
        self._push_pending = False
        self._relayed: dict[tuple[str, str], float] = {}
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    # ---- what the admin API serves (lbctl.admin.served.Served) ---------------------------

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    @property
    def address(self) -> tuple[str, int]:
        return self.config.listen.address.host, self.claim.port

    async def refresh(self) -> None:
        """Ask every worker for its figures and sum them with those of exited workers."""
        live = [w for w in self.workers.values() if w.state in ("serving", "draining")]
        answers = await asyncio.gather(*(w.ask("stats", STATS_TIMEOUT) for w in live))
        for worker, answer in zip(live, answers):
            worker.answering = answer is not None
            if answer is not None:
                worker.figures = answer["figures"]
        now = self.clock()
        merged = self.observer
        merged.reset(self._runtime, merged.metrics)
        for worker in self.workers.values():
            # An exited worker's figures are among the retired ones already.
            if worker.figures is not None and worker.state != "exited":
                merged.absorb(self._runtime, worker.figures, now)
        if self.retired is not None:
            merged.absorb(self._runtime, self.retired, now, live=False, shift=0)
        for state in self._runtime.pools.values():
            if state.leaving:
                sweep(state, self._runtime.idle)    # left every worker: gone here too
        stores = [w.figures["store"] for w in self.workers.values()
                  if w.figures is not None and "store" in w.figures]
        self.store.up = all(store["up"] for store in stores) and not self.store.down
        self.store.errors = sum(store["errors"] for store in stores)

    async def changed(self) -> None:
        """An operator changed a backend or a pool: returns once every worker has applied it
        (or did not answer within ``STATS_TIMEOUT``). Always a round trip: a worker answers
        in order, so its answer also means it applied the membership sent before."""
        changes = self.tracker.changes(self._runtime, self.clock())
        current = [w for w in self.workers.values() if w.version == self.version]
        for worker in current:
            if worker.state == "starting":      # reads it once started: nothing to wait for
                worker.send("state", pools=changes)
        await asyncio.gather(*(w.ask("state", STATS_TIMEOUT, pools=changes)
                               for w in current if w.state != "starting"))

    def push_soon(self) -> None:
        """A backend's state changed here (health, ejection): tell every worker at the end
        of this turn of the loop, one message for every change made in it."""
        if not self._push_pending:
            self._push_pending = True
            self.loop.call_soon(self._push)

    def worker_rows(self) -> list[dict]:
        """Per worker, for ``/stats``'s ``workers`` (flat rows: the dashboard's table)."""
        rows = []
        for index in sorted(self.workers):
            w = self.workers[index]
            figures = w.figures or {}
            state = w.state if w.answering or w.state != "serving" else "not answering"
            pools = figures.get("pools", {})
            rows.append({
                "index": index, "pid": w.pid, "state": state,
                "uptime": round(w.uptime, 1),
                "requests": figures.get("frontend", {}).get("requests", 0),
                "connections": figures.get("connections", 0),
                "inflight": sum(b["inflight"] for backends in pools.values()
                                for b in backends.values()),
                "restarts": self.restarts.get(index, 0),
            })
        return rows

    def _own_addresses(self) -> list[tuple[str, Address]]:
        return own_addresses(self._runtime.config,
                             self.address if self.claim is not None else None,
                             self.admin.bound if self.admin is not None else None)

    # ---- start ---------------------------------------------------------------------------

    async def start(self) -> None:
        # The listening address first, then the admin address: either one taken is one line
        # and exit 1, before anything else has started.
        self.claim = listen.claim(self.config.listen.address,
                                  reuse_port=self.config.server.reuse_port and listen.REUSE_PORT)
        try:
            # The first lookups, so that the first requests find the discovered backends;
            # then every backend's initial health state.
            await self.discovery.start(self.config)
            self.health.prepare(self._runtime)
            if self.config.admin is not None:
                from lbctl.admin.api import start_admin
                self.admin = await start_admin(self)
            # The admin API's port is known now too (port 0 in the config): the first
            # lookups' sets are checked against it again.
            self.discovery.listening()
            await self.forkserver.start(self.config.path, self.text)
            started = [self._spawn(index) for index in range(1, self.count + 1)]
            results = await asyncio.gather(*(self._started(w) for w in await asyncio.gather(
                *started)), return_exceptions=True)
            failure = next((r for r in results if isinstance(r, BaseException)), None)
            if failure is not None:
                raise failure
        except BaseException as exc:
            await self._stop_all()
            await self.close()
            if isinstance(exc, WorkerFailed):
                raise UserError(str(exc), exit_code=Exit.RUNTIME) from None
            raise
        self.running = True
        self.health.start(self._runtime)

    async def _started(self, worker: WorkerProcess) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(worker.ready), START_TIMEOUT)
        except asyncio.TimeoutError:
            raise WorkerFailed(f"worker {worker.index} did not start within "
                               f"{START_TIMEOUT:g}s") from None

    async def _spawn(self, index: int) -> WorkerProcess:
        worker = WorkerProcess(index, self._message)
        self.workers[index] = worker
        worker.version = self.version
        claim = self.claim
        hello = {"index": index, "log_format": self.log_format, "path": self.config.path,
                 "text": self.text, "members": self._members(),
                 "state": StateTracker().changes(self._runtime, self.clock(), full=True),
                 "port": claim.port}
        try:
            await worker.spawn(self.forkserver.fork, hello, self.table,
                               claim.shared.fileno() if claim.shared is not None else None)
        except BaseException:
            worker.mark_exited(None)
            raise
        self._track(self._watch(worker))
        return worker

    def _members(self, members=None) -> dict[str, list[dict]]:
        """Every pool's membership as workers take it (``worker.members_of``)."""
        members = self.discovery.members() if members is None else members
        return {pool: [asdict(b) for b in backends] for pool, backends in members.items()}

    # ---- membership between reloads ------------------------------------------------------

    def set_members(self, pool: str, members: tuple[BackendConfig, ...]) -> None:
        """A pool's membership changed (discovery, the admin API): the master's pool takes
        it (the health checker probes newcomers), then every worker's, then the newcomers'
        states follow."""
        state = self._runtime.pools.get(pool)
        if state is None:
            return
        change = apply_members(state, members, self._runtime.idle, starting=not self.running)
        if not change:
            return
        self.health.sync(self._runtime)
        wire = [asdict(b) for b in members]
        for worker in self.workers.values():
            if worker.version == self.version:
                worker.send("members", pool=pool, members=wire)
        self._push()

    def add_backend(self, pool: str, backend: BackendConfig) -> Backend:
        """The admin API's add: decided by discovery, applied here and in every worker;
        ``MembershipError`` (404, 409) when it cannot be done."""
        self.discovery.add(pool, backend)
        return self._runtime.pools[pool].pool.by_name[backend.name]

    def remove_backend(self, pool: str, name: str) -> tuple[Backend, BackendConfig]:
        """The admin API's remove: the backend leaves every worker (drains, then goes)."""
        state = self._runtime.pools.get(pool)
        backend = state.pool.by_name.get(name) if state is not None else None
        removed = self.discovery.remove(pool, name)
        if backend is None:
            raise MembershipError(404, f"pool {pool!r} has no backend named {name!r}")
        return backend, removed

    def _exited(self, pid: int, code: int) -> None:
        """The fork server reaped one of the workers."""
        for worker in self.workers.values():
            if worker.pid == pid:
                worker.mark_exited(code)
                return

    def _forkserver_lost(self) -> None:
        if self.stopping:
            return
        log.error("the fork server exited; starting a new one (running workers are unaffected)")
        self._track(self._restart_forkserver())

    async def _restart_forkserver(self) -> None:
        delay = FIRST_BACKOFF
        while not self.stopping:
            self.forkserver = ForkServer(self._exited, self._forkserver_lost)
            try:
                await self.forkserver.start(self.config.path, self.text)
                return
            except (OSError, asyncio.TimeoutError) as exc:
                log.error("cannot start the fork server (%s); trying again in %gs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    def _track(self, coro) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, worker: WorkerProcess) -> None:
        """Follow one worker from its start to its end; replace it if it ends unasked."""
        try:
            await worker.ready
            ready = True
        except WorkerFailed as exc:
            ready = False
            if self.running:
                log.error("worker %d could not start: %s", worker.index, exc)
        if ready and worker.version != self.version and not self.stopping:
            await self._catch_up(worker)
        code = await worker.exited
        await worker.close()
        if worker.figures is not None:
            self.retired = fold(self.retired, worker.figures, self.clock(), time.time())
        if self.stopping or not self.running or self.workers.get(worker.index) is not worker:
            return
        quick = self.quick_exits.get(worker.index, 0) + 1 if worker.uptime < STEADY else 0
        self.quick_exits[worker.index] = quick
        self.restarts[worker.index] = self.restarts.get(worker.index, 0) + 1
        # The first replacement is immediate; a crash loop waits longer each time.
        delay = 0.0 if quick <= 1 else min(FIRST_BACKOFF * 2 ** (quick - 2), MAX_BACKOFF)
        later = f" in {delay:g}s: it keeps exiting soon after it starts" if delay else ""
        if ready:
            log.error("worker %d (pid %d) %s; starting a new one%s", worker.index, worker.pid,
                      describe_exit(code), later,
                      extra={"event": "worker_exited", "index": worker.index, "pid": worker.pid,
                             "code": code, "reason": describe_exit(code), "delay": delay})
        elif delay:
            log.error("worker %d: trying again%s", worker.index, later)
        if delay:
            await asyncio.sleep(delay)
        if self.stopping:
            return
        try:
            replacement = await self._spawn(worker.index)
        except (OSError, asyncio.TimeoutError) as exc:
            log.error("worker %d: cannot start a process (%s); trying again", worker.index, exc)
            self._track(self._watch(self.workers[worker.index]))
            return
        try:
            await replacement.ready
        except WorkerFailed:
            return                      # its own watch logs it and tries again
        log.info("worker %d replaced: pid %d", worker.index, replacement.pid,
                 extra={"event": "worker_replaced", "index": worker.index,
                        "pid": replacement.pid, "previous_pid": worker.pid})
        self.push_soon()                # anything decided while it started

    def _hold_ejection_logs(self) -> None:
        """Passive ejection logs through ``ejections``, flushed once the workers are told."""
        for state in self._runtime.pools.values():
            if isinstance(state.outcomes, OutlierDetector):
                state.outcomes.log = self.ejections

    # ---- messages from workers -----------------------------------------------------------

    def _message(self, worker: WorkerProcess, message: dict) -> None:
        kind = message["t"]
        if kind == "outcomes":
            if replay(self._runtime, message["batch"]):
                self._push()
            self.ejections.flush()      # the log says "EJECTED" once the workers know
        elif kind == "log":
            self._relayed_log(message)
        elif kind == "store":
            self.store.told(worker.index, message["up"], message["level"], message["line"],
                            message.get("fields") or {})

    def _relayed_log(self, message: dict) -> None:
        """A line every worker would write about the same thing (a backend it cannot
        connect to, for the same reason): logged once, when the first worker sends it; the
        others' copies within ``RELAYED_QUIET`` seconds are the same news."""
        key = (message["logger"], message["message"])
        now = time.monotonic()
        if now - self._relayed.get(key, -RELAYED_QUIET) < RELAYED_QUIET:
            return
        if len(self._relayed) > 10_000:
            self._relayed.clear()
        self._relayed[key] = now
        logging.getLogger(message["logger"]).log(message["level"], message["message"],
                                                 extra=message.get("fields") or {})

    def _probed(self, pool, backend, result, flipped: bool) -> None:
        if flipped:
            self._push()

    def _push(self) -> None:
        self._push_pending = False
        changes = self.tracker.changes(self._runtime, self.clock())
        if changes:
            for worker in self.workers.values():
                if worker.version == self.version:
                    worker.send("state", pools=changes)

    # ---- reload --------------------------------------------------------------------------

    async def reload(self, path: str) -> bool:
        """Re-read ``path``; every worker swaps to it, or none does."""
        async with self._reload_lock:
            try:
                text = read_text(path)
                config = load_config(path, text=text)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("reload rejected: %s", problem,
                              extra={"event": "reload_rejected", "config": path,
                                     "reason": str(problem)})
                log.error("reload rejected: %d problem(s); still serving the previous "
                          "configuration", len(exc.problems),
                          extra={"event": "reload_rejected", "config": path,
                                 "problems": len(exc.problems)})
                return False
            # The master's own limit, for what it says; each worker raises its own as it
            # commits (what it inherited at its start may be short of the new needs).
            limit = openfiles.raise_open_files(fds_needed(config))
            live = [w for w in self.workers.values() if w.state == "serving"]
            answers = await asyncio.gather(*(w.ask("prepare", PREPARE_TIMEOUT, path=path,
                                                   text=text) for w in live))
            refusals = [(w, a) for w, a in zip(live, answers)
                        if (a is None and w.state != "exited") or (a and a.get("error"))]
            if refusals:
                for w, answer in refusals:
                    reason = answer["error"] if answer else "did not answer in time"
                    log.error("reload rejected: worker %d: %s", w.index, reason,
                              extra={"event": "reload_rejected", "config": path,
                                     "index": w.index, "reason": reason})
                for w, answer in zip(live, answers):
                    if answer is not None:
                        w.send("abort", id=answer["id"])
                log.error("reload rejected; still serving the previous configuration",
                          extra={"event": "reload_rejected", "config": path})
                return False
            members = self._swap(config, text)
            state = StateTracker().changes(self._runtime, self.clock(), full=True)
            for w, answer in zip(live, answers):
                if answer is not None:
                    w.send("commit", id=answer["id"], members=members, state=state)
                    w.version = self.version
            if limit.raised or (fd_cap(config) or math.inf) < config.limits.max_connections:
                self.log_open_files(limit)
            log.info("reloaded %s: %d routes, %d pools; %d workers", path, len(config.routes),
                     len(config.pools), len(live), extra={"event": "reloaded", "config": path})
            return True

    def _swap(self, config: Config, text: str) -> dict[str, list[dict]]:
        """The master takes ``config``; returns every pool's membership for the workers."""
        old = self.config
        if config.listen.address != old.listen.address:
            log.warning("listen address changed to %s: takes effect after a restart; "
                        "still listening on %s", config.listen.address, old.listen.address)
        if (config.listen.tls is None) != (old.listen.tls is None):
            log.warning("listen.tls changed: takes effect after a restart")
        elif config.listen.tls is not None:
            # Every worker loaded it in ``prepare``; each swaps it in with the config.
            log.info("TLS certificate reloaded from %s", config.listen.tls.cert,
                     extra={"event": "tls_reloaded", "path": config.listen.tls.cert})
        if config.server.workers != old.server.workers:
            log.warning("server.workers changed to %s: takes effect after a restart; still "
                        "running %d workers", config.server.workers, self.count)
        if config.server.reuse_port != old.server.reuse_port:
            log.warning("server.reuse_port changed to %s: takes effect after a restart",
                        str(config.server.reuse_port).lower())
        if config.store != self.store.config:
            self.store = WorkersStore(config.store)
        # Discovery takes the new file first: it says what became of operators' changes and
        # gives every pool's membership.
        members = self.discovery.reconfigure(config)
        self._runtime = build_runtime(config, clock=self.clock, rng=self.rng,
                                      previous=self._runtime, members=members,
                                      store=self.store)
        self._hold_ejection_logs()
        self.config, self.text = config, text
        self.version += 1
        self.health.restart(self._runtime)
        self.observer.metrics = config.admin.metrics if config.admin is not None else True
        self.tracker = StateTracker()
        self.tracker.changes(self._runtime, self.clock())
        if self.admin is not None:
            self.admin.reconfigure(config.admin)
        elif config.admin is not None:
            log.warning("[admin] added: the admin API starts after a restart")
        return self._members(members)

    async def _catch_up(self, worker: WorkerProcess) -> None:
        """A worker that started during a reload runs the previous text: swap it too."""
        async with self._reload_lock:
            answer = await worker.ask("prepare", PREPARE_TIMEOUT, path=self.config.path,
                                      text=self.text)
            if answer is None or answer.get("error"):
                log.error("worker %d cannot load the current configuration (%s); stopping it",
                          worker.index, answer["error"] if answer else "no answer")
                worker.kill()
                return
            worker.send("commit", id=answer["id"], members=self._members(),
                        state=StateTracker().changes(self._runtime, self.clock(), full=True))
            worker.version = self.version

    # ---- signals -------------------------------------------------------------------------

    async def reopen(self) -> None:
        """SIGUSR1: every worker reopens the access log (lines it writes after the one
        logged here go to the new file)."""
        live = [w for w in self.workers.values() if w.state == "serving"]
        answers = await asyncio.gather(*(w.ask("reopen", STATS_TIMEOUT) for w in live))
        late = [w.index for w, answer in zip(live, answers) if answer is None]
        log.info("access log reopened by %d workers%s", len(live) - len(late),
                 f"; worker(s) {', '.join(map(str, late))} did not answer" if late else "",
                 extra={"event": "access_log_reopened", "workers": len(live) - len(late)})

    @property
    def connections(self) -> int:
        return sum((w.figures or {}).get("connections", 0) for w in self.workers.values())

    async def stop_accepting(self, timeout: float) -> None:
        """Every worker closes its listener and finishes what it has (up to ``timeout``);
        returns once none accepts any more."""
        self.stopping = True
        for worker in self.workers.values():
            worker.send("drain", timeout=timeout)
        await self.discovery.stop()         # nothing new will be routed: nor membership
        waiting = [w.accepting for w in self.workers.values()]
        await asyncio.wait(waiting, timeout=START_TIMEOUT)
        for worker in self.workers.values():
            if not worker.accepting.done():     # a worker starting still: it may never listen
                worker.kill()

    async def drain(self, timeout: float) -> bool:
        """``stop_accepting`` (if not done yet), then wait for every worker to exit; True
        when every one exited on its own in time."""
        if not self.stopping:
            await self.stop_accepting(timeout)
        await self.health.stop()
        clean = await self._wait_all(timeout + 5.0)
        if self._hurry is not None:
            await self._hurry               # says how many connections a second signal closed
        await self.close()
        return clean

    def log_open_files(self, limit: openfiles.OpenFiles) -> bool:
        """The open-files line of a single process, said once for the instance: the limit
        is each worker's (inherited from the master, or raised by each on a reload), and so
        is the cap it sets. True when it leaves room for ``max_connections``."""
        wanted = self.config.limits.max_connections
        room = fd_cap(self.config)
        enough, line = openfiles.describe(limit, wanted, wanted if room is None else
                                          min(room, wanted), workers=self.count)
        (log.info if enough else log.warning)(line)
        return enough

    def stop_now(self) -> None:
        """A second SIGTERM/SIGINT during a drain: every worker closes its connections now;
        the event log says how many, as a single process's does."""
        self.stopping = self.hurried = True
        if self._hurry is None:
            self._hurry = self.loop.create_task(self._stop_now())

    async def _stop_now(self) -> None:
        live = [w for w in self.workers.values() if w.state != "exited"]
        answers = await asyncio.gather(*(w.ask("stop", STATS_TIMEOUT) for w in live))
        closed = sum(answer["connections"] for answer in answers if answer is not None)
        late = [w.index for w, answer in zip(live, answers) if answer is None]
        log.warning("second signal: stopping at once, closing %d connections%s", closed,
                    f"; worker(s) {', '.join(map(str, late))} did not answer" if late else "",
                    extra={"event": "stopping_now", "connections": closed})

    async def _wait_all(self, timeout: float) -> bool:
        pending = [w.exited for w in self.workers.values() if not w.exited.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        clean = True
        for worker in self.workers.values():
            if not worker.exited.done():
                log.error("worker %d (pid %d) did not stop; killing it", worker.index,
                          worker.pid)
                worker.kill()
                clean = False
        pending = [w.exited for w in self.workers.values() if not w.exited.done()]
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        return clean and all(w.returncode == 0 for w in self.workers.values())

    async def _stop_all(self) -> None:
        self.stopping = True
        for worker in self.workers.values():
            worker.send("stop")
        await self._wait_all(5.0)

    async def close(self) -> None:
        await self.discovery.stop()
        if self.admin is not None:
            await self.admin.close()
            self.admin = None
        await self.health.stop()
        for worker in self.workers.values():
            await worker.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.forkserver.close()
        if self.table is not None:
            os.close(self.table)
            self.table = None
        if self.claim is not None:
            self.claim.close()
            self.claim = None
        for idle in self._runtime.idle.values():
            idle.close_all()


class WorkersStore:
    """The instance's rate-limit store as ``/stats``, ``/metrics`` and the event log show
    it: the workers' own stores (the shared table, or their connections to Redis), up when
    every worker's is, with their errors summed. The master itself limits nothing.

    Each worker tells of its store going down or coming back (``told``); the event log gets
    one line when the first worker loses it and one when the last gets it back, as a single
    process would log it."""

    def __init__(self, config) -> None:
        self.config = config
        self.up = True
        self.errors = 0
        self.down: set[int] = set()         # workers whose store is down
        self.announced = False

    def told(self, worker: int, up: bool, level: int, line: str, fields: dict) -> None:
        was_down = bool(self.down)
        if up:
            self.down.discard(worker)
        else:
            self.down.add(worker)
        if (not up and not was_down) or (up and was_down and not self.down) or \
                (up and not was_down and not self.announced):   # the first contact: once
            log.log(level, line, extra=fields)
        self.announced = True
        self.up = not self.down

    def limiter(self, limit: Limit) -> TokenBuckets:
        return TokenBuckets(limit.rate, limit.burst, limit=limit)     # never asked to decide

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


class HeldLog:
    """A logger's ``info`` and ``warning`` kept until ``flush``: what a detector decides is
    logged after the workers have been told of it, so a line that says a backend is out is
    never older than the workers' knowing it."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.held: list[tuple[int, str, tuple, dict]] = []

    def info(self, message: str, *args, **kwargs) -> None:
        self.held.append((logging.INFO, message, args, kwargs))

    def warning(self, message: str, *args, **kwargs) -> None:
        self.held.append((logging.WARNING, message, args, kwargs))

    def flush(self) -> None:
        held, self.held = self.held, []
        for level, message, args, kwargs in held:
            self.logger.log(level, message, *args, **kwargs)
