"""The backends and every proxy under test: their configs, and starting them.

Every proxy is configured as its users would run it in front of two HTTP/1.1 backends, with
the same work per request as lbctl's defaults: round robin over the two, upstream keep-alive
(an idle pool of 64 connections per backend where the proxy has such a knob, 128 in all as
nginx's ``keepalive``), and the request headers lbctl adds (X-Forwarded-For, -Proto, -Host and
X-Request-ID). ``check_headers`` asks a backend what each proxy actually sent, and the run
notes any difference (Traefik has no request-ID generator). Access logs are off everywhere.

``--workers N`` scales each one the way its users would: nginx ``worker_processes N``, HAProxy
``nbthread N``, Envoy ``--concurrency N``, Caddy and Traefik ``GOMAXPROCS=N``, and lbctl
``serve --workers N`` (passed only when N > 1).
"""

from __future__ import annotations

import http.client
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .load import STATUS_PATH
from .rig import (Proc, Processes, StartFailed, children, free_port, last_line, pinned,
                  tree, wait_listening)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

SMALL_BODY = b"hello from an nginx backend\n"        # 28 bytes
LARGE_SIZE = 64 * 1024

# Display names, in the order of the tables.
LABELS = {"direct": "direct", "nginx": "nginx", "haproxy": "HAProxy", "envoy": "Envoy",
          "caddy": "Caddy", "traefik": "Traefik", "lbctl": "lbctl"}
PROXIES = ("nginx", "haproxy", "envoy", "caddy", "traefik", "lbctl")
# Client connections a proxy accepts (lbctl's default max_connections): room for the idle
# connections of the idle phase. nginx allocates its connection table up front for this.
PROXY_CONNECTIONS = 10000
HEADERS = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id")


@dataclass
class Target:
    name: str                        # unique label: "nginx", "lbctl", a --tree label...
    kind: str                        # "direct", one of PROXIES
    port: int
    proc: Proc | None = None         # None for "direct" (a backend, measured for reference)
    notes: list[str] = field(default_factory=list)

    def pids(self) -> list[int]:
        """The proxy's processes now (nginx's or lbctl's workers included)."""
        return tree(self.proc.popen.pid) if self.proc is not None else []


# ---- nginx ---------------------------------------------------------------------------------

NGINX_COMMON = """\
daemon off;
master_process on;
worker_processes {workers};
pid {dir}/{name}.pid;
error_log {dir}/{name}.error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/{name}-body;
    proxy_temp_path {dir}/tmp/{name}-proxy;
    fastcgi_temp_path {dir}/tmp/{name}-fastcgi;
    uwsgi_temp_path {dir}/tmp/{name}-uwsgi;
    scgi_temp_path {dir}/tmp/{name}-scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
{body}
}}
"""

# tcp_nopush stays off: with it, a response's last partial segment can wait for a delayed
# ACK (about 40 ms) behind proxies that read in small steps, which measures the rig.
NGINX_BACKEND = """\
    sendfile on;
    tcp_nopush off;
    open_file_cache max=16;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {dir}/www;
        default_type application/octet-stream;
        location = /small {{ }}
        location = /64k {{ }}
        # Connections accepted and requests served: upstream connections per request.
        location = {status} {{ stub_status; }}
        # What the proxy in front added, for the harness's header check.
        location = /headers {{
            default_type text/plain;
            return 200 "x-forwarded-for: $http_x_forwarded_for
x-forwarded-proto: $http_x_forwarded_proto
x-forwarded-host: $http_x_forwarded_host
x-request-id: $http_x_request_id
";
        }}
    }}"""

NGINX_PROXY = """\
    upstream backends {{
{servers}
        # Idle connections kept per worker, across both backends (lbctl: 64 per backend).
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The same request headers lbctl adds, so both proxies do the same work.
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Request-ID $request_id;
            # A 64 KiB response fits in memory buffers: nginx never spills it to disk.
            proxy_buffer_size 8k;
            proxy_buffers 16 8k;
        }}
    }}"""


def nginx_conf(dir_: Path, name: str, body: str, workers: int = 1,
               connections: int = 4096) -> Path:
    path = dir_ / f"{name}.conf"
    path.write_text(NGINX_COMMON.format(dir=dir_, name=name, body=body, workers=workers,
                                        connections=connections))
    return path


def prepare_files(tmp: Path) -> None:
    (tmp / "www").mkdir()
    (tmp / "tmp").mkdir()
    (tmp / "www" / "small").write_bytes(SMALL_BODY)
    (tmp / "www" / "64k").write_bytes(os.urandom(LARGE_SIZE))
    # nginx workers drop privileges when started as root: let them read the files.
    for p in (tmp, tmp / "www", tmp / "tmp"):
        p.chmod(0o755)
    for p in (tmp / "www").iterdir():
        p.chmod(0o644)


def start_nginx(tools: dict, procs: Processes, tmp: Path, name: str, body: str, cpus,
                workers: int, connections: int = 4096) -> Proc:
    conf = nginx_conf(tmp, name, body, workers, connections)
    log = tmp / f"{name}.out"
    proc = procs.start(name, pinned(cpus, [tools["nginx"], "-p", str(tmp), "-e",
                       str(tmp / f"{name}.error.log"), "-c", str(conf)], tools["taskset"]), log)
    return proc


def start_backends(tools: dict, procs: Processes, tmp: Path, args) -> list[int]:
    ports = []
    for i in (1, 2):
        port = free_port()
        proc = start_nginx(tools, procs, tmp, f"backend{i}",
                           NGINX_BACKEND.format(port=port, dir=tmp, status=STATUS_PATH),
                           args.pinning.load, 1)
        wait_listening(port, proc.popen, proc.log)
        ports.append(port)
    return ports


def wait_workers(proc: Proc, n: int, timeout: float = 10.0) -> None:
    """The master listens before its workers fork: wait for them, so their CPU is counted."""
    deadline = time.monotonic() + timeout
    while len(children(proc.popen.pid)) < n and time.monotonic() < deadline:
        time.sleep(0.05)


def start_nginx_proxy(tools, procs, tmp, backends, args) -> Target:
    port = free_port()
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in backends)
    proc = start_nginx(tools, procs, tmp, "nginx",
                       NGINX_PROXY.format(port=port, servers=servers), args.pinning.proxy,
                       args.workers, PROXY_CONNECTIONS)
    wait_listening(port, proc.popen, proc.log)
    wait_workers(proc, args.workers)
    return Target("nginx", "nginx", port, proc)


# ---- HAProxy -------------------------------------------------------------------------------

HAPROXY = """\
global
    nbthread {workers}
    maxconn {maxconn}
    hard-stop-after 10s
    # no "log" line: nothing is logged

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 75s
    timeout server 75s
    timeout http-keep-alive 75s
    timeout http-request 10s

frontend bench
    bind 127.0.0.1:{port} backlog 4096
    maxconn {maxconn}
    # The same request headers lbctl adds.
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    unique-id-format %[uuid()]
    http-request set-header X-Request-ID %[unique-id]
    default_backend backends

backend backends
    balance roundrobin
    # "always": any request may take an idle backend connection, the first of a client
    # connection included, as nginx's and lbctl's pools do ("safe", the default, opens a new
    # one for every client connection's first request: every request under Connection: close).
    http-reuse always
{servers}
"""


def start_haproxy(tools, procs, tmp, backends, args) -> Target:
    port = free_port()
    conf = tmp / "haproxy.cfg"
    servers = "\n".join(f"    server b{i} 127.0.0.1:{p}" for i, p in enumerate(backends, 1))
    # HAProxy wants two descriptors per connection within the open-file limit it inherits.
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    maxconn = max(1000, min(PROXY_CONNECTIONS, (nofile - 200) // 2))
    conf.write_text(HAPROXY.format(port=port, workers=args.workers, servers=servers,
                                   maxconn=maxconn))
    log = tmp / "haproxy.out"
    proc = procs.start("haproxy", pinned(args.pinning.proxy, [tools["haproxy"], "-db", "-f",
                                                              str(conf)], tools["taskset"]), log)
    wait_listening(port, proc.popen, log)
    return Target("haproxy", "haproxy", port, proc)


# ---- Envoy ---------------------------------------------------------------------------------

ENVOY = """\
# Envoy adds X-Forwarded-For and -Proto with use_remote_address, and X-Request-ID by default;
# X-Forwarded-Host is added on the route. No access log, no admin listener.
static_resources:
  listeners:
  - name: bench
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: HTTP1
          use_remote_address: true
          generate_request_id: true
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: backends}}
              request_headers_to_add:
              - header: {{key: x-forwarded-host, value: "%REQ(:AUTHORITY)%"}}
                append_action: OVERWRITE_IF_EXISTS_OR_ADD
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: true
  clusters:
  - name: backends
    type: STATIC
    lb_policy: ROUND_ROBIN
    connect_timeout: 5s
    circuit_breakers:
      thresholds:
      - {{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}}
    load_assignment:
      cluster_name: backends
      endpoints:
      - lb_endpoints:
{endpoints}
"""


def start_envoy(tools, procs, tmp, backends, args) -> Target:
    port = free_port()
    conf = tmp / "envoy.yaml"
    endpoints = "\n".join(
        f"        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, "
        f"port_value: {p}}}}}}}" for p in backends)
    conf.write_text(ENVOY.format(port=port, endpoints=endpoints))
    log = tmp / "envoy.out"
    argv = [tools["envoy"], "-c", str(conf), "--concurrency", str(args.workers),
            "--disable-hot-restart", "--log-level", "warn"]
    proc = procs.start("envoy", pinned(args.pinning.proxy, argv, tools["taskset"]), log)
    wait_listening(port, proc.popen, log, timeout=30)
    return Target("envoy", "envoy", port, proc)


# ---- Caddy ---------------------------------------------------------------------------------

CADDY = """\
{{
    admin off
    auto_https off
    persist_config off
    grace_period 1s
}}

# Caddy adds X-Forwarded-For, -Proto and -Host by itself; no "log" directive: no access log.
http://:{port} {{
    bind 127.0.0.1
    reverse_proxy {upstreams} {{
        lb_policy round_robin
        header_up X-Request-ID {{http.request.uuid}}
        transport http {{
            keepalive 60s
            keepalive_idle_conns_per_host 64
        }}
    }}
}}
"""


def go_env(tmp: Path, workers: int) -> dict:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return dict(os.environ, GOMAXPROCS=str(workers), HOME=str(home),
                XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"))


def start_caddy(tools, procs, tmp, backends, args) -> Target:
    port = free_port()
    conf = tmp / "Caddyfile"
    conf.write_text(CADDY.format(port=port,
                                 upstreams=" ".join(f"127.0.0.1:{p}" for p in backends)))
    log = tmp / "caddy.out"
    argv = [tools["caddy"], "run", "--config", str(conf), "--adapter", "caddyfile"]
    proc = procs.start("caddy", pinned(args.pinning.proxy, argv, tools["taskset"]), log,
                       env=go_env(tmp, args.workers))
    wait_listening(port, proc.popen, log, timeout=30)
    return Target("caddy", "caddy", port, proc)


# ---- Traefik -------------------------------------------------------------------------------

TRAEFIK_DYNAMIC = """\
# Traefik adds X-Forwarded-For, -Proto and -Host by itself; it has no request-ID generator.
http:
  routers:
    bench:
      entryPoints: [web]
      rule: "PathPrefix(`/`)"
      service: backends
  services:
    backends:
      loadBalancer:
        serversTransport: bench
        servers:
{servers}
  serversTransports:
    bench:
      maxIdleConnsPerHost: 64
"""


def start_traefik(tools, procs, tmp, backends, args) -> Target:
    port = free_port()
    dyn = tmp / "traefik-dynamic.yml"
    dyn.write_text(TRAEFIK_DYNAMIC.format(
        servers="\n".join(f"          - url: http://127.0.0.1:{p}" for p in backends)))
    log = tmp / "traefik.out"
    argv = [tools["traefik"], f"--entryPoints.web.address=127.0.0.1:{port}",
            f"--providers.file.filename={dyn}", "--providers.file.watch=false",
            "--log.level=ERROR", "--accessLog=false", "--global.checkNewVersion=false",
            "--global.sendAnonymousUsage=false"]
    proc = procs.start("traefik", pinned(args.pinning.proxy, argv, tools["taskset"]), log,
                       env=go_env(tmp, args.workers))
    wait_listening(port, proc.popen, log, timeout=30)
    return Target("traefik", "traefik", port, proc)


# ---- lbctl ---------------------------------------------------------------------------------

def lbctl_toml(port: int, backend_ports: list[int], extra: str = "") -> str:
    """The benchmark config; ``extra`` (a --variant file) adds top-level tables after it."""
    lines = ["[listen]", f'address = "127.0.0.1:{port}"', "", "[[routes]]", 'pool = "bench"',
             "", "[pools.bench]", 'algorithm = "round_robin"', ""]
    for p in backend_ports:
        lines += ["[[pools.bench.backends]]", f'url = "http://127.0.0.1:{p}"', ""]
    return "\n".join(lines) + ("\n" + extra if extra else "")


def lbctl_env(src: Path = REPO) -> dict:
    # The lbctl in ``src`` (this checkout by default), whatever the interpreter's installed
    # copy points to.
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def start_lbctl(tools, procs, tmp, backends, args, label: str = "lbctl", extra: str = "",
                src: Path = REPO) -> Target:
    port = free_port()
    log = tmp / f"{label}.out"
    conf = tmp / f"{label}.toml"
    conf.write_text(lbctl_toml(port, backends, extra))
    argv = [sys.executable, "-m", "lbctl", "serve", str(conf)]
    if args.workers > 1:
        argv[4:4] = ["--workers", str(args.workers)]
    # Run from the tree itself: ``python -m`` puts the working directory ahead of
    # PYTHONPATH, so started from another checkout it would import that one's lbctl.
    proc = procs.start(label, pinned(args.pinning.proxy, argv, tools["taskset"]), log,
                       env=lbctl_env(src), cwd=src)
    try:
        wait_listening(port, proc.popen, log, timeout=30)
    except StartFailed as exc:
        if args.workers > 1:
            raise StartFailed(f"`lbctl serve --workers {args.workers}` did not start "
                              f"({exc})") from None
        raise
    if args.workers > 1:
        wait_workers(proc, args.workers)
    return Target(label, "lbctl", port, proc)


STARTERS = {"nginx": start_nginx_proxy, "haproxy": start_haproxy, "envoy": start_envoy,
            "caddy": start_caddy, "traefik": start_traefik, "lbctl": start_lbctl}


# ---- readiness and the header check --------------------------------------------------------

def http_get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_serving(target: Target, timeout: float = 30.0) -> None:
    """Both bodies served in full (Traefik listens before its routes are loaded)."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            ok = True
            for path, size in (("/small", len(SMALL_BODY)), ("/64k", LARGE_SIZE)):
                status, body = http_get(target.port, path)
                if status != 200 or len(body) != size:
                    ok = False
                    last = f"GET {path}: status {status}, {len(body)} bytes (want 200, {size})"
                    break
            if ok:
                return
        except OSError as exc:
            last = f"GET /small: {exc}"
        if target.proc is not None and target.proc.popen.poll() is not None:
            raise StartFailed(f"exited ({target.proc.popen.returncode}): "
                              f"{last_line(target.proc.log)}")
        if time.monotonic() > deadline:
            raise StartFailed(f"not serving after {timeout:g}s: {last}")
        time.sleep(0.1)


def check_headers(target: Target) -> dict[str, str]:
    """The forwarded headers a backend received through ``target``; notes what is missing."""
    status, body = http_get(target.port, "/headers")
    seen = {}
    for line in body.decode(errors="replace").splitlines():
        name, _, value = line.partition(":")
        seen[name.strip()] = value.strip()
    missing = [h for h in HEADERS if not seen.get(h)]
    if status != 200:
        target.notes.append(f"GET /headers: status {status}")
    elif missing:
        target.notes.append(f"does not send {', '.join(missing)}")
    return seen
