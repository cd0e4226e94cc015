"""The interactive API docs at ``/docs``, served without internet.

FastAPI's default page loads Swagger UI from a CDN, so on an operator's isolated control network
the page stays blank. Here the page's scripts and styles come from the swagger-ui-py package
(Swagger UI 5, which renders the OpenAPI 3.1 document FastAPI writes), mounted under
``/docs/static``: FastAPI's documented "self-hosting JavaScript and CSS for docs" recipe. ReDoc,
whose page also comes from a CDN and which no package ships, is not offered."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = "/docs/static"


def install(app: FastAPI) -> None:
    app.mount(STATIC, StaticFiles(directory=str(files("swagger_ui") / "static")), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            oauth2_redirect_url="/docs/oauth2-redirect", swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css", swagger_favicon_url=f"{STATIC}/favicon-32x32.png")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
