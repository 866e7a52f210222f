"""The site's energy meters: cumulative kWh of grid import and export, PV, and battery charge
and discharge, integrated from the gateway's readings.

Each reading's power is the interval's (the simulator steps over it, a measured source
averages its samples over it), so its energy is power times the interval's length, split by
sign as the contract's signs say: ``net_grid_flow_kw`` positive imports, ``battery.power_kw``
positive charges. A power the reading lacks (NaN) adds nothing.

The meters only grow: Home Assistant's Energy dashboard reads a decrease of a
``total_increasing`` sensor as a meter replaced and counts the new value again. They are
kept with the battery state (``state_file.SiteSnapshot``), so a restart continues them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from der_core import der_data as dd


@dataclass(frozen=True)
class EnergyMeters:
    """Cumulative energies in kWh since the gateway first stepped the site."""

    grid_import_kwh: float = 0.0
    grid_export_kwh: float = 0.0
    pv_kwh: float = 0.0
    battery_charge_kwh: float = 0.0
    battery_discharge_kwh: float = 0.0

    def after(self, grid_kw: float, pv_kw: float, battery_kw: float, hours: float) -> EnergyMeters:
        """The meters after one interval of ``hours`` at these powers (NaN: not measured)."""
        step = EnergyMeters.over(np.array([grid_kw]), np.array([pv_kw]), np.array([battery_kw]), np.array([hours]))
        return EnergyMeters(*(a + b for a, b in zip(self.values(), step.values(), strict=True)))

    def after_reading(self, reading: pd.Series, hours: float) -> EnergyMeters:
        """The meters after one reading (a row of a reading frame) covering ``hours``."""
        return self.after(float(reading[dd.NET_GRID_FLOW]), float(reading[dd.SOLAR_KW]), float(reading[dd.BATTERY_POWER]), hours)

    @classmethod
    def integrated(cls, readings: pd.DataFrame, interval_s: int) -> EnergyMeters:
        """The meters of a site that made these readings (oldest first), each covering the time
        since the one before, at most ``interval_s``: for a gateway whose state file is lost."""
        if readings.empty:
            return cls()
        stamps = pd.DatetimeIndex(readings[dd.TS])
        interval = pd.Timedelta(seconds=interval_s)
        hours = (stamps.to_series().diff().fillna(interval).clip(upper=interval).dt.total_seconds() / 3600.0).to_numpy()
        column = lambda name: readings[name].to_numpy(dtype=float)  # noqa: E731
        return cls.over(column(dd.NET_GRID_FLOW), column(dd.SOLAR_KW), column(dd.BATTERY_POWER), hours)

    @classmethod
    def over(cls, grid_kw: np.ndarray, pv_kw: np.ndarray, battery_kw: np.ndarray, hours: np.ndarray) -> EnergyMeters:
        """The energies of intervals of ``hours`` at these powers, summed (NaN adds nothing)."""
        grid_in, grid_out = _split(grid_kw, hours)
        charge, discharge = _split(battery_kw, hours)
        pv, _ = _split(pv_kw, hours)  # an inverter's own draw at night is not generation
        return cls(grid_in, grid_out, pv, charge, discharge)

    def values(self) -> tuple[float, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict | None) -> EnergyMeters | None:
        """The meters saved by :meth:`to_dict`; None for state saved without them."""
        if not data:
            return None
        return cls(**{f.name: float(data.get(f.name, 0.0)) for f in fields(cls)})


def _split(kw: np.ndarray, hours: np.ndarray) -> tuple[float, float]:
    """(positive, negative) energy of powers over ``hours``, both >= 0; nothing for NaN."""
    kw = np.nan_to_num(np.asarray(kw, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    return float(np.sum(np.maximum(kw, 0.0) * hours)), float(np.sum(np.maximum(-kw, 0.0) * hours))
