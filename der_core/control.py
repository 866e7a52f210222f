"""The reserve policy's control law, step by step: what a battery keeps back for EV sessions.

The cloud solves the policy on the site's readings and forecasts (``cloud/optimization/
reserve.py``) and sends it with the plan. One :class:`Controller` per site turns it into the
battery's request at every step, and the gateway, the backtest (``cloud/optimization/
backtest.py``) and the plan's preview (``reserve.expected_dispatch``) all step through it, so
what the backtest measures and the plan shows is what the gateway runs.

The policy gives, per step and session state (no car yet; the ``k``-th charging step of a
session whose house load runs at one of a few levels; the day's only session done), two
energies. Within the step, on the load it measures, the battery

* charges up to ``charge_to_kwh`` (from the grid if PV does not cover it);
* otherwise covers load only down to ``floor_kwh``, and stores any PV surplus;
* and always defends the schedule's ``import_limit_kw``, reserve or not, never below the
  month's peak import except on a demand-response event's steps, which hold it as given,

as a home battery's backup-reserve, grid-charge and grid-limit settings do. The session
state comes from the charger's own readings (:class:`SessionDays`); the house level of a
session under way from its house load so far against the policy's forecast. In a home
without a car the program's sessions are the household's own bursts
(:attr:`ReservePolicy.burst_kw`), and a burst is told from the house load against the
policy's forecast.

What the control must remember between readings to decide this (:class:`SiteMemory`) is kept
with the battery state, so a restart changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import numpy as np
import pandas as pd

from der_core.config import BatteryConfig

#: Days of readings a rebuilt memory replays to find the charger's sessions (one may run past midnight).
REPLAY_DAYS = 2


def reserve_request_kw(net_kw: float, energy_kwh: float, floor_kwh: float, charge_to_kwh: float, max_charge_kw: float,
                       charge_efficiency: float, discharge_efficiency: float, step_hours: float) -> float:
    """The battery power (positive charges) a reserve policy asks for within one step, on the
    step's net load (load less PV, positive imports); the import cap and the physics clamp
    it afterwards (``battery.request_setpoint``, ``battery.step``)."""
    if energy_kwh < charge_to_kwh:
        request = min(max_charge_kw, (charge_to_kwh - energy_kwh) / (charge_efficiency * step_hours))
        return max(request, -net_kw)
    if net_kw > 0.0:
        return -min(net_kw, max(energy_kwh - floor_kwh, 0.0) * discharge_efficiency / step_hours)
    return -net_kw


@dataclass
class SessionDays:
    """The car's sessions as the charger's readings show them, in order: whether it charges,
    since when, the house load meanwhile against its forecast, and whether today's has ended."""

    charging: bool = False
    began_on: date | None = None  # local day the current or latest session began
    ended_session_of: date | None = None  # began_on of the latest session that ended
    started_at: pd.Timestamp | None = None  # interval start of the current or latest session's first reading
    house_kw_sum: float = 0.0  # the session's house load so far, summed over its readings
    expected_kw_sum: float = 0.0  # the policy's house-load forecast over the same readings

    def observe(self, interval_start: pd.Timestamp, timezone: str, ev_kw: float, house_kw: float = math.nan,
                expected_kw: float = math.nan) -> None:
        charging = ev_kw > 0.0
        if charging and not self.charging:
            self.began_on = interval_start.tz_convert(timezone).date()
            self.started_at, self.house_kw_sum, self.expected_kw_sum = interval_start, 0.0, 0.0
        if charging and math.isfinite(house_kw) and math.isfinite(expected_kw):
            self.house_kw_sum += house_kw
            self.expected_kw_sum += expected_kw
        if self.charging and not charging:
            self.ended_session_of = self.began_on
        self.charging = charging

    def ended_today(self, interval_start: pd.Timestamp, timezone: str) -> bool:
        """A session that began on the local day of ``interval_start`` has ended."""
        return self.ended_session_of is not None and self.ended_session_of == interval_start.tz_convert(timezone).date()

    def house_ratio(self) -> float:
        """The session's house load so far over its forecast (1 without a forecast)."""
        return self.house_kw_sum / self.expected_kw_sum if self.expected_kw_sum > 0.0 else 1.0

    def to_dict(self) -> dict:
        day = lambda d: None if d is None else d.isoformat()  # noqa: E731
        return {"charging": self.charging, "began_on": day(self.began_on), "ended_session_of": day(self.ended_session_of),
                "started_at": None if self.started_at is None else self.started_at.isoformat(),
                "house_kw_sum": self.house_kw_sum, "expected_kw_sum": self.expected_kw_sum}

    @classmethod
    def from_dict(cls, data: dict) -> SessionDays:
        day = lambda v: None if v is None else date.fromisoformat(v)  # noqa: E731
        started = data.get("started_at")  # absent in state saved before sessions kept their start
        return cls(bool(data["charging"]), day(data["began_on"]), day(data["ended_session_of"]),
                   None if started is None else pd.Timestamp(started), float(data.get("house_kw_sum", 0.0)),
                   float(data.get("expected_kw_sum", 0.0)))


@dataclass(frozen=True, eq=False)
class ReservePolicy:
    """Per step from ``start`` (rows) and session state (columns), the energies the battery
    keeps (``floor_kwh``) and charges to (``charge_to_kwh``). Columns: 0 no car yet,
    ``1 + (k - 1) * M + m`` the ``k``-th charging step (``k = charging_steps`` and beyond) at
    house level ``m`` of ``house_levels`` (M of them), the last the day's only session done.
    ``house_kw``: the house-load forecast the policy was solved on, per step.

    ``burst_kw``: a home without a car, whose sessions are the household's bursts. A reading
    whose house load is at least this far above ``house_kw`` is a burst's, and the state of a
    step is that of the reading before it: a burst under way goes on (its next step), as a
    charger's session would. The program plans for the burst states; without this the battery
    would stay in "no burst yet" through every burst. None: the sessions are the charger's."""

    start: pd.Timestamp  # start of the first step's interval
    step_s: int
    floor_kwh: np.ndarray
    charge_to_kwh: np.ndarray
    charging_steps: int
    house_levels: tuple[float, ...]
    house_kw: np.ndarray
    one_session_a_day: bool
    burst_kw: float | None = None

    @property
    def states(self) -> int:
        return self.charging_steps * len(self.house_levels) + 2

    @property
    def step(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=self.step_s)

    def row(self, interval_start: pd.Timestamp) -> int | None:
        """The step of the interval starting at ``interval_start``; None outside the policy."""
        row = math.floor((interval_start - self.start) / self.step)
        return row if 0 <= row < len(self.house_kw) else None

    def house_forecast_kw(self, interval_start: pd.Timestamp) -> float:
        row = self.row(interval_start)
        return math.nan if row is None else float(self.house_kw[row])

    def session_kw(self, interval_start: pd.Timestamp, ev_kw: float, house_kw: float) -> float:
        """The power of the program's session in a reading: the charger's (``ev_kw``), or in a
        home without a car the house load's lift above the policy's forecast where it is a
        burst's (:attr:`burst_kw` or more), else 0."""
        if self.burst_kw is None:
            return ev_kw
        lift = house_kw - self.house_forecast_kw(interval_start)
        return lift if lift >= self.burst_kw else 0.0  # False for NaN: no reading, no burst

    def state(self, sessions: SessionDays, interval_start: pd.Timestamp, timezone: str, ev_kw: float) -> int:
        """The column for the interval: from the charger's readings before it and its power in
        the interval itself (``ev_kw``; the battery measures the step's load, as in the program);
        for bursts (:attr:`burst_kw`), from the readings before it alone."""
        if self.burst_kw is not None:
            ev_kw = 1.0 if sessions.charging else 0.0
        if ev_kw > 0.0:
            running = sessions.charging and sessions.started_at is not None
            k = round((interval_start - sessions.started_at) / self.step) + 1 if running else 1
            levels = np.asarray(self.house_levels)
            level = int(np.argmin(np.abs(levels - sessions.house_ratio()))) if running else 0
            return 1 + (min(max(k, 1), self.charging_steps) - 1) * len(levels) + level
        if self.one_session_a_day:
            began_today = sessions.began_on == interval_start.tz_convert(timezone).date()
            if sessions.ended_today(interval_start, timezone) or (sessions.charging and began_today):
                return self.states - 1
        return 0

    def limits(self, interval_start: pd.Timestamp, sessions: SessionDays, timezone: str,
               ev_kw: float) -> tuple[float, float] | None:
        """(floor, charge-to) energies in kWh for the interval; None outside the policy."""
        row = self.row(interval_start)
        if row is None:
            return None
        column = self.state(sessions, interval_start, timezone, ev_kw)
        return float(self.floor_kwh[row, column]), float(self.charge_to_kwh[row, column])


@dataclass
class SiteMemory:
    """What a gateway's control remembers of a site's readings from one step to the next, and
    keeps with the battery state so a restart forgets none of it: the charger's sessions and
    the billing month's peak import (in the tariff's demand window, where it has one).

    The month's peak is already paid for, so the control defends no cap below it outside a
    demand-response event (:meth:`Controller.cap_kw`).
    """

    sessions: SessionDays = field(default_factory=SessionDays)
    month: str | None = None  # local "YYYY-MM" of the interval ``peak_import_kw`` belongs to
    peak_import_kw: float = 0.0

    @property
    def charging(self) -> bool:
        """A car charged in the latest reading."""
        return self.sessions.charging

    def observe(self, interval_start: pd.Timestamp, timezone: str, ev_kw: float, grid_kw: float,
                house_kw: float = math.nan, expected_kw: float = math.nan, counts_for_peak: bool = True) -> None:
        """Take in one reading (of the interval starting at ``interval_start``); ``grid_kw``
        positive imports; ``house_kw`` the load without the car, ``expected_kw`` its forecast;
        ``counts_for_peak`` false outside the tariff's demand window, whose imports set no
        billed peak (``bill.grid_bill``), so none raises the cap defended in it."""
        self.sessions.observe(interval_start, timezone, ev_kw, house_kw, expected_kw)
        month = _month(interval_start, timezone)
        if month != self.month:
            self.month, self.peak_import_kw = month, 0.0
        if counts_for_peak and math.isfinite(grid_kw):
            self.peak_import_kw = max(self.peak_import_kw, grid_kw)

    @classmethod
    def rebuilt(cls, interval_starts: pd.DatetimeIndex, timezone: str, ev_kw: np.ndarray, grid_kw: np.ndarray,
                counts_for_peak: np.ndarray | None = None) -> SiteMemory:
        """The memory of a site that took in these readings (oldest first; ``interval_starts``
        as :meth:`observe` takes them), for a gateway whose state file is lost. The month's
        peak needs the month's readings, the sessions only the last ``REPLAY_DAYS``; a
        session's house level, whose forecast went with the state file, reads as usual.
        ``counts_for_peak``: per reading, in the tariff's demand window (None: all are)."""
        memory = cls()
        if len(interval_starts) == 0:
            return memory
        recent = np.asarray(interval_starts >= interval_starts[-1] - pd.Timedelta(days=REPLAY_DAYS))
        for start, ev in zip(interval_starts[recent], np.asarray(ev_kw, dtype=float)[recent], strict=True):
            memory.sessions.observe(start, timezone, float(ev))
        months = np.asarray(interval_starts.tz_convert(timezone).strftime("%Y-%m"))
        memory.month = str(months[-1])
        grid = np.asarray(grid_kw, dtype=float)
        counted = np.ones(len(grid), dtype=bool) if counts_for_peak is None else np.asarray(counts_for_peak, dtype=bool)
        this_month = grid[(months == memory.month) & np.isfinite(grid) & counted]
        memory.peak_import_kw = max(float(this_month.max()), 0.0) if len(this_month) else 0.0
        return memory

    def month_peak_kw(self, interval_start: pd.Timestamp, timezone: str) -> float:
        """The peak import so far in the billing month of the interval (0 in a new month)."""
        return self.peak_import_kw if _month(interval_start, timezone) == self.month else 0.0

    def to_dict(self) -> dict:
        return {"sessions": self.sessions.to_dict(), "month": self.month, "peak_import_kw": self.peak_import_kw}

    @classmethod
    def from_dict(cls, data: dict | None) -> SiteMemory:
        """The memory saved by :meth:`to_dict`; a fresh one for state saved without it."""
        if not data:
            return cls()
        return cls(SessionDays.from_dict(data["sessions"]), data["month"], float(data["peak_import_kw"]))


class ChargeLimits(Protocol):
    """What the control law needs of a battery (``cloud.optimization.model.BatterySpec`` has it too)."""

    max_charge_kw: float
    charge_efficiency: float
    discharge_efficiency: float


@dataclass(frozen=True)
class ControlBattery:
    """:class:`ChargeLimits` of a configured battery, as its simulator has them."""

    max_charge_kw: float
    charge_efficiency: float
    discharge_efficiency: float

    @classmethod
    def from_config(cls, battery: BatteryConfig) -> ControlBattery:
        """The limits as the simulator reads them from the configuration (``BatteryParams``)."""
        return cls(float(battery.max_charge_rate_kw), battery.one_way_efficiency, battery.one_way_efficiency)


@dataclass
class Controller:
    """The control law of one site: per step, the battery's request under the reserve policy
    and the import cap it defends, and the memory of the readings that decides both.

    Call :meth:`cap_kw` and :meth:`request_kw` before a step, then :meth:`observe` with its
    reading: the session state and the month's peak are those of the readings before the
    step, the charger's power and the net load those the battery measures within it.
    """

    battery: ChargeLimits
    timezone: str
    memory: SiteMemory = field(default_factory=SiteMemory)

    def cap_kw(self, cap_kw: float, interval_start: pd.Timestamp, event: bool = False) -> float:
        """A schedule's import cap (NaN: none) for the interval.

        Outside an event, never below the month's peak import so far: that peak is already
        paid for, so a lower cap only spends the battery on imports that cost nothing more.
        On a demand-response event's step (``event``) the cap is held as given: the event pays
        for each kW below its baseline, whatever the month's peak, so a cap raised to that
        peak would give away the reduction the event bought."""
        if event or math.isnan(cap_kw) or _month(interval_start, self.timezone) != self.memory.month:
            return cap_kw
        return max(cap_kw, self.memory.peak_import_kw)

    def request_kw(self, policy: ReservePolicy | None, interval_start: pd.Timestamp, net_kw: float, ev_kw: float,
                   energy_kwh: float, step_hours: float, command_kw: float = math.nan) -> float:
        """The battery power (positive charges) asked for the interval: the policy's request
        (:func:`reserve_request_kw`) on the interval's net load ``net_kw`` and the charger's
        power ``ev_kw`` in it, from ``energy_kwh`` stored; where no policy covers the interval,
        or the energy stored was not read (NaN), the command in force (NaN: the battery's own
        rule): without it the policy cannot tell the floor from the energy above it, and would
        spend the reserve kept for the car on the house."""
        limits = None if policy is None else policy.limits(interval_start, self.memory.sessions, self.timezone, ev_kw)
        if limits is None or not math.isfinite(energy_kwh):
            return command_kw
        battery = self.battery
        return reserve_request_kw(net_kw, energy_kwh, *limits, battery.max_charge_kw, battery.charge_efficiency,
                                  battery.discharge_efficiency, step_hours)

    def observe(self, policy: ReservePolicy | None, interval_start: pd.Timestamp, ev_kw: float, grid_kw: float,
                house_kw: float, counts_for_peak: bool = True) -> None:
        """Take in the interval's reading: the charger's power, the grid import (positive) and
        the house load without the car, against the policy's house forecast (none without one);
        in a home without a car a burst in the house load is the session (:meth:`ReservePolicy.session_kw`).
        ``counts_for_peak``: the interval is in the tariff's demand window (:meth:`SiteMemory.observe`)."""
        expected = math.nan if policy is None else policy.house_forecast_kw(interval_start)
        session_kw = ev_kw if policy is None else policy.session_kw(interval_start, ev_kw, house_kw)
        self.memory.observe(interval_start, self.timezone, session_kw, grid_kw, house_kw, expected, counts_for_peak)


def _month(interval_start: pd.Timestamp, timezone: str) -> str:
    return interval_start.tz_convert(timezone).strftime("%Y-%m")
