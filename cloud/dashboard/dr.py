"""Demand-response events over the JSON API: ``/api/dr/events``.

``POST`` takes ``{"start", "end" | "duration_minutes", "requested_kw" | "price_per_kwh" |
"level", "sites": [...] | "all", "event_id"?, "modification"?}``, builds the protocol-neutral
:class:`~cloud.dr.model.DREvent` (source ``api``) and hands it to the app's handler
(:class:`~cloud.dr.decision.FleetDR`): 201 with the decision. A body that is not such an
object, an event that cannot be meant (:func:`cloud.dr.decision.malformed`) or one starting
further ahead than any adapter takes (:func:`cloud.dr.decision.too_far_ahead`) is a 422 with
one line; an event the fleet declines is a 201 with status ``opted_out`` and the reason.
``GET`` lists events or shows one with its plan, its baselines and what was delivered (measured
on the first read after the window has passed); ``DELETE`` cancels one. The token middleware
guards these as every ``/api`` route.
"""

from __future__ import annotations

import math
import uuid
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request

from cloud.dashboard.api import REFUSALS, JSONBody, known_parameters_only
from cloud.dr import records as r
from cloud.dr.decision import MAX_MODIFICATION, malformed, too_far_ahead
from cloud.dr.model import DREvent, Signal
from cloud.store import schema as s
from der_core import der_data as dd

SOURCE = "api"
SIGNALS = {"requested_kw": Signal.REDUCTION, "price_per_kwh": Signal.PRICE, "level": Signal.LEVEL}
FIELDS = {"start", "end", "duration_minutes", "sites", "event_id", "modification", *SIGNALS}
MAX_ID = 200

router = APIRouter(prefix="/api/dr", tags=["demand response"], dependencies=[Depends(known_parameters_only)],
                   default_response_class=JSONBody, responses=REFUSALS)


def _bad(message: str) -> HTTPException:
    return HTTPException(422, message)


def _number(body: dict, key: str) -> float:
    value = body[key]
    try:  # a JSON integer of 400 digits is no float
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:
        number = math.nan
    if not math.isfinite(number):
        raise _bad(f"body field {key}: expected a finite number, got {dd.shown(value)}")
    return number


def _instant(body: dict, key: str) -> pd.Timestamp:
    value = body[key]
    try:
        if not isinstance(value, str):
            raise ValueError
        ts = pd.Timestamp(value)
        if ts is pd.NaT:  # "" and "NaT" parse as no time
            raise ValueError
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    except (ValueError, OverflowError):
        raise _bad(f"body field {key}: expected an ISO 8601 date-time such as 2024-06-12T17:00:00Z, got {dd.shown(value)}") from None


def _has_control(text: str) -> bool:
    """Whether a text holds a control character (C0 or DEL): no id holds one, and
    PostgreSQL refuses a NUL in text, which would read as a store failure."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _event_id_problem(event_id: object) -> str | None:
    """Why a text cannot name an event, or None: an id is addressed in a path
    (``/api/dr/events/{id}``) and stored as text, so it holds no ``/`` and no control
    character (PostgreSQL refuses a NUL in text)."""
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_ID:
        return f"expected a text of 1 to {MAX_ID} characters, got {dd.shown(event_id)}"
    if "/" in event_id or _has_control(event_id):
        return f"expected no '/' and no control character, got {dd.shown(event_id)}"
    return None


def event_from_body(body: Any, received_at: pd.Timestamp) -> DREvent:
    """The event a POST body describes; one 422 line for the first thing wrong with it."""
    if not isinstance(body, dict):
        raise _bad("body: expected a JSON object with start, end (or duration_minutes) and requested_kw, price_per_kwh or level")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise _bad(f"body field {dd.shown(unknown[0])} is unknown; expected: {', '.join(sorted(FIELDS))}")
    if "start" not in body:
        raise _bad("body field start is missing; expected an ISO 8601 date-time")
    start = _instant(body, "start")
    if ("end" in body) == ("duration_minutes" in body):
        raise _bad("body: give exactly one of end and duration_minutes")
    if "end" in body:
        end = _instant(body, "end")
    else:
        try:
            end = start + pd.Timedelta(minutes=_number(body, "duration_minutes"))
        except (ValueError, OverflowError):  # beyond what a time holds
            raise _bad(f"body field duration_minutes: expected minutes of an event's window, got "
                       f"{dd.shown(body['duration_minutes'])}") from None
    given = [k for k in SIGNALS if k in body]
    if len(given) != 1:
        raise _bad("body: give exactly one of requested_kw, price_per_kwh and level")
    sites = body.get("sites", "all")
    if sites == "all":
        sites = []
    elif sites == []:  # no site is not every site: the empty list the event holds means all of them
        raise _bad('body field sites: expected a non-empty list of device ids or "all", got []')
    if not isinstance(sites, list) or not all(isinstance(site, str) for site in sites):
        raise _bad(f"body field sites: expected a list of device ids or \"all\", got {dd.shown(sites)}")
    event_id = body.get("event_id", f"api-{uuid.uuid4().hex[:12]}")
    if (problem := _event_id_problem(event_id)) is not None:
        raise _bad(f"body field event_id: {problem}")
    modification = _number(body, "modification") if "modification" in body else 0.0
    if modification != int(modification) or not 0 <= modification <= MAX_MODIFICATION:
        raise _bad(f"body field modification: expected a whole number 0 to {MAX_MODIFICATION}, got "
                   f"{dd.shown(body['modification'])}")
    return DREvent(event_id=event_id, source=SOURCE, start=start, end=end, signal=SIGNALS[given[0]],
                   value=_number(body, given[0]), received_at=received_at, sites=tuple(dict.fromkeys(sites)),
                   modification=int(modification))


def _handler(request: Request):
    handler = request.app.state.dr
    if handler is None:
        raise HTTPException(503, "demand response is not configured: the dashboard needs MQTT (MQTT_HOST) to reach the gateways")
    return handler


def _stored(request: Request, event_id: str, source: str | None) -> dict[str, Any]:
    for name, text in (("event id", event_id), ("query parameter source", source)):
        if text is not None and _has_control(text):
            raise _bad(f"{name}: expected no control character, got {dd.shown(text)}")
    equals = {s.EVENT_ID: event_id} | ({} if source is None else {s.SOURCE: source})
    with request.app.state.access() as store:
        found = store.read_frame(s.DR_EVENTS, equals)
    if found.empty:
        raise HTTPException(404, f"unknown event {dd.shown(event_id)}; GET /api/dr/events lists the known ones")
    if len(found) > 1:
        raise _bad(f"event {dd.shown(event_id)} comes from {len(found)} sources; add ?source= (one of {', '.join(found[s.SOURCE])})")
    return found.iloc[0].to_dict()


@router.post("/events", status_code=201, summary="Announce an event: the fleet decides, plans and dispatches")
def post_event(request: Request, body: Annotated[Any, Body()] = None) -> JSONBody:
    handler = _handler(request)
    event = event_from_body(body, handler.clock())
    problem = (malformed(event, {site[dd.DEVICE_ID] for site in handler.store.sites()}, handler.settings)
               or too_far_ahead(event, event.received_at))
    if problem:
        raise _bad(f"event: {problem}")
    answer = handler.decide(event)
    row = _stored(request, event.event_id, SOURCE)
    return JSONBody(r.event_view(row) | {"opt_in": answer.opt_in}, status_code=201)


@router.get("/events", summary="Every event, newest first")
def list_events(request: Request) -> JSONBody:
    with request.app.state.access() as store:
        rows = r.all_events(store)
        fleet = store.read_frame(s.DR_RESULTS, {dd.DEVICE_ID: r.FLEET, s.BASELINE: "forecast"})
    delivered = {(a, b): v for a, b, v in zip(fleet[s.SOURCE], fleet[s.EVENT_ID], fleet[s.DELIVERED_KW]) if pd.notna(v)}
    rows = rows.sort_values(s.RECEIVED_AT, ascending=False)
    return JSONBody([r.event_view(row) | {"delivered_kw": delivered.get((row[s.SOURCE], row[s.EVENT_ID]))}
                     for row in rows.to_dict("records")])


@router.get("/events/{event_id}", summary="One event: decision, plan, baselines, delivery per site")
def get_event(request: Request, event_id: str, source: Annotated[str | None, Query(max_length=MAX_ID)] = None) -> JSONBody:
    row = _stored(request, event_id, source)
    handler = request.app.state.dr
    if handler is not None and row[s.STATUS] == r.OPTED_IN and handler.clock() >= dd.parse_ts(row[s.END_TS]):
        handler.delivery(event_id, row[s.SOURCE])
        row = _stored(request, event_id, row[s.SOURCE])
    with request.app.state.access() as store:
        results = r.results(store, row[s.SOURCE], event_id)
    return JSONBody(r.event_view(row, results))


@router.delete("/events/{event_id}", summary="Cancel an event: its schedules are withdrawn")
def cancel_event(request: Request, event_id: str, source: Annotated[str | None, Query(max_length=MAX_ID)] = None) -> JSONBody:
    row = _stored(request, event_id, source)
    _handler(request).cancel(event_id, row[s.SOURCE])
    return JSONBody(r.event_view(_stored(request, event_id, row[s.SOURCE])))
