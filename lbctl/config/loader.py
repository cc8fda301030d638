"""Loading a config file: read it, parse the TOML, check everything, build the model.

``load_config(path)`` returns a frozen ``Config`` or raises ``ConfigError`` listing *every*
problem in the file. Per-key checks (types, ranges, units, unknown keys) come from the
declarations in ``schema.py``; this module adds what needs more than one key: backends' names
and addresses, routes that name pools, hash keys that depend on the algorithm, and so on.
A value that fails a check is left at its default so the rest of the file is still checked,
and cross-checks skip values that were bad so one mistake is reported once.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import replace
from typing import Any, Mapping

from lbctl.config import model
from lbctl.config.gateway import check_gateway, freeze_keys, read_keys
from lbctl.config.kinds import Invalid, Name, is_loopback, loops_back, split_backend_url
from lbctl.config.problems import Problem, Problems, describe, index_path, key_path, suggest
from lbctl.config.schema import BACKEND, CONFIG, POOL, ROUTE
from lbctl.config.store import check_store
from lbctl.errors import UserError
from lbctl.files import FileProblem, read_bytes
from lbctl.units import format_duration

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ADMIN_TOKEN_ENV = "LBCTL_ADMIN_TOKEN"
MIN_ADMIN_TOKEN = 16            # characters; 16 random hex digits are 64 bits
# A config is a page or two of TOML; a file this large is a mistake (or /dev/zero).
MAX_CONFIG_SIZE = 16 * 1024 * 1024

# Health keys that only mean something for HTTP probes; with type = "tcp" they would be ignored.
_HTTP_ONLY_HEALTH_KEYS = ("method", "path", "host", "expect_status", "expect_body")


class ConfigError(UserError):
    """The config file cannot be used; ``problems`` lists every reason, ``str()`` one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None,
                text: str | None = None) -> model.Config:
    """Read, check and build the config at ``path``.

    ``env`` (default ``os.environ``) supplies ``LBCTL_ADMIN_TOKEN`` when ``[admin]`` has no token.
    ``text``, when given, is the file's content as already read (a serve worker builds from
    the exact text its master validated, never from the file as it may be now); relative
    paths in it are still relative to ``path``'s directory.
    """
    file = str(path)
    data = read_toml(file) if text is None else parse_toml(file, text)
    problems = Problems(file)
    config = build_config(data, file, problems, os.environ if env is None else env)
    if problems:
        raise ConfigError(problems.items)
    return config


def read_toml(file: str) -> dict[str, Any]:
    """The parsed TOML document, or ``ConfigError`` saying why the file cannot be read."""
    return parse_toml(file, read_text(file))


def read_text(file: str) -> str:
    """The config file's text, or ``ConfigError`` saying why it cannot be read."""
    try:
        raw = read_bytes(file, MAX_CONFIG_SIZE)
    except FileProblem as exc:
        raise _fatal(file, "", f"cannot read the config file: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(raw[: exc.start].decode("utf-8", "replace"))
        raise _fatal(file, f"line {line}, column {column}",
                     "not valid UTF-8 (TOML files are UTF-8 text)") from None
    return text


def parse_toml(file: str, text: str) -> dict[str, Any]:
    """``text`` (the content of ``file``) parsed, or ``ConfigError`` at the syntax error."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(file, text, exc) from None


def build_config(data: Mapping[str, Any], file: str, problems: Problems,
                 env: Mapping[str, str]) -> model.Config:
    """Check a parsed document, adding to ``problems``; the result is only valid if none were added."""
    top = CONFIG.read(dict(data), "", problems)
    listen = top.values.get("listen", model.Listen())
    admin = top.values.get("admin")         # None: no admin API
    limits = top.values.get("limits", model.Limits())
    log = top.values.get("log", model.Log())
    if log.access not in ("off", "stdout") and not os.path.isabs(log.access):
        # Like every other file in the config: relative to the config file's directory.
        base = os.path.dirname(os.path.abspath(file)) if file else os.getcwd()
        log = replace(log, access=os.path.join(base, log.access))
    token_from_env = admin is not None and admin.token is None and bool(env.get(ADMIN_TOKEN_ENV))
    if token_from_env:
        admin = replace(admin, token=env[ADMIN_TOKEN_ENV])
    _check_admin(listen, admin, top.bad, problems, token_from_env)
    store = check_store(top.values.get("store", model.Store()), data.get("store"), top.bad,
                        problems, env, file)

    # Routes before pools: the order most files are written in, so problems read top-down.
    raw_pools = data.get("pools")
    declared = list(raw_pools) if isinstance(raw_pools, dict) else []
    keys = read_keys(data.get("keys"), problems, env)
    paths = top.values.get("paths", model.Paths())
    routes = _routes(data.get("routes"), declared, problems, paths)
    pools = _pools(raw_pools, problems, file)
    if not problems:
        _check_loops(pools, listen, admin, problems)
    config = model.Config(path=file, listen=listen, routes=tuple(routes),
                          pools=model.Config.freeze(pools), admin=admin, limits=limits,
                          keys=freeze_keys(keys), log=log, paths=paths, store=store,
                          server=top.values.get("server", model.Server()))
    # Keys, auth, TLS files: cross-checks and key material loaded once (config/gateway.py).
    raw_keys = data.get("keys")
    return check_gateway(config, data, problems, env,
                         list(raw_keys) if isinstance(raw_keys, dict) else [])


def summary(config: model.Config) -> str:
    """``2 routes, 2 pools, 5 backends``: what ``lbctl validate`` says about a good file."""
    backends = sum(len(pool.backends) for pool in config.pools.values())
    text = ", ".join(_count(n, word) for n, word in
                     ((len(config.routes), "route"), (len(config.pools), "pool"), (backends, "backend")))
    discovered = [name for name, pool in config.pools.items() if pool.discovery is not None]
    if discovered:
        # Not resolved here: validate never touches the network or the backend files.
        text += f", {_count(len(discovered), 'pool')} with discovery (not resolved)"
    return text


# ---- tables the schema cannot check alone ----

def _check_admin(listen: model.Listen, admin: model.Admin | None, bad: set[str],
                 problems: Problems, token_from_env: bool = False) -> None:
    if admin is not None and admin.token is not None and "admin.token" not in bad:
        _check_token(admin.token, token_from_env, problems)
    if admin is None or "admin.address" in bad:
        return
    if "listen.address" not in bad and admin.address == listen.address:
        problems.add("admin.address", f"expected an address other than listen.address, "
                                      f"found the same one ({admin.address})")
    # The admin API can disable backends; on a reachable address it must not be open to all.
    if admin.token is None and not is_loopback(admin.address.host) and "admin.token" not in bad:
        problems.add("admin.token", f"missing; expected a token (or env {ADMIN_TOKEN_ENV}) because "
                                    f"admin.address {admin.address} is not a loopback address")


def _check_token(token: str, from_env: bool, problems: Problems) -> None:
    """A token anyone could guess is no protection; the value itself is never printed."""
    where = f"admin.token (from env {ADMIN_TOKEN_ENV})" if from_env else "admin.token"
    if not token.strip():
        problems.add(where, f"expected a token of at least {MIN_ADMIN_TOKEN} characters, "
                            f"found a blank one")
    elif any(not "!" <= c <= "~" for c in token):
        problems.add(where, "expected printable ASCII without spaces (it is sent in an "
                            "Authorization header), found other characters")
    elif len(token) < MIN_ADMIN_TOKEN:
        problems.add(where, f"expected at least {MIN_ADMIN_TOKEN} characters (e.g. the output "
                            f"of `openssl rand -hex 16`), found {len(token)}")


def _check_loops(pools: dict[str, model.PoolConfig], listen: model.Listen,
                 admin: model.Admin | None, problems: Problems) -> None:
    """No backend may be lbctl's own listener or admin API (``loops_back``)."""
    for name, pool in pools.items():
        for i, b in enumerate(pool.backends):
            for what, address in (("listen.address", listen.address),
                                  ("admin.address", admin.address if admin else None)):
                if loops_back(b.host, b.port, address):
                    problems.add(f"{index_path(key_path(key_path('pools', name), 'backends'), i)}"
                                 f".url", f"expected a backend other than lbctl itself, found "
                                 f"{describe(b.url)}, the address of {what} ({address}): "
                                 "each request would be sent back into lbctl")


def _pools(raw: Any, problems: Problems, file: str = "") -> dict[str, model.PoolConfig]:
    expected = "at least one pool, as a table like [pools.api] with [[pools.api.backends]]"
    if raw is None or raw == {}:
        problems.missing("pools", expected)
        return {}
    if not isinstance(raw, dict):
        problems.wrong("pools", expected, raw)
        return {}
    pools: dict[str, model.PoolConfig] = {}
    for name, table in raw.items():
        where = key_path("pools", name)
        try:
            Name().parse(name)
        except Invalid:
            problems.wrong(where, 'a pool name without "/", spaces or control characters', name)
        pool = _pool(name, table, where, problems, file)
        if pool is not None:
            pools[name] = pool
    return pools


def _pool(name: str, table: Any, where: str, problems: Problems,
          file: str = "") -> model.PoolConfig | None:
    read = POOL.read(table, where, problems)
    if not isinstance(table, dict):
        return None
    discovery = _discovery(read, table.get("discovery"), key_path(where, "discovery"), problems,
                           file)
    if discovery is not None:
        read.values["discovery"] = discovery
    # With discovery the static backends are optional: the pool may be discovered whole.
    backends = _backends(table.get("backends"), key_path(where, "backends"), problems,
                         optional="discovery" in table)
    pool = model.PoolConfig(name=name, backends=tuple(backends), **read.values)

    if "algorithm" not in read.bad and "hash_key" not in read.bad:
        hash_key_path = key_path(where, "hash_key")
        if pool.algorithm == "consistent_hash" and pool.hash_key is None:
            problems.missing(hash_key_path, 'a hash key for algorithm "consistent_hash": '
                                            '"ip", "path", "header:NAME" or "cookie:NAME"')
        elif pool.algorithm != "consistent_hash" and pool.hash_key is not None:
            problems.add(hash_key_path, f'expected no hash_key for algorithm "{pool.algorithm}" '
                                        f'(it is only used by "consistent_hash"), '
                                        f'found {describe(table["hash_key"])}')

    outlier = pool.outlier
    if outlier is not None and not {"outlier.ejection_time", "outlier.max_ejection_time"} & read.bad:
        if outlier.max_ejection_time < outlier.ejection_time:
            raw_max = table["outlier"].get("max_ejection_time")
            found = describe(raw_max) if raw_max is not None else \
                f"the default {format_duration(outlier.max_ejection_time)}"
            problems.add(key_path(key_path(where, "outlier"), "max_ejection_time"),
                         f"expected at least outlier.ejection_time "
                         f"({format_duration(outlier.ejection_time)}), found {found}")

    health_table = table.get("health")
    if pool.health is not None and pool.health.type == "tcp" and isinstance(health_table, dict):
        for key in _HTTP_ONLY_HEALTH_KEYS:
            if key in health_table and f"health.{key}" not in read.bad:
                problems.add(key_path(key_path(where, "health"), key),
                             f'expected no {key} with type = "tcp" (a TCP check only connects), '
                             f"found {describe(health_table[key])}")
    return pool


def _discovery(read, raw: Any, where: str, problems: Problems,
               file: str) -> model.Discovery | None:
    """The cross-checks of ``[pools.X.discovery]``: exactly one source, and the keys that
    only mean something for DNS. Nothing is resolved or read here."""
    found = read.values.get("discovery")
    if not isinstance(raw, dict):
        return found
    sources = [key for key in DISCOVERY_SOURCES if key in raw]
    if not sources:
        problems.missing(where, "a source: one of dns, srv or file")
        return None
    if len(sources) > 1:
        problems.add(key_path(where, sources[1]),
                     f"expected one source per pool, found both {sources[0]} and {sources[1]}")
        return None
    if found is None:
        return None             # a bad value, already reported
    if found.file is not None:
        for key in ("resolver", "scheme"):
            if key in raw:
                why = "a file is read, not resolved" if key == "resolver" else \
                    "each entry's url carries its scheme"
                problems.add(key_path(where, key), f"expected no {key} with file ({why}), "
                                                   f"found {describe(raw[key])}")
        if not os.path.isabs(found.file):
            # Like every other file in the config: relative to the config file's directory.
            base = os.path.dirname(os.path.abspath(file)) if file else os.getcwd()
            found = replace(found, file=os.path.join(base, found.file))
    return found


# The keys of [pools.X.discovery] that name a source; a pool has exactly one.
DISCOVERY_SOURCES = ("dns", "srv", "file")


def _backends(raw: Any, where: str, problems: Problems,
              optional: bool = False) -> list[model.BackendConfig]:
    expected = f'at least one backend, as [[{where}]] tables with a url'
    if raw is None or raw == []:
        if not optional:
            pool_where = where.rpartition(".")[0]
            problems.missing(where, f"{expected}, or a [{pool_where}.discovery] table")
        return []
    if not isinstance(raw, list):
        problems.wrong(where, f"an array of tables ([[{where}]])", raw)
        return []
    backends: list[model.BackendConfig] = []
    first_with_name: dict[str, str] = {}
    for index, item in enumerate(raw):
        path = index_path(where, index)
        read = BACKEND.read(item, path, problems)
        if not isinstance(item, dict) or "url" in read.bad or "name" in read.bad:
            continue
        values = dict(read.values)
        scheme, host, port = split_backend_url(values["url"])
        # The default name is host:port, the same spelling as an Address.
        name = values.pop("name", None) or str(model.Address(host, port))
        if name in first_with_name:
            if "name" in item:
                problems.add(key_path(path, "name"), f"expected a name unique in the pool, "
                                                     f"found {describe(name)}, already used by "
                                                     f"{first_with_name[name]}")
            else:
                problems.add(path, f"expected a backend name unique in the pool; the default name "
                                   f"(host:port of url) {describe(name)} is already used by "
                                   f"{first_with_name[name]}; give one of them a name")
        else:
            first_with_name[name] = path
        backends.append(model.BackendConfig(name=name, scheme=scheme, host=host, port=port, **values))
    return backends


def _routes(raw: Any, pool_names: list[str], problems: Problems,
            paths: model.Paths) -> list[model.Route]:
    expected = ("at least one route, as [[routes]] tables with a pool "
                "(a request that no route matches gets 404)")
    if raw is None or raw == []:
        problems.missing("routes", expected)
        return []
    if not isinstance(raw, list):
        problems.wrong("routes", "an array of tables ([[routes]])", raw)
        return []
    pools_text = ", ".join(pool_names) if pool_names else "none are defined"
    routes: list[model.Route] = []
    for index, item in enumerate(raw):
        path = index_path("routes", index)
        read = ROUTE.read(item, path, problems)
        if not isinstance(item, dict) or "pool" in read.bad:
            continue
        pool = read.values["pool"]
        if pool not in pool_names:
            problems.wrong(key_path(path, "pool"), f"the name of a pool defined under [pools] ({pools_text})",
                           pool, suggest(pool, pool_names))
        prefix = read.values.get("path_prefix")
        if prefix is not None:
            _check_prefix(prefix, key_path(path, "path_prefix"), paths, problems)
        routes.append(model.Route(**read.values))
    return routes


def _check_prefix(prefix: str, where: str, paths: model.Paths, problems: Problems) -> None:
    """A prefix the [paths] policy would never let a request path match."""
    if (";" in prefix or "%3B" in prefix) and paths.path_parameters != "keep":
        problems.add(where, f'expected no ";" or %3B (paths.path_parameters is '
                            f'"{paths.path_parameters}", so requests are not routed by '
                            f'path parameters), found {describe(prefix)}')
    if paths.escaped_slashes in ("unescape", "reject") and re.search("%2F|%5C", prefix):
        problems.add(where, f'expected no %2F or %5C (paths.escaped_slashes is '
                            f'"{paths.escaped_slashes}"), found {describe(prefix)}')


# ---- reading errors ----

def _fatal(file: str, where: str, message: str) -> ConfigError:
    return ConfigError([Problem(file, where, message)])


_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = re.compile(r"\s*\(at end of document\)$")


def _syntax_error(file: str, text: str, exc: Exception) -> ConfigError:
    """tomllib puts the position at the end of its message: move it where users look for it."""
    message = str(exc)
    match = _AT.search(message)
    if match:
        line, column = int(match.group(1)), int(match.group(2))
        message = message[: match.start()]
    else:
        line, column = _position(text)
        message = _AT_END.sub(" (at end of file)", message)
    message = message[:1].lower() + message[1:]
    return _fatal(file, f"line {line}, column {column}", f"invalid TOML: {message}")


def _position(text: str) -> tuple[int, int]:
    """Line and column (both from 1) just after ``text``."""
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


__all__ = ["ADMIN_TOKEN_ENV", "ConfigError", "load_config", "read_toml", "build_config", "summary"]
