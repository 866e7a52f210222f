"""The batteries' latest telemetry, as a demand-response adapter reports it to its program."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from cloud.store.base import CloudStore
from der_core import der_data as dd


@dataclass(frozen=True)
class Telemetry:
    """A battery's latest reading: when, its power (kW, positive charging) and its SoC (%)."""

    ts: pd.Timestamp
    power_kw: float
    soc_percent: float


def battery_devices(store: CloudStore) -> list[str]:
    """The declared sites that have a battery: the resources a DR program can dispatch."""
    return sorted(s["device_id"] for s in store.sites() if (s.get("battery_capacity_kwh") or 0) > 0)


def latest_from_store(
    store: CloudStore, fresh_for: pd.Timedelta, clock: Callable[[], pd.Timestamp] = lambda: pd.Timestamp.now(tz="UTC")
) -> Callable[[str], Telemetry | None]:
    """A reader of each battery's newest stored reading. A device's answer is kept for
    ``fresh_for``, so the power and SoC samples of one report cost one query, not two; and the
    store's reading statistics (every device's newest instant, one aggregate over all readings)
    are asked once per ``fresh_for`` for the whole fleet, not once per battery, which grew with
    the square of the fleet."""
    cache: dict[str, tuple[pd.Timestamp, Telemetry | None]] = {}
    stats: list = []  # [(asked at, the statistics)] once asked

    def newest(device_id: str, now: pd.Timestamp):
        if not stats or now - stats[0][0] >= fresh_for:
            stats[:] = [(now, store.reading_stats())]
        return stats[0][1].get(device_id, {}).get("last_ts")

    def latest(device_id: str) -> Telemetry | None:
        now = clock()
        if device_id in cache and now - cache[device_id][0] < fresh_for:
            return cache[device_id][1]
        last = newest(device_id, now)
        rows = pd.DataFrame() if last is None else store.read_readings(
            device_id, start=pd.Timestamp(last), limit=1, columns=[dd.BATTERY_POWER, dd.BATTERY_SOC])
        reading = None if rows.empty else Telemetry(
            rows[dd.TS].iloc[0], float(rows[dd.BATTERY_POWER].iloc[0]), float(rows[dd.BATTERY_SOC].iloc[0]))
        cache[device_id] = (now, reading)
        return reading

    return latest
