"""Checks for ``[store]``: where rate-limit buckets live.

Only the file and the environment are read here, never the network: ``lbctl validate``
checks the URL's shape, the keys that go with each backend, the password's source and the
CA file, and ``lbctl check`` is what tries to reach the store. A password is moved out of
the URL into ``Store.password`` (which nothing writes or logs), so the URL kept in the model
is safe to show in ``/stats``, logs and ``validate --effective``.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from lbctl.config import model
from lbctl.config.kinds import Invalid, split_store_url
from lbctl.config.problems import Problems, describe

# Keys that only mean something for a store across the network.
REDIS_ONLY = ("url", "password_env", "timeout", "on_error", "max_connections", "ca")


def check_store(store: model.Store, raw: Any, bad: set[str], problems: Problems,
                env: Mapping[str, str], file: str) -> model.Store:
    """``store`` with its password resolved and its CA path made absolute."""
    raw = raw if isinstance(raw, dict) else {}
    if "store.backend" in bad:
        return store
    if store.backend == "local":
        for key in REDIS_ONLY:
            if key in raw and f"store.{key}" not in bad:
                shown = "a URL" if key == "url" else describe(raw[key])
                problems.add(f"store.{key}", f'expected no {key} with backend = "local" (it '
                                             f'only applies to backend = "redis"), found {shown}')
        return store
    if store.url is None:
        if "store.url" not in bad:
            problems.missing("store.url", 'a Redis URL like "redis://127.0.0.1:6379/0" '
                                          '(backend = "redis")')
        return store
    try:
        address = split_store_url(store.url)
    except Invalid:             # already reported by the schema
        return store
    password = address.password
    if store.password_env is not None:
        if password is not None:
            problems.add("store.password_env", "expected either a password in store.url or "
                                               "password_env, found both")
        else:
            password = env.get(store.password_env)
            if not password:
                problems.add("store.password_env",
                             f"expected the environment variable {store.password_env} to be set "
                             f"to the store's password, found it "
                             f"{'empty' if password == '' else 'unset'}")
                password = None
    ca = store.ca
    if ca is not None:
        if address.scheme != "rediss":
            problems.add("store.ca", f"expected no ca for a {address.scheme}:// store (it only "
                                     f"applies to rediss://), found {describe(raw.get('ca'))}")
        else:
            base = Path(file).resolve().parent if file else Path.cwd()
            ca = str((base / os.path.expanduser(ca)).resolve())
            try:
                ssl.create_default_context(cafile=ca)
            except (OSError, ssl.SSLError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                problems.add("store.ca", f"cannot load {ca} as a PEM CA bundle: {reason}")
    return replace(store, url=address.url, password=password, ca=ca)
