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
                          "deferred_kwh": 0.0, "deferred_hours": 0.0})
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
