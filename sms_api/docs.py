"""The interactive docs, /docs (Swagger UI) and /redoc (ReDoc), rendered from the service's own copies of
their scripts and styles.

FastAPI's default pages load both from a CDN (and a favicon from FastAPI's site), so they stay blank where
the service cannot reach the internet. The fastapi-offline package bundles the same files; they are
served from under ASSETS_URL, and the pages are FastAPI's own, pointed at them.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"


def install(app: FastAPI) -> None:
    """Serve the docs pages and their assets; `app` is built with `docs_url=None, redoc_url=None`."""
    app.mount(ASSETS_URL, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")

    def urls(request: Request) -> tuple[str, str]:
        # Behind a proxy that strips a prefix, every URL the page loads needs it back.
        root = request.scope.get("root_path", "").rstrip("/")
        return f"{root}{app.openapi_url}", f"{root}{ASSETS_URL}"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        openapi_url, assets = urls(request)
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            # Swagger UI's default sends the document to validator.swagger.io for a badge.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        openapi_url, assets = urls(request)
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )
