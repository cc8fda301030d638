"""Checks for the gateway's keys: ``[keys]``, route ``auth``/``allow``/``rate_limit``,
``[listen]`` TLS and trusted proxies, and https backends' ``ca``.

These span tables (an allow-list names keys, a consumer rate limit needs auth) or need
files and the environment, so they run after the schema has read every table. Key material
is loaded here, once (by ``keys.py`` and ``tls.py``): API key digests, HMAC secrets from the
environment, public keys and JWKS files, and each certificate, key and CA file is loaded the
way the proxy will load it, so a file that does not work is a validation problem with its key
path, not a failed request. File paths are made absolute, relative to the config file's directory.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from lbctl.config import keys as key_material
from lbctl.config import model
from lbctl.config.keys import digest_of, parse_hash
from lbctl.config.kinds import BackendUrl, Invalid, Name, default_limit_name, split_backend_url
from lbctl.config.problems import Problems, describe, index_path, key_path, suggest
from lbctl.config.schema import KEY
from lbctl.config.tls import client_context, load_error, server_context
from lbctl.units import format_duration

log = logging.getLogger("lbctl.config")

MAX_LEEWAY = 60.0
MAX_RATE = 1_000_000.0      # rate_limit: tokens per second
# Keys of an auth table that belong to one type only.
_JWT_ONLY = ("algorithms", "secret_env", "public_key", "jwks", "audience", "issuer", "leeway",
             "forward_claims")
_API_KEY_ONLY = ("header",)


def read_keys(raw: Any, problems: Problems, env: Mapping[str, str]) -> dict[str, model.ApiKey]:
    """``[keys.NAME]`` tables, each with exactly one of ``hash`` or ``env``; digests computed."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.wrong("keys", "a table of named keys, like [keys.team-a] with hash or env", raw)
        return {}
    keys: dict[str, model.ApiKey] = {}
    for name, table in raw.items():
        where = key_path("keys", name)
        try:
            Name().parse(name)
        except Invalid:
            problems.wrong(where, 'a key name without "/", spaces or control characters', name)
            continue
        read = KEY.read(table, where, problems)
        if not isinstance(table, dict) or read.bad or set(table) - set(KEY.keys):
            continue            # already reported; a misspelt hash is not "neither"
        key = model.ApiKey(**read.values)
        if (key.hash is None) == (key.env is None):
            problems.add(where, "expected exactly one of hash (\"sha256:<hex>\") or env (the name "
                                "of an environment variable holding the key), found "
                                + ("both" if key.hash else "neither"))
            continue
        if key.hash is not None:
            digest = parse_hash(key.hash)
        else:
            value = env.get(key.env)
            if not value:
                problems.add(key_path(where, "env"), f"expected the environment variable "
                                                     f"{key.env} to be set to the key, found it "
                                                     f"{'empty' if value == '' else 'unset'}")
                continue
            digest = digest_of(value)
        same = next((other for other, k in keys.items() if k.digest == digest), None)
        if same is not None:
            # One key under two names: which consumer it is would depend on the order.
            problems.add(where, f"expected a key different from every other, found the same key "
                                f"as keys.{same}")
            continue
        keys[name] = replace(key, digest=digest)
    return keys


def check_gateway(config: model.Config, data: Mapping[str, Any], problems: Problems,
                  env: Mapping[str, str], declared_keys: list[str]) -> model.Config:
    """The config with paths resolved and key material attached; problems added as found."""
    base = Path(config.path).resolve().parent if config.path else Path.cwd()
    raw_listen = data.get("listen") if isinstance(data.get("listen"), dict) else {}
    listen = _listen(config.listen, raw_listen, base, problems)
    raw_routes = data.get("routes") if isinstance(data.get("routes"), list) else []
    indexes = _built(raw_routes, _route_builds)
    routes = []
    for position, route in enumerate(config.routes):
        index = indexes[position] if position < len(indexes) else position
        raw = raw_routes[index] if index < len(raw_routes) else {}
        routes.append(_route(route, raw, index_path("routes", index), base, problems, env,
                             declared_keys))
    routes = _limit_names(routes, [index_path("routes", indexes[p] if p < len(indexes) else p)
                                   for p in range(len(routes))], problems)
    raw_pools = data.get("pools") if isinstance(data.get("pools"), dict) else {}
    pools = {name: _pool(pool, raw_pools.get(name), key_path("pools", name), base, problems)
             for name, pool in config.pools.items()}
    return replace(config, listen=listen, routes=tuple(routes), pools=model.Config.freeze(pools))


def _limit_names(routes: list[model.Route], wheres: list[str],
                 problems: Problems) -> list[model.Route]:
    """Every rate limit named (default: the route's host and path prefix). Routes may share
    a name, and so their buckets, only with the same limit."""
    first: dict[str, tuple[model.RateLimit, str]] = {}
    out = []
    for position, route in enumerate(routes):
        limit = route.rate_limit
        if limit is None:
            out.append(route)
            continue
        explicit = limit.name is not None
        if not explicit:
            limit = replace(limit, name=default_limit_name(route.host, route.path_prefix))
            route = replace(route, rate_limit=limit)
        where = key_path(key_path(wheres[position], "rate_limit"), "name")
        seen = first.get(limit.name)
        if seen is None:
            first[limit.name] = (limit, wheres[position])
        elif replace(seen[0], headers=limit.headers) != limit:
            other = seen[1]
            if explicit:
                problems.add(where, f"expected a name no other limit uses, or the same rate, per, "
                                    f"burst and key as {other}.rate_limit, found {describe(limit.name)}")
            else:
                problems.missing(where, f"a name: this route's host and path_prefix give the same "
                                        f"name as {other} ({describe(limit.name)}) with another limit")
        out.append(route)
    return out


def _built(items: list, builds) -> list[int]:
    """Indexes in the file of the items the loader built a model object from, in order
    (it skips the ones it reported as unusable)."""
    return [index for index, item in enumerate(items) if isinstance(item, dict) and builds(item)]


def _route_builds(item: dict) -> bool:
    try:
        Name().parse(item.get("pool"))
    except Invalid:
        return False
    return True


def _backend_builds(item: dict) -> bool:
    try:
        BackendUrl().parse(item.get("url"))
        split_backend_url(item["url"])
        if "name" in item:
            Name().parse(item["name"])
    except Invalid:
        return False
    return True


def _path(base: Path, value: str) -> str:
    return str((base / os.path.expanduser(value)).resolve()) if value else value


def _listen(listen: model.Listen, raw: dict, base: Path, problems: Problems) -> model.Listen:
    tls = listen.tls
    if tls is None:
        return listen
    tls = replace(tls, cert=_path(base, tls.cert), key=_path(base, tls.key))
    for key in ("cert", "key"):
        path = getattr(tls, key)
        if not os.path.isfile(path):
            problems.add(f"listen.tls.{key}", f"cannot read {path}: the file does not exist")
            return replace(listen, tls=tls)
    try:
        server_context(tls.cert, tls.key, tls.min_version)
    except (OSError, ssl.SSLError) as exc:
        problems.add("listen.tls.cert", f"the certificate and key do not load as a pair "
                                        f"({tls.cert}, {tls.key}): {load_error(exc)}")
    return replace(listen, tls=tls)


def _route(route: model.Route, raw: dict, where: str, base: Path, problems: Problems,
           env: Mapping[str, str], declared_keys: list[str]) -> model.Route:
    auth = route.auth
    raw_auth = raw.get("auth") if isinstance(raw.get("auth"), dict) else {}
    if auth is not None:
        auth = _auth(auth, raw_auth, key_path(where, "auth"), base, problems, env)
        route = replace(route, auth=auth)
    allow = route.allow
    if allow is not None:
        allow_where = key_path(where, "allow")
        if allow.consumers is not None:
            if auth is None or auth.type != "api_key":
                problems.add(key_path(allow_where, "consumers"),
                             'expected auth = { type = "api_key", ... } on this route (consumers '
                             "are API key names), found " +
                             ("no auth" if auth is None else f'auth type "{auth.type}"'))
            else:
                for name in allow.consumers:
                    if name not in declared_keys:
                        known = ", ".join(declared_keys) if declared_keys else "none are defined"
                        problems.wrong(key_path(allow_where, "consumers"),
                                       f"names of keys defined under [keys] ({known})", name,
                                       suggest(name, declared_keys))
        if allow.claims is not None and (auth is None or auth.type != "jwt"):
            problems.add(key_path(allow_where, "claims"),
                         'expected auth = { type = "jwt", ... } on this route (claims come from '
                         "the token), found " + ("no auth" if auth is None else f'auth type "{auth.type}"'))
    limit = route.rate_limit
    if limit is not None and limit.rate / limit.per > MAX_RATE:
        # Buckets count in "now * rate" tokens (GCRA): past this a double can no longer
        # count single tokens over years of uptime or Unix time.
        problems.add(key_path(key_path(where, "rate_limit"), "rate"),
                     f"expected at most {MAX_RATE:,.0f} per second (rate / per), found "
                     f"{limit.rate / limit.per:,.10g} per second")
    if limit is not None and limit.key == "consumer" and auth is None:
        problems.add(key_path(key_path(where, "rate_limit"), "key"),
                     'expected "ip" or "header:NAME" on a route without auth (a consumer is '
                     'known only after authentication), found "consumer"')
    return route


def _auth(auth: model.Auth, raw: dict, where: str, base: Path, problems: Problems,
          env: Mapping[str, str]) -> model.Auth:
    foreign = _JWT_ONLY if auth.type == "api_key" else _API_KEY_ONLY
    for key in foreign:
        if key in raw:
            problems.add(key_path(where, key), f'expected no {key} with type = "{auth.type}", '
                                               f"found {describe(raw[key])}")
    if auth.type != "jwt":
        return auth
    if auth.leeway is not None and auth.leeway > MAX_LEEWAY:
        problems.add(key_path(where, "leeway"), f"expected at most {format_duration(MAX_LEEWAY)}, "
                                                f"found {describe(raw.get('leeway'))}")
    if not auth.algorithms:
        if "algorithms" not in raw:
            problems.missing(key_path(where, "algorithms"),
                             'the algorithms tokens may be signed with, like ["RS256"] '
                             '(never taken from the token itself)')
        return auth
    sources = [key for key in ("secret_env", "public_key", "jwks") if getattr(auth, key) is not None]
    if len(sources) != 1:
        if not any(key in raw and key not in sources for key in ("secret_env", "public_key", "jwks")):
            problems.add(where, "expected exactly one of secret_env (HS* algorithms), public_key or "
                                "jwks (a file), found " + (" and ".join(sources) or "none"))
        return auth
    hmac = [alg for alg in auth.algorithms if key_material.is_hmac(alg)]
    source = sources[0]
    if source == "secret_env" and len(hmac) != len(auth.algorithms) or \
            source != "secret_env" and hmac:
        wrong = [a for a in auth.algorithms if (a in hmac) != (source == "secret_env")]
        problems.add(key_path(where, "algorithms"),
                     f"expected only {'HS256/HS384/HS512' if source == 'secret_env' else 'public-key algorithms (RS*, PS*, ES*, EdDSA)'} "
                     f"with {source}, found {describe(wrong)} (mixing HMAC and public-key "
                     f"algorithms on one route allows algorithm confusion)")
        return auth
    try:
        if source == "secret_env":
            material = key_material.load_secret(env.get(auth.secret_env), auth.secret_env)
        elif source == "public_key":
            auth = replace(auth, public_key=_path(base, auth.public_key))
            material = key_material.load_public_key(auth.public_key)
        else:
            auth = replace(auth, jwks=_path(base, auth.jwks))
            material = key_material.load_jwks(auth.jwks)
    except key_material.MaterialError as exc:
        problems.add(key_path(where, exc.key), exc.message)
        return auth
    return replace(auth, material=material)


def _pool(pool: model.PoolConfig, raw: Any, where: str, base: Path,
          problems: Problems) -> model.PoolConfig:
    raw = raw if isinstance(raw, dict) else {}
    raw_backends = raw.get("backends") if isinstance(raw.get("backends"), list) else []
    pool_ca = _path(base, pool.ca) if pool.ca else None
    pool = replace(pool, ca=pool_ca)
    if pool_ca is not None:
        if pool.tls_insecure_skip_verify:
            problems.add(key_path(where, "ca"), "expected no ca with tls_insecure_skip_verify = true "
                                                "(nothing would be verified against it)")
        else:
            _try_ca(pool_ca, key_path(where, "ca"), problems)
    backends = []
    indexes = _built(raw_backends, _backend_builds)
    for position, backend in enumerate(pool.backends):
        index = indexes[position] if position < len(indexes) else position
        bwhere = index_path(key_path(where, "backends"), index)
        if backend.ca is not None:
            backend = replace(backend, ca=_path(base, backend.ca))
        insecure = backend.tls_insecure_skip_verify
        if insecure is None:
            insecure = pool.tls_insecure_skip_verify
        if backend.scheme != "https":
            for key in ("ca", "tls_insecure_skip_verify"):
                if getattr(backend, key) is not None:
                    problems.add(key_path(bwhere, key), f"expected no {key} for an http:// backend "
                                                        f"(it only applies to https://)")
        elif backend.ca is not None:
            if insecure:
                problems.add(key_path(bwhere, "ca"), "expected no ca with tls_insecure_skip_verify "
                                                     "= true (nothing would be verified against it)")
            else:
                _try_ca(backend.ca, key_path(bwhere, "ca"), problems)
        if backend.scheme == "https" and insecure:
            log.warning("%s: %s.tls_insecure_skip_verify: the certificate of backend %s (%s) "
                        "is NOT verified; anyone on the path can impersonate it", problems.file,
                        bwhere if backend.tls_insecure_skip_verify else where, backend.name,
                        backend.url, extra={"event": "config_warning", "pool": pool.name,
                                            "backend": backend.name,
                                            "reason": "tls_insecure_skip_verify"})
        backends.append(backend)
    return replace(pool, backends=tuple(backends))


def _try_ca(path: str, where: str, problems: Problems) -> None:
    if not os.path.isfile(path):
        problems.add(where, f"cannot read {path}: the file does not exist")
        return
    try:
        client_context(path, False)
    except (OSError, ssl.SSLError, ValueError) as exc:
        problems.add(where, f"expected a PEM CA bundle in {path}: {load_error(exc)}")


def freeze_keys(keys: dict[str, model.ApiKey]) -> Mapping[str, model.ApiKey]:
    return MappingProxyType(dict(keys))
