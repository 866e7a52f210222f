"""The live decision (cloud/optimization/decision.py): which strategy, how a plan is carried
out, when the peak guard is refitted; and the forecasters it is chosen by."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cloud.evaluation.backtest import BacktestSettings
from cloud.optimization import forecasters as fc
from cloud.optimization.decision import (
    EXECUTIONS,
    REFIT_ABOVE_KW,
    Decision,
    Execution,
    Strategy,
    carries_policy,
    choose_strategy,
    commands_of,
    effective_execution,
    guard_outdated,
)
from cloud.optimization.guard import ArrivalWindows, GuardRule
from cloud.optimization.lp import solve_dispatch
from cloud.optimization.model import BatterySpec, HorizonInputs
from cloud.optimization.plan import DispatchPlan
from cloud.optimization.planner import PlanSettings, plan_site
from der_core.config import build_config
from der_core.errors import UsageError

CONFIG = build_config({"seed": 3, "interval_seconds": 900})
HISTORY = pd.DataFrame({fc.LOAD: [1.0, 1.2]}, index=pd.date_range("2024-06-01", periods=2, freq="15min", tz="UTC"))
NAIVE, PERFECT, MODELS = fc.NaiveForecaster(CONFIG, HISTORY[fc.LOAD]), fc.PerfectForecaster(CONFIG), fc.ModelsForecaster(CONFIG, None)


def test_executions_keep_the_names_flags_configs_and_stored_plans_use():
    assert [e.value for e in Execution] == ["guarded", "capped", "hybrid", "setpoints"]
    assert set(EXECUTIONS) == set(Execution)
    assert BacktestSettings().execution is Execution.GUARDED and PlanSettings().execution is Execution.GUARDED
    assert PlanSettings(execution="hybrid").execution is Execution.HYBRID  # a flag's string is the execution
    message = "execution 'manual': expected one of guarded, capped, hybrid, setpoints"
    for settings in (BacktestSettings, PlanSettings):
        with pytest.raises(UsageError, match=message):
            settings(execution="manual")


@pytest.mark.parametrize(("execution", "forecaster", "carries", "scenarios", "expected"), [
    ("guarded", NAIVE, True, True, Strategy.RESERVE_POLICY),
    ("guarded", NAIVE, True, False, Strategy.RESERVE_POLICY),  # the policy needs no scenarios
    ("guarded", MODELS, True, True, Strategy.RESERVE_POLICY),  # a learnt forecast cannot time a car either
    ("guarded", PERFECT, True, True, Strategy.SINGLE_PLAN),  # foresight times the car: plan on it
    ("guarded", NAIVE, False, True, Strategy.SCENARIO_PLAN),  # no car, or too few readings
    ("capped", NAIVE, True, True, Strategy.SCENARIO_PLAN),
    ("capped", NAIVE, True, False, Strategy.SINGLE_PLAN),
    ("hybrid", MODELS, True, True, Strategy.SINGLE_PLAN),  # no scenarios to plan over
    ("setpoints", PERFECT, False, True, Strategy.SINGLE_PLAN),
])
def test_one_rule_chooses_what_is_planned(execution, forecaster, carries, scenarios, expected):
    assert choose_strategy(Execution(execution), forecaster, carries, scenarios) is expected


def test_the_guard_is_refitted_once_the_months_peak_has_passed_its_cap():
    rule = GuardRule(target_kw=6.0, reserve_kwh=4.0, windows=ArrivalWindows((17.0, 21.0), (17.0, 21.0)))
    assert guard_outdated(None, 0.0)
    assert not guard_outdated(rule, 6.0 + REFIT_ABOVE_KW)  # within the margin: the cap still holds
    assert guard_outdated(rule, 6.0 + REFIT_ABOVE_KW + 1e-6)


def _plan() -> tuple[DispatchPlan, HorizonInputs]:
    """A day with cheap nights, a PV noon and a dear evening: the plan buys, stores and covers."""
    hours = np.arange(96) / 4
    pv = np.maximum(0.0, np.sin((hours - 6) / 12 * np.pi)) * 4.0
    price = np.where((hours >= 17) & (hours < 21), 0.45, np.where(hours < 6, 0.08, 0.2))
    inputs = HorizonInputs(np.full(96, 1.0), pv, price, np.full(96, 0.04), step_hours=0.25, demand_charge_per_kw=5.0)
    return solve_dispatch(inputs, BatterySpec(wear_cost_per_kwh=0.02)), inputs


@pytest.mark.parametrize("execution", list(Execution))
def test_each_execution_sends_what_its_entry_says(execution):
    plan, _ = _plan()
    power, cap = commands_of(plan, 0.5, execution)
    own_rule = np.isin(np.array(plan.actions), ("store", "discharge")) & (np.abs(plan.grid_kw) <= 1e-3)
    assert own_rule.any() and not own_rule.all(), "the plan should both follow and leave the battery's rule"
    if execution == "setpoints":
        np.testing.assert_array_equal(power, plan.battery_power_kw)
    elif execution == "guarded":
        assert np.isnan(power).all()
    else:
        np.testing.assert_array_equal(np.isnan(power), own_rule)
        np.testing.assert_array_equal(power[~own_rule], plan.battery_power_kw[~own_rule])
    if EXECUTIONS[execution].capped:
        np.testing.assert_array_equal(cap, np.full(96, max(plan.peak_import_kw, 0.5)))
    else:
        assert np.isnan(cap).all()


@pytest.mark.parametrize("execution", list(Execution))
def test_while_a_car_charges_only_the_capped_execution_holds_for_the_session(execution):
    plan, inputs = _plan()
    charging, idle = Decision(plan, inputs, charging_now=True), Decision(plan, inputs)
    held, _ = charging.commands(0.0, 0.0, execution)
    free, _ = idle.commands(0.0, 0.0, execution)
    if execution == "capped":
        assert not np.isnan(held).any() and (held >= 0).all() and (free < 0).any()
    else:
        np.testing.assert_array_equal(held, free)


def test_a_site_without_a_reserve_policy_carries_a_guarded_plan_out_capped():
    assert effective_execution(Execution.GUARDED, False) is Execution.CAPPED
    assert effective_execution(Execution.GUARDED, True) is Execution.GUARDED
    assert effective_execution(Execution.HYBRID, False) is Execution.HYBRID


def test_forecasters_are_found_by_name():
    assert isinstance(fc.make_forecaster("naive", CONFIG, HISTORY), fc.ScenarioForecaster)
    assert not isinstance(fc.make_forecaster("perfect", CONFIG, HISTORY), fc.ScenarioForecaster)
    assert fc.times_the_load(PERFECT) and not fc.times_the_load(NAIVE) and not fc.times_the_load(MODELS)
    with pytest.raises(UsageError, match="forecaster 'oracle': expected one of auto, naive, perfect, models"):
        fc.make_forecaster("oracle", CONFIG, HISTORY)


def test_a_guarded_car_site_planned_with_foresight_gets_a_plan_not_a_reserve_policy():
    start, config = pd.Timestamp("2024-06-15T00:00"), build_config({"seed": 1, "interval_seconds": 900})
    naive = plan_site(config, PlanSettings(start=start))
    perfect = plan_site(config, PlanSettings(start=start, forecaster="perfect"))
    assert naive.policy is not None and naive.guard is not None
    assert perfect.policy is None and perfect.guard is None and perfect.schedule().reserve is None
    assert perfect.published == "plan"
    power, cap = perfect.commands()
    assert not np.isnan(power).all() and not math.isnan(cap[0])  # carried out capped


def test_only_a_battery_under_a_demand_charge_carries_a_reserve_policy():
    assert carries_policy(build_config({}, source="test"))  # the default time of use charges the month's peak
    no_battery = build_config({"battery": {"capacity_kwh": 0}}, source="test")
    flat = build_config({"tariff": {"import_price": {"kind": "fixed", "price": 0.3},
                                    "export_price": {"kind": "fixed", "price": 0.05}}}, source="test")
    assert not carries_policy(no_battery) and not carries_policy(flat)
