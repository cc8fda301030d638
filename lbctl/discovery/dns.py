"""DNS lookups with dnspython's asyncio resolver, and the A/AAAA source.

``lookup`` asks one question and turns every outcome into data: the records and their TTL,
an authoritative "no such name" or "no records", or a failure described in a few words an
operator can act on (``timeout after 2s``, ``SERVFAIL``, ``nameserver unreachable``). Names are
absolute: no search domains are appended, so ``api`` never silently becomes ``api.corp``.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Any

from lbctl.config.kinds import not_a_backend_address
from lbctl.config.model import Address, BackendConfig, Discovery
from lbctl.discovery.resolution import Resolution, next_delay

# lookup() outcomes besides records: authoritative answers, then failures.
NXDOMAIN = "NXDOMAIN"
NO_RECORDS = "no records"


@dataclass(frozen=True)
class Answer:
    records: tuple = ()             # rdata objects of the asked type
    ttl: float | None = None
    empty: str | None = None        # NXDOMAIN or NO_RECORDS: authoritative, nothing there
    failure: str | None = None      # why there is no answer to trust
    additional: tuple = ()          # rrsets of the additional section (SRV: target addresses)


class ResolverError(Exception):
    """The nameserver setting cannot be used (e.g. no /etc/resolv.conf); one line."""


def make_resolver(nameserver: Address | None, timeout: float) -> Any:
    """A dnspython asyncio resolver asking ``nameserver`` (default: the system's), giving up on a
    question after ``timeout`` seconds in all. No cache: every lookup asks again."""
    import dns.asyncresolver
    import dns.resolver
    try:
        resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
    except dns.resolver.NoResolverConfiguration as exc:
        raise ResolverError(f"no system nameserver to ask ({exc}); set resolver = "
                            '"IP:PORT" in [pools.NAME.discovery]') from None
    if nameserver is not None:
        resolver.nameservers = [nameserver.host]
        resolver.port = nameserver.port
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.cache = None
    return resolver


async def lookup(resolver: Any, name: str, rdtype: str) -> Answer:
    """Ask ``name``/``rdtype`` once. Never raises for what the DNS says."""
    import dns.exception
    import dns.resolver
    try:
        answer = await resolver.resolve(name + ".", rdtype, search=False)
    except dns.resolver.NXDOMAIN:
        return Answer(empty=NXDOMAIN)
    except dns.resolver.NoAnswer:
        return Answer(empty=NO_RECORDS)
    except dns.resolver.NoNameservers as exc:
        return Answer(failure=_no_nameservers(exc))
    except dns.exception.Timeout:
        return Answer(failure=f"timeout after {resolver.lifetime:g}s")
    except dns.exception.DNSException as exc:
        return Answer(failure=str(exc) or type(exc).__name__)
    except OSError as exc:
        return Answer(failure=f"nameserver unreachable ({exc.strerror or exc})")
    rrset = answer.rrset
    additional = tuple(answer.response.additional) if answer.response is not None else ()
    return Answer(records=tuple(rrset) if rrset is not None else (),
                  ttl=float(rrset.ttl) if rrset is not None else None, additional=additional)


def _no_nameservers(exc: Exception) -> str:
    """dnspython's error list, reduced to the answers (``SERVFAIL``) or the reason (refused)."""
    errors = getattr(exc, "kwargs", {}).get("errors") or []
    words = []
    for error in errors:
        err = error[3] if len(error) > 3 else error[-1]
        if isinstance(err, str):
            words.append(err)                   # an rcode: SERVFAIL, REFUSED, ...
        elif isinstance(err, ConnectionRefusedError):
            words.append("nameserver unreachable (connection refused)")
        elif isinstance(err, OSError):
            words.append(f"nameserver unreachable ({err.strerror or err})")
        else:
            words.append(str(err) or type(err).__name__)
    unique = list(dict.fromkeys(words))
    return ", ".join(unique) if unique else "no nameserver answered"


async def addresses(resolver: Any, name: str) -> Answer:
    """A and AAAA together. Failed if either failed (a half answer would drop backends);
    records from both otherwise; NXDOMAIN or no records only when neither has any."""
    v4, v6 = await asyncio.gather(lookup(resolver, name, "A"), lookup(resolver, name, "AAAA"))
    for answer in (v4, v6):
        if answer.failure is not None:
            return answer
    if NXDOMAIN in (v4.empty, v6.empty):
        return Answer(empty=NXDOMAIN)
    records = v4.records + v6.records
    if not records:
        return Answer(empty=NO_RECORDS)
    ttls = [a.ttl for a in (v4, v6) if a.ttl is not None and a.records]
    return Answer(records=records, ttl=min(ttls) if ttls else None)


def usable(hosts, what: str) -> tuple[list[str], str | None]:
    """The addresses a backend can have, in order, and why there are none when every one
    was left out (``0.0.0.0`` is what some resolvers answer for a name they block; to
    connect, it means this machine)."""
    kept = sorted((h for h in set(hosts) if not_a_backend_address(h) is None),
                  key=address_order)
    if hosts and not kept:
        first = sorted(set(hosts))[0]
        return [], f"{what} holds no address a backend can have ({not_a_backend_address(first)})"
    return kept, None


def address_order(host: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(host)
    return ip.version, int(ip)


def url_for(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{Address(host, port)}"


class DnsSource:
    """``dns = "name:port"``: one backend per A/AAAA address, named ``address:port``."""

    kind = "dns"

    def __init__(self, discovery: Discovery, resolver: Any) -> None:
        assert discovery.dns is not None
        self.name = discovery.dns.host
        self.port = discovery.dns.port
        self.scheme = discovery.scheme or "http"
        self.resolver = resolver
        self.interval = discovery.interval
        self.target = str(discovery.dns)

    def changed(self) -> bool:
        return True             # only asking tells

    def next_delay(self, resolution: Resolution) -> float:
        return next_delay(self.interval, resolution.ttl)

    async def resolve(self) -> Resolution:
        answer = await addresses(self.resolver, self.name)
        if answer.failure is not None:
            return Resolution.failed(answer.failure)
        if answer.empty is not None:
            return Resolution.empty("no A or AAAA records" if answer.empty == NO_RECORDS
                                    else answer.empty)
        backends = []
        # Sorted: resolvers rotate their answers, and the pool's order should not churn.
        hosts, why = usable([r.address for r in answer.records], "the answer")
        if why is not None:
            return Resolution.failed(why)
        for host in hosts:
            backends.append(BackendConfig(
                url=url_for(self.scheme, host, self.port), name=str(Address(host, self.port)),
                scheme=self.scheme, host=host, port=self.port, source=self.kind,
                server_name=self.name))
        return Resolution.found(backends, answer.ttl)
