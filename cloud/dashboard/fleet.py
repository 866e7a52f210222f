"""The aggregator's view of the newest portfolio run under the portfolio folder: fleet net
import per strategy with the import cap and DR windows, per-site savings and satisfaction,
and the starved sites. Read from what ``run_portfolio.py`` writes (``summary.json``,
``timesteps.csv``, ``sites.csv``); the KPIs themselves are the portfolio's own."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cloud.portfolio.kpis import satisfaction, savings
from cloud.portfolio.report import step_windows

STARVED_KWH = 1e-9  # the portfolio KPI's own threshold for a starved site


def _finite(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]


def runs_newest_first(directory: Path | None) -> list[Path]:
    """The folders holding a ``summary.json`` with its ``timesteps.csv`` and ``sites.csv``,
    newest summary first."""
    if directory is None or not Path(directory).is_dir():
        return []
    found = [p.parent for p in Path(directory).rglob("summary.json")
             if (p.parent / "timesteps.csv").is_file() and (p.parent / "sites.csv").is_file()]
    return sorted(found, key=lambda p: (p / "summary.json").stat().st_mtime, reverse=True)


def unreadable(error: Exception) -> str:
    """Why a run's files cannot be drawn, in one line."""
    what = f"missing {error}" if isinstance(error, KeyError) else " ".join(str(error).split())
    return f"unreadable: {what}"


def fleet_view(directory: Path | None) -> dict[str, Any]:
    """The newest run that can be drawn. One whose files cannot be read (cut short by a run
    that stopped while writing, or written by another version without a field the page draws)
    is named under ``skipped`` with why, and the next newest is shown: a folder of good runs
    is not hidden behind one bad file."""
    skipped = []
    for run in runs_newest_first(directory):
        try:
            view = _run_view(run)
        except (OSError, ValueError, KeyError, TypeError) as error:
            skipped.append({"path": str(run.relative_to(directory)), "error": unreadable(error)})
            continue
        return {"available": True, "path": str(run.relative_to(directory)), **view, "skipped": skipped}
    return {"available": False, "directory": None if directory is None else str(directory), "skipped": skipped}


def _read(path: Path, reader: Callable[[Path], Any]) -> Any:
    """``reader(path)``, an error naming the file."""
    try:
        return reader(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path.name}: {error}") from None


def _run_view(run: Path) -> dict[str, Any]:
    summary = _read(run / "summary.json", lambda path: json.loads(path.read_text()))
    if not isinstance(summary, dict):
        raise ValueError("summary.json: expected a JSON object")
    steps = _read(run / "timesteps.csv", pd.read_csv)
    sites = _read(run / "sites.csv", pd.read_csv)
    strategies = list(summary["strategies"])
    times = pd.to_datetime(steps["ts"], utc=True)
    dr = steps["dr_target_kw"].notna().to_numpy()
    step = pd.Timedelta(hours=summary.get("step_hours", 1.0))
    by = {k: f.set_index("site_id") for k, f in sites.groupby("strategy")}
    saved = {k: _finite(savings(sites, k).to_numpy()) for k in strategies if k != "no_battery"} if "no_battery" in by else {}
    starved = sites[sites["unserved_kwh"] > STARVED_KWH].sort_values("unserved_kwh", ascending=False)
    return {
        "summary": summary,
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
