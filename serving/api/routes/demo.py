"""``GET /``: the like/dislike demo page; its script and style are served under ``/static``.

The page is plain HTML, CSS and JavaScript shipped in the package (``serving/static``), with no
build step and nothing fetched from other hosts; its Content-Security-Policy says so.

Every file of the demo, the page included, goes out through :class:`DemoFiles`: one set of
headers (:data:`DEMO_HEADERS`) on whatever it answers (the file, a range of it, a 304, and the
400 or 416 Starlette sends itself for a bad ``Range``), ``HEAD`` answered, and a 304 for a matching
``If-None-Match`` or ``If-Modified-Since``; each file's ``Content-Type`` is ours
(:data:`MEDIA_TYPES`), not the host's. The page itself is served only at ``/``: at
``/static/index.html`` it was served without its headers, so another site could frame it (found
by attack).

What the page says about the service (the dataset, the users the arms know, the cold-start
arm, the longest slate) it reads once from ``GET /demo/facts`` (:func:`facts`), never written
into the page.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, PathLike, StaticFiles
from starlette.types import Message, Receive, Scope, Send

from serving.api.deps import ServiceDep
from serving.schemas import MAX_K, DemoFactsOut

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

#: The ``Content-Type`` of each kind of demo file, by suffix. Ours, not ``mimetypes``': that
#: table comes from the host (``/etc/mime.types``, the Windows registry), where ``.js`` can be
#: ``text/plain``, a script that ``nosniff`` makes the browser refuse to run (found by attack).
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


class WithDemoHeaders(Response):
    """``response`` sent with :data:`DEMO_HEADERS` added to whatever answer it starts: a
    :class:`~starlette.responses.FileResponse` decides inside its ``__call__`` to send a 400
    (malformed ``Range``) or a 416 (a range past the end) instead of the file, answers whose
    headers were not the file's (found by attack: both went out without CSP or ``nosniff``).
    """

    def __init__(self, response: Response) -> None:
        """Wrap ``response``; it keeps its own status, headers and body."""
        self.response = response
        self.status_code = response.status_code  # as read by whoever inspects it
        self.raw_headers = response.raw_headers
        self.background = None  # FastAPI may put a route's background tasks here

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send ``response``, its ``http.response.start`` carrying :data:`DEMO_HEADERS`."""
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(DEMO_HEADERS)
            await send(message)

        await self.response(scope, receive, send_with_headers)
        if self.background is not None:
            await self.background()


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
        """Starlette's answer (the file, or 304 for a matching validator) with our headers and
        our ``Content-Type`` (:data:`MEDIA_TYPES`).
        """
        # Another kind of file (an icon, a map) gets Starlette's guess, not a 500 (last read).
        media_type = MEDIA_TYPES.get(Path(full_path).suffix)
        response = FileResponse(full_path, status_code=status_code, stat_result=stat_result,
                                media_type=media_type)
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return WithDemoHeaders(NotModifiedResponse(response.headers))
        return WithDemoHeaders(response)


async def facts(service: ServiceDep) -> DemoFactsOut:
    """The facts the page states: the dataset, how many users the served arms know and the
    range of their ids (computed once per arm set), the cold-start arm (None when the policy is
    contextual) and :data:`~serving.schemas.MAX_K`.
    """
    arms = service.arm_set
    first, last = arms.user_id_range or (None, None)
    return DemoFactsOut(
        dataset=service.settings.dataset, known_users=len(arms.user_index),
        first_user=first, last_user=last,
        cold_start_arm=(None if service.policy_model.contextual
                        else service.settings.cold_start_arm),
        max_k=MAX_K)


def mount(app: FastAPI) -> None:
    """Add the demo page (``/``), its assets (``/static/app.js``, ``/static/style.css``) and
    the facts it states (``/demo/facts``).
    """
    files = DemoFiles(directory=STATIC_DIR, check_dir=True)

    async def demo_page(request: Request) -> Response:
        """The demo page: recommendations for a user, like/dislike buttons, the posterior."""
        return await files.page(request.scope)

    app.add_api_route("/", demo_page, methods=["GET", "HEAD"], include_in_schema=False,
                      tags=["demo"])
    # Out of the API's schema, as the page: what the page needs, not a contract for clients.
    app.add_api_route("/demo/facts", facts, methods=["GET"], response_model=DemoFactsOut,
                      include_in_schema=False, tags=["demo"])
    app.mount("/static", files, name="static")
