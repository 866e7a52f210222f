"""The day-ahead plan of one site: forecasts in, a plan and its value out, stored and published.

What is planned and how the battery carries it out is the live decision of decision.py
(:func:`decision.choose_strategy`, :data:`decision.EXECUTIONS`), the one the backtest measures;
this module gathers what the site looks like now, values the plan and stores it.

Steps are labelled by their start: row ``ts`` of ``dispatch_plans`` and entry ``ts`` of the
MQTT schedule are the instant the command takes effect, in force until the next step. The
forecasts of a step are those of the reading that will describe it (stamped at its end).

What the site looks like now comes from its readings in the cloud store when there are
any (the newest measured SOC, this month's peak import, the load history the naive
forecaster needs); without readings, from the site's simulator, which is what a fresh
gateway would report. A declared site (der_core.site_file) has no simulator: without
readings before the plan's start it is not planned, without a measured SOC its plan starts
from the declared battery's, and its PV forecast comes from its declared system, its
measured PV and the weather forecasts of its outside inputs (``cloud.live.inputs``: its
declared weather service, else ``FORECAST_WEATHER_CSV`` when set; pv_forecast.py). A declared
site with ``prices`` prices its dynamic tariff from the prices published by the time the
plan is made, and a price forecast past them (``SiteInputs.wholesale``). An input whose
service was down when fetched marks the plan stale (:attr:`SitePlan.stale`).

A plan sees what is known when it is made: a plan for the step under way (the live plan) at
the instant it is made, a plan for a step already past (a replay with ``--start``) at that
step's start, so nothing published after a live plan could have been made reaches it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from cloud.job_status import recorded_run
from cloud.live.inputs import SiteInputs, stored_site_inputs
from cloud.optimization import forecasters as fc
from cloud.optimization import guard as peak_guard
from cloud.optimization import reserve
from cloud.optimization.decision import (
    DEFAULT_WEAR_COST_PER_KWH,
    Decision,
    Execution,
    Stepped,
    battery_spec,
    cap_floor_kw,
    carries_policy,
    choose_strategy,
    effective_execution,
    guard_outdated,
    in_demand_window,
    plan_at,
    wants_reserve_policy,
)
from cloud.optimization.figures import (
    ArrivalFigures,
    PlanFigures,
    ReserveFigures,
    ScenarioFigures,
)
from cloud.optimization.model import BatterySpec, HorizonInputs
from cloud.optimization.plan import CostBreakdown, DispatchPlan
from cloud.optimization.pv_forecast import MeasuredPV
from cloud.optimization.reference import cost_without_battery, self_consumption_dispatch
from cloud.optimization.summary import plan_summary, write_summary
from cloud.site_steps import filled_columns, grid_kw, local_floor, no_load_reason, site_steps
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.cli_support import duration, local_instant
from der_core.config import SimulatorConfig, build_config, site_record
from der_core.control import ReservePolicy
from der_core.errors import ConfigError, UsageError
from der_core.setpoints import ExpectedSavings, SetpointSchedule
from der_core.site_file import declared_site, planning_config
from der_physics.tariff import billed_peak_steps

log = logging.getLogger(__name__)
JOB = "optimizer"
FRESH_READING = pd.Timedelta(hours=1)  # an older SOC says little about the battery now
#: Days of readings a peak guard needs before the plan carries one: a week shows the
#: weekday and weekend habits; the fit uses up to guard.FIT_DAYS.
GUARD_MIN_DAYS = 7
#: How far a plan's valued cost may sit above the rule's before the rule is sent instead:
#: a solver's rounding, not money.
RULE_TOLERANCE = 1e-6
#: The readings a plan reads before its start, or before its billing month's start if that is
#: earlier: the forecasters' days and the guard's weeks (fit_site_guard).
HISTORY_SPAN = pd.Timedelta(days=max(fc.HISTORY_DAYS, peak_guard.FIT_DAYS) + 1)
PUBLISHED_PLAN, PUBLISHED_RULE = "plan", "rule"


@dataclass(frozen=True)
class PlanSettings(Stepped):
    start: pd.Timestamp | None = None  # default: now, floored to the step
    horizon_hours: float = 24.0
    step_minutes: int = 15
    forecaster: str = fc.AUTO  # the trained models where they cover the site, else naive (forecasters.choose)
    wear_cost_per_kwh: float = DEFAULT_WEAR_COST_PER_KWH
    model_dir: str | None = None  # the forecasting registry (FORECAST_MODEL_DIR by default)
    execution: Execution = Execution.GUARDED  # how the gateway carries the plan out (decision.EXECUTIONS)
    #: How often a new plan replaces this one (the pipeline plans hourly): a scenario plan
    #: decides these minutes once for every load scenario.
    replan_minutes: int = 60

    def __post_init__(self) -> None:
        object.__setattr__(self, "execution", Execution.parse(self.execution))
        if self.step_minutes < 1 or 1440 % self.step_minutes:
            raise UsageError(f"--step-minutes {self.step_minutes}: expected a whole number of minutes dividing a day")
        if self.replan_minutes < 1:
            raise UsageError(f"re-plan interval {self.replan_minutes} min: expected a positive whole number of minutes")
        steps = self.horizon_hours * 60 / self.step_minutes
        if not (1 <= steps <= 7 * 96 * 4 and abs(steps - round(steps)) < 1e-9):
            raise UsageError(f"--horizon-hours {self.horizon_hours:g}: expected a whole number of {self.step_minutes}-minute steps, at most a week")

    @property
    def steps(self) -> int:
        return round(self.horizon_hours * 60 / self.step_minutes)


@dataclass(frozen=True)
class SiteState:
    """What is known about the site at the plan's start."""

    energy_kwh: float | None
    peak_so_far_kw: float
    load_history_kw: pd.Series
    source: str  # "readings" or "simulator"
    pv_history_kw: pd.Series | None = None
    soc_read_at: pd.Timestamp | None = None  # the SOC reading ``energy_kwh`` comes from; None: the configured start
    soc_read_percent: float | None = None  # that reading
    capacity_kwh: float | None = None  # what the battery holds now, from its health reading; None: the nominal


@dataclass(frozen=True, eq=False)
class SitePlan:
    device_id: str
    timezone: str
    issued_at: pd.Timestamp
    step_starts: pd.DatetimeIndex
    forecaster: str
    state_source: str
    inputs: HorizonInputs  # the forecast the plan shown was costed on
    battery: BatterySpec
    decision: Decision
    no_battery: CostBreakdown
    self_consumption: DispatchPlan
    execution: Execution = Execution.GUARDED
    guard: peak_guard.GuardRule | None = None  # the cap's fit, under "guarded" execution
    policy: ReservePolicy | None = None  # the reserve policy the battery follows under that cap
    cap_floor_kw: float = 0.0  # the import cap never sits below it (decision.cap_floor_kw)
    policy_plan: DispatchPlan | None = None  # what the battery does under the policy on the forecast
    currency: str = "USD"  # the site's (SimulatorConfig.currency_code): money in its summary
    #: Under a reserve policy: the expected valued cost over car arrivals of the policy and of
    #: the battery's own rule, by the policy's program from the plan's start (reserve.Fitted).
    over_arrivals: tuple[float, float] | None = None
    #: Under a reserve policy: the energy it holds above the minimum for the car, and when the
    #: car is expected (reserve.held_for_car).
    held_for_car: tuple[float, pd.Timestamp] | None = None
    forecaster_reason: str = ""  # why the forecaster is the one (forecasters.choose)
    #: Per outside input whose service was down: "stale since … (why)" (cloud.live.inputs).
    stale: Mapping[str, str] = field(default_factory=dict)
    soc_read_at: pd.Timestamp | None = None  # the SOC reading the plan starts from; None: the configured start
    soc_read_percent: float | None = None  # that reading, which the declared SOC window may have clipped

    @property
    def made(self) -> DispatchPlan:
        """The plan made: under a reserve policy what the battery does under it on the forecast
        (reserve.expected_dispatch), else the only plan or a scenario plan's first."""
        return self.policy_plan if self.policy_plan is not None else self.decision.first

    @cached_property
    def _costs_against_rule(self) -> tuple[float, float]:
        """The valued cost (plan.DispatchPlan.valued_cost) of the plan made and of the battery's
        own rule on the same forecast: over car arrivals under a reserve policy
        (:attr:`over_arrivals`), over every load scenario of a scenario plan
        (:meth:`expected_over_scenarios`), else on the one forecast."""
        if self.over_arrivals is not None:
            return self.over_arrivals
        expected = self.expected_over_scenarios()
        if expected is not None:
            return expected.cost, expected.cost_self_consumption
        return self.made.valued_cost, self.self_consumption.valued_cost

    @property
    def published(self) -> str:
        """What is sent: the plan made, or the battery's own rule where the plan's valued cost
        is above the rule's, since a plan worse than the rule is never sent. A reserve policy is
        judged over car arrivals, not on the one forecast with no car, where what it keeps for
        the car looks wasted: both are valued by the policy's own program (:attr:`over_arrivals`).
        Its thresholds are the program's optimum, so only the program's energy grid can put the
        policy above the rule; then the rule is sent."""
        if self.policy_plan is not None and self.over_arrivals is None:
            return PUBLISHED_PLAN
        plan_cost, rule_cost = self._costs_against_rule
        return PUBLISHED_RULE if plan_cost > rule_cost + RULE_TOLERANCE * max(1.0, abs(rule_cost)) else PUBLISHED_PLAN

    @property
    def published_reason(self) -> str | None:
        """Why the rule is sent instead of the plan made; None when the plan is sent."""
        if self.published == PUBLISHED_PLAN:
            return None
        plan_cost, rule_cost = self._costs_against_rule
        if self.over_arrivals is not None:
            return (f"the reserve policy's expected cost over {reserve.hedged(self.policy)} {plan_cost:.2f} is above "
                    f"the battery's own rule's {rule_cost:.2f} (the policy's program, on its energy grid), so the rule "
                    "is sent instead")
        return (f"the plan's expected cost {plan_cost:.2f} is above the battery's own rule's {rule_cost:.2f} on the "
                "same forecast (energy left in the battery valued), so the rule is sent instead")

    @property
    def plan(self) -> DispatchPlan:
        """The plan shown, stored and valued: the plan made, or the self-consumption rule when
        that is what is sent (:attr:`published`)."""
        return self.self_consumption if self.published == PUBLISHED_RULE else self.made

    @property
    def savings_vs_no_battery(self) -> float:
        return self.plan.savings_against(self.no_battery.total)

    @property
    def savings_vs_self_consumption(self) -> float:
        return self.plan.savings_against(self.self_consumption.valued_cost)

    def table(self) -> list[dict]:
        """One row per step for people: local time with its UTC offset (the hour the clocks
        repeat in autumn is two hours, told apart only by it), action, power, SOC at the end,
        price, cost."""
        local = self.step_starts.tz_convert(self.timezone)
        return [
            {"time": t.isoformat(sep=" ", timespec="minutes"), "action": action, "power_kw": round(float(p), 3),
             "soc_percent": round(float(soc), 1), "price_per_kwh": round(float(price), 4), "expected_cost": round(float(cost), 4)}
            for t, action, p, soc, price, cost in zip(
                local, self.plan.actions, self.plan.battery_power_kw, self.plan.soc_percent[1:],
                self.inputs.import_price_per_kwh, self.plan.step_cost,
            )
        ]

    def rows(self) -> pd.DataFrame:
        """The plan as ``dispatch_plans`` rows."""
        return pd.DataFrame({
            dd.DEVICE_ID: self.device_id,
            dd.TS: self.step_starts,
            s.ISSUED_AT: self.issued_at,
            dd.BATTERY_POWER: self.plan.battery_power_kw,
            dd.BATTERY_SOC: self.plan.soc_percent[1:],
            dd.NET_GRID_FLOW: self.plan.grid_kw,
            s.PLAN_PRICE: self.inputs.import_price_per_kwh,
            s.EXPECTED_COST: self.plan.step_cost,
            s.OBJECTIVE: f"{self.plan.status}; forecaster {self.forecaster}",
        })

    def commands(self) -> tuple[np.ndarray, np.ndarray]:
        """Per step the power command and import cap (NaN: none), as the backtest carries a
        plan out (:meth:`decision.Decision.commands`); under a reserve policy no power
        command, and the cap is the guard's or the month's peak, whichever is higher, as in the
        guarded backtest; either cap only in the tariff's demand window
        (:func:`decision.in_demand_window`); with the rule sent, neither (:attr:`published`)."""
        if self.published == PUBLISHED_RULE:
            nothing = np.full(len(self.step_starts), math.nan)
            return nothing, nothing
        power, cap = self.decision.commands(self.inputs.peak_so_far_kw, self.cap_floor_kw,
                                            effective_execution(self.execution, self.guard is not None))
        if self.guard is not None:
            cap = in_demand_window(np.full(len(power), self.inputs.peak_so_far_kw), self.inputs)
        return power, cap

    def schedule(self) -> SetpointSchedule:
        """The setpoint schedule of ``der/<device_id>/battery/setpoint`` (positive charges): no
        power command where the battery's own rule does what the plan wants, the import cap on
        every entry of the tariff's demand window, the reserve policy the gateway applies at each reading, and what the plan
        expects the battery to save (shown beside the next action in Home Assistant)."""
        power, cap = self.commands()
        sent_policy = self.policy is not None and self.published == PUBLISHED_PLAN
        return SetpointSchedule.from_commands(self.step_starts, power, cap, self.policy if sent_policy else None,
                                              ExpectedSavings(self.savings_vs_no_battery, self.currency))

    def expected_over_scenarios(self) -> ScenarioFigures | None:
        """A scenario plan's valued cost and savings over all its load scenarios, each
        scenario's plan and references costed on its forecast (:func:`expected_valued_cost`);
        None for one forecast."""
        decision = self.decision
        if len(decision.plans) == 1:
            return None
        cost = expected_valued_cost(decision, lambda plan, _: plan)
        without = decision.expected_cost(lambda _, inputs: cost_without_battery(inputs))
        rule = expected_valued_cost(decision, lambda _, inputs: self_consumption_dispatch(inputs, self.battery))
        return ScenarioFigures(len(decision.plans), cost, without, rule)

    def expected_over_arrivals(self) -> ArrivalFigures | None:
        """Under a reserve policy, the expected valued costs over car arrivals of the policy and
        of the battery's own rule (:attr:`over_arrivals`); None otherwise."""
        if self.over_arrivals is None:
            return None
        return ArrivalFigures(*self.over_arrivals)

    def summary(self) -> PlanFigures:
        """The plan's figures, as ``run_optimizer.py --json`` prints them."""
        return PlanFigures(
            device_id=self.device_id, issued_at=self.issued_at, start=self.step_starts[0], steps=len(self.step_starts),
            forecaster=self.forecaster, state_from=self.state_source, status=self.plan.status, cost=self.plan.costs,
            total_cost=self.plan.total_cost, cost_without_battery=self.no_battery.total,
            cost_self_consumption=self.self_consumption.total_cost, savings_vs_no_battery=self.savings_vs_no_battery,
            savings_vs_self_consumption=self.savings_vs_self_consumption, stored_energy_value=self.plan.stored_value,
            stored_energy_value_self_consumption=self.self_consumption.stored_value, published=self.published,
            published_reason=self.published_reason, final_soc_percent=float(self.plan.soc_percent[-1]),
            self_consumption_final_soc_percent=float(self.self_consumption.soc_percent[-1]), execution=self.execution,
            load_scenarios=len(self.decision.plans), expected_over_scenarios=self.expected_over_scenarios(),
            expected_over_arrivals=self.expected_over_arrivals(),
            reserve=None if self.policy is None or self.published == PUBLISHED_RULE else self._reserve_summary(),
            forecaster_reason=self.forecaster_reason,
            stale=dict(self.stale), initial_soc_percent=float(self.plan.soc_percent[0]), initial_soc_read_at=self.soc_read_at,
        )

    def battery_start_line(self) -> str | None:
        """Where the plan's first SOC comes from, for the owner to check against the battery's
        display: a plan from a stale or missing reading starts from the configured SOC, and
        every block after it moves from there. None for a site without a battery."""
        if self.battery.capacity_kwh <= 0:
            return None
        soc = f"battery starts at {self.plan.soc_percent[0]:.0f}%"
        if self.soc_read_at is not None:
            line = f"{soc}: its reading at {self.soc_read_at.tz_convert(self.timezone):%a %H:%M}"
            read = self.soc_read_percent
            if read is not None and abs(read - self.plan.soc_percent[0]) >= 0.5:  # clipped into the declared window
                line += f", {read:.0f}%, outside the declared {self.battery.min_soc_percent:g}-{self.battery.max_soc_percent:g}% window"
            return line
        return (f"{soc}, the configured start (initial_soc): no battery_soc_percent reading in the "
                f"{FRESH_READING / pd.Timedelta(hours=1):g} h before {self.step_starts[0].tz_convert(self.timezone):%a %H:%M}")

    def _reserve_summary(self) -> ReserveFigures:
        """The cap and what the policy keeps now, and over the plan's steps, with no car charging."""
        policy = self.policy
        rows = [policy.row(ts) for ts in self.step_starts]
        waiting = np.array([policy.floor_kwh[r, 0] for r in rows if r is not None]) - self.battery.min_kwh
        # Under a policy the cap on every step of the demand window is the plan's peak already paid for (commands()).
        return ReserveFigures(
            cap_kw=round(float(self.inputs.peak_so_far_kw), 4), states=policy.states,
            one_session_a_day=policy.one_session_a_day,
            floor_above_min_kwh_now=round(float(waiting[0]), 3) if len(waiting) else None,
            floor_above_min_kwh_lowest=round(float(waiting.min()), 3) if len(waiting) else None,
            floor_above_min_kwh_highest=round(float(waiting.max()), 3) if len(waiting) else None,
            guard=self.guard)

    def to_json(self) -> str:
        return json.dumps({**self.summary().to_dict(), "plan": self.table()}, indent=2)


def expected_valued_cost(decision: Decision, plan_of: Callable[[DispatchPlan, HorizonInputs], DispatchPlan]) -> float:
    """What the plans ``plan_of(scenario's plan, its forecast)`` cost over a decision's
    scenarios (:meth:`Decision.expected_cost`: energy and wear weighted, the worst demand
    charge) less the probability-weighted value of the energy each leaves stored."""
    forecasts = decision.scenario_inputs or (decision.inputs,)
    stored = [plan_of(plan, inputs).stored_value for plan, inputs in zip(decision.plans, forecasts, strict=True)]
    return decision.expected_cost(lambda plan, inputs: plan_of(plan, inputs).costs) - float(np.dot(decision.weights, stored))


def _month_start(at: pd.Timestamp, timezone: str) -> pd.Timestamp:
    local = at.tz_convert(timezone)
    return local.normalize().replace(day=1).tz_convert("UTC")


def _history_start(start: pd.Timestamp, timezone: str) -> pd.Timestamp:
    """The oldest reading a plan reads: the forecasters' days, and the guard's weeks before the
    month began (its cap is fitted at the month's start, see :func:`fit_site_guard`)."""
    return min(start, _month_start(start, timezone)) - HISTORY_SPAN


def state_from_readings(store: CloudStore, config: SimulatorConfig, start: pd.Timestamp, step: pd.Timedelta) -> SiteState | None:
    """SOC, month peak, load and PV history from stored readings; None when there are none."""
    since = _history_start(start, config.timezone)
    readings = store.read_readings(config.device_id, start=since, stop=start + pd.Timedelta(seconds=1))
    if readings.empty:
        return None
    site = site_record(config)
    steps = site_steps(readings, site, step)
    load, pv = steps[dd.LOAD_TOTAL], steps[dd.SOLAR_KW]
    if load.isna().all():
        raise UsageError(f"{config.device_id}: no house load: {no_load_reason(filled_columns(readings), site)}")
    energy, read_at, read = None, None, None
    capacity = held_capacity_kwh(config, readings[dd.BATTERY_HEALTH].dropna())
    measured = readings[readings[dd.BATTERY_SOC].notna()]  # a meter without a battery reports no SOC
    if not measured.empty and start - pd.Timestamp(measured[dd.TS].iloc[-1]) <= FRESH_READING:
        read_at, read = pd.Timestamp(measured[dd.TS].iloc[-1]), float(measured[dd.BATTERY_SOC].iloc[-1])
        energy = read / 100.0 * (config.battery.capacity_kwh if capacity is None else capacity)
    grid = grid_kw(steps, site)
    billed = (grid.index > _month_start(start, config.timezone)) & billed_peak_steps(config, grid.index)
    peak = float(np.nanmax(grid[billed].to_numpy(), initial=0.0))
    return SiteState(energy, max(peak, 0.0), load.dropna(), "readings", pv.dropna(), read_at, read, capacity)


#: Health readings below this are taken for another unit (a fraction, not a percent) rather
#: than a battery in service at under half its capacity.
LOWEST_HEALTH_PERCENT = 50.0


def held_capacity_kwh(config: SimulatorConfig, health_percent: pd.Series) -> float | None:
    """What the battery holds now: its nominal capacity times its newest health reading, of
    which a battery's SOC is a share (a BMS reports SOC of the capacity it has left, so a
    plan on the nominal one counts kWh it cannot give); None without a plausible reading."""
    if health_percent.empty or not LOWEST_HEALTH_PERCENT <= float(health_percent.iloc[-1]) <= 100.0:
        return None
    return config.battery.capacity_kwh * float(health_percent.iloc[-1]) / 100.0


def state_from_simulator(config: SimulatorConfig, start: pd.Timestamp, step: pd.Timedelta) -> SiteState:
    history = pd.date_range(_history_start(start, config.timezone), start, freq=step)
    actuals = fc.site_actuals(config, history)
    return SiteState(None, 0.0, actuals[fc.LOAD], "simulator", actuals[fc.PV])


def fit_site_guard(config: SimulatorConfig, state: SiteState, start: pd.Timestamp, spec: BatterySpec) -> peak_guard.GuardRule | None:
    """The peak guard of a site, as the backtest fits it: on the weeks before the
    billing month began, and once the month's peak has passed that cap, again on the weeks
    before ``start`` with no cap below the peak. (A cap fitted afresh at every hourly plan
    would slide with the window and differ from the one measured.) None without a battery or
    :data:`GUARD_MIN_DAYS` days of load and PV readings."""
    if spec.max_kwh <= spec.min_kwh or state.pv_history_kw is None:
        return None
    history = pd.DataFrame({fc.LOAD: state.load_history_kw, fc.PV: state.pv_history_kw}).dropna()

    def fitted(at: pd.Timestamp, peak_kw: float) -> peak_guard.GuardRule | None:
        past = history.loc[at - peak_guard.FIT_DAYS * fc.DAY : at].iloc[1:]
        if len(past) < 2 or past.index[-1] - past.index[0] < pd.Timedelta(days=GUARD_MIN_DAYS):
            return None
        return peak_guard.fit_guard(past[fc.LOAD], past[fc.PV], spec, config, peak_kw)

    rule = fitted(_month_start(start, config.timezone), 0.0)
    if guard_outdated(rule, state.peak_so_far_kw):
        rule = fitted(start, state.peak_so_far_kw)
    return rule


def site_policy(config: SimulatorConfig, state: SiteState, start: pd.Timestamp, spec: BatterySpec, cap_kw: float,
                settings: PlanSettings, guard: peak_guard.GuardRule, measured: MeasuredPV | None = None,
                forecaster: fc.Forecaster | None = None) -> reserve.Fitted:
    """The reserve policy in force at ``start``: the one solved at the local midnight before it
    on the readings before that midnight, as the backtest solves it, whatever hour the plan is
    made (re-solving it every hour carries the naive forecast's mid-session anomaly into a
    program that prices the session's house level already, and was measured to cost seed 42's
    June 24 points of capture). It looks half a day past the plan's end: 36 hours from midnight
    for a day's plan made at midnight, as in the backtest. Its house load and prices are the
    ones ``forecaster``, the site's, gives (forecasters.house_load_kw, forecasters.known_prices);
    a home without a car keeps the standing reserve of ``guard``, the cap's fit, instead of the
    program's thresholds."""
    midnight = start.tz_convert(config.timezone).normalize().tz_convert("UTC")
    horizon = max(reserve.HORIZON, start + pd.Timedelta(hours=settings.horizon_hours + 12) - midnight)
    return reserve.fit(config, state.load_history_kw, midnight, spec, cap_kw, settings.step, horizon, measured,
                       forecaster, guard.standing_reserve_kwh)


def measured_pv(state: SiteState, inputs: SiteInputs) -> MeasuredPV:
    """What a declared site's PV forecast is made from: its measured PV and the weather
    forecasts of its inputs (:meth:`SiteInputs.weather_forecast`)."""
    pv = state.pv_history_kw if state.pv_history_kw is not None else pd.Series(dtype=float)
    return MeasuredPV(pv, inputs.weather_forecast())


def known_at(made_at: pd.Timestamp, start: pd.Timestamp, step: pd.Timedelta) -> pd.Timestamp:
    """What a plan's forecasts may know (the module says why): ``made_at`` for a plan of the
    step under way or a later one, ``start`` for a plan of a step already past."""
    return made_at if made_at < start + step else start


def check_not_beyond_history(start: pd.Timestamp, issued_at: pd.Timestamp) -> None:
    """Refuse a start whose plan could know nothing: a plan of a later step forecasts from what
    is known when it is made (:func:`known_at`) and reads only the :data:`HISTORY_SPAN` before
    its start (:func:`_history_start`), so a start further ahead leaves no reading at or before
    now to forecast from, whether the site's history is stored or simulated."""
    if start - issued_at > HISTORY_SPAN:
        raise UsageError(f"--start {dd.format_ts(start)}: {(start - issued_at).days} days after now; a plan forecasts from "
                         f"what is known when it is made and reads the {HISTORY_SPAN.days} days before its start; expected "
                         f"a start at most {HISTORY_SPAN.days} days ahead")


def plan_site(config: SimulatorConfig, settings: PlanSettings, store: CloudStore | None = None,
              declared: bool = False, outside: SiteInputs | None = None) -> SitePlan:
    """Forecast, optimise and value the next horizon of one site; a ``declared`` site (one
    with no simulator behind it) only from its readings and its ``outside`` inputs (default:
    its stored declaration's, :func:`cloud.live.inputs.stored_site_inputs`)."""
    issued_at = dd.utc_now()
    start = pd.Timestamp(settings.start if settings.start is not None else issued_at)
    start = local_floor(local_instant(start, config.timezone, "--start"), settings.step, config.timezone)
    check_not_beyond_history(start, issued_at)
    config = config.model_copy(update={"interval_seconds": settings.step_minutes * 60})
    state = state_from_readings(store, config, start, settings.step) if store is not None else None
    if state is None and declared:
        where = store.label if store is not None else "no cloud store"
        newest = (store.reading_stats().get(config.device_id, {}).get(s.LAST_TS) if store is not None else None)
        if newest is not None and pd.Timestamp(newest) < start:
            raise UsageError(f"{config.device_id}: no readings in the {(start - _history_start(start, config.timezone)).days} "
                             f"days before {dd.format_ts(start)} in {where}; its newest is {dd.format_ts(newest)}: plan "
                             f"after it with run_optimizer.py --device-id {config.device_id} --start {dd.format_ts(newest)}")
        later = ", or plan from a later --start" if settings.start is not None else ""  # planned from now: no later
        raise UsageError(f"{config.device_id}: no readings before {dd.format_ts(start)} in {where} to plan from; import "
                         f"its meter data with run_cloud_sync.py --import FILE --site FILE{later}")
    state = state or state_from_simulator(config, start, settings.step)
    history = pd.DataFrame({fc.LOAD: state.load_history_kw})
    if declared and outside is None:
        outside = stored_site_inputs(store, config.device_id) if store is not None else None
        outside = outside or SiteInputs(store, config.device_id, config.timezone)
    measured = measured_pv(state, outside) if declared else None
    forecaster = fc.make_forecaster(settings.forecaster, config, history, store=store, model_dir=settings.model_dir,
                                    measured=measured, issued_from=start, step=settings.step,
                                    horizon=settings.step * settings.steps,
                                    wholesale=outside.wholesale if outside is not None else None)
    step_starts = pd.date_range(start, periods=settings.steps, freq=settings.step)
    spec = battery_spec(config, state.energy_kwh, settings.wear_cost_per_kwh, state.capacity_kwh)
    guarded = carries_policy(config) and wants_reserve_policy(settings.execution, forecaster)
    guard = fit_site_guard(config, state, start, spec) if guarded else None
    strategy = choose_strategy(settings.execution, forecaster, guard is not None)
    # Below the guard's cap imports cost nothing more: the battery defends it at every reading.
    peak = state.peak_so_far_kw if guard is None else max(state.peak_so_far_kw, guard.target_kw)
    decision = plan_at(forecaster, known_at(issued_at, start, settings.step), step_starts + settings.step, config,
                       settings, spec, peak, strategy=strategy)
    fitted = None if guard is None else site_policy(config, state, start, spec, peak, settings, guard, measured, forecaster)
    policy = None if fitted is None else fitted.policy
    net_history = None if state.pv_history_kw is None else (state.load_history_kw - state.pv_history_kw).dropna()
    inputs = decision.inputs
    policy_plan = None if policy is None else reserve.expected_dispatch(policy, inputs, spec, step_starts, inputs.peak_so_far_kw,
                                                                       config.timezone)
    return SitePlan(
        device_id=config.device_id, timezone=config.timezone, issued_at=issued_at, step_starts=step_starts,
        forecaster=forecaster.name, state_source=state.source, inputs=inputs, battery=spec, decision=decision,
        no_battery=cost_without_battery(inputs), self_consumption=self_consumption_dispatch(inputs, spec),
        execution=settings.execution, guard=guard, policy=policy, cap_floor_kw=cap_floor_kw(net_history, start, spec, config),
        policy_plan=policy_plan, currency=config.currency_code,
        over_arrivals=None if fitted is None else fitted.expected_costs(policy.row(start), spec.initial_kwh, spec.min_kwh),
        held_for_car=None if fitted is None else reserve.held_for_car(fitted, step_starts, spec.min_kwh),
        forecaster_reason=forecaster.reason,
        stale={**(dict(outside.stale) if outside is not None else {}), **readings_stale(state, start)},
        soc_read_at=state.soc_read_at, soc_read_percent=state.soc_read_percent,
    )


def readings_stale(state: SiteState, start: pd.Timestamp) -> dict[str, str]:
    """``{"readings": "stale since …"}`` where the site's newest load reading is older than
    :data:`FRESH_READING` at the plan's start, else {}: a gateway that stopped sending, or a
    utility's download that ends a day before, leaves the forecasts carrying on from older
    days, and the owner is told wherever the plan is shown."""
    if state.source != "readings" or state.load_history_kw.empty:
        return {}
    newest = pd.Timestamp(state.load_history_kw.index[-1])
    if start - newest <= FRESH_READING:
        return {}
    return {"readings": f"stale since {newest:%Y-%m-%dT%H:%MZ} (the newest, {duration(start - newest)} before the "
                        "plan's start: the forecasts carry on from the days before it)"}


def write_plan(store: CloudStore, site_plan: SitePlan) -> int:
    """Store the plan in ``dispatch_plans`` and its owner's summary beside it (upserts: writing
    them again changes nothing)."""
    rows = store.upsert_frame(s.PLANS, site_plan.rows())
    write_summary(store, plan_summary(site_plan))
    return rows


def run_plan(config: SimulatorConfig, settings: PlanSettings, store: CloudStore, declared: bool = False,
             outside: SiteInputs | None = None) -> SitePlan:
    """The plan job: plan, store, and record the run in ``pipeline_runs``."""
    def work():
        site_plan = plan_site(config, settings, store, declared, outside)
        return site_plan, write_plan(store, site_plan)

    return recorded_run(store, JOB, {"device_id": config.device_id, "forecaster": settings.forecaster}, work)


@dataclass(frozen=True)
class StoredSite:
    config: SimulatorConfig  # what the optimizer reads the site in
    declared: bool  # a real site (a declaration, or a gateway reading its device), not a simulated one


def stored_sites(store: CloudStore, device_id: str | None = None) -> dict[str, StoredSite]:
    """Every site the cloud store describes, by device id: a declared site as its declaration
    plans it (:func:`site_file.planning_config`), a simulated one as its configuration. A
    declaration this version no longer reads is refused for ``device_id`` alone; another is
    left out with a warning, so that one row never stops every other site's plans."""
    sites = {}
    for row in sorted(store.sites(), key=lambda row: row[dd.DEVICE_ID]):
        try:
            declaration = declared_site(row)
        except ConfigError as error:
            if row[dd.DEVICE_ID] == device_id:
                raise
            log.warning("not planned: %s", error)
            continue
        if declaration is not None:
            sites[row[dd.DEVICE_ID]] = StoredSite(planning_config(declaration), True)
        elif row.get("config_json"):
            config = build_config(json.loads(row["config_json"]), source=f"site {row[dd.DEVICE_ID]} in the cloud store")
            # A gateway reading a real device is a real site: planned from its readings only.
            sites[row[dd.DEVICE_ID]] = StoredSite(config, config.reads_device)
    return sites


#: How many of the newest optimizer runs ``--status`` looks through for devices it has no site for.
STATUS_RUNS = 500


def plan_status(store: CloudStore, since: pd.Timestamp) -> dict:
    """The last optimizer runs and, per site the store knows (a ``sites`` row or readings), its
    newest plan if it was issued since ``since`` (a plan of past days, ``--start`` inside a
    meter's history, counts by when it was issued). Devices the store does not know that the
    last :data:`STATUS_RUNS` optimizer runs planned (``--config`` files) are named apart if
    they have a plan since ``since``: found from the runs, not by reading a week of every
    site's plans, which for a fleet planned hourly is millions of rows."""
    runs = store.runs(JOB, limit=STATUS_RUNS)
    known = {row[dd.DEVICE_ID] for row in store.sites()} | set(store.reading_stats())
    planned = {(run.get(s.DETAILS) or {}).get(dd.DEVICE_ID) for run in runs} - known - {None}
    unknown = sorted(d for d in planned if (issued := store.newest(s.PLANS, s.ISSUED_AT, {dd.DEVICE_ID: d})) is not None
                     and issued >= since)
    latest = []
    for device in sorted(known):
        issued = store.newest(s.PLANS, s.ISSUED_AT, {dd.DEVICE_ID: device})
        if issued is None or issued < since:
            continue
        newest = store.read_frame(s.PLANS, {dd.DEVICE_ID: device, s.ISSUED_AT: issued})
        latest.append({
            dd.DEVICE_ID: device, "issued_at": dd.format_ts(issued),
            "first_step": dd.format_ts(newest[dd.TS].min()), "steps": len(newest),
            "expected_cost": float(newest[s.EXPECTED_COST].sum()),
        })
    return {
        "cloud": store.label,
        "last_run": runs[0] if runs else None,
        "last_error": next((r for r in runs if r.get(s.ERROR)), None),
        "plans": latest,
        "plans_of_unknown_sites": unknown,
    }
