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
    return text.rstrip("/")


def _address_url(address) -> str:
    """A listening address as the URL to reach it: a wildcard becomes this host's loopback."""
    host = address.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{address.port}"


class AdminClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.token = token or os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout

    def stats(self) -> dict:
        return self._call("GET", "/stats")

    def backend(self, pool: str, name: str, action: str, weight: float | None = None) -> dict:
        from urllib.parse import quote
        path = f"/pools/{quote(pool, safe='')}/backends/{quote(name, safe='')}/{action}"
        body = {"weight": weight} if action == "weight" else None
        return self._call("POST", path, body)

    def add(self, pool: str, url: str, name: str | None = None,
            weight: float | None = None) -> dict:
        from urllib.parse import quote
        body: dict = {"url": url}
        if name is not None:
            body["name"] = name
        if weight is not None:
            body["weight"] = weight
        return self._call("POST", f"/pools/{quote(pool, safe='')}/backends", body)

    def remove(self, pool: str, name: str) -> dict:
        from urllib.parse import quote
        return self._call("DELETE", f"/pools/{quote(pool, safe='')}/backends/"
                                    f"{quote(name, safe='')}")

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
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error") or exc.reason
            except (ValueError, AttributeError):
                message = exc.reason
            if exc.code == 401:
                message += f" (pass --token or set {TOKEN_ENV})"
            raise AdminError(f"admin API at {self.url}: {exc.code} {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            reason = getattr(reason, "strerror", None) or str(reason)
            raise AdminError(f"cannot reach the admin API at {self.url}: {reason}") from None
        except ValueError:
            raise AdminError(f"admin API at {self.url} did not answer with JSON; "
                             "is this lbctl's admin address?") from None
