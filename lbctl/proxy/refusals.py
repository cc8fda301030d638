"""What the proxy refuses beyond what the parser (llhttp) already rejects.

llhttp refuses most ambiguous framing (Content-Length with Transfer-Encoding, duplicate or
malformed Content-Length, obsolete line folding, bare CR/LF, control bytes in headers), but
it accepts some things a proxy must not pass on: transfer codings other than a lone
``chunked``, Transfer-Encoding in HTTP/1.0, HTTP/0.9 and HTTP/2.0 request lines, CONNECT,
an Upgrade request with a body, duplicate or malformed Host, absolute-form targets that
disagree with Host, and characters the request-target grammar does not allow (``#``, ``"``,
``<``, ``>``, ``[``, ``\\``, ``]``, ``^``, backtick, ``{``, ``|``, ``}``: see ``lbctl/uri.py``).
A ``#`` matters most: a backend reads ``/admin#`` as ``/admin``, while routing saw a path
outside ``/admin`` (the class of HAProxy's CVE-2023-45539). Each check returns
``(status, reason)`` for a refusal, or None.

Header names containing ``_`` are dropped rather than refused, as NGINX does by default:
``X_Forwarded_For`` and ``X-Forwarded-For`` look alike to CGI-style backends, and one
must not be smuggled past a check on the other.
"""

from __future__ import annotations

import re

import httptools

from lbctl import uri

_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{1,5})?")
# Host values seen well-formed: a site's few names come back request after request, so each
# is matched once (bounded: a client inventing names only costs the match each time).
_GOOD_HOSTS: set[bytes] = set()
_GOOD_HOSTS_MAX = 1024


def transfer_coding_problem(values: list[bytes]) -> tuple[int, str] | None:
    """A message may be framed by exactly one ``Transfer-Encoding: chunked``."""
    if len(values) > 1:
        return 400, "repeated Transfer-Encoding"
    value = values[0].strip().lower()
    if value == b"chunked":
        return None
    codings = [c.strip() for c in value.split(b",")]
    if b"" in codings:
        return 400, "malformed Transfer-Encoding"
    return 501, f"unsupported transfer coding {value.decode('latin-1')!r}"


def request_problem(method: bytes, version: str, target: bytes, hosts: list[bytes],
                    codings: list[bytes], has_length: bool,
                    upgrade: bool) -> tuple[int, str] | None:
    """Refusals that depend on the whole head, from what one walk over its headers found
    (``Exchange.inspect``): every Host and Transfer-Encoding value, whether a non-zero
    Content-Length and an Upgrade were sent."""
    if version not in ("1.0", "1.1"):
        return 505, f"HTTP/{version} is not supported"
    if method == b"CONNECT":
        return 405, "CONNECT is not supported by a reverse proxy"
    if len(hosts) > 1:
        return 400, "more than one Host header"
    if hosts and hosts[0] not in _GOOD_HOSTS:
        if not _HOST.fullmatch(hosts[0].strip()):
            return 400, "malformed Host header"
        if len(_GOOD_HOSTS) < _GOOD_HOSTS_MAX:
            _GOOD_HOSTS.add(hosts[0])
    if not hosts and version == "1.1":
        return 400, "missing Host header"
    if codings:
        if version == "1.0":
            return 400, "Transfer-Encoding in an HTTP/1.0 request"
        problem = transfer_coding_problem(codings)
        if problem:
            return problem
    if upgrade and (has_length or codings):
        return 400, "an Upgrade request must not carry a body"
    if target.startswith((b"http://", b"https://")):
        authority, target = split_absolute(target)
        if not hosts or authority.lower() != hosts[0].strip().lower():
            return 400, "absolute-form target does not match Host"
    elif target == b"*":
        if method != b"OPTIONS":
            return 400, "the * target is only valid for OPTIONS"
        return None
    elif not target.startswith(b"/"):
        return 400, "invalid request target"
    if target.translate(None, uri.TARGET_BYTES):      # bytes left: outside the grammar
        bad = uri.invalid_target_byte(target)
        return 400, f"{bytes([bad])!r} is not allowed in a request target"
    if b"%" in target and uri.BAD_ESCAPE.search(target):
        return 400, "a malformed percent-escape in the request target"
    return None


def split_absolute(target: bytes) -> tuple[bytes, bytes]:
    """An absolute-form target as (authority, origin-form target)."""
    rest = target.split(b"://", 1)[1]
    end = len(rest)
    for delimiter in (b"/", b"?"):
        found = rest.find(delimiter)
        if 0 <= found < end:
            end = found
    tail = rest[end:]
    return rest[:end], tail if tail.startswith(b"/") else b"/" + tail


def parser_error(parser: httptools.HttpRequestParser, exc: Exception) -> tuple[int, str]:
    """What a request llhttp could not parse gets. The HTTP/2 connection preface
    (``PRI * HTTP/2.0``) is a request line in an HTTP version this listener does not speak,
    so 505, as for ``GET / HTTP/2.0``: the answer an HTTP/1.1 server gives (RFC 9113 3.3)."""
    if parser.get_method() == b"PRI":
        return 505, "HTTP/2 is not supported (this listener speaks HTTP/1.1)"
    return 400, f"malformed request: {exc}"


def drop_underscored(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(n, v) for n, v in headers if b"_" not in n]
