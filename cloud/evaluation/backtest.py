"""Backtest: what the optimizer is worth on a site, strategy against strategy.

Every strategy runs the *site* (``generator.simulate``), so the battery's real physics
(rate limits, efficiency, fade, temperature derating) decides what happens, and every bill
comes from one accounting (:func:`bill`) over the actual load, PV and prices:

* ``no_battery``: the battery idle;
* ``self_consumption`` and ``tou_arbitrage``: the simulator's own rule-based modes;
* ``mpc``: the live decision (decision.py) on the forecasts available at each decision,
  chosen by the same rule as the live planner's (:func:`decision.choose_strategy`). Under a
  reserve policy the battery follows it step by step as the gateway does (:func:`reserved`):
  solved at each local midnight over the next 36 hours on the naive house-load forecast, the
  PV forecast and the tariff (in a home without a car: the guard's standing reserve), under
  the cap of the peak guard (guard.py, fitted at each month's first step and again once the
  month's peak passes it, when the policy is solved again too), applied through
  ``der_core.control.Controller``. Otherwise every
  ``replan_minutes`` the LP plans the next ``horizon_hours`` and the battery carries out the
  first steps of that plan in ``setpoint`` mode until the next re-plan, as the execution
  turns it into power commands and an import cap (:meth:`decision.Decision.commands`);
* ``perfect_foresight``: the same LP over each whole billing month with the actual values,
  free to end the month at any state of charge, the upper bound of what any plan could have
  saved.

Every bill is compared less the value of the energy the battery gained over each month
(:func:`billed_by_month`), as a plan's is: emptying the battery is never a saving.

The demand charge is billed per calendar month (site time) on that month's peak import (in
the tariff's demand window, where it has one); re-plans within a month know the peak already
reached, so they never pay for it twice, and every cap binds in the window only.
This module only evaluates: what the site is told comes from decision.py, as live.
A measured site runs the same strategies on its recorded load and PV (recorded.py): only
where the actual values and the battery's exogenous inputs come from differs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cloud.optimization import forecasters as fc
from cloud.optimization import guard, reserve
from cloud.optimization.decision import (
    DEFAULT_WEAR_COST_PER_KWH,
    Execution,
    Stepped,
    Strategy,
    battery_spec,
    cap_floor_kw,
    carries_policy,
    choose_strategy,
    effective_execution,
    guard_outdated,
    horizon_inputs,
    plan_at,
)
from cloud.optimization.lp import new_solver, solve_dispatch
from cloud.optimization.model import BatterySpec, DispatchError
from cloud.optimization.plan import CostBreakdown, build_plan
from cloud.optimization.pv_forecast import MeasuredPV
from cloud.optimization.sessions import SESSION_HISTORY_DAYS
from der_core.cli_support import local_instant
from der_core.config import BatteryMode, SimulatorConfig
from der_core.control import ControlBattery, Controller
from der_core.errors import UsageError
from der_physics import base, generator
from der_physics import battery as physics
from der_physics.tariff import billed_peak_steps

NO_BATTERY, SELF_CONSUMPTION, TOU, MPC, PERFECT = (
    "no_battery", "self_consumption", "tou_arbitrage", "mpc", "perfect_foresight",
)
STRATEGIES: tuple[str, ...] = (NO_BATTERY, SELF_CONSUMPTION, TOU, MPC, PERFECT)


DEFAULT_REPLAN_MINUTES = 60


def whole_steps_replan(step_minutes: int, wanted_minutes: int = DEFAULT_REPLAN_MINUTES) -> int:
    """The re-plan interval in whole steps, rounded up: a plan is followed for at least one
    step, so a step longer than the interval (a 2-hour step, an hourly meter's) re-plans at
    each step."""
    return -(-wanted_minutes // step_minutes) * step_minutes


@dataclass(frozen=True)
class BacktestSettings(Stepped):
    days: int = 30
    start: pd.Timestamp | None = None  # local midnight of the first day; default: `days` before today
    step_minutes: int = 15
    horizon_hours: float = 24.0
    replan_minutes: int = DEFAULT_REPLAN_MINUTES
    forecaster: str = fc.AUTO  # resolved by forecasters.choose when the backtest runs
    execution: Execution = Execution.GUARDED
    wear_cost_per_kwh: float = DEFAULT_WEAR_COST_PER_KWH
    scenarios: bool = True  # capped execution: plan over the forecaster's load scenarios when it offers them
    # Guarded execution: also re-solve the reserve policy this often (minutes, from the first
    # step), not only at local midnight. None, the default, is what the live planner does.
    policy_every_minutes: int | None = None

    def __post_init__(self) -> None:
        if self.days < 1:
            raise UsageError(f"--days {self.days}: expected a positive whole number of days")
        if self.step_minutes < 1 or 1440 % self.step_minutes:
            raise UsageError(f"--step-minutes {self.step_minutes}: expected a whole number of minutes dividing a day")
        if self.replan_minutes % self.step_minutes or self.replan_minutes < self.step_minutes:
            raise UsageError(f"re-plan interval {self.replan_minutes} min: expected a multiple of the {self.step_minutes}-minute step")
        object.__setattr__(self, "execution", Execution.parse(self.execution))
        every = self.policy_every_minutes
        if every is not None and (every < self.step_minutes or every % self.step_minutes):
            raise UsageError(f"policy interval {every} min: expected a multiple of the {self.step_minutes}-minute step")
        if not self.replan_minutes / 60 <= self.horizon_hours <= 24 * 6:
            raise UsageError(f"--horizon-hours {self.horizon_hours:g}: expected between one re-plan interval and 144 hours")


@dataclass(frozen=True)
class StrategyRun:
    """One strategy's realised trajectory: per step, battery power (positive charges),
    SOC at the step's end and grid flow (positive imports)."""

    name: str
    battery_kw: np.ndarray
    soc_percent: np.ndarray
    grid_kw: np.ndarray
    bill: CostBreakdown
    throughput_kwh: float
    failed_plans: int = 0
    guarded: bool = False  # ran under the reserve policy (the MPC on a site with a car, see mpc)
    monthly_bills: dict[str, CostBreakdown] = field(default_factory=dict)  # by billing month, "YYYY-MM"
    #: By billing month, the value of the energy the battery gained over it (negative where it
    #: spent what it began with), as a plan values what it leaves (:func:`billed_by_month`).
    monthly_stored: dict[str, float] = field(default_factory=dict)

    @property
    def stored(self) -> float:
        return float(sum(self.monthly_stored.values()))

    @property
    def valued_total(self) -> float:
        """The bill less the value of the energy gained: what strategies are compared by."""
        return self.bill.total - self.stored

    def valued_month(self, label: str) -> float:
        return self.monthly_bills[label].total - self.monthly_stored.get(label, 0.0)


@dataclass(frozen=True)
class BacktestResult:
    config: SimulatorConfig
    settings: BacktestSettings
    actuals: pd.DataFrame  # one row per reading instant of the backtest, forecasters.COLUMNS
    runs: dict[str, StrategyRun] = field(default_factory=dict)
    replans: int = 0
    filled_steps: int = 0  # recorded data: steps without a reading, filled (recorded.py)
    forecaster_reason: str = ""  # why settings.forecaster is the one (forecasters.choose)
    #: recorded data: the longest run of filled steps, as (its first reading instant, steps):
    #: a day of PV drawn as a straight line weighs on its month's bills as a step here or there does not
    filled_longest: tuple[pd.Timestamp, int] | None = None


def billing_months(instants: pd.DatetimeIndex, step: pd.Timedelta, timezone: str) -> np.ndarray:
    """Per reading instant, its billing month (by the start of the interval it describes)."""
    local = (instants - step).tz_convert(timezone)
    return (local.year * 12 + local.month - 1).to_numpy()


def month_label(month: int) -> str:
    """A billing month of :func:`billing_months` as "YYYY-MM"."""
    return f"{month // 12:04d}-{month % 12 + 1:02d}"


def bill(actuals: pd.DataFrame, battery_kw: np.ndarray, config: SimulatorConfig, settings: BacktestSettings) -> CostBreakdown:
    """What the site pays with this battery power: energy, each month's demand charge, wear,
    carbon and the standing charge (the sum of :func:`bills_by_month`)."""
    return _summed(bills_by_month(actuals, battery_kw, config, settings))


def bills_by_month(actuals: pd.DataFrame, battery_kw: np.ndarray, config: SimulatorConfig,
                   settings: BacktestSettings) -> dict[str, CostBreakdown]:
    """The bill of each billing month ("YYYY-MM") with this battery power: the demand charge is
    paid on each month's own peak, so a month is billed on its own readings."""
    return {label: costs for label, (costs, _) in billed_by_month(actuals, battery_kw, config, settings).items()}


def billed_by_month(actuals: pd.DataFrame, battery_kw: np.ndarray, config: SimulatorConfig,
                    settings: BacktestSettings) -> dict[str, tuple[CostBreakdown, float]]:
    """Per billing month, its bill and the energy this battery power stores over it, net of
    what it draws, valued as a plan values the energy left at its horizon's end (the month's
    cheapest import cost times the discharge efficiency, ``plan.stored_energy_value_per_kwh``).
    A strategy that ends a month with less than it began spent energy bought in the month
    before, and one that ends the run emptier than the others drew on what they kept: its
    bill alone would count that as a saving."""
    months = billing_months(actuals.index, settings.step, config.timezone)
    spec = battery_spec(config, None, settings.wear_cost_per_kwh)
    out = {}
    for month in np.unique(months):
        rows = months == month
        inputs = horizon_inputs(actuals[rows], config, settings.step_hours)
        power = battery_kw[rows]
        plan = build_plan(inputs, spec, np.maximum(power, 0.0), np.maximum(-power, 0.0), status="billed")
        out[month_label(month)] = (CostBreakdown(*(float(getattr(plan.costs, part)) for part in _COST_PARTS)),
                                   float(plan.stored_value))
    return out


_COST_PARTS = ("energy", "demand", "wear", "carbon", "standing")


def _summed(monthly: dict[str, CostBreakdown]) -> CostBreakdown:
    return CostBreakdown(*(float(sum(getattr(m, part) for m in monthly.values())) for part in _COST_PARTS))


def _run(name: str, actuals: pd.DataFrame, trace: physics.BatteryTrace, config: SimulatorConfig,
         settings: BacktestSettings, failed: int = 0, guarded: bool = False) -> StrategyRun:
    power = trace.power_kw[0]
    grid = actuals[fc.LOAD].to_numpy() + power - actuals[fc.PV].to_numpy()
    billed = billed_by_month(actuals, power, config, settings)
    monthly = {label: costs for label, (costs, _) in billed.items()}
    return StrategyRun(name, power, trace.soc_percent[0], grid, _summed(monthly),
                       float(np.abs(power).sum() * settings.step_hours), failed, guarded, monthly,
                       {label: stored for label, (_, stored) in billed.items()})


def _with_mode(config: SimulatorConfig, mode: BatteryMode) -> SimulatorConfig:
    return config.model_copy(update={"battery": config.battery.model_copy(update={"mode": mode})})


def _at(exo: generator.Exogenous | None, steps: slice) -> generator.Exogenous | None:
    """The exogenous inputs of a run of the backtest's steps: the recorded ones of a measured
    site (:func:`generator.recorded_exogenous`), None for a simulated site, whose simulator
    computes its own."""
    return None if exo is None else exo.steps(steps)


def rule_based(config: SimulatorConfig, actuals: pd.DataFrame, settings: BacktestSettings, mode: BatteryMode,
               exo: generator.Exogenous | None = None) -> StrategyRun:
    sim, _ = generator.simulate([_with_mode(config, mode)], actuals.index, exo=exo)
    return _run(mode.value, actuals, sim.battery, config, settings)


def no_battery(config: SimulatorConfig, actuals: pd.DataFrame, settings: BacktestSettings,
               exo: generator.Exogenous | None = None) -> StrategyRun:
    zeros = np.zeros((1, len(actuals)))
    sim, _ = generator.simulate([_with_mode(config, BatteryMode.SETPOINT)], actuals.index, setpoint_kw=zeros, exo=exo)
    return _run(NO_BATTERY, actuals, sim.battery, config, settings)


def _now(config: SimulatorConfig, state: physics.BatteryState, settings: BacktestSettings) -> BatterySpec:
    """The plans' view of the battery as it is at ``state``: the energy it holds, in the
    capacity its cycles and age have left it (a run of years fades it by several percent)."""
    return battery_spec(config, float(state.energy_kwh[0]), settings.wear_cost_per_kwh,
                        float(physics.usable_kwh([config.battery], state)[0]))


def perfect_foresight(config: SimulatorConfig, actuals: pd.DataFrame, settings: BacktestSettings,
                      exo: generator.Exogenous | None = None) -> StrategyRun:
    """One LP per billing month on the actual values, followed by the real battery."""
    site = _with_mode(config, BatteryMode.SETPOINT)
    months = billing_months(actuals.index, settings.step, config.timezone)
    state, sims, highs = generator.initial_state([site]), [], new_solver()
    for month in np.unique(months):
        where = np.flatnonzero(months == month)
        rows = actuals.iloc[where[0] : where[-1] + 1]
        spec = _now(config, state, settings)
        # Its end is free, the energy it leaves valued as every strategy's is (billed_by_month):
        # bound to end no emptier than it began, it was beaten by a strategy that spent what
        # it kept in a run's last month.
        spec = dataclasses.replace(spec, terminal_soc_percent=spec.min_soc_percent)
        plan = solve_dispatch(horizon_inputs(rows, config, settings.step_hours), spec, highs=highs)
        sim, state = generator.simulate([site], rows.index, state, plan.battery_power_kw[None, :],
                                        exo=_at(exo, slice(where[0], where[-1] + 1)))
        sims.append(sim.battery)
    return _run(PERFECT, actuals, _concat(sims), config, settings)


def _concat(traces: list[physics.BatteryTrace]) -> physics.BatteryTrace:
    return physics.BatteryTrace(*(np.concatenate([getattr(t, f.name) for t in traces], axis=1)
                                  for f in dataclasses.fields(physics.BatteryTrace)))


def mpc(config: SimulatorConfig, actuals: pd.DataFrame, settings: BacktestSettings,
        forecaster: fc.Forecaster, progress: Callable = lambda it, **_: it,
        history: pd.DataFrame | None = None, exo: generator.Exogenous | None = None,
        measured: MeasuredPV | None = None) -> tuple[StrategyRun, int]:
    """Re-plan every ``replan_minutes`` on the forecasts of that moment; follow the plan between.

    ``history`` (load and PV measured so far, :data:`forecasters.COLUMNS`) sets the import
    cap's floor (:func:`decision.cap_floor_kw`) and, on a site with a battery, lets the strategy
    be the reserve policy and its cap (:func:`decision.choose_strategy`, :func:`reserved`); only
    rows up to each decision are read. ``exo``: the recorded inputs the battery runs on
    (:func:`_at`); ``measured``: what a declared site's PV forecast is made from. Returns the
    run and the number of plans (or policy solves) made.
    """
    carries = history is not None and carries_policy(config)
    strategy = choose_strategy(settings.execution, forecaster, carries, settings.scenarios)
    if strategy is Strategy.RESERVE_POLICY:
        return reserved(config, actuals, settings, history, progress, exo, measured, forecaster)
    site = _with_mode(config, BatteryMode.SETPOINT)
    every = settings.replan_minutes // settings.step_minutes
    horizon = round(settings.horizon_hours / settings.step_hours)
    months = billing_months(actuals.index, settings.step, config.timezone)
    in_window = billed_peak_steps(config, actuals.index)
    load, pv = actuals[fc.LOAD].to_numpy(), actuals[fc.PV].to_numpy()
    state, sims, highs, failed, grid = generator.initial_state([site]), [], new_solver(), 0, np.zeros(len(actuals))
    starts = range(0, len(actuals), every)
    net_history = None if history is None else history[fc.LOAD] - history[fc.PV]
    execution = effective_execution(settings.execution, False)
    for k in progress(starts, total=len(starts), desc="MPC", unit="plan"):
        issued_at = actuals.index[k] - settings.step
        instants = pd.date_range(issued_at + settings.step, periods=horizon, freq=settings.step)
        same_month = (months[:k] == months[k]) & in_window[:k]  # the imports that set the month's billed peak
        peak = float(max(grid[:k][same_month].max(initial=0.0), 0.0))
        spec = _now(config, state, settings)
        try:
            decision = plan_at(forecaster, issued_at, instants, config, settings, spec, peak, highs, strategy)
            setpoints, caps = decision.commands(peak, cap_floor_kw(net_history, issued_at, spec, config), execution)
        except DispatchError:
            failed += 1  # the battery falls back to its own self-consumption rule (NaN = no command)
            setpoints = caps = np.full(every, math.nan)
        rows = actuals.index[k : k + every]
        sim, state = generator.simulate([site], rows, state, setpoints[None, : len(rows)], import_cap_kw=caps[None, : len(rows)],
                                        exo=_at(exo, slice(k, k + len(rows))))
        grid[k : k + len(rows)] = load[k : k + len(rows)] + sim.battery.power_kw[0] - pv[k : k + len(rows)]
        sims.append(sim.battery)
    return _run(MPC, actuals, _concat(sims), config, settings, failed), len(starts)


def check_learnable(config: SimulatorConfig, history: pd.DataFrame, actuals: pd.DataFrame, step: pd.Timedelta) -> None:
    """Refuse days on which a decision of the reserve policy has fewer than two readings in the
    days it learns from: its peak guard and its policy are fitted on the load and PV of the
    :data:`reserve.MODEL_DAYS` before each decision, and inside a longer gap in a recorded
    site's readings there is nothing to fit them on (the gap's straight line, which the battery
    is replayed on, is no month of a home's readings)."""
    learn = pd.Timedelta(days=max(reserve.MODEL_DAYS, guard.FIT_DAYS))
    seen = history[[fc.LOAD, fc.PV]].dropna().index
    first, last = actuals.index[0] - step, actuals.index[-1] - step  # the decisions' instants
    # A decision between readings i and i + 1 sees one reading at most when i - 1 is out of reach.
    for i in np.flatnonzero((seen[2:] - seen[:-2]) > learn) + 1:
        if seen[i - 1] + learn < last and seen[i + 1] > first:
            before, after = max((seen[i - 1], seen[i]), (seen[i], seen[i + 1]), key=lambda gap: gap[1] - gap[0])
            tz = config.timezone
            raise UsageError(
                f"{config.device_id}: no load and PV readings from {before.isoformat()} to {after.isoformat()} "
                f"({(after - before) / pd.Timedelta(days=1):.1f} days), and the MPC learns each decision from the "
                f"{learn.days} days before it; expected --start "
                f"{(seen[i + 1].tz_convert(tz).normalize() + pd.DateOffset(days=1)).date()} or later, or --start and "
                f"--days whose last day is {(seen[i - 1] + learn).tz_convert(tz).date()} or earlier")


def reserved(config: SimulatorConfig, actuals: pd.DataFrame, settings: BacktestSettings, history: pd.DataFrame,
             progress: Callable = lambda it, **_: it, exo: generator.Exogenous | None = None,
             measured: MeasuredPV | None = None, forecaster: fc.Forecaster | None = None) -> tuple[StrategyRun, int]:
    """The site run under the reserve policy, step by step, as the gateway runs it.

    The peak guard's cap is fitted at the month's first step and again once the month's peak
    passes it (:func:`decision.guard_outdated`); the policy is solved at each local midnight,
    and with the new cap (and every ``policy_every_minutes`` when set), on the readings before
    that moment. Every step the gateway's control (``der_core.control.Controller``) asks
    for the battery's power on the step's own load, under the cap or the month's peak, with
    the session state of the charger's readings before it. ``exo``: a recorded site's inputs
    (:func:`_at`; the simulator's without them); ``measured``: its PV forecast's makings;
    ``forecaster``: the site's, whose house load and prices the program plans on.
    A recorded site's sessions are not separated from its load, so a car's charger must be
    the simulator's (recorded.py runs a recorded site with a car ``capped``). Returns the run
    and the number of policy solves.
    """
    check_learnable(config, history, actuals, settings.step)
    site = _with_mode(config, BatteryMode.SETPOINT)
    tz, step, dt = config.timezone, settings.step, settings.step_hours
    exo = generator.exogenous([site], base.TimeAxis.from_times(actuals.index)) if exo is None else exo
    net, ev = exo.load_kw[0] - exo.solar_kw[0], exo.ev_kw[0]
    house = exo.load_kw[0] - ev
    months = billing_months(actuals.index, step, tz)
    in_window = billed_peak_steps(config, actuals.index)
    days = np.asarray((actuals.index - step).tz_convert(tz).normalize().asi8)
    state, traces = generator.initial_state([site]), []
    controller = Controller(ControlBattery.from_config(site.battery), tz)
    rule = policy = None
    solves = 0
    every = None if settings.policy_every_minutes is None else settings.policy_every_minutes // settings.step_minutes
    for row in progress(range(len(actuals)), total=len(actuals), desc="MPC", unit="step"):
        interval_start = actuals.index[row] - step
        peak = controller.memory.month_peak_kw(interval_start, tz)
        refit = guard_outdated(rule, peak) or months[row] != months[row - 1]
        if refit or days[row] != days[row - 1] or (every is not None and row % every == 0):
            spec = _now(config, state, settings)
            if refit:
                past = history.loc[interval_start - guard.FIT_DAYS * fc.DAY : interval_start].iloc[1:].dropna()
                rule = guard.fit_guard(past[fc.LOAD], past[fc.PV], spec, config, peak)
            policy = reserve.fit_policy(config, history[fc.LOAD], interval_start, spec, max(rule.target_kw, peak), step,
                                        measured=measured, forecaster=forecaster, standing_kwh=rule.standing_reserve_kwh)
            solves += 1
        cap = controller.cap_kw(max(rule.target_kw, peak) if in_window[row] else math.nan, interval_start)
        request = controller.request_kw(policy, interval_start, float(net[row]), float(ev[row]), float(state.energy_kwh[0]), dt)
        sim, state = generator.simulate([site], actuals.index[row : row + 1], state, np.array([[request]]),
                                        import_cap_kw=np.array([[cap]]), exo=exo.steps(slice(row, row + 1)))
        controller.observe(policy, interval_start, float(ev[row]), float(net[row] + sim.battery.power_kw[0, 0]), float(house[row]),
                           bool(in_window[row]))
        traces.append(sim.battery)
    return _run(MPC, actuals, _concat(traces), config, settings, 0, True), solves


def backtest_window(config: SimulatorConfig, settings: BacktestSettings) -> pd.DatetimeIndex:
    """Reading instants of the backtest: ``days`` whole local days from ``start``."""
    start = settings.start
    if start is None:
        today = pd.Timestamp.now(tz=config.timezone).normalize()
        start = today - pd.Timedelta(days=settings.days)
    start = pd.Timestamp(start)
    start = local_instant(start, config.timezone, "--start")
    end = (start.tz_convert(config.timezone) + pd.DateOffset(days=settings.days)).tz_convert("UTC")
    return pd.date_range(start.tz_convert("UTC") + settings.step, end, freq=settings.step)


def run_backtest(config: SimulatorConfig, settings: BacktestSettings, progress: Callable = lambda it, **_: it) -> BacktestResult:
    """Every strategy of the module docstring over the same simulated days."""
    config = config.model_copy(update={"interval_seconds": settings.step_minutes * 60})
    instants = backtest_window(config, settings)
    # What the site has measured before: the naive forecast's week, the sessions' four weeks.
    history_start = instants[0] - pd.Timedelta(days=max(fc.HISTORY_DAYS, SESSION_HISTORY_DAYS) + 1)
    everything = fc.site_actuals(config, pd.date_range(history_start, instants[-1], freq=settings.step))
    actuals = everything.loc[instants[0] :]
    forecaster, settings = resolved_forecaster(settings, config, everything, instants)
    runs, replans = run_strategies(config, actuals, settings, forecaster, progress, everything)
    return BacktestResult(config, settings, actuals, runs, replans, forecaster_reason=forecaster.reason)


def resolved_forecaster(settings: BacktestSettings, config: SimulatorConfig, history: pd.DataFrame,
                        instants: pd.DatetimeIndex, **where) -> tuple[fc.Forecaster, BacktestSettings]:
    """The MPC's forecaster (forecasters.make_forecaster, from the first plan's issue instant;
    ``where``: the store, the models' folder, a declared site's PV) and the settings naming
    it, so the report says which forecaster ran, never "auto"."""
    forecaster = fc.make_forecaster(settings.forecaster, config, history, issued_from=instants[0] - settings.step,
                                    step=settings.step, horizon=pd.Timedelta(hours=settings.horizon_hours), **where)
    return forecaster, dataclasses.replace(settings, forecaster=forecaster.name)


def run_strategies(config: SimulatorConfig, actuals: pd.DataFrame, settings: BacktestSettings, forecaster: fc.Forecaster,
                   progress: Callable, history: pd.DataFrame, exo: generator.Exogenous | None = None,
                   measured: MeasuredPV | None = None) -> tuple[dict[str, StrategyRun], int]:
    """Every strategy over ``actuals``, on the simulated site or on recorded inputs (``exo``,
    see :func:`_at`, with ``measured`` for its PV forecast), in :data:`STRATEGIES` order; and
    the MPC's number of plans."""
    runs = {
        NO_BATTERY: no_battery(config, actuals, settings, exo),
        SELF_CONSUMPTION: rule_based(config, actuals, settings, BatteryMode.SELF_CONSUMPTION, exo),
        TOU: rule_based(config, actuals, settings, BatteryMode.TOU_ARBITRAGE, exo),
        PERFECT: perfect_foresight(config, actuals, settings, exo),
    }
    runs[MPC], replans = mpc(config, actuals, settings, forecaster, progress, history, exo, measured)
    return {name: runs[name] for name in STRATEGIES}, replans
