"""How fast `lbctl simulate` runs (a benchmark, not a test: timings vary by machine).

    python bench/simulate_speed.py            # everything (about two minutes)
    python bench/simulate_speed.py --quick    # 200k-request sections only

Sections:
  1. simulated requests per second per algorithm, 100 backends (engine only, then with the
     summary: sorting latencies, utilization);
  2. least_conn over 1,000 backends (a pick must not scan the pool);
  3. the five default algorithms over 1M requests and 100 backends, total wall time;
  4. a replay of 1M lines of lbctl's JSON access log (written here first, 4 backends): the
     time to read the log (arrivals, keys, queue-free service samples) and to simulate it
     with round_robin, summary included.
Targets: >= 150k simulated requests/s per algorithm on one core; 1M x 5 in < 40 s; a replay
of 1M log lines in < 20 s.
Every run is at 90% load, Poisson arrivals, exponential service, concurrency 1. Times are CPU
time of this process (time.process_time), so other work on a shared machine does not count;
sections 1 and 2 take the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lbctl.balancing import ALGORITHMS  # noqa: E402
from lbctl.simulate.driver import run_algorithm  # noqa: E402
from lbctl.simulate.results import summarize  # noqa: E402
from lbctl.simulate.scenario import parse_scenario, scenario_from_options  # noqa: E402

FIVE = ("round_robin", "random", "least_conn", "p2c", "ewma")


def timed(scenario, algorithm, repeat=1):
    """Best of ``repeat`` runs (other processes on a shared machine only ever slow a run)."""
    best = None
    for _ in range(repeat):
        t0 = time.process_time()
        rec = run_algorithm(scenario, algorithm)
        t1 = time.process_time()
        result = summarize(rec)
        t2 = time.process_time()
        if best is None or (t1 - t0) < best[0]:
            best = (t1 - t0, t2 - t1, result)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 1M x 5 section")
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for sections 1-2")
    parser.add_argument("--replay-lines", type=int, default=1_000_000,
                        help="log lines for section 4")
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} cpus; one process, one core")

    n = args.requests
    sc = scenario_from_options(backends=100, load=0.9, requests=n)
    print(f"\n1. {n:,} requests, 100 backends, per algorithm (best of {args.repeat})")
    print(f"   {'algorithm':16} {'engine req/s':>13} {'with summary':>13}")
    for algorithm in ALGORITHMS:
        sim, summ, _ = timed(sc, algorithm, args.repeat)
        mark = "" if n / sim >= 150_000 else "   (below 150k)"
        print(f"   {algorithm:16} {n / sim:13,.0f} {n / (sim + summ):13,.0f}{mark}")

    sc = scenario_from_options(backends=1000, load=0.9, requests=n)
    sim, summ, _ = timed(sc, "least_conn", args.repeat)
    print(f"\n2. least_conn, 1,000 backends, {n:,} requests: {n / sim:,.0f} req/s "
          f"(engine), {n / (sim + summ):,.0f} req/s with summary")

    if args.quick:
        return
    sc = scenario_from_options(backends=100, load=0.9, requests=1_000_000)
    print("\n3. 1,000,000 requests x 5 algorithms, 100 backends")
    total = 0.0
    for algorithm in FIVE:
        sim, summ, result = timed(sc, algorithm)
        total += sim + summ
        print(f"   {algorithm:16} {sim:6.2f} s engine + {summ:4.2f} s summary "
              f"(mean latency {result.latency['mean'] * 1000:.1f} ms)")
    print(f"   total {total:.1f} s (target < 40 s)")

    lines = args.replay_lines
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "access.log")
        write_log(log, lines)
        t0 = time.process_time()
        sc = parse_scenario({"algorithms": ["round_robin"]}, log, replay=log)
        t1 = time.process_time()
        result = summarize(run_algorithm(sc, "round_robin"))
        t2 = time.process_time()
    print(f"\n4. replay of {lines:,} lines of lbctl's JSON access log, round_robin")
    print(f"   read {t1 - t0:.2f} s + simulate {t2 - t1:.2f} s = {t2 - t0:.1f} s "
          f"(target < 20 s; {result.requests:,} requests, mean latency "
          f"{result.latency['mean'] * 1000:.1f} ms)")


def write_log(path: str, lines: int) -> None:
    """``lines`` JSON access-log lines as lbctl writes them: Poisson arrivals at 200/s over
    four backends, exponential upstream times (10 ms)."""
    rng = random.Random(1)
    t = 1_790_000_000.0
    with open(path, "w") as f:
        for k in range(lines):
            t += rng.expovariate(200.0)
            up = rng.expovariate(100.0)
            f.write(json.dumps({
                "time": "2026-09-21T12:00:00.000Z", "epoch": round(t, 6),
                "client": f"10.0.{k % 200}.{k % 250}", "consumer": None, "method": "GET",
                "path": f"/items/{k % 1000}?page=2", "protocol": "HTTP/1.1", "status": 200,
                "bytes": 512, "duration": round(up + 0.0003, 6), "route": "*/",
                "pool": "api", "backend": f"api-{1 + k % 4}", "upstream_time": round(up, 6),
                "attempts": 1, "request_id": f"5a4458bd9ecb-{k}", "termination": None,
                "host": "api.example.com", "user_agent": "curl/8.5.0", "referer": None},
                separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
