"""What the battery does now and next, for Home Assistant's "next action" sensor: the state is
the action now (``charge``, ``discharge``, ``hold`` or ``auto``), the attributes its power,
until when it lasts, the plan's next 24 hours and what the plan expects to save.

The actions come from what the gateway follows (:class:`~edge_gateway.mqtt.commands.SetpointBook`):
a manual mode, else the schedule in force. ``auto`` is the battery deciding on what it
measures: no command (its own rule), or a step the plan leaves to its reserve policy.

Home Assistant's recorder drops a state whose attributes exceed 16 KiB (``MAX_STATE_ATTRS_BYTES``),
and a day at 5-minute steps of alternating commands would be about 20 KB: consecutive steps
with the same action and power are one entry, and a plan still too long is cut at the end,
with ``plan_complete`` false.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from der_core import der_data as dd
from edge_gateway.mqtt.commands import Command, SetpointBook
from edge_gateway.mqtt.controls import AUTO, action_of

HORIZON = pd.Timedelta(hours=24)
MAX_ATTRIBUTES_BYTES = 16 * 1024 - 1024  # Home Assistant's limit, less room for what it adds


@dataclass(frozen=True)
class Step:
    start: pd.Timestamp
    action: str
    power_kw: float  # NaN: none of its own (auto)

    def to_dict(self) -> dict:
        return {"start": dd.format_ts(self.start), "action": self.action, "power_kw": _kw(self.power_kw)}


def _kw(power_kw: float) -> float | None:
    return None if math.isnan(power_kw) else round(power_kw, 3) + 0.0


def _plan_steps(command: Command | None, at: pd.Timestamp, until: pd.Timestamp) -> list[Step]:
    """The plan from ``at`` to ``until``, one step per change: the command's segments, the
    battery's own rule (auto) in gaps and once the command ends, and for a step under a
    reserve policy."""
    steps = [Step(at, AUTO, math.nan)]
    segments = () if command is None else command.segments
    for segment in segments:
        if segment.end <= at or segment.start >= until:
            continue
        power_kw = math.nan if command.reserve is not None and command.reserve.row(segment.start) is not None else segment.power_kw
        steps.append(Step(max(segment.start, at), action_of(power_kw), power_kw))
        steps.append(Step(segment.end, AUTO, math.nan))  # replaced by the next segment when it starts there
    merged: list[Step] = []
    for step in steps:
        if step.start >= until:
            continue
        if merged and merged[-1].start == step.start:
            merged.pop()
        if merged and (merged[-1].action, _kw(merged[-1].power_kw)) == (step.action, _kw(step.power_kw)):
            continue
        merged.append(step)
    return merged


def next_action(book: SetpointBook, device_id: str, at: pd.Timestamp) -> dict:
    """``{"state", "attributes"}`` of the sensor at ``at``: the published JSON."""
    manual = book.override(device_id)
    if manual.follows_plan:
        steps = _plan_steps(book.command(device_id), at, at + HORIZON)
    else:
        steps = [Step(at, manual.mode if manual.mode == AUTO else action_of(manual.power_kw), manual.power_kw)]
    now = steps[0]
    command = book.command(device_id)
    savings = None if command is None or command.expected_savings is None else command.expected_savings.to_dict()
    attributes = {
        "mode": manual.mode,
        "power_kw": _kw(now.power_kw),
        "until": dd.format_ts(steps[1].start) if len(steps) > 1 else None,
        "expected_savings": savings if manual.follows_plan else None,
        "plan": [step.to_dict() for step in steps],
        "plan_complete": True,
    }
    return {"state": now.action, "attributes": _bounded(attributes)}


def _bounded(attributes: dict) -> dict:
    """The attributes with the plan cut short enough to fit ``MAX_ATTRIBUTES_BYTES``."""
    size = len(json.dumps(attributes))
    if size <= MAX_ATTRIBUTES_BYTES:
        return attributes
    plan = attributes["plan"]
    lengths = [len(json.dumps(entry)) + 2 for entry in plan]  # ", " between entries
    keep = len(plan)
    while keep > 1 and size > MAX_ATTRIBUTES_BYTES:
        keep -= 1
        size -= lengths[keep]
    return attributes | {"plan": plan[:keep], "plan_complete": False}
