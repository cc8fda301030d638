"""The report behind ``lbctl check``: probe every backend once, judge the pools, and say so
in the formats that cron, Nagios-style monitors and node_exporter read.

Each pool is probed with its own ``[health]`` settings (the same ``active.probe`` that
``serve`` runs); a pool without ``[health]`` gets a plain TCP connect, since ``serve``
assumes its backends up and a connect is the least a reachable backend can do. For an
https backend that connect is a TLS handshake, verified as the proxy verifies it: a
certificate the proxy would refuse is a failed check with the reason.

Judgement, per pool: fewer than ``min_healthy`` backends up (default 1, i.e. none up) is
CRITICAL; any backend down is WARNING; a successful probe slower than ``crit_latency`` /
``warn_latency`` is CRITICAL / WARNING. The overall status is the worst pool's.

A pool with ``[discovery]`` is resolved first (once, by the same sources ``serve`` uses) and
its discovered backends are probed with the static ones. A failed lookup is its own line and
counts like a backend down: WARNING, or CRITICAL when the pool then has fewer than
``min_healthy`` up. An authoritative empty answer (NXDOMAIN, no records, ``[]``) is reported
too, and judged by the counts alone: scaling to zero is not an error in itself.

With a state file, "up" is the rise/fall verdict carried across runs (``HealthState``), not
the single probe, so one lost probe does not page anyone; the JSON ``ok`` field is always
the probe itself.

Outputs (all pure functions of a ``Report``): the monitoring-plugin status line, the JSON
document the README shows, and Prometheus text format for node_exporter's textfile collector; the
table for people is ``render.render_table``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from lbctl.config.model import BackendConfig, Config, Health, PoolConfig
from lbctl.errors import UserError
from lbctl.exitcodes import CheckExit
from lbctl.health.state import HealthState

if TYPE_CHECKING:
    from lbctl.health.active import ProbeResult

DEFAULT_CONCURRENCY = 32
# What a pool without [health] is checked with: can we connect at all.
TCP_CONNECT = Health(type="tcp", rise=1, fall=1)
STATE_VERSION = 1


@dataclass(frozen=True)
class Thresholds:
    min_healthy: int | None = None          # absolute number of backends up; None: see below
    min_healthy_percent: float | None = None   # of the pool's backends, rounded up
    warn_latency: float | None = None       # seconds
    crit_latency: float | None = None

    def needed(self, total: int) -> int:
        """Backends that must be up for the pool not to be CRITICAL (default: 1)."""
        if self.min_healthy is not None:
            return self.min_healthy
        if self.min_healthy_percent is not None:
            return math.ceil(self.min_healthy_percent * total / 100.0 - 1e-9)
        return 1


def parse_min_healthy(text: str) -> Thresholds:
    """``"2"`` or ``"50%"``; ``ValueError`` saying what was expected otherwise."""
    expected = 'a number of backends like 2, or a percentage like "50%"'
    value = text.strip()
    try:
        if value.endswith("%"):
            pct = float(value[:-1])
            if not 0 <= pct <= 100:
                raise ValueError
            return Thresholds(min_healthy_percent=pct)
        count = int(value)
        if count < 0:
            raise ValueError
        return Thresholds(min_healthy=count)
    except ValueError:
        raise ValueError(f"expected {expected}, found {text!r}") from None


@dataclass
class BackendCheck:
    name: str
    url: str
    result: ProbeResult
    up: bool                    # the verdict: the probe itself, or rise/fall with a state file

    @property
    def latency(self) -> float | None:
        """Only a probe that got an answer has a latency worth reporting."""
        r = self.result
        return r.latency if r.ok or r.status is not None else None


@dataclass(frozen=True)
class DiscoveryCheck:
    """One pool's discovery lookup: ``kind`` is found, empty or failed."""
    source: str                 # dns | srv | file
    target: str
    kind: str
    reason: str                 # empty/failed: why; found: ""
    found: int                  # backends discovered

    @property
    def line(self) -> str:
        what = f"discovery {self.source} {self.target}"
        if self.kind == "failed":
            return f"{what}: lookup failed ({self.reason})"
        if self.kind == "empty":
            return f"{what}: {self.reason}: no backends discovered"
        return f"{what}: {self.found} backend{'s' if self.found != 1 else ''}"


@dataclass
class PoolCheck:
    name: str
    backends: list[BackendCheck]
    status: CheckExit = CheckExit.OK
    reasons: list[str] = field(default_factory=list)
    discovery: DiscoveryCheck | None = None

    @property
    def healthy(self) -> int:
        return sum(1 for b in self.backends if b.up)

    @property
    def total(self) -> int:
        return len(self.backends)

    @property
    def max_latency(self) -> float | None:
        values = [b.latency for b in self.backends if b.result.ok and b.latency is not None]
        return max(values) if values else None


class StoreProbe(Protocol):
    """What the check needs of a shared rate-limit store (``gateway.redis_store.RedisStore``)."""
    name: str                   # its URL, without a password

    async def probe(self) -> str | None: ...     # None: it answered; else why not

    async def close(self) -> None: ...


@dataclass
class StoreCheck:
    """The shared store's reachability: down is WARNING, CRITICAL when on_error is "closed"
    (every limited route then answers 503)."""
    url: str
    on_error: str
    error: str | None
    latency: float | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> CheckExit:
        if self.ok:
            return CheckExit.OK
        return CheckExit.CRITICAL if self.on_error == "closed" else CheckExit.WARNING

    def line(self) -> str:
        if self.ok:
            return f"store {self.url}: up ({self.latency * 1000:.1f}ms)"
        effect = {"closed": "limited routes answer 503", "open": "limits are not enforced",
                  "local": "each instance limits on its own"}[self.on_error]
        return (f"{self.status.name}: store {self.url}: down ({self.error}); "
                f'on_error = "{self.on_error}": {effect}')


@dataclass
class Report:
    status: CheckExit
    pools: list[PoolCheck]
    thresholds: Thresholds = Thresholds()
    state: dict | None = None   # the state file's new content, when one is used
    at: float = 0.0             # Unix time of the run
    store: StoreCheck | None = None     # [store] backend = "redis" only


# ---- running ---------------------------------------------------------------------------

def select_pools(config: Config, names: list[str] | tuple[str, ...] = ()) -> list[PoolConfig]:
    """The pools to check, in config order; an unknown name is the user's error."""
    if not names:
        return list(config.pools.values())
    unknown = [n for n in names if n not in config.pools]
    if unknown:
        raise UserError(f"no pool named {unknown[0]!r} in {config.path} "
                        f"(pools: {', '.join(config.pools)})")
    return [config.pools[n] for n in config.pools if n in names]


async def discover(pools: list[PoolConfig]) -> tuple[list[PoolConfig], dict[str, DiscoveryCheck]]:
    """Resolve every pool's discovery once: the pools with their discovered backends added
    (a name the config already has stays the config's), and what each lookup said."""
    from lbctl.discovery.dns import ResolverError
    from lbctl.discovery.resolution import Resolution
    from lbctl.discovery.sources import make_source

    async def one(pool: PoolConfig) -> tuple[str, str, str, Resolution]:
        d = pool.discovery
        assert d is not None
        try:
            source = make_source(d)
        except ResolverError as exc:
            kind = "file" if d.file else ("srv" if d.srv else "dns")
            return kind, d.file or d.srv or str(d.dns), pool.name, Resolution.failed(str(exc))
        try:
            r = await asyncio.wait_for(source.resolve(), 2 * d.timeout + 1.0)
        except asyncio.TimeoutError:
            r = Resolution.failed(f"timeout after {d.timeout:g}s")
        return source.kind, source.target, pool.name, r

    answers = await asyncio.gather(*(one(p) for p in pools if p.discovery is not None))
    checks: dict[str, DiscoveryCheck] = {}
    found: dict[str, tuple[BackendConfig, ...]] = {}
    for kind, target, name, r in answers:
        checks[name] = DiscoveryCheck(kind, target, r.kind, r.reason, len(r.backends))
        found[name] = r.backends
    out = []
    for pool in pools:
        if found.get(pool.name):
            names = {b.name for b in pool.backends}
            extra = tuple(b for b in found[pool.name] if b.name not in names)
            pool = replace(pool, backends=pool.backends + extra)
        out.append(pool)
    return out, checks


async def probe_pools(pools: list[PoolConfig], *, timeout: float | None = None,
                      concurrency: int = DEFAULT_CONCURRENCY) -> dict[tuple[str, str], ProbeResult]:
    """Every backend of ``pools`` probed once, at most ``concurrency`` at a time."""
    # Imported here: aiohttp is heavy, and `lbctl --help` should not pay for it.
    from lbctl.config.tls import backend_context
    from lbctl.health.active import make_session, probe
    gate = asyncio.Semaphore(max(concurrency, 1))
    session = make_session(limit=max(concurrency, 1))

    async def one(pool: PoolConfig, b: BackendConfig) -> tuple[tuple[str, str], ProbeResult]:
        # The timeout starts inside the gate: waiting for a turn is not the backend's fault.
        async with gate:
            # An https backend is reached as the proxy would: a TCP check is a TLS handshake.
            return (pool.name, b.name), await probe(b, pool.health or TCP_CONNECT, session,
                                                    timeout=timeout,
                                                    ssl=backend_context(b, pool),
                                                    server_name=b.server_name)
    try:
        pairs = await asyncio.gather(*(one(p, b) for p in pools for b in p.backends))
    finally:
        await session.close()
    return dict(pairs)


def judge(pools: list[PoolConfig], results: dict[tuple[str, str], ProbeResult],
          thresholds: Thresholds = Thresholds(), state: dict | None = None,
          at: float | None = None, discovery: dict[str, DiscoveryCheck] | None = None) -> Report:
    """Turn probe results into verdicts and statuses. With ``state`` (a loaded state file,
    possibly empty), verdicts follow rise/fall and the report carries the new state."""
    at = time.time() if at is None else at
    new_state: dict | None = None
    if state is not None:
        # Pools not checked this run (--pool) keep their records untouched.
        names = {p.name for p in pools}
        kept = {k: v for k, v in state.get("backends", {}).items() if k.split("/", 1)[0] not in names}
        new_state = {"version": STATE_VERSION, "backends": kept}
    checks: list[PoolCheck] = []
    for pcfg in pools:
        health = pcfg.health or TCP_CONNECT
        backends = []
        for bcfg in pcfg.backends:
            result = results[(pcfg.name, bcfg.name)]
            up = result.ok
            if new_state is not None:
                key = f"{pcfg.name}/{bcfg.name}"
                old = (state or {}).get("backends", {}).get(key)
                hs = None
                if isinstance(old, dict) and old.get("url") == bcfg.url:
                    hs = HealthState.from_dict(old, health.rise, health.fall)
                if hs is None:      # new backend, moved backend, or a damaged record
                    hs = HealthState.initial(health.rise, health.fall, health.initial)
                hs.observe(result.ok)
                up = hs.healthy
                new_state["backends"][key] = {"url": bcfg.url, **hs.to_dict(), "checked": at}
            backends.append(BackendCheck(bcfg.name, bcfg.url, result, up))
        pool = PoolCheck(pcfg.name, backends, discovery=(discovery or {}).get(pcfg.name))
        _judge_pool(pool, thresholds)
        checks.append(pool)
    status = max((p.status for p in checks), default=CheckExit.OK)
    return Report(CheckExit(status), checks, thresholds, new_state, at)


def _judge_pool(pool: PoolCheck, t: Thresholds) -> None:
    needed = t.needed(pool.total)
    statuses = [CheckExit.OK]
    found = pool.discovery
    if found is not None and found.kind == "failed":
        # Like a backend down: the pool may be missing members nobody could see.
        statuses.append(CheckExit.WARNING)
        pool.reasons.append(found.line)
    elif found is not None and found.kind == "empty":
        pool.reasons.append(found.line)
    if pool.healthy < needed:
        statuses.append(CheckExit.CRITICAL)
        pool.reasons.append(f"{pool.healthy}/{pool.total} up, fewer than {needed}")
    elif pool.healthy < pool.total:
        statuses.append(CheckExit.WARNING)
        down = [b.name for b in pool.backends if not b.up]
        pool.reasons.append(f"down: {', '.join(down)}")
    for b in pool.backends:
        lat = b.latency
        if not b.result.ok or lat is None:
            continue
        if t.crit_latency is not None and lat > t.crit_latency:
            statuses.append(CheckExit.CRITICAL)
            pool.reasons.append(f"{b.name} latency {lat:.3f}s > {t.crit_latency:g}s")
        elif t.warn_latency is not None and lat > t.warn_latency:
            statuses.append(CheckExit.WARNING)
            pool.reasons.append(f"{b.name} latency {lat:.3f}s > {t.warn_latency:g}s")
    pool.status = CheckExit(max(statuses))


def run_check(config: Config, *, pools: list[str] | tuple[str, ...] = (),
              timeout: float | None = None, concurrency: int = DEFAULT_CONCURRENCY,
              thresholds: Thresholds = Thresholds(), state: dict | None = None,
              store: StoreProbe | None = None) -> Report:
    """The whole check: select, probe concurrently (the store too, when given), judge.
    Blocking (runs its own loop)."""
    selected = select_pools(config, pools)

    async def run():
        # Discovery first: what it finds is probed like the config's own backends.
        expanded, found = await discover(selected)
        backends = probe_pools(expanded, timeout=timeout, concurrency=concurrency)
        if store is None:
            return expanded, found, await backends, None
        return expanded, found, *await asyncio.gather(
            backends, probe_store(store, config.store.on_error))
    expanded, found, results, store_check = asyncio.run(run())
    report = judge(expanded, results, thresholds, state, discovery=found)
    if store_check is not None:
        report.store = store_check
        report.status = max(report.status, store_check.status)
    return report


async def probe_store(store: StoreProbe, on_error: str) -> StoreCheck:
    started = time.monotonic()
    try:
        error = await store.probe()
    finally:
        await store.close()
    return StoreCheck(store.name, on_error, error,
                      None if error is not None else time.monotonic() - started)


# ---- outputs (pure) ----------------------------------------------------------------------

def status_line(report: Report, status: CheckExit | None = None, prefix: str = "") -> str:
    """``LBCTL WARNING - api 1/2 up, web 3/3 up | api_up=1;;;0;2 api_latency=0.004s``"""
    status = report.status if status is None else status
    perf = perfdata(report)
    return f"LBCTL {status.name} - {prefix}{summary(report)}" + (f" | {perf}" if perf else "")


def summary(report: Report) -> str:
    parts = [f"{p.name} {p.healthy}/{p.total} up" for p in report.pools]
    if report.store is not None:
        parts.append("store up" if report.store.ok else "store down")
    return ", ".join(parts) or "no pools"


def perfdata(report: Report) -> str:
    perf = []
    t = report.thresholds
    for p in report.pools:
        perf.append(f"{_perf_label(p.name + '_up')}={p.healthy};;;0;{p.total}")
        lat = p.max_latency
        value = "U" if lat is None else f"{lat:.6f}s"
        limits = ""
        if t.warn_latency is not None or t.crit_latency is not None:
            limits = f";{_num(t.warn_latency)};{_num(t.crit_latency)}"
        perf.append(f"{_perf_label(p.name + '_latency')}={value}{limits}")
    store = report.store
    if store is not None:
        perf.append(f"store_up={int(store.ok)};;;0;1")
        perf.append("store_latency=" + ("U" if store.latency is None else f"{store.latency:.6f}s"))
    return " ".join(perf)


def unknown_line(message: str) -> str:
    return f"LBCTL UNKNOWN - {' '.join(message.split())}"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _perf_label(label: str) -> str:
    """Plugin perfdata labels with spaces, ``=`` or quotes must be quoted (quotes doubled)."""
    if re.search(r"[\s='|]", label):
        return "'" + label.replace("'", "''") + "'"
    return label


def to_json(report: Report) -> dict:
    """The ``lbctl check --json`` document (its shape is part of the interface), with
    ``store`` when one is configured."""
    doc = {
        "status": report.status.name,
        "pools": [{
            "name": p.name, "healthy": p.healthy, "total": p.total,
            **({"discovery": {"source": p.discovery.source, "target": p.discovery.target,
                              "result": p.discovery.kind, "error": p.discovery.reason or None,
                              "found": p.discovery.found}} if p.discovery else {}),
            "backends": [{
                "name": b.name, "url": b.url, "ok": b.result.ok, "status": b.result.status,
                "latency": None if b.latency is None else round(b.latency, 6),
                "error": b.result.error,
            } for b in p.backends],
        } for p in report.pools],
    }
    store = report.store
    if store is not None:
        doc["store"] = {"url": store.url, "ok": store.ok, "on_error": store.on_error,
                        "status": store.status.name, "error": store.error,
                        "latency": None if store.latency is None else round(store.latency, 6)}
    return doc


def unknown_json(message: str) -> dict:
    return {"status": CheckExit.UNKNOWN.name, "error": message, "pools": []}


def prometheus_text(report: Report | None, at: float | None = None) -> str:
    """The textfile collector's input. ``report`` None: the check could not run (UNKNOWN)."""
    at = (report.at if report is not None else time.time()) if at is None else at
    out: list[str] = []

    def metric(name: str, help_: str, samples: list[tuple[dict, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            text = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{text}}} {_sample(value)}" if text else f"{name} {_sample(value)}")

    status = CheckExit.UNKNOWN if report is None else report.status
    metric("lbctl_check_status", "Result of lbctl check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
           [({}, int(status))])
    metric("lbctl_check_timestamp_seconds", "When lbctl check ran, as a Unix time.", [({}, at)])
    if report is not None:
        metric("lbctl_check_pool_backends", "Backends in the pool.",
               [({"pool": p.name}, p.total) for p in report.pools])
        metric("lbctl_check_pool_healthy_backends", "Backends of the pool judged up.",
               [({"pool": p.name}, p.healthy) for p in report.pools])
        found = [p for p in report.pools if p.discovery is not None]
        if found:
            metric("lbctl_check_discovery_success", "1 when the pool's discovery lookup "
                   "answered (found backends or an authoritative empty answer), else 0.",
                   [({"pool": p.name, "source": p.discovery.source},
                     int(p.discovery.kind != "failed")) for p in found])
        rows = [(p, b) for p in report.pools for b in p.backends]
        ids = [({"pool": p.name, "backend": b.name, "url": b.url}, b) for p, b in rows]
        metric("lbctl_check_backend_up", "1 when the backend is judged up (rise/fall with a "
               "state file), else 0.", [(labels, int(b.up)) for labels, b in ids])
        metric("lbctl_check_probe_success", "1 when this run's probe succeeded, else 0.",
               [(labels, int(b.result.ok)) for labels, b in ids])
        metric("lbctl_check_probe_latency_seconds", "Time the probe took to get its answer.",
               [(labels, b.latency) for labels, b in ids if b.latency is not None])
        metric("lbctl_check_probe_http_status", "HTTP status the probe received.",
               [(labels, b.result.status) for labels, b in ids if b.result.status is not None])
        if report.store is not None:
            metric("lbctl_check_store_up", "1 when the rate-limit store answered, else 0.",
                   [({"url": report.store.url}, int(report.store.ok))])
    return "\n".join(out) + "\n"


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


# ---- files ----------------------------------------------------------------------------------

def write_atomic(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
    """Write to a temporary file in the same directory, then rename over ``path``: a reader
    (node_exporter, the next cron run) sees the old file or the new one, never half of one."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)     # mkstemp makes it 0600; the collector runs as another user
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_state(path: str | os.PathLike[str]) -> tuple[dict, str | None]:
    """The state file's content, and a warning when it had to be ignored. A missing file is
    a first run; a damaged one starts afresh rather than failing the check."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"version": STATE_VERSION, "backends": {}}, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {"version": STATE_VERSION, "backends": {}}, \
            f"state file {path} ignored ({getattr(exc, 'strerror', None) or exc}); starting afresh"
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION \
            or not isinstance(data.get("backends"), dict):
        return {"version": STATE_VERSION, "backends": {}}, \
            f"state file {path} ignored (not an lbctl check state file); starting afresh"
    return data, None


def save_state(path: str | os.PathLike[str], state: dict) -> None:
    write_atomic(path, json.dumps(state, indent=1, sort_keys=True) + "\n", mode=0o600)
