"""``GET /``: the like/dislike demo page; its script and style are served under ``/static``.

The page is plain HTML, CSS and JavaScript shipped in the package (``serving/static``), with no
build step and nothing fetched from other hosts; its Content-Security-Policy says so.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

#: Only this origin: no inline script, no CDN, no framing by other sites.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")

router = APIRouter(tags=["demo"])


@router.get("/", include_in_schema=False, response_class=FileResponse)
async def demo_page() -> FileResponse:
    """The demo page: recommendations for a user, like/dislike buttons, the policy's posterior."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                                 "X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-cache"})


def mount(app: FastAPI) -> None:
    """Add the demo page and its assets (``/static/app.js``, ``/static/style.css``) to ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=True), name="static")
