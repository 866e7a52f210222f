"""What an imported series says about its own logger: a clock off by whole hours (PV peaking
away from solar noon, or from the clear-sky peak of the site's declared array, which an array
facing east or west of south reaches before or after noon), PV above the site's nameplate, power a thousand times off a home's (watts read as kW), a state of charge written as a fraction of 1, a
grid or battery column counted the other way round (the balance of a file holding the house
load, the grid flow and PV or battery holds only with its sign turned: Tesla's exports count
the battery's discharge as positive, the contract its charge), a sensor stuck at one
non-zero value, and the gaps the series has: times without a row, and a field's blank cells
in the rows stored (both kept as gaps: nothing is filled).

:class:`Plausibility` takes the stored rows chunk by chunk and keeps only small summaries
(a PV profile by month and UTC time of day, run and gap state), so a file of any length
is checked in bounded memory; :meth:`Plausibility.report` turns them into findings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pvlib import solarposition

from der_core import der_data as dd
from der_core.cli_support import duration
from der_core.config import SolarConfig
from der_core.runs import true_runs
from der_physics.solar import clearsky_ac_kw

#: A field holding one non-zero value this long is reported as flat-lined: measured power
#: and irradiance move within minutes; a frozen sensor or a filled-in export does not.
FLAT_AFTER = pd.Timedelta(hours=6)
FLAT_FIELDS = (dd.SOLAR_KW, dd.LOAD_TOTAL, dd.NET_GRID_FLOW, dd.SOLAR_IRRADIANCE)
#: How long a field may read 0 before that is reported too (absent: never). PV and irradiance
#: are 0 every night, but not over a whole day and night: an array under snow, an inverter
#: that failed, a logger writing 0 for what it missed, which the jobs learn from as measured.
#: A house always draws its standing load. A grid flow held at 0 is a battery doing its job.
ZERO_FLAT_AFTER = {dd.SOLAR_KW: pd.Timedelta(hours=24), dd.SOLAR_IRRADIANCE: pd.Timedelta(hours=24),
                   dd.LOAD_TOTAL: FLAT_AFTER}
#: A home's mean power in any field stays far below this, and its house load far above the
#: floor: a mean outside them is a file in W read as kW, or in kW read as W (a factor of
#: 1,000), not a home's consumption.
HOME_MEAN_KW = 30.0
LOAD_FLOOR_KW = 0.01
MAGNITUDE_FIELDS = (dd.LOAD_TOTAL, dd.SOLAR_KW, dd.NET_GRID_FLOW, dd.BATTERY_POWER)
#: A state of charge never above this over a whole file is a fraction of 1 written where a
#: percentage belongs: a battery in use is charged beyond 1 % on some day.
SOC_FRACTION_MAX = 1.0
#: The balance holds where its mean miss is at most this share of the mean house load (the
#: meters' own errors and their readings' timing): a sign turned misses by twice a term.
BALANCE_TOLERANCE = 0.1
#: The ways round a grid and a battery column may be counted: (grid sign, battery sign).
_SIGNS = ((1, 1), (1, -1), (-1, 1), (-1, -1))
#: PV read less often than this says nothing of when in the day it came: a day's yield held
#: over every step of the day puts PV in the night, and its centre of mass is the day's middle.
COARSEST_PV = pd.Timedelta(hours=1)
#: A month whose PV centre of mass sits this far from solar noon reads as a clock shift.
SHIFT_AFTER_H = 0.75
_SLOTS = 144  # ten-minute slots of the UTC day
_MID_MONTH_DOY = np.array([15, 46, 74, 105, 135, 166, 196, 227, 258, 288, 319, 349])


@dataclass
class Finding:
    check: str
    status: str  # "ok", "warning" or "skipped"
    message: str

    def line(self) -> str:
        return f"{self.check}: {self.message}" if self.status == "ok" else f"{self.check}: {self.status}: {self.message}"


@dataclass
class _Run:
    value: float = np.nan
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None


@dataclass
class Plausibility:
    interval: pd.Timedelta | None = None
    #: The site's longitude: PV is summed by the month of its local solar day, so the evening
    #: of a month's last day, which in the Americas falls on the next UTC day, stays in its
    #: month (None: UTC months; the clock is then not checked against the sun anyway).
    longitude: float | None = None
    pv_profile: np.ndarray = field(default_factory=lambda: np.zeros((12, _SLOTS)))
    #: Per month and slot the most PV read: the month's clearest morning beside its clearest
    #: afternoon, whatever the other days' weather (see :meth:`_clock`).
    pv_envelope: np.ndarray = field(default_factory=lambda: np.zeros((12, _SLOTS)))
    pv_max_kw: float = np.nan
    pv_above: int = 0  # readings above the nameplate
    gaps: int = 0
    longest_gap: pd.Timedelta = pd.Timedelta(0)
    #: Per field, its blank cells in stored rows and its longest run of them (readings, first
    #: time): a logger that writes the time but lost one sensor for days leaves no time gap.
    blank: dict[str, int] = field(default_factory=dict)
    blank_longest: dict[str, tuple[int, pd.Timestamp]] = field(default_factory=dict)
    #: A field read less often than the rows come (a 5-minute inverter file joined to a
    #: 1-minute meter's) is blank between its own readings by design: only a run of blanks
    #: as long as its own interval counts.
    field_interval: dict[str, pd.Timedelta] = field(default_factory=dict)
    _blank_open: dict[str, tuple[int, pd.Timestamp]] = field(default_factory=dict)
    flat: dict[str, list[tuple[float, pd.Timestamp, pd.Timestamp]]] = field(default_factory=dict)
    magnitude: dict[str, tuple[float, int]] = field(default_factory=dict)  # field -> (sum of |kW|, readings)
    soc_max: float = np.nan  # the highest state of charge stored
    balance: np.ndarray = field(default_factory=lambda: np.zeros(len(_SIGNS)))  # sum of |miss| per way round
    balance_load: float = 0.0  # sum of the house load over the rows the balance was taken on
    balance_rows: int = 0
    balance_terms: tuple[str, ...] = ()
    _last_ts: pd.Timestamp | None = None
    _runs: dict[str, _Run] = field(default_factory=dict)

    def add(self, readings: pd.DataFrame, fields: list[str], nameplate_kw: float | None = None) -> None:
        """Take one chunk of stored readings (a flat frame, in file order)."""
        ts = readings[dd.TS]
        if ts.empty:
            return
        self._add_gaps(ts)
        self._add_blanks(readings, fields)
        if dd.SOLAR_KW in fields:
            self._add_pv(ts, readings[dd.SOLAR_KW].to_numpy(dtype=float, na_value=np.nan), nameplate_kw)
        for column in (c for c in FLAT_FIELDS if c in fields):
            self._add_runs(column, ts, readings[column].to_numpy(dtype=float, na_value=np.nan))
        self._add_balance(readings, fields)
        for column in (c for c in MAGNITUDE_FIELDS if c in fields):
            values = np.abs(readings[column].to_numpy(dtype=float, na_value=np.nan))
            total, count = self.magnitude.get(column, (0.0, 0))
            self.magnitude[column] = (total + float(np.nansum(values)), count + int((~np.isnan(values)).sum()))
        if dd.BATTERY_SOC in fields:
            soc = readings[dd.BATTERY_SOC].to_numpy(dtype=float, na_value=np.nan)
            if not np.isnan(soc).all():
                self.soc_max = float(np.fmax(self.soc_max, np.nanmax(soc)))

    def _add_balance(self, readings: pd.DataFrame, fields: list[str]) -> None:
        """The miss of ``load = grid + PV - battery`` each way round the grid and battery may be
        counted, over the rows holding every term the file maps (a term it lacks is not
        taken as 0: the balance is skipped without the load, the grid and PV or battery)."""
        terms = [c for c in (dd.SOLAR_KW, dd.BATTERY_POWER) if c in fields]
        if not terms or not {dd.LOAD_TOTAL, dd.NET_GRID_FLOW} <= set(fields):
            return
        self.balance_terms = (dd.NET_GRID_FLOW, *terms)
        columns = [dd.LOAD_TOTAL, dd.NET_GRID_FLOW, *terms]
        values = readings[columns].to_numpy(dtype="float64", na_value=np.nan)
        values = values[~np.isnan(values).any(axis=1)]
        if not len(values):
            return
        frame = dict(zip(columns, values.T))
        pv = frame.get(dd.SOLAR_KW, 0.0)
        battery = frame.get(dd.BATTERY_POWER, 0.0)
        for k, (grid_sign, battery_sign) in enumerate(_SIGNS):
            balance = dd.house_load_kw(grid_sign * frame[dd.NET_GRID_FLOW], pv, battery_sign * battery)
            self.balance[k] += float(np.abs(frame[dd.LOAD_TOTAL] - balance).sum())
        self.balance_load += float(np.abs(frame[dd.LOAD_TOTAL]).sum())
        self.balance_rows += len(values)

    def _add_gaps(self, ts: pd.Series) -> None:
        times = ts if self._last_ts is None else pd.concat([pd.Series([self._last_ts]), ts], ignore_index=True)
        steps = times.diff().dropna()
        if self.interval is not None and len(steps):
            wide = steps[steps > self.interval * 1.5]
            self.gaps += len(wide)
            if len(wide):
                self.longest_gap = max(self.longest_gap, wide.max() - self.interval)
        self._last_ts = ts.iloc[-1]

    def _add_blanks(self, readings: pd.DataFrame, fields: list[str]) -> None:
        """Count each field's blank cells in runs as long as its own interval and keep the
        longest; the run still open at the chunk's end carries over."""
        times = pd.DatetimeIndex(readings[dd.TS])
        for column in fields:
            blank = readings[column].isna().to_numpy(dtype=bool)
            if not blank.any():
                self._end_blank(column)
                continue
            starts, ends = true_runs(blank)
            lengths, firsts = ends - starts, times[starts]
            if starts[0] == 0 and column in self._blank_open:  # the carried run goes on
                carried, first = self._blank_open.pop(column)
                lengths[0] += carried
                firsts = firsts.delete(0).insert(0, first)
            else:
                self._end_blank(column)
            if ends[-1] == len(blank):  # this chunk's last run may go on in the next
                self._blank_open[column] = (int(lengths[-1]), firsts[-1])
                lengths, firsts = lengths[:-1], firsts[:-1]
            long = np.flatnonzero(lengths >= self._blank_run(column))
            if len(long):
                k = long[np.argmax(lengths[long])]
                self._note_blank(column, int(lengths[k]), firsts[k], int(lengths[long].sum()))

    def _blank_run(self, column: str) -> int:
        """The fewest blank rows in a run that count as the field's own gap."""
        own = self.field_interval.get(column)
        if own is None or self.interval is None or own <= self.interval:
            return 1
        return int(np.ceil(own / self.interval))

    def _end_blank(self, column: str) -> None:
        if column in self._blank_open:
            length, first = self._blank_open.pop(column)
            if length >= self._blank_run(column):
                self._note_blank(column, length, first, length)

    def _note_blank(self, column: str, length: int, first: pd.Timestamp, count: int) -> None:
        self.blank[column] = self.blank.get(column, 0) + count
        if length > self.blank_longest.get(column, (0, first))[0]:
            self.blank_longest[column] = (length, first)

    def _add_pv(self, ts: pd.Series, pv_kw: np.ndarray, nameplate_kw: float | None) -> None:
        known = ~np.isnan(pv_kw)
        solar = ts if self.longitude is None else ts + pd.Timedelta(hours=self.longitude / 15)
        month = solar.dt.month.to_numpy()[known] - 1
        slot = ((ts.dt.hour * 60 + ts.dt.minute).to_numpy()[known] // 10).astype(int)
        np.add.at(self.pv_profile, (month, slot), pv_kw[known])
        np.maximum.at(self.pv_envelope, (month, slot), pv_kw[known])
        if known.any():
            self.pv_max_kw = float(np.nanmax([self.pv_max_kw, pv_kw[known].max()]))
        if nameplate_kw:
            self.pv_above += int((pv_kw[known] > nameplate_kw).sum())

    def _add_runs(self, column: str, ts: pd.Series, values: np.ndarray) -> None:
        """Runs of one repeated value; the run still open at the chunk's end carries over.
        Found with array operations: only the runs long enough to report leave them, as a
        noisy sensor starts a new run at every reading."""
        run = self._runs.setdefault(column, _Run())
        previous = np.concatenate([[run.value], values[:-1]])
        starts = ~((values == previous) & ~np.isnan(values))
        times = pd.DatetimeIndex(ts)
        first_at = np.flatnonzero(starts)
        if not starts[0]:  # the chunk's first span continues the carried run
            first_at = np.concatenate([[0], first_at])
        elif run.start is not None:
            self._close(column, run)
        last_at = np.concatenate([first_at[1:] - 1, [len(values) - 1]])
        first, last, value = times[first_at], times[last_at], values[first_at]
        if not starts[0]:
            first = first.delete(0).insert(0, run.start)
        closed = slice(None, -1)  # every span but the chunk's last ends inside the chunk
        shortest = np.where(value[closed] == 0, _flat_zero_after(column), FLAT_AFTER)
        long = ~np.isnan(value[closed]) & (np.asarray(last - first)[closed] >= shortest)
        for k in np.flatnonzero(long):
            self._close(column, _Run(float(value[k]), first[k], last[k]))
        self._runs[column] = _Run(float(value[-1]), first[-1], last[-1])

    def _close(self, column: str, run: _Run) -> None:
        if run.start is None or np.isnan(run.value):
            return
        if run.end - run.start >= (_flat_zero_after(column) if run.value == 0 else FLAT_AFTER):
            self.flat.setdefault(column, []).append((float(run.value), run.start, run.end))

    def report(self, longitude: float | None, nameplate_kw: float | None, array: SolarConfig | None = None) -> list[Finding]:
        """The findings, in a fixed order: clock, nameplate, magnitude, balance, flat lines, gaps. ``array``: the
        site's declared PV system, whose clear-sky peak the clock is checked against (None:
        solar noon at ``longitude``)."""
        for column, run in self._runs.items():
            self._close(column, run)
        self._runs = {}
        for column in list(self._blank_open):
            self._end_blank(column)
        return [self._clock(longitude, array), self._nameplate(nameplate_kw), self._magnitude(nameplate_kw), self._balance(),
                self._flat(), self._gaps()]

    def _clock(self, longitude: float | None, array: SolarConfig | None) -> Finding:
        reference = "solar noon" if array is None else "the declared array's clear-sky peak"
        if not self.pv_profile.any():
            return Finding("clock", "skipped", f"no PV readings to compare with {reference}")
        interval = self.field_interval.get(dd.SOLAR_KW, self.interval)
        if interval is not None and interval > COARSEST_PV:
            return Finding("clock", "warning", f"PV read every {duration(interval)}: too coarse to show when in the day it "
                           "came, and the jobs hold each reading over its whole interval, the night's hours included; "
                           f"import PV read every {duration(COARSEST_PV)} or less (an inverter's own export)")
        if longitude is None and array is None:
            return Finding("clock", "skipped", "site longitude unknown (no sites row; --longitude DEG)")
        # A month is shifted when both its summed PV and its envelope peak away from the
        # reference, the same way: the sum alone reads a few days of afternoon storms as a
        # clock running early, the envelope alone one spike as the day's peak.
        reference_h = None if array is None else clear_sky_centres_h(array)
        at = longitude if array is None else array.longitude
        shifts = pv_peak_offsets_h(self.pv_profile, at, reference_h)
        clearest = pv_peak_offsets_h(self.pv_envelope, at, reference_h)
        shifted = {m + 1: round(h) for m, (h, e) in enumerate(zip(shifts, clearest))
                   if not np.isnan(h) and abs(h) >= SHIFT_AFTER_H and abs(e) >= SHIFT_AFTER_H and h * e > 0}
        if not shifted:
            return Finding("clock", "ok", f"PV peaks within 45 min of {reference} in every month")
        hours = max(set(shifted.values()), key=list(shifted.values()).count)
        months = ", ".join(pd.Timestamp(2000, m, 1).strftime("%b") for m in sorted(shifted))
        return Finding("clock", "warning", f"PV peaks {abs(hours)} h {'after' if hours > 0 else 'before'} {reference} "
                       f"in {months}: likely clock shift of {hours:+d} h (check the time zone, DST and --timezone)")

    def _nameplate(self, nameplate_kw: float | None) -> Finding:
        if np.isnan(self.pv_max_kw):  # a load meter's file: nothing to compare
            return Finding("pv nameplate", "skipped", "no PV readings in the file")
        if not nameplate_kw:
            return Finding("pv nameplate", "skipped", "no pv_capacity_kw in the site's row")
        above = self.pv_above
        if not above:
            return Finding("pv nameplate", "ok", f"PV never above {nameplate_kw:g} kW")
        return Finding("pv nameplate", "warning", f"{above} readings above the {nameplate_kw:g} kW nameplate "
                       f"(max {self.pv_max_kw:.3g} kW): units, a wrong nameplate or a second system")

    def _magnitude(self, nameplate_kw: float | None) -> Finding:
        """A mean far above a home's, or above the declared array's nameplate where that is
        larger (a school's roof of 200 kWp averages more than a home ever draws)."""
        means = {c: total / count for c, (total, count) in self.magnitude.items() if count}
        warnings = []
        ceiling = max(HOME_MEAN_KW, nameplate_kw or 0.0)
        high = [f"{c} averages {m:.4g} kW" for c, m in means.items() if m > ceiling]
        if high:
            size = "a home's few kW" if ceiling == HOME_MEAN_KW else f"the site's {ceiling:g} kW of PV"
            warnings.append(f"{'; '.join(high)}, far above {size}: watts read as kW? (--units W)")
        load = means.get(dd.LOAD_TOTAL)
        if not high and load is not None and load < LOAD_FLOOR_KW:
            warnings.append(f"{dd.LOAD_TOTAL} averages {load * 1000:.3g} W, far below a home's standing load: kW read "
                            "as watts? (--units kW)")
        if self.soc_max <= SOC_FRACTION_MAX:
            warnings.append(f"{dd.BATTERY_SOC} is never above {self.soc_max:.3g}: a fraction (0 to 1) rather than a "
                            "percentage? Plans would start from a nearly empty battery; write it times 100")
        if warnings:
            return Finding("magnitude", "warning", "; ".join(warnings))
        if not means:
            return Finding("magnitude", "skipped", "no power readings")
        return Finding("magnitude", "ok", "mean " + ", ".join(f"|{c}| {m:.3g} kW" for c, m in means.items())
                       + ": a home's")

    def _balance(self) -> Finding:
        if not self.balance_rows:
            return Finding("balance", "skipped", "needs the house load, the grid flow and PV or battery power in one "
                           "row")
        formula = "grid + PV - battery" if len(self.balance_terms) == 3 else \
            "grid + PV" if dd.SOLAR_KW in self.balance_terms else "grid - battery"
        misses = self.balance / self.balance_rows
        load = self.balance_load / self.balance_rows
        tolerance = BALANCE_TOLERANCE * load + 0.01
        if misses[0] <= tolerance:
            return Finding("balance", "ok", f"the house load is {formula} within {misses[0]:.3f} kW on average")
        best = int(np.argmin(misses))
        if best and misses[best] <= tolerance:
            grid_sign, battery_sign = _SIGNS[best]
            turned = [c for c, sign in ((dd.NET_GRID_FLOW, grid_sign), (dd.BATTERY_POWER, battery_sign)) if sign < 0]
            return Finding("balance", "warning", f"{' and '.join(turned)} counted the other way round: the house load "
                           f"is {formula} within {misses[best]:.3f} kW with {'them' if len(turned) > 1 else 'it'} "
                           f"turned, {misses[0]:.3f} kW as mapped (the grid's import and the battery's charge count "
                           f"positive here: map {' and '.join('COLUMN=-' + c for c in turned)})")
        return Finding("balance", "warning", f"the house load is not {formula}: {misses[0]:.3f} kW off on average "
                       f"against a mean load of {load:.3f} kW (a term missing from the file, scaled or shifted in time)")

    def _flat(self) -> Finding:
        if not self.flat:
            return Finding("flat lines", "ok", f"no field holds one non-zero value for {duration(FLAT_AFTER)} or more, "
                           f"nor PV 0 for {duration(ZERO_FLAT_AFTER[dd.SOLAR_KW])}, nor the house load 0 for "
                           f"{duration(ZERO_FLAT_AFTER[dd.LOAD_TOTAL])}")
        parts = []
        for column, runs in self.flat.items():
            value, start, end = max(runs, key=lambda r: r[2] - r[1])
            parts.append(f"{column} {len(runs)}x, longest {value:g} for {duration(end - start)} from {start:%Y-%m-%d %H:%M}Z")
        return Finding("flat lines", "warning", "; ".join(parts))

    def _gaps(self) -> Finding:
        if self.interval is None:
            return Finding("gaps", "skipped", "fewer than two readings")
        every = f"every {duration(self.interval)}"
        times = (f"none (a reading {every})" if not self.gaps else
                 f"{self.gaps} kept as gaps, longest {duration(self.longest_gap)} (a reading {every})")
        blanks = [f"{column} {duration(self.interval * count)} in all (longest "
                  f"{duration(self.interval * self.blank_longest[column][0])} from "
                  f"{self.blank_longest[column][1]:%Y-%m-%d %H:%M}Z)" for column, count in self.blank.items()]
        return Finding("gaps", "ok", times + ("; blank cells, kept as gaps: " + ", ".join(blanks) if blanks else ""))


def _flat_zero_after(column: str) -> np.timedelta64:
    """How long ``column`` may read 0 before it counts as flat-lined (:data:`ZERO_FLAT_AFTER`)."""
    return np.timedelta64(ZERO_FLAT_AFTER[column]) if column in ZERO_FLAT_AFTER else np.timedelta64(2**62, "us")


def pv_peak_offsets_h(profile: np.ndarray, longitude: float, reference_h: np.ndarray | None = None) -> np.ndarray:
    """Per month, hours from the reference (``reference_h``, UTC hours per month; default
    solar noon at ``longitude``) to the PV profile's centre of mass (positive: later), from a
    ``(12, slots)`` sum of PV by month and UTC time of day; NaN for a month without PV."""
    weight = profile.sum(axis=1)
    if reference_h is None:
        reference_h = 12 - longitude / 15 - solarposition.equation_of_time_spencer71(_MID_MONTH_DOY) / 60
    offset = (_centres_h(profile) - reference_h + 12) % 24 - 12
    return np.where(weight > 0, offset, np.nan)


def clear_sky_centres_h(array: SolarConfig) -> np.ndarray:
    """Per month, the UTC hour of the centre of mass of ``array``'s clear-sky output on the
    month's middle day, sampled at the middle of each slot a measured profile is summed in."""
    days = pd.Timestamp("2001-01-01", tz="UTC") + pd.to_timedelta(_MID_MONTH_DOY - 1, unit="D")
    offsets = pd.to_timedelta((np.arange(_SLOTS) + 0.5) * 24 * 60 / _SLOTS, unit="min")
    times = pd.DatetimeIndex([day + offset for day in days for offset in offsets])
    return _centres_h(clearsky_ac_kw(array, times).reshape(12, _SLOTS))


def _centres_h(profile: np.ndarray) -> np.ndarray:
    """Each row's centre of mass over the UTC day, in hours: a circular mean, so a day that
    spans UTC midnight is one day."""
    slots = profile.shape[1]
    angle = 2 * np.pi * (np.arange(slots) + 0.5) / slots
    return np.angle(profile @ np.exp(1j * angle)) * 24 / (2 * np.pi) % 24


def interval_of(ts: pd.Series) -> pd.Timedelta | None:
    """The series' regular step: its most common positive spacing."""
    steps = ts.sort_values().diff().dropna()
    steps = steps[steps > pd.Timedelta(0)]
    return None if steps.empty else steps.mode().iloc[0]
