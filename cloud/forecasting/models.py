"""Forecasting models, all behind one interface: ``fit``, ``predict``, ``save``, ``load``.

``predict`` returns an ``(n, 3)`` array of P10, P50 and P90 for design rows
(:mod:`cloud.forecasting.design`). The baselines (persistence, seasonal naive) and ridge
regression give point forecasts; their P10/P90 add the training residuals' quantiles for the
row's horizon hour, so every model can be scored with the same pinball loss and coverage.
LightGBM fits one quantile model per level, globally across sites.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cloud.forecasting import clear_sky_index as csi
from cloud.forecasting import conformal
from cloud.forecasting import design as dz

QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)
N_JOBS = 2  # the machines this runs on are small and shared


class Forecaster(Protocol):
    kind: ClassVar[str]

    def fit(self, rows: pd.DataFrame, y: np.ndarray) -> Forecaster: ...

    def predict(self, rows: pd.DataFrame) -> np.ndarray: ...

    def save(self, folder: Path) -> None: ...

    @classmethod
    def load(cls, folder: Path) -> Forecaster: ...


def _horizon_bucket(rows: pd.DataFrame) -> np.ndarray:
    return np.clip(np.ceil(rows["horizon_hours"].to_numpy()) - 1, 0, None).astype(int)


def _finish(p50: np.ndarray, low: np.ndarray, high: np.ndarray, floor: float | None) -> np.ndarray:
    """Sorted quantiles (no crossing), clipped at the physical floor when there is one."""
    out = np.sort(np.column_stack([low, p50, high]), axis=1)
    return np.clip(out, floor, None) if floor is not None else out


def pv_ceiling_kw(rows: pd.DataFrame) -> np.ndarray:
    """The most PV a row may forecast: the larger of the declared array's kWp and the most it
    measured over the day before issue (an array that delivers more than declared keeps what
    it showed), infinite where neither is known. No quantile of what an array makes lies
    above what it can make, however far a calibration slice moved the band
    (docs/forecasting.md)."""
    ceiling = np.fmax(rows[dz.CAPACITY].to_numpy(dtype="float64"), rows[dz.MAX_LAST_DAY].to_numpy(dtype="float64"))
    return np.where(np.isfinite(ceiling) & (ceiling > 0), ceiling, np.inf)


class _PointForecaster:
    """A point forecast plus residual quantiles per horizon hour."""

    kind: ClassVar[str] = ""

    def __init__(self, floor: float | None = None):
        self.floor = floor
        self.offsets: dict[int, list[float]] = {}

    def point(self, rows: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def fit(self, rows: pd.DataFrame, y: np.ndarray) -> _PointForecaster:
        self.fit_point(rows, y)
        residual = np.asarray(y, dtype="float64") - self.point(rows)
        bucket = _horizon_bucket(rows)
        ok = np.isfinite(residual)
        everywhere = np.nanquantile(residual[ok], [QUANTILES[0], QUANTILES[-1]]).tolist() if ok.any() else [0.0, 0.0]
        self.offsets = {-1: everywhere}
        for b in np.unique(bucket[ok]):
            self.offsets[int(b)] = np.quantile(residual[ok & (bucket == b)], [QUANTILES[0], QUANTILES[-1]]).tolist()
        return self

    def fit_point(self, rows: pd.DataFrame, y: np.ndarray) -> None:
        """Point models without parameters learn nothing here."""

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        p50 = self.point(rows)
        bucket = _horizon_bucket(rows)
        table = np.array([self.offsets.get(int(b), self.offsets[-1]) for b in range(int(bucket.max(initial=0)) + 1)])
        return _finish(p50, p50 + table[bucket, 0], p50 + table[bucket, 1], self.floor)

    def _meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "floor": self.floor, "offsets": {str(k): v for k, v in self.offsets.items()}}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.json").write_text(json.dumps(self._meta(), indent=1))

    @classmethod
    def load(cls, folder: Path) -> _PointForecaster:
        meta = json.loads((folder / "model.json").read_text())
        model = cls(meta["floor"])
        model.offsets = {int(k): v for k, v in meta["offsets"].items()}
        return model


class Persistence(_PointForecaster):
    """The last value known at issue time, for every horizon."""

    kind = "persistence"

    def point(self, rows: pd.DataFrame) -> np.ndarray:
        return rows[dz.LAST].to_numpy(dtype="float64")


class SeasonalNaiveDay(_PointForecaster):
    """The same time of day on the newest day already past (yesterday, for day-ahead)."""

    kind = "seasonal_naive_day"

    def point(self, rows: pd.DataFrame) -> np.ndarray:
        return rows[dz.LAG_DAY].to_numpy(dtype="float64")


class SeasonalNaiveWeek(_PointForecaster):
    """The same time of day and weekday a week before."""

    kind = "seasonal_naive_week"

    def point(self, rows: pd.DataFrame) -> np.ndarray:
        return rows[dz.LAG_WEEK].to_numpy(dtype="float64")


class RidgeForecaster(_PointForecaster):
    """Ridge regression on every design feature (median-imputed, standardised)."""

    kind = "ridge"

    def __init__(self, floor: float | None = None, alpha: float = 1.0):
        super().__init__(floor)
        self.alpha = alpha
        self.pipeline = None

    def fit_point(self, rows: pd.DataFrame, y: np.ndarray) -> None:
        X = rows[list(dz.FEATURES)].to_numpy(dtype="float64", copy=True)
        X[:, np.all(np.isnan(X), axis=0)] = 0.0  # a feature no site has: constant, not dropped
        self.pipeline = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), Ridge(alpha=self.alpha))
        self.pipeline.fit(X, y)

    def point(self, rows: pd.DataFrame) -> np.ndarray:
        X = rows[list(dz.FEATURES)].to_numpy(dtype="float64", copy=True)
        X[:, np.all(np.isnan(X), axis=0)] = 0.0
        return self.pipeline.predict(X)

    def save(self, folder: Path) -> None:
        super().save(folder)
        joblib.dump(self.pipeline, folder / "ridge.joblib")

    @classmethod
    def load(cls, folder: Path) -> RidgeForecaster:
        model = super().load(folder)
        model.pipeline = joblib.load(folder / "ridge.joblib")
        return model


# 80 trees at a high learning rate on coarse bins: as accurate on the simulated fleet as
# 250 trees at 0.06 (tests/test_forecast_accuracy.py) at a third of the time, which keeps a
# million rows under a minute on two cores (benchmarks/bench_training.py).
LGBM_PARAMS: dict[str, Any] = {
    "n_estimators": 80, "learning_rate": 0.15, "num_leaves": 31, "min_child_samples": 100,
    "subsample": 0.5, "subsample_freq": 1, "colsample_bytree": 0.8, "max_bin": 63,
    "n_jobs": N_JOBS, "verbose": -1, "random_state": 7,
}


def idle_cores(sample_s: float = 0.1) -> float:
    """How many cores sat idle over the next ``sample_s`` seconds (Linux ``/proc/stat``); every
    core this process may use where that cannot be read."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def totals() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            ticks = [int(v) for v in handle.readline().split()[1:]]
        return ticks[3] + ticks[4], sum(ticks[:8])  # idle + iowait, all but guest time

    try:
        idle_before, all_before = totals()
        time.sleep(sample_s)
        idle_after, all_after = totals()
    except (OSError, ValueError, IndexError):
        return float(usable)
    share = (idle_after - idle_before) / max(1, all_after - all_before)
    return min(float(usable), share * (os.cpu_count() or 1))


def threads_for(rows: int, most: int = N_JOBS, idle: Callable[[], float] | None = None) -> int:
    """At most ``most`` threads (LightGBM's ``n_jobs``: 0 or less means no limit beyond
    N_JOBS), one for small fits, and for large ones no more than the cores ``idle()`` finds
    free (when given).

    A small tree's work is too short to share, while large fits gain from a second thread
    only where a second core is free: beside a process that keeps a core busy, two threads
    take as long as one and pay for sharing besides. Waiting threads sleep rather than spin
    (cloud/forecasting/__init__.py), so a core that becomes busy mid-fit costs little."""
    if rows < 100_000:
        return 1
    cap = min(most, N_JOBS) if most > 0 else N_JOBS
    return cap if idle is None or cap == 1 else max(1, min(cap, round(idle())))


class LightGBMForecaster:
    """Global gradient-boosted models per quantile (P10, P50, P90) across every site.

    With ``clear_sky_index`` (PV) a second set of quantile models learns the clear-sky
    index of the sun-up rows (:mod:`cloud.forecasting.clear_sky_index`), whose forecast is
    that index times the clear-sky output, and each quantile is the mean of the two views'
    (kW and index), 0 with the sun down. Index rows are weighted by their clear-sky output, so
    the pinball loss in index units is the pinball loss in kW: the fit minimises the error
    the forecast is judged on, not the error of dawn's noisy ratios. Why both views rather
    than the index alone: docs/decisions/0008-pv-clear-sky-index.md.

    ``band`` (from :func:`cloud.forecasting.conformal.band_offsets`) widens or narrows
    P10-P90 by what a calibration slice measured; P50 is never moved."""

    kind: ClassVar[str] = "lightgbm"

    def __init__(self, floor: float | None = None, params: dict[str, Any] | None = None,
                 clear_sky_index: bool = False):
        self.floor = floor
        self.params = {**LGBM_PARAMS, **(params or {})}
        self.clear_sky_index = clear_sky_index
        self.boosters: dict[str, list[lgb.Booster]] = {}
        self.band = conformal.NO_BAND

    @property
    def views(self) -> tuple[str, ...]:
        return (KW_VIEW, INDEX_VIEW) if self.clear_sky_index else (KW_VIEW,)

    def fit(self, rows: pd.DataFrame, y: np.ndarray, client=None) -> LightGBMForecaster:
        y = np.asarray(y, dtype="float64")
        self.boosters = {}
        for view in self.views:
            part, target, weight = rows, y, None
            if view == INDEX_VIEW:
                up = rows[dz.DAYTIME].to_numpy(dtype=bool)
                clear = rows[dz.CLEARSKY_KW].to_numpy(dtype="float64")
                part, target, weight = rows[up], csi.index_of(y[up], clear[up], True), clear[up]
            self.boosters[view] = self._fit_quantiles(part[list(dz.FEATURES)].to_numpy(dtype="float64", copy=True),
                                                      target, weight, client)
        return self

    def _fit_quantiles(self, X: np.ndarray, y: np.ndarray, weight: np.ndarray | None, client) -> list[lgb.Booster]:
        boosters = []
        threads = threads_for(len(X), self.params["n_jobs"], idle_cores)
        for q in QUANTILES:
            params = {**self.params, "objective": "quantile", "alpha": q, "n_jobs": threads}
            if client is None:
                model = lgb.LGBMRegressor(**params).fit(X, y, sample_weight=weight)
            else:
                from cloud.forecasting.distributed import fit_dask

                model = fit_dask(client, params, X, y, weight)
            boosters.append(model.booster_)
        return boosters

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        X = rows[list(dz.FEATURES)].to_numpy(dtype="float64", copy=True)
        threads = threads_for(len(X), self.params["n_jobs"])
        views = []
        for view, boosters in self.boosters.items():
            pred = np.column_stack([b.predict(X, num_threads=threads) for b in boosters])
            if view == INDEX_VIEW:
                pred = csi.to_kw(pred, rows[dz.CLEARSKY_KW].to_numpy(dtype="float64"),
                                 rows[dz.DAYTIME].to_numpy(dtype=bool))
            views.append(pred)
        pred = np.mean(views, axis=0)
        if self.clear_sky_index:  # both views: PV with the sun down is 0, not a tree's small guess
            pred[~rows[dz.DAYTIME].to_numpy(dtype=bool)] = 0.0
        low, mid, high = conformal.widen(pred, self.band).T
        out = _finish(mid, low, high, self.floor)
        return np.minimum(out, pv_ceiling_kw(rows)[:, None]) if self.clear_sky_index else out

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for view, boosters in self.boosters.items():
            for q, booster in zip(QUANTILES, boosters):
                booster.save_model(str(folder / _booster_file(view, q)))
        (folder / "model.json").write_text(json.dumps({"kind": self.kind, "floor": self.floor, "params": self.params,
                                                        "clear_sky_index": self.clear_sky_index,
                                                        "band": list(self.band), "features": list(dz.FEATURES)},
                                                       indent=1))

    @classmethod
    def load(cls, folder: Path) -> LightGBMForecaster:
        meta = json.loads((folder / "model.json").read_text())
        model = cls(meta["floor"], meta["params"], meta.get("clear_sky_index", False))
        model.band = conformal.Band(*meta.get("band", conformal.NO_BAND))
        model.boosters = {view: [lgb.Booster(model_file=str(folder / _booster_file(view, q))) for q in QUANTILES]
                          for view in model.views}
        return model


KW_VIEW, INDEX_VIEW = "kw", "clear_sky_index"


def _booster_file(view: str, q: float) -> str:
    return f"p{round(q * 100):02d}.txt" if view == KW_VIEW else f"{view}_p{round(q * 100):02d}.txt"


#: Every model kind, by the name the registry and the CLI use.
MODELS: dict[str, type] = {m.kind: m for m in (Persistence, SeasonalNaiveDay, SeasonalNaiveWeek, RidgeForecaster,
                                               LightGBMForecaster)}
REFERENCE = SeasonalNaiveDay.kind  # skill is measured against it
PRIMARY = LightGBMForecaster.kind  # what forecasts are issued with


def load_model(folder: Path) -> Forecaster:
    kind = json.loads((folder / "model.json").read_text())["kind"]
    return MODELS[kind].load(folder)
