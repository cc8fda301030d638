"""Shared fixtures: real aiohttp backends on loopback and an in-process proxy in front of them."""

from __future__ import annotations

import pytest

from tests.support import Backends


@pytest.fixture
async def backends():
    group = Backends()
    yield group
    await group.close()
