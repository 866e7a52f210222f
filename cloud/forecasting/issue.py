"""Forecasts from the active models: what the optimizer and the pipeline call.

:func:`forecast_next_day` returns one row per step of the horizon with ``<target>_p10``,
``<target>_p50`` and ``<target>_p90`` for every target the active version trained (load,
solar, price); a target the version could not train is absent, and the frame's
``attrs["missing_targets"]`` says why. :func:`write_forecasts` stores such a frame in the
``forecasts`` table (``value`` = P50, ``lower`` = P10, ``upper`` = P90).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cloud.forecasting import design as dz
from cloud.forecasting.models import PRIMARY
from cloud.forecasting.registry import LoadedVersion, Registry
from cloud.forecasting.settings import MAX_GAP, STEP, settings_from
from cloud.forecasting.targets import TARGET_COLUMNS
from cloud.forecasting.training import NotEnoughData
from cloud.forecasting.weather import WeatherForecast
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.errors import UsageError

TARGET_TS = dz.TARGET_TS
HISTORY = pd.Timedelta(days=dz.HISTORY_DAYS)


def quantile_columns(target: str) -> tuple[str, str, str]:
    return f"{target}_p10", f"{target}_p50", f"{target}_p90"


def _site_and_readings(source: CloudStore | pd.DataFrame, device_id: str, tau: pd.Timestamp,
                       site: Mapping[str, Any] | None) -> tuple[Mapping[str, Any], pd.DataFrame]:
    if isinstance(source, pd.DataFrame):
        readings = source[(source[dd.DEVICE_ID] == device_id) & (source[dd.TS] <= tau) & (source[dd.TS] > tau - HISTORY)]
        if site is None:
            raise UsageError("forecast_next_day on a frame needs the site row (site=...)")
        return site, readings
    if site is None:
        site = next((row for row in source.sites() if row[dd.DEVICE_ID] == device_id), None)
        if site is None:
            raise NotEnoughData(f"{device_id}: no row in sites of {source.label}")
    return site, source.read_readings(device_id, tau - HISTORY, tau + pd.Timedelta(microseconds=1))


def _history_until(readings: pd.DataFrame, site: Mapping[str, Any], tau: pd.Timestamp) -> tuple[dz.SiteHistory, int]:
    """The site's grid reaching exactly ``tau`` (empty steps NaN when readings stopped earlier)
    and the position of ``tau`` in it."""
    history = dz.site_history(readings, site, STEP, MAX_GAP)
    start = min(history.grid.index[0], tau - HISTORY + STEP)
    index = pd.date_range(start.ceil(STEP), tau, freq=STEP, name=dd.TS)
    grid = history.grid.reindex(index)
    return dz.SiteHistory(site, grid, STEP), len(index) - 1


def forecast_next_day(source: CloudStore | pd.DataFrame, device_id: str, issued_at: pd.Timestamp | str | None = None,
                      horizon_steps: int = 96, *, model_dir: str | None = None, site: Mapping[str, Any] | None = None,
                      weather: WeatherForecast | None = None, version: LoadedVersion | None = None) -> pd.DataFrame:
    """P10/P50/P90 of every trained target for the ``horizon_steps`` 15-minute steps after
    ``issued_at`` (default: the site's newest reading), from readings at or before it only.

    ``source`` is a cloud store or a flat reading frame (then pass ``site``, its ``sites`` row).
    ``model_dir`` defaults to ``FORECAST_MODEL_DIR`` (else ./trained_models) and ``weather`` to
    ``FORECAST_WEATHER_CSV`` (else the simulator's forecast for simulated sites).
    Columns: ``target_ts`` then ``load_kw_p10``, ``load_kw_p50``, ``load_kw_p90``,
    ``solar_kw_…``, ``price_per_kwh_…``; ``attrs`` carries ``model_version``, ``issued_at``
    and ``missing_targets``.
    """
    configured = settings_from(model_dir)  # FORECAST_MODEL_DIR and FORECAST_WEATHER_CSV when not passed
    version = version or Registry(configured.model_dir).load()
    trained_horizon = int(version.manifest["horizon_steps"])
    if not 1 <= horizon_steps <= trained_horizon:
        raise UsageError(f"horizon_steps={horizon_steps}: the active models forecast 1 to {trained_horizon} steps")
    tau = _issue_time(source, device_id, issued_at)
    site, readings = _site_and_readings(source, device_id, tau, site)
    if readings.empty:
        raise NotEnoughData(f"{device_id}: no readings in the {HISTORY.days} days before {dd.format_ts(tau)}")
    history, position = _history_until(readings, site, tau)
    weather = weather or configured.weather()
    out = pd.DataFrame({TARGET_TS: pd.date_range(tau + STEP, periods=horizon_steps, freq=STEP)})
    missing = dict(version.manifest.get("skipped", {}))
    for target in (t for t in TARGET_COLUMNS if t in version.models):  # load, solar, price: the documented order
        why = not_covered(version.manifest, target, device_id)
        if why is not None:
            missing[target] = why
            continue
        models = version.models[target]
        rows = dz.design_matrix(history, target, np.array([position]), horizon_steps, weather)
        pred = models[PRIMARY].predict(rows)
        for k, column in enumerate(quantile_columns(target)):
            out[column] = pred[:, k]
    out.attrs.update(model_version=version.name, issued_at=tau, device_id=device_id, missing_targets=missing)
    return out


def not_covered(manifest: Mapping[str, Any], target: str, device_id: str) -> str | None:
    """Why a version's ``target`` model does not forecast ``device_id``, or None when it was
    trained on the site. A site left out of a target's training (too few days of PV, no PV
    declared) would get numbers from a model that never saw it, and its plan would take them
    for a forecast; without them it plans that target as the naive forecaster does."""
    sites = manifest.get("targets", {}).get(target, {}).get("sites")
    if sites is None or device_id in sites:
        return None
    reason = next((gap.get("reason") for gap in manifest.get("sites_left_out", [])
                   if gap.get("target") == target and gap.get("device_id") == device_id), None)
    return f"the {target} model was not trained on {device_id}" + (f": {reason}" if reason else "")


def _issue_time(source, device_id: str, issued_at) -> pd.Timestamp:
    if issued_at is not None:
        return dd.parse_ts(issued_at).floor(STEP)
    if isinstance(source, pd.DataFrame):
        last = source.loc[source[dd.DEVICE_ID] == device_id, dd.TS].max()
    else:
        last = source.reading_stats().get(device_id, {}).get("last_ts")
    if last is None or pd.isna(last):
        raise NotEnoughData(f"{device_id}: no readings to forecast from")
    return pd.Timestamp(last).floor(STEP)


def forecast_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """A :func:`forecast_next_day` frame as ``forecasts`` table rows."""
    parts = []
    for column in frame.columns:
        if not column.endswith("_p50"):
            continue
        target = column[: -len("_p50")]
        low, mid, high = quantile_columns(target)
        parts.append(pd.DataFrame({
            dd.DEVICE_ID: frame.attrs["device_id"], dd.TS: frame[TARGET_TS], s.TARGET: target,
            s.MODEL: f"{PRIMARY}@{frame.attrs['model_version']}", s.ISSUED_AT: frame.attrs["issued_at"],
            s.VALUE: frame[mid], s.LOWER: frame[low], s.UPPER: frame[high],
        }))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(s.table(s.FORECASTS).columns))


def write_forecasts(store: CloudStore, frame: pd.DataFrame) -> int:
    rows = forecast_rows(frame)
    return store.upsert_frame(s.FORECASTS, rows) if len(rows) else 0
