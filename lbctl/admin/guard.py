"""What the admin API accepts from a client: no web page may drive it, no body may crash it.

An admin API on loopback is reachable by every web page the operator's browser loads. A page
cannot read the answers (the same-origin policy), but it can *send*: a form POST, or a
``fetch`` with ``mode: "no-cors"``, disables a backend as well as ``lbctl backend`` does. And
with DNS rebinding (``evil.example`` resolving to 127.0.0.1), the page even becomes
same-origin with the API. So, before the token check (``api.py``):

* ``Sec-Fetch-Site: cross-site`` or ``same-site`` is refused (403): the browser says the
  request comes from another site. ``same-origin`` (the dashboard's own page) and ``none``
  (an address typed by the user) pass; tools that send no such header pass.
* An ``Origin`` other than the admin's own (``http://`` + the Host the request was sent to)
  is refused (403); browsers send Origin on every POST, so this also covers browsers too old
  for Sec-Fetch-Site.
* Without a token, ``Host`` must name this machine (``localhost``, a loopback address, or the
  configured admin host; any port, so SSH tunnels work): a rebound name is refused (403).
  With a token, a page has no token to send.
* A request with a body, or any ``Content-Type``, must be ``application/json`` (415). No
  form or ``text/plain`` body, the only kinds a page may send cross-site without asking the
  API first (a CORS preflight, which this API never grants), is ever read.

``json_body`` reads a JSON object: too large, not JSON, nested too deep, ``NaN`` or
``Infinity``, numbers too large: each is a ``BadBody`` with a one-line reason, a 400.
"""

from __future__ import annotations

import json
import re

from aiohttp import web

from lbctl.config.kinds import is_loopback
from lbctl.config.problems import repeated_key

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PORT = re.compile(r":[0-9]{1,5}")
MAX_BODY = 16 * 1024           # admin bodies are a few bytes; anything larger is not ours


class BadBody(ValueError):
    """A request body the admin API will not use; ``str()`` says why (a 400)."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def host_name(host: str) -> str:
    """The name part of a Host header value, lower-cased, without port or brackets. A
    value that is not ``name[:port]`` (``127.0.0.1:80@evil.example``, ``a:b``) is returned
    whole, and so is never a local name."""
    host = host.strip().lower()
    if host.startswith("["):
        name, sep, port = host[1:].partition("]")
        return name if sep and (not port or _PORT.fullmatch(port)) else host
    name, sep, port = host.rpartition(":")
    if sep and name.count(":") == 0:
        return name if _PORT.fullmatch(sep + port) else host
    return host


def refusal(request: web.Request, *, token: bool, admin_host: str) -> web.Response | None:
    """The response refusing ``request`` for coming from a web page, or None."""
    headers = request.headers
    host = headers.get("Host")
    if not token and host is not None:
        name = host_name(host)
        if not is_loopback(name) and name != admin_host.lower():
            return _error(403, f"Host {host!r} is not this admin API's address; refused "
                               f"(a DNS-rebinding page would send that)")
    # A browser sends one value; any value naming another site refuses, however written.
    sites = {part.strip() for part in headers.get("Sec-Fetch-Site", "").lower().split(",")}
    for site in ("cross-site", "same-site"):
        if site in sites:
            return _error(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
    origin = headers.get("Origin")
    if origin is not None and (host is None or origin.strip().lower() != f"http://{host.strip().lower()}"):
        return _error(403, f"cross-origin request refused (Origin: {origin[:100]})")
    if request.method not in SAFE_METHODS:
        content_type = headers.get("Content-Type")
        has_body = (request.content_length or 0) > 0 or \
            "chunked" in headers.get("Transfer-Encoding", "").lower()
        if content_type is not None or has_body:
            mime = (content_type or "").split(";", 1)[0].strip().lower()
            if mime != "application/json":
                return _error(415, "expected Content-Type: application/json, found "
                                   f"{content_type[:100] if content_type else 'none'}")
    return None


def guard(*, token, admin_host: str):
    """The middleware; ``token`` is a callable: is a token configured now (reloads change it)."""
    @web.middleware
    async def middleware(request: web.Request, handler):
        refused = refusal(request, token=token(), admin_host=admin_host)
        if refused is not None:
            return refused
        return await handler(request)
    return middleware


def describe(value: object) -> str:
    """A JSON value for an error message: short, and safe for any value ``json_body`` gives."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) > 10**15:
        return "a very large number"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value[:40])
    return "an object" if isinstance(value, dict) else "an array"


def _no_constant(name: str):
    raise BadBody(f"{name} is not a number JSON allows")


async def json_body(request: web.Request) -> dict:
    """The request's JSON object; raises ``BadBody``."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadBody(f"the body is larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(MAX_BODY + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:                 # chunked, so no Content-Length said so first
            raise BadBody(f"the body is larger than {MAX_BODY} bytes")
    raw = b"".join(chunks)
    try:
        body = json.loads(raw, parse_constant=_no_constant, object_pairs_hook=_one_each)
    except RecursionError:
        raise BadBody("the JSON is nested too deeply") from None
    except BadBody:
        raise
    except ValueError as exc:       # JSONDecodeError, UnicodeDecodeError, too many digits
        raise BadBody(f"the body is not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(body, dict):
        raise BadBody("expected a JSON object")
    if _has_surrogate(body):
        raise BadBody("a string holds a lone surrogate (\\ud800-\\udfff), which is no text")
    return body


def _one_each(pairs: list[tuple[str, object]]) -> dict:
    """An object whose keys are all different: with {"weight": 1, "weight": 500}, which one
    counts would depend on the parser, so neither does."""
    twice = repeated_key(pairs)
    if twice is not None:
        raise BadBody(f"the key {json.dumps(twice[:40])} is given twice")
    return dict(pairs)


def _has_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return not value.isascii() and any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False
