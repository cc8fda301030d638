"""``lbctl check`` reports the shared store as one more line: OK when it answers, WARNING
when it does not (limits fall back), CRITICAL when on_error = "closed" (limited routes 503)."""

from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner

from lbctl.cli import main
from tests.redis_support import PASSWORD
from tests.support import free_port


@pytest.fixture
def listening_backend():
    """A TCP listener: enough for the check's connect probe of a pool without [health]."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def check(tmp_path, backend_port: int, store: str, *args: str, env=None):
    path = tmp_path / "lb.toml"
    path.write_text(f'''
[store]
{store}

[[routes]]
pool = "api"
rate_limit = {{ rate = 10 }}

[pools.api]
[[pools.api.backends]]
url = "http://127.0.0.1:{backend_port}"
''')
    return CliRunner().invoke(main, ["check", str(path), *args], env=env or {})


def test_store_up_is_ok(tmp_path, listening_backend, redis_server):
    result = check(tmp_path, listening_backend,
                   f'backend = "redis"\nurl = "{redis_server.bare_url}"\npassword_env = "PW"',
                   env={"PW": PASSWORD})
    assert result.exit_code == 0, result.output
    first, *rest = result.output.splitlines()
    assert first.startswith("LBCTL OK - api 1/1 up, store up | ") and "store_up=1;;;0;1" in first
    assert rest[-1].startswith(f"store {redis_server.bare_url}: up (")
    assert PASSWORD not in result.output


@pytest.mark.parametrize("on_error, code, status", [("local", 1, "WARNING"), ("open", 1, "WARNING"),
                                                    ("closed", 2, "CRITICAL")])
def test_store_down(tmp_path, listening_backend, on_error, code, status):
    url = f"redis://127.0.0.1:{free_port()}/0"          # nothing listens there
    result = check(tmp_path, listening_backend,
                   f'backend = "redis"\nurl = "{url}"\non_error = "{on_error}"')
    assert result.exit_code == code, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"LBCTL {status} - api 1/1 up, store down | ")
    assert "store_up=0;;;0;1 store_latency=U" in lines[0]
    assert lines[-1].startswith(f"{status}: store {url}: down (")
    assert f'on_error = "{on_error}"' in lines[-1]
    doc = json.loads(check(tmp_path, listening_backend,
                           f'backend = "redis"\nurl = "{url}"\non_error = "{on_error}"',
                           "--json").output)
    assert doc["status"] == status and doc["store"]["ok"] is False
    assert doc["store"]["url"] == url and doc["store"]["error"]


def test_local_store_adds_no_line(tmp_path, listening_backend):
    result = check(tmp_path, listening_backend, 'backend = "local"')
    assert result.exit_code == 0 and "store" not in result.output
    assert "store" not in json.loads(check(tmp_path, listening_backend, 'backend = "local"',
                                           "--json").output)
