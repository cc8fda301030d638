"""A real DNS server on loopback for the discovery tests: dnslib's, answering from a zone that
the test changes while lbctl resolves.

Every address it hands out must be a loopback one (127.0.0.0/8 or ::1): the tests never send
traffic anywhere else. Unknown names are NXDOMAIN; a known name without records of the asked
type is an empty NOERROR answer. ``silent`` drops queries unanswered (a resolver that stopped
answering), ``servfail`` answers SERVFAIL to everything.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import Counter

from dnslib import AAAA, QTYPE, RCODE, RR, SRV, A, DNSLabel
from dnslib.server import BaseResolver, DNSError, DNSLogger, DNSServer


def _loopback(address: str) -> str:
    if not ipaddress.ip_address(address).is_loopback:
        raise AssertionError(f"test DNS answers must be loopback addresses, not {address}")
    return address


class Zone(BaseResolver):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[tuple[str, str], list[tuple[object, int]]] = {}
        self.names: set[str] = set()
        self.silent = False
        self.servfail = False
        self.additional = True          # SRV answers carry their targets' addresses
        self.queries: Counter[tuple[str, str]] = Counter()

    # ---- what the test changes -----------------------------------------------------------

    def set_a(self, name: str, addresses: list[str], ttl: int = 300) -> None:
        self._set(name, "A", [(A(_loopback(a)), ttl) for a in addresses])

    def set_aaaa(self, name: str, addresses: list[str], ttl: int = 300) -> None:
        self._set(name, "AAAA", [(AAAA(_loopback(a)), ttl) for a in addresses])

    def set_srv(self, name: str, records: list[tuple[int, int, int, str]], ttl: int = 300) -> None:
        """``records``: (priority, weight, port, target) each."""
        self._set(name, "SRV", [(SRV(priority=p, weight=w, port=port, target=target + "."), ttl)
                                for p, w, port, target in records])

    def remove(self, name: str) -> None:
        """The name no longer exists: NXDOMAIN."""
        name = name.lower()
        with self.lock:
            self.names.discard(name)
            for key in [k for k in self.records if k[0] == name]:
                del self.records[key]

    def _set(self, name: str, rtype: str, rdata: list) -> None:
        name = name.lower()
        with self.lock:
            self.names.add(name)
            self.records[(name, rtype)] = rdata

    def count(self, name: str, rtype: str) -> int:
        with self.lock:
            return self.queries[(name.lower(), rtype)]

    # ---- dnslib's side -------------------------------------------------------------------

    def resolve(self, request, handler):
        qname = request.q.qname
        name = str(qname).rstrip(".").lower()
        rtype = QTYPE[request.q.qtype]
        with self.lock:
            self.queries[(name, rtype)] += 1
            if self.silent:
                raise DNSError("silent")        # dnslib sends nothing back
            reply = request.reply()
            if self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            if name not in self.names:
                reply.header.rcode = RCODE.NXDOMAIN
                return reply
            for rdata, ttl in self.records.get((name, rtype), []):
                reply.add_answer(RR(qname, getattr(QTYPE, rtype), rdata=rdata, ttl=ttl))
                if rtype == "SRV" and self.additional:
                    target = str(rdata.target).rstrip(".").lower()
                    for kind in ("A", "AAAA"):
                        for address, attl in self.records.get((target, kind), []):
                            reply.add_ar(RR(DNSLabel(target + "."), getattr(QTYPE, kind),
                                            rdata=address, ttl=attl))
            return reply


class DnsServer:
    """``with DnsServer() as zone:`` a UDP nameserver on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        self.zone = Zone()
        quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self.server = DNSServer(self.zone, address="127.0.0.1", port=0, logger=quiet)
        self.port = self.server.server.server_address[1]
        self.zone.port = self.port
        self.zone.address = f"127.0.0.1:{self.port}"

    def __enter__(self) -> Zone:
        self.server.start_thread()
        return self.zone

    def __exit__(self, *exc) -> None:
        self.server.stop()
        self.server.server.server_close()
