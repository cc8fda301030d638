"""The listening address of an instance with workers: claimed by the master, served by workers.

On Linux every worker binds the address itself with ``SO_REUSEPORT`` and the kernel spreads
new connections over the workers' sockets. ``SO_REUSEPORT`` alone would also let a second
``lbctl serve`` on the same port silently join the group, so before any worker starts the
master ``claim``s the address:

* it binds it *without* ``SO_REUSEPORT``: that fails with "address already in use" while
  anything listens there (another program, a single-process serve, another's workers);
* it holds a lock named after the address, an abstract Unix socket (``\0lbctl listen
  HOST:PORT``: no file, gone with the process, one per network namespace like the port),
  so that a second master fails the same way even while none of the first one's workers
  listens (they are starting, or all being replaced);
* it keeps a socket bound to the port with ``SO_REUSEPORT`` that never listens (it takes
  no connection): the port stays taken for the kernel's own choices, and is fixed when the
  config asks for port 0.

Elsewhere (no ``SO_REUSEPORT`` that balances, as on macOS and the BSDs), the master listens
once and every worker accepts on the inherited socket (``Claim.shared``).
"""

from __future__ import annotations

import errno
import socket
import sys

from lbctl.config.model import Address
from lbctl.errors import UserError
from lbctl.exitcodes import Exit

# Linux balances connections over a SO_REUSEPORT group; other systems give them all to one.
REUSE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
BACKLOG = 1024


class Claim:
    """The address, held by the master for its workers."""

    def __init__(self, address: Address, port: int, holders: list[socket.socket],
                 shared: socket.socket | None) -> None:
        self.address = address
        self.port = port                    # the bound port (the config's, unless it said 0)
        self.holders = holders              # the lock and the bound socket
        self.shared = shared                # without SO_REUSEPORT: the one listening socket

    def close(self) -> None:
        for sock in self.holders:
            sock.close()
        self.holders = []
        if self.shared is not None:
            self.shared.close()
            self.shared = None


def _failure(address: Address, exc: OSError) -> UserError:
    reason = "address already in use" if exc.errno == errno.EADDRINUSE else \
        (exc.strerror or str(exc))
    return UserError(f"cannot listen on {address}: {reason}", exit_code=Exit.RUNTIME)


def _socket(family: int, addr: tuple, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


def claim(address: Address, *, reuse_port: bool = REUSE_PORT) -> Claim:
    """Make sure nothing else listens on ``address`` and hold it; ``UserError`` (exit 1)
    saying "address already in use" when something does."""
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on {address}: {exc.strerror}",
                        exit_code=Exit.RUNTIME) from None
    # The first address the name gives, as the workers' listeners will bind it.
    family, _, _, _, sockaddr = infos[0]
    try:
        probe = _socket(family, sockaddr, reuse_port=False)
    except OSError as exc:
        raise _failure(address, exc) from None
    port = probe.getsockname()[1]
    if not reuse_port:
        try:
            probe.listen(BACKLOG)
        except OSError as exc:
            probe.close()
            raise _failure(address, exc) from None
        probe.setblocking(False)
        return Claim(address, port, [], probe)
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(f"\0lbctl listen {sockaddr[0]}:{port}")
    except OSError as exc:        # another master holds this address
        lock.close()
        probe.close()
        raise _failure(address, exc) from None
    probe.close()
    bound = (sockaddr[0], port, *sockaddr[2:])
    try:
        holder = _socket(family, bound, reuse_port=True)
    except OSError as exc:        # taken in the instant between the two binds
        lock.close()
        raise _failure(address, exc) from None
    return Claim(address, port, [lock, holder], None)
