"""``lbctl serve``: load the config, start an ``Instance`` (or a ``Master`` and its workers),
run until SIGTERM/SIGINT.

SIGHUP reloads the config file (an invalid one is logged and the running config kept);
SIGUSR1 reopens the access log (the logrotate convention). With one worker (``[server]
workers = 1``, or ``"auto"`` on one CPU) the instance is this process alone; with more, this
process is the master and the workers are processes of their own (``master.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from lbctl.config.loader import ConfigError, load_config, read_text
from lbctl.exitcodes import Exit
from lbctl.serve.instance import Instance
from lbctl.serve.loop import install_fast_loop

log = logging.getLogger("lbctl")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: taskset, cpusets, containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_count(setting: int | str) -> int:
    return usable_cpus() if setting == "auto" else int(setting)


def serve(path: str, workers: int | str | None = None, log_format: str = "text") -> int:
    """Run ``lbctl serve``; ``workers`` (the command line's) overrides ``[server] workers``."""
    text = read_text(path)              # ConfigError is a UserError: exit 2, no traceback
    config = load_config(path, text=text)
    count = worker_count(config.server.workers if workers is None else workers)
    install_fast_loop()
    if count > 1:
        return asyncio.run(_serve_workers(path, config, text, count, log_format))
    return asyncio.run(_serve(path, config))


async def _serve(path: str, config) -> int:
    loop = asyncio.get_running_loop()
    instance = Instance(config)
    # Signals are handled before "listening" is announced: a supervisor that reloads as
    # soon as it sees the line must not kill the process with SIGHUP's default action.
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(instance, path))
    loop.add_signal_handler(signal.SIGUSR1, instance.observer.reopen)   # logrotate convention
    await instance.start()
    # Discovered backends included: the first lookups were done before listening.
    log.info("listening on %s: %d routes, %d pools, %d backends", config.listen.address,
             len(config.routes), len(config.pools),
             sum(len(state.pool.backends) for state in instance.runtime.pools.values()))
    await stop.wait()
    timeout = instance.runtime.config.limits.drain_timeout
    instance.proxy.stop_listening()
    log.info("stopping: no longer accepting; draining %d connections (up to %gs)",
             len(instance.proxy.connections), timeout)
    clean = await instance.drain(timeout)
    log.info("stopped%s", "" if clean else ": drain timeout reached, remaining connections closed")
    return Exit.OK


def reload(instance: Instance, path: str) -> bool:
    """Re-read ``path``; keep serving the old config if the new one is invalid."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("reload rejected: %s", problem)
        log.error("reload rejected: %d problem(s); still serving the previous configuration",
                  len(exc.problems))
        return False
    instance.reload(config)
    log.info("reloaded %s: %d routes, %d pools", path, len(config.routes), len(config.pools))
    return True


async def _serve_workers(path: str, config, text: str, count: int, log_format: str) -> int:
    from lbctl.serve.master import Master
    loop = asyncio.get_running_loop()
    master = Master(config, text, count, log_format=log_format)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: set[asyncio.Task] = set()

    def soon(coro) -> None:
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    loop.add_signal_handler(signal.SIGHUP, lambda: soon(master.reload(path)))
    loop.add_signal_handler(signal.SIGUSR1, lambda: soon(master.reopen()))
    await master.start()
    # Discovered backends included: the first lookups were done before listening.
    log.info("listening on %s: %d routes, %d pools, %d backends; %d workers (pids %s)",
             config.listen.address, len(config.routes), len(config.pools),
             sum(len(state.pool.backends) for state in master.runtime.pools.values()), count,
             ", ".join(str(w.pid) for w in master.workers.values()))
    await stop.wait()
    stop.clear()
    for sig in (signal.SIGTERM, signal.SIGINT):   # a second signal: stop at once
        loop.add_signal_handler(sig, master.stop_now)
    timeout = master.config.limits.drain_timeout
    await master.stop_accepting(timeout)
    log.info("stopping: no longer accepting; draining %d workers (up to %gs)", count, timeout)
    clean = await master.drain(timeout)
    log.info("stopped%s", "" if clean else ": drain timeout reached, remaining connections closed")
    return Exit.OK
