"""``lbctl serve``: load the config, start an ``Instance``, run until SIGTERM/SIGINT.

The first SIGTERM or SIGINT drains (up to ``drain_timeout``); a second one during the drain
stops at once, closing what is left, as operators expect of a second Ctrl-C. SIGHUP reloads
the config file (an invalid one is logged and the running config kept); SIGUSR1 reopens the
access log (the logrotate convention). At start (and on a reload that needs more) the
open-files limit is raised toward what ``max_connections`` needs (``openfiles.py``).

Around the instance's life, what supervisors read: the pid file (``--pid-file``: refused when
a live serve holds it, written once listening, removed on exit), systemd's notifications
(READY once listening, RELOADING then READY around a reload, STOPPING on the way out), and
the event log's lines for each step (``listening``, ``reloaded``, ``reload_rejected``,
``stopping``, ``stopped``).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from lbctl.config.loader import ConfigError, load_config
from lbctl.control.notify import Notifier
from lbctl.control.pidfile import check_pid_file, remove_pid_file, write_pid_file
from lbctl.exitcodes import Exit
from lbctl.proxy.server import fds_needed
from lbctl.serve import openfiles
from lbctl.serve.instance import Instance

log = logging.getLogger("lbctl")


def install_fast_loop() -> None:
    """uvloop where installed: the data plane is about twice as fast on it."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(path: str, pid_file: str | None = None) -> int:
    config = load_config(path)          # ConfigError is a UserError: exit 2, no traceback
    if pid_file is not None:
        check_pid_file(pid_file)        # a live serve holds it: refused before binding
    install_fast_loop()
    return asyncio.run(_serve(path, config, pid_file))


def log_open_files(limit: openfiles.OpenFiles, instance: Instance, config) -> None:
    enough, line = openfiles.describe(limit, config.limits.max_connections,
                                      instance.proxy.max_connections)
    (log.info if enough else log.warning)(line)


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
        address = config.listen.address
        # Discovered backends included: the first lookups were done before listening.
        log.info("listening on %s: %d routes, %d pools, %d backends", address,
                 len(config.routes), len(config.pools),
                 sum(len(state.pool.backends) for state in instance.runtime.pools.values()),
                 extra={"event": "listening", "address": str(address), "config": path})
        notifier.ready(f"listening on {address}")
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
        clean = await drain
        log.info("stopped%s", "" if clean or hurried else
                 ": drain timeout reached, remaining connections closed",
                 extra={"event": "stopped", "clean": clean})
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
