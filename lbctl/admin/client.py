"""A small synchronous client of the admin API, for ``lbctl stats`` and ``lbctl backend``.

Every failure becomes an ``AdminError`` with one line a person can act on (unreachable,
wrong token, unknown backend), which the commands print and turn into exit code 1.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from lbctl.errors import UserError
from lbctl.exitcodes import Exit

DEFAULT_URL = "http://127.0.0.1:9900"
TOKEN_ENV = "LBCTL_ADMIN_TOKEN"
# The largest answer read: /stats of thousands of backends with their history is a few MiB.
MAX_ANSWER = 64 * 1024 * 1024
MAX_BODY_OF_ERROR = 64 * 1024


class AdminError(UserError):
    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=Exit.RUNTIME)


def admin_url(url: str | None, config_path: str | None) -> tuple[str, str | None]:
    """The admin base URL and token: ``--admin``, else the config's ``[admin]``, else the default."""
    if url:
        return base_url(url), None
    if config_path:
        from lbctl.config.loader import load_config
        admin = load_config(config_path).admin
        if admin is None:
            raise UserError(f"{config_path}: no [admin] table, so there is no admin API to ask")
        return _address_url(admin.address), admin.token
    return DEFAULT_URL, None


def base_url(text: str) -> str:
    """``--admin`` as given: an ``http(s)://`` URL, or ``host:port`` as in the config's
    ``[admin] address`` (``127.0.0.1:9900``, ``[::1]:9900``, ``localhost:9900``)."""
    from urllib.parse import urlsplit

    from lbctl.config.kinds import Invalid, parse_address
    expected = ("expected host:port as in [admin] address (like 127.0.0.1:9900 or [::1]:9900) "
                "or an http:// URL")
    if "://" not in text:
        try:
            return _address_url(parse_address(text))
        except Invalid:
            raise UserError(f"--admin {text!r}: {expected}") from None
    try:
        parts = urlsplit(text)
        parts.port                                 # raises ValueError when out of range
    except ValueError:
        raise UserError(f"--admin {text!r}: {expected}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment:
        raise UserError(f"--admin {text!r}: {expected}")
    if parts.username is not None or parts.password is not None:
        # Never echoed back: the text holds a password.
        raise UserError("--admin: expected a URL without user or password; the admin API "
                        "takes a token (--token, or env LBCTL_ADMIN_TOKEN)")
    return text.rstrip("/")


def _address_url(address) -> str:
    """A listening address as the URL to reach it: a wildcard becomes this host's loopback."""
    host = address.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{address.port}"


def _segment(value: str, what: str) -> str:
    """A pool or backend name as one URL path segment. A name the shell handed over in
    bytes that are not UTF-8 cannot be any backend's: it is refused here, in a line."""
    from urllib.parse import quote
    try:
        return quote(value, safe="")
    except UnicodeEncodeError:
        raise UserError(f"{what} {value!r}: expected UTF-8 text; no pool or backend is named "
                        "with other bytes") from None


def _token(token: str | None) -> str | None:
    """A token as it may go in a header: printable ASCII, as the config requires."""
    if token is not None and not all(" " < c < "\x7f" for c in token):
        raise UserError("--token: expected printable ASCII without spaces (what [admin] "
                        "token accepts), found other characters")
    return token


def _backend_answer(answer: dict, url: str) -> dict:
    """A POST/DELETE answer, checked to hold what the commands print."""
    b = answer.get("backend")
    if not isinstance(answer.get("pool"), str) or not isinstance(b, dict) or not (
            isinstance(b.get("name"), str) and isinstance(b.get("state"), str)
            and isinstance(b.get("url"), str)
            and isinstance(b.get("weight"), (int, float)) and not isinstance(b["weight"], bool)
            and isinstance(b.get("inflight"), int)):
        raise AdminError(f"admin API at {url}: expected {{\"pool\": ..., \"backend\": {{...}}}} "
                         "in its answer, found something else; is this lbctl's admin address?")
    return answer


class AdminClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.token = _token(token or os.environ.get(TOKEN_ENV) or None)
        self.timeout = timeout

    def stats(self) -> dict:
        doc = self._call("GET", "/stats")
        if not isinstance(doc.get("pools"), list):
            raise AdminError(f"admin API at {self.url}: expected the /stats document of lbctl "
                             "serve, found something else; is this lbctl's admin address?")
        return doc

    def backend(self, pool: str, name: str, action: str, weight: float | None = None) -> dict:
        path = f"/pools/{_segment(pool, 'pool')}/backends/{_segment(name, 'backend')}/{action}"
        body = {"weight": weight} if action == "weight" else None
        return _backend_answer(self._call("POST", path, body), self.url)

    def add(self, pool: str, url: str, name: str | None = None,
            weight: float | None = None) -> dict:
        body: dict = {"url": url}
        if name is not None:
            _segment(name, "backend")
            body["name"] = name
        if weight is not None:
            body["weight"] = weight
        _segment(url, "URL")
        return _backend_answer(
            self._call("POST", f"/pools/{_segment(pool, 'pool')}/backends", body), self.url)

    def remove(self, pool: str, name: str) -> dict:
        return _backend_answer(self._call(
            "DELETE", f"/pools/{_segment(pool, 'pool')}/backends/{_segment(name, 'backend')}"),
            self.url)

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            # Every POST says JSON: the API refuses other types (what a web page could send).
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read(MAX_ANSWER + 1)
            if len(raw) > MAX_ANSWER:
                raise AdminError(f"admin API at {self.url}: its answer is larger than "
                                 f"{MAX_ANSWER // (1024 * 1024)} MiB; is this lbctl's admin "
                                 "address?")
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            return printable(doc)
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read(MAX_BODY_OF_ERROR)).get("error") or exc.reason
                # One line of text, never the terminal's escape sequences.
                message = "".join(c if c.isprintable() else "?"
                                  for c in " ".join(str(message).split()))[:300]
            except (ValueError, AttributeError, RecursionError):
                message = exc.reason
            if exc.code == 401:
                message += f" (pass --token or set {TOKEN_ENV})"
            raise AdminError(f"admin API at {self.url}: {exc.code} {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            reason = getattr(reason, "strerror", None) or str(reason)
            raise AdminError(f"cannot reach the admin API at {self.url}: {reason}") from None
        except (ValueError, RecursionError):
            raise AdminError(f"admin API at {self.url} did not answer with a JSON object; "
                             "is this lbctl's admin address?") from None


def printable(doc: dict) -> dict:
    """``doc`` with every character that is not printable text, in keys and values, as "?":
    what an admin address answers ends up in a terminal (names, states, URLs), and escape
    sequences there would clear the screen, set the window title or hide lines. lbctl's own
    names never hold such characters (``config.kinds.Name``), so only an impostor's change."""
    def clean(value):
        if isinstance(value, str):
            return value if value.isprintable() else "".join(
                c if c.isprintable() else "?" for c in value)
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    return clean(doc)
