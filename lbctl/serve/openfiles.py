"""The process's open-files limit, raised at start toward what the config needs.

Each client connection takes a descriptor, and another for its backend while a request is
in flight; a soft limit of 1,024 (a common default) would run out long before
``max_connections`` (10,000). Like NGINX's ``worker_rlimit_nofile`` and HAProxy's automatic
``ulimit-n``, ``serve`` raises the soft limit toward the hard one at start (and on a reload
that needs more), and says what it got. Whatever the limit, the data plane's connection cap
keeps within it (``lbctl.proxy.server.fd_cap``).
"""

from __future__ import annotations

import resource
from typing import NamedTuple


class OpenFiles(NamedTuple):
    before: int         # the soft limit found
    soft: int           # the soft limit now
    hard: int
    needed: int

    @property
    def raised(self) -> bool:
        return self.soft != self.before


def raise_open_files(needed: int) -> OpenFiles:
    """Raise the soft RLIMIT_NOFILE toward ``needed``, never past the hard limit, never down."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass                # e.g. a hard limit above what the kernel allows (nr_open)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return OpenFiles(before, soft, hard, needed)


def describe(limit: OpenFiles, max_connections: int, cap: int) -> tuple[bool, str]:
    """(enough, the line to log): what the limit allows, given the data plane's ``cap``."""
    def n(value: int) -> str:
        return "unlimited" if value == resource.RLIM_INFINITY else str(value)
    got = f"raised from {n(limit.before)} to {n(limit.soft)}" if limit.raised else n(limit.soft)
    if cap >= max_connections:
        return True, (f"open files limit {got} (hard {n(limit.hard)}): room for max_connections "
                      f"{max_connections} and an upstream connection each")
    return False, (f"open files limit {got} (hard {n(limit.hard)}) is below the {limit.needed} "
                   f"that max_connections {max_connections} needs: at most {cap} client "
                   f"connections at once, the rest get 503; raise the hard limit (ulimit -Hn, "
                   f"or LimitNOFILE= in a systemd unit)")
