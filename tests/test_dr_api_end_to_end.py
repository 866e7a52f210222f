"""Demand response end to end through the API: 20 simulated gateways on the real broker of
MQTT_HOST/MQTT_PORT, an event POSTed, the fleet's schedules received and followed by the
gateways (stepped on an injected clock), readings synced to the cloud store, and the
delivered reduction read back per site; then the events the fleet must decline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from cloud.dashboard.app import create_app
from der_core import der_data as dd
from edge_gateway.mqtt.settings import MqttSettings
from tests.conftest import require_service
from tests.dr_fleet import FOLLOWING, INTERVAL, NOW, SITES, Fleet
from tests.mqtt_fixtures import broker_address

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

START, END = NOW + pd.Timedelta(minutes=30), NOW + pd.Timedelta(minutes=150)
TOKEN = "dr-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REQUESTED_KW = 20.0


def _event(start: pd.Timestamp, end: pd.Timestamp, **signal) -> dict:
    return {"start": dd.format_ts(start), "end": dd.format_ts(end), "sites": "all", **signal}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The fleet through one event: what the API answered and what the gateways did."""
    host, port = broker_address()
    require_service("MQTT broker", host, port)
    fleet = Fleet(tmp_path_factory.mktemp("dr"), MqttSettings(host=host, port=port, reconnect_min_s=1, reconnect_max_s=2))
    fleet.client = TestClient(create_app(fleet.cloud, token=TOKEN, dr=fleet.dr))
    try:
        fleet.step(NOW)
        fleet.sync()
        posted = fleet.client.post("/api/dr/events", json=_event(START, END, requested_kw=REQUESTED_KW, event_id="e2e-1"),
                                   headers=AUTH)
        dispatched = fleet.dispatched("e2e-1")
        fleet.wait_for_commands(dispatched)
        received = {c.device_id: b.command(c.device_id) for b, c in zip(fleet.books, fleet.configs)}
        commanded, frames = fleet.follow(END)
        fleet.sync()
        fleet.clock[0] = END + INTERVAL
        shown = fleet.client.get("/api/dr/events/e2e-1", headers=AUTH)
        yield {"fleet": fleet, "posted": posted, "received": received, "dispatched": dispatched, "commanded": commanded,
               "readings": frames, "shown": shown}
    finally:
        fleet.client.close()
        fleet.close()


def test_the_event_is_accepted_with_a_plan_for_the_reduction_asked(run):
    assert run["posted"].status_code == 201, run["posted"].text
    body = run["posted"].json()
    assert body["status"] == "opted_in" and body["opt_in"], body
    assert body["planned_kw"] == pytest.approx(REQUESTED_KW, rel=1e-3)


def test_every_dispatched_gateway_receives_its_schedule_over_mqtt_and_follows_it(run):
    # A site the fleet cannot count on (here: a battery near its floor) is left out, and says so.
    dispatched = run["dispatched"]
    assert len(dispatched) >= FOLLOWING
    assert all(run["received"][device] is not None for device in dispatched)
    assert all(run["received"][device] is None for device in set(run["received"]) - dispatched)
    if len(dispatched) < SITES:
        assert f"{SITES - len(dispatched)} left out" in run["posted"].json()["reason"]
    followed = [i for i, c in enumerate(run["fleet"].configs) if c.device_id in dispatched]
    commanded = run["commanded"][:, followed]
    in_window = [i for i, frame in enumerate(run["readings"]) if START < frame[dd.TS].iloc[0] <= END]
    battery = np.array([frame[dd.BATTERY_POWER].to_numpy() for frame in run["readings"]])[:, followed]
    ordered = [frame[dd.DEVICE_ID].tolist() for frame in run["readings"]]
    assert all(o == [c.device_id for c in run["fleet"].configs] for o in ordered)
    # Before the window no battery has a command (its own rule runs); in it, each follows its
    # command or, where its import cap binds, discharges more. The physics may clip a command at the SOC floor.
    assert np.isnan(commanded[: in_window[0]]).all()
    window_command, window_battery = commanded[in_window], battery[in_window]
    assert window_command.sum() < 0
    assert window_battery.sum() <= 0.95 * window_command.sum()


def test_the_delivered_reduction_is_measured_per_site_against_both_baselines(run):
    assert run["shown"].status_code == 200, run["shown"].text
    body = run["shown"].json()
    assert body["status"] == "completed"
    assert {site["device_id"] for site in body["per_site"]} == run["dispatched"]
    assert all("forecast" in site and "high_5_of_10" in site for site in body["per_site"])
    assert set(body["baselines"]) == {"forecast", "high_5_of_10"}
    delivered = body["delivered_kw"]
    assert 0.3 * body["planned_kw"] < delivered < 3.0 * body["planned_kw"], body["baselines"]
    assert body["baselines"]["high_5_of_10"]["baseline_kw"] is not None
    measured = sum(site["forecast"]["measured_kw"] for site in body["per_site"])
    assert body["baselines"]["forecast"]["measured_kw"] == pytest.approx(measured)
    # Each site's measurement is the mean of its synced window readings.
    frames = pd.concat(run["readings"], ignore_index=True)
    window = frames[(frames[dd.TS] > START) & (frames[dd.TS] <= END)]
    first = body["per_site"][0]
    assert first["forecast"]["measured_kw"] == pytest.approx(
        window[window[dd.DEVICE_ID] == first["device_id"]][dd.NET_GRID_FLOW].mean(), abs=1e-9)


def test_the_events_list_shows_the_event_with_its_status(run):
    listed = run["fleet"].client.get("/api/dr/events", headers=AUTH).json()
    assert [e["id"] for e in listed if e["id"] == "e2e-1"] == ["e2e-1"]
    assert run["fleet"].client.get("/api/dr/events").status_code == 401


@pytest.mark.parametrize("signal, offset, reason", [
    ({"requested_kw": 10_000.0}, pd.Timedelta(hours=1), "too large"),
    ({"requested_kw": 5.0}, pd.Timedelta(minutes=5), "too soon"),
])
def test_events_the_fleet_cannot_hold_are_declined_with_the_reason(run, signal, offset, reason):
    fleet = run["fleet"]
    now = fleet.clock[0] = END  # the gateways' last readings are from END: the fleet is online
    answer = fleet.client.post("/api/dr/events", json=_event(now + offset, now + offset + pd.Timedelta(hours=2), **signal),
                               headers=AUTH)
    assert answer.status_code == 201
    assert answer.json()["status"] == "opted_out" and reason in answer.json()["reason"], answer.json()


@pytest.mark.parametrize("body, message", [
    ({"start": "2024-07-16T06:00:00Z", "end": "2024-07-16T05:00:00Z", "requested_kw": 5}, "at or before its start"),
    ({"start": "2024-07-16T06:00:00Z", "duration_minutes": 60, "requested_kw": 5, "sites": ["nobody"]}, "unknown site"),
    ({"start": "2024-07-16T06:00:00Z", "duration_minutes": 60}, "exactly one of requested_kw"),
    ({"start": "soon", "duration_minutes": 60, "level": 1}, "ISO 8601"),
    ({"start": "2024-07-16T06:00:00Z", "duration_minutes": 60, "requested_kw": -3}, "negative"),
])
def test_a_bad_body_is_a_422_with_one_line(run, body, message):
    answer = run["fleet"].client.post("/api/dr/events", json=body, headers=AUTH)
    assert answer.status_code == 422 and message in answer.json()["detail"], answer.json()


def test_an_event_for_an_offline_fleet_is_declined(run):
    fleet = run["fleet"]
    now = fleet.clock[0] = END + pd.Timedelta(hours=3)  # no reading for 3 h: every gateway is silent
    answer = fleet.client.post("/api/dr/events", json=_event(now + pd.Timedelta(hours=1), now + pd.Timedelta(hours=2),
                                                             requested_kw=5.0), headers=AUTH)
    assert answer.status_code == 201 and answer.json()["status"] == "opted_out"
    assert "offline" in answer.json()["reason"], answer.json()


def test_the_aggregator_page_has_the_events_table_and_its_data(run):
    client = run["fleet"].client
    page = client.get("/fleet").text
    assert 'id="dr-events"' in page
    assert "/api/dr/events" in client.get("/static/fleet.js").text
    listed = {e["id"]: e for e in client.get("/api/dr/events", headers=AUTH).json()}
    assert listed["e2e-1"]["delivered_kw"] == pytest.approx(run["shown"].json()["delivered_kw"])
