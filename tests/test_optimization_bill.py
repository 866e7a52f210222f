"""The one grid bill: per-step energy, the peak and the demand charge above the peak paid."""

from __future__ import annotations

import numpy as np
import pytest

from cloud.optimization.bill import grid_bill


def one_bill(grid_kw, import_price, export_price, step_hours, demand_charge, peak_so_far):
    """The bill of one flow written out step by step, as the module docstring states it."""
    energy, peak = [], 0.0
    for flow, buy, sell in zip(grid_kw, import_price, export_price, strict=True):
        energy.append((buy * flow if flow > 0 else sell * flow) * step_hours)
        peak = max(peak, flow)
    return np.array(energy), peak, demand_charge * max(peak - peak_so_far, 0.0)


@pytest.mark.parametrize("shape", [(6, 24), (2, 3, 12), (1, 96)])
def test_a_bill_over_candidate_axes_is_each_candidate_billed_alone(shape):
    rng = np.random.default_rng(sum(shape))
    grid = rng.normal(0.0, 3.0, shape)
    buy, sell = rng.uniform(0.1, 0.4, shape[-1]), rng.uniform(0.0, 0.1, shape[-1])
    charge, paid = rng.uniform(0, 10, shape[:-1]), rng.uniform(0, 3, shape[:-1])
    bill = grid_bill(grid, buy, sell, 0.25, charge, paid)
    assert bill.energy.shape == shape and bill.demand.shape == shape[:-1]
    for at in np.ndindex(shape[:-1]):
        energy, peak, demand = one_bill(grid[at], buy, sell, 0.25, charge[at], paid[at])
        np.testing.assert_allclose(bill.energy[at], energy, rtol=1e-12, atol=1e-15)
        assert bill.peak_kw[at] == peak
        assert bill.demand[at] == pytest.approx(demand, rel=1e-12, abs=1e-15)
    np.testing.assert_array_equal(bill.import_kw - bill.export_kw, grid)


@pytest.mark.parametrize(("grid", "paid", "peak", "demand"), [
    ([-1.0, -2.0], 0.0, 0.0, 0.0),  # only exports: no peak, no charge
    ([1.0, 3.0, 2.0], 2.5, 3.0, 5.0),  # 0.5 kW above the peak paid, at 10 per kW
    ([1.0, 2.0], 2.5, 2.0, 0.0),  # below the peak already paid: nothing more
])
def test_the_demand_charge_falls_on_the_peak_above_the_one_paid(grid, paid, peak, demand):
    bill = grid_bill(np.array(grid), 0.3, 0.05, 1.0, 10.0, paid)
    assert bill.peak_kw == peak
    assert bill.demand == pytest.approx(demand)


def test_exports_earn_the_export_price_and_imports_pay_the_import_price():
    bill = grid_bill(np.array([2.0, -4.0, 0.0]), np.array([0.3, 0.3, 0.3]), np.array([0.1, 0.05, 0.1]), 0.5)
    np.testing.assert_allclose(bill.energy, [0.3, -0.1, 0.0])
