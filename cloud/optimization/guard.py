"""Peak guard: the month's import cap, and for a home without a car the energy kept for it.

Most of the bill is the demand charge on the month's peak import, and load nobody can time
sets it: a car's session, or in a home without one the household's own bursts (an oven, a
heater, a wash), which come on most days at hours no forecast pins down. The cap the battery
defends (the ``import_limit_kw`` of the setpoint schedule) is chosen once a month on the
site's own past, and again when the load breaks it: :func:`fit_guard` replays the last four
weeks of readings under a simple rule, a constant reserve kept while a car could arrive (the
weekday or weekend hours in which past sessions started) or charges, topped up from the grid
beforehand, for about a hundred candidate (cap, reserve) pairs at once, and keeps the
cheapest pair whose cap is at least one step above the cheapest's: the cap that was cheapest
in hindsight is the one a session heavier than any of those weeks' breaks, and that costs a
month of demand charge. Once the month's peak has passed the cap, that peak is paid for: the
fit is made again with no cap below it, and where the cheapest cap is that floor itself it
is taken without the step.

In a home without a car a burst may come at any hour, so the replayed reserve is kept at all
hours and topped up from the grid under the cap whenever the battery falls below it
(:meth:`ArrivalWindows.any_hour`); the battery covers load with what is above it. That
reserve stays in force as a floor under the reserve policy's thresholds
(:attr:`GuardRule.standing_reserve_kwh`): it is the one the replay found cheapest on the
household's real bursts, replayed whole, where the policy's program knows them only by how
often, how long and how high they come (``reserve.SessionModel.from_bursts``).

The replay is an honest test of a cap: it spends real past evenings, with their heavy
sessions and busy houses, on a rule that must hold it. What the battery then keeps back
evening by evening under that cap, in a home with a car, is the reserve policy's to decide
(reserve.py), which prices the same risk in expectation rather than with one reserve for the
whole month.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cloud.optimization import forecasters as fc
from cloud.optimization import sessions
from cloud.optimization.bill import grid_bill
from cloud.optimization.model import BatterySpec
from cloud.optimization.reference import NO_DERATING_CELSIUS, ideal_battery
from der_core.tariff import site_tariff
from der_physics import battery as physics
from der_physics.tariff import demand_window, peak_steps

if TYPE_CHECKING:
    from der_core.config import SimulatorConfig

#: Weeks of readings a guard is fitted on: enough sessions for the worst of them to show.
FIT_DAYS = 28
#: Candidate caps, in steps from a little below the highest past net load in the tariff's
#: demand window less the battery's full discharge up to that load, and reserves as shares of
#: the usable energy: a grid of a hundred or so keeps the fit to seconds.
TARGET_STEP_KW = 0.5
RESERVE_SHARES = np.linspace(0.0, 1.0, 10)
#: Readings searched for a session under way: longer than any session.
SESSION_LOOKBACK = pd.Timedelta(hours=12)
#: Hours before the arrival window in which the battery is charged up to the reserve.
PRECHARGE_H = 3.0
#: Hours after the latest past arrival that the window stays open.
WINDOW_TAIL_H = 0.5
#: Without sessions in the readings the windows cover the tariff's evening and a weekend day.
DEFAULT_WINDOWS = ((16.0, 21.0), (9.0, 20.0))


@dataclass(frozen=True)
class ArrivalWindows:
    """Local hours (start, end) in which past sessions began, on weekdays and at weekends;
    ``all_day``: load nobody can time may come at any hour (a home without a car)."""

    weekday_h: tuple[float, float]
    weekend_h: tuple[float, float]
    all_day: bool = False

    @classmethod
    def any_hour(cls) -> ArrivalWindows:
        """Every hour of every day: the reserve is kept, and topped up, throughout."""
        return cls((0.0, 24.0), (0.0, 24.0), all_day=True)

    @classmethod
    def from_sessions(cls, starts: pd.DatetimeIndex, step: pd.Timedelta, timezone: str) -> ArrivalWindows:
        local = (starts - step).tz_convert(timezone)
        hours = np.asarray(local.hour + local.minute / 60.0)
        weekend = np.asarray(local.day_of_week >= 5)
        spans = []
        for kind, default in zip((False, True), DEFAULT_WINDOWS, strict=True):
            seen = hours[weekend == kind]
            spans.append((float(seen.min()), float(seen.max()) + WINDOW_TAIL_H) if len(seen) else default)
        return cls(*spans)

    def bounds(self, weekend: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start and end hour of the window of each step's day kind."""
        start = np.where(weekend, self.weekend_h[0], self.weekday_h[0])
        end = np.where(weekend, self.weekend_h[1], self.weekday_h[1])
        return start, end


@dataclass(frozen=True)
class GuardRule:
    target_kw: float
    reserve_kwh: float
    windows: ArrivalWindows
    one_session_a_day: bool = False

    @property
    def standing_reserve_kwh(self) -> float | None:
        """The energy above the minimum a home without a car keeps at every hour (the replayed
        reserve), under whatever the reserve policy keeps; None for a home with a car, whose
        reserve policy alone decides what it keeps."""
        return self.reserve_kwh if self.windows.all_day else None

    def payload(self) -> dict:
        """The rule as JSON (plan summaries)."""
        return {"target_kw": round(self.target_kw, 4), "reserve_kwh": self.reserve_kwh,
                "weekday_window_h": list(self.windows.weekday_h), "weekend_window_h": list(self.windows.weekend_h),
                "all_day": self.windows.all_day, "one_session_a_day": self.one_session_a_day}


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
    demand_window: np.ndarray | None = None  # the tariff's: which instants set the billed peak

    @property
    def in_window(self) -> np.ndarray:
        """Per instant, whether its import sets the billed peak (every one without a window)."""
        return peak_steps(self.demand_window, len(self.net_kw))

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
            demand_window(site_tariff(config), load_kw.index, config.timezone, config.country),
        )


def rule_bills(targets_kw: np.ndarray, reserves_kwh: np.ndarray, windows: ArrivalWindows, past: PastDays,
               battery: BatterySpec, demand_charge_per_kw: float, step_hours: float,
               one_session_a_day: bool = False) -> np.ndarray:
    """What each rule would have billed over ``past``: energy, the demand charge on its peak, wear.

    Every rule is one battery of the LP's physics (:func:`reference.ideal_battery`) stepped
    through the readings at once, each step's command decided on the reading before it. The
    cap binds, and the peak it is raised to counts, only in the tariff's demand window, as the
    bill counts it (bill.grid_bill) and the gateway caps it: outside the window an import costs
    no demand charge, and a cap there would stop the charging that holds the window's peak.
    """
    count, steps = len(targets_kw), len(past.net_kw)
    in_window, uncapped = past.in_window, np.full((count, 1), np.nan)
    params, state = ideal_battery([battery] * count)
    room = np.full((count, 1), NO_DERATING_CELSIUS)
    peak, throughput = np.zeros(count), np.zeros(count)
    grid = np.zeros((count, steps - 1))  # the first reading only decides the first command
    for t in range(1, steps):
        command = guard_setpoints_kw(
            reserves_kwh, past.hour[t], past.weekend[t], windows, state.energy_kwh - battery.min_kwh,
            bool(past.charging[t - 1]), bool(past.pv_surplus[t - 1]), battery.max_charge_kw, step_hours,
            one_session_a_day and bool(past.ended_today[t - 1]),
        )
        net = np.full((count, 1), past.net_kw[t])
        cap = np.maximum(targets_kw, peak)[:, None] if in_window[t] else uncapped
        request = physics.request_setpoint(command[:, None], -net, cap, net)
        trace, state = physics.run(params, state, request, np.array([step_hours]), room)
        power = trace.power_kw[:, 0]
        grid[:, t - 1] = past.net_kw[t] + power
        throughput += np.abs(power) * step_hours
        if in_window[t]:
            peak = np.maximum(peak, grid[:, t - 1])
    bill = grid_bill(grid, past.import_price_per_kwh[1:], past.export_price_per_kwh[1:], step_hours, demand_charge_per_kw,
                     demand_window=in_window[1:])
    # Summed in time order, as the replay accrues it.
    energy = np.cumsum(bill.energy, axis=-1)[:, -1] if steps > 1 else np.zeros(count)
    return energy + bill.demand + battery.wear_cost_per_kwh * throughput


def fit_guard(load_kw: pd.Series, pv_kw: pd.Series, battery: BatterySpec, config: SimulatorConfig,
              floor_kw: float = 0.0) -> GuardRule:
    """The cap and reserve fitted on the readings given (the last :data:`FIT_DAYS` days before
    a plan), as the module docstring says, kept in the hours their sessions started, or at
    every hour in a home without a car. ``floor_kw``: the month's peak so far; it is paid for, so no cap below it is a candidate."""
    step = load_kw.index[1] - load_kw.index[0]
    past = PastDays.from_readings(load_kw, pv_kw, config.home_load.ev_charger_kw, config)
    found = past.found
    car = config.home_load.ev_charger_kw > 0
    windows = ArrivalWindows.from_sessions(found.starts, step, config.timezone) if car else ArrivalWindows.any_hour()
    highest = float(np.max(past.net_kw, where=past.in_window, initial=0.0))  # the highest import that is billed
    lowest = max(highest - battery.max_discharge_kw - 2 * TARGET_STEP_KW, 0.0)
    targets = np.unique(np.maximum(np.arange(lowest, highest + TARGET_STEP_KW, TARGET_STEP_KW), floor_kw))
    reserves = RESERVE_SHARES * (battery.max_kwh - battery.min_kwh)
    # One car charging at most once a day: once the day's session has ended, no reserve.
    one_a_day = len(found.starts) > 0 and int(sessions.per_day(found, step, config.timezone).max()) == 1
    grid = np.array(list(itertools.product(targets, reserves)))
    bills = rule_bills(grid[:, 0], grid[:, 1], windows, past, battery, site_tariff(config).demand_charge_per_kw,
                       step / pd.Timedelta(hours=1), one_a_day)
    # The cheapest cap in hindsight sits where one session heavier than the last weeks' costs
    # a month of demand charge: the guard takes the cheapest pair one cap step above it.
    cheapest = grid[int(np.argmin(bills)), 0]
    # ...unless the cheapest is the month's peak already paid for, not a session's weight. A
    # month that has imported nothing yet has paid for nothing: a cap of 0 there is no paid
    # peak but one every evening a little heavier than the last weeks' breaks, and holding it
    # had the battery cover the night's off-peak load to empty before the morning's burst.
    paid = floor_kw > 0.0 and cheapest <= floor_kw + 1e-9
    margin = 0.0 if paid else TARGET_STEP_KW
    above = np.flatnonzero(grid[:, 0] >= min(cheapest + margin, targets[-1]) - 1e-9)
    best = int(above[np.argmin(bills[above])])
    return GuardRule(float(grid[best, 0]), float(grid[best, 1]), windows, one_a_day)


def guard_setpoints_kw(
    reserve_kwh: np.ndarray, hour: float, weekend: bool, windows: ArrivalWindows, energy_above_min_kwh: np.ndarray,
    charging_now: bool, pv_surplus: bool, max_charge_kw: float, step_hours: float, day_done: bool = False,
) -> np.ndarray:
    """The command of one step for each reserve (NaN: no command from the guard).

    Decided on the latest reading (energy stored, a car charging, PV above load), before the
    step; the import cap defends the target within it. ``day_done``: no further session
    comes today, so none needs a reserve. Windows of ``all_day`` keep and top up the reserve
    at every hour, as before a car's window.
    """
    start, end = windows.bounds(np.asarray(weekend))
    reserve = np.asarray(reserve_kwh, dtype=float)
    energy = np.asarray(energy_above_min_kwh, dtype=float) + np.zeros_like(reserve)
    free = np.full(reserve.shape, np.nan)
    if day_done and not charging_now:
        return free
    hold = free if pv_surplus else np.zeros(reserve.shape)
    if windows.all_day or start - PRECHARGE_H <= hour < start:
        # Held within one step at full rate above the reserve, so the rule does not flip
        # between charging and covering load.
        margin = max_charge_kw * step_hours
        command = np.where(energy < reserve, max_charge_kw, np.where(energy > reserve + margin, free, hold))
    else:
        keep = reserve if charging_now or start <= hour < end else np.zeros(reserve.shape)
        command = np.where((energy > keep) | (keep <= 0.0), free, hold)
    return np.where(reserve > 0.0, command, free)  # no reserve: the battery's own rule throughout
