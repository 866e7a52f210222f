"""Sending an event's schedules to the gateways: the optimizer's own publishing (a retained
QoS 1 schedule per site on ``der/<device_id>/battery/setpoint``), behind a small Protocol so
the decision can be tested and benchmarked without a broker.

Withdrawing an event's schedule (a cancel, or a modification the fleet no longer follows)
puts back the schedule the event displaced, so a site returns to its optimizer plan rather
than to its battery's own rule. :class:`MqttPublisher` reads that schedule off the broker as
it replaces it (:func:`~edge_gateway.mqtt.retained.replace_retained`) and keeps it in memory
until the withdrawal: it republishes it when it still has entries to come (the gateway
refuses a schedule that has ended), else it clears the topic. A schedule that is itself an
event's (``SetpointSchedule.has_event``) is not kept, so two events in a row put back the
plan from before the first. A VEN restarted between dispatch and withdrawal has no record and
clears; the optimizer's next run publishes its plan either way.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Protocol

import pandas as pd

from cloud.optimization.publish import PublishFailed
from der_core import der_data as dd
from der_core.setpoints import CommandRejected, SetpointSchedule
from edge_gateway.mqtt import topics
from edge_gateway.mqtt.retained import NotPublished, publish_retained, replace_retained
from edge_gateway.mqtt.settings import MqttSettings


class SchedulePublisher(Protocol):
    def publish(self, device_id: str, schedule: SetpointSchedule) -> None:
        """Send ``schedule``; raise a :class:`~der_core.errors.DERError` when it was not acknowledged."""
        ...

    def clear(self, device_id: str) -> None:
        """Withdraw the device's event schedule: the site returns to the schedule it followed
        before, when that one is still in force, else to its battery's own rule."""
        ...


def displaced_schedule(payload: bytes) -> SetpointSchedule | None:
    """The schedule a retained ``payload`` holds, if it is one a withdrawal may put back: a
    valid schedule that is no event's. Powers are not bounded here: the gateway bounds them."""
    try:
        schedule = SetpointSchedule.from_dict(json.loads(payload), math.inf)
    except (ValueError, TypeError, KeyError, CommandRejected):
        return None
    return None if schedule.has_event else schedule


class MqttPublisher:
    """Schedules on ``der/<device_id>/battery/setpoint``, retained, as the optimizer sends them;
    each displaced non-event schedule kept until its event's schedule is withdrawn.

    Every site's schedule goes through the one broker, so a send the broker failed says it is
    down or not answering: for ``retry_after_s`` (default ``timeout_s``) the next sends fail at
    once with the same reason instead of each waiting ``timeout_s``, which would hold a
    decision (and the VEN's event loop it runs on) for sites x ``timeout_s``."""

    def __init__(self, settings: MqttSettings, timeout_s: float = 10.0,
                 clock: Callable[[], pd.Timestamp] = dd.utc_now, retry_after_s: float | None = None) -> None:
        self.settings, self.timeout_s, self.clock = settings, timeout_s, clock
        self.retry_after_s = timeout_s if retry_after_s is None else retry_after_s
        self._displaced: dict[str, bytes] = {}
        self._failed: tuple[float, str] | None = None  # (monotonic time, reason) of the broker's last failure

    def _broker(self, send: Callable[[], bytes | None]) -> bytes | None:
        """``send``'s result; PublishFailed when it fails, or at once while the broker's last
        failure is recent."""
        if self._failed is not None and time.monotonic() - self._failed[0] < self.retry_after_s:
            raise PublishFailed(f"{self._failed[1]} (not tried again for {self.retry_after_s:g}s)")
        try:
            result = send()
        except NotPublished as error:
            self._failed = (time.monotonic(), str(error))
            raise PublishFailed(str(error)) from None
        self._failed = None
        return result

    def publish(self, device_id: str, schedule: SetpointSchedule) -> None:
        replaced = self._broker(lambda: replace_retained(
            self.settings, topics.setpoint(device_id), schedule.to_json(), what="the schedule", client_name="der-dr",
            timeout_s=self.timeout_s))
        if replaced is not None and displaced_schedule(replaced) is not None:
            self._displaced[device_id] = replaced
        elif replaced is None:
            self._displaced.pop(device_id, None)

    def clear(self, device_id: str) -> None:
        payload = self._displaced.pop(device_id, None)
        schedule = None if payload is None else displaced_schedule(payload)
        if schedule is not None and schedule.entries[-1].ts > self.clock():
            what, message = "the restored schedule", payload
        else:
            # An empty retained message deletes the retained schedule and clears the gateway's
            # command (edge_gateway/mqtt/commands.py), so a gateway that reconnects later gets nothing stale.
            what, message = "the withdrawn schedule", b""
        self._broker(lambda: publish_retained(self.settings, topics.setpoint(device_id), message, what=what,
                                              client_name="der-dr", timeout_s=self.timeout_s))
