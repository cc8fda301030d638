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
    """Passive ejection (``[pools.X.outlier]``), Envoy-style. Absent: off."""
    consecutive_failures: int = 5
    ejection_time: float = 30.0             # first ejection; doubles on each repeat
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 50.0
    failure_on: tuple[str, ...] = ("connect", "reset", "timeout", "5xx")


@dataclass(frozen=True)
class BackendConfig:
    url: str                    # "http://127.0.0.1:9001"
    name: str                   # default: host:port
    scheme: str                 # "http" | "https"
    host: str
    port: int
    weight: float = 1.0
    backup: bool = False        # takes traffic only when no primary is eligible


@dataclass(frozen=True)
class PoolConfig:
    name: str
    backends: tuple[BackendConfig, ...]
    algorithm: str = "round_robin"
    hash_key: str | None = None             # consistent_hash only: ip | path | header:N | cookie:N
    retries: int = 1                        # extra attempts on another backend, when safe
    timeouts: Timeouts = field(default_factory=Timeouts)
    health: Health | None = None
    outlier: Outlier | None = None
    slow_start: float = 0.0                 # ramp after becoming eligible; 0 = off
    panic_threshold: float = 0.0            # percent; 0 = off: no eligible backend -> 503
    ewma_decay: float = 10.0                # ewma only: time constant of the latency average
    max_idle_connections: int = 64         # per backend, upstream keep-alive
    idle_timeout: float = 15.0              # upstream keep-alive idle; below common backend defaults


@dataclass(frozen=True)
class Route:
    pool: str
    host: str | None = None                 # exact host or "*.example.com"; None = any
    path_prefix: str = "/"


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


@dataclass(frozen=True)
class Listen:
    address: Address = Address("127.0.0.1", 8080)


@dataclass(frozen=True)
class Admin:
    address: Address = Address("127.0.0.1", 9900)
    token: str | None = None    # else env LBCTL_ADMIN_TOKEN; required for a non-loopback address


@dataclass(frozen=True)
class Config:
    path: str
    listen: Listen
    routes: tuple[Route, ...]
    pools: Mapping[str, PoolConfig]
    admin: Admin | None = None              # no [admin] table: no admin API
    limits: Limits = field(default_factory=Limits)

    @staticmethod
    def freeze(pools: dict[str, PoolConfig]) -> Mapping[str, PoolConfig]:
        return MappingProxyType(dict(pools))
