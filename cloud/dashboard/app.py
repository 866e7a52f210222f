"""The dashboard's FastAPI app: the JSON API, ``/metrics``, ``/health`` and the page.

:func:`create_app` takes any :class:`CloudStore`, so the same app serves the embedded SQLite
file, Postgres or Supabase, and tests hand it a store they filled themselves.

With a shared secret (``token``, from ``DASHBOARD_TOKEN``) every ``/api`` route and
``/metrics`` need ``Authorization: Bearer <token>``; ``/health`` and the static page stay
open because they reveal no data (the page asks for the token and sends it on each call).
"""

from __future__ import annotations

import hmac
import os
import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from cloud.dashboard import metrics
from cloud.dashboard.api import router
from cloud.store.base import CloudStore
from edge_gateway.errors import StoreError

STATIC_DIR = Path(__file__).with_name("static")
DEFAULT_PORTFOLIO_DIR = "portfolio-output"  # run_portfolio.py --output default
TOKEN_ENV, PORTFOLIO_ENV = "DASHBOARD_TOKEN", "PORTFOLIO_OUTPUT_DIR"
_PROTECTED = ("/api", "/metrics")


def create_app(store: CloudStore, *, token: str | None = None, portfolio_dir: str | Path | None = None) -> FastAPI:
    app = FastAPI(
        title="predictive-optimization-der dashboard",
        summary="When to buy, sell or store energy: readings, forecasts, plans and pipeline health",
        version="1",
    )
    app.state.store = store
    # One connection serves every request thread; a lock keeps the embedded store's reads whole.
    app.state.lock = threading.Lock()
    app.state.token = token or None
    app.state.portfolio_dir = Path(portfolio_dir) if portfolio_dir else None
    app.state.registry = metrics.registry_for(store, app.state.lock)
    app.include_router(router)

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        expected = request.app.state.token
        if expected and request.url.path.startswith(_PROTECTED):
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), expected.encode()):
                reason = "missing" if not given else "wrong"
                return JSONResponse({"detail": f"{reason} token: send Authorization: Bearer <DASHBOARD_TOKEN>"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

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

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def app_from_env() -> FastAPI:
    """The app on the configured cloud store (``uvicorn --factory cloud.dashboard.app:app_from_env``)."""
    from cloud.store.factory import cloud_settings, open_cloud_store

    return create_app(open_cloud_store(cloud_settings()), token=os.environ.get(TOKEN_ENV),
                      portfolio_dir=os.environ.get(PORTFOLIO_ENV, DEFAULT_PORTFOLIO_DIR))
