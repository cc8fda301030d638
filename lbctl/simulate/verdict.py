"""The verdict: a few sentences that say who won, how sure that is, and what else a user would miss.

* **The winner**, ranked by errors, then p99, then mean latency, compared with what the
  user would otherwise run (the config's algorithm, else the default round_robin). With
  several seeds every figure carries its 95% confidence interval, and when the winner's
  intervals overlap the runner-up's the verdict says so ("within noise") instead of
  crowning a winner by a hair. With one seed a close call (under 5% apart) says to run more
  seeds.
* **Errors**: when algorithms differ in errors beyond noise, which ones, and the backend
  whose share of the traffic explains it (e.g. least-connections feeding a backend that
  fails fast, because fast failures leave it with the fewest requests in flight).
* **Shares**: the backend whose share differs most between the winner and the baseline
  (the slowest one, when it is the story).
* **Ejections**, when passive ejection acted on the runs compared.

Pure: results in, strings out (the terminal and the HTML report show the same sentences).
"""

from __future__ import annotations

from typing import Sequence

from lbctl.simulate.results import AlgorithmResult, Interval
from lbctl.simulate.scenario import Scenario

# Why an algorithm does well, when the shares alone do not tell.
HOW = {
    "round_robin": "strict rotation spaces each backend's requests evenly, which smooths "
                   "arrivals at every backend",
    "random": "independent random draws spread the load evenly on average",
    "weighted": "smooth weighted rotation follows the configured weights",
    "least_conn": "it sends every request to the backend with the fewest requests in flight, "
                  "so no queue builds while another backend sits idle",
    "p2c": "comparing the in-flight counts of two random backends avoids most queues at O(1) "
           "cost per pick",
    "ewma": "it steers by each backend's measured latency times its requests in flight",
    "consistent_hash": "keys stay on their backend, which keeps caches warm",
}
# Algorithms that read in-flight counts: a backend that fails fast looks idle to them.
LOAD_AWARE = ("least_conn", "p2c", "ewma")
CLOSE = 0.05                  # one seed: a p99 gap under this is worth more seeds


def name_of(r: AlgorithmResult) -> str:
    """How a result is named in a sentence: its label (``--compare``) or its algorithm."""
    return r.label or r.algorithm


def ranked(results: Sequence[AlgorithmResult]) -> list[AlgorithmResult]:
    """Best first: fewest errors, then lowest p99, then lowest mean latency. With several
    seeds, error counts within noise of the fewest count as equal (p99 decides among them):
    a winner is not crowned on errors that differ by chance."""
    if not results:
        return []
    low = min(results, key=lambda r: r.errors)
    noisy = low.seeds > 1

    def errors(r: AlgorithmResult) -> float:
        if noisy and not differ(r.interval("errors"), low.interval("errors")):
            return low.errors
        return r.errors
    return sorted(results, key=lambda r: (errors(r), r.latency["p99"], r.latency["mean"]))


def fmt_latency(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f}s"
    if seconds >= 1:
        return f"{seconds:.2f}s"
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:.0f}ms"
    if ms >= 10:
        return f"{ms:.1f}ms"
    return f"{ms:.2f}ms"


def with_ci(value: Interval, fmt=fmt_latency) -> str:
    """``45.1ms ± 2.0ms`` (or just the value with one seed)."""
    if value.half is None:
        return fmt(value.mean)
    return f"{fmt(value.mean)} ± {fmt(value.half)}"


def _count(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 or x == int(x) else f"{x:,.1f}"


def count_ci(value: Interval) -> str:
    if value.half is None:
        return _count(value.mean)
    return f"{_count(value.mean)} ± {_count(value.half)}"


def differ(a: Interval, b: Interval, one_seed_gap: float = 0.0) -> bool:
    """Whether two measures differ beyond noise (with one seed: beyond ``one_seed_gap``,
    relative)."""
    if a.half is not None and b.half is not None:
        return not a.overlaps(b)
    return abs(a.mean - b.mean) > one_seed_gap * max(abs(a.mean), abs(b.mean))


def baseline_of(order: Sequence[AlgorithmResult], scenario: Scenario) -> AlgorithmResult:
    """What the user would otherwise run: the config's algorithm, else the default
    (round_robin), else the last ranked."""
    names = [r.algorithm for r in order]
    name = scenario.configured if scenario.configured in names[1:] else \
        "round_robin" if "round_robin" in names[1:] else None
    return order[names.index(name)] if name else order[-1]


def verdict(results: Sequence[AlgorithmResult], scenario: Scenario) -> list[str]:
    """The sentences, most important first."""
    order = ranked(results)
    best = order[0]
    seeds = best.seeds
    if len(order) == 1:
        out = (f"{name_of(best)}: p99 {with_ci(best.interval('p99'))}, mean "
               f"{with_ci(best.interval('mean'))}, {count_ci(best.interval('errors'))} errors")
        if best.ejections:
            out += f"; passive ejection took out {_ejections(best)}"
        return [out + "."]
    sentences = [_lead(order, scenario)]
    errors = _errors_lesson(order, scenario)
    if errors:
        sentences.append(errors)
    worst = baseline_of(order, scenario)
    share = _share_lesson(best, worst, scenario)
    if share:
        sentences.append(share)
    eject = _ejection_lesson(best, worst)
    if eject:
        sentences.append(eject)
    if seeds == 1:
        runner = order[1]
        gap = runner.latency["p99"] - best.latency["p99"]
        if runner.errors == best.errors and 0 < best.latency["p99"] and \
                gap <= CLOSE * best.latency["p99"]:
            sentences.append(f"{name_of(best)} and {name_of(runner)} are {gap / best.latency['p99']:.1%} "
                             f"apart on p99 with one seed: run with --seeds 5 to tell a real "
                             f"difference from noise.")
    return sentences


def _lead(order: Sequence[AlgorithmResult], scenario: Scenario) -> str:
    best, runner = order[0], order[1]
    seeds = best.seeds
    worst = baseline_of(order, scenario)
    label = {scenario.configured: " (your config)", "round_robin": " (the default)"}
    against = name_of(worst) if worst.label else \
        f"{worst.algorithm}{label.get(worst.algorithm, '')}"
    bp, be = best.interval("p99"), best.interval("errors")
    if seeds > 1 and not differ(be, runner.interval("errors")) and \
            not differ(bp, runner.interval("p99")):
        tied = [r for r in order[1:] if not differ(be, r.interval("errors"))
                and not differ(bp, r.interval("p99"))]
        names = ", ".join(name_of(r) for r in [best, *tied[:-1]]) + f" and {name_of(tied[-1])}"
        out = (f"No clear winner: {names} are within noise of each other over {seeds} seeds "
               f"(p99 {with_ci(bp)} for {name_of(best)}, "
               f"{with_ci(tied[0].interval('p99'))} for {name_of(tied[0])})")
        if worst not in tied and worst is not best:
            out += (f"; all of them beat {against}: p99 {with_ci(worst.interval('p99'))}, "
                    f"{count_ci(worst.interval('errors'))} errors")
        return out + "."
    x, y = with_ci(bp), with_ci(worst.interval("p99"))
    over = f" over {seeds} seeds" if seeds > 1 else ""
    if worst is best:
        return f"{name_of(best)} won with p99 {x}{over}."
    if not differ(bp, worst.interval("p99"), 0.02) and \
            not differ(be, worst.interval("errors")) and \
            differ(best.interval("mean"), worst.interval("mean"), 0.1):
        # The tail is the same (often one slow backend's own times): the mean tells.
        return (f"{name_of(best)} won on the mean, {with_ci(best.interval('mean'))} against "
                f"{with_ci(worst.interval('mean'))} for {against}, with the same p99 ({x})"
                f"{over}.")
    if differ(be, worst.interval("errors")) or (seeds == 1 and best.errors != worst.errors):
        return (f"{name_of(best)} won with p99 {x} and {count_ci(be)} errors, against {y} and "
                f"{count_ci(worst.interval('errors'))} errors for {against}{over}.")
    return f"{name_of(best)} won with p99 {x} against {y} for {against}{over}."


def _troubled(scenario: Scenario, name: str) -> str | None:
    """How a backend is made to fail in the scenario, in a few words, or None."""
    spec = next((s for s in scenario.backends if s.name == name), None)
    if spec is not None and spec.failure is not None and spec.failure.mode != "slow":
        return f"which fails ({spec.failure.mode}) from the start"
    for ev in scenario.timeline:
        if name in ev.backends and ev.action not in ("up", "recover", "slow"):
            word = f"down ({ev.mode})" if ev.action == "down" else ev.action
            return f"which fails ({word}) from {ev.at:g}s"
    return None


def _fast_failing(scenario: Scenario, name: str) -> bool:
    spec = next((s for s in scenario.backends if s.name == name), None)
    if spec is not None and spec.failure is not None and \
            spec.failure.mode in ("refuse", "reset", "error"):
        return True
    return any(name in ev.backends and (ev.action in ("refuse", "reset", "error") or
                                        ev.action == "down" and ev.mode != "blackhole")
               for ev in scenario.timeline)


def _errors_lesson(order: Sequence[AlgorithmResult], scenario: Scenario) -> str | None:
    """When some algorithms make more errors than others beyond noise: which, and why."""
    low = min(order, key=lambda r: r.errors)
    le = low.interval("errors")
    heavy = [r for r in order if r.errors > low.errors and
             differ(r.interval("errors"), le, 0.2) and r.errors - low.errors >= 5]
    if not heavy:
        return None
    high = max(heavy, key=lambda r: r.errors)
    heavy.sort(key=lambda r: -r.errors)
    named = [f"{name_of(r)} ({count_ci(r.interval('errors'))})" for r in heavy]
    who = ", ".join(named[:-1]) + (" and " if len(named) > 1 else "") + named[-1]
    out = f"Errors are the lesson: {who} against {count_ci(le)} for {name_of(low)}"
    # The backend whose share grew most explains it.
    if [b.name for b in high.backends] == [b.name for b in low.backends]:
        i = max(range(len(high.backends)),
                key=lambda k: high.backends[k].share - low.backends[k].share)
        name = high.backends[i].name
        hs, ls = high.backends[i].share, low.backends[i].share
        if hs - ls >= 0.01:
            trouble = _troubled(scenario, name)
            out += (f": {name_of(high)} sends {name}" + (f", {trouble}," if trouble else "") +
                    f" {hs:.1%} of the attempts where {name_of(low)} sends {ls:.1%}")
            if high.algorithm in LOAD_AWARE and _fast_failing(scenario, name):
                out += ", because its fast failures leave it with the fewest requests in flight"
    return out + "."


def _share_lesson(best: AlgorithmResult, worst: AlgorithmResult,
                  scenario: Scenario) -> str | None:
    """The backend whose share differs most between the winner and the baseline."""
    if best is worst or [b.name for b in best.backends] != [b.name for b in worst.backends]:
        return None
    specs = {s.name: s for s in scenario.backends}
    diffs = [(abs(bw.share - bl.share), i)
             for i, (bw, bl) in enumerate(zip(best.backends, worst.backends))]
    diff, i = max(diffs)
    capacities = [specs[b.name].capacity if b.name in specs else 0.0 for b in best.backends]
    low = min(capacities)
    if capacities.count(low) == 1:
        k = capacities.index(low)
        if diffs[k][0] >= 0.5 * diff:
            diff, i = diffs[k]
    sw, sl = best.backends[i].share, worst.backends[i].share
    if diff < 0.01 or diff < 0.25 * max(sw, sl):
        how = HOW.get(best.algorithm)
        return f"Why {name_of(best)}: {how}." if how else None
    name = best.backends[i].name
    cap = capacities[i]
    slowest = cap == min(capacities) and capacities.count(cap) == 1
    what = name
    if slowest:
        what = f"the slowest backend, {name},"
    elif cap == max(capacities) and capacities.count(cap) == 1:
        what = f"the fastest backend, {name},"
    elif _troubled(scenario, name):
        what = f"{name}, troubled by the scenario,"
    why = (f"Why {name_of(best)}: it sent {what} {sw:.1%} of the attempts where "
           f"{name_of(worst)} sent {sl:.1%}")
    if slowest and sl > sw and sum(capacities):
        why += f", though it can serve only {cap / sum(capacities):.1%} of the load"
    return why + "."


def _ejections(r: AlgorithmResult) -> str:
    """ "b3 4 times" or "b3 and 2 others 7 times": who passive ejection took out, how often."""
    out = [b for b in r.backends if b.ejections]
    most = max(out, key=lambda b: b.ejections)
    who = most.name if len(out) == 1 else \
        f"{most.name} and {len(out) - 1} other{'s' if len(out) > 2 else ''}"
    return f"{who} {r.ejections:,} time{'s' if r.ejections != 1 else ''}"


def _ejection_lesson(best: AlgorithmResult, worst: AlgorithmResult) -> str | None:
    if not (best.ejections or worst.ejections) or best is worst:
        return None
    if best.ejections and worst.ejections:
        if _ejections(best) == _ejections(worst):
            return f"Passive ejection took out {_ejections(best)} under both."
        return (f"Passive ejection took out {_ejections(best)} under {name_of(best)} and "
                f"{_ejections(worst)} under {name_of(worst)}.")
    r = best if best.ejections else worst
    return f"Passive ejection took out {_ejections(r)} under {name_of(r)} only."
