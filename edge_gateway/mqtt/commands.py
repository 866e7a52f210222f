"""Battery setpoint commands: strict validation where they enter, and the thread-safe book
the gateway reads through the :class:`~edge_gateway.gateway.SetpointSource` protocol.

Two command shapes (DESIGN.md, "MQTT topics"); power is AC kW, positive charges:

* ``{"power_kw": -2.5, "expires_in_s": 900}``: in force from receipt for ``expires_in_s``
  (default 900 s, at least a second, at most a day, so a lost connection never leaves a
  command on for ever),
  with an optional ``"import_limit_kw"`` as a schedule's entries take;
* a setpoint schedule (:class:`~der_core.setpoints.SetpointSchedule`, which
  spells the message and decodes it): each entry in force from its ``ts`` until the next
  entry's; the last one for as long as the step between the last two entries (a 15-minute
  plan ends 15 minutes after its last entry), or the default for a single entry.

An empty payload clears the device's command: it is how MQTT deletes a retained message, and
the broker passes it on to the gateway as such. The battery then runs its own rule.

An accepted command replaces whatever the device was following. The physics clamps power to
the battery's rates and SOC window; validation only refuses what cannot be meant.

A manual mode or setpoint (:mod:`edge_gateway.mqtt.controls`, from Home Assistant) overrides
the commands until the mode is set back to ``plan``; the commands are kept meanwhile.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from der_core import der_data as dd
from der_core.config import BatteryMode
from der_core.control import ReservePolicy
from der_core.setpoints import (
    POWER_MARGIN,
    CommandRejected,
    ExpectedSavings,
    SetpointSchedule,
    check_keys,
    import_limit,
    number,
    power,
)
from edge_gateway.mqtt.controls import (
    ManualLimits,
    Override,
    parse_manual_kw,
    parse_mode,
)

DEFAULT_EXPIRES_S = 900.0
MIN_EXPIRES_S = 1.0  # readings are stamped to the second: a shorter command would never be seen in force
MAX_EXPIRES_S = 86_400.0
MAX_HORIZON = pd.Timedelta(days=7)
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # a reserve policy takes about 100 KB a day at 15-minute steps
# Bounds checked before or while parsing, so a hostile payload costs a bounded amount of work:
# a command nests 4 deep ({"reserve": {"floor_kwh": [[...]]}}) and no field needs a 20-digit integer.
MAX_DEPTH = 16
MAX_INT_DIGITS = 20
EXCERPT_CHARS = 200

@dataclass(frozen=True)
class Segment:
    start: pd.Timestamp
    end: pd.Timestamp
    power_kw: float  # NaN: no command, the battery's own rule
    import_limit_kw: float = math.nan  # NaN: no cap
    event: bool = False  # a demand-response event's step (der_core.setpoints)


@dataclass(frozen=True)
class Command:
    device_id: str
    segments: tuple[Segment, ...]
    reserve: ReservePolicy | None = None
    expected_savings: ExpectedSavings | None = None


def _refuse_constant(name: str) -> float:
    raise CommandRejected(f"{name} is not a number; expected a finite JSON number")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """The object, refused if a key repeats. One pass: counting each key among the others
    took minutes on an object of 50,000 keys, with the MQTT thread held all the while."""
    seen: set[str] = set()
    duplicates: set[str] = set()
    for key, _ in pairs:
        (duplicates if key in seen else seen).add(key)
    if duplicates:
        raise CommandRejected(f"duplicate key {min(duplicates)!r}")
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


def _immediate(data: Mapping, device_id: str, limit_kw: float, now: pd.Timestamp, retained: bool) -> Command:
    check_keys(data, {"power_kw", "expires_in_s", "import_limit_kw"}, "")
    if retained:
        # A retained command comes back on every reconnect and would restart its countdown.
        raise CommandRejected("power_kw commands must not be retained; publish without retain, or send a schedule")
    power_kw = power(data["power_kw"], "power_kw", limit_kw)
    cap = import_limit(data, "import_limit_kw")
    expires = number(data.get("expires_in_s", DEFAULT_EXPIRES_S), "expires_in_s")
    if not MIN_EXPIRES_S <= expires <= MAX_EXPIRES_S:
        raise CommandRejected(f"expires_in_s {expires:g} out of range; expected {MIN_EXPIRES_S:g} <= expires_in_s <= "
                              f"{MAX_EXPIRES_S:g}")
    # Readings are stamped to the second, so the command counts from the second it arrived in.
    start = now.floor("s")
    return Command(device_id, (Segment(start, now + pd.Timedelta(seconds=expires), power_kw, cap),))


def _schedule(data: Mapping, device_id: str, limit_kw: float, now: pd.Timestamp) -> Command:
    schedule = SetpointSchedule.from_dict(data, limit_kw)
    starts = [entry.ts for entry in schedule.entries]
    last_step = starts[-1] - starts[-2] if len(starts) > 1 else pd.Timedelta(seconds=DEFAULT_EXPIRES_S)
    end = starts[-1] + min(last_step, pd.Timedelta(seconds=MAX_EXPIRES_S))
    if end <= now:
        raise CommandRejected(f"schedule ended at {dd.format_ts(end)}, before now; expected a current or future plan")
    if starts[0] > now + MAX_HORIZON:
        raise CommandRejected(f"schedule starts after {MAX_HORIZON.days} days from now; expected a near-term plan")
    ends = starts[1:] + [end]
    segments = tuple(Segment(entry.ts, stop, math.nan if entry.power_kw is None else entry.power_kw,
                             math.nan if entry.import_limit_kw is None else entry.import_limit_kw, entry.event)
                     for entry, stop in zip(schedule.entries, ends))
    return Command(device_id, segments, schedule.reserve, schedule.expected_savings)


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

    def __init__(self, limits_kw: Mapping[str, float], clock: Callable[[], pd.Timestamp] = dd.utc_now,
                 manual_limits: Mapping[str, ManualLimits] | None = None) -> None:
        self.limits_kw = dict(limits_kw)  # devices that follow commands, and their power bound
        self.manual_limits = dict(manual_limits or {})  # devices with manual controls, and their rates
        self._clock = clock
        self._lock = threading.Lock()
        self._commands: dict[str, Command] = {}
        self._overrides: dict[str, Override] = {}

    @classmethod
    def for_configs(cls, configs, clock: Callable[[], pd.Timestamp] = dd.utc_now) -> SetpointBook:
        followers = [c for c in configs if c.battery.mode == BatteryMode.SETPOINT]
        limits = {c.device_id: POWER_MARGIN * max(c.battery.max_charge_rate_kw, c.battery.max_discharge_rate_kw, 0.1) for c in followers}
        manual = {c.device_id: ManualLimits(c.battery.max_charge_rate_kw, c.battery.max_discharge_rate_kw) for c in followers}
        return cls(limits, clock, manual)

    def now(self) -> pd.Timestamp:
        return self._clock()

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

    def set_mode(self, device_id: str, payload: bytes) -> Override:
        """Validate and apply a manual mode (:mod:`~edge_gateway.mqtt.controls`), or raise
        :class:`CommandRejected` leaving the book as it was."""
        limits = self._manual_limits(device_id)
        return self._override(device_id, Override.of_mode(parse_mode(payload), limits))

    def set_manual_kw(self, device_id: str, payload: bytes) -> Override:
        """Validate and apply a manual setpoint, or raise :class:`CommandRejected`."""
        limits = self._manual_limits(device_id)
        return self._override(device_id, Override.of_power(parse_manual_kw(payload, limits)))

    def override(self, device_id: str) -> Override:
        """The manual mode in force (``plan`` when none was set)."""
        with self._lock:
            return self._overrides.get(device_id, Override())

    def _manual_limits(self, device_id: str) -> ManualLimits:
        if device_id not in self.manual_limits:
            raise CommandRejected(f"device {device_id} runs its own battery control; set battery.mode to \"setpoint\" for manual control")
        return self.manual_limits[device_id]

    def _override(self, device_id: str, override: Override) -> Override:
        with self._lock:
            self._overrides[device_id] = override
        return override

    def _in_force(self, device_id: str, at: pd.Timestamp) -> tuple[Command, Segment] | None:
        """The command and its segment in force at ``at``; a manual mode replaces both with its
        power alone (no import cap, no reserve policy)."""
        with self._lock:
            manual = self._overrides.get(device_id, Override())
            command = self._commands.get(device_id)
        if not manual.follows_plan:
            return Command(device_id, ()), Segment(at, at, manual.power_kw)
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

    def event(self, device_id: str, at: pd.Timestamp) -> bool:
        """The step in force at ``at`` is a demand-response event's."""
        segment = self._segment(device_id, at)
        return segment is not None and segment.event

    def command(self, device_id: str) -> Command | None:
        with self._lock:
            return self._commands.get(device_id)
