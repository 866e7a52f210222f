"""EV charging sessions found in a site's load readings, and the load scenarios they give a plan.

A car charges on its own circuit at the charger's rating until it is full, so a session shows
in the readings as a jump of about ``charger_kw`` and, hours later, a drop of the same size.
No forecast from the past knows when the next session starts or how long it lasts,
but the sessions already seen say what to expect: each scenario replays the sessions of one
recent day of the same kind (weekday or weekend) onto the horizon, so the planner holds back
the energy the worst of them would need. What the readings show now conditions every scenario:

* a session under way continues at the charger's rating; its remaining length is drawn from
  the past sessions that lasted longer than this one has so far;
* a car that has already charged today does not charge again today, and a replayed session
  that would already have started, but did not, is dropped.

Only readings at or before the issue instant are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cloud.optimization.same_time import earlier, values_at

#: Days of readings searched for sessions; enough for several weekends.
SESSION_HISTORY_DAYS = 28
#: A jump of at least this share of the charger's rating starts or ends a session. House
#: appliances switch in steps of at most a few kW, the charger in one step of its rating.
JUMP_SHARE = 0.6
#: A reading below this share of the charger's rating has no car charging.
FLOOR_SHARE = 0.95
#: Scenarios per plan: each one a recent day of the same kind.
SCENARIOS = 8
#: A session that has outlasted every session seen is assumed to go on at least this long,
#: until the next plan looks again.
MIN_REMAINING = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class Sessions:
    """Sessions found in the readings: first and last charging instant of each, and whether
    the last one is still under way at the latest reading."""

    starts: pd.DatetimeIndex
    ends: pd.DatetimeIndex
    ongoing: bool

    @property
    def durations(self) -> pd.TimedeltaIndex:
        return self.ends - self.starts


def find_sessions(load_kw: pd.Series, charger_kw: float) -> Sessions:
    """Charging sessions in ``load_kw`` (regular reading instants), by their jumps.

    A session that was already charging at the first reading has no visible start and is
    left out; one still charging at the last reading ends there and is marked ongoing.
    """
    empty = pd.DatetimeIndex([], tz=load_kw.index.tz)
    if charger_kw <= 0 or len(load_kw) < 2:
        return Sessions(empty, empty, False)
    load = load_kw.to_numpy()
    step = np.diff(load)
    # While the car charges the load cannot fall below the charger's rating; that ends a
    # session whose drop an appliance switching on at the same moment made look smaller.
    below = load[1:] < FLOOR_SHARE * charger_kw
    ups = np.flatnonzero((step >= JUMP_SHARE * charger_kw) & ~below) + 1
    downs = np.flatnonzero((step <= -JUMP_SHARE * charger_kw) | below) + 1
    starts, ends = [], []
    position = 0
    for up in ups:
        if up < position:
            continue  # a second jump within a session: still the same car
        later = downs[downs > up]
        last = int(later[0]) - 1 if len(later) else len(load_kw) - 1
        starts.append(up)
        ends.append(last)
        position = last + 1
    ongoing = bool(ends) and ends[-1] == len(load_kw) - 1
    index = load_kw.index
    return Sessions(index[starts] if starts else empty, index[ends] if ends else empty, ongoing)


def _start_days(found: Sessions, step: pd.Timedelta, timezone: str) -> np.ndarray:
    """Local day (as nanoseconds of its midnight) on which each session began."""
    return np.asarray((found.starts - step).tz_convert(timezone).normalize().asi8)


def per_day(found: Sessions, step: pd.Timedelta, timezone: str) -> np.ndarray:
    """How many sessions began on each local day that saw one."""
    return np.unique(_start_days(found, step, timezone), return_counts=True)[1]


def ended_today(found: Sessions, instants: pd.DatetimeIndex, step: pd.Timedelta, timezone: str) -> np.ndarray:
    """Per reading instant: whether a session that began on the local day of the reading's
    interval has ended by then."""
    day = np.asarray((instants - step).tz_convert(timezone).normalize().asi8)
    at = np.asarray(instants.as_unit("ns").asi8)
    ends = np.asarray(pd.DatetimeIndex(found.ends).as_unit("ns").asi8)
    ended = np.zeros(len(instants), dtype=bool)
    for begun, end in zip(_start_days(found, step, timezone), ends):
        ended |= (at > end) & (day == begun)
    return ended


def ended_today_at(found: Sessions, at: pd.Timestamp, step: pd.Timedelta, timezone: str) -> bool:
    """:func:`ended_today` for one reading instant, without building index arithmetic."""
    day = (at - step).tz_convert(timezone).date()
    return any(end < at and (start - step).tz_convert(timezone).date() == day
               for start, end in zip(reversed(found.starts), reversed(found.ends)))


def without_sessions(load_kw: pd.Series, sessions: Sessions, charger_kw: float) -> pd.Series:
    """The house's own load: the charger's rating taken off every charging reading."""
    charging = charging_mask(load_kw.index, sessions.starts, sessions.ends)
    return (load_kw - charger_kw * charging).clip(lower=0.0)


def charging_mask(instants: pd.DatetimeIndex, starts, ends) -> np.ndarray:
    """True at every instant inside one of the sessions ``[start, end]``."""
    values = instants.asi8
    start = np.asarray(pd.DatetimeIndex(starts).as_unit(instants.unit).asi8 if len(starts) else [], dtype=np.int64)
    end = np.asarray(pd.DatetimeIndex(ends).as_unit(instants.unit).asi8 if len(ends) else [], dtype=np.int64)
    if not len(start):
        return np.zeros(len(instants), dtype=bool)
    inside = (values[:, None] >= start[None, :]) & (values[:, None] <= end[None, :])
    return inside.any(axis=1)


def _local_days(instants: pd.DatetimeIndex, step: pd.Timedelta, timezone: str) -> pd.DatetimeIndex:
    """Local calendar day of each reading, by the start of the interval it describes."""
    return (instants - step).tz_convert(timezone).normalize()


def _source_days(day: pd.Timestamp, covered: pd.DatetimeIndex, today: pd.Timestamp, count: int) -> list[pd.Timestamp]:
    """The ``count`` most recent whole past days of the same kind (weekday or weekend) as ``day``."""
    weekend = day.weekday() >= 5
    same = [d for d in covered[::-1] if d < today and (d.weekday() >= 5) == weekend]
    return same[:count]


def _remaining(durations: pd.TimedeltaIndex, elapsed: pd.Timedelta, count: int) -> list[pd.Timedelta]:
    """Remaining lengths of a session under way: past sessions that lasted longer, spread over
    their quantiles; at least :data:`MIN_REMAINING` when it has outlasted them all."""
    longer = np.sort(np.asarray((durations[durations > elapsed] - elapsed).total_seconds()))
    if not len(longer):
        return [MIN_REMAINING] * count
    picks = longer[np.linspace(0, len(longer) - 1, count).round().astype(int)]
    return [pd.Timedelta(seconds=float(s)) for s in picks]


@dataclass(frozen=True)
class LoadScenarios:
    extra_load_kw: np.ndarray  # (scenarios, steps): load to add to the house's own forecast
    house_load_kw: pd.Series  # the readings up to the issue instant, sessions taken off
    charging_now: bool  # a session is under way at the latest reading


def load_scenarios_kw(
    load_kw: pd.Series, issued_at: pd.Timestamp, instants: pd.DatetimeIndex, charger_kw: float, timezone: str,
    count: int = SCENARIOS,
) -> LoadScenarios:
    """Load to add to the house's forecast, per scenario and horizon instant, and the house's
    own load history.

    Each scenario is its source days' charging sessions plus their house-load residual (one
    all-zero scenario without history). The house's own load history is what the house-load
    forecast should be fitted on.
    """
    past, sessions, house = house_history(load_kw, issued_at, charger_kw)
    if len(past) < 2 or charger_kw <= 0:
        return LoadScenarios(np.zeros((1, len(instants))), house, False)
    step = past.index[1] - past.index[0]
    today = _local_days(pd.DatetimeIndex([issued_at + step]), step, timezone)[0]
    covered = _local_days(past.index, step, timezone).unique()[1:]  # the first day may be partial
    start_days = _local_days(sessions.starts, step, timezone) if len(sessions.starts) else pd.DatetimeIndex([])
    charged_today = bool(len(start_days)) and start_days[-1] == today
    horizon_days = _local_days(instants, step, timezone).unique()
    sources = {day: _source_days(day, covered, today, count) for day in horizon_days}
    scenarios = max(1, min((len(s) for s in sources.values()), default=1))
    overlays = _house_residuals_kw(house, instants, _local_days(instants, step, timezone), sources, scenarios, timezone)
    continuation = _remaining(sessions.durations[:-1], sessions.durations[-1], scenarios) if sessions.ongoing else None
    for k in range(scenarios):
        starts, ends = [], []
        if continuation is not None:
            starts.append(issued_at + step)
            ends.append(issued_at + continuation[k])
        for day, days in sources.items():
            if k >= len(days) or (day == today and charged_today):
                continue
            ahead = (day.tz_localize(None) - days[k].tz_localize(None)).days  # replayed at the same local clock time
            chosen = start_days == days[k]
            moved = zip(earlier(sessions.starts[chosen], timezone, -ahead), earlier(sessions.ends[chosen], timezone, -ahead),
                        strict=True)
            for start, end in moved:
                if start > issued_at:  # one that would have begun already did not
                    starts.append(start)
                    ends.append(end)
        overlays[k] += charger_kw * charging_mask(instants, starts, ends)
    return LoadScenarios(overlays, house, sessions.ongoing)


def house_history(load_kw: pd.Series, issued_at: pd.Timestamp, charger_kw: float) -> tuple[pd.Series, Sessions, pd.Series]:
    """The readings of the last :data:`SESSION_HISTORY_DAYS` days up to ``issued_at``, the
    sessions found in them and the house's own load (:func:`without_sessions`)."""
    past = load_kw.loc[issued_at - pd.Timedelta(days=SESSION_HISTORY_DAYS) : issued_at].dropna()
    sessions = find_sessions(past, charger_kw)
    return past, sessions, without_sessions(past, sessions, charger_kw)


def _house_residuals_kw(house: pd.Series, instants: pd.DatetimeIndex, days: pd.DatetimeIndex,
                        sources: dict[pd.Timestamp, list[pd.Timestamp]], scenarios: int, timezone: str) -> np.ndarray:
    """Per scenario, its source day's house load minus the mean of all source days at the same
    local time: the evening that runs hot or busy, which a mean forecast smooths away."""
    residuals = np.zeros((scenarios, len(instants)))
    for day, days_back in sources.items():
        rows = days == day
        if not days_back:
            continue
        lags = np.array([(day.tz_localize(None) - source.tz_localize(None)).days for source in days_back])
        replay = values_at(house, instants[rows], lags[:, None], timezone)
        replay = replay - np.nanmean(replay, axis=0)
        residuals[: len(days_back), rows] = np.nan_to_num(replay[:scenarios])
    return residuals
