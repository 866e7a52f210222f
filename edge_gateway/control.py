"""The peak guard's rule, step by step: what a battery does with a reserve kept for EV sessions.

The cloud fits the guard once a month on the site's readings (``cloud/optimization/guard.py``)
and sends it with the plan; the gateway applies it at every reading, on what it measured
last, and the backtest applies the very same function to the simulated site, so what the
backtest measures is what the gateway runs.

* While a car could arrive (the weekday or weekend hours in which past sessions started) or
  charges, the battery covers house load only above ``reserve_kwh``, so a session that comes
  finds the energy to hold the import cap; the cap itself is the schedule's
  ``import_limit_kw``, defended by the battery within the step.
* In the ``PRECHARGE_H`` hours before the window the battery is charged up to the reserve from
  the grid if PV has not done it.
* Where one car charges at most once a day (``one_session_a_day``, learnt from the readings),
  no reserve is kept for the rest of a day whose session has ended.
* Elsewhere, and above the reserve, the plan's command (or the battery's own rule) stands.

What the gateway must remember between readings to decide this (:class:`SiteMemory`) is kept
with the battery state, so a restart changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

#: Hours before the arrival window in which the battery is charged up to the reserve.
PRECHARGE_H = 3.0
#: Hours after the latest past arrival that the window stays open.
WINDOW_TAIL_H = 0.5
#: Without sessions in the readings the windows cover the tariff's evening and a weekend day.
DEFAULT_WINDOWS = ((16.0, 21.0), (9.0, 20.0))
#: Days of readings a rebuilt memory replays to find the charger's sessions (one may run past midnight).
REPLAY_DAYS = 2


@dataclass(frozen=True)
class ArrivalWindows:
    """Local hours (start, end) in which past sessions began, on weekdays and at weekends."""

    weekday_h: tuple[float, float]
    weekend_h: tuple[float, float]

    @classmethod
    def from_sessions(cls, starts: pd.DatetimeIndex, step: pd.Timedelta, timezone: str) -> ArrivalWindows:
        local = (starts - step).tz_convert(timezone)
        hours = np.asarray(local.hour + local.minute / 60.0)
        weekend = np.asarray(local.day_of_week >= 5)
        spans = []
        for kind, default in zip((False, True), DEFAULT_WINDOWS, strict=True):
            seen = hours[weekend == kind]
            spans.append((float(seen.min()), float(seen.max()) + WINDOW_TAIL_H) if len(seen) else default)
        return cls(*spans)

    def bounds(self, weekend: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start and end hour of the window of each step's day kind."""
        start = np.where(weekend, self.weekend_h[0], self.weekday_h[0])
        end = np.where(weekend, self.weekend_h[1], self.weekday_h[1])
        return start, end


@dataclass(frozen=True)
class PeakGuard:
    """The part of a guard a gateway runs: the reserve and the hours it is kept in."""

    reserve_kwh: float  # energy above the battery's minimum SOC
    windows: ArrivalWindows
    one_session_a_day: bool = False  # no session has followed another on the same day

    def command_kw(self, interval_start: pd.Timestamp, timezone: str, energy_above_min_kwh: float,
                   charging_now: bool, pv_surplus: bool, max_charge_kw: float, step_hours: float,
                   session_ended_today: bool = False) -> float:
        """The command for the interval starting at ``interval_start`` (NaN: the plan's).
        ``session_ended_today``: a session that began this local day (of the interval's start)
        has ended."""
        local = interval_start.tz_convert(timezone)
        return float(guard_setpoints_kw(
            np.array([self.reserve_kwh]), local.hour + local.minute / 60.0, local.weekday() >= 5, self.windows,
            np.array([energy_above_min_kwh]), charging_now, pv_surplus, max_charge_kw, step_hours,
            self.one_session_a_day and session_ended_today,
        )[0])


@dataclass
class SessionDays:
    """Whether a site's car has had its session today, from its charger's readings in order."""

    charging: bool = False
    began_on: date | None = None  # local day the current or latest session began
    ended_session_of: date | None = None  # began_on of the latest session that ended

    def observe(self, interval_start: pd.Timestamp, timezone: str, ev_kw: float) -> None:
        charging = ev_kw > 0.0
        if charging and not self.charging:
            self.began_on = interval_start.tz_convert(timezone).date()
        if self.charging and not charging:
            self.ended_session_of = self.began_on
        self.charging = charging

    def ended_today(self, interval_start: pd.Timestamp, timezone: str) -> bool:
        """A session that began on the local day of ``interval_start`` has ended."""
        return self.ended_session_of is not None and self.ended_session_of == interval_start.tz_convert(timezone).date()

    def to_dict(self) -> dict:
        day = lambda d: None if d is None else d.isoformat()  # noqa: E731
        return {"charging": self.charging, "began_on": day(self.began_on), "ended_session_of": day(self.ended_session_of)}

    @classmethod
    def from_dict(cls, data: dict) -> SessionDays:
        day = lambda v: None if v is None else date.fromisoformat(v)  # noqa: E731
        return cls(bool(data["charging"]), day(data["began_on"]), day(data["ended_session_of"]))


@dataclass
class SiteMemory:
    """What a gateway's control remembers of a site's readings from one step to the next, and
    keeps with the battery state so a restart forgets none of it: the charger's sessions,
    the latest reading's facts the guard decides on, and the billing month's peak import.

    The month's peak is already paid for, so an import cap below it only spends the battery
    on imports that cost nothing more (:meth:`import_cap_kw`), as the backtest does.
    """

    sessions: SessionDays = field(default_factory=SessionDays)
    pv_surplus: bool = False  # the latest reading's PV above its load
    month: str | None = None  # local "YYYY-MM" of the interval ``peak_import_kw`` belongs to
    peak_import_kw: float = 0.0

    @property
    def charging(self) -> bool:
        """A car charged in the latest reading."""
        return self.sessions.charging

    def observe(self, interval_start: pd.Timestamp, timezone: str, ev_kw: float, pv_surplus: bool, grid_kw: float) -> None:
        """Take in one reading (of the interval starting at ``interval_start``); ``grid_kw``
        positive imports."""
        self.sessions.observe(interval_start, timezone, ev_kw)
        self.pv_surplus = pv_surplus
        month = _month(interval_start, timezone)
        if month != self.month:
            self.month, self.peak_import_kw = month, 0.0
        if math.isfinite(grid_kw):
            self.peak_import_kw = max(self.peak_import_kw, grid_kw)

    @classmethod
    def rebuilt(cls, interval_starts: pd.DatetimeIndex, timezone: str, ev_kw: np.ndarray, pv_surplus: np.ndarray,
                grid_kw: np.ndarray) -> SiteMemory:
        """The memory of a site that took in these readings (oldest first; ``interval_starts``
        as :meth:`observe` takes them), for a gateway whose state file is lost. The month's
        peak needs the month's readings, the sessions only the last ``REPLAY_DAYS``."""
        memory = cls()
        if len(interval_starts) == 0:
            return memory
        recent = np.asarray(interval_starts >= interval_starts[-1] - pd.Timedelta(days=REPLAY_DAYS))
        for start, ev in zip(interval_starts[recent], np.asarray(ev_kw, dtype=float)[recent], strict=True):
            memory.sessions.observe(start, timezone, float(ev))
        memory.pv_surplus = bool(np.asarray(pv_surplus)[-1])
        months = np.asarray(interval_starts.tz_convert(timezone).strftime("%Y-%m"))
        memory.month = str(months[-1])
        grid = np.asarray(grid_kw, dtype=float)
        this_month = grid[(months == memory.month) & np.isfinite(grid)]
        memory.peak_import_kw = max(float(this_month.max()), 0.0) if len(this_month) else 0.0
        return memory

    def import_cap_kw(self, cap_kw: float, interval_start: pd.Timestamp, timezone: str) -> float:
        """A schedule's cap (NaN: none) for the interval, never below this month's peak."""
        if math.isnan(cap_kw) or _month(interval_start, timezone) != self.month:
            return cap_kw
        return max(cap_kw, self.peak_import_kw)

    def to_dict(self) -> dict:
        return {"sessions": self.sessions.to_dict(), "pv_surplus": self.pv_surplus, "month": self.month,
                "peak_import_kw": self.peak_import_kw}

    @classmethod
    def from_dict(cls, data: dict | None) -> SiteMemory:
        """The memory saved by :meth:`to_dict`; a fresh one for state saved without it."""
        if not data:
            return cls()
        return cls(SessionDays.from_dict(data["sessions"]), bool(data["pv_surplus"]), data["month"],
                   float(data["peak_import_kw"]))


def _month(interval_start: pd.Timestamp, timezone: str) -> str:
    return interval_start.tz_convert(timezone).strftime("%Y-%m")


def guard_setpoints_kw(
    reserve_kwh: np.ndarray, hour: float, weekend: bool, windows: ArrivalWindows, energy_above_min_kwh: np.ndarray,
    charging_now: bool, pv_surplus: bool, max_charge_kw: float, step_hours: float, day_done: bool = False,
) -> np.ndarray:
    """The command of one step for each reserve (NaN: no command from the guard).

    Decided on the latest reading (energy stored, a car charging, PV above load), before the
    step; the import cap defends the target within it. ``day_done``: no further session
    comes today, so none needs a reserve.
    """
    start, end = windows.bounds(np.asarray(weekend))
    reserve = np.asarray(reserve_kwh, dtype=float)
    energy = np.asarray(energy_above_min_kwh, dtype=float) + np.zeros_like(reserve)
    free = np.full(reserve.shape, np.nan)
    if day_done and not charging_now:
        return free
    hold = free if pv_surplus else np.zeros(reserve.shape)
    if start - PRECHARGE_H <= hour < start:
        # Held within one step at full rate above the reserve, so the rule does not flip
        # between charging and covering load.
        margin = max_charge_kw * step_hours
        command = np.where(energy < reserve, max_charge_kw, np.where(energy > reserve + margin, free, hold))
    else:
        keep = reserve if charging_now or start <= hour < end else np.zeros(reserve.shape)
        command = np.where((energy > keep) | (keep <= 0.0), free, hold)
    return np.where(reserve > 0.0, command, free)  # no reserve: the battery's own rule throughout
