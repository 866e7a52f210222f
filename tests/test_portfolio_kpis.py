"""Fleet KPIs that must agree with one another by definition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cloud.portfolio.kpis import FleetResult, strategy_kpis
from cloud.portfolio.scenario import FleetLimits

BASELINE = np.array([100.0, 120.0, 130.0, 110.0])
TARGET = np.array([np.nan, 100.0, 110.0, np.nan])  # 20 kW less in each of two steps


def _result(grid: np.ndarray) -> FleetResult:
    nan = np.full(4, np.nan)
    limits = FleetLimits(BASELINE, BASELINE, nan, TARGET, nan, nan, 50.0, 0.0, False)
    sites = pd.DataFrame({"site_id": ["a", "b"], "strategy": "s", "bill": 0.0, "market_revenue": 0.0, "self_consumed_kwh": 0.0,
                          "pv_kwh": 0.0, "import_kwh": 0.0, "export_kwh": 0.0, "emissions_kg": 0.0, "unserved_kwh": 0.0,
                          "deferred_kwh": 0.0, "deferred_hours": 0.0, "stored_value": 0.0})
    times = pd.date_range("2025-07-01", periods=4, freq="h", tz="UTC")
    return FleetResult(times, 1.0, limits, {"s": {"grid": grid}}, {}, sites, None, (0.0, 0.0))


@pytest.mark.parametrize("grid, met, delivered", [
    ([100.0, 100.0, 110.0, 110.0], True, 40.0),  # exactly on target
    ([100.0, 90.0, 100.0, 110.0], True, 40.0),  # more than asked counts as what was asked
    ([100.0, 60.0, 129.0, 110.0], False, 21.0),  # 60 kW less, then 1: more in one step does not cover another
    ([100.0, 130.0, 140.0, 110.0], False, 0.0),  # the fleet drew more than its baseline
    ([100.0, 100.00005, 110.0, 110.0], True, 40.0),  # within the fleet sums' rounding
])
def test_dr_target_met_exactly_when_delivered_reaches_requested(grid, met, delivered):
    kpi = strategy_kpis(_result(np.array(grid)), "s")
    assert kpi["dr_requested_kwh"] == 40.0
    assert kpi["dr_delivered_kwh"] == pytest.approx(delivered)
    assert kpi["dr_target_met"] is met
    assert (kpi["dr_delivered_kwh"] >= kpi["dr_requested_kwh"]) is met
    assert kpi["dr_shortfall_kwh"] == pytest.approx(kpi["dr_requested_kwh"] - kpi["dr_delivered_kwh"])


def test_a_battery_emptied_by_the_run_s_end_is_not_counted_as_money_saved():
    """One site, no battery against a rule that ends its short run 3.8 kWh emptier than it
    began: its bill is lower by what that energy bought, which is no saving. Costs and each
    site's savings (satisfaction, the report, the fleet page) are bills less the energy left."""
    from cloud.portfolio.kpis import satisfaction, savings, summary

    nan = np.full(4, np.nan)
    limits = FleetLimits(nan, nan, nan, nan, nan, nan, 0.0, 0.0, False)
    zero = {"market_revenue": 0.0, "self_consumed_kwh": 0.0, "pv_kwh": 0.0, "import_kwh": 0.0, "export_kwh": 0.0,
            "emissions_kg": 0.0, "unserved_kwh": 0.0, "deferred_kwh": 0.0, "deferred_hours": 0.0, "battery_kwh": 10.0}
    sites = pd.DataFrame([{"site_id": "a", "strategy": "no_battery", "bill": 0.24, "stored_value": 0.0, **zero},
                          {"site_id": "a", "strategy": "rule_based", "bill": -1.07, "stored_value": -0.45, **zero},
                          {"site_id": "a", "strategy": "decentralised", "bill": -0.56, "stored_value": 0.0, **zero}])
    times = pd.date_range("2025-07-01", periods=4, freq="h", tz="UTC")
    grid = {"grid": np.zeros(4)}
    result = FleetResult(times, 1.0, limits, {k: grid for k in ("no_battery", "rule_based", "decentralised")}, {},
                         sites, None, (0.0, 0.0))
    kpis = summary(result)["strategies"]
    assert kpis["rule_based"]["total_cost"] == pytest.approx(-1.07 + 0.45)
    assert kpis["rule_based"]["savings"] == pytest.approx(0.24 + 0.62) and kpis["rule_based"]["stored_value"] == -0.45
    assert savings(sites, "rule_based").tolist() == pytest.approx([0.86])
    assert satisfaction(sites, "decentralised", "rule_based").tolist() == pytest.approx([0.80 / 0.86])
