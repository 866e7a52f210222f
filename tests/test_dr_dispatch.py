"""Withdrawing an event's schedule puts back the schedule the event displaced, on the real
broker of MQTT_HOST/MQTT_PORT: a site returns to its optimizer plan, not to its own rule."""

from __future__ import annotations

import contextlib
import socket

import numpy as np
import pandas as pd
import pytest

from cloud.dr.dispatch import MqttPublisher
from cloud.optimization.publish import PublishFailed
from der_core.setpoints import SetpointSchedule
from edge_gateway.mqtt import topics
from edge_gateway.mqtt.retained import publish_retained, replace_retained
from edge_gateway.mqtt.settings import MqttSettings
from tests.mqtt_fixtures import broker, clear_retained, unique_id  # noqa: F401

pytestmark = pytest.mark.mqtt

NOW = pd.Timestamp("2024-07-16T00:00:00Z")
STEP = pd.Timedelta(minutes=15)


def _plan(hours: int) -> SetpointSchedule:
    """An optimizer's schedule from NOW, ``hours`` long."""
    steps = 4 * hours
    return SetpointSchedule.from_commands(pd.date_range(NOW, periods=steps, freq=STEP), np.full(steps, 1.5),
                                          np.full(steps, 6.0))


def _event(offset_h: int) -> SetpointSchedule:
    starts = pd.date_range(NOW + pd.Timedelta(hours=offset_h), periods=3, freq=STEP)
    return SetpointSchedule.from_commands(starts, np.array([0.0, -2.0, np.nan]), np.array([np.nan, 1.0, np.nan]),
                                          event=np.array([False, True, False]))


def _retained(settings, topic: str) -> bytes | None:
    """What the topic retains, read by replacing it (the test clears it afterwards)."""
    return replace_retained(settings, topic, b"probe")


@pytest.mark.parametrize("plan_hours, now, restored", [
    (24, NOW + pd.Timedelta(hours=1), True),  # the plan still has entries to come: it is put back
    (2, NOW + pd.Timedelta(hours=3), False),  # the plan has ended: the gateway would refuse it, so clear
])
def test_a_withdrawn_event_schedule_puts_back_the_plan_it_displaced(broker, plan_hours, now, restored):  # noqa: F811
    device = unique_id("dispatch")
    topic = topics.setpoint(device)
    plan = _plan(plan_hours).to_json()
    publisher = MqttPublisher(broker, clock=lambda: now)
    try:
        publish_retained(broker, topic, plan)
        publisher.publish(device, _event(1))
        publisher.publish(device, _event(2))  # a second event keeps the plan from before the first
        assert _retained(broker, topic) == _event(2).to_json().encode()
        publisher.publish(device, _event(2))
        publisher.clear(device)
        assert _retained(broker, topic) == (plan.encode() if restored else None)
    finally:
        clear_retained(broker, [topic])


def test_a_site_without_a_schedule_before_the_event_is_cleared(broker):  # noqa: F811
    device = unique_id("dispatch")
    topic = topics.setpoint(device)
    publisher = MqttPublisher(broker, clock=lambda: NOW)
    try:
        publisher.publish(device, _event(1))
        publisher.clear(device)
        assert _retained(broker, topic) is None
    finally:
        clear_retained(broker, [topic])


def test_a_broker_that_does_not_answer_is_waited_for_once_not_once_per_site():
    """Each site's send waited the full timeout on a silent broker: a fleet's decision, and the
    VEN's loop it runs on, stood still for sites x timeout."""
    with socket.socket() as silent:  # takes connections, never answers one
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        publisher = MqttPublisher(MqttSettings(host="127.0.0.1", port=silent.getsockname()[1]), timeout_s=0.2,
                                  retry_after_s=60, clock=lambda: NOW)
        reasons = []
        for device in ("site-a", "site-b", "site-c"):
            with pytest.raises(PublishFailed) as failed:
                publisher.publish(device, _event(1))
            reasons.append(str(failed.value))
        silent.setblocking(False)
        connections = []
        with contextlib.suppress(BlockingIOError):
            while True:
                connections.append(silent.accept()[0])
        for connection in connections:
            connection.close()
    assert len(connections) == 1
    assert reasons[0].startswith("MQTT broker 127.0.0.1:")
    assert reasons[1] == reasons[2] == f"{reasons[0]} (not tried again for 60s)"
