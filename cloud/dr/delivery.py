"""Measured delivery of an event, per site and for the fleet, from the synced readings.

Measured is each site's mean net grid flow over the window (positive imports; readings
stamped in ``(start, end]``, :func:`cloud.dr.baseline.in_window`). Delivered is baseline
minus measured, in kW averaged over the window, against both baselines of
:mod:`cloud.dr.baseline`: the forecast one stored when the event was decided (read back,
never recomputed) and high 5 of 10, computed here from the days before the event.

The fleet row sums the sites that were dispatched and have readings in the window; for
high 5 of 10, those that also have that baseline. A site without readings in the window
keeps its row with nothing measured.

A window is measured once every dispatched site's readings up to its end have reached the
store (:func:`synced_through`), or once the fleet has waited long enough for them: measured
earlier, a window whose last readings are still on their way to the cloud would report the
delivery of its first half, or none at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cloud.dr import baseline as b
from cloud.dr.model import DREvent
from cloud.dr.records import FLEET
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd


def synced_through(store: CloudStore, devices: Sequence[str], end: pd.Timestamp) -> bool:
    """Whether each of ``devices`` has a reading stamped at or after ``end`` in the store: the
    reading stamped ``end`` closes a window ``(start, end]``, so everything the window holds is in."""
    stats = store.reading_stats()
    return all((last := stats.get(device, {}).get(s.LAST_TS)) is not None and pd.Timestamp(last) >= end
               for device in devices)


def window_means(store: CloudStore, devices: list[str], start: pd.Timestamp, end: pd.Timestamp,
                 step: pd.Timedelta) -> tuple[pd.Series, pd.Series]:
    """Per device: the mean net grid flow over ``[start, end)`` and the share of the steps that
    the window expects a reading in which have one.

    A step's reading on the step is stamped at its end, so the window expects those steps whose
    end it holds (:func:`cloud.dr.baseline.in_window`): 01:07-03:07 the 8 stamped 01:15 to 03:00,
    not the 9 steps covering it, whose last (03:00-03:15) no reading in the window closes on
    the step, so no day could read more than 8 of 9. A window within one step expects that step."""
    first, stop = b.read_bounds(start, end)
    readings = store.read_readings(None, first, stop, columns=[dd.NET_GRID_FLOW])
    readings = readings[readings[dd.DEVICE_ID].isin(devices) & b.in_window(readings[dd.TS], start, end)]
    table = b.step_table(readings, dd.NET_GRID_FLOW, step).reindex(columns=devices)
    covering = pd.date_range(start.floor(step), end.ceil(step), freq=step, inclusive="left")
    expected = covering[b.in_window(covering + step, start, end)]
    steps = expected if len(expected) else covering
    coverage = table.reindex(steps).notna().mean() if len(table) else pd.Series(0.0, index=devices)
    means = readings.groupby(dd.DEVICE_ID)[dd.NET_GRID_FLOW].mean().reindex(devices)
    return means, coverage.reindex(devices).fillna(0.0)


def utility_baseline(store: CloudStore, event: DREvent, devices: list[str], timezones: dict[str, str],
                     step: pd.Timedelta, excluded: Sequence[tuple[pd.Timestamp, pd.Timestamp]]) -> pd.Series:
    """Per device, the high-5-of-10 baseline (NaN where fewer than 5 days are eligible): the
    event's local hours on each earlier day of its day type (:func:`cloud.optimization.same_time.earlier`)."""
    out = {}
    zones = {device: timezones.get(device) or "UTC" for device in devices}
    for zone in sorted(set(zones.values())):
        group = [device for device in devices if zones[device] == zone]
        kind = b.day_type(event.start, zone)
        days: dict[int, pd.Series] = {}
        for d in range(1, b.LOOKBACK_DAYS + 1):
            start, end = b.earlier(event.start, zone, d), b.earlier(event.end, zone, d)
            if b.day_type(start, zone) != kind or any(a < end and start < z for a, z in excluded):
                continue
            means, coverage = window_means(store, group, start, end, step)
            days[d] = means.where(coverage >= b.MIN_COVERAGE)
        for device in group:
            value = b.high_x_of_y(pd.Series({-d: v[device] for d, v in days.items()}))
            out[device] = np.nan if value is None else value
    return pd.Series(out, dtype=float).reindex(devices)


def measure(store: CloudStore, event: DREvent, planned: pd.DataFrame, now: pd.Timestamp, step: pd.Timedelta,
            excluded: Sequence[tuple[pd.Timestamp, pd.Timestamp]]) -> list[dict]:
    """``dr_results`` rows for both baselines, per dispatched site and for the fleet; ``planned``
    are the event's stored rows (the forecast baseline and planned reduction per site)."""
    sites = planned[(planned[s.BASELINE] == b.FORECAST) & (planned[dd.DEVICE_ID] != FLEET)].set_index(dd.DEVICE_ID)
    devices = list(sites.index)
    measured, _ = window_means(store, devices, event.start, event.end, step)
    zones = {row[dd.DEVICE_ID]: row.get("timezone") for row in store.sites()}
    baselines = {b.FORECAST: sites[s.BASELINE_KW].astype(float),
                 b.HIGH_5_OF_10: utility_baseline(store, event, devices, zones, step, excluded)}
    key = {s.SOURCE: event.source, s.EVENT_ID: event.event_id, s.COMPUTED_AT: now}
    rows = []
    for kind, base in baselines.items():
        delivered = base - measured
        for device in devices:
            rows.append(key | {dd.DEVICE_ID: device, s.BASELINE: kind, s.BASELINE_KW: base[device],
                               s.PLANNED_KW: sites.at[device, s.PLANNED_KW], s.MEASURED_KW: measured[device],
                               s.DELIVERED_KW: delivered[device]})
        counted = measured.notna() & base.notna()
        fleet_planned = planned[(planned[dd.DEVICE_ID] == FLEET) & (planned[s.BASELINE] == b.FORECAST)][s.PLANNED_KW]
        rows.append(key | {dd.DEVICE_ID: FLEET, s.BASELINE: kind,
                           s.BASELINE_KW: float(base[counted].sum()) if counted.any() else np.nan,
                           s.PLANNED_KW: float(fleet_planned.iloc[0]) if len(fleet_planned) else np.nan,
                           s.MEASURED_KW: float(measured[counted].sum()) if counted.any() else np.nan,
                           s.DELIVERED_KW: float(delivered[counted].sum()) if counted.any() else np.nan})
    return rows
