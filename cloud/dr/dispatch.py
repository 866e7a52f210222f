"""Sending an event's schedules to the gateways: the optimizer's own publishing
(:func:`cloud.optimization.publish.publish_schedule`, a retained QoS 1 schedule per site),
behind a small Protocol so the decision can be tested and benchmarked without a broker."""

from __future__ import annotations

from typing import Protocol

from cloud.optimization.publish import publish_schedule
from der_core.setpoints import SetpointSchedule
from edge_gateway.mqtt import topics
from edge_gateway.mqtt.retained import publish_retained
from edge_gateway.mqtt.settings import MqttSettings


class SchedulePublisher(Protocol):
    def publish(self, device_id: str, schedule: SetpointSchedule) -> None:
        """Send ``schedule``; raise a :class:`~der_core.errors.DERError` when it was not acknowledged."""
        ...

    def clear(self, device_id: str) -> None:
        """Withdraw the device's schedule: the battery returns to its own rule."""
        ...


class MqttPublisher:
    """Schedules on ``der/<device_id>/battery/setpoint``, retained, as the optimizer sends them."""

    def __init__(self, settings: MqttSettings, timeout_s: float = 10.0) -> None:
        self.settings, self.timeout_s = settings, timeout_s

    def publish(self, device_id: str, schedule: SetpointSchedule) -> None:
        publish_schedule(self.settings, device_id, schedule, self.timeout_s)

    def clear(self, device_id: str) -> None:
        # An empty retained message deletes the retained schedule and clears the gateway's command
        # (edge_gateway/mqtt/commands.py), so a gateway that reconnects later gets nothing stale.
        publish_retained(self.settings, topics.setpoint(device_id), b"", what="the withdrawn schedule",
                         client_name="der-dr", timeout_s=self.timeout_s)
