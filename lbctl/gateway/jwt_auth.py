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

import re
from typing import Any

import jwt

from lbctl.config.keys import Material, is_hmac

MAX_TOKEN = 8 * 1024            # larger tokens are refused before any parsing
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


class Rejected(Exception):
    """A token that does not pass; ``str()`` is a short reason safe to send to the client."""


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
