"""The event loop: virtual time, simulated backends, the proxy's retry rule; real balancers.

For each algorithm the engine builds fresh ``Backend`` objects and a ``Pool`` with ``make_pool``
(the very objects ``serve`` uses), with a virtual clock and the ``balancer`` random stream, and
drives them exactly as the proxy does: ``select`` (with the retry's exclusion set), ``on_start``
when an attempt is sent, ``on_end`` with its latency and outcome when it ends. Timeline events
call ``Pool.set_healthy`` as a health checker would.

Events live in a heap of plain tuples ``(time, seq, kind, backend, sent, arrived, tried, key)``;
``seq`` comes from ``itertools.count()``, so ties break the same way in every run. Arrivals
are not in the heap: the next arrival time is one float compared with the heap's top.

A simulated backend serves ``concurrency`` requests at once in FIFO order. FIFO makes its
schedule known at dispatch: an attempt starts when the earliest of the backend's slots frees
up (or now), so its end time is computed when it is sent and only one event is pushed per
attempt: its completion, its fast 5xx, or, when that would come later than the proxy's
per-attempt timeout or the client's deadline, the timeout. Nothing is ever cancelled. The work
of an attempt abandoned by a timeout still occupies the backend (it does not know the client
left), as a real server would; a black-holed attempt occupies nothing and never answers.
Simplifications: a slow-down applies to attempts sent after it; a backend that goes down
stops receiving attempts (as if health checks noticed at once) and finishes what it holds.

Passive ejection (``proxy.outlier``) is the real ``lbctl.health.passive.OutlierDetector`` on
the same pool and clock, told each attempt's outcome right after ``on_end``, as the proxy
does: a response "ok", a fast 5xx "5xx", the proxy's per-attempt timeout "timeout". When the
client gives up first, the request ends for the client (an error, no retry) but not for the
proxy: a client that times out closes its connection, ``serve`` reads that as a half-close
and still waits for the answer it owes, so the attempt ends when the backend answers
("ok"/"5xx") or at the proxy's timeout ("timeout"); an ORPHAN event reports that outcome at
that time. (A black hole with no proxy timeout never ends, so it reports nothing; ``serve``
always has one.) The simplification kept from before: ``on_end`` of such an attempt still
happens when the client gave up.

Output: flat per-request ``Records`` plus each backend's busy time; ``results.summarize``
does the rest.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import operator
from array import array
from dataclasses import dataclass, field
from functools import partial
from math import log
from typing import Callable

from lbctl.balancing import ALGORITHMS, Backend, Outcome, make_pool
from lbctl.simulate.scenario import Scenario
from lbctl.simulate.workload import service_sampler, streams

# Event kinds (the third field of an event tuple).
# DONE is a first attempt's response; RETRY_DONE a later attempt's (kept apart so the common
# case records ``attempts = 1`` without counting).
DONE, RETRY_DONE, FAIL, ATTEMPT_TIMEOUT, CLIENT_TIMEOUT, TIMELINE, END = range(7)
# The proxy's side of an attempt whose client already gave up: its outcome (in the key slot)
# goes to passive ejection when the attempt really ends.
ORPHAN = 7

# What passive ejection is told of an attempt.
OUTCOME_OK, SERVER_ERROR, TIMEOUT = Outcome.OK, Outcome.SERVER_ERROR, Outcome.TIMEOUT

# Request outcomes (``Records.status``).
OK, ERROR_5XX, ERROR_TIMEOUT, ERROR_NO_BACKEND = range(4)

INF = math.inf
PROGRESS_EVERY = 4096          # arrivals between progress callbacks


@dataclass
class Records:
    """Flat records of one algorithm's run. Per request, in completion order: arrival time,
    latency as the client saw it (until the response or the error), status, attempts made and
    the backend of the last attempt (-1: none). Per backend: its busy time (service, summed
    over its concurrency slots) within [0, horizon], for utilization."""
    algorithm: str
    backends: list[Backend]
    concurrency: list[int]
    arrival: array = field(default_factory=lambda: array("d"))
    latency: array = field(default_factory=lambda: array("d"))
    status: bytearray = field(default_factory=bytearray)
    attempts: bytearray = field(default_factory=bytearray)
    backend: array = field(default_factory=lambda: array("i"))
    busy: list[float] = field(default_factory=list)
    horizon: float = 0.0          # time of the last arrival: the window load is measured over
    # Passive ejections, in order: (time, backend index, ejected until). Empty when off.
    ejections: list[tuple[float, int, float]] = field(default_factory=list)


def run_algorithm(scenario: Scenario, algorithm: str,
                  progress: Callable[[int], None] | None = None) -> Records:
    """Simulate ``scenario`` with one algorithm; ``progress(n)`` is told of arrivals so far.

    The loop below is the hot path (a million requests take seconds): names are bound to
    locals, per-backend state lives in lists indexed by ``Backend.index``, exponential draws
    are inlined, events are plain tuples and the common case (first attempt, healthy backend,
    no timeout configured) skips ``send``: besides the balancer and the heap it makes one
    call, ``occupy`` (inlining that too saved no measurable time).
    """
    rngs = streams(scenario.seed)
    specs = scenario.backends
    proxy = scenario.proxy
    backends = [Backend(s.name, weight=s.weight, backup=s.backup) for s in specs]

    # The virtual clock: a one-element list read by a C-level callable (the balancers call
    # the clock several times per request, so a Python function here would show).
    box = [0.0]
    clock = partial(operator.getitem, box, 0)
    pool = make_pool("sim", backends, algorithm, rng=rngs["balancer"], clock=clock,
                     ewma_decay=proxy.ewma_decay, slow_start=proxy.slow_start,
                     panic_threshold=proxy.panic_threshold)
    n = len(backends)
    index = {b.name: i for i, b in enumerate(backends)}
    rec = Records(algorithm, backends, [s.concurrency for s in specs])

    # Passive ejection: serve's own detector, on this pool and clock (see the docstring).
    detect = proxy.outlier is not None
    if detect:
        from lbctl.health.passive import OutlierDetector
        record = OutlierDetector(pool, proxy.outlier, clock=clock, logger=_QUIET).record
        ejected = rec.ejections.append

        def report(b: Backend, outcome: Outcome, now: float) -> None:
            """Tell the detector; note the attempt that ejected ``b``."""
            was_out = b.ejected_until > now
            record(b, outcome)
            if not was_out and b.ejected_until > now:
                ejected((now, b.index, b.ejected_until))

    # Per-backend simulation state, in lists indexed by Backend.index (faster than .extra).
    srand = rngs["service"].random
    sample = [service_sampler(s.service, rngs["service"]) for s in specs]
    base_scale = [1.0 / s.speed for s in specs]
    scale = list(base_scale)                     # times the slow-down factor of the timeline
    # Exponential service is drawn inline: -log(1 - U) * mean / speed; 0.0 = use sample[i].
    base_expo = [s.service.mean / s.speed if s.service.dist == "exponential" else 0.0
                 for s in specs]
    expo = list(base_expo)
    multi = [s.concurrency > 1 for s in specs]
    # When each concurrency slot frees up: a float for one slot, a heap of floats for more.
    free: list = [[0.0] * s.concurrency if s.concurrency > 1 else 0.0 for s in specs]
    busy = [0.0] * n                             # service time of attempts sent so far
    fail = [0.0] * n                             # fraction answered with a fast 5xx
    fail_latency = [0.0] * n
    hole = [0.0] * n                             # fraction black-holed
    trouble = [False] * n                        # either of the two above is set
    snapshot: list = []                          # free[] when the arrivals ended, if it changed

    rec_arrival, rec_latency = rec.arrival.append, rec.latency.append
    rec_backend = rec.backend.append
    # Most requests succeed at the first attempt; only the others note (record number,
    # status, attempts), and the status and attempts columns are filled in at the end.
    unusual: list[tuple[int, int, int]] = []
    note = unusual.append
    count = rec.latency.__len__

    heap: list[tuple] = []
    push, pop, heapreplace = heapq.heappush, heapq.heappop, heapq.heapreplace
    nxt = itertools.count().__next__
    select, on_start, on_end = pool.select, pool.on_start, pool.on_end
    failure_draw = rngs["failures"].random
    retries = proxy.retries
    # serve's retry rule (PoolConfig.retry_on); simulated requests are idempotent GETs.
    retry_fail, retry_timeout = "5xx" in proxy.retry_on, "timeout" in proxy.retry_on
    attempt_timeout = proxy.timeout
    client_timeout = scenario.client_timeout
    timeouts = attempt_timeout < INF or client_timeout < INF

    uses_key = ALGORITHMS[algorithm].uses_key
    key_draw = rngs["keys"].random
    nkeys = scenario.workload.keys
    key_names = [f"client-{k}" for k in range(nkeys)] if uses_key else []

    for ev in scenario.timeline:
        push(heap, (ev.at, nxt(), TIMELINE, ev, 0.0, 0.0, (), None))

    def occupy(i: int, now: float, svc: float) -> float:
        """Queue ``svc`` seconds of work on backend ``i`` (FIFO over its slots): its end."""
        if multi[i]:
            slots = free[i]
            start = slots[0]
            if start < now:
                start = now
            end = start + svc
            heapreplace(slots, end)
            return end
        start = free[i]
        if start < now:
            start = now
        end = free[i] = start + svc
        return end

    def send(b, now: float, t0: float, tried: tuple, key, late: bool) -> None:
        """Send one attempt of the request that arrived at ``t0`` to ``b`` (None: no backend
        acceptable). The general path: retries, troubled backends, timeouts; the common
        first attempt is inlined in the loop below. ``late``: the arrivals are over."""
        if b is None:
            note((count(), ERROR_NO_BACKEND, len(tried)))
            rec_arrival(t0), rec_latency(now - t0)
            rec_backend(tried[-1].index if tried else -1)
            return
        on_start(b)
        i = b.index
        kind = RETRY_DONE if tried else DONE
        if trouble[i] and hole[i] and failure_draw() < hole[i]:
            end = INF
        elif trouble[i] and fail[i] and failure_draw() < fail[i]:
            end, kind = now + fail_latency[i], FAIL
        else:
            svc = -log(1.0 - srand()) * expo[i] if expo[i] else sample[i]() * scale[i]
            if late:
                # Work sent after the last arrival lies outside the utilization window;
                # keep the slots as they were when the window closed (see results.py).
                if not snapshot:
                    snapshot.append([list(f) if m else f for f, m in zip(free, multi)])
            else:
                busy[i] += svc
            end = occupy(i, now, svc)
        limit = now + attempt_timeout
        deadline = t0 + client_timeout
        if end > limit or end > deadline:
            if deadline <= limit:
                if detect and min(end, limit) < INF:
                    # The proxy's attempt goes on after the client left (see the docstring).
                    outcome = (SERVER_ERROR if kind == FAIL else OUTCOME_OK) if end <= limit \
                        else TIMEOUT
                    push(heap, (min(end, limit), nxt(), ORPHAN, b, now, t0, (), outcome))
                end, kind = deadline, CLIENT_TIMEOUT
            else:
                end, kind = limit, ATTEMPT_TIMEOUT
        push(heap, (end, nxt(), kind, b, now, t0, tried, key))

    workload = scenario.workload
    poisson = workload.arrivals == "poisson"
    arand = rngs["arrivals"].random
    spacing = 1.0 / workload.rate               # mean gap between arrivals
    total = workload.requests if workload.requests else -1         # -1: until stop_at
    stop_at = workload.duration if workload.duration else INF
    t_next = -log(1.0 - arand()) * spacing if poisson else spacing
    if t_next > stop_at:
        t_next = INF
    # A sentinel at infinity keeps the heap non-empty: one comparison per event decides
    # between the heap's top and the next arrival (INF once the arrivals are over).
    push(heap, (INF, INF, END, None, 0.0, 0.0, (), None))
    arrived = 0
    report_at = PROGRESS_EVERY if progress is not None else -1
    now = last_arrival = 0.0
    key = None

    while True:
        if heap[0][0] <= t_next:
            ev = pop(heap)
            now = box[0] = ev[0]
            kind = ev[2]
            b = ev[3]
            if kind == DONE:
                on_end(b, now - ev[4])
                if detect:
                    report(b, OUTCOME_OK, now)
                t0 = ev[5]
                rec_arrival(t0), rec_latency(now - t0), rec_backend(b.index)
                continue
            if kind == RETRY_DONE:
                on_end(b, now - ev[4])
                if detect:
                    report(b, OUTCOME_OK, now)
                t0 = ev[5]
                note((count(), OK, len(ev[6]) + 1))
                rec_arrival(t0), rec_latency(now - t0), rec_backend(b.index)
                continue
            if kind == END:
                break
            if kind == TIMELINE:
                _apply(b, pool, index, backends, scale, base_scale, expo, base_expo, fail,
                       fail_latency, hole, trouble)
                continue
            if kind == ORPHAN:
                report(b, ev[7], now)
                continue
            on_end(b, now - ev[4], False)
            if detect and kind != CLIENT_TIMEOUT:
                report(b, SERVER_ERROR if kind == FAIL else TIMEOUT, now)
            t0, tried = ev[5], ev[6]
            if (retry_fail if kind == FAIL else retry_timeout and kind == ATTEMPT_TIMEOUT) \
                    and len(tried) < retries:
                tried += (b,)
                send(select(ev[7], tried), now, t0, tried, ev[7], t_next == INF)
                continue
            note((count(), ERROR_5XX if kind == FAIL else ERROR_TIMEOUT, len(tried) + 1))
            rec_arrival(t0), rec_latency(now - t0), rec_backend(b.index)
            continue

        # An arrival.
        now = box[0] = last_arrival = t_next
        arrived += 1
        t_next = now - log(1.0 - arand()) * spacing if poisson else now + spacing
        if t_next > stop_at or arrived == total:
            t_next = INF
        if arrived == report_at:
            progress(arrived)
            report_at += PROGRESS_EVERY
        if uses_key:
            key = key_names[int(key_draw() * nkeys)]
        b = select(key)
        if timeouts or b is None or trouble[b.index]:
            send(b, now, now, (), key, False)
            continue
        on_start(b)
        i = b.index
        e = expo[i]
        svc = -log(1.0 - srand()) * e if e else sample[i]() * scale[i]
        busy[i] += svc
        end = occupy(i, now, svc)
        push(heap, (end, nxt(), DONE, b, now, now, (), key))

    if progress is not None:
        progress(arrived)
    # Busy time within [0, horizon]: all work sent by then was queued by then, so after the
    # horizon each slot stays busy without a gap until the moment it frees up; take that
    # tail off.
    final = snapshot[0] if snapshot else free
    for i in range(n):
        slots = final[i] if multi[i] else [final[i]]
        busy[i] -= sum(f - last_arrival for f in slots if f > last_arrival)
    rec.busy = busy
    done = len(rec.latency)
    rec.status = bytearray([OK]) * done
    rec.attempts = bytearray([1]) * done
    for k, status, attempts in unusual:
        rec.status[k] = status
        rec.attempts[k] = min(attempts, 255)
    rec.horizon = last_arrival
    return rec


# The detector's log lines would interleave with the report; ejections are counted instead.
# A logger of our own, disabled and outside logging's registry: nothing global changes.
_QUIET = logging.Logger("lbctl.simulate.outlier")
_QUIET.disabled = True


def _apply(ev, pool, index, backends, scale, base_scale, expo, base_expo, fail, fail_latency,
           hole, trouble) -> None:
    """A timeline event happens now."""
    for name in ev.backends:
        i = index[name]
        b = backends[i]
        action = ev.action
        if action == "down":
            pool.set_healthy(b, False)
        elif action == "up":
            pool.set_healthy(b, True)
        elif action == "slow":
            scale[i] = base_scale[i] * ev.factor
            expo[i] = base_expo[i] * ev.factor
        elif action == "fail":
            fail[i], fail_latency[i] = ev.fraction, ev.latency
        elif action == "blackhole":
            hole[i] = ev.fraction
        elif action == "recover":
            scale[i], expo[i] = base_scale[i], base_expo[i]
            fail[i] = hole[i] = 0.0
        trouble[i] = bool(fail[i] or hole[i])


def total_requests(scenario: Scenario) -> int | None:
    """Arrivals per algorithm when known in advance (for a progress bar)."""
    w = scenario.workload
    if w.requests:
        return w.requests
    return int(w.duration * w.rate) or None
