"""The request-target grammar (RFC 9112 3.2, built from RFC 3986's ABNF), written once.

An origin-form target is ``absolute-path [ "?" query ]``: a path is ``1*( "/" segment )``,
a segment is ``*pchar``, and a query is ``*( pchar / "/" / "?" )``, where

    pchar       = unreserved / pct-encoded / sub-delims / ":" / "@"
    unreserved  = ALPHA / DIGIT / "-" / "." / "_" / "~"
    sub-delims  = "!" / "$" / "&" / "'" / "(" / ")" / "*" / "+" / "," / ";" / "="
    pct-encoded = "%" HEXDIG HEXDIG

Everything else (space and controls, ``"``, ``#``, ``<``, ``>``, ``[``, ``\\``, ``]``,
``^``, backtick, ``{``, ``|``, ``}``, DEL and every byte above 0x7E) is not part of a
target. The config uses these classes for route prefixes, the proxy for request targets.
"""

from __future__ import annotations

import re
import string

UNRESERVED = string.ascii_letters + string.digits + "-._~"
SUB_DELIMS = "!$&'()*+,;="
PCHAR = UNRESERVED + SUB_DELIMS + ":@"          # plus pct-encoded
PATH_CHARS = PCHAR + "/"
QUERY_CHARS = PCHAR + "/?"

# Every byte an origin-form target may hold ("%" only as the start of pct-encoded).
TARGET_BYTES = (QUERY_CHARS + "%").encode("ascii")
PATH_BYTES = (PATH_CHARS + "%").encode("ascii")
# A "%" not followed by two hex digits.
BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def invalid_target_byte(target: bytes, allowed: bytes = TARGET_BYTES) -> int | None:
    """The first byte of ``target`` the grammar does not allow there, or None."""
    leftover = target.translate(None, allowed)
    if not leftover:
        return None
    return leftover[0]
