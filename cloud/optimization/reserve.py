"""The reserve policy: how much energy a home with a car keeps back, step by step, for a
session nobody can time.

The month's peak import is set by EV sessions: a car plugged in at 7.2 kW for an unknown
number of hours. A plan on one forecast cannot hedge that, and a fixed reserve hedges it
badly: it idles the battery through every evening a car might come and holds energy through
every session that turns out short. The reserve policy is the hedge worked out in
expectation. From the site's own readings it learns

* when a car arrives: per weekday and weekend, the chance of a first session starting in
  each 15-minute slot of the day (the past arrivals, smoothed);
* how long a session lasts: the chance that a session which has charged ``k`` steps goes on
  (the past lengths, smoothed on a log scale so the longest seen is not the longest possible);
* how the house behaves meanwhile: a house-load multiplier per session (heating or cooking
  evenings run hot for hours) and a step-to-step spread around the house-load forecast;

and solves a stochastic dynamic program (``reserve_dp``) over the horizon on the forecasts of
the house load, PV and the tariff, with the demand charge on any import above the month's
cap in the tariff's demand window (all day without one). The answer is a pair of energy
thresholds per step and session state (no car yet, the
``k``-th step of a session at a house level, the day's session done): the battery covers
load only above ``floor_kwh`` and charges from the grid up to ``charge_to_kwh``; it always
stores PV surplus and defends the cap in the window. ``der_core.control.ReservePolicy`` carries them and
``der_core.control.Controller`` applies them at every reading: in the gateway, in the
backtest and in the plan's preview (:func:`expected_dispatch`).

The cap itself is the peak guard's (guard.py), fitted on the last four weeks of readings.

A home without a car gets the same program with its own bursts in the car's place
(:meth:`SessionModel.from_bursts`): an oven, a heater or a wash lifts the house load by
kilowatts for half an hour or more, at hours that vary from day to day, which a step-to-step
spread drawn independently cannot represent. The program learns when they start, how long
they last and how far they lift the load, and keeps back for them in expectation as it does
for a car. No threshold goes below the guard's standing reserve (``standing_kwh``,
:attr:`guard.GuardRule.standing_reserve_kwh`), the reserve the guard's replay of the
household's own weeks found cheapest, kept at every hour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cloud.optimization import forecasters as fc
from cloud.optimization import sessions
from cloud.optimization.decision import in_demand_window
from cloud.optimization.model import BatterySpec, HorizonInputs
from cloud.optimization.plan import (
    DispatchPlan,
    build_plan,
    stored_energy_value_per_kwh,
)
from cloud.optimization.pv_forecast import MeasuredPV, pv_forecast
from cloud.optimization.reference import NO_DERATING_CELSIUS, ideal_battery
from cloud.optimization.reserve_dp import OVERSHOOT_KW, backward, evaluate, limits
from cloud.optimization.same_time import values_at
from der_core.config import SimulatorConfig
from der_core.control import Controller, ReservePolicy
from der_core.runs import true_runs
from der_core.tariff import site_tariff
from der_physics import battery as physics
from der_physics.tariff import demand_window, peak_steps

#: Days of readings the session statistics are drawn from.
MODEL_DAYS = 28
#: Smoothing of past arrival times (slots of the day) and lengths (log scale).
ARRIVAL_SIGMA_SLOTS = 3.0
LENGTH_LOG_SIGMA = 0.15
#: Charging states reach this share beyond the longest session seen (then one more absorbs).
LENGTH_TAIL = 1.35
#: House-load multipliers of a session: the mean ratio to the forecast in each band of the
#: past sessions' ratios, sorted (the top band is the evening that runs hot).
MULTIPLIER_BANDS = (0.0, 0.4, 0.8, 1.0)
#: Step-to-step spread of the house load around its forecast: band means of the residuals.
RESIDUAL_BANDS = (0.0, 0.5, 0.8, 0.95, 1.0)
#: A home without a car's burst: the house load at least this far above its usual (its mean at
#: the same local time over the week before) for at least this many readings in a row. On the
#: real home of ``bench_backtest_real.py``, thresholds from 1 to 3 kW captured 68.5-70.3 % of
#: perfect foresight's savings, 2 kW the most (decision 0013).
BURST_KW = 2.0
BURST_MIN_STEPS = 2
#: Fewer past sessions than this give one house level.
MIN_SESSIONS_FOR_LEVELS = 4
#: Energy grid of the program, kWh, and its most levels (a larger battery gets a coarser grid).
ENERGY_STEP_KWH = 0.1
MAX_ENERGY_LEVELS = 160
#: Horizon of one solve: the day ahead and the night after it.
HORIZON = pd.Timedelta(hours=36)


@dataclass(frozen=True)
class SessionModel:
    """What the readings say about the car's sessions and the house meanwhile."""

    arrival_hazard: np.ndarray  # (2, slots): weekday, weekend; chance a first session starts in the slot, given none yet
    continuation: np.ndarray  # (K,): chance a session that has charged k steps charges another
    one_session_a_day: bool
    multipliers: np.ndarray  # (M,) house-load multiplier of a session
    multiplier_probs: np.ndarray
    residuals_kw: np.ndarray  # (Q,) house load around its forecast, per step
    residual_probs: np.ndarray
    sessions_seen: int

    @property
    def charging_steps(self) -> int:
        return len(self.continuation)

    @classmethod
    def from_readings(cls, load_kw: pd.Series, issued_at: pd.Timestamp, charger_kw: float, timezone: str,
                      days: int = MODEL_DAYS) -> SessionModel:
        """From the readings of the ``days`` before ``issued_at`` (only those)."""
        past = load_kw.loc[issued_at - pd.Timedelta(days=days) : issued_at].dropna()
        step = past.index[1] - past.index[0]
        found = sessions.find_sessions(past, charger_kw)
        house = sessions.without_sessions(past, found, charger_kw)
        slots = int(pd.Timedelta(days=1) / step)
        complete = slice(None, -1) if found.ongoing else slice(None)
        lengths = np.asarray((found.ends - found.starts) / step, dtype=float)[complete] + 1.0
        levels, level_probs = _house_levels(house, found, step, complete, timezone)
        residuals, residual_probs = _banded(_house_residuals(house, timezone), RESIDUAL_BANDS)
        per_day = sessions.per_day(found, step, timezone) if len(found.starts) else np.ones(1, dtype=int)
        return cls(
            _arrival_hazard(found.starts, past.index, step, timezone, slots), _continuation(lengths),
            bool(per_day.max() == 1), levels, level_probs, residuals, residual_probs, len(lengths),
        )

    @classmethod
    def from_bursts(cls, load_kw: pd.Series, issued_at: pd.Timestamp, timezone: str,
                    days: int = MODEL_DAYS) -> tuple[SessionModel, float]:
        """A home without a car: its bursts (:data:`BURST_KW`) as the sessions, from the
        readings of the ``days`` before ``issued_at``, and the mean lift of a burst (kW) to
        take the charger's place in the program. A burst may come several times a day, so
        the chance in each slot is of any burst starting there (none at once), not of the
        day's first; the rest of the house's spread is drawn step by step as before."""
        past = load_kw.loc[issued_at - pd.Timedelta(days=days) : issued_at].dropna()
        step = past.index[1] - past.index[0]
        slots = int(pd.Timedelta(days=1) / step)
        lift = _house_residuals(past, timezone)
        first, last = _runs_above(lift, BURST_KW, BURST_MIN_STEPS)
        in_burst = np.zeros(len(lift), dtype=bool)
        for a, b in zip(first, last, strict=True):
            in_burst[a : b + 1] = True
        spread = np.where(in_burst, np.nan, lift)
        residuals, residual_probs = _banded(spread, RESIDUAL_BANDS)
        starts = past.index[first]
        rate = np.clip(_starts_per_day(starts, past.index, step, timezone, slots, first_of_day=False), 0.0, 0.9)
        power = float(np.mean(lift[in_burst])) if in_burst.any() else 0.0
        model = cls(rate, _continuation((last - first + 1).astype(float)), False, np.ones(1), np.ones(1),
                    residuals, residual_probs, len(first))
        return model, power


def _arrival_hazard(starts: pd.DatetimeIndex, instants: pd.DatetimeIndex, step: pd.Timedelta, timezone: str,
                    slots: int) -> np.ndarray:
    """Per day kind and slot: the chance the day's first session starts in the slot, given
    that none has started earlier that day."""
    pmf = _starts_per_day(starts, instants, step, timezone, slots, first_of_day=True)
    pmf *= np.minimum(1.0, 0.98 / np.maximum(pmf.sum(axis=1, keepdims=True), 1e-12))
    before = np.cumsum(pmf, axis=1) - pmf
    return np.clip(pmf / np.maximum(1.0 - before, 1e-9), 0.0, 1.0)


def _starts_per_day(starts: pd.DatetimeIndex, instants: pd.DatetimeIndex, step: pd.Timedelta, timezone: str,
                    slots: int, first_of_day: bool) -> np.ndarray:
    """Per day kind (weekday, weekend) and slot of the day, the starts per day of that kind over
    the whole days of ``instants``, each start smoothed over the neighbouring slots (the past
    times, not the only possible ones); only each day's first start with ``first_of_day``."""
    local = (starts - step).tz_convert(timezone)
    days = (instants - step).tz_convert(timezone).normalize().unique()[1:-1]  # whole days only
    counts = np.array([np.sum(days.day_of_week < 5), np.sum(days.day_of_week >= 5)], dtype=float)
    chosen = np.arange(len(local))
    if first_of_day:
        chosen = pd.Series(chosen, index=local.normalize()).groupby(level=0).first().to_numpy()
    slot = np.asarray(local.hour * 60 + local.minute) // int(step / pd.Timedelta(minutes=1))
    x = np.arange(slots)
    pmf = np.zeros((2, slots))
    for i in chosen:
        kernel = np.exp(-0.5 * ((x - slot[i]) / ARRIVAL_SIGMA_SLOTS) ** 2)
        pmf[int(local[i].day_of_week >= 5)] += kernel / kernel.sum()
    return pmf / np.maximum(counts, 1.0)[:, None]


def _runs_above(values: np.ndarray, threshold: float, min_length: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last position of each run of at least ``min_length`` values above ``threshold``."""
    first, stop = true_runs(np.nan_to_num(np.asarray(values, dtype=float), nan=-np.inf) > threshold)
    last = stop - 1
    keep = last - first + 1 >= min_length
    return first[keep], last[keep]


def _continuation(lengths: np.ndarray) -> np.ndarray:
    """Chance that a session which has charged ``k`` steps (k = 1..K) charges another; the
    last state holds every longer session at the tail's rate."""
    if not len(lengths):
        return np.array([0.5])
    k = np.arange(1, int(np.ceil(max(lengths.max(), 4.0) * LENGTH_TAIL)) + 3)
    pmf = np.zeros(len(k))
    for length in lengths:
        pmf += np.exp(-0.5 * ((np.log(k) - np.log(length)) / LENGTH_LOG_SIGMA) ** 2) / k
    survival = pmf[::-1].cumsum()[::-1] / pmf.sum()  # P(length >= k)
    cont = np.empty(len(k))
    cont[:-1] = survival[1:] / np.maximum(survival[:-1], 1e-12)
    cont[-1] = cont[-2] if len(k) > 1 else 0.5
    return np.clip(cont, 0.0, 0.99)


def _banded(values: np.ndarray, bands: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The mean of ``values`` in each quantile band, and each band's probability."""
    values = np.sort(values[np.isfinite(values)])
    cuts = np.round(np.asarray(bands) * len(values)).astype(int)
    keep = np.diff(cuts) > 0
    if not keep.any():
        return np.zeros(1), np.ones(1)
    means = np.array([values[a:b].mean() for a, b in zip(cuts[:-1][keep], cuts[1:][keep], strict=True)])
    probs = np.diff(np.asarray(bands))[keep]
    return means, probs / probs.sum()


def _house_levels(house: pd.Series, found: sessions.Sessions, step: pd.Timedelta, complete: slice,
                  timezone: str) -> tuple[np.ndarray, np.ndarray]:
    """House-load multipliers of a session: each past session's house load over the naive
    forecast issued as it began, in bands."""
    ratios = []
    for start, end in zip(found.starts[complete], found.ends[complete], strict=True):
        instants = pd.date_range(start, end, freq=step)
        expected = fc.naive_load_kw(house, start - step, instants, timezone, fc.HOUSE_ANOMALY_READINGS).sum()
        if expected > 0:
            ratios.append(float(house.reindex(instants).sum()) / expected)
    if len(ratios) < MIN_SESSIONS_FOR_LEVELS:
        return np.ones(1), np.ones(1)
    return _banded(np.array(ratios), MULTIPLIER_BANDS)


def _house_residuals(house: pd.Series, timezone: str) -> np.ndarray:
    """The house load less its mean at the same local time over the week before (the naive
    forecast's usual), wherever that week is complete."""
    week = values_at(house, house.index, np.arange(1, fc.HISTORY_DAYS + 1)[:, None], timezone)
    return house.to_numpy(dtype=float) - week.mean(axis=0)


def energy_levels(spec: BatterySpec) -> np.ndarray:
    """The program's grid of stored energy, from the minimum to the maximum SOC."""
    usable = spec.max_kwh - spec.min_kwh
    count = int(min(max(round(usable / ENERGY_STEP_KWH), 2), MAX_ENERGY_LEVELS))
    return spec.min_kwh + np.arange(count + 1) * usable / count


def program(model: SessionModel, forecast: pd.DataFrame, house_kw: np.ndarray, spec: BatterySpec,
            config: SimulatorConfig, cap_kw: float, step: pd.Timedelta, session_kw: float | None = None) -> tuple:
    """The program's arguments (``reserve_dp.backward``) for the steps of ``forecast``
    (forecasters.COLUMNS; its LOAD column is not used: the house's own load is ``house_kw``)
    under import cap ``cap_kw``, charged and defended only on the steps of the tariff's demand
    window (``reserve_dp``); a session adds ``session_kw`` (default: the car's charger)."""
    instants = forecast.index
    tariff = site_tariff(config)
    window = demand_window(tariff, instants, config.timezone, config.country)  # instants, as decision.horizon_inputs reads it
    dt = step / pd.Timedelta(hours=1)
    local = (instants - step).tz_convert(config.timezone)
    slots = model.arrival_hazard.shape[1]
    slot = np.asarray(local.hour * 60 + local.minute) * slots // 1440
    hazard = model.arrival_hazard[np.asarray(local.day_of_week >= 5).astype(int), slot]
    price = forecast[fc.IMPORT_PRICE].to_numpy()
    return (
        np.asarray(house_kw, dtype=float), np.maximum(forecast[fc.PV].to_numpy(), 0.0), price,
        forecast[fc.EXPORT_PRICE].to_numpy(), hazard, np.asarray(slot == 0), model.continuation,
        config.home_load.ev_charger_kw if session_kw is None else session_kw, model.one_session_a_day,
        energy_levels(spec), spec.charge_efficiency,
        spec.discharge_efficiency, spec.max_charge_kw, spec.max_discharge_kw, dt, spec.wear_cost_per_kwh, cap_kw,
        tariff.demand_charge_per_kw, OVERSHOOT_KW,
        stored_energy_value_per_kwh(price, spec.discharge_efficiency, spec.max_discharge_kw), model.multipliers,
        model.multiplier_probs, model.residuals_kw, model.residual_probs,
        peak_steps(window, len(instants)),
    )


@dataclass(frozen=True)
class Fitted:
    """A solved program: the policy and what it was solved on, to value any thresholds by."""

    policy: ReservePolicy
    program: tuple  # reserve_dp.backward's arguments

    @property
    def energies_kwh(self) -> np.ndarray:
        return self.program[9]

    def expected_cost(self, floor_kwh: np.ndarray, charge_to_kwh: np.ndarray, row: int, energy_kwh: float) -> float:
        """The expected valued cost, over car arrivals, session lengths and house loads, of the
        battery following ``floor_kwh``/``charge_to_kwh`` from step ``row`` to the program's end,
        starting with no car charging, nothing paid above the cap and ``energy_kwh`` stored
        (between the program's energy levels: interpolated). Energy left at the end is valued as
        every plan values it (plan.stored_energy_value_per_kwh), counted from the minimum."""
        values, _ = evaluate(*self.program, floor_kwh=floor_kwh, charge_to_kwh=charge_to_kwh)
        return float(np.interp(energy_kwh, self.energies_kwh, values[row, 0, 0]))

    def expected_costs(self, row: int, energy_kwh: float, min_kwh: float) -> tuple[float, float]:
        """:meth:`expected_cost` of the policy and of the battery's own rule (floor and
        charge-to at the minimum: self-consumption, the cap defended as the policy defends it)."""
        rule = np.full_like(self.policy.floor_kwh, min_kwh)
        return (self.expected_cost(self.policy.floor_kwh, self.policy.charge_to_kwh, row, energy_kwh),
                self.expected_cost(rule, rule, row, energy_kwh))


def solve(model: SessionModel, forecast: pd.DataFrame, house_kw: np.ndarray, spec: BatterySpec,
          config: SimulatorConfig, cap_kw: float, step: pd.Timedelta, standing_kwh: float | None = None,
          session_kw: float | None = None) -> Fitted:
    """The thresholds for the steps of ``forecast`` (:func:`program` says what it holds), none
    below ``standing_kwh`` above the minimum when given (a home without a car, see the module
    docstring). With ``session_kw`` the sessions are the household's bursts, and the policy
    tells them from the house load as :meth:`SessionModel.from_bursts` found them
    (``ReservePolicy.burst_kw``)."""
    args = program(model, forecast, house_kw, spec, config, cap_kw, step, session_kw)
    price, e = args[2], args[9]
    _, after = backward(*args)
    floor, charge_to = limits(after, price, e, spec.charge_efficiency, spec.discharge_efficiency, spec.wear_cost_per_kwh)
    if standing_kwh is not None:
        held = min(spec.min_kwh + standing_kwh, spec.max_kwh)
        floor, charge_to = np.maximum(floor, held), np.maximum(charge_to, held)
    policy = ReservePolicy(
        start=forecast.index[0] - step, step_s=int(step.total_seconds()), floor_kwh=floor, charge_to_kwh=charge_to,
        charging_steps=model.charging_steps, house_levels=tuple(float(m) for m in model.multipliers),
        house_kw=np.asarray(house_kw, dtype=float), one_session_a_day=model.one_session_a_day,
        burst_kw=None if session_kw is None else BURST_KW,
    )
    return Fitted(policy, args)


def solve_policy(model: SessionModel, forecast: pd.DataFrame, house_kw: np.ndarray, spec: BatterySpec,
                 config: SimulatorConfig, cap_kw: float, step: pd.Timedelta) -> ReservePolicy:
    return solve(model, forecast, house_kw, spec, config, cap_kw, step).policy


def fit(config: SimulatorConfig, load_history_kw: pd.Series, issued_at: pd.Timestamp, spec: BatterySpec,
        cap_kw: float, step: pd.Timedelta, horizon: pd.Timedelta = HORIZON, measured: MeasuredPV | None = None,
        forecaster: fc.Forecaster | None = None, standing_kwh: float | None = None) -> Fitted:
    """The program for the ``horizon`` after ``issued_at``, learnt from the readings before it
    and planned on the house-load forecast of the site's ``forecaster``
    (:func:`forecasters.house_load_kw`; None: naive), the site's PV forecast
    (:func:`pv_forecast.pv_forecast`; ``measured`` for a declared site) and the tariff's prices
    as the forecaster knows them (:func:`forecasters.known_prices`), solved, with no threshold
    below ``standing_kwh`` above the minimum when given (:func:`solve`)."""
    charger = config.home_load.ev_charger_kw
    session_kw = None
    if charger > 0:
        model = SessionModel.from_readings(load_history_kw, issued_at, charger, config.timezone)
    else:
        model, session_kw = SessionModel.from_bursts(load_history_kw, issued_at, config.timezone)
    instants = pd.date_range(issued_at + step, issued_at + horizon, freq=step)
    _, _, house = sessions.house_history(load_history_kw, issued_at, charger)
    house_kw = fc.house_load_kw(forecaster, house, issued_at, instants, config.timezone)
    pv = pv_forecast(config, issued_at, instants, measured)
    forecast = fc.known_prices(forecaster, config, issued_at, instants, pv.clear_sky_ghi_w_m2).assign(
        **{fc.PV: pv.generation_kw})
    return solve(model, forecast, house_kw, spec, config, cap_kw, step, standing_kwh, session_kw)


def fit_policy(config: SimulatorConfig, load_history_kw: pd.Series, issued_at: pd.Timestamp, spec: BatterySpec,
               cap_kw: float, step: pd.Timedelta, horizon: pd.Timedelta = HORIZON, measured: MeasuredPV | None = None,
               forecaster: fc.Forecaster | None = None, standing_kwh: float | None = None) -> ReservePolicy:
    """The policy of :func:`fit`."""
    return fit(config, load_history_kw, issued_at, spec, cap_kw, step, horizon, measured, forecaster,
               standing_kwh).policy


def expected_dispatch(policy: ReservePolicy, inputs: HorizonInputs, battery: BatterySpec, step_starts: pd.DatetimeIndex,
                      cap_kw: float, timezone: str) -> DispatchPlan:
    """What the battery does under ``policy`` on the plan's forecast (``inputs``, one step per
    ``step_starts``) on a day no car arrives, stepped through the gateway's own control
    (``der_core.control.Controller``) with the import cap ``cap_kw`` defended as the battery
    defends it, in the tariff's demand window (``decision.in_demand_window``): the plan a guarded site shows and stores, costed like any other. The battery
    follows the policy on the load it measures, so this is its expectation, not its command.

    The cap stays ``cap_kw`` (the month's peak so far is in it already): the forecast's own
    imports above it are what the plan shows, not a peak already paid for. The battery is the
    simulator's on the LP's physics (reference.ideal_battery), as in the self-consumption
    reference: no fade, no resistive heating, no temperature derating."""
    dt = inputs.step_hours
    params, state = ideal_battery([battery])
    caps, room = in_demand_window(np.full(len(step_starts), float(cap_kw)), inputs), np.array([NO_DERATING_CELSIUS])
    controller = Controller(battery, timezone)
    power = np.zeros(len(step_starts))
    for i, (start, net) in enumerate(zip(step_starts, inputs.net_load_kw, strict=True)):
        request = controller.request_kw(policy, start, float(net), 0.0, float(state.energy_kwh[0]), dt)
        own_rule = np.array([-float(net)])  # where the policy does not reach: the battery's own rule
        capped = physics.request_setpoint(np.array([request]), own_rule, caps[i : i + 1], np.array([float(net)]))
        delivered, state = physics.step(params, state, capped, dt, room)
        power[i] = delivered[0]
    return build_plan(inputs, battery, np.maximum(power, 0.0), np.maximum(-power, 0.0), status="reserve policy, no car")


#: The car is "expected" from the first step at which the chance it has arrived since the
#: plan's start reaches this; a hold smaller than HOLD_SHOWN_KWH is not worth a line.
ARRIVAL_LIKELY = 0.5
#: What a policy hedges (:func:`hedged`).
CAR_ARRIVALS, BURSTS = "car arrivals", "the household's bursts"
HOLD_SHOWN_KWH = 0.05


def hedged(policy: ReservePolicy) -> str:
    """What a policy keeps energy back for, as a plan's summary names it: a car's arrivals, or
    in a home without a car the household's bursts (``ReservePolicy.burst_kw``)."""
    return CAR_ARRIVALS if policy.burst_kw is None else BURSTS


def held_for_car(fitted: Fitted, step_starts: pd.DatetimeIndex, min_kwh: float) -> tuple[float, pd.Timestamp] | None:
    """What the policy keeps for the car in a plan with no car yet: the energy its floor holds
    above the minimum in the last step before the car is expected, and the start of the step
    it is expected in: the first at which the chance that it has arrived since the plan's
    start (the program's arrival hazard) reaches :data:`ARRIVAL_LIKELY`. That step's floor,
    not an earlier one, because earlier floors also hold energy for dearer hours to come
    (a full battery kept through a cheap night is not kept for the car). None when the car is
    not expected within the plan or the hold is below :data:`HOLD_SHOWN_KWH`."""
    policy, hazard = fitted.policy, fitted.program[4]
    waiting = 1.0
    for k, ts in enumerate(step_starts):
        row = policy.row(ts)
        if row is None:
            return None
        waiting *= 1.0 - float(hazard[row])
        if 1.0 - waiting >= ARRIVAL_LIKELY:
            held = float(policy.floor_kwh[max(row - 1, 0), 0]) - min_kwh
            return (held, ts) if held >= HOLD_SHOWN_KWH else None
    return None
