"""The live decision: what a site's battery is told, made the same way by the planner and the backtest.

Two choices decide it, each made here once:

* the **strategy** (:func:`choose_strategy`): under the ``guarded`` execution, on a site that
  can carry one (a battery and the readings to fit a peak guard on), with a forecaster that
  cannot time the load, the battery follows the reserve policy (reserve.py) under the peak
  guard's cap: with a car, the program's thresholds; without one, the guard's standing
  reserve at every hour (guard.py), as a household's own bursts come at any hour; otherwise
  the LP plans, over the forecaster's load scenarios when it offers them (stochastic.py), else
  over its one forecast;
* the **execution** (:data:`EXECUTIONS`): how a plan becomes power commands and an import cap
  (:func:`commands_of`, :meth:`Decision.commands`).

The peak guard's cap is refitted once the month's peak has passed it (:func:`guard_outdated`).
The gateway applies what is sent step by step (``der_core.control.Controller``).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from cloud.optimization import forecasters as fc
from cloud.optimization.guard import GuardRule
from cloud.optimization.lp import solve_dispatch
from cloud.optimization.model import BatterySpec, HorizonInputs
from cloud.optimization.plan import CostBreakdown, DispatchPlan
from cloud.optimization.stochastic import ScenarioPlan, solve_scenarios
from der_core.config import SimulatorConfig
from der_core.errors import UsageError
from der_core.tariff import site_tariff
from der_physics.tariff import billed_peak_steps, demand_window, peak_steps

#: Wear priced per kWh through the battery: it keeps the LP from cycling for pennies and
#: breaks the ties that would otherwise allow simultaneous charge and discharge (lp.py).
DEFAULT_WEAR_COST_PER_KWH = 0.02
#: Grid flow (kW) below which a plan's step moves nothing through the grid.
GRID_IDLE_KW = 1e-3
#: How far the month's peak may pass the guard's cap before the guard is fitted again.
REFIT_ABOVE_KW = 0.05


class Execution(enum.StrEnum):
    """How the site's battery carries out a plan (:data:`EXECUTIONS`); GUARDED is the default."""

    GUARDED = "guarded"
    CAPPED = "capped"
    HYBRID = "hybrid"
    SETPOINTS = "setpoints"

    @classmethod
    def parse(cls, value: str) -> Execution:
        """The execution called ``value``; a UsageError naming the choices otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise UsageError(f"execution {value!r}: expected one of {', '.join(cls)}") from None


class Commanded(enum.Enum):
    """Which steps of a plan get a power command."""

    EVERY_STEP = "every step"
    DELIBERATE = "where the plan departs from the battery's own rule"
    NONE = "none: a reserve policy decides each step on the load the battery measures"


@dataclass(frozen=True)
class Carried:
    """What an execution sends: power commands (``power``), an import cap at the plan's peak
    import target on every step of the tariff's demand window (``capped``), and whether, while a car charges, the battery
    holds for the session (``holds_for_session``, :func:`hold_for_session`)."""

    power: Commanded
    capped: bool
    holds_for_session: bool


#: ``setpoints``: the plan's power at every step, no cap. ``hybrid``: no command where the plan
#: only stores PV surplus or covers load with no grid flow, so the battery's own rule reacts to
#: the step's actual load and PV; commands where the plan buys, sells or idles deliberately.
#: ``capped`` (what hybrid inverters' grid-limit settings offer): ``hybrid`` plus the cap, so load
#: nobody forecast, such as a car plugged in early, is shaved as far as the battery's energy
#: lasts. ``guarded``: the reserve policy decides every step, under the ``capped`` cap.
EXECUTIONS: dict[Execution, Carried] = {
    Execution.GUARDED: Carried(Commanded.NONE, capped=True, holds_for_session=False),
    Execution.CAPPED: Carried(Commanded.DELIBERATE, capped=True, holds_for_session=True),
    Execution.HYBRID: Carried(Commanded.DELIBERATE, capped=False, holds_for_session=False),
    Execution.SETPOINTS: Carried(Commanded.EVERY_STEP, capped=False, holds_for_session=False),
}


class Strategy(enum.Enum):
    """What is planned for a site."""

    RESERVE_POLICY = "reserve policy"
    SCENARIO_PLAN = "scenario plan"
    SINGLE_PLAN = "single-forecast plan"


def wants_reserve_policy(execution: Execution, forecaster: fc.Forecaster) -> bool:
    """The execution and forecaster call for a reserve policy, on a site that can carry one:
    ``guarded``, and a forecaster that cannot time the load (:func:`forecasters.times_the_load`);
    one that can is better served by a plan on it."""
    return execution == Execution.GUARDED and not fc.times_the_load(forecaster)


def carries_policy(config: SimulatorConfig) -> bool:
    """The site can carry a reserve policy under a peak guard: it has a battery and its tariff
    charges for the month's peak, which is what the guard's cap and its reserve defend. Without
    a demand charge the LP's plan is the better decision: nothing pays for holding energy back
    against a burst, while every kWh is priced by the hour."""
    return config.battery.capacity_kwh > 0 and site_tariff(config).demand_charge_per_kw > 0


def choose_strategy(execution: Execution, forecaster: fc.Forecaster, site_carries_policy: bool,
                    scenarios: bool = True) -> Strategy:
    """The strategy of the module docstring. ``site_carries_policy``: the site carries one
    (:func:`carries_policy`) and has what a peak guard is fitted on; ``scenarios`` false plans on one
    forecast even when the forecaster offers scenarios."""
    if site_carries_policy and wants_reserve_policy(execution, forecaster):
        return Strategy.RESERVE_POLICY
    if scenarios and isinstance(forecaster, fc.ScenarioForecaster):
        return Strategy.SCENARIO_PLAN
    return Strategy.SINGLE_PLAN


def guard_outdated(rule: GuardRule | None, peak_so_far_kw: float) -> bool:
    """The peak guard must be fitted (again): there is none, or the month's peak has passed its
    cap by more than :data:`REFIT_ABOVE_KW`, so the cap no longer says what the month will pay."""
    return rule is None or peak_so_far_kw > rule.target_kw + REFIT_ABOVE_KW


def effective_execution(execution: Execution, guard_active: bool) -> Execution:
    """``guarded`` only where a reserve policy is in force; a site without one (too few
    readings, a forecaster that times the load) carries its plan out ``capped``."""
    return Execution.CAPPED if execution == Execution.GUARDED and not guard_active else Execution(execution)


class Stepped:
    """The step of a settings dataclass with ``step_minutes``, as a duration and in hours."""

    step_minutes: int

    @property
    def step(self) -> pd.Timedelta:
        return pd.Timedelta(minutes=self.step_minutes)

    @property
    def step_hours(self) -> float:
        return self.step_minutes / 60.0


class Cadence(Protocol):
    """How often plans are issued, in steps of what length (a backtest's or a live planner's)."""

    step_minutes: int
    replan_minutes: int

    @property
    def step_hours(self) -> float: ...


def battery_spec(config: SimulatorConfig, energy_kwh: float | None, wear_cost_per_kwh: float,
                 capacity_kwh: float | None = None) -> BatterySpec:
    """The LP's view of the site's battery, starting from the energy it holds now.

    ``capacity_kwh``: what the battery holds now where that is known (a backtest's battery,
    faded by its cycles and age: ``der_physics.battery.usable_kwh``), else the nominal
    capacity. Its SOC window is a share of that: a month's plan on the nominal capacity of a
    battery faded to 91 % plans charges it cannot take and discharges it cannot give. The
    start is clipped into the window rather than refused.
    """
    spec = config.battery
    capacity = spec.capacity_kwh if capacity_kwh is None else float(capacity_kwh)
    soc = spec.initial_soc if energy_kwh is None or capacity == 0 else 100.0 * energy_kwh / capacity
    return dataclasses.replace(
        BatterySpec.from_config(spec, wear_cost_per_kwh=wear_cost_per_kwh),
        capacity_kwh=capacity,
        initial_soc_percent=min(max(soc, spec.min_soc), spec.max_soc),
    )


def horizon_inputs(frame: pd.DataFrame, config: SimulatorConfig, step_hours: float, peak_so_far_kw: float = 0.0) -> HorizonInputs:
    """The LP's inputs from forecast (or actual) columns and the site's tariff's charges."""
    tariff = site_tariff(config)
    return HorizonInputs(
        load_kw=np.maximum(frame[fc.LOAD].to_numpy(), 0.0),
        pv_kw=np.maximum(frame[fc.PV].to_numpy(), 0.0),
        import_price_per_kwh=frame[fc.IMPORT_PRICE].to_numpy(),
        export_price_per_kwh=frame[fc.EXPORT_PRICE].to_numpy(),
        carbon_intensity_g_per_kwh=frame[fc.CARBON].to_numpy(),
        step_hours=step_hours,
        demand_charge_per_kw=tariff.demand_charge_per_kw,
        peak_so_far_kw=peak_so_far_kw,
        demand_window=demand_window(tariff, frame.index, config.timezone, config.country),
        standing_charge_per_day=tariff.standing_charge_per_day,
    )


def commands_of(plan: DispatchPlan | ScenarioPlan, peak_so_far_kw: float = 0.0,
                execution: Execution = Execution.CAPPED) -> tuple[np.ndarray, np.ndarray]:
    """The battery power commands (NaN = none) and grid import caps (NaN = none) of a plan,
    as ``execution`` carries it out (:data:`EXECUTIONS`). The cap is the LP's peak: the
    month's peak so far or the plan's own highest import, whichever is higher. A step is left
    to the battery's own rule only where the plan does exactly what the rule would (all PV
    surplus stored, all load covered: no grid flow) in every scenario: a partial discharge
    saves energy for later, which the rule would spend."""
    carried = EXECUTIONS[execution]
    plans = plan.plans if isinstance(plan, ScenarioPlan) else (plan,)
    power = plans[0].battery_power_kw.copy()
    cap = np.full(len(power), math.nan)
    if carried.power is Commanded.NONE:
        power[:] = math.nan
    elif carried.power is Commanded.DELIBERATE:
        local = np.logical_and.reduce([
            np.isin(np.array(p.actions), ("store", "discharge")) & (np.abs(p.grid_kw) <= GRID_IDLE_KW) for p in plans
        ])
        power[local] = math.nan
    if carried.capped:
        cap[:] = max(plan.peak_import_kw, peak_so_far_kw)
    return power, cap


def hold_for_session(setpoints_kw: np.ndarray) -> np.ndarray:
    """While a car charges, the battery discharges only what the import cap demands.

    However the scenarios are drawn, a plan that spends the battery on peak-price energy
    during a session sometimes meets a session, or house load on top of it, longer than any
    of them, and one such evening sets the month's demand charge. Charging
    commands stand; discharge commands and the battery's own rule give way to the cap.
    """
    return np.where(np.isnan(setpoints_kw) | (setpoints_kw < 0), 0.0, setpoints_kw)


def cap_floor_kw(net_history_kw: pd.Series | None, issued_at: pd.Timestamp, spec: BatterySpec,
                 config: SimulatorConfig | None = None) -> float:
    """The lowest import cap worth defending: the month's peak will likely reach what a full
    battery could hold on recent days (:func:`forecasters.holdable_peak_kw`), and a lower cap
    only empties the battery early in a long session. Only the imports the ``config``'s tariff
    bills into the peak count (``der_physics.tariff.billed_peak_steps``): a car charged overnight, outside a
    demand window, sets no peak to defend. 0 without history."""
    if net_history_kw is None:
        return 0.0
    if config is not None:
        net_history_kw = net_history_kw[billed_peak_steps(config, net_history_kw.index)]
    return fc.holdable_peak_kw(net_history_kw, issued_at, spec.max_kwh - spec.min_kwh, spec.max_discharge_kw,
                               spec.discharge_efficiency)


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

    def commands(self, peak_so_far_kw: float, cap_floor_kw: float, execution: Execution) -> tuple[np.ndarray, np.ndarray]:
        """Power commands and import caps (:func:`commands_of`), the cap never below
        ``cap_floor_kw`` (:func:`cap_floor_kw`) and only on the steps of the tariff's demand
        window (:func:`in_demand_window`). While a car charges, an execution that holds for the
        session does (:func:`hold_for_session`)."""
        setpoints, caps = commands_of(self.plan, max(peak_so_far_kw, cap_floor_kw), execution)
        if self.charging_now and EXECUTIONS[execution].holds_for_session:
            setpoints = hold_for_session(setpoints)
        return setpoints, in_demand_window(caps, self.inputs)


def in_demand_window(caps_kw: np.ndarray, inputs: HorizonInputs) -> np.ndarray:
    """Import caps only where imports set the billed peak (NaN elsewhere): outside a tariff's
    demand window no import costs a demand charge, and a cap there would stop the charging a
    plan does before the window to hold its peak in it (bill.grid_bill counts the same steps)."""
    return np.where(peak_steps(inputs.demand_window, inputs.steps), caps_kw, math.nan)


def plan_at(forecaster: fc.Forecaster, issued_at: pd.Timestamp, instants: pd.DatetimeIndex, config: SimulatorConfig,
            cadence: Cadence, spec: BatterySpec, peak_so_far_kw: float, highs=None,
            strategy: Strategy = Strategy.SCENARIO_PLAN) -> Decision:
    """The plan issued at ``issued_at`` for the steps ending at ``instants``.

    Under :attr:`Strategy.SCENARIO_PLAN`, over the forecaster's load scenarios (the steps until
    the next re-plan decided once for all of them, stochastic.py) when it offers them; else,
    and beside a reserve policy (what is shown and valued there), over its one forecast.
    """
    if strategy is not Strategy.SCENARIO_PLAN or not isinstance(forecaster, fc.ScenarioForecaster):
        inputs = horizon_inputs(forecaster(issued_at, instants), config, cadence.step_hours, peak_so_far_kw)
        return Decision(solve_dispatch(inputs, spec, highs=highs), inputs)
    forecast = forecaster.scenarios(issued_at, instants)
    inputs = [horizon_inputs(frame, config, cadence.step_hours, peak_so_far_kw) for frame in forecast.frames()]
    shared = max(1, min(cadence.replan_minutes // cadence.step_minutes, len(instants)))
    return Decision(solve_scenarios(inputs, spec, shared_steps=shared, highs=highs), inputs[0], forecast.charging_now,
                    tuple(inputs))
