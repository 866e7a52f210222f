"""A dispatch plan: per-step flows, SOC, actions and costs, whoever produced it.

The optimizer, the self-consumption rule and the idle battery all hand their battery powers
to :func:`build_plan`, so their costs come from one accounting and compare like for like.

Energy left in the battery at the horizon's end is worth what it can displace later: at
least the horizon's cheapest import cost, less the discharge loss, and nothing in a battery
that cannot discharge (:func:`stored_energy_value_per_kwh`). Every plan carries the change of its stored energy
valued so (``stored_value``) and is compared by ``valued_cost``, so a plan that empties the
battery pays for the energy it took and one that fills it is credited for it.

Actions, per step (``tolerance_kw`` decides what counts as flowing):

* ``buy``: the battery charges while the site imports, so grid energy goes into it;
* ``store``: the battery charges with nothing imported, i.e. from PV surplus;
* ``sell``: the battery discharges while the site exports, so battery energy reaches the grid;
* ``discharge``: the battery discharges with nothing exported, i.e. it covers load;
* ``idle``: the battery neither charges nor discharges.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from cloud.optimization.bill import GridBill, grid_bill
from cloud.optimization.model import BatterySpec, HorizonInputs, stored_kw

ACTIONS: tuple[str, ...] = ("buy", "sell", "store", "discharge", "idle")
TOLERANCE_KW = 1e-6


@dataclass(frozen=True)
class CostBreakdown:
    """Money over the horizon, in the tariff's currency. ``energy`` nets export revenue;
    ``standing`` is the tariff's standing charge of the horizon's days."""

    energy: float
    demand: float
    wear: float
    carbon: float
    standing: float = 0.0

    @property
    def total(self) -> float:
        return self.energy + self.demand + self.wear + self.carbon + self.standing


@dataclass(frozen=True, eq=False)
class DispatchPlan:
    """One site's plan over ``T`` steps of ``step_hours``.

    Per-step arrays have length ``T``; ``soc_percent`` has ``T + 1`` values, the state before
    the first step followed by the state at the end of each step. ``step_cost`` is the
    energy, wear and carbon cost of each step; the demand charge belongs to the horizon's peak
    and is only in ``costs.demand``.
    """

    step_hours: float
    charge_kw: np.ndarray
    discharge_kw: np.ndarray
    import_kw: np.ndarray
    export_kw: np.ndarray
    soc_percent: np.ndarray
    step_cost: np.ndarray
    actions: tuple[str, ...]
    costs: CostBreakdown
    peak_import_kw: float
    objective: float
    status: str
    #: The stored energy gained over the horizon (negative: spent) at
    #: :func:`stored_energy_value_per_kwh`; not part of the bill.
    stored_value: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.charge_kw)

    @property
    def battery_power_kw(self) -> np.ndarray:
        """Positive charges, as in readings and setpoints."""
        return self.charge_kw - self.discharge_kw

    @property
    def grid_kw(self) -> np.ndarray:
        """Positive imports, as ``net_grid_flow_kw`` in readings."""
        return self.import_kw - self.export_kw

    @property
    def total_cost(self) -> float:
        return self.costs.total

    @property
    def valued_cost(self) -> float:
        """The bill less the value of the energy it leaves in the battery beyond the start
        (plus the value of what it takes out): what plans are compared by."""
        return self.costs.total - self.stored_value

    def savings_against(self, reference_cost: float) -> float:
        """How much cheaper this plan is than a reference's valued cost (positive = saves money)."""
        return reference_cost - self.valued_cost

    def to_frame(self, start: datetime | pd.Timestamp | None = None) -> pd.DataFrame:
        """The plan as a table, one row per step, indexed by step start when ``start`` is given."""
        if start is None:
            index = pd.RangeIndex(self.steps, name="step")
        else:
            index = pd.date_range(pd.Timestamp(start), periods=self.steps, freq=pd.Timedelta(hours=self.step_hours), name="ts")
        return pd.DataFrame(
            {
                "action": list(self.actions),
                "battery_power_kw": self.battery_power_kw,
                "charge_kw": self.charge_kw,
                "discharge_kw": self.discharge_kw,
                "import_kw": self.import_kw,
                "export_kw": self.export_kw,
                "grid_kw": self.grid_kw,
                "soc_start_percent": self.soc_percent[:-1],
                "soc_end_percent": self.soc_percent[1:],
                "step_cost": self.step_cost,
            },
            index=index,
        )


def classify_actions(
    charge_kw: np.ndarray, discharge_kw: np.ndarray, import_kw: np.ndarray, export_kw: np.ndarray,
    tolerance_kw: float = TOLERANCE_KW,
) -> tuple[str, ...]:
    """The action of each step, by the rule in the module docstring."""
    charging, discharging = charge_kw > tolerance_kw, discharge_kw > tolerance_kw
    importing, exporting = import_kw > tolerance_kw, export_kw > tolerance_kw
    labels = np.select(
        [charging & importing, charging, discharging & exporting, discharging],
        ["buy", "store", "sell", "discharge"],
        default="idle",
    )
    return tuple(str(label) for label in labels)


def soc_trajectory_kwh(charge_kw: np.ndarray, discharge_kw: np.ndarray, battery: BatterySpec, step_hours: float) -> np.ndarray:
    """SOC before the first step and after each step, in kWh (length ``T + 1``)."""
    change = stored_kw(charge_kw, discharge_kw, battery.charge_efficiency, battery.discharge_efficiency) * step_hours
    return battery.initial_kwh + np.concatenate(([0.0], np.cumsum(change)))


def grid_costs(inputs: HorizonInputs, grid_kw: np.ndarray) -> tuple[GridBill, np.ndarray]:
    """The horizon's tariff bill of a grid flow (positive imports) and the per-step cost of
    its imports' priced emissions."""
    dt = inputs.step_hours
    bill = grid_bill(grid_kw, inputs.import_price_per_kwh, inputs.export_price_per_kwh, dt,
                     inputs.demand_charge_per_kw, inputs.peak_so_far_kw, inputs.demand_window, inputs.standing_charge_per_day)
    carbon = inputs.carbon_price_per_kg * bill.import_kw * inputs.carbon_g_per_kwh * dt / 1000.0
    return bill, carbon


def stored_energy_value_per_kwh(import_cost_per_kwh: np.ndarray, discharge_efficiency: float | np.ndarray,
                                max_discharge_kw: float | np.ndarray) -> float | np.ndarray:
    """What one kWh stored at the horizon's end is worth: discharged later it displaces an
    import, at the least at the horizon's cheapest import cost, and delivers only
    ``discharge_efficiency`` of itself. Never below zero: stored energy can always be kept.
    Nothing for a battery that cannot discharge (``max_discharge_kw`` 0): it never gives the
    energy back, so a plan credited for storing it would buy or keep energy worth nothing.
    One site's prices give a number; a (sites, steps) array and per-site efficiencies and
    rates give one value per site, as the fleet's joint plan needs."""
    cheapest = np.maximum(np.min(import_cost_per_kwh, axis=-1), 0.0)
    value = np.where(np.asarray(max_discharge_kw) > 0.0, cheapest * discharge_efficiency, 0.0)
    return float(value) if np.ndim(value) == 0 else value


def build_plan(
    inputs: HorizonInputs, battery: BatterySpec, charge_kw: np.ndarray, discharge_kw: np.ndarray,
    *, status: str, objective: float | None = None,
) -> DispatchPlan:
    """Account for a dispatch: grid flows from the energy balance, SOC, actions and costs.

    Import and export follow from ``load - pv + charge - discharge`` so a plan can never
    carry flows that break the balance, whoever computed the battery powers.
    """
    charge_kw = np.array(charge_kw, dtype=float)
    discharge_kw = np.array(discharge_kw, dtype=float)
    bill, carbon = grid_costs(inputs, inputs.net_load_kw + charge_kw - discharge_kw)
    import_kw, export_kw, energy = bill.import_kw, bill.export_kw, bill.energy
    wear = battery.wear_cost_per_kwh * (charge_kw + discharge_kw) * inputs.step_hours
    costs = CostBreakdown(float(energy.sum()), float(bill.demand), float(wear.sum()), float(carbon.sum()), float(bill.standing))
    soc_kwh = soc_trajectory_kwh(charge_kw, discharge_kw, battery, inputs.step_hours)
    soc_percent = 100.0 * soc_kwh / battery.capacity_kwh if battery.capacity_kwh else np.zeros_like(soc_kwh)
    for array in (charge_kw, discharge_kw, import_kw, export_kw, soc_percent):
        array.flags.writeable = False
    step_cost = energy + wear + carbon
    step_cost.flags.writeable = False
    stored_value = stored_energy_value_per_kwh(inputs.import_cost_per_kwh, battery.discharge_efficiency,
                                               battery.max_discharge_kw) * float(soc_kwh[-1] - soc_kwh[0])
    return DispatchPlan(
        step_hours=inputs.step_hours,
        charge_kw=charge_kw,
        discharge_kw=discharge_kw,
        import_kw=import_kw,
        export_kw=export_kw,
        soc_percent=soc_percent,
        step_cost=step_cost,
        actions=classify_actions(charge_kw, discharge_kw, import_kw, export_kw),
        costs=costs,
        peak_import_kw=float(bill.peak_kw),
        objective=costs.total - stored_value if objective is None else objective,
        status=status,
        stored_value=stored_value,
    )
