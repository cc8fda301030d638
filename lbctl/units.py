"""Durations and sizes as they are written in config files, parsed once, at load time.

Durations are strings with a unit (``"150ms"``, ``"2s"``, ``"1m"``, ``"1h30m"``) or plain
numbers of seconds, written as TOML numbers or as text (``"2"``: a command-line option is
always text, and one rule for both is the one a user can remember); sizes are strings with a unit (``"1MiB"``, ``"64KiB"``, ``"10MB"``) or
plain numbers of bytes. Both parsers raise ``ValueError`` with a message that says what
was expected, which the config loader attaches to the key path.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

_DURATION_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|µs|ms|s|m|h)")
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")

DURATION_EXPECTED = 'a duration such as "150ms", "2s", "1m" or a number of seconds'
SIZE_EXPECTED = 'a size such as "64KiB", "1MiB", "10MB" or a number of bytes'


def parse_duration(value: object) -> float:
    """Return seconds as a float; reject negatives, booleans and unknown units."""
    if isinstance(value, bool):
        raise ValueError(DURATION_EXPECTED)
    if isinstance(value, (int, float)):
        # TOML allows inf and nan; neither is a duration anyone means.
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{DURATION_EXPECTED} (finite, not negative)")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(DURATION_EXPECTED)
    text = value.strip().lower()
    if _PLAIN_NUMBER.fullmatch(text):
        return parse_duration(float(text))      # "2" is 2 seconds, as 2 is
    # "1h30m" is a sequence of parts; the whole string must be consumed.
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(text) or not math.isfinite(total):
        raise ValueError(DURATION_EXPECTED)
    return total


def format_duration(seconds: float) -> str:
    """The shortest spelling of a duration that parses back to exactly ``seconds``.

    ``validate --effective`` output must load back to an equal config, so every candidate
    is checked by parsing it; the fallback is the exact decimal of the float in seconds.
    """
    if seconds == 0:
        return "0s"
    for unit, scale in (("h", 3600.0), ("m", 60.0)):
        count = seconds / scale
        if count >= 1 and abs(count - round(count)) < 1e-9:
            text = f"{int(round(count))}{unit}"
            if parse_duration(text) == seconds:
                return text
    unit, scale = ("s", 1.0) if seconds >= 1 else ("ms", 1e-3) if seconds >= 1e-3 else ("us", 1e-6)
    count = seconds / scale
    # 0.15 / 1e-3 is 149.99999999999997: try short spellings first, keep the first exact one.
    for digits in (12, 15, 17):
        text = _plain_decimal(float(f"{count:.{digits}g}")) + unit
        if parse_duration(text) == seconds:
            return text
    return f"{_plain_decimal(seconds)}s"


def _plain_decimal(number: float) -> str:
    """Shortest round-tripping decimal, never in exponent form (``1e-05`` -> ``0.00001``)."""
    text = format(Decimal(repr(number)), "f")
    return text[:-2] if text.endswith(".0") else text


def parse_size(value: object) -> int:
    """Return bytes as an int; reject negatives, booleans, unknown units and fractional bytes."""
    if isinstance(value, bool):
        raise ValueError(SIZE_EXPECTED)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{SIZE_EXPECTED} (not negative)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0 or value != int(value):
            raise ValueError(f"{SIZE_EXPECTED} (a whole number of bytes, not negative)")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(SIZE_EXPECTED)
    match = _SIZE.fullmatch(value.strip().lower())
    if not match or match.group(2) not in _SIZE_UNITS and match.group(2) != "":
        raise ValueError(SIZE_EXPECTED)
    size = float(match.group(1)) * _SIZE_UNITS.get(match.group(2), 1)
    # "1.5KiB" is 1536 bytes; "0.1KiB" would be 102.4 bytes, which is not a size.
    if size != int(size):
        raise ValueError(f"{SIZE_EXPECTED} (a whole number of bytes)")
    return int(size)


def format_size(size: int) -> str:
    """Binary units when exact (``"1MiB"``), otherwise bytes."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)
