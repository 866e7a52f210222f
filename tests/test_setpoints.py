"""The setpoint schedule's encoding and its decoder: what a plan sends is what the gateway
reads back, on the wire to 0.1 W, with nothing sent for a step left to the battery's own rule.
Hostile payloads through the gateway's parser are in test_mqtt_hostile.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from der_core.control import ReservePolicy
from der_core.setpoints import CommandRejected, SetpointEntry, SetpointSchedule

START = pd.Timestamp("2024-06-15T14:00:00+00:00")
STEP = pd.Timedelta(minutes=15)
LIMIT_KW = 100.0


def _policy(rows: int = 8, burst_kw: float | None = None) -> ReservePolicy:
    rng = np.random.default_rng(3)
    states = 2 * 2 + 2
    floor = np.round(rng.uniform(1, 5, (rows, states)), 3)
    return ReservePolicy(start=START, step_s=900, floor_kwh=floor, charge_to_kwh=np.round(floor * 0.5, 3),
                         charging_steps=2, house_levels=(0.8, 1.2), house_kw=np.round(rng.uniform(0, 2, rows), 3),
                         one_session_a_day=True, burst_kw=burst_kw)


def test_an_encoded_schedule_is_the_wire_format():
    schedule = SetpointSchedule.from_commands(pd.date_range(START, periods=3, freq=STEP),
                                              np.array([1.234567, math.nan, -0.00001]), np.array([5.0, 5.0, math.nan]))
    assert schedule.to_json() == (
        '{"schedule": [{"ts": "2024-06-15T14:00:00+00:00", "power_kw": 1.2346, "import_limit_kw": 5.0}, '
        '{"ts": "2024-06-15T14:15:00+00:00", "power_kw": null, "import_limit_kw": 5.0}, '
        '{"ts": "2024-06-15T14:30:00+00:00", "power_kw": 0.0}]}')  # never -0.0, no cap key for no cap


@pytest.mark.parametrize("with_reserve, burst_kw", [(False, None), (True, None), (True, 2.0)])
def test_a_decoded_schedule_is_the_one_encoded(with_reserve, burst_kw):
    steps = 4
    sent = SetpointSchedule.from_commands(pd.date_range(START, periods=steps, freq=STEP),
                                          np.array([2.5, math.nan, -3.0, 0.0]), np.array([math.nan, 7.0, 7.0, 7.0]),
                                          _policy(burst_kw=burst_kw) if with_reserve else None)
    received = SetpointSchedule.from_dict(json.loads(sent.to_json()), LIMIT_KW)
    assert received.entries == sent.entries
    assert received.to_json() == sent.to_json()
    if with_reserve:  # the policy's rows for the schedule's steps only
        policy = received.reserve
        assert policy.start == START and len(policy.house_kw) == steps and policy.states == sent.reserve.states
        np.testing.assert_array_equal(policy.floor_kwh, sent.reserve.floor_kwh[:steps])
        assert policy.burst_kw == burst_kw
    else:
        assert received.reserve is None and "reserve" not in sent.to_dict()


def test_entries_are_put_in_time_order():
    data = {"schedule": [{"ts": "2024-06-15T14:15:00+00:00", "power_kw": 1.0},
                         {"ts": "2024-06-15T16:00:00+02:00", "power_kw": None, "import_limit_kw": 3}]}
    schedule = SetpointSchedule.from_dict(data, LIMIT_KW)
    assert schedule.entries == (SetpointEntry(START, None, 3.0), SetpointEntry(START + STEP, 1.0, None))


@pytest.mark.parametrize("data, message", [
    ({"schedule": []}, "schedule must be a non-empty list"),
    ({"schedule": [{"ts": "2024-06-15T14:00:00+00:00"}]}, r"schedule\[0\] lacks power_kw"),
    ({"schedule": [{"ts": "2024-06-15T14:00:00", "power_kw": 1}]}, "has no UTC offset"),
    ({"schedule": [{"ts": "2024-06-15T14:00:00+00:00", "power_kw": 101}]}, r"beyond \+/-100 kW"),
    ({"schedule": [{"ts": "2024-06-15T14:00:00+00:00", "power_kw": 1, "import_limit_kw": -1}]}, "is negative"),
    ({"schedule": [{"ts": "2024-06-15T14:00:00+00:00", "power_kw": 1},
                   {"ts": "2024-06-15T16:00:00+02:00", "power_kw": 2}]}, "two entries at 2024-06-15T14:00:00"),
    ({"schedule": [{"ts": "2024-06-15T14:00:00+00:00", "power_kw": 1}], "reserve": {}}, "reserve: |reserve lacks"),
    ({"schedule": [{"ts": "2024-06-15T14:00:00+00:00", "power_kw": 1}], "extra": 1}, "unknown key 'extra'"),
    ({"schedule": [{"ts": "2024-06-15T14:00:00+00:00", "power_kw": 1, "event": 1}]}, r"event must be true or false"),
    *[({"schedule": [{"ts": "2024-06-15T14:00:00+00:00", "power_kw": 1}],
        "reserve": {**json.loads(SetpointSchedule.from_commands(pd.DatetimeIndex([START]), np.array([1.0]), np.array([5.0]),
                                                                _policy()).to_json())["reserve"], "burst_kw": bad}},
       r"reserve.burst_kw must be a number of kW > 0 or null") for bad in (0, -2.0, "2", True)],
])
def test_what_cannot_be_meant_is_refused_with_the_reason(data, message):
    with pytest.raises(CommandRejected, match=message):
        SetpointSchedule.from_dict(data, LIMIT_KW)


def test_event_steps_are_marked_on_the_wire_and_read_back():
    sent = SetpointSchedule.from_commands(pd.date_range(START, periods=3, freq=STEP), np.array([0.0, -2.0, math.nan]),
                                          np.array([math.nan, 1.5, math.nan]), event=np.array([False, True, False]))
    assert [("event" in e) for e in sent.to_dict()["schedule"]] == [False, True, False]
    received = SetpointSchedule.from_dict(json.loads(sent.to_json()), LIMIT_KW)
    assert [e.event for e in received.entries] == [False, True, False] and received.has_event
    assert not SetpointSchedule.from_commands([START], np.array([1.0]), np.array([math.nan])).has_event
