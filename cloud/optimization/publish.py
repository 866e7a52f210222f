"""Send a plan to its gateway: one QoS 1 schedule on ``der/<device_id>/battery/setpoint``.

The message goes through the gateway's own MQTT adapter (same ``MQTT_*`` settings, TLS and
credentials). The schedule is retained so a gateway that connects after the plan was made
still receives the plan in force; the gateway refuses a retained schedule once it has ended.
"""

from __future__ import annotations

from cloud.optimization.model import DispatchError
from der_core.setpoints import SetpointSchedule
from edge_gateway.mqtt import topics
from edge_gateway.mqtt.retained import NotPublished, publish_retained
from edge_gateway.mqtt.settings import MqttSettings


class PublishFailed(DispatchError):
    """The broker could not be reached or did not acknowledge the schedule."""


def publish_schedule(settings: MqttSettings, device_id: str, schedule: SetpointSchedule, timeout_s: float = 10.0) -> str:
    """Publish and wait for the broker's acknowledgement; returns the topic."""
    topic = topics.setpoint(device_id)
    try:
        publish_retained(settings, topic, schedule.to_json(), what="the schedule", client_name="der-optimizer",
                         timeout_s=timeout_s)
    except NotPublished as error:
        raise PublishFailed(str(error)) from None
    return topic
