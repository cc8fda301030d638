"""Routing: the first route whose host and path prefix match wins; no match is a 404."""

from __future__ import annotations

from typing import Sequence

from lbctl.config.model import Route


class Router:
    """Routes compiled once per config load: host rules lower-cased, wildcards split."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self._rules: list[tuple[str | None, bool, str, Route]] = []
        for route in routes:
            host = route.host.lower() if route.host else None
            wildcard = bool(host and host.startswith("*."))
            self._rules.append((host[1:] if wildcard else host, wildcard, route.path_prefix, route))

    def match(self, host: str, path: str) -> Route | None:
        """``host`` as the client sent it (port and case ignored), ``path`` without the query."""
        host = strip_port(host).lower()
        for rule_host, wildcard, prefix, route in self._rules:
            if rule_host is not None:
                if wildcard:
                    # "*.example.com" matches "a.example.com" and "a.b.example.com", not the apex.
                    if not host.endswith(rule_host) or len(host) == len(rule_host):
                        continue
                elif host != rule_host:
                    continue
            if path_has_prefix(path, prefix):
                return route
        return None


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
