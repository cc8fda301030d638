"""Authorization: which authenticated callers a route lets through (``allow = {...}``).

Every list given must match (a consumer in ``consumers`` *and* claims as listed *and* a
method in ``methods`` *and* a client address in ``ips``); within a list, any entry does.
A claim matches when its value is one of the accepted strings, or, for an array claim
(``roles = ["a", "b"]``), when any element is.
"""

from __future__ import annotations

import ipaddress
from typing import Any


class Allowance:
    def __init__(self, allow) -> None:
        self.consumers = frozenset(allow.consumers) if allow.consumers is not None else None
        self.claims = [(claim, frozenset(values)) for claim, values in allow.claims] \
            if allow.claims is not None else None
        self.methods = frozenset(m.encode() for m in allow.methods) \
            if allow.methods is not None else None
        self.networks = [ipaddress.ip_network(c) for c in allow.ips] if allow.ips is not None else None

    def denies(self, method: bytes, client: str, consumer: str | None,
               claims: dict[str, Any] | None) -> str | None:
        """Why the request may not pass, or None when it may."""
        if self.methods is not None and method not in self.methods:
            return "method not allowed on this route"
        if self.networks is not None:
            try:
                ip = ipaddress.ip_address(client)
            except ValueError:
                return "client address not allowed"
            if not any(ip in net for net in self.networks):
                return "client address not allowed"
        if self.consumers is not None and consumer not in self.consumers:
            return "consumer not allowed"
        if self.claims is not None:
            for claim, accepted in self.claims:
                value = (claims or {}).get(claim)
                values = value if isinstance(value, list) else [value]
                if not any(isinstance(v, str) and v in accepted for v in values):
                    return f"claim {claim} not allowed"
        return None
