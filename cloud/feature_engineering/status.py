"""``--status``: per site, the stored feature range, row count, gaps and version, with the
last run and last error from ``pipeline_runs``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cloud.feature_engineering.job import JOB, require_site
from cloud.feature_engineering.settings import FeatureSettings
from cloud.job_status import print_job_status
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.site_file import site_kind

_RUNS_SCANNED = 50  # how far back --status looks for the last error


def grid_gaps(ts: pd.Series, step: pd.Timedelta) -> dict[str, Any]:
    """Holes in a site's stored grid between its first and last instant."""
    stamps = pd.DatetimeIndex(ts).sort_values()
    if len(stamps) < 2:
        return {"gaps": 0, "missing_steps": 0, "longest_gap": None}
    missing = np.asarray((stamps[1:] - stamps[:-1]) // step) - 1
    holes = missing[missing > 0]
    longest = None if not len(holes) else pd.Timedelta(int(holes.max()) * step)
    return {"gaps": int(len(holes)), "missing_steps": int(holes.sum()), "longest_gap": longest}


def feature_status(store: CloudStore, settings: FeatureSettings) -> dict[str, Any]:
    runs = store.runs(JOB, limit=_RUNS_SCANNED)
    known = {row[dd.DEVICE_ID]: row for row in store.sites()}
    devices = sorted(set(store.reading_stats()) | set(known))
    if settings.site_id is not None:
        require_site(settings.site_id, set(devices), store)
        devices = [settings.site_id]
    sites = []
    for device in devices:
        frame = store.read_frame(s.FEATURES, equals={dd.DEVICE_ID: device, s.VERSION: settings.version})
        stamps = frame[dd.TS]
        sites.append({
            dd.DEVICE_ID: device,
            "site": site_kind(known.get(device)),
            "first_ts": stamps.min() if len(frame) else None,
            "last_ts": stamps.max() if len(frame) else None,
            "rows": len(frame),
            **grid_gaps(stamps, settings.step),
            "version": settings.version,
        })
    return {
        "cloud": store.label,
        "version": settings.version,
        "last_run": runs[0] if runs else None,
        "last_error": next((r for r in runs if r.get(s.ERROR)), None),
        "sites": sites,
    }


def print_status(status: dict[str, Any], as_json: bool = False) -> None:
    print_job_status(status, f"cloud: {status['cloud']}   feature set: {status['version']}", "sites", as_json)
