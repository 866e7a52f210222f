"""Battery setpoint commands: strict validation where they enter, and the thread-safe book
the gateway reads through the :class:`~edge_gateway.gateway.SetpointSource` protocol.

Two command shapes (DESIGN.md, "MQTT topics"); power is AC kW, positive charges:

* ``{"power_kw": -2.5, "expires_in_s": 900}``: in force from receipt for ``expires_in_s``
  (default 900 s, at most a day, so a lost connection never leaves a command on for ever);
* ``{"schedule": [{"ts": "2024-06-15T14:00:00+00:00", "power_kw": 1.0}, ...]}``: each entry in
  force from its ``ts`` until the next entry's; the last one for as long as the step between
  the last two entries (a 15-minute plan ends 15 minutes after its last entry), or the default
  for a single entry. ``"power_kw": null`` gives no power command for that entry: the battery
  runs its own self-consumption rule, which reacts to the actual load and PV.

Both forms take an optional ``"import_limit_kw"`` (finite, >= 0): a grid import cap the
battery defends by discharging more or charging less than commanded, as hybrid inverters'
grid-limit settings do; a plan sends its peak import target so load nobody forecast is shaved.

A schedule may carry a reserve policy for the steps it covers (edge_gateway/control.py):
``"reserve": {"start": "...", "step_s": 900, "charging_steps": 24, "house_levels": [0.8, 1.1, 1.7],
"one_session_a_day": true, "house_kw": [...], "floor_kwh": [[...], ...], "charge_to_kwh": [[...], ...]}``,
per step from ``start`` and per session state the energies the battery covers load down to and
charges up to; the gateway applies it at every reading.

An empty payload clears the device's command: it is how MQTT deletes a retained message, and
the broker passes it on to the gateway as such. The battery then runs its own rule.

An accepted command replaces whatever the device was following. The physics clamps power to
the battery's rates and SOC window; validation only refuses what cannot be meant, such as a
power beyond ``POWER_MARGIN`` times the battery's larger rate (a unit mix-up, W for kW).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from edge_gateway.config import BatteryMode
from edge_gateway.control import ReservePolicy
from edge_gateway.errors import ValidationFailed
from edge_gateway.models import der_data as dd

DEFAULT_EXPIRES_S = 900.0
MAX_EXPIRES_S = 86_400.0
MAX_HORIZON = pd.Timedelta(days=7)
MAX_ENTRIES = 10_000
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # a reserve policy takes about 100 KB a day at 15-minute steps
# Bounds checked before or while parsing, so a hostile payload costs a bounded amount of work:
# a command nests 4 deep ({"reserve": {"floor_kwh": [[...]]}}) and no field needs a 20-digit integer.
MAX_DEPTH = 16
MAX_INT_DIGITS = 20
POWER_MARGIN = 10.0
EXCERPT_CHARS = 200
EARLIEST_YEAR, LATEST_YEAR = 1970, 2200  # instants outside these are typos, and overflow timestamps


class CommandRejected(ValidationFailed):
    """A setpoint command that is not applied; the message says why."""


@dataclass(frozen=True)
class Segment:
    start: pd.Timestamp
    end: pd.Timestamp
    power_kw: float  # NaN: no command, the battery's own rule
    import_limit_kw: float = math.nan  # NaN: no cap


@dataclass(frozen=True)
class Command:
    device_id: str
    segments: tuple[Segment, ...]
    reserve: ReservePolicy | None = None


def _refuse_constant(name: str) -> float:
    raise CommandRejected(f"{name} is not a number; expected a finite JSON number")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise CommandRejected(f"duplicate key {duplicates[0]!r}")
    return dict(pairs)


def _integer(text: str) -> int:
    # Called by the parser before it converts the digits: Python's own limit (4,300 digits)
    # raises a ValueError, and a few thousand digits already take quadratic time to convert.
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise CommandRejected(f"a number with {digits} digits; expected at most {MAX_INT_DIGITS}")
    return int(text)


def nesting_depth(payload: bytes) -> int:
    """How deep arrays and objects nest in ``payload``, brackets inside strings not counted.

    Counted before parsing, because the parser recurses once per level and a deep payload
    would exhaust the stack. Vectorised and linear in the payload: a quote starts or ends a
    string unless an odd run of backslashes precedes it (JSON's only escape). For text that is
    not JSON the count may be off, but only past the point where the parser stops anyway.
    """
    raw = np.frombuffer(payload, dtype=np.uint8)
    quotes = raw == ord('"')
    backslashes = raw == ord("\\")
    if backslashes.any():
        positions = np.arange(len(raw), dtype=np.int32)
        last_other = np.maximum.accumulate(np.where(backslashes, -1, positions))
        run_before = positions[1:] - 1 - last_other[:-1]  # backslashes just before each position
        quotes[1:] &= run_before % 2 == 0
    outside = np.cumsum(quotes, dtype=np.int32) % 2 == 0
    opens = ((raw == ord("[")) | (raw == ord("{"))) & outside
    closes = ((raw == ord("]")) | (raw == ord("}"))) & outside
    steps = opens.view(np.int8) - closes.view(np.int8)
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def _decode(payload: bytes) -> Mapping:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandRejected(f"payload of {len(payload)} bytes; expected at most {MAX_PAYLOAD_BYTES}")
    if payload.count(b"[") + payload.count(b"{") > MAX_DEPTH and (depth := nesting_depth(payload)) > MAX_DEPTH:
        raise CommandRejected(f"arrays and objects nested {depth} deep; expected at most {MAX_DEPTH}")
    try:
        data = json.loads(payload.decode("utf-8"), parse_constant=_refuse_constant, parse_int=_integer, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise CommandRejected("payload is not UTF-8 text; expected a JSON object") from None
    except json.JSONDecodeError as error:
        raise CommandRejected(f"malformed JSON ({error.msg} at column {error.colno}); expected a JSON object") from None
    if not isinstance(data, dict):
        raise CommandRejected(f"expected a JSON object, got {type(data).__name__}")
    return data


def _keys(data: Mapping, allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise CommandRejected(f"{where}unknown key {unknown[0]!r}; expected only {', '.join(sorted(allowed))}")


def _number(value: object, name: str) -> float:
    # bool is an int in Python, but `true` is never a power.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommandRejected(f"{name} must be a number, got {json.dumps(value)[:40]}")
    if not math.isfinite(value):
        raise CommandRejected(f"{name} must be finite")
    return float(value)


def _power(value: object, name: str, limit_kw: float) -> float:
    power = _number(value, name)
    if abs(power) > limit_kw:
        raise CommandRejected(f"{name} {power:g} kW is beyond +/-{limit_kw:g} kW ({POWER_MARGIN:g} x the battery's rate)")
    return power


def _import_limit(data: Mapping, name: str) -> float:
    if "import_limit_kw" not in data:
        return math.nan
    limit = _number(data["import_limit_kw"], name)
    if limit < 0:
        raise CommandRejected(f"{name} {limit:g} kW is negative; expected a grid import cap >= 0 kW")
    return limit


def _instant(value: object, name: str) -> pd.Timestamp:
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


def _immediate(data: Mapping, device_id: str, limit_kw: float, now: pd.Timestamp, retained: bool) -> Command:
    _keys(data, {"power_kw", "expires_in_s", "import_limit_kw"}, "")
    if retained:
        # A retained command comes back on every reconnect and would restart its countdown.
        raise CommandRejected("power_kw commands must not be retained; publish without retain, or send a schedule")
    power = _power(data["power_kw"], "power_kw", limit_kw)
    cap = _import_limit(data, "import_limit_kw")
    expires = _number(data.get("expires_in_s", DEFAULT_EXPIRES_S), "expires_in_s")
    if not 0 < expires <= MAX_EXPIRES_S:
        raise CommandRejected(f"expires_in_s {expires:g} out of range; expected 0 < expires_in_s <= {MAX_EXPIRES_S:g}")
    # Readings are stamped to the second, so the command counts from the second it arrived in.
    start = now.floor("s")
    return Command(device_id, (Segment(start, now + pd.Timedelta(seconds=expires), power, cap),))


def _whole(value: object, name: str, low: int, high: int) -> int:
    number = _number(value, name)
    if number != int(number) or not low <= number <= high:
        raise CommandRejected(f"{name} {number:g} out of range; expected a whole number from {low} to {high}")
    return int(number)


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


def _reserve(data: object) -> ReservePolicy:
    fields = {"start", "step_s", "charging_steps", "house_levels", "one_session_a_day", "house_kw", "floor_kwh", "charge_to_kwh"}
    if not isinstance(data, dict):
        raise CommandRejected(f"reserve must be an object with {', '.join(sorted(fields))}")
    _keys(data, fields, "reserve: ")
    for key in sorted(fields):
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
    return ReservePolicy(
        start=_instant(data["start"], "reserve.start"), step_s=_whole(data["step_s"], "reserve.step_s", 1, 86_400),
        floor_kwh=_table(data["floor_kwh"], "reserve.floor_kwh", len(house), states),
        charge_to_kwh=_table(data["charge_to_kwh"], "reserve.charge_to_kwh", len(house), states),
        charging_steps=steps, house_levels=tuple(float(m) for m in levels), house_kw=house,
        one_session_a_day=data["one_session_a_day"],
    )


def _schedule(data: Mapping, device_id: str, limit_kw: float, now: pd.Timestamp) -> Command:
    _keys(data, {"schedule", "reserve"}, "")
    policy = _reserve(data["reserve"]) if "reserve" in data else None
    entries = data["schedule"]
    if not isinstance(entries, list) or not entries:
        raise CommandRejected("schedule must be a non-empty list of {\"ts\", \"power_kw\"} objects")
    if len(entries) > MAX_ENTRIES:
        raise CommandRejected(f"schedule has {len(entries)} entries; expected at most {MAX_ENTRIES}")
    points = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise CommandRejected(f"schedule[{i}] must be an object with ts and power_kw")
        _keys(entry, {"ts", "power_kw", "import_limit_kw"}, f"schedule[{i}]: ")
        for key in ("ts", "power_kw"):
            if key not in entry:
                raise CommandRejected(f"schedule[{i}] lacks {key}")
        # null must be spelled out: a missing power_kw is more likely a mistake than "no command".
        power = math.nan if entry["power_kw"] is None else _power(entry["power_kw"], f"schedule[{i}].power_kw", limit_kw)
        points.append((_instant(entry["ts"], f"schedule[{i}].ts"), power, _import_limit(entry, f"schedule[{i}].import_limit_kw")))
    points.sort(key=lambda p: p[0])
    for (a, *_), (b, *_) in zip(points, points[1:]):
        if a == b:
            raise CommandRejected(f"schedule has two entries at {dd.format_ts(a)}; expected distinct times")
    last_step = points[-1][0] - points[-2][0] if len(points) > 1 else pd.Timedelta(seconds=DEFAULT_EXPIRES_S)
    end = points[-1][0] + min(last_step, pd.Timedelta(seconds=MAX_EXPIRES_S))
    if end <= now:
        raise CommandRejected(f"schedule ended at {dd.format_ts(end)}, before now; expected a current or future plan")
    if points[0][0] > now + MAX_HORIZON:
        raise CommandRejected(f"schedule starts after {MAX_HORIZON.days} days from now; expected a near-term plan")
    ends = [p[0] for p in points[1:]] + [end]
    return Command(device_id, tuple(Segment(ts, stop, power, cap) for (ts, power, cap), stop in zip(points, ends)), policy)


def parse_command(payload: bytes, device_id: str, limit_kw: float, now: pd.Timestamp, retained: bool = False) -> Command:
    """Validate one command payload, or raise :class:`CommandRejected` with the reason."""
    data = _decode(payload)
    if "schedule" in data:
        return _schedule(data, device_id, limit_kw, now)
    if "power_kw" in data:
        return _immediate(data, device_id, limit_kw, now, retained)
    raise CommandRejected("expected {\"power_kw\": ..., \"expires_in_s\": ...} or {\"schedule\": [...]}")


def excerpt(payload: bytes) -> str:
    """The payload's first characters, for error replies; only the head is decoded (a UTF-8
    character takes at most 4 bytes), so a huge payload costs nothing here."""
    head = payload[: 4 * EXCERPT_CHARS + 4]
    text = head.decode("utf-8", errors="replace")
    if len(text) <= EXCERPT_CHARS and len(head) == len(payload):
        return text
    return text[:EXCERPT_CHARS] + "..."


class SetpointBook:
    """Accepted commands per device; the gateway's :class:`SetpointSource`. Thread-safe: the
    MQTT client writes from its network thread while the gateway reads from its own."""

    def __init__(self, limits_kw: Mapping[str, float], clock: Callable[[], pd.Timestamp] = dd.utc_now) -> None:
        self.limits_kw = dict(limits_kw)  # devices that follow commands, and their power bound
        self._clock = clock
        self._lock = threading.Lock()
        self._commands: dict[str, Command] = {}

    @classmethod
    def for_configs(cls, configs, clock: Callable[[], pd.Timestamp] = dd.utc_now) -> SetpointBook:
        limits = {
            c.device_id: POWER_MARGIN * max(c.battery.max_charge_rate_kw, c.battery.max_discharge_rate_kw, 0.1)
            for c in configs
            if c.battery.mode == BatteryMode.SETPOINT
        }
        return cls(limits, clock)

    def accept(self, device_id: str, payload: bytes, retained: bool = False) -> Command | None:
        """Validate and apply a command, or raise :class:`CommandRejected` leaving the book as it was.
        An empty payload clears the device's command and returns None."""
        if not payload:
            with self._lock:
                self._commands.pop(device_id, None)
            return None
        if device_id not in self.limits_kw:
            raise CommandRejected(f"device {device_id} runs its own battery control; set battery.mode to \"setpoint\" to accept commands")
        command = parse_command(payload, device_id, self.limits_kw[device_id], self._clock(), retained)
        with self._lock:
            self._commands[device_id] = command
        return command

    def _in_force(self, device_id: str, at: pd.Timestamp) -> tuple[Command, Segment] | None:
        with self._lock:
            command = self._commands.get(device_id)
        if command is not None:
            for segment in command.segments:
                if segment.start <= at < segment.end:
                    return command, segment
        return None

    def _segment(self, device_id: str, at: pd.Timestamp) -> Segment | None:
        found = self._in_force(device_id, at)
        return None if found is None else found[1]

    def reserve(self, device_id: str, at: pd.Timestamp) -> ReservePolicy | None:
        """The reserve policy of the schedule in force at ``at``, None when none."""
        found = self._in_force(device_id, at)
        return None if found is None else found[0].reserve

    def power_kw(self, device_id: str, at: pd.Timestamp) -> float:
        """The power command in force at ``at`` (kW, + charges), NaN when none."""
        segment = self._segment(device_id, at)
        return math.nan if segment is None else segment.power_kw

    def import_limit_kw(self, device_id: str, at: pd.Timestamp) -> float:
        """The grid import cap in force at ``at`` (kW), NaN when none."""
        segment = self._segment(device_id, at)
        return math.nan if segment is None else segment.import_limit_kw

    def command(self, device_id: str) -> Command | None:
        with self._lock:
            return self._commands.get(device_id)
