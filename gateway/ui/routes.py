"""``/ui``: the memory console's page and assets, served from the package (no CDN, no build step).

The files carry no key and no data: every call the console makes goes to the memory API with the
key the operator typed, checked there like any other caller's. So the files are served without a
key, and their Content-Security-Policy lets the page load and connect to this origin only (no
inline script or style either), which keeps a memory text that holds markup inert even if a
rendering bug let it into the page.
"""

from __future__ import annotations

import html
from importlib import resources
from importlib.resources.abc import Traversable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# Every other file of static/ is served under /ui/ with the media type of its extension.
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
PAGE_FILE = "index.html"
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'none'",  # forms are handled by script; none ever navigates or posts
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "no-cache",  # revalidate, so an upgraded Mnemo never runs an old script
}
API_PREFIX_SLOT = "{{memory_api_prefix}}"


def _static() -> Traversable:
    return resources.files("gateway.ui").joinpath("static")


def _assets() -> dict[str, tuple[bytes, str]]:
    found = {}
    for item in _static().iterdir():
        media_type = MEDIA_TYPES.get("." + item.name.rpartition(".")[2])
        if item.is_file() and media_type is not None:
            found[item.name] = (item.read_bytes(), media_type)
    return found


def console_routes(memory_prefix: str = "/v1") -> list[Route]:
    """``memory_prefix`` (``server.memory_api_prefix``) is written into the page for its API calls."""
    page = _static().joinpath(PAGE_FILE).read_text(encoding="utf-8")
    page_bytes = page.replace(API_PREFIX_SLOT, html.escape(memory_prefix, quote=True)).encode()
    assets = _assets()

    async def console_page(request: Request) -> Response:
        return Response(page_bytes, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    async def console_asset(request: Request) -> Response:
        found = assets.get(request.path_params["asset"])
        if found is None:
            raise HTTPException(404, "no such console file")
        body, media_type = found
        return Response(body, media_type=media_type, headers=SECURITY_HEADERS)

    return [
        Route("/ui", console_page, methods=["GET"]),  # /ui/ redirects here (Starlette's redirect_slashes)
        Route("/ui/{asset}", console_asset, methods=["GET"]),
    ]
