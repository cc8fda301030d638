"""One canonical form of the request path, used for routing *and* forwarding.

If the proxy routed by one spelling and forwarded another, ``/public/../admin`` or
``/%2e%2e/admin`` could pass a route meant for ``/public`` and reach ``/admin`` on the backend.
So the path is normalised once: percent-encoded unreserved characters are decoded (other
escapes keep their meaning, with upper-case hex, so ``%2F`` stays data), dot segments are
removed (RFC 3986 5.2.4) and runs of slashes collapse to one. Malformed escapes, an encoded
NUL and raw backslashes (which some backends treat as ``/``) are refused.
"""

from __future__ import annotations

import re

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _unescape(match: re.Match) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def canonical_path(path: str) -> str | None:
    """The canonical form of an origin-form path, or None when it must be refused."""
    if "\\" in path:
        return None
    if "%" in path:
        if _BAD_ESCAPE.search(path):
            return None
        path = _ESCAPE.sub(_unescape, path)
        if "%00" in path:
            return None
    if "//" not in path and "/." not in path:
        return path                     # the common case: nothing to normalise
    out: list[str] = []
    trailing = False
    for segment in path.split("/")[1:]:
        trailing = segment in ("", ".", "..")
        if segment == "..":
            if out:
                out.pop()
        elif not trailing:
            out.append(segment)
    return "/" + "/".join(out) + ("/" if trailing and out else "")
