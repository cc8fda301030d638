"""TLS contexts: the listener's, and the one that verifies https backends.

Built here for the config loader (which loads every certificate, key and CA file the way
the proxy will, so a file that does not work is a validation problem) and for the parts that
use them: the gateway's ``Terminator`` and the proxy's upstream connections.

The listener's settings follow Mozilla's "intermediate" profile: TLS 1.2 minimum, only
AEAD cipher suites with forward secrecy for TLS 1.2 (TLS 1.3 suites are all AEAD), key
exchange only over X25519, P-256 and P-384 (OpenSSL's default adds X448, P-521 and the
finite-field groups), no compression, no renegotiation.
"""

from __future__ import annotations

import logging
import ssl

log = logging.getLogger("lbctl.gateway")      # the listener's TLS is the gateway's business

# Mozilla intermediate (v5.7) TLS 1.2 suites.
CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
))
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
# Mozilla intermediate (v5.7) key exchange groups, for TLS 1.2 (ECDHE) and TLS 1.3 alike.
GROUPS = "X25519:prime256v1:secp384r1"
_SSL_CTRL_SET_GROUPS_LIST = 92       # OpenSSL's SSL_CTX_set1_groups_list() is this ctrl


def server_context(cert: str, key: str, min_version: str = "1.2") -> ssl.SSLContext:
    """A listener context; raises ``OSError`` or ``ssl.SSLError`` if the files do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[min_version]
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    context.set_alpn_protocols(["http/1.1"])
    set_groups(context)
    # No password: an encrypted key fails to load instead of OpenSSL prompting on a terminal
    # (which would hang `lbctl validate` and a SIGHUP reload).
    context.load_cert_chain(cert, key, password=_no_password)
    return context


def _no_password() -> bytes:
    return b""


def set_groups(context: ssl.SSLContext) -> None:
    """Offer only ``GROUPS``. Python's ``ssl`` has no call for a list of groups before
    ``SSLContext.set_groups`` (newer Pythons), so older ones reach OpenSSL's own
    ``SSL_CTX_set1_groups_list`` for this context through ctypes, after checking that the
    pointer found really is this context's (its options must read back the same). If any
    of that fails, ``set_ecdh_curve`` narrows the groups to P-256 alone: still inside the
    profile, never wider."""
    setter = getattr(context, "set_groups", None)
    if setter is not None:
        setter(GROUPS)
        return
    if not _set_groups_list(context, GROUPS):
        log.warning("TLS: cannot set the key exchange groups %s here; offering prime256v1 only",
                    GROUPS)
        context.set_ecdh_curve("prime256v1")


def _set_groups_list(context: ssl.SSLContext, groups: str) -> bool:
    import sys
    if sys.implementation.name != "cpython":
        return False
    try:
        import ctypes
        import _ssl
        lib = ctypes.CDLL(_ssl.__file__)       # symbols resolve to the libssl _ssl uses
        get_options = lib.SSL_CTX_get_options
        get_options.restype, get_options.argtypes = ctypes.c_uint64, [ctypes.c_void_p]
        ctrl = lib.SSL_CTX_ctrl
        ctrl.restype = ctypes.c_long
        ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        # CPython's PySSLContext: the object header, then the SSL_CTX pointer.
        pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
        if not pointer or get_options(pointer) != context.options:
            return False
        return ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode("ascii")) == 1
    except (OSError, AttributeError, ValueError, TypeError):
        return False


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


def backend_context(backend, pool) -> ssl.SSLContext | None:
    """The context for ``backend`` (a ``BackendConfig`` of ``pool``): None for http://;
    verified against the backend's ``ca``, else the pool's, else the system store, unless
    ``tls_insecure_skip_verify`` is set on the backend or, failing that, on the pool. The
    proxy, its health checks and ``lbctl check`` all connect with it."""
    if backend.scheme != "https":
        return None
    insecure = backend.tls_insecure_skip_verify
    if insecure is None:
        insecure = pool.tls_insecure_skip_verify
    return client_context(backend.ca or pool.ca, insecure)


def handshake_error(exc: BaseException) -> str | None:
    """Why a TLS handshake with a backend failed, in the words an operator acts on (``TLS
    handshake failed: certificate verify failed: self-signed certificate``); None when
    ``exc`` is not a TLS error."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return f"TLS handshake failed: certificate verify failed: {detail}"
    if isinstance(exc, ssl.SSLError):
        detail = (exc.reason or str(exc)).replace("_", " ").lower()
        return f"TLS handshake failed: {detail}"
    return None


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
