"""Key material the gateway checks requests against, loaded and checked with the config.

API keys are held as SHA-256 digests (``hash = "sha256:<hex>"``, or the digest of an
environment variable's value); JWT routes get an HMAC secret from the environment, or public
keys from a PEM file or a JWKS file. Everything is loaded once, when the config is: a file
that does not work is a ``lbctl validate`` problem with its key path, never a failed request.
``lbctl.gateway`` uses what is loaded here; PyJWT and cryptography are imported only when a
config has public keys to load.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

MIN_HMAC_SECRET = 32            # bytes; RFC 7518 3.2: at least the hash size for HS256
_HMAC = ("HS256", "HS384", "HS512")


def digest_of(key: str | bytes) -> bytes:
    """The SHA-256 digest an API key is held as."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def same_secret(presented: bytes, digest: bytes) -> bool:
    """Whether ``presented`` is the secret whose SHA-256 is ``digest`` (``digest_of``).
    Fixed-length digests are compared with ``hmac.compare_digest``: the time taken shows
    neither how much of the secret was right nor how long it is (compare_digest on the
    secrets themselves returns at once when the lengths differ)."""
    return hmac.compare_digest(hashlib.sha256(presented).digest(), digest)


def parse_hash(text: str) -> bytes:
    """``"sha256:<hex>"`` (already checked by the config kind) -> the 32-byte digest."""
    return bytes.fromhex(text.partition(":")[2])


class MaterialError(ValueError):
    """Key material that does not load; ``key`` is the auth key to blame (``jwks``...)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass
class Material:
    secret: bytes | None = None
    keys: dict[str | None, Any] = field(default_factory=dict)   # kid (None: no kid) -> key
    key_algorithms: dict[str | None, str] = field(default_factory=dict)   # a JWK's own "alg"


def is_hmac(algorithm: str) -> bool:
    return algorithm in _HMAC


def load_secret(value: str | None, env_name: str) -> Material:
    if value is None:
        raise MaterialError("secret_env", f"expected the environment variable {env_name} "
                                          f"to be set (it holds the HMAC secret), found it unset")
    secret = value.encode()
    if len(secret) < MIN_HMAC_SECRET:
        raise MaterialError("secret_env", f"expected the HMAC secret in {env_name} to be at least "
                                          f"{MIN_HMAC_SECRET} bytes, found {len(secret)}")
    return Material(secret=secret)


def load_public_key(path: str) -> Material:
    """A PEM public key, or a PEM certificate whose public key is used."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    data = _read(path, "public_key")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise MaterialError("public_key", f"expected a PEM public key or certificate in {path}, "
                                          f"it does not load ({exc})") from None
    return Material(keys={None: key})


def load_jwks(path: str) -> Material:
    import jwt
    data = _read(path, "jwks")
    try:
        document = json.loads(data)
        entries = document["keys"]
        if not isinstance(entries, list) or not entries:
            raise ValueError("no keys")
    except (ValueError, KeyError, TypeError):
        raise MaterialError("jwks", f'expected a JWKS file ({{"keys": [...]}}, at least one key) '
                                    f"in {path}") from None
    material = Material()
    for index, entry in enumerate(entries):
        try:
            jwk = jwt.PyJWK(entry)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise MaterialError("jwks", f"key {index} in {path} does not load ({exc})") from None
        if isinstance(entry, dict) and entry.get("kty") == "oct":
            raise MaterialError("jwks", f"key {index} in {path} is a symmetric (oct) key; "
                                        f"HMAC secrets come from secret_env, not a file")
        kid = entry.get("kid")
        if kid in material.keys:
            raise MaterialError("jwks", f"two keys in {path} share the kid {kid!r}")
        material.keys[kid] = jwk.key
        if entry.get("alg"):
            material.key_algorithms[kid] = entry["alg"]
    return material


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1024 * 1024)
    except FileNotFoundError:
        raise MaterialError(key, f"cannot read {path}: the file does not exist") from None
    except OSError as exc:
        raise MaterialError(key, f"cannot read {path}: {exc.strerror or exc}") from None


