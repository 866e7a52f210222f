"""What a grid flow costs at a tariff: the one bill of plans, rules, replays and fleets.

A grid flow (positive imports) splits into import and export; each step pays its imports at
the import price and earns its exports at the export price, and the period's peak import
pays the demand charge for each kW above the peak already paid for this billing period
(re-planning within a month must not pay the same peak twice).

Time is the last axis; any leading axes (sites, candidate rules) are billed at once, with
prices and charges broadcast against them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def grid_bill(
    grid_kw: np.ndarray, import_price_per_kwh: np.ndarray | float, export_price_per_kwh: np.ndarray | float,
    step_hours: float, demand_charge_per_kw: np.ndarray | float = 0.0, peak_so_far_kw: np.ndarray | float = 0.0,
) -> GridBill:
    """The bill of ``grid_kw`` (positive imports, time on the last axis), as the module says."""
    grid_kw = np.asarray(grid_kw, dtype=float)
    import_kw, export_kw = np.maximum(grid_kw, 0.0), np.maximum(-grid_kw, 0.0)
    energy = (import_kw * import_price_per_kwh - export_kw * export_price_per_kwh) * step_hours
    peak_kw = import_kw.max(axis=-1, initial=0.0)
    demand = demand_charge_per_kw * np.maximum(0.0, peak_kw - peak_so_far_kw)
    return GridBill(import_kw, export_kw, energy, peak_kw, demand)
