"""What a plan is worth: the energy it leaves in the battery is valued, and a plan that costs
more than the battery's own rule on the same forecast is never sent."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from cloud.optimization import forecasters as fc
from cloud.optimization.decision import Decision, battery_spec, horizon_inputs
from cloud.optimization.lp import new_solver, solve_dispatch
from cloud.optimization.model import BatterySpec, HorizonInputs
from cloud.optimization.plan import DispatchPlan, build_plan
from cloud.optimization.planner import PlanSettings, SitePlan, plan_site
from cloud.optimization.reference import cost_without_battery, self_consumption_dispatch
from cloud.optimization.stochastic import solve_scenarios
from cloud.optimization.summary import PlanSummary, plan_summary
from der_core.config import SimulatorConfig

TOL = 1e-6


def energy_value(inputs: HorizonInputs, battery: BatterySpec, plan: DispatchPlan) -> float:
    """The stored energy a plan gains (negative: spends) at the horizon's cheapest import
    price times the discharge efficiency, written out here apart from the code under test."""
    gained_kwh = (plan.soc_percent[-1] - plan.soc_percent[0]) / 100.0 * battery.capacity_kwh
    return max(float(inputs.import_price_per_kwh.min()), 0.0) * battery.discharge_efficiency * gained_kwh


def site_plan_of(decision: Decision, battery: BatterySpec) -> SitePlan:
    """A site's plan around ``decision``, on its forecast."""
    inputs = decision.inputs
    steps = pd.date_range("2024-06-15T07:00Z", periods=inputs.steps, freq=pd.Timedelta(hours=inputs.step_hours))
    return SitePlan(
        device_id="home-1", timezone="UTC", issued_at=steps[0], step_starts=steps, forecaster="test",
        state_source="simulator", inputs=inputs, battery=battery, decision=decision,
        no_battery=cost_without_battery(inputs), self_consumption=self_consumption_dispatch(inputs, battery),
    )


def test_a_guarded_plan_that_empties_the_battery_pays_for_the_energy_it_takes():
    """The default site with its car, planned guarded: the battery under the reserve policy
    ends the day near its minimum, and its savings count the energy spent at its value."""
    site = plan_site(SimulatorConfig(), PlanSettings(start=pd.Timestamp("2024-06-15T00:00")))
    assert site.policy is not None
    plan, inputs, battery = site.plan, site.inputs, site.battery
    spent = energy_value(inputs, battery, plan)
    assert spent < -0.1, "the case no longer empties the battery"
    assert site.savings_vs_no_battery == pytest.approx(site.no_battery.total - (plan.total_cost - spent), abs=TOL)
    rule = site.self_consumption
    rule_cost = rule.total_cost - energy_value(inputs, battery, rule)
    assert site.savings_vs_self_consumption == pytest.approx(rule_cost - (plan.total_cost - spent), abs=TOL)
    summary = site.summary()
    assert summary.stored_energy_value == pytest.approx(spent, abs=TOL)
    assert summary.savings_vs_no_battery == pytest.approx(site.savings_vs_no_battery)
    assert site.published == "plan"


def rule_wins_inputs() -> tuple[HorizonInputs, BatterySpec]:
    """A full battery, a cheap first hour, dear evening hours and no PV: the plan must end as
    full as it started, so it can only idle, while the rule covers the dear load and leaves
    energy worth only the cheap hour's price behind."""
    price = np.r_[np.full(4, 0.10), np.full(12, 0.45)]
    inputs = HorizonInputs(load_kw=np.full(16, 2.0), pv_kw=np.zeros(16), import_price_per_kwh=price,
                           export_price_per_kwh=np.full(16, 0.04))
    return inputs, BatterySpec(initial_soc_percent=90.0, wear_cost_per_kwh=0.02)


def test_a_plan_worse_than_the_rule_is_not_sent_and_the_rule_is():
    inputs, battery = rule_wins_inputs()
    site = site_plan_of(Decision(solve_dispatch(inputs, battery), inputs), battery)
    made, rule = site.decision.first, site.self_consumption
    made_cost = made.total_cost - energy_value(inputs, battery, made)
    rule_cost = rule.total_cost - energy_value(inputs, battery, rule)
    assert made_cost > rule_cost + 0.1, "the case no longer has the rule win"
    schedule = site.schedule()
    assert all(entry.power_kw is None and entry.import_limit_kw is None for entry in schedule.entries)
    assert schedule.reserve is None and "reserve" not in schedule.to_dict()
    assert site.plan is rule and site.savings_vs_self_consumption == pytest.approx(0.0, abs=TOL)
    assert site.published == "rule" and "rule" in site.published_reason
    summary = site.summary()
    assert (summary.published, summary.reserve) == ("rule", None)
    assert summary.to_dict()["cost"]["total"] == pytest.approx(rule.total_cost)
    np.testing.assert_allclose(site.rows()["battery_power_kw"], rule.battery_power_kw)
    # The owner reads the rule's bill as the rule's: "the plan saves $0.00 more" compared it with itself.
    shown = plan_summary(site)
    line = shown.savings_line()
    assert "with the battery's own rule, which is sent" in line and "more" not in line, line
    assert PlanSummary.from_dict(shown.to_dict()).savings_line() == line


def test_a_plan_no_worse_than_the_rule_is_sent():
    inputs, battery = rule_wins_inputs()
    battery = BatterySpec(initial_soc_percent=50.0, wear_cost_per_kwh=0.02)
    site = site_plan_of(Decision(solve_dispatch(inputs, battery), inputs), battery)
    assert site.published == "plan" and site.published_reason is None and site.plan is site.made
    assert site.savings_vs_self_consumption >= -TOL
    assert any(entry.power_kw is not None for entry in site.schedule().entries)


def draining_plan(inputs: HorizonInputs, battery: BatterySpec) -> DispatchPlan:
    """Discharge as hard as the window allows from the first step: a plan that empties the battery."""
    power = np.zeros(inputs.steps)
    energy = battery.initial_kwh
    for t in range(inputs.steps):
        power[t] = -min(battery.max_discharge_kw, (energy - battery.min_kwh) * battery.discharge_efficiency / inputs.step_hours)
        energy += power[t] / battery.discharge_efficiency * inputs.step_hours
    return build_plan(inputs, battery, np.zeros(inputs.steps), -power, status="drain")


def test_no_published_plan_spends_unvalued_energy_or_costs_more_than_the_rule():
    """200 days of random sites, start dates, states of charge and peaks so far, planned by
    the LP, by a scenario plan and by a plan that empties the battery: what is published either ends with no less energy than it started with
    or has that energy valued in its savings, and its valued cost (over the scenarios, for a
    scenario plan) is never above the battery's own rule's on the same forecast."""
    rng = np.random.default_rng(20240615)
    highs = new_solver()
    published = {"plan": 0, "rule": 0}
    for _ in range(200):
        config = SimulatorConfig(seed=int(rng.integers(1_000_000)), device_id=f"home-{int(rng.integers(1000))}")
        day = pd.Timestamp("2024-01-01", tz=config.timezone) + pd.Timedelta(days=int(rng.integers(366)))
        instants = pd.date_range(day.tz_convert("UTC") + pd.Timedelta(minutes=15), periods=96, freq="15min")
        frame = fc.site_actuals(config, instants)
        inputs = horizon_inputs(frame, config, 0.25, float(rng.uniform(0.0, 8.0)))
        battery = battery_spec(config, float(rng.uniform(0.05, 0.95)) * config.battery.capacity_kwh, 0.02)
        kind = rng.integers(3)
        if kind == 0:
            site = site_plan_of(Decision(solve_dispatch(inputs, battery, highs=highs), inputs), battery)
        elif kind == 1:
            scenarios = [inputs] + [HorizonInputs(**{**_fields(inputs), "load_kw": inputs.load_kw * rng.uniform(0.7, 1.6, inputs.steps)})
                                    for _ in range(2)]
            site = site_plan_of(Decision(solve_scenarios(scenarios, battery, shared_steps=4, highs=highs), inputs,
                                         scenario_inputs=tuple(scenarios)), battery)
        else:
            site = site_plan_of(Decision(draining_plan(inputs, battery), inputs), battery)
        plan, rule = site.plan, site.self_consumption
        spent = energy_value(inputs, battery, plan)
        if plan.soc_percent[-1] < plan.soc_percent[0] - 1e-9:
            assert site.savings_vs_no_battery == pytest.approx(site.no_battery.total - plan.total_cost + spent, abs=TOL)
        expected = site.expected_over_scenarios()
        if expected is not None and plan is not rule:
            assert expected.savings_vs_self_consumption >= -TOL
        else:
            rule_cost = rule.total_cost - energy_value(inputs, battery, rule)
            assert plan.total_cost - spent <= rule_cost + TOL
        published["rule" if plan is rule else "plan"] += 1
    assert min(published.values()) > 0, f"every day published the same way: {published}"


def _fields(inputs: HorizonInputs) -> dict:
    names = ("load_kw", "pv_kw", "import_price_per_kwh", "export_price_per_kwh", "carbon_intensity_g_per_kwh", "step_hours",
             "import_limit_kw", "export_limit_kw", "demand_charge_per_kw", "peak_so_far_kw", "carbon_price_per_kg")
    return {name: getattr(inputs, name) for name in names}


def test_a_battery_that_cannot_discharge_is_credited_nothing_for_what_it_stores():
    """A battery with max_discharge_rate_kw 0 never gives its energy back, yet the plan valued
    what it stored at the cheapest import less the loss: the LP filled it from PV surplus that
    could have been exported, and the plan and the backtest counted the fill as a saving."""
    steps = 8
    inputs = HorizonInputs(load_kw=np.full(steps, 0.5), pv_kw=np.full(steps, 4.0), import_price_per_kwh=np.full(steps, 0.30),
                           export_price_per_kwh=np.full(steps, 0.05), step_hours=1.0)
    sealed = BatterySpec(capacity_kwh=10.0, initial_soc_percent=20.0, max_discharge_kw=0.0, wear_cost_per_kwh=0.0)
    plan = solve_dispatch(inputs, sealed)
    assert plan.stored_value == 0.0 and plan.battery_power_kw.max() == pytest.approx(0.0, abs=TOL)  # exports it all
    filled = build_plan(inputs, sealed, np.full(steps, 1.0), np.zeros(steps), status="stores")
    assert filled.stored_value == 0.0 and filled.valued_cost == pytest.approx(filled.costs.total)
    # The same battery able to give its energy back is credited as before.
    usable = dataclasses.replace(sealed, max_discharge_kw=5.0)
    credited = build_plan(inputs, usable, np.full(steps, 1.0), np.zeros(steps), status="stores")
    assert credited.stored_value == pytest.approx(0.30 * usable.discharge_efficiency * usable.charge_efficiency * steps)
