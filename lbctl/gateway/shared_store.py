"""Rate-limit buckets in memory shared by the workers of one instance (``[store] backend =
"local"`` with workers).

Each worker of an instance decides on its own share of the traffic; if each kept its own
buckets, a limit of 100/s would let ``100 x workers`` through. So, as nginx's ``limit_req``
zones do, the buckets live in one fixed-size table in shared memory that every worker maps
(``SharedTable``), and every decision is one read-modify-write of one slot under a lock
that every worker respects. The counting rule is the one every store uses (``gcra``): a
slot holds a key's theoretical arrival time, so the same requests at the same times get the
same decisions as from the in-process buckets or Redis.

The table (``SLOTS`` slots of 24 bytes) is an anonymous memory file created by the master
(``SharedTable.create``) and handed to each worker as a file descriptor; its pages are
allocated as they are first written. A slot is a key's 64-bit fingerprint (BLAKE2b of the
limit and the key; 0 marks a slot never used), its ``tat`` in tokens, and the time its
bucket is full again (``full_at``, seconds on the boot clock that every worker's event loop
reads). Slots are grouped in ``STRIPES`` stripes; a key lives in one stripe, at one of
``PROBES`` consecutive slots from a position its fingerprint gives. Each stripe has its own
lock: an ``fcntl`` byte-range lock on one byte of the file, which the kernel releases if a
worker dies holding it, so a killed worker cannot wedge the others.

Memory is bounded: a slot whose bucket is full again is free (it decides like a key never
seen), and when all of a key's slots are taken by buckets that are not full, the one closest
to full is given to the new key (that old key starts again from a full bucket: the bound
wins over exactness, as with the in-process buckets' ``max_keys``).
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import struct
import tempfile
from hashlib import blake2b

from lbctl.config.model import Store as StoreConfig
from lbctl.gateway.rate_limit import Decision, Limit, decision, gcra

SLOT = struct.Struct("=Qdd")            # fingerprint, tat (tokens), full_at (seconds)
SLOTS = 1 << 18                         # 262,144 keys whose buckets are not full; 6 MiB
STRIPES = 256                           # locks; a key's stripe is its fingerprint mod this
PROBES = 16                             # slots a key may occupy within its stripe


class SharedTable:
    """The mapped table, in one process. Create it once (``create``), open it in each
    worker from the descriptor (``SharedTable(fd)``). The geometry is fixed for the table's
    life; every process that maps it must use the same (the defaults, but for tests)."""

    def __init__(self, fd: int, *, slots: int = SLOTS, stripes: int = STRIPES,
                 probes: int = PROBES) -> None:
        self.fd = fd
        self.stripes = stripes
        self.per_stripe = slots // stripes
        self.probes = min(probes, self.per_stripe)
        self.memory = mmap.mmap(fd, slots * SLOT.size, mmap.MAP_SHARED,
                                mmap.PROT_READ | mmap.PROT_WRITE)

    @classmethod
    def create(cls, slots: int = SLOTS) -> int:
        """A new, empty table's file descriptor (memory only: nothing on disk)."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("lbctl-rate-limits", os.MFD_CLOEXEC)
        else:
            handle = tempfile.TemporaryFile()       # unlinked at once
            fd = os.dup(handle.fileno())
            handle.close()
        os.ftruncate(fd, slots * SLOT.size)
        return fd

    def take(self, fingerprint: int, clock: float, now: float, rate: float,
             burst: int) -> tuple[bool, float]:
        """One request of the key with ``fingerprint`` against its bucket (GCRA, ``clock`` =
        ``now * rate``): ``(allowed, ahead)``."""
        per_stripe = self.per_stripe
        stripe = fingerprint % self.stripes
        base = stripe * per_stripe
        first = (fingerprint // self.stripes) % per_stripe
        memory, unpack, size = self.memory, SLOT.unpack_from, SLOT.size
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, stripe)
        try:
            found = free = victim = None
            victim_full = math.inf
            tat = None
            for i in range(self.probes):
                offset = (base + (first + i) % per_stripe) * size
                held, slot_tat, full_at = unpack(memory, offset)
                if held == fingerprint:
                    found, tat = offset, slot_tat
                    break
                if held == 0:           # never used: the key is not further on
                    if free is None:
                        free = offset
                    break
                if full_at <= now:
                    if free is None:
                        free = offset   # a full bucket: as good as empty
                elif full_at < victim_full:
                    victim, victim_full = offset, full_at
            allowed, tat, ahead = gcra(tat, clock, burst)
            offset = found if found is not None else free if free is not None else victim
            SLOT.pack_into(memory, offset, fingerprint, tat, tat / rate)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, stripe)
        return allowed, ahead

    def close(self) -> None:
        self.memory.close()


class SharedBuckets:
    """One limit's buckets in the shared table: a ``RateLimiter`` (it decides without
    waiting, as the in-process buckets do)."""

    shared = False              # nothing to await: the table is in this process's memory

    def __init__(self, table: SharedTable, limit: Limit) -> None:
        self.table = table
        self.limit = limit
        self.rate = limit.rate
        self.burst = limit.burst
        # The limit as it is now: a reload that changes its rate or burst starts afresh,
        # as the in-process buckets do.
        self.namespace = f"{limit.name}\0{limit.rate!r}\0{limit.burst}\0".encode()

    def fingerprint(self, key: str) -> int:
        digest = blake2b(self.namespace + key.encode("utf-8", "surrogateescape"),
                         digest_size=8).digest()
        return int.from_bytes(digest, "little") or 1        # 0 marks an unused slot

    def allow(self, key: str, now: float) -> Decision:
        allowed, ahead = self.table.take(self.fingerprint(key), now * self.rate, now,
                                         self.rate, self.burst)
        return decision(allowed, ahead, self.limit)


class SharedStore:
    """The ``Store`` of a worker whose ``[store]`` is local: limits exact for the instance."""

    up = True
    errors = 0

    def __init__(self, config: StoreConfig, table: SharedTable) -> None:
        self.config = config
        self.table = table

    def limiter(self, limit: Limit) -> SharedBuckets:
        return SharedBuckets(self.table, limit)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass
