"""The JSON API under ``/api``: sites, readings, forecasts, plans, savings, pipeline, portfolio.

Every parameter is validated where it enters: a device id that breaks the data contract's
rule is a 422 and an unknown site a 404; a time range that cannot be read (a bound out of
range, end before start, longer than :data:`MAX_RANGE`) or a query parameter the route does
not take is a 422. Each detail is one line naming the parameter and what was expected, and
quotes input cut short (``der_data.shown``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cloud.dashboard import queries as q
from cloud.dashboard.fleet import fleet_view
from der_core import der_data as dd

MAX_RANGE = pd.Timedelta(days=31)
DEFAULT_HOURS = 48.0
#: Forecasts and plans older than this before the newest reading are no longer "current".
CURRENT_WINDOW = pd.Timedelta(days=2)
EARLIEST, LATEST = pd.Timestamp("0001-01-01", tz="UTC"), pd.Timestamp("9999-12-31 23:59:59.999999", tz="UTC")


def known_parameters_only(request: Request) -> None:
    """A query parameter the route does not declare is refused rather than ignored: a typo
    such as ``?star=`` would otherwise quietly answer a different question; so is one given
    twice, of which the framework would take one unsaid."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {param.alias for param in dependant.query_params}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        expected = ", ".join(sorted(known)) if known else "none"
        raise HTTPException(422, f"unknown query parameter {dd.shown(unknown[0])}; this route takes: {expected}")
    twice = sorted(name for name in known if len(request.query_params.getlist(name)) > 1)
    if twice:  # the framework keeps the last silently, though the asker may have meant the first
        given = request.query_params.getlist(twice[0])
        raise HTTPException(422, f"query parameter {twice[0]} given {len(given)} times ({', '.join(map(dd.shown, given))}); "
                                 "expected it once")


class JSONBody(JSONResponse):
    """Bodies encoded by orjson and returned as they are: FastAPI's generic encoder walks a
    reading window value by value, which cost more than reading it from the store."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class Problem(BaseModel):
    """Every refusal's body: one line saying what was wrong and what was expected."""

    detail: str


#: The refusals every ``/api`` route may answer, as the OpenAPI document declares them: one
#: line in ``detail``, a 422 included (the app answers its own, not FastAPI's list of errors).
REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "DASHBOARD_TOKEN is set and the request's bearer token is not it"},
    404: {"model": Problem, "description": "no such site or event"},
    422: {"model": Problem, "description": "a path, query or body the route cannot use"},
    503: {"model": Problem, "description": "the cloud store (or, for events, MQTT) cannot be reached"},
}

router = APIRouter(prefix="/api", tags=["dashboard"], dependencies=[Depends(known_parameters_only)],
                   default_response_class=JSONBody, responses=REFUSALS)


def _store(request: Request):
    """This worker thread's store (``with _store(request) as store:``)."""
    return request.app.state.access()


def _site(request: Request, device_id: str) -> dict[str, Any]:
    problem = dd.device_id_problem(device_id)
    if problem:
        raise HTTPException(422, f"path parameter {problem}")
    try:
        return request.app.state.coverage.site(device_id)
    except q.UnknownSite:
        raise HTTPException(404, f"unknown site {dd.shown(device_id)}; GET /api/sites lists the known ones") from None


def _utc(value: datetime | None) -> pd.Timestamp | None:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def time_range(site: dict[str, Any], start: datetime | None, end: datetime | None,
               hours: float | None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[start, end)``: given bounds win; otherwise ``hours`` back from ``end`` (default: just
    after the site's newest reading)."""
    if start is not None and hours is not None:
        raise HTTPException(422, "query parameter hours: give either start or hours, not both")
    stop, first = _utc(end), _utc(start)
    if stop is None:
        newest = q.last_reading_ts(site)
        stop = (newest if newest is not None else pd.Timestamp.now(tz="UTC")) + pd.Timedelta(seconds=1)
    if first is None:  # in whole µs, the bounds' own unit: a finer length would recast them in ns, which end at 2262
        first = stop - pd.Timedelta(microseconds=round((DEFAULT_HOURS if hours is None else hours) * 3_600_000_000))
    # Stores hand bounds to drivers as Python datetimes, which end at years 1 and 9999.
    for name, bound in (("start" if start is not None else "end/hours", first), ("end", stop)):
        if not EARLIEST <= bound <= LATEST:
            raise HTTPException(422, f"query parameter {name}: the window bound {q.iso(bound)} is outside years 1 "
                                     "to 9999 in UTC; expected a date-time inside them")
    if stop <= first:
        raise HTTPException(422, f"query parameter end: end ({q.iso(stop)}) must be after start ({q.iso(first)})")
    if stop - first > MAX_RANGE:
        raise HTTPException(422, f"query parameter start: time range of {stop - first} is longer than the "
                                 f"{MAX_RANGE.days}-day maximum")
    return first, stop


def _current_since(site: dict[str, Any]) -> pd.Timestamp | None:
    newest = q.last_reading_ts(site)
    return None if newest is None else newest - CURRENT_WINDOW


@router.get("/sites", summary="Every site with its equipment and reading coverage")
def sites(request: Request) -> JSONBody:
    return JSONBody(request.app.state.coverage.sites())


@router.get("/sites/{device_id}", summary="One site")
def site(request: Request, device_id: str) -> JSONBody:
    return JSONBody(_site(request, device_id))


@router.get("/sites/{device_id}/readings", summary="Readings in [start, end); default the last 48 h")
def readings(
    request: Request,
    device_id: str,
    start: Annotated[datetime | None, Query(description="ISO 8601; naive means UTC")] = None,
    end: Annotated[datetime | None, Query(description="ISO 8601, exclusive; default just after the newest reading")] = None,
    hours: Annotated[float | None, Query(gt=0, le=MAX_RANGE.days * 24, allow_inf_nan=False,
                                         description="window length before end")] = None,
) -> JSONBody:
    site = _site(request, device_id)
    first, stop = time_range(site, start, end, hours)
    with _store(request) as store:
        body = q.readings(store, device_id, first, stop)
    return JSONBody(body)


@router.get("/sites/{device_id}/forecasts", summary="The newest forecast per target, with P10/P90")
def forecasts(request: Request, device_id: str) -> JSONBody:
    site = _site(request, device_id)
    with _store(request) as store:
        body = q.forecasts(store, device_id, _current_since(site))
    return JSONBody(body)


@router.get("/sites/{device_id}/plan", summary="The current dispatch plan, its steps and its summary (action blocks with reasons)")
def plan(request: Request, device_id: str) -> JSONBody:
    site = _site(request, device_id)
    with _store(request) as store:
        body = q.plan(store, site, _current_since(site))
    return JSONBody(body)


@router.get("/sites/{device_id}/savings", summary="The current plan's bills and savings, as its summary states them")
def savings(request: Request, device_id: str) -> JSONBody:
    site = _site(request, device_id)
    with _store(request) as store:
        body = q.savings(store, site, _current_since(site))
    return JSONBody(body)


@router.get("/pipeline", summary="Per job: last run, last success, rows, failures, freshness")
def pipeline(request: Request) -> JSONBody:
    now = pd.Timestamp.now(tz="UTC")
    with _store(request) as store:
        jobs = q.pipeline_status(store, now)
    return JSONBody({"now": q.iso(now), "jobs": jobs})


@router.get("/portfolio", summary="Portfolio simulation summaries, when any exist")
def portfolio(request: Request) -> JSONBody:
    return JSONBody(q.portfolio(request.app.state.portfolio_dir))


@router.get("/portfolio/fleet", summary="The newest portfolio run, as the aggregator page draws it")
def portfolio_fleet(request: Request) -> JSONBody:
    return JSONBody(fleet_view(request.app.state.portfolio_dir))
