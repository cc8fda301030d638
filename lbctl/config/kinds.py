"""Kinds of config values: how one TOML value is checked, converted, and written back.

A kind's ``parse`` turns the raw TOML value into what the model holds (seconds, bytes, an
``Address``...) or raises ``Invalid`` whose text completes the sentence "expected ...".
``dump`` is the inverse used by ``validate --effective``; ``parse(dump(x)) == x`` for every
value the model can hold, which the round-trip tests check.

Adding a config key is usually one line in ``schema.py`` naming one of these kinds; a new
kind is only needed for a new *shape* of value.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import quote, unquote, urlsplit

from lbctl import units, uri
from lbctl.config.model import Address
from lbctl.config.problems import one_of, suggest


class Invalid(ValueError):
    """A value that does not fit: ``str()`` says what was expected; ``hint`` may suggest a fix."""

    def __init__(self, expected: str, hint: str | None = None) -> None:
        super().__init__(expected)
        self.hint = hint


class Kind:
    """One kind of value. ``required`` keys have no default in the model."""

    expected = "a value"

    def __init__(self, *, required: bool = False, secret: bool = False,
                 expected: str | None = None) -> None:
        self.required = required
        self.secret = secret        # never written by --effective (e.g. the admin token)
        if expected is not None:
            self.expected = expected    # a more specific wording for one key

    def parse(self, value: Any) -> Any:
        return value

    def dump(self, value: Any) -> Any:
        return value

    def shown(self, value: Any) -> Any:
        """The found value as a problem may quote it (a kind holding secrets hides them)."""
        return value


class Str(Kind):
    expected = "a non-empty string"

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise Invalid(self.expected)
        return value


class Bool(Kind):
    expected = "true or false"

    def parse(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise Invalid(self.expected)
        return value


class Int(Kind):
    def __init__(self, *, min: int | None = None, max: int | None = None, **kw: Any) -> None:
        kw.setdefault("expected", "an integer" + _bounds(min, max))
        super().__init__(**kw)
        self.min, self.max = min, max

    def parse(self, value: Any) -> int:
        # bool is an int subclass in Python; `retries = true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(self.expected)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise Invalid(self.expected)
        return value


class Number(Kind):
    """A finite number held as float; ``positive`` means strictly greater than zero."""

    def __init__(self, *, positive: bool = False, min: float | None = None,
                 max: float | None = None, **kw: Any) -> None:
        kw.setdefault("expected", "a number > 0" if positive else "a number" + _bounds(min, max))
        super().__init__(**kw)
        self.positive, self.min, self.max = positive, min, max

    def parse(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Invalid(self.expected)
        if self.positive and value <= 0:
            raise Invalid(self.expected)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise Invalid(self.expected)
        return float(value)

    def dump(self, value: float) -> float | int:
        # weight = 3, not weight = 3.0: integral values read back to the same float.
        return int(value) if value == int(value) else value


def Percent(**kw: Any) -> Number:
    return Number(min=0, max=100, **kw)


class Duration(Kind):
    """Seconds as float, from ``"150ms"``, ``"2s"``, ``"1m"`` or a plain number of seconds."""

    def __init__(self, *, positive: bool = False, **kw: Any) -> None:
        kw.setdefault("expected", units.DURATION_EXPECTED + (" (greater than zero)" if positive else ""))
        super().__init__(**kw)
        self.positive = positive

    def parse(self, value: Any) -> float:
        try:
            seconds = units.parse_duration(value)
        except ValueError as exc:
            # "greater than zero" already says "not negative"; otherwise keep the parser's detail.
            raise Invalid(self.expected if self.positive else str(exc)) from None
        if self.positive and seconds <= 0:
            raise Invalid(self.expected)
        return seconds

    def dump(self, value: float) -> str:
        return units.format_duration(value)


class Size(Kind):
    """Bytes as int, from ``"64KiB"``, ``"1MiB"``, ``"10MB"`` or a plain number of bytes."""

    def __init__(self, *, positive: bool = False, **kw: Any) -> None:
        kw.setdefault("expected", units.SIZE_EXPECTED + (" (greater than zero)" if positive else ""))
        super().__init__(**kw)
        self.positive = positive

    def parse(self, value: Any) -> int:
        try:
            size = units.parse_size(value)
        except ValueError as exc:
            raise Invalid(self.expected if self.positive else str(exc)) from None
        if self.positive and size <= 0:
            raise Invalid(self.expected)
        return size

    def dump(self, value: int) -> str | int:
        text = units.format_size(value)
        return int(text) if text.isdigit() else text


class Choice(Kind):
    """One of a fixed set of words; a near miss gets a suggestion."""

    def __init__(self, choices: Iterable[str], **kw: Any) -> None:
        self.choices = tuple(choices)
        kw.setdefault("expected", one_of(self.choices))
        super().__init__(**kw)

    def parse(self, value: Any) -> str:
        if value not in self.choices:
            hint = suggest(value, self.choices) if isinstance(value, str) else None
            raise Invalid(self.expected, hint)
        return value


class ChoiceList(Kind):
    """A non-empty array of distinct words from a fixed set, held as a tuple."""

    def __init__(self, choices: Iterable[str], **kw: Any) -> None:
        self.item = Choice(choices)
        kw.setdefault("expected", f"a non-empty array of distinct values, each {self.item.expected}")
        super().__init__(**kw)

    def parse(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or len(set(map(repr, value))) != len(value):
            raise Invalid(self.expected)
        for item in value:
            if item not in self.item.choices:
                hint = suggest(item, self.item.choices) if isinstance(item, str) else None
                raise Invalid(self.expected, hint)
        return tuple(value)

    def dump(self, value: tuple[str, ...]) -> list[str]:
        return list(value)


# Workers of one serve, at most: each is a process of about 20 MiB, so a typo such as
# workers = 10000 is an error rather than thousands of interpreters.
MAX_WORKERS = 256


class Workers(Kind):
    """``[server] workers``: a count of worker processes, or "auto" (one per usable CPU)."""

    expected = f'"auto" or an integer from 1 to {MAX_WORKERS}'

    def parse(self, value: Any) -> int | str:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
            hint = suggest(value, ("auto",)) if isinstance(value, str) else None
            raise Invalid(self.expected, hint)
        return value


class Name(Kind):
    """A pool or backend name: it appears in admin API paths, metric labels, the event log,
    terminal tables and the web dashboard, so it is printable text and nothing else. Besides
    "/" and whitespace, the Unicode categories that are not text are refused: controls (C0
    and C1, whose CSI is a terminal escape), format characters (bidirectional overrides that
    make a name read backwards, zero-width joiners), lone surrogates (they cannot be encoded:
    ``/metrics`` would fail on them), private-use and unassigned code points."""

    expected = 'a non-empty name without "/", spaces or control characters'
    MAX = 320                   # characters; a DNS name with its port and address fits
    _ok = re.compile(r"[^\s/\x00-\x1f\x7f-\x9f]+")

    def parse(self, value: Any) -> str:
        if not is_name(value):
            raise Invalid(self.expected, f"at most {self.MAX} characters" if
                          isinstance(value, str) and len(value) > self.MAX else None)
        return value


def is_name(value: Any) -> bool:
    """Whether ``value`` may name a pool or backend (``Name``'s rule)."""
    return isinstance(value, str) and len(value) <= Name.MAX and \
        Name._ok.fullmatch(value) is not None and \
        (value.isascii() or not any(unicodedata.category(c)[0] in "CZ" for c in value))


class AddressKind(Kind):
    expected = 'an address "host:port" with port 1-65535, IPv6 in brackets like "[::1]:8080"'

    def parse(self, value: Any) -> Address:
        if not isinstance(value, str):
            raise Invalid(self.expected)
        return parse_address(value)

    def dump(self, value: Address) -> str:
        return str(value)


_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def parse_address(text: str) -> Address:
    """``host:port`` or ``[v6]:port`` into an ``Address``; raises ``Invalid`` saying what is wrong."""
    expected = AddressKind.expected
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or not _is_ipv6(host):
            raise Invalid(expected)
    else:
        host, sep, port = text.rpartition(":")
        if ":" in host:
            raise Invalid(expected, "IPv6 addresses go in brackets, like \"[::1]:8080\"")
        if not sep or not _HOSTNAME.fullmatch(host):
            raise Invalid(expected)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise Invalid(expected)
    return Address(host, int(port))


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loops_back(host: str, port: int, listening: Address | None) -> bool:
    """Whether a backend at ``host:port`` is lbctl's own ``listening`` address: each request
    sent there would come back in and be sent there again, until every connection is used.
    Only what can be told from the addresses: the same host, a wildcard listener and a
    loopback backend, or ``localhost`` and a loopback address, on the same port."""
    if listening is None or port != listening.port:
        return False
    a, b = host.lower(), listening.host.lower()
    if a == b:
        return True
    if b in ("0.0.0.0", "::"):
        return is_loopback(a)
    return is_loopback(a) and is_loopback(b) and "localhost" in (a, b)


class BackendUrl(Kind):
    """``http://host:port`` or ``https://host:port``; the port defaults to 80/443."""

    expected = 'a URL "http://host:port" or "https://host:port" with no path, query or user'

    def parse(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(self.expected)
        split_backend_url(value)
        return value


def split_backend_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a backend URL, or ``Invalid`` saying what is wrong with it."""
    expected = BackendUrl.expected
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        hint = "add the scheme, like \"http://127.0.0.1:9001\"" if "://" not in url else None
        raise Invalid(expected, hint)
    try:
        port = parts.port
    except ValueError:
        raise Invalid(expected) from None
    host = parts.hostname
    if not host or parts.username is not None or parts.query or parts.fragment:
        raise Invalid(expected)
    if parts.path not in ("", "/"):
        raise Invalid(expected, "backends are addressed by host and port; the request path is "
                                "forwarded as is")
    if ":" in host and not _is_ipv6(host) or ":" not in host and not _HOSTNAME.fullmatch(host):
        raise Invalid(expected)
    if port == 0:
        raise Invalid(expected)
    why = not_a_backend_address(host)
    if why is not None:
        raise Invalid(expected, why)
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def not_a_backend_address(host: str) -> str | None:
    """Why an IP address cannot be a backend's, or None (names and ordinary addresses).
    0.0.0.0 and :: are "any address" to bind, and to connect they silently mean this
    machine; multicast and broadcast addresses take no TCP connection."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    # ::ffff:0.0.0.0 is 0.0.0.0 to a dual-stack socket: judged as the IPv4 address it maps.
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    if ip.is_unspecified:
        return f"{host} means any address to listen on, not a backend to connect to"
    if ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        return f"{host} is a multicast or broadcast address, which takes no connection"
    return None


# A DNS name as discovery looks it up: labels of letters, digits, "-" and "_" (SRV owner
# names start with "_service._proto"), at most 63 characters each and 253 in all.
_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def is_dns_name(text: str) -> bool:
    labels = text.split(".")
    return 0 < len(text) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in labels) \
        and not _is_ip(text)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class DnsName(Kind):
    """A name to look up, like ``_http._tcp.api.internal`` (no trailing dot, no address)."""

    expected = 'a DNS name like "_http._tcp.api.internal"'

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not is_dns_name(value.rstrip(".")):
            raise Invalid(self.expected)
        return value.rstrip(".")


class DnsAddress(Kind):
    """``name:port``: a DNS name whose A/AAAA addresses all serve on ``port``."""

    expected = 'a DNS name and a port like "api.internal:8080"'

    def parse(self, value: Any) -> Address:
        if not isinstance(value, str):
            raise Invalid(self.expected)
        host, sep, port = value.rpartition(":")
        host = host.rstrip(".")
        if sep and (_is_ip(host) or _is_ip(host.strip("[]"))):
            raise Invalid(self.expected, "an address needs no discovery: list it under "
                                         "backends instead")
        if not sep or not is_dns_name(host) or not port.isdigit() \
                or not 1 <= int(port) <= 65535:
            raise Invalid(self.expected)
        return Address(host, int(port))

    def dump(self, value: Address) -> str:
        return str(value)


class Nameserver(Kind):
    """A nameserver's IP address, with an optional port (default 53)."""

    expected = 'a nameserver address like "127.0.0.1:53", "10.0.0.2" or "[::1]:5353"'

    def parse(self, value: Any) -> Address:
        if not isinstance(value, str):
            raise Invalid(self.expected)
        if _is_ip(value):
            return Address(value, 53)
        try:
            address = parse_address(value)
        except Invalid:
            raise Invalid(self.expected) from None
        if not _is_ip(address.host):
            raise Invalid(self.expected, "a nameserver is given by its IP address")
        return address

    def dump(self, value: Address) -> str:
        return str(value)


class HostPattern(Kind):
    """A route's host: exact (``api.example.com``) or a wildcard suffix (``*.example.com``)."""

    expected = 'a host name like "api.example.com" or "*.example.com", without a port'

    def parse(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(self.expected)
        name = value[2:] if value.startswith("*.") else value
        if ":" in name and not name.startswith("["):
            raise Invalid(self.expected, "the port is ignored when matching, leave it out")
        if not _HOSTNAME.fullmatch(name):
            raise Invalid(self.expected)
        # Hosts match case-insensitively; lowercase once here, not per request.
        return value.lower()


class HeaderValue(Kind):
    """A header value we send (e.g. the probe's Host): no spaces or control characters."""

    expected = "a non-empty string without spaces or control characters"
    _ok = re.compile(r"[^\s\x00-\x1f\x7f]+")

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not self._ok.fullmatch(value):
            raise Invalid(self.expected)
        return value


class UrlPath(Kind):
    expected = 'a path starting with "/"'

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not value.startswith("/") or re.search(r"[\s\x00-\x1f\x7f]", value):
            raise Invalid(self.expected)
        return value


class PathPrefix(Kind):
    """A route's ``path_prefix``, in the canonical form requests are routed by
    (``proxy/paths.py``); any other spelling could never match."""

    expected = 'a path starting with "/"'
    _chars = 'a path of RFC 3986 path characters (letters, digits, -._~!$&\'()*+,;=:@/ and %XX)'

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not value.startswith("/"):
            raise Invalid(self.expected)
        raw = value.encode("utf-8")
        bad = uri.invalid_target_byte(raw, uri.PATH_BYTES)
        if bad is not None:
            shown = repr(chr(bad)) if bad < 0x80 else "non-ASCII characters"
            raise Invalid(self._chars, f"percent-encode {shown}, as clients send it")
        if uri.BAD_ESCAPE.search(raw):
            raise Invalid(self._chars, 'a "%" must start an escape like %2F')
        for escape in re.findall(r"%[0-9A-Fa-f]{2}", value):
            char = chr(int(escape[1:], 16))
            if char in uri.UNRESERVED:
                raise Invalid("a path without escapes of unreserved characters (requests are "
                              "routed with them decoded)", f"write {char!r} for {escape}")
            if escape != escape.upper():
                raise Invalid("a path with upper-case escapes (requests are routed with them "
                              "upper-cased)", f"write {escape.upper()} for {escape}")
        if any(s in (".", "..") for s in value.split("/")[1:]) or "//" in value:
            raise Invalid('a path without "." or ".." segments or "//" (requests are routed '
                          'after removing them)')
        return value


# RFC 9110 token characters: what a method or a header name may contain.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Method(Kind):
    expected = 'an HTTP method like "GET" or "HEAD"'

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not _TOKEN.fullmatch(value):
            raise Invalid(self.expected)
        return value.upper()


class HashKey(Kind):
    expected = '"ip", "path", "header:NAME" or "cookie:NAME"'

    def parse(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(self.expected)
        if value in ("ip", "path"):
            return value
        source, sep, name = value.partition(":")
        if sep and source in ("header", "cookie") and _TOKEN.fullmatch(name):
            return value
        raise Invalid(self.expected, suggest(value, ("ip", "path")))


class Regex(Kind):
    expected = "a regular expression (Python syntax)"

    def parse(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(self.expected)
        try:
            re.compile(value)
        except re.error as exc:
            raise Invalid(f"{self.expected}; it does not compile: {exc}") from None
        return value


class StatusRanges(Kind):
    """``200``, ``"200-399"``, or an array of these; held as inclusive ``(low, high)`` ranges."""

    expected = 'HTTP statuses (100-599): 200, "200-399", or an array like [200, "300-399"]'
    _range = re.compile(r"\s*(\d{3})\s*-\s*(\d{3})\s*")

    def parse(self, value: Any) -> tuple[tuple[int, int], ...]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise Invalid(self.expected)
        return tuple(self._one(item) for item in items)

    def _one(self, item: Any) -> tuple[int, int]:
        if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            return (item, item)
        if isinstance(item, str):
            if item.strip().isdigit():
                return self._one(int(item))
            match = self._range.fullmatch(item)
            if match:
                low, high = int(match.group(1)), int(match.group(2))
                if 100 <= low <= high <= 599:
                    return (low, high)
        raise Invalid(self.expected)

    def dump(self, value: tuple[tuple[int, int], ...]) -> list[int | str]:
        return [low if low == high else f"{low}-{high}" for low, high in value]


# ---- gateway values: keys, auth, allow-lists, rate limits, trusted proxies ----

class Cidrs(Kind):
    """An array of networks like ``"10.0.0.0/8"`` (a bare address is a /32 or /128)."""

    expected = 'an array of networks like ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]'

    def parse(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise Invalid(self.expected)
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except (TypeError, ValueError):
                raise Invalid(self.expected) from None
        return tuple(out)

    def dump(self, value: tuple[str, ...]) -> list[str]:
        return list(value)


class FilePath(Kind):
    """A path to a file; relative ones are taken from the config file's directory."""

    _bad = re.compile(r"[\x00-\x1f\x7f]")

    def __init__(self, what: str = "file", **kw: Any) -> None:
        kw.setdefault("expected", f"a path to a {what}")
        super().__init__(**kw)

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not value or self._bad.search(value):
            raise Invalid(self.expected)
        return value


class HeaderName(Kind):
    expected = 'a header name like "X-API-Key"'

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not _TOKEN.fullmatch(value):
            raise Invalid(self.expected)
        return value


class EnvName(Kind):
    expected = 'an environment variable name like "TEAM_A_KEY"'
    _ok = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not self._ok.fullmatch(value):
            raise Invalid(self.expected)
        return value


class KeyHash(Kind):
    """``"sha256:<64 hex digits>"``: the digest of an API key, so the key is not in the file."""

    expected = '"sha256:" followed by 64 hex digits (the SHA-256 of the key)'
    _ok = re.compile(r"sha256:[0-9a-fA-F]{64}")

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not self._ok.fullmatch(value):
            hint = None
            if isinstance(value, str) and ":" not in value:
                hint = 'write "sha256:" and the hex digest, e.g. from: printf %s "$KEY" | sha256sum'
            raise Invalid(self.expected, hint)
        return value.lower()


class RateKey(Kind):
    expected = '"ip", "consumer" or "header:NAME"'

    def parse(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(self.expected)
        if value in ("ip", "consumer"):
            return value
        source, sep, name = value.partition(":")
        if sep and source == "header" and _TOKEN.fullmatch(name):
            return value
        raise Invalid(self.expected, suggest(value, ("ip", "consumer")))


class ListOf(Kind):
    """A non-empty array of distinct values of one kind, held as a tuple."""

    def __init__(self, item: Kind, **kw: Any) -> None:
        self.item = item
        kw.setdefault("expected", f"a non-empty array of distinct values, each {item.expected}")
        super().__init__(**kw)

    def parse(self, value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list) or not value:
            raise Invalid(self.expected)
        out = []
        for item in value:
            try:
                out.append(self.item.parse(item))
            except Invalid as exc:
                raise Invalid(self.expected, exc.hint) from None
        if len(set(out)) != len(out):
            raise Invalid(self.expected)
        return tuple(out)

    def dump(self, value: tuple[Any, ...]) -> list[Any]:
        return [self.item.dump(item) for item in value]


class Upgrades(Kind):
    """``["websocket"]``: the protocols an Upgrade may switch a connection to (a tunnel).
    Empty: none. h2c is refused: the listener speaks HTTP/1.1, and an HTTP/2 upgrade would
    hand the backend a connection the proxy can no longer read."""

    expected = 'an array of protocol names like ["websocket"] (may be empty; not "h2c")'
    _ok = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:/[!#$%&'*+\-.^_`|~0-9A-Za-z]+)?")

    def parse(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise Invalid(self.expected)
        out = []
        for item in value:
            if not isinstance(item, str) or not self._ok.fullmatch(item) or \
                    item.lower() == "h2c" or item.lower() in out:
                raise Invalid(self.expected)
            out.append(item.lower())
        return tuple(out)

    def dump(self, value: tuple[str, ...]) -> list[str]:
        return list(value)


class ClaimValues(Kind):
    """``{ role = ["admin"], tier = "gold" }``: each claim and the values it may have."""

    expected = 'a table of claim names, each a string or an array of strings, like { role = ["admin"] }'

    def parse(self, value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
        if not isinstance(value, dict) or not value:
            raise Invalid(self.expected)
        out = []
        for claim, accepted in value.items():
            items = accepted if isinstance(accepted, list) else [accepted]
            if not items or not all(isinstance(v, str) for v in items):
                raise Invalid(self.expected)
            out.append((claim, tuple(items)))
        return tuple(out)

    def dump(self, value: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, list[str]]:
        return {claim: list(accepted) for claim, accepted in value}


class HeaderMap(Kind):
    """``{ sub = "X-User" }``: claim name -> the header that carries its value to the backend."""

    expected = 'a table of claim names to header names, like { sub = "X-User" }'

    # Headers the proxy writes or derives itself: a claim must not be able to set them
    # (a "Content-Length" from a token would be request smuggling).
    RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade",
                          "keep-alive", "te", "trailer", "expect", "proxy-connection",
                          "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                          "x-request-id", "x-consumer", "authorization", "forwarded"})

    def parse(self, value: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict) or not value:
            raise Invalid(self.expected)
        headers = [v.lower() for v in value.values() if isinstance(v, str)]
        if len(headers) != len(value) or len(set(headers)) != len(headers) or \
                not all(_TOKEN.fullmatch(v) for v in headers):
            raise Invalid(self.expected)
        reserved = [v for v in value.values() if v.lower() in self.RESERVED]
        if reserved:
            raise Invalid(self.expected, f"{reserved[0]} is set by the proxy itself; "
                                         f"choose another header name")
        return tuple(value.items())

    def dump(self, value: tuple[tuple[str, str], ...]) -> dict[str, str]:
        return dict(value)


class LimitName(Kind):
    """A rate limit's name: a quoted string in RateLimit headers and part of the store's keys."""

    expected = ('a name of up to 200 printable ASCII characters without spaces, quotes, '
                'backslashes or ":"')
    _ok = re.compile(r'[\x21\x23-\x39\x3b-\x5b\x5d-\x7e]{1,200}')

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not self._ok.fullmatch(value):
            raise Invalid(self.expected)
        return value


def default_limit_name(host: str | None, path_prefix: str) -> str:
    """A route's limit name when the file gives none: its host and path prefix, with any
    character a name cannot hold percent-encoded (so instances with the same routes agree)."""
    text = (host or "") + path_prefix
    out = []
    for ch in text:
        if LimitName._ok.fullmatch(ch) and ch != "%":
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)[:200]


class StoreUrl(Kind):
    """Where the shared store listens: ``redis://``, ``rediss://`` (TLS) or ``unix://``."""

    expected = ('a Redis URL like "redis://127.0.0.1:6379/0", "rediss://host:6380/0" (TLS) '
                'or "unix:///run/redis/redis.sock?db=0"')

    def parse(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(self.expected)
        split_store_url(value)
        return value

    def shown(self, value: Any) -> Any:
        return redact_url(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class StoreAddress:
    """A store URL taken apart; ``url`` is the URL without its password (safe to show)."""
    scheme: str                     # "redis" | "rediss" | "unix"
    host: str | None                # redis/rediss
    port: int | None
    path: str | None                # unix: the socket
    db: int
    username: str | None
    password: str | None
    url: str


def split_store_url(url: str) -> StoreAddress:
    """The parts of a store URL, or ``Invalid`` saying what is wrong (never quoting it)."""
    expected = StoreUrl.expected
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise Invalid(expected, None if "://" in url else
                      'add the scheme, like "redis://127.0.0.1:6379/0"')
    if parts.fragment:
        raise Invalid(expected)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    user = quote(username, safe="") + "@" if username else ""
    if parts.scheme == "unix":
        if parts.hostname or parts.port or not parts.path.startswith("/") or parts.path == "/":
            raise Invalid(expected, 'a socket path is absolute: "unix:///run/redis/redis.sock"')
        db = 0
        if parts.query:
            name, sep, number = parts.query.partition("=")
            if name != "db" or not sep or not number.isdigit():
                raise Invalid(expected, 'the only query a unix:// URL takes is "?db=N"')
            db = int(number)
        query = f"?db={db}" if parts.query else ""
        return StoreAddress("unix", None, None, parts.path, db, username, password,
                            f"unix://{user}{parts.path}{query}")
    try:
        port = parts.port
    except ValueError:
        raise Invalid(expected) from None
    host = parts.hostname
    if not host or port == 0:
        raise Invalid(expected)
    if ":" in host and not _is_ipv6(host) or ":" not in host and not _HOSTNAME.fullmatch(host):
        raise Invalid(expected)
    if parts.query:
        raise Invalid(expected, 'the database number goes in the path: "redis://host:6379/0"')
    db_text = parts.path[1:] if parts.path.startswith("/") else parts.path
    if db_text and not db_text.isdigit():
        raise Invalid(expected, 'the path is the database number: "redis://host:6379/0"')
    db = int(db_text) if db_text else 0
    port = port or 6379
    shown_host = f"[{host}]" if ":" in host else host
    return StoreAddress(parts.scheme, host, port, None, db, username, password,
                        f"{parts.scheme}://{user}{shown_host}:{port}/{db}")


def redact_url(text: str) -> str:
    """``text`` with everything between "://" and the last "@" hidden: a password in a URL
    that does not even parse must not reach a terminal or a log."""
    scheme, sep, rest = text.partition("://")
    if not sep or "@" not in rest:
        return text
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" from {low:g} to {high:g}"
    if low is not None:
        return f" >= {low:g}"
    if high is not None:
        return f" <= {high:g}"
    return ""
