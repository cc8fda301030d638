"""One backend written as ``{"url": ..., "name": ..., "weight": ...}``.

A discovery file is a JSON array of these, and ``POST /pools/{pool}/backends`` takes one, so
both are checked by the same rules as ``[[pools.X.backends]]`` in the config file: the url's
shape, a name usable in admin paths and metric labels (default ``host:port``), and a weight
``checked_weight`` accepts (``MIN_WEIGHT`` .. ``MAX_WEIGHT``, as everywhere). A problem is ``Invalid`` whose ``where`` is a key path
(``[2].weight``) and whose text completes "expected ...".
"""

from __future__ import annotations

from typing import Any

from lbctl.balancing.backend import MAX_WEIGHT, MIN_WEIGHT, WEIGHT_RANGE, checked_weight
from lbctl.config.kinds import Invalid, Name, split_backend_url
from lbctl.config.model import Address, BackendConfig
from lbctl.config.problems import describe, key_path

KEYS = ("url", "name", "weight")


class EntryError(ValueError):
    """A bad entry: ``where`` is the key path inside the document, ``str()`` the problem."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.where}: {message}" if self.where else message


def check_weight(value: Any) -> float:
    """A weight from a document, or ``Invalid``. A bool is not a number here, as in TOML."""
    try:
        return checked_weight(value)
    except ValueError:
        raise Invalid(WEIGHT_RANGE) from None


def bounded_weight(value: int) -> float:
    """A weight from a source with a wider range (SRV: 0-65535) brought within bounds: 0,
    "rarely", becomes the lightest weight, and anything above the heaviest becomes it."""
    return checked_weight(min(max(float(value), MIN_WEIGHT), MAX_WEIGHT))


def backend_from_entry(entry: Any, source: str, where: str = "") -> BackendConfig:
    """The ``BackendConfig`` an entry describes, or ``EntryError`` naming the first problem."""
    if not isinstance(entry, dict):
        raise EntryError(where, f'expected an object like {{"url": "http://10.0.0.1:8080"}}, '
                                f"found {_found(entry)}")
    for key in entry:
        if key not in KEYS:
            # Quoted and escaped when not a plain word: the key is the sender's text, and
            # goes into a log line or a terminal.
            raise EntryError(key_path(where, key), f"unknown key; expected {', '.join(KEYS)}")
    if "url" not in entry:
        raise EntryError(_path(where, "url"), 'missing; expected a URL like '
                                               '"http://10.0.0.1:8080"')
    values: dict[str, Any] = {}
    for key, check in (("url", _url), ("name", Name().parse), ("weight", check_weight)):
        if key in entry:
            try:
                values[key] = check(entry[key])
            except Invalid as exc:
                text = f"expected {exc}, found {_found(entry[key])}"
                raise EntryError(_path(where, key), f"{text}; {exc.hint}" if exc.hint
                                 else text) from None
    scheme, host, port = split_backend_url(values["url"])
    name = values.get("name") or str(Address(host, port))
    return BackendConfig(url=values["url"], name=name, scheme=scheme, host=host, port=port,
                         weight=values.get("weight", 1.0), source=source)


def _url(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid('a URL "http://host:port" or "https://host:port"')
    split_backend_url(value)
    return value


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _found(value: Any) -> str:
    # JSON words, not TOML's: the document was JSON.
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return describe(value)
