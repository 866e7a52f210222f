"""Training and honest evaluation of every model for every target the data supports.

Rows are split in time: the newest ``test_size`` share of issue times is the test set, and
training rows whose target instant reaches into it are dropped, so no training truth overlaps
a test forecast. A rolling-origin backtest repeats the split at earlier origins (expanding
window) for LightGBM's median and the seasonal-naive reference, to show the test result is
not one lucky fortnight. LightGBM's P10-P90 band is calibrated the same way inside the
training rows (:func:`fit_primary`): the newest ``calibration_size`` of them scores a model
fitted on the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cloud.forecasting import conformal
from cloud.forecasting import design as dz
from cloud.forecasting.metrics import score
from cloud.forecasting.models import (
    MODELS,
    PRIMARY,
    QUANTILES,
    REFERENCE,
    Forecaster,
    LightGBMForecaster,
)
from cloud.forecasting.targets import (
    NON_NEGATIVE,
    PRICE_PER_KWH,
    SOLAR_KW,
    TARGET_COLUMNS,
    Availability,
    availability,
)
from cloud.forecasting.weather import WeatherForecast
from der_core import der_data as dd
from der_core.cli_support import progress
from der_core.errors import DERError

log = logging.getLogger(__name__)


class NotEnoughData(DERError):
    """Too little history to train or evaluate."""


@dataclass(frozen=True)
class TrainSettings:
    horizon_steps: int = 96
    issue_every: pd.Timedelta = pd.Timedelta(hours=6)
    test_size: float = 0.2
    min_days: float = 14.0
    backtest_folds: int = 2
    models: tuple[str, ...] = tuple(MODELS)
    lgbm_params: dict[str, Any] = field(default_factory=dict)
    calibration_size: float = 0.2  # share of training issue times that calibrates the band; 0: none

    def __post_init__(self) -> None:
        if not 0 < self.test_size < 1:
            raise ValueError(f"test size {self.test_size}: expected a fraction between 0 and 1")
        if not 0 <= self.calibration_size < 1:
            raise ValueError(f"calibration size {self.calibration_size}: expected a fraction from 0 to below 1")


@dataclass
class TargetResult:
    target: str
    models: dict[str, Forecaster]
    metrics: dict[str, Any]
    sites: list[str]
    train_range: tuple[pd.Timestamp, pd.Timestamp]
    test_range: tuple[pd.Timestamp, pd.Timestamp]
    test_rows: pd.DataFrame  # test design rows with every model's P10/P50/P90, for plots
    #: Per site, the newest truth its training rows hold and the newest its test rows hold:
    #: each site is split at its own time (:func:`time_split`), so the fleet's range says
    #: little of one site's.
    site_ranges: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = field(default_factory=dict)


@dataclass
class TrainingResult:
    targets: dict[str, TargetResult]
    skipped: dict[str, str]  # target -> why no model
    site_gaps: list[Availability]  # sites left out of a trained target, with the reason


def design_rows(histories: Sequence[dz.SiteHistory], target: str, settings: TrainSettings,
                weather: WeatherForecast) -> pd.DataFrame:
    parts = []
    for history in progress(histories, total=len(histories), desc=f"features {target}", unit="site"):
        positions = dz.issue_positions(history, settings.issue_every, settings.horizon_steps)
        if len(positions):
            parts.append(dz.design_matrix(history, target, positions, settings.horizon_steps, weather))
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*dz.META, *dz.FEATURES])
    return rows[np.isfinite(rows[dz.Y].to_numpy(dtype="float64"))].reset_index(drop=True)


def time_split(rows: pd.DataFrame, test_size: float) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """(train mask, test mask, cutoff per site): a site's rows issued at or after its cutoff
    are test, those whose target instant is at or before it train; its cutoff leaves its own
    newest ``test_size`` of issue times to the test. Per site, because sites cover different
    periods: one cutoff for all, the newest share of the fleet's times, left a site measured
    years before another with no test (its skill never measured) and a site that joined late
    with no training (forecast by a model that never saw it)."""
    def cutoff(issued: pd.Series) -> pd.Timestamp:
        issues = np.sort(issued.unique())
        return pd.Timestamp(issues[min(int(len(issues) * (1 - test_size)), len(issues) - 1)])

    cutoffs = rows.groupby(dd.DEVICE_ID)[dz.ISSUED_AT].agg(cutoff)
    at = rows[dd.DEVICE_ID].map(cutoffs)
    test = (rows[dz.ISSUED_AT] >= at).to_numpy()
    train = (rows[dz.TARGET_TS] <= at).to_numpy()
    return train, test, cutoffs


def judged(rows: pd.DataFrame, target: str) -> np.ndarray:
    """The rows a target's forecasts are judged on: daytime for PV (night is trivially right)."""
    return rows[dz.DAYTIME].to_numpy(dtype=bool) if target == SOLAR_KW else np.ones(len(rows), dtype=bool)


#: Rows (every k-th of those the calibrating model was fitted on) whose median band width is
#: its typical width: a median needs no more, and predicting every row would cost seconds.
TYPICAL_ROWS = 20_000


def fit_primary(rows: pd.DataFrame, target: str, lgbm_params: dict[str, Any], client=None,
                calibration_size: float = 0.0) -> LightGBMForecaster:
    """LightGBM fitted on every row; with ``calibration_size``, its P10-P90 band calibrated
    (:mod:`cloud.forecasting.conformal`) on the judged rows issued in the newest
    ``calibration_size`` of issue times, by a model fitted on the rows whose truths precede
    them (:func:`time_split` within ``rows``), its misses measured in units no narrower than
    that model's typical band on the rows it was fitted on."""
    y = rows[dz.Y].to_numpy(dtype="float64")

    def new() -> LightGBMForecaster:
        return LightGBMForecaster(0.0 if target in NON_NEGATIVE else None, lgbm_params,
                                  clear_sky_index=target == SOLAR_KW)

    model = new().fit(rows, y, client=client)
    if calibration_size > 0 and rows[dz.ISSUED_AT].nunique() > 1:
        before, later, _ = time_split(rows, calibration_size)
        if before.any() and later.any():
            probe = new().fit(rows[before], y[before], client=client)
            fitted = rows[before][judged(rows[before], target)]
            typical = conformal.typical_width(probe.predict(fitted.iloc[::max(1, len(fitted) // TYPICAL_ROWS)]))
            sliced = rows[later]
            seen = judged(sliced, target)
            model.band = conformal.band_offsets(probe.predict(sliced)[seen], y[later][seen],
                                                QUANTILES[0], 1.0 - QUANTILES[-1], typical)
    return model


def fit_models(rows: pd.DataFrame, target: str, kinds: Sequence[str], lgbm_params: dict[str, Any],
               client=None, calibration_size: float = 0.0) -> dict[str, Forecaster]:
    floor = 0.0 if target in NON_NEGATIVE else None
    y = rows[dz.Y].to_numpy(dtype="float64")
    models: dict[str, Forecaster] = {}
    for kind in progress(kinds, total=len(kinds), desc=f"train {target}", unit="model"):
        if kind == PRIMARY:
            models[kind] = fit_primary(rows, target, lgbm_params, client, calibration_size)
        else:
            models[kind] = MODELS[kind](floor).fit(rows, y)
    return models


def evaluate(models: dict[str, Forecaster], rows: pd.DataFrame, target: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics of every model on ``rows`` (all hours, and daytime only for PV), and the rows
    with each model's quantiles added as ``<kind>_p10/_p50/_p90``."""
    y = rows[dz.Y].to_numpy(dtype="float64")
    hours = rows["horizon_hours"].to_numpy()
    reference = models[REFERENCE].predict(rows)[:, 1] if REFERENCE in models else None
    capacity = rows[dz.CAPACITY].to_numpy(dtype="float64") if target == SOLAR_KW else None
    scored = rows.copy()
    metrics: dict[str, Any] = {}
    for kind, model in models.items():
        pred = model.predict(rows)
        for k, name in enumerate(("p10", "p50", "p90")):
            scored[f"{kind}_{name}"] = pred[:, k]
        metrics[kind] = {"all_hours": score(y, pred, hours, reference, capacity)}
        if target == SOLAR_KW:
            day = judged(rows, target)
            metrics[kind]["daytime"] = score(y[day], pred[day], hours[day],
                                             None if reference is None else reference[day], capacity[day])
    return metrics, scored


def backtest(rows: pd.DataFrame, target: str, settings: TrainSettings, client=None) -> list[dict[str, Any]]:
    """Rolling origin, expanding window: ``backtest_folds`` earlier test blocks of the same length."""
    folds = []
    issues = np.sort(rows[dz.ISSUED_AT].unique())
    block = max(1, int(len(issues) * settings.test_size))
    for k in range(settings.backtest_folds, 0, -1):
        start = len(issues) - (k + 1) * block
        if start <= block:
            continue
        origin, end = pd.Timestamp(issues[start]), pd.Timestamp(issues[start + block])
        train = (rows[dz.TARGET_TS] <= origin).to_numpy()
        test = ((rows[dz.ISSUED_AT] >= origin) & (rows[dz.ISSUED_AT] < end)).to_numpy()
        models = fit_models(rows[train], target, [REFERENCE, PRIMARY], settings.lgbm_params, client,
                            settings.calibration_size)
        metrics, _ = evaluate(models, rows[test].reset_index(drop=True), target)
        key = "daytime" if target == SOLAR_KW else "all_hours"
        folds.append({"origin": origin.isoformat(), "end": end.isoformat(),
                      "mae": metrics[PRIMARY][key].get("mae"), "skill": metrics[PRIMARY][key].get("skill"),
                      "coverage_p10_p90": metrics[PRIMARY][key].get("coverage_p10_p90")})
    return folds


def train_target(histories: Sequence[dz.SiteHistory], target: str, settings: TrainSettings,
                 weather: WeatherForecast, client=None) -> TargetResult:
    rows = design_rows(histories, target, settings, weather)
    train, test, cutoff = time_split(rows, settings.test_size)
    if not train.any() or not test.any():
        raise NotEnoughData(f"{target}: a test share of {settings.test_size:g} (FORECAST_TEST_SIZE) of the issue times left "
                            f"no {'training' if not train.any() else 'test'} rows; expected a smaller share (default "
                            f"{TrainSettings.test_size:g}) or more days of readings")
    models = fit_models(rows[train], target, settings.models, settings.lgbm_params, client, settings.calibration_size)
    metrics, scored = evaluate(models, rows[test].reset_index(drop=True), target)
    metrics["backtest"] = backtest(rows, target, settings, client) if PRIMARY in models else []
    ranges = rows[train][dz.TARGET_TS], rows[test][dz.TARGET_TS]
    newest = [rows[part].groupby(dd.DEVICE_ID)[dz.TARGET_TS].max() for part in (train, test)]
    site_ranges = {device: (newest[0][device], newest[1][device]) for device in newest[0].index.intersection(newest[1].index)}
    return TargetResult(target, models, metrics, sorted(rows[dd.DEVICE_ID].unique()),
                        (ranges[0].min(), ranges[0].max()), (ranges[1].min(), ranges[1].max()), scored, site_ranges)


def train(histories: Sequence[dz.SiteHistory], settings: TrainSettings, weather: WeatherForecast,
          client=None) -> TrainingResult:
    """Train every target some site supports; a target no site supports is skipped with why."""
    result = TrainingResult({}, {}, [])
    for target in TARGET_COLUMNS:
        checks = [availability(target, h.device_id, h.grid, h.site, h.step, settings.min_days) for h in histories]
        usable = [h for h, check in zip(histories, checks) if check.ok]
        result.site_gaps += [c for c in checks if not c.ok and usable]
        if not usable:
            first = checks[0] if checks else None
            result.skipped[target] = ("no sites" if first is None else first.reason if len(checks) == 1
                                      else f"{first.device_id}: {first.reason} (and {len(checks) - 1} more sites)")
            # Without a price model plans price a site from its tariff and published prices: a
            # home without price readings (most real ones) is no fault worth a warning.
            (log.info if target == PRICE_PER_KWH else log.warning)("%s cannot be trained: %s", target,
                                                                   result.skipped[target])
            continue
        result.targets[target] = train_target(usable, target, settings, weather, client)
    if not result.targets:
        raise NotEnoughData("no target can be trained; " + "; ".join(f"{t}: {r}" for t, r in result.skipped.items()))
    return result
