"""The training job and its companions, against any :class:`~cloud.store.base.CloudStore`:
``run_training`` (``--train``), ``run_evaluation`` (``--evaluate``), and the two calls the
pipeline makes, ``train_or_reuse`` and ``issue_forecasts``. Each run writes a
``pipeline_runs`` row."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cloud.forecasting import design as dz
from cloud.forecasting.data import load_histories
from cloud.forecasting.evaluation import (
    TargetEvaluation,
    evaluate_version,
    newest_window_starts,
)
from cloud.forecasting.issue import forecast_next_day, write_forecasts
from cloud.forecasting.plots import sample_week_png
from cloud.forecasting.registry import PLOT, Registry
from cloud.forecasting.settings import MAX_GAP, STEP, ForecastSettings
from cloud.forecasting.training import TrainingResult, TrainSettings, train
from cloud.forecasting.weather import CsvWeatherForecast, WeatherForecast
from cloud.job_status import recorded_run
from cloud.live.inputs import SitesWeather
from cloud.store.base import CloudStore
from der_core import der_data as dd

log = logging.getLogger(__name__)

TRAIN_JOB, EVALUATE_JOB, FORECAST_JOB = "model_training", "model_evaluation", "forecasting"
MIN_DAYS = 14.0  # a week of lags, then a week to learn from and test on
EVALUATE_DAYS = 7.0


@dataclass
class TrainOutcome:
    version: str
    folder: Path
    result: TrainingResult
    forecast_rows: int


def sites_weather(store: CloudStore, settings: ForecastSettings) -> WeatherForecast:
    """The models' weather input: a declared site's own weather service where it names one
    (``cloud.live.inputs``), else the settings' (the recorded CSV or the simulator's). A
    recorded file naming a site the store does not hold is said once: its rows are never read,
    and a misspelt device id would otherwise leave that site without weather unnoticed."""
    fallback = settings.weather()
    if isinstance(fallback, CsvWeatherForecast):
        unknown = fallback.device_ids() - {str(row[dd.DEVICE_ID]) for row in store.sites()}
        if unknown:
            log.warning("weather forecast file %s: its rows for %s are not used: no site of %s has that device_id",
                        settings.weather_csv, ", ".join(sorted(unknown)), store.label)
    return SitesWeather(store, fallback)


def manifest_of(result: TrainingResult, settings: ForecastSettings, train_settings: TrainSettings,
                now: pd.Timestamp, store_label: str) -> dict[str, Any]:
    return {
        "created_at": now.isoformat(), "design_version": dz.DESIGN_VERSION, "features": list(dz.FEATURES),
        "step_minutes": STEP.total_seconds() / 60, "horizon_steps": train_settings.horizon_steps,
        "issue_every": str(train_settings.issue_every), "test_size": settings.test_size, "source": store_label,
        "targets": {t: {"models": list(r.models), "sites": r.sites,
                        "train_range": [str(x) for x in r.train_range], "test_range": [str(x) for x in r.test_range],
                        "site_ranges": {d: [str(x) for x in pair] for d, pair in r.site_ranges.items()}}
                    for t, r in result.targets.items()},
        "skipped": result.skipped,
        "sites_left_out": [{"target": g.target, "device_id": g.device_id, "reason": g.reason} for g in result.site_gaps],
    }


def run_training(store: CloudStore, settings: ForecastSettings, client=None, now: pd.Timestamp | None = None,
                 train_settings: TrainSettings | None = None) -> TrainOutcome:
    """Train, register and activate a version, then issue each site's next-day forecasts."""
    now = dd.utc_now() if now is None else now
    train_settings = train_settings or TrainSettings(horizon_steps=settings.horizon_steps, test_size=settings.test_size)

    def work():
        ids = [settings.site_id] if settings.site_id else None
        histories = load_histories(store, STEP, MAX_GAP, MIN_DAYS, ids)
        result = train(histories, train_settings, sites_weather(store, settings), client)
        registry = Registry(settings.model_dir)
        name, staging = registry.new_version(now)
        sample_week_png({t: r.test_rows for t, r in result.targets.items()}, staging / PLOT)
        metrics = {t: r.metrics for t, r in result.targets.items()}
        folder = registry.commit(name, staging, manifest_of(result, settings, train_settings, now, store.label),
                                 metrics, {t: r.models for t, r in result.targets.items()})
        registry.activate(name)
        rows = issue_forecasts(store, settings.model_dir, [h.device_id for h in histories], settings=settings)
        return TrainOutcome(name, folder, result, rows), sum(len(r.test_rows) for r in result.targets.values())

    return recorded_run(store, TRAIN_JOB, {"model_dir": str(settings.model_dir), "test_size": settings.test_size}, work)


def run_evaluation(store: CloudStore, settings: ForecastSettings, days: float = EVALUATE_DAYS,
                   now: pd.Timestamp | None = None) -> tuple[str, list[TargetEvaluation]]:
    """Score the active version on the newest ``days`` of every site; record it beside the version."""
    registry = Registry(settings.model_dir)
    version = registry.load()

    def work():
        histories = load_histories(store, STEP, MAX_GAP, dz.PROFILE_DAYS + 1 + 1, None, days)
        starts = newest_window_starts(histories, days)
        results = evaluate_version(version, histories, starts, sites_weather(store, settings), settings.drift_threshold)
        registry.record_evaluation(version.name, {
            "evaluated_at": (now or dd.utc_now()).isoformat(),
            "window_starts": {device: start.isoformat() for device, start in starts.items()},
            "drift_threshold": settings.drift_threshold, "targets": [r.as_dict() for r in results]})
        return (version.name, results), sum(r.rows for r in results)

    return recorded_run(store, EVALUATE_JOB, {"version": version.name, "days": days}, work)


def issue_forecasts(store: CloudStore, model_dir: str | Path, device_ids: Sequence[str] | None = None,
                    settings: ForecastSettings | None = None) -> int:
    """Each site's next-day forecast from its newest reading, written to ``forecasts``."""
    settings = settings or ForecastSettings(model_dir=Path(model_dir))
    version = Registry(model_dir).load()
    weather = sites_weather(store, settings)
    stats = store.reading_stats()
    known = {row[dd.DEVICE_ID] for row in store.sites()}
    rows = 0
    for device in (device_ids if device_ids is not None else sorted(stats)):
        if device not in stats or device not in known:
            log.warning("%s: no forecast, %s", device, "no readings" if device not in stats else "no row in sites")
            continue
        frame = forecast_next_day(store, device, None, min(settings.horizon_steps, int(version.manifest["horizon_steps"])),
                                  weather=weather, version=version)
        rows += write_forecasts(store, frame)
    return rows


def train_or_reuse(store: CloudStore, model_dir: str | Path, max_age: pd.Timedelta | float | None = None) -> str:
    """Keep the active version while it is younger than ``max_age``; else train a new one."""
    registry = Registry(model_dir)
    active = registry.active()
    now = dd.utc_now()
    if active is not None and max_age is not None:
        limit = max_age if isinstance(max_age, pd.Timedelta) else pd.Timedelta(seconds=float(max_age))
        if registry.age(active, now) < limit:
            return f"reused models {active}"
    outcome = run_training(store, ForecastSettings(model_dir=Path(model_dir)), now=now)
    return f"trained models {outcome.version} ({', '.join(outcome.result.targets)})"
