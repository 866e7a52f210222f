"""The setpoint schedule: the message a plan sends on ``der/<device_id>/battery/setpoint`` and
the gateway follows, its encoder and its validating decoder side by side so the two cannot
drift apart. Power is AC kW, positive charges.

``{"schedule": [{"ts": "2024-06-15T14:00:00+00:00", "power_kw": 1.0, "import_limit_kw": 5.0}, ...]}``:
each entry is in force from its ``ts`` until the next entry's (the gateway decides how long
the last one lasts, edge_gateway/mqtt/commands.py). ``"power_kw": null`` gives no power
command for that entry: the battery runs its own self-consumption rule, which reacts to the
actual load and PV. ``"import_limit_kw"`` (optional, finite, >= 0) is a grid import cap the
battery defends by discharging more or charging less than commanded, as hybrid inverters'
grid-limit settings do; a plan sends its peak import target so load nobody forecast is shaved.
``"event": true`` (optional, a boolean, false when absent) marks an entry as a demand-response
event's: its cap is held as given, where any other cap is never held below the month's peak
import (:meth:`der_core.control.Controller.cap_kw`).

A schedule may carry a reserve policy for the steps it covers (der_core/control.py):
``"reserve": {"start": "...", "step_s": 900, "charging_steps": 24, "house_levels": [0.8, 1.1, 1.7],
"one_session_a_day": true, "house_kw": [...], "floor_kwh": [[...], ...], "charge_to_kwh": [[...], ...]}``,
per step from ``start`` and per session state the energies the battery covers load down to and
charges up to; the gateway applies it at every reading. A home without a car's policy adds
``"burst_kw": 2.0`` (optional, > 0; absent or null: the sessions are the charger's): its
sessions are the household's bursts, told from the house load against ``house_kw``.

A schedule may say what its plan expects to save over the steps it covers, for people to
read (the gateway shows it in Home Assistant): ``"expected_savings": {"amount": 1.84,
"currency": "USD"}``, an amount of money (negative: the plan expects to cost more) and an
ISO 4217 code.

The encoder sends power and caps to 0.1 W (4 decimals of kW) and never a negative zero. The
decoder takes the JSON object a payload parsed to (the payload's own bounds are the
gateway's, edge_gateway/mqtt/commands.py) and refuses what cannot be meant, raising
:class:`CommandRejected` with the reason: a power beyond ``POWER_MARGIN`` times the battery's
larger rate (a unit mix-up, W for kW), a time with no UTC offset, two entries at one time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from der_core import der_data as dd
from der_core.control import ReservePolicy
from der_core.errors import ValidationFailed

MAX_ENTRIES = 10_000
POWER_MARGIN = 10.0
EARLIEST_YEAR, LATEST_YEAR = 1970, 2200  # instants outside these are typos, and overflow timestamps
SENT_DECIMALS = 4  # kW to 0.1 W
RESERVE_FIELDS = frozenset({"start", "step_s", "charging_steps", "house_levels", "one_session_a_day", "house_kw",
                            "floor_kwh", "charge_to_kwh"})


class CommandRejected(ValidationFailed):
    """A setpoint command that is not applied; the message says why."""


@dataclass(frozen=True)
class SetpointEntry:
    ts: pd.Timestamp  # in force from this instant (UTC) until the next entry's
    power_kw: float | None = None  # None: no power command, the battery's own rule
    import_limit_kw: float | None = None  # None: no import cap
    event: bool = False  # a demand-response event's step: its cap is held as given

    def to_dict(self) -> dict:
        entry = {"ts": dd.format_ts(self.ts), "power_kw": None if self.power_kw is None else _sent(self.power_kw)}
        if self.import_limit_kw is not None:
            entry["import_limit_kw"] = _sent(self.import_limit_kw)
        return entry | {"event": True} if self.event else entry


@dataclass(frozen=True)
class ExpectedSavings:
    """What a plan expects to save over its schedule, in ``currency`` (ISO 4217)."""

    amount: float
    currency: str

    def to_dict(self) -> dict:
        return {"amount": round(self.amount, 4) + 0.0, "currency": self.currency}

    @classmethod
    def from_dict(cls, data: object) -> ExpectedSavings:
        if not isinstance(data, dict):
            raise CommandRejected("expected_savings must be an object with amount and currency")
        check_keys(data, {"amount", "currency"}, "expected_savings: ")
        if "amount" not in data or "currency" not in data:
            raise CommandRejected("expected_savings needs amount and currency")
        currency = data["currency"]
        if not (isinstance(currency, str) and len(currency) == 3 and currency.isascii() and currency.isalpha() and currency.isupper()):
            raise CommandRejected(f"expected_savings.currency {json.dumps(currency)[:40]}; expected an ISO 4217 code such as USD")
        return cls(number(data["amount"], "expected_savings.amount"), currency)


@dataclass(frozen=True, eq=False)
class SetpointSchedule:
    """Entries in time order, at distinct times; the reserve policy the gateway applies over
    them; what the plan expects to save."""

    entries: tuple[SetpointEntry, ...]
    reserve: ReservePolicy | None = None
    expected_savings: ExpectedSavings | None = None

    @classmethod
    def from_commands(cls, step_starts: Sequence[pd.Timestamp], power_kw: np.ndarray, import_limit_kw: np.ndarray,
                      reserve: ReservePolicy | None = None, expected_savings: ExpectedSavings | None = None,
                      event: np.ndarray | None = None) -> SetpointSchedule:
        """The schedule of per-step commands as the backtest carries a plan out (NaN: none);
        ``event`` marks the steps of a demand-response event (none by default)."""
        events = np.zeros(len(step_starts), dtype=bool) if event is None else np.asarray(event, dtype=bool)
        entries = tuple(SetpointEntry(ts, None if math.isnan(p) else float(p), None if math.isnan(c) else float(c), bool(e))
                        for ts, p, c, e in zip(step_starts, power_kw, import_limit_kw, events))
        return cls(entries, reserve, expected_savings)

    @property
    def has_event(self) -> bool:
        """Some entry is a demand-response event's."""
        return any(entry.event for entry in self.entries)

    def to_dict(self) -> dict:
        """The JSON object sent: the reserve policy's rows for the schedule's steps only."""
        data = {"schedule": [entry.to_dict() for entry in self.entries]}
        if self.expected_savings is not None:
            data["expected_savings"] = self.expected_savings.to_dict()
        if self.reserve is None:
            return data
        return data | {"reserve": reserve_payload(self.reserve, self.entries[0].ts, len(self.entries))}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping, limit_kw: float) -> SetpointSchedule:
        """Validate a parsed ``{"schedule": [...]}`` object; powers beyond ``limit_kw`` are refused."""
        check_keys(data, {"schedule", "reserve", "expected_savings"}, "")
        policy = reserve_from_payload(data["reserve"]) if "reserve" in data else None
        savings = ExpectedSavings.from_dict(data["expected_savings"]) if "expected_savings" in data else None
        entries = data["schedule"]
        if not isinstance(entries, list) or not entries:
            raise CommandRejected("schedule must be a non-empty list of {\"ts\", \"power_kw\"} objects")
        if len(entries) > MAX_ENTRIES:
            raise CommandRejected(f"schedule has {len(entries)} entries; expected at most {MAX_ENTRIES}")
        decoded = sorted((_entry(entry, i, limit_kw) for i, entry in enumerate(entries)), key=lambda e: e.ts)
        for a, b in zip(decoded, decoded[1:]):
            if a.ts == b.ts:
                raise CommandRejected(f"schedule has two entries at {dd.format_ts(a.ts)}; expected distinct times")
        return cls(tuple(decoded), policy, savings)


def _sent(kw: float) -> float:
    return round(float(kw), SENT_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0


def _entry(entry: object, i: int, limit_kw: float) -> SetpointEntry:
    if not isinstance(entry, dict):
        raise CommandRejected(f"schedule[{i}] must be an object with ts and power_kw")
    check_keys(entry, {"ts", "power_kw", "import_limit_kw", "event"}, f"schedule[{i}]: ")
    for key in ("ts", "power_kw"):
        if key not in entry:
            raise CommandRejected(f"schedule[{i}] lacks {key}")
    # null must be spelled out: a missing power_kw is more likely a mistake than "no command".
    power_kw = None if entry["power_kw"] is None else power(entry["power_kw"], f"schedule[{i}].power_kw", limit_kw)
    ts = instant(entry["ts"], f"schedule[{i}].ts")
    cap = import_limit(entry, f"schedule[{i}].import_limit_kw")
    event = entry.get("event", False)
    if not isinstance(event, bool):
        raise CommandRejected(f"schedule[{i}].event must be true or false, got {json.dumps(event)[:40]}")
    return SetpointEntry(ts, power_kw, None if math.isnan(cap) else cap, event)


def check_keys(data: Mapping, allowed: set[str] | frozenset[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise CommandRejected(f"{where}unknown key {unknown[0]!r}; expected only {', '.join(sorted(allowed))}")


def number(value: object, name: str) -> float:
    # bool is an int in Python, but `true` is never a power.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommandRejected(f"{name} must be a number, got {json.dumps(value)[:40]}")
    if not math.isfinite(value):
        raise CommandRejected(f"{name} must be finite")
    return float(value)


def power(value: object, name: str, limit_kw: float) -> float:
    power_kw = number(value, name)
    if abs(power_kw) > limit_kw:
        raise CommandRejected(f"{name} {power_kw:g} kW is beyond +/-{limit_kw:g} kW ({POWER_MARGIN:g} x the battery's rate)")
    return power_kw


def import_limit(data: Mapping, name: str) -> float:
    """The entry's import cap, NaN when it has none."""
    if "import_limit_kw" not in data:
        return math.nan
    limit = number(data["import_limit_kw"], name)
    if limit < 0:
        raise CommandRejected(f"{name} {limit:g} kW is negative; expected a grid import cap >= 0 kW")
    return limit


def instant(value: object, name: str) -> pd.Timestamp:
    if not isinstance(value, str):
        raise CommandRejected(f"{name} must be an ISO 8601 string with a UTC offset")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandRejected(f"{name} {value[:40]!r} is not ISO 8601; expected e.g. 2024-06-15T14:00:00+00:00") from None
    if parsed.tzinfo is None:
        raise CommandRejected(f"{name} {value[:40]!r} has no UTC offset; expected e.g. 2024-06-15T14:00:00+00:00")
    if not EARLIEST_YEAR <= parsed.year <= LATEST_YEAR:
        raise CommandRejected(f"{name} {value[:40]!r} is out of range; expected a year from {EARLIEST_YEAR} to {LATEST_YEAR}")
    return dd.parse_ts(parsed)


def _whole(value: object, name: str, low: int, high: int) -> int:
    whole = number(value, name)
    if whole != int(whole) or not low <= whole <= high:
        raise CommandRejected(f"{name} {whole:g} out of range; expected a whole number from {low} to {high}")
    return int(whole)


def _table(value: object, name: str, rows: int | None, columns: int | None) -> np.ndarray:
    """A list (``columns`` None) or list of lists of finite numbers >= 0, as an array."""
    shape = "a list" if columns is None else "a list of lists"
    if not isinstance(value, list) or not value or (rows is not None and len(value) != rows):
        raise CommandRejected(f"{name} must be {shape} of {rows or 'some'} rows")
    cells = value if columns is None else []
    if columns is not None:
        for i, row in enumerate(value):
            if not isinstance(row, list) or len(row) != columns:
                raise CommandRejected(f"{name}[{i}] must be a list of {columns} numbers, one per session state")
            cells.extend(row)
    if any(isinstance(c, bool) or not isinstance(c, (int, float)) for c in cells):
        raise CommandRejected(f"{name} must hold numbers only")
    array = np.asarray(cells, dtype=float)
    if not np.isfinite(array).all() or (array < 0).any():
        raise CommandRejected(f"{name} must hold finite numbers >= 0")
    return array if columns is None else array.reshape(len(value), columns)


def reserve_payload(policy: ReservePolicy, since: pd.Timestamp | None = None, steps: int | None = None) -> dict:
    """The ``reserve`` object of a schedule (:func:`reserve_from_payload` reads it back): the
    policy's ``steps`` rows (all by default) from the step starting at ``since`` (the first by
    default), energies to the watt-hour."""
    first = 0 if since is None else policy.row(since)
    if first is None:
        raise ValueError(f"the policy does not cover {since}")
    rows = slice(first, None if steps is None else first + steps)
    table = lambda a: np.round(a[rows], 3).tolist()  # noqa: E731
    return {"start": (policy.start + first * policy.step).isoformat(), "step_s": policy.step_s,
            "charging_steps": policy.charging_steps, "house_levels": [round(m, 4) for m in policy.house_levels],
            "one_session_a_day": policy.one_session_a_day, "house_kw": table(policy.house_kw),
            "floor_kwh": table(policy.floor_kwh), "charge_to_kwh": table(policy.charge_to_kwh),
            "burst_kw": policy.burst_kw}


def reserve_from_payload(data: object) -> ReservePolicy:
    """The reserve policy of a ``reserve`` object (:func:`reserve_payload` writes them)."""
    if not isinstance(data, dict):
        raise CommandRejected(f"reserve must be an object with {', '.join(sorted(RESERVE_FIELDS))}")
    check_keys(data, RESERVE_FIELDS | {"burst_kw"}, "reserve: ")
    for key in sorted(RESERVE_FIELDS):
        if key not in data:
            raise CommandRejected(f"reserve lacks {key}")
    if not isinstance(data["one_session_a_day"], bool):
        raise CommandRejected(f"reserve.one_session_a_day must be true or false, got {json.dumps(data['one_session_a_day'])[:40]}")
    levels = _table(data["house_levels"], "reserve.house_levels", None, None)
    if len(levels) > 16 or (levels <= 0).any():
        raise CommandRejected("reserve.house_levels must be 1 to 16 multipliers > 0")
    steps = _whole(data["charging_steps"], "reserve.charging_steps", 1, 1000)
    house = _table(data["house_kw"], "reserve.house_kw", None, None)
    if len(house) > MAX_ENTRIES:
        raise CommandRejected(f"reserve.house_kw has {len(house)} steps; expected at most {MAX_ENTRIES}")
    states = steps * len(levels) + 2
    burst = data.get("burst_kw")
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int | float)
                              or not math.isfinite(burst) or burst <= 0):
        raise CommandRejected(f"reserve.burst_kw must be a number of kW > 0 or null, got {json.dumps(burst)[:40]}")
    return ReservePolicy(
        start=instant(data["start"], "reserve.start"), step_s=_whole(data["step_s"], "reserve.step_s", 1, 86_400),
        floor_kwh=_table(data["floor_kwh"], "reserve.floor_kwh", len(house), states),
        charge_to_kwh=_table(data["charge_to_kwh"], "reserve.charge_to_kwh", len(house), states),
        charging_steps=steps, house_levels=tuple(float(m) for m in levels), house_kw=house,
        one_session_a_day=data["one_session_a_day"], burst_kw=None if burst is None else float(burst),
    )
