"""Forget a device: every row the cloud store keeps of it, asked for by its owner by name.

An import under the wrong device id, a file read in the wrong time zone, a test site: each
leaves rows that no later import writes over (a shifted clock stores them at other times).
``run_cloud_sync.py --forget DEVICE_ID`` first says what it would remove and removes it only
with ``--yes``; the removal is a ``pipeline_runs`` row of its own with what went.

Kept: the sync watermarks (a gateway still syncing the device sends only its readings after
them, rather than its whole edge history again), the job log, and the fleet's prices and
demand-response events, which belong to no one device. The feature job's watermarks go with
its rows, so a device imported again under the name has its features written from its first
reading.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloud.feature_engineering.job import forget_marks
from cloud.job_status import recorded_run
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.errors import UsageError

JOB = "forget"
#: The device's tables, what they hold in a sentence, in the order they go: what is made from
#: the readings before them, the site last, so a removal cut short leaves the site declared
#: and can be run again.
TABLES = (
    (s.PLAN_SUMMARIES, "plan summaries"), (s.PLANS, "plan steps"), (s.FORECASTS, "forecast rows"),
    (s.FEATURES, "feature rows"), (s.WEATHER_FORECASTS, "weather forecast rows"), (s.DR_RESULTS, "DR results"),
    (s.DR_WINDOWS, "DR windows"),
    (s.QUARANTINE, "quarantined rows"), (s.READINGS, "readings"), (s.SITES, "site"),
)


@dataclass(frozen=True)
class Forgotten:
    device_id: str
    store: str
    rows: dict[str, int]  # table -> rows (to remove, or removed)
    removed: bool

    def line(self) -> str:
        held = ", ".join(f"{what} {count}" for table, what in TABLES if (count := self.rows.get(table)))
        if self.removed:
            return f"removed {self.device_id} from {self.store}: {held}"
        return (f"{self.device_id} in {self.store}: {held}\nnothing removed: add --yes to remove them (its sync "
                "watermark stays, so a gateway still syncing it sends only newer readings)")


def forget_device(store: CloudStore, device_id: str, remove: bool) -> Forgotten:
    """What the store holds of ``device_id`` per table; removed when ``remove``. A device the
    store holds nothing of is a usage error naming the devices it does hold."""
    rows = {table: store.count_rows(table, {dd.DEVICE_ID: device_id}) for table, _ in TABLES}
    if not any(rows.values()):
        known = sorted({*store.reading_stats(), *(site[dd.DEVICE_ID] for site in store.sites())})
        raise UsageError(f"--forget {device_id}: nothing of it is stored in {store.label}; "
                         + (f"expected one of {', '.join(known)}" if known else "it holds no device"))
    if not remove:
        return Forgotten(device_id, store.label, rows, False)

    def work():
        gone = {table: store.delete_rows(table, {dd.DEVICE_ID: device_id}) for table, _ in TABLES if rows[table]}
        forget_marks(store, device_id)
        return gone, sum(gone.values())

    gone = recorded_run(store, JOB, {"device_id": device_id, "rows": rows}, work)
    return Forgotten(device_id, store.label, gone, True)
