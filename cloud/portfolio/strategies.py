"""The four strategies, run over one partition on the same inputs.

* ``no_battery``: batteries idle;
* ``rule_based``: the simulator's self-consumption rule, stepped by ``battery.run``;
* ``decentralised``: each site minimises its own bill day by day (``cloud.optimization``);
* ``central``: the aggregator's joint LP per coordination group within the fleet limits
  (:mod:`cloud.portfolio.central`), followed by the sites that hear it and choose to.

Every plan is replayed through the simulator's battery (:func:`inputs.replay`), so whatever a
planner asks, the physics (rates, SOC window, efficiency, cold derating, fade) decides what
happens. Plans cover one local day (midnight to midnight; a run that starts or ends within a
day has a shorter first or last plan) from the state the previous day's replay left: tariffs
and demand-response windows are set in local time, and a plan that ended as an evening
window opened could not prepare the batteries for it.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np

from cloud.optimization import BatterySpec, HorizonInputs, solve_many
from cloud.portfolio import central, participation
from cloud.portfolio.inputs import Outcome, PartitionInputs, replay, site_bills
from cloud.portfolio.scenario import FleetLimits, group_limit, group_share, local_clock
from der_physics import battery

STRATEGIES = ("no_battery", "rule_based", "decentralised", "central")
WINDOW_MARGIN = 1e-3  # plans keep this share of the SOC window spare: fade within a day shrinks it
WEAR_PER_KWH = 0.01
DR_CONFIDENCE_Z = 1.645  # standard deviations of the participation draws a DR plan keeps in hand (95 %, one-sided)
# What a DR day's plan may cost a site against its own rule, tried smallest first (money per site-day)
DR_BUDGETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def day_blocks(inputs: PartitionInputs) -> list[slice]:
    """The steps of each local day of the run, in order."""
    day, _ = local_clock(inputs.times, inputs.configs[0].timezone)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(day)) + 1, [len(day)]])
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(starts)]


@dataclass(frozen=True)
class Window:
    """A battery's limits at the start of a plan, from the simulator's state."""

    initial_kwh: np.ndarray
    min_kwh: np.ndarray
    max_kwh: np.ndarray
    usable_kwh: np.ndarray
    max_charge_kw: np.ndarray  # (sites, T) with cold derating from the ambient temperature

    @classmethod
    def of(cls, params: battery.BatteryParams, state: battery.BatteryState, env_temp: np.ndarray,
           usable: np.ndarray) -> Window:
        low, high = params.min_fraction * usable, params.max_fraction * usable * (1.0 - WINDOW_MARGIN)
        high = np.maximum(high, low)
        derate = np.clip(0.1 * np.minimum(env_temp, state.temperature_celsius[:, None]), 0.0, 1.0)
        return cls(np.clip(state.energy_kwh, low, high), low, high, usable, params.max_charge_kw[:, None] * derate)


def usable_after(params: battery.BatteryParams, trace: battery.BatteryTrace | None) -> np.ndarray:
    """Usable (faded) capacity at the end of a replayed trace, or nameplate before any."""
    if trace is None:
        return params.capacity_kwh.copy()
    return params.capacity_kwh * trace.health_percent[:, -1] / 100.0


def run_no_battery(inputs: PartitionInputs) -> Outcome:
    energy = np.repeat(inputs.initial_state().energy_kwh[:, None], inputs.steps, axis=1)
    return Outcome(np.zeros((inputs.n_sites, inputs.steps)), energy, inputs.load_kw)


def run_rule_based(inputs: PartitionInputs) -> Outcome:
    trace, _ = replay(inputs, inputs.initial_state(), np.full(inputs.load_kw.shape, np.nan), slice(None))
    return Outcome(trace.power_kw, trace.energy_kwh, inputs.load_kw)


def _site_specs(inputs: PartitionInputs, window: Window, rows: np.ndarray) -> list[BatterySpec]:
    p = inputs.params
    return [
        BatterySpec(
            capacity_kwh=float(window.usable_kwh[i]), max_charge_kw=float(window.max_charge_kw[i].min()),
            max_discharge_kw=float(p.max_discharge_kw[i]), charge_efficiency=float(p.charge_efficiency[i]),
            discharge_efficiency=float(p.discharge_efficiency[i]), min_soc_percent=100.0 * float(p.min_fraction[i]),
            max_soc_percent=100.0 * float(window.max_kwh[i] / window.usable_kwh[i]),
            initial_soc_percent=100.0 * float(window.initial_kwh[i] / window.usable_kwh[i]), wear_cost_per_kwh=WEAR_PER_KWH,
        )
        for i in rows
    ]


def run_decentralised(inputs: PartitionInputs) -> Outcome:
    """Each site's own cheapest day, planned with ``cloud.optimization.solve_many``."""
    state = inputs.initial_state()
    power, energy = np.zeros(inputs.load_kw.shape), np.zeros(inputs.load_kw.shape)
    rows = np.flatnonzero(inputs.params.capacity_kwh > 0)
    trace = None
    for cols in day_blocks(inputs):
        window = Window.of(inputs.params, state, inputs.env_temp_celsius[:, cols], usable_after(inputs.params, trace))
        horizons = [HorizonInputs(inputs.load_kw[i, cols], inputs.pv_kw[i, cols], inputs.price_per_kwh[i, cols],
                                  inputs.feed_in_per_kwh[i, cols], step_hours=inputs.step_hours) for i in rows]
        plans = solve_many(horizons, _site_specs(inputs, window, rows), errors="return") if len(rows) else []
        setpoint = np.full((inputs.n_sites, cols.stop - cols.start), np.nan)
        for i, plan in zip(rows, plans):
            if not isinstance(plan, Exception):
                setpoint[i] = plan.battery_power_kw
        trace, state = replay(inputs, state, setpoint, cols)
        power[:, cols], energy[:, cols] = trace.power_kw, trace.energy_kwh
    return Outcome(power, energy, inputs.load_kw)


@dataclass
class CentralLog:
    """What the aggregator planned and what the sites did, for the report."""

    planned_grid_kw: np.ndarray  # (sites, T): each site's expected net flow under the plan
    plan_battery_kw: np.ndarray  # (sites, T)
    followed: np.ndarray  # (sites, days) bool
    weights: np.ndarray  # (sites, days) the participation each day's plan counted on
    request_cost: np.ndarray  # (sites, days) what following each day's plan cost each site
    cap_slack_kwh: float = 0.0
    dr_slack_kwh: float = 0.0


@dataclass(frozen=True)
class CentralContext:
    limits: FleetLimits
    seed: int
    fleet_sites: int
    groups: tuple[range, ...]  # the partition's groups, in fleet site indices
    group_discharge_kw: tuple[float, ...]
    model: participation.ParticipationModel = participation.ParticipationModel()


def _group_problem(inputs, ctx, g, rows, cols, window, weights, fallback_grid, base_g, peak_kw) -> central.GroupProblem:
    lim = ctx.limits
    share = group_share(ctx.group_discharge_kw[g], len(rows), lim, ctx.fleet_sites)
    feed_in = inputs.feed_in_per_kwh[rows, cols]
    market = lim.market_price[cols]
    export_value = np.where(np.isnan(market), feed_in, np.maximum(feed_in, market))
    p = inputs.params
    return central.GroupProblem(
        net_kw=inputs.net_load_kw[rows, cols], import_price=inputs.price_per_kwh[rows, cols], export_value=export_value,
        step_hours=inputs.step_hours, initial_kwh=window.initial_kwh[rows], min_kwh=window.min_kwh[rows],
        max_kwh=window.max_kwh[rows], max_charge_kw=window.max_charge_kw[rows], max_discharge_kw=p.max_discharge_kw[rows],
        charge_efficiency=p.charge_efficiency[rows], discharge_efficiency=p.discharge_efficiency[rows],
        wear_per_kwh=WEAR_PER_KWH,
        cap_kw=group_limit(lim.cap_kw[cols], base_g, lim.baseline_kw[cols], share),
        target_kw=group_limit(lim.dr_target_kw[cols], base_g, lim.baseline_kw[cols], share),
        weights=weights[rows], fallback_kw=fallback_grid[rows],
        peak_price_per_kw=central.PEAK_PRICE_PER_KW, peak_floor_kw=peak_kw,
    )


def run_central(inputs: PartitionInputs, ctx: CentralContext) -> tuple[Outcome, CentralLog]:
    n, steps = inputs.load_kw.shape
    index = np.arange(inputs.first, inputs.first + n)
    deaf = participation.deaf_sites(ctx.seed, index, ctx.limits.deaf_share)
    state = inputs.initial_state()
    blocks = day_blocks(inputs)
    power, energy = np.zeros((n, steps)), np.zeros((n, steps))
    log = CentralLog(np.zeros((n, steps)), np.zeros((n, steps)), np.zeros((n, len(blocks)), dtype=bool),
                     np.zeros((n, len(blocks))), np.zeros((n, len(blocks))))
    request_cost = np.zeros(n)
    group_peak_kw = np.full(len(ctx.groups), -np.inf)  # each group's expected peak so far, the floor of its peak term
    highs = central.new_solver()
    trace = None
    for day, cols in enumerate(blocks):
        weights = ctx.model.probability(request_cost) if ctx.limits.participation else np.ones(n)
        window = Window.of(inputs.params, state, inputs.env_temp_celsius[:, cols], usable_after(inputs.params, trace))
        fallback, _ = replay(inputs, state, np.full((n, cols.stop - cols.start), np.nan), cols)
        fallback_grid = inputs.load_kw[:, cols] + fallback.power_kw - inputs.pv_kw[:, cols]
        plan_kw = np.zeros((n, cols.stop - cols.start))
        for g, members in enumerate(ctx.groups):
            rows = np.arange(members.start, members.stop) - inputs.first
            base_g = inputs.net_load_kw[rows, cols].sum(axis=0)
            problem = _group_problem(inputs, ctx, g, rows, cols, window, weights, fallback_grid, base_g, group_peak_kw[g])
            if ctx.limits.participation and np.isfinite(problem.target_kw).any():
                day_view = _day_view(inputs, cols, rows)
                problem, plan = _dr_plan(problem, fallback.energy_kwh[rows, -1], ctx.model, day_view, highs)
                weights[rows] = problem.weights
            else:
                plan = central.solve_group(problem, highs)
            group_peak_kw[g] = plan.peak_kw
            plan_kw[rows] = plan.battery_kw
            w = weights[rows, None]
            log.planned_grid_kw[rows, cols] = w * plan.grid_kw + (1.0 - w) * fallback_grid[rows]
            log.cap_slack_kwh += float(plan.cap_slack_kw.sum()) * inputs.step_hours
            log.dr_slack_kwh += float(plan.dr_slack_kw.sum()) * inputs.step_hours
        log.plan_battery_kw[:, cols] = plan_kw
        plan_grid = inputs.load_kw[:, cols] + plan_kw - inputs.pv_kw[:, cols]
        day_inputs = _day_view(inputs, cols)
        request_cost = _request_cost(day_inputs, plan_grid, fallback_grid)
        log.weights[:, day], log.request_cost[:, day] = weights, request_cost
        follow = ~deaf
        if ctx.limits.participation:
            follow &= participation.follows(ctx.model, request_cost, ctx.seed, index, day)
        log.followed[:, day] = follow
        trace, state = replay(inputs, state, np.where(follow[:, None], plan_kw, np.nan), cols)
        power[:, cols], energy[:, cols] = trace.power_kw, trace.energy_kwh
    return Outcome(power, energy, inputs.load_kw), log


@dataclass(frozen=True)
class _DayView:
    price_per_kwh: np.ndarray
    feed_in_per_kwh: np.ndarray
    step_hours: float


def _day_view(inputs: PartitionInputs, cols: slice, rows: np.ndarray | slice = slice(None)) -> _DayView:
    return _DayView(inputs.price_per_kwh[rows, cols], inputs.feed_in_per_kwh[rows, cols], inputs.step_hours)


def _request_cost(day: _DayView, plan_grid_kw: np.ndarray, fallback_grid_kw: np.ndarray) -> np.ndarray:
    """What following the plan costs each site that day against its own rule (never below 0)."""
    return np.maximum(site_bills(day, plan_grid_kw) - site_bills(day, fallback_grid_kw), 0.0)


def _dr_plan(problem: central.GroupProblem, fallback_end_kwh: np.ndarray, model: participation.ParticipationModel,
             day: _DayView, highs) -> tuple[central.GroupProblem, central.GroupPlan]:
    """A day with a DR window, planned so the participation it counts on holds by construction.

    A site follows with ``p(c)`` of what the plan costs it against its own rule, and ``p`` falls
    as ``c`` grows. So each site gets a budget ``b``, its bill row (the day's bill at most its
    rule's plus ``b``), and counts with weight ``p(b)``: whatever the plan asks of it, it follows
    with at least the planned probability. Weights guessed from what a plan costs cannot hold
    this: a plan re-posed with lower weights asks more of each follower, which costs more and
    lowers the weights again. The smallest budget of ``DR_BUDGETS`` whose plan meets the DR rows
    within every site's limit is taken (the least DR slack when none does): it spreads the
    request over many sites at a cost most of them accept. A site whose budget cannot hold keeps
    what the budgeted plan costs it as its limit, and ``p`` of that as its weight.

    The plan may end the day as low as the rule would leave the battery (within its window, never
    above the start): the cost counts the day's bill only, so energy the plan keeps for tomorrow
    that the rule spends today is money the site loses today.

    Whether each site follows is a coin toss, so the group's flow in a step scatters around its
    expectation with variance ``sum_i w_i (1 - w_i) (plan_i - fallback_i)^2``; the DR limit is
    lowered by ``DR_CONFIDENCE_Z`` of its standard deviations, so the group meets it in about
    95 % of draws (a one-sided normal bound) instead of half. The deviation is taken from the
    plan without the margin, then again from the plan with it, which asks more and so scatters
    more. Each group keeps its own margin, which over-covers a fleet of several independent
    groups rather than depend on partitioning."""
    problem = dataclasses.replace(problem, end_floor_kwh=np.clip(fallback_end_kwh, problem.min_kwh, problem.initial_kwh))
    fallback_bill = site_bills(day, problem.fallback_kw)
    best = None
    for budget in DR_BUDGETS:
        uniform = np.full(len(fallback_bill), budget)
        first = central.solve_group(_budgeted(problem, day, fallback_bill, uniform, model), highs)
        budgeted = _budgeted(problem, day, fallback_bill, uniform + first.bill_slack, model)
        plan = first
        for _ in range(2):
            margin = DR_CONFIDENCE_Z * _spread(budgeted.weights, plan, problem.fallback_kw)
            trial = dataclasses.replace(budgeted, target_kw=problem.target_kw - margin)
            plan = central.solve_group(trial, highs)
        if plan.dr_slack_kw.max() <= 0 and plan.bill_slack.max() <= 0:
            return trial, plan
        if best is None or plan.dr_slack_kw.sum() < best[1].dr_slack_kw.sum():
            best = trial, plan
    trial, plan = best  # the sites whose limit gave count with p of what they were asked after all
    return dataclasses.replace(trial, weights=model.probability(trial.bill_limit - fallback_bill + plan.bill_slack)), plan


def _budgeted(problem: central.GroupProblem, day: _DayView, fallback_bill: np.ndarray, budget: np.ndarray,
              model: participation.ParticipationModel) -> central.GroupProblem:
    """The problem with each site's bill limited to its rule's plus ``budget``, weighted ``p(budget)``."""
    return dataclasses.replace(problem, weights=model.probability(budget), bill_limit=fallback_bill + budget,
                               bill_feed_in=day.feed_in_per_kwh)


def _spread(weights: np.ndarray, plan: central.GroupPlan, fallback_kw: np.ndarray) -> np.ndarray:
    """Standard deviation of the group's flow per step over the participation draws."""
    w = weights[:, None]
    return np.sqrt((w * (1.0 - w) * (plan.grid_kw - fallback_kw) ** 2).sum(axis=0))
