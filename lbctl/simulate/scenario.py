"""Scenarios: a TOML file (or a few CLI options) read into one validated, immutable ``Scenario``.

A scenario is checked the way ``lbctl validate`` checks a config (the tables are declared in
``schema.py`` with the config's own ``Section`` and kinds): every problem is collected, and the
``ConfigError`` raised (exit 2) lists each as ``FILE: KEY.PATH: expected ..., found ...``.

The proxy's side of a scenario is serve's own ``model.PoolConfig``: with no ``[proxy]``
table (and no ``config``) every setting is serve's default, so an attempt times out after
serve's 30 s, retries go to connect failures and resets, and there are no health checks.
Defaults of the simulated world are documented where each field is defined, below.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from lbctl.balancing import ALGORITHMS
from lbctl.config.loader import ConfigError, read_toml
from lbctl.config.model import PoolConfig, Timeouts
from lbctl.config.problems import Problem, Problems, describe, index_path, key_path, suggest
from lbctl.errors import UserError
from lbctl.files import FileProblem, read_bytes
from lbctl.simulate import schema
from lbctl.units import format_duration, parse_duration

LOGNORMAL_MAX_RATIO = math.exp(2.3263478740408408 ** 2 / 2)
MAX_REQUESTS = 100_000_000          # per run: the records of one run stay in memory
MAX_BACKENDS = 100_000              # simulated backends in all, every group together
MAX_SAMPLES_FILE = 256 * 1024 * 1024   # bytes: millions of samples, not /dev/zero


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
class Fault:
    """How a backend fails, for a share of the attempts sent to it."""
    mode: str                               # refuse | reset | blackhole | error | slow
    fraction: float = 1.0                   # share of attempts affected (slow: all)
    latency: float = 0.001                  # refuse, reset, error: how soon it comes back
    factor: float = 1.0                     # slow: service takes this many times longer


@dataclass(frozen=True)
class BackendSpec:
    """One simulated backend (groups are expanded into these)."""
    name: str
    service: Service = field(default_factory=Service)
    concurrency: int = 1                    # requests served at once; more wait in FIFO order
    speed: float = 1.0                      # multiplies the service rate (3.0 = three times faster)
    weight: float = 1.0
    backup: bool = False
    failure: Fault | None = None            # failing this way from the start; None = healthy

    @property
    def capacity(self) -> float:
        """Requests per second this backend can serve flat out."""
        return self.concurrency * self.speed / self.service.mean


@dataclass(frozen=True)
class Workload:
    arrivals: str = "poisson"               # "poisson" | "uniform" (constant spacing) | "replay"
    rate: float = 100.0                     # requests per second, whole pool
    requests: int = 0                       # stop after this many arrivals...
    duration: float = 0.0                   # ...or after this much virtual time
    keys: int = 1000                        # distinct request keys, for consistent_hash
    # A replayed access log (arrivals, keys, methods): see replay.py. None = synthetic.
    trace: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Event:
    """A timeline event: at time ``at``, ``action`` happens to ``backends``."""
    at: float
    action: str                 # down | up | refuse | reset | blackhole | error | slow | recover
    backends: tuple[str, ...]
    factor: float = 1.0         # slow: service takes ``factor`` times longer
    fraction: float = 1.0       # refuse, reset, blackhole, error: share of attempts affected
    latency: float = 0.001      # refuse, reset, error: how soon the failure comes back
    mode: str = "refuse"        # down: how the backend fails until it is up again


def proxy_settings(*, timeout: float | None = None, **changes: Any) -> PoolConfig:
    """Serve's pool settings for a simulated pool: ``PoolConfig`` defaults, with ``changes``
    (``timeout`` is a shorthand for ``timeouts=Timeouts(response=...)``)."""
    if timeout is not None:
        changes["timeouts"] = replace(changes.get("timeouts", Timeouts()), response=timeout)
    return PoolConfig(name="sim", backends=(), **changes)


@dataclass(frozen=True)
class Scenario:
    backends: tuple[BackendSpec, ...]
    workload: Workload = field(default_factory=Workload)
    algorithms: tuple[str, ...] = tuple(ALGORITHMS)   # default: all
    seed: int = 1
    # Serve's settings for the pool: retries, retry_on, timeouts, health, outlier, slow
    # start, panic threshold, ewma_decay (a config's pool, or [proxy] over serve's defaults).
    proxy: PoolConfig = field(default_factory=proxy_settings)
    client_timeout: float = math.inf        # the client gives up (an error); inf = never
    # serve's workers: each balances with its own pool (in-flight counts, EWMA, rotation)
    # and gets a share of the requests at random, as the kernel spreads connections; the
    # master's health verdicts and ejections reach all of them. 1: one process.
    workers: int = 1
    timeline: tuple[Event, ...] = ()
    title: str = ""                         # one line for people: where this scenario came from
    configured: str | None = None           # the serve config's algorithm, when one was named
    config_path: str | None = None          # that config file, for the suggested change
    pool_name: str | None = None            # and its pool

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
                       outlier: bool = True, workers: int | None = None) -> "Scenario":
        """The same scenario with CLI options applied on top (``outlier=False``: without
        passive ejection, to compare)."""
        s, w = self, self.workload
        if workers is not None:
            s = replace(s, workers=workers)
        if not outlier and s.proxy.outlier is not None:
            s = replace(s, proxy=replace(s.proxy, outlier=None))
        if seed is not None:
            s = replace(s, seed=seed)
        if algorithms is not None:
            s = replace(s, algorithms=check_algorithms(algorithms, "--algorithms"))
        if w.trace is not None:
            if rate is not None or load is not None:
                raise UserError("--rate and --load: a replay's arrivals come from its log; "
                                "use --speedup to replay it faster")
            if requests is not None or duration is not None:
                trace = w.trace.cut(requests, duration)
                w = replace(w, trace=trace, requests=len(trace.times),
                            rate=len(trace.times) / trace.span if trace.span > 0 else w.rate)
            return replace(s, workload=w)
        if requests is not None:
            w = replace(w, requests=requests, duration=0.0)
        if duration is not None:
            w = replace(w, duration=duration, requests=0)
        if rate is not None:
            if not schema.MIN_RATE <= rate <= schema.MAX_RATE:
                raise UserError(f"--rate: expected a number of requests per second from "
                                f"{schema.MIN_RATE:g} to {schema.MAX_RATE:g}, found {rate:g}")
            w = replace(w, rate=rate)
        if load is not None:
            if not 0 < load <= schema.MAX_LOAD:
                raise UserError(f"--load: expected a fraction of the capacity above 0, at most "
                                f"{schema.MAX_LOAD:g}, found {load:g}")
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
                 proxy=proxy_settings(retries=1, timeout=1.0,
                                      retry_on=("connect", "reset", "timeout")),
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
            hint = suggest(name, ALGORITHMS)
            raise UserError(f"{path}: unknown algorithm {name!r}"
                            f"{f' ({hint})' if hint else ''}; expected one of "
                            f"{', '.join(ALGORITHMS)}")
    if len(set(names)) != len(names):
        raise UserError(f"{path}: an algorithm is named twice")
    return tuple(names)


# ---- reading a scenario file ------------------------------------------------------------


def load_scenario(path: str, *, speedup: float | None = None, log_format: str | None = None,
                  replay: str | None = None) -> Scenario:
    """Read and validate a scenario file (a ``ConfigError`` lists every problem). The
    options override the file's ``[workload]`` replay settings (the CLI's flags)."""
    data = read_toml(path)
    return parse_scenario(data, path, base_dir=os.path.dirname(os.path.abspath(path)),
                          speedup=speedup, log_format=log_format, replay=replay)


def parse_scenario(data: Mapping[str, Any], source: str = "<scenario>", *,
                   base_dir: str = ".", speedup: float | None = None,
                   log_format: str | None = None, replay: str | None = None,
                   pool: "PoolSettings | None" = None) -> Scenario:
    """Check a parsed scenario document; raise ``ConfigError`` with every problem found.
    ``pool`` supplies a serve config's pool directly (``--compare``) instead of the
    document's ``config``/``pool`` keys."""
    problems = Problems(source)
    top = schema.SCENARIO.read(dict(data), "", problems)
    values = top.values

    settings = pool
    named = "config" in data or "pool" in data
    if settings is None and named:
        if "config" not in values or "pool" not in values:
            missing = "config" if "config" not in data else "pool" if "pool" not in data else None
            if missing:
                problems.missing(missing, 'both config = "lb.toml" and pool = "NAME" (the serve '
                                          'config whose pool to simulate)')
        else:
            config_path = values["config"]
            if not os.path.isabs(config_path):
                config_path = os.path.join(base_dir, config_path)
            settings = pool_from_config(config_path, values["pool"], problems)

    proxy = settings.pool if settings is not None else proxy_settings()
    raw_proxy = data.get("proxy")
    if isinstance(raw_proxy, dict) and "proxy" in values:
        proxy = _proxy(proxy, values["proxy"], raw_proxy, top.bad, problems)

    client_timeout = values.get("client", {}).get("timeout", math.inf)

    backends, explicit = _backends(data.get("backends"), settings, base_dir, problems)
    if named and settings is None and not backends:
        # The config or its pool is the problem already reported; "missing backends" would
        # only repeat it.
        raise ConfigError(problems.items)

    algorithms = values.get("algorithms", tuple(ALGORITHMS))
    raw_workload = data.get("workload")
    raw_workload = dict(raw_workload) if isinstance(raw_workload, dict) else {}
    workload_values = dict(values.get("workload", {}))
    # The CLI's --replay/--speedup/--log-format go where [workload] would have them.
    for key, option in (("replay", replay), ("speedup", speedup), ("log_format", log_format)):
        if option is not None:
            workload_values[key] = raw_workload[key] = option
    workload, backends = _workload(workload_values, raw_workload, backends, explicit, proxy,
                                   base_dir, problems)

    names = [b.name for b in backends]
    timeline = _timeline(data.get("timeline"), names, problems)

    if problems:
        raise ConfigError(problems.items)
    capacity = sum(b.capacity for b in backends if not b.backup) or \
        sum(b.capacity for b in backends)
    if workload.trace is not None:
        title = (f"{source}: replay of {workload.trace.describe()}, {len(backends)} backends, "
                 f"{workload.rate / capacity:.0%} load")
    else:
        title = f"{source}: {len(backends)} backends, {workload.rate / capacity:.0%} load"
    return Scenario(backends=tuple(backends), workload=workload, algorithms=tuple(algorithms),
                    seed=values.get("seed", 1), proxy=proxy, client_timeout=client_timeout,
                    workers=values.get("proxy", {}).get("workers", 1),
                    timeline=timeline, title=title,
                    configured=settings.algorithm if settings else None,
                    config_path=settings.path if settings else None,
                    pool_name=settings.name if settings else None)


def _proxy(base: PoolConfig, values: dict, raw: dict, bad: set[str],
           problems: Problems) -> PoolConfig:
    """``[proxy]`` over ``base`` (serve's defaults, or a config's pool). A nested table given
    here keeps the base's value for every key it does not set."""
    changes = dict(values)
    changes.pop("workers", None)            # the scenario's, not the pool's
    timeout = changes.pop("timeout", None)
    for name in ("timeouts", "health", "outlier"):
        if name in changes and getattr(base, name) is not None and isinstance(raw.get(name), dict):
            given = {k: getattr(changes[name], k) for k in raw[name]
                     if hasattr(changes[name], k)}
            changes[name] = replace(getattr(base, name), **given)
    if timeout is not None:
        if "timeouts" in raw and isinstance(raw["timeouts"], dict) and \
                "response" in raw["timeouts"]:
            problems.add("proxy.timeout", "expected either timeout or timeouts.response, "
                                          "not both (timeout is a shorthand for the other)")
        changes["timeouts"] = replace(changes.get("timeouts", base.timeouts), response=timeout)
    proxy = replace(base, **changes)
    outlier = proxy.outlier
    if outlier is not None and "outlier" in raw and \
            not {"proxy.outlier.ejection_time", "proxy.outlier.max_ejection_time"} & \
            {f"proxy.{b}" for b in bad}:
        if outlier.max_ejection_time < outlier.ejection_time:
            raw_max = raw["outlier"].get("max_ejection_time") \
                if isinstance(raw["outlier"], dict) else None
            found = describe(raw_max) if raw_max is not None else \
                f"the default {format_duration(outlier.max_ejection_time)}"
            problems.add("proxy.outlier.max_ejection_time",
                         f"expected at least proxy.outlier.ejection_time "
                         f"({format_duration(outlier.ejection_time)}), found {found}")
    if proxy.hash_key is not None and "hash_key" in values and \
            proxy.hash_key.startswith("cookie:"):
        problems.add("proxy.hash_key", 'expected "ip", "path" or "header:NAME" (simulated '
                                       f'requests carry no cookies), found "{proxy.hash_key}"')
    return proxy


def _service(raw: Any, values: dict, path: str, base_dir: str,
             problems: Problems) -> Service | None:
    """A ``service = {...}`` table whose keys were read by ``schema.SERVICE``: the keys its
    distribution needs, and no others."""
    if not isinstance(raw, dict):
        return None
    dist = values.get("dist", "exponential")
    if "dist" in raw and "dist" not in values:
        return None
    needs = {"exponential": ("mean",), "constant": ("mean",), "lognormal": ("mean", "p99"),
             "uniform": ("min", "max"), "empirical": ()}[dist]
    allowed = {"exponential": {"mean"}, "constant": {"mean"}, "lognormal": {"mean", "p99"},
               "uniform": {"min", "max"}, "empirical": {"file", "values"}}[dist]
    ok = True
    for key in raw:
        if key != "dist" and key not in allowed and key in schema.SERVICE.fields:
            problems.add(key_path(path, key), f"expected no {key} with dist = \"{dist}\" "
                                              f"(it uses {', '.join(sorted(allowed))})")
            ok = False
    for key in needs:
        if key not in raw:
            problems.missing(key_path(path, key), f'a value: dist = "{dist}" needs '
                                                  f'{" and ".join(needs)}')
            ok = False
        elif key not in values:
            ok = False
    if not ok:
        return None
    if dist in ("exponential", "constant"):
        return Service(dist, mean=values["mean"])
    if dist == "lognormal":
        mean, p99 = values["mean"], values["p99"]
        # A lognormal with mean m has p99/m = exp(2.326 s - s^2/2), at most e^(2.326^2/2) ~ 15.
        if not mean < p99 <= mean * LOGNORMAL_MAX_RATIO:
            problems.wrong(key_path(path, "p99"), f"a duration above the mean and at most "
                           f"{LOGNORMAL_MAX_RATIO:.1f} x the mean (a lognormal cannot be more "
                           f"skewed)", raw["p99"])
            return None
        return Service(dist, mean=mean, p99=p99)
    if dist == "uniform":
        low, high = values["min"], values["max"]
        if high < low:
            problems.wrong(key_path(path, "max"), f"at least min ({describe(raw['min'])})",
                           raw["max"])
            return None
        return Service(dist, mean=(low + high) / 2, low=low, high=high)
    # empirical: a list inline, or a file of one duration (or number of seconds) per line.
    if ("file" in raw) == ("values" in raw):
        problems.add(path, 'expected exactly one of file = "samples.txt" or values = [...] '
                           'with dist = "empirical"')
        return None
    if "values" in raw:
        if "values" not in values:
            return None
        samples = values["values"]
    else:
        if "file" not in values:
            return None
        samples = read_samples(values["file"], key_path(path, "file"), base_dir, problems)
        if samples is None:
            return None
    if not samples or sum(samples) <= 0:
        problems.add(path, "expected at least one sample above zero")
        return None
    return Service(dist, mean=sum(samples) / len(samples), values=tuple(samples))


def read_samples(name: str, path: str, base_dir: str,
                 problems: Problems) -> tuple[float, ...] | None:
    """A samples file: one duration (or number of seconds) per line, ``#`` comments."""
    full = name if os.path.isabs(name) else os.path.join(base_dir, name)
    try:
        raw = read_bytes(full, MAX_SAMPLES_FILE)
    except FileProblem as exc:
        problems.add(path, f"cannot read {describe(name)}: {exc}")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        problems.add(path, f"{name} line {line}: not valid UTF-8 (a samples file is UTF-8 "
                           f"text, one duration per line)")
        return None
    values = []
    for n, line in enumerate(text.splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        try:
            number: Any = float(item)
        except ValueError:
            number = item
        try:
            values.append(parse_duration(number))
        except ValueError as exc:
            problems.add(path, f"{name} line {n}: expected {exc}, found {describe(item)}")
            return None
    return tuple(values)


def _fault(values: dict, raw: dict, path: str, problems: Problems) -> Fault | None:
    """A ``failure = {...}`` table: keys that fit its mode."""
    if "mode" not in values:
        return None
    mode = values["mode"]
    allowed = {"slow": {"factor"}}.get(mode, {"fraction", "latency"})
    if mode == "blackhole":
        allowed = {"fraction"}
    for key in ("fraction", "latency", "factor"):
        if key in raw and key not in allowed:
            problems.add(key_path(path, key), f'expected no {key} with mode = "{mode}"')
    if mode == "slow" and "factor" not in raw:
        problems.missing(key_path(path, "factor"), 'a factor with mode = "slow" (3 = three '
                                                   'times slower)')
        return None
    return Fault(mode, values.get("fraction", 1.0), values.get("latency", 0.001),
                 values.get("factor", 1.0))


def _backends(raw: Any, settings: "PoolSettings | None", base_dir: str,
              problems: Problems) -> tuple[list[BackendSpec], frozenset[str]]:
    """The ``[[backends]]`` groups expanded; with a config's pool, its names, weights and
    backup flags over the groups' behaviour (in the config's order). Also the names of the
    backends whose group gives a ``service`` (a replay does not replace those)."""
    if raw is None:
        if settings is None:
            # A replay may name them; otherwise _workload says "missing".
            return [], frozenset()
        raw = [{}]
    if not isinstance(raw, list) or not raw:
        problems.wrong("backends", "one or more [[backends]] tables", raw)
        return [], frozenset()
    specs: list[BackendSpec] = []
    explicit: list[bool] = []
    counter = 0
    for gi, group in enumerate(raw):
        path = index_path("backends", gi)
        read = schema.BACKENDS.read(group, path, problems)
        if not isinstance(group, dict):
            continue
        v = read.values
        default_count = len(settings.backends) if (settings and len(raw) == 1) else 1
        count = v.get("count", default_count)
        service = Service()
        if "service" in group:
            service = _service(group["service"], v.get("service") or {},
                               key_path(path, "service"), base_dir, problems) or Service()
        failure = None
        if isinstance(group.get("failure"), dict) and "failure" in v:
            failure = _fault(v["failure"], group["failure"], key_path(path, "failure"),
                             problems)
        prefix = v.get("name")
        if counter + count > MAX_BACKENDS:
            problems.add(path, f"expected at most {MAX_BACKENDS:,} backends in all groups "
                               f"together, found more")
            return [], frozenset()
        for k in range(count):
            counter += 1
            if prefix is None:
                name = f"b{counter}"
            else:
                name = prefix if count == 1 else f"{prefix}{k + 1}"
            specs.append(BackendSpec(name, service, v.get("concurrency", 1),
                                     v.get("speed", 1.0), v.get("weight", 1.0),
                                     v.get("backup", False), failure))
            explicit.append("service" in group)
    seen: set[str] = set()
    dup = next((n for n in (b.name for b in specs) if n in seen or seen.add(n)), None)
    if dup is not None and settings is None:
        problems.add("backends", f"expected unique backend names, found {describe(dup)} twice")
    if settings is not None and specs:
        if len(specs) != len(settings.backends):
            problems.add("backends", f"expected groups describing {len(settings.backends)} "
                                     f"backends (pool {settings.name!r} in {settings.path} has "
                                     f"{len(settings.backends)}), found {len(specs)}")
            return specs, frozenset()
        specs = [replace(s, name=name, weight=weight, backup=bk)
                 for s, (name, weight, bk) in zip(specs, settings.backends)]
    return specs, frozenset(s.name for s, e in zip(specs, explicit) if e)


def _workload(values: dict, raw: Any, backends: list[BackendSpec], explicit: frozenset[str],
              proxy: PoolConfig, base_dir: str, problems: Problems
              ) -> tuple[Workload, list[BackendSpec]]:
    raw = raw if isinstance(raw, dict) else {}
    trace = None
    if "replay" in values:
        for key in ("rate", "load", "arrivals", "keys"):
            if key in raw:
                problems.add(key_path("workload", key),
                             f"expected no {key} with replay (arrivals and keys come from "
                             f"the log; speedup replays it faster)")
        from lbctl.simulate.replay import load_trace
        name = values["replay"]
        full = name if os.path.isabs(name) else os.path.join(base_dir, name)
        key = values.get("key", proxy.hash_key or "path")
        trace = load_trace(full, values.get("format", "auto"), values.get("log_format"),
                           values.get("speedup", 1.0), key, problems, "workload.replay",
                           requests=values.get("requests"), duration=values.get("duration"))
        if trace is None:
            return Workload(), backends
        backends = _replayed(trace, backends, problems, explicit)
        requests = len(trace.times)
        duration = 0.0
        rate = requests / trace.span if trace.span > 0 else float(requests)
        return Workload("replay", rate, requests, duration, values.get("keys", 1000),
                        trace), backends
    for key in ("format", "log_format", "speedup", "key"):
        if key in raw:
            problems.add(key_path("workload", key), f"expected {key} only with replay = "
                                                    f'"access.log"')
    if not backends:
        problems.missing("backends", 'at least one [[backends]] group (or config = "lb.toml" '
                                     'and pool = "NAME", or [workload] replay = "access.log")')
        return Workload(), backends
    if "rate" in values and "load" in values:
        problems.add("workload.load", "expected rate or load, not both")
    capacity = sum(b.capacity for b in backends if not b.backup) or \
        sum(b.capacity for b in backends)
    rate = values["rate"] if "rate" in values else values.get("load", 0.8) * capacity
    if "requests" in values and "duration" in values:
        problems.add("workload.duration", "expected requests or duration, not both")
    if values.get("requests", 0) > MAX_REQUESTS:
        problems.wrong("workload.requests", f"at most {MAX_REQUESTS:,} requests",
                       raw["requests"])
    requests, duration = 0, 0.0
    if "duration" in values:
        duration = values["duration"]
    else:
        requests = values.get("requests", 100_000)
    return Workload(values.get("arrivals", "poisson"), rate, requests, duration,
                    values.get("keys", 1000)), backends


def _replayed(trace, specs: list[BackendSpec], problems: Problems,
              explicit: frozenset[str]) -> list[BackendSpec]:
    """The simulated backends of a replay: ``specs`` when given (each without a service of
    its own takes the log's samples for its name), else one per backend the log names."""
    if not specs:
        names = trace.names()
        if not names:
            problems.add("workload.replay", "expected a log that names the backend of each "
                         "request (lbctl's backend, nginx's $upstream_addr, HAProxy's server), "
                         "or [[backends]] groups describing the pool")
            return []
        specs = [BackendSpec(name) for name in names]
    out = []
    for spec in specs:
        measured = None if spec.name in explicit else trace.service(spec.name, spec.concurrency)
        if measured is None:
            if spec.name not in explicit:
                trace.notes.append(f"{spec.name}: not in the log; its service is the "
                                   f"scenario's ({spec.service.describe()})")
            out.append(spec)
            continue
        samples, errors = measured
        service = Service("empirical", mean=math.fsum(samples) / len(samples), values=samples)
        failure = spec.failure
        if failure is None and errors is not None:
            failure = Fault("error", errors[0], errors[1])
        out.append(replace(spec, service=service, speed=1.0, failure=failure))
    return out


# Which keys each timeline event reads (beyond at, backend, event).
_EVENT_KEYS = {"down": {"mode"}, "slow": {"factor"}, "error": {"fraction", "latency"},
               "fail": {"fraction", "latency"}, "refuse": {"fraction", "latency"},
               "reset": {"fraction", "latency"}, "blackhole": {"fraction"}}


def _timeline(raw: Any, names: list[str], problems: Problems) -> tuple[Event, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.wrong("timeline", "[[timeline]] tables", raw)
        return ()
    known = set(names)
    events = []
    for i, item in enumerate(raw):
        path = index_path("timeline", i)
        read = schema.EVENT.read(item, path, problems)
        if not isinstance(item, dict):
            continue
        v = read.values
        ok = not ({"at", "backend", "event"} & read.bad) and all(
            k in v for k in ("at", "backend", "event"))
        targets = v.get("backend", ())
        for k, name in enumerate(targets):
            if name not in known:
                where = key_path(path, "backend") + \
                    (f"[{k}]" if isinstance(item.get("backend"), list) else "")
                problems.wrong(where, f"the name of a simulated backend "
                                      f"({_list(names)})", name, suggest(name, names))
                ok = False
        action = v.get("event")
        if action is not None:
            allowed = _EVENT_KEYS.get(action, set())
            for key in ("factor", "fraction", "latency", "mode"):
                if key in item and key not in allowed:
                    problems.add(key_path(path, key), f'expected no {key} with event = '
                                                      f'"{action}"')
                    ok = False
            if action == "slow" and "factor" not in item:
                problems.missing(key_path(path, "factor"), 'a factor with event = "slow" '
                                                           '(3 = three times slower)')
                ok = False
        if not ok:
            continue
        action = "error" if action == "fail" else action
        events.append(Event(v["at"], action, tuple(targets), v.get("factor", 1.0),
                            v.get("fraction", 1.0), v.get("latency", 0.001),
                            v.get("mode", "refuse")))
    # Stable: events at the same time apply in file order.
    return tuple(sorted(events, key=lambda e: e.at))


def _list(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 6 else ", ".join(names[:5]) + ", ..."


# ---- a serve config's pool ----------------------------------------------------------------


@dataclass(frozen=True)
class PoolSettings:
    name: str
    path: str
    algorithm: str
    backends: tuple[tuple[str, float, bool], ...]      # (name, weight, backup), config order
    pool: PoolConfig


def pool_from_config(path: str, pool: str, problems: Problems | None = None,
                     where: str = "pool") -> PoolSettings | None:
    """The simulation-relevant part of one pool of a serve config, read by the same loader as
    ``lbctl serve``: a config with problems raises its own ``ConfigError`` (every problem
    listed, exit 2); a pool it does not have is a problem at ``where``."""
    from lbctl.config.loader import load_config
    config = load_config(path)
    if pool not in config.pools:
        hint = suggest(pool, list(config.pools))
        message = f"expected a pool of {path} ({', '.join(config.pools)}), found {describe(pool)}"
        if hint:
            message += f"; {hint}"
        if problems is None:
            raise ConfigError([Problem(path, where, message)])
        problems.add(where, message)
        return None
    pc = config.pools[pool]
    if not pc.backends:
        # Discovered backends are only known to a running serve; nothing here resolves them.
        message = (f"expected a pool of {path} with [[backends]], found pool {pool!r}, which "
                   "lists no backends (they come from its [discovery]); choose another pool, "
                   "or describe the backends in the scenario")
        if problems is None:
            raise ConfigError([Problem(path, where, message)])
        problems.add(where, message)
        return None
    return PoolSettings(pool, path, pc.algorithm,
                        tuple((b.name, b.weight, b.backup) for b in pc.backends), pc)
