"""Demand-response events through the dashboard's API on a store the fleet has not filled yet."""

from __future__ import annotations

import pandas as pd
from fastapi.testclient import TestClient

from cloud.dashboard.app import create_app
from cloud.dr.decision import FleetDR
from cloud.store.sqlite import SQLiteCloudStore
from tests.test_dr_decision import NOW, Recorder


def test_an_event_for_all_of_an_empty_fleet_is_declined_not_a_500(tmp_path):
    """A new install announced an event before any site joined: the decision failed inside
    (a 500 and a traceback) and the event was stored as a failed decision."""
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        publisher = Recorder()
        dr = FleetDR(store, publisher, clock=lambda: NOW)
        body = {"start": (NOW + pd.Timedelta(hours=2)).isoformat(), "duration_minutes": 60, "requested_kw": 5, "sites": "all"}
        with TestClient(create_app(store, dr=dr)) as client:
            answer = client.post("/api/dr/events", json=body)
            assert answer.status_code == 201, answer.text
            event = answer.json()
            assert event["opt_in"] is False and event["status"] == "opted_out"
            assert event["reason"] == "the fleet has no sites yet: none is declared or has synced readings"
            assert client.get(f"/api/dr/events/{event['id']}").json()["reason"] == event["reason"]
        assert not publisher.sent and not publisher.cleared
