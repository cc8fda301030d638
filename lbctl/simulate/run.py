"""The one call ``lbctl simulate`` makes: options in, a ``Report`` out.

``simulate(options)`` builds the scenario (a file, a quick pool from options, a replayed
access log, a running serve's ``/stats``, or two serve configs to compare), runs every
algorithm (or each config's own) over every seed, and returns the summaries, the series over
time, the verdict and, when the pool came from a serve config, the change that would apply
the winner. Nothing is printed and nothing is applied here; the command renders the report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from lbctl.errors import UserError
from lbctl.simulate.driver import run_algorithm
from lbctl.simulate.results import (AlgorithmResult, Series, bounded_step, cdf, combine,
                                    series, series_step, summarize)
from lbctl.simulate.scenario import (BackendSpec, Scenario, Service, Workload,
                                     default_scenario, load_scenario, pool_from_config,
                                     scenario_from_options)
from lbctl.simulate.verdict import differ, ranked, verdict
from lbctl.simulate.workload import arrival_times

MAX_SEEDS = 100


@dataclass(frozen=True)
class Options:
    """Everything the command line can say (None: not given)."""
    scenario: str | None = None
    seed: int | None = None
    seeds: int = 1                          # run each algorithm over seeds seed .. seed+N-1
    algorithms: Sequence[str] | None = None
    backends: int | None = None             # a quick pool of N identical backends
    load: float | None = None
    rate: float | None = None
    requests: int | None = None
    duration: float | None = None
    mean: float | None = None
    concurrency: int | None = None
    service: str | None = None
    outlier: bool = True
    replay: str | None = None
    speedup: float | None = None
    log_format: str | None = None
    from_admin: str | None = None
    token: str | None = None
    pool: str | None = None
    compare: tuple[str, str] | None = None
    interval: float | None = None           # series step; None: about 50 intervals
    workers: int | None = None              # serve's workers, each with its own balancer


@dataclass(frozen=True)
class Variant:
    """One column of the comparison: a scenario run with one algorithm."""
    label: str                              # "" for a plain algorithm
    scenario: Scenario
    algorithm: str


@dataclass
class Report:
    scenario: Scenario                      # the first variant's (the common workload)
    variants: list[Variant]
    results: list[AlgorithmResult]          # per variant, combined over the seeds
    series: list[Series]                    # per variant, the first seed's run
    seeds: tuple[int, ...]
    cdfs: list[list[tuple[float, float]]] = field(default_factory=list)   # first seed's
    verdict: list[str] = field(default_factory=list)
    suggestion: str | None = None           # the config change that would apply the winner
    source: str = ""                        # where the scenario came from (for the header)


Progress = Callable[[str, int, int], None]   # (label, arrivals so far, arrivals in the run)


def simulate(options: Options, progress: Progress | None = None) -> Report:
    variants, source = build(options)
    first = variants[0].scenario
    seeds = tuple(range(first.seed, first.seed + options.seeds))
    runs: dict[int, list[AlgorithmResult]] = {i: [] for i in range(len(variants))}
    all_series: list[Series | None] = [None] * len(variants)
    cdfs: list[list[tuple[float, float]]] = [[] for _ in variants]
    step = options.interval
    for seed in seeds:
        cache: dict[int, object] = {}
        for i, v in enumerate(variants):
            sc = replace(v.scenario, seed=seed)
            key = id(v.scenario.workload)
            if key not in cache:
                cache[key] = arrival_times(sc.workload, seed)
            times = cache[key]
            label = v.label or v.algorithm
            if len(seeds) > 1:
                label = f"{label} (seed {seed})"
            cb = None
            if progress is not None:
                cb = (lambda n, label=label, total=len(times): progress(label, n, total))
            rec = run_algorithm(sc, v.algorithm, cb, arrivals=times)
            result = summarize(rec)
            runs[i].append(replace(result, label=v.label))
            if all_series[i] is None:
                step = series_step(rec.horizon) if step is None else \
                    bounded_step(step, rec.horizon)
                all_series[i] = series(rec, step)
                cdfs[i] = cdf(rec)
    results = [combine(runs[i]) for i in range(len(variants))]
    report = Report(first, variants, results, [s for s in all_series if s is not None], seeds,
                    cdfs, source=source)
    report.verdict = verdict(results, first)
    report.suggestion = suggestion(results, first)
    return report


def build(options: Options) -> tuple[list[Variant], str]:
    """The variants to run, and a line saying where the scenario came from."""
    if not 1 <= options.seeds <= MAX_SEEDS:
        raise UserError(f"--seeds: expected a number of seeds from 1 to {MAX_SEEDS}")
    quick = options.backends is not None
    given = [name for name, on in (("SCENARIO", options.scenario), ("--backends", quick),
                                   ("--from-admin", options.from_admin)) if on]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)}: expected one source of the pool, not "
                        f"{len(given)}")
    if not quick and (options.mean is not None or options.service is not None or
                      (options.concurrency is not None and options.from_admin is None)):
        raise UserError("--mean, --concurrency and --service describe the pool that "
                        "--backends builds; use them with --backends (--concurrency also "
                        "with --from-admin)")
    if options.rate is not None and options.load is not None:
        raise UserError("--rate and --load: expected one of them, not both")
    if options.requests is not None and options.duration is not None:
        raise UserError("--requests and --duration: expected one of them, not both")
    if (options.speedup is not None or options.log_format is not None) and \
            options.replay is None and options.scenario is None:
        raise UserError("--speedup and --log-format: expected with --replay FILE (or a "
                        "scenario with [workload] replay)")

    if options.from_admin is not None:
        from lbctl.simulate.live import scenario_from_admin
        sc = scenario_from_admin(options.from_admin, options.token, options.pool,
                                 concurrency=options.concurrency)
        source = sc.title
    elif quick:
        if options.replay is not None:
            raise UserError("--replay and --backends: a replay takes its backends from the "
                            "log (or a scenario); give one of them")
        sc = scenario_from_options(backends=options.backends, load=options.load,
                                   rate=options.rate, requests=options.requests,
                                   mean=options.mean or 0.010,
                                   concurrency=options.concurrency or 1,
                                   dist=options.service or "exponential")
        source = sc.title
    elif options.scenario is not None:
        sc = load_scenario(options.scenario, speedup=options.speedup,
                           log_format=options.log_format, replay=options.replay)
        source = sc.title
    elif options.replay is not None:
        from lbctl.simulate.scenario import parse_scenario
        sc = parse_scenario({}, options.replay, base_dir=os.getcwd(), speedup=options.speedup,
                            log_format=options.log_format, replay=options.replay)
        source = sc.title
    elif options.compare is None:
        sc = default_scenario()
        source = sc.title
    else:
        sc = None
        source = ""

    if options.compare is not None:
        return compare_variants(options, sc), "compare"

    sc = sc.with_overrides(seed=options.seed, requests=options.requests,
                           duration=options.duration, rate=options.rate if not quick else None,
                           load=options.load if not quick else None,
                           algorithms=options.algorithms, outlier=options.outlier,
                           workers=options.workers)
    return [Variant("", sc, a) for a in sc.algorithms], source


def compare_variants(options: Options, base: Scenario | None) -> list[Variant]:
    """``--compare A.toml B.toml``: each config's pool on the same workload.

    The workload (and how each backend behaves) comes from the scenario when one is given:
    a backend whose name a scenario group gives takes that group's behaviour, any other
    takes the first group's. Without a scenario, every backend serves exponential 10 ms one
    request at a time and the rate is 70% of the first config's capacity (--load, --rate,
    --requests and --duration apply)."""
    a_path, b_path = options.compare
    if options.algorithms is not None:
        raise UserError("--algorithms and --compare: each config runs its own pool's algorithm")
    pools = [pool_from_config(path, options.pool or _only_pool(path), where="--pool")
             for path in (a_path, b_path)]
    if base is None:
        template = BackendSpec("template", Service("exponential", mean=0.010))
        base = Scenario(backends=(template,), workload=Workload(requests=100_000))
        named: dict[str, BackendSpec] = {}
        default_load = 0.7
    else:
        named = {b.name: b for b in base.backends}
        template = base.backends[0]
        default_load = None
    variants = []
    labels = _labels(a_path, b_path)
    for path, label, settings in zip((a_path, b_path), labels, pools):
        specs = tuple(replace(named.get(name, template), name=name, weight=weight, backup=bk)
                      for name, weight, bk in settings.backends)
        names = {s.name for s in specs}
        timeline = tuple(replace(ev, backends=tuple(n for n in ev.backends if n in names))
                         for ev in base.timeline if any(n in names for n in ev.backends))
        sc = replace(base, backends=specs, proxy=settings.pool, timeline=timeline,
                     algorithms=(settings.algorithm,), configured=settings.algorithm,
                     config_path=settings.path, pool_name=settings.name,
                     title=f"{label}: pool {settings.name!r} ({settings.algorithm}, "
                           f"{len(specs)} backends)")
        variants.append(Variant(f"{label} ({settings.algorithm})", sc, settings.algorithm))
    first = variants[0].scenario
    load = options.load if options.load is not None else \
        (default_load if options.rate is None else None)
    # One workload for both: the rate is set against the first config's capacity.
    adjusted = first.with_overrides(seed=options.seed, requests=options.requests,
                                    duration=options.duration, rate=options.rate, load=load,
                                    outlier=options.outlier, workers=options.workers)
    return [replace(v, scenario=replace(v.scenario, workload=adjusted.workload,
                                        seed=adjusted.seed, workers=adjusted.workers,
                                        proxy=v.scenario.proxy if options.outlier else
                                        replace(v.scenario.proxy, outlier=None)))
            for v in variants]


def _only_pool(path: str) -> str:
    from lbctl.config.loader import load_config
    config = load_config(path)
    if len(config.pools) == 1:
        return next(iter(config.pools))
    raise UserError(f"{path}: has {len(config.pools)} pools ({', '.join(config.pools)}); "
                    f"name the one to compare with --pool NAME")


def _labels(a: str, b: str) -> tuple[str, str]:
    """Short names for two config files: their base names, or their paths when equal."""
    na, nb = os.path.basename(a), os.path.basename(b)
    return (na, nb) if na != nb else (a, b)


def suggestion(results: Sequence[AlgorithmResult], scenario: Scenario) -> str | None:
    """When the pool came from a serve config and another algorithm wins clearly: the change
    that would apply it. Nothing is ever applied."""
    if scenario.configured is None or scenario.config_path is None or len(results) < 2 or \
            any(r.label for r in results):
        return None
    order = ranked(results)
    best = order[0]
    current = next((r for r in results if r.algorithm == scenario.configured), None)
    if current is None or best is current:
        if current is not None:
            return (f"Keep algorithm = \"{scenario.configured}\" in pool "
                    f"{scenario.pool_name!r}: no algorithm did clearly better.")
        return None
    clearly = differ(best.interval("errors"), current.interval("errors"), 0.1) or \
        differ(best.interval("p99"), current.interval("p99"), 0.1) or \
        differ(best.interval("mean"), current.interval("mean"), 0.1)
    if not clearly:
        return (f"Keep algorithm = \"{scenario.configured}\" in pool {scenario.pool_name!r}: "
                f"{best.algorithm} is ahead only within noise.")
    lines = [f"To use {best.algorithm} ({_pct(best, current)}), change "
             f"{scenario.config_path}:",
             f"  [pools.{scenario.pool_name}]",
             f"  algorithm = \"{best.algorithm}\"        # was \"{scenario.configured}\""]
    if best.algorithm == "consistent_hash":
        lines.append('  hash_key = "path"                 # or "ip", "header:NAME"')
    lines.append("then check it with `lbctl validate` and reload serve (SIGHUP). "
                 "Nothing was changed.")
    return "\n".join(lines)


def _pct(best: AlgorithmResult, current: AlgorithmResult) -> str:
    parts = []
    for key in ("p99", "mean"):
        a, b = best.latency[key], current.latency[key]
        parts.append(f"{key} {(a - b) / b:+.0%}" if b > 0 else f"{key} unchanged")
    if best.errors != current.errors:
        parts.append(f"errors {best.errors:,} instead of {current.errors:,}")
    return f"{', '.join(parts)} against {current.algorithm}"
