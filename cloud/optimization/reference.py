"""Reference strategies the optimizer's savings are measured against.

* no battery: the same tariff with the battery idle;
* rule-based self-consumption: store PV surplus, cover load from the battery, within the rate
  limits and SOC window, with the optimizer's efficiency model. It is the battery
  simulator's ``self_consumption`` mode (``request = pv - load``) stepped by the simulator's
  own battery step, without temperature derating or fade, so it plans on the LP's physics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cloud.optimization.model import BatterySpec, HorizonInputs
from cloud.optimization.plan import CostBreakdown, DispatchPlan, build_plan, grid_costs
from der_physics import battery

NO_DERATING_CELSIUS = 20.0  # the simulator charges at full rate from 10 C up


def cost_without_battery(inputs: HorizonInputs) -> CostBreakdown:
    """The bill over the horizon with the battery idle: the baseline for savings."""
    bill, carbon = grid_costs(inputs, inputs.net_load_kw)
    return CostBreakdown(float(bill.energy.sum()), float(bill.demand), 0.0, float(carbon.sum()), float(bill.standing))


def self_consumption_power_kw(
    net_load_kw: np.ndarray, batteries: BatterySpec | Sequence[BatterySpec], step_hours: float,
) -> np.ndarray:
    """Battery power (positive charges) of the self-consumption rule, step by step.

    ``net_load_kw`` is load minus PV with time on the first axis; any further axes (sites)
    hold one battery each, in ``batteries`` flattened in the same order (one spec serves
    every site), so a fleet runs in one loop over time. The stepping is the battery
    simulator's own (:func:`der_physics.battery.run`) on :func:`ideal_battery`,
    so the rule the optimizer is measured against is the formula the gateway runs, not a
    second copy of it.
    """
    net = np.asarray(net_load_kw, dtype=float)
    sites = net.reshape(net.shape[0], -1).T  # (sites, steps), the simulator's layout
    n_sites, n_steps = sites.shape
    specs = [batteries] * n_sites if isinstance(batteries, BatterySpec) else list(batteries)
    params, state = ideal_battery(specs)
    trace, _ = battery.run(
        params, state, -sites, np.full(n_steps, float(step_hours)), np.full((n_sites, n_steps), NO_DERATING_CELSIUS),
    )
    return trace.power_kw.T.reshape(net.shape)


def ideal_battery(batteries: Sequence[BatterySpec]) -> tuple[battery.BatteryParams, battery.BatteryState]:
    """The battery simulator's parameters and state for batteries on the LP's physics (one
    per site, arrays of shape ``(sites,)``): the specs' rates, efficiencies and start, no
    fade, no resistive heating, at a temperature without derating
    (:data:`NO_DERATING_CELSIUS`), the window exactly ``[min_kwh, max_kwh]``."""
    def column(name: str) -> np.ndarray:
        return np.array([getattr(spec, name) for spec in batteries], dtype=float)

    n_sites = len(batteries)
    min_kwh, max_kwh = column("min_kwh"), column("max_kwh")
    # The simulator's window is a fraction of capacity; a capacity of max_kwh makes it exact.
    window_floor = np.divide(min_kwh, max_kwh, out=np.zeros(n_sites), where=max_kwh > 0)
    zeros, ones = np.zeros(n_sites), np.ones(n_sites)
    params = battery.BatteryParams(
        capacity_kwh=max_kwh, max_charge_kw=column("max_charge_kw"), max_discharge_kw=column("max_discharge_kw"),
        charge_efficiency=column("charge_efficiency"), discharge_efficiency=column("discharge_efficiency"),
        min_fraction=window_floor, max_fraction=ones, nominal_voltage_v=ones, resistance_ohm=zeros,
        fade_per_cycle=zeros, fade_per_hour=zeros, initial_cycles=zeros,
    )
    room_temperature = np.full(n_sites, NO_DERATING_CELSIUS)
    return params, battery.BatteryState(column("initial_kwh"), zeros.copy(), room_temperature, zeros.copy())


def self_consumption_dispatch(inputs: HorizonInputs, battery: BatterySpec) -> DispatchPlan:
    """The self-consumption rule as a plan, costed like the optimizer's.

    The rule ignores the terminal SOC target, so compare it with an LP whose target is the
    rule's final SOC when the comparison must be like for like.
    """
    power = self_consumption_power_kw(inputs.net_load_kw, battery, inputs.step_hours)
    return build_plan(inputs, battery, np.maximum(power, 0.0), np.maximum(-power, 0.0), status="rule: self-consumption")
