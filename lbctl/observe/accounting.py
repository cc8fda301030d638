"""Per-backend accounting on the hot path: counters, a latency histogram, a sliding window.

The ``Observer`` keeps one ``BackendStats`` per backend (keyed by the ``Backend`` object, so
it survives reloads with it). ``record`` is called once per attempt and only adds to integers and
pre-allocated lists: no object is created per request. Readers (``/stats``, ``/metrics``,
the dashboard) do the arithmetic at read time.

The histogram has fixed bucket bounds (``BOUNDS``, seconds), the same as the Prometheus
``lbctl_request_duration_seconds`` buckets. Percentiles over the last ``WINDOW`` seconds come
from a ring of per-second bucket arrays: a slot is cleared in place when its second comes
round again, and a percentile is the upper bound of the bucket where the rank falls.
"""

from __future__ import annotations

from bisect import bisect_left

from lbctl.balancing import Outcome

# Upper bounds in seconds; one more bucket (+Inf) follows. Dense where proxies usually live.
BOUNDS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25,
    0.4, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0,
)
NBUCKETS = len(BOUNDS) + 1
WINDOW = 60                       # seconds of history for percentiles and sparklines
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_ZEROS = [0] * NBUCKETS
OK, SERVER_ERROR, CLIENT_ABORT = Outcome.OK, Outcome.SERVER_ERROR, Outcome.CLIENT_ABORT
CONNECT_ERROR, TIMEOUT, INVALID = Outcome.CONNECT_ERROR, Outcome.TIMEOUT, Outcome.INVALID
LOCAL = Outcome.LOCAL



class BackendStats:
    """Counters of one backend. Attempts, not client requests: a retry counts on each backend
    it touched, and ``retries`` counts the attempts that were retries."""

    __slots__ = ("requests", "by_class", "connect_errors", "timeouts", "resets", "invalid",
                 "client_aborts", "retries", "bytes_in", "bytes_out", "buckets", "latency_sum",
                 "win_buckets", "win_requests", "win_errors", "win_stamp")

    def __init__(self) -> None:
        self.requests = 0
        self.by_class = [0, 0, 0, 0, 0, 0]   # index = status // 100 (0 unused)
        self.connect_errors = 0
        self.timeouts = 0
        self.resets = 0                       # closed, reset or cut short by the backend
        self.invalid = 0                      # unparseable response
        self.client_aborts = 0                # ended by the client (gone, or broke a limit)
        self.retries = 0
        self.bytes_in = 0                     # request body bytes sent toward the backend
        self.bytes_out = 0                    # response body bytes relayed to the client
        self.buckets = [0] * NBUCKETS         # cumulative histogram (not summed until read)
        self.latency_sum = 0.0
        self.win_buckets = [[0] * NBUCKETS for _ in range(WINDOW)]
        self.win_requests = [0] * WINDOW
        self.win_errors = [0] * WINDOW
        self.win_stamp = [-1] * WINDOW        # which second each slot holds

    def record(self, now: float, status: int, outcome: Outcome, duration: float, retry: bool,
               bytes_in: int, bytes_out: int) -> None:
        """One finished attempt. ``status`` is 0 when no response head arrived."""
        self.requests += 1
        if status:
            self.by_class[status // 100 if status < 600 else 5] += 1
        if outcome is CLIENT_ABORT:           # not the backend's failure
            self.client_aborts += 1
            error = 0
        elif outcome is LOCAL:                # nor is the proxy running out of descriptors
            error = 0
        elif outcome is not OK and outcome is not SERVER_ERROR:
            if outcome is CONNECT_ERROR:
                self.connect_errors += 1
            elif outcome is TIMEOUT:
                self.timeouts += 1
            elif outcome is INVALID:
                self.invalid += 1
            else:
                self.resets += 1
            error = 1
        else:
            error = 1 if status >= 500 else 0
        if retry:
            self.retries += 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        i = bisect_left(BOUNDS, duration)
        self.buckets[i] += 1
        self.latency_sum += duration
        second = int(now)
        slot = second % WINDOW
        if self.win_stamp[slot] != second:
            self.win_stamp[slot] = second
            self.win_buckets[slot][:] = _ZEROS      # in place: no new list
            self.win_requests[slot] = 0
            self.win_errors[slot] = 0
        self.win_buckets[slot][i] += 1
        self.win_requests[slot] += 1
        self.win_errors[slot] += error

    # ---- readers (not on the hot path) ------------------------------------------------

    @property
    def errors(self) -> int:
        return self.connect_errors + self.timeouts + self.resets + self.invalid + self.by_class[5]

    def classes(self) -> dict[str, int]:
        return {name: self.by_class[i + 1] for i, name in enumerate(CLASSES)}

    def window(self, now: float, seconds: int = WINDOW) -> list[int]:
        """Bucket counts over the last ``seconds`` seconds (the current one included)."""
        current = int(now)
        total = [0] * NBUCKETS
        for slot in range(WINDOW):
            stamp = self.win_stamp[slot]
            if stamp >= 0 and current - seconds < stamp <= current:
                row = self.win_buckets[slot]
                for i in range(NBUCKETS):
                    total[i] += row[i]
        return total

    def histogram(self, now: float) -> dict[str, list]:
        """Attempt durations over the last ``WINDOW`` seconds as bucket counts: ``le`` holds
        each bucket's upper bound in seconds (None: +Inf), ``counts`` the attempts in it
        (not cumulative). ``lbctl simulate --from-admin`` samples service times from it."""
        return {"le": [*BOUNDS, None], "counts": self.window(now)}

    def percentiles(self, now: float, qs=(0.5, 0.9, 0.99)) -> dict[str, float | None]:
        counts = self.window(now)
        return {f"p{round(q * 100)}": quantile(counts, q) for q in qs}

    def series(self, now: float, seconds: int = WINDOW) -> dict[str, list]:
        """Per-second history, oldest first: requests, errors and p99 (None: no requests)."""
        current = int(now)
        requests, errors, p99 = [], [], []
        for second in range(current - seconds + 1, current + 1):
            slot = second % WINDOW
            if self.win_stamp[slot] == second:
                requests.append(self.win_requests[slot])
                errors.append(self.win_errors[slot])
                p99.append(quantile(self.win_buckets[slot], 0.99))
            else:
                requests.append(0)
                errors.append(0)
                p99.append(None)
        return {"requests": requests, "errors": errors, "p99": p99}


def quantile(counts: list[int], q: float) -> float | None:
    """Upper bound of the bucket holding rank ``q``; None with no samples. Values beyond
    the last bound report that bound (the histogram cannot say more)."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank and n:
            return BOUNDS[min(i, len(BOUNDS) - 1)]
    return BOUNDS[-1]

