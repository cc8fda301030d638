"""Scenarios: a TOML file (or a few CLI options) read into one validated, immutable ``Scenario``.

Every problem is a ``UserError`` (exit 2) naming the file, the key path and what was expected,
e.g. ``slow.toml: backends[0].service.mean: expected a duration such as "150ms" ...``. Durations
use the config file's spelling (``lbctl.units``). Defaults are documented where each field is
defined, below.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from lbctl.balancing import ALGORITHMS
from lbctl.balancing.backend import MAX_WEIGHT, MIN_WEIGHT
from lbctl.config.model import Outlier
from lbctl.errors import UserError
from lbctl.units import DURATION_EXPECTED, parse_duration

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

DISTRIBUTIONS = ("exponential", "constant", "uniform", "lognormal", "empirical")
EVENTS = ("down", "up", "slow", "fail", "blackhole", "recover")
ARRIVALS = ("poisson", "uniform")


@dataclass(frozen=True)
class Service:
    """A service-time distribution at speed 1. ``mean`` is always filled in (for the load)."""
    dist: str = "exponential"
    mean: float = 0.010                     # seconds; exponential, constant, lognormal
    p99: float = 0.0                        # lognormal only
    low: float = 0.0                        # uniform only (``min``)
    high: float = 0.0                       # uniform only (``max``)
    values: tuple[float, ...] = ()          # empirical only: drawn with replacement

    def describe(self) -> str:
        if self.dist == "lognormal":
            return f"lognormal mean {_ms(self.mean)}, p99 {_ms(self.p99)}"
        if self.dist == "uniform":
            return f"uniform {_ms(self.low)}-{_ms(self.high)}"
        if self.dist == "empirical":
            return f"empirical ({len(self.values)} samples, mean {_ms(self.mean)})"
        return f"{self.dist} mean {_ms(self.mean)}"


@dataclass(frozen=True)
class BackendSpec:
    """One simulated backend (groups are expanded into these)."""
    name: str
    service: Service = field(default_factory=Service)
    concurrency: int = 1                    # requests served at once; more wait in FIFO order
    speed: float = 1.0                      # multiplies the service rate (3.0 = three times faster)
    weight: float = 1.0
    backup: bool = False

    @property
    def capacity(self) -> float:
        """Requests per second this backend can serve flat out."""
        return self.concurrency * self.speed / self.service.mean


@dataclass(frozen=True)
class Workload:
    arrivals: str = "poisson"               # "poisson" | "uniform" (constant spacing)
    rate: float = 100.0                     # requests per second, whole pool
    requests: int = 0                       # stop after this many arrivals...
    duration: float = 0.0                   # ...or after this much virtual time
    keys: int = 1000                        # distinct request keys, for consistent_hash


@dataclass(frozen=True)
class Event:
    """A timeline event: at time ``at``, ``action`` happens to ``backends``."""
    at: float
    action: str                             # down | up | slow | fail | blackhole | recover
    backends: tuple[str, ...]
    factor: float = 1.0                     # slow: service takes ``factor`` times longer
    fraction: float = 1.0                   # fail, blackhole: share of requests affected
    latency: float = 0.001                  # fail: how fast the 5xx comes back


@dataclass(frozen=True)
class Proxy:
    """The proxy's side: what ``serve`` would do. Defaults follow ``lbctl.config.model``."""
    retries: int = 1                        # extra attempts on another backend
    # What retries are spent on, as serve's retry_on: "5xx" and "timeout" are opt-in there
    # too ("connect"/"reset" never happen here: a down backend is not selected).
    retry_on: tuple[str, ...] = ("connect", "reset")
    timeout: float = math.inf               # per attempt (serve's timeouts.response); inf = none
    slow_start: float = 0.0
    panic_threshold: float = 0.0
    ewma_decay: float = 10.0
    # Passive ejection, read like serve's [pools.X.outlier] (same keys, same defaults) and
    # run by the real OutlierDetector; None = off (serve's default too).
    outlier: Outlier | None = None


@dataclass(frozen=True)
class Scenario:
    backends: tuple[BackendSpec, ...]
    workload: Workload = field(default_factory=Workload)
    algorithms: tuple[str, ...] = tuple(ALGORITHMS)   # default: all
    seed: int = 1
    proxy: Proxy = field(default_factory=Proxy)
    client_timeout: float = math.inf        # the client gives up (an error); inf = never
    timeline: tuple[Event, ...] = ()
    title: str = ""                         # one line for people: where this scenario came from
    configured: str | None = None           # the serve config's algorithm, when one was named

    @property
    def capacity(self) -> float:
        primaries = [b for b in self.backends if not b.backup] or list(self.backends)
        return sum(b.capacity for b in primaries)

    @property
    def load(self) -> float:
        return self.workload.rate / self.capacity

    def with_overrides(self, *, seed: int | None = None, algorithms: Sequence[str] | None = None,
                       requests: int | None = None, duration: float | None = None,
                       rate: float | None = None, load: float | None = None,
                       outlier: bool = True) -> "Scenario":
        """The same scenario with CLI options applied on top (``outlier=False``: without
        passive ejection, to compare)."""
        s, w = self, self.workload
        if not outlier and s.proxy.outlier is not None:
            s = replace(s, proxy=replace(s.proxy, outlier=None))
        if seed is not None:
            s = replace(s, seed=seed)
        if algorithms is not None:
            s = replace(s, algorithms=check_algorithms(algorithms, "--algorithms"))
        if requests is not None:
            w = replace(w, requests=requests, duration=0.0)
        if duration is not None:
            w = replace(w, duration=duration, requests=0)
        if rate is not None:
            w = replace(w, rate=rate)
        if load is not None:
            w = replace(w, rate=load * s.capacity)
        return replace(s, workload=w)


def _ms(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:g}s"
    return f"{seconds * 1000:.3g}ms"


# ---- built-in scenarios -----------------------------------------------------------------


def default_scenario() -> Scenario:
    """Ten backends, one of them three times slower, at 80% load, with a 2 s client timeout.

    Round-robin and random keep sending the slow backend a tenth of the traffic although it can
    only serve about 3.6% of it, so its queue grows until requests time out; the algorithms that
    read load or latency steer around it. That contrast is the lesson.
    """
    service = Service("exponential", mean=0.020)
    backends = [BackendSpec(f"b{i}", service) for i in range(1, 10)]
    backends.append(BackendSpec("slow", service, speed=1 / 3))
    # weighted would repeat round_robin (equal weights) and consistent_hash answers another
    # question (stickiness), so the lesson compares the five that spread load.
    s = Scenario(backends=tuple(backends),
                 workload=Workload(requests=40_000),
                 algorithms=("round_robin", "random", "least_conn", "p2c", "ewma"),
                 proxy=Proxy(retries=1, timeout=1.0, retry_on=("connect", "reset", "timeout")),
                 client_timeout=2.0,
                 title="built-in: 10 backends, one 3x slower; 1s proxy timeout, 1 retry on "
                       "timeout")
    return s.with_overrides(load=0.8)


def scenario_from_options(*, backends: int, load: float | None = None,
                          rate: float | None = None, requests: int | None = None,
                          mean: float = 0.010, concurrency: int = 1,
                          dist: str = "exponential") -> Scenario:
    """A quick pool of identical backends, e.g. ``--backends 10 --load 0.9``."""
    if backends < 1:
        raise UserError("--backends: expected at least 1")
    if dist not in ("exponential", "constant"):
        raise UserError('--service: expected "exponential" or "constant"')
    service = Service(dist, mean=mean)
    specs = tuple(BackendSpec(f"b{i}", service, concurrency=concurrency)
                  for i in range(1, backends + 1))
    s = Scenario(backends=specs, workload=Workload(requests=requests or 100_000))
    if rate is None:
        s = s.with_overrides(load=0.9 if load is None else load)
    else:
        s = s.with_overrides(rate=rate)
    return replace(s, title=f"{backends} identical backends, {service.describe()}, "
                            f"concurrency {concurrency}, {s.load:.0%} load")


def check_algorithms(names: Sequence[str], path: str) -> tuple[str, ...]:
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise UserError(f"{path}: expected at least one algorithm")
    for name in names:
        if name not in ALGORITHMS:
            raise UserError(f"{path}: unknown algorithm {name!r}{_suggest(name, ALGORITHMS)}; "
                            f"expected one of {', '.join(ALGORITHMS)}")
    if len(set(names)) != len(names):
        raise UserError(f"{path}: an algorithm is named twice")
    return tuple(names)


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---- reading a scenario file ------------------------------------------------------------


class _Reader:
    """Validation helpers that know the file name, so every error names file and key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> UserError:
        return UserError(f"{self.source}: {path}: {message}")

    def table(self, value: Any, path: str, allowed: Sequence[str]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a table, not {_kind(value)}")
        for key in value:
            if key not in allowed:
                prefix = f"{path}." if path else ""
                raise self.fail(f"{prefix}{key}", f"unknown key{_suggest(key, allowed)}; "
                                f"expected one of {', '.join(allowed)}")
        return value

    def number(self, value: Any, path: str, *, minimum: float = 0.0, above: bool = False,
               maximum: float = math.inf, integer: bool = False) -> float:
        what = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (integer and not isinstance(value, int)) or value != value:
            raise self.fail(path, f"expected {what}, not {_kind(value)}")
        if value < minimum or (above and value == minimum) or value > maximum:
            bound = f"above {minimum:g}" if above else f"at least {minimum:g}"
            if maximum != math.inf:
                bound += f" and at most {maximum:g}"
            raise self.fail(path, f"expected {what} {bound}, not {value!r}")
        return value

    def duration(self, value: Any, path: str, *, positive: bool = True) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.fail(path, f"expected {exc}, not {value!r}") from None
        if positive and seconds <= 0:
            raise self.fail(path, f"expected {DURATION_EXPECTED} above zero, not {value!r}")
        return seconds

    def choice(self, value: Any, path: str, choices: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in choices:
            hint = _suggest(value, choices) if isinstance(value, str) else ""
            raise self.fail(path, f"expected one of {', '.join(map(repr, choices))}{hint}, "
                                  f"not {value!r}")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, not {_kind(value)}")
        return value


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: f"{value!r}",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _read_toml(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None


def load_scenario(path: str) -> Scenario:
    """Read and validate a scenario file."""
    data = _read_toml(path)
    return parse_scenario(data, path, base_dir=os.path.dirname(os.path.abspath(path)))


def parse_scenario(data: Mapping[str, Any], source: str = "<scenario>", *,
                   base_dir: str = ".") -> Scenario:
    r = _Reader(source)
    top = r.table(data, "", ["seed", "algorithms", "config", "pool", "workload", "backends",
                             "timeline", "proxy", "client"])

    seed = int(r.number(top.get("seed", 1), "seed", minimum=0, integer=True))

    # A serve config's pool: names, weights and algorithm settings come from there.
    pool_settings = None
    if "config" in top or "pool" in top:
        if "config" not in top or "pool" not in top:
            missing = "config" if "config" not in top else "pool"
            raise r.fail(missing, 'expected both config = "lb.toml" and pool = "NAME"')
        config_path = r.string(top["config"], "config")
        if not os.path.isabs(config_path):
            config_path = os.path.join(base_dir, config_path)
        pool_settings = pool_from_config(config_path, r.string(top["pool"], "pool"))

    proxy = Proxy() if pool_settings is None else pool_settings.proxy
    if "proxy" in top:
        t = r.table(top["proxy"], "proxy",
                    ["retries", "retry_on", "timeout", "slow_start", "panic_threshold",
                     "ewma_decay", "outlier"])
        changes: dict[str, Any] = {}
        if "retries" in t:
            changes["retries"] = int(r.number(t["retries"], "proxy.retries", integer=True,
                                              maximum=10))
        if "retry_on" in t:
            changes["retry_on"] = _parse_retry_on(r, t["retry_on"])
        if "timeout" in t:
            changes["timeout"] = r.duration(t["timeout"], "proxy.timeout")
        if "slow_start" in t:
            changes["slow_start"] = r.duration(t["slow_start"], "proxy.slow_start",
                                               positive=False)
        if "panic_threshold" in t:
            changes["panic_threshold"] = float(r.number(t["panic_threshold"],
                                                        "proxy.panic_threshold", maximum=100))
        if "ewma_decay" in t:
            changes["ewma_decay"] = r.duration(t["ewma_decay"], "proxy.ewma_decay")
        if "outlier" in t:
            changes["outlier"] = _parse_outlier(r, t["outlier"], proxy.outlier)
        proxy = replace(proxy, **changes)

    client_timeout = math.inf
    if "client" in top:
        t = r.table(top["client"], "client", ["timeout"])
        if "timeout" in t:
            client_timeout = r.duration(t["timeout"], "client.timeout")

    backends = _parse_backends(r, top.get("backends"), pool_settings, base_dir)
    names = [b.name for b in backends]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise r.fail("backends", f"backend name {dup!r} is used twice")

    if "algorithms" in top:
        algos = top["algorithms"]
        if isinstance(algos, str):
            algos = [algos]
        if not isinstance(algos, list) or not all(isinstance(a, str) for a in algos):
            raise r.fail("algorithms", "expected a list of algorithm names")
        try:
            algorithms = check_algorithms(algos, "algorithms")
        except UserError as exc:
            raise UserError(f"{source}: {exc}") from None
    else:
        algorithms = tuple(ALGORITHMS)

    capacity = sum(b.capacity for b in backends if not b.backup) or \
        sum(b.capacity for b in backends)
    workload = _parse_workload(r, top.get("workload", {}), capacity)
    timeline = _parse_timeline(r, top.get("timeline", []), set(names))
    for i, ev in enumerate(timeline):
        if ev.action == "blackhole" and proxy.timeout == math.inf and client_timeout == math.inf:
            raise r.fail(f"timeline[{i}].event", "a black hole never answers: set "
                         "client.timeout or proxy.timeout so the requests sent to it end")

    title = f"{source}: {len(backends)} backends, {workload.rate / capacity:.0%} load"
    return Scenario(backends=backends, workload=workload, algorithms=algorithms, seed=seed,
                    proxy=proxy, client_timeout=client_timeout, timeline=timeline, title=title,
                    configured=pool_settings.algorithm if pool_settings else None)


def _parse_retry_on(r: _Reader, value: Any) -> tuple[str, ...]:
    """``proxy.retry_on``, read by the same kind as serve's ``pools.X.retry_on``."""
    from lbctl.config.kinds import ChoiceList, Invalid
    from lbctl.config.problems import describe
    from lbctl.config.schema import RETRY_ON
    kind = ChoiceList(RETRY_ON)
    try:
        return kind.parse(value)
    except Invalid as exc:
        hint = f"; did you mean {exc.hint!r}?" if getattr(exc, "hint", None) else ""
        raise r.fail("proxy.retry_on", f"expected {kind.expected}, found {describe(value)}{hint}")


def _parse_outlier(r: _Reader, value: Any, base: Outlier | None) -> Outlier:
    """``[proxy.outlier]``: read by the serve config's own declaration of
    ``[pools.X.outlier]`` (``lbctl.config.schema.OUTLIER``), so keys, kinds, defaults and
    messages cannot drift from what ``serve`` accepts. The first problem is the error. Keys
    not given keep the serve config's value when the scenario names one (``base``), else
    the defaults of ``lbctl.config.model.Outlier``."""
    from lbctl.config.problems import Problems, describe
    from lbctl.config.schema import OUTLIER
    from lbctl.units import format_duration
    problems = Problems(r.source)
    read = OUTLIER.read(value, "proxy.outlier", problems)
    if problems:
        raise UserError(str(problems.items[0]))
    outlier = replace(base or Outlier(), **read.values)
    # The same cross-check as the config loader's.
    if outlier.max_ejection_time < outlier.ejection_time:
        found = describe(value["max_ejection_time"]) if "max_ejection_time" in value else \
            f"the default {format_duration(outlier.max_ejection_time)}"
        raise r.fail("proxy.outlier.max_ejection_time",
                     f"expected at least proxy.outlier.ejection_time "
                     f"({format_duration(outlier.ejection_time)}), found {found}")
    return outlier


def _parse_service(r: _Reader, value: Any, path: str, base_dir: str) -> Service:
    t = r.table(value, path, ["dist", "mean", "p99", "min", "max", "file", "values"])
    dist = r.choice(t.get("dist", "exponential"), f"{path}.dist", DISTRIBUTIONS)
    allowed = {"exponential": {"dist", "mean"}, "constant": {"dist", "mean"},
               "lognormal": {"dist", "mean", "p99"}, "uniform": {"dist", "min", "max"},
               "empirical": {"dist", "file", "values"}}[dist]
    for key in t:
        if key not in allowed:
            raise r.fail(f"{path}.{key}", f"not used by dist = {dist!r}; expected "
                                          f"{', '.join(sorted(allowed - {'dist'}))}")

    def need(key: str) -> Any:
        if key not in t:
            raise r.fail(f"{path}.{key}", f"missing; dist = {dist!r} needs it")
        return t[key]

    if dist in ("exponential", "constant"):
        return Service(dist, mean=r.duration(need("mean"), f"{path}.mean"))
    if dist == "lognormal":
        mean = r.duration(need("mean"), f"{path}.mean")
        p99 = r.duration(need("p99"), f"{path}.p99")
        # A lognormal with mean m has p99/m = exp(2.326 s - s^2/2), at most e^(2.326^2/2) ~ 15.
        if not mean < p99 <= mean * LOGNORMAL_MAX_RATIO:
            raise r.fail(f"{path}.p99", f"expected a duration above the mean and at most "
                         f"{LOGNORMAL_MAX_RATIO:.1f} x the mean (a lognormal cannot be more "
                         f"skewed), not {t['p99']!r}")
        return Service(dist, mean=mean, p99=p99)
    if dist == "uniform":
        low = r.duration(need("min"), f"{path}.min", positive=False)
        high = r.duration(need("max"), f"{path}.max")
        if high < low:
            raise r.fail(f"{path}.max", f"expected at least min ({t['min']!r}), not {t['max']!r}")
        return Service(dist, mean=(low + high) / 2, low=low, high=high)
    # empirical: a list inline, or a file of one duration (or number of seconds) per line.
    if ("file" in t) == ("values" in t):
        raise r.fail(path, 'dist = "empirical" needs exactly one of file = "..." or values = [...]')
    if "values" in t:
        raw = t["values"]
        if not isinstance(raw, list):
            raise r.fail(f"{path}.values", f"expected a list of durations, not {_kind(raw)}")
        values = tuple(r.duration(v, f"{path}.values[{i}]", positive=False)
                       for i, v in enumerate(raw))
    else:
        values = _read_samples(r, t["file"], f"{path}.file", base_dir)
    if not values or sum(values) <= 0:
        raise r.fail(path, "expected at least one sample above zero")
    return Service(dist, mean=sum(values) / len(values), values=values)


LOGNORMAL_MAX_RATIO = math.exp(2.3263478740408408 ** 2 / 2)


def _read_samples(r: _Reader, name: Any, path: str, base_dir: str) -> tuple[float, ...]:
    name = r.string(name, path)
    full = name if os.path.isabs(name) else os.path.join(base_dir, name)
    try:
        with open(full, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise r.fail(path, f"cannot read {name!r}: {exc.strerror or exc}") from None
    values = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            number: Any = float(text)
        except ValueError:
            number = text
        try:
            values.append(parse_duration(number))
        except ValueError as exc:
            raise r.fail(path, f"{name} line {n}: expected {exc}, not {text!r}") from None
    return tuple(values)


def _parse_backends(r: _Reader, value: Any, pool_settings, base_dir: str
                    ) -> tuple[BackendSpec, ...]:
    if value is None:
        if pool_settings is None:
            raise r.fail("backends", "missing; expected at least one [[backends]] group "
                                     '(or config = "lb.toml" and pool = "NAME")')
        value = [{}]
    if not isinstance(value, list) or not value:
        raise r.fail("backends", "expected one or more [[backends]] tables")
    specs: list[BackendSpec] = []
    counter = 0
    for gi, group in enumerate(value):
        path = f"backends[{gi}]"
        g = r.table(group, path, ["name", "count", "concurrency", "service", "speed",
                                  "weight", "backup"])
        default_count = len(pool_settings.backends) if (pool_settings and len(value) == 1) else 1
        count = int(r.number(g.get("count", default_count), f"{path}.count", minimum=1,
                             integer=True, maximum=100_000))
        concurrency = int(r.number(g.get("concurrency", 1), f"{path}.concurrency", minimum=1,
                                   integer=True))
        speed = float(r.number(g.get("speed", 1.0), f"{path}.speed", above=True))
        weight = float(r.number(g.get("weight", 1.0), f"{path}.weight", minimum=MIN_WEIGHT,
                                maximum=MAX_WEIGHT))
        backup = g.get("backup", False)
        if not isinstance(backup, bool):
            raise r.fail(f"{path}.backup", f"expected true or false, not {_kind(backup)}")
        # No service table at all: exponential with a 10 ms mean (the Service defaults).
        service = _parse_service(r, g["service"], f"{path}.service", base_dir) \
            if "service" in g else Service()
        prefix = r.string(g["name"], f"{path}.name") if "name" in g else None
        for k in range(count):
            counter += 1
            if prefix is None:
                name = f"b{counter}"
            else:
                name = prefix if count == 1 else f"{prefix}{k + 1}"
            specs.append(BackendSpec(name, service, concurrency, speed, weight, backup))
    if pool_settings is not None:
        # The config's pool decides names, weights and backup flags; the groups say how each
        # backend behaves, in the config's order.
        if len(specs) != len(pool_settings.backends):
            raise r.fail("backends", f"the groups describe {len(specs)} backends but pool "
                         f"{pool_settings.name!r} in {pool_settings.path} has "
                         f"{len(pool_settings.backends)}")
        specs = [replace(s, name=name, weight=weight, backup=bk)
                 for s, (name, weight, bk) in zip(specs, pool_settings.backends)]
    return tuple(specs)


def _parse_workload(r: _Reader, value: Any, capacity: float) -> Workload:
    t = r.table(value, "workload", ["arrivals", "rate", "load", "requests", "duration", "keys"])
    arrivals = r.choice(t.get("arrivals", "poisson"), "workload.arrivals", ARRIVALS)
    if "rate" in t and "load" in t:
        raise r.fail("workload.load", "expected rate or load, not both")
    if "rate" in t:
        rate = float(r.number(t["rate"], "workload.rate", above=True))
    else:
        # Load is relative to what the primaries can serve flat out.
        rate = float(r.number(t.get("load", 0.8), "workload.load", above=True)) * capacity
    if "requests" in t and "duration" in t:
        raise r.fail("workload.duration", "expected requests or duration, not both")
    requests, duration = 0, 0.0
    if "duration" in t:
        duration = r.duration(t["duration"], "workload.duration")
    else:
        requests = int(r.number(t.get("requests", 100_000), "workload.requests", minimum=1,
                                integer=True, maximum=100_000_000))
    keys = int(r.number(t.get("keys", 1000), "workload.keys", minimum=1, integer=True))
    return Workload(arrivals, rate, requests, duration, keys)


def _parse_timeline(r: _Reader, value: Any, names: set[str]) -> tuple[Event, ...]:
    if not isinstance(value, list):
        raise r.fail("timeline", "expected [[timeline]] tables")
    events = []
    for i, item in enumerate(value):
        path = f"timeline[{i}]"
        t = r.table(item, path, ["at", "backend", "event", "factor", "fraction", "latency"])
        if "at" not in t or "event" not in t or "backend" not in t:
            missing = next(k for k in ("at", "backend", "event") if k not in t)
            raise r.fail(f"{path}.{missing}", "missing")
        at = r.duration(t["at"], f"{path}.at", positive=False)
        action = r.choice(t["event"], f"{path}.event", EVENTS)
        targets = t["backend"] if isinstance(t["backend"], list) else [t["backend"]]
        for k, name in enumerate(targets):
            where = f"{path}.backend" + (f"[{k}]" if isinstance(t["backend"], list) else "")
            if not isinstance(name, str) or name not in names:
                hint = _suggest(name, names) if isinstance(name, str) else ""
                raise r.fail(where, f"no backend named {name!r}{hint}")
        allowed = {"slow": {"factor"}, "fail": {"fraction", "latency"},
                   "blackhole": {"fraction"}}.get(action, set())
        for key in ("factor", "fraction", "latency"):
            if key in t and key not in allowed:
                raise r.fail(f"{path}.{key}", f"not used by event = {action!r}")
        factor = float(r.number(t.get("factor", 1.0), f"{path}.factor", above=True))
        fraction = float(r.number(t.get("fraction", 1.0), f"{path}.fraction", maximum=1.0))
        latency = r.duration(t.get("latency", 0.001), f"{path}.latency", positive=False)
        if action == "slow" and "factor" not in t:
            raise r.fail(f"{path}.factor", 'missing; event = "slow" needs it (3 = three '
                                           'times slower)')
        events.append(Event(at, action, tuple(targets), factor, fraction, latency))
    # Stable: events at the same time apply in file order.
    return tuple(sorted(events, key=lambda e: e.at))


# ---- a serve config's pool ----------------------------------------------------------------


@dataclass(frozen=True)
class PoolSettings:
    name: str
    path: str
    algorithm: str
    backends: tuple[tuple[str, float, bool], ...]      # (name, weight, backup), config order
    proxy: Proxy


def pool_from_config(path: str, pool: str) -> PoolSettings:
    """The simulation-relevant part of one pool of a serve config, read by the same loader
    as ``lbctl serve`` (a ConfigError is a UserError: every problem listed, exit 2)."""
    from lbctl.config.loader import load_config
    config = load_config(path)
    if pool not in config.pools:
        raise _Reader(path).fail("pool", f"no pool {pool!r} in {path}"
                                         f"{_suggest(pool, list(config.pools))}")
    pc = config.pools[pool]
    if not pc.backends:
        # Discovered backends are only known to a running serve; nothing here resolves them.
        raise _Reader(path).fail("pool", f"pool {pool!r} of {path} lists no backends (they come "
                                         "from its [discovery]); choose a pool with "
                                         "[[backends]], or describe the backends here")
    return PoolSettings(pool, path, pc.algorithm,
                        tuple((b.name, b.weight, b.backup) for b in pc.backends),
                        Proxy(pc.retries, pc.retry_on, pc.timeouts.response, pc.slow_start,
                              pc.panic_threshold, pc.ewma_decay, pc.outlier))
