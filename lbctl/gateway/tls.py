"""The listener's TLS, replaceable on SIGHUP without closing the listening socket.

``Terminator`` holds the current server context (built by ``lbctl.config.tls``, Mozilla's
"intermediate" profile): every handshake asks its SNI callback for the current context, so
new connections get a reloaded certificate and open ones keep theirs.
"""

from __future__ import annotations

import logging
import ssl

from lbctl.config.tls import load_error, server_context

log = logging.getLogger("lbctl.gateway")


class Terminator:
    """The listener's TLS. ``front`` is given to the server socket once; ``current`` is
    swapped by ``reload`` and handed to each new handshake by the SNI callback (which
    OpenSSL calls for every ClientHello, with or without a server name)."""

    def __init__(self, cert: str, key: str, min_version: str = "1.2") -> None:
        self.current = server_context(cert, key, min_version)
        self.front = server_context(cert, key, min_version)
        self.front.sni_callback = self._pick
        self.reloads = 0

    def _pick(self, ssl_object, server_name, context) -> None:
        if context is not self.current:
            ssl_object.context = self.current

    def reload(self, cert: str, key: str, min_version: str = "1.2") -> bool:
        """A new context from the files; on failure keep serving the current one."""
        try:
            context = server_context(cert, key, min_version)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS reload rejected (%s); still serving the previous certificate",
                      load_error(exc), extra={"event": "tls_reload_rejected",
                                              "reason": load_error(exc)})
            return False
        self.current = context
        self.reloads += 1
        return True
