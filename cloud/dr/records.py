"""Events, results and windows in the cloud store (``dr_events``, ``dr_results``,
``dr_windows``): rows in and out.

Every write is an upsert on the table's key, so a decision or a delivery written twice is
one row. The JSON API and the aggregator page read events through :func:`event_view`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from cloud.dr.model import DREvent, Signal
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.setpoints import SetpointSchedule

RECEIVED, OPTED_IN, OPTED_OUT, CANCELLED, COMPLETED = "received", "opted_in", "opted_out", "cancelled", "completed"
FLEET = "fleet"  # the device_id of a result row for the fleet's total


def save_event(store: CloudStore, event: DREvent, status: str, reason: str = "", planned_kw: float = math.nan) -> None:
    row = {s.SOURCE: event.source, s.EVENT_ID: event.event_id, s.MODIFICATION: event.modification,
           s.RECEIVED_AT: event.received_at, s.START_TS: event.start, s.END_TS: event.end, s.SIGNAL: str(event.signal),
           s.VALUE: event.value, s.SITES_COLUMN: json.dumps(list(event.sites)), s.STATUS: status, s.REASON: reason,
           s.PLANNED_KW: planned_kw}
    store.upsert_frame(s.DR_EVENTS, pd.DataFrame([row]))


def set_status(store: CloudStore, source: str, event_id: str, status: str, reason: str | None = None) -> None:
    row = stored_event(store, source, event_id)
    if row is None:
        return
    row[s.STATUS] = status
    if reason is not None:
        row[s.REASON] = reason
    store.upsert_frame(s.DR_EVENTS, pd.DataFrame([row]))


def stored_event(store: CloudStore, source: str, event_id: str) -> dict[str, Any] | None:
    frame = store.read_frame(s.DR_EVENTS, {s.SOURCE: source, s.EVENT_ID: event_id})
    return None if frame.empty else frame.iloc[0].to_dict()


def event_of(row: dict[str, Any]) -> DREvent:
    """The event a stored row describes."""
    sites = row[s.SITES_COLUMN]
    sites = json.loads(sites) if isinstance(sites, str) else (sites or [])
    return DREvent(event_id=row[s.EVENT_ID], source=row[s.SOURCE], start=dd.parse_ts(row[s.START_TS]),
                   end=dd.parse_ts(row[s.END_TS]), signal=Signal(row[s.SIGNAL]), value=float(row[s.VALUE]),
                   received_at=dd.parse_ts(row[s.RECEIVED_AT]), sites=tuple(sites),
                   modification=int(row[s.MODIFICATION]) if pd.notna(row[s.MODIFICATION]) else 0)


def all_events(store: CloudStore) -> pd.DataFrame:
    return store.read_frame(s.DR_EVENTS)


def save_results(store: CloudStore, rows: Iterable[dict[str, Any]]) -> None:
    frame = pd.DataFrame(list(rows))
    if not frame.empty:
        store.upsert_frame(s.DR_RESULTS, frame)


def replace_planned(store: CloudStore, source: str, event_id: str, rows: list[dict[str, Any]]) -> None:
    """The planned rows of an event's decision, in place of an earlier decision's: a site a
    modification no longer dispatches loses its row, where kept it would be measured (and
    resent) as dispatched."""
    kept = {row[dd.DEVICE_ID] for row in rows}
    earlier = results(store, source, event_id)
    for device in sorted(set(earlier[dd.DEVICE_ID]) - kept) if not earlier.empty else []:
        store.delete_rows(s.DR_RESULTS, {s.SOURCE: source, s.EVENT_ID: event_id, dd.DEVICE_ID: device})
    save_results(store, rows)


def results(store: CloudStore, source: str, event_id: str) -> pd.DataFrame:
    return store.read_frame(s.DR_RESULTS, {s.SOURCE: source, s.EVENT_ID: event_id})


def save_windows(store: CloudStore, source: str, event_id: str, windows: Mapping[str, SetpointSchedule | None],
                 now: pd.Timestamp) -> None:
    """Store the event's window per site; None for a site the event no longer plans."""
    rows = [{s.SOURCE: source, s.EVENT_ID: event_id, dd.DEVICE_ID: device, s.COMPUTED_AT: now,
             s.SCHEDULE: None if window is None else window.to_json()} for device, window in windows.items()]
    if rows:
        store.upsert_frame(s.DR_WINDOWS, pd.DataFrame(rows))


def windows(store: CloudStore, source: str, event_id: str) -> dict[str, SetpointSchedule]:
    """The event's stored window per site it plans."""
    frame = store.read_frame(s.DR_WINDOWS, {s.SOURCE: source, s.EVENT_ID: event_id})
    out = {}
    for device, data in zip(frame[dd.DEVICE_ID], frame[s.SCHEDULE]):
        if data is not None:  # stored as sent: its powers were bounded when planned, so none is refused here
            out[device] = SetpointSchedule.from_dict(json.loads(data) if isinstance(data, str) else data, math.inf)
    return out


def standing_windows(store: CloudStore, now: pd.Timestamp) -> dict[str, list[SetpointSchedule]]:
    """Per site, the stored windows of the events it must carry: opted in and not ended. The
    store, not a decider's memory, says what stands, so every decider sends a site the same."""
    events = all_events(store)
    standing = events[events[s.STATUS] == OPTED_IN]
    out: dict[str, list[SetpointSchedule]] = {}
    for source, event_id, end in zip(standing[s.SOURCE], standing[s.EVENT_ID], standing[s.END_TS]):
        if dd.parse_ts(end) <= now:
            continue
        for device, window in windows(store, source, event_id).items():
            out.setdefault(device, []).append(window)
    return out


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def event_view(row: dict[str, Any], result_rows: pd.DataFrame | None = None) -> dict[str, Any]:
    """What the API returns for an event: the decision, and with ``result_rows`` the planned and
    delivered reduction per baseline and per site."""
    event = event_of(row)
    view = {"id": event.event_id, "source": event.source, "modification": event.modification,
            "received_at": dd.format_ts(event.received_at), "start": dd.format_ts(event.start),
            "end": dd.format_ts(event.end), "signal": str(event.signal), "value": event.value,
            "requested_kw": event.requested_kw, "sites": list(event.sites) or "all", "status": row[s.STATUS],
            "reason": row[s.REASON] or "", "planned_kw": _number(row[s.PLANNED_KW])}
    if result_rows is None:
        return view
    fleet = result_rows[result_rows[dd.DEVICE_ID] == FLEET]
    view["baselines"] = {r[s.BASELINE]: {"baseline_kw": _number(r[s.BASELINE_KW]), "measured_kw": _number(r[s.MEASURED_KW]),
                                         "delivered_kw": _number(r[s.DELIVERED_KW])}
                         for r in fleet.to_dict("records")}
    forecast = view["baselines"].get("forecast", {})
    view["delivered_kw"] = forecast.get("delivered_kw")
    per_site: dict[str, dict[str, Any]] = {}
    for r in result_rows[result_rows[dd.DEVICE_ID] != FLEET].to_dict("records"):
        site = per_site.setdefault(r[dd.DEVICE_ID], {"device_id": r[dd.DEVICE_ID], "planned_kw": _number(r[s.PLANNED_KW])})
        site[r[s.BASELINE]] = {"baseline_kw": _number(r[s.BASELINE_KW]), "measured_kw": _number(r[s.MEASURED_KW]),
                               "delivered_kw": _number(r[s.DELIVERED_KW])}
    view["per_site"] = sorted(per_site.values(), key=lambda site: site["device_id"])
    return view
