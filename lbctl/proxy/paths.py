"""One canonical form of the request path, and the other readings a backend might make of it.

If the proxy routed by one spelling and a backend read another, ``/public/../admin``,
``/admin;x`` or ``/ADMIN`` could pass a route meant for something else and reach ``/admin``
without ``/admin``'s auth. Two defences, both driven by ``[paths]`` (``config.model.Paths``,
after Envoy's ``normalize_path``, ``merge_slashes`` and ``path_with_escaped_slashes_action``):

* ``canonical_path`` normalises once, for routing *and* forwarding: percent-encoded
  unreserved characters are decoded (other escapes upper-cased), dot segments removed
  (RFC 3986 5.2.4), runs of slashes merged (``merge_slashes``), encoded slashes rejected or
  decoded when configured, path parameters rejected or stripped when configured. Malformed
  escapes, an encoded NUL, a raw backslash, an encoded ``;`` and a dot segment carrying
  parameters (``/..;/``, Tomcat's traversal) are refused.
* ``readings`` lists the other ways common backends read a canonical path that the policy
  leaves open: ``%2F``/``%5C`` decoded to ``/`` (many frameworks), ``;params`` stripped from
  each segment (Tomcat, Jetty, Spring), ``//`` merged (when ``merge_slashes = false``), and
  letter case ignored (IIS, case-insensitive file systems). The router refuses a request
  when any of them, alone or combined, lands on a different route than the path as sent.

Nothing here runs for the common path: ``canonical_path`` returns a path without ``%``,
``;``, ``//`` or ``/.`` untouched, and ``readings`` is empty for a path without the
characters that trigger them.
"""

from __future__ import annotations

import itertools
import re
from typing import Callable

from lbctl.config.model import Paths

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPED_SLASH = re.compile(r"%2F|%5C")
_PARAMS = re.compile(r";[^/]*")
_UPPER = re.compile(r"[A-Z]")


class PathRefused(ValueError):
    """The path must be refused (400); ``str()`` says why."""


def _unescape(match: re.Match) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def canonical_path(path: str, policy: Paths) -> str:
    """The canonical form of an origin-form path (no query); raises ``PathRefused``."""
    if "\\" in path:
        raise PathRefused("a backslash in the path (some backends read it as '/')")
    if "%" in path:
        if _BAD_ESCAPE.search(path):
            raise PathRefused("a malformed percent-escape in the path")
        path = _ESCAPE.sub(_unescape, path)
        if "%00" in path:
            raise PathRefused("an encoded NUL in the path")
        if "%3B" in path and policy.path_parameters != "keep":
            # Jetty and Spring refuse it too: whether it is data or a parameter delimiter
            # depends on when a backend decodes.
            raise PathRefused("an encoded ';' in the path")
        if (action := policy.escaped_slashes) != "keep" and action != "reject_ambiguous" \
                and _ESCAPED_SLASH.search(path):
            if action == "reject":
                raise PathRefused("an encoded slash in the path (paths.escaped_slashes = "
                                  '"reject")')
            path = _ESCAPED_SLASH.sub("/", path)            # "unescape"
    if ";" in path and (action := policy.path_parameters) != "keep":
        if action == "reject":
            raise PathRefused('a path parameter (";") in the path (paths.path_parameters = '
                              '"reject")')
        for segment in path.split("/"):
            if ";" in segment and segment.partition(";")[0] in (".", ".."):
                raise PathRefused("a dot segment with parameters in the path")
        if action == "strip":
            path = _PARAMS.sub("", path)
    if "//" not in path and "/." not in path:
        return path                     # the common case: nothing to normalise
    return remove_dot_segments(path, policy.merge_slashes)


def remove_dot_segments(path: str, merge: bool) -> str:
    """RFC 3986 5.2.4 on an absolute path; with ``merge``, empty segments go too."""
    out: list[str] = []
    trailing = False
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
            trailing = True
        elif segment == "." or (merge and segment == ""):
            trailing = True
        else:
            out.append(segment)
            trailing = False
    return "/" + "/".join(out) + ("/" if trailing and out else "")


# ---- other readings -------------------------------------------------------------------------

def _decode_slashes(path: str) -> str:
    return _ESCAPED_SLASH.sub("/", path)


def _strip_parameters(path: str) -> str:
    return _PARAMS.sub("", path)


def readings(path: str, policy: Paths, cased_prefixes: bool) -> list[tuple[str, bool]]:
    """Other readings of canonical ``path`` to check, as (path, case-folded) pairs; empty
    when the policy and the path leave no doubt. The reading routed by is ``path`` itself,
    case-folded only with ``case = "insensitive"``. ``cased_prefixes``: some route's prefix
    has upper-case letters (so even a lower-case path can match differently when folded)."""
    transforms: list[Callable[[str], str]] = []
    merge = policy.merge_slashes
    if policy.escaped_slashes == "reject_ambiguous" and "%" in path and \
            _ESCAPED_SLASH.search(path):
        transforms.append(_decode_slashes)
    if policy.path_parameters == "reject_ambiguous" and ";" in path:
        transforms.append(_strip_parameters)
    if not merge and "//" in path:
        transforms.append(_merge_slashes)
    primary_fold = policy.case == "insensitive"
    fold = policy.case == "reject_ambiguous" and (cased_prefixes or _UPPER.search(path) is not None)
    if not transforms and not fold:
        return []
    out: list[tuple[str, bool]] = []
    folds = (False, True) if fold else (primary_fold,)
    for n in range(len(transforms) + 1):
        for chosen in itertools.combinations(transforms, n):
            alternative = path
            for transform in chosen:
                alternative = transform(alternative)
            if chosen:
                alternative = remove_dot_segments(alternative, merge or _merge_slashes in chosen)
            for folded in folds:
                if chosen or folded != primary_fold:
                    out.append((alternative, folded))
    return out


def _merge_slashes(path: str) -> str:
    return remove_dot_segments(path, True)
