"""JWTs through the proxy, and the attack list: every bad token is a 401 with
WWW-Authenticate, never a 500 and never forwarded. Keys and tokens are made here."""

from __future__ import annotations

import base64
import json
import time

import aiohttp
import jwt
import pytest

from tests.gateway_support import RsaKey, claims_with_defaults, load, pool

SECRET = "an-hmac-secret-that-is-at-least-32-bytes-long!"


@pytest.fixture(scope="module")
def rsa_key():
    return RsaKey()


@pytest.fixture(scope="module")
def other_key():
    return RsaKey()


@pytest.fixture
async def setup(backends, tmp_path, rsa_key, other_key):
    a = await backends.start("a")
    (tmp_path / "pub.pem").write_bytes(rsa_key.public_pem)
    (tmp_path / "jwks.json").write_text(json.dumps(
        {"keys": [rsa_key.jwk("k1"), other_key.jwk("k2")]}))
    config = load(tmp_path, '''
[[routes]]
path_prefix = "/hmac"
pool = "api"
auth = { type = "jwt", algorithms = ["HS256"], secret_env = "JWT_SECRET", audience = "api" }

[[routes]]
path_prefix = "/jwks"
pool = "api"
auth = { type = "jwt", algorithms = ["RS256"], jwks = "jwks.json", audience = "api" }

[[routes]]
path_prefix = "/admin"
pool = "api"
auth = { type = "jwt", algorithms = ["RS256"], public_key = "pub.pem", audience = "api", issuer = "https://issuer.test" }
allow = { claims = { role = ["admin"] } }

[[routes]]
pool = "api"
auth = { type = "jwt", algorithms = ["RS256"], public_key = "pub.pem", audience = "api", issuer = "https://issuer.test", leeway = "30s", forward_claims = { sub = "X-User", role = "X-Role" } }
''' + pool(a.url), env={"JWT_SECRET": SECRET})
    proxy = await backends.proxy(config)
    return proxy.address[1], a


async def call(port: int, path: str = "/", token: str | None = None, headers=None):
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as r:
            return r.status, dict(r.headers), await r.text()


async def test_valid_token_passes_and_claims_are_forwarded(setup, rsa_key):
    port, a = setup
    status, _, body = await call(port, "/x", rsa_key.token(role="reader"),
                                 headers={"X-User": "mallory", "X-Role": "admin"})
    assert (status, body) == (200, "a")
    seen = a.seen[-1].headers
    assert seen["X-User"] == "alice" and seen["X-Role"] == "reader"   # client copies dropped
    assert "Authorization" not in seen


async def test_missing_token_is_401_with_a_bearer_challenge(setup):
    port, a = setup
    status, headers, _ = await call(port, "/x")
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="lbctl"'
    assert a.seen == []


def _b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def attacks(rsa_key: RsaKey, other_key: RsaKey) -> dict[str, str]:
    now = int(time.time())
    claims = claims_with_defaults()
    return {
        "alg none": _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(claims) + ".",
        "alg None mixed case": _b64({"alg": "None"}) + "." + _b64(claims) + ".",
        # Algorithm confusion: HS256 "signed" with the RSA public key as the HMAC secret.
        "hs256 with the public key": _b64({"alg": "HS256", "typ": "JWT"}) + "." + _b64(claims)
        + "." + _hmac_sig(rsa_key.public_pem, claims),
        "expired": rsa_key.token(exp=now - 120),                     # beyond the 30 s leeway
        "not yet valid": rsa_key.token(nbf=now + 600),
        "wrong audience": rsa_key.token(aud="other-api"),
        "audience prefix": rsa_key.token(aud="ap"),
        "wrong issuer": rsa_key.token(iss="https://issuer.test.evil"),
        "issuer substring": rsa_key.token(iss="https://issuer.tes"),
        "no exp": rsa_key.token(exp=None),
        "no aud": rsa_key.token(aud=None),
        "signed by another key": other_key.token(),
        "tampered payload": _tamper(rsa_key.token()),
        "oversized": rsa_key.token(pad="x" * 9000),
        "garbage": "not.a.jwt",
        "two segments": "abc.def",
        "bad base64": "!!!." + _b64(claims) + ".sig",
        "header not json": _b64(b"\xff\xfe") + "." + _b64(claims) + ".sig",
        "exp not a number": rsa_key.token(exp="tomorrow"),
        "ps256 not accepted": rsa_key.token(alg="PS256"),
        "huge kid": rsa_key.token(headers={"kid": "k" * 7000}),    # over 8 KiB in the header
    }


def _hmac_sig(secret: bytes, claims: dict) -> str:
    import hashlib
    import hmac
    signing = (_b64({"alg": "HS256", "typ": "JWT"}) + "." + _b64(claims)).encode()
    return base64.urlsafe_b64encode(hmac.new(secret, signing, hashlib.sha256).digest()) \
        .rstrip(b"=").decode()


def _tamper(token: str) -> str:
    head, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data["sub"] = "admin"
    return f"{head}.{_b64(data)}.{sig}"


ATTACK_NAMES = ["alg none", "alg None mixed case", "hs256 with the public key", "expired",
                "not yet valid", "wrong audience", "audience prefix", "wrong issuer",
                "issuer substring", "no exp", "no aud", "signed by another key",
                "tampered payload", "oversized", "garbage", "two segments", "bad base64",
                "header not json", "exp not a number", "ps256 not accepted", "huge kid"]


@pytest.mark.parametrize("name", ATTACK_NAMES)
async def test_attack_is_401_invalid_token_and_never_forwarded(setup, rsa_key, other_key, name):
    port, a = setup
    token = attacks(rsa_key, other_key)[name]
    status, headers, body = await call(port, "/x", token)
    assert status == 401, (name, body)
    assert headers["WWW-Authenticate"].startswith('Bearer realm="lbctl", error="invalid_token"')
    assert a.seen == []


async def test_the_attack_list_is_the_one_tested(rsa_key, other_key):
    assert sorted(attacks(rsa_key, other_key)) == sorted(ATTACK_NAMES)


async def test_hs256_signed_with_the_public_key_fails_on_hmac_routes_too(setup, rsa_key):
    port, a = setup
    claims = claims_with_defaults()
    forged = _b64({"alg": "HS256"}) + "." + _b64(claims) + "." + _hmac_sig(rsa_key.public_pem, claims)
    assert (await call(port, "/hmac", forged))[0] == 401
    good = jwt.encode(claims, SECRET, algorithm="HS256")
    assert (await call(port, "/hmac", good))[0] == 200


async def test_expiry_within_the_leeway_passes(setup, rsa_key):
    port, _ = setup
    assert (await call(port, "/x", rsa_key.token(exp=int(time.time()) - 10)))[0] == 200


async def test_jwks_picks_the_key_by_kid(setup, rsa_key, other_key):
    port, _ = setup
    assert (await call(port, "/jwks", rsa_key.token(headers={"kid": "k1"})))[0] == 200
    assert (await call(port, "/jwks", other_key.token(headers={"kid": "k2"})))[0] == 200
    # Signed by k2's key but claiming k1: the signature does not verify.
    assert (await call(port, "/jwks", other_key.token(headers={"kid": "k1"})))[0] == 401
    assert (await call(port, "/jwks", rsa_key.token(headers={"kid": "k9"})))[0] == 401
    assert (await call(port, "/jwks", rsa_key.token()))[0] == 401      # no kid, two keys


async def test_claims_allow_list_is_403_when_authenticated_401_when_not(setup, rsa_key, other_key):
    port, a = setup
    assert (await call(port, "/admin", rsa_key.token(role="admin")))[0] == 200
    assert (await call(port, "/admin", rsa_key.token(role=["reader", "admin"])))[0] == 200
    status, headers, _ = await call(port, "/admin", rsa_key.token(role="reader"))
    assert status == 403 and "WWW-Authenticate" not in headers
    assert (await call(port, "/admin", rsa_key.token()))[0] == 403           # no role claim
    assert (await call(port, "/admin", other_key.token(role="admin")))[0] == 401
    assert (await call(port, "/admin"))[0] == 401


async def test_not_a_bearer_header_or_two_of_them_is_401(setup, rsa_key):
    port, a = setup
    token = rsa_key.token()
    assert (await call(port, "/x", headers={"Authorization": f"Basic {token}"}))[0] == 401
    assert (await call(port, "/x", headers={"Authorization": "Bearer "}))[0] == 401
    from tests.support import raw_exchange, split_responses
    raw = await raw_exchange(port, (f"GET /x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n"
                                    f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n").encode())
    assert split_responses(raw)[0][0] == 401
    assert a.seen == []


@pytest.mark.parametrize("name, reason", [
    ("alg none", "algorithm not accepted"),
    ("hs256 with the public key", "algorithm not accepted"),
    ("expired", "token expired"),
    ("not yet valid", "token not yet valid"),
    ("wrong audience", "wrong audience"),
    ("wrong issuer", "wrong issuer"),
    ("issuer substring", "wrong issuer"),
    ("no exp", "missing claim exp"),
    ("oversized", "token too large"),
    ("signed by another key", "invalid token"),
])
async def test_each_attack_fails_for_its_own_reason(setup, rsa_key, other_key, name, reason):
    port, _ = setup
    status, headers, body = await call(port, "/x", attacks(rsa_key, other_key)[name])
    assert status == 401
    assert f'error_description="{reason}"' in headers["WWW-Authenticate"]


async def test_a_route_without_audience_refuses_tokens_meant_for_someone(backends, tmp_path):
    a = await backends.start("a")
    config = load(tmp_path, '''
[[routes]]
pool = "api"
auth = { type = "jwt", algorithms = ["HS256"], secret_env = "S" }
''' + pool(a.url), env={"S": SECRET})
    proxy = await backends.proxy(config)
    port = proxy.address[1]
    exp = int(time.time()) + 60
    assert (await call(port, "/", jwt.encode({"exp": exp}, SECRET, algorithm="HS256")))[0] == 200
    assert (await call(port, "/", jwt.encode({"exp": exp, "aud": "x"}, SECRET, algorithm="HS256")))[0] == 401
