"""Rate-limit store benchmark: what a limit costs a request, in this process and in Redis.

    python bench/store.py                 # 3 rounds x 3 lbctl configs, 6 s each, then the calls
    python bench/store.py --quick         # 1 round of 2 s runs: a smoke test of the harness

Part 1, the proxy. Three ``lbctl serve`` processes in front of the same two nginx backends
(small keep-alive responses, the ``small`` workload of ``bench/proxy.py``), measured with
wrk in the same interleaved, rotated rounds:

* ``nolimit``: the route without a rate limit (the reference);
* ``local``: the route with ``rate_limit`` (a million a second, never refusing) and the
  default ``[store] backend = "local"``;
* ``redis``: the same limit through ``[store] backend = "redis"`` on a ``redis-server``
  started here (loopback, no persistence).

It prints medians of req/s, p99 and each lbctl's CPU time per request, and the ratios to
``nolimit``: the CPU a limit adds per request and its p99. lbctl runs on CPU 0; wrk, the
backends and redis-server on CPU 1.

Part 2, one store call. In this process (pinned to CPU 0, uvloop), interleaved rounds of
the CPU per call of the rate-limit script (``EVALSHA``) through lbctl's pool of redis-py
connections, against the same call through redis-py's ``Redis`` client with its
``BlockingConnectionPool`` and with its ``ConnectionPool`` (why lbctl pools the connections
itself), and of a whole decision (``RedisBuckets.allow``: the deadline, the key, the
``Decision``).

Needs root to install what is missing (``apt-get install wrk nginx redis-server``).
Everything listens on 127.0.0.1; every run is bounded in time; only processes this script
started are stopped, by PID. Results go to ``bench/results/store-*.json`` (ignored by git).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import proxy as harness  # noqa: E402  (bench/proxy.py: the interleaved, rotated rounds)
from proxybench.load import write_lua  # noqa: E402
from proxybench.rig import (Pinning, Processes, default_tools_dir, ensure_tools,  # noqa: E402
                            find_binary, free_port, pinned, stop_and_clean, tree,
                            wait_listening)
from proxybench.targets import (REPO, Target, lbctl_env, prepare_files,  # noqa: E402
                                start_backends, wait_serving)

LIMIT = 'rate_limit = { rate = 1000000, burst = 1000000 }'     # measured, never refusing


def ensure_redis() -> str:
    path = find_binary("redis-server")
    if path is None:
        if os.geteuid() != 0:
            sys.exit("bench: redis-server missing; as root: apt-get install -y redis-server")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q",
                        "--no-install-recommends", "redis-server"], check=True, env=env,
                       timeout=1800, stdout=subprocess.DEVNULL)
        path = find_binary("redis-server")
    return path


def lbctl_toml(port: int, backend_ports: list[int], limit: bool, store: str) -> str:
    lines = ["[listen]", f'address = "127.0.0.1:{port}"', "", store, "", "[[routes]]",
             'pool = "bench"', LIMIT if limit else "", "", "[pools.bench]",
             'algorithm = "round_robin"', ""]
    for p in backend_ports:
        lines += ["[[pools.bench.backends]]", f'url = "http://127.0.0.1:{p}"', ""]
    return "\n".join(lines)


def start(tools: dict, procs: Processes, tmp: Path, args) -> tuple[list, list[int], int]:
    prepare_files(tmp)
    backends = start_backends(tools, procs, tmp, args)
    redis_port = free_port()
    log = tmp / "redis.out"
    proc = procs.start("redis", pinned(args.pinning.load, [
        tools["redis-server"], "--port", str(redis_port), "--bind", "127.0.0.1", "--dir",
        str(tmp), "--save", "", "--appendonly", "no"], tools["taskset"]), log)
    wait_listening(redis_port, proc.popen, log)

    redis = f'[store]\nbackend = "redis"\nurl = "redis://127.0.0.1:{redis_port}/0"'
    targets = []
    for label, limit, store in (("nolimit", False, ""), ("local", True, ""),
                                ("redis", True, redis)):
        port = free_port()
        log = tmp / f"{label}.out"
        conf = tmp / f"{label}.toml"
        conf.write_text(lbctl_toml(port, backends, limit, store))
        argv = [sys.executable, "-m", "lbctl", "serve", str(conf)]
        proc = procs.start(label, pinned(args.pinning.proxy, argv, tools["taskset"]), log,
                           env=lbctl_env())
        wait_listening(port, proc.popen, log, timeout=30)
        target = Target(label, "lbctl", port, proc)
        wait_serving(target)
        targets.append(target)
    return targets, backends, redis_port


def summarize(runs: list[dict]) -> dict:
    per = {}
    for name in {r["target"]: None for r in runs}:
        rs = [r for r in runs if r["target"] == name]
        per[name] = {"rps": statistics.median(r["rps"] for r in rs),
                     "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                     "us_per_req": statistics.median(r["us_per_req"] for r in rs),
                     "best_us_per_req": min(r["us_per_req"] for r in rs),
                     "errors": sum(r["socket_errors"] + r["non_2xx"] for r in rs),
                     "other_cpu": statistics.median(r["other_cpu"] for r in rs)}
    ref = per["nolimit"]
    for s in per.values():
        s["cpu_ratio"] = s["us_per_req"] / ref["us_per_req"]
        s["added_us_per_req"] = s["us_per_req"] - ref["us_per_req"]
        s["p99_ratio"] = s["p99_ms"] / ref["p99_ms"]
    return per


# ---- part 2: one store call ----------------------------------------------------------------

async def calls(redis_port: int, n: int, rounds: int) -> dict:
    import redis.asyncio as ra

    from lbctl.config.model import Store as StoreConfig
    from lbctl.gateway.rate_limit import Limit
    from lbctl.gateway.redis_store import SCRIPT, RedisStore
    from lbctl.gateway.store import LocalStore

    url = f"redis://127.0.0.1:{redis_port}/0"
    store = RedisStore(StoreConfig(backend="redis", url=url, timeout=2.0), fallback=LocalStore())
    await store.start()
    buckets = store.limiter(Limit("bench-calls", 1e6, 1_000_000))
    kw = dict(host="127.0.0.1", port=redis_port, protocol=2, socket_timeout=None)
    blocking = ra.Redis(connection_pool=ra.BlockingConnectionPool(max_connections=16,
                                                                  timeout=None, **kw))
    plain = ra.Redis(connection_pool=ra.ConnectionPool(max_connections=16, **kw))
    script_b = blocking.register_script(SCRIPT)
    key, args = "lbctl:rl:bench-calls:k", ("1000000.0", 1_000_000)
    sha = script_b.sha
    await script_b(keys=(key,), args=args)          # loaded once on the server
    ways = {
        "EVALSHA through lbctl's pool of redis-py connections":
            lambda: store.pool.call("EVALSHA", sha, 1, key, *args),
        "EVALSHA through redis-py's Redis + BlockingConnectionPool":
            lambda: blocking.evalsha(sha, 1, key, *args),
        "EVALSHA through redis-py's Redis + ConnectionPool":
            lambda: plain.evalsha(sha, 1, key, *args),
        "a whole decision: RedisBuckets.allow (deadline, key, Decision)":
            lambda: buckets.allow("k", 0.0),
    }
    results: dict[str, list[float]] = {name: [] for name in ways}
    names = list(ways)
    for rnd in range(rounds):
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:     # rotated
            call = ways[name]
            for _ in range(200):
                await call()
            cpu = time.process_time()
            for _ in range(n):
                await call()
            results[name].append((time.process_time() - cpu) / n * 1e6)
    await store.close()
    await blocking.aclose()
    await plain.aclose()
    return {name: {"us_per_call": statistics.median(v), "best": min(v)}
            for name, v in results.items()}


def run_calls(redis_port: int, args) -> dict:
    if args.pinning.proxy is not None:
        os.sched_setaffinity(0, {int(c) for c in args.pinning.proxy.split(",")})
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(calls(redis_port, args.calls, args.rounds or 1))


def render(per: dict, call_costs: dict, args) -> str:
    out = [f"medians of {args.rounds} round(s), {args.duration:g} s each, wrk -t1 "
           f"-c{args.connections}, small keep-alive; {args.pinning.note} (redis-server with "
           f"the backends)", "",
           f"{'lbctl':8} {'req/s':>9} {'p99 ms':>7} {'x none':>6} {'us/req':>7} {'x none':>6} "
           f"{'added us':>8} {'errors':>6}"]
    for name, s in per.items():
        out.append(f"{name:8} {s['rps']:9.0f} {s['p99_ms']:7.2f} {s['p99_ratio']:6.2f} "
                   f"{s['us_per_req']:7.1f} {s['cpu_ratio']:6.2f} {s['added_us_per_req']:8.1f} "
                   f"{s['errors']:6d}")
    if call_costs:
        out += ["", f"one store call, CPU per call (uvloop, {args.calls} calls, median of rounds):"]
        for name, c in call_costs.items():
            out.append(f"  {c['us_per_call']:6.1f} us  {name}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per wrk run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds per target, unrecorded")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--calls", type=int, default=20000, help="store calls per way and round")
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s runs")
    ap.add_argument("--keep-temp", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup, args.calls = 1, 2.0, 1.0, 2000
    args.threads, args.workload, args.workers = 1, ["small"], 1
    args.pinning = Pinning.plan(1)
    notes: list[str] = []
    tools = ensure_tools(set(), default_tools_dir(), True, notes)
    tools["redis-server"] = ensure_redis()
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="lbctl-bench-store-"))
    signal.signal(signal.SIGTERM, harness._interrupt)
    try:
        targets, backends, redis_port = start(tools, procs, tmp, args)
        print(f"started: {', '.join(t.name for t in targets)}, redis-server; temp dir {tmp}",
              flush=True)

        def ours() -> list[int]:
            return [pid for p in procs.items for pid in tree(p.popen.pid)]
        runs = harness.measure(tools, targets, backends, ours, args, write_lua(tmp))
        per = summarize(runs)
        call_costs = run_calls(redis_port, args)
        noisy = [r for r in runs if r["other_cpu"] > harness.NOISE_THRESHOLD]
        print()
        if noisy:
            print(f"bench: {len(noisy)} of {len(runs)} runs shared the machine with other work "
                  f"(up to {max(r['other_cpu'] for r in noisy):.2f} cores)")
        print(render(per, call_costs, args))
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = harness.write_results({"time": stamp, "versions": harness.versions(tools),
                                      "params": {"rounds": args.rounds, "duration": args.duration,
                                                 "connections": args.connections,
                                                 "calls": args.calls,
                                                 "pinning": args.pinning.note},
                                      "summary": per, "calls": call_costs, "runs": runs}, "store")
        print(f"\nresults: {path.relative_to(REPO)}")
        return 0
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping what it started", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_and_clean(procs, tmp, args.keep_temp)


if __name__ == "__main__":
    sys.exit(main())
