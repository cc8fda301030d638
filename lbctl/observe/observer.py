"""What the data plane reports to, per attempt and per request: accounting, access log, explain.

``Observer`` implements the proxy's ``Hooks`` (``lbctl.proxy.hooks``); the serve root builds
one and hands it to the data plane. The proxy calls three things, each at most once per
request or attempt, and everything it passes is read from the request's ``Exchange``:

* ``attempt(exchange, state, backend, outcome, started, head_latency)`` at the end of every
  attempt on a backend (counters, histogram);
* ``request_end(exchange, aborted)`` once a client request is over, when something needs
  the request's end (the access log, front-end status counts); it is ``None`` when nothing
  does;
* ``explain(exchange, state)`` returns ``None`` unless this request's decision is to be
  explained (pool ``explain = true`` or ``X-LB-Explain`` with the admin token).

With ``[admin] metrics = false`` and no access log, ``attempt`` is a no-op and
``request_end`` is ``None``: the benchmark's "metrics off" measures exactly that.
"""

from __future__ import annotations

import logging
import time

from lbctl.balancing import Backend, Outcome
from lbctl.config.keys import digest_of, same_secret
from lbctl.errors import UserError
from lbctl.exitcodes import Exit
from lbctl.observe import explain as explaining
from lbctl.observe.access_log import AccessLog, header_value, iso_time, redact_target, text
from lbctl.observe.accounting import CLASSES, BackendStats

log = logging.getLogger("lbctl")

# Termination reasons by the last attempt's outcome (None: the exchange ended normally).
TERMINATION = {Outcome.OK: None, Outcome.SERVER_ERROR: None,
               Outcome.CONNECT_ERROR: "connect_error", Outcome.RESET: "upstream_reset",
               Outcome.INVALID: "upstream_invalid", Outcome.TIMEOUT: "upstream_timeout",
               Outcome.CLIENT_ABORT: "client_error", Outcome.TRUNCATED: "upstream_truncated",
               Outcome.LOCAL: "local_resource"}
SERVER_ERROR = Outcome.SERVER_ERROR


class Frontend:
    """Client requests by the status the client got (proxy-generated ones included)."""

    __slots__ = ("requests", "by_class", "aborted")

    def __init__(self) -> None:
        self.requests = 0
        self.by_class = [0, 0, 0, 0, 0, 0]
        self.aborted = 0

    def classes(self) -> dict[str, int]:
        return {name: self.by_class[i + 1] for i, name in enumerate(CLASSES)}


class Observer:
    def __init__(self, config, *, worker: int | None = None) -> None:
        self.started_at = time.time()
        self.worker = worker        # which worker of an instance this is (access log lines)
        self.frontend = Frontend()
        self.stats: dict[Backend, BackendStats] = {}    # per backend, from its first attempt
        self.access: AccessLog | None = None
        self.metrics = True
        self.explain_token: bytes | None = None
        self._configured = False
        self.request_end = None
        self.attempt = self._noop
        self.configure(config)

    # ---- configuration ------------------------------------------------------------------

    def configure(self, config) -> None:
        """Apply ``config`` (at start and on every reload)."""
        self.metrics = config.admin.metrics if config.admin is not None else True
        token = config.admin.token if config.admin is not None else None
        # Its digest: compared by same_secret, in time independent of what is sent.
        self.explain_token = digest_of(token) if token else None
        want = (config.log.access, config.log.format)
        current = (self.access.target, self.access.format_name) if self.access else ("off", None)
        if current != want and not (want[0] == "off" and self.access is None):
            opened = None
            if config.log.access != "off":
                try:
                    opened = AccessLog(config.log.access, config.log.format)
                except OSError as exc:
                    message = f"cannot open the access log {config.log.access}: " \
                              f"{exc.strerror or exc}"
                    if self.access is None and not self._configured:
                        raise UserError(message, exit_code=Exit.RUNTIME) from None
                    log.error("%s; keeping the previous access log setting", message)
                    opened = self.access
            if opened is not self.access:
                if self.access is not None:
                    self.access.close()
                self.access = opened
        self._configured = True
        # The leanest hooks that serve what is on: the access log needs per-request details,
        # metrics alone only counters.
        if self.access is not None:
            self.attempt, self.request_end = self._attempt, self._request_end
        elif self.metrics:
            self.attempt, self.request_end = self._attempt_counted, self._request_end_counted
        else:
            self.attempt, self.request_end = self._noop, None

    def reopen(self) -> None:
        """SIGUSR1: reopen the access log file (logrotate moved it)."""
        if self.access is not None:
            self.access.reopen()
            log.info("access log reopened", extra={"event": "access_log_reopened"})

    def close(self) -> None:
        if self.access is not None:
            self.access.close()
            self.access = None

    def keep_only(self, backends) -> None:
        """A reload: forget the counters of backends that are gone."""
        live = set(backends)
        self.stats = {b: s for b, s in self.stats.items() if b in live}

    def stats_of(self, backend: Backend) -> BackendStats:
        """The backend's counters, created on first use."""
        stats = self.stats.get(backend)
        if stats is None:
            stats = self.stats[backend] = BackendStats()
        return stats

    # ---- the hot path -------------------------------------------------------------------

    @staticmethod
    def _noop(exchange, state, backend, outcome, started, head_latency) -> None:
        pass

    def _attempt(self, exchange, state, backend, outcome, started, head_latency) -> None:
        """One attempt ended. ``head_latency`` is None when no response head arrived."""
        now = exchange.conn.loop.time()
        exchange.backend = backend
        exchange.outcome = outcome
        exchange.upstream_time = head_latency
        sent = exchange.sent
        if self.metrics:
            body = exchange.body
            stats = self.stats.get(backend) or self.stats_of(backend)
            # A 5xx held back for a retry (retry_on "5xx") has a status but no relayed head.
            status = exchange.status if head_latency is not None or outcome is SERVER_ERROR else 0
            stats.record(now, status, outcome, now - started, exchange.attempts > 1,
                         body.received if body is not None else 0, sent - exchange.sent_mark)
        exchange.sent_mark = sent

    def _attempt_counted(self, exchange, state, backend, outcome, started, head_latency) -> None:
        """``_attempt`` for metrics without an access log: counters only."""
        now = exchange.conn.loop.time()
        sent = exchange.sent
        body = exchange.body
        status = exchange.status if head_latency is not None or outcome is SERVER_ERROR else 0
        (self.stats.get(backend) or self.stats_of(backend)).record(
            now, status, outcome, now - started, exchange.attempts > 1,
            body.received if body is not None else 0, sent - exchange.sent_mark)
        exchange.sent_mark = sent

    def _request_end_counted(self, exchange, aborted: bool) -> None:
        """``_request_end`` for metrics without an access log: front-end status counts only."""
        frontend = self.frontend
        frontend.requests += 1
        if aborted:
            frontend.aborted += 1
        else:
            status = exchange.status
            if 100 <= status < 600:
                frontend.by_class[status // 100] += 1

    def _request_end(self, exchange, aborted: bool) -> None:
        """A client request is over: account for how it ended, and log it."""
        frontend = self.frontend
        frontend.requests += 1
        status = exchange.status
        if aborted:
            frontend.aborted += 1
        elif 100 <= status < 600:
            frontend.by_class[status // 100] += 1
        if self.access is not None:
            self._log(exchange, exchange.begun, exchange.conn.loop.time(), status, aborted)

    def _log(self, exchange, started, ended, status, aborted) -> None:
        req = exchange
        runtime = exchange.conn.server.runtime
        try:
            route = runtime.router.match(req.host.decode("latin-1"), req.path) \
                if req.error is None else None
        except ValueError:              # AmbiguousPath after a reload changed the routes
            route = None
        termination = "client_abort" if aborted else TERMINATION.get(exchange.outcome)
        if termination is None and req.error is not None:
            termination = "bad_request"
        elif termination is None and status == 503 and exchange.attempts == 0 and route:
            termination = "no_backend"
        backend = exchange.backend
        admitted = req.admitted
        headers = req.headers
        epoch = time.time() - (ended - started)
        record = {
            "time": iso_time(epoch),
            "epoch": round(epoch, 6),
            # The gateway's resolved client (trusted proxies honoured), else the peer.
            "client": text(admitted.client if admitted is not None else exchange.conn.peer),
            "consumer": text(admitted.consumer) if admitted is not None else None,
            "method": text(req.method) or "-",
            "path": redact_target(text(req.target) or "-"),
            "protocol": "HTTP/1.0" if req.http10 else "HTTP/1.1",
            "status": status if status or not aborted else 499,
            "bytes": exchange.sent,
            "duration": round(ended - started, 6),
            "route": f"{route.host or '*'}{route.path_prefix}" if route else None,
            "pool": route.pool if route else None,
            "backend": backend.name if backend is not None else None,
            "upstream_time": None if exchange.upstream_time is None
            else round(exchange.upstream_time, 6),
            "attempts": exchange.attempts,
            "request_id": text(exchange.request_id),
            "termination": termination,
            "host": text(req.host),
            "user_agent": header_value(headers, b"user-agent"),
            "referer": header_value(headers, b"referer"),
        }
        if exchange.decision is not None:
            record["decision"] = text(exchange.decision)
        if self.worker is not None:
            record["worker"] = self.worker
        self.access.write(record)

    # ---- explain ------------------------------------------------------------------------

    def explain(self, exchange, state):
        """A selection function that explains itself, or None (the usual case)."""
        req = exchange
        if not state.config.explain and self.explain_token is None:
            return None
        wanted = state.config.explain
        asked = req.header(b"x-lb-explain")
        if asked is not None:
            token = req.header(b"x-lb-admin-token") or b""
            # The token must never reach a backend, whether or not it was right.
            req.drop_headers((b"x-lb-explain", b"x-lb-admin-token"))
            if asked.strip() not in (b"0", b"") and self.explain_token is not None and \
                    same_secret(token, self.explain_token):
                wanted = True
        if not wanted:
            return None

        def select(pool, key, exclude):
            # Called once per attempt: a retry's decision follows the earlier ones (each of
            # which the proxy ends with "; outcome=..."), so every backend tried is listed.
            chosen, why = explaining.select(pool, key, exclude)
            decision = why.encode("ascii", "backslashreplace").replace(b"\r", b"") \
                .replace(b"\n", b"")
            earlier = exchange.decision
            exchange.decision = decision if earlier is None else earlier + b" | " + decision
            return chosen
        return select
