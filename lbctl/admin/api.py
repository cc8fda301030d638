"""The admin API's routes, its bearer-token check, and its lifecycle beside the proxy.

Endpoints (JSON errors are ``{"error": "..."}``):

    GET  /                                        the web dashboard (see ``dashboard``; its
                                                  page, script and style need no token)
    GET  /stats                                   the observe.snapshot document (?history=0:
                                                  without the per-second series)
    GET  /metrics                                 Prometheus text format
    POST /pools/{pool}/backends/{name}/disable    no traffic at all
    POST /pools/{pool}/backends/{name}/enable     back to normal (health still applies)
    POST /pools/{pool}/backends/{name}/drain      no new requests; in-flight ones finish
    POST /pools/{pool}/backends/{name}/weight     body {"weight": N}, N from 0.01 to 1000
    POST /pools/{pool}/backends                   add a backend: {"url", "name"?, "weight"?}
    GET  /pools/{pool}/backends/{name}            the backend's entry, as in /stats
    DELETE /pools/{pool}/backends/{name}          remove it: no new requests, in-flight ones
                                                  finish, then it is gone

A POST endpoint answers GET with 405 (and ``Allow: POST``); an unknown pool or backend is a
404. When a token is configured, every request needs ``Authorization: Bearer <token>``.
Before that, ``guard.py`` refuses what a web page could send (cross-site requests, rebound
Host names, bodies that are not JSON). Operator changes live on the ``Backend`` object, so
they survive a reload. Adding and removing go through the serve root like discovery's own
changes (``Served.add_backend``, ``remove_backend``); backends added here survive a reload
too (``discovery/membership.py`` says what a reload does with them).
"""

from __future__ import annotations

import errno
import json
import logging

from aiohttp import web

from lbctl.admin import dashboard
from lbctl.admin.guard import BadBody, describe, guard, json_body
from lbctl.admin.metrics import exposition, registry_for
from lbctl.admin.served import Served
from lbctl.balancing.backend import WEIGHT_RANGE, AdminState, checked_weight
from lbctl.config.keys import digest_of, same_secret
from lbctl.config.kinds import loops_back
from lbctl.discovery.entries import EntryError, backend_from_entry
from lbctl.discovery.membership import MembershipError
from lbctl.errors import UserError
from lbctl.exitcodes import Exit
from lbctl.observe.snapshot import backend_doc, snapshot, source_of

log = logging.getLogger("lbctl")

ACTIONS = {"disable": AdminState.DISABLED, "enable": AdminState.ENABLED,
           "drain": AdminState.DRAINING}


def _error(status: int, message: str, **headers) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


@web.middleware
async def _json_errors(request: web.Request, handler):
    """aiohttp's own refusals (no such route, a method a route does not take) as this API's
    JSON errors, like every other answer."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        what = {404: "no such endpoint", 405: f"{request.method} is not allowed here"}.get(
            exc.status, exc.reason)
        return _error(exc.status, what, **headers)


async def _no_sniffing(request: web.Request, response: web.StreamResponse) -> None:
    # Every answer is read as the type it says: JSON that holds a backend's name is never
    # rendered as a page, whatever the name holds.
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


class AdminApi:
    def __init__(self, served: Served, admin) -> None:
        self.served = served
        # The token's digest only: same_secret compares in time independent of what is sent.
        self.token: bytes | None = digest_of(admin.token) if admin.token else None
        self.address = admin.address
        self.registry = registry_for(served)
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[
            _json_errors,
            guard(token=lambda: self.token is not None, admin_host=self.address.host),
            self._auth])
        app.on_response_prepare.append(_no_sniffing)
        dashboard.add_routes(app, lambda: self.token is not None)
        app.router.add_get("/stats", self.stats, allow_head=False)
        app.router.add_get("/metrics", self.metrics, allow_head=False)
        app.router.add_route("*", "/pools/{pool}/backends/{name}/{action}", self.action)
        app.router.add_route("*", "/pools/{pool}/backends/{name}", self.backend)
        app.router.add_route("*", "/pools/{pool}/backends", self.backends)
        return app

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        self.site = web.TCPSite(self.runner, self.address.host, self.address.port,
                                reuse_address=True)
        try:
            await self.site.start()
        except OSError as exc:
            await self.runner.cleanup()
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else \
                (exc.strerror or str(exc))
            raise UserError(f"cannot listen on admin address {self.address}: {reason}",
                            exit_code=Exit.RUNTIME) from None
        log.info("admin API on http://%s%s", self.address,
                 " (token required)" if self.token else "",
                 extra={"event": "admin_listening", "address": str(self.address)})

    @property
    def bound(self) -> tuple[str, int]:
        return tuple(self.runner.addresses[0][:2])

    def reconfigure(self, admin) -> None:
        """A reload: a new token applies at once; a new address (or none) after a restart."""
        if admin is None or admin.address != self.address:
            log.warning("admin address change takes effect after a restart; still on %s",
                        self.address)
        if admin is not None:
            self.token = digest_of(admin.token) if admin.token else None

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    # ---- middleware and handlers --------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if self.token is not None and request.path not in dashboard.PUBLIC:
            sent = request.headers.get("Authorization", "")
            scheme, _, value = sent.partition(" ")
            # Any bytes a client sends: aiohttp hands undecodable ones over as surrogates.
            presented = value.strip().encode("utf-8", "surrogateescape")
            if scheme.lower() != "bearer" or not same_secret(presented, self.token):
                return _error(401, "missing or wrong bearer token",
                              **{"WWW-Authenticate": 'Bearer realm="lbctl"'})
        return await handler(request)

    async def stats(self, request: web.Request) -> web.Response:
        # ?history=0 leaves out the per-second series (cheaper for very large pools).
        history = request.query.get("history", "1") not in ("0", "false", "no")
        served = self.served
        await served.refresh()
        doc = snapshot(served.runtime, served.observer, served.health, served.loop.time(),
                       discovery=served.discovery, history=history)
        workers = served.worker_rows()
        if workers is not None:
            doc["workers"] = workers
        return web.json_response(doc,
                                 dumps=lambda d: json.dumps(d, allow_nan=False, default=str))

    async def metrics(self, request: web.Request) -> web.Response:
        await self.served.refresh()
        body, content_type = exposition(self.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def action(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action not in ACTIONS and action != "weight":
            return _error(404, f"unknown action {action!r}; expected disable, enable, drain "
                               "or weight")
        if request.method != "POST":
            return _error(405, f"{action} needs POST", Allow="POST")
        pool_name, name = request.match_info["pool"], request.match_info["name"]
        served = self.served
        state = served.runtime.pools.get(pool_name)
        if state is None:
            return _error(404, f"no pool named {pool_name!r}")
        pool = state.pool
        backend = pool.by_name.get(name)
        if backend is None:
            return _error(404, f"pool {pool_name!r} has no backend named {name!r}")
        if action == "weight":
            try:
                body = await json_body(request)
            except BadBody as exc:
                return _error(400, f'expected a JSON body {{"weight": N}}: {exc}')
            try:
                weight = checked_weight(body.get("weight"))
            except ValueError:
                return _error(400, f"weight: expected {WEIGHT_RANGE}, found "
                                   f"{describe(body.get('weight'))}")
            old = backend.weight
            pool.set_weight(backend, weight)
            log.info("admin: %s/%s weight %g -> %g", pool_name, name, old, weight,
                     extra={"event": "admin_action", "pool": pool_name, "backend": name,
                            "state": "weight", "weight": weight, "previous": old})
        else:
            old = backend.admin.value
            pool.set_admin(backend, ACTIONS[action])
            log.info("admin: %s/%s %s -> %s", pool_name, name, old, backend.admin.value,
                     extra={"event": "admin_action", "pool": pool_name, "backend": name,
                            "state": backend.admin.value, "previous": old})
        await served.changed()              # in effect in every worker before the answer
        return web.json_response({"pool": pool_name, "backend": self._doc(state, backend)})

    # ---- membership ---------------------------------------------------------------------

    def _doc(self, state, backend) -> dict:
        """A backend's entry, as in ``/stats`` (without the per-second series)."""
        served = self.served
        return backend_doc(state.pool, backend, served.loop.time(), history=False,
                           observer=served.observer, health=served.health,
                           source=source_of(state, backend),
                           upstream=served.runtime.idle.get(backend))

    async def backends(self, request: web.Request) -> web.Response:
        """POST: add a backend to a pool, at once (with the pool's slow start)."""
        if request.method != "POST":
            return _error(405, "adding a backend needs POST", Allow="POST")
        pool_name = request.match_info["pool"]
        served = self.served
        if pool_name not in served.runtime.pools:
            return _error(404, f"no pool named {pool_name!r}")
        try:
            body = await json_body(request)
        except BadBody as exc:
            return _error(400, 'expected a JSON body {"url": "http://host:port", "name": ..., '
                               f'"weight": ...}}: {exc}')
        try:
            bcfg = backend_from_entry(body, "admin")
        except EntryError as exc:
            return _error(400, str(exc))
        for what, address in served.discovery.own():    # as bound
            if loops_back(bcfg.host, bcfg.port, address):
                return _error(400, f"url: expected a backend other than lbctl itself, found "
                                   f"{bcfg.url}, {what}: each request would be sent back "
                                   "into lbctl")
        try:
            backend = served.add_backend(pool_name, bcfg)
        except MembershipError as exc:
            return _error(exc.status, str(exc))
        await served.changed()              # in every worker's pool before the answer
        log.info("admin: %s/%s added (%s, weight %g); a reload keeps it, a restart forgets it",
                 pool_name, bcfg.name, bcfg.url, bcfg.weight,
                 extra={"event": "admin_action", "pool": pool_name, "backend": bcfg.name,
                        "state": "added", "url": bcfg.url, "weight": bcfg.weight})
        doc = self._doc(served.runtime.pools[pool_name], backend)
        return web.json_response({"pool": pool_name, "backend": doc}, status=201)

    async def backend(self, request: web.Request) -> web.Response:
        """GET: one backend's entry; DELETE: remove it (drain, then gone)."""
        if request.method not in ("GET", "DELETE"):
            return _error(405, "expected GET or DELETE", Allow="GET, DELETE")
        pool_name, name = request.match_info["pool"], request.match_info["name"]
        served = self.served
        state = served.runtime.pools.get(pool_name)
        if state is None:
            return _error(404, f"no pool named {pool_name!r}")
        if request.method == "GET":
            backend = state.pool.by_name.get(name)
            if backend is None:
                return _error(404, f"pool {pool_name!r} has no backend named {name!r}")
            return web.json_response({"pool": pool_name, "backend": self._doc(state, backend)})
        now = served.loop.time()
        try:
            backend, removed = served.remove_backend(pool_name, name)
        except MembershipError as exc:
            return _error(exc.status, str(exc))
        await served.changed()              # out of every worker's pool before the answer
        state = served.runtime.pools[pool_name]
        leaving = any(b is backend for b in state.leaving)
        log.info("admin: %s/%s removed%s", pool_name, name,
                 f"; {backend.inflight} request(s) in flight finish first" if leaving else "",
                 extra={"event": "admin_action", "pool": pool_name, "backend": name,
                        "state": "leaving" if leaving else "removed"})
        doc = backend_doc(state.pool, backend, now, history=False, source=removed.source,
                          leaving=leaving, observer=served.observer, health=served.health)
        if not leaving:
            doc["state"] = "removed"
        # 202: accepted, still draining; 200: gone already.
        return web.json_response({"pool": pool_name, "backend": doc},
                                 status=202 if leaving else 200)


async def start_admin(served: Served) -> AdminApi:
    api = AdminApi(served, served.runtime.config.admin)
    await api.start()
    return api
