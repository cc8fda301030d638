"""The effective config: a loaded ``Config`` written back as TOML with every default filled in.

``lbctl validate --effective`` prints this so users can see what lbctl will actually do.
Durations are written as strings with a unit (``"2s"``, ``"150ms"``), sizes in binary units
when exact (``"1MiB"``). The output loads back to an equal ``Config``: it is written from the
same declarations the loader reads (``schema.py``), with each kind's exact inverse.
"""

from __future__ import annotations

import json
import re
from typing import Any

import tomli_w

from lbctl.config.model import Config
from lbctl.config.schema import BACKEND, CONFIG, KEY, POOL, ROUTE

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def effective_document(config: Config) -> dict[str, Any]:
    """The config as plain TOML values, in the order a reader expects them."""
    doc = CONFIG.dump(config)       # listen, admin, limits, log, store
    if config.store.backend == "local":
        doc["store"] = {"backend": "local"}     # the other keys are the redis store's
    if config.keys:
        doc["keys"] = {name: KEY.dump(key) for name, key in config.keys.items()}
    doc["routes"] = [ROUTE.dump(route) for route in config.routes]
    doc["pools"] = {}
    for name, pool in config.pools.items():
        table = POOL.dump(pool)
        if pool.backends:           # a pool may be discovered whole
            table["backends"] = [BACKEND.dump(b) for b in pool.backends]
        doc["pools"][name] = table
    return doc


def effective_toml(config: Config, header: str = "") -> str:
    """TOML text of ``effective_document``, after ``header`` lines written as comments."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    if config.admin is not None and config.admin.token is not None:
        # A secret does not belong in output that ends up in terminals, tickets and CI logs.
        lines.append("# admin.token is set but not shown; supply it again (or env LBCTL_ADMIN_TOKEN)")
    store = config.store
    if store.password is not None and store.password_env is None:
        lines.append("# store.url had a password, not shown; supply it again "
                     "(or use store.password_env)")
    chunks = ["\n".join(lines) + "\n"] if lines else []
    _write_table(effective_document(config), "", False, chunks)
    return "\n".join(chunks)


def _write_table(table: dict[str, Any], name: str, in_array: bool, chunks: list[str]) -> None:
    """One ``[name]`` (or ``[[name]]``) chunk, then its sub-tables.

    tomli-w writes the values (it gets TOML's escaping right); the table layout is ours,
    because tomli-w inlines short arrays of tables and the README writes ``[[routes]]``.
    """
    values = {k: v for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)}
    body = "".join(f"{_key(k)} = {_literal(v)}\n" for k, v in values.items())
    has_tables = len(values) < len(table)
    if name and (values or in_array or not has_tables):
        chunks.append((f"[[{name}]]\n" if in_array else f"[{name}]\n") + body)
    elif body:
        chunks.append(body)
    for key, value in table.items():
        path = f"{name}.{_key(key)}" if name else _key(key)
        if isinstance(value, dict):
            _write_table(value, path, False, chunks)
        elif _is_table_array(value):
            for item in value:
                _write_table(item, path, True, chunks)


def _literal(value: Any) -> str:
    """One value in TOML; short arrays stay on one line (``expect_status = [200]``)."""
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = "):].rstrip("\n")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    # Bare keys as TOML allows them; anything else quoted (names cannot hold control characters).
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
