"""``--status``: per device, what the cloud confirmed and what the edge still holds, whether
the cloud knows the site (declared, simulated or none) and its newest meter-file import,
with the last sync run and last error from ``pipeline_runs``. Devices the cloud holds
readings or a site for are listed even when no gateway syncs them (an imported meter, a
declared site), and the import says where their readings came from."""

from __future__ import annotations

from typing import Any

import pandas as pd

from cloud.job_status import print_job_status
from cloud.store import schema as s
from cloud.store.base import CloudStore
from cloud.sync.importer import JOB as IMPORT_JOB
from cloud.sync.job import JOB
from der_core import der_data as dd
from der_core.site_file import site_kind
from edge_gateway.stores.base import EdgeStore, merge_ranges

_STEP = pd.Timedelta(microseconds=1)
_RUNS_SCANNED = 50  # how far back --status looks for the last error
_IMPORTS_SCANNED = 20_000  # how far back it looks for a device's newest import


def sync_status(edge: EdgeStore, cloud: CloudStore, source: str, job: str = JOB) -> dict[str, Any]:
    marks = cloud.watermarks(source)
    stats = cloud.reading_stats()
    runs = cloud.runs(job, limit=_RUNS_SCANNED)
    last_error = next((r for r in runs if r.get(s.ERROR)), None)
    sites = {row[dd.DEVICE_ID]: row for row in cloud.sites()}
    listed = sorted(set(edge.devices()) | set(marks) | set(stats) | set(sites))
    imports = newest_imports(cloud, set(listed))
    late, _ = edge.late_writes()
    devices = []
    for device in listed:
        mark = marks.get(device)
        newest = edge.latest(device)
        edge_latest = newest[dd.TS].iloc[0] if len(newest) else None
        pending = edge.count(device, None if mark is None else mark + _STEP) + _behind(edge, device, mark, late)
        lag = (edge_latest - mark).total_seconds() if edge_latest is not None and mark is not None else None
        devices.append({
            dd.DEVICE_ID: device,
            "last_synced": mark,
            "edge_latest": edge_latest,
            "lag_s": lag,
            "pending_edge": pending,
            "cloud_rows": stats.get(device, {}).get(s.ROW_COUNT, 0),
            "site": site_kind(sites.get(device)),
            "last_import": imports.get(device),
        })
    return {
        "source": source,
        "cloud": cloud.label,
        "last_run": runs[0] if runs else None,
        "last_error": last_error,
        "devices": devices,
    }


def _behind(edge: EdgeStore, device: str, mark: pd.Timestamp | None, late: dict[str, list]) -> int:
    """The readings written behind the device's watermark since its last sync (a backfilled
    day): the next run sends them as well as those after it."""
    if mark is None:
        return 0  # everything is pending already
    spans = merge_ranges([(since, mark + _STEP if until is None else min(until + _STEP, mark + _STEP))
                          for since, until in late.get(device, []) if since <= mark])
    return sum(edge.count(device, start) - edge.count(device, stop) for start, stop in spans)


def newest_imports(cloud: CloudStore, wanted: set[str]) -> dict[str, str]:
    """Per ``wanted`` device, its newest import: when, which file, and how it ended where not
    ``ok``. The import runs are read newest first, in pages growing fourfold from
    ``_RUNS_SCANNED``, until every wanted device is found, the runs end or
    ``_IMPORTS_SCANNED`` are read: a site imported once, long ago, among a fleet that imports
    daily is still found, and a device never imported costs a bounded read."""
    newest: dict[str, str] = {}
    limit, seen = _RUNS_SCANNED, 0
    while True:
        runs = cloud.runs(IMPORT_JOB, limit=limit)  # newest first
        for run in runs[seen:]:
            details = run.get(s.DETAILS) or {}
            device = details.get(dd.DEVICE_ID)
            if device in wanted and device not in newest:
                ended = "" if run[s.STATUS] == "ok" else f" ({run[s.STATUS]})"
                newest[device] = f"{dd.parse_ts(run[s.STARTED_AT]):%Y-%m-%d %H:%M}Z {details.get('file', '')}{ended}"
        if len(newest) == len(wanted) or len(runs) < limit or limit >= _IMPORTS_SCANNED:
            return newest
        seen, limit = len(runs), min(4 * limit, _IMPORTS_SCANNED)


def print_status(status: dict[str, Any], as_json: bool = False) -> None:
    print_job_status(status, f"cloud: {status['cloud']}   source: {status['source']}", "devices", as_json)
