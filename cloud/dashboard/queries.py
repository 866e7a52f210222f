"""What the dashboard shows, read from a :class:`CloudStore` and shaped as JSON-ready dicts.

Series travel as columns (``{"ts": [...], "solar_generation_kw": [...]}``) rather than one
object per row: that is the shape the page's charts draw from, and half the bytes.

"Recent" is anchored on each site's newest reading, not on the wall clock, so a store filled
by a backfill last week still shows its last 48 hours instead of an empty chart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cloud.dashboard.fleet import runs_newest_first
from cloud.feature_engineering.pipeline import TARGETS
from cloud.optimization.model import HorizonInputs
from cloud.optimization.plan import classify_actions, grid_costs
from cloud.optimization.summary import PlanSummary, StepInputs, read_summary, summarize
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.money import currency_of
from der_core.site_file import site_currency

#: The reading columns the page draws, in the order it draws them.
READING_SERIES: tuple[str, ...] = (
    dd.SOLAR_KW, dd.LOAD_TOTAL, dd.BATTERY_SOC, dd.BATTERY_POWER, dd.NET_GRID_FLOW, dd.PRICE, dd.FEED_IN,
)
#: The house load and PV as every job reads them (``cloud.site_steps``): measured, else the
#: site's balance (a home with a utility meter and an inverter but no load meter), PV 0 in
#: the dark where the inverter logs nothing; at each reading's time, in the jobs' step.
HOUSE_LOAD, PV = "house_load_kw", "pv_kw"
COMPLETED_STEP = pd.Timedelta(minutes=15)
SITE_SUMMARY_FIELDS: tuple[str, ...] = (
    "device_id", "timezone", "country", "latitude", "longitude", "pv_capacity_kw", "battery_capacity_kwh",
    "battery_max_charge_kw", "battery_max_discharge_kw", "has_ev",
)
#: The jobs the pipeline runs, in chain order; other jobs found in ``pipeline_runs`` follow.
KNOWN_JOBS: tuple[str, ...] = ("simulate", "cloud_sync", "feature_engineering", "model_training", "forecasting", "optimizer",
                               "portfolio")
RUN_HISTORY = 500  # runs read to find each job's last success and recent failures


class UnknownSite(LookupError):
    """No site row and no readings for a device id."""


def iso(ts: Any) -> str | None:
    if ts is None or ts is pd.NaT or (isinstance(ts, float) and ts != ts):
        return None
    return dd.format_ts(pd.Timestamp(ts))


def _floats(values: pd.Series | np.ndarray) -> list[float | None]:
    array = np.asarray(values, dtype="float64")
    cells = np.round(array, 4).astype(object)
    cells[~np.isfinite(array)] = None  # JSON has no NaN
    return cells.tolist()


def _stamps(values: pd.Series) -> list[str]:
    """:func:`der_data.format_ts` over a column. Whole-second instants (every reading, forecast
    and plan step) are formatted in one vectorised call, which a week of readings needs (one
    call per value cost most of the response); anything finer goes through ``format_ts``."""
    stamps = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    if stamps.hasnans or (stamps.microsecond != 0).any() or (stamps.nanosecond != 0).any():
        return [dd.format_ts(t) for t in stamps]
    seconds = stamps.tz_convert(None).to_numpy().astype("datetime64[s]")
    return np.char.add(np.datetime_as_string(seconds, unit="s"), "+00:00").tolist()


def list_sites(store: CloudStore) -> list[dict[str, Any]]:
    stats = store.reading_stats()
    rows = {row["device_id"]: row for row in store.sites()}
    out = []
    for device in sorted(set(rows) | set(stats)):
        row = rows.get(device, {"device_id": device})
        stat = stats.get(device, {})
        out.append({
            **{k: row.get(k) for k in SITE_SUMMARY_FIELDS},
            "device_id": device,
            "currency": site_currency(row),
            "first_reading": iso(stat.get(s.FIRST_TS)),
            "last_reading": iso(stat.get(s.LAST_TS)),
            "readings": int(stat.get(s.ROW_COUNT, 0)),
        })
    return out


def last_reading_ts(site: Mapping[str, Any]) -> pd.Timestamp | None:
    return None if site["last_reading"] is None else dd.parse_ts(site["last_reading"])


def readings(store: CloudStore, device_id: str, start: pd.Timestamp, stop: pd.Timestamp) -> dict[str, Any]:
    """The stored readings, and beside them :data:`HOUSE_LOAD` and :data:`PV` as the jobs read
    them, so a home whose load only the balance gives shows the load its plans were made for."""
    frame = store.read_readings(device_id, start, stop, columns=READING_SERIES)
    completed = _completed(store, device_id, frame)
    return {
        "device_id": device_id,
        "start": iso(start),
        "end": iso(stop),
        "count": len(frame),
        "series": {"ts": _stamps(frame[dd.TS]), **{c: _floats(frame[c]) for c in READING_SERIES},
                   HOUSE_LOAD: _floats(completed[dd.LOAD_TOTAL]), PV: _floats(completed[dd.SOLAR_KW])},
    }


def _completed(store: CloudStore, device_id: str, frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`cloud.site_steps.site_steps` of the readings, at each reading's time."""
    from cloud.site_steps import site_steps

    measured = frame.set_index(dd.TS)[[dd.LOAD_TOTAL, dd.SOLAR_KW]]
    if frame.empty or measured.notna().all().all():  # nothing to complete (a gateway's site): no work
        return measured
    row = store.read_frame(s.SITES, {dd.DEVICE_ID: device_id})
    site = row.iloc[0].to_dict() if len(row) else {}
    steps = site_steps(frame, site, COMPLETED_STEP)
    return steps[[dd.LOAD_TOTAL, dd.SOLAR_KW]].reindex(pd.DatetimeIndex(frame[dd.TS]))


def _shown_forecast_rows(frame: pd.DataFrame) -> np.ndarray:
    """Which rows :func:`forecasts` shows: per target its newest issue and, of that issue's
    models, the first by name among those with a P10/P90 band (else the first by name).

    A few hundred rows: one pass in Python costs less than the grouped frame operations."""
    targets, models = frame[s.TARGET].tolist(), frame[s.MODEL].tolist()
    issued = frame[s.ISSUED_AT].to_numpy(dtype="datetime64[us]").astype("int64").tolist()
    banded_rows = frame[s.LOWER].notna().to_numpy().tolist()
    newest: dict[Any, int] = {}
    for target, when in zip(targets, issued):
        if when > newest.get(target, when - 1):
            newest[target] = when
    banded: dict[tuple[Any, Any], bool] = {}
    for target, model, when, band in zip(targets, models, issued, banded_rows):
        if when == newest[target]:
            banded[target, model] = banded.get((target, model), False) or band
    chosen = {}
    for (target, model), band in sorted(banded.items(), key=lambda item: (item[0][0], not item[1], item[0][1])):
        chosen.setdefault(target, model)
    return np.fromiter((when == newest[target] and model == chosen[target]
                        for target, model, when in zip(targets, models, issued)), dtype=bool, count=len(targets))


def forecasts(store: CloudStore, device_id: str, since: pd.Timestamp | None) -> dict[str, Any]:
    """Per target, the newest issued forecast (one model: the one with P10/P90 bands if any)."""
    frame = _newest_forecasts(store, device_id, since)
    shown = frame[_shown_forecast_rows(frame)].sort_values([s.TARGET, dd.TS], kind="stable")
    out: dict[str, Any] = {}
    targets = shown[s.TARGET].to_numpy()
    bounds = np.flatnonzero(np.r_[len(targets) > 0, targets[1:] != targets[:-1]])  # each target's first row
    for first, stop in zip(bounds, [*bounds[1:], len(shown)]):
        rows = shown.iloc[first:stop]
        out[str(rows[s.TARGET].iloc[0])] = {
            "model": str(rows[s.MODEL].iloc[0]),
            "issued_at": iso(rows[s.ISSUED_AT].iloc[0]),
            "series": {"ts": _stamps(rows[dd.TS]), "value": _floats(rows[s.VALUE]),
                       "p10": _floats(rows[s.LOWER]), "p90": _floats(rows[s.UPPER])},
        }
    return {"device_id": device_id, "targets": out}


def _newest_forecasts(store: CloudStore, device_id: str, since: pd.Timestamp | None) -> pd.DataFrame:
    """The rows of the newest issue, and of each forecast target it lacks that target's
    newest. Forecasts are issued every hour and every issue is kept: three days of them
    are some 17,000 rows a site, which reading whole cost 95 ms a request on PostgreSQL."""
    newest = store.newest(s.FORECASTS, s.ISSUED_AT, {dd.DEVICE_ID: device_id}, start=since)
    if newest is None:
        return s.frame_from_records(s.FORECASTS, [], list(s.table(s.FORECASTS).columns))
    frames = [store.read_frame(s.FORECASTS, {dd.DEVICE_ID: device_id, s.ISSUED_AT: newest}, start=since)]
    for target in sorted(set(TARGETS) - set(frames[0][s.TARGET])):
        issued = store.newest(s.FORECASTS, s.ISSUED_AT, {dd.DEVICE_ID: device_id, s.TARGET: target}, start=since)
        if issued is not None:
            frames.append(store.read_frame(s.FORECASTS, {dd.DEVICE_ID: device_id, s.TARGET: target, s.ISSUED_AT: issued},
                                           start=since))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _plan_frame(store: CloudStore, device_id: str, since: pd.Timestamp | None) -> pd.DataFrame:
    """The newest plan's steps from ``since`` (every plan is kept, one an hour)."""
    newest = store.newest(s.PLANS, s.ISSUED_AT, {dd.DEVICE_ID: device_id}, start=since)
    equals = {dd.DEVICE_ID: device_id} | ({} if newest is None else {s.ISSUED_AT: newest})
    frame = store.read_frame(s.PLANS, equals, start=since)
    return frame.sort_values(dd.TS).reset_index(drop=True)


def plan_actions(frame: pd.DataFrame) -> tuple[str, ...]:
    """Each step's action by the optimizer's own rule, from the stored battery and grid flows."""
    power = frame[dd.BATTERY_POWER].to_numpy(dtype="float64")
    grid = frame[dd.NET_GRID_FLOW].to_numpy(dtype="float64")
    return classify_actions(np.clip(power, 0, None), np.clip(-power, 0, None),
                            np.clip(grid, 0, None), np.clip(-grid, 0, None), tolerance_kw=1e-3)


def plan(store: CloudStore, site: Mapping[str, Any], since: pd.Timestamp | None) -> dict[str, Any]:
    device_id = site["device_id"]
    frame = _plan_frame(store, device_id, since)
    if frame.empty:
        return {"device_id": device_id, "issued_at": None, "steps": 0, "actions": {}, "series": None, "summary": None,
                "stale": {}}
    actions = plan_actions(frame)
    summary = plan_summary(store, site, frame, since).to_dict()
    return {
        "device_id": device_id,
        "summary": summary,
        "stale": summary["stale"],  # per input planned on stored data: "stale since … (why)"
        "issued_at": iso(frame[s.ISSUED_AT].iloc[0]),
        "objective": frame[s.OBJECTIVE].iloc[0],
        "steps": len(frame),
        "actions": {a: actions.count(a) for a in sorted(set(actions))},
        "series": {
            "ts": _stamps(frame[dd.TS]), "action": list(actions),
            "battery_power_kw": _floats(frame[dd.BATTERY_POWER]), "soc_percent": _floats(frame[dd.BATTERY_SOC]),
            "net_grid_flow_kw": _floats(frame[dd.NET_GRID_FLOW]), "price_per_kwh": _floats(frame[s.PLAN_PRICE]),
            "expected_cost": _floats(frame[s.EXPECTED_COST]),
        },
    }


def _feed_in_by_time_of_day(recent: pd.DataFrame, stamps: pd.Series) -> np.ndarray:
    """The export tariff a plan step will likely see: the last observed value at the same time of
    day (the tariff follows time-of-use periods), else the recent median."""
    if recent.empty:
        return np.zeros(len(stamps))

    def key(ts):
        return ts.dt.hour * 60 + ts.dt.minute

    by_minute = recent.assign(minute=key(recent[dd.TS])).groupby("minute")[dd.FEED_IN].last()
    values = key(pd.to_datetime(stamps, utc=True)).map(by_minute).to_numpy(dtype="float64")
    return np.where(np.isfinite(values), values, float(recent[dd.FEED_IN].median()))


def plan_summary(store: CloudStore, site: Mapping[str, Any], frame: pd.DataFrame,
                 since: pd.Timestamp | None) -> PlanSummary:
    """The stored summary of the plan in ``frame`` (what the optimizer wrote beside it).

    A plan stored without one (written by another producer) is summarised here by the same
    function, on its stored flows and prices, exports at the feed-in tariff recently seen at
    the same time of day; its bills are then energy only (the demand charge belongs to the
    month's peak) and the battery's own rule is unknown."""
    device_id, issued = site["device_id"], frame[s.ISSUED_AT].iloc[0]
    stored = read_summary(store, device_id, issued, since)
    if stored is not None:
        return stored
    step_h = _step_hours(frame[dd.TS])
    last_ts = last_reading_ts(site)
    recent = store.read_readings(device_id, None if last_ts is None else last_ts - pd.Timedelta(days=1),
                                 columns=[dd.FEED_IN])
    price = frame[s.PLAN_PRICE].to_numpy(dtype="float64")
    feed_in = _feed_in_by_time_of_day(recent, frame[dd.TS])
    grid = frame[dd.NET_GRID_FLOW].to_numpy(dtype="float64")
    power = frame[dd.BATTERY_POWER].to_numpy(dtype="float64")

    # Priced by the optimizer's own accounting (plan.grid_costs), energy only; a step whose
    # price is unknown adds nothing.
    tariff = HorizonInputs(np.zeros(len(grid)), np.zeros(len(grid)), np.nan_to_num(price), np.nan_to_num(feed_in),
                           step_hours=step_h)

    def bill(flow: np.ndarray) -> float:
        return float(grid_costs(tariff, np.nan_to_num(flow))[0].energy.sum())

    steps = StepInputs(pd.DatetimeIndex(pd.to_datetime(frame[dd.TS], utc=True)), step_h, plan_actions(frame), power, grid,
                       price, feed_in)
    return summarize(device_id, site.get("timezone") or "UTC", site.get("currency") or currency_of(site.get("country") or ""),
                     pd.Timestamp(issued), steps, bill(grid), bill(grid - power), None)


def savings(store: CloudStore, site: Mapping[str, Any], since: pd.Timestamp | None) -> dict[str, Any]:
    """The current plan's bills and savings, as its summary states them."""
    device_id = site["device_id"]
    frame = _plan_frame(store, device_id, since)
    if frame.empty:
        return {"device_id": device_id, "issued_at": None, "available": False}
    summary = plan_summary(store, site, frame, since).to_dict()
    return {
        "device_id": device_id, "available": True, "issued_at": iso(frame[s.ISSUED_AT].iloc[0]),
        "horizon_start": summary["start"], "horizon_end": summary["end"], "currency": summary["currency"],
        "bill_with_plan": summary["bill"], "bill_without_battery": summary["bill_without_battery"],
        "bill_self_consumption": summary["bill_self_consumption"], "savings": summary["savings"],
        "savings_vs_self_consumption": summary["savings_vs_self_consumption"],
        "savings_text": summary["savings_text"], "savings_line": summary["savings_line"],
    }


def _step_hours(stamps: pd.Series) -> float:
    if len(stamps) < 2:
        return 0.25
    return float(pd.to_datetime(stamps).diff().dropna().median() / pd.Timedelta(hours=1))


def pipeline_status(store: CloudStore, now: pd.Timestamp) -> list[dict[str, Any]]:
    """Per job: its newest run, newest success, rows of that success, failures among recent runs
    and the age of the newest success (the stage's freshness)."""
    runs = store.runs(limit=RUN_HISTORY)
    jobs = [j for j in KNOWN_JOBS if any(r[s.JOB] == j for r in runs)]
    jobs += sorted({r[s.JOB] for r in runs} - set(jobs))
    out = []
    for job in jobs:
        mine = [r for r in runs if r[s.JOB] == job]
        ok = next((r for r in mine if r[s.STATUS] == "ok"), None)
        success = ok and ok.get(s.FINISHED_AT)
        out.append({
            "job": job,
            "last_status": mine[0][s.STATUS],
            "last_started": iso(mine[0][s.STARTED_AT]),
            "last_error": mine[0].get(s.ERROR),
            "last_success": iso(success) if success else None,
            "rows": int(ok[s.ROWS] or 0) if ok else 0,
            "failures": sum(1 for r in mine if r[s.STATUS] not in ("ok", "running")),
            "age_seconds": round((now - pd.Timestamp(success)).total_seconds(), 1) if success else None,
        })
    return out


def portfolio(directory: Path | None) -> dict[str, Any]:
    """Portfolio results found under ``directory``: the summary of each whole run, newest first,
    the runs the fleet page draws (:func:`cloud.dashboard.fleet.runs_newest_first`), so the two
    pages never disagree on which run is the newest."""
    if directory is None or not Path(directory).is_dir():
        return {"available": False, "directory": None if directory is None else str(directory), "results": []}
    results = []
    for path in (run / "summary.json" for run in runs_newest_first(directory)):
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            results.append({"path": str(path.relative_to(directory)), "error": f"unreadable: {error}"})
            continue
        results.append({"path": str(path.relative_to(directory)),
                        "modified": iso(pd.Timestamp(path.stat().st_mtime_ns, unit="ns", tz="UTC").floor("us")),
                        "summary": summary})
    return {"available": bool(results), "directory": str(directory), "results": results}
