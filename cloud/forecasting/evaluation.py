"""Re-scoring the active models on the newest data, with a drift verdict.

Drift: the LightGBM median's MAE on the newest data (daytime for PV) exceeds the MAE measured
on the test set at training time by more than the threshold (``FORECAST_DRIFT_THRESHOLD``,
default 25 %) while its skill against seasonal naive fell below the skill measured then, or
that skill turns negative, or its P10-P90 band holds
fewer than :data:`COVERAGE_FLOOR` of the truths (it is meant to hold 80 %; plans that hedge
on it take the spread for far smaller than it is). Each means the models no longer describe
the sites as well as when they were trained: retrain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cloud.forecasting import design as dz
from cloud.forecasting.models import PRIMARY
from cloud.forecasting.registry import LoadedVersion, site_range
from cloud.forecasting.targets import SOLAR_KW
from cloud.forecasting.training import NotEnoughData, TrainSettings, design_rows, evaluate
from cloud.forecasting.weather import WeatherForecast
from der_core import der_data as dd


@dataclass
class TargetEvaluation:
    target: str
    rows: int
    mae: float | None
    trained_mae: float | None
    skill: float | None
    coverage: float | None
    drift: str | None  # why this counts as drift, or None
    seen_in_training: bool = False  # the window reaches into the training range: scores flatter
    #: The end of the test days training scored the models on, when every truth of the window
    #: lies among them (no reading since): a worse score there is a harder week of that test,
    #: not a change since training, and retraining on the same readings cannot mend it, so
    #: what would be drift is ``harder_week`` instead.
    tested_until: pd.Timestamp | None = None
    harder_week: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, tested_until=None if self.tested_until is None else self.tested_until.isoformat())


def headline(metrics: dict[str, Any], target: str) -> dict[str, Any]:
    """The numbers a target is judged on: daytime for PV (night is trivially right)."""
    return metrics.get("daytime" if target == SOLAR_KW else "all_hours", {})


#: A P10-P90 band holding fewer of the newest truths than this is drift, not a week's chance:
#: three quarters of the 80 % it is meant to hold (a week of quarter hours is a few hundred
#: correlated rows; calibrated bands on real data hold 75 % to 85 %, docs/benchmarks.md).
COVERAGE_FLOOR = 0.6


def drift_verdict(target: str, mae: float | None, trained: float | None, skill: float | None,
                  threshold: float, coverage: float | None = None, trained_skill: float | None = None) -> str | None:
    """Why the newest window's scores mean drift, or None. An MAE risen past the threshold
    counts only where the skill against seasonal naive fell too (when the skill at training
    is known): a cloudier or a colder week raises the reference's error with the model's,
    and a model that still beats it as well as it did describes the site as well as it did."""
    if mae is not None and trained:
        rise = mae / trained - 1.0
        fell = skill is None or trained_skill is None or skill < trained_skill
        if rise > threshold and fell:
            return (f"MAE {mae:.4g} is {rise:.0%} above the {trained:.4g} measured at training "
                    f"(threshold {threshold:.0%})"
                    + (", and its skill against seasonal naive fell from %s to %s" % _apart(trained_skill, skill)
                       if skill is not None and trained_skill is not None else ""))
    if skill is not None and skill < 0:
        return f"skill against seasonal naive is {skill:.2f}, below zero"
    if coverage is not None and coverage < COVERAGE_FLOOR:
        return (f"the P10-P90 band holds {coverage:.0%} of the truths, against the 80% it is meant to "
                f"(floor {COVERAGE_FLOOR:.0%})")
    return None


def _apart(before: float, after: float) -> tuple[str, str]:
    """Two scores with two decimals, or as many more (up to six) as tell them apart: a skill
    that fell from 0.1712 to 0.1688 must not read "fell from 0.17 to 0.17"."""
    for digits in range(2, 7):
        text = f"{before:.{digits}f}", f"{after:.{digits}f}"
        if text[0] != text[1]:
            break
    return text


def _within(truths: pd.Series, tested: list[str] | None) -> pd.Timestamp | None:
    """The test range's end, if every truth lies at or before it."""
    end = pd.Timestamp(tested[1]) if tested else None
    return end if end is not None and bool((truths <= end).all()) else None


def newest_rows(rows: pd.DataFrame, window_starts: Mapping[str, pd.Timestamp],
                trained_until: Mapping[str, pd.Timestamp]) -> pd.DataFrame:
    """Each site's rows issued from its own window start, and of a site with forecasts issued
    after its training range only those (truths training never saw). The choice is per site,
    as each site's training ended at its own time: a site whose readings end before another
    site's training range ends is scored on its newest week, not left out because another
    site has newer rows."""
    starts = pd.to_datetime(rows[dd.DEVICE_ID].map(window_starts), utc=True)
    window = rows[dz.ISSUED_AT] >= starts
    unseen = window & (rows[dz.ISSUED_AT] >= pd.to_datetime(rows[dd.DEVICE_ID].map(trained_until), utc=True))
    has_unseen = unseen.groupby(rows[dd.DEVICE_ID]).transform("any")
    return rows[window & (unseen | ~has_unseen)].reset_index(drop=True)


def evaluate_version(version: LoadedVersion, histories: Sequence[dz.SiteHistory], window_starts: Mapping[str, pd.Timestamp],
                     weather: WeatherForecast, threshold: float) -> list[TargetEvaluation]:
    """Each target scored on every site's forecasts issued from its own window start
    (:func:`newest_window_starts`)."""
    manifest = version.manifest
    settings = TrainSettings(horizon_steps=int(manifest["horizon_steps"]),
                             issue_every=pd.Timedelta(manifest["issue_every"]))
    results = []
    for target, models in version.models.items():
        entry = manifest["targets"][target]
        tested = entry.get("test_range")
        per_site = {h.device_id: site_range(entry, h.device_id)[0] for h in histories}
        rows = newest_rows(design_rows(histories, target, settings, weather), window_starts, per_site)
        if rows.empty:
            raise NotEnoughData(f"{target}: no complete day-ahead forecast fits in the newest data")
        metrics, _ = evaluate(models, rows, target)
        now = headline(metrics[PRIMARY], target)
        at_training = headline(version.metrics.get(target, {}).get(PRIMARY, {}), target)
        trained = at_training.get("mae")
        verdict = drift_verdict(target, now.get("mae"), trained, now.get("skill"), threshold,
                                now.get("coverage_p10_p90"), at_training.get("skill"))
        within = _within(rows[dz.TARGET_TS], tested)
        results.append(TargetEvaluation(target, int(now.get("rows", 0)), now.get("mae"), trained,
                                        now.get("skill"), now.get("coverage_p10_p90"), verdict if within is None else None,
                                        bool((rows[dz.TARGET_TS] <= pd.to_datetime(rows[dd.DEVICE_ID].map(per_site),
                                                                                   utc=True)).any()), within,
                                        verdict if within is not None else None))
    return results


def newest_window_starts(histories: Sequence[dz.SiteHistory], days: float) -> dict[str, pd.Timestamp]:
    """Per site, the start of its newest ``days``: sites whose readings end at different
    times are each judged on their own newest data, not on one fleet-wide window that the
    sites ending earlier fall outside of."""
    return {h.device_id: h.grid.index[-1] - pd.Timedelta(days=days) for h in histories}


def finite(value: Any) -> Any:
    return None if isinstance(value, float) and not np.isfinite(value) else value
