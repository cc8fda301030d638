"""The gateway's per-request decision, called once from ``forward.handle`` after routing.

``Gateway`` is built with each ``Runtime`` (so a SIGHUP swaps it whole, like the pools);
``Gateway.admit`` resolves the client address and runs the route's ``RoutePolicy``:

    rate limit by ip/header -> authenticate -> rate limit by consumer -> authorize

It returns a ``Refusal`` (401, 403 or 429, sent by the proxy) or None, having put an
``Admission`` on the request: what the forwarded request carries instead of what the
client sent (credentials and client-sent X-Consumer/claim headers removed, X-Consumer and
claim headers added, X-Forwarded-For from the resolved chain) and the RateLimit-* headers
added to the backend's response.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from lbctl.gateway.api_key import DEFAULT_HEADER, KeyRing
from lbctl.gateway.authorize import Allowance
from lbctl.gateway.client_ip import ClientResolver
from lbctl.gateway.rate_limit import RateLimiter, TokenBuckets

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
                 previous: Gateway | None = None) -> None:
        self.clock = clock
        listen = config.listen
        self.resolver = ClientResolver(listen.trusted_proxies, listen.client_ip_header)
        keyring = KeyRing((name, key.digest) for name, key in config.keys.items())
        self.limiters: dict[tuple, RateLimiter] = {}
        self.policies: dict[int, RoutePolicy] = {}
        for index, route in enumerate(config.routes):
            if route.auth is None and route.allow is None and route.rate_limit is None:
                continue
            limiter = None
            if route.rate_limit is not None:
                # Same route, same limit after a reload: the buckets carry on.
                slot = (index, route.path_prefix, route.host, route.rate_limit)
                limiter = previous.limiters.get(slot) if previous is not None else None
                if limiter is None:
                    limiter = new_limiter(route.rate_limit)
                self.limiters[slot] = limiter
            self.policies[id(route)] = RoutePolicy(route, keyring, limiter)

    def admit(self, req: Request, route: Route, peer: str, tls: bool) -> Refusal | None:
        """Decide on ``req``, matched to ``route``, from the peer address ``peer`` on a
        listener that terminates TLS when ``tls``."""
        policy = self.policies.get(id(route))
        if policy is None and not self.resolver.networks and not tls:
            return None     # nothing to decide or rewrite: the plain proxy path
        client, chain, _ = self.resolver.resolve(peer, req.headers)
        admission = Admission(client, chain, b"https" if tls else b"http")
        req.admitted = admission
        if policy is None:
            return None
        return policy.decide(req, admission, self.clock())


def new_limiter(limit) -> RateLimiter:
    rate = limit.rate / limit.per
    burst = limit.burst if limit.burst is not None else max(1, math.ceil(limit.rate))
    return TokenBuckets(rate, burst)


class RoutePolicy:
    """One route's auth, allow-list and rate limit, compiled once per config load."""

    def __init__(self, route: Route, keyring: KeyRing, limiter: RateLimiter | None) -> None:
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
        self.limit_key = limit.key if limit is not None else None
        self.limit_header = limit.key.partition(":")[2].lower().encode("latin-1") \
            if limit is not None and limit.key.startswith("header:") else None

    def decide(self, req: Request, admission: Admission, now: float) -> Refusal | None:
        admission.strip = admission.strip | self.strip
        decision = None
        if self.limiter is not None and self.limit_key != "consumer":
            decision = self.limiter.allow(self._limit_key(req, admission), now)
            if not decision.allowed:
                return Refusal(429, "rate limit exceeded", tuple(decision.headers()))
        if self.kind is not None:
            refusal = self._authenticate(req, admission)
            if refusal is not None:
                return refusal
        if self.limiter is not None and self.limit_key == "consumer":
            decision = self.limiter.allow("c:" + (admission.consumer or ""), now)
            if not decision.allowed:
                return Refusal(429, "rate limit exceeded", tuple(decision.headers()))
        if self.allowance is not None:
            reason = self.allowance.denies(req.method, admission.client, admission.consumer,
                                           admission.claims)
            if reason is not None:
                return Refusal(403, reason)
        if decision is not None:
            admission.response_headers = decision.headers()
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
