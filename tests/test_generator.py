"""One implementation behind every mode: the same seed gives the same readings whichever
mode produced them."""

import sys

import numpy as np
import pandas as pd
import pytest

from der_core import der_data as dd
from der_core.memory import retain_freed_memory
from der_core.sites import site_configs
from der_physics import base, battery, generator, grid_price
from edge_gateway.gateway import ClockSteps, Gateway, align
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.sim_helpers import config, readings


@pytest.mark.parametrize("chunk", [1, 37, 288])
def test_chunking_never_changes_a_reading(chunk):
    cfgs = [config(seed=1), config(seed=2, device_id="b", battery={"mode": "tou_arbitrage"})]
    start, end = pd.Timestamp("2024-02-01", tz="UTC"), pd.Timestamp("2024-02-02", tz="UTC")
    def run(steps):
        frame = pd.concat(generator.historical(cfgs, start, end, chunk_steps=steps), ignore_index=True)
        return frame.sort_values([dd.DEVICE_ID, dd.TS], ignore_index=True)

    whole, chunked = run(10_000), run(chunk)
    assert len(whole) == 2 * 288
    pd.testing.assert_frame_equal(whole, chunked, check_exact=True)


@pytest.mark.parametrize("end", ["2024-03-10 09:00", "2024-03-10 09:01", "2024-03-10 09:04:59", "2024-03-09 00:00"])
def test_chunks_hold_exactly_the_instants_of_the_range(end):
    """Each chunk makes its own instants, so a span of centuries never builds one index; the
    chunks together are still every instant of the range, across a DST change and an end off
    the grid."""
    start, stop = pd.Timestamp("2024-03-09 23:55", tz="America/Los_Angeles"), pd.Timestamp(end, tz="America/Los_Angeles")
    frames = list(generator.historical([config(seed=3)], start, stop, chunk_steps=7))
    expected = generator.time_range(start, stop, 300)
    assert generator.step_count(start, stop, 300) == len(expected)
    made = pd.DatetimeIndex(pd.concat(frames)[dd.TS]) if frames else pd.DatetimeIndex([], tz="UTC")
    assert made.equals(expected)


@pytest.mark.parametrize("mode", ["self_consumption", "tou_arbitrage"])
def test_live_steps_equal_historical_bit_for_bit(tmp_path, mode):
    cfg = config(seed=42, battery={"mode": mode})
    backfill = readings(cfg, "2024-06-15", "2024-06-16")
    gateway = Gateway([cfg], state_dir=tmp_path / "state")
    live = pd.concat([gateway.step(ts) for ts in backfill[dd.TS]], ignore_index=True)
    pd.testing.assert_frame_equal(backfill, live, check_exact=True)


def test_restarted_gateway_continues_the_same_battery(tmp_path):
    cfg = config(seed=7)
    backfill = readings(cfg, "2024-06-15", "2024-06-15 12:00")
    first_half = backfill[dd.TS].iloc[:72]
    for ts in first_half:
        Gateway([cfg], state_dir=tmp_path).step(ts)  # a fresh process each time, as cron would run --once
    resumed = pd.concat([Gateway([cfg], state_dir=tmp_path).step(ts) for ts in backfill[dd.TS].iloc[72:]], ignore_index=True)
    pd.testing.assert_frame_equal(backfill.iloc[72:].reset_index(drop=True), resumed, check_exact=True)


def test_a_gateway_that_lost_its_state_file_continues_from_its_stored_readings(tmp_path):
    cfg = config(seed=7)
    backfill = readings(cfg, "2024-06-15", "2024-06-15 12:00")
    store = SQLiteEdgeStore(tmp_path / "edge.db")
    for ts in backfill[dd.TS].iloc[:72]:
        Gateway([cfg], sinks=[store.write], state_dir=tmp_path / "state", history=store).step(ts)
    (tmp_path / "state" / f"{cfg.device_id}.json").unlink()
    later = backfill[dd.TS].iloc[72:]
    resumed = pd.concat([Gateway([cfg], state_dir=tmp_path / "state", history=store).step(ts) for ts in later], ignore_index=True)
    expected = backfill.iloc[72:].reset_index(drop=True)
    np.testing.assert_allclose(resumed[dd.BATTERY_POWER], expected[dd.BATTERY_POWER], atol=1e-6)
    np.testing.assert_allclose(resumed[dd.BATTERY_SOC], expected[dd.BATTERY_SOC], atol=1e-3)
    # Without the readings it would start again from the configured battery.
    forgetful = Gateway([cfg], state_dir=tmp_path / "forgetful").step(later.iloc[0])
    assert abs(forgetful[dd.BATTERY_SOC].iloc[0] - expected[dd.BATTERY_SOC].iloc[0]) > 5.0
    store.close()


def test_repeating_an_instant_does_not_step_twice(tmp_path):
    cfg = config(seed=3)
    instants = pd.date_range("2024-06-15 18:00", periods=3, freq="5min", tz="UTC")
    repeated = Gateway([cfg], state_dir=tmp_path / "a")
    repeated.step(instants[0])
    once = repeated.step(instants[1])
    again = repeated.step(instants[1])
    pd.testing.assert_frame_equal(once, again, check_exact=True)
    after_repeat = repeated.step(instants[2])
    clean = Gateway([cfg], state_dir=tmp_path / "b")
    expected = [clean.step(ts) for ts in instants][-1]
    pd.testing.assert_frame_equal(after_repeat, expected, check_exact=True)


def test_sinks_receive_each_reading(tmp_path):
    got = []
    Gateway([config(seed=1)], sinks=[got.append], state_dir=tmp_path).step(pd.Timestamp("2024-01-01", tz="UTC"))
    assert len(got) == 1 and len(got[0]) == 1


@pytest.mark.parametrize("aligned,clock,delivered", [
    (False, ["12:00:00.95", "12:00:00.99", "12:00:01.01"], ["12:00:00", "12:00:01"]),  # a late run caught up in one second
    (True, ["12:00:01", "12:04:59", "12:05:00"], ["12:00:00", "12:05:00"]),  # and in one interval
])
def test_a_scheduler_that_catches_up_delivers_each_instant_once(tmp_path, monkeypatch, aligned, clock, delivered):
    got = []
    steps = ClockSteps(Gateway([config(seed=1)], sinks=[got.append], state_dir=tmp_path), aligned=aligned)
    for now in clock:
        monkeypatch.setattr(dd, "utc_now", lambda now=now: pd.Timestamp(f"2024-06-15 {now}", tz="UTC"))
        steps()
    assert [frame[dd.TS].iloc[0] for frame in got] == [pd.Timestamp(f"2024-06-15 {t}", tz="UTC") for t in delivered]


@pytest.mark.parametrize("when,expected", [("2024-06-15 14:32:10", "2024-06-15 14:30:00"), ("2024-06-15 14:35:00", "2024-06-15 14:35:00")])
def test_align_to_the_clock(when, expected):
    assert align(pd.Timestamp(when, tz="UTC"), 300) == pd.Timestamp(expected, tz="UTC")


def test_sites_are_distinct_reproducible_and_near_the_template():
    template = config(seed=9)
    sites = site_configs(template, 5)
    assert [s.device_id for s in sites] == [f"edge-gateway-001-{k:03d}" for k in range(1, 6)]
    assert len({s.effective_seed for s in sites}) == 5
    assert [s.model_dump() for s in sites] == [s.model_dump() for s in site_configs(template, 5)]
    assert all(abs(s.solar.latitude - template.solar.latitude) <= 0.05 for s in sites)
    assert site_configs(template, 1) == [template]


def test_threaded_fleet_equals_serial(monkeypatch):
    cfgs = site_configs(config(seed=4), 9)
    times = generator.time_range(pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-04", tz="UTC"), 300)
    monkeypatch.setattr(generator, "PARALLEL_MIN_SITES", 2)
    monkeypatch.setattr(battery, "PARALLEL_MIN_SITES", 2)
    monkeypatch.setattr(base, "PARALLEL_MIN_SITE_STEPS", 1)
    threaded = generator.simulate(cfgs, times)[0].frame()
    monkeypatch.setattr(generator, "PARALLEL_MIN_SITES", 10**9)
    monkeypatch.setattr(battery, "PARALLEL_MIN_SITES", 10**9)
    serial = generator.simulate(cfgs, times)[0].frame()
    pd.testing.assert_frame_equal(threaded, serial, check_exact=True)


def test_stepping_on_precomputed_physics_equals_one_run():
    """A controller that steps a site one reading at a time may compute its physics once."""
    site = config(seed=6, battery={"mode": "setpoint"})
    times = generator.time_range(pd.Timestamp("2024-07-01", tz="UTC"), pd.Timestamp("2024-07-02", tz="UTC"), 900)
    commands = np.where(np.arange(len(times)) % 7 < 3, np.nan, np.linspace(-4.0, 4.0, len(times)))[None, :]
    whole, _ = generator.simulate([site], times, setpoint_kw=commands)
    exo = generator.exogenous([site], base.TimeAxis.from_times(times))
    state, steps = None, []
    for j in range(len(times)):
        sim, state = generator.simulate([site], times[j : j + 1], state, commands[:, j : j + 1], exo=exo.steps(slice(j, j + 1)))
        steps.append(sim.battery.power_kw[0, 0])
    np.testing.assert_array_equal(np.array(steps), whole.battery.power_kw[0])


def test_each_site_of_a_mixed_fleet_equals_the_site_alone():
    """Time-only arrays (occupancy, tariff periods, season, grid positions) are shared across
    a fleet's sites: sites in other time zones, countries and hemispheres must not see them."""
    sydney = config(seed=11, device_id="sydney", solar={"latitude": -33.87, "longitude": 151.21}, timezone="Australia/Sydney", country="AU")
    no_ev = config(seed=12, device_id="no-ev", home_load={"has_ev": False}, grid_price={"volatility": 0.4})
    cfgs = [*site_configs(config(seed=4), 3), sydney, no_ev]
    times = generator.time_range(pd.Timestamp("2024-03-30", tz="UTC"), pd.Timestamp("2024-04-02", tz="UTC"), 300)
    fleet = generator.simulate(cfgs, times)[0].frame()
    for site in cfgs:
        alone = generator.simulate([site], times)[0].frame()
        mine = fleet[fleet[dd.DEVICE_ID] == site.device_id].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone, check_exact=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator tuning is glibc's (Linux)")
def test_batch_runs_can_keep_freed_memory_for_reuse():
    assert retain_freed_memory() is True  # glibc accepted both thresholds


def test_recorded_inputs_drive_the_same_battery_step(monkeypatch):
    """A measured site's recorded load and PV run the battery without the simulator's weather:
    in self-consumption the battery stores the recorded surplus and covers the recorded deficit,
    and its TOU modes follow the tariff's periods at the site's local time."""
    def no_weather(*args, **kwargs):
        raise AssertionError("recorded inputs ran the simulator's weather")

    monkeypatch.setattr(generator.weather, "simulate", no_weather)
    site = config(battery={"initial_soc": 50.0})
    times = pd.date_range("2024-06-03 22:15", periods=8, freq="15min", tz="UTC")  # Monday 15:15 to 17:00 in Los Angeles
    load, pv = np.full(8, 1.0), np.array([3.0, 3.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.0])
    exo = generator.recorded_exogenous(site, times, load, pv, np.full(8, 0.3), np.full(8, 0.05), np.full(8, 400.0))
    sim, _ = generator.simulate([site], times, exo=exo)
    assert sim.battery.power_kw[0, :4] == pytest.approx(2.0, abs=1e-9)
    assert sim.battery.power_kw[0, 4:] == pytest.approx(-1.0, abs=1e-9)
    assert (exo.period_index[0, 0], exo.period_index[0, -1]) == (grid_price.SHOULDER, grid_price.PEAK)


def test_the_battery_s_own_tou_rule_follows_a_declared_tariff_s_periods():
    """A British time-of-use tariff (night 02:00-05:00 cheapest, 16:00-19:00 dearest): the rule
    charges in its night and covers the house in its peak, on London's clock, not in the
    simulated sites' hours (off-peak after 23:00, peak until 21:00)."""
    night = {"name": "night", "days": ["weekday", "weekend", "holiday"], "hours": [[2, 5]], "price": 0.17}
    peak = {"name": "peak", "days": ["weekday", "weekend", "holiday"], "hours": [[16, 19]], "price": 0.39}
    tariff = {"currency": "GBP", "import_price": {"kind": "tou", "periods": [night, peak], "otherwise": 0.28},
              "export_price": {"kind": "fixed", "price": 0.15}}
    site = config(timezone="Europe/London", country="GB", tariff=tariff)
    local = pd.DatetimeIndex([f"2024-06-03 {h:02d}:30" for h in (3, 12, 17, 20, 23)], tz="Europe/London")
    times = local.tz_convert("UTC")
    exo = generator.recorded_exogenous(site, times, np.ones(5), np.zeros(5), np.full(5, 0.3), np.full(5, 0.15),
                                       np.full(5, 400.0))
    assert exo.period_index[0].tolist() == [grid_price.OFF_PEAK, grid_price.SHOULDER, grid_price.PEAK,
                                            grid_price.SHOULDER, grid_price.SHOULDER]
    flat = config(timezone="Europe/London", country="GB", tariff={**tariff, "import_price": {
        "kind": "tou", "periods": [{**night, "price": 0.28}], "otherwise": 0.28}})
    assert set(generator.recorded_exogenous(flat, times, np.ones(5), np.zeros(5), np.full(5, 0.3), np.full(5, 0.15),
                                            np.full(5, 400.0)).period_index[0]) == {grid_price.SHOULDER}


def _half_an_hour_stored(tmp_path):
    """A gateway that stored six five-minute readings from 18:00, its store and what it holds."""
    cfg = config(seed=5)
    instants = pd.date_range("2024-06-15 18:00", periods=6, freq="5min", tz="UTC")
    store = SQLiteEdgeStore(tmp_path / "edge.db")
    gateway = Gateway([cfg], sinks=[store.write], state_dir=tmp_path / "state", history=store)
    for ts in instants:
        gateway.step(ts)
    return cfg, instants, store, gateway, store.read_range(cfg.device_id)


def test_a_clock_gone_back_keeps_the_readings_already_stored(tmp_path, caplog):
    """The clock steps back 15 minutes: its instants hold readings already (maybe synced),
    which stay as made; the gateway reads again where the store has nothing, and once the
    clock passes its last reading."""
    cfg, instants, store, gateway, made = _half_an_hour_stored(tmp_path)
    with caplog.at_level("WARNING"):
        again = gateway.step(instants[3])
    assert again.empty and "clock is behind the last reading" in caplog.text
    pd.testing.assert_frame_equal(store.read_range(cfg.device_id), made)
    assert len(gateway.step(instants[3] + pd.Timedelta(minutes=2))) == 1  # an instant not stored is read
    assert len(gateway.step(instants[-1] + pd.Timedelta(minutes=5))) == 1
    pd.testing.assert_frame_equal(store.read_range(cfg.device_id, stop=instants[-1] + pd.Timedelta(seconds=1)).loc[
        lambda f: f[dd.TS].isin(instants)].reset_index(drop=True), made)
    store.close()


def test_a_step_stored_but_not_saved_is_not_stepped_from_again(tmp_path):
    """The process is killed after storing a reading and before saving its state: the next
    step goes on from the stored reading, not from the state an interval older, so the
    battery does not hold its charge across an interval it discharged in."""
    cfg = config(seed=7)
    backfill = readings(cfg, "2024-06-15", "2024-06-15 12:00")
    store = SQLiteEdgeStore(tmp_path / "edge.db")
    for ts in backfill[dd.TS].iloc[:72]:
        Gateway([cfg], sinks=[store.write], state_dir=tmp_path / "state", history=store).step(ts)
    state = tmp_path / "state" / f"{cfg.device_id}.json"
    saved = state.read_bytes()
    Gateway([cfg], sinks=[store.write], state_dir=tmp_path / "state", history=store).step(backfill[dd.TS].iloc[72])
    state.write_bytes(saved)  # as if killed between the store's write and the state's save
    after = Gateway([cfg], sinks=[store.write], state_dir=tmp_path / "state", history=store).step(backfill[dd.TS].iloc[73])
    expected = backfill.iloc[73]
    assert after[dd.BATTERY_SOC].iloc[0] == pytest.approx(expected[dd.BATTERY_SOC], abs=1e-3)
    store.close()


def test_readings_the_store_refuses_are_held_and_written_once_it_takes_them(tmp_path, caplog):
    """A full disk: the running gateway's readings are held in memory, the other sinks still
    get them, and the store takes them all, in order, once it has room again."""
    from der_core.errors import StoreError
    from edge_gateway.gateway import HeldWrites

    cfg = config(seed=9)
    instants = pd.date_range("2024-06-15 18:00", periods=6, freq="5min", tz="UTC")
    store = SQLiteEdgeStore(tmp_path / "edge.db")
    full = {"on": False}

    def write(frame):
        if full["on"]:
            raise StoreError("SQLite store edge.db: write failed (database or disk is full)")
        return store.write(frame)

    held, seen = HeldWrites(write), []
    gateway = Gateway([cfg], sinks=[held, seen.append], state_dir=tmp_path / "state", history=store)
    gateway.step(instants[0])
    full["on"] = True
    with caplog.at_level("WARNING"):
        for ts in instants[1:4]:
            gateway.step(ts)
    assert held.rows == 3 and len(seen) == 4 and "3 readings held in memory" in caplog.text
    full["on"] = False
    for ts in instants[4:]:
        gateway.step(ts)
    assert held.rows == 0
    assert store.read_range(cfg.device_id)[dd.TS].tolist() == list(instants)
    store.close()


def test_held_readings_beyond_the_limit_drop_the_oldest_and_say_so(caplog):
    from der_core.errors import StoreError
    from edge_gateway.gateway import HeldWrites

    def refuse(frame):
        raise StoreError("disk full")

    held = HeldWrites(refuse, most_rows=2)
    with caplog.at_level("WARNING"):
        for k in range(5):
            held(pd.DataFrame({"k": [k]}))
    assert [int(f["k"].iloc[0]) for f in held.held] == [3, 4]
    assert "3 older ones dropped, beyond 2" in caplog.text


def test_a_clock_gone_back_keeps_stored_readings_after_reading_a_gap_too(tmp_path):
    """Gone back, the clock reads an instant the store lacks (18:12), then goes on to ones it
    holds (18:15, 18:20): those stay as made."""
    cfg, instants, store, gateway, made = _half_an_hour_stored(tmp_path)
    assert len(gateway.step(pd.Timestamp("2024-06-15 18:12", tz="UTC"))) == 1
    assert gateway.step(instants[3]).empty and gateway.step(instants[4]).empty
    pd.testing.assert_frame_equal(store.read_range(cfg.device_id).loc[lambda f: f[dd.TS].isin(instants)]
                                  .reset_index(drop=True), made)
    store.close()


def test_a_state_the_disk_refuses_is_stepped_on_from_memory(tmp_path, monkeypatch):
    """The disk is full: the state file cannot be written, yet the running gateway steps on
    from its own last step, so the charge follows the battery's power."""
    from pathlib import Path as _Path

    cfg = config(seed=7)
    backfill = readings(cfg, "2024-06-15", "2024-06-15 12:00")
    gateway = Gateway([cfg], state_dir=tmp_path / "state")
    for ts in backfill[dd.TS].iloc[:70]:
        gateway.step(ts)
    real_write = _Path.write_text

    def full(self, *args, **kwargs):
        if self.suffix == ".tmp":
            raise OSError(28, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(_Path, "write_text", full)
    made = pd.concat([gateway.step(ts) for ts in backfill[dd.TS].iloc[70:76]], ignore_index=True)
    np.testing.assert_allclose(made[dd.BATTERY_SOC], backfill[dd.BATTERY_SOC].iloc[70:76], atol=1e-6)
    monkeypatch.undo()
    gateway.step(backfill[dd.TS].iloc[76])
    assert gateway.states[0].unsaved is None
