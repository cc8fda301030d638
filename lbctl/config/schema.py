"""The config file's shape: one ``Section`` per TOML table, mapping each key to its kind.

A key's name is the model field's name, and its default is the model field's default, so
both are written once (in ``model.py``). The same declarations drive loading (unknown keys,
wrong types, conversion) and ``validate --effective`` (writing every value back), so the two
cannot drift apart.

To add a config key: add the field (with its default and a comment) to the dataclass in
``model.py``, then one line here naming its kind. Checks that involve several keys or
several tables belong in ``loader.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lbctl.balancing import ALGORITHMS
from lbctl.balancing.backend import MAX_WEIGHT, MIN_WEIGHT, WEIGHT_RANGE
from lbctl.config import model
from lbctl.config.kinds import (
    AddressKind, BackendUrl, Bool, Choice, ChoiceList, Cidrs, ClaimValues, DnsAddress, DnsName,
    Duration, EnvName, FilePath, HashKey, HeaderMap, HeaderName, HeaderValue, HostPattern, Int,
    Invalid, KeyHash, Kind, LimitName, ListOf, Method, Name, Nameserver, Number, PathPrefix,
    Percent, RateKey, Regex, Size, StatusRanges, StoreUrl, Str, Upgrades, UrlPath,
)
from lbctl.config.problems import Problems, key_path, suggest


@dataclass
class Read:
    """What reading one table produced: the good values by field name, and the keys that were
    bad (nested ones as ``health.rise``), so cross-checks can skip values they cannot trust."""
    values: dict[str, Any] = field(default_factory=dict)
    bad: set[str] = field(default_factory=set)


class Section:
    """A TOML table backed by a model dataclass.

    ``fields`` maps key -> ``Kind`` or nested ``Section``; ``extra`` lists keys the loader
    handles itself (e.g. ``backends``) so they are not reported as unknown. An ``optional``
    section that is absent is ``None`` in the model (e.g. no ``[health]``: no active checks).
    """

    def __init__(self, cls: type, *, optional: bool = False, extra: tuple[str, ...] = (),
                 **fields: Kind | Section) -> None:
        self.cls, self.optional, self.extra, self.fields = cls, optional, extra, fields

    @property
    def keys(self) -> tuple[str, ...]:
        return (*self.fields, *self.extra)

    def read(self, data: Any, where: str, problems: Problems) -> Read:
        """Check every key of ``data``; convert the good ones; report the rest."""
        result = Read()
        if not isinstance(data, dict):
            problems.wrong(where, "a table", data)
            return result
        for key, value in data.items():
            path = key_path(where, key)
            if key not in self.fields and key not in self.extra:
                self._unknown(key, path, problems)
                continue
            spec = self.fields.get(key)
            if spec is None:
                continue            # an extra key: the loader reads it
            if isinstance(spec, Section):
                sub = spec.read(value, path, problems)
                built = spec.build(sub) if isinstance(value, dict) else None
                if built is None:
                    result.bad.add(key)     # spec.read reported why
                else:
                    result.values[key] = built
                result.bad.update(f"{key}.{inner}" for inner in sub.bad)
                continue
            try:
                result.values[key] = spec.parse(value)
            except Invalid as exc:
                problems.wrong(path, str(exc), spec.shown(value), exc.hint)
                result.bad.add(key)
        for key, spec in self.fields.items():
            if isinstance(spec, Kind) and spec.required and key not in data:
                problems.missing(key_path(where, key), spec.expected)
                result.bad.add(key)
        return result

    def build(self, read: Read) -> Any:
        """The model object from a table's good values; ``None`` if a required key is missing or bad."""
        if any(isinstance(spec, Kind) and spec.required and key not in read.values
               for key, spec in self.fields.items()):
            return None
        return self.cls(**read.values)

    def dump(self, obj: Any) -> dict[str, Any]:
        """The table as TOML values; ``None`` fields and secrets are left out."""
        out: dict[str, Any] = {}
        for key, spec in self.fields.items():
            value = getattr(obj, key)
            if value is None or (isinstance(spec, Kind) and spec.secret):
                continue
            out[key] = spec.dump(value)
        return out

    def _unknown(self, key: str, path: str, problems: Problems) -> None:
        hint = suggest(key, self.keys)
        if hint:
            problems.add(path, f"unknown key; {hint}")
        else:
            problems.add(path, "unknown key; expected " + ", ".join(self.keys))


# ---- the declarations: one per TOML table, in the order --effective writes them ----

# Every algorithm PyJWT verifies with a key; "none" is deliberately not one of them.
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384",
                  "PS512", "ES256", "ES384", "ES512", "EdDSA")

LISTEN_TLS = Section(
    model.ListenTls, optional=True,
    cert=FilePath("PEM certificate (chain) file", required=True),
    key=FilePath("PEM private key file", required=True),
    min_version=Choice(("1.2", "1.3")),
)

LISTEN = Section(
    model.Listen,
    address=AddressKind(),
    trusted_proxies=Cidrs(),
    client_ip_header=Choice(("X-Forwarded-For", "Forwarded")),
    tls=LISTEN_TLS,
    upgrades=Upgrades(),
)

KEY = Section(model.ApiKey, hash=KeyHash(), env=EnvName())

ADMIN = Section(
    model.Admin, optional=True,
    address=AddressKind(),
    token=Str(secret=True),
    metrics=Bool(),
)

LOG = Section(
    model.Log,
    access=FilePath('file, or "stdout" or "off"'),
    format=Choice(("json", "combined")),
)

LIMITS = Section(
    model.Limits,
    header_timeout=Duration(positive=True),
    keepalive_timeout=Duration(positive=True),
    body_timeout=Duration(positive=True),
    drain_timeout=Duration(),
    max_header_size=Size(positive=True),
    max_headers=Int(min=1),
    max_uri_length=Size(positive=True),
    max_body_size=Size(),
    max_connections=Int(min=1),
    max_connections_per_client=Int(min=0),
    max_response_header_size=Size(positive=True),
    max_response_headers=Int(min=1),
)

AUTH = Section(
    model.Auth, optional=True,
    type=Choice(("api_key", "jwt"), required=True),
    header=HeaderName(),
    algorithms=ChoiceList(JWT_ALGORITHMS),
    secret_env=EnvName(),
    public_key=FilePath("PEM public key file"),
    jwks=FilePath("JWKS (JSON) file"),
    audience=Str(),
    issuer=Str(),
    leeway=Duration(),
    forward_claims=HeaderMap(),
)

ALLOW = Section(
    model.Allow, optional=True,
    consumers=ListOf(Name(expected="a key name defined under [keys]")),
    claims=ClaimValues(),
    methods=ListOf(Method()),
    ips=Cidrs(),
)

RATE_LIMIT = Section(
    model.RateLimit, optional=True,
    rate=Number(positive=True, required=True),
    burst=Int(min=1),
    per=Duration(positive=True),
    key=RateKey(),
    name=LimitName(),
    headers=Choice(("ietf", "legacy", "both", "off")),
)

PATHS = Section(
    model.Paths,
    merge_slashes=Bool(),
    escaped_slashes=Choice(("reject_ambiguous", "reject", "keep", "unescape")),
    path_parameters=Choice(("reject_ambiguous", "reject", "keep", "strip")),
    case=Choice(("reject_ambiguous", "sensitive", "insensitive")),
)

ROUTE = Section(
    model.Route,
    pool=Name(required=True, expected="the name of a pool defined under [pools]"),
    host=HostPattern(),
    path_prefix=PathPrefix(),
    auth=AUTH,
    allow=ALLOW,
    rate_limit=RATE_LIMIT,
)

TIMEOUTS = Section(
    model.Timeouts,
    connect=Duration(positive=True),
    response=Duration(positive=True),
)

HEALTH = Section(
    model.Health, optional=True,
    type=Choice(("http", "tcp")),
    method=Method(),
    path=UrlPath(),
    host=HeaderValue(),
    interval=Duration(positive=True),
    timeout=Duration(positive=True),
    rise=Int(min=1),
    fall=Int(min=1),
    expect_status=StatusRanges(),
    expect_body=Regex(),
    initial=Choice(("up", "down")),
)

OUTLIER = Section(
    model.Outlier, optional=True,
    consecutive_failures=Int(min=1),
    ejection_time=Duration(positive=True),
    max_ejection_time=Duration(positive=True),
    max_ejection_percent=Percent(),
    failure_on=ChoiceList(("connect", "reset", "timeout", "5xx", "truncated", "invalid")),
)

DISCOVERY = Section(
    model.Discovery, optional=True,
    dns=DnsAddress(),
    srv=DnsName(),
    file=FilePath("JSON file listing backends"),
    interval=Duration(positive=True),
    timeout=Duration(positive=True),
    resolver=Nameserver(),
    scheme=Choice(("http", "https")),
)

BACKEND = Section(
    model.BackendConfig,
    url=BackendUrl(required=True),
    name=Name(),
    weight=Number(min=MIN_WEIGHT, max=MAX_WEIGHT, expected=WEIGHT_RANGE),
    backup=Bool(),
    ca=FilePath("PEM CA bundle file"),
    tls_insecure_skip_verify=Bool(),
)

# What `retries` may be spent on; see model.PoolConfig.retry_on.
RETRY_ON = ("connect", "reset", "timeout", "5xx")

POOL = Section(
    model.PoolConfig, extra=("backends",),
    algorithm=Choice(ALGORITHMS),
    hash_key=HashKey(),
    retries=Int(min=0),
    retry_on=ChoiceList(RETRY_ON),
    slow_start=Duration(),
    panic_threshold=Percent(),
    ewma_decay=Duration(positive=True),
    max_idle_connections=Int(min=0),
    idle_timeout=Duration(positive=True),
    ca=FilePath("PEM CA bundle file"),
    tls_insecure_skip_verify=Bool(),
    explain=Bool(),
    timeouts=TIMEOUTS,
    health=HEALTH,
    outlier=OUTLIER,
    discovery=DISCOVERY,
)

STORE = Section(
    model.Store,
    backend=Choice(("local", "redis")),
    url=StoreUrl(),
    password_env=EnvName(),
    timeout=Duration(positive=True),
    on_error=Choice(("local", "open", "closed")),
    max_connections=Int(min=1, max=1024),
    ca=FilePath("PEM CA bundle file"),
)

CONFIG = Section(
    model.Config, extra=("keys", "routes", "pools"),
    listen=LISTEN,
    admin=ADMIN,
    limits=LIMITS,
    log=LOG,
    paths=PATHS,
    store=STORE,
)

