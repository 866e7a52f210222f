"""The peak guard on the gateway: carried by a schedule, validated where it enters, and kept
at every reading (edge_gateway/control.py, the rule the backtest measures)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from edge_gateway.control import ArrivalWindows, PeakGuard, SessionDays, SiteMemory
from edge_gateway.gateway import Gateway
from edge_gateway.models import der_data as dd
from edge_gateway.mqtt.commands import CommandRejected, SetpointBook, parse_command
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.sim_helpers import config

NOW = pd.Timestamp("2024-06-17T07:00:00Z")  # local midnight of a Monday in Los Angeles
GUARD = {"reserve_kwh": 9.0, "weekday_window_h": [17.0, 21.0], "weekend_window_h": [10.0, 19.0]}


def _day_schedule(guard: dict | None) -> bytes:
    entries = [{"ts": dd.format_ts(NOW + pd.Timedelta(minutes=15 * i)), "power_kw": None} for i in range(96)]
    return json.dumps({"schedule": entries} | ({} if guard is None else {"guard": guard})).encode()


def test_a_schedule_carries_its_guard_for_as_long_as_it_lasts():
    command = parse_command(_day_schedule(GUARD), "d", 50.0, NOW)
    assert command.guard == PeakGuard(9.0, ArrivalWindows((17.0, 21.0), (10.0, 19.0)))
    book = SetpointBook({"d": 50.0}, clock=lambda: NOW)
    book.accept("d", _day_schedule(GUARD))
    assert book.guard("d", NOW + pd.Timedelta(hours=12)) == command.guard
    assert book.guard("d", NOW + pd.Timedelta(days=1)) is None and book.guard("other", NOW) is None
    assert parse_command(_day_schedule(None), "d", 50.0, NOW).guard is None


@pytest.mark.parametrize(
    ("guard", "reason"),
    [
        pytest.param(GUARD | {"reserve_kwh": -1}, r"guard\.reserve_kwh -1 is negative", id="negative"),
        pytest.param(GUARD | {"reserve_kwh": "6"}, r"guard\.reserve_kwh must be a number", id="text"),
        pytest.param(GUARD | {"weekday_window_h": [21, 17]}, r"guard\.weekday_window_h \[21, 17\] out of range", id="reversed"),
        pytest.param(GUARD | {"weekend_window_h": [10]}, r"guard\.weekend_window_h must be \[start, end\]", id="short"),
        pytest.param({k: v for k, v in GUARD.items() if k != "weekend_window_h"}, "guard lacks weekend_window_h", id="missing"),
        pytest.param(GUARD | {"target_kw": 7}, "guard: unknown key 'target_kw'", id="unknown"),
        pytest.param([6.0], "guard must be an object", id="list"),
    ],
)
def test_a_malformed_guard_is_refused_with_the_field_named(guard, reason):
    with pytest.raises(CommandRejected, match=reason):
        parse_command(_day_schedule(guard), "d", 50.0, NOW)


def test_a_guard_may_say_the_car_charges_once_a_day():
    assert parse_command(_day_schedule(GUARD | {"one_session_a_day": True}), "d", 50.0, NOW).guard.one_session_a_day
    assert not parse_command(_day_schedule(GUARD), "d", 50.0, NOW).guard.one_session_a_day
    with pytest.raises(CommandRejected, match="guard.one_session_a_day must be true or false, got 1"):
        parse_command(_day_schedule(GUARD | {"one_session_a_day": 1}), "d", 50.0, NOW)


def test_session_days_follow_the_charger_readings():
    days, zone = SessionDays(), "America/Los_Angeles"
    evening = pd.Timestamp("2024-06-17 17:00", tz=zone)
    for minutes, ev_kw in ((0, 0.0), (15, 7.2), (30, 7.2)):
        days.observe(evening + pd.Timedelta(minutes=minutes), zone, ev_kw)
    assert not days.ended_today(evening + pd.Timedelta(minutes=45), zone)  # still charging
    days.observe(evening + pd.Timedelta(minutes=45), zone, 0.0)
    assert days.ended_today(evening + pd.Timedelta(hours=1), zone)
    assert not days.ended_today(evening + pd.Timedelta(hours=8), zone)  # the next day is another day


def test_an_immediate_command_cannot_carry_a_guard():
    with pytest.raises(CommandRejected, match="unknown key 'guard'"):
        parse_command(json.dumps({"power_kw": 0, "guard": GUARD}).encode(), "d", 50.0, NOW)


def _evening(tmp_path, guard: dict | None, seed: int = 42, has_ev: bool = False) -> pd.DataFrame:
    """A full battery's June day, every step left to the battery's own rule (by default on a
    site without a car)."""
    site = config(seed=seed, interval_seconds=900, home_load={"has_ev": has_ev}, battery={"mode": "setpoint", "initial_soc": 90.0})
    book = SetpointBook.for_configs([site], clock=lambda: NOW)
    book.accept(site.device_id, _day_schedule(guard))
    gateway = Gateway([site], state_dir=tmp_path / json.dumps(guard, sort_keys=True).replace("/", ""), setpoints=book)
    frame = pd.concat([gateway.step(NOW + pd.Timedelta(minutes=15 * i)) for i in range(1, 97)], ignore_index=True)
    battery = site.battery
    frame["above_min_kwh"] = (frame[dd.BATTERY_SOC] - battery.min_soc) / 100.0 * battery.capacity_kwh
    frame["local_hour"] = (pd.DatetimeIndex(frame[dd.TS]) - pd.Timedelta(minutes=15)).tz_convert(site.timezone).hour
    return frame


def test_the_gateway_keeps_the_reserve_through_the_window_and_spends_it_after(tmp_path):
    guarded, free = _evening(tmp_path, GUARD), _evening(tmp_path, None)
    window = guarded["local_hour"].between(17, 20)
    # Held from the reading on which it reached the reserve: at most one step's discharge below.
    one_step_kwh = 5.0 * 0.25 / 0.9
    assert (guarded.loc[window, "above_min_kwh"] >= GUARD["reserve_kwh"] - one_step_kwh).all()
    # The same evening left to the battery's own rule goes well below it, so the guard acted.
    assert free.loc[window, "above_min_kwh"].min() < GUARD["reserve_kwh"] - 2 * one_step_kwh
    # After the window the reserve is the battery's own again.
    late = guarded["local_hour"] >= 22
    assert guarded.loc[late, "above_min_kwh"].min() < GUARD["reserve_kwh"] - one_step_kwh
    assert not math.isclose(guarded[dd.BATTERY_POWER].sum(), free[dd.BATTERY_POWER].sum())


def test_once_the_days_only_session_has_ended_the_reserve_is_spent(tmp_path):
    once = _evening(tmp_path, GUARD | {"one_session_a_day": True}, seed=41, has_ev=True)
    kept = _evening(tmp_path, GUARD, seed=41, has_ev=True)
    charging = once.loc[once[dd.LOAD_EV] > 0, "local_hour"]
    assert charging.tolist() == [17] * 4, "the site's car should charge once, 17:00-18:00"
    one_step_kwh = 5.0 * 0.25 / 0.9
    window = once["local_hour"].between(17, 20)
    assert (kept.loc[window, "above_min_kwh"] >= GUARD["reserve_kwh"] - one_step_kwh).all()
    assert once.loc[once["local_hour"] == 20, "above_min_kwh"].min() < GUARD["reserve_kwh"] - 2 * one_step_kwh
    until_the_end = once["local_hour"] <= 17
    assert once.loc[until_the_end, dd.BATTERY_POWER].tolist() == kept.loc[until_the_end, dd.BATTERY_POWER].tolist()


def test_a_gateway_restarted_before_every_reading_guards_as_one_that_never_stopped(tmp_path):
    """Run from cron (``--once``), every reading is a new process: the day's session, the
    latest reading's facts and the month's peak come back from the state file."""
    guard = GUARD | {"one_session_a_day": True}
    site = config(seed=41, interval_seconds=900, home_load={"has_ev": True}, battery={"mode": "setpoint", "initial_soc": 90.0})

    def day(folder: str, restart: bool) -> pd.DataFrame:
        book = SetpointBook.for_configs([site], clock=lambda: NOW)
        book.accept(site.device_id, _day_schedule(guard))
        gateway, frames = None, []
        for i in range(1, 97):
            if gateway is None or restart:
                gateway = Gateway([site], state_dir=tmp_path / folder, setpoints=book)
            frames.append(gateway.step(NOW + pd.Timedelta(minutes=15 * i)))
        return pd.concat(frames, ignore_index=True)

    continuous, restarted = day("continuous", False), day("restarted", True)
    assert (continuous[dd.LOAD_EV] > 0).any(), "the site's car should charge that day"
    # The reserve is spent in the window once the session has ended: known only from memory.
    local_hour = (pd.DatetimeIndex(restarted[dd.TS]) - pd.Timedelta(minutes=15)).tz_convert(site.timezone).hour
    above_min_kwh = (restarted[dd.BATTERY_SOC] - site.battery.min_soc) / 100.0 * site.battery.capacity_kwh
    assert above_min_kwh[local_hour == 20].min() < GUARD["reserve_kwh"] - 2 * 5.0 * 0.25 / 0.9
    assert restarted[dd.BATTERY_POWER].tolist() == continuous[dd.BATTERY_POWER].tolist()
    saved = json.loads((tmp_path / "restarted" / f"{site.device_id}.json").read_text())["memory"]
    assert saved["sessions"]["ended_session_of"] == "2024-06-17"
    assert saved["month"] == "2024-06" and saved["peak_import_kw"] == continuous[dd.NET_GRID_FLOW].max()


def test_a_gateway_that_loses_its_state_file_before_every_reading_rebuilds_its_memory_from_the_readings(tmp_path):
    """With the state file gone (a wiped SD card's state folder, say) but the readings kept,
    the battery, the day's session and the month's peak come back from the edge store."""
    guard = GUARD | {"one_session_a_day": True}
    site = config(seed=41, interval_seconds=900, home_load={"has_ev": True}, battery={"mode": "setpoint", "initial_soc": 90.0})
    state_file = tmp_path / "lost" / f"{site.device_id}.json"

    def day(lose: bool) -> tuple[pd.DataFrame, dict]:
        book = SetpointBook.for_configs([site], clock=lambda: NOW)
        book.accept(site.device_id, _day_schedule(guard))
        store = SQLiteEdgeStore(tmp_path / f"edge-{lose}.db")
        frames = []
        for i in range(1, 97):
            if lose:
                state_file.unlink(missing_ok=True)
            gateway = Gateway([site], sinks=[store.write], state_dir=tmp_path / ("lost" if lose else "kept"), setpoints=book, history=store)
            frames.append(gateway.step(NOW + pd.Timedelta(minutes=15 * i)))
        store.close()
        saved = json.loads((tmp_path / ("lost" if lose else "kept") / f"{site.device_id}.json").read_text())
        return pd.concat(frames, ignore_index=True), saved["memory"]

    (kept, kept_memory), (lost, lost_memory) = day(False), day(True)
    assert (kept[dd.LOAD_EV] > 0).any(), "the site's car should charge that day"
    # The same decisions; where the battery fills, the usable capacity rebuilt from whole
    # cycles may differ by a few Wh (battery.state_from_reading), so powers by a few W.
    pd.testing.assert_series_equal(lost[dd.BATTERY_POWER], kept[dd.BATTERY_POWER], atol=5e-3, rtol=0)
    assert lost_memory == kept_memory


def test_a_cap_below_the_months_peak_is_raised_to_it():
    zone = "America/Los_Angeles"
    memory, june = SiteMemory(), pd.Timestamp("2024-06-29 18:00", tz=zone)
    memory.observe(june, zone, ev_kw=7.2, pv_surplus=False, grid_kw=8.4)
    memory.observe(june + pd.Timedelta(minutes=15), zone, ev_kw=0.0, pv_surplus=True, grid_kw=-2.0)
    assert memory.import_cap_kw(7.0, june + pd.Timedelta(hours=1), zone) == 8.4  # paid for already
    assert memory.import_cap_kw(9.0, june + pd.Timedelta(hours=1), zone) == 9.0
    assert math.isnan(memory.import_cap_kw(math.nan, june + pd.Timedelta(hours=1), zone))  # no cap stays none
    assert memory.import_cap_kw(7.0, pd.Timestamp("2024-07-01 00:00", tz=zone), zone) == 7.0  # a new month's bill
    assert SiteMemory.from_dict(json.loads(json.dumps(memory.to_dict()))) == memory
    assert SiteMemory.from_dict(None) == SiteMemory()  # state saved before the memory existed


def test_a_rebuilt_memory_takes_the_peak_of_the_latest_readings_month_only():
    zone = "America/Los_Angeles"
    starts = pd.DatetimeIndex(["2024-06-30 22:00", "2024-06-30 23:45", "2024-07-01 00:00", "2024-07-01 00:15"]).tz_localize(zone)
    memory = SiteMemory.rebuilt(starts, zone, ev_kw=[7.2, 0.0, 0.0, 7.2], pv_surplus=[False] * 4, grid_kw=[9.0, 1.0, 2.5, float("nan")])
    assert memory.month == "2024-07" and memory.peak_import_kw == 2.5  # June's 9 kW was June's bill
    assert memory.charging and memory.sessions.began_on.isoformat() == "2024-07-01"
    assert memory.sessions.ended_session_of.isoformat() == "2024-06-30"
    observed = SiteMemory()
    for start, ev, grid in zip(starts, [7.2, 0.0, 0.0, 7.2], [9.0, 1.0, 2.5, float("nan")], strict=True):
        observed.observe(start, zone, ev, False, grid)
    assert memory == observed
    assert SiteMemory.rebuilt(pd.DatetimeIndex([], tz="UTC"), zone, [], [], []) == SiteMemory()
