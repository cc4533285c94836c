"""``GET /``: the like/dislike demo page; its script and style are served under ``/static``.

The page is plain HTML, CSS and JavaScript shipped in the package (``serving/static``), with no
build step and nothing fetched from other hosts; its Content-Security-Policy says so.

Every file of the demo, the page included, goes out through :class:`DemoFiles`: one set of
headers (:data:`DEMO_HEADERS`), ``HEAD`` answered, and a 304 for a matching ``If-None-Match`` or
``If-Modified-Since``. The page itself is served only at ``/``: at ``/static/index.html`` it was
served without its headers, so another site could frame it (found by attack).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

#: The page's file in STATIC_DIR, answered at ``/`` only.
PAGE = "index.html"

#: Only this origin: no inline script, no CDN, no framing by other sites.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")

#: The headers of every demo file. ``no-cache`` (revalidated by the ETag, a 304 when unchanged)
#: on the script and style too: heuristically cached, an old app.js outlived an upgrade that
#: the page (always revalidated) had already taken (found by attack).
DEMO_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-cache"}


class DemoFiles(StaticFiles):
    """Starlette's static files with :data:`DEMO_HEADERS` on every answer, 304s included; the
    page (:data:`PAGE`) only through :meth:`page`.
    """

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file at ``path`` (normalised by Starlette); 404 for the page."""
        if path == PAGE:
            raise HTTPException(status_code=404)
        return await super().get_response(path, scope)

    async def page(self, scope: Scope) -> Response:
        """The demo page, for ``GET`` and ``HEAD /``."""
        return await super().get_response(PAGE, scope)

    def file_response(self, full_path: PathLike, stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        """Starlette's answer (the file, or 304 for a matching validator) with our headers."""
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(DEMO_HEADERS)
        return response


def mount(app: FastAPI) -> None:
    """Add the demo page (``/``) and its assets (``/static/app.js``, ``/static/style.css``)."""
    files = DemoFiles(directory=STATIC_DIR, check_dir=True)

    async def demo_page(request: Request) -> Response:
        """The demo page: recommendations for a user, like/dislike buttons, the posterior."""
        return await files.page(request.scope)

    app.add_api_route("/", demo_page, methods=["GET", "HEAD"], include_in_schema=False,
                      tags=["demo"])
    app.mount("/static", files, name="static")
