"""``--status``: per device, what the cloud confirmed and what the edge still holds, with the
last run and last error from ``pipeline_runs``."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from cloud.store import schema as s
from cloud.store.base import CloudStore
from cloud.sync.job import JOB
from edge_gateway.cli_support import print_table
from edge_gateway.models import der_data as dd
from edge_gateway.stores.base import EdgeStore

_STEP = pd.Timedelta(microseconds=1)
_RUNS_SCANNED = 50  # how far back --status looks for the last error


def sync_status(edge: EdgeStore, cloud: CloudStore, source: str, job: str = JOB) -> dict[str, Any]:
    marks = cloud.watermarks(source)
    stats = cloud.reading_stats()
    runs = cloud.runs(job, limit=_RUNS_SCANNED)
    last_error = next((r for r in runs if r.get(s.ERROR)), None)
    devices = []
    for device in sorted(set(edge.devices()) | set(marks)):
        mark = marks.get(device)
        newest = edge.latest(device)
        edge_latest = newest[dd.TS].iloc[0] if len(newest) else None
        pending = edge.count(device, None if mark is None else mark + _STEP)
        lag = (edge_latest - mark).total_seconds() if edge_latest is not None and mark is not None else None
        devices.append({
            dd.DEVICE_ID: device,
            "last_synced": mark,
            "edge_latest": edge_latest,
            "lag_s": lag,
            "pending_edge": pending,
            "cloud_rows": stats.get(device, {}).get(s.ROW_COUNT, 0),
        })
    return {
        "source": source,
        "cloud": cloud.label,
        "last_run": runs[0] if runs else None,
        "last_error": last_error,
        "devices": devices,
    }


def print_status(status: dict[str, Any], as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(status, default=_json_default, indent=2))
        return
    print(f"cloud: {status['cloud']}   source: {status['source']}")
    run, error = status["last_run"], status["last_error"]
    if run:
        print(f"last run: #{run[s.RUN_ID]} {_when(run[s.STARTED_AT])} {run[s.STATUS]}, {run[s.ROWS]} rows")
    else:
        print("last run: none")
    print(f"last error: {_when(error[s.STARTED_AT])} {error[s.ERROR]}" if error else "last error: none")
    print_table([{k: (_when(v) if isinstance(v, pd.Timestamp) else v) for k, v in row.items()}
                 for row in status["devices"]])


def _when(ts: pd.Timestamp | None) -> str:
    return "-" if ts is None else dd.format_ts(ts)


def _json_default(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return dd.format_ts(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
