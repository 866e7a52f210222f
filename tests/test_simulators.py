"""Physics sanity and the invariants of DESIGN.md on every generated reading."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from der_core import der_data as dd
from der_core.config import SolarConfig
from der_physics import base, battery, generator, grid_price, solar
from tests.sim_helpers import config, readings

CONFIGS = {
    "default": {"seed": 11},
    "no-ev-tou": {"seed": 12, "home_load": {"has_ev": False}, "battery": {"mode": "tou_arbitrage"}},
    "big-pv-small-battery": {"seed": 13, "solar": {"capacity_kw": 14, "inverter_kw": 8}, "battery": {"capacity_kwh": 5, "max_charge_rate_kw": 2.5, "max_discharge_rate_kw": 2.5, "round_trip_efficiency": 0.85}},
    "sydney": {"seed": 14, "timezone": "Australia/Sydney", "country": "AU", "solar": {"latitude": -33.87, "longitude": 151.21, "azimuth_degrees": 0}},
    "cold-wide-window": {"seed": 15, "solar": {"latitude": 60.2, "longitude": 24.9}, "timezone": "Europe/Helsinki", "country": "FI", "battery": {"min_soc": 0, "max_soc": 100, "initial_soc": 100}},
}


def check_invariants(frame: pd.DataFrame, cfg) -> None:
    parts = sum(frame[c] for c in dd.LOAD_COMPONENTS)
    np.testing.assert_allclose(frame[dd.LOAD_TOTAL], parts, atol=1e-9, rtol=0)
    net = frame[dd.LOAD_TOTAL] + frame[dd.BATTERY_POWER] - frame[dd.SOLAR_KW]
    np.testing.assert_allclose(frame[dd.NET_GRID_FLOW], net, atol=1e-9, rtol=0)
    b = cfg.battery
    # limits hold to the published resolution (values are rounded to 0.1 W and 1e-4 %)
    soc_tol, kw_tol = 0.5 * 10**-generator.SOC_DECIMALS + 1e-9, 0.5 * 10**-generator.KW_DECIMALS + 1e-9
    soc = frame[dd.BATTERY_SOC]
    assert soc.min() >= b.min_soc - soc_tol and soc.max() <= b.max_soc + soc_tol
    power = frame[dd.BATTERY_POWER]
    assert power.max() <= b.max_charge_rate_kw + kw_tol and power.min() >= -b.max_discharge_rate_kw - kw_tol
    # Energy in and out respects the efficiencies: each step's change in stored energy
    # equals power x one-way efficiency (charging) or power / efficiency (discharging).
    usable = b.capacity_kwh * frame[dd.BATTERY_HEALTH] / 100.0
    energy = soc / 100.0 * usable
    dt_h = cfg.interval_seconds / 3600.0
    eta = np.sqrt(b.round_trip_efficiency)
    stored = np.where(power > 0, power * eta, power / eta) * dt_h
    # the first step starts from the configured SOC
    before = np.concatenate([[b.initial_soc / 100.0 * b.capacity_kwh], energy.to_numpy()[:-1]])
    np.testing.assert_allclose(energy.to_numpy() - before, stored, atol=2e-3 + 1e-3 * b.capacity_kwh / 13.5)
    assert (frame[dd.SOLAR_KW] >= 0).all() and (frame[dd.LOAD_TOTAL] > 0).all()
    assert set(frame[dd.TOU_PERIOD]) <= set(dd.TOU_PERIODS)


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_invariants_hold_on_a_year(name):
    cfg = config(**CONFIGS[name])
    frame = readings(cfg, "2024-01-01", "2025-01-01")
    assert len(frame) == 366 * 288
    check_invariants(frame, cfg)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    capacity=st.floats(0.5, 40),
    rate=st.floats(0.2, 12),
    window=st.tuples(st.floats(0, 50), st.floats(50, 100)),
    efficiency=st.floats(0.6, 1.0),
    mode=st.sampled_from(["self_consumption", "tou_arbitrage"]),
    pv=st.floats(0, 20),
)
def test_invariants_hold_for_any_valid_battery(seed, capacity, rate, window, efficiency, mode, pv):
    cfg = config(
        seed=seed,
        interval_seconds=900,
        solar={"capacity_kw": pv},
        battery={"capacity_kwh": capacity, "max_charge_rate_kw": rate, "max_discharge_rate_kw": rate,
                 "min_soc": window[0], "max_soc": window[1], "initial_soc": window[0], "round_trip_efficiency": efficiency,
                 "mode": mode},
    )
    check_invariants(readings(cfg, "2024-03-01", "2024-03-08"), cfg)


def test_round_trip_efficiency_over_a_month():
    cfg = config(seed=21)
    frame = readings(cfg, "2024-07-01", "2024-08-01")
    dt_h = cfg.interval_seconds / 3600
    charged = frame[dd.BATTERY_POWER].clip(lower=0).sum() * dt_h
    discharged = -frame[dd.BATTERY_POWER].clip(upper=0).sum() * dt_h
    start_kwh = cfg.battery.initial_soc / 100 * cfg.battery.capacity_kwh
    end_kwh = frame[dd.BATTERY_SOC].iloc[-1] / 100 * cfg.battery.capacity_kwh * frame[dd.BATTERY_HEALTH].iloc[-1] / 100
    assert charged > 100  # the battery actually cycled
    # AC out = AC in x round-trip efficiency + what the store gave up, through the discharge
    # efficiency (capacity fade over a month accounts for the few Wh of tolerance)
    eta = np.sqrt(cfg.battery.round_trip_efficiency)
    assert discharged == pytest.approx(charged * cfg.battery.round_trip_efficiency + eta * (start_kwh - end_kwh), abs=0.05)


def test_same_seed_same_readings_bit_for_bit():
    a = readings(config(seed=5), "2024-06-01", "2024-06-03")
    b = readings(config(seed=5), "2024-06-01", "2024-06-03")
    c = readings(config(seed=6), "2024-06-01", "2024-06-03")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert not a[dd.SOLAR_KW].equals(c[dd.SOLAR_KW])


@pytest.mark.slow
def test_annual_pv_yield_at_san_francisco_is_realistic():
    cfg = config(seed=3, home_load={"has_ev": False})
    times = generator.time_range(pd.Timestamp("2023-01-01", tz="UTC"), pd.Timestamp("2024-01-01", tz="UTC"), 300)
    for seed in (3, 4):
        sim, _ = generator.simulate([config(seed=seed)], times)
        kwh_per_kwp = sim.exo.solar_kw.sum() * 300 / 3600 / cfg.solar.capacity_kw
        assert 1300 <= kwh_per_kwp <= 1700, kwh_per_kwp


def test_no_generation_at_night():
    cfg = config(seed=8)
    frame = readings(cfg, "2024-01-01", "2024-01-15")
    sun = solar.sun_position(generator.base.TimeAxis.from_times(frame[dd.TS]), cfg.solar.latitude, cfg.solar.longitude)
    night = sun.zenith_deg > 90
    assert night.sum() > 1000
    assert (frame.loc[night, dd.SOLAR_KW] == 0).all() and (frame.loc[night, dd.SOLAR_IRRADIANCE] == 0).all()


@pytest.mark.parametrize("capacity", [4.0, 10.0])
def test_summer_noon_clear_sky_is_near_capacity_less_temperature_losses(capacity):
    cfg = SolarConfig(capacity_kw=capacity, inverter_kw=capacity * 1.2)  # inverter large: no clipping here
    noon = pd.DatetimeIndex([pd.Timestamp("2024-06-21 13:10", tz="America/Los_Angeles")])  # solar noon, PDT
    ac = solar.clearsky_ac_kw(cfg, noon, temp_air_celsius=25.0)[0]
    hot_cells_loss = 1 + cfg.temp_coefficient * (45 - 25)  # cells run ~20 K above air at noon
    assert 0.75 * capacity * hot_cells_loss < ac < capacity * (1 - cfg.system_losses)


@pytest.mark.parametrize("tz", ["UTC", "Australia/Sydney", None])
@pytest.mark.parametrize("latitude, longitude", [(52.5, 13.4), (-33.9, 151.2), (64.1, -21.9)])
def test_shared_astronomy_gives_a_fresh_clear_sky_bit_for_bit(tz, latitude, longitude):
    """The clear sky's astronomy is computed once per grid and reused for every site; the
    result must stay what the solar chain gives with its own astronomy, whatever the site and
    however the instants are given."""
    index = pd.date_range("2024-03-30", periods=3 * 96, freq="15min", tz=tz)
    cfg = SolarConfig(latitude=latitude, longitude=longitude)
    for times in (index, index, index[96:]):  # computed, cached, another grid
        axis = base.TimeAxis.from_times(times)
        fresh = solar.simulate(cfg, axis, np.ones(len(axis)), np.full(len(axis), 20.0), np.ones(len(axis)),
                               linke_turbidity=solar.climatological_linke_turbidity(axis.times, latitude, longitude))
        np.testing.assert_array_equal(solar.clearsky_ac_kw(cfg, times), fresh.generation_kw)


@pytest.mark.parametrize("tz", ["UTC", "America/Denver", "Asia/Tokyo", None])
def test_the_turbidity_looked_up_once_per_place_is_pvlibs_own(tz):
    """Read from a table of every day of a leap and a common year, as pvlib's lookup gives
    each instant's UTC day: the same numbers over years of both kinds, at every hour."""
    import warnings

    from pvlib import clearsky

    times = pd.date_range("2015-12-30", "2017-01-02", freq="37min", tz=tz)
    for latitude, longitude in ((39.74, -105.18), (51.45, -0.1), (-33.9, 151.2)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pvlib reads a property pandas deprecates
            expected = np.asarray(clearsky.lookup_linke_turbidity(times, latitude, longitude), dtype=float)
        np.testing.assert_array_equal(solar.climatological_linke_turbidity(times, latitude, longitude), expected)


def test_inverter_clips_at_its_rating():
    cfg = config(seed=9, solar={"capacity_kw": 12.0, "inverter_kw": 6.0})
    frame = readings(cfg, "2024-06-01", "2024-06-15")
    assert frame[dd.SOLAR_KW].max() == pytest.approx(6.0)
    assert (frame[dd.SOLAR_KW] >= 6.0 - 1e-9).sum() > 20  # clear middays sit on the limit


def test_house_without_ev_never_charges_one():
    frame = readings(config(seed=10, home_load={"has_ev": False}), "2024-01-01", "2024-03-01")
    assert (frame[dd.LOAD_EV] == 0).all()


def test_ev_charges_at_its_rate_in_sessions():
    frame = readings(config(seed=10, home_load={"ev_charging_kw": 11.0}), "2024-01-01", "2024-02-01")
    ev = frame[dd.LOAD_EV]
    assert set(ev.unique()) == {0.0, 11.0}
    local_hours = frame.loc[ev > 0, dd.TS].dt.tz_convert("America/Los_Angeles").dt.hour
    assert (local_hours.isin(range(10, 24)) | local_hours.isin(range(0, 9))).all()


@pytest.mark.parametrize(
    "local,expected",
    [
        ("2024-06-12 17:30", "peak"),  # Wednesday evening
        ("2024-06-12 12:00", "shoulder"),
        ("2024-06-12 02:00", "off_peak"),
        ("2024-06-15 17:30", "shoulder"),  # Saturday evening
        ("2024-06-15 12:00", "off_peak"),
        ("2024-07-04 17:30", "shoulder"),  # Independence Day, a Thursday
    ],
)
def test_time_of_use_periods_follow_local_weekdays_and_holidays(local, expected):
    frame = readings(config(seed=1), "2024-06-10", "2024-07-06")
    at = pd.Timestamp(local, tz="America/Los_Angeles").tz_convert("UTC")
    assert frame.loc[frame[dd.TS] == at, dd.TOU_PERIOD].item() == expected


def test_price_tracks_tou_with_bounded_noise():
    cfg = config(seed=2)
    frame = readings(cfg, "2024-01-01", "2024-04-01")
    medians = frame.groupby(dd.TOU_PERIOD)[dd.PRICE].median()
    assert medians["off_peak"] < medians["shoulder"] < medians["peak"]
    assert medians["peak"] == pytest.approx(cfg.grid_price.peak_price, rel=0.1)
    assert (frame[dd.FEED_IN] <= frame[dd.PRICE]).all()


def test_setpoint_mode_follows_commands_within_limits():
    cfg = config(seed=4, battery={"mode": "setpoint", "initial_soc": 10})
    times = generator.time_range(pd.Timestamp("2024-05-01", tz="UTC"), pd.Timestamp("2024-05-01 06:00", tz="UTC"), 300)
    command = np.full((1, len(times)), np.nan)
    command[0, :12] = 2.0  # charge 2 kW for an hour
    command[0, 12:24] = 50.0  # far beyond the 5 kW limit
    command[0, 24:] = -50.0  # discharge as hard as possible
    sim, _ = generator.simulate([cfg], times, setpoint_kw=command)
    power = sim.battery.power_kw[0]
    assert np.allclose(power[:12], 2.0)
    assert np.allclose(power[12:24], 5.0)
    assert power[24:].min() >= -5.0 - 1e-12 and power[24] == pytest.approx(-5.0)
    assert sim.battery.soc_percent[0].min() >= cfg.battery.min_soc - 1e-9


def test_cold_battery_does_not_charge():
    params = battery.BatteryParams.from_configs([config().battery])
    state = battery.BatteryState.initial([config().battery], temperature_celsius=-5.0)
    power, _ = battery.step(params, state, np.array([5.0]), 0.25, np.array([-5.0]))
    assert power[0] == 0.0


def test_holidays_are_local_dates():
    days = np.array([np.datetime64("2024-12-25", "D").astype(np.int64), np.datetime64("2024-12-24", "D").astype(np.int64)])
    assert grid_price.is_holiday(days, "US").tolist() == [True, False]


def test_import_cap_makes_the_battery_shave_peaks():
    cfg = config(seed=4, battery={"mode": "setpoint", "initial_soc": 80})
    times = generator.time_range(pd.Timestamp("2024-05-01 01:00", tz="UTC"), pd.Timestamp("2024-05-02 01:00", tz="UTC"), 300)
    idle = np.zeros((1, len(times)))
    free, _ = generator.simulate([cfg], times, setpoint_kw=idle)
    cap = np.full((1, len(times)), 1.0)
    capped, _ = generator.simulate([cfg], times, setpoint_kw=idle, import_cap_kw=cap)
    net = capped.exo.load_kw[0] - capped.exo.solar_kw[0]
    power = capped.battery.power_kw[0]
    assert np.all(free.battery.power_kw[0] == 0)  # the command alone: idle
    over = net > 1.0
    assert over.any()
    # wherever the house would import above the cap, the battery discharges to hold it
    # (while it has energy and rate), and never charges against the cap
    holds = (net + power <= 1.0 + 1e-9) | (power <= -cfg.battery.max_discharge_rate_kw + 1e-9) | (capped.battery.soc_percent[0] <= cfg.battery.min_soc + 1e-4)
    assert holds[over].all()
    assert np.all(power[~over] == 0)


def test_hour_angle_equals_pvlib_bit_for_bit():
    from pvlib import solarposition

    rng = np.random.default_rng(3)
    seconds = np.sort(rng.integers(0, 60 * 365 * 86_400, 5_000)) + rng.integers(0, 10**6, 5_000) / 10**6  # 1970-2030
    axis = base.TimeAxis.from_times(pd.to_datetime(seconds * 10**6, unit="us", utc=True))
    eot = solarposition.equation_of_time_spencer71(axis.day_of_year)
    expected = np.asarray(solarposition.hour_angle(axis.times, 0.0, eot), dtype=float)
    assert np.array_equal(solar.greenwich_hour_angle_deg(axis.times, eot), expected)


def test_a_battery_state_comes_back_from_its_reading():
    """What a gateway that lost its state file continues from: energy and usable capacity as
    read, throughput and age to within what one whole cycle leaves unknown."""
    cfg = config(battery={"initial_cycles": 400, "calendar_fade_percent_per_year": 2.0}).battery
    params = battery.BatteryParams.from_configs([cfg])
    steps, dt_h = 2000, 0.25
    request = 5.0 * np.sin(np.arange(2 * steps) * 2 * np.pi / 96)[None, :]
    env = np.full((1, 2 * steps), 15.0)
    whole, _ = battery.run(params, battery.BatteryState.initial([cfg]), request, np.full(2 * steps, dt_h), env)
    first, state = battery.run(params, battery.BatteryState.initial([cfg]), request[:, :steps], np.full(steps, dt_h), env[:, :steps])
    read = battery.state_from_reading(cfg, first.soc_percent[0, -1], first.cycles[0, -1], first.health_percent[0, -1],
                                      first.temperature_celsius[0, -1])
    assert read["energy_kwh"] == pytest.approx(state.energy_kwh[0], rel=1e-12)
    assert read["temperature_celsius"] == state.temperature_celsius[0]
    assert abs(read["throughput_kwh"] - state.throughput_kwh[0]) <= cfg.capacity_kwh  # half a cycle each way
    assert read["age_h"] == pytest.approx(steps * dt_h, abs=10.0)  # half a cycle's fade is ~9 h of calendar fade
    resumed, _ = battery.run(params, battery.BatteryState.from_sites([read]), request[:, steps:], np.full(steps, dt_h), env[:, steps:])
    np.testing.assert_allclose(resumed.power_kw[0], whole.power_kw[0, steps:], atol=1e-9)
    np.testing.assert_allclose(resumed.soc_percent[0], whole.soc_percent[0, steps:], atol=1e-3)
    assert battery.state_from_reading(config(battery={"capacity_kwh": 0}).battery, 0.0, 0, 100.0, 20.0)["energy_kwh"] == 0.0
