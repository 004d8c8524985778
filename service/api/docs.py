"""The interactive API docs (``/docs``: Swagger UI, ``/redoc``: ReDoc), served without internet.

FastAPI's own docs pages load Swagger UI's and ReDoc's JavaScript and CSS from a CDN, so they are
blank on a machine that is offline or firewalled. Here the pages are FastAPI's (its documented
self-hosting recipe: ``get_swagger_ui_html`` / ``get_redoc_html`` with local asset URLs), and the
assets are the copies the ``fastapi-offline`` package ships, served from this router. The app
turns its built-in docs off (``docs_url=None, redoc_url=None``) and includes this router instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse

from service.errors import NotFound

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"

_ASSET_DIRECTORY = Path(fastapi_offline.__file__).parent / "static"
# The files a docs page loads, by the name it asks for: nothing else is served from that folder.
ASSETS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript"),
        "swagger-ui.css": ("swagger-ui.css", "text/css"),
        "redoc.standalone.js": ("redoc.standalone.js", "text/javascript"),
        "favicon.png": ("favicon.png", "image/png"),
    }
)

router = APIRouter(include_in_schema=False)


def asset_path(name: str) -> Path:
    """The installed file of asset ``name`` (a key of :data:`ASSETS`).

    Raises:
        NotFound: no such asset.
    """
    if name not in ASSETS:
        raise NotFound(f"no docs asset {name!r}; the docs pages load {sorted(ASSETS)}")
    return _ASSET_DIRECTORY / ASSETS[name][0]


@router.get(DOCS_URL)
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI on this API's OpenAPI schema, its assets served by this app."""
    app = request.app
    return get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=OAUTH2_REDIRECT_URL,
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
    )


@router.get(OAUTH2_REDIRECT_URL)
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(REDOC_URL)
def redoc(request: Request) -> HTMLResponse:
    """ReDoc on this API's OpenAPI schema, without web fonts (they would come from the web)."""
    app = request.app
    return get_redoc_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )


@router.get(f"{ASSETS_URL}/{{name}}")
def asset(name: str) -> FileResponse:
    """One asset of the docs pages (cacheable: ETag and Last-Modified)."""
    return FileResponse(asset_path(name), media_type=ASSETS[name][1])
