"""A plan's figures as ``run_optimizer.py --json`` prints them: the keys and their order are
the output's contract, and savings are the references' costs less the plan's."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cloud.optimization.figures import ArrivalFigures, PlanFigures, ReserveFigures, ScenarioFigures
from cloud.optimization.guard import ArrivalWindows, GuardRule
from cloud.optimization.plan import CostBreakdown

KEYS = ["device_id", "issued_at", "start", "steps", "forecaster", "forecaster_reason", "state_from", "status", "cost", "cost_without_battery",
        "cost_self_consumption", "savings_vs_no_battery", "savings_vs_self_consumption", "stored_energy_value",
        "stored_energy_value_self_consumption", "published", "published_reason", "final_soc_percent",
        "self_consumption_final_soc_percent", "execution", "load_scenarios", "expected_over_scenarios",
        "expected_over_arrivals", "reserve", "stale", "initial_soc_percent", "initial_soc_read_at"]
GUARD = GuardRule(6.123456, 4.0, ArrivalWindows((17.0, 21.5), (10.0, 20.0)), one_session_a_day=True)


def figures(**changes) -> PlanFigures:
    base = dict(
        device_id="site", issued_at=pd.Timestamp("2024-06-15T00:07:30", tz="UTC"),
        start=pd.Timestamp("2024-06-14T17:00", tz="America/Los_Angeles"), steps=96, forecaster="naive",
        state_from="simulator", status="optimal", cost=CostBreakdown(3.0, 1.5, 0.25, 0.125), total_cost=4.875,
        cost_without_battery=9.0, cost_self_consumption=6.0, savings_vs_no_battery=4.125, savings_vs_self_consumption=1.125,
        stored_energy_value=0.5, stored_energy_value_self_consumption=0.25, published="plan", published_reason=None,
        final_soc_percent=20.0, self_consumption_final_soc_percent=15.0, execution="guarded", load_scenarios=1,
        expected_over_scenarios=None, expected_over_arrivals=None, reserve=None)
    return PlanFigures(**(base | changes))


def test_the_keys_and_their_order_are_the_contract():
    data = figures().to_dict()
    assert list(data) == KEYS
    assert (data["issued_at"], data["start"]) == ("2024-06-15T00:07:30+00:00", "2024-06-15T00:00:00+00:00")
    assert data["cost"] == {"energy": 3.0, "demand": 1.5, "wear": 0.25, "carbon": 0.125, "standing": 0.0, "total": 4.875}
    assert data["expected_over_scenarios"] is data["expected_over_arrivals"] is data["reserve"] is None


@pytest.mark.parametrize("part, key, expected", [
    (ScenarioFigures(8, 5.0, 9.5, 6.25), "expected_over_scenarios",
     {"scenarios": 8, "cost": 5.0, "cost_without_battery": 9.5, "cost_self_consumption": 6.25,
      "savings_vs_no_battery": 4.5, "savings_vs_self_consumption": 1.25}),
    (ArrivalFigures(2.0, 11.0), "expected_over_arrivals",
     {"cost": 2.0, "cost_self_consumption": 11.0, "savings_vs_self_consumption": 9.0}),
    (ReserveFigures(7.1, 74, True, 10.8, 10.5, 11.0, GUARD), "reserve",
     {"cap_kw": 7.1, "states": 74, "one_session_a_day": True, "floor_above_min_kwh_now": 10.8,
      "floor_above_min_kwh_lowest": 10.5, "floor_above_min_kwh_highest": 11.0,
      "guard_fit": {"target_kw": 6.1235, "reserve_kwh": 4.0, "weekday_window_h": [17.0, 21.5],
                    "weekend_window_h": [10.0, 20.0], "all_day": False, "one_session_a_day": True}}),
    (ReserveFigures(7.1, 74, False, None, None, None), "reserve",
     {"cap_kw": 7.1, "states": 74, "one_session_a_day": False, "floor_above_min_kwh_now": None,
      "floor_above_min_kwh_lowest": None, "floor_above_min_kwh_highest": None, "guard_fit": None}),
])
def test_each_part_is_encoded_in_its_place_in_order(part, key, expected):
    data = figures(**{key: part}).to_dict()
    assert list(data) == KEYS
    assert list(data[key].items()) == list(expected.items())
    assert json.loads(json.dumps(data))[key] == expected
