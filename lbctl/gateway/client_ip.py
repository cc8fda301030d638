"""The client's address, resolved once per request, used by everything downstream.

Forwarding headers are believed only from a trusted proxy (``[listen] trusted_proxies``):
from anyone else they are ignored and the client address is the TCP peer's. From a trusted
peer, the chain (X-Forwarded-For, or ``Forwarded`` when ``client_ip_header = "Forwarded"``)
is walked from the right, skipping trusted proxies; the first untrusted address is the
client. Addresses left of it were written by the client itself and could say anything.

Only one header is read: if both were, a client could put a spoofed address in the one the
trusted proxy does not append to.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> Address | None:
    """An address from a chain entry: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``."""
    text = text.strip().strip('"')
    if text.startswith("["):
        end = text.find("]")
        text = text[1:end] if end > 0 else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def forwarded_for(values: Iterable[bytes]) -> list[str]:
    """The ``for=`` parameters of RFC 7239 ``Forwarded`` headers, in order."""
    out = []
    for value in values:
        for element in value.decode("latin-1").split(","):
            node = None
            for pair in element.split(";"):
                name, _, raw = pair.strip().partition("=")
                if name.strip().lower() == "for":
                    node = raw.strip()
            out.append(node if node is not None else "unknown")
    return out


def x_forwarded_for(values: Iterable[bytes]) -> list[str]:
    return [part.strip() for value in values for part in value.decode("latin-1").split(",")
            if part.strip()]


class ClientResolver:
    """Compiled from ``[listen]``: the trusted networks and which header they write."""

    def __init__(self, trusted: Iterable[str], header: str = "X-Forwarded-For") -> None:
        self.networks = [ipaddress.ip_network(cidr) for cidr in trusted]
        self.header = header.lower().encode()
        self.parse = forwarded_for if self.header == b"forwarded" else x_forwarded_for

    def trusted(self, ip: Address | None) -> bool:
        return ip is not None and any(ip in net for net in self.networks)

    def resolve(self, peer: str, headers: list[tuple[bytes, bytes]]) -> tuple[str, str, bool]:
        """``(client, x_forwarded_for_to_send, peer_trusted)``."""
        if not self.networks:
            return peer, peer, False
        peer_ip = parse_ip(peer)
        if not self.trusted(peer_ip):
            return peer, peer, False
        chain = self.parse(value for name, value in headers if name.lower() == self.header)
        client = str(peer_ip)
        for entry in reversed(chain):
            ip = parse_ip(entry)
            if ip is None:
                break       # garbage handed on by a trusted hop: that hop is what we know
            client = str(ip)
            if not self.trusted(ip):
                break
        # Sent on as X-Forwarded-For: addresses without ports or quotes, others as received.
        sent = [str(ip) if (ip := parse_ip(entry)) is not None else entry for entry in chain]
        return client, ", ".join([*sent, peer]), True
