"""Test support for the gateway: configs written as TOML, keys and tokens made in the test.

Configs go through ``load_config`` from real TOML text, so every test also exercises the
loader's checks and the key material it loads; the listen port is then set to 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lbctl.config import load_config
from lbctl.config.model import Address, Config


def sha256_hex(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def load(tmp_path, text: str, env: dict | None = None, name: str = "lb.toml") -> Config:
    """Load ``text`` as a config file; the listener moves to an ephemeral port."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    config = load_config(path, env=env or {})
    return dataclasses.replace(config, listen=dataclasses.replace(
        config.listen, address=Address("127.0.0.1", 0)))


def pool(url: str, extra: str = "") -> str:
    return f'''
[pools.api]
{extra}
[[pools.api.backends]]
url = "{url}"
name = "a"
'''


class RsaKey:
    """An RSA key pair, with its public half as PEM and as a JWK."""

    def __init__(self) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def jwk(self, kid: str) -> dict:
        import json
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        data.update(kid=kid, use="sig")
        return data

    def token(self, claims: dict | None = None, *, alg: str = "RS256", headers=None, **extra) -> str:
        return jwt.encode(claims_with_defaults(claims, **extra), self.private, algorithm=alg,
                          headers=headers)


def claims_with_defaults(claims: dict | None = None, **extra) -> dict:
    now = int(time.time())
    out = {"sub": "alice", "aud": "api", "iss": "https://issuer.test", "exp": now + 300,
           "iat": now}
    out.update(claims or {})
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}
