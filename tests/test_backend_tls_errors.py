"""An https backend whose TLS handshake fails is explained, not just answered with a 502.

Backends are real aiohttp servers with certificates from trustme: a self-signed one (the CA's
own certificate), one for another name, and a good one. ``lbctl serve`` runs as a real
process with its JSON event log; ``lbctl check`` through click's runner.
"""

from __future__ import annotations

import asyncio
import json
import ssl

import aiohttp
import pytest
import trustme
from click.testing import CliRunner

from lbctl.cli import main

SELF_SIGNED = "TLS handshake failed: certificate verify failed: self-signed certificate"


@pytest.fixture
def ca():
    return trustme.CA()


async def https_backend(backends, name: str, cert_pem, key_pem, tmp_path) -> int:
    """A backend answering its name on TLS with the given certificate (chain) and key."""
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return (await backends.start(name, ssl_context=context)).port


async def self_signed(backends, ca, tmp_path):
    return await https_backend(backends, "selfsigned", ca.cert_pem.bytes(),
                               ca.private_key_pem.bytes(), tmp_path)


async def good(backends, ca, tmp_path, name="good", host="127.0.0.1"):
    leaf = ca.issue_cert(host)
    return await https_backend(backends, name, b"".join(p.bytes() for p in leaf.cert_chain_pems),
                               leaf.private_key_pem.bytes(), tmp_path)


def tls_config(tmp_path, pool_lines: list[str], backends: list[tuple[str, int]],
                 listen: int = 0, admin: int = 0, health: str | None = None) -> str:
    lines = []
    if listen:
        lines += ["[listen]", f'address = "127.0.0.1:{listen}"']
    if admin:
        lines += ["[admin]", f'address = "127.0.0.1:{admin}"']
    lines += ["[[routes]]", 'pool = "api"', "[pools.api]", "retries = 0", *pool_lines]
    if health:
        lines += ["[pools.api.health]", health]
    for name, port in backends:
        lines += ["[[pools.api.backends]]", f'url = "https://127.0.0.1:{port}"', f'name = "{name}"']
    path = tmp_path / "lb.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def test_a_failed_handshake_is_logged_once_per_backend_and_cause_and_shown_in_stats(
        backends, ca, tmp_path, free_port, serve_process):
    bad = await self_signed(backends, ca, tmp_path)
    other = await good(backends, ca, tmp_path, "other", host="other.example")
    port, admin = free_port(), free_port()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # "other" is verified against the right CA but its certificate names another host.
    config = tls_config(tmp_path, [f'ca = "{ca_file}"', 'algorithm = "round_robin"'],
                        [("bad", bad), ("other", other)], listen=port, admin=admin)
    # The self-signed backend is verified against a CA that is not its own (per-backend ca).
    unrelated = trustme.CA()
    unrelated.cert_pem.write_to_path(str(tmp_path / "unrelated.pem"))
    text = open(config).read().replace(
        f'url = "https://127.0.0.1:{bad}"\nname = "bad"',
        f'url = "https://127.0.0.1:{bad}"\nname = "bad"\nca = "{tmp_path / "unrelated.pem"}"')
    open(config, "w").write(text)

    proc = await serve_process("serve", "--log-format", "json", config)
    await proc.wait_for_log("listening on")
    statuses = []
    async with aiohttp.ClientSession() as session:
        for _ in range(6):
            async with session.get(f"http://127.0.0.1:{port}/x") as resp:
                statuses.append(resp.status)
        async with session.get(f"http://127.0.0.1:{admin}/stats") as resp:
            stats = await resp.json()
    assert statuses == [502] * 6
    await proc.wait_for_log("backend other: cannot connect")
    events = [json.loads(line) for line in proc.lines if line.startswith("{")]
    errors = [e for e in events if e.get("event") == "backend_error"]
    # Six failures, two backends with one cause each: two lines.
    assert sorted((e["pool"], e["backend"], e["reason"]) for e in errors) == [
        ("api", "bad", SELF_SIGNED),
        ("api", "other", "TLS handshake failed: certificate verify failed: IP address "
                         "mismatch, certificate is not valid for '127.0.0.1'."),
    ]
    assert all(e["level"] == "warning" for e in errors)
    backends_doc = {b["name"]: b for b in stats["pools"][0]["backends"]}
    assert backends_doc["bad"]["last_error"] == SELF_SIGNED
    assert backends_doc["other"]["last_error"].startswith(
        "TLS handshake failed: certificate verify failed: IP address mismatch")
    assert backends_doc["bad"]["connect_errors"] == 3


async def test_last_error_clears_once_a_connect_succeeds(backends, ca, tmp_path, free_port,
                                                        serve_process):
    """Fixing the backend's certificate (here: trusting its CA on reload) clears the error."""
    ok = await good(backends, ca, tmp_path)
    port, admin = free_port(), free_port()
    config = tls_config(tmp_path, [], [("api-1", ok)], listen=port, admin=admin)
    proc = await serve_process("serve", "--log-format", "json", config)
    await proc.wait_for_log("listening on")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/") as resp:
            assert resp.status == 502
        async with session.get(f"http://127.0.0.1:{admin}/stats") as resp:
            doc = (await resp.json())["pools"][0]["backends"][0]
        assert doc["last_error"] == ("TLS handshake failed: certificate verify failed: "
                                     "unable to get local issuer certificate")
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        text = open(config).read().replace(
            "retries = 0", f'retries = 0\nca = "{tmp_path / "ca.pem"}"')
        open(config, "w").write(text)
        mark = len(proc.lines)
        proc.proc.send_signal(1)                  # SIGHUP
        await proc.wait_for_log("reloaded", start=mark)
        async with session.get(f"http://127.0.0.1:{port}/") as resp:
            assert resp.status == 200 and await resp.text() == "good"
        async with session.get(f"http://127.0.0.1:{admin}/stats") as resp:
            doc = (await resp.json())["pools"][0]["backends"][0]
        assert doc["last_error"] is None


async def check(*args: str):
    result = await asyncio.to_thread(CliRunner().invoke, main, ["check", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


async def test_check_without_health_does_the_tls_handshake(backends, ca, tmp_path):
    bad = await self_signed(backends, ca, tmp_path)
    config = tls_config(tmp_path, [], [("bad", bad)])
    result = await check(config, "--json")
    doc = json.loads(result.stdout)
    assert result.exit_code == 2 and doc["status"] == "CRITICAL"
    assert doc["pools"][0]["backends"][0]["error"] == SELF_SIGNED


async def test_check_trusts_what_the_proxy_trusts(backends, ca, tmp_path):
    ok = await good(backends, ca, tmp_path)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    config = tls_config(tmp_path, [f'ca = "{tmp_path / "ca.pem"}"'], [("ok", ok)])
    result = await check(config, "--json")
    assert result.exit_code == 0, result.stdout
    # And with [health] too: the probe is verified against the pool's ca, not the system's.
    config = tls_config(tmp_path, [f'ca = "{tmp_path / "ca.pem"}"'], [("ok", ok)],
                        health='path = "/healthz"')
    result = await check(config, "--json")
    assert result.exit_code == 0, result.stdout
    doc = json.loads(result.stdout)
    assert doc["pools"][0]["backends"][0]["status"] == 200


async def test_health_probe_of_an_https_backend_says_why_it_failed(backends, ca, tmp_path):
    bad = await self_signed(backends, ca, tmp_path)
    config = tls_config(tmp_path, [], [("bad", bad)], health='path = "/healthz"')
    result = await check(config, "--json")
    assert json.loads(result.stdout)["pools"][0]["backends"][0]["error"] == SELF_SIGNED


async def test_a_discovered_https_backend_is_verified_under_the_name_it_was_found_by(
        backends, ca, tmp_path, free_port, serve_process):
    """DNS discovery gives an address; its certificate names the DNS name. lbctl check, the
    health probes and the proxy all verify that name (as SNI), not the address."""
    from tests.dns_support import DnsServer
    port = await good(backends, ca, tmp_path, "found", host="api.test")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    listen = free_port()
    with DnsServer() as zone:
        zone.set_a("api.test", ["127.0.0.1"])
        config = tmp_path / "lb.toml"
        config.write_text(
            f'[listen]\naddress = "127.0.0.1:{listen}"\n[[routes]]\npool = "api"\n'
            f'[pools.api]\nca = "{tmp_path / "ca.pem"}"\n'
            f'[pools.api.discovery]\ndns = "api.test:{port}"\nresolver = "{zone.address}"\n'
            'scheme = "https"\n'
            '[pools.api.health]\npath = "/healthz"\ninterval = "200ms"\ninitial = "down"\n'
            'rise = 1\n')
        result = await check(str(config), "--json")
        assert result.exit_code == 0, result.stdout
        [found] = json.loads(result.stdout)["pools"][0]["backends"]
        assert (found["ok"], found["status"], found["error"]) == (True, 200, None)

        proc = await serve_process("serve", "--log-format", "json", str(config))
        await proc.wait_for_log('"event": "backend_state".*"state": "up"')   # a verified probe
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{listen}/") as resp:
                assert resp.status == 200 and await resp.text() == "found"
