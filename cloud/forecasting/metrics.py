"""Forecast metrics: pure functions of truth and P10/P50/P90 arrays.

``score`` gives the set a practitioner expects: MAE and RMSE of the median, MAE normalised by
the mean of the truth (and by PV capacity when given), skill against a reference forecast
(``1 - MAE / MAE_reference``), the pinball loss averaged over the three quantiles, the share
of truths inside P10-P90, and the MAE per hour of horizon.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cloud.forecasting.models import QUANTILES


def pinball(y: np.ndarray, q: np.ndarray, alpha: float) -> float:
    diff = y - q
    return float(np.mean(np.maximum(alpha * diff, (alpha - 1) * diff)))


def score(y: np.ndarray, pred: np.ndarray, horizon_hours: np.ndarray, reference: np.ndarray | None = None,
          capacity: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics over the rows where the truth (and the reference, when given) is known."""
    ok = np.isfinite(y) & np.all(np.isfinite(pred), axis=1)
    if reference is not None:
        ok &= np.isfinite(reference)
    if not ok.any():
        return {"rows": 0}
    y, pred, hours = y[ok], pred[ok], horizon_hours[ok]
    err = pred[:, 1] - y
    mae = float(np.mean(np.abs(err)))
    mean_abs = float(np.mean(np.abs(y)))
    out: dict[str, Any] = {
        "rows": int(ok.sum()),
        "mae": mae,
        "rmse": float(np.sqrt(np.mean(err ** 2))),
        "nmae_mean": mae / mean_abs if mean_abs > 0 else None,
        "pinball": float(np.mean([pinball(y, pred[:, k], a) for k, a in enumerate(QUANTILES)])),
        "coverage_p10_p90": float(np.mean((y >= pred[:, 0]) & (y <= pred[:, 2]))),
    }
    if capacity is not None:
        out["nmae_capacity"] = mae / float(np.mean(capacity[ok]))
    if reference is not None:
        ref_mae = float(np.mean(np.abs(reference[ok] - y)))
        out["reference_mae"] = ref_mae
        out["skill"] = 1.0 - mae / ref_mae if ref_mae > 0 else None
    bucket = np.clip(np.ceil(hours) - 1, 0, None).astype(int)
    out["mae_by_horizon_hour"] = {int(b) + 1: float(np.mean(np.abs(err[bucket == b]))) for b in np.unique(bucket)}
    return out
