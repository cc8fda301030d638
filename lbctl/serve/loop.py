"""The event loop ``lbctl serve`` runs on: uvloop where it is installed.

uvloop roughly doubles the data plane's throughput; without it (it is not built for every
platform) the standard asyncio loop runs the same code.
"""

from __future__ import annotations

import asyncio


def install_fast_loop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
