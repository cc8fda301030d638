"""Typed, immutable config objects: what the rest of lbctl reads after validation.

Every duration is float seconds and every size int bytes, converted once by the loader.
Defaults are documented here, where each field is defined; ``lbctl validate --effective``
prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class Address:
    host: str                   # "127.0.0.1", "::1", "localhost"
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Timeouts:
    """Per pool: how long to wait for a backend."""
    connect: float = 2.0        # TCP connect to a backend
    response: float = 30.0      # request fully sent -> response headers received


@dataclass(frozen=True)
class Health:
    """Active health checks of a pool (``[pools.X.health]``). Absent: backends assumed up."""
    type: str = "http"                      # "http" | "tcp"
    method: str = "GET"
    path: str = "/healthz"
    host: str | None = None                 # Host header for probes; default the backend's
    interval: float = 5.0
    timeout: float = 1.0
    rise: int = 2                           # consecutive successes to mark up
    fall: int = 3                           # consecutive failures to mark down
    expect_status: tuple[tuple[int, int], ...] = ((200, 200),)   # inclusive ranges
    expect_body: str | None = None          # regex searched in the body
    initial: str = "up"                     # "up" | "down": state before the first probe


@dataclass(frozen=True)
class Outlier:
    """Passive ejection (``[pools.X.outlier]``), Envoy-style. Absent: only truncated responses
    count, with these defaults (``lbctl.health.passive.TRUNCATIONS``)."""
    consecutive_failures: int = 5
    ejection_time: float = 30.0             # first ejection; doubles on each repeat
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 50.0
    failure_on: tuple[str, ...] = ("connect", "reset", "timeout", "5xx", "truncated")
                                            # also "invalid"


@dataclass(frozen=True)
class Discovery:
    """Where a pool finds backends at run time (``[pools.X.discovery]``). Absent: only the
    static ``backends``. Exactly one of ``dns``, ``srv`` and ``file`` is set."""
    dns: Address | None = None      # "api.internal:8080": every A/AAAA address, on that port
    srv: str | None = None          # "_http._tcp.api.internal": host, port, weight, priority
    file: str | None = None         # JSON list of {url, name?, weight?}; relative to the config
    interval: float = 10.0          # re-resolve at min(TTL, interval); a file is checked every
                                    # min(interval, 1s) and read again when it changed
    timeout: float = 2.0            # one resolution, every nameserver tried; then it has failed
    resolver: Address | None = None  # dns/srv: a nameserver "127.0.0.1:53"; None: the system's
    scheme: str | None = None       # dns/srv: "http" | "https"; None = "http"


@dataclass(frozen=True)
class BackendConfig:
    url: str                    # "http://127.0.0.1:9001"
    name: str                   # default: host:port
    scheme: str                 # "http" | "https"
    host: str
    port: int
    weight: float = 1.0
    backup: bool = False        # takes traffic only when no primary is eligible
    ca: str | None = None       # https: PEM CA bundle to verify with; None: the pool's, else system
    tls_insecure_skip_verify: bool | None = None    # https: None = the pool's setting
    # Where the backend comes from: "static" (the config file), "dns", "srv", "file" (a pool's
    # discovery) or "admin" (added through the admin API). Not a config key.
    source: str = "static"
    # https: the name verified in the certificate and sent as SNI; None = host. Discovery sets
    # it to the name it resolved, since host is then an address. Not a config key.
    server_name: str | None = None


@dataclass(frozen=True)
class PoolConfig:
    name: str
    backends: tuple[BackendConfig, ...]
    algorithm: str = "round_robin"
    hash_key: str | None = None             # consistent_hash only: ip | path | header:N | cookie:N
    retries: int = 1                        # extra attempts on another backend, when safe
    # What is retried (each on a backend not tried yet, within `retries`):
    #   "connect"  a failed connect, any method (nothing was sent)
    #   "reset"    closed/reset before any response byte; idempotent, replayable requests only
    #   "timeout"  no response head in time (504); idempotent, replayable only; opt-in
    #   "5xx"      a 5xx response head, not relayed; idempotent, replayable only; opt-in
    retry_on: tuple[str, ...] = ("connect", "reset")
    timeouts: Timeouts = field(default_factory=Timeouts)
    health: Health | None = None
    outlier: Outlier | None = None
    discovery: Discovery | None = None      # None: the static backends only
    slow_start: float = 0.0                 # ramp after becoming eligible; 0 = off
    panic_threshold: float = 0.0            # percent; 0 = off: no eligible backend -> 503
    ewma_decay: float = 10.0                # ewma only: time constant of the latency average
    max_idle_connections: int = 64         # per backend, upstream keep-alive
    idle_timeout: float = 15.0              # upstream keep-alive idle; below common backend defaults
    ca: str | None = None                   # https backends: PEM CA bundle; None = system store
    tls_insecure_skip_verify: bool = False  # https backends: no verification (logged loudly)
    explain: bool = False                   # add X-LB-Decision to every response (debugging)


@dataclass(frozen=True)
class Auth:
    """Who may call a route (``auth = {...}`` on a route). Absent: anyone."""
    type: str                               # "api_key" | "jwt"
    header: str | None = None               # api_key: header carrying the key; None = "X-API-Key"
    algorithms: tuple[str, ...] | None = None   # jwt: required, e.g. ("RS256",); never "none"
    secret_env: str | None = None           # jwt HS*: env var holding the HMAC secret, read at load
    public_key: str | None = None           # jwt RS/PS/ES/EdDSA: PEM public key file
    jwks: str | None = None                 # jwt: or a JWKS file (a key picked by "kid")
    audience: str | None = None             # jwt: when set, "aud" must contain exactly this
    issuer: str | None = None               # jwt: when set, "iss" must be exactly this
    leeway: float | None = None             # jwt: clock skew allowed on exp/nbf; None = 0; <= 60s
    forward_claims: tuple[tuple[str, str], ...] | None = None   # jwt: claim -> header to the backend
    # Key material loaded by the loader (HMAC secret or public keys): never read per request.
    material: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Allow:
    """Which authenticated callers may pass (``allow = {...}``); each given list must match."""
    consumers: tuple[str, ...] | None = None                        # names under [keys]
    claims: tuple[tuple[str, tuple[str, ...]], ...] | None = None   # claim -> accepted values
    methods: tuple[str, ...] | None = None
    ips: tuple[str, ...] | None = None      # CIDRs, matched against the resolved client address


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per key (``rate_limit = {...}`` on a route)."""
    rate: float                             # tokens added per ``per``
    burst: int | None = None                # bucket size; None = rate rounded up
    per: float = 1.0                        # seconds
    key: str = "ip"                         # "ip" | "consumer" | "header:NAME"
    # Names the limit in RateLimit headers and in the store (lbctl:rl:{name}:{key}); routes
    # with the same name share buckets. None in the file = the route's host and path_prefix
    # (filled in by the loader, so it is the same on every instance with the same routes).
    name: str | None = None
    headers: str = "ietf"                   # "ietf" (RateLimit-Policy, RateLimit: draft-11)
                                            # | "legacy" (RateLimit-Limit/Remaining/Reset)
                                            # | "both" | "off"; Retry-After on 429 always


@dataclass(frozen=True)
class Route:
    pool: str
    host: str | None = None                 # exact host or "*.example.com"; None = any
    path_prefix: str = "/"
    auth: Auth | None = None                # None: no authentication
    allow: Allow | None = None              # None: every authenticated caller
    rate_limit: RateLimit | None = None     # None: unlimited


@dataclass(frozen=True)
class Limits:
    """Global client-side limits and timeouts (``[limits]``)."""
    header_timeout: float = 10.0            # whole request head, from its first byte
    keepalive_timeout: float = 60.0         # idle client connection between requests
    body_timeout: float = 30.0              # idle gap while streaming a body, either way
    drain_timeout: float = 30.0             # SIGTERM: how long in-flight requests may finish; 0 = none
    max_header_size: int = 65536            # whole request head
    max_headers: int = 100
    max_uri_length: int = 8192
    max_body_size: int = 0                  # 0 = unlimited
    max_connections: int = 10000
    max_connections_per_client: int = 0     # 0 = unlimited
    # A backend's response head (the same defaults as the request side's); past either, the
    # client gets 502 and that upstream connection is closed.
    max_response_header_size: int = 65536   # the whole head, interim (1xx) heads included
    max_response_headers: int = 100


@dataclass(frozen=True)
class Paths:
    """How request paths are read (``[paths]``), after Envoy's path normalisation options.

    Dot segments are always removed and unreserved escapes decoded. For each thing a backend
    may read differently from lbctl, "reject_ambiguous" (the default) routes by the path as
    sent and refuses (400) a request that a backend reading it the other way would place
    under a different route; the other values state how every backend reads it."""
    merge_slashes: bool = True              # "//" -> "/" before routing and forwarding;
                                            # false: kept, and reject_ambiguous applies
    escaped_slashes: str = "reject_ambiguous"   # %2F and %5C: "reject_ambiguous" | "reject"
                                            # (400) | "keep" (data) | "unescape" (to "/")
    path_parameters: str = "reject_ambiguous"   # ";" in a segment: "reject_ambiguous" |
                                            # "reject" (400) | "keep" (data) | "strip" (removed)
    case: str = "reject_ambiguous"          # "reject_ambiguous" | "sensitive" (route by exact
                                            # case) | "insensitive" (prefixes match any case)


@dataclass(frozen=True)
class ListenTls:
    """TLS termination (``[listen] tls = {...}``); the files are read again on SIGHUP."""
    cert: str                               # PEM certificate chain; relative to the config file
    key: str                                # PEM private key
    min_version: str = "1.2"                # "1.2" | "1.3"


@dataclass(frozen=True)
class Listen:
    address: Address = Address("127.0.0.1", 8080)
    trusted_proxies: tuple[str, ...] = ()   # CIDRs whose client_ip_header is believed; none by default
    client_ip_header: str = "X-Forwarded-For"   # or "Forwarded": the one header read from them
    tls: ListenTls | None = None            # None: plain HTTP
    # Protocols an Upgrade request may switch to, tunnelled after the backend's 101; any other
    # Upgrade (h2c from curl --http2...) is forwarded as a plain request without it.
    upgrades: tuple[str, ...] = ("websocket",)


@dataclass(frozen=True)
class ApiKey:
    """A named API key (``[keys.NAME]``): only its SHA-256 digest is kept."""
    hash: str | None = None                 # "sha256:<64 hex>"
    env: str | None = None                  # or the key itself in this env var, read at load
    digest: bytes = field(default=b"", compare=False, repr=False)   # filled in by the loader


@dataclass(frozen=True)
class Admin:
    address: Address = Address("127.0.0.1", 9900)
    token: str | None = None    # else env LBCTL_ADMIN_TOKEN; required for a non-loopback address
    metrics: bool = True        # per-backend counters and latency histograms; false: not collected


@dataclass(frozen=True)
class Log:
    """The access log (``[log]``). Off by default: a busy proxy should opt in to a line per request."""
    access: str = "off"         # "off" | "stdout" | a file path, relative to the config file
                                # (reopened on SIGUSR1)
    format: str = "json"        # "json" (one object per line) | "combined" (Apache/NGINX style)


@dataclass(frozen=True)
class Store:
    """Where rate-limit buckets live (``[store]``). Absent: this process's memory."""
    backend: str = "local"                  # "local" (this process) | "redis" (shared)
    url: str | None = None                  # redis: redis://[user@]host[:port][/db],
                                            # rediss:// (TLS), unix:///path[?db=N];
                                            # required for redis; a password in it is
                                            # moved to `password` by the loader
    password_env: str | None = None         # or the password in this env var, read at load
    timeout: float = 0.05                   # the most one store call may add to a request
    on_error: str = "local"                 # store down or slow: "local" (this instance's
                                            # own buckets) | "open" (allow) | "closed" (503)
    max_connections: int = 16               # pooled connections to the store
    ca: str | None = None                   # rediss: PEM CA bundle; None = the system store
    # From the url or password_env; never written by --effective, never logged.
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Config:
    path: str
    listen: Listen
    routes: tuple[Route, ...]
    pools: Mapping[str, PoolConfig]
    admin: Admin | None = None              # no [admin] table: no admin API
    limits: Limits = field(default_factory=Limits)
    keys: Mapping[str, ApiKey] = field(default_factory=lambda: MappingProxyType({}))
    log: Log = field(default_factory=Log)
    paths: Paths = field(default_factory=Paths)
    store: Store = field(default_factory=Store)

    @staticmethod
    def freeze(pools: dict[str, PoolConfig]) -> Mapping[str, PoolConfig]:
        return MappingProxyType(dict(pools))
