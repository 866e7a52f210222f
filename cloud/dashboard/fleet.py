"""The aggregator's view of the newest portfolio run under the portfolio folder: fleet net
import per strategy with the import cap and DR windows, per-site savings and satisfaction,
and the starved sites. Read from what ``run_portfolio.py`` writes (``summary.json``,
``timesteps.csv``, ``sites.csv``); the KPIs themselves are the portfolio's own."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cloud.portfolio.kpis import satisfaction, savings
from cloud.portfolio.report import step_windows

STARVED_KWH = 1e-9  # the portfolio KPI's own threshold for a starved site


def _finite(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]


def newest_run(directory: Path | None) -> Path | None:
    """The folder of the newest ``summary.json`` that has its ``timesteps.csv`` and ``sites.csv``."""
    if directory is None or not Path(directory).is_dir():
        return None
    found = [p.parent for p in Path(directory).rglob("summary.json")
             if (p.parent / "timesteps.csv").is_file() and (p.parent / "sites.csv").is_file()]
    return max(found, key=lambda p: (p / "summary.json").stat().st_mtime, default=None)


def fleet_view(directory: Path | None) -> dict[str, Any]:
    run = newest_run(directory)
    if run is None:
        return {"available": False, "directory": None if directory is None else str(directory)}
    summary = json.loads((run / "summary.json").read_text())
    steps = pd.read_csv(run / "timesteps.csv")
    sites = pd.read_csv(run / "sites.csv")
    strategies = list(summary["strategies"])
    times = pd.to_datetime(steps["ts"], utc=True)
    dr = steps["dr_target_kw"].notna().to_numpy()
    step = pd.Timedelta(hours=summary.get("step_hours", 1.0))
    by = {k: f.set_index("site_id") for k, f in sites.groupby("strategy")}
    saved = {k: _finite(savings(sites, k).to_numpy()) for k in strategies if k != "no_battery"} if "no_battery" in by else {}
    starved = sites[sites["unserved_kwh"] > STARVED_KWH].sort_values("unserved_kwh", ascending=False)
    return {
        "available": True, "path": str(run.relative_to(directory)), "summary": summary,
        "timezone": summary.get("timezone", "UTC"), "currency": summary.get("currency", ""),
        "times": [int(t.timestamp()) for t in times],
        "grid_kw": {k: _finite(steps[f"{k}_grid_kw"].to_numpy()) for k in strategies if f"{k}_grid_kw" in steps},
        "cap_kw": _finite(steps["import_cap_kw"].to_numpy()),
        "dr_target_kw": _finite(steps["dr_target_kw"].to_numpy()),
        "dr_windows": [[int(times[a].timestamp()), int((times[b - 1] + step).timestamp())] for a, b in step_windows(dr)],
        "savings": saved,
        "satisfaction": {k: _finite(satisfaction(sites, k, summary.get("satisfaction_reference", "rule_based")).to_numpy())
                         for k in strategies if k != "no_battery"},
        "starved_sites": [{"site_id": r.site_id, "strategy": r.strategy, "unserved_kwh": float(r.unserved_kwh)}
                          for r in starved.itertuples()],
    }
