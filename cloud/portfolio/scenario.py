"""What the aggregator is asked to do, and how fleet limits are shared among groups.

A :class:`Scenario` states limits relative to the fleet (so one scenario fits any fleet);
:func:`resolve` turns it into kW per step once the fleet's no-battery baseline is known.
Every window is set in the fleet's local time, whatever the run's start: a grid asks for
demand response at a local hour (the evening ramp), and a 17:00 event placed in hours from a
start at UTC midnight would fall at 10:00 in California, when the fleet is exporting.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from der_core.errors import UsageError
from der_physics import base


@dataclass(frozen=True)
class Scenario:
    name: str = "default"
    import_cap_fraction: float | None = 0.9  # of the no-battery fleet peak net import
    dr_day: int | None = 1  # local days after the local date the run starts on; None: no DR event
    dr_start_hour: float = 17.0  # local hour of that day the DR window opens
    dr_hours: float = 2.0
    dr_fraction: float = 0.3  # reduction asked, as a share of the fleet's battery discharge power
    market_price_per_kwh: float | None = 0.25  # paid for aggregated export in the market hours
    market_start_h: float = 17.0  # local hour of day the market window opens
    market_hours: float = 3.0
    participation: bool = True
    deaf_share: float = 0.0  # sites that cannot hear the aggregator
    supply_fraction: float | None = None  # available supply, as a share of the no-battery fleet peak load
    shortfall_start_h: float = 17.0  # local hour of day the shortfall starts, every day
    shortfall_hours: float = 4.0
    deaf_sweep: tuple[float, ...] = ()


SCENARIOS = {
    "default": Scenario(),
    "none": Scenario("none", import_cap_fraction=None, dr_day=None, market_price_per_kwh=None, participation=False),
    "full-participation": Scenario("full-participation", participation=False),
    "shortfall": Scenario("shortfall", supply_fraction=0.75),
    "partition": Scenario("partition", deaf_share=0.0, deaf_sweep=(0.0, 0.1, 0.25, 0.5), supply_fraction=0.75),
}


def named(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise UsageError(f"--scenario {name!r}: expected one of {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


@dataclass(frozen=True)
class FleetLimits:
    """Resolved fleet-level arrays over every step of the run (NaN = no limit at that step)."""

    baseline_kw: np.ndarray  # no-battery fleet net load
    load_kw: np.ndarray  # fleet load
    cap_kw: np.ndarray
    dr_target_kw: np.ndarray
    market_price: np.ndarray
    supply_kw: np.ndarray
    discharge_kw: float  # fleet battery discharge power
    deaf_share: float
    participation: bool


def local_clock(times: pd.DatetimeIndex, timezone: str) -> tuple[np.ndarray, np.ndarray]:
    """Per step: local dates counted from the first step's, and the local hour of day."""
    hour, _, day = base.local_clock(base.TimeAxis.from_times(times), timezone)
    return day - day[0], hour


def _window(hours: np.ndarray, start: float, length: float) -> np.ndarray:
    return (hours >= start) & (hours < start + length)


def _daily(hour_of_day: np.ndarray, start: float, length: float) -> np.ndarray:
    return np.mod(hour_of_day - start, 24.0) < length


def resolve(s: Scenario, baseline_kw: np.ndarray, load_kw: np.ndarray, local_day: np.ndarray, hour_of_day: np.ndarray,
            discharge_kw: float) -> FleetLimits:
    """kW limits for the fleet, from its no-battery baseline (net load and load per step).
    ``local_day`` counts local dates from the run's first step's, ``hour_of_day`` is local."""
    nan = np.full(len(hour_of_day), np.nan)
    peak = float(max(baseline_kw.max(), 0.0))
    cap = nan if s.import_cap_fraction is None else np.full(len(hour_of_day), s.import_cap_fraction * peak)
    dr = nan.copy()
    if s.dr_day is not None:
        wall_clock = 24.0 * local_day + hour_of_day
        dr = np.where(_window(wall_clock, 24.0 * s.dr_day + s.dr_start_hour, s.dr_hours),
                      baseline_kw - s.dr_fraction * discharge_kw, np.nan)
    market = nan if s.market_price_per_kwh is None else np.where(
        _daily(hour_of_day, s.market_start_h, s.market_hours), s.market_price_per_kwh, np.nan)
    supply = nan if s.supply_fraction is None else np.where(
        _daily(hour_of_day, s.shortfall_start_h, s.shortfall_hours), s.supply_fraction * float(load_kw.max()), np.nan)
    return FleetLimits(baseline_kw, load_kw, cap, dr, market, supply, discharge_kw, s.deaf_share, s.participation)


def with_deaf_share(limits: FleetLimits, share: float) -> FleetLimits:
    return replace(limits, deaf_share=share)


def group_share(group_discharge_kw: float, group_sites: int, limits: FleetLimits, fleet_sites: int) -> float:
    """A group's share of the fleet's flexibility: its battery discharge power (or its site
    count when the fleet has no batteries)."""
    if limits.discharge_kw > 0:
        return group_discharge_kw / limits.discharge_kw
    return group_sites / fleet_sites


def group_limit(limit_kw: np.ndarray, group_baseline_kw: np.ndarray, fleet_baseline_kw: np.ndarray, share: float) -> np.ndarray:
    """A group's part of a fleet limit: its own baseline plus its share of the fleet headroom
    (negative where the limit binds). Group parts add up to the fleet limit."""
    return group_baseline_kw + share * (limit_kw - fleet_baseline_kw)
