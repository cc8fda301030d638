"""``lbctl serve``: load the config, start an ``Instance``, run until SIGTERM/SIGINT.

SIGHUP reloads the config file (an invalid one is logged and the running config kept);
SIGUSR1 reopens the access log (the logrotate convention).

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


async def _serve(path: str, config, pid_file: str | None = None) -> int:
    loop = asyncio.get_running_loop()
    notifier = Notifier()
    instance = Instance(config)
    # Signals are handled before "listening" is announced: a supervisor that reloads as
    # soon as it sees the line must not kill the process with SIGHUP's default action.
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(instance, path, notifier))
    loop.add_signal_handler(signal.SIGUSR1, instance.observer.reopen)   # logrotate convention
    await instance.start()
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
        log.info("stopping: no longer accepting; draining %d connections (up to %gs)",
                 connections, timeout, extra={"event": "stopping", "connections": connections})
        clean = await instance.drain(timeout)
        log.info("stopped%s", "" if clean else
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
    instance.reload(config)
    log.info("reloaded %s: %d routes, %d pools", path, len(config.routes), len(config.pools),
             extra={"event": "reloaded", "config": path})
    if notifier is not None:
        notifier.ready(f"reloaded; listening on {instance.runtime.config.listen.address}")
    return True
