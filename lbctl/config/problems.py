"""Problems found in a config file, collected rather than raised.

Validation reports *every* problem at once, so checking code never raises on a bad value: it
adds a ``Problem`` (file, where, message) to a ``Problems`` list and carries on with the
default. This module also holds the small helpers every message uses: key paths written the
way the user would look for them (``pools.api.backends[1].weight``), found values written as
TOML, and "did you mean ...?" suggestions.
"""

from __future__ import annotations

import datetime
import difflib
import json
import re
from dataclasses import dataclass
from typing import Iterable

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Problem:
    file: str
    where: str                  # key path ("pools.api.backends[1].weight") or "line 3, column 5"
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.message}" if self.where else f"{self.file}: {self.message}"


class Problems:
    """The problems found so far in one file, in the order they were found."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[Problem] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(Problem(self.file, where, message))

    def wrong(self, where: str, expected: str, found: object, hint: str | None = None) -> None:
        """The common shape: ``where: expected X, found Y[; did you mean 'Z'?]``."""
        message = f"expected {expected}, found {describe(found)}"
        self.add(where, f"{message}; {hint}" if hint else message)

    def missing(self, where: str, expected: str) -> None:
        self.add(where, f"missing; expected {expected}")

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


def key_path(parent: str, key: str) -> str:
    """``parent.key``, quoting keys TOML would quote (``pools."a.b"``) so the path is findable."""
    part = key if _BARE_KEY.fullmatch(key) else json.dumps(key)
    return f"{parent}.{part}" if parent else part


def index_path(parent: str, index: int) -> str:
    return f"{parent}[{index}]"


def describe(value: object) -> str:
    """A found value as the user wrote it in TOML, or what kind of thing it is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # Readable letters as they are, anything else escaped: a value quoted in an error
        # may come from a hostile file, and must not move a terminal's cursor (C1 controls),
        # reverse the line (bidi overrides) or fail to encode (lone surrogates).
        text = "".join(c if c.isprintable() else f"\\u{ord(c):04x}"
                       for c in json.dumps(value, ensure_ascii=False))
        return text if len(text) <= 60 else text[:57] + '..."'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        text = "[" + ", ".join(describe(item) for item in value) + "]"
        return text if len(text) <= 60 else f"an array of {len(value)} values"
    if isinstance(value, (datetime.date, datetime.time)):
        return f"a date/time ({value.isoformat()})"
    return type(value).__name__


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """``did you mean 'X'?`` for the closest choice, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close and word.lower() != word:
        # "Round_Robin": case alone should not defeat the suggestion.
        close = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def one_of(choices: Iterable[str]) -> str:
    """``one of "a", "b", "c"`` for messages."""
    return "one of " + ", ".join(json.dumps(c) for c in choices)


def repeated_key(pairs: list[tuple[str, object]]) -> str | None:
    """The first key given twice among a JSON object's ``pairs`` (what ``json.loads`` hands an
    ``object_pairs_hook``), or None: with two, which one counts would depend on the parser."""
    seen: set[str] = set()
    return next((k for k, _ in pairs if k in seen or seen.add(k)), None)
