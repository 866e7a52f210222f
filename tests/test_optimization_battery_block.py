"""The LP battery block: one layout and one set of rows for the site, scenario and group LPs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cloud.optimization import BatterySpec, HorizonInputs, build_plan
from cloud.optimization import battery_block as block
from cloud.optimization.lp import lp_arrays
from cloud.portfolio import central


def block_matrix(sites, steps, charge_efficiency, discharge_efficiency, step_hours):
    rows, columns, codes = block.entries(sites, steps)
    values = block.coefficients(charge_efficiency, discharge_efficiency, step_hours)[codes]
    return sp.csc_matrix((values, (rows, columns)), shape=(2 * sites * steps, 5 * sites * steps))


def site(seed: int, steps: int) -> tuple[HorizonInputs, BatterySpec]:
    rng = np.random.default_rng(seed)
    inputs = HorizonInputs(rng.uniform(0, 3, steps), rng.uniform(0, 3, steps), rng.uniform(0.1, 0.4, steps),
                           np.full(steps, 0.05), step_hours=0.25)
    return inputs, BatterySpec(charge_efficiency=0.93, discharge_efficiency=0.96, initial_soc_percent=40.0)


@pytest.mark.parametrize("steps", [1, 5, 96])
def test_the_site_lp_is_the_block_plus_its_peak_rows(steps):
    inputs, battery = site(steps, steps)
    matrix, *_, row_lower, row_upper = lp_arrays(inputs, battery)
    own = block_matrix(1, steps, battery.charge_efficiency, battery.discharge_efficiency, inputs.step_hours)
    assert (matrix[: 2 * steps, : 5 * steps] != own).nnz == 0
    assert matrix[: 2 * steps, 5 * steps :].nnz == 0  # the peak column is in peak rows only
    rhs = block.right_hand_side(inputs.net_load_kw, battery.initial_kwh)
    np.testing.assert_array_equal(row_lower[: 2 * steps], rhs)
    np.testing.assert_array_equal(row_upper[: 2 * steps], rhs)


@pytest.mark.parametrize(("sites", "steps"), [(1, 4), (3, 24), (7, 5)])
def test_the_group_lp_is_one_block_per_site_with_each_sites_efficiencies(sites, steps):
    rng = np.random.default_rng(sites * steps)
    eta_c, eta_d = rng.uniform(0.9, 0.98, sites), rng.uniform(0.9, 0.98, sites)
    problem = central.GroupProblem(
        net_kw=rng.uniform(-2, 3, (sites, steps)), import_price=rng.uniform(0.1, 0.4, (sites, steps)),
        export_value=np.full((sites, steps), 0.05), step_hours=0.5, initial_kwh=np.full(sites, 5.0),
        min_kwh=np.full(sites, 1.0), max_kwh=np.full(sites, 9.0), max_charge_kw=np.full((sites, steps), 4.0),
        max_discharge_kw=np.full(sites, 4.0), charge_efficiency=eta_c, discharge_efficiency=eta_d,
    )
    matrix = central._matrix(problem, rng.uniform(0, 1, sites))
    own = block_matrix(sites, steps, eta_c, eta_d, 0.5)
    assert (matrix[: 2 * sites * steps, : 5 * sites * steps] != own).nnz == 0
    assert matrix[: 2 * sites * steps, 5 * sites * steps :].nnz == 0  # slacks and peak act on fleet rows only


@pytest.mark.parametrize("seed", range(3))
def test_any_dispatch_with_its_plans_flows_and_soc_satisfies_the_block_rows(seed):
    inputs, battery = site(seed, 24)
    rng = np.random.default_rng(seed)
    power = rng.uniform(-2, 2, 24)
    plan = build_plan(inputs, battery, np.maximum(power, 0), np.maximum(-power, 0), status="random")
    soc_kwh = plan.soc_percent[1:] * battery.capacity_kwh / 100.0
    x = block.by_kind(plan.charge_kw, plan.discharge_kw, plan.import_kw, plan.export_kw, soc_kwh, (1, 24))
    matrix = block_matrix(1, 24, battery.charge_efficiency, battery.discharge_efficiency, inputs.step_hours)
    np.testing.assert_allclose(matrix @ x, block.right_hand_side(inputs.net_load_kw, battery.initial_kwh), atol=1e-9)
    np.testing.assert_array_equal(block.per_kind(x, 1, 24)[0, block.SOC], soc_kwh)


def test_compressed_order_is_scipys_csc():
    rows, columns, codes = block.entries(3, 6)
    start, index, ordered = block.compressed(rows, columns, codes, 5 * 3 * 6)
    expected = sp.csc_matrix((codes + 1, (rows, columns)), shape=(2 * 3 * 6, 5 * 3 * 6))
    expected.sort_indices()
    np.testing.assert_array_equal(start, expected.indptr)
    np.testing.assert_array_equal(index, expected.indices)
    np.testing.assert_array_equal(ordered + 1, expected.data)
