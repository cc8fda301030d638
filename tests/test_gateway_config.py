"""Gateway configuration: every bad case is a validation problem with its key path."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner

from lbctl.cli import main
from lbctl.config import ConfigError, load_config
from lbctl.config.effective import effective_toml
from tests.gateway_support import RsaKey, sha256_hex

REPO = Path(__file__).resolve().parent.parent
POOL = '''
[pools.api]

[[pools.api.backends]]
url = "http://127.0.0.1:9001"
'''
SECRET = "x" * 40


def write(tmp_path: Path, text: str, name: str = "lb.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str, env=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=env or {})
    prefix = f"{tmp_path / 'lb.toml'}: "
    assert all(str(p).startswith(prefix) for p in info.value.problems)
    return [str(p)[len(prefix):] for p in info.value.problems]


def problem(tmp_path: Path, text: str, env=None) -> str:
    found = problems(tmp_path, text, env)
    assert len(found) == 1, found
    return found[0]


def route(options: str) -> str:
    return f'[[routes]]\npool = "api"\n{options}\n' + POOL


def jwt_route(auth: str, extra: str = "") -> str:
    return route(f"auth = {{ type = \"jwt\", {auth} }}\n{extra}")


# ---- keys ----

@pytest.mark.parametrize("value", [
    "abc", "sha256:abc", "md5:" + "0" * 64, "sha256:" + "g" * 64, "sha256:" + "0" * 63,
    "SHA256:" + "0" * 64,
])
def test_key_hash_in_the_wrong_form(tmp_path, value):
    message = problem(tmp_path, f'[keys.team-a]\nhash = "{value}"\n' + route(""))
    assert message.startswith('keys.team-a.hash: expected "sha256:" followed by 64 hex digits')


def test_key_hash_without_the_prefix_gets_a_hint(tmp_path):
    message = problem(tmp_path, f'[keys.a]\nhash = "{"ab" * 32}"\n' + route(""))
    assert 'write "sha256:" and the hex digest' in message


def test_key_env_missing_or_empty(tmp_path):
    text = '[keys.team-a]\nenv = "TEAM_A_KEY"\n' + route("")
    assert problem(tmp_path, text) == ("keys.team-a.env: expected the environment variable "
                                       "TEAM_A_KEY to be set to the key, found it unset")
    assert problem(tmp_path, text, {"TEAM_A_KEY": ""}).endswith("found it empty")
    load_config(write(tmp_path, text), env={"TEAM_A_KEY": "k" * 30})


def test_key_needs_exactly_one_of_hash_and_env(tmp_path):
    both = f'[keys.a]\nhash = "{sha256_hex("k")}"\nenv = "K"\n' + route("")
    assert problem(tmp_path, both, {"K": "k"}).startswith("keys.a: expected exactly one of hash")
    assert problem(tmp_path, "[keys.a]\n" + route("")).endswith("found neither")


def test_the_same_key_under_two_names(tmp_path):
    text = f'[keys.a]\nhash = "{sha256_hex("k")}"\n[keys.b]\nenv = "K"\n' + route("")
    assert problem(tmp_path, text, {"K": "k"}) == \
        "keys.b: expected a key different from every other, found the same key as keys.a"


def test_unknown_key_table_entry(tmp_path):
    assert problem(tmp_path, '[keys.a]\nhsah = "x"\n' + route("")) == \
        "keys.a.hsah: unknown key; did you mean 'hash'?"


# ---- auth, allow, rate_limit ----

def test_unknown_key_name_in_allow_consumers(tmp_path):
    text = f'[keys.team-a]\nhash = "{sha256_hex("k")}"\n' + route(
        'auth = { type = "api_key" }\nallow = { consumers = ["team-b"] }')
    assert problem(tmp_path, text) == ('routes[0].allow.consumers: expected names of keys defined '
                                       'under [keys] (team-a), found "team-b"; did you mean \'team-a\'?')


def test_consumers_need_api_key_auth_and_claims_need_jwt(tmp_path):
    assert problem(tmp_path, route('allow = { consumers = ["a"] }')).startswith(
        'routes[0].allow.consumers: expected auth = { type = "api_key", ... } on this route')
    assert problem(tmp_path, route('auth = { type = "api_key" }\nallow = { claims = { role = "x" } }')) \
        .startswith('routes[0].allow.claims: expected auth = { type = "jwt", ... }')


def test_auth_type_is_required_and_checked(tmp_path):
    assert problem(tmp_path, route('auth = { header = "X-Key" }')) == \
        'routes[0].auth.type: missing; expected one of "api_key", "jwt"'
    assert problem(tmp_path, route('auth = { type = "apikey" }')).endswith("did you mean 'api_key'?")


def test_keys_of_the_other_auth_type(tmp_path):
    assert problem(tmp_path, route('auth = { type = "api_key", leeway = "1s" }')) == \
        'routes[0].auth.leeway: expected no leeway with type = "api_key", found "1s"'


def test_jwt_route_with_no_algorithms(tmp_path):
    assert problem(tmp_path, jwt_route('secret_env = "S"'), {"S": SECRET}).startswith(
        'routes[0].auth.algorithms: missing; expected the algorithms tokens may be signed with')


@pytest.mark.parametrize("algorithms", ['["none"]', "[]", '["RS256", "RS256"]', '"RS256"'])
def test_jwt_algorithms_none_or_empty(tmp_path, algorithms):
    message = problem(tmp_path, jwt_route(f'algorithms = {algorithms}, secret_env = "S"'),
                      {"S": SECRET})
    assert message.startswith("routes[0].auth.algorithms: expected a non-empty array of distinct values")


def test_leeway_over_60s(tmp_path):
    text = jwt_route('algorithms = ["HS256"], secret_env = "S", leeway = "61s"')
    assert problem(tmp_path, text, {"S": SECRET}) == \
        'routes[0].auth.leeway: expected at most 1m, found "61s"'
    load_config(write(tmp_path, text.replace('"61s"', '"60s"')), env={"S": SECRET})


def test_hmac_secret_missing_or_short(tmp_path):
    text = jwt_route('algorithms = ["HS256"], secret_env = "S"')
    assert problem(tmp_path, text) == ("routes[0].auth.secret_env: expected the environment variable "
                                       "S to be set (it holds the HMAC secret), found it unset")
    assert problem(tmp_path, text, {"S": "short"}) == \
        "routes[0].auth.secret_env: expected the HMAC secret in S to be at least 32 bytes, found 5"


def test_mixing_hmac_and_public_key_algorithms(tmp_path):
    (tmp_path / "pub.pem").write_bytes(RsaKey().public_pem)
    message = problem(tmp_path, jwt_route('algorithms = ["RS256", "HS256"], public_key = "pub.pem"'))
    assert message.startswith("routes[0].auth.algorithms: expected only public-key algorithms")
    assert "algorithm confusion" in message
    assert "HS256/HS384/HS512 with secret_env" in problem(
        tmp_path, jwt_route('algorithms = ["RS256"], secret_env = "S"'), {"S": SECRET})


def test_jwt_key_source_none_or_two(tmp_path):
    (tmp_path / "pub.pem").write_bytes(RsaKey().public_pem)
    assert problem(tmp_path, jwt_route('algorithms = ["RS256"]')) == \
        ("routes[0].auth: expected exactly one of secret_env (HS* algorithms), public_key or jwks "
         "(a file), found none")
    assert problem(tmp_path, jwt_route('algorithms = ["RS256"], public_key = "pub.pem", '
                                       'jwks = "k.json"')).endswith("found public_key and jwks")


def test_public_key_file_missing_or_not_a_key(tmp_path):
    text = jwt_route('algorithms = ["RS256"], public_key = "pub.pem"')
    assert problem(tmp_path, text) == \
        f"routes[0].auth.public_key: cannot read {tmp_path / 'pub.pem'}: the file does not exist"
    (tmp_path / "pub.pem").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    assert problem(tmp_path, text).startswith(
        f"routes[0].auth.public_key: expected a PEM public key or certificate in {tmp_path / 'pub.pem'}")


def test_jwks_file_problems(tmp_path):
    text = jwt_route('algorithms = ["RS256"], jwks = "keys.json"')
    (tmp_path / "keys.json").write_text("[]")
    assert problem(tmp_path, text).startswith('routes[0].auth.jwks: expected a JWKS file')
    (tmp_path / "keys.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
    assert "symmetric (oct) key" in problem(tmp_path, text)
    (tmp_path / "keys.json").write_text(json.dumps({"keys": [{"kty": "RSA", "n": "x"}]}))
    assert problem(tmp_path, text).startswith("routes[0].auth.jwks: key 0 in")


def test_rate_limit_problems(tmp_path):
    assert problem(tmp_path, route('rate_limit = { rate = 5, key = "consumer" }')).startswith(
        'routes[0].rate_limit.key: expected "ip" or "header:NAME" on a route without auth')
    assert problem(tmp_path, route('rate_limit = { burst = 5 }')) == \
        "routes[0].rate_limit.rate: missing; expected a number > 0"
    assert problem(tmp_path, route('rate_limit = { rate = 1, key = "cookie:x" }')).startswith(
        'routes[0].rate_limit.key: expected "ip", "consumer" or "header:NAME"')
    assert problem(tmp_path, route('rate_limit = { rate = 1, burst = 0 }')) == \
        "routes[0].rate_limit.burst: expected an integer >= 1, found 0"


def test_problems_name_the_right_route_index(tmp_path):
    text = ('[[routes]]\npool = "nope"\n[[routes]]\n[[routes]]\npool = "api"\n'
            'rate_limit = { rate = 1, key = "consumer" }\n' + POOL)
    found = problems(tmp_path, text)
    assert any(p.startswith("routes[2].rate_limit.key:") for p in found), found


# ---- listen ----

def test_trusted_proxies_must_be_networks(tmp_path):
    assert problem(tmp_path, '[listen]\ntrusted_proxies = ["10.0.0.0/8", "ten"]\n' + route("")) \
        .startswith("listen.trusted_proxies: expected an array of networks")
    config = load_config(write(tmp_path, '[listen]\ntrusted_proxies = ["10.1.2.3/8", "::1"]\n'
                               + route("")), env={})
    assert config.listen.trusted_proxies == ("10.0.0.0/8", "::1/128")


def test_tls_certificate_that_does_not_load(tmp_path):
    ca = trustme.CA()
    leaf, other = ca.issue_cert("localhost"), ca.issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    other.private_key_pem.write_to_path(str(tmp_path / "other-key.pem"))
    (tmp_path / "garbage.pem").write_text("garbage")
    tls = '[listen]\ntls = {{ cert = "{}", key = "{}" }}\n'
    assert problem(tmp_path, tls.format("missing.pem", "other-key.pem") + route("")) == \
        f"listen.tls.cert: cannot read {tmp_path / 'missing.pem'}: the file does not exist"
    assert problem(tmp_path, tls.format("cert.pem", "missing.pem") + route("")).startswith(
        "listen.tls.key: cannot read")
    mismatch = problem(tmp_path, tls.format("cert.pem", "other-key.pem") + route(""))
    assert mismatch.startswith("listen.tls.cert: the certificate and key do not load as a pair")
    assert problem(tmp_path, tls.format("garbage.pem", "other-key.pem") + route("")) \
        .startswith("listen.tls.cert: the certificate and key do not load as a pair")
    assert problem(tmp_path, '[listen]\ntls = { cert = "cert.pem" }\n' + route("")) == \
        "listen.tls.key: missing; expected a path to a PEM private key file"


# ---- upstream TLS ----

def test_backend_ca_problems(tmp_path):
    (tmp_path / "bad.pem").write_text("not a CA")
    text = '[[routes]]\npool = "api"\n[pools.api]\n{pool}\n[[pools.api.backends]]\nurl = "{url}"\n{backend}\n'
    assert problem(tmp_path, text.format(pool="", url="http://h:1", backend='ca = "bad.pem"')) == \
        "pools.api.backends[0].ca: expected no ca for an http:// backend (it only applies to https://)"
    assert problem(tmp_path, text.format(pool="", url="https://h", backend='ca = "bad.pem"')) \
        .startswith(f"pools.api.backends[0].ca: expected a PEM CA bundle in {tmp_path / 'bad.pem'}")
    assert problem(tmp_path, text.format(pool='ca = "none.pem"', url="https://h", backend="")) == \
        f"pools.api.ca: cannot read {tmp_path / 'none.pem'}: the file does not exist"
    assert problem(tmp_path, text.format(pool="tls_insecure_skip_verify = true", url="https://h",
                                         backend='ca = "bad.pem"')).startswith(
        "pools.api.backends[0].ca: expected no ca with tls_insecure_skip_verify = true")


# ---- lbctl validate, --effective, the sample ----

def test_lbctl_validate_reports_every_gateway_problem(tmp_path):
    text = ('[listen]\ntls = { cert = "c.pem", key = "k.pem" }\n'
            '[keys.a]\nhash = "sha256:abc"\n[keys.b]\nenv = "LBCTL_TEST_UNSET_KEY"\n'
            + jwt_route('leeway = "2m"', 'allow = { claims = { role = "admin" } }'))
    result = CliRunner().invoke(main, ["validate", str(write(tmp_path, text))])
    assert result.exit_code == 2
    for where in ("listen.tls.cert", "keys.a.hash", "keys.b.env", "routes[0].auth.leeway",
                  "routes[0].auth.algorithms"):
        assert f": {where}: " in result.stderr, where
    assert "invalid (5 problems)" in result.stderr


def test_effective_round_trips_the_gateway_keys(tmp_path):
    key = RsaKey()
    (tmp_path / "pub.pem").write_bytes(key.public_pem)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    leaf = ca.issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    env = {"TEAM_B": "b" * 32}
    text = f'''
[listen]
trusted_proxies = ["10.0.0.0/8"]
client_ip_header = "Forwarded"
tls = {{ cert = "cert.pem", key = "key.pem", min_version = "1.3" }}

[keys.team-a]
hash = "{sha256_hex("a")}"

[keys.team-b]
env = "TEAM_B"

[[routes]]
path_prefix = "/keys"
pool = "api"
auth = {{ type = "api_key", header = "X-Key" }}
allow = {{ consumers = ["team-a"], methods = ["get"], ips = ["192.0.2.0/24"] }}
rate_limit = {{ rate = 100, burst = 20, per = "1m", key = "consumer" }}

[[routes]]
pool = "api"
auth = {{ type = "jwt", algorithms = ["RS256", "ES256"], public_key = "pub.pem", audience = "api", issuer = "me", leeway = "30s", forward_claims = {{ sub = "X-User" }} }}
allow = {{ claims = {{ role = ["admin", "ops"] }} }}
rate_limit = {{ rate = 5, key = "header:X-Tenant" }}

[pools.api]
ca = "ca.pem"

[[pools.api.backends]]
url = "https://127.0.0.1:9001"
'''
    config = load_config(write(tmp_path, text), env=env)
    assert config.routes[0].allow.methods == ("GET",)
    assert config.pools["api"].ca == str(tmp_path / "ca.pem")     # absolute from the file's dir
    assert config.routes[1].auth.material is not None
    effective = effective_toml(config)
    again = load_config(write(tmp_path, effective, "effective.toml"), env=env)
    assert dataclasses.replace(again, path=config.path) == config
    assert "[keys.team-b]\nenv = \"TEAM_B\"" in effective
    assert "b" * 32 not in effective


def test_sample_and_packaged_demo_sample_are_identical():
    assert (REPO / "sample.toml").read_text() == (REPO / "lbctl/demo/sample.toml").read_text()


def test_the_samples_commented_gateway_examples_are_valid_when_uncommented(tmp_path):
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    (tmp_path / "jwt.pem").write_bytes(RsaKey().public_pem)
    text = (REPO / "sample.toml").read_text()
    wanted = ("# trusted_proxies", "# client_ip_header", "# tls = ", "# [keys.", "# hash = ",
              "# env = \"TEAM_B_KEY\"", "# auth = { type = \"api_key\"", "# allow = ", "# rate_limit = ")
    lines = [line[2:] if line.startswith(wanted) else line for line in text.splitlines()]
    api_keys = "\n".join(lines).replace("<64 hex digits>", "0" * 64)
    config = load_config(write(tmp_path, api_keys, "keys.toml"), env={"TEAM_B_KEY": "b" * 32})
    assert config.routes[0].auth.type == "api_key" and config.listen.tls is not None
    jwt_text = api_keys.replace('auth = { type = "api_key", header = "X-API-Key" }', "") \
        .replace('# auth = { type = "jwt"', 'auth = { type = "jwt"') \
        .replace('allow = { consumers = ["team-a"], ', "allow = { ")
    config = load_config(write(tmp_path, jwt_text, "jwt.toml"), env={"TEAM_B_KEY": "b" * 32})
    assert config.routes[0].auth.type == "jwt"


@pytest.mark.parametrize("header", ["Content-Length", "transfer-encoding", "Host", "X-Forwarded-For",
                                    "X-Consumer", "Authorization"])
def test_forward_claims_cannot_name_a_header_the_proxy_sets(tmp_path, header):
    message = problem(tmp_path, jwt_route(f'algorithms = ["HS256"], secret_env = "S", '
                                          f'forward_claims = {{ sub = "{header}" }}'), {"S": SECRET})
    assert message.startswith("routes[0].auth.forward_claims: expected a table of claim names")
    assert f"{header} is set by the proxy itself" in message


def test_an_encrypted_tls_key_is_a_problem_not_a_password_prompt(tmp_path):
    from cryptography.hazmat.primitives import serialization
    leaf = trustme.CA().issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    message = problem(tmp_path, '[listen]\ntls = { cert = "cert.pem", key = "key.pem" }\n' + route(""))
    assert message.startswith("listen.tls.cert: the certificate and key do not load as a pair")
    assert "not be encrypted" in message
