"""``srv = "_http._tcp.api.internal"``: backends from SRV records (RFC 2782).

Each record gives a target host, a port, a weight and a priority. The records with the lowest
priority value are the primaries; every higher value becomes a backup (lbctl has two tiers, so
a third priority level joins the backups). SRV weights (0-65535) are used as the backends'
weights within ``MIN_WEIGHT`` .. ``MAX_WEIGHT`` (``entries.bounded_weight``): 0, "rarely", is
the minimum.

Targets are resolved to addresses from the answer's additional section when the server put
them there, else by A/AAAA lookups of their own. A backend is named ``target:port``, or
``target:port@address`` when a target has several addresses. A target that does not exist is
left out; one that cannot be resolved fails the whole lookup (keeping the last good set),
because leaving it out would drain a backend that may be perfectly well.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lbctl.config.model import BackendConfig, Discovery
from lbctl.config.kinds import is_dns_name
from lbctl.discovery.dns import NO_RECORDS, Answer, addresses, lookup, url_for, usable
from lbctl.discovery.entries import bounded_weight
from lbctl.discovery.resolution import Resolution, next_delay


LOOKUPS = 32            # target lookups in flight at once


class SrvSource:
    kind = "srv"

    def __init__(self, discovery: Discovery, resolver: Any) -> None:
        assert discovery.srv is not None
        self.name = discovery.srv
        self.scheme = discovery.scheme or "http"
        self.resolver = resolver
        self.interval = discovery.interval
        self.target = discovery.srv

    def changed(self) -> bool:
        return True             # only asking tells

    def next_delay(self, resolution: Resolution) -> float:
        return next_delay(self.interval, resolution.ttl)

    async def resolve(self) -> Resolution:
        answer = await lookup(self.resolver, self.name, "SRV")
        if answer.failure is not None:
            return Resolution.failed(answer.failure)
        if answer.empty is not None:
            return Resolution.empty("no SRV records" if answer.empty == NO_RECORDS
                                    else answer.empty)
        # "." as the target: the service is decidedly not available at this domain.
        records = [r for r in answer.records if r.target.to_text(omit_final_dot=True) != "."]
        if not records:
            return Resolution.empty("the service is not available (SRV target \".\")")
        # Port 0 takes no connection, and a target must be a host name: the backend is named
        # after it, in admin paths, labels and pages (the wire allows "/", "<" and quotes).
        records = [r for r in records if r.port != 0 and is_dns_name(_host(r.target))]
        if not records:
            return Resolution.failed("no SRV record has a usable target and port (a host "
                                     "name, a port other than 0)")
        targets = sorted({_host(r.target) for r in records})
        given = _additional_addresses(answer)
        # At most LOOKUPS questions in flight: a thousand targets are not a thousand
        # queries fired at the nameserver at once.
        slots = asyncio.Semaphore(LOOKUPS)

        async def resolve_target(t: str) -> Answer:
            if t in given:
                return await _known(given[t])
            async with slots:
                return await addresses(self.resolver, t)
        lookups = await asyncio.gather(*(resolve_target(t) for t in targets))
        by_target: dict[str, Answer] = {}
        for target, found in zip(targets, lookups):
            if found.failure is not None:
                return Resolution.failed(f"target {target}: {found.failure}")
            by_target[target] = found
        primary = min(r.priority for r in records)
        ttls = [answer.ttl] + [a.ttl for a in by_target.values() if a.records]
        backends = []
        for r in sorted(records, key=lambda r: (r.priority, _host(r.target), r.port)):
            target = _host(r.target)
            hosts, _ = usable([a.address for a in by_target[target].records], "")
            for host in hosts:
                name = f"{target}:{r.port}" if len(hosts) == 1 else f"{target}:{r.port}@{host}"
                backends.append(BackendConfig(
                    url=url_for(self.scheme, host, r.port), name=name, scheme=self.scheme,
                    host=host, port=r.port, weight=bounded_weight(r.weight),
                    backup=r.priority != primary, source=self.kind, server_name=target))
        known = [t for t in ttls if t is not None]
        return Resolution.found(backends, min(known) if known else None,
                                empty_reason="no SRV target has an address")


def _host(name: Any) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _additional_addresses(answer: Answer) -> dict[str, list]:
    """A/AAAA rrsets the server added for the targets: target -> rrsets."""
    import dns.rdatatype
    out: dict[str, list] = {}
    for rrset in answer.additional:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            out.setdefault(_host(rrset.name), []).append(rrset)
    return out


async def _known(rrsets: list) -> Answer:
    records = tuple(r for rrset in rrsets for r in rrset)
    return Answer(records=records, ttl=min(float(rrset.ttl) for rrset in rrsets))

