"""systemd's ``sd_notify`` protocol, spoken directly: one datagram to ``$NOTIFY_SOCKET``.

With ``Type=notify`` (or ``notify-reload``) systemd starts the units that depend on lbctl
only after ``READY=1``, shows ``STATUS=`` in ``systemctl status``, and knows a reload or a
stop is under way from ``RELOADING=1`` and ``STOPPING=1``. A reload message carries
``MONOTONIC_USEC`` (CLOCK_MONOTONIC in microseconds), which systemd 253+ requires to match it
with the ``READY=1`` that ends it.

The socket is a path, or an abstract socket when the name starts with ``@``. Without
``NOTIFY_SOCKET`` every call does nothing; a send that fails is logged once and never
stops the proxy (the supervisor's problem must not become the clients').
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("lbctl")


class Notifier:
    """Where the notifications go, read once at start (and taken out of the environment,
    so no process lbctl starts speaks for it)."""

    def __init__(self, address: str | None = None) -> None:
        if address is None:
            address = os.environ.pop("NOTIFY_SOCKET", None)
        self.address = _socket_address(address) if address else None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; True when it was sent."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("sd_notify: cannot send to %s: %s", _shown(self.address),
                            exc.strerror or exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")


def _socket_address(name: str) -> str | bytes | None:
    if name.startswith("@"):
        return b"\0" + name[1:].encode()        # Linux abstract namespace
    if name.startswith("/"):
        return name
    return None                                 # vsock: and others: not spoken here


def _shown(address: str | bytes) -> str:
    return "@" + address[1:].decode(errors="replace") if isinstance(address, bytes) else address
