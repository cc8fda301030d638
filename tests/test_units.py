"""Durations and sizes as written in config files: parsing, formatting, and their round trip."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbctl.units import (
    DURATION_EXPECTED, SIZE_EXPECTED, format_duration, format_size, parse_duration, parse_size,
)


@pytest.mark.parametrize("text, seconds", [
    ("150ms", 0.15),
    ("2s", 2.0),
    ("1m", 60.0),
    ("1h", 3600.0),
    ("1h30m", 5400.0),
    ("1.5s", 1.5),
    ("250us", 0.00025),
    (" 2S ", 2.0),                  # case and surrounding spaces do not matter
    (3, 3.0),                       # plain numbers are seconds
    ("3", 3.0),                     # ... written as text too (every command-line option is)
    (" 2.5 ", 2.5),
    (0.5, 0.5),
    (0, 0.0),
])
def test_parse_duration_accepts(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize("value", [
    "2 secs", "-1", "1.", ".5", "1e3", "9" * 400, "s", "", "-1s", "1d", "1.s", "2s3", "ms150", True, None, [1], -1, -0.5,
    math.inf, math.nan,
])
def test_parse_duration_rejects_with_what_was_expected(value):
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value).startswith(DURATION_EXPECTED)


@pytest.mark.parametrize("text, size", [
    ("1MiB", 2**20),
    ("64KiB", 65536),
    ("10MB", 10_000_000),
    ("1.5KiB", 1536),
    ("2g", 2 * 2**30),
    ("512", 512),
    ("512b", 512),
    ("64 KiB", 65536),
    (1024, 1024),
    (2048.0, 2048),
    (0, 0),
])
def test_parse_size_accepts(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("value", [
    "1 parsec", "MiB", "", "-1KiB", "0.1KiB", "1.3b", True, None, -1, 1.5, math.inf, math.nan,
])
def test_parse_size_rejects_with_what_was_expected(value):
    with pytest.raises(ValueError) as info:
        parse_size(value)
    assert str(info.value).startswith(SIZE_EXPECTED)


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.15, "150ms"), (2.0, "2s"), (60, "1m"), (90, "90s"), (5400, "90m"),
    (3600, "1h"), (0.0015, "1.5ms"), (1.5, "1.5s"), (0.00025, "250us"),
])
def test_format_duration_reads_naturally(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("size, text", [
    (2**20, "1MiB"), (65536, "64KiB"), (3 * 2**30, "3GiB"), (1000, "1000"), (0, "0"),
])
def test_format_size_uses_binary_units_when_exact(size, text):
    assert format_size(size) == text


# validate --effective writes durations with format_duration and must load back to an equal
# config, so the round trip has to be exact for every finite non-negative float, not approximate.
@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_duration_format_parse_round_trip_is_exact(seconds):
    text = format_duration(seconds)
    assert "e" not in text.lower()          # no exponent form: the parser does not read it
    assert parse_duration(text) == seconds


@given(st.integers(min_value=0, max_value=2**50))
def test_size_format_parse_round_trip_is_exact(size):
    assert parse_size(format_size(size)) == size
