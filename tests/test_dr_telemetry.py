"""The batteries' telemetry a DR adapter reports: each battery's newest stored reading."""

from __future__ import annotations

import pandas as pd

from cloud.dr.telemetry import latest_from_store
from cloud.store.sqlite import SQLiteCloudStore
from tests.sync_fixtures import readings


class Counting:
    """The store, counting how often its reading statistics are asked for."""

    def __init__(self, store) -> None:
        self.store, self.asked = store, 0

    def reading_stats(self):
        self.asked += 1
        return self.store.reading_stats()

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_the_fleet_s_reading_statistics_are_asked_once_per_freshness_not_once_per_battery(tmp_path):
    """Each battery's sample asked the store for every device's newest instant, an aggregate
    over all readings: a report of n batteries cost n of them, growing with the square of the
    fleet."""
    frame = readings(devices=3, steps=12)
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        store.upsert_readings(frame)
        counting, now = Counting(store), [pd.Timestamp("2024-06-01T02:00Z")]
        latest = latest_from_store(counting, pd.Timedelta(seconds=30), clock=lambda: now[0])
        devices = sorted(frame["device_id"].unique())
        first = [latest(d) for d in devices]
        assert counting.asked == 1
        newest = frame.sort_values("ts").groupby("device_id").tail(1).set_index("device_id")
        assert [t.ts for t in first] == [newest.loc[d, "ts"] for d in devices]
        assert [t.soc_percent for t in first] == [newest.loc[d, "battery_soc_percent"] for d in devices]
        now[0] += pd.Timedelta(seconds=31)
        assert [latest(d) for d in devices] == first and counting.asked == 2
