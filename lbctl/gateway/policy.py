"""The gateway's per-request decision, called once from ``forward.start`` after routing.

``Gateway`` is built with each ``Runtime`` (so a SIGHUP swaps it whole, like the pools);
``Gateway.admit`` resolves the client address and runs the route's ``RoutePolicy``:

    rate limit by ip/header -> authenticate -> rate limit by consumer -> authorize

It returns a ``Refusal`` (401, 403, 429, or 503 when a shared store is down and
``on_error = "closed"``; sent by the proxy) or None, having put an ``Admission`` on the
request: what the forwarded request carries instead of what the client sent (credentials
and client-sent X-Consumer/claim headers removed, X-Consumer and claim headers added,
X-Forwarded-For from the resolved chain) and the rate-limit header fields added to the
backend's response. On a route whose limit lives in a shared store (``store.py``) the
decision needs a round trip, so ``admit`` returns an awaitable of the same instead; every
other route decides without waiting, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from lbctl.gateway.api_key import DEFAULT_HEADER, KeyRing
from lbctl.gateway.authorize import Allowance
from lbctl.gateway.client_ip import ClientResolver
from lbctl.gateway.rate_limit import Decision, Limit, LimitHeaders, RateLimiter, SharedRateLimiter
from lbctl.gateway.store import LocalStore, Store

if TYPE_CHECKING:
    from lbctl.config.model import Config, Route

CONSUMER_HEADER = b"X-Consumer"
REALM = b'realm="lbctl"'


@dataclass(slots=True)
class Admission:
    client: str                                 # the resolved client address
    forwarded_for: str                          # X-Forwarded-For sent to the backend
    proto: bytes                                # X-Forwarded-Proto
    strip: frozenset = frozenset()              # lower-cased request headers not forwarded
    add: list = field(default_factory=list)     # (name, value) added to the forwarded request
    consumer: str | None = None                 # API key name, or the JWT "sub"
    claims: dict[str, Any] | None = None
    response_headers: list = field(default_factory=list)   # added to the backend's response


class Request(Protocol):
    """What the gateway reads of a request (the proxy's ``Exchange`` provides it), and
    ``admitted``, which ``Gateway.admit`` sets."""

    method: bytes
    headers: list[tuple[bytes, bytes]]
    admitted: Admission | None

    def header(self, lower_name: bytes) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    message: str
    headers: tuple = ()


class Gateway:
    def __init__(self, config: Config, clock: Callable[[], float],
                 previous: Gateway | None = None, store: Store | None = None) -> None:
        self.clock = clock
        self.store = store if store is not None else LocalStore()
        listen = config.listen
        self.resolver = ClientResolver(listen.trusted_proxies, listen.client_ip_header)
        keyring = KeyRing((name, key.digest) for name, key in config.keys.items())
        self.limiters: dict[tuple, RateLimiter | SharedRateLimiter] = {}
        self.policies: dict[int, RoutePolicy] = {}
        for route in config.routes:
            if route.auth is None and route.allow is None and route.rate_limit is None:
                continue
            limiter = None
            if route.rate_limit is not None:
                limit = Limit.of(route.rate_limit)
                # Same limit, same store after a reload: the buckets carry on. Routes that
                # share a limit's name share its buckets.
                slot = (limit, route.rate_limit.key)
                limiter = self.limiters.get(slot)
                if limiter is None and previous is not None and previous.store is self.store:
                    limiter = previous.limiters.get(slot)
                if limiter is None:
                    limiter = self.store.limiter(limit)
                self.limiters[slot] = limiter
            self.policies[id(route)] = RoutePolicy(route, keyring, limiter)

    def admit(self, req: Request, route: Route, peer: str,
              tls: bool) -> Refusal | Awaitable[Refusal | None] | None:
        """Decide on ``req``, matched to ``route``, from the peer address ``peer`` on a
        listener that terminates TLS when ``tls``: a refusal, None to go on, or (on a route
        limited through a shared store) an awaitable of either."""
        policy = self.policies.get(id(route))
        if policy is None and not self.resolver.networks and not tls:
            return None     # nothing to decide or rewrite: the plain proxy path
        client, chain, _ = self.resolver.resolve(peer, req.headers)
        admission = Admission(client, chain, b"https" if tls else b"http")
        req.admitted = admission
        if policy is None:
            return None
        if policy.shared:
            return policy.decide_shared(req, admission, self.clock())
        return policy.decide(req, admission, self.clock())


class RoutePolicy:
    """One route's auth, allow-list and rate limit, compiled once per config load."""

    def __init__(self, route: Route, keyring: KeyRing,
                 limiter: RateLimiter | SharedRateLimiter | None) -> None:
        auth = route.auth
        self.kind = auth.type if auth is not None else None
        self.keyring = keyring
        if self.kind == "jwt":
            # PyJWT and cryptography load only for configs that verify tokens.
            from lbctl.gateway import jwt_auth
            self.jwt, self.rejected = jwt_auth.JwtVerifier(auth), jwt_auth.Rejected
        else:
            self.jwt = self.rejected = None
        strip = set()
        if self.kind == "api_key":
            self.header = (auth.header or DEFAULT_HEADER).lower().encode("latin-1")
            self.challenge = ((b"WWW-Authenticate",
                               b'ApiKey ' + REALM + b', header="' + (auth.header or DEFAULT_HEADER).encode() + b'"'),)
        else:
            self.header = b"authorization"
            self.challenge = ((b"WWW-Authenticate", b"Bearer " + REALM),)
        if self.kind is not None:
            strip.add(self.header)
        if self.jwt is not None:
            strip.update(header.lower() for _, header in self.jwt.forward)
        self.strip = frozenset(strip)
        self.allowance = Allowance(route.allow) if route.allow is not None else None
        self.limiter = limiter
        limit = route.rate_limit
        self.shared = limiter is not None and limiter.shared
        by_consumer = limit is not None and limit.key == "consumer"
        self.limit_first = limiter is not None and not by_consumer    # ip/header: before auth
        self.limit_after_auth = limiter is not None and by_consumer
        self.limit_header = limit.key.partition(":")[2].lower().encode("latin-1") \
            if limit is not None and limit.key.startswith("header:") else None
        self.limit_headers = LimitHeaders(Limit.of(limit), limit.headers) \
            if limit is not None else None

    def decide(self, req: Request, admission: Admission, now: float) -> Refusal | None:
        """The route's steps, with the limiter's buckets in reach (no waiting)."""
        admission.strip = admission.strip | self.strip
        decision = None
        if self.limit_first:
            decision = self.limiter.allow(self._limit_key(req, admission), now)
            if not decision.allowed:
                return self._over(decision)
        refusal = self._authenticate(req, admission) if self.kind is not None else None
        if refusal is not None:
            return refusal
        if self.limit_after_auth:
            decision = self.limiter.allow("c:" + (admission.consumer or ""), now)
            if not decision.allowed:
                return self._over(decision)
        return self._finish(req, admission, decision)

    async def decide_shared(self, req: Request, admission: Admission,
                           now: float) -> Refusal | None:
        """The same steps as ``decide``, waiting for a shared store's decision; None from the
        limiter means the store is down and on_error is "open": no limit, no headers."""
        admission.strip = admission.strip | self.strip
        decision = None
        if self.limit_first:
            decision = await self.limiter.allow(self._limit_key(req, admission), now)
            if decision is not None and not decision.allowed:
                return self._over(decision)
        refusal = self._authenticate(req, admission) if self.kind is not None else None
        if refusal is not None:
            return refusal
        if self.limit_after_auth:
            decision = await self.limiter.allow("c:" + (admission.consumer or ""), now)
            if decision is not None and not decision.allowed:
                return self._over(decision)
        return self._finish(req, admission, decision)

    def _over(self, decision: Decision) -> Refusal:
        if decision.store_down:         # on_error = "closed": never a 500, never a guess
            return Refusal(503, "rate limit store unavailable", ((b"Retry-After", b"1"),))
        return Refusal(429, "rate limit exceeded", tuple(self.limit_headers.fields(decision)))

    def _finish(self, req: Request, admission: Admission,
                decision: Decision | None) -> Refusal | None:
        if self.allowance is not None:
            reason = self.allowance.denies(req.method, admission.client, admission.consumer,
                                           admission.claims)
            if reason is not None:
                return Refusal(403, reason)
        if decision is not None:
            admission.response_headers = self.limit_headers.fields(decision)
        return None

    def _limit_key(self, req: Request, admission: Admission) -> str:
        if self.limit_header is not None:
            value = req.header(self.limit_header)
            if value is not None:
                return "h:" + value.decode("latin-1")
        return "ip:" + admission.client      # no such header: limited by address instead

    def _authenticate(self, req: Request, admission: Admission) -> Refusal | None:
        values = [value for name, value in req.headers if name.lower() == self.header]
        if self.kind == "api_key":
            if len(values) > 1:         # components could disagree on which copy counts
                return Refusal(401, "more than one API key header", self.challenge)
            if not values or not values[0]:
                return Refusal(401, "missing API key", self.challenge)
            name = self.keyring.identify(values[0])
            if name is None:
                return Refusal(401, "invalid API key", self.challenge)
            admission.consumer = name
            admission.add.append((CONSUMER_HEADER, name.encode()))
            return None
        # jwt: exactly one "Authorization: Bearer <token>"
        if not values:
            return Refusal(401, "missing bearer token", self.challenge)
        scheme, _, token = values[0].strip().partition(b" ")
        if len(values) != 1 or scheme.lower() != b"bearer" or not token.strip():
            return Refusal(401, "expected one Authorization: Bearer header",
                           self._invalid(b"invalid_request", "expected one bearer token"))
        try:
            claims = self.jwt.verify(token.strip())
        except self.rejected as exc:
            return Refusal(401, str(exc), self._invalid(b"invalid_token", str(exc)))
        admission.claims = claims
        sub = claims.get("sub")
        admission.consumer = sub if isinstance(sub, str) else None
        admission.add.extend(self.jwt.forwarded(claims))
        return None

    def _invalid(self, error: bytes, description: str) -> tuple:
        return ((b"WWW-Authenticate", b"Bearer " + REALM + b', error="' + error +
                 b'", error_description="' + description.encode("ascii", "replace") + b'"'),)
