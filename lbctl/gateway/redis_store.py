"""Rate-limit buckets in Redis (``[store] backend = "redis"``): exact across processes.

Each decision is one round trip: ``EVALSHA`` of ``SCRIPT``, which reads a bucket's ``tat``,
applies the counting rule of ``rate_limit.gcra`` with the same floating-point operations in
the same order, and writes it back with a TTL, atomically on the server. The script reads
the server's clock (``TIME``), so instances whose clocks disagree still count in one time;
a bucket's key expires when the bucket is full again, so Redis holds only the keys of
clients active within ``burst / rate`` seconds. Keys are ``lbctl:rl:{limit name}:{key}``;
a key longer than 128 characters is replaced by its SHA-256, so a client sending huge
header values cannot make the store keep huge keys. A bucket someone else wrote (another
type, no number, NaN, more than a burst ahead) counts as a full or an empty bucket, never
as an error; a reply the script never gives (not Redis, or not this script) is a failure.

Health: a call that fails or takes longer than ``timeout`` marks the store down (logged
once, counted in ``errors``); while it is down no request waits for it: each decision
follows ``on_error`` ("local": this instance's own buckets, "open": allowed, "closed":
503), and a probe every ``PROBE_INTERVAL`` seconds marks it up again (logged once).
Connections are redis-py's asyncio connection classes, in a bounded pool of this module's
(``ConnectionPool`` says why); nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import time
from collections import deque

from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from lbctl.config.kinds import split_store_url
from lbctl.config.model import Store as StoreConfig
from lbctl.gateway.rate_limit import STORE_DOWN, Decision, Limit, RateLimiter, decision

if sys.version_info >= (3, 11):
    from asyncio import timeout as _deadline
else:  # pragma: no cover - redis-py depends on async-timeout there
    from async_timeout import timeout as _deadline

log = logging.getLogger("lbctl.store")

PROBE_INTERVAL = 0.25       # seconds between probes while the store is down
KEY_PREFIX = "lbctl:rl:"
MAX_KEY = 128               # longer client keys are stored as their SHA-256
MAX_REASON = 200            # characters of a failure's reason in the log and /stats
# The script's clock starts here (Unix time), so "now * rate" stays small enough for a
# double to count single tokens exactly for decades at any sane rate.
EPOCH = 1_700_000_000

# KEYS[1]: the bucket. ARGV: rate (tokens per second), burst, and, only in tests, "now"
# (seconds) instead of the server's clock. Returns {allowed (1/0), ahead} with ahead as a
# string: Redis would truncate a Lua number to an integer. "%.17g" round-trips a double.
SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end  -- TIME, then a write: 3.2-4.0
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = (tonumber(t[1]) - %d) + tonumber(t[2]) / 1000000
end
local clock = now * rate
-- pcall: a key of another type (written by someone else) is no bucket, not an error.
local tat = tonumber(redis.pcall('GET', KEYS[1]))
if type(tat) ~= 'number' or tat ~= tat or tat < clock then tat = clock end
local ahead = tat - clock
-- More than a whole burst ahead never comes from this script (inf or 1e308 written by
-- someone else, the server's clock stepped back): at most an empty bucket.
if ahead > burst then tat = clock + burst; ahead = tat - clock end
if ahead + 1 <= burst then
  tat = tat + 1
  ahead = ahead + 1
  local ttl = math.ceil(ahead / rate * 1000)
  redis.call('SET', KEYS[1], string.format('%%.17g', tat), 'PX', string.format('%%d', ttl))
  return {1, string.format('%%.17g', ahead)}
end
return {0, string.format('%%.17g', ahead)}
""" % EPOCH
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()

FALLBACK_TEXT = {
    "local": "fall back to this instance's own buckets (on_error = \"local\")",
    "open": "are not enforced (on_error = \"open\")",
    "closed": "answer 503 (on_error = \"closed\")",
}


class StoreUnavailable(Exception):
    pass


class BadReply(Exception):
    """The server answered the script with something it never returns: not Redis, or not
    lbctl's script."""


def checked_reply(reply, burst: int) -> tuple[bool, float]:
    """``(allowed, ahead)`` from the script's reply, or ``BadReply``: the numbers become
    header values and waits, so nothing but what the script can return is taken."""
    try:
        allowed, ahead = reply
        ahead = float(ahead)
    except (TypeError, ValueError):
        raise BadReply(f"unexpected reply to the rate-limit script: {_shape(reply)}") from None
    if allowed not in (0, 1) or not 0.0 <= ahead <= burst + 1:     # NaN fails this too
        raise BadReply(f"unexpected reply to the rate-limit script: {_shape(reply)}")
    return allowed == 1, ahead


def _shape(reply) -> str:
    text = repr(reply)
    return text if len(text) <= 60 else text[:57] + "..."


class ConnectionPool:
    """At most ``size`` redis-py asyncio connections, reused last-in first-out; a caller
    beyond that waits (within its deadline) for one to be released.

    redis-py's connection classes do the protocol (AUTH, SELECT, TLS, unix sockets, RESP);
    its client and pool classes are not used on this path because the same call through
    them costs 1.6 to 1.8 times the CPU (redis-py 8.1 with hiredis on uvloop, see
    bench/store.py), and this call is made for every limited request.
    """

    def __init__(self, factory, size: int) -> None:
        self.factory = factory
        self.size = size
        self.count = 0                      # connections handed out or idle
        self.idle: list = []
        self.closed = False
        self.waiters: deque[asyncio.Future] = deque()

    async def call(self, *args):
        """One command and its reply. A connection that fails is closed, never reused; a
        broken idle one (the server restarted) is replaced once, at once."""
        for attempt in (1, 2):
            conn = await self._acquire()
            reused = conn.is_connected
            try:
                await conn.send_command(*args)
                reply = await conn.read_response()
            except ResponseError:
                self._release(conn)         # an error reply: the connection is fine
                raise
            except BaseException as exc:    # cancelled or timed out mid-reply too
                self._discard(conn)
                if attempt == 1 and reused and isinstance(exc, (RedisConnectionError, OSError)):
                    continue
                raise
            self._release(conn)
            return reply

    async def _acquire(self):
        if self.closed:
            raise RedisConnectionError("the store was closed (the configuration changed)")
        if self.idle:
            return self.idle.pop()
        if self.count < self.size:
            self.count += 1
            return self.factory()           # connects on its first command
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            if not waiter.done():
                self.waiters.remove(waiter)
            elif not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())     # handed one just as we gave up
            raise

    def _release(self, conn) -> None:
        if self.closed:
            self._discard(conn)
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def _discard(self, conn) -> None:
        self.count -= 1
        asyncio.get_running_loop().create_task(conn.disconnect(nowait=True))
        while self.waiters and not self.closed:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.count += 1
                waiter.set_result(self.factory())
                return

    async def close(self) -> None:
        self.closed = True
        for waiter in self.waiters:         # they fall back, as on any store failure
            if not waiter.done():
                waiter.set_exception(RedisConnectionError("the store was closed"))
        idle, self.idle = self.idle, []
        for conn in idle:
            try:
                await conn.disconnect(nowait=True)
            except Exception:   # noqa: BLE001 - closing a dead connection may fail; nothing to do
                pass


class RedisStore:
    """One process's connection pool to the shared store, and its health."""

    def __init__(self, config: StoreConfig, *, fallback, client_clock: bool = False) -> None:
        self.config = config
        self.address = split_store_url(config.url)
        self.name = self.address.url            # without the password: safe to show
        self.timeout = config.timeout
        self.on_error = config.on_error
        self.fallback = fallback                # a LocalStore: on_error = "local"
        # Tests only: the script counts in the time each caller passes, not the server's.
        self.client_clock = client_clock
        self.up = True                          # until a call says otherwise
        self.errors = 0
        self.checked = False                    # the first contact has been made
        self.closed = False
        self.pool: ConnectionPool | None = None
        self._prober: asyncio.Task | None = None
        # Told of each change of health, ``(up, level, line, fields)``, instead of the log
        # when set:
        # a serve worker passes them to its master, which logs one line for the instance.
        self.on_health = None

    # ---- lifecycle ----

    def connect(self) -> None:
        """Prepare the pool; no I/O (connections open on first use)."""
        if self.pool is not None:
            return
        a, config = self.address, self.config
        # socket_timeout None: every call runs under this store's own deadline instead.
        kwargs = dict(db=a.db, username=a.username, password=config.password,
                      socket_timeout=None, socket_connect_timeout=self.timeout,
                      protocol=2,                 # RESP2: any Redis from 3.2 on
                      client_name="lbctl")
        if a.scheme == "unix":
            cls, kwargs["path"] = UnixDomainSocketConnection, a.path
        else:
            kwargs.update(host=a.host, port=a.port)
            cls = Connection
            if a.scheme == "rediss":
                cls = SSLConnection
                kwargs.update(ssl_cert_reqs="required", ssl_check_hostname=True,
                              ssl_ca_certs=config.ca)
        self.pool = ConnectionPool(lambda: cls(**kwargs), config.max_connections)

    async def start(self) -> None:
        """Connect and make first contact, so the log says at once whether it is up."""
        self.connect()
        error = await self.probe()
        self.checked = True
        if error is None:
            self._report(True, logging.INFO,
                         f"store {self.name}: up; rate limits are shared through it",
                         {"event": "store_state", "store": self.name, "state": "up"})
        else:
            self._down(error, first=True)

    async def close(self) -> None:
        """Stop probing and close the connections; a request still deciding on this store
        (a reload replaced it) finishes its call, or falls back, without a word in the log."""
        self.closed = True
        if self._prober is not None:
            self._prober.cancel()
            self._prober = None
        if self.pool is not None:
            await self.pool.close()

    # ---- calls ----

    async def take(self, key: str, args: tuple) -> tuple[bool, float]:
        """One GCRA step on the server; ``StoreUnavailable`` when it fails or is late."""
        try:
            async with _deadline(self.timeout):
                reply = await self._script(key, args)
            return checked_reply(reply, args[1])
        except Exception as exc:    # noqa: BLE001 - any failure: timeout, connection, reply
            self._failed(exc)
            raise StoreUnavailable from None

    async def probe(self) -> str | None:
        """One call that exercises what a decision needs (auth, db, the script) without
        changing anything (burst 0 never writes): None when it worked, else why not."""
        self.connect()
        try:
            async with _deadline(self.timeout):
                checked_reply(await self._script(KEY_PREFIX + "probe", ("1", 0)), 0)
            return None
        except Exception as exc:    # noqa: BLE001
            self.errors += 1
            return self.reason(exc)

    async def _script(self, key: str, args: tuple):
        try:
            return await self.pool.call("EVALSHA", SCRIPT_SHA, 1, key, *args)
        except NoScriptError:       # a new or restarted Redis: load it, once per server
            await self.pool.call("SCRIPT", "LOAD", SCRIPT)
            return await self.pool.call("EVALSHA", SCRIPT_SHA, 1, key, *args)

    def reason(self, exc: BaseException) -> str:
        """One line about a failure, never containing the password."""
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not str(exc):
            text = f"no answer within {self.timeout * 1000:g}ms"
        else:
            text = " ".join(str(exc).split()) or type(exc).__name__
            if isinstance(exc, AuthenticationError) or (
                    isinstance(exc, ResponseError) and text.startswith(("NOAUTH", "WRONGPASS"))):
                text = f"authentication failed: {text}"
        password = self.config.password
        if password:
            text = text.replace(password, "***")
        # The server's own words (an error reply) are whatever it sent: escaped, so they
        # cannot drive a terminal reading the log, and short.
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256
                       else f"\\u{ord(c):04x}" for c in text)
        return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."

    # ---- health ----

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.up and not self.closed:
            self._down(self.reason(exc))

    def _down(self, reason: str, first: bool = False) -> None:
        self.up = False
        self._report(False, logging.WARNING,
                     f"store {self.name}: {'unreachable' if first else 'down'} ({reason}); "
                     f"rate limits {FALLBACK_TEXT[self.on_error]} until it is back",
                     {"event": "store_state", "store": self.name, "state": "down",
                      "reason": reason, "on_error": self.on_error})
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            if await self.probe() is None:
                self.up = True
                down_for = time.monotonic() - started
                self._report(True, logging.INFO,
                             f"store {self.name}: up again after {down_for:.1f}s; rate limits "
                             f"are shared again", {"event": "store_state", "store": self.name,
                                                   "state": "up", "down_for": down_for})
                return

    def _report(self, up: bool, level: int, line: str, fields: dict) -> None:
        if self.on_health is not None:
            self.on_health(up, level, line, fields)
        else:
            log.log(level, line, extra=fields)

    # ---- limiters ----

    def limiter(self, limit: Limit) -> RedisBuckets:
        fallback = self.fallback.limiter(limit) if self.on_error == "local" else None
        return RedisBuckets(self, limit, fallback)


class RedisBuckets:
    """One limit's buckets in the store; ``allow`` always decides (``on_error`` included):
    a ``Decision``, ``STORE_DOWN`` for "closed", or None for "open"."""

    shared = True

    def __init__(self, store: RedisStore, limit: Limit, fallback: RateLimiter | None) -> None:
        self.store = store
        self.limit = limit
        self.fallback = fallback
        self.prefix = f"{KEY_PREFIX}{limit.name}:"
        self.args = (repr(limit.rate), limit.burst)     # repr: the exact double

    async def allow(self, key: str, now: float) -> Decision | None:
        store = self.store
        if store.up:
            if len(key) > MAX_KEY:
                key = "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
            args = self.args + (repr(now),) if store.client_clock else self.args
            try:
                allowed, ahead = await store.take(self.prefix + key, args)
                return decision(allowed, ahead, self.limit)
            except StoreUnavailable:
                pass
        if self.fallback is not None:
            return self.fallback.allow(key, now)
        return None if store.on_error == "open" else STORE_DOWN
