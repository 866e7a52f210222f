"""Where a gateway's readings come from when they are measured rather than simulated.

The simulator (``der_physics.generator``, stepped by ``Gateway.step``) is the default source.
A measured source gives, per reading, only the fields its device reports
(:class:`Measured`); every other field of the reading contract stays missing, since a value
the device did not report would be invented. The reading is then stored, published and
synced exactly as a simulated one (``Gateway.step`` hands it to the same sinks).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import pandas as pd

from der_core import der_data as dd
from der_core.config import MEASURED_FIELDS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measured:
    """What a device reports for one reading, in the reading contract's units and signs:
    battery power positive when it charges, grid power positive when the site imports. NaN:
    not reported."""

    pv_kw: float = math.nan
    battery_soc_percent: float = math.nan
    battery_power_kw: float = math.nan
    grid_kw: float = math.nan

    @property
    def load_kw(self) -> float:
        """The house load, from the site's balance (PV + grid import + battery discharge; the
        contract's ``net_grid_flow = load + battery - solar``), only when all three are
        reported: with one missing, the balance would put its power into the load."""
        return dd.house_load_kw(self.grid_kw, self.pv_kw, self.battery_power_kw)  # NaN when any is NaN

    @property
    def net_load_kw(self) -> float:
        """The house load less PV (positive imports), from the same balance: the grid import
        the site would have with the battery idle. It needs only the grid and battery powers,
        and the battery's own power cancels out of it, so a command that changes the battery
        leaves it as it was."""
        return self.grid_kw - self.battery_power_kw  # NaN when either is NaN

    @classmethod
    def mean(cls, samples: list[Measured]) -> Measured:
        """The reading of an interval from its samples: each power averaged over the samples
        that report it (an energy-true figure for the interval), the state of charge the last
        one reported (a state at the interval's end, as the simulator's)."""
        def average(values: list[float]) -> float:
            known = [v for v in values if math.isfinite(v)]
            return math.fsum(known) / len(known) if known else math.nan

        socs = [s.battery_soc_percent for s in samples if math.isfinite(s.battery_soc_percent)]
        return cls(average([s.pv_kw for s in samples]), socs[-1] if socs else math.nan,
                   average([s.battery_power_kw for s in samples]), average([s.grid_kw for s in samples]))

    @classmethod
    def of(cls, values: Mapping[str, float]) -> Measured:
        """From values keyed by reading field (``config.MEASURED_FIELDS``); the rest not reported."""
        return cls(**{_ATTRIBUTES[name]: float(value) + 0.0 for name, value in values.items()})  # + 0.0: no negative zero


#: The :class:`Measured` value of each reading field a device reports.
_ATTRIBUTES = dict(zip(MEASURED_FIELDS, ("pv_kw", "battery_soc_percent", "battery_power_kw", "grid_kw"), strict=True))


class Plausible:
    """A device's values kept within the reading contract's physical bounds
    (``der_data.PLAUSIBLE``). A value outside them (a state of charge of 150 %, 1e308 W) is a
    fault or a wrong scale factor: it is dropped, as not reported, rather than stored, planned
    on, or taken as the state of charge that bounds the battery's commands. Said once per
    field until the field is plausible again."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._warned: set[str] = set()

    def __call__(self, values: Mapping[str, float]) -> dict[str, float]:
        """``values`` (keyed by reading field) without those outside their bounds; a missing
        (NaN) value is kept as it is."""
        kept = {}
        for name, value in values.items():
            if math.isnan(value):
                kept[name] = value  # not reported: says nothing of whether the field is plausible again
            elif dd.plausible(name, value):
                kept[name] = value
                self._warned.discard(name)
            elif name not in self._warned:
                self._warned.add(name)
                log.warning("%s: %s of %g is outside [%g, %g]; dropped as not reported until it is within (a fault, "
                            "or a wrong unit or scale factor)", self._source, name, value, *dd.PLAUSIBLE[name])
        return kept


class Samples:
    """A source's samples, each kept until the reading of its interval takes it. Thread-safe:
    samples arrive on a sampling job or a network thread while the gateway's step reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[pd.Timestamp, Measured]] = []

    def add(self, at: pd.Timestamp, measured: Measured) -> None:
        with self._lock:
            self._items.append((at, measured))

    def take(self, start: pd.Timestamp, end: pd.Timestamp) -> list[Measured]:
        """The samples of the interval ``(start, end]``; those up to ``end`` are then dropped,
        since no later reading covers them."""
        with self._lock:
            within = [m for ts, m in self._items if start < ts <= end]
            self._items = [(ts, m) for ts, m in self._items if ts > end]
        return within


def within_battery_limits(power_kw: float, max_charge_kw: float, max_discharge_kw: float, soc_percent: float,
                          soc_window: tuple[float, float]) -> float:
    """The battery power (positive charges) a device is sent: within its charge and discharge
    rates, no discharging at or below the window's bottom and no charging at or above its top
    (an unknown state of charge leaves the rates only), so a device never receives a command
    the site's battery settings forbid, whatever the plan asked."""
    power_kw = min(max(power_kw, -max_discharge_kw), max_charge_kw)
    low, high = soc_window
    if math.isfinite(soc_percent) and soc_percent <= low:
        power_kw = max(power_kw, 0.0)
    if math.isfinite(soc_percent) and soc_percent >= high:
        power_kw = min(power_kw, 0.0)
    return power_kw + 0.0


def measured_frame(device_id: str, at: pd.Timestamp, measured: Measured) -> pd.DataFrame:
    """The one-row reading frame of a measured device: its reported fields, the rest missing."""
    row: dict = {column: math.nan for column in dd.NUMERIC_COLUMNS}
    row.update({column: None for column in dd.TEXT_COLUMNS})
    row.update({dd.DEVICE_ID: device_id, dd.TS: at, dd.SOLAR_KW: measured.pv_kw, dd.BATTERY_SOC: measured.battery_soc_percent,
                dd.BATTERY_POWER: measured.battery_power_kw, dd.NET_GRID_FLOW: measured.grid_kw, dd.LOAD_TOTAL: measured.load_kw})
    return dd.coerce_frame(pd.DataFrame([row]))


class ReadingSource(Protocol):
    """A device read by the gateway: sampled several times per interval, read once per reading."""

    def sample(self, at: pd.Timestamp | None = None) -> None:
        """Take one sample of the device (at ``at``, default now); a device that does not
        answer is noted and retried later, never raised."""
        ...

    def reading(self, start: pd.Timestamp, end: pd.Timestamp) -> Measured | None:
        """The reading of the interval ``(start, end]`` from its samples (one taken now when it
        has none); None when the device answered none."""
        ...

    def instant(self, at: pd.Timestamp, since: pd.Timestamp) -> Measured | None:
        """The device's values at ``at`` (now), for holding the import cap between readings:
        read from the device, or its latest values received after ``since``. Not a sample: the
        readings stay those of the sampling. None when the device answers nothing; never raises."""
        ...

    def close(self) -> None:
        ...


class BatteryControl(Protocol):
    """A device's battery, told what to do for the next interval."""

    def command(self, power_kw: float, at: pd.Timestamp) -> float:
        """Ask the battery for ``power_kw`` (positive charges) from ``at``, within the device's
        limits; NaN hands control back to the device's own mode. Returns the power asked for
        after clipping (NaN when none was sent)."""
        ...


class DeviceSource(ReadingSource, BatteryControl, Protocol):
    """A source whose battery the gateway can also command."""

