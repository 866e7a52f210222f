"""Peak guard: a month's import target and the energy kept back to defend it (issue 7).

Most of the bill is the demand charge on the month's peak import, and EV sessions nobody can
time set it. A plan that defends its target against the worst scenario on every evening keeps
the battery full through every peak-price evening, most of which bring no car or a short
session, and gives up most of the energy savings; one that spends the battery meets, sooner or
later, a long session with an empty battery. Perfect foresight does both only because it knows
which evenings need the battery.

The guard makes the trade once a month, on the site's own past, instead of every evening,
and again when a session breaks its cap:

* the import cap ``target_kw``: the battery defends it in real time (the ``import_limit_kw``
  of the setpoint schedule); a month's peak already reached is paid for, so the cap never sits
  below it;
* the reserve ``reserve_kwh``: while a car could arrive (the weekday or weekend hours in which
  past sessions started) or charges, the battery covers house load only above the reserve, so
  a session that comes finds the energy to hold the cap. Before the window the battery is
  charged to the reserve from the grid if PV has not done it;
* outside those hours, and above the reserve, the plan's command or the battery's own rule
  stands.

:func:`fit_guard` steps the battery through the last weeks of readings with every candidate
pair at once and picks the cheapest whose cap is at least one step above the cheapest's: the
cap that was cheapest in hindsight is the one a session heavier than any of those weeks' breaks,
and that costs a month of demand charge. Once the month's peak has passed the cap, that peak
is paid for: the fit is made again with no cap below it (the live planner fits every plan with
the month's peak as that floor), and where the cheapest cap is the floor itself it is taken
without the step, since the past weeks' heaviest session did not set it. A cap fitted for a
lower peak keeps a reserve the new cap does not need. When no day of those weeks saw two
sessions, a day whose session has ended keeps no reserve for the rest of it. The per-step rule is
``edge_gateway/control.py``'s, which the gateway runs on the ``guard`` of a published schedule
and the backtest on the simulated site.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cloud.optimization import forecasters as fc
from cloud.optimization import sessions
from cloud.optimization.model import BatterySpec
from cloud.optimization.reference import NO_DERATING_CELSIUS, ideal_battery
from edge_gateway.control import DEFAULT_WINDOWS, PRECHARGE_H, WINDOW_TAIL_H, ArrivalWindows, PeakGuard, guard_setpoints_kw
from edge_gateway.simulators import battery as physics

__all__ = ["DEFAULT_WINDOWS", "PRECHARGE_H", "WINDOW_TAIL_H", "ArrivalWindows", "GuardRule", "PastDays", "fit_guard",
           "guard_setpoints_kw", "rule_bills"]

if TYPE_CHECKING:
    from edge_gateway.config import SimulatorConfig

#: Weeks of readings a guard is fitted on: enough sessions for the worst of them to show.
FIT_DAYS = 28
#: Candidate caps, in steps from a little below the highest past net load less the battery's
#: full discharge up to that load, and reserves as shares of the usable energy: a grid of a
#: hundred or so keeps the fit to seconds.
TARGET_STEP_KW = 0.5
RESERVE_SHARES = np.linspace(0.0, 1.0, 10)
#: Readings searched for a session under way: longer than any session.
SESSION_LOOKBACK = pd.Timedelta(hours=12)


@dataclass(frozen=True)
class GuardRule:
    target_kw: float
    reserve_kwh: float
    windows: ArrivalWindows
    one_session_a_day: bool = False

    @property
    def edge(self) -> PeakGuard:
        """What the gateway runs (the target travels as the schedule's import cap)."""
        return PeakGuard(self.reserve_kwh, self.windows, self.one_session_a_day)

    def payload(self) -> dict:
        """The ``guard`` object of a setpoint schedule (edge_gateway/mqtt/commands.py)."""
        return {"reserve_kwh": self.reserve_kwh, "weekday_window_h": list(self.windows.weekday_h),
                "weekend_window_h": list(self.windows.weekend_h), "one_session_a_day": self.one_session_a_day}


@dataclass(frozen=True)
class PastDays:
    """What the site measured, per reading instant, and the clock and sessions of each."""

    found: sessions.Sessions  # the charging sessions in the readings
    net_kw: np.ndarray
    pv_surplus: np.ndarray  # PV above load
    charging: np.ndarray  # a car charging
    ended_today: np.ndarray  # a session that began this local day has ended
    hour: np.ndarray  # local hour at the start of the interval
    weekend: np.ndarray
    import_price_per_kwh: np.ndarray
    export_price_per_kwh: np.ndarray

    @classmethod
    def from_readings(cls, load_kw: pd.Series, pv_kw: pd.Series, charger_kw: float, config: SimulatorConfig) -> PastDays:
        step = load_kw.index[1] - load_kw.index[0]
        found = sessions.find_sessions(load_kw, charger_kw)
        local = (load_kw.index - step).tz_convert(config.timezone)
        tariff = fc.tariff_forecast(config, load_kw.index, np.zeros(len(load_kw)))
        return cls(
            found, (load_kw - pv_kw).to_numpy(), (pv_kw > load_kw).to_numpy(),
            sessions.charging_mask(load_kw.index, found.starts, found.ends),
            sessions.ended_today(found, load_kw.index, step, config.timezone),
            np.asarray(local.hour + local.minute / 60.0), np.asarray(local.day_of_week >= 5),
            tariff[fc.IMPORT_PRICE].to_numpy(), tariff[fc.EXPORT_PRICE].to_numpy(),
        )


def rule_bills(targets_kw: np.ndarray, reserves_kwh: np.ndarray, windows: ArrivalWindows, past: PastDays,
               battery: BatterySpec, demand_charge_per_kw: float, step_hours: float,
               one_session_a_day: bool = False) -> np.ndarray:
    """What each rule would have billed over ``past``: energy, the demand charge on its peak, wear.

    Every rule is one battery of the LP's physics (:func:`reference.ideal_battery`) stepped
    through the readings at once, each step's command decided on the reading before it.
    """
    count = len(targets_kw)
    column = lambda value: np.full(count, float(value))  # noqa: E731
    params, state = ideal_battery(
        column(battery.initial_kwh), column(battery.min_kwh), column(battery.max_kwh), column(battery.max_charge_kw),
        column(battery.max_discharge_kw), column(battery.charge_efficiency), column(battery.discharge_efficiency),
    )
    room = np.full((count, 1), NO_DERATING_CELSIUS)
    peak, energy_cost, throughput = np.zeros(count), np.zeros(count), np.zeros(count)
    for t in range(1, len(past.net_kw)):
        command = guard_setpoints_kw(
            reserves_kwh, past.hour[t], past.weekend[t], windows, state.energy_kwh - battery.min_kwh,
            bool(past.charging[t - 1]), bool(past.pv_surplus[t - 1]), battery.max_charge_kw, step_hours,
            one_session_a_day and bool(past.ended_today[t - 1]),
        )
        net = np.full((count, 1), past.net_kw[t])
        request = physics.request_setpoint(command[:, None], -net, np.maximum(targets_kw, peak)[:, None], net)
        trace, state = physics.run(params, state, request, np.array([step_hours]), room)
        power = trace.power_kw[:, 0]
        grid = past.net_kw[t] + power
        energy_cost += (np.maximum(grid, 0.0) * past.import_price_per_kwh[t] - np.maximum(-grid, 0.0) * past.export_price_per_kwh[t]) * step_hours
        throughput += np.abs(power) * step_hours
        peak = np.maximum(peak, grid)
    return energy_cost + demand_charge_per_kw * peak + battery.wear_cost_per_kwh * throughput


def fit_guard(load_kw: pd.Series, pv_kw: pd.Series, battery: BatterySpec, config: SimulatorConfig,
              floor_kw: float = 0.0) -> GuardRule:
    """The cap and reserve fitted on the readings given (the last :data:`FIT_DAYS` days before
    a plan), as the module docstring says, kept in the hours their sessions started.
    ``floor_kw``: the month's peak so far; it is paid for, so no cap below it is a candidate."""
    step = load_kw.index[1] - load_kw.index[0]
    past = PastDays.from_readings(load_kw, pv_kw, config.home_load.ev_charger_kw, config)
    found = past.found
    windows = ArrivalWindows.from_sessions(found.starts, step, config.timezone)
    highest = float(past.net_kw.max())
    lowest = max(highest - battery.max_discharge_kw - 2 * TARGET_STEP_KW, 0.0)
    targets = np.unique(np.maximum(np.arange(lowest, highest + TARGET_STEP_KW, TARGET_STEP_KW), floor_kw))
    reserves = RESERVE_SHARES * (battery.max_kwh - battery.min_kwh)
    # One car charging at most once a day: once the day's session has ended, no reserve.
    one_a_day = len(found.starts) > 0 and int(sessions.per_day(found, step, config.timezone).max()) == 1
    grid = np.array(list(itertools.product(targets, reserves)))
    bills = rule_bills(grid[:, 0], grid[:, 1], windows, past, battery, config.grid_price.demand_charge,
                       step / pd.Timedelta(hours=1), one_a_day)
    # The cheapest cap in hindsight sits where one session heavier than the last weeks' costs
    # a month of demand charge: the guard takes the cheapest pair one cap step above it.
    cheapest = grid[int(np.argmin(bills)), 0]
    # ...unless the cheapest is the month's peak already paid for, not a session's weight.
    margin = TARGET_STEP_KW if cheapest > floor_kw + 1e-9 else 0.0
    above = np.flatnonzero(grid[:, 0] >= min(cheapest + margin, targets[-1]) - 1e-9)
    best = int(above[np.argmin(bills[above])])
    return GuardRule(float(grid[best, 0]), float(grid[best, 1]), windows, one_a_day)
