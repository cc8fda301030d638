"""Routing: the first route whose host and path prefix match wins; no match is a 404.

A request is routed by its canonical path (``paths.canonical_path``). When ``[paths]``
leaves open how a backend reads that path (``paths.readings``: encoded slashes decoded,
path parameters stripped, slashes merged, case ignored), every such reading must land on
the same route, or the request is refused: otherwise ``/ADMIN`` or ``/admin;x`` could take
the catch-all route's (absent) auth to a backend that serves ``/admin`` for it.
"""

from __future__ import annotations

from typing import Sequence

from lbctl.config.model import Paths, Route
from lbctl.proxy.paths import readings


class AmbiguousPath(ValueError):
    """Backends could read the path as belonging to another route: refuse it (400)."""


class Router:
    """Routes compiled once per config load: host rules lower-cased, wildcards split."""

    def __init__(self, routes: Sequence[Route], paths: Paths | None = None) -> None:
        self.paths = paths or Paths()
        self._rules: list[tuple[str | None, bool, str, str, Route]] = []
        for route in routes:
            host = route.host.lower() if route.host else None
            wildcard = bool(host and host.startswith("*."))
            self._rules.append((host[1:] if wildcard else host, wildcard, route.path_prefix,
                                route.path_prefix.lower(), route))
        # A prefix with upper-case letters can match a lower-case path once case is folded.
        self._cased = any(prefix != folded for _, _, prefix, folded, _ in self._rules)
        self._fold = self.paths.case == "insensitive"
        self._case_doubt = self.paths.case == "reject_ambiguous"
        # With only "/" prefixes every reading lands on the same route: nothing to check.
        self._readings = any(prefix != "/" for _, _, prefix, _, _ in self._rules)

    def match(self, host: str, path: str) -> Route | None:
        """``host`` as the client sent it (port and case ignored), ``path`` canonical and
        without the query. Raises ``AmbiguousPath`` when another reading of ``path`` that
        a backend could make would be routed elsewhere."""
        host = strip_port(host).lower()
        route = self._match(host, path, self._fold)
        # Only a path with something to doubt is read again: "%", ";", "//", or (when case
        # is in doubt) upper-case letters, or prefixes with them.
        if self._readings and ("%" in path or ";" in path or "//" in path or (
                self._case_doubt and (self._cased or not path.islower()))):
            for other, folded in readings(path, self.paths, self._cased):
                if self._match(host, other, folded) is not route:
                    raise AmbiguousPath(_why(path, other, folded))
        return route

    def _match(self, host: str, path: str, folded: bool) -> Route | None:
        if folded:
            path = path.lower()
        for rule_host, wildcard, prefix, folded_prefix, route in self._rules:
            if rule_host is not None:
                if wildcard:
                    # "*.example.com" matches "a.example.com" and "a.b.example.com", not the apex.
                    if not host.endswith(rule_host) or len(host) == len(rule_host):
                        continue
                elif host != rule_host:
                    continue
            if path_has_prefix(path, folded_prefix if folded else prefix):
                return route
        return None


def _why(path: str, other: str, folded: bool) -> str:
    if other == path:
        return "the path is routed differently when letter case is ignored (paths.case)"
    return (f"the path is routed differently when read as {other!r}"
            f"{' ignoring case' if folded else ''}, as some backends do (see [paths])")


def strip_port(host: str) -> str:
    if host.startswith("["):                      # [::1]:8080
        end = host.find("]")
        return host[1:end] if end > 0 else host
    colon = host.rfind(":")
    return host[:colon] if colon >= 0 and host.count(":") == 1 else host


def path_has_prefix(path: str, prefix: str) -> bool:
    """Segment-aware: "/api" matches "/api" and "/api/x", not "/apix"; "/api/" matches below it."""
    if prefix == "/" or path == prefix:
        return True
    if not path.startswith(prefix):
        return False
    return prefix.endswith("/") or path[len(prefix)] in "/?"
