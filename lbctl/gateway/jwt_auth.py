"""JWT authentication with PyJWT, against keys loaded with the config.

What a route accepts is decided by the config, never by the token: the algorithms are the
route's explicit list (``alg: none`` is not a choice), HMAC routes get an HMAC secret and
public-key routes get public keys, so an HS256 token "signed" with the RSA public key has
no algorithm to be checked with. ``exp`` is required; ``aud`` and ``iss`` must be exactly
the configured values; ``nbf`` is honoured; leeway is at most 60 s (checked at load).

Every way a token can be wrong ends as ``Rejected`` (a 401 with ``WWW-Authenticate``),
including malformed input PyJWT trips over: a bad token is never a 500.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography import x509

MAX_TOKEN = 8 * 1024            # larger tokens are refused before any parsing
MIN_HMAC_SECRET = 32            # bytes; RFC 7518 3.2: at least the hash size for HS256
_HMAC = ("HS256", "HS384", "HS512")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


class MaterialError(ValueError):
    """Key material that does not load; ``key`` is the auth key to blame (``jwks``...)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class Rejected(Exception):
    """A token that does not pass; ``str()`` is a short reason safe to send to the client."""


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


class JwtVerifier:
    """One route's JWT checks, compiled from its ``Auth`` (material already loaded)."""

    def __init__(self, auth) -> None:
        self.algorithms = list(auth.algorithms)
        self.audience = auth.audience
        self.issuer = auth.issuer
        self.leeway = auth.leeway or 0.0
        self.material: Material = auth.material
        required = ["exp"] + (["aud"] if auth.audience else []) + (["iss"] if auth.issuer else [])
        self.options = {"require": required, "verify_signature": True, "verify_exp": True,
                        "verify_nbf": True, "verify_aud": True, "verify_iss": True}
        self.forward = [(claim, header.encode("latin-1")) for claim, header in auth.forward_claims or ()]

    def verify(self, token: bytes, now: float | None = None) -> dict[str, Any]:
        """The token's claims, or ``Rejected``."""
        if len(token) > MAX_TOKEN:
            raise Rejected("token too large")
        try:
            text = token.decode("ascii")
            header = jwt.get_unverified_header(text)
            alg = header.get("alg")
            if alg not in self.algorithms:
                raise Rejected("algorithm not accepted")
            key = self._key(header, alg)
            claims = jwt.decode(text, key, algorithms=self.algorithms, audience=self.audience,
                                issuer=self.issuer, leeway=self.leeway, options=self.options)
        except Rejected:
            raise
        except jwt.ExpiredSignatureError:
            raise Rejected("token expired") from None
        except jwt.ImmatureSignatureError:
            raise Rejected("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise Rejected("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise Rejected("wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Rejected(f"missing claim {exc.claim}") from None
        except Exception:          # signature, format, and anything PyJWT trips over: a 401
            raise Rejected("invalid token") from None
        if not isinstance(claims, dict) or (self.issuer is not None and claims.get("iss") != self.issuer):
            raise Rejected("wrong issuer")
        return claims

    def _key(self, header: dict, alg: str):
        material = self.material
        if is_hmac(alg):
            return material.secret
        kid = header.get("kid")
        keys = material.keys
        if kid in keys:
            key_id = kid
        elif len(keys) == 1 and (kid is None or None in keys):
            key_id = next(iter(keys))
        else:
            raise Rejected("unknown key")
        wanted = material.key_algorithms.get(key_id)
        if wanted is not None and wanted != alg:
            raise Rejected("algorithm not accepted")
        return keys[key_id]

    def forwarded(self, claims: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        """Headers carrying the configured claims; a claim that is absent, nested or not
        printable is not sent."""
        out = []
        for claim, header in self.forward:
            value = claims.get(claim)
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (str, int, float)):
                text = str(value)
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                text = ", ".join(value)
            else:
                continue
            if _PRINTABLE.fullmatch(text) and len(text) <= 1024:
                out.append((header, text.encode("ascii")))
        return out
