"""What a grid flow costs at a tariff: the one bill of plans, rules, replays and fleets.

A grid flow (positive imports) splits into import and export; each step pays its imports at
the import price and earns its exports at the export price, and the period's peak import
pays the demand charge for each kW above the peak already paid for this billing period
(re-planning within a month must not pay the same peak twice). When the tariff has a demand
window only the window's steps set the peak. The standing charge is paid for each day the
flow covers, whatever flows, so it changes no decision but is in every total.
Prices, charge and window come from the site's tariff (``der_physics.tariff.tariff_prices``,
``demand_window``).

Time is the last axis; any leading axes (sites, candidate rules) are billed at once, with
prices and charges broadcast against them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from der_physics.tariff import peak_steps


@dataclass(frozen=True, eq=False)
class GridBill:
    """A grid flow's bill: per-step arrays ``(..., T)``, per-period values ``(...)``."""

    import_kw: np.ndarray
    export_kw: np.ndarray
    #: Import cost less export revenue of each step.
    energy: np.ndarray
    #: The highest import of the period, 0 when it never imports.
    peak_kw: np.ndarray
    #: The demand charge on the peak above the peak already paid.
    demand: np.ndarray
    #: The standing charge of the days covered.
    standing: float = 0.0

    @property
    def total(self) -> np.ndarray:
        """Energy, demand and standing charges of the period."""
        return self.energy.sum(axis=-1) + self.demand + self.standing


def standing_charge(per_day: float, steps: int, step_hours: float) -> float:
    """The standing charge of ``steps`` steps of ``step_hours``: paid per day, pro rata."""
    return per_day * steps * step_hours / 24.0


def grid_bill(
    grid_kw: np.ndarray, import_price_per_kwh: np.ndarray | float, export_price_per_kwh: np.ndarray | float,
    step_hours: float, demand_charge_per_kw: np.ndarray | float = 0.0, peak_so_far_kw: np.ndarray | float = 0.0,
    demand_window: np.ndarray | None = None, standing_charge_per_day: float = 0.0,
) -> GridBill:
    """The bill of ``grid_kw`` (positive imports, time on the last axis), as the module says.
    ``demand_window``: per step, whether its import counts towards the peak (None: all do)."""
    grid_kw = np.asarray(grid_kw, dtype=float)
    import_kw, export_kw = np.maximum(grid_kw, 0.0), np.maximum(-grid_kw, 0.0)
    energy = (import_kw * import_price_per_kwh - export_kw * export_price_per_kwh) * step_hours
    counted = np.where(peak_steps(demand_window, grid_kw.shape[-1]), import_kw, 0.0)
    peak_kw = counted.max(axis=-1, initial=0.0)
    demand = demand_charge_per_kw * np.maximum(0.0, peak_kw - peak_so_far_kw)
    standing = standing_charge(standing_charge_per_day, grid_kw.shape[-1], step_hours)
    return GridBill(import_kw, export_kw, energy, peak_kw, demand, standing)
