"""What a reserve policy is worth over car arrivals (cloud/optimization/reserve_dp.evaluate,
reserve.Fitted, planner.SitePlan.over_arrivals): the evaluator against the optimiser it shares
its recursion with, the policy sent against the battery's own rule by the same program, and
what the owner reads."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from cloud.optimization import planner
from cloud.optimization.planner import PlanSettings, plan_site
from cloud.optimization.reserve_dp import backward, evaluate, limits
from cloud.optimization.summary import PlanSummary, hold_line, plan_summary
from der_core.config import build_config
from der_core.sites import site_configs

#: Whole-kW instances as in test_optimization_reserve: every move lands on an energy level.
E = np.arange(5) * 0.25
LEVELS = np.arange(0.0, 25.0)


def _program(rng: np.random.Generator, cap_kw: float, demand: float) -> tuple:
    T = 4
    return (rng.integers(1, 4, T).astype(float), np.zeros(T), rng.choice([0.1, 0.3, 0.5], T), np.zeros(T),
            rng.choice([0.0, 0.3, 1.0], T), rng.random(T) < 0.3, np.array([0.5, 0.9])[: rng.integers(1, 3)], 3.0,
            bool(rng.random() < 0.5), E, 1.0, 1.0, 2.0, 2.0, 0.25, float(rng.choice([0.0, 0.02])), cap_kw, demand,
            LEVELS, float(rng.choice([0.0, 0.2])), np.ones(1), np.ones(1), np.zeros(3),
            np.ones(3) / 3, rng.random(T) < 0.7)  # the last: the steps of the tariff's demand window


@pytest.mark.parametrize("seed", range(30))
def test_the_evaluator_on_the_optimal_thresholds_gives_the_optimisers_value_where_the_optimum_is_thresholds(seed):
    """No cap in reach and no PV: the best move is the thresholds' move, so valuing the
    thresholds read off the optimum must give the optimum's own value, state by state."""
    args = _program(np.random.default_rng(seed), cap_kw=100.0, demand=0.0)
    optimum, after = backward(*args)
    floor, charge_to = limits(after, args[2], E, 1.0, 1.0, args[15])
    followed, _ = evaluate(*args, floor_kwh=floor, charge_to_kwh=charge_to)
    np.testing.assert_allclose(followed, optimum, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_no_thresholds_beat_the_optimum_and_the_rule_is_valued_by_the_same_program(seed):
    """With a demand charge in reach the optimum is no longer a pair of thresholds, but the
    recursion is one: any thresholds, the rule's included, cost at least the optimum."""
    args = _program(np.random.default_rng(seed), cap_kw=3.0, demand=2.0)
    optimum, after = backward(*args)
    floor, charge_to = limits(after, args[2], E, 1.0, 1.0, args[15])
    rule = np.zeros_like(floor)
    for tables in ((floor, charge_to), (rule, rule), (np.full_like(floor, E[2]), rule)):
        followed, _ = evaluate(*args, floor_kwh=tables[0], charge_to_kwh=tables[1])
        assert np.all(followed >= optimum - 1e-9)


def _guarded(config, start: str):
    return plan_site(config, PlanSettings(start=pd.Timestamp(start), execution="guarded"))


SITE_DAYS = [(1, "2024-06-15T00:00"), (7, "2024-07-03T06:00"), (23, "2024-01-20T17:00")]


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "start"), SITE_DAYS)
def test_the_policy_sent_costs_no_more_than_the_rule_over_car_arrivals(seed, start):
    site_plan = _guarded(build_config({"seed": seed}), start)
    assert site_plan.policy is not None and site_plan.over_arrivals is not None
    policy_cost, rule_cost = site_plan.over_arrivals
    if site_plan.published == planner.PUBLISHED_PLAN:
        assert policy_cost <= rule_cost + planner.RULE_TOLERANCE * max(1.0, abs(rule_cost))
    else:
        assert policy_cost > rule_cost and "over car arrivals" in site_plan.published_reason


def test_a_policy_dearer_than_the_rule_over_arrivals_is_not_sent():
    site_plan = _guarded(build_config({"seed": 1}), "2024-06-15T00:00")
    _, rule = site_plan.over_arrivals
    dearer = dataclasses.replace(site_plan, over_arrivals=(rule + 1.0, rule))
    assert dearer.published == planner.PUBLISHED_RULE
    assert "over car arrivals" in dearer.published_reason
    assert plan_summary(dearer).hold is None


@pytest.mark.slow
def test_the_seed_5_sites_state_both_expected_costs_and_the_policy_is_not_dearer():
    """The pipeline's ``--sites 2 --seed 5`` homes: a guarded plan a little dearer than the
    rule on the one no-car forecast now says what each costs over car arrivals."""
    shown = 0
    for config in site_configs(build_config({"seed": 5}), 2):
        site_plan = _guarded(config, "2024-06-15T12:00")
        if site_plan.policy is None:
            continue
        shown += 1
        summary = plan_summary(site_plan)
        cost, rule = site_plan.over_arrivals
        assert cost <= rule + planner.RULE_TOLERANCE * max(1.0, abs(rule))
        line = summary.arrivals_line()
        assert line in summary.lines()
        assert summary.money(cost) in line and summary.money(rule) in line
        detail = site_plan.summary().expected_over_arrivals
        assert detail.to_dict() == {"cost": cost, "cost_self_consumption": rule, "savings_vs_self_consumption": rule - cost}
        assert PlanSummary.from_dict(summary.to_dict()) == summary
    assert shown


def test_a_guarded_default_site_plan_says_what_it_holds_for_the_car():
    site_plan = _guarded(build_config({}), "2024-06-15T00:00")
    held, expected_at = site_plan.held_for_car
    summary = plan_summary(site_plan)
    local = expected_at.tz_convert(site_plan.timezone)
    assert summary.hold == f"hold {held:.1f} kWh for the car expected after {local:%a %H:%M}"
    assert f"  {summary.hold}" in summary.lines()
    before = site_plan.policy.row(expected_at) - 1
    assert held == pytest.approx(site_plan.policy.floor_kwh[before, 0] - site_plan.battery.min_kwh)
    assert held > 0.0 and site_plan.step_starts[0] < expected_at < site_plan.step_starts[-1]


def test_a_summary_stored_before_the_arrival_figures_reads_back_without_them():
    site_plan = _guarded(build_config({"seed": 1}), "2024-06-15T00:00")
    data = plan_summary(site_plan).to_dict()
    for key in ("arrivals_cost", "arrivals_cost_self_consumption", "arrivals_line", "hold"):
        data.pop(key)
    old = PlanSummary.from_dict(data)
    assert old.arrivals_cost is None and old.arrivals_line() is None and old.hold is None


def test_a_home_without_a_car_names_the_households_bursts_not_a_car():
    """Its policy hedges the household's bursts, so its plan says so: the expected costs are
    over the bursts, a hold is for them, and the stored summary reads back the same."""
    site_plan = _guarded(build_config({"home_load": {"has_ev": False}}), "2024-06-15T00:00")
    summary = plan_summary(site_plan)
    assert site_plan.policy.burst_kw is not None
    assert summary.arrivals_line().startswith("over the household's bursts (the policy's program): expected cost ")
    assert not any("car" in line for line in summary.lines())
    assert PlanSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary
    at = pd.Timestamp("2024-06-15T01:45Z")
    assert hold_line(2.34, at, "America/Los_Angeles", bursts=True) == (
        "hold 2.3 kWh for the household's bursts, one likely by Fri 18:45")
