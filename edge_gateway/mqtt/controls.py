"""The battery's manual controls, as Home Assistant's ``select`` (the mode) and ``number``
(a manual setpoint) send them: what each mode asks of the battery, and strict parsing of the
two commands where they enter.

A mode overrides the plan until the mode is set back to ``plan``:

* ``plan``: the schedule in force (power commands, import cap, reserve policy), as received
  on the setpoint topic; with none in force the battery's own rule. The default.
* ``auto``: the battery's own rule whatever the plan says (self-consumption for a simulated
  battery, the device's own mode for a real one).
* ``hold``: 0 kW: the battery neither charges nor discharges.
* ``charge`` / ``discharge``: the battery's full charge / discharge rate.

A manual setpoint (kW, positive charges, within the battery's rates) is the same override at
that power; its mode reads ``charge``, ``discharge`` or ``hold`` by its sign. A manual mode
drops the plan's import cap and reserve policy with its power commands: the person who chose
it asked for that power, not for the plan's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from der_core.setpoints import CommandRejected

PLAN, AUTO, HOLD, CHARGE, DISCHARGE = "plan", "auto", "hold", "charge", "discharge"
MODES = (PLAN, AUTO, HOLD, CHARGE, DISCHARGE)
ACTIONS = (CHARGE, DISCHARGE, HOLD, AUTO)  # what the battery does: a mode less "plan"
MANUAL_STEP_KW = 0.1
_MAX_COMMAND_BYTES = 64  # a mode name or a number; anything longer is not one


@dataclass(frozen=True)
class ManualLimits:
    """A battery's rates, which bound its manual setpoint."""

    max_charge_kw: float
    max_discharge_kw: float

    @property
    def low_kw(self) -> float:
        return -self.max_discharge_kw

    @property
    def high_kw(self) -> float:
        return self.max_charge_kw


@dataclass(frozen=True)
class Override:
    """The mode in force and the power it asks (kW, + charges; NaN: no power of its own)."""

    mode: str = PLAN
    power_kw: float = math.nan

    @property
    def follows_plan(self) -> bool:
        return self.mode == PLAN

    @classmethod
    def of_mode(cls, mode: str, limits: ManualLimits) -> Override:
        powers = {PLAN: math.nan, AUTO: math.nan, HOLD: 0.0, CHARGE: limits.max_charge_kw, DISCHARGE: -limits.max_discharge_kw}
        return cls(mode, powers[mode])

    @classmethod
    def of_power(cls, power_kw: float) -> Override:
        return cls(action_of(power_kw), power_kw)


def action_of(power_kw: float) -> str:
    """What a power asks of the battery: ``auto`` for none (NaN), else by its sign. Powers
    under half a watt are ``hold``: the schedule's encoder rounds to 0.1 W."""
    if math.isnan(power_kw):
        return AUTO
    if power_kw > 5e-4:
        return CHARGE
    if power_kw < -5e-4:
        return DISCHARGE
    return HOLD


def _text(payload: bytes, what: str) -> str:
    if len(payload) > _MAX_COMMAND_BYTES:
        raise CommandRejected(f"{what} of {len(payload)} bytes; expected a short text")
    try:
        return payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CommandRejected(f"{what} is not UTF-8 text") from None


def parse_mode(payload: bytes) -> str:
    """A mode name, or :class:`CommandRejected` naming the ones there are."""
    mode = _text(payload, "battery mode")
    if mode not in MODES:
        raise CommandRejected(f"battery mode {mode[:40]!r}; expected one of {', '.join(MODES)}")
    return mode


def parse_manual_kw(payload: bytes, limits: ManualLimits) -> float:
    """A manual setpoint within the battery's rates, or :class:`CommandRejected` saying why."""
    text = _text(payload, "manual setpoint")
    try:
        power_kw = float(text)
    except ValueError:
        raise CommandRejected(f"manual setpoint {text[:40]!r}; expected a number of kW") from None
    if not math.isfinite(power_kw) or not limits.low_kw <= power_kw <= limits.high_kw:
        raise CommandRejected(f"manual setpoint {text[:40]} kW; expected {limits.low_kw:g} to {limits.high_kw:g} kW")
    return power_kw + 0.0  # no negative zero
