"""Proxy benchmark: lbctl against nginx, on loopback, in one command.

    python bench/proxy.py                    # 3 rounds x 3 workloads x 3 targets, ~6 s each
    python bench/proxy.py --quick            # 1 round of 2 s runs: a smoke test of the harness
    python bench/proxy.py --profile 10       # then py-spy (if installed) records lbctl for 10 s

What it does:

* installs ``wrk`` and ``nginx`` from the distribution's packages when missing (``apt-get
  update`` once, then ``apt-get install -y wrk nginx``; needs root). Nothing else is fetched.
* starts, in a temporary directory, two nginx backends (1 worker each, keep-alive, serving a
  small body at ``/small`` and a 64 KiB body at ``/64k``), nginx as a reverse proxy in front
  of them (1 worker, upstream keepalive, the same X-Forwarded-* and X-Request-ID headers
  lbctl adds), and ``lbctl serve`` (1 process, every default feature on) in front of the
  same two, from a config file written there.
* pins the proxy under test to CPU 0, and wrk plus the backends to CPU 1.
* runs wrk (``-t1 -c64 --latency``) interleaved and repeated: for each round, each workload
  (small keep-alive, 64 KiB keep-alive, small with ``Connection: close``), each target
  (direct to one backend, nginx, lbctl), in an order rotated every round.
* prints medians of req/s, p50 and p99, each proxy's CPU time per request, the ratios to
  nginx, lbctl's peak RSS (VmHWM), and the targets from the ``serve`` issue; writes every run
  to ``bench/results/proxy-*.json``. Runs that shared the machine with other work are
  flagged (CPU used by processes this script did not start).

Only loopback addresses are used; every wrk run is bounded in time; only the processes this
script started are stopped (by PID), also on Ctrl-C or an error.

``--variant LABEL=FILE`` adds another lbctl instance whose config is the benchmark's plus
the top-level TOML tables in FILE (e.g. metrics off), measured in the same interleaved
rounds. ``--tree LABEL=DIR`` adds one that runs the lbctl source in DIR, to compare two
versions of the data plane::

    mkdir /tmp/lbctl-base && git archive HEAD~1 lbctl | tar -x -C /tmp/lbctl-base
    python bench/proxy.py --tree base=/tmp/lbctl-base --workload small
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"

SMALL_BODY = b"hello from an nginx backend\n"        # 28 bytes
LARGE_SIZE = 64 * 1024

WORKLOADS = {
    # name: (path, extra wrk headers, description)
    "small": ("/small", [], "small body, keep-alive"),
    "64k": ("/64k", [], "64 KiB body, keep-alive"),
    "close": ("/small", ["Connection: close"], "small body, Connection: close"),
}

# From the serve issue: lbctl / nginx throughput, p99 at most 1.5x nginx's, RSS in MiB.
TARGETS = {"small": 0.6, "64k": 0.8, "close": 0.8}
P99_MAX_RATIO = 1.5
RSS_MAX_MIB = 60

PROXY_CPU, LOAD_CPU = "0", "1"


# ---- tools ---------------------------------------------------------------------------------

def find_binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)


def ensure_tools() -> dict[str, str]:
    """wrk and nginx from the distribution's packages: apt-get update once, then install."""
    missing = [name for name in ("wrk", "nginx") if find_binary(name) is None]
    if missing:
        if os.geteuid() != 0:
            sys.exit(f"bench: {' and '.join(missing)} missing; install them as root: "
                     f"apt-get update && apt-get install -y wrk nginx")
        print(f"bench: installing {' '.join(missing)} (apt-get)", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "wrk", "nginx"], check=True, env=env,
                       timeout=900)
    tools = {name: find_binary(name) for name in ("wrk", "nginx", "taskset")}
    for name, path in tools.items():
        if path is None:
            sys.exit(f"bench: {name} not found")
    return tools  # type: ignore[return-value]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before listening on "
                               f"{port}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s:\n{tail(log)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---- processes -----------------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path


class Processes:
    """Everything this script started; stopped by PID, newest first."""

    def __init__(self) -> None:
        self.items: list[Proc] = []

    def start(self, name: str, argv: list[str], log: Path, env: dict | None = None) -> Proc:
        out = open(log, "wb")
        try:
            # Own session: a Ctrl-C in the terminal reaches only this script, which then
            # stops its children in order.
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            out.close()
        proc = Proc(name, popen, log)
        self.items.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.items):
            p = proc.popen
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in reversed(self.items):
            p = proc.popen
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.items.clear()


def pinned(cpu: str | None, argv: list[str], taskset: str) -> list[str]:
    return [taskset, "-c", cpu, *argv] if cpu is not None else argv


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def machine_busy_seconds() -> float:
    """CPU time spent by everything on the machine (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]                                   # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")   # up to steal, no guests


def children_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks       # utime + stime
    return total


# ---- nginx configs -------------------------------------------------------------------------

NGINX_COMMON = """\
daemon off;
master_process on;
worker_processes 1;
pid {dir}/{name}.pid;
error_log {dir}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/{name}-body;
    proxy_temp_path {dir}/tmp/{name}-proxy;
    fastcgi_temp_path {dir}/tmp/{name}-fastcgi;
    uwsgi_temp_path {dir}/tmp/{name}-uwsgi;
    scgi_temp_path {dir}/tmp/{name}-scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
{body}
}}
"""

NGINX_BACKEND = """\
    sendfile on;
    tcp_nopush on;
    open_file_cache max=16;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {dir}/www;
        default_type application/octet-stream;
        location = /small {{ }}
        location = /64k {{ }}
    }}"""

NGINX_PROXY = """\
    upstream backends {{
{servers}
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The same request headers lbctl adds, so both proxies do the same work.
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Request-ID $request_id;
            # A 64 KiB response fits in memory buffers: nginx never spills it to disk.
            proxy_buffer_size 8k;
            proxy_buffers 16 8k;
        }}
    }}"""


def nginx_conf(dir_: Path, name: str, body: str) -> Path:
    path = dir_ / f"{name}.conf"
    path.write_text(NGINX_COMMON.format(dir=dir_, name=name, body=body))
    return path


def lbctl_toml(port: int, backend_ports: list[int], extra: str = "") -> str:
    """The benchmark config; ``extra`` (a --variant file) adds top-level tables after it."""
    lines = ["[listen]", f'address = "127.0.0.1:{port}"', "", "[[routes]]", 'pool = "bench"',
             "", "[pools.bench]", 'algorithm = "round_robin"', ""]
    for p in backend_ports:
        lines += ["[[pools.bench.backends]]", f'url = "http://127.0.0.1:{p}"', ""]
    return "\n".join(lines) + ("\n" + extra if extra else "")


def lbctl_env(src: Path = REPO) -> dict:
    # The lbctl in ``src`` (this checkout by default), whatever the interpreter's installed
    # copy points to.
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# ---- wrk -----------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_latency_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unparsed latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M)
    p50 = re.search(r"^\s*50%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    if not (rps and p99 and p50 and total):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(rps.group(1)), "p50_ms": parse_latency_ms(p50.group(1)),
            "p99_ms": parse_latency_ms(p99.group(1)), "requests": int(total.group(1)),
            "socket_errors": errors, "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def run_wrk(tools: dict, url: str, headers: list[str], args, duration: float) -> dict:
    argv = [tools["wrk"], f"-t{args.threads}", f"-c{args.connections}", f"-d{duration:g}s",
            "--latency", "--timeout", "5s"]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    argv = pinned(LOAD_CPU if args.pin else None, argv, tools["taskset"])
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"wrk did not finish: {' '.join(argv)}") from None
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


# ---- the benchmark -------------------------------------------------------------------------

@dataclass
class Target:
    name: str
    port: int
    proc: Proc | None = None          # None for "direct" (a backend, measured for reference)
    measured_pids: list[int] = field(default_factory=list)


def start_everything(tools: dict, procs: Processes, tmp: Path, args) -> list[Target]:
    (tmp / "www").mkdir()
    (tmp / "tmp").mkdir()
    (tmp / "www" / "small").write_bytes(SMALL_BODY)
    (tmp / "www" / "64k").write_bytes(os.urandom(LARGE_SIZE))
    # nginx workers drop privileges when started as root: let them read the files.
    for p in (tmp, tmp / "www", tmp / "tmp"):
        p.chmod(0o755)
    for p in (tmp / "www").iterdir():
        p.chmod(0o644)

    load_cpu = LOAD_CPU if args.pin else None
    proxy_cpu = PROXY_CPU if args.pin else None
    backend_ports = []
    for i in (1, 2):
        port = free_port()
        conf = nginx_conf(tmp, f"backend{i}", NGINX_BACKEND.format(port=port, dir=tmp))
        log = tmp / f"backend{i}.out"
        proc = procs.start(f"backend{i}", pinned(load_cpu, [tools["nginx"], "-p", str(tmp), "-e",
                           str(tmp / f"backend{i}.error.log"), "-c", str(conf)], tools["taskset"]),
                           log)
        wait_listening(port, proc.popen, log)
        backend_ports.append(port)

    targets = [Target("direct", backend_ports[0])]

    port = free_port()
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in backend_ports)
    conf = nginx_conf(tmp, "nginx", NGINX_PROXY.format(port=port, servers=servers))
    log = tmp / "nginx.out"
    proc = procs.start("nginx", pinned(proxy_cpu, [tools["nginx"], "-p", str(tmp), "-e",
                       str(tmp / "nginx.error.log"), "-c", str(conf)], tools["taskset"]), log)
    wait_listening(port, proc.popen, log)
    deadline = time.monotonic() + 10           # the master listens before its worker forks
    while not children(proc.popen.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    targets.append(Target("nginx", port, proc, [proc.popen.pid, *children(proc.popen.pid)]))

    variants = [("lbctl", "", REPO)] + \
        [(label, Path(path).read_text(), REPO) for label, path in args.variant] + \
        [(label, "", Path(src).resolve()) for label, src in args.tree]
    for label, extra, src in variants:
        port = free_port()
        log = tmp / f"{label}.out"
        conf = tmp / f"{label}.toml"
        conf.write_text(lbctl_toml(port, backend_ports, extra))
        argv = [sys.executable, "-m", "lbctl", "serve", str(conf)]
        proc = procs.start(label, pinned(proxy_cpu, argv, tools["taskset"]), log,
                           env=lbctl_env(src))
        wait_listening(port, proc.popen, log, timeout=30)
        targets.append(Target(label, port, proc, [proc.popen.pid]))

    # Each proxy must actually serve both bodies before anything is measured.
    for t in targets:
        for path, size in (("/small", len(SMALL_BODY)), ("/64k", LARGE_SIZE)):
            got = http_get_size(t.port, path)
            if got != size:
                raise RuntimeError(f"{t.name}: GET {path} returned {got} bytes, expected {size}")
    return targets


def http_get_size(port: int, path: str) -> int:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path} on port {port}: status {resp.status}")
        return len(body)
    finally:
        conn.close()


def measure(tools: dict, targets: list[Target], ours: list[int], args) -> list[dict]:
    """``ours``: every long-running process this script started (for the noise estimate)."""
    runs = []
    base = f"http://127.0.0.1:{{port}}"
    print(f"warming up ({args.warmup:g} s per target)", flush=True)
    for t in targets:
        run_wrk(tools, base.format(port=t.port) + "/small", [], args, args.warmup)
    for rnd in range(args.rounds):
        for workload in args.workload:
            path, headers, _ = WORKLOADS[workload]
            shift = rnd % len(targets)
            for t in targets[shift:] + targets[:shift]:      # rotated: no fixed order bias
                cpu_before = cpu_seconds(t.measured_pids)
                ours_before = cpu_seconds(ours) + children_cpu_seconds()
                busy_before = machine_busy_seconds()
                t0 = time.monotonic()
                r = run_wrk(tools, base.format(port=t.port) + path, headers, args, args.duration)
                wall = time.monotonic() - t0
                # CPU that neither wrk nor our servers used: other work on the machine, which
                # competes with the benchmark and makes a run noisy.
                other = (machine_busy_seconds() - busy_before) - \
                    (cpu_seconds(ours) + children_cpu_seconds() - ours_before)
                used = cpu_seconds(t.measured_pids) - cpu_before
                # CPU per request is the steadier figure when the machine is shared: it does
                # not count time the proxy spent waiting for a core.
                r.update(round=rnd + 1, workload=workload, target=t.name,
                         proxy_cpu=used / wall if t.measured_pids else None,
                         proxy_us_per_req=1e6 * used / r["requests"] if t.measured_pids else None,
                         other_cpu=max(other, 0.0) / wall)
                runs.append(r)
                print(f"  round {rnd + 1} {workload:6} {t.name:10} {r['rps']:10.0f} req/s  "
                      f"p99 {r['p99_ms']:7.2f} ms"
                      + (f"  {r['proxy_us_per_req']:6.1f} us/req" if r["proxy_us_per_req"] else "")
                      + (f"  other load {r['other_cpu']:.2f} cores" if r["other_cpu"] > 0.1 else "")
                      + (f"  errors {r['socket_errors']}" if r["socket_errors"] else "")
                      + (f"  non-2xx {r['non_2xx']}" if r["non_2xx"] else ""), flush=True)
    return runs


def summarize(runs: list[dict], targets: list[Target], rss_kib: dict) -> dict:
    summary: dict = {}
    for workload in {r["workload"]: None for r in runs}:
        per = {}
        for t in targets:
            rs = [r for r in runs if r["workload"] == workload and r["target"] == t.name]
            if not rs:
                continue
            cpu = [r["proxy_cpu"] for r in rs if r["proxy_cpu"] is not None]
            us = [r["proxy_us_per_req"] for r in rs if r["proxy_us_per_req"] is not None]
            per[t.name] = {"rps": statistics.median(r["rps"] for r in rs),
                           "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                           "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                           "errors": sum(r["socket_errors"] + r["non_2xx"] for r in rs),
                           "proxy_cpu": statistics.median(cpu) if cpu else None,
                           "proxy_us_per_req": statistics.median(us) if us else None,
                           # best of the rounds: noise from other work only ever adds to these
                           "best_rps": max(r["rps"] for r in rs),
                           "best_us_per_req": min(us) if us else None,
                           "other_cpu": statistics.median(r["other_cpu"] for r in rs),
                           "runs": len(rs)}
        ref = per.get("nginx")
        for name, s in per.items():
            if ref:
                s["rps_ratio"] = s["rps"] / ref["rps"]
                s["p99_ratio"] = s["p99_ms"] / ref["p99_ms"] if ref["p99_ms"] else None
                if s["proxy_us_per_req"] and ref["proxy_us_per_req"]:
                    s["cpu_ratio"] = s["proxy_us_per_req"] / ref["proxy_us_per_req"]
        summary[workload] = per
    checks = []
    for t in targets:
        if t.name in ("direct", "nginx"):
            continue
        for workload, floor in TARGETS.items():
            if workload not in summary:
                continue
            s = summary[workload][t.name]
            checks.append({"target": t.name, "what": f"{workload} req/s vs nginx",
                           "value": s["rps_ratio"], "limit": f">= {floor}",
                           "ok": s["rps_ratio"] >= floor})
            checks.append({"target": t.name, "what": f"{workload} p99 vs nginx",
                           "value": s["p99_ratio"], "limit": f"<= {P99_MAX_RATIO}",
                           "ok": s["p99_ratio"] is not None and s["p99_ratio"] <= P99_MAX_RATIO})
        mib = rss_kib.get(t.name, 0) / 1024
        checks.append({"target": t.name, "what": "peak RSS MiB", "value": mib,
                       "limit": f"<= {RSS_MAX_MIB}", "ok": mib <= RSS_MAX_MIB})
    return {"workloads": summary, "checks": checks}


def render(summary: dict, rss_kib: dict, args) -> str:
    out = ["CPU: the proxy's CPU use during the run; us/req: its CPU time per request",
           f"medians of {args.rounds} round(s), {args.duration:g} s each, wrk -t{args.threads} "
           f"-c{args.connections}; proxy on CPU {PROXY_CPU}, wrk and backends on CPU {LOAD_CPU}"
           if args.pin else "(not pinned: fewer than 2 CPUs)", ""]
    out.append(f"{'workload':8} {'target':10} {'req/s':>9} {'x nginx':>7} {'p50 ms':>7} "
               f"{'p99 ms':>7} {'x nginx':>7} {'CPU':>5} {'us/req':>7} {'x nginx':>7} {'errors':>6}")
    for workload, per in summary["workloads"].items():
        for name, s in per.items():
            cpu = f"{s['proxy_cpu'] * 100:4.0f}%" if s["proxy_cpu"] is not None else f"{'-':>5}"
            us = f"{s['proxy_us_per_req']:7.1f} {s.get('cpu_ratio', 0):7.2f}" \
                if s["proxy_us_per_req"] is not None else f"{'-':>7} {'-':>7}"
            out.append(f"{workload:8} {name:10} {s['rps']:9.0f} {s.get('rps_ratio', 0):7.2f} "
                       f"{s['p50_ms']:7.2f} {s['p99_ms']:7.2f} {s.get('p99_ratio') or 0:7.2f} "
                       f"{cpu} {us} {s['errors']:6d}")
        out.append("")
    out.append("peak RSS (VmHWM): " + ", ".join(f"{k} {v / 1024:.1f} MiB"
                                                 for k, v in rss_kib.items()))
    out.append("")
    out.append("targets (serve issue):")
    for c in summary["checks"]:
        out.append(f"  {'ok  ' if c['ok'] else 'MISS'} {c['target']:10} {c['what']:26} "
                   f"{c['value']:.2f} (want {c['limit']})")
    return "\n".join(out)


def versions(tools: dict) -> dict:
    def run(argv):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return None
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    py = subprocess.run([sys.executable, "-c", "import httptools, uvloop; "
                         "print(httptools.__version__, uvloop.__version__)"],
                        capture_output=True, text=True, env=lbctl_env(), timeout=60).stdout.split()
    return {"nginx": run([tools["nginx"], "-v"]), "wrk": run([tools["wrk"], "-v"]),
            "python": platform.python_version(), "httptools": py[0] if py else None,
            "uvloop": py[1] if len(py) > 1 else None, "cpu": cpu, "cpus": os.cpu_count(),
            "lbctl_commit": run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
            "lbctl_dirty": bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                                "lbctl"], capture_output=True, text=True,
                                               timeout=30).stdout.strip())}


def profile(tools: dict, target: Target, args, tmp: Path) -> None:
    """py-spy (when installed) records lbctl under the first workload's load."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.access(pyspy, os.X_OK):
        print("bench: --profile needs py-spy (pip install py-spy); skipped")
        return
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    outputs = {"raw": RESULTS / f"profile-{stamp}.txt"}
    # --native shows time inside uvloop, llhttp and the kernel calls, at the price of pausing
    # the process for each sample; the default samples without stopping it.
    mode = ["--native", "--rate", "100"] if args.native else ["--nonblocking", "--rate", "250"]
    rec = subprocess.Popen([pyspy, "record", "--pid", str(target.proc.popen.pid), "--duration",
                            f"{args.profile:g}", *mode, "--format", "raw", "--output",
                            str(outputs["raw"])],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        path, headers, _ = WORKLOADS[args.workload[0]]
        run_wrk(tools, f"http://127.0.0.1:{target.port}{path}", headers, args, args.profile + 1)
        rec.wait(timeout=args.profile + 30)
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.wait(timeout=5)
    if rec.returncode != 0:
        print(f"bench: py-spy failed: {rec.stderr.read() if rec.stderr else ''}")
        return
    print(f"\nprofile (folded stacks): {outputs['raw']}")
    print(top_functions(outputs["raw"]))


def top_functions(path: Path, n: int = 25) -> str:
    """Self and inclusive share of samples per function, from py-spy's folded stacks."""
    self_: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        total += c
        frames = [re.sub(r"\s*\((.*?):\d+\)$", r" (\1)", f) for f in stack.split(";")]
        frames = [re.sub(r"^.*?/(lbctl|asyncio|uvloop)/", r"\1/", f) for f in frames]
        self_[frames[-1]] = self_.get(frames[-1], 0) + c
        for f in set(frames):
            incl[f] = incl.get(f, 0) + c
    if not total:
        return "(no samples)"
    lines = [f"{total} samples; self time:"]
    for f, c in sorted(self_.items(), key=lambda kv: -kv[1])[:n]:
        lines.append(f"  {100 * c / total:5.1f}%  {f}")
    lines.append("inclusive:")
    for f, c in sorted(incl.items(), key=lambda kv: -kv[1])[:n]:
        lines.append(f"  {100 * c / total:5.1f}%  {f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: python bench/proxy.py --rounds 3 --duration 6")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per wrk run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds per target, unrecorded")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workload", action="append", choices=list(WORKLOADS),
                    help="measure only this workload (repeatable; default all)")
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s runs")
    ap.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                    help="afterwards, record lbctl with py-spy under the first --workload's load")
    ap.add_argument("--native", action="store_true",
                    help="with --profile: include native frames (uvloop, llhttp, syscalls)")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=FILE",
                    help="another lbctl with FILE's TOML appended to its config")
    ap.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR",
                    help="another lbctl run from the source tree DIR (e.g. `git archive` of an "
                         "older commit), to A/B a data-plane change in the same rounds")
    ap.add_argument("--keep-temp", action="store_true", help="leave the temp dir (configs, logs)")
    args = ap.parse_args(argv)
    args.workload = args.workload or list(WORKLOADS)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2.0, 1.0
    variants = []
    for v in args.variant:
        label, sep, path = v.partition("=")
        if not sep or not label or label in ("direct", "nginx", "lbctl"):
            ap.error(f"--variant {v!r}: expected LABEL=FILE with a new label")
        variants.append((label, path))
    args.variant = variants
    trees = []
    for v in args.tree:
        label, sep, src = v.partition("=")
        if not sep or not label or label in ("direct", "nginx", "lbctl") or \
                not (Path(src) / "lbctl" / "proxy").is_dir():
            ap.error(f"--tree {v!r}: expected LABEL=DIR, DIR holding an lbctl package")
        trees.append((label, src))
    args.tree = trees
    args.pin = (os.cpu_count() or 1) >= 2
    return args


def benchmark(tools: dict, procs: Processes, targets: list[Target], args) -> None:
    """The interleaved rounds, the table, the JSON file."""
    ours = [pid for p in procs.items for pid in (p.popen.pid, *children(p.popen.pid))]
    runs = measure(tools, targets, ours, args)
    noisy = [r for r in runs if r["other_cpu"] > 0.1]
    if noisy:
        print(f"\nbench: {len(noisy)} of {len(runs)} runs shared the machine with other work "
              f"(up to {max(r['other_cpu'] for r in noisy):.2f} cores); medians damp this, "
              "but compare figures from a quiet machine", flush=True)
    rss_kib = {}
    for t in targets:
        if t.name == "nginx":
            workers = children(t.proc.popen.pid)
            rss_kib["nginx worker"] = max((status_kib(p, "VmHWM") or 0) for p in workers) \
                if workers else 0
        elif t.proc is not None:
            rss_kib[t.name] = status_kib(t.proc.popen.pid, "VmHWM") or 0
    summary = summarize(runs, targets, rss_kib)
    print()
    print(render(summary, rss_kib, args))
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"proxy-{stamp}.json"
    path.write_text(json.dumps({
        "time": stamp, "versions": versions(tools),
        "params": {"rounds": args.rounds, "duration": args.duration,
                   "connections": args.connections, "threads": args.threads,
                   "workloads": args.workload,
                   "pinned": args.pin, "variants": [v[0] for v in args.variant],
                   "trees": [list(t) for t in args.tree]},
        "rss_kib": rss_kib, "summary": summary, "runs": runs}, indent=2) + "\n")
    print(f"\nresults: {path.relative_to(REPO)}")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tools = ensure_tools()
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="lbctl-bench-"))
    # SIGTERM unwinds like Ctrl-C, so the finally below always stops what was started.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        targets = start_everything(tools, procs, tmp, args)
        print(f"started: {', '.join(t.name for t in targets)}; temp dir {tmp}", flush=True)
        if args.rounds > 0:                  # --rounds 0 --profile N: only the profile
            benchmark(tools, procs, targets, args)
        if args.profile > 0:
            profile(tools, next(t for t in targets if t.name == "lbctl"), args, tmp)
        return 0
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping what it started", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        # Stopping is bounded (SIGKILL after 10 s each); a second Ctrl-C must not cut it short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        procs.stop_all()
        if args.keep_temp:
            print(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
