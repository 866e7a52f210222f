"""The dashboard's FastAPI app: the JSON API, ``/metrics``, ``/health`` and the page.

:func:`create_app` takes any :class:`CloudStore`, so the same app serves the embedded SQLite
file, Postgres or Supabase, and tests hand it a store they filled themselves.

With a shared secret (``token``, from ``DASHBOARD_TOKEN``) every ``/api`` route and
``/metrics`` need ``Authorization: Bearer <token>``; ``/health`` and the static page stay
open because they reveal no data (the page asks for the token and sends it on each call).

Malformed input never reaches a route as a traceback: FastAPI's validation errors become one
line naming the parameter and what was expected (:func:`validation_line`), and input is
quoted cut short.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.staticfiles import NotModifiedResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from cloud.dashboard import metrics
from cloud.dashboard.access import (
    COVERAGE_MAX_AGE_S,
    COVERAGE_STALE_LIMIT_S,
    Coverage,
    StoreAccess,
)
from cloud.dashboard.api import router
from cloud.dashboard.dr import router as dr_router
from cloud.dr.decision import FleetDR
from cloud.store.base import CloudStore
from der_core.der_data import shown
from der_core.errors import StoreError

STATIC_DIR = Path(__file__).with_name("static")
SWAGGER_PREFIX = "/static/swagger-ui"  # the swagger-ui-bundle package's dist files: /docs works offline
DEFAULT_PORTFOLIO_DIR = "portfolio-output"  # run_portfolio.py --output default
TOKEN_ENV, PORTFOLIO_ENV = "DASHBOARD_TOKEN", "PORTFOLIO_OUTPUT_DIR"
_PROTECTED = ("/api", "/metrics")
#: Routes running at once (anyio's default is 40). A route's work is mostly Python under one
#: interpreter lock: more at once only share it, each taking longer, and the slowest requests
#: wait longest (docs/benchmarks.md). Four still overlap a remote store's waits (Supabase).
ROUTE_THREADS = 4


_EXPECTED = {  # pydantic's error type -> what the parameter should have been
    "datetime_from_date_parsing": "an ISO 8601 date-time such as 2024-06-12T00:00:00Z",
    "datetime_parsing": "an ISO 8601 date-time such as 2024-06-12T00:00:00Z",
    "datetime_type": "an ISO 8601 date-time such as 2024-06-12T00:00:00Z",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
}


def validation_line(error: RequestValidationError) -> str:
    """The first of FastAPI's validation errors as one line: where, which parameter, what was
    expected and (cut short) what came."""
    first: dict[str, Any] = error.errors()[0]
    where, *rest = [str(part) for part in first.get("loc", ())] or ["request"]
    name = ".".join(rest) or where
    expected = _EXPECTED.get(first.get("type", "")) or str(first.get("msg", "a valid value")).removeprefix("Input should be ")
    line = f"{where} parameter {name}: expected {expected}" if where in ("query", "path") else f"{name}: {expected}"
    if "input" in first:
        line += f", got {shown(first['input'])}"
    return line


#: The methods a 405's ``Allow`` may name.
METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(app: FastAPI, scope: Scope) -> str:
    """Every method some route of the request's path takes, for a 405's ``Allow``: Starlette
    names only the methods of the first route whose path matched, and ``/api/dr/events`` is
    two routes (GET and POST). Asked of the routes' own matching, nested routers included;
    HEAD wherever GET is (:class:`HeadAsGet`)."""
    return ", ".join(method for method in METHODS
                     if any(route.matches({**scope, "method": "GET" if method == "HEAD" else method})[0] is Match.FULL
                            for route in app.router.routes))


class HeadAsGet:
    """ASGI middleware: HEAD is answered as GET is, headers only. HTTP has every server that
    takes GET take HEAD (RFC 9110, 9.1), and monitors probe with it; FastAPI's routes take only
    the methods they name, so ``HEAD /health`` was a 405 and read as the dashboard being down."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class RequireToken:
    """ASGI middleware: an ``/api`` or ``/metrics`` request without the app's token (when it
    has one) is answered 401, before any route runs. Plain ASGI rather than an
    ``@app.middleware`` function: that form passes every response body, a megabyte of the
    API docs' bundle among them, through a stream of its own, which under twenty clients
    cost more than most routes' work."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(_PROTECTED):
            expected = scope["app"].state.token
            if expected:
                given = Headers(scope=scope).get("authorization", "")
                scheme, _, value = given.partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), expected.encode()):
                    reason = "missing" if not given else "wrong"
                    refused = JSONResponse({"detail": f"{reason} token: send Authorization: Bearer <DASHBOARD_TOKEN>"},
                                           status_code=401, headers={"WWW-Authenticate": "Bearer"})
                    await refused(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class HeldStaticFiles(StaticFiles):
    """Static files answered from memory in one piece, with the headers (ETag, Last-Modified,
    type, length) and the 304 Starlette gives a file. Read from disk each time, a file goes
    out in 64 KB pieces, each through the thread pool and the event loop: under twenty
    clients the API docs' megabyte bundles took half a second. The files are the app's own
    (a few MB); one changed on disk (same path, new size or time) is read again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: dict[str, tuple[tuple[int, int], bytes]] = {}

    def file_response(self, full_path: Any, stat_result: os.stat_result, scope: Scope, status_code: int = 200) -> Response:
        headers = FileResponse(full_path, status_code=status_code, stat_result=stat_result).headers
        if self.is_not_modified(headers, Headers(scope=scope)):
            return NotModifiedResponse(headers)
        version = (stat_result.st_mtime_ns, stat_result.st_size)
        held = self._held.get(str(full_path))
        if held is None or held[0] != version:
            held = version, Path(full_path).read_bytes()
            self._held[str(full_path)] = held
        return Response(held[1], status_code=status_code, headers=dict(headers))


def create_app(store: CloudStore, *, token: str | None = None, portfolio_dir: str | Path | None = None,
               coverage_max_age_s: float = COVERAGE_MAX_AGE_S,
               coverage_stale_limit_s: float = COVERAGE_STALE_LIMIT_S, dr: FleetDR | None = None) -> FastAPI:
    """The app over ``store``; the coverage bounds are :class:`~cloud.dashboard.access.Coverage`'s.
    ``dr``: the demand-response handler (:class:`cloud.dr.decision.FleetDR`) POSTed events go to;
    without one, events can be read but not announced."""
    access = StoreAccess(store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = ROUTE_THREADS
        yield
        access.close()  # the per-thread connections; ``store`` itself stays the caller's

    app = FastAPI(
        title="predictive-optimization-der dashboard",
        summary="When to buy, sell or store energy: readings, forecasts, plans and pipeline health",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served below from local assets: FastAPI's own page loads them from a CDN
        redoc_url=None,  # served below from the bundled ReDoc, without Google's fonts
    )
    app.state.store = store
    app.state.access = access
    app.state.coverage = Coverage(access, max_age_s=coverage_max_age_s, stale_limit_s=coverage_stale_limit_s)
    app.state.token = token or None
    app.state.portfolio_dir = Path(portfolio_dir) if portfolio_dir else None
    app.state.registry = metrics.registry_for(app.state.coverage, access)
    app.state.dr = dr
    app.include_router(router)
    app.include_router(dr_router)

    app.add_middleware(RequireToken)
    app.add_middleware(HeadAsGet)

    @app.exception_handler(RequestValidationError)
    async def invalid_input(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_line(error)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code != 405:
            return await http_exception_handler(request, error)
        allowed = allowed_methods(app, request.scope)
        return JSONResponse({"detail": f"{shown(request.method, 20)} is not a method of {shown(request.url.path, 80)}; expected "
                                       f"one of {allowed}"}, status_code=405, headers={"Allow": allowed})

    @app.exception_handler(StoreError)
    async def store_failed(_request: Request, error: StoreError) -> JSONResponse:
        return JSONResponse({"detail": f"cloud store unavailable: {error}"}, status_code=503)

    @app.get("/health", tags=["ops"], summary="Liveness and the store in use")
    def health() -> dict:
        return {"status": "ok", "store": store.label, "auth": bool(app.state.token)}

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
    def prometheus() -> Response:
        return Response(metrics.render(app.state.registry), media_type=metrics.CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/fleet", include_in_schema=False)
    def fleet_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "fleet.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title}: API",
                                   swagger_js_url=f"{SWAGGER_PREFIX}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{SWAGGER_PREFIX}/swagger-ui.css",
                                   swagger_favicon_url=f"{SWAGGER_PREFIX}/favicon-32x32.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title}: API",
                              redoc_js_url="/static/vendor/redoc.standalone.js", with_google_fonts=False,
                              redoc_favicon_url=f"{SWAGGER_PREFIX}/favicon-32x32.png")

    app.mount(SWAGGER_PREFIX, HeldStaticFiles(directory=swagger_ui_path), name="swagger-ui")
    app.mount("/static", HeldStaticFiles(directory=STATIC_DIR), name="static")
    return app


def dr_from_env(store: CloudStore) -> FleetDR | None:
    """The fleet's demand-response handler where MQTT is configured (``MQTT_HOST``): the
    gateways are reached through it, so without it ``POST /api/dr/events`` answers 503."""
    from cloud.dr.dispatch import MqttPublisher
    from edge_gateway.mqtt.settings import mqtt_configured, mqtt_settings

    return FleetDR(store, MqttPublisher(mqtt_settings())) if mqtt_configured(None) else None


def app_from_env() -> FastAPI:
    """The app on the configured cloud store (``uvicorn --factory cloud.dashboard.app:app_from_env``)."""
    from cloud.store.factory import cloud_settings, open_cloud_store

    store = open_cloud_store(cloud_settings())
    return create_app(store, token=os.environ.get(TOKEN_ENV), portfolio_dir=os.environ.get(PORTFOLIO_ENV, DEFAULT_PORTFOLIO_DIR),
                      dr=dr_from_env(store))
