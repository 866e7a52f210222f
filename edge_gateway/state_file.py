"""What a gateway keeps of each device between steps and across restarts: the battery state
and the control's memory (control.SiteMemory) after its latest step and before it, in one
JSON file per device, replaced atomically.

The file holds ``{"ts", "state", "memory", "energy", "previous": {"ts", "state", "memory",
"energy"}}``: the instant of the latest step and what it left, and what it started from, so the
same instant again redoes that step instead of stepping twice. ``previous.ts`` is null for a
step from the configured battery; ``memory`` and ``energy`` (the site's energy meters,
edge_gateway/energy.py) are absent or null in state saved before the gateway kept them.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from der_core import der_data as dd
from der_core.control import SiteMemory
from edge_gateway.energy import EnergyMeters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteSnapshot:
    """A device's battery state and control memory at instant ``ts``."""

    ts: pd.Timestamp | None  # None: the configured battery, never stepped
    battery: dict[str, float]  # simulators.battery.BatteryState.site
    memory: SiteMemory | None = None  # None: saved without one
    energy: EnergyMeters | None = None  # None: saved without them

    def memory_to_step(self) -> SiteMemory:
        """A copy of the memory for the next step to change (a fresh one when none was saved),
        so this snapshot stays what was saved."""
        return SiteMemory() if self.memory is None else copy.deepcopy(self.memory)

    def to_dict(self) -> dict:
        return {"ts": None if self.ts is None else dd.format_ts(self.ts), "state": self.battery,
                "memory": None if self.memory is None else self.memory.to_dict(),
                "energy": None if self.energy is None else self.energy.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> SiteSnapshot:
        memory = data.get("memory")
        return cls(None if data["ts"] is None else dd.parse_ts(data["ts"]), data["state"],
                   SiteMemory.from_dict(memory) if memory else None, EnergyMeters.from_dict(data.get("energy")))


@dataclass(frozen=True)
class GatewayState:
    """A device's state after its latest step (``latest.ts`` is that step's instant) and before it."""

    latest: SiteSnapshot
    previous: SiteSnapshot

    def to_dict(self) -> dict:
        return self.latest.to_dict() | {"previous": self.previous.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> GatewayState:
        return cls(SiteSnapshot.from_dict(data), SiteSnapshot.from_dict(data["previous"]))


class StateFile:
    """The saved :class:`GatewayState` of one device.

    A state the disk will not take (full, read-only) is kept in memory and read back from
    there until a save succeeds: the running gateway steps on from its own last step, not from
    the file's older one, which would make readings whose charge stands still while the
    battery discharges."""

    def __init__(self, folder: Path, device_id: str) -> None:
        self.path = Path(folder) / f"{device_id}.json"
        self.unsaved: GatewayState | None = None

    def load(self) -> GatewayState | None:
        """The saved state (or the newer one the disk refused); None when there is none, or
        when it is not readable JSON (the gateway then rebuilds it from its stored readings)."""
        if self.unsaved is not None:
            return self.unsaved
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning("ignoring unreadable state %s (%s)", self.path, error)
            return None
        return GatewayState.from_dict(data)

    def save(self, state: GatewayState) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(state.to_dict()))
            os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new state, never half
        except OSError as error:
            if self.unsaved is None:
                log.warning("state %s not saved (%s); kept in memory until it can be", self.path, error)
            self.unsaved = state
            return
        if self.unsaved is not None:
            log.warning("state %s saved again", self.path)
        self.unsaved = None
