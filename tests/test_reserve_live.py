"""The reserve policy on the gateway: carried by a schedule, validated where it enters, and
applied at every reading (der_core/control.py, the rule the backtest measures)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from der_core import der_data as dd
from der_core.control import (
    ControlBattery,
    Controller,
    ReservePolicy,
    SessionDays,
    SiteMemory,
    reserve_request_kw,
)
from der_core.setpoints import reserve_payload
from edge_gateway.gateway import Gateway
from edge_gateway.mqtt.commands import CommandRejected, SetpointBook, parse_command
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.sim_helpers import config

NOW = pd.Timestamp("2024-06-17T07:00:00Z")  # local midnight of a Monday in Los Angeles
ZONE = "America/Los_Angeles"
MIN_KWH = 13.5 * 0.10  # the default battery's minimum SOC
RESERVE_KWH = 9.0  # kept above the minimum from 17:00 to 21:00 while no car charged today
CHARGING_STEPS = 4
ONE_STEP_KWH = 5.0 * 0.25 / math.sqrt(0.9)  # what a full-rate discharge takes from storage in a step


def _policy(one_session_a_day: bool = False, charge_to_kwh: float | None = None) -> ReservePolicy:
    """A day's policy from NOW: the reserve kept in the evening (and while a car charges),
    not once the day's only session is done; optionally charged to ``charge_to_kwh`` (and
    kept there) from 01:00 to 03:00."""
    hours = np.arange(96) // 4
    states = CHARGING_STEPS + 2
    floor = np.full((96, states), MIN_KWH)
    floor[(hours >= 17) & (hours < 21), : states - 1] = MIN_KWH + RESERVE_KWH
    charge_to = np.full((96, states), MIN_KWH)
    if charge_to_kwh is not None:
        night = (hours >= 1) & (hours < 3)
        charge_to[night], floor[night] = charge_to_kwh, charge_to_kwh
    return ReservePolicy(start=NOW, step_s=900, floor_kwh=floor, charge_to_kwh=np.minimum(charge_to, floor),
                         charging_steps=CHARGING_STEPS, house_levels=(1.0,), house_kw=np.full(96, 0.8),
                         one_session_a_day=one_session_a_day)


def _schedule(reserve: dict | None) -> bytes:
    entries = [{"ts": dd.format_ts(NOW + pd.Timedelta(minutes=15 * i)), "power_kw": None} for i in range(96)]
    return json.dumps({"schedule": entries} | ({} if reserve is None else {"reserve": reserve})).encode()


PAYLOAD = reserve_payload(_policy())


def test_a_schedule_carries_its_reserve_policy_for_as_long_as_it_lasts():
    sent = _policy(one_session_a_day=True)
    command = parse_command(_schedule(reserve_payload(sent)), "d", 50.0, NOW)
    received = command.reserve
    assert received.start == sent.start and received.step == sent.step and received.one_session_a_day
    assert (received.charging_steps, received.house_levels, received.states) == (CHARGING_STEPS, (1.0,), 6)
    np.testing.assert_allclose(received.floor_kwh, sent.floor_kwh, atol=5e-4)
    np.testing.assert_allclose(received.charge_to_kwh, sent.charge_to_kwh, atol=5e-4)
    book = SetpointBook({"d": 50.0}, clock=lambda: NOW)
    book.accept("d", _schedule(reserve_payload(sent)))
    assert book.reserve("d", NOW + pd.Timedelta(hours=12)) is not None
    assert book.reserve("d", NOW + pd.Timedelta(days=1)) is None and book.reserve("other", NOW) is None
    assert parse_command(_schedule(None), "d", 50.0, NOW).reserve is None
    later = reserve_payload(_policy(), since=NOW + pd.Timedelta(hours=2), steps=8)
    assert len(later["floor_kwh"]) == 8 and later["floor_kwh"] == reserve_payload(_policy())["floor_kwh"][8:16]
    assert pd.Timestamp(later["start"]) == NOW + pd.Timedelta(hours=2)
    with pytest.raises(ValueError, match="does not cover"):
        reserve_payload(_policy(), since=NOW - pd.Timedelta(hours=1))


@pytest.mark.parametrize(
    ("reserve", "reason"),
    [
        pytest.param({k: v for k, v in PAYLOAD.items() if k != "floor_kwh"}, "reserve lacks floor_kwh", id="missing"),
        pytest.param(PAYLOAD | {"reserve_kwh": 7}, "reserve: unknown key 'reserve_kwh'", id="unknown"),
        pytest.param([6.0], "reserve must be an object", id="list"),
        pytest.param(PAYLOAD | {"one_session_a_day": 1}, "reserve.one_session_a_day must be true or false, got 1", id="flag"),
        pytest.param(PAYLOAD | {"charging_steps": 0}, r"reserve\.charging_steps 0 out of range", id="no-steps"),
        pytest.param(PAYLOAD | {"charging_steps": 2.5}, r"reserve\.charging_steps 2\.5 out of range", id="half-step"),
        pytest.param(PAYLOAD | {"step_s": "900"}, r"reserve\.step_s must be a number", id="text-step"),
        pytest.param(PAYLOAD | {"house_levels": [0.0]}, "reserve.house_levels must be 1 to 16 multipliers > 0", id="zero-level"),
        pytest.param(PAYLOAD | {"floor_kwh": PAYLOAD["floor_kwh"][:-1]}, "reserve.floor_kwh must be a list of lists of 96 rows",
                     id="short-table"),
        pytest.param(PAYLOAD | {"charge_to_kwh": [row[:-1] for row in PAYLOAD["charge_to_kwh"]]},
                     r"reserve\.charge_to_kwh\[0\] must be a list of 6 numbers, one per session state", id="narrow-row"),
        pytest.param(PAYLOAD | {"floor_kwh": [[-1.0] * 6] * 96}, "reserve.floor_kwh must hold finite numbers >= 0", id="negative"),
        pytest.param(PAYLOAD | {"house_kw": ["a"] * 96}, "reserve.house_kw must hold numbers only", id="text-cells"),
        pytest.param(PAYLOAD | {"start": "yesterday"}, "reserve.start", id="bad-start"),
    ],
)
def test_a_malformed_reserve_policy_is_refused_with_the_field_named(reserve, reason):
    with pytest.raises(CommandRejected, match=reason):
        parse_command(_schedule(reserve), "d", 50.0, NOW)


def test_an_immediate_command_cannot_carry_a_reserve_policy():
    with pytest.raises(CommandRejected, match="unknown key 'reserve'"):
        parse_command(json.dumps({"power_kw": 0, "reserve": PAYLOAD}).encode(), "d", 50.0, NOW)


@pytest.mark.parametrize(("net_kw", "energy", "floor", "charge_to", "expected"), [
    (3.0, 10.0, 5.0, 1.0, -3.0),  # above the floor: covers the load
    (3.0, 5.5, 5.0, 1.0, -0.5 * 0.9 / 0.25),  # covers only what it holds above the floor
    (3.0, 4.0, 5.0, 1.0, 0.0),  # below the floor: holds
    (-2.0, 4.0, 5.0, 1.0, 2.0),  # stores PV surplus whatever the floor
    (1.0, 4.0, 5.0, 4.5, 0.5 / (0.9 * 0.25)),  # charges up to charge_to from the grid
    (1.0, 1.0, 5.0, 4.5, 5.0),  # at most at the charge rate
    (-6.0, 1.0, 5.0, 4.5, 6.0),  # a surplus above the charge need is still all offered
])
def test_the_policys_request_within_a_step(net_kw, energy, floor, charge_to, expected):
    assert reserve_request_kw(net_kw, energy, floor, charge_to, 5.0, 0.9, 0.9, 0.25) == pytest.approx(expected)


def test_session_days_follow_the_charger_readings():
    days = SessionDays()
    evening = pd.Timestamp("2024-06-17 17:00", tz=ZONE)
    for minutes, ev_kw, house_kw in ((0, 0.0, 1.0), (15, 7.2, 2.0), (30, 7.2, 3.0)):
        days.observe(evening + pd.Timedelta(minutes=minutes), ZONE, ev_kw, house_kw, 1.0)
    assert days.started_at == evening + pd.Timedelta(minutes=15)
    assert days.house_ratio() == pytest.approx(2.5)  # the session's house load over its forecast, not the reading before
    assert not days.ended_today(evening + pd.Timedelta(minutes=45), ZONE)  # still charging
    days.observe(evening + pd.Timedelta(minutes=45), ZONE, 0.0)
    assert days.ended_today(evening + pd.Timedelta(hours=1), ZONE)
    assert not days.ended_today(evening + pd.Timedelta(hours=8), ZONE)  # the next day is another day
    assert SessionDays.from_dict(json.loads(json.dumps(days.to_dict()))) == days
    older = {"charging": False, "began_on": "2024-06-17", "ended_session_of": "2024-06-17"}  # saved before started_at
    assert SessionDays.from_dict(older).house_ratio() == 1.0


def test_the_session_state_comes_from_the_readings_before_and_the_charger_now():
    policy, days = _policy(one_session_a_day=True), SessionDays()
    start = pd.Timestamp("2024-06-17 17:00", tz=ZONE)
    assert policy.state(days, start, ZONE, ev_kw=0.0) == 0  # no car yet
    assert policy.state(days, start, ZONE, ev_kw=7.2) == 1  # arriving: the session's first step
    days.observe(start, ZONE, 7.2)
    step = pd.Timedelta(minutes=15)
    assert policy.state(days, start + step, ZONE, ev_kw=7.2) == 2
    assert policy.state(days, start + 9 * step, ZONE, ev_kw=7.2) == CHARGING_STEPS  # long sessions share the last
    assert policy.state(days, start + step, ZONE, ev_kw=0.0) == policy.states - 1  # it stops: the day's only one
    assert _policy().state(days, start + step, ZONE, ev_kw=0.0) == 0  # another may come
    assert policy.limits(start - pd.Timedelta(hours=18), days, ZONE, 0.0) is None  # before the policy


def _evening(tmp_path, policy: ReservePolicy | None, seed: int = 42, has_ev: bool = False, soc: float = 90.0) -> pd.DataFrame:
    """A June day from ``soc``, under ``policy`` (None: the battery's own rule), by default
    on a site without a car."""
    site = config(seed=seed, interval_seconds=900, home_load={"has_ev": has_ev}, battery={"mode": "setpoint", "initial_soc": soc})
    book = SetpointBook.for_configs([site], clock=lambda: NOW)
    book.accept(site.device_id, _schedule(None if policy is None else reserve_payload(policy)))
    folder = tmp_path / f"{seed}-{has_ev}-{soc}-{policy is None}-{policy is not None and policy.one_session_a_day}"
    gateway = Gateway([site], state_dir=folder, setpoints=book)
    frame = pd.concat([gateway.step(NOW + pd.Timedelta(minutes=15 * i)) for i in range(1, 97)], ignore_index=True)
    battery = site.battery
    frame["above_min_kwh"] = (frame[dd.BATTERY_SOC] - battery.min_soc) / 100.0 * battery.capacity_kwh
    frame["local_hour"] = (pd.DatetimeIndex(frame[dd.TS]) - pd.Timedelta(minutes=15)).tz_convert(site.timezone).hour
    return frame


def test_the_gateway_keeps_the_floor_through_the_evening_and_spends_it_after(tmp_path):
    kept, free = _evening(tmp_path, _policy()), _evening(tmp_path, None)
    window = kept["local_hour"].between(17, 20)
    # Held from the reading on which it reached the floor: at most one step's discharge below.
    assert (kept.loc[window, "above_min_kwh"] >= RESERVE_KWH - ONE_STEP_KWH).all()
    # The same evening left to the battery's own rule goes well below it, so the policy acted.
    assert free.loc[window, "above_min_kwh"].min() < RESERVE_KWH - 2 * ONE_STEP_KWH
    # After the window the energy is the house's again, and it never went to the grid.
    late = kept["local_hour"] >= 22
    assert kept.loc[late, "above_min_kwh"].min() < RESERVE_KWH - ONE_STEP_KWH
    discharging = kept[dd.BATTERY_POWER] < 0
    assert (kept.loc[discharging, dd.NET_GRID_FLOW] >= -1e-4).all()  # readings keep 0.1 W


def test_the_gateway_charges_from_the_grid_up_to_the_policys_energy(tmp_path):
    target = MIN_KWH + 6.0
    charged = _evening(tmp_path, _policy(charge_to_kwh=target), soc=10.0)
    night = charged["local_hour"].between(1, 2)
    assert (charged.loc[night, dd.BATTERY_POWER] > 0).any() and (charged.loc[night, dd.NET_GRID_FLOW] > 0).all()
    reached = charged.loc[charged["local_hour"] == 2, "above_min_kwh"].max()
    assert reached == pytest.approx(6.0, abs=0.05)  # up to it, not past it


def test_once_the_days_only_session_has_ended_the_reserve_is_spent(tmp_path):
    once = _evening(tmp_path, _policy(one_session_a_day=True), seed=41, has_ev=True)
    kept = _evening(tmp_path, _policy(), seed=41, has_ev=True)
    charging = once.loc[once[dd.LOAD_EV] > 0, "local_hour"]
    assert charging.tolist() == [17] * 4, "the site's car should charge once, 17:00-18:00"
    window = once["local_hour"].between(17, 20)
    assert (kept.loc[window, "above_min_kwh"] >= RESERVE_KWH - ONE_STEP_KWH).all()
    assert once.loc[once["local_hour"] == 20, "above_min_kwh"].min() < RESERVE_KWH - 2 * ONE_STEP_KWH
    until_the_end = once["local_hour"] <= 17
    assert once.loc[until_the_end, dd.BATTERY_POWER].tolist() == kept.loc[until_the_end, dd.BATTERY_POWER].tolist()


def test_a_gateway_restarted_before_every_reading_runs_as_one_that_never_stopped(tmp_path):
    """Run from cron (``--once``), every reading is a new process: the day's session, its
    house load so far and the month's peak come back from the state file."""
    policy = _policy(one_session_a_day=True)
    site = config(seed=41, interval_seconds=900, home_load={"has_ev": True}, battery={"mode": "setpoint", "initial_soc": 90.0})

    def day(folder: str, restart: bool) -> pd.DataFrame:
        book = SetpointBook.for_configs([site], clock=lambda: NOW)
        book.accept(site.device_id, _schedule(reserve_payload(policy)))
        gateway, frames = None, []
        for i in range(1, 97):
            if gateway is None or restart:
                gateway = Gateway([site], state_dir=tmp_path / folder, setpoints=book)
            frames.append(gateway.step(NOW + pd.Timedelta(minutes=15 * i)))
        return pd.concat(frames, ignore_index=True)

    continuous, restarted = day("continuous", False), day("restarted", True)
    assert (continuous[dd.LOAD_EV] > 0).any(), "the site's car should charge that day"
    local_hour = (pd.DatetimeIndex(restarted[dd.TS]) - pd.Timedelta(minutes=15)).tz_convert(site.timezone).hour
    above_min_kwh = (restarted[dd.BATTERY_SOC] - site.battery.min_soc) / 100.0 * site.battery.capacity_kwh
    assert above_min_kwh[local_hour == 20].min() < RESERVE_KWH - 2 * ONE_STEP_KWH  # known only from memory
    assert restarted[dd.BATTERY_POWER].tolist() == continuous[dd.BATTERY_POWER].tolist()
    saved = json.loads((tmp_path / "restarted" / f"{site.device_id}.json").read_text())["memory"]
    assert saved["sessions"]["ended_session_of"] == "2024-06-17"
    assert saved["sessions"]["expected_kw_sum"] == pytest.approx(0.8 * 4)  # the policy's forecast over the session
    assert saved["month"] == "2024-06" and saved["peak_import_kw"] == continuous[dd.NET_GRID_FLOW].max()


def test_a_gateway_that_loses_its_state_file_before_every_reading_rebuilds_its_memory_from_the_readings(tmp_path):
    """With the state file gone (a wiped SD card's state folder, say) but the readings kept,
    the battery, the day's session and the month's peak come back from the edge store."""
    policy = _policy(one_session_a_day=True)
    site = config(seed=41, interval_seconds=900, home_load={"has_ev": True}, battery={"mode": "setpoint", "initial_soc": 90.0})
    state_file = tmp_path / "lost" / f"{site.device_id}.json"

    def day(lose: bool) -> tuple[pd.DataFrame, dict]:
        book = SetpointBook.for_configs([site], clock=lambda: NOW)
        book.accept(site.device_id, _schedule(reserve_payload(policy)))
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
    # cycles may differ by a few Wh (battery.state_from_reading), so powers by a few W. The
    # house level of a session (one level here) reads as usual once its forecast is lost.
    pd.testing.assert_series_equal(lost[dd.BATTERY_POWER], kept[dd.BATTERY_POWER], atol=5e-3, rtol=0)
    for memory in (kept_memory, lost_memory):
        memory["sessions"].pop("house_kw_sum"), memory["sessions"].pop("expected_kw_sum")
    assert lost_memory == kept_memory


def test_a_cap_below_the_months_peak_is_raised_to_it():
    controller = Controller(ControlBattery(5.0, 0.9, 0.9), ZONE)
    memory, june = controller.memory, pd.Timestamp("2024-06-29 18:00", tz=ZONE)
    controller.observe(None, june, ev_kw=7.2, grid_kw=8.4, house_kw=1.2)
    controller.observe(None, june + pd.Timedelta(minutes=15), ev_kw=0.0, grid_kw=-2.0, house_kw=0.5)
    assert controller.cap_kw(7.0, june + pd.Timedelta(hours=1)) == 8.4  # paid for already
    assert controller.cap_kw(9.0, june + pd.Timedelta(hours=1)) == 9.0
    assert math.isnan(controller.cap_kw(math.nan, june + pd.Timedelta(hours=1)))  # no cap stays none
    assert controller.cap_kw(7.0, pd.Timestamp("2024-07-01 00:00", tz=ZONE)) == 7.0  # a new month's bill
    assert memory.month_peak_kw(june, ZONE) == 8.4 and memory.month_peak_kw(pd.Timestamp("2024-07-01", tz=ZONE), ZONE) == 0.0
    assert SiteMemory.from_dict(json.loads(json.dumps(memory.to_dict()))) == memory
    assert SiteMemory.from_dict(None) == SiteMemory()  # state saved before the memory existed


def test_outside_its_policy_the_controller_passes_the_command_in_force_on():
    controller, start = Controller(ControlBattery(5.0, 0.9, 0.9), ZONE), NOW + pd.Timedelta(hours=18)
    assert controller.request_kw(None, start, 3.0, 0.0, 10.0, 0.25, command_kw=-1.5) == -1.5
    assert controller.request_kw(_policy(), NOW - pd.Timedelta(hours=1), 3.0, 0.0, 10.0, 0.25, command_kw=-1.5) == -1.5
    assert math.isnan(controller.request_kw(_policy(), NOW + pd.Timedelta(days=1), 3.0, 0.0, 10.0, 0.25))
    # Inside it, the policy's request, whatever the command: 18:00 keeps the evening's floor.
    floor = MIN_KWH + RESERVE_KWH
    assert controller.request_kw(_policy(), start, 3.0, 0.0, floor + 0.5, 0.25, command_kw=2.0) == pytest.approx(
        reserve_request_kw(3.0, floor + 0.5, floor, MIN_KWH, 5.0, 0.9, 0.9, 0.25))


def test_a_rebuilt_memory_takes_the_peak_of_the_latest_readings_month_only():
    starts = pd.DatetimeIndex(["2024-06-30 22:00", "2024-06-30 23:45", "2024-07-01 00:00", "2024-07-01 00:15"]).tz_localize(ZONE)
    memory = SiteMemory.rebuilt(starts, ZONE, ev_kw=[7.2, 0.0, 0.0, 7.2], grid_kw=[9.0, 1.0, 2.5, float("nan")])
    assert memory.month == "2024-07" and memory.peak_import_kw == 2.5  # June's 9 kW was June's bill
    assert memory.charging and memory.sessions.began_on.isoformat() == "2024-07-01"
    assert memory.sessions.ended_session_of.isoformat() == "2024-06-30"
    observed = SiteMemory()
    for start, ev, grid in zip(starts, [7.2, 0.0, 0.0, 7.2], [9.0, 1.0, 2.5, float("nan")], strict=True):
        observed.observe(start, ZONE, ev, grid)
    assert memory == observed
    assert SiteMemory.rebuilt(pd.DatetimeIndex([], tz="UTC"), ZONE, [], []) == SiteMemory()


def test_an_import_outside_the_demand_window_does_not_raise_the_cap_in_it():
    """A car charged at 8.4 kW overnight, outside the tariff's demand window: no bill counts
    that import, so the window's 5 kW cap stays 5 kW instead of rising to 8.4 kW."""
    controller = Controller(ControlBattery(5.0, 0.9, 0.9), ZONE)
    night = pd.Timestamp("2024-06-12 02:00", tz=ZONE)
    controller.observe(None, night, ev_kw=7.2, grid_kw=8.4, house_kw=1.2, counts_for_peak=False)
    assert controller.cap_kw(5.0, night + pd.Timedelta(hours=16)) == 5.0
    controller.observe(None, night + pd.Timedelta(hours=16), ev_kw=0.0, grid_kw=6.0, house_kw=6.0)
    assert controller.cap_kw(5.0, night + pd.Timedelta(hours=17)) == 6.0  # in the window: paid for
    rebuilt = SiteMemory.rebuilt(pd.DatetimeIndex([night, night + pd.Timedelta(hours=16)]), ZONE, [7.2, 0.0], [8.4, 6.0],
                                 counts_for_peak=[False, True])
    assert rebuilt.peak_import_kw == 6.0


def test_the_gateway_counts_only_the_demand_windows_imports_into_the_months_peak(tmp_path):
    """A tariff billing only the 17:00-21:00 peak: the car's night-time import sets no bill,
    so the month's peak the gateway holds its cap to is the window's own, in the state it
    keeps and in the memory it rebuilds from stored readings when that state is lost."""
    window = {"import_price": {"kind": "fixed", "price": 0.3}, "export_price": {"kind": "fixed", "price": 0.05},
              "demand_charge_per_kw": 10.0, "demand_window": {"days": ["weekday"], "hours": [[17, 21]]}}
    site = config(seed=41, interval_seconds=900, home_load={"has_ev": True}, tariff=window)
    store = SQLiteEdgeStore(tmp_path / "edge.db")
    gateway = Gateway([site], sinks=[store.write], state_dir=tmp_path / "kept", history=store)
    frame = pd.concat([gateway.step(NOW + pd.Timedelta(minutes=15 * i)) for i in range(1, 97)], ignore_index=True)
    hour = (pd.DatetimeIndex(frame[dd.TS]) - pd.Timedelta(minutes=15)).tz_convert(ZONE).hour
    inside = frame[dd.NET_GRID_FLOW][(hour >= 17) & (hour < 21)].max()
    assert frame[dd.NET_GRID_FLOW].max() > inside  # an import outside the window is higher
    kept = json.loads((tmp_path / "kept" / f"{site.device_id}.json").read_text())["memory"]
    assert kept["peak_import_kw"] == pytest.approx(inside)
    lost = Gateway([site], sinks=[store.write], state_dir=tmp_path / "lost", history=store)
    lost.step(NOW + pd.Timedelta(minutes=15 * 97))  # 00:15 the next day, outside the window
    store.close()
    rebuilt = json.loads((tmp_path / "lost" / f"{site.device_id}.json").read_text())["memory"]
    assert rebuilt["peak_import_kw"] == pytest.approx(inside)
