"""TLS: terminating with a certificate made in the test, reloading it, and verifying
https backends against a CA made in the test."""

from __future__ import annotations

import asyncio
import ssl
import warnings

import aiohttp
import pytest
import trustme
from aiohttp import web

from lbctl.gateway.tls import Terminator
from tests.gateway_support import load, pool


def write_pair(ca: trustme.CA, directory, stem: str = "server",
               key_type: trustme.KeyType = trustme.KeyType.ECDSA):
    leaf = ca.issue_cert("127.0.0.1", "localhost", key_type=key_type)
    cert, key = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    for extra in leaf.cert_chain_pems[1:]:
        with open(cert, "ab") as f:
            f.write(extra.bytes())
    return cert, key


def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def tls_config(tmp_path, url: str, cert="server.pem", key="server-key.pem", extra=""):
    return load(tmp_path, f'''
[listen]
tls = {{ cert = "{cert}", key = "{key}" }}
{extra}

[[routes]]
pool = "api"
''' + pool(url))


async def get(url: str, context, headers=None):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=context, headers=headers) as r:
            return r.status, await r.text()


async def test_tls_termination_with_a_verified_client(backends, tmp_path):
    ca = trustme.CA()
    write_pair(ca, tmp_path)
    a = await backends.start("a")
    proxy = await backends.proxy(tls_config(tmp_path, a.url))
    port = proxy.address[1]
    assert await get(f"https://127.0.0.1:{port}/x", client_ssl(ca)) == (200, "a")
    seen = a.seen[-1].headers
    assert seen["X-Forwarded-Proto"] == "https"
    # A client that does not trust the CA refuses the certificate.
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(f"https://127.0.0.1:{port}/x", ssl.create_default_context())
    # Plain HTTP on the TLS port gets nowhere.
    with pytest.raises(aiohttp.ClientError):
        await get(f"http://127.0.0.1:{port}/x", None)


async def test_tls_below_1_2_is_refused(backends, tmp_path):
    ca = trustme.CA()
    write_pair(ca, tmp_path)
    a = await backends.start("a")
    proxy = await backends.proxy(tls_config(tmp_path, a.url))
    old = client_ssl(ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)     # which is the point
        try:
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ValueError, ssl.SSLError):
            pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, OSError)):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.address[1], ssl=old)
        writer.close()
    assert a.seen == []


async def test_min_version_1_3(backends, tmp_path):
    ca = trustme.CA()
    write_pair(ca, tmp_path)
    a = await backends.start("a")
    proxy = await backends.proxy(load(
        tmp_path, '''
[listen]
tls = { cert = "server.pem", key = "server-key.pem", min_version = "1.3" }

[[routes]]
pool = "api"
''' + pool(a.url), name="lb13.toml"))
    tls12 = client_ssl(ca)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, OSError)):
        await asyncio.open_connection("127.0.0.1", proxy.address[1], ssl=tls12)
    assert await get(f"https://127.0.0.1:{proxy.address[1]}/", client_ssl(ca)) == (200, "a")


async def test_certificate_reload_new_connections_get_the_new_certificate(backends, tmp_path):
    old_ca, new_ca = trustme.CA(), trustme.CA()
    write_pair(old_ca, tmp_path)
    a = await backends.start("a")
    proxy = await backends.proxy(tls_config(tmp_path, a.url))
    url = f"https://127.0.0.1:{proxy.address[1]}/"
    assert (await get(url, client_ssl(old_ca)))[0] == 200
    # Rotate the files, then what SIGHUP does: load the config again and swap it in.
    write_pair(new_ca, tmp_path)
    proxy.reload(tls_config(tmp_path, a.url))
    assert (await get(url, client_ssl(new_ca)))[0] == 200
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(url, client_ssl(old_ca))
    assert proxy.proxy.tls.reloads == 1


def test_a_failed_reload_keeps_the_current_certificate(tmp_path):
    ca = trustme.CA()
    cert, key = write_pair(ca, tmp_path)
    terminator = Terminator(str(cert), str(key))
    current = terminator.current
    (tmp_path / "broken.pem").write_text("not a certificate")
    assert terminator.reload(str(tmp_path / "broken.pem"), str(key)) is False
    assert terminator.current is current
    assert terminator.front.minimum_version == ssl.TLSVersion.TLSv1_2


async def https_backend(backends, ca: trustme.CA, *identities: str):
    leaf = ca.issue_cert(*(identities or ("127.0.0.1",)))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)

    async def handler(request):
        return web.Response(text="secure")
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    from tests.support import TestBackend
    port = runner.addresses[0][1]
    backends.items.append(TestBackend("tls", port, runner))
    return f"https://127.0.0.1:{port}"


async def plain_get(port: int):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/") as r:
            return r.status, await r.text()


async def test_https_backend_verified_with_a_pool_ca(backends, tmp_path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    url = await https_backend(backends, ca)
    config = load(tmp_path, '[[routes]]\npool = "api"\n' + pool(url, 'ca = "ca.pem"'))
    proxy = await backends.proxy(config)
    assert await plain_get(proxy.address[1]) == (200, "secure")


async def test_https_backend_with_a_backend_ca_and_a_wrong_name_is_502(backends, tmp_path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    url = await https_backend(backends, ca, "other.example")      # not 127.0.0.1
    config = load(tmp_path, f'''
[[routes]]
pool = "api"

[pools.api]
retries = 0

[[pools.api.backends]]
url = "{url}"
ca = "ca.pem"
''')
    proxy = await backends.proxy(config)
    assert (await plain_get(proxy.address[1]))[0] == 502


async def test_https_backend_not_in_the_system_store_is_502(backends, tmp_path):
    url = await https_backend(backends, trustme.CA())
    proxy = await backends.proxy(load(tmp_path, '[[routes]]\npool = "api"\n' + pool(url, "retries = 0")))
    assert (await plain_get(proxy.address[1]))[0] == 502


async def test_insecure_skip_verify_is_explicit_and_logged(backends, tmp_path, caplog):
    url = await https_backend(backends, trustme.CA())
    with caplog.at_level("WARNING", logger="lbctl.config"):
        config = load(tmp_path, '[[routes]]\npool = "api"\n' +
                      pool(url, "tls_insecure_skip_verify = true"))
    assert "is NOT verified" in caplog.text and "pools.api.tls_insecure_skip_verify" in caplog.text
    proxy = await backends.proxy(config)
    assert await plain_get(proxy.address[1]) == (200, "secure")


async def test_lbctl_serve_reloads_the_certificate_on_sighup(backends, tmp_path, free_port,
                                                             serve_process):
    import signal

    old_ca, new_ca = trustme.CA(), trustme.CA()
    write_pair(old_ca, tmp_path)
    a = await backends.start("a")
    port = free_port()
    path = tmp_path / "lb.toml"
    path.write_text(f'[listen]\naddress = "127.0.0.1:{port}"\n'
                    f'tls = {{ cert = "server.pem", key = "server-key.pem" }}\n'
                    f'[[routes]]\npool = "api"\n' + pool(a.url))
    proc = await serve_process("serve", str(path))
    await proc.wait_for_log("listening on")
    url = f"https://127.0.0.1:{port}/"
    assert await get(url, client_ssl(old_ca)) == (200, "a")
    write_pair(new_ca, tmp_path)
    mark = len(proc.lines)
    proc.proc.send_signal(signal.SIGHUP)
    await proc.wait_for_log("TLS certificate reloaded", start=mark)
    assert await get(url, client_ssl(new_ca)) == (200, "a")
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(url, client_ssl(old_ca))
    # A key that does not match the certificate: the reload is rejected, TLS goes on.
    write_pair(old_ca, tmp_path, stem="other")
    (tmp_path / "server-key.pem").write_bytes((tmp_path / "other-key.pem").read_bytes())
    mark = len(proc.lines)
    proc.proc.send_signal(signal.SIGHUP)
    await proc.wait_for_log("reload rejected: .*listen.tls.cert", start=mark)
    assert await get(url, client_ssl(new_ca)) == (200, "a")
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0


async def test_weak_tls_1_2_cipher_suites_are_refused(backends, tmp_path):
    ca = trustme.CA()
    write_pair(ca, tmp_path)
    a = await backends.start("a")
    proxy = await backends.proxy(tls_config(tmp_path, a.url))
    for suite in ("AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA256"):
        weak = client_ssl(ca)
        weak.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            weak.set_ciphers(suite)
        except ssl.SSLError:
            continue                     # this OpenSSL does not even offer it
        with pytest.raises((ssl.SSLError, OSError)):
            await asyncio.open_connection("127.0.0.1", proxy.address[1], ssl=weak)
    strong = client_ssl(ca)
    strong.maximum_version = ssl.TLSVersion.TLSv1_2
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.address[1], ssl=strong)
    cipher = writer.get_extra_info("cipher")[0]
    assert "GCM" in cipher or "CHACHA20" in cipher, cipher
    writer.close()


async def test_a_backend_ca_overrides_the_pools(backends, tmp_path):
    right, wrong = trustme.CA(), trustme.CA()
    right.cert_pem.write_to_path(str(tmp_path / "right.pem"))
    wrong.cert_pem.write_to_path(str(tmp_path / "wrong.pem"))
    url = await https_backend(backends, right)
    text = '''
[[routes]]
pool = "api"

[pools.api]
retries = 0
ca = "wrong.pem"

[[pools.api.backends]]
url = "{url}"
{backend}
'''
    proxy = await backends.proxy(load(tmp_path, text.format(url=url, backend='ca = "right.pem"')))
    assert await plain_get(proxy.address[1]) == (200, "secure")
    proxy = await backends.proxy(load(tmp_path, text.format(url=url, backend=""), name="b.toml"))
    assert (await plain_get(proxy.address[1]))[0] == 502


# ---- key exchange groups: Mozilla intermediate's, no others -----------------------------------

def only_group(ca: trustme.CA, group: str, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A real OpenSSL client that offers exactly one key exchange group, at one TLS version."""
    context = client_ssl(ca)
    context.minimum_version = context.maximum_version = version
    context.set_ecdh_curve(group)
    return context


async def handshake(port: int, context: ssl.SSLContext) -> bool:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost"),
            10)
    except (ssl.SSLError, ConnectionError):   # the server's alert, or its close right after
        return False
    writer.close()
    return True


VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.mark.parametrize("version", VERSIONS, ids=["TLS1.2", "TLS1.3"])
@pytest.mark.parametrize("group, accepted", [
    ("X25519", True), ("prime256v1", True), ("secp384r1", True),      # Mozilla intermediate
    ("secp521r1", False), ("X448", False),                           # OpenSSL offers them too
])
async def test_the_listener_offers_only_mozilla_intermediate_groups(backends, tmp_path, version,
                                                                    group, accepted):
    # An RSA certificate: with ECDSA, TLS 1.2 also needs the certificate's own curve among
    # the client's groups, which would mix the signature's curve into the key exchange's.
    ca = trustme.CA()
    write_pair(ca, tmp_path, key_type=trustme.KeyType.RSA)
    a = await backends.start("a")
    proxy = await backends.proxy(tls_config(tmp_path, a.url))
    assert await handshake(proxy.address[1], only_group(ca, group, version)) is accepted
    # Refusing one client costs nothing to the next.
    assert await handshake(proxy.address[1], only_group(ca, "X25519", version))
