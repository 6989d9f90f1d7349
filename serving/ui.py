"""The clinicians' web page: plain HTML, CSS and vanilla JS served by the API itself (no build step).

* ``GET /`` and ``GET /ui``: ``templates/index.html``, in Spanish or English. The language comes
  from ``?lang=es|en`` or else the ``Accept-Language`` header; the page's switch changes it
  in place afterwards (and remembers the choice in ``localStorage``).
* ``GET /static/...``: ``app.js``, ``app.css``, and the pinned Redoc / Swagger UI assets of the
  API documentation (``static/vendor``, see :func:`docs_plugins`).

The page calls the JSON API with the token the user types; the token is kept in the tab's
``sessionStorage`` only (gone when the tab closes, never in a cookie, never sent anywhere but the
``Authorization`` header of same-origin API calls). A strict Content-Security-Policy (scripts and
styles from this origin only, no inline code) limits what injected markup could do.
"""

from __future__ import annotations

import functools
import html
import importlib.resources
from pathlib import Path

from litestar import Controller, MediaType, Request, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    RedocRenderPlugin,
    SwaggerRenderPlugin,
)
from litestar.router import Router
from litestar.static_files import create_static_files_router

LANGUAGES = ("en", "es")
DEFAULT_LANGUAGE = "en"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _package_dir(name: str) -> Path:
    return Path(str(importlib.resources.files("serving") / name))


@functools.cache
def _template() -> str:
    """The page with the curated common conditions filled in (code, English and Spanish name:
    the form says what the common catalogue covers)."""
    from diagnosis.common_conditions import COMMON_CONDITIONS

    items = "\n".join(
        f'        <li><code>{html.escape(c.code)}</code> <span data-name-en="{html.escape(c.name_en)}"'
        f' data-name-es="{html.escape(c.name_es)}">{html.escape(c.name_en)}</span></li>'
        for c in COMMON_CONDITIONS
    )
    page = (_package_dir("templates") / "index.html").read_text(encoding="utf-8")
    return page.replace("{{n_common}}", str(len(COMMON_CONDITIONS))).replace(
        "{{common_conditions}}", items
    )


def language_from(accept_language: str | None) -> str:
    """The supported language the ``Accept-Language`` header prefers most (``en`` by default)."""
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-", 1)[0]
        if primary not in LANGUAGES:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        q -= position * 1e-6  # equal weights: the first listed wins
        if q > best_q:
            best, best_q = primary, q
    return best


class WebController(Controller):
    path = "/"
    include_in_schema = False

    @get(["/", "/ui"], media_type=MediaType.HTML)
    async def page(self, request: Request) -> Response[str]:
        """The triage and validation forms."""
        lang = request.query_params.get("lang")
        if lang not in LANGUAGES:
            lang = language_from(request.headers.get("accept-language"))
        html = _template().replace("{{lang}}", lang)
        headers = {**SECURITY_HEADERS, "Content-Language": lang, "Vary": "Accept-Language"}
        return Response(html, media_type=MediaType.HTML, headers=headers)


# pinned documentation assets vendored under static/vendor (licences in its README.md)
SWAGGER_UI = "/static/vendor/swagger-ui-5.35.0"
REDOC = "/static/vendor/redoc-2.5.4"
_DOCS_FAVICON = f"<link rel='icon' type='image/png' href='{SWAGGER_UI}/favicon-32x32.png'>"


def docs_plugins() -> list[OpenAPIRenderPlugin]:
    """The OpenAPI pages, every asset served by the app itself (no CDN, no web fonts):
    ``/schema`` and ``/schema/redoc`` (Redoc), ``/schema/swagger`` (Swagger UI, whose
    *Authorize* button takes a bearer token) and ``/schema/openapi.json``."""
    return [
        RedocRenderPlugin(
            path=["/", "/redoc"],
            js_url=f"{REDOC}/redoc.standalone.js",
            google_fonts=False,
            favicon=_DOCS_FAVICON,
        ),
        SwaggerRenderPlugin(
            path="/swagger",
            js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            css_url=f"{SWAGGER_UI}/swagger-ui.css",
            standalone_preset_js_url=f"{SWAGGER_UI}/swagger-ui-standalone-preset.js",
            favicon=_DOCS_FAVICON,
        ),
        JsonRenderPlugin(path="/openapi.json"),
    ]


def static_router() -> Router:
    return create_static_files_router(
        path="/static",
        directories=[_package_dir("static")],
        cache_control=CacheControlHeader(no_cache=True),
        include_in_schema=False,
        name="static",
    )
