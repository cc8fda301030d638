"""The driver: requests through serve's pool and attempt policy, in virtual time.

For each algorithm the driver builds fresh ``Backend`` objects and a ``Pool`` with
``make_pool`` (the very objects ``serve`` uses), on the kernel's clock with the ``balancer``
random stream, and drives them exactly as the proxy does: the pool picks (``select``, with
the backends already tried excluded), ``on_start`` when an attempt is sent, ``on_end`` with
its latency and outcome when it ends. Every decision about a failed attempt is
``balancing.attempts.AttemptPolicy``'s, the same object ``proxy/forward.py`` asks: whether it
is retried, on which backend, whether a 5xx is held back or relayed, and what the client gets
when the attempts run out. The simulator has no retry rule of its own.

Attempt outcomes come from the model (``model.py``): a response, a 5xx, a refused connection
("connect"), a reset ("reset"), or nothing at all until the proxy's per-attempt timeout
(``timeouts.response``, serve's 30 s unless set: "timeout"). Passive ejection is serve's
``OutlierDetector`` on the same pool and clock, told each outcome right after ``on_end``;
active health checks are serve's schedule and state machine (``model.Prober``).

When the client gives up first (``[client] timeout``), its request ends there, but the
proxy's attempt does not: a client that closes its connection is read by ``serve`` as a
half-close, and the proxy still waits for the answer it owes, so the attempt's outcome
reaches passive ejection when the backend answers or at the proxy's timeout (an ORPHAN
event). The simplification kept: ``on_end`` of such an attempt happens when the client
gave up.

The hot path (a million requests take seconds): names bound to locals, per-backend state in
lists, exponential draws inlined, events as plain tuples, and the common case (a first
attempt on a backend without a fault, answered in time) inlined in the loop with no call
but the balancer's and ``occupy``.

Output: flat per-request ``Records`` plus each backend's busy time; ``results.py`` does the
rest.
"""

from __future__ import annotations

import logging
from array import array
from dataclasses import dataclass, field
from heapq import heappop, heappush
from math import log
from typing import Callable

from lbctl.balancing import ALGORITHMS, Backend, Pool, make_pool
from lbctl.balancing.attempts import AttemptPolicy
from lbctl.balancing.outcome import Outcome
from lbctl.simulate.kernel import END, INF, Kernel
from lbctl.simulate.model import BLACKHOLE, ERROR, REFUSE, Prober, Servers
from lbctl.simulate.scenario import Scenario
from lbctl.simulate.workload import arrival_times, request_keys, streams

# Event kinds (the third field of an event tuple).
# DONE is a first attempt's response; RETRY_DONE a later attempt's (kept apart so the common
# case records ``attempts = 1`` without counting).
DONE, RETRY_DONE, FAIL, REFUSED, RESET, ATTEMPT_TIMEOUT, CLIENT_TIMEOUT = range(7)
TIMELINE, ORPHAN, PROBE, PROBED = range(7, 11)

# How a request ended (``Records.status``).
OK = 0                  # a response below 500
ERROR_5XX = 1           # the backend's own 5xx, relayed
ERROR_TIMEOUT = 2       # the last attempt timed out: 504
ERROR_NO_BACKEND = 3    # no backend eligible for a first attempt: 503
ERROR_CONNECT = 4       # the last attempt's connection was refused: 502
ERROR_RESET = 5         # the last attempt was reset before any response: 502
ERROR_HELD = 6          # a 5xx held back for a retry that found no backend: 502
CLIENT_GAVE_UP = 7      # the client's own timeout ended it: no response at all
OUTCOME_NAMES = ("ok", "5xx", "timeout", "no_backend", "connect", "reset", "5xx_retried",
                 "client_timeout")

# An attempt's failure as the policy's outcome word, and what it ends a request as.
_WORD = {FAIL: Outcome.SERVER_ERROR, REFUSED: Outcome.CONNECT_ERROR, RESET: Outcome.RESET,
         ATTEMPT_TIMEOUT: Outcome.TIMEOUT}
_FINAL = {Outcome.CONNECT_ERROR: ERROR_CONNECT, Outcome.RESET: ERROR_RESET,
          Outcome.TIMEOUT: ERROR_TIMEOUT, Outcome.SERVER_ERROR: ERROR_HELD}
# The status the client got, from the policy's own table (the backend's 5xx: 500).
CLIENT_STATUS = (200, 500, AttemptPolicy.client_status(Outcome.TIMEOUT),
                 AttemptPolicy.client_status(None), AttemptPolicy.client_status(Outcome.CONNECT_ERROR),
                 AttemptPolicy.client_status(Outcome.RESET),
                 AttemptPolicy.client_status(Outcome.SERVER_ERROR), 0)

PROGRESS_EVERY = 4096          # arrivals between progress callbacks


@dataclass
class Records:
    """Flat records of one algorithm's run. Per request, in completion order: arrival time,
    latency as the client saw it (until the response or the error), how it ended, attempts
    made, and the backend of the first and of the last attempt (-1: none). Per backend: its
    busy time (service, summed over its concurrency slots) within [0, horizon]."""
    algorithm: str
    backends: list[Backend]
    concurrency: list[int]
    seed: int = 1
    arrival: array = field(default_factory=lambda: array("d"))
    latency: array = field(default_factory=lambda: array("d"))
    status: bytearray = field(default_factory=bytearray)
    attempts: bytearray = field(default_factory=bytearray)
    backend: array = field(default_factory=lambda: array("i"))
    first: array = field(default_factory=lambda: array("i"))
    busy: list[float] = field(default_factory=list)
    horizon: float = 0.0          # time of the last arrival: the window load is measured over
    # Attempts after the first: (time, backend index), in order.
    retries: list[tuple[float, int]] = field(default_factory=list)
    # Passive ejections, in order: (time, backend index, ejected until). Empty when off.
    ejections: list[tuple[float, int, float]] = field(default_factory=list)
    # Health verdict flips from active checks: (time, backend index, healthy).
    flips: list[tuple[float, int, bool]] = field(default_factory=list)


def run_algorithm(scenario: Scenario, algorithm: str,
                  progress: Callable[[int], None] | None = None,
                  arrivals: array | None = None) -> Records:
    """Simulate ``scenario`` with one algorithm; ``progress(n)`` is told of arrivals so far.
    ``arrivals`` are the run's arrival times when the caller already drew them (every
    algorithm of one seed shares them)."""
    seed = scenario.seed
    rngs = streams(seed)
    specs = scenario.backends
    proxy = scenario.proxy
    kernel = Kernel()
    box, clock = kernel.box, kernel.clock

    def new_pool() -> Pool:
        return make_pool("sim", [Backend(s.name, weight=s.weight, backup=s.backup)
                                 for s in specs], algorithm, rng=rngs["balancer"],
                         clock=clock, ewma_decay=proxy.ewma_decay,
                         slow_start=proxy.slow_start, panic_threshold=proxy.panic_threshold)
    # Each worker of serve balances with its own pool: its own in-flight counts, EWMA and
    # rotation. Health verdicts and ejections are the master's, and reach every one.
    workers = scenario.workers
    pools = [new_pool() for _ in range(workers)]
    pool = pools[0]
    backends = pool.backends
    several = workers > 1
    n = len(backends)
    index = {b.name: i for i, b in enumerate(backends)}
    rec = Records(algorithm, backends, [s.concurrency for s in specs], seed)
    servers = Servers(specs, rngs["service"])
    policy = AttemptPolicy.of(proxy)
    may_retry, hold_5xx, next_backend = policy.may_retry, policy.hold_5xx, policy.next_backend

    heap = kernel.heap
    nxt = kernel.seq

    # With workers, the master's pool: where ejections are decided, on every worker's
    # outcomes, and whose verdicts reach every worker's pool (``Instance`` below).
    master = new_pool() if several else pool
    instance = Instance(pools) if several else pool

    # Passive ejection: serve's own detector, on this pool and clock.
    detect = proxy.outlier is not None
    if detect:
        from lbctl.health.passive import OutlierDetector
        record = OutlierDetector(master, proxy.outlier, clock=clock, logger=_QUIET).record
        ejected = rec.ejections.append
        decided = master.backends

        def report(b: Backend, outcome: Outcome, now: float) -> None:
            """Tell the detector; note the attempt that ejected ``b``."""
            b = decided[b.index]
            was_out = b.ejected_until > now
            record(b, outcome)
            if not was_out and b.ejected_until > now:
                ejected((now, b.index, b.ejected_until))
                if several:
                    instance.eject(b.index, b.ejected_until)

    # Active health checks: serve's schedule and state machine.
    prober = None
    if proxy.health is not None:
        prober = Prober(proxy.health, instance, backends, servers, rngs["health"],
                        lambda b, healthy: rec.flips.append((box[0], b.index, healthy)))
        for at, i in prober.first():
            heappush(heap, (at, nxt(), PROBE, backends[i]))

    for ev in scenario.timeline:
        heappush(heap, (ev.at, nxt(), TIMELINE, ev))

    # Per-backend state, bound to locals (the lists are the model's own).
    srand = rngs["service"].random
    sample, scale, expo = servers.sample, servers.scale, servers.expo
    free, multi, busy = servers.free, servers.multi, servers.busy
    mode, fraction, flatency, trouble = (servers.mode, servers.fraction, servers.latency,
                                         servers.trouble)
    occupy = servers.occupy
    snapshot: list = []                          # free[] when the arrivals ended, if it changed

    rec_arrival, rec_latency = rec.arrival.append, rec.latency.append
    rec_backend = rec.backend.append
    retried = rec.retries.append
    # Most requests succeed at the first attempt; only the others note (record number,
    # status, attempts, first backend), and the columns are filled in at the end.
    unusual: list[tuple[int, int, int, int]] = []
    note = unusual.append
    count = rec.latency.__len__

    if several:
        owner = {b: p for p in pools for b in p.backends}
        pool_of = owner.__getitem__
        worker_of = rngs["workers"].randrange

        def select(key):
            # The kernel spreads connections over the workers' sockets: any worker, alike.
            return pools[worker_of(workers)].select(key)

        def on_start(b):
            owner[b].on_start(b)

        def on_end(b, latency, ok=True):
            owner[b].on_end(b, latency, ok)
    else:
        select, on_start, on_end = pool.select, pool.on_start, pool.on_end

        def pool_of(b):
            return pool
    failure_draw = rngs["failures"].random
    attempt_timeout = proxy.timeouts.response
    client_timeout = scenario.client_timeout
    first_limit = min(attempt_timeout, client_timeout)

    workload = scenario.workload
    times = arrivals if arrivals is not None else arrival_times(workload, seed)
    total = len(times)
    keys = request_keys(workload, seed, total) if ALGORITHMS[algorithm].uses_key else None
    trace = workload.trace
    replayable = trace.replayable if trace is not None else None

    def expire(b, now: float, t0: float, end: float, kind: int, tried: tuple, key, rp) -> None:
        """Push the event that ends an attempt sent now to ``b``: its own end (``kind``), or
        the proxy's per-attempt timeout, or the client's deadline, whichever comes first."""
        limit = now + attempt_timeout
        deadline = t0 + client_timeout
        if end > limit or end > deadline:
            if deadline <= limit:
                if detect and min(end, limit) < INF:
                    # The proxy's attempt goes on after the client left (see the docstring).
                    outcome = _ORPHAN_WORD.get(kind, Outcome.OK) if end <= limit \
                        else Outcome.TIMEOUT
                    heappush(heap, (min(end, limit), nxt(), ORPHAN, b, outcome))
                end, kind = deadline, CLIENT_TIMEOUT
            else:
                end, kind = limit, ATTEMPT_TIMEOUT
        heappush(heap, (end, nxt(), kind, b, now, t0, tried, key, rp))

    def send(b, now: float, t0: float, tried: tuple, key, rp, late: bool) -> None:
        """Send one attempt of the request that arrived at ``t0`` to ``b``: retries, faulty
        backends, timeouts (the common first attempt is inlined in the loop below).
        ``late``: the arrivals are over."""
        on_start(b)
        i = b.index
        if tried:
            retried((now, i))
        kind = RETRY_DONE if tried else DONE
        if trouble[i] and failure_draw() < fraction[i]:
            m = mode[i]
            if m == BLACKHOLE:
                end = INF
            else:
                end = now + flatency[i]
                kind = FAIL if m == ERROR else REFUSED if m == REFUSE else RESET
        else:
            e = expo[i]
            svc = -log(1.0 - srand()) * e if e else sample[i]() * scale[i]
            if late:
                # Work sent after the last arrival lies outside the utilization window;
                # keep the slots as they were when the window closed (see results.py).
                if not snapshot:
                    snapshot.append([list(f) if m else f for f, m in zip(free, multi)])
            else:
                busy[i] += svc
            end = occupy(i, now, svc)
        expire(b, now, t0, end, kind, tried, key, rp)

    def final(status: int, t0: float, now: float, tried: tuple) -> None:
        """The request ends without a response below 500 (or after retries)."""
        note((count(), status, len(tried), tried[0].index if tried else -1))
        rec_arrival(t0), rec_latency(now - t0)
        rec_backend(tried[-1].index if tried else -1)

    k = 0
    t_next = times[0] if total else INF
    report_at = PROGRESS_EVERY if progress is not None else -1
    now = last_arrival = 0.0
    key = None
    rp = True

    while True:
        if heap[0][0] <= t_next:
            ev = heappop(heap)
            now = box[0] = ev[0]
            kind = ev[2]
            b = ev[3]
            if kind == DONE:
                on_end(b, now - ev[4])
                if detect:
                    report(b, Outcome.OK, now)
                t0 = ev[5]
                rec_arrival(t0), rec_latency(now - t0), rec_backend(b.index)
                continue
            if kind == RETRY_DONE:
                on_end(b, now - ev[4])
                if detect:
                    report(b, Outcome.OK, now)
                tried = ev[6]
                note((count(), OK, len(tried) + 1, tried[0].index))
                t0 = ev[5]
                rec_arrival(t0), rec_latency(now - t0), rec_backend(b.index)
                continue
            if kind >= TIMELINE:
                if kind == END:
                    break
                if kind == TIMELINE:
                    servers.apply(b, index)
                elif kind == ORPHAN:
                    report(b, ev[4], now)
                elif kind == PROBE:
                    i = b.index
                    at, ok = prober.probe(i, now)
                    if at <= now:
                        prober.verdict(i, ok)
                    else:
                        heappush(heap, (at, nxt(), PROBED, b, ok))
                    if t_next < INF:
                        # Probing stops with the arrivals, or it would never end.
                        heappush(heap, (prober.next(now), nxt(), PROBE, b))
                else:                           # PROBED: a probe's verdict after a timeout
                    prober.verdict(b.index, ev[4])
                continue
            # The attempt failed, or the client gave up.
            on_end(b, now - ev[4], False)
            t0, tried, key, rp = ev[5], ev[6] + (b,), ev[7], ev[8]
            if kind == CLIENT_TIMEOUT:
                final(CLIENT_GAVE_UP, t0, now, tried)
                continue
            word = _WORD[kind]
            if detect:
                report(b, word, now)
            worker_pool = pool_of(b)
            if kind == FAIL:
                # A 5xx head: held back for a retry only while another backend could take
                # it; otherwise relayed, and that is the answer.
                if not hold_5xx(worker_pool, tried, rp):
                    final(ERROR_5XX, t0, now, tried)
                    continue
            elif not may_retry(word, len(tried), rp):
                final(_FINAL[word], t0, now, tried)
                continue
            nb = next_backend(worker_pool, key, tried)
            if nb is None:
                final(_FINAL[word], t0, now, tried)
            else:
                send(nb, now, t0, tried, key, rp, t_next == INF)
            continue

        # An arrival.
        now = box[0] = last_arrival = t_next
        if keys is not None:
            key = keys[k]
        if replayable is not None:
            rp = replayable[k] == 1
        k += 1
        t_next = times[k] if k < total else INF
        if k == report_at:
            progress(k)
            report_at += PROGRESS_EVERY
        b = select(key)
        if b is None:
            final(ERROR_NO_BACKEND, now, now, ())
            continue
        i = b.index
        if trouble[i]:
            send(b, now, now, (), key, rp, False)
            continue
        on_start(b)
        e = expo[i]
        svc = -log(1.0 - srand()) * e if e else sample[i]() * scale[i]
        busy[i] += svc
        end = occupy(i, now, svc)
        if end - now > first_limit:
            expire(b, now, now, end, DONE, (), key, rp)
        else:
            heappush(heap, (end, nxt(), DONE, b, now, now, (), key, rp))

    if progress is not None:
        progress(k)
    # Busy time within [0, horizon]: all work sent by then was queued by then, so after the
    # horizon each slot stays busy without a gap until the moment it frees up; take that
    # tail off.
    final_free = snapshot[0] if snapshot else free
    for i in range(n):
        slots = final_free[i] if multi[i] else [final_free[i]]
        busy[i] -= sum(f - last_arrival for f in slots if f > last_arrival)
    rec.busy = busy
    if several:
        # What the workers' balancers did, summed per backend; ejections are the master's.
        rec.backends = [Backend(s.name, weight=s.weight, backup=s.backup) for s in specs]
        for i, b in enumerate(rec.backends):
            b.started = sum(p.backends[i].started for p in pools)
            b.failures = sum(p.backends[i].failures for p in pools)
            b.ejections = master.backends[i].ejections
    done = len(rec.latency)
    rec.status = bytearray([OK]) * done
    rec.attempts = bytearray([1]) * done
    rec.first = array("i", rec.backend)
    status, attempts, first = rec.status, rec.attempts, rec.first
    for j, code, tries, first_index in unusual:
        status[j] = code
        attempts[j] = min(tries, 255)
        first[j] = first_index
    rec.horizon = last_arrival
    return rec


class Instance:
    """The workers' pools seen as one by what the master decides: a health verdict or an
    ejection reaches every worker's copy of the backend (at once: in virtual time the
    master's message takes no time)."""

    def __init__(self, pools: list[Pool]) -> None:
        self.pools = pools

    def set_healthy(self, b: Backend, healthy: bool) -> None:
        for pool in self.pools:
            pool.set_healthy(pool.backends[b.index], healthy)

    def eject(self, index: int, until: float) -> None:
        for pool in self.pools:
            pool.eject(pool.backends[index], until)


# What an attempt abandoned by its client reports to passive ejection when it really ends.
_ORPHAN_WORD = {DONE: Outcome.OK, RETRY_DONE: Outcome.OK, FAIL: Outcome.SERVER_ERROR,
                REFUSED: Outcome.CONNECT_ERROR, RESET: Outcome.RESET}

# The detector's log lines would interleave with the report; ejections are counted instead.
# A logger of our own, disabled and outside logging's registry: nothing global changes.
_QUIET = logging.Logger("lbctl.simulate.outlier")
_QUIET.disabled = True
