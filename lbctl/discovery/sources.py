"""``[pools.X.discovery]`` -> the source that answers it.

Every source has the same small surface (``Source``): ``resolve()`` gives a ``Resolution``
and never raises for what the DNS or the file says; ``changed()`` says whether asking again
could tell anything new (a file: its ``stat`` moved; DNS: always); ``next_delay()`` says when
to look again; ``kind`` and ``target`` name it in logs, ``/stats`` and ``lbctl check``.
"""

from __future__ import annotations

from typing import Protocol

from lbctl.config.model import Discovery
from lbctl.discovery.resolution import Resolution


class Source(Protocol):
    kind: str               # "dns" | "srv" | "file": also each backend's source in /stats
    target: str             # "api.internal:8080", "_http._tcp.api.internal", a file path

    async def resolve(self) -> Resolution: ...

    def changed(self) -> bool: ...

    def next_delay(self, resolution: Resolution) -> float: ...


def make_source(discovery: Discovery) -> Source:
    """The source for one pool. ``ResolverError`` when DNS has no nameserver to ask."""
    if discovery.file is not None:
        from lbctl.discovery.file import FileSource
        return FileSource(discovery)
    from lbctl.discovery.dns import make_resolver
    resolver = make_resolver(discovery.resolver, discovery.timeout)
    if discovery.srv is not None:
        from lbctl.discovery.srv import SrvSource
        return SrvSource(discovery, resolver)
    from lbctl.discovery.dns import DnsSource
    return DnsSource(discovery, resolver)


def describe(discovery: Discovery) -> str:
    """``dns api.internal:8080`` / ``srv _http._tcp.api`` / ``file /etc/lbctl/api.json``."""
    if discovery.file is not None:
        return f"file {discovery.file}"
    if discovery.srv is not None:
        return f"srv {discovery.srv}"
    return f"dns {discovery.dns}"
