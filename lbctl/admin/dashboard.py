"""The web dashboard: ``GET /`` on the admin address serves one page, its script and style.

The page is static: a script that polls ``/stats`` every second and draws it, and sends the
operator actions (drain, disable, enable, weight) as same-origin ``POST``s with a JSON body
and the admin token. The files live in ``static/`` and are read once, when the app is built;
nothing is fetched from anywhere else, so the page works offline.

These routes need no token: they carry no data (the page asks for the token itself, keeps
it in ``sessionStorage`` and sends it as ``Authorization: Bearer``; it is never in a URL).
The only thing the server fills in is whether a token is required, so the page can ask for
it up front instead of provoking a 401. Every response carries a strict Content-Security-
Policy: scripts and styles from this origin only (no inline code, no ``eval``), fetches to
this origin only, no framing, no ``<base>``, no form posts, Trusted Types for DOM sinks.
"""

from __future__ import annotations

from importlib import resources
from typing import Callable

from aiohttp import web

CSP = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
    "require-trusted-types-for 'script'",
    "trusted-types 'none'",
))

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # The page is tiny and changes with lbctl's version: revalidate rather than go stale.
    "Cache-Control": "no-cache",
}

# path -> (file in static/, Content-Type)
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
PUBLIC = frozenset(ASSETS)          # served without the admin token (static, no data)
TOKEN_MARK = "{{token}}"            # in index.html: "required" or "none"


def _read(name: str) -> str:
    return (resources.files("lbctl.admin") / "static" / name).read_text(encoding="utf-8")


def add_routes(app: web.Application, token_required: Callable[[], bool]) -> None:
    """Add the page's routes; ``token_required`` is asked per request (a reload may set one)."""
    files = {path: (_read(name), ctype) for path, (name, ctype) in ASSETS.items()}

    def handler(path: str):
        text, ctype = files[path]

        async def serve(request: web.Request) -> web.Response:
            body = text
            if path == "/":
                body = text.replace(TOKEN_MARK, "required" if token_required() else "none")
            return web.Response(text=body, headers={**HEADERS, "Content-Type": ctype})
        return serve

    for path in files:
        app.router.add_get(path, handler(path))
