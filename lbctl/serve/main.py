"""``lbctl serve``: load the config, start an ``Instance``, run until SIGTERM/SIGINT.

The first SIGTERM or SIGINT drains (up to ``drain_timeout``); a second one during the drain
stops at once, closing what is left, as operators expect of a second Ctrl-C. SIGHUP reloads
the config file (an invalid one is logged and the running config kept); SIGUSR1 reopens the
access log (the logrotate convention).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from lbctl.config.loader import ConfigError, load_config
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


def serve(path: str) -> int:
    config = load_config(path)          # ConfigError is a UserError: exit 2, no traceback
    install_fast_loop()
    return asyncio.run(_serve(path, config))


def log_open_files(limit: openfiles.OpenFiles, instance: Instance, config) -> None:
    enough, line = openfiles.describe(limit, config.limits.max_connections,
                                      instance.proxy.max_connections)
    (log.info if enough else log.warning)(line)


async def _serve(path: str, config) -> int:
    loop = asyncio.get_running_loop()
    # Before the data plane sizes its connection cap to the limit.
    limit = openfiles.raise_open_files(fds_needed(config))
    instance = Instance(config)
    # Signals are handled before "listening" is announced: a supervisor that reloads as
    # soon as it sees the line must not kill the process with SIGHUP's default action.
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(instance, path))
    loop.add_signal_handler(signal.SIGUSR1, instance.observer.reopen)   # logrotate convention
    await instance.start()
    log_open_files(limit, instance, config)
    # Discovered backends included: the first lookups were done before listening.
    log.info("listening on %s: %d routes, %d pools, %d backends", config.listen.address,
             len(config.routes), len(config.pools),
             sum(len(state.pool.backends) for state in instance.runtime.pools.values()))
    await stop.wait()
    timeout = instance.runtime.config.limits.drain_timeout
    instance.proxy.stop_listening()
    now = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, now.set)
    log.info("stopping: no longer accepting; draining %d connections (up to %gs; signal "
             "again to stop at once)", len(instance.proxy.connections), timeout)
    drain = loop.create_task(instance.drain(timeout))
    hurry = loop.create_task(now.wait())
    await asyncio.wait((drain, hurry), return_when=asyncio.FIRST_COMPLETED)
    hurried = not drain.done()
    if hurried:
        log.warning("second signal: stopping at once, closing %d connections",
                    instance.proxy.abort_all())
    hurry.cancel()
    clean = await drain
    log.info("stopped%s", "" if clean or hurried else
             ": drain timeout reached, remaining connections closed")
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
    limit = openfiles.raise_open_files(fds_needed(config))
    instance.reload(config)
    if limit.raised or instance.proxy.fd_bound:
        log_open_files(limit, instance, config)
    log.info("reloaded %s: %d routes, %d pools", path, len(config.routes), len(config.pools))
    return True
