"""The fleet's decision on demand-response events (cloud/dr): the rules in their order, the
plan's schedules, modifications, cancellation, and the two baselines."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from cloud.dr import baseline as b
from cloud.dr import records as r
from cloud.dr.capability import commitments
from cloud.dr.decision import FleetDR, malformed
from cloud.dr.delivery import window_means
from cloud.dr.model import DREvent, Signal
from cloud.optimization.publish import PublishFailed
from cloud.store.sqlite import SQLiteCloudStore
from der_core.config import build_config, site_record
from der_core.setpoints import SetpointSchedule
from der_physics import generator

NOW = pd.Timestamp("2024-07-16T00:00:00Z")  # a Monday evening in Los Angeles
START, END = NOW + pd.Timedelta(hours=1), NOW + pd.Timedelta(hours=3)


class Recorder:
    def __init__(self) -> None:
        self.sent: dict[str, SetpointSchedule] = {}
        self.cleared: list[str] = []

    def publish(self, device_id: str, schedule: SetpointSchedule) -> None:
        self.sent[device_id] = schedule

    def clear(self, device_id: str) -> None:
        self.cleared.append(device_id)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Four sites with 8 days of readings; ``site-3`` went silent a day ago."""
    configs = [build_config({"device_id": f"site-{i}", "seed": 10 + i, "interval_seconds": 900,
                             "battery": {"mode": "setpoint"}}) for i in range(4)]
    path = tmp_path_factory.mktemp("dr") / "cloud.db"
    store = SQLiteCloudStore(path)
    times = generator.time_range(NOW - pd.Timedelta(days=8) + pd.Timedelta(minutes=15), NOW + pd.Timedelta(seconds=1), 900)
    frame = generator.simulate(configs, times)[0].frame()
    store.upsert_readings(frame[(frame["device_id"] != "site-3") | (frame["ts"] < NOW - pd.Timedelta(days=1))])
    store.upsert_sites([site_record(c) for c in configs])
    store.close()
    return path


@pytest.fixture
def fleet(history, tmp_path):
    copy = tmp_path / "cloud.db"
    copy.write_bytes(history.read_bytes())
    store = SQLiteCloudStore(copy)
    publisher = Recorder()
    yield FleetDR(store, publisher, clock=lambda: NOW), publisher
    store.close()


def event(value: float = 3.0, signal: Signal = Signal.REDUCTION, start=START, end=END, sites=(), modification=0, id="e1"):
    return DREvent(id, "test", start, end, signal, value, NOW, tuple(sites), modification)


@pytest.mark.parametrize("bad, reason", [
    (event(end=START), "at or before its start"),
    (event(end=START + pd.Timedelta(hours=25)), "longer than"),
    (event(value=math.nan), "not a finite number"),
    (event(value=-1.0), "negative"),
    (event(value=1.5, signal=Signal.LEVEL), "whole number 0 to 3"),
    (event(sites=["site-0", "ghost"]), "unknown site 'ghost'"),
    (event(start=pd.Timestamp("2300-01-01", tz="UTC"), end=pd.Timestamp("2300-01-01T02:00", tz="UTC")),
     "start 2300-01-01 is outside 1677-09-21 to 2262-04-11"),
    (event(value=1e308, signal=Signal.PRICE), "price 1e+308 per kWh is above 10000"),
    (event(modification=2**64), "modification 18446744073709551616 is outside 0 to 4294967295"),
])
def test_a_malformed_event_is_declined_with_what_is_wrong(fleet, bad, reason):
    dr, publisher = fleet
    assert reason in malformed(bad, {"site-0", "site-1"})
    answer = dr.decide(bad)
    assert not answer.opt_in and answer.reason.startswith("malformed event") and not publisher.sent


@pytest.mark.parametrize("start, reason", [
    (NOW - pd.Timedelta(hours=3), "window ended"),
    (NOW + pd.Timedelta(minutes=5), "too soon"),
    (NOW + pd.Timedelta(days=7, minutes=15), "too far ahead: starts at 2024-07-23T00:15:00+00:00, more than 7 days"),
])
def test_an_event_in_the_past_too_soon_or_too_far_ahead_is_declined(fleet, start, reason):
    dr, _ = fleet
    answer = dr.decide(event(start=start, end=start + pd.Timedelta(hours=2)))
    assert not answer.opt_in and reason in answer.reason


def test_an_event_for_silent_sites_only_is_declined_as_offline(fleet):
    dr, _ = fleet
    answer = dr.decide(event(sites=["site-3"]))
    assert not answer.opt_in and "targeted sites are offline" in answer.reason


def test_a_reduction_within_capability_is_planned_on_the_online_sites_only(fleet):
    dr, publisher = fleet
    answer = dr.decide(event(3.0))
    assert answer.opt_in and answer.planned_kw == pytest.approx(3.0, rel=1e-3)
    assert "site-3" not in publisher.sent and "1 left out" in answer.reason
    schedule = publisher.sent["site-0"]
    entries = schedule.entries
    assert entries[0].ts == NOW and entries[0].power_kw is None and not entries[0].event  # its own rule until the window
    assert entries[1].ts == START
    assert entries[-1].ts == END and entries[-1].power_kw is None  # then the battery's own rule
    window = [e for e in entries if START <= e.ts < END]
    assert len(window) == 8 and all(e.import_limit_kw is not None for e in window)


@pytest.mark.parametrize("length, shown", [(pd.Timedelta(minutes=10), "10"), (pd.Timedelta(minutes=1e-9), "1e-09")])
def test_a_window_shorter_than_the_reading_interval_is_declined_naming_both(fleet, length, shown):
    """Delivery is measured from the readings in the window: with 15-minute readings a
    10-minute window may hold none, and its delivery would never be known."""
    dr, publisher = fleet
    answer = dr.decide(event(start=START, end=START + length))
    assert not answer.opt_in and not publisher.sent
    assert answer.reason == (f"too short: a window of {shown} min is shorter than the sites' reading interval of 15 min; "
                             "expected at least 15 min, for delivery is measured from the readings in the window")


def test_a_level_the_fleet_can_answer_with_nothing_is_declined(fleet):
    """Opting in promises a response; a level whose plan would be 0 kW is no response."""
    dr, publisher = fleet
    dr.participation.update({f"site-{i}": 0.0 for i in range(4)})
    answer = dr.decide(event(3.0, Signal.LEVEL))
    assert not answer.opt_in and answer.reason.startswith("nothing to deliver") and not publisher.sent
    assert dr.decide(event(0.0, Signal.LEVEL, id="calm")).opt_in  # level 0 asks nothing: in, with nothing owed


def _windows(schedule: SetpointSchedule) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The event windows a schedule carries: each run of event entries, to the entry after it."""
    entries, runs = schedule.entries, []
    for i, entry in enumerate(entries):
        if entry.event and (i == 0 or not entries[i - 1].event):
            runs.append([entry.ts, None])
        if not entry.event and runs and runs[-1][1] is None:
            runs[-1][1] = entry.ts
    return [tuple(run) for run in runs]


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_a_site_carries_every_event_it_takes_and_a_cancel_takes_off_only_its_own(fleet, order):
    """A retained schedule is replaced whole by the next: a second event on the same sites must
    not drop the first, and cancelling one must leave the other's window in force."""
    dr, publisher = fleet
    hours = {"a": (1, 2), "b": (3, 4)}
    window = {k: (NOW + pd.Timedelta(hours=h0), NOW + pd.Timedelta(hours=h1)) for k, (h0, h1) in hours.items()}
    for k in order:
        assert dr.decide(event(1.0, start=window[k][0], end=window[k][1], id=k)).opt_in
    for device in ("site-0", "site-1", "site-2"):
        schedule = publisher.sent[device]
        assert _windows(schedule) == [window["a"], window["b"]]
        assert schedule.entries[0].power_kw is None and schedule.entries[-1].power_kw is None
    dr.cancel(order[0], "test")
    assert _windows(publisher.sent["site-0"]) == [window[order[1]]] and not publisher.cleared
    dr.cancel(order[1], "test")
    assert sorted(publisher.cleared) == ["site-0", "site-1", "site-2"]


@pytest.fixture
def another(fleet):
    """A second decider on the fleet's store, on a connection of its own: a restarted process,
    or another process deciding for the same sites, publishing to the same retained topics."""
    dr, publisher = fleet
    store = SQLiteCloudStore(dr.store.path)
    yield FleetDR(store, publisher, clock=lambda: NOW)
    store.close()


def _window_at(h0: float, h1: float) -> tuple[pd.Timestamp, pd.Timestamp]:
    return NOW + pd.Timedelta(hours=h0), NOW + pd.Timedelta(hours=h1)


def _decide_at(dr: FleetDR, id: str, window: tuple[pd.Timestamp, pd.Timestamp]) -> None:
    assert dr.decide(event(1.0, start=window[0], end=window[1], id=id)).opt_in


def test_a_restarted_decider_sends_a_site_the_windows_of_the_events_taken_before_it(fleet, another):
    """What a site must carry is in the store, not in the process that decided it: a VEN or
    dashboard restarted between two events on the same sites must not drop the first."""
    dr, publisher = fleet
    first, second = _window_at(1, 2), _window_at(3, 4)
    _decide_at(dr, "a", first)
    _decide_at(another, "b", second)
    assert _windows(publisher.sent["site-0"]) == [first, second]


def test_a_cancel_after_a_restart_resends_the_other_events_window_and_clears_only_its_own(fleet, another):
    dr, publisher = fleet
    first, second = _window_at(1, 2), _window_at(3, 4)
    _decide_at(dr, "a", first)
    _decide_at(dr, "b", second)
    another.cancel("a", "test")
    assert _windows(publisher.sent["site-0"]) == [second] and not publisher.cleared
    another.cancel("b", "test")
    assert sorted(publisher.cleared) == ["site-0", "site-1", "site-2"]


def test_two_deciders_on_one_store_each_send_the_union_of_the_fleets_windows(fleet, another):
    """The dashboard's API and a VEN deciding for the same sites share one retained schedule
    per site (the publisher here): whichever sends last must send every window either took."""
    dr, publisher = fleet
    first, second, third = _window_at(1, 2), _window_at(3, 4), _window_at(5, 6)
    _decide_at(dr, "a", first)
    _decide_at(another, "b", second)
    assert _windows(publisher.sent["site-0"]) == [first, second]
    _decide_at(dr, "c", third)
    assert _windows(publisher.sent["site-0"]) == [first, second, third]
    another.cancel("a", "test")
    assert _windows(publisher.sent["site-0"]) == [second, third]


def test_a_decider_whose_read_another_overtook_sends_again_what_the_other_stored(fleet, another):
    """Two processes at once: the first has read the stored windows and is sending site-0
    its event alone when the second stores its event and sends both. The first's send lands
    last with its stale read; it reads again after sending and sends the union."""
    dr, publisher = fleet
    first, second = _window_at(1, 2), _window_at(3, 4)
    sent, overtaken = publisher.publish, []

    def overtaken_once(device_id, schedule):
        if not overtaken:
            overtaken.append(device_id)
            _decide_at(another, "b", second)  # lands between the first decider's read and its send
        sent(device_id, schedule)

    publisher.publish = overtaken_once
    _decide_at(dr, "a", first)
    assert overtaken == ["site-0"]
    for device in ("site-0", "site-1", "site-2"):
        assert _windows(publisher.sent[device]) == [first, second]


def test_a_store_of_the_schema_before_windows_were_stored_opens_and_still_withdraws_its_events(fleet):
    """Opening a store made before ``dr_windows`` adds the table; an event decided before
    has only its plan rows, which still name the sites its withdrawal resends."""
    dr, publisher = fleet
    first, second = _window_at(1, 2), _window_at(3, 4)
    _decide_at(dr, "a", first)
    with sqlite3.connect(dr.store.path) as conn:
        conn.execute("DROP TABLE dr_windows")  # the store as the version before left it
    store = SQLiteCloudStore(dr.store.path)
    try:
        upgraded = FleetDR(store, publisher, clock=lambda: NOW)
        _decide_at(upgraded, "b", second)
        assert set(r.windows(store, "test", "b")) == {"site-0", "site-1", "site-2"}
        upgraded.cancel("a", "test")
        assert _windows(publisher.sent["site-0"]) == [second] and not publisher.cleared
    finally:
        store.close()


def test_a_modification_that_asks_nothing_takes_its_earlier_window_off(fleet):
    """A level-0 modification of an event opts in with nothing planned: the sites its earlier
    modification planned lose its window."""
    dr, publisher = fleet
    first = _window_at(1, 2)
    _decide_at(dr, "a", first)
    calm = dr.decide(event(0.0, Signal.LEVEL, start=first[0], end=first[1], id="a", modification=1))
    assert calm.opt_in and sorted(publisher.cleared) == ["site-0", "site-1", "site-2"]


def test_an_event_days_ahead_leaves_the_battery_to_its_own_rule_until_its_window(fleet):
    """Holding the battery from the decision on would forgo days of self-consumption."""
    dr, publisher = fleet
    start = NOW + pd.Timedelta(days=6)
    assert dr.decide(event(1.0, start=start, end=start + pd.Timedelta(hours=1))).opt_in
    entries = publisher.sent["site-0"].entries
    assert all(e.power_kw is None and e.import_limit_kw is None and not e.event for e in entries if e.ts < start)
    assert [e.ts for e in entries if e.ts < start] == [NOW]


def _at(h0: float, h1: float) -> dict:
    return {"start": NOW + pd.Timedelta(hours=h0), "end": NOW + pd.Timedelta(hours=h1)}


@pytest.mark.parametrize("first, second, reason", [
    # a battery answers one event at a time: the sites of the first are not the second's
    (event(1.0, id="a", **_at(3, 4)), event(1.0, id="b", **_at(3, 4)), "the fleet can hold 0.0 kW for 1 h besides"),
    (event(1.0, id="a", **_at(3, 4)), event(1.0, Signal.LEVEL, id="b", **_at(3.5, 5)), "nothing to deliver"),
    # the first drains the charge the second would need (and the other way round)
    (event(6.0, id="a", **_at(5, 8)), event(6.0, id="b", **_at(9, 12)), "besides what 1 other event(s) it took hold"),
    (event(6.0, id="a", **_at(9, 12)), event(6.0, id="b", **_at(5, 8)), "besides what 1 other event(s) it took hold"),
])
def test_an_event_beyond_what_the_events_taken_leave_is_declined(fleet, first, second, reason):
    """What the fleet already promised is not promised again: the sum accepted stays within
    what the batteries hold."""
    dr, publisher = fleet
    assert dr.decide(first).opt_in
    answer = dr.decide(second)
    assert not answer.opt_in and reason in answer.reason
    assert _windows(publisher.sent["site-0"]) == [(first.start, first.end)]


def test_a_reduction_beyond_capability_is_declined_as_too_large(fleet):
    dr, publisher = fleet
    answer = dr.decide(event(500.0))
    assert not answer.opt_in and "too large" in answer.reason and not publisher.sent


def test_a_price_signal_is_planned_as_an_adder_and_level_0_asks_nothing(fleet):
    dr, _ = fleet
    priced = dr.decide(event(1.0, Signal.PRICE, id="price"))
    assert priced.opt_in and priced.planned_kw > 0
    calm = dr.decide(event(0.0, Signal.LEVEL, id="level"))
    assert calm.opt_in and calm.planned_kw == 0.0


@pytest.mark.parametrize("currencies, price_in, reason", [
    ({}, "EUR", "price in EUR, the targeted sites' in USD; expected a price in the sites' currency"),
    ({"site-2": "EUR"}, "USD", "price in USD, the targeted sites' in EUR, USD; expected a price in the sites' currency"),
])
def test_a_price_in_another_currency_than_the_targeted_sites_is_declined(fleet, currencies, price_in, reason):
    """A price is added to each site's import price, in the site's money: 0.40 EUR taken as
    0.40 USD plans a response to a price nobody offered."""
    dr, publisher = fleet
    dr.store.upsert_sites([site_record(build_config({"device_id": d, "seed": 12, "interval_seconds": 900,
                                                     "currency": c, "battery": {"mode": "setpoint"}}))
                           for d, c in currencies.items()])
    answer = dr.decide(replace(event(1.0, Signal.PRICE), currency=price_in))
    assert (answer.opt_in, answer.reason) == (False, f"malformed event: {reason}") and not publisher.sent


def test_a_price_in_the_sites_currency_is_planned(fleet):
    dr, _ = fleet
    assert dr.decide(replace(event(1.0, Signal.PRICE), currency="USD")).opt_in


def test_a_repeated_event_gets_the_stored_answer_and_a_modification_is_decided_again(fleet):
    dr, publisher = fleet
    first = dr.decide(event(3.0))
    publisher.sent.clear()
    assert dr.decide(event(3.0)) == first and not publisher.sent
    larger = dr.decide(event(500.0, modification=1))
    assert not larger.opt_in and sorted(publisher.cleared) == ["site-0", "site-1", "site-2"]


def test_cancelling_an_accepted_event_withdraws_its_schedules(fleet):
    dr, publisher = fleet
    dr.decide(event(3.0))
    dr.cancel("e1", "test")
    assert sorted(publisher.cleared) == ["site-0", "site-1", "site-2"]
    assert dr.delivery("e1", "test") is None


@pytest.mark.parametrize("modification", [False, True])
def test_a_decision_failing_after_a_site_was_sent_its_window_takes_it_off(fleet, monkeypatch, modification):
    """The publisher fails on the second site with an error that is not a delivery failure:
    the event is opted out, and the first site, already sent the event's window (or the
    earlier modification's), is cleared rather than left holding it."""
    dr, publisher = fleet
    if modification:
        dr.decide(event(3.0))
    sent = publisher.publish

    def fails_on_the_second(device_id, schedule):
        if device_id == "site-1":
            raise RuntimeError("publisher broke")
        sent(device_id, schedule)

    monkeypatch.setattr(publisher, "publish", fails_on_the_second)
    with pytest.raises(RuntimeError, match="publisher broke"):
        dr.decide(event(2.0, modification=int(modification)))
    stored = r.stored_event(dr.store, "test", "e1")
    assert (stored["status"], stored["reason"]) == ("opted_out", "decision failed: publisher broke")
    assert sorted(publisher.cleared) == ["site-0", "site-1", "site-2"]


@pytest.mark.parametrize("failing", [{"site-0", "site-1", "site-2"}, {"site-1"}])
def test_an_event_no_site_could_be_sent_is_opted_out(fleet, monkeypatch, failing):
    """With the broker down no battery learns of the event: opting in promised a reduction
    nobody would make. A site the broker failed alone leaves the event in, saying so."""
    dr, publisher = fleet
    sent = publisher.publish

    def broker(device_id, schedule):
        if device_id in failing:
            raise PublishFailed("MQTT broker 127.0.0.1:1 unreachable (Connection refused)")
        sent(device_id, schedule)

    monkeypatch.setattr(publisher, "publish", broker)
    answer = dr.decide(event(3.0))
    stored = r.stored_event(dr.store, "test", "e1")
    if len(failing) == 3:
        assert not answer.opt_in and answer.reason.startswith("no schedule delivered: none of 3 site(s) could be sent")
        assert (stored["status"], stored["reason"]) == ("opted_out", answer.reason)
        assert r.standing_windows(dr.store, NOW) == {}
    else:
        assert answer.opt_in and "1 schedule(s) not delivered (site-1: MQTT broker" in answer.reason
        assert stored["status"] == "opted_in" and sorted(publisher.sent) == ["site-0", "site-2"]


def test_the_events_taken_and_not_yet_measured_are_listed_for_a_restarted_adapter(fleet):
    dr, _ = fleet
    dr.decide(event(3.0))
    dr.decide(event(500.0, id="too-large"))
    dr.decide(event(2.0, id="cancelled", start=END, end=END + pd.Timedelta(hours=1)))
    dr.cancel("cancelled", "test")
    assert [e.event_id for e in dr.unmeasured("test")] == ["e1"] and dr.unmeasured("other") == []
    dr.store.upsert_readings(_window_readings(dr.store, END))
    dr.clock = lambda: END + pd.Timedelta(minutes=1)
    assert dr.delivery("e1", "test") is not None and dr.unmeasured("test") == []


def test_delivery_waits_for_the_window_to_pass(fleet):
    dr, _ = fleet
    dr.decide(event(3.0))
    assert dr.delivery("e1", "test") is None


def _window_readings(store, until, since=START):
    """The window's readings up to ``until``: the same hours of the day before, a day later."""
    day = pd.Timedelta(days=1)
    readings = store.read_readings(None, since - day + pd.Timedelta(seconds=1), until - day + pd.Timedelta(seconds=1))
    return readings.assign(ts=readings["ts"] + day)


@pytest.mark.parametrize("synced_until", [START + pd.Timedelta(minutes=45), None])
def test_delivery_waits_for_the_windows_last_readings_to_reach_the_store(fleet, synced_until):
    """A window measured as soon as it ended, before its last readings had synced, reported
    the delivery of its first readings, or none: the VEN reports a window once."""
    dr, _ = fleet
    dr.decide(event(3.0))
    dr.clock = lambda: END + pd.Timedelta(minutes=1)
    if synced_until is not None:
        dr.store.upsert_readings(_window_readings(dr.store, synced_until))
    assert dr.delivery("e1", "test") is None
    assert r.stored_event(dr.store, "test", "e1")["status"] == "opted_in"
    dr.store.upsert_readings(_window_readings(dr.store, END))
    delivered = dr.delivery("e1", "test")
    assert sorted(delivered.per_site_kw) == ["site-0", "site-1", "site-2"]
    assert all(math.isfinite(kw) for kw in delivered.per_site_kw.values()) and math.isfinite(delivered.delivered_kw)


def test_a_site_whose_readings_never_come_is_measured_without_them_once_the_wait_is_over(fleet):
    dr, _ = fleet
    dr.decide(event(3.0))
    dr.store.upsert_readings(_window_readings(dr.store, END).query("device_id != 'site-2'"))
    dr.clock = lambda: END + pd.Timedelta(minutes=1)
    assert dr.delivery("e1", "test") is None
    dr.clock = lambda: END + dr.settings.delivery_wait
    delivered = dr.delivery("e1", "test")
    assert math.isnan(delivered.per_site_kw["site-2"])
    assert math.isfinite(delivered.delivered_kw) and math.isfinite(delivered.per_site_kw["site-0"])


@pytest.mark.parametrize("days, expected", [
    ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0], np.mean([7.0, 8.0, 9.0, 10.0, 11.0])),  # the last 10, top 5
    ([5.0, 1.0, 4.0, 2.0, 3.0], 3.0),
    ([1.0, 2.0, 3.0, 4.0], None),  # fewer than 5 eligible days: no baseline
])
def test_high_5_of_10_takes_the_highest_5_of_the_latest_10_days(days, expected):
    value = b.high_x_of_y(pd.Series(days, index=range(len(days))))
    assert value == (None if expected is None else pytest.approx(expected))


def test_the_forecast_baseline_averages_the_same_step_on_days_of_the_same_type():
    lags = b.same_type_lags(pd.Timestamp("2024-07-16T01:00:00Z"), "America/Los_Angeles", 5)  # a Monday evening there
    assert lags == [3, 4, 5, 6, 7]  # Fri to Mon, past the weekend
    steps = pd.date_range("2024-07-10T01:00:00Z", periods=2, freq="15min")
    table = pd.DataFrame({"a": [1.0, 2.0, 3.0, 5.0]}, index=list(steps - pd.Timedelta(days=1)) + list(steps - pd.Timedelta(days=2)))
    assert b.same_step_mean(table, steps, ["a"], [1, 2]).tolist() == [[2.0, 3.5]]


def test_a_baseline_day_is_the_same_local_hours_across_a_daylight_saving_change():
    """The Monday after Europe's spring change: its 17:00 local is 15:00 UTC, the Friday
    before's 17:00 local was 16:00 UTC; 24-hour steps would compare 18:00 on that Friday."""
    monday_17 = pd.Timestamp("2024-04-01T15:00Z")
    assert b.earlier(monday_17, "Europe/Berlin", 3) == pd.Timestamp("2024-03-29T16:00Z")
    steps = pd.date_range(monday_17, periods=2, freq="15min")
    friday = pd.date_range("2024-03-29T15:30Z", periods=4, freq="15min")  # 16:30 to 17:15 local
    table = pd.DataFrame({"home": [1.0, 2.0, 3.0, 4.0]}, index=friday)  # 17:00 local is 3.0
    seen = b.same_step_mean(table, steps, ["home"], [3], "Europe/Berlin")
    assert seen.tolist() == [[3.0, 4.0]]
    # A clock time the earlier day skipped (02:30 on the change's day) is taken an hour later.
    assert b.earlier(pd.Timestamp("2024-04-01T00:30Z"), "Europe/Berlin", 1) == pd.Timestamp("2024-03-31T01:30Z")


@pytest.mark.parametrize("body, message", [
    ({"start": "", "duration_minutes": 60, "requested_kw": 1}, "body field start: expected an ISO 8601"),
    ({"start": "NaT", "duration_minutes": 60, "requested_kw": 1}, "body field start: expected an ISO 8601"),
    ({"start": "2024-07-16T02:00:00Z", "end": "NaT", "requested_kw": 1}, "body field end: expected an ISO 8601"),
    ({"start": "2024-07-16T02:00:00Z", "duration_minutes": 1e300, "requested_kw": 1}, "body field duration_minutes"),
    ({"start": "2024-07-16T02:00:00Z", "duration_minutes": 10**400, "requested_kw": 1},
     "body field duration_minutes: expected a finite number"),
    ({"start": "2024-07-16T02:00:00Z", "duration_minutes": 60, "requested_kw": 1, "modification": 1e300},
     "body field modification: expected a whole number 0 to 4294967295"),
    ({"start": "2024-07-16T02:00:00Z", "duration_minutes": 60, "price_per_kwh": 1e308}, "is above 10000"),
    ({"start": "2024-07-16T02:00:00Z", "duration_minutes": 60, "requested_kw": 1e308},
     "reduction 1e+308 kW is above 1e+07; expected the fleet's kW"),
    ({"start": "2024-07-16T02:00:00Z", "duration_minutes": 60, "requested_kw": 1, "sites": []},
     'body field sites: expected a non-empty list of device ids or "all", got []'),
    ({"start": "9999-12-31T23:00:00-05:00", "duration_minutes": 60, "requested_kw": 1}, "start 10000-01-01 is outside"),
    ({"start": "0001-01-01T00:00:00+01:00", "duration_minutes": 60, "requested_kw": 1}, "is outside 1677-09-21"),
    ({"start": "2030-01-01T00:00:00Z", "duration_minutes": 60, "requested_kw": 1},
     "event: starts at 2030-01-01T00:00:00+00:00, more than 7 days after now (2024-07-16T00:00:00+00:00); expected a start within 7 days"),
    ({"start": "2024-07-16T02:00:00Z", "duration_minutes": 60, "requested_kw": 1, "event_id": "a/b"}, "no '/'"),
    ({"start": "2024-07-16T02:00:00Z", "duration_minutes": 60, "requested_kw": 1, "event_id": "a\x00b"},
     "no control character"),
])
def test_a_body_the_fleet_cannot_mean_is_a_422_in_one_line_and_nothing_stored(fleet, body, message):
    """What a client may send that no event is (no time, a window beyond what a time holds,
    a price no market has, an id no path can name): one 422 line, and no event left behind."""
    from fastapi.testclient import TestClient

    from cloud.dashboard.app import create_app
    from cloud.store import schema as s

    dr, publisher = fleet
    with TestClient(create_app(dr.store, dr=dr)) as client:
        answer = client.post("/api/dr/events", json=body)
        assert answer.status_code == 422 and message in answer.json()["detail"], answer.text
        assert "\n" not in answer.json()["detail"]
        assert dr.store.read_frame(s.DR_EVENTS, {}).empty and not publisher.sent


@pytest.mark.parametrize("path", ["/api/dr/events/a%00b", "/api/dr/events/x?source=a%00b"])
def test_a_control_character_in_an_event_id_is_a_422_not_a_store_failure(fleet, path):
    from fastapi.testclient import TestClient

    from cloud.dashboard.app import create_app

    dr, _ = fleet
    with TestClient(create_app(dr.store, dr=dr)) as client:
        for method in ("get", "delete"):
            answer = getattr(client, method)(path)
            assert answer.status_code == 422 and "control character" in answer.json()["detail"], answer.text


def test_the_dashboard_takes_events_where_mqtt_is_configured(fleet, monkeypatch):
    """run_dashboard.py and the app factory build the same handler: with MQTT_HOST set the
    fleet decides events, without it POST /api/dr/events answers 503."""
    from cloud.dashboard.app import dr_from_env

    dr, _ = fleet
    monkeypatch.delenv("MQTT_HOST", raising=False)
    assert dr_from_env(dr.store) is None
    monkeypatch.setenv("MQTT_HOST", "127.0.0.1")
    assert isinstance(dr_from_env(dr.store), FleetDR)


MINUTE = pd.Timedelta(minutes=1)
UNDER_WAY = START + 30 * MINUTE  # 01:30: a new schedule reaches the sites from the 01:45 step (10 min lead)


def _under_way(fleet):
    """e1 (2 kW, 01:00-03:00) opted in at NOW; the sites went on syncing; it is now 01:30."""
    dr, publisher = fleet
    assert dr.decide(event(2.0)).opt_in
    first = {d: s.entries for d, s in publisher.sent.items()}
    dr.store.upsert_readings(_window_readings(dr.store, UNDER_WAY, since=NOW))
    dr.clock = lambda: UNDER_WAY
    return dr, publisher, first


@pytest.mark.parametrize("end", [
    END + 30 * MINUTE,  # extended
    END - 60 * MINUTE,  # shortened, with steps left to plan again
    START + 45 * MINUTE,  # shortened to end before a new schedule reaches the sites
])
def test_a_modification_under_way_keeps_the_earlier_schedule_then_plans_the_rest_to_the_new_end(fleet, end):
    """Sources extend, deepen and cut events under way: the batteries must not stop in the
    middle of a reduction still counted on. A site holds what it was sent until a new schedule
    reaches it, so the window runs on the earlier schedule to 01:45, then on the new plan."""
    dr, publisher, first = _under_way(fleet)
    resume = START + 45 * MINUTE
    answer = dr.decide(event(2.0, end=end, modification=1))
    assert answer.opt_in and answer.reason.startswith("under way: the earlier schedule held")
    assert answer.planned_kw == pytest.approx(2.0, rel=1e-3) and not publisher.cleared
    for device in ("site-0", "site-1", "site-2"):
        entries = publisher.sent[device].entries
        assert _windows(publisher.sent[device]) == [(START, end)]
        held = [e for e in entries if START <= e.ts < min(resume, end)]
        assert held and held == [e for e in first[device] if START <= e.ts < min(resume, end)]
        assert entries[-1].ts == end and entries[-1].power_kw is None
        assert len([e for e in entries if resume <= e.ts < end]) == (end - resume) // dr.settings.step
    planned = r.results(dr.store, "test", "e1").set_index("device_id")
    assert planned.at["fleet", "planned_kw"] == pytest.approx(answer.planned_kw)


def test_a_modification_under_way_is_measured_over_the_whole_window(fleet):
    dr, _, _ = _under_way(fleet)
    end = END + 30 * MINUTE
    assert dr.decide(event(2.0, end=end, modification=1)).opt_in
    dr.store.upsert_readings(_window_readings(dr.store, end, since=UNDER_WAY))
    dr.clock = lambda: end + MINUTE
    delivered = dr.delivery("e1", "test")
    assert sorted(delivered.per_site_kw) == ["site-0", "site-1", "site-2"] and math.isfinite(delivered.delivered_kw)
    measured = r.results(dr.store, "test", "e1").query("device_id == 'fleet' and baseline == 'forecast'")
    means, _ = window_means(dr.store, ["site-0", "site-1", "site-2"], START, end, dr.settings.step)
    assert measured["measured_kw"].iloc[0] == pytest.approx(means.sum())


def test_a_modification_under_way_the_fleet_cannot_hold_is_declined_and_withdrawn(fleet):
    dr, publisher, _ = _under_way(fleet)
    answer = dr.decide(event(500.0, end=END + 30 * MINUTE, modification=1))
    assert not answer.opt_in and answer.reason.startswith("too large")
    assert sorted(publisher.cleared) == ["site-0", "site-1", "site-2"]


def test_a_modification_after_the_window_ended_is_declined(fleet):
    dr, publisher, _ = _under_way(fleet)
    dr.clock = lambda: END + MINUTE
    answer = dr.decide(event(2.0, end=END, modification=1))
    assert not answer.opt_in and answer.reason.startswith("window ended")


def test_a_modification_that_drops_sites_drops_their_planned_rows(fleet):
    """Left, a site no longer dispatched was measured as dispatched when the window ended."""
    dr, _ = fleet
    assert dr.decide(event(1.0)).opt_in
    assert dr.decide(event(1.0, sites=("site-0",), modification=1)).opt_in
    planned = r.results(dr.store, "test", "e1")
    assert sorted(planned["device_id"]) == ["fleet", "site-0"]


def test_a_modification_after_the_window_ended_leaves_what_ran_to_be_measured(fleet):
    """Stored in the event's place as declined, it lost the window the fleet delivered."""
    dr, _, _ = _under_way(fleet)
    dr.store.upsert_readings(_window_readings(dr.store, END, since=UNDER_WAY))
    dr.clock = lambda: END + MINUTE
    assert not dr.decide(event(2.0, end=END + 30 * MINUTE, modification=1)).opt_in
    assert r.stored_event(dr.store, "test", "e1")["status"] == "opted_in"
    delivered = dr.delivery("e1", "test")
    assert delivered is not None and math.isfinite(delivered.delivered_kw)


@pytest.mark.parametrize("now, hours_left", [(NOW, 2.0), (UNDER_WAY, 1.5)])
def test_an_event_under_way_promises_only_the_rest_of_its_window(fleet, now, hours_left):
    """The part of a window already run is spent and shows in the stored energy a later event
    is decided from; counted again, the fleet would decline events it can hold."""
    dr, _ = fleet
    assert dr.decide(event(2.0)).opt_in
    later = event(1.0, id="later", start=END + 60 * MINUTE, end=END + 120 * MINUTE)
    devices = ["site-0", "site-1", "site-2"]
    promised = commitments(dr.store, devices, later, now)
    planned = r.results(dr.store, "test", "e1").set_index("device_id")["planned_kw"].reindex(devices).clip(lower=0)
    assert promised.energy_kwh == pytest.approx(planned.to_numpy() * hours_left)


def test_an_event_off_the_plan_step_is_held_over_its_own_window(fleet):
    """Delivery is measured on the readings stamped in the event's own window, and the next
    event on a site may start where it ends: a schedule padded to the 15-minute plan step
    ran 7 minutes early, 8 late, and into the next event's window."""
    dr, publisher = fleet
    off = 7 * MINUTE
    first, second = (START + off, START + 60 * MINUTE + off), (START + 60 * MINUTE + off, START + 120 * MINUTE + off)
    _decide_at(dr, "a", first)
    _decide_at(dr, "b", second)
    for device in ("site-0", "site-1", "site-2"):
        entries = publisher.sent[device].entries
        assert _windows(publisher.sent[device]) == [(first[0], second[1])]  # back to back: one run of event entries
        assert [e.ts for e in entries] == sorted({e.ts for e in entries})
        assert entries[-1].ts == second[1] and entries[-1].power_kw is None


@pytest.mark.parametrize("off", [0 * MINUTE, 7 * MINUTE])
def test_capability_is_counted_over_the_events_own_hours(fleet, off):
    """A 2-hour window off the plan step covers 9 steps: counted over their 2.25 h, the fleet
    under-promised the 2 hours the source asks for and measures."""
    dr, _ = fleet
    answer = dr.decide(event(500.0, start=START + off, end=END + off))
    assert not answer.opt_in and "for 2 h;" in answer.reason


def _minute_mean(values: np.ndarray, steps: pd.DatetimeIndex, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
    """Per row, the mean of ``values`` (one per plan step) taken minute by minute over ``[start, end)``."""
    minutes = pd.date_range(start, end, freq="min", inclusive="left")
    return np.asarray(values)[:, steps.searchsorted(minutes, side="right") - 1].mean(axis=1)


@pytest.fixture
def spied(monkeypatch):
    """What the decision planned on: each fleet state (with its steps) and each plan."""
    from cloud.dr import decision
    seen = {"states": [], "plans": []}

    def state(store, sites, steps, *args):
        seen["states"].append((steps, decision_state(store, sites, steps, *args)))
        return seen["states"][-1][1]

    def plan(*args, **kwargs):
        seen["plans"].append(decision_solve(*args, **kwargs))
        return seen["plans"][-1]

    decision_state, decision_solve = decision.fleet_state, decision.solve
    monkeypatch.setattr(decision, "fleet_state", state)
    monkeypatch.setattr(decision, "solve", plan)
    return seen


def test_an_event_off_the_plan_step_stores_its_baseline_and_plan_as_means_over_its_own_window(fleet, spied):
    """01:07-03:07 is planned on the steps 01:00-03:15, but delivery is baseline minus what the
    readings stamped in the window measure: a plain mean over the steps counted 01:00-01:07 and
    03:07-03:15, which no reading in the window covers, as much as any step inside it."""
    dr, _ = fleet
    start, end = START + 7 * MINUTE, END + 7 * MINUTE
    assert dr.decide(event(1.0, start=start, end=end)).opt_in
    plan = spied["plans"][0]
    stored = r.results(dr.store, "test", "e1").set_index("device_id")
    reduction = _minute_mean(plan.baseline_kw - plan.grid_kw, plan.steps, start, end)
    assert stored.loc[plan.devices, "baseline_kw"].tolist() == pytest.approx(
        _minute_mean(plan.baseline_kw, plan.steps, start, end).tolist(), abs=1e-9)
    assert stored.loc[plan.devices, "planned_kw"].tolist() == pytest.approx(reduction.tolist(), abs=1e-9)
    assert stored.at["fleet", "planned_kw"] == pytest.approx(plan.weights @ reduction, abs=1e-9)


def test_an_event_off_the_step_cut_while_under_way_stores_its_baseline_over_its_own_window(fleet, spied):
    """Cut under way to end before a new schedule reaches the sites, the window 01:07-01:37 is
    held as sent; its stored baseline is the mean over those 30 minutes, not over 01:00-01:45."""
    dr, _ = fleet
    start = START + 7 * MINUTE
    assert dr.decide(event(1.0, start=start, end=END + 7 * MINUTE)).opt_in
    dr.store.upsert_readings(_window_readings(dr.store, UNDER_WAY, since=NOW))
    dr.clock = lambda: UNDER_WAY
    answer = dr.decide(event(1.0, start=start, end=start + 30 * MINUTE, modification=1))
    assert answer.opt_in and "held to the new end" in answer.reason
    steps, state = spied["states"][-1]
    stored = r.results(dr.store, "test", "e1").set_index("device_id")
    held = [state.devices.index(d) for d in ("site-0", "site-1", "site-2")]
    expected = _minute_mean(state.baseline_kw[held], steps, start, start + 30 * MINUTE)
    assert stored.loc[["site-0", "site-1", "site-2"], "baseline_kw"].tolist() == pytest.approx(expected.tolist(), abs=1e-9)
