"""``lbctl serve``: load the config, start an ``Instance`` (or a ``Master`` and its workers),
run until SIGTERM/SIGINT.

The first SIGTERM or SIGINT drains (up to ``drain_timeout``); a second one during the drain
stops at once, closing what is left, as operators expect of a second Ctrl-C. SIGHUP reloads
the config file (an invalid one is logged and the running config kept); SIGUSR1 reopens the
access log (the logrotate convention). At start (and on a reload that needs more) the
open-files limit is raised toward what ``max_connections`` needs (``openfiles.py``).

With one worker (``[server] workers = 1``, or ``"auto"`` on one CPU) the instance is this
process alone; with more, this process is the master and the workers are processes of their
own (``master.py``): the pid file holds the master's pid, and the master alone speaks to
systemd. The master raises the open-files limit before any worker exists (they inherit it)
and each worker raises its own on a reload that needs more; a second signal reaches every
worker through the master.

Around the instance's life, what supervisors read: the pid file (``--pid-file``: refused when
a live serve holds it, written once listening, removed on exit), systemd's notifications
(READY once listening, RELOADING then READY around a reload, STOPPING on the way out), and
the event log's lines for each step (``listening``, ``reloaded``, ``reload_rejected``,
``stopping``, ``stopped``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from lbctl.config.loader import ConfigError, load_config, read_text
from lbctl.control.notify import Notifier
from lbctl.control.pidfile import check_pid_file, remove_pid_file, write_pid_file
from lbctl.exitcodes import Exit
from lbctl.proxy.server import fds_needed
from lbctl.serve import openfiles
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


def serve(path: str, pid_file: str | None = None, workers: int | str | None = None,
          log_format: str = "text") -> int:
    """Run ``lbctl serve``; ``workers`` (the command line's) overrides ``[server] workers``."""
    text = read_text(path)              # ConfigError is a UserError: exit 2, no traceback
    config = load_config(path, text=text)
    if pid_file is not None:
        check_pid_file(pid_file)        # a live serve holds it: refused before binding
    count = worker_count(config.server.workers if workers is None else workers)
    install_fast_loop()
    if count > 1:
        return asyncio.run(_serve_workers(path, config, text, count, log_format, pid_file))
    return asyncio.run(_serve(path, config, pid_file))


def log_open_files(limit: openfiles.OpenFiles, instance: Instance, config) -> None:
    enough, line = openfiles.describe(limit, config.limits.max_connections,
                                      instance.proxy.max_connections)
    (log.info if enough else log.warning)(line)


def log_listening(path: str, config, runtime, **extra) -> None:
    """The ``listening`` line, one process's or a master's (``extra``: its worker count)."""
    address = config.listen.address
    # Discovered backends included: the first lookups were done before listening.
    log.info("listening on %s: %d routes, %d pools, %d backends", address,
             len(config.routes), len(config.pools),
             sum(len(state.pool.backends) for state in runtime.pools.values()),
             extra={"event": "listening", "address": str(address), "config": path, **extra})


def log_stopped(clean: bool, hurried: bool) -> None:
    """The last line of a drain; a timeout is worth saying unless a second signal cut it."""
    log.info("stopped%s", "" if clean or hurried else
             ": drain timeout reached, remaining connections closed",
             extra={"event": "stopped", "clean": clean})


async def _serve(path: str, config, pid_file: str | None = None) -> int:
    loop = asyncio.get_running_loop()
    notifier = Notifier()
    # Before the data plane sizes its connection cap to the limit.
    limit = openfiles.raise_open_files(fds_needed(config))
    instance = Instance(config)
    # Signals are handled before "listening" is announced: a supervisor that reloads as
    # soon as it sees the line must not kill the process with SIGHUP's default action.
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(instance, path, notifier))
    loop.add_signal_handler(signal.SIGUSR1, instance.observer.reopen)   # logrotate convention
    await instance.start()
    log_open_files(limit, instance, config)
    try:
        if pid_file is not None:
            try:
                write_pid_file(pid_file)
            except BaseException:
                await instance.close()      # no pid file: nothing is left serving
                raise
        log_listening(path, config, instance.runtime)
        notifier.ready(f"listening on {config.listen.address}")
        await stop.wait()
        timeout = instance.runtime.config.limits.drain_timeout
        connections = len(instance.proxy.connections)
        instance.proxy.stop_listening()
        notifier.stopping(f"draining {connections} connections")
        now = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, now.set)
        log.info("stopping: no longer accepting; draining %d connections (up to %gs; signal "
                 "again to stop at once)", connections, timeout,
                 extra={"event": "stopping", "connections": connections})
        drain = loop.create_task(instance.drain(timeout))
        hurry = loop.create_task(now.wait())
        await asyncio.wait((drain, hurry), return_when=asyncio.FIRST_COMPLETED)
        hurried = not drain.done()
        if hurried:
            log.warning("second signal: stopping at once, closing %d connections",
                        instance.proxy.abort_all(), extra={"event": "stopping_now"})
        hurry.cancel()
        log_stopped(await drain, hurried)
        return Exit.OK
    finally:
        if pid_file is not None:
            remove_pid_file(pid_file)


def reload(instance: Instance, path: str, notifier: Notifier | None = None) -> bool:
    """Re-read ``path``; keep serving the old config if the new one is invalid."""
    if notifier is not None:
        notifier.reloading()
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("reload rejected: %s", problem,
                      extra={"event": "reload_rejected", "config": path, "reason": str(problem)})
        log.error("reload rejected: %d problem(s); still serving the previous configuration",
                  len(exc.problems), extra={"event": "reload_rejected", "config": path,
                                            "problems": len(exc.problems)})
        if notifier is not None:
            notifier.ready(f"reload rejected ({len(exc.problems)} problems); "
                           f"serving the previous configuration")
        return False
    limit = openfiles.raise_open_files(fds_needed(config))
    instance.reload(config)
    if limit.raised or instance.proxy.fd_bound:
        log_open_files(limit, instance, config)
    log.info("reloaded %s: %d routes, %d pools", path, len(config.routes), len(config.pools),
             extra={"event": "reloaded", "config": path})
    if notifier is not None:
        notifier.ready(f"reloaded; listening on {instance.runtime.config.listen.address}")
    return True


async def _serve_workers(path: str, config, text: str, count: int, log_format: str,
                         pid_file: str | None = None) -> int:
    from lbctl.serve.master import Master
    loop = asyncio.get_running_loop()
    notifier = Notifier()
    # Before the fork server starts: it and every worker forked from it inherit the limit.
    limit = openfiles.raise_open_files(fds_needed(config))
    master = Master(config, text, count, log_format=log_format)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: set[asyncio.Task] = set()

    def soon(coro) -> None:
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def reload_workers() -> None:
        notifier.reloading()
        if await master.reload(path):
            notifier.ready(f"reloaded; listening on {master.config.listen.address}")
        else:
            notifier.ready("reload rejected; serving the previous configuration")
    loop.add_signal_handler(signal.SIGHUP, lambda: soon(reload_workers()))
    loop.add_signal_handler(signal.SIGUSR1, lambda: soon(master.reopen()))
    await master.start()
    master.log_open_files(limit)
    try:
        if pid_file is not None:
            try:
                write_pid_file(pid_file)    # the master's pid: the one to signal
            except BaseException:
                await master.drain(0.0)     # no pid file: nothing is left serving
                raise
        pids = [w.pid for w in master.workers.values()]
        log.info("%d workers ready (pids %s)", count, ", ".join(map(str, pids)),
                 extra={"event": "workers_ready", "workers": count, "pids": pids})
        # The same line as one process's: what reads it need not know about workers.
        log_listening(path, config, master.runtime, workers=count)
        notifier.ready(f"listening on {config.listen.address} with {count} workers")
        await stop.wait()
        for sig in (signal.SIGTERM, signal.SIGINT):   # a second signal: stop at once
            loop.add_signal_handler(sig, master.stop_now)
        timeout = master.config.limits.drain_timeout
        connections = master.connections
        await master.stop_accepting(timeout)
        notifier.stopping(f"draining {count} workers")
        log.info("stopping: no longer accepting; draining %d workers (up to %gs; signal "
                 "again to stop at once)", count, timeout,
                 extra={"event": "stopping", "workers": count, "connections": connections})
        log_stopped(await master.drain(timeout), master.hurried)
        return Exit.OK
    finally:
        if pid_file is not None:
            remove_pid_file(pid_file)
