"""A partition's exogenous inputs (sites x steps) from the simulators, and the one accounting
every strategy's outcome goes through.

``generator.exogenous`` supplies weather, PV, the five load components, tariff, feed-in and
carbon; nothing here recomputes physics. Deferrable shares split the load components into
what a ``capacity_low`` signal may postpone (see :mod:`cloud.portfolio.stress`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cloud.optimization.bill import grid_bill
from cloud.portfolio.fleet import SiteSpec, simulator_config
from der_physics import base, battery, generator

# Published resolution of a power (0.1 W, generator.KW_DECIMALS): fleet sums are taken over
# integers of this unit so they do not depend on the order sites are added in.
UNITS_PER_KW = 10**generator.KW_DECIMALS


@dataclass(frozen=True)
class PartitionInputs:
    """Sites ``first .. first + n`` of a fleet over ``times``; arrays are (sites, steps)."""

    first: int
    sites: tuple[SiteSpec, ...]
    configs: tuple
    times: pd.DatetimeIndex
    step_hours: float
    load_kw: np.ndarray
    pv_kw: np.ndarray
    price_per_kwh: np.ndarray
    feed_in_per_kwh: np.ndarray
    carbon_g_kwh: np.ndarray
    env_temp_celsius: np.ndarray
    hvac_kw: np.ndarray
    appliances_kw: np.ndarray
    ev_kw: np.ndarray
    other_kw: np.ndarray
    params: battery.BatteryParams

    @property
    def n_sites(self) -> int:
        return len(self.sites)

    @property
    def steps(self) -> int:
        return len(self.times)

    @property
    def net_load_kw(self) -> np.ndarray:
        return self.load_kw - self.pv_kw

    def initial_state(self) -> battery.BatteryState:
        return generator.initial_state(self.configs)


def build_inputs(sites: Sequence[SiteSpec], first: int, region: str, times: pd.DatetimeIndex) -> PartitionInputs:
    """Run the simulators' exogenous physics for these sites (a loop over sites, not steps)."""
    step_s = int((times[1] - times[0]).total_seconds()) if len(times) > 1 else 3600
    configs = tuple(simulator_config(site, region, step_s) for site in sites)
    exo = generator.exogenous(configs, base.TimeAxis.from_times(times))
    return PartitionInputs(
        first=first, sites=tuple(sites), configs=configs, times=times, step_hours=step_s / 3600.0,
        load_kw=exo.load_kw, pv_kw=exo.solar_kw, price_per_kwh=exo.price_per_kwh, feed_in_per_kwh=exo.feed_in_tariff,
        carbon_g_kwh=exo.carbon_g_kwh, env_temp_celsius=battery.environment_temperature(exo.temp_air_celsius),
        hvac_kw=exo.hvac_kw, appliances_kw=exo.appliances_kw, ev_kw=exo.ev_kw, other_kw=exo.other_kw,
        params=battery.BatteryParams.from_configs([c.battery for c in configs]),
    )


def to_units(kw: np.ndarray) -> np.ndarray:
    """Power in integer 0.1 W units: the form fleet totals are summed in."""
    return np.round(np.asarray(kw) * UNITS_PER_KW).astype(np.int64)


def fleet_sum_kw(site_kw: np.ndarray) -> np.ndarray:
    """Sum over sites (axis 0) that is exact and order-independent, in kW."""
    return to_units(site_kw).sum(axis=0).astype(np.float64) / UNITS_PER_KW


@dataclass(frozen=True)
class Outcome:
    """What a strategy did at each site: battery power (+ charging), stored energy and the
    load actually served (after any deferral or shedding), all (sites, steps)."""

    battery_kw: np.ndarray
    energy_kwh: np.ndarray
    served_load_kw: np.ndarray
    deferred_kw: np.ndarray | None = None
    unserved_kw: np.ndarray | None = None

    def grid_kw(self, inputs: PartitionInputs) -> np.ndarray:
        return self.served_load_kw + self.battery_kw - inputs.pv_kw


def site_bills(inputs: PartitionInputs, grid_kw: np.ndarray, export_value: np.ndarray | None = None) -> np.ndarray:
    """Each site's energy bill at its own tariff over the run (import cost minus feed-in)."""
    feed_in = inputs.feed_in_per_kwh if export_value is None else export_value
    return grid_bill(grid_kw, inputs.price_per_kwh, feed_in, inputs.step_hours).energy.sum(axis=1)


def replay(inputs: PartitionInputs, state: battery.BatteryState, setpoint_kw: np.ndarray, cols: slice,
           load_kw: np.ndarray | None = None) -> tuple[battery.BatteryTrace, battery.BatteryState]:
    """Drive the simulator's battery with setpoints over the steps ``cols`` (NaN = the site's
    own self-consumption rule): the one battery model, so no strategy escapes its limits.
    ``load_kw`` replaces the simulated load where deferral has moved some of it."""
    modes = [c.battery.mode for c in inputs.configs]
    load = inputs.load_kw[:, cols] if load_kw is None else load_kw
    request = battery.requests(modes, inputs.pv_kw[:, cols], load, np.zeros(load.shape, dtype=np.int64),
                               inputs.params.max_charge_kw, setpoint_kw)
    dt = np.full(load.shape[1], inputs.step_hours)
    return battery.run(inputs.params, state, request, dt, inputs.env_temp_celsius[:, cols])
