"""The registry's picture: day-ahead forecasts against actuals for one site over a test week."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cloud.forecasting import design as dz
from cloud.forecasting.models import PRIMARY
from der_core import der_data as dd

WEEK_STEPS_MAX = 7


def day_ahead_week(scored: pd.DataFrame) -> pd.DataFrame:
    """Forecasts issued at midnight UTC for the next day, for the first site, over the first
    week of the scored test rows: what an operator would have seen each morning."""
    if scored.empty:
        return scored
    site = sorted(scored[dd.DEVICE_ID].unique())[0]
    rows = scored[scored[dd.DEVICE_ID] == site]
    midnight = rows[rows[dz.ISSUED_AT] == rows[dz.ISSUED_AT].dt.floor("D")]
    rows = midnight if not midnight.empty else rows[rows[dz.ISSUED_AT] == rows[dz.ISSUED_AT].min()]
    days = np.sort(rows[dz.ISSUED_AT].unique())[:WEEK_STEPS_MAX]
    return rows[rows[dz.ISSUED_AT].isin(days)].sort_values(dz.TARGET_TS)


def sample_week_png(scored_by_target: dict[str, pd.DataFrame], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(scored_by_target)
    fig, axes = plt.subplots(len(targets), 1, figsize=(12, 3 * len(targets)), squeeze=False, sharex=False)
    for ax, target in zip(axes[:, 0], targets):
        week = day_ahead_week(scored_by_target[target])
        if week.empty or f"{PRIMARY}_p50" not in week.columns:
            ax.set_title(f"{target}: no test rows")
            continue
        x = week[dz.TARGET_TS].dt.tz_convert("UTC").dt.tz_localize(None)
        ax.fill_between(x, week[f"{PRIMARY}_p10"], week[f"{PRIMARY}_p90"], alpha=0.3, label="LightGBM P10-P90")
        ax.plot(x, week[f"{PRIMARY}_p50"], label="LightGBM P50")
        if "seasonal_naive_day_p50" in week.columns:
            ax.plot(x, week["seasonal_naive_day_p50"], lw=0.8, ls="--", label="same time yesterday")
        ax.plot(x, week[dz.Y], color="black", lw=0.9, label="actual")
        ax.set_title(f"{target}, {week[dd.DEVICE_ID].iloc[0]}: day-ahead forecasts issued 00:00 UTC")
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
