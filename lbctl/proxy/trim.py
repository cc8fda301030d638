"""Memory given back to the system after a wave of client connections has closed.

Each open connection holds a few KiB: its Python objects, uvloop's handle and the buffers
behind them. When thousands close, CPython frees the objects, but glibc keeps the freed
pages in its heap unless asked, so the process stayed at the wave's peak (5,000 idle
connections opened and closed: none of their memory given back; with the trim, 22-23%;
nginx gives back all of it; what stays is CPython's own allocator's partly used arenas,
which a collection does not empty either).
So once the number of open connections falls to half of a peak of at least ``WAVE``,
``malloc_trim(0)`` returns the free pages, shortly after and once per wave. It walks the
heap (about a millisecond per 100 MiB), which is why it waits for a wave, not every close.
Where the C library has no ``malloc_trim`` (musl, macOS) there is nothing to do.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util

WAVE = 1024        # open connections before a fall counts as a wave's end
DELAY = 0.2        # seconds after the fall: the rest of a burst of closes comes first


def _malloc_trim():
    """glibc's ``malloc_trim``, or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class Trimmer:
    """Told of each connection opened and closed (by count), trims after a wave."""

    __slots__ = ("loop", "count", "wave", "peak", "pending", "trim", "trims")

    def __init__(self, loop: asyncio.AbstractEventLoop, count, wave: int = WAVE) -> None:
        self.loop = loop
        self.count = count              # () -> connections open now
        self.wave = wave
        self.peak = 0                   # the most open since the last trim (set by client.py)
        self.pending: asyncio.TimerHandle | None = None
        self.trim = _malloc_trim()
        self.trims = 0

    def closed(self, open_now: int) -> None:
        if open_now <= self.peak >> 1 and self.peak >= self.wave and self.pending is None \
                and self.trim is not None:
            self.pending = self.loop.call_later(DELAY, self._run)

    def _run(self) -> None:
        self.pending = None
        self.peak = self.count()
        self.trim(0)
        self.trims += 1

    def cancel(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
