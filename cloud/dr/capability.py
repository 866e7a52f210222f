"""What the fleet can do in an event's window, from what the cloud store holds at decision time.

Per targeted site: its battery (the ``sites`` row), its latest reading (stored energy, import
price, and whether it is online: a reading within ``online_intervals`` of its own reading
interval before now), and two forecasts per plan step (:func:`cloud.dr.baseline.same_step_mean`
over the ``forecast_days`` most recent days of the window's day type): its net grid flow without the event (the forecast
baseline) and its net load (load minus PV, what the battery works against).

A site's capability is the reduction below its baseline it can hold over the whole window:
its battery's sustainable discharge (the lower of its rate and its usable energy spread over
the window, after discharge losses) minus what its own rule already discharges in the
baseline (net load minus baseline), never below zero. Its energy is the stored energy now,
less what the fleet already promised (:func:`commitments`): a site in another event whose
window overlaps this one takes no part (one battery cannot answer two events at once, and
its schedule carries one command per instant), and the reduction each other standing event
planned on it (kW times the hours of its window still to come, drawn through the discharge
losses) is not available, whether that event comes before (it drains the battery first) or
after (this one must leave it its charge). The part of a window already run is not counted:
it is spent, and the stored energy now shows it. Recharging between events is not counted
either: a promise rests on the charge held now.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from cloud.dr import baseline as b
from cloud.dr import records as r
from cloud.dr.model import DREvent
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.config import one_way_efficiency

_TICK = pd.Timedelta(microseconds=1)
NET_LOAD = "_net_load_kw"
DEFAULT_INTERVAL = pd.Timedelta(minutes=15)  # a site with a single reading: the optimizer's step
RECENT = pd.Timedelta(hours=6)  # readings read for the stored energy, price and reading interval


@dataclass(frozen=True)
class FleetState:
    """Arrays over ``devices`` (the targeted sites the store knows); (sites, steps) where noted."""

    devices: list[str]
    online: np.ndarray
    energy_kwh: np.ndarray
    min_kwh: np.ndarray
    max_kwh: np.ndarray
    max_charge_kw: np.ndarray
    max_discharge_kw: np.ndarray
    efficiency: np.ndarray  # one way
    price_per_kwh: np.ndarray
    baseline_kw: np.ndarray  # (sites, steps) forecast net grid flow without the event
    net_kw: np.ndarray  # (sites, steps) forecast load minus PV
    interval_minutes: np.ndarray  # the site's reading interval (median gap of its recent readings)
    free: np.ndarray  # in no other event overlapping this one's window

    def capability_kw(self, hours: float, shares: np.ndarray | None = None) -> np.ndarray:
        """Per site, the reduction below its baseline it can hold for ``hours`` (0 offline).
        ``shares``: each plan step's share inside the window (:func:`cloud.dr.baseline.step_shares`;
        None: every step whole), so the battery's own rule over a window off the plan step is
        weighed as its baseline and its delivery are."""
        usable = np.maximum(self.energy_kwh - self.min_kwh, 0.0)
        sustained = np.minimum(self.max_discharge_kw, usable * self.efficiency / hours)
        steps = self.net_kw.shape[1]
        shares = np.ones(steps) if shares is None else np.asarray(shares, dtype=float)
        gap = np.nan_to_num(self.net_kw - self.baseline_kw)  # a site without history is not followable
        own_rule = gap @ shares / shares.sum() if steps else 0.0
        capability = np.maximum(sustained - own_rule, 0.0)
        return np.where(self.followable, np.nan_to_num(capability), 0.0)

    @property
    def has_history(self) -> np.ndarray:
        return np.isfinite(self.baseline_kw).all(axis=1) & np.isfinite(self.net_kw).all(axis=1)

    @property
    def followable(self) -> np.ndarray:
        """Online, with a baseline and a stored energy to plan from, and in no other event at the same time."""
        return self.online & self.has_history & np.isfinite(self.energy_kwh) & self.free

    def less(self, promised: Commitments) -> FleetState:
        """This state with what other events already promised taken off (:func:`commitments`)."""
        energy = np.maximum(self.energy_kwh - promised.energy_kwh / self.efficiency, self.min_kwh)  # NaN stays NaN
        return replace(self, energy_kwh=energy, free=self.free & ~promised.busy)

    def from_step(self, first: int) -> FleetState:
        """This state for the plan steps from ``first`` on: the rest of a window under way."""
        return replace(self, baseline_kw=self.baseline_kw[:, first:], net_kw=self.net_kw[:, first:])

    def subset(self, keep: np.ndarray) -> FleetState:
        return FleetState([d for d, k in zip(self.devices, keep) if k], *(getattr(self, f)[keep] for f in _ARRAYS))


_ARRAYS = ("online", "energy_kwh", "min_kwh", "max_kwh", "max_charge_kw", "max_discharge_kw", "efficiency",
           "price_per_kwh", "baseline_kw", "net_kw", "interval_minutes", "free")


@dataclass(frozen=True)
class Commitments:
    """Per device of a :class:`FleetState`: whether another standing event overlaps the window
    (``busy``), and the energy the other standing events planned to deliver from it (kWh at
    the grid, ``energy_kwh``); ``events`` counts those events."""

    busy: np.ndarray
    energy_kwh: np.ndarray
    events: int = 0


def commitments(store: CloudStore, devices: list[str], event: DREvent, now: pd.Timestamp) -> Commitments:
    """What the fleet's other opted-in events that have not ended promised of ``devices``,
    from their stored plans (the forecast rows of ``dr_results``): of a window under way at
    ``now``, only the rest is still owed."""
    events = r.all_events(store)
    busy, energy, count = np.zeros(len(devices), bool), np.zeros(len(devices)), 0
    index = {device: i for i, device in enumerate(devices)}
    for row in events[events[s.STATUS] == r.OPTED_IN].to_dict("records"):
        other = r.event_of(row)
        if other.end <= now or (other.source, other.event_id) == (event.source, event.event_id):
            continue
        planned = r.results(store, other.source, other.event_id)
        planned = planned[(planned[s.BASELINE] == b.FORECAST) & planned[dd.DEVICE_ID].isin(index)]
        rows = [index[d] for d in planned[dd.DEVICE_ID]]
        if not rows:
            continue
        count += 1
        if other.start < event.end and event.start < other.end:
            busy[rows] = True
        else:  # what has run of its window is spent: it shows in the stored energy now
            hours = (other.end - max(other.start, now)) / pd.Timedelta(hours=1)
            energy[rows] += np.maximum(np.nan_to_num(planned[s.PLANNED_KW].to_numpy(dtype=float)), 0.0) * hours
    return Commitments(busy, energy, count)


def _site_value(site: dict, key: str, default: float) -> float:
    value = site.get(key)
    return default if value is None or not np.isfinite(value) else float(value)


def _history(store: CloudStore, devices: list[str], steps: pd.DatetimeIndex, step: pd.Timedelta,
             lags: set[int]) -> pd.DataFrame:
    """The readings of the plan steps' hours on each lagged day: a few hours a day, not weeks of readings."""
    frames = []
    for d in sorted(lags):
        # An hour either side: a lagged day is the same local hours (same_time.earlier), which a
        # daylight-saving change moves by an hour in UTC, in whichever zone a site is.
        shift, clock = pd.Timedelta(days=d), pd.Timedelta(hours=1)
        first, stop = b.read_bounds(steps[0] - shift - clock, steps[-1] + step - shift + clock)
        frames.append(store.read_readings(None, first, stop, columns=[dd.NET_GRID_FLOW, dd.LOAD_TOTAL, dd.SOLAR_KW]))
    readings = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[dd.DEVICE_ID, dd.TS])
    readings = readings[readings[dd.DEVICE_ID].isin(devices)]
    return readings.assign(**{NET_LOAD: readings[dd.LOAD_TOTAL] - readings[dd.SOLAR_KW]})


def _forecasts(readings: pd.DataFrame, sites: list[dict], steps: pd.DatetimeIndex, step: pd.Timedelta,
               lags_by_zone: dict[str, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(sites, steps) forecasts of net grid flow and net load, each site from its own day type."""
    devices = [site[dd.DEVICE_ID] for site in sites]
    tables = {column: b.step_table(readings, column, step) for column in (dd.NET_GRID_FLOW, NET_LOAD)}
    out = {column: np.full((len(devices), len(steps)), np.nan) for column in tables}
    for zone, lags in lags_by_zone.items():
        rows = [i for i, site in enumerate(sites) if _zone(site) == zone]
        for column, table in tables.items():
            out[column][rows] = b.same_step_mean(table, steps, [devices[i] for i in rows], lags, zone)
    return out[dd.NET_GRID_FLOW], out[NET_LOAD]


def _zone(site: dict) -> str:
    return site.get("timezone") or "UTC"


def fleet_state(store: CloudStore, sites: list[dict], steps: pd.DatetimeIndex, step: pd.Timedelta, now: pd.Timestamp,
                forecast_days: int, online_intervals: int) -> FleetState:
    """The state of ``sites`` (rows of the ``sites`` table) at ``now`` for plan ``steps``."""
    devices = [site[dd.DEVICE_ID] for site in sites]
    lags_by_zone = {zone: b.same_type_lags(steps[0], zone, forecast_days) for zone in {_zone(site) for site in sites}}
    history = _history(store, devices, steps, step, {d for lags in lags_by_zone.values() for d in lags})
    baseline_kw, net_kw = _forecasts(history, sites, steps, step, lags_by_zone)
    recent = store.read_readings(None, now - RECENT, now + _TICK, columns=[dd.BATTERY_SOC, dd.PRICE])
    recent = recent[recent[dd.DEVICE_ID].isin(devices)]
    latest = recent.groupby(dd.DEVICE_ID).last().reindex(devices)
    gaps = recent[dd.TS].diff().where(recent[dd.DEVICE_ID].eq(recent[dd.DEVICE_ID].shift()))
    intervals = gaps.groupby(recent[dd.DEVICE_ID]).median().reindex(devices).fillna(DEFAULT_INTERVAL)
    age = now - pd.to_datetime(latest[dd.TS], utc=True)
    online = (age <= online_intervals * intervals).fillna(False).to_numpy(dtype=bool)
    capacity = np.array([_site_value(site, "battery_capacity_kwh", 0.0) for site in sites])
    min_soc = np.array([_site_value(site, "battery_min_soc", 0.0) for site in sites]) / 100.0
    max_soc = np.array([_site_value(site, "battery_max_soc", 100.0) for site in sites]) / 100.0
    soc = latest[dd.BATTERY_SOC].to_numpy(dtype=float) / 100.0
    min_kwh, max_kwh = capacity * min_soc, capacity * max_soc
    return FleetState(
        devices=devices, online=online,
        energy_kwh=np.clip(soc * capacity, min_kwh, max_kwh) if len(devices) else soc,
        min_kwh=min_kwh, max_kwh=max_kwh,
        max_charge_kw=np.array([_site_value(site, "battery_max_charge_kw", 0.0) for site in sites]),
        max_discharge_kw=np.array([_site_value(site, "battery_max_discharge_kw", 0.0) for site in sites]),
        efficiency=np.array([one_way_efficiency(_site_value(site, "battery_round_trip_efficiency", 0.9)) for site in sites]),
        price_per_kwh=np.nan_to_num(latest[dd.PRICE].to_numpy(dtype=float)),
        baseline_kw=baseline_kw, net_kw=net_kw,
        interval_minutes=(intervals / pd.Timedelta(minutes=1)).to_numpy(dtype=float),
        free=np.ones(len(devices), bool),
    )
