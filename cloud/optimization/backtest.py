"""Backtest: what the optimizer is worth on a simulated site, strategy against strategy.

Every strategy runs the *site* (``generator.simulate``), so the battery's real physics
(rate limits, efficiency, fade, temperature derating) decides what happens, and every bill
comes from one accounting (:func:`bill`) over the actual load, PV and prices:

* ``no_battery``: the battery idle;
* ``self_consumption`` and ``tou_arbitrage``: the simulator's own rule-based modes;
* ``mpc``: model predictive control on the forecasts available at each decision. On a site
  with a car, under the default ``guarded`` execution with a forecaster that cannot time the
  load (the naive one), the battery follows the reserve policy (reserve.py): solved at each
  local midnight over the next 36 hours on the naive house-load forecast, the PV forecast and
  the tariff, with the import cap of the peak guard (guard.py, fitted at each month's first
  step and again once the month's peak passes it, when the policy is solved again too), and
  applied at every step on the charger's readings before it (edge_gateway/control.py), as
  the gateway applies it. Otherwise every ``replan_minutes`` the LP plans the next
  ``horizon_hours`` and the battery carries out the first steps of that plan in ``setpoint``
  mode until the next re-plan, as :func:`commands_of` turns it into power commands, steps
  left to the battery's own rule and an import cap; without a car, or with ``capped``, a
  forecaster with load scenarios gets a scenario plan (stochastic.py), and while a car
  charges the battery discharges only what the cap demands (:func:`hold_for_session`). The
  live planner (planner.py) decides the same way;
* ``perfect_foresight``: the same LP over each whole billing month with the actual values,
  the upper bound of what any plan could have saved.

The demand charge is billed per calendar month (site time) on that month's peak import;
re-plans within a month know the peak already reached, so they never pay for it twice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from cloud.optimization import forecasters as fc
from cloud.optimization import guard, reserve
from cloud.optimization.lp import new_solver, solve_dispatch
from cloud.optimization.model import BatterySpec, DispatchError, HorizonInputs
from cloud.optimization.plan import CostBreakdown, DispatchPlan, build_plan
from cloud.optimization.sessions import SESSION_HISTORY_DAYS
from cloud.optimization.stochastic import ScenarioPlan, solve_scenarios
from edge_gateway import generator
from edge_gateway.config import BatteryMode, SimulatorConfig
from edge_gateway.control import SiteMemory, reserve_request_kw
from edge_gateway.errors import UsageError
from edge_gateway.simulators import base
from edge_gateway.simulators import battery as physics

NO_BATTERY, SELF_CONSUMPTION, TOU, MPC, PERFECT = (
    "no_battery", "self_consumption", "tou_arbitrage", "mpc", "perfect_foresight",
)
STRATEGIES: tuple[str, ...] = (NO_BATTERY, SELF_CONSUMPTION, TOU, MPC, PERFECT)
#: Wear priced per kWh through the battery: it keeps the LP from cycling for pennies and
#: breaks the ties that would otherwise allow simultaneous charge and discharge (lp.py).
DEFAULT_WEAR_COST_PER_KWH = 0.02
#: How the site's battery carries out a plan (:func:`commands_of`); the first is the default.
EXECUTIONS = ("guarded", "capped", "hybrid", "setpoints")
GRID_IDLE_KW = 1e-3
#: How far the month's peak may pass the guard's cap before the guard is fitted again.
REFIT_ABOVE_KW = 0.05


class Stepped:
    """The step of a settings dataclass with ``step_minutes``, as a duration and in hours."""

    step_minutes: int

    @property
    def step(self) -> pd.Timedelta:
        return pd.Timedelta(minutes=self.step_minutes)

    @property
    def step_hours(self) -> float:
        return self.step_minutes / 60.0


@dataclass(frozen=True)
class BacktestSettings(Stepped):
    days: int = 30
    start: pd.Timestamp | None = None  # local midnight of the first day; default: `days` before today
    step_minutes: int = 15
    horizon_hours: float = 24.0
    replan_minutes: int = 60
    forecaster: str = "naive"
    execution: str = EXECUTIONS[0]
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
        if self.execution not in EXECUTIONS:
            raise UsageError(f"execution {self.execution!r}: expected one of {', '.join(EXECUTIONS)}")
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


@dataclass(frozen=True)
class BacktestResult:
    config: SimulatorConfig
    settings: BacktestSettings
    actuals: pd.DataFrame  # one row per reading instant of the backtest, forecasters.COLUMNS
    runs: dict[str, StrategyRun] = field(default_factory=dict)
    replans: int = 0


def battery_spec(config: SimulatorConfig, energy_kwh: float | None, wear_cost_per_kwh: float) -> BatterySpec:
    """The LP's view of the site's battery, starting from the energy it holds now.

    Fade shrinks the simulator's SOC window a little below the nominal one the LP sees, so
    the start is clipped into the nominal window rather than refused.
    """
    spec = config.battery
    soc = spec.initial_soc if energy_kwh is None or spec.capacity_kwh == 0 else 100.0 * energy_kwh / spec.capacity_kwh
    return dataclasses.replace(
        BatterySpec.from_config(spec, wear_cost_per_kwh=wear_cost_per_kwh),
        initial_soc_percent=min(max(soc, spec.min_soc), spec.max_soc),
    )


def horizon_inputs(frame: pd.DataFrame, config: SimulatorConfig, step_hours: float, peak_so_far_kw: float = 0.0) -> HorizonInputs:
    """The LP's inputs from forecast (or actual) columns and the site's tariff."""
    return HorizonInputs(
        load_kw=np.maximum(frame[fc.LOAD].to_numpy(), 0.0),
        pv_kw=np.maximum(frame[fc.PV].to_numpy(), 0.0),
        import_price_per_kwh=frame[fc.IMPORT_PRICE].to_numpy(),
        export_price_per_kwh=frame[fc.EXPORT_PRICE].to_numpy(),
        carbon_intensity_g_per_kwh=frame[fc.CARBON].to_numpy(),
        step_hours=step_hours,
        demand_charge_per_kw=config.grid_price.demand_charge,
        peak_so_far_kw=peak_so_far_kw,
    )


def billing_months(instants: pd.DatetimeIndex, step: pd.Timedelta, timezone: str) -> np.ndarray:
    """Per reading instant, its billing month (by the start of the interval it describes)."""
    local = (instants - step).tz_convert(timezone)
    return (local.year * 12 + local.month - 1).to_numpy()


def bill(actuals: pd.DataFrame, battery_kw: np.ndarray, config: SimulatorConfig, settings: BacktestSettings) -> CostBreakdown:
    """What the site pays with this battery power: energy, each month's demand charge, wear."""
    months = billing_months(actuals.index, settings.step, config.timezone)
    spec = battery_spec(config, None, settings.wear_cost_per_kwh)
    totals = np.zeros(4)
    for month in np.unique(months):
        rows = months == month
        inputs = horizon_inputs(actuals[rows], config, settings.step_hours)
        power = battery_kw[rows]
        costs = build_plan(inputs, spec, np.maximum(power, 0.0), np.maximum(-power, 0.0), status="billed").costs
        totals += (costs.energy, costs.demand, costs.wear, costs.carbon)
    return CostBreakdown(*map(float, totals))


def _run(name: str, actuals: pd.DataFrame, trace: physics.BatteryTrace, config: SimulatorConfig,
         settings: BacktestSettings, failed: int = 0, guarded: bool = False) -> StrategyRun:
    power = trace.power_kw[0]
    grid = actuals[fc.LOAD].to_numpy() + power - actuals[fc.PV].to_numpy()
    return StrategyRun(name, power, trace.soc_percent[0], grid, bill(actuals, power, config, settings),
                       float(np.abs(power).sum() * settings.step_hours), failed, guarded)


def _with_mode(config: SimulatorConfig, mode: BatteryMode) -> SimulatorConfig:
    return config.model_copy(update={"battery": config.battery.model_copy(update={"mode": mode})})


def rule_based(config: SimulatorConfig, actuals: pd.DataFrame, settings: BacktestSettings, mode: BatteryMode) -> StrategyRun:
    sim, _ = generator.simulate([_with_mode(config, mode)], actuals.index)
    return _run(mode.value, actuals, sim.battery, config, settings)


def no_battery(config: SimulatorConfig, actuals: pd.DataFrame, settings: BacktestSettings) -> StrategyRun:
    zeros = np.zeros((1, len(actuals)))
    sim, _ = generator.simulate([_with_mode(config, BatteryMode.SETPOINT)], actuals.index, setpoint_kw=zeros)
    return _run(NO_BATTERY, actuals, sim.battery, config, settings)


def perfect_foresight(config: SimulatorConfig, actuals: pd.DataFrame, settings: BacktestSettings) -> StrategyRun:
    """One LP per billing month on the actual values, followed by the real battery."""
    site = _with_mode(config, BatteryMode.SETPOINT)
    months = billing_months(actuals.index, settings.step, config.timezone)
    state, sims, highs = generator.initial_state([site]), [], new_solver()
    for month in np.unique(months):
        rows = actuals[months == month]
        spec = battery_spec(config, float(state.energy_kwh[0]), settings.wear_cost_per_kwh)
        plan = solve_dispatch(horizon_inputs(rows, config, settings.step_hours), spec, highs=highs)
        sim, state = generator.simulate([site], rows.index, state, plan.battery_power_kw[None, :])
        sims.append(sim.battery)
    return _run(PERFECT, actuals, _concat(sims), config, settings)


def _concat(traces: list[physics.BatteryTrace]) -> physics.BatteryTrace:
    return physics.BatteryTrace(*(np.concatenate([getattr(t, f.name) for t in traces], axis=1)
                                  for f in dataclasses.fields(physics.BatteryTrace)))


def commands_of(plan: DispatchPlan | ScenarioPlan, peak_so_far_kw: float = 0.0, execution: str = "capped") -> tuple[np.ndarray, np.ndarray]:
    """The battery power commands (NaN = none) and grid import caps (NaN = none) of a plan.

    ``setpoints``: the plan's power at every step, no cap. (``guarded`` is ``capped`` plus the
    per-step peak guard of :func:`mpc`; the plan's own commands are the ``capped`` ones.)
    ``hybrid``: no command where the plan itself only stores PV surplus or covers load (with no
    grid flow), so the
    battery's own self-consumption rule reacts to the step's actual load and PV instead of the
    forecast; power commands where the plan buys, sells or idles deliberately.
    ``capped`` (what hybrid inverters' grid-limit settings offer): ``hybrid`` plus, on every
    step, an import cap at the plan's peak import target (the LP's peak: the month's peak so
    far or the plan's own highest import, whichever is higher), so load nobody forecast, such
    as a car plugged in early, is shaved by the battery as far as its energy lasts.
    """
    plans = plan.plans if isinstance(plan, ScenarioPlan) else (plan,)
    power = plans[0].battery_power_kw.copy()
    cap = np.full(len(power), math.nan)
    if execution == "setpoints":
        return power, cap
    # Only where the plan does exactly what the rule would (all PV surplus stored, all load
    # covered: no grid flow) in every scenario: a partial discharge saves energy for later,
    # which the rule would spend.
    local = np.logical_and.reduce([
        np.isin(np.array(p.actions), ("store", "discharge")) & (np.abs(p.grid_kw) <= GRID_IDLE_KW) for p in plans
    ])
    power[local] = math.nan
    if execution == "capped":
        cap[:] = max(plan.peak_import_kw, peak_so_far_kw)
    return power, cap


class Cadence(Protocol):
    """How often plans are issued, in steps of what length (a backtest's or a live planner's)."""

    step_minutes: int
    replan_minutes: int

    @property
    def step_hours(self) -> float: ...


@dataclass(frozen=True, eq=False)
class Decision:
    """A plan issued at one instant, what its first plan was costed on, and whether an EV
    session was under way then."""

    plan: DispatchPlan | ScenarioPlan
    inputs: HorizonInputs  # the forecast of the first (or only) plan
    charging_now: bool = False
    scenario_inputs: tuple[HorizonInputs, ...] = ()  # a scenario plan's forecasts, one per plan

    @property
    def weights(self) -> np.ndarray:
        """Each plan's probability (1 for a single plan)."""
        return self.plan.weights if isinstance(self.plan, ScenarioPlan) else np.ones(1)

    def expected_cost(self, costs: Callable[[DispatchPlan, HorizonInputs], CostBreakdown]) -> float:
        """What ``costs(plan, its forecast)`` comes to over the scenarios: energy, wear and
        carbon weighted by probability, and the highest demand charge of any, since the
        month's peak is set by its worst evening, not by an average one."""
        forecasts = self.scenario_inputs or (self.inputs,)
        each = [costs(p, f) for p, f in zip(self.plans, forecasts, strict=True)]
        return float(np.dot(self.weights, [c.total - c.demand for c in each]) + max(c.demand for c in each))

    @property
    def plans(self) -> tuple[DispatchPlan, ...]:
        """One plan per load scenario (one for a single forecast)."""
        return self.plan.plans if isinstance(self.plan, ScenarioPlan) else (self.plan,)

    @property
    def first(self) -> DispatchPlan:
        """The plan shown to people: the only one, or the first scenario's."""
        return self.plans[0]

    def commands(self, peak_so_far_kw: float, cap_floor_kw: float, execution: str) -> tuple[np.ndarray, np.ndarray]:
        """Power commands and import caps (:func:`commands_of`), the cap never below
        ``cap_floor_kw`` (:func:`cap_floor_kw`). ``guarded`` (a reserve policy in force, see
        :func:`effective_execution`): no power command at any step, as the policy decides
        every step on the load the battery measures, and the ``capped`` caps. While a car
        charges under a capped scenario plan, the battery holds for the session
        (:func:`hold_for_session`)."""
        guarded = execution == "guarded"
        execution = "capped" if guarded else execution
        setpoints, caps = commands_of(self.plan, max(peak_so_far_kw, cap_floor_kw), execution)
        if guarded:
            setpoints = np.full(len(setpoints), math.nan)
        elif self.charging_now and execution == "capped":
            setpoints = hold_for_session(setpoints)
        return setpoints, caps


def effective_execution(execution: str, guard_active: bool) -> str:
    """``guarded`` only where a reserve policy is in force; a site without one (no car, too
    few readings) carries its plan out ``capped``."""
    return "capped" if execution == "guarded" and not guard_active else execution


def cap_floor_kw(net_history_kw: pd.Series | None, issued_at: pd.Timestamp, spec: BatterySpec) -> float:
    """The lowest import cap worth defending: the month's peak will likely reach what a full
    battery could hold on recent days (:func:`forecasters.holdable_peak_kw`), and a lower cap
    only empties the battery early in a long session. 0 without history."""
    if net_history_kw is None:
        return 0.0
    return fc.holdable_peak_kw(net_history_kw, issued_at, spec.max_kwh - spec.min_kwh, spec.max_discharge_kw,
                               spec.discharge_efficiency)


def plan_at(forecaster: fc.Forecaster, issued_at: pd.Timestamp, instants: pd.DatetimeIndex, config: SimulatorConfig,
            cadence: Cadence, spec: BatterySpec, peak_so_far_kw: float, highs=None, scenarios: bool = True) -> Decision:
    """The plan issued at ``issued_at`` for the steps ending at ``instants``.

    Over the forecaster's scenarios when it has them (the steps until the next re-plan
    decided once for all of them, stochastic.py) unless ``scenarios`` is false, else over
    its one forecast.
    """
    scenarios = getattr(forecaster, "scenarios", None) if scenarios else None
    if scenarios is None:
        inputs = horizon_inputs(forecaster(issued_at, instants), config, cadence.step_hours, peak_so_far_kw)
        return Decision(solve_dispatch(inputs, spec, highs=highs), inputs)
    forecast = scenarios(issued_at, instants)
    inputs = [horizon_inputs(frame, config, cadence.step_hours, peak_so_far_kw) for frame in forecast.frames()]
    shared = max(1, min(cadence.replan_minutes // cadence.step_minutes, len(instants)))
    return Decision(solve_scenarios(inputs, spec, shared_steps=shared, highs=highs), inputs[0], forecast.charging_now,
                    tuple(inputs))


def hold_for_session(setpoints_kw: np.ndarray) -> np.ndarray:
    """While a car charges, the battery discharges only what the import cap demands.

    However the scenarios are drawn, a plan that spends the battery on peak-price energy
    during a session sometimes meets a session, or house load on top of it, longer than any
    of them, and one such evening sets the month's demand charge. Charging
    commands stand; discharge commands and the battery's own rule give way to the cap.
    """
    return np.where(np.isnan(setpoints_kw) | (setpoints_kw < 0), 0.0, setpoints_kw)


def mpc(config: SimulatorConfig, actuals: pd.DataFrame, settings: BacktestSettings,
        forecaster: fc.Forecaster, progress: Callable = lambda it, **_: it,
        history: pd.DataFrame | None = None) -> tuple[StrategyRun, int]:
    """Re-plan every ``replan_minutes`` on the forecasts of that moment; follow the plan between.

    ``history`` (load and PV measured so far, :data:`forecasters.COLUMNS`) sets the import
    cap's floor (:func:`forecasters.holdable_peak_kw`) and, under the ``guarded`` execution of
    a forecaster that cannot time the load on a site with a car, the reserve policy and its
    cap (:func:`reserved`); only rows up to each decision are read. Returns the run and the
    number of plans (or policy solves) made.
    """
    if (settings.execution == "guarded" and hasattr(forecaster, "scenarios") and history is not None
            and config.home_load.ev_charger_kw > 0):
        return reserved(config, actuals, settings, history, progress)
    site = _with_mode(config, BatteryMode.SETPOINT)
    every = settings.replan_minutes // settings.step_minutes
    horizon = round(settings.horizon_hours / settings.step_hours)
    months = billing_months(actuals.index, settings.step, config.timezone)
    load, pv = actuals[fc.LOAD].to_numpy(), actuals[fc.PV].to_numpy()
    state, sims, highs, failed, grid = generator.initial_state([site]), [], new_solver(), 0, np.zeros(len(actuals))
    starts = range(0, len(actuals), every)
    net_history = None if history is None else history[fc.LOAD] - history[fc.PV]
    execution = effective_execution(settings.execution, False)
    for k in progress(starts, total=len(starts), desc="MPC", unit="plan"):
        issued_at = actuals.index[k] - settings.step
        instants = pd.date_range(issued_at + settings.step, periods=horizon, freq=settings.step)
        same_month = months[:k] == months[k]
        peak = float(max(grid[:k][same_month].max(initial=0.0), 0.0))
        spec = battery_spec(config, float(state.energy_kwh[0]), settings.wear_cost_per_kwh)
        try:
            decision = plan_at(forecaster, issued_at, instants, config, settings, spec, peak, highs, settings.scenarios)
            setpoints, caps = decision.commands(peak, cap_floor_kw(net_history, issued_at, spec), execution)
        except DispatchError:
            failed += 1  # the battery falls back to its own self-consumption rule (NaN = no command)
            setpoints = caps = np.full(every, math.nan)
        rows = actuals.index[k : k + every]
        sim, state = generator.simulate([site], rows, state, setpoints[None, : len(rows)], import_cap_kw=caps[None, : len(rows)])
        grid[k : k + len(rows)] = load[k : k + len(rows)] + sim.battery.power_kw[0] - pv[k : k + len(rows)]
        sims.append(sim.battery)
    return _run(MPC, actuals, _concat(sims), config, settings, failed), len(starts)


def reserved(config: SimulatorConfig, actuals: pd.DataFrame, settings: BacktestSettings, history: pd.DataFrame,
             progress: Callable = lambda it, **_: it) -> tuple[StrategyRun, int]:
    """The site run under the reserve policy, step by step, as the gateway runs it.

    The peak guard's cap is fitted at the month's first step and again once the month's peak
    passes it; the policy is solved at each local midnight, and with the new cap (and every
    ``policy_every_minutes`` when set), on the readings before that moment. Every step the battery does what
    :func:`edge_gateway.control.reserve_request_kw` asks on the step's own load, under the
    cap or the month's peak, with the session state of the charger's readings before it.
    Returns the run and the number of policy solves.
    """
    site = _with_mode(config, BatteryMode.SETPOINT)
    tz, step, dt = config.timezone, settings.step, settings.step_hours
    exo = generator.exogenous([site], base.TimeAxis.from_times(actuals.index))
    net, ev = exo.load_kw[0] - exo.solar_kw[0], exo.ev_kw[0]
    house = exo.load_kw[0] - ev
    months = billing_months(actuals.index, step, tz)
    days = np.asarray((actuals.index - step).tz_convert(tz).normalize().asi8)
    state, memory, traces = generator.initial_state([site]), SiteMemory(), []
    rule = policy = None
    solves = 0
    every = None if settings.policy_every_minutes is None else settings.policy_every_minutes // settings.step_minutes
    for row in progress(range(len(actuals)), total=len(actuals), desc="MPC", unit="step"):
        interval_start = actuals.index[row] - step
        peak = memory.month_peak_kw(interval_start, tz)
        refit = rule is None or months[row] != months[row - 1] or peak > rule.target_kw + REFIT_ABOVE_KW
        if refit or days[row] != days[row - 1] or (every is not None and row % every == 0):
            spec = battery_spec(config, float(state.energy_kwh[0]), settings.wear_cost_per_kwh)
            if refit:
                past = history.loc[interval_start - guard.FIT_DAYS * fc.DAY : interval_start].iloc[1:]
                rule = guard.fit_guard(past[fc.LOAD], past[fc.PV], spec, config, peak)
            policy = reserve.fit_policy(config, history[fc.LOAD], interval_start, spec, max(rule.target_kw, peak), step)
            solves += 1
        cap = memory.import_cap_kw(max(rule.target_kw, peak), interval_start, tz)
        floor, charge_to = policy.limits(interval_start, memory.sessions, tz, float(ev[row])) or (spec.min_kwh, spec.min_kwh)
        request = reserve_request_kw(float(net[row]), float(state.energy_kwh[0]), floor, charge_to, spec.max_charge_kw,
                                     spec.charge_efficiency, spec.discharge_efficiency, dt)
        sim, state = generator.simulate([site], actuals.index[row : row + 1], state, np.array([[request]]),
                                        import_cap_kw=np.array([[cap]]), exo=exo.steps(slice(row, row + 1)))
        memory.observe(interval_start, tz, float(ev[row]), float(net[row] + sim.battery.power_kw[0, 0]), float(house[row]),
                       policy.house_forecast_kw(interval_start))
        traces.append(sim.battery)
    return _run(MPC, actuals, _concat(traces), config, settings, 0, True), solves


def backtest_window(config: SimulatorConfig, settings: BacktestSettings) -> pd.DatetimeIndex:
    """Reading instants of the backtest: ``days`` whole local days from ``start``."""
    start = settings.start
    if start is None:
        today = pd.Timestamp.now(tz=config.timezone).normalize()
        start = today - pd.Timedelta(days=settings.days)
    start = pd.Timestamp(start)
    start = start.tz_localize(config.timezone) if start.tzinfo is None else start
    end = (start.tz_convert(config.timezone) + pd.DateOffset(days=settings.days)).tz_convert("UTC")
    return pd.date_range(start.tz_convert("UTC") + settings.step, end, freq=settings.step)


def make_forecaster(
    name: str, config: SimulatorConfig, history: pd.DataFrame, store=None, model_dir: str | None = None
) -> fc.Forecaster:
    if name == "perfect":
        return fc.PerfectForecaster(config)
    if name == "naive":
        return fc.NaiveForecaster(config, history[fc.LOAD])
    if name == "models":
        return fc.models_forecaster(config, store=store, model_dir=model_dir)
    raise UsageError(f"forecaster {name!r}: expected one of naive, perfect, models")


def run_backtest(config: SimulatorConfig, settings: BacktestSettings, progress: Callable = lambda it, **_: it) -> BacktestResult:
    """Every strategy of the module docstring over the same simulated days."""
    config = config.model_copy(update={"interval_seconds": settings.step_minutes * 60})
    instants = backtest_window(config, settings)
    # What the site has measured before: the naive forecast's week, the sessions' four weeks.
    history_start = instants[0] - pd.Timedelta(days=max(fc.HISTORY_DAYS, SESSION_HISTORY_DAYS) + 1)
    everything = fc.site_actuals(config, pd.date_range(history_start, instants[-1], freq=settings.step))
    actuals = everything.loc[instants[0] :]
    forecaster = make_forecaster(settings.forecaster, config, everything)
    runs = {
        NO_BATTERY: no_battery(config, actuals, settings),
        SELF_CONSUMPTION: rule_based(config, actuals, settings, BatteryMode.SELF_CONSUMPTION),
        TOU: rule_based(config, actuals, settings, BatteryMode.TOU_ARBITRAGE),
        PERFECT: perfect_foresight(config, actuals, settings),
    }
    runs[MPC], replans = mpc(config, actuals, settings, forecaster, progress, everything)
    return BacktestResult(config, settings, actuals, {name: runs[name] for name in STRATEGIES}, replans)
