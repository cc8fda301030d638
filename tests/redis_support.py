"""A real ``redis-server`` for the store tests: Debian's package, started by the test suite.

``RedisServer`` runs one on a free loopback port with its own temporary directory (no
persistence, so a restart starts empty, like a crashed cache), waits until it answers, and
stops it by PID. ``.ci/run`` installs the package; a developer runs
``apt-get install redis-server`` (README, Development). Without it, the tests that need it
are skipped with that reason, except under ``CI=true``, where a missing server is a failure:
CI must never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from tests.support import free_port

PASSWORD = "s3cret-store-password-7f9c"      # the tests look for it in every output


def redis_server_binary() -> str:
    """The path of redis-server, or skip (fail under CI) saying how to get it."""
    path = shutil.which("redis-server")
    if path is None:
        reason = ("redis-server is not installed: run `apt-get install redis-server` "
                  "(see README, Development) to run the store tests")
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " -- CI must install it (.ci/run)", pytrace=False)
        pytest.skip(reason)
    return path


class RedisServer:
    def __init__(self, *, password: str | None = PASSWORD, port: int | None = None,
                 tls_ca=None, unix: bool = False) -> None:
        """``tls_ca`` (a trustme CA): TLS only, with a certificate for 127.0.0.1 from it;
        ``unix``: a unix socket only, in the temporary directory."""
        self.binary = redis_server_binary()
        self.password = password
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="lbctl-redis-")
        self.proc: subprocess.Popen | None = None
        self.tls_ca = tls_ca
        self.socket = os.path.join(self.dir, "redis.sock") if unix else None
        if tls_ca is not None:
            cert = tls_ca.issue_cert("127.0.0.1")
            self.cert_file = os.path.join(self.dir, "server.pem")
            self.ca_file = os.path.join(self.dir, "ca.pem")
            cert.private_key_and_cert_chain_pem.write_to_path(self.cert_file)
            tls_ca.cert_pem.write_to_path(self.ca_file)

    @property
    def url(self) -> str:
        """The URL with the password in it."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def bare_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        if self.tls_ca is not None:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file",
                      self.cert_file, "--tls-key-file", self.cert_file, "--tls-ca-cert-file",
                      self.ca_file, "--tls-auth-clients", "no"]
        elif self.socket is not None:
            listen = ["--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700"]
        else:
            listen = ["--port", str(self.port)]
        args = [self.binary, *listen, "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--appendonly", "no",
                "--logfile", os.path.join(self.dir, "redis.log"), "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see "
                                   f"{self.dir}/redis.log")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer within {timeout}s")
            time.sleep(0.02)

    def answers(self) -> bool:
        """One PING (with AUTH): does the server answer on its port now?"""
        try:
            if self.socket is not None:
                sock = socket.socket(socket.AF_UNIX)
                sock.settimeout(0.5)
                sock.connect(self.socket)
            else:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
            if self.tls_ca is not None:
                import ssl
                context = ssl.create_default_context(cafile=self.ca_file)
                sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
            with sock:
                request = b""
                if self.password:
                    request += b"AUTH %s\r\n" % self.password.encode()
                sock.sendall(request + b"PING\r\n")
                data = b""
                while b"PONG" not in data and b"-" not in data:
                    chunk = sock.recv(256)
                    if not chunk:
                        return False
                    data += chunk
                return b"PONG" in data
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL by PID: the store disappears mid-flight, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, **kw):
        """A redis-py asyncio client for the test's own look at the store."""
        import redis.asyncio
        return redis.asyncio.Redis(host="127.0.0.1", port=self.port, password=self.password,
                                   protocol=2, **kw)
