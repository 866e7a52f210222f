"""Reference strategies the optimizer's savings are measured against.

* no battery: the same tariff with the battery idle;
* rule-based self-consumption: store PV surplus, cover load from the battery, within the rate
  limits and SOC window, with the optimizer's efficiency model. It is the battery
  simulator's ``self_consumption`` mode (``request = pv - load``) stepped by the simulator's
  own battery step, without temperature derating or fade, so it plans on the LP's physics.
"""

from __future__ import annotations

import numpy as np

from cloud.optimization.model import BatterySpec, HorizonInputs
from cloud.optimization.plan import CostBreakdown, DispatchPlan, build_plan, grid_costs
from edge_gateway.simulators import battery

_NO_DERATING_CELSIUS = 20.0  # the simulator charges at full rate from 10 C up


def cost_without_battery(inputs: HorizonInputs) -> CostBreakdown:
    """The bill over the horizon with the battery idle: the baseline for savings."""
    net = inputs.net_load_kw
    energy, carbon, _, demand = grid_costs(inputs, np.maximum(net, 0.0), np.maximum(-net, 0.0))
    return CostBreakdown(float(energy.sum()), demand, 0.0, float(carbon.sum()))


def self_consumption_power_kw(
    net_load_kw: np.ndarray,
    initial_kwh: np.ndarray | float,
    min_kwh: np.ndarray | float,
    max_kwh: np.ndarray | float,
    max_charge_kw: np.ndarray | float,
    max_discharge_kw: np.ndarray | float,
    charge_efficiency: np.ndarray | float,
    discharge_efficiency: np.ndarray | float,
    step_hours: float,
) -> np.ndarray:
    """Battery power (positive charges) of the self-consumption rule, step by step.

    ``net_load_kw`` is load minus PV with time on the first axis; any further axes (sites)
    broadcast against the battery parameters, so a fleet runs in one loop over time. The
    stepping is the battery simulator's own (:func:`edge_gateway.simulators.battery.run`),
    with fade, resistive heating and cold derating switched off, so the rule the optimizer
    is measured against is the formula the gateway runs, not a second copy of it.
    """
    net = np.asarray(net_load_kw, dtype=float)
    sites = net.reshape(net.shape[0], -1).T  # (sites, steps), the simulator's layout
    n_sites, n_steps = sites.shape

    def per_site(value: np.ndarray | float) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, dtype=float), net.shape[1:]).reshape(-1).copy()

    top = per_site(max_kwh)
    # The simulator's window is a fraction of capacity; a capacity of max_kwh makes it exact.
    window_floor = np.divide(per_site(min_kwh), top, out=np.zeros(n_sites), where=top > 0)
    zeros, ones = np.zeros(n_sites), np.ones(n_sites)
    params = battery.BatteryParams(
        capacity_kwh=top, max_charge_kw=per_site(max_charge_kw), max_discharge_kw=per_site(max_discharge_kw),
        charge_efficiency=per_site(charge_efficiency), discharge_efficiency=per_site(discharge_efficiency),
        min_fraction=window_floor, max_fraction=ones, nominal_voltage_v=ones, resistance_ohm=zeros,
        fade_per_cycle=zeros, fade_per_hour=zeros, initial_cycles=zeros,
    )
    room_temperature = np.full(n_sites, _NO_DERATING_CELSIUS)
    state = battery.BatteryState(per_site(initial_kwh), zeros.copy(), room_temperature, zeros.copy())
    trace, _ = battery.run(
        params, state, -sites, np.full(n_steps, float(step_hours)), np.full((n_sites, n_steps), _NO_DERATING_CELSIUS),
    )
    return trace.power_kw.T.reshape(net.shape)


def self_consumption_dispatch(inputs: HorizonInputs, battery: BatterySpec) -> DispatchPlan:
    """The self-consumption rule as a plan, costed like the optimizer's.

    The rule ignores the terminal SOC target, so compare it with an LP whose target is the
    rule's final SOC when the comparison must be like for like.
    """
    power = self_consumption_power_kw(
        inputs.net_load_kw, battery.initial_kwh, battery.min_kwh, battery.max_kwh,
        battery.max_charge_kw, battery.max_discharge_kw,
        battery.charge_efficiency, battery.discharge_efficiency, inputs.step_hours,
    )
    return build_plan(inputs, battery, np.maximum(power, 0.0), np.maximum(-power, 0.0), status="rule: self-consumption")
