"""Demand response end to end through OpenADR: a real openleadr VTN on localhost issues a 2 h
reduction, the fleet's VEN (FleetVen with FleetDR) opts in, 20 simulated gateways on the real
broker of MQTT_HOST/MQTT_PORT receive their schedules and follow them (stepped on an injected
clock), their readings are synced, and the delivered reduction reaches the VTN in the
DR_DELIVERY report, for the fleet and per battery; then an event too large for the fleet is
answered optOut with its reason logged.

The fleet lives on a simulated clock (a Monday evening of 2024, with a week of history before
it). openleadr reads the wall clock for an event's status and would call that evening's event
completed and answer nothing; the test evaluates openleadr's own status rule at the simulated
instant instead (:func:`simulated_status`). Everything else (HTTP, XML, polling, reports) runs
as openleadr runs it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import openleadr.utils
import pandas as pd
import pytest

from cloud.dr.openadr import FleetVen, VenSettings
from cloud.dr.telemetry import battery_devices, latest_from_store
from der_core import der_data as dd
from edge_gateway.mqtt.settings import MqttSettings
from tests.conftest import require_service
from tests.dr_fleet import FOLLOWING, INTERVAL, NOW, SITES, Fleet
from tests.mqtt_fixtures import broker_address
from tests.openadr_vtn import until, vtn

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]

START, END = NOW + pd.Timedelta(minutes=30), NOW + pd.Timedelta(minutes=150)
REQUESTED_KW = 20.0
TOO_LARGE_KW = 10_000.0
VEN_NAME = "fleet"
DELIVERED = "deliveredReduction"


def simulated_status(clock, status_rule):
    """openleadr's event status rule (``utils.determine_event_status``) at the simulated now:
    the rule applied to the active period moved by the wall clock's lead over ``clock``."""

    def status(active_period):
        lead = datetime.now(timezone.utc) - clock().to_pydatetime()
        moved = {"dtstart": openleadr.utils.getmember(active_period, "dtstart") + lead,
                 "duration": openleadr.utils.getmember(active_period, "duration")}
        ramp_up = openleadr.utils.getmember(active_period, "ramp_up_period", missing=None)
        return status_rule(moved | ({"ramp_up_period": ramp_up} if ramp_up is not None else {}))

    return status


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def _scenario(fleet: Fleet) -> dict:
    fleet.step(NOW)
    fleet.sync()
    devices = battery_devices(fleet.cloud)
    out: dict = {"devices": devices}
    async with vtn() as server:
        settings = VenSettings(vtn_url=server.url, ven_name=VEN_NAME, telemetry_interval=timedelta(seconds=1))
        ven = FleetVen(settings, fleet.dr, devices, latest_from_store(fleet.cloud, pd.Timedelta(seconds=0.5)),
                       clock=fleet.now)
        await ven.run()
        try:
            event_id = server.reduction(REQUESTED_KW, START.to_pydatetime())
            await until(lambda: event_id in server.opts, within_s=20)
            dispatched = fleet.dispatched(event_id)
            await until(lambda: fleet.received(dispatched))
            out["received"] = {c.device_id: b.command(c.device_id) for b, c in zip(fleet.books, fleet.configs)}
            # Stepped, synced and moved past the window with no await in between: the VEN's
            # reports see the window's readings all synced or the window not yet over.
            out["commanded"], out["readings"] = fleet.follow(END)
            fleet.sync()
            fleet.clock[0] = END + INTERVAL
            wanted = [(VEN_NAME, DELIVERED), *((d, DELIVERED) for d in dispatched)]
            await until(lambda: all(server.received[k] for k in wanted), within_s=20)
            too_large = server.reduction(TOO_LARGE_KW, (fleet.now() + pd.Timedelta(hours=1)).to_pydatetime())
            await until(lambda: too_large in server.opts, within_s=20)
            await asyncio.sleep(1.5)  # a delivery already sent is not sent again
        finally:
            await ven.stop()
    out.update(server=server, event_id=event_id, too_large=too_large, dispatched=dispatched)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    host, port = broker_address()
    require_service("MQTT broker", host, port)
    fleet = Fleet(tmp_path_factory.mktemp("dr-openadr"), MqttSettings(host=host, port=port, reconnect_min_s=1,
                                                                       reconnect_max_s=2))
    lines = Lines()
    logger = logging.getLogger("cloud.dr")
    logger.addHandler(lines)
    level, logger.level = logger.level, logging.INFO
    try:
        with pytest.MonkeyPatch.context() as patch:
            rule = openleadr.utils.determine_event_status
            patch.setattr(openleadr.utils, "determine_event_status", simulated_status(fleet.now, rule))
            out = asyncio.run(_scenario(fleet))
        yield out | {"fleet": fleet, "log": lines.lines}
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
        fleet.close()


def test_the_vtn_sees_opt_in_and_the_fleet_plans_the_reduction(run):
    assert run["server"].opts[run["event_id"]] == "optIn"
    assert len(run["devices"]) == SITES
    stored = run["fleet"].cloud.read_frame("dr_events", {"event_id": run["event_id"]}).iloc[0]
    assert stored["signal"] == "reduction" and stored["value"] == REQUESTED_KW
    assert (dd.parse_ts(stored["start_ts"]), dd.parse_ts(stored["end_ts"])) == (START, END)
    assert stored["planned_kw"] == pytest.approx(REQUESTED_KW, rel=1e-3)
    assert stored["status"] == "completed"


def test_each_dispatched_gateway_receives_its_schedule_and_follows_it(run):
    fleet, dispatched = run["fleet"], run["dispatched"]
    assert len(dispatched) >= FOLLOWING
    assert all(run["received"][d] is not None for d in dispatched)
    assert all(run["received"][d] is None for d in set(run["received"]) - dispatched)
    followed = [i for i, c in enumerate(fleet.configs) if c.device_id in dispatched]
    in_window = [i for i, frame in enumerate(run["readings"]) if START < frame[dd.TS].iloc[0] <= END]
    battery = pd.concat(run["readings"]).pivot(index=dd.TS, columns=dd.DEVICE_ID, values=dd.BATTERY_POWER)
    battery = battery[[fleet.configs[i].device_id for i in followed]].to_numpy()
    commanded = run["commanded"][:, followed]
    assert len(in_window) == 8
    assert np.isnan(commanded[: in_window[0]]).all()  # no command before the window: the battery's own rule
    assert commanded[in_window].sum() < 0
    assert battery[in_window].sum() <= 0.95 * commanded[in_window].sum()  # the event's caps bind: more discharge


def test_the_delivered_reduction_reaches_the_vtn_for_the_fleet_and_each_battery(run):
    server, dispatched = run["server"], run["dispatched"]
    start = START.to_pydatetime()
    ((stamp, fleet_kw),) = server.received[(VEN_NAME, DELIVERED)]  # once, stamped with the window's start
    assert stamp == start and fleet_kw > 0
    per_site = {}
    for device in dispatched:
        ((stamp, kw),) = server.received[(device, DELIVERED)]
        assert stamp == start and math.isfinite(kw)
        per_site[device] = kw
    assert fleet_kw == pytest.approx(sum(per_site.values()), abs=1e-6)
    stored = run["fleet"].cloud.read_frame("dr_results", {"event_id": run["event_id"]})
    forecast = stored[stored["baseline"] == "forecast"].set_index(dd.DEVICE_ID)["delivered_kw"]
    assert forecast["fleet"] == pytest.approx(fleet_kw)
    assert all(forecast[d] == pytest.approx(kw) for d, kw in per_site.items())
    # What the fleet planned and what it delivered agree to within the sites' forecast error.
    assert 0.3 * REQUESTED_KW < fleet_kw < 3.0 * REQUESTED_KW


def test_an_event_too_large_is_opted_out_at_the_vtn_with_the_reason_logged(run):
    assert run["server"].opts[run["too_large"]] == "optOut"
    line = next(line for line in run["log"] if run["too_large"] in line and "optOut" in line)
    assert f"too large: {TOO_LARGE_KW:.1f} kW asked, the fleet can hold" in line
    stored = run["fleet"].cloud.read_frame("dr_events", {"event_id": run["too_large"]}).iloc[0]
    assert stored["status"] == "opted_out" and stored["reason"].startswith("too large")
