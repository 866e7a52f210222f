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
    """One global gradient-boosted model per quantile (P10, P50, P90) across every site."""

    kind: ClassVar[str] = "lightgbm"

    def __init__(self, floor: float | None = None, params: dict[str, Any] | None = None):
        self.floor = floor
        self.params = {**LGBM_PARAMS, **(params or {})}
        self.boosters: list[lgb.Booster] = []

    def fit(self, rows: pd.DataFrame, y: np.ndarray, client=None) -> LightGBMForecaster:
        X = rows[list(dz.FEATURES)].to_numpy(dtype="float64", copy=True)
        self.boosters = []
        threads = threads_for(len(X), self.params["n_jobs"], idle_cores)
        for q in QUANTILES:
            params = {**self.params, "objective": "quantile", "alpha": q, "n_jobs": threads}
            if client is None:
                model = lgb.LGBMRegressor(**params).fit(X, y)
            else:
                from cloud.forecasting.distributed import fit_dask

                model = fit_dask(client, params, X, np.asarray(y, dtype="float64"))
            self.boosters.append(model.booster_)
        return self

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        X = rows[list(dz.FEATURES)].to_numpy(dtype="float64", copy=True)
        low, mid, high = (b.predict(X, num_threads=threads_for(len(X), self.params["n_jobs"])) for b in self.boosters)
        return _finish(mid, low, high, self.floor)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for q, booster in zip(QUANTILES, self.boosters):
            booster.save_model(str(folder / f"p{round(q * 100):02d}.txt"))
        (folder / "model.json").write_text(json.dumps({"kind": self.kind, "floor": self.floor,
                                                        "params": self.params, "features": list(dz.FEATURES)}, indent=1))

    @classmethod
    def load(cls, folder: Path) -> LightGBMForecaster:
        meta = json.loads((folder / "model.json").read_text())
        model = cls(meta["floor"], meta["params"])
        model.boosters = [lgb.Booster(model_file=str(folder / f"p{round(q * 100):02d}.txt")) for q in QUANTILES]
        return model


#: Every model kind, by the name the registry and the CLI use.
MODELS: dict[str, type] = {m.kind: m for m in (Persistence, SeasonalNaiveDay, SeasonalNaiveWeek, RidgeForecaster,
                                               LightGBMForecaster)}
REFERENCE = SeasonalNaiveDay.kind  # skill is measured against it
PRIMARY = LightGBMForecaster.kind  # what forecasts are issued with


def load_model(folder: Path) -> Forecaster:
    kind = json.loads((folder / "model.json").read_text())["kind"]
    return MODELS[kind].load(folder)
