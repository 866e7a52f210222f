"""Inputs of the dispatch problem: a battery and a horizon, validated once into typed objects.

Conventions shared by the whole package (DESIGN.md, "Invariants"):

* battery power is positive when charging, grid flow positive when importing;
* state of charge is given in percent of ``capacity_kwh``; the optimizer works in kWh inside;
* every array of a horizon has one value per step of ``step_hours``; prices are per kWh,
  carbon intensity in g/kWh and the carbon price per kg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from der_core.config import BatteryConfig, one_way_efficiency
from der_core.errors import DERError

#: The configuration's battery: a spec's defaults are its fields, so the two never disagree.
_CONFIG = BatteryConfig()
_SOC_SNAP_PERCENT = 1e-6


class DispatchError(DERError):
    """Base of the optimizer's errors."""


class InvalidDispatchInputs(DispatchError):
    """An input array or battery field is malformed (NaN, wrong length, out of range)."""


class InfeasiblePlan(DispatchError):
    """No dispatch satisfies every constraint; the message says which one cannot hold."""


class SolverFailed(DispatchError):
    """HiGHS stopped without an optimal answer on a problem checked to be feasible."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidDispatchInputs(message)


@dataclass(frozen=True)
class BatterySpec:
    """What the optimizer needs to know about one battery.

    Defaults are those of ``der_core.config.BatteryConfig``, the efficiencies its one-way
    efficiency each, as the battery simulator splits the round trip. ``terminal_soc_percent`` of
    ``None`` means "end no lower than the start", so a plan never borrows tomorrow's energy.
    """

    capacity_kwh: float = _CONFIG.capacity_kwh
    max_charge_kw: float = _CONFIG.max_charge_rate_kw
    max_discharge_kw: float = _CONFIG.max_discharge_rate_kw
    charge_efficiency: float = _CONFIG.one_way_efficiency
    discharge_efficiency: float = _CONFIG.one_way_efficiency
    min_soc_percent: float = _CONFIG.min_soc
    max_soc_percent: float = _CONFIG.max_soc
    initial_soc_percent: float = _CONFIG.initial_soc
    terminal_soc_percent: float | None = None
    wear_cost_per_kwh: float = 0.0

    def __post_init__(self) -> None:
        for name in ("capacity_kwh", "max_charge_kw", "max_discharge_kw", "wear_cost_per_kwh"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0, f"battery {name} must be finite and >= 0 (got {value})")
        for name in ("charge_efficiency", "discharge_efficiency"):
            value = getattr(self, name)
            _require(0 < value <= 1, f"battery {name} must lie in (0, 1] (got {value})")
        low, high = self.min_soc_percent, self.max_soc_percent
        _require(0 <= low <= high <= 100, f"battery SOC window [{low}, {high}] % must satisfy 0 <= min <= max <= 100")
        # A SOC read back from a plan or a reading may sit a rounding error outside the window;
        # snapping it keeps rolling re-plans from failing on 9.999999999999964 %.
        for name in ("initial_soc_percent", "terminal_soc_percent"):
            value = getattr(self, name)
            if value is not None and low - _SOC_SNAP_PERCENT <= value <= high + _SOC_SNAP_PERCENT:
                object.__setattr__(self, name, min(max(value, low), high))
        _require(
            low <= self.initial_soc_percent <= high,
            f"battery initial_soc_percent {self.initial_soc_percent} lies outside the SOC window [{low}, {high}] %",
        )
        target = self.terminal_soc_percent
        _require(
            target is None or low <= target <= high,
            f"battery terminal_soc_percent {target} lies outside the SOC window [{low}, {high}] %",
        )

    @classmethod
    def from_round_trip(cls, round_trip_efficiency: float = _CONFIG.round_trip_efficiency, **fields: Any) -> BatterySpec:
        """A spec whose round trip is split evenly between charging and discharging."""
        _require(0 < round_trip_efficiency <= 1, f"round_trip_efficiency must lie in (0, 1] (got {round_trip_efficiency})")
        leg = one_way_efficiency(round_trip_efficiency)
        return cls(charge_efficiency=leg, discharge_efficiency=leg, **fields)

    @classmethod
    def from_config(cls, config: Any, **fields: Any) -> BatterySpec:
        """A spec from an ``der_core.config.BatteryConfig`` plus optimizer-only fields."""
        return cls.from_round_trip(
            config.round_trip_efficiency,
            capacity_kwh=config.capacity_kwh,
            max_charge_kw=config.max_charge_rate_kw,
            max_discharge_kw=config.max_discharge_rate_kw,
            min_soc_percent=config.min_soc,
            max_soc_percent=config.max_soc,
            initial_soc_percent=config.initial_soc,
            **fields,
        )

    def kwh(self, percent: float) -> float:
        return self.capacity_kwh * percent / 100.0

    @property
    def initial_kwh(self) -> float:
        return self.kwh(self.initial_soc_percent)

    @property
    def min_kwh(self) -> float:
        return self.kwh(self.min_soc_percent)

    @property
    def max_kwh(self) -> float:
        return self.kwh(self.max_soc_percent)

    @property
    def terminal_target_percent(self) -> float:
        """The lowest SOC the plan may end at."""
        return self.initial_soc_percent if self.terminal_soc_percent is None else self.terminal_soc_percent

    @property
    def terminal_kwh(self) -> float:
        return self.kwh(self.terminal_target_percent)


def _as_array(name: str, values: Any) -> np.ndarray:
    array = np.array(values, dtype=float, copy=True).reshape(-1) if np.ndim(values) else None
    _require(array is not None, f"{name} must be a one-dimensional array, not a scalar")
    _require(bool(np.all(np.isfinite(array))), f"{name} contains NaN or infinite values at steps "
             f"{np.flatnonzero(~np.isfinite(array))[:5].tolist()}")
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class HorizonInputs:
    """One site's forecasts and tariff over the planning horizon, one value per step.

    ``demand_charge_per_kw`` is charged on the horizon's peak import above ``peak_so_far_kw``,
    the peak already reached (and so already paid for) in the billing period: re-planning
    within a month must not pay the same peak twice. ``demand_window`` says, per step, whether
    its import counts towards that peak (None: every step's does); the standing charge is paid
    for every day of the horizon, whatever the plan.
    """

    load_kw: np.ndarray
    pv_kw: np.ndarray
    import_price_per_kwh: np.ndarray
    export_price_per_kwh: np.ndarray
    carbon_intensity_g_per_kwh: np.ndarray | None = None
    step_hours: float = 0.25
    import_limit_kw: float = math.inf
    export_limit_kw: float = math.inf
    demand_charge_per_kw: float = 0.0
    peak_so_far_kw: float = 0.0
    carbon_price_per_kg: float = 0.0
    demand_window: np.ndarray | None = None
    standing_charge_per_day: float = 0.0
    _carbon: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = ("load_kw", "pv_kw", "import_price_per_kwh", "export_price_per_kwh")
        arrays = {name: _as_array(name, getattr(self, name)) for name in names}
        if self.carbon_intensity_g_per_kwh is not None:
            arrays["carbon_intensity_g_per_kwh"] = _as_array("carbon_intensity_g_per_kwh", self.carbon_intensity_g_per_kwh)
        lengths = {name: len(array) for name, array in arrays.items()}
        _require(len(set(lengths.values())) == 1, f"horizon arrays differ in length: {lengths}")
        _require(lengths["load_kw"] > 0, "horizon is empty: load_kw has no steps")
        for name, array in arrays.items():
            object.__setattr__(self, name, array)
        _require(bool(np.all(self.load_kw >= 0)), "load_kw must be >= 0 at every step")
        _require(bool(np.all(self.pv_kw >= 0)), "pv_kw must be >= 0 at every step")
        _require(math.isfinite(self.step_hours) and self.step_hours > 0, f"step_hours must be > 0 (got {self.step_hours})")
        for name in ("import_limit_kw", "export_limit_kw"):
            value = getattr(self, name)
            _require(not math.isnan(value) and value >= 0, f"{name} must be >= 0 (got {value})")
        if self.demand_window is not None:
            window = np.array(self.demand_window, dtype=bool, copy=True).reshape(-1)
            _require(len(window) == self.steps, f"demand_window has {len(window)} steps, the horizon {self.steps}")
            window.flags.writeable = False
            object.__setattr__(self, "demand_window", window)
        for name in ("demand_charge_per_kw", "peak_so_far_kw", "carbon_price_per_kg", "standing_charge_per_day"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0, f"{name} must be finite and >= 0 (got {value})")
        _require(
            self.carbon_price_per_kg == 0 or self.carbon_intensity_g_per_kwh is not None,
            "carbon_price_per_kg is set but carbon_intensity_g_per_kwh is missing",
        )
        carbon = self.carbon_intensity_g_per_kwh
        object.__setattr__(self, "_carbon", np.zeros(self.steps) if carbon is None else carbon)

    @property
    def steps(self) -> int:
        return len(self.load_kw)

    @property
    def net_load_kw(self) -> np.ndarray:
        """Load minus PV: what the grid would carry with the battery idle."""
        return self.load_kw - self.pv_kw

    @property
    def carbon_g_per_kwh(self) -> np.ndarray:
        """Carbon intensity, zeros when none was given."""
        return self._carbon

    @property
    def import_cost_per_kwh(self) -> np.ndarray:
        """What one imported kWh costs: the price plus its priced emissions."""
        return self.import_price_per_kwh + self.carbon_price_per_kg * self._carbon / 1000.0


def stored_kw(charge_kw: Any, discharge_kw: Any, charge_efficiency: Any, discharge_efficiency: Any) -> Any:
    """The rate at which stored energy changes: what charging puts in less what discharging
    takes out, losses included (positive fills). Times the step's hours it is the step's SOC
    change, the recursion every plan's SOC follows; the LP's SOC rows hold the same terms."""
    return charge_kw * charge_efficiency - discharge_kw / discharge_efficiency


def power_for_stored_kw(stored: Any, charge_efficiency: Any, discharge_efficiency: Any) -> Any:
    """The one battery power (positive charges) whose stored energy changes at ``stored`` kW,
    the inverse of :func:`stored_kw` for a battery that only charges or only discharges."""
    return np.where(stored >= 0, stored / charge_efficiency, stored * discharge_efficiency)


def _soc_change_kwh(battery_kw: np.ndarray, battery: BatterySpec, step_hours: float) -> np.ndarray:
    """SOC change of one step at AC power ``battery_kw`` (positive charges)."""
    charge, discharge = np.maximum(battery_kw, 0.0), np.maximum(-battery_kw, 0.0)
    return stored_kw(charge, discharge, battery.charge_efficiency, battery.discharge_efficiency) * step_hours


def battery_power_bounds_kw(inputs: HorizonInputs, battery: BatterySpec) -> tuple[np.ndarray, np.ndarray]:
    """Per step, the lowest and highest battery power the rate and grid limits allow."""
    net = inputs.net_load_kw
    low = np.maximum(-battery.max_discharge_kw, -inputs.export_limit_kw - net)
    high = np.minimum(battery.max_charge_kw, inputs.import_limit_kw - net)
    return low, high


def check_feasible(inputs: HorizonInputs, battery: BatterySpec, tolerance: float = 1e-9) -> None:
    """Raise :class:`InfeasiblePlan` naming the first constraint no dispatch can meet.

    The set of SOCs reachable at each step is an interval, so propagating its ends forward
    is an exact feasibility test for dispatch without simultaneous charge and discharge.
    """
    net = inputs.net_load_kw
    low_kw, high_kw = battery_power_bounds_kw(inputs, battery)
    for step in np.flatnonzero(low_kw > high_kw + tolerance):
        if net[step] - battery.max_discharge_kw > inputs.import_limit_kw:
            raise InfeasiblePlan(
                f"step {step}: import limit {inputs.import_limit_kw:g} kW is below load minus PV minus "
                f"discharge capacity ({net[step] - battery.max_discharge_kw:.3f} kW)"
            )
        raise InfeasiblePlan(
            f"step {step}: PV surplus minus charge capacity ({-net[step] - battery.max_charge_kw:.3f} kW) exceeds "
            f"the export limit {inputs.export_limit_kw:g} kW (PV curtailment is not modelled)"
        )
    low_kwh = _soc_change_kwh(low_kw, battery, inputs.step_hours)
    high_kwh = _soc_change_kwh(high_kw, battery, inputs.step_hours)
    lowest = highest = battery.initial_kwh
    for step in range(inputs.steps):
        lowest, highest = lowest + low_kwh[step], highest + high_kwh[step]
        if lowest > battery.max_kwh + tolerance:
            raise InfeasiblePlan(
                f"step {step}: the export limit forces charging that would take SOC above "
                f"max_soc_percent {battery.max_soc_percent:g} %"
            )
        if highest < battery.min_kwh - tolerance:
            raise InfeasiblePlan(
                f"step {step}: the import limit forces discharging that would take SOC below "
                f"min_soc_percent {battery.min_soc_percent:g} %"
            )
        lowest, highest = max(lowest, battery.min_kwh), min(highest, battery.max_kwh)
    if highest < battery.terminal_kwh - tolerance:
        reachable = 100.0 * highest / battery.capacity_kwh
        raise InfeasiblePlan(
            f"terminal SOC target {battery.terminal_target_percent:g} % is unreachable: "
            f"at most {reachable:.2f} % by the end of the horizon"
        )
