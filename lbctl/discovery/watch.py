"""Watching sources: one task per pool that resolves on schedule and decides its discovered set.

The rules (Envoy's STRICT_DNS, and where lbctl differs, README "Discovery"):

- A good answer *is* the discovered set: backends that appear join, those that are gone leave.
- An authoritative empty answer (NXDOMAIN, no records, ``[]``) empties the discovered part,
  logged once when it happens.
- A failed lookup keeps the last good set. It is counted every time and logged once per run
  of failures (again only if the reason changes), and once more when answers come back.
- The first lookup is awaited before the proxy listens (up to ``timeout``), so the first
  requests already see the discovered backends; if it fails, the proxy starts without them
  and keeps trying every ``interval``.

Each change is handed to ``on_change(pool, backends)``, which the caller applies to the live
pool (or, with workers, sends to them). ``Status`` is what ``/stats``, ``/metrics`` and logs
report about a pool's discovery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from lbctl.config.model import BackendConfig, Config, Discovery
from lbctl.discovery.resolution import EMPTY, FAILED, FOUND, Resolution
from lbctl.discovery.sources import Source, describe, make_source

log = logging.getLogger("lbctl.discovery")

OnChange = Callable[[str, "tuple[BackendConfig, ...]"], None]


@dataclass
class Status:
    """One pool's discovery, as ``/stats`` shows it (``as_dict``)."""
    source: str                         # dns | srv | file
    target: str
    state: str = "pending"              # pending (no answer yet) | ok | empty | failing
    backends: int = 0                   # in the discovered set now
    resolutions: int = 0                # lookups done, whatever their outcome
    failures: int = 0                   # lookups that failed (the last good set was kept)
    changes: int = 0                    # times the discovered set changed
    last_error: str | None = None       # the reason of the current failure; None when answering
    last_success: float | None = None   # Unix time of the last answer that could be trusted

    def as_dict(self) -> dict:
        return dict(vars(self))


class Watcher:
    """Resolves one pool's source and decides its discovered set."""

    def __init__(self, pool: str, discovery: Discovery, on_change: OnChange, *,
                 source: Source | None = None, initial: tuple[BackendConfig, ...] = (),
                 wall: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.discovery = discovery
        self.on_change = on_change
        self.source = source if source is not None else make_source(discovery)
        self.wall = wall
        self.discovered = initial           # the last good set (from the previous source, at first)
        self.status = Status(self.source.kind, self.source.target, backends=len(initial))
        self.what = f"pool {pool}: {describe(discovery)}"
        self.task: asyncio.Task | None = None
        self._last: Resolution | None = None
        self._logged_failure: str | None = None
        self._streak = 0                    # failed lookups in a row
        self._resolved: asyncio.Condition | None = None

    # ---- deciding -----------------------------------------------------------------------

    def apply(self, r: Resolution) -> bool:
        """Take one lookup's outcome; True when the discovered set changed."""
        st = self.status
        st.resolutions += 1
        self._last = r
        if r.kind == FAILED:
            st.failures += 1
            self._streak += 1
            st.last_error = r.reason
            if st.state != "failing" or self._logged_failure != r.reason:
                kept = f"keeping the last good set of {_count(len(self.discovered))}" \
                    if st.last_success is not None or self.discovered \
                    else "no backends discovered yet"
                log.warning("%s: lookup failed (%s); %s", self.what, r.reason, kept,
                            extra=self._fields("failing", r.reason))
                self._logged_failure = r.reason
            st.state = "failing"
            return False
        if st.state == "failing":
            log.info("%s: answering again after %s", self.what,
                     _count(self._streak, "failed lookup"), extra=self._fields("ok"))
        self._streak = 0
        self._logged_failure = None
        st.last_error = None
        st.last_success = self.wall()
        backends = r.backends if r.kind == FOUND else ()
        if r.kind == EMPTY and st.state != "empty":
            gone = f"; {_count(len(self.discovered))} leave the pool" if self.discovered else ""
            log.warning("%s: %s: the discovered part of the pool is empty%s",
                        self.what, r.reason, gone, extra=self._fields("empty", r.reason))
        st.state = "ok" if r.kind == FOUND else "empty"
        if backends == self.discovered:
            return False
        old = {b.name: b for b in self.discovered}
        new = {b.name: b for b in backends}
        joined = [n for n in new if n not in old]
        left = [n for n in old if n not in new]
        changed = [n for n in new if n in old and new[n] != old[n]]
        self.discovered = backends
        st.backends = len(backends)
        st.changes += 1
        if joined or left or changed:
            parts = [f"+{n}" for n in joined] + [f"-{n}" for n in left] + \
                [f"~{n}" for n in changed]
            log.info("%s: %s (%s)", self.what, _count(len(backends)), " ".join(parts),
                     extra={**self._fields("ok"), "backends": len(backends), "joined": joined,
                            "left": left, "changed": changed})
        self.on_change(self.pool, backends)
        return True

    def _fields(self, state: str, reason: str | None = None) -> dict:
        """The event log's fields for a line about this pool's discovery."""
        fields = {"event": "discovery", "pool": self.pool, "source": self.source.kind,
                  "target": self.source.target, "state": state}
        if reason is not None:
            fields["reason"] = reason
        return fields

    # ---- running ------------------------------------------------------------------------

    async def resolve_once(self) -> Resolution:
        """One lookup, applied. A bug in a source is a failed lookup, not a dead watcher."""
        try:
            # SRV may ask twice in a row (the records, then their targets): a bound, not a
            # second timeout; the resolver's own ``timeout`` ends each question.
            r = await asyncio.wait_for(self.source.resolve(), 2 * self.discovery.timeout + 1.0)
        except asyncio.TimeoutError:
            r = Resolution.failed(f"timeout after {self.discovery.timeout:g}s")
        except Exception as exc:    # noqa: BLE001 - keep watching; say what happened
            log.exception("%s: lookup raised", self.what)
            r = Resolution.failed(f"{type(exc).__name__}: {exc}")
        try:
            self.apply(r)
        except Exception:           # noqa: BLE001 - applying failed; the next change retries
            log.exception("%s: applying the lookup failed", self.what)
        await self._notify()
        return r

    def start(self, *, resolved: bool = False) -> None:
        """Watch in the background; ``resolved``: the first lookup was already done."""
        self.task = asyncio.get_running_loop().create_task(
            self._run(resolved), name=f"discovery {self.pool}")

    async def _run(self, resolved: bool) -> None:
        if not resolved:
            await self.resolve_once()
        while True:
            last = self._last if self._last is not None else Resolution.failed("")
            await asyncio.sleep(self.source.next_delay(last))
            if self.source.changed():
                await self.resolve_once()

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def wait(self, predicate: Callable[["Watcher"], bool], timeout: float) -> None:
        """Until ``predicate(self)`` holds after a lookup (tests wait here, not on a timer)."""
        if self._resolved is None:
            self._resolved = asyncio.Condition()
        async with self._resolved:
            await asyncio.wait_for(self._resolved.wait_for(lambda: predicate(self)), timeout)

    async def _notify(self) -> None:
        if self._resolved is not None:
            async with self._resolved:
                self._resolved.notify_all()


class Watchers:
    """The watchers of every pool that has ``[discovery]``: started with the proxy, adjusted on
    reload (a pool whose discovery is unchanged keeps its watcher and its set), stopped last."""

    def __init__(self, on_change: OnChange, *, wall: Callable[[], float] = time.time) -> None:
        self.on_change = on_change
        self.wall = wall
        self.watchers: dict[str, Watcher] = {}
        self._stopping: set[asyncio.Task] = set()       # referenced until done

    def _stop_later(self, watcher: Watcher) -> None:
        task = asyncio.get_running_loop().create_task(watcher.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _watcher(self, name: str, discovery: Discovery,
                 initial: tuple[BackendConfig, ...] = ()) -> Watcher:
        return Watcher(name, discovery, self.on_change, initial=initial, wall=self.wall)

    async def start(self, config: Config) -> None:
        """Build every watcher (``ResolverError`` if DNS has no nameserver to ask), await the
        first lookups together, then watch."""
        for name, pool in config.pools.items():
            if pool.discovery is not None:
                self.watchers[name] = self._watcher(name, pool.discovery)
        watchers = list(self.watchers.values())
        await asyncio.gather(*(w.resolve_once() for w in watchers))
        for w in watchers:
            w.start(resolved=True)

    def reconfigure(self, config: Config) -> list[str]:
        """A reload: keep, replace or stop watchers. Returns problems to log (a pool whose new
        source cannot be used keeps its old watcher)."""
        problems = []
        wanted = {name: pool.discovery for name, pool in config.pools.items()
                  if pool.discovery is not None}
        for name in list(self.watchers):
            if name not in wanted:
                self._stop_later(self.watchers.pop(name))
        for name, discovery in wanted.items():
            old = self.watchers.get(name)
            if old is not None and old.discovery == discovery:
                continue
            try:
                watcher = self._watcher(name, discovery, old.discovered if old else ())
            except Exception as exc:    # noqa: BLE001 - e.g. no system nameserver
                problems.append(f"pool {name}: discovery: {exc}")
                continue
            if old is not None:
                self._stop_later(old)
            self.watchers[name] = watcher
            watcher.start()
        return problems

    async def stop(self) -> None:
        watchers, self.watchers = list(self.watchers.values()), {}
        await asyncio.gather(*(w.stop() for w in watchers), *self._stopping)

    def discovered(self) -> Mapping[str, tuple[BackendConfig, ...]]:
        return {name: w.discovered for name, w in self.watchers.items()}


def _count(n: int, word: str = "backend") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
