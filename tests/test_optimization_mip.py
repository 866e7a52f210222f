"""The direction MIP that prices of either sign call for: binaries only where an optimum may
need them (``direction_steps``), the same optimum as a binary at every step and pair."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cloud.optimization import BatterySpec, HorizonInputs, InfeasiblePlan, solve_dispatch
from cloud.optimization.lp import _has_simultaneous_flows, build_lp, direction_steps, new_solver, run_model, solve_directions
from cloud.optimization.model import check_feasible
from tests.test_optimization_lp import feasible_instance

STEPS = 48


def _needs_mip(inputs: HorizonInputs, battery: BatterySpec) -> bool:
    x, _ = run_model(new_solver(), build_lp(inputs, battery), "test LP")
    return _has_simultaneous_flows(x, inputs.steps)


def _feasible(inputs: HorizonInputs, battery: BatterySpec) -> bool:
    try:
        check_feasible(inputs, battery)
    except InfeasiblePlan:
        return False
    return True


def _mip_instances(count: int, first_seed: int, **kwargs) -> list[tuple[HorizonInputs, BatterySpec]]:
    found, seed = [], first_seed
    while len(found) < count:
        inputs, battery = feasible_instance(seed, STEPS, **kwargs)
        seed += 1
        if _needs_mip(inputs, battery):
            found.append((inputs, battery))
    return found


def _export_limited(seed: int) -> tuple[HorizonInputs, BatterySpec]:
    """Prices all >= 0, but midday PV above the export limit with the battery nearly full:
    burning the surplus in the battery's losses is the only way to take it."""
    rng = np.random.default_rng(seed)
    hours = np.arange(STEPS) * 0.5
    pv = np.maximum(0.0, rng.uniform(3.5, 4.5) * np.sin((hours - 6) / 12 * np.pi)) * rng.uniform(0.8, 1.0, STEPS)
    load = rng.uniform(0.3, 1.2, STEPS)
    price = rng.uniform(0.05, 0.3, STEPS)
    inputs = HorizonInputs(load, pv, price, np.minimum(price, rng.uniform(0.0, 0.1, STEPS)), step_hours=0.5,
                           export_limit_kw=3.0)
    return inputs, BatterySpec(capacity_kwh=5.0, initial_soc_percent=85.0, max_charge_kw=4.0, max_discharge_kw=4.0,
                               wear_cost_per_kwh=rng.choice([0.0, 0.01]))


NEGATIVE_PRICES = _mip_instances(4, 500, negative_prices=True)
EXPORT_LIMITED = [case for case in map(_export_limited, range(40)) if _feasible(*case) and _needs_mip(*case)][:3]


def test_the_instances_exercise_both_reasons_for_a_binary():
    assert len(NEGATIVE_PRICES) == 4 and len(EXPORT_LIMITED) == 3
    for inputs, _ in EXPORT_LIMITED:
        assert (inputs.import_cost_per_kwh >= 0).all() and (inputs.export_price_per_kwh >= 0).all()


@pytest.mark.parametrize("inputs, battery", NEGATIVE_PRICES + EXPORT_LIMITED,
                         ids=[f"negative-{i}" for i in range(len(NEGATIVE_PRICES))] + [f"export-limit-{i}" for i in range(len(EXPORT_LIMITED))])
def test_binaries_where_needed_reach_the_optimum_of_binaries_everywhere(inputs, battery):
    chosen = direction_steps(inputs, battery)
    assert 0 < chosen[0].sum() + chosen[1].sum() < 2 * STEPS  # fewer binaries, not none
    _, fast = solve_directions(build_lp(inputs, battery), inputs, battery)
    _, reference = solve_directions(build_lp(inputs, battery), inputs, battery, every_step=True)
    assert fast == pytest.approx(reference, rel=1e-6, abs=1e-9)
    plan = solve_dispatch(inputs, battery)
    assert "MIP" in plan.status
    assert plan.objective == pytest.approx(reference, rel=1e-6, abs=1e-9)
    assert not np.any((plan.charge_kw > 0) & (plan.discharge_kw > 0))
    assert not np.any((plan.import_kw > 0) & (plan.export_kw > 0))


def test_no_binary_where_prices_are_positive_and_export_is_unlimited():
    inputs, battery = feasible_instance(3, STEPS, negative_prices=False, limits=False)
    battery_steps, meter_steps = direction_steps(inputs, battery)
    assert not battery_steps.any() and not meter_steps.any()


def test_a_binary_at_each_step_a_negative_price_or_a_tight_export_limit_touches():
    inputs, battery = feasible_instance(3, STEPS, negative_prices=False, limits=False)
    price = inputs.import_price_per_kwh.copy()
    feed_in = inputs.export_price_per_kwh.copy()
    price[5], feed_in[9], feed_in[12] = -0.1, -0.2, price[12] + 0.1
    inputs = dataclasses.replace(inputs, import_price_per_kwh=price, export_price_per_kwh=feed_in)
    battery_steps, meter_steps = direction_steps(inputs, battery)
    assert np.flatnonzero(battery_steps).tolist() == [5, 9]
    assert np.flatnonzero(meter_steps).tolist() == [5, 12]  # at 5 exporting pays more than importing costs
    limited = dataclasses.replace(inputs, export_limit_kw=0.0)
    surplus_possible = battery.max_discharge_kw - inputs.net_load_kw > 0
    assert (direction_steps(limited, battery)[0] == (surplus_possible | battery_steps)).all()


@pytest.mark.parametrize("limit_s", [0.0, 1e-3])
def test_a_mip_stopped_at_its_time_limit_still_gives_a_plan_with_one_flow_per_pair(monkeypatch, caplog, limit_s):
    """Export paying more than import at every step of a month had perfect foresight's MIP
    search for hours, deaf to Ctrl-C and SIGTERM. Stopped at its limit, the plan takes the
    best answer found, or else directions read off the relaxed program, and says so."""
    import logging

    from cloud.optimization import lp

    inputs, battery = NEGATIVE_PRICES[0]
    exact = solve_dispatch(inputs, battery)
    monkeypatch.setattr(lp, "MIP_TIME_LIMIT_S", limit_s)
    with caplog.at_level(logging.WARNING, logger="cloud.optimization.lp"):
        plan = solve_dispatch(inputs, battery)
    (said,) = [r.getMessage() for r in caplog.records]
    assert f"over {STEPS} steps" in said and ("not proven best" in said or "relaxed program" in said), said
    assert not np.any((plan.charge_kw > 0) & (plan.discharge_kw > 0))
    assert not np.any((plan.import_kw > 0) & (plan.export_kw > 0))
    assert plan.objective >= exact.objective - 1e-9 * max(1.0, abs(exact.objective))  # never better than the optimum
    _, alone = solve_directions(build_lp(inputs, battery), inputs, battery)  # no relaxed answer given: solved when needed
    assert alone >= exact.objective - 1e-9 * max(1.0, abs(exact.objective))
