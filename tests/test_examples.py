"""The configs in ``examples/`` are valid, commented, and show what their names promise.

Each one is checked by the installed ``lbctl validate`` in a real process, as a user would
run it. The TLS example needs a certificate pair beside it; the test makes one with trustme
in a temporary copy, as its comment tells a user to do with openssl.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import trustme

from lbctl.config import load_config
from tests.process import ENV, LBCTL

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.toml"))
NEEDS_CERTS = {"tls-termination.toml"}


def placed(path: Path, tmp_path: Path) -> Path:
    """The example where it can be validated: in place, or in a copy beside new certs."""
    if path.name not in NEEDS_CERTS:
        return path
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    shutil.copy(path, tmp_path / path.name)
    return tmp_path / path.name


def test_every_promised_example_is_there():
    assert {p.name for p in CONFIGS} >= {
        "api-gateway.toml", "blue-green.toml", "sticky-sessions.toml",
        "health-checked-backups.toml", "tls-termination.toml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_validates_in_a_real_process(path, tmp_path):
    target = placed(path, tmp_path)
    proc = subprocess.run([LBCTL, "validate", str(target)], capture_output=True, text=True,
                          env=ENV, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{target}: OK (")
    assert proc.stderr == ""


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_is_commented(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ")                  # says what it is, first
    comments = [line for line in lines if "#" in line]
    assert len(comments) >= 8
    assert f"lbctl validate examples/{path.name}" in path.read_text() or path.name in NEEDS_CERTS


def test_each_example_shows_what_its_name_promises(tmp_path):
    def load(name: str):
        return load_config(str(placed(EXAMPLES / name, tmp_path)))

    gateway = load("api-gateway.toml")
    auths = {r.auth.type for r in gateway.routes if r.auth is not None}
    assert auths == {"jwt", "api_key"}
    assert all(r.rate_limit is not None for r in gateway.routes if r.auth is not None
               and r.auth.type == "api_key")
    assert any(r.rate_limit is not None and r.rate_limit.key == "consumer"
               and r.auth is not None and r.auth.type == "jwt" for r in gateway.routes)

    blue_green = load("blue-green.toml").pools["app"]
    assert blue_green.algorithm == "weighted"
    assert sorted(b.weight for b in blue_green.backends) == [1.0, 9.0]

    sticky = load("sticky-sessions.toml").pools["app"]
    assert sticky.algorithm == "consistent_hash" and sticky.hash_key.startswith("cookie:")

    backups = load("health-checked-backups.toml").pools["web"]
    assert backups.health is not None and backups.outlier is not None
    assert [b.backup for b in backups.backends].count(True) == 1

    tls = load("tls-termination.toml")
    assert tls.listen.tls is not None
    assert any(b.scheme == "https" for p in tls.pools.values() for b in p.backends)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_the_commands_in_an_examples_comments_parse(path):
    from tests.test_readme import lbctl_commands, parse
    lines = [line.lstrip("# ") for line in path.read_text().splitlines()
             if line.startswith("#")]
    for command in lbctl_commands(lines):
        parse(command)
