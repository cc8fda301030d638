"""TLS contexts: the listener's, and the one that verifies https backends.

Built here for the config loader (which loads every certificate, key and CA file the way
the proxy will, so a file that does not work is a validation problem) and for the parts that
use them: the gateway's ``Terminator`` and the proxy's upstream connections.

The listener's settings follow Mozilla's "intermediate" profile: TLS 1.2 minimum, only
AEAD cipher suites with forward secrecy for TLS 1.2 (TLS 1.3 suites are all AEAD), no
compression, no renegotiation.
"""

from __future__ import annotations

import ssl

# Mozilla intermediate (v5.7) TLS 1.2 suites.
CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
))
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def server_context(cert: str, key: str, min_version: str = "1.2") -> ssl.SSLContext:
    """A listener context; raises ``OSError`` or ``ssl.SSLError`` if the files do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[min_version]
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    context.set_alpn_protocols(["http/1.1"])
    # No password: an encrypted key fails to load instead of OpenSSL prompting on a terminal
    # (which would hang `lbctl validate` and a SIGHUP reload).
    context.load_cert_chain(cert, key, password=_no_password)
    return context


def _no_password() -> bytes:
    return b""


def client_context(ca: str | None, insecure: bool) -> ssl.SSLContext:
    """A context for connecting to an https backend: verified against ``ca`` (a PEM bundle)
    or the system store, unless ``insecure`` (``tls_insecure_skip_verify``)."""
    if insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def load_error(exc: Exception) -> str:
    """A short reason a certificate, key or CA file did not load."""
    if isinstance(exc, FileNotFoundError):
        return "the file does not exist"
    if isinstance(exc, ssl.SSLError):
        return (f"not a usable PEM file ({exc.reason or exc}); a key must match the "
                f"certificate and not be encrypted")
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


