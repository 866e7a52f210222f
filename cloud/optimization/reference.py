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

NO_DERATING_CELSIUS = 20.0  # the simulator charges at full rate from 10 C up


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

    params, state = ideal_battery(
        per_site(initial_kwh), per_site(min_kwh), per_site(max_kwh), per_site(max_charge_kw), per_site(max_discharge_kw),
        per_site(charge_efficiency), per_site(discharge_efficiency),
    )
    trace, _ = battery.run(
        params, state, -sites, np.full(n_steps, float(step_hours)), np.full((n_sites, n_steps), NO_DERATING_CELSIUS),
    )
    return trace.power_kw.T.reshape(net.shape)


def ideal_battery(
    initial_kwh: np.ndarray, min_kwh: np.ndarray, max_kwh: np.ndarray, max_charge_kw: np.ndarray,
    max_discharge_kw: np.ndarray, charge_efficiency: np.ndarray, discharge_efficiency: np.ndarray,
) -> tuple[battery.BatteryParams, battery.BatteryState]:
    """The battery simulator's parameters and state for batteries on the LP's physics (one
    per site, arrays of shape ``(sites,)``): no fade, no resistive heating, at a temperature
    without derating (:data:`NO_DERATING_CELSIUS`), the window exactly ``[min_kwh, max_kwh]``."""
    n_sites = len(max_kwh)
    # The simulator's window is a fraction of capacity; a capacity of max_kwh makes it exact.
    window_floor = np.divide(min_kwh, max_kwh, out=np.zeros(n_sites), where=max_kwh > 0)
    zeros, ones = np.zeros(n_sites), np.ones(n_sites)
    params = battery.BatteryParams(
        capacity_kwh=max_kwh, max_charge_kw=max_charge_kw, max_discharge_kw=max_discharge_kw,
        charge_efficiency=charge_efficiency, discharge_efficiency=discharge_efficiency,
        min_fraction=window_floor, max_fraction=ones, nominal_voltage_v=ones, resistance_ohm=zeros,
        fade_per_cycle=zeros, fade_per_hour=zeros, initial_cycles=zeros,
    )
    room_temperature = np.full(n_sites, NO_DERATING_CELSIUS)
    return params, battery.BatteryState(np.asarray(initial_kwh, dtype=float).copy(), zeros.copy(), room_temperature, zeros.copy())


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
