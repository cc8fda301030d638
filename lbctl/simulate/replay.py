"""Replay: your own traffic, from an access log, as the simulator's workload.

Three formats are read (``format = "auto"`` tells them apart by the first line):

* **lbctl's JSON access log** (``[log] format = "json"``): ``epoch`` (request start),
  ``backend``, ``upstream_time`` (the last attempt's start to response head), ``attempts``,
  ``method``, ``path``, ``client``, ``host``, ``user_agent``, ``status``.
* **nginx**, with the ``log_format`` given (``--log-format`` or ``[workload] log_format``;
  default ``combined`` followed by ``$request_time $upstream_response_time
  $upstream_addr``). The time is ``$msec`` when logged, else ``$time_iso8601`` or
  ``$time_local``; nginx logs when a request *ends*, so the start is that time minus
  ``$request_time``, and with whole-second times each start is spread evenly at random
  within its second (seeded). The backend is the last ``$upstream_addr`` (serve's default
  backend name is the same host:port), its time the last ``$upstream_response_time``.
* **HAProxy's HTTP log** (``option httplog``): the accept date (milliseconds), the timers
  ``TR/Tw/Tc/Tr/Ta`` (or ``Tq/Tw/Tc/Tr/Tt`` before 1.9), ``backend/server`` and the
  retries count. A request arrives at accept + TR; its server time is ``Tr``.

From the log come the arrivals (the start times, divided by ``speedup``), each request's
hash key (``key``: the path, the client IP, or a logged header), whether it may be retried
(an idempotent method), and per backend the service times.

**Queueing inside logged times.** Under load, a logged upstream time includes the time the
request waited inside the backend for a free worker. Replayed as service times, that wait
would be counted twice: once in the samples and once in the simulated queue. So the samples
of a backend are taken only from requests that started, by the log's own timestamps, while
fewer than the backend's ``concurrency`` of its requests were in flight: those found a free
worker, so their time is service, not queue. The in-flight count is rebuilt from each
request's start and upstream time. Requests retried by the proxy (more than one attempt)
are left out: their last attempt's start is not logged. A backend with fewer than
``MIN_SAMPLES`` such requests falls back to all of its times (the report says so). A
backend's 5xx answers become an ``error`` fault with their share and mean time.
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
import random
import re
from array import array
from calendar import timegm
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Iterator

from lbctl.config.problems import Problems, describe
from lbctl.files import FileProblem, open_stream

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
MIN_SAMPLES = 50
# What a line may hold. A log is written by a program, and a value outside these bounds is
# not a request that happened: the line is skipped and counted, never simulated (NaN,
# infinities, a time before 1970 or after the year 5000, an upstream time of days).
MAX_LINE = 1024 * 1024          # bytes; longer lines are skipped unread
MAX_EPOCH = 1e11                # Unix time, about the year 5138
MAX_TIME = 1e6                  # seconds for one request (over 11 days)
MAX_BACKENDS = 100_000          # distinct backends a log may name (a scenario's own limit)
MIN_SERVICE = 1e-6            # a logged 0.000 s is below the log's resolution, not free
DEFAULT_NGINX = ('$remote_addr - $remote_user [$time_local] "$request" $status '
                 '$body_bytes_sent "$http_referer" "$http_user_agent" $request_time '
                 '$upstream_response_time $upstream_addr')
# lbctl's JSON log records these headers (hash_key = "header:NAME").
LBCTL_HEADERS = {"host": "host", "user-agent": "user_agent", "referer": "referer"}


@dataclass
class Logged:
    """One backend's requests in the log: (start, upstream time, clean) per request."""
    starts: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    clean: bytearray = field(default_factory=bytearray)     # 1: one attempt, below 500
    errors: list[float] = field(default_factory=list)       # times of its 5xx answers


@dataclass
class Trace:
    source: str
    format: str
    times: array                     # arrival offsets in seconds, sorted, speedup applied
    keys: list[Any] | None           # each request's hash key; None when the key is not used
    replayable: bytearray | None     # 1: may be retried (idempotent method); None: all may
    span: float                      # seconds from the first arrival to the last
    lines: int
    skipped: int
    logged: dict[str, Logged]        # per backend name ("" = the log names none)
    notes: list[str] = field(default_factory=list)

    def cut(self, requests: int | None = None, duration: float | None = None) -> "Trace":
        """The first ``requests`` arrivals, or those within ``duration`` of the first."""
        n = len(self.times)
        if duration is not None:
            n = min(n, bisect.bisect_right(self.times, duration))
        if requests is not None:
            n = min(n, requests)
        if n == len(self.times):
            return self
        times = self.times[:n]
        return replace(self, times=times, span=times[-1] if n else 0.0,
                       keys=self.keys[:n] if self.keys is not None else None,
                       replayable=self.replayable[:n] if self.replayable is not None else None)

    def describe(self) -> str:
        return (f"{self.source} ({self.format}, {len(self.times):,} requests over "
                f"{self.span:,.1f}s)")

    def service(self, name: str, concurrency: int
                ) -> tuple[tuple[float, ...], tuple[float, float] | None] | None:
        """A backend's service-time samples with the queueing inside them left out (see the
        module docstring), and its 5xx answers as (share of answers, mean time) or None;
        None when the log has no time for it."""
        logged = self.logged.get(name) or self.logged.get("")
        if logged is None or not logged.times:
            return None
        samples = queue_free(logged, concurrency)
        if len(samples) < MIN_SAMPLES:
            samples = [t for t, ok in zip(logged.times, logged.clean) if ok] or logged.times
            self.notes.append(f"{name or 'the pool'}: too few requests found a free worker "
                              f"(concurrency {concurrency}); its logged times, queueing "
                              f"included, are used as they are")
        errors = None
        answered = sum(logged.clean) + len(logged.errors)
        if logged.errors and answered:
            errors = (len(logged.errors) / answered,
                      max(math.fsum(logged.errors) / len(logged.errors), MIN_SERVICE))
        return tuple(max(t, MIN_SERVICE) for t in samples), errors

    def names(self) -> list[str]:
        """The backends the log names, in order of first appearance."""
        return [name for name in self.logged if name]


def queue_free(logged: Logged, concurrency: int) -> list[float]:
    """Upstream times of the clean requests that started while fewer than ``concurrency``
    of the backend's requests were in flight (by the log's own start and upstream times)."""
    order = sorted(range(len(logged.starts)), key=logged.starts.__getitem__)
    ends: list[float] = []
    out = []
    starts, times, clean = logged.starts, logged.times, logged.clean
    for k in order:
        start = starts[k]
        while ends and ends[0] <= start:
            heapq.heappop(ends)
        if len(ends) < concurrency and clean[k]:
            out.append(times[k])
        heapq.heappush(ends, start + times[k])
    return out


# ---- reading -------------------------------------------------------------------------------


def load_trace(path: str, fmt: str, log_format: str | None, speedup: float, key: str,
               problems: Problems, where: str, *, requests: int | None = None,
               duration: float | None = None) -> Trace | None:
    """Read an access log into a ``Trace``; a problem (and None) when it cannot be read."""
    try:
        f = open_stream(path)
    except FileProblem as exc:
        problems.add(where, f"cannot read {describe(path)}: {exc}")
        return None
    with f:
        first = b""
        for raw in lines(f):
            if raw is not None and raw.strip():
                first = raw
                break
        f.seek(0)
        if fmt == "auto":
            fmt = detect(first)
        if fmt != "nginx" and log_format is not None:
            problems.add("workload.log_format", f"expected log_format only for an nginx log; "
                                                f"{path} reads as {fmt}")
            return None
        try:
            if fmt == "lbctl":
                reader = _lbctl(f, key)
            elif fmt == "haproxy":
                reader = _haproxy(f, key)
            else:
                reader = _nginx(f, log_format or DEFAULT_NGINX, key)
            rows, count, skipped = _collect(reader)
        except _Bad as exc:
            problems.add(where, f"{path} {exc}")
            return None
        except OSError as exc:
            problems.add(where, f"cannot read {describe(path)}: {exc.strerror or exc}")
            return None
    if not rows:
        problems.add(where, f"expected requests in {path} ({fmt} format), found none that "
                            f"parse ({skipped:,} lines skipped)")
        return None
    rows.sort(key=lambda r: r[0])
    t0 = rows[0][0]
    if duration is not None:
        rows = [r for r in rows if r[0] - t0 <= duration]
    if requests is not None:
        rows = rows[:requests]
    logged: dict[str, Logged] = {}
    for row in rows:
        backend, upstream, clean, error = row[3:7]
        if upstream is None:
            continue
        b = logged.get(backend)
        if b is None:
            b = logged[backend] = Logged()
        if error:
            b.errors.append(upstream)
        else:
            # When the backend's own start is known (HAProxy), occupancy counts from there.
            b.starts.append(row[7] if len(row) > 7 else row[0])
            b.times.append(upstream)
            b.clean.append(1 if clean else 0)
    times = array("d", ((r[0] - t0) / speedup for r in rows))
    keys = [r[1] for r in rows]
    if all(k is None for k in keys):
        keys = None
    replayable = bytearray(r[2] for r in rows)
    if all(replayable):
        replayable = None
    if len(logged) > MAX_BACKENDS:
        problems.add(where, f"expected a log naming at most {MAX_BACKENDS:,} backends, found "
                            f"{len(logged):,} in {path}")
        return None
    return Trace(path, fmt, times, keys, replayable, times[-1] if times else 0.0, count,
                 skipped, logged)


def lines(f) -> Iterator[bytes | None]:
    """The file's lines; None for a line longer than ``MAX_LINE``, which is read past in
    pieces and never held whole (a log of one endless line costs no memory)."""
    readline = f.readline
    while True:
        raw = readline(MAX_LINE + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            while True:
                rest = readline(MAX_LINE)
                if not rest or rest.endswith(b"\n"):
                    break
            yield None
            continue
        yield raw


def _time(value: Any, limit: float) -> float:
    """A logged time in seconds, within ``0 .. limit``; ValueError otherwise. A JSON ``true``
    is not a number here."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)
    t = float(value)
    if not 0.0 <= t <= limit:           # False for NaN as well
        raise ValueError(value)
    return t


def detect(first: bytes) -> str:
    text = first.lstrip()
    if text.startswith(b"{"):
        return "lbctl"
    if _HAPROXY.search(first.decode("latin-1")):
        return "haproxy"
    return "nginx"


class _Bad(Exception):
    """A log that cannot be used at all (not one bad line: those are skipped and counted)."""


# A row: (start, key, replayable, backend, upstream time or None, clean, is a 5xx answer[,
# when the backend started on it])
Row = tuple


def _collect(reader: Iterator[Row | None]) -> tuple[list[Row], int, int]:
    rows, lines, skipped = [], 0, 0
    append = rows.append
    for row in reader:
        lines += 1
        if row is None:
            skipped += 1
        else:
            append(row)
    return rows, lines, skipped


def _key_of(key: str) -> tuple[str, str | None]:
    """("path" | "ip" | "header", header name lowercased)."""
    if key.startswith("header:"):
        return "header", key[7:].lower()
    if key.startswith("cookie:"):
        return "cookie", key[7:]
    return key, None


# lbctl's own lines (compact JSON, keys in the writer's order): read by one regex, about
# three times faster than a JSON decode; any other line (another writer, an escape in a value
# we need) goes through the JSON decoder.
_STR = r'(?:null|"([^"\\]*)")'
_LBCTL_FAST = re.compile(
    r'\{"time":"[^"]*","epoch":([0-9.eE+-]+),"client":' + _STR + r',"consumer":(?:null|"[^"]*"),'
    r'"method":"([A-Z]*)","path":' + _STR + r',"protocol":"[^"]*","status":(\d+),'
    r'"bytes":\d+,"duration":[0-9.eE+-]+,"route":(?:null|"[^"]*"),"pool":(?:null|"[^"]*"),'
    r'"backend":' + _STR + r',"upstream_time":(null|[0-9.eE+-]+),"attempts":(\d+),'
    r'"request_id":(?:null|"[^"]*"),"termination":(?:null|"[^"]*"),"host":' + _STR +
    r',"user_agent":' + _STR + r',"referer":' + _STR)
_FAST_FIELD = {"client": 2, "path": 4, "host": 9, "user_agent": 10, "referer": 11}


def _lbctl(f, key: str) -> Iterator[Row | None]:
    kind, header = _key_of(key)
    field_name = {"path": "path", "ip": "client"}.get(kind)
    if kind == "header":
        field_name = LBCTL_HEADERS.get(header or "")
        if field_name is None:
            raise _Bad(f"does not record header {header!r}: lbctl's access log has host, "
                       f"user-agent and referer (key = \"path\", \"ip\" or one of those)")
    if kind == "cookie":
        raise _Bad("does not record cookies: use key = \"path\", \"ip\" or a logged header")
    # The decoder itself: json.loads would sniff the encoding and check the trailing
    # whitespace of every line, a third of the time of a million-line log.
    parse = json.JSONDecoder().raw_decode
    fast = _LBCTL_FAST.match
    group = _FAST_FIELD.get(field_name or "")
    for raw in lines(f):
        if raw is None:
            yield None
            continue
        if not raw.strip():
            continue
        line = raw.decode("utf-8", "replace")
        m = fast(line)
        if m is not None:
            # Groups: 1 epoch, 2 client, 3 method, 4 path, 5 status, 6 backend,
            # 7 upstream_time, 8 attempts, 9 host, 10 user_agent, 11 referer.
            try:
                start = _time(m.group(1), MAX_EPOCH)
                up = m.group(7)
                upstream = None if up == "null" else _time(up, MAX_TIME)
            except ValueError:
                yield None
                continue
            error = upstream is not None and int(m.group(5)) >= 500
            value = m.group(group) if group else None
            if kind == "path" and value is not None:
                value = value.split("?", 1)[0]
            yield (start, value, m.group(3) in IDEMPOTENT, m.group(6) or "",
                   upstream, m.group(8) == "1" and not error, error)
            continue
        try:
            rec = parse(line)[0]
            start = _time(rec["epoch"], MAX_EPOCH)
            upstream = rec.get("upstream_time")
            if upstream is not None:
                upstream = _time(upstream, MAX_TIME)
            status = rec.get("status") or 0
            attempts = rec.get("attempts") or 0
            method = rec.get("method") or "GET"
            backend = rec.get("backend") or ""
            value = rec.get(field_name) if field_name else None
            # Each field of the kind lbctl writes; anything else is not lbctl's line.
            if not (isinstance(status, int) and isinstance(attempts, int)
                    and isinstance(method, str) and isinstance(backend, str)
                    and (value is None or isinstance(value, str))):
                raise TypeError("a field of the wrong type")
        except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError):
            yield None
            continue
        if kind == "path" and isinstance(value, str):
            value = value.split("?", 1)[0]
        error = upstream is not None and status >= 500
        clean = attempts == 1 and not error
        yield (start, value, method in IDEMPOTENT, backend, upstream, clean, error)


_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                                        "Sep", "Oct", "Nov", "Dec"), 1)}
_CLF = re.compile(r"(\d{2})/(\w{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2})(\.\d+)?(?: ([+-]\d{4}))?")


def clf_time(text: str) -> float:
    """``10/Oct/2026:13:55:36 +0000`` (optionally with ``.mmm``) as Unix time."""
    m = _CLF.fullmatch(text.strip())
    if m is None:
        raise ValueError(text)
    day, mon, year, hh, mm, ss, frac, zone = m.groups()
    if mon not in _MONTHS:
        raise ValueError(text)
    t = timegm((int(year), _MONTHS[mon], int(day), int(hh), int(mm), int(ss)))
    if frac:
        t += float(frac)
    if zone:
        sign = -1 if zone[0] == "-" else 1
        t -= sign * (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60)
    return t


_VAR = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def compile_nginx(log_format: str) -> tuple[re.Pattern, list[str]]:
    """A regex for lines written by ``log_format``, and the variable of each group."""
    parts: list[str] = []
    names: list[str] = []
    pos = 0
    tokens = list(_VAR.finditer(log_format))
    for k, m in enumerate(tokens):
        literal = log_format[pos:m.start()]
        parts.append(re.escape(literal))
        name = m.group(1) or m.group(2)
        after = log_format[m.end():tokens[k + 1].start()] if k + 1 < len(tokens) else \
            log_format[m.end():]
        if name.startswith("upstream_"):
            # One value per upstream tried: "0.004, 0.010", with " : " between groups.
            pattern = r"([^ ,]+(?:(?:, | : )[^ ,]+)*)"
        elif not after:
            pattern = "(.*)" if k + 1 == len(tokens) else "(.*?)"
        elif after[0] != " " or not (name.startswith("http_") or
                                     name in ("time_local", "request")):
            # Up to the character that follows in the format: nginx escapes a '"' inside a
            # value as \x22, and no value it logs in brackets holds a ']'. A class that
            # cannot cross the delimiter also keeps a hostile line from making the regex
            # backtrack over every way to split it (a lazy ".*?" per field is polynomial).
            stop = after[0]
            pattern = f"([^{re.escape(stop)}]*)"
        else:
            # Values with spaces, followed by a space: "GET / HTTP/1.1", a user agent.
            pattern = "(.*?)"
        parts.append(pattern)
        names.append(name)
        pos = m.end()
    parts.append(re.escape(log_format[pos:]))
    return re.compile("".join(parts) + r"\s*$"), names


def _last(value: str) -> str:
    """The last of nginx's per-upstream list ("a, b : c")."""
    return value.replace(" : ", ", ").rsplit(", ", 1)[-1].strip()


def _nginx(f, log_format: str, key: str) -> Iterator[Row | None]:
    regex, names = compile_nginx(log_format)
    where = {name: i + 1 for i, name in enumerate(names)}
    if not any(t in where for t in ("msec", "time_iso8601", "time_local")):
        raise _Bad("log_format has no time: add $msec (best), $time_iso8601 or $time_local")
    if "upstream_response_time" not in where and "request_time" not in where:
        raise _Bad("log_format has no upstream time: add $upstream_response_time "
                   "(or $request_time)")
    kind, header = _key_of(key)
    key_group = None
    if kind == "path" or kind == "ip":
        key_group = where.get("remote_addr") if kind == "ip" else \
            (where.get("request_uri") or where.get("uri") or where.get("request"))
    elif kind == "header":
        key_group = where.get("http_" + (header or "").replace("-", "_"))
    elif kind == "cookie":
        key_group = where.get("cookie_" + key[7:])
    if key_group is None:
        raise _Bad(f"log_format does not record the key {key!r}")
    key_is_request = names[key_group - 1] == "request"
    msec, iso, local = where.get("msec"), where.get("time_iso8601"), where.get("time_local")
    g_rt, g_urt = where.get("request_time"), where.get("upstream_response_time")
    g_addr, g_status = where.get("upstream_addr"), where.get("status")
    g_method, g_request = where.get("request_method"), where.get("request")
    jitter = random.Random("lbctl-replay").random
    match = regex.match
    for raw in lines(f):
        if raw is None:
            yield None
            continue
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line.strip():
            continue
        m = match(line)
        if m is None:
            yield None
            continue
        try:
            if msec:
                end = _time(m.group(msec), MAX_EPOCH)
                whole = False
            elif iso:
                end = datetime.fromisoformat(m.group(iso).replace("Z", "+00:00")).timestamp()
                whole = True
            else:
                end = clf_time(m.group(local))
                whole = True
            rt = _time(m.group(g_rt), MAX_TIME) if g_rt and m.group(g_rt) != "-" else None
            urt = None
            attempts = 1
            if g_urt:
                value = m.group(g_urt)
                if value and value != "-":
                    attempts = value.count(",") + value.count(":") + 1
                    last = _last(value)
                    urt = _time(last, MAX_TIME) if last != "-" else None
            if whole:
                end += jitter()
            start = end - (rt if rt is not None else (urt or 0.0))
            if not 0.0 <= start <= MAX_EPOCH:
                raise ValueError(start)
            status = int(m.group(g_status)) if g_status else 200
            backend = _last(m.group(g_addr)) if g_addr else ""
            if backend == "-":
                backend = ""
            if g_method:
                method = m.group(g_method)
            elif g_request:
                method = m.group(g_request).split(" ", 1)[0]
            else:
                method = "GET"
            value = m.group(key_group)
        except (ValueError, IndexError, KeyError, OverflowError, OSError):
            yield None
            continue
        if key_is_request:
            value = value.split(" ")[1] if value.count(" ") >= 1 else value
        if kind == "path":
            value = value.split("?", 1)[0]
        if value == "-":
            value = None
        upstream = urt if urt is not None else (rt if g_urt is None else None)
        error = upstream is not None and status >= 500
        clean = attempts == 1 and not error
        yield (start, value, method in IDEMPOTENT, backend, upstream, clean, error)


_HAPROXY = re.compile(
    # The lookbehind: an address starts a token, so a long run of hex digits is tried once,
    # not from each of its characters (quadratic on a hostile line).
    r"(?<![0-9a-fA-F.:])(?P<ip>[0-9a-fA-F.:]+?):\d+ \[(?P<date>\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2}(?:\.\d+)?)\] "
    r"\S+ (?P<backend>[^/\s]+)/(?P<server>\S+) "
    r"(?P<tr>-?\d+)/(?P<tw>-?\d+)/(?P<tc>-?\d+)/(?P<tresp>-?\d+)/\+?(?P<ta>-?\d+) "
    r"(?P<status>-?\d+) \S+ \S+ \S+ \S+ \S+/\S+/\S+/\S+/\+?(?P<retries>\d+) .*?"
    r"\"(?P<request>[^\"]*)\"")


def _haproxy(f, key: str) -> Iterator[Row | None]:
    kind, _ = _key_of(key)
    if kind not in ("path", "ip"):
        raise _Bad(f"cannot give the key {key!r}: HAProxy's HTTP log is read for the path "
                   f"and the client IP only")
    search = _HAPROXY.search
    for raw in lines(f):
        if raw is None:
            yield None
            continue
        line = raw.decode("utf-8", "replace")
        if not line.strip():
            continue
        m = search(line)
        if m is None:
            yield None
            continue
        try:
            accept = clf_time(m.group("date"))
            tr, tw, tc, tresp = (int(m.group(g)) for g in ("tr", "tw", "tc", "tresp"))
            status = int(m.group("status"))
            # Timers in milliseconds; beyond MAX_TIME they are not a request's.
            if not 0.0 <= accept <= MAX_EPOCH or \
                    max(tr, tw, tc, tresp) > MAX_TIME * 1000:
                raise ValueError(line)
        except (ValueError, KeyError, OverflowError):
            yield None
            continue
        request = m.group("request")
        method, _, rest = request.partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0] if rest else "/"
        value = path if kind == "path" else m.group("ip")
        server = m.group("server")
        start = accept + max(tr, 0) / 1000.0
        upstream = tresp / 1000.0 if tresp >= 0 and server != "<NOSRV>" else None
        backend = "" if server == "<NOSRV>" else server
        error = upstream is not None and status >= 500
        clean = int(m.group("retries")) == 0 and not error and tc >= 0
        if upstream is not None:
            # The server's clock starts once the connection is up: accept + TR + Tw + Tc.
            start_server = accept + (max(tr, 0) + max(tw, 0) + max(tc, 0)) / 1000.0
            yield (start, value, method in IDEMPOTENT, backend, upstream, clean, error,
                   start_server)
        else:
            yield (start, value, method in IDEMPOTENT, backend, None, False, False)
