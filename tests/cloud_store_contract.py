"""The CloudStore contract, run against every adapter: each ``test_cloud_store_*.py`` module
subclasses :class:`CloudStoreContract` and provides a ``store`` fixture on an empty store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cloud.store import common
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.errors import StoreError, UsageError
from tests.sync_fixtures import assert_same_readings, readings, site

T0 = pd.Timestamp("2024-06-01T00:00:00Z")


class CloudStoreContract:
    def test_is_a_cloud_store(self, store):
        assert isinstance(store, CloudStore)

    def test_upsert_twice_stores_each_reading_once_field_by_field(self, store):
        frame = readings(devices=3, steps=40)
        assert store.upsert_readings(frame) == len(frame)
        store.upsert_readings(frame)
        assert store.count_readings() == len(frame)
        assert_same_readings(store.read_readings(), frame)

    def test_conflict_updates_the_existing_row(self, store):
        frame = readings(devices=1, steps=5)
        store.upsert_readings(frame)
        changed = frame.copy()
        changed[dd.BATTERY_SOC] = 42.5
        changed[dd.TOU_PERIOD] = "peak"
        store.upsert_readings(changed.iloc[[1, 3]])
        back = store.read_readings()
        assert back[dd.BATTERY_SOC].tolist() == [frame[dd.BATTERY_SOC][0], 42.5, frame[dd.BATTERY_SOC][2], 42.5,
                                                 frame[dd.BATTERY_SOC][4]]
        assert back[dd.TOU_PERIOD][1] == "peak"

    def test_an_upsert_of_some_fields_keeps_the_others(self, store):
        frame = readings(devices=1, steps=4)
        store.upsert_readings(frame)
        later = frame.iloc[1:].copy()  # one reading already stored is left alone, one is new
        later[dd.SOLAR_KW] = 9.5
        later[[dd.LOAD_TOTAL, dd.BATTERY_SOC]] = np.nan
        later[dd.TOU_PERIOD] = None
        later.loc[len(frame)] = later.iloc[-1]
        later.loc[len(frame), dd.TS] = frame[dd.TS].iloc[-1] + pd.Timedelta(minutes=15)
        store.upsert_readings(later, fields=[dd.SOLAR_KW])
        back = store.read_readings()
        assert back[dd.SOLAR_KW].tolist() == [frame[dd.SOLAR_KW][0], 9.5, 9.5, 9.5, 9.5]
        assert back[dd.LOAD_TOTAL].tolist()[:4] == frame[dd.LOAD_TOTAL].tolist() and np.isnan(back[dd.LOAD_TOTAL][4])
        assert back[dd.TOU_PERIOD].tolist()[:4] == frame[dd.TOU_PERIOD].tolist()

    def test_duplicate_keys_in_one_frame_keep_the_last(self, store):
        frame = readings(devices=1, steps=3)
        twice = pd.concat([frame, frame.assign(**{dd.PRICE: 0.99})], ignore_index=True)
        store.upsert_readings(twice)
        assert store.read_readings()[dd.PRICE].tolist() == [0.99] * 3

    def test_missing_values_round_trip_as_missing(self, store):
        frame = readings(devices=1, steps=4)
        frame.loc[1, dd.SOLAR_KW] = np.nan
        frame.loc[2, dd.BATTERY_CYCLES] = pd.NA
        frame.loc[3, dd.TOU_PERIOD] = np.nan
        store.upsert_readings(frame)
        back = store.read_readings()
        assert np.isnan(back[dd.SOLAR_KW][1]) and back[dd.BATTERY_CYCLES].isna()[2] and back[dd.TOU_PERIOD].isna()[3]
        assert_same_readings(back, frame)

    @pytest.mark.parametrize("device, start, stop, limit, expected", [
        ("dev-001", None, None, None, 24),
        ("dev-001", T0 + pd.Timedelta(hours=1), None, None, 12),
        (None, T0 + pd.Timedelta(hours=1), T0 + pd.Timedelta(hours=1, minutes=10), None, 6),
        (None, None, None, 30, 30),
    ])
    def test_read_range(self, store, device, start, stop, limit, expected):
        frame = readings(devices=3, steps=24)
        store.upsert_readings(frame)
        back = store.read_readings(device, start, stop, limit)
        assert len(back) == expected
        assert back[[dd.DEVICE_ID, dd.TS]].equals(back.sort_values([dd.DEVICE_ID, dd.TS])[[dd.DEVICE_ID, dd.TS]])
        if start is not None:
            assert back[dd.TS].min() >= start
        if stop is not None:
            assert back[dd.TS].max() < stop
        assert store.count_readings(device, start, stop) == (expected if limit is None else len(frame))

    @pytest.mark.parametrize("device", ["dev-001", None])
    def test_column_limited_read_is_the_full_read_of_those_columns(self, store, device):
        frame = readings(devices=2, steps=6)
        frame.loc[2, dd.PRICE] = np.nan
        frame.loc[7, dd.BATTERY_CYCLES] = pd.NA
        frame.loc[8, dd.TOU_PERIOD] = np.nan
        store.upsert_readings(frame)
        wanted = [dd.TOU_PERIOD, dd.PRICE, dd.BATTERY_CYCLES]
        part = store.read_readings(device, columns=wanted)
        assert list(part.columns) == [dd.DEVICE_ID, dd.TS, dd.BATTERY_CYCLES, dd.PRICE, dd.TOU_PERIOD]
        full = store.read_readings(device)
        pd.testing.assert_frame_equal(part, full[list(part.columns)], check_exact=True)

    def test_column_limited_read_names_unknown_columns(self, store):
        with pytest.raises(KeyError, match="price_kw"):
            store.read_readings(columns=["price_kw"])

    def test_reading_stats_per_device(self, store):
        frame = readings(devices=2, steps=10)
        store.upsert_readings(frame)
        stats = store.reading_stats()
        assert sorted(stats) == ["dev-000", "dev-001"]
        assert stats["dev-001"][s.ROW_COUNT] == 10
        assert stats["dev-001"][s.FIRST_TS] == T0
        assert stats["dev-001"][s.LAST_TS] == T0 + pd.Timedelta(minutes=45)

    def test_sites_upsert_and_update(self, store):
        store.upsert_sites([site("a"), site("b")])
        store.upsert_sites([{**site("a"), "pv_capacity_kw": 11.0, "has_ev": False}])
        sites = {x["device_id"]: x for x in store.sites()}
        assert sorted(sites) == ["a", "b"] and set(sites["a"]) == set(dd.SITE_FIELDS)
        assert sites["a"]["pv_capacity_kw"] == 11.0 and sites["a"]["has_ev"] is False and sites["b"]["has_ev"] is True
        assert sites["b"]["altitude_m"] is None

    def test_watermarks_per_source_and_device(self, store):
        store.set_watermark("edge:sqlite", "a", T0, 10)
        store.set_watermark("edge:sqlite", "a", T0 + pd.Timedelta(hours=1), 5)
        store.set_watermark("edge:influxdb:b", "a", T0, 1)
        assert store.watermarks("edge:sqlite") == {"a": T0 + pd.Timedelta(hours=1)}
        assert store.watermarks("edge:influxdb:b") == {"a": T0}
        assert store.watermarks("other") == {}
        total = store.read_frame(s.WATERMARKS, {s.SOURCE: "edge:sqlite"})[s.ROWS_SYNCED].tolist()
        assert total == [15]

    def test_quarantine_keeps_rows_and_reasons_idempotently(self, store):
        frame = readings(devices=1, steps=2)
        store.quarantine(frame, pd.Series(["soc outside", "price missing"]), "edge:sqlite")
        store.quarantine(frame, pd.Series(["soc outside", "price missing"]), "edge:sqlite")
        back = store.read_quarantine("dev-000")
        assert back[s.REASON].tolist() == ["soc outside", "price missing"]
        assert back[s.PAYLOAD][0][dd.BATTERY_SOC] == pytest.approx(frame[dd.BATTERY_SOC][0])
        assert store.read_quarantine("nobody").empty

    def test_release_takes_out_the_source_s_refusals_at_the_times_given(self, store):
        frame = readings(devices=2, steps=3)
        reasons = pd.Series(["bad"] * len(frame))
        store.quarantine(frame, reasons, "import:a.csv")
        store.quarantine(frame, reasons, "import:b.csv")
        times = sorted(frame[dd.TS].unique())
        assert store.release_quarantine("import:a.csv", "dev-000", [times[0], times[2], times[2] + pd.Timedelta("1h")]) == 2
        assert store.release_quarantine("import:a.csv", "dev-000", []) == 0
        left = store.read_quarantine()
        kept = sorted(zip(left[s.SOURCE], left[dd.DEVICE_ID], pd.to_datetime(left[dd.TS], utc=True)))
        assert kept == sorted([("import:a.csv", "dev-000", times[1])]
                              + [(src, "dev-001", t) for src in ("import:a.csv", "import:b.csv") for t in times]
                              + [("import:b.csv", "dev-000", t) for t in times])

    def test_pipeline_runs_newest_first(self, store):
        first = store.start_run("cloud_sync", {"source": "edge:sqlite"})
        store.finish_run(first, "failed", 3, "cloud unreachable")
        second = store.start_run("cloud_sync")
        other = store.start_run("features")
        store.finish_run(second, "ok", 120)
        runs = store.runs("cloud_sync")
        assert [r[s.RUN_ID] for r in runs] == [second, first]
        assert runs[1][s.ERROR] == "cloud unreachable" and runs[1][s.DETAILS]["source"] == "edge:sqlite"
        assert runs[1][s.DETAILS]["pid"] == os.getpid() and runs[1][s.DETAILS]["host"] == socket.gethostname()
        last = store.last_run("cloud_sync")
        assert last[s.STATUS] == "ok" and last[s.ROWS] == 120 and last[s.FINISHED_AT] >= last[s.STARTED_AT]
        assert store.last_run("features")[s.STATUS] == "running" and store.last_run("nothing") is None
        assert {r[s.RUN_ID] for r in store.runs()} == {first, second, other}

    def test_a_run_error_holding_nul_is_recorded(self, store):
        # An exception's text can quote a damaged file's bytes; PostgreSQL refuses NUL in text,
        # and the run would then stay 'running' with its failure unrecorded.
        run = store.start_run("cloud_sync")
        store.finish_run(run, "failed", 0, "row 3: 'a\x00b' is not a number")
        last = store.last_run("cloud_sync")
        assert last[s.STATUS] == "failed" and last[s.ERROR] == "row 3: 'a\\x00b' is not a number"

    def test_a_run_whose_process_died_reads_as_interrupted(self, store, monkeypatch):
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()  # its pid now names no process
        monkeypatch.setattr(common, "this_process", lambda: (socket.gethostname(), child.pid))
        killed = store.start_run("features")
        monkeypatch.setattr(common, "this_process", lambda: ("elsewhere", child.pid))
        remote = store.start_run("features")  # another host's process cannot be checked from here
        monkeypatch.undo()
        alive = store.start_run("features")
        done = store.start_run("features")
        store.finish_run(done, "ok", 1)
        statuses = {run[s.RUN_ID]: run[s.STATUS] for run in store.runs("features")}
        assert statuses == {killed: common.INTERRUPTED, remote: "running", alive: "running", done: "ok"}

    def test_generic_tables_upsert_and_filter(self, store):
        issued = T0 - pd.Timedelta(hours=1)
        forecasts = pd.DataFrame({
            dd.DEVICE_ID: "a", dd.TS: T0 + pd.to_timedelta(np.arange(6) * 900, unit="s"),
            s.TARGET: ["solar"] * 3 + ["load"] * 3, s.MODEL: "lgbm", s.ISSUED_AT: issued,
            s.VALUE: np.linspace(0, 1, 6), s.LOWER: np.nan, s.UPPER: 2.0,
        })
        store.upsert_frame(s.FORECASTS, forecasts)
        store.upsert_frame(s.FORECASTS, forecasts.assign(**{s.VALUE: 5.0}).iloc[:1])
        solar = store.read_frame(s.FORECASTS, {s.TARGET: "solar"})
        assert len(solar) == 3 and solar[s.VALUE].iloc[0] == 5.0 and solar[s.LOWER].isna().all()
        window = store.read_frame(s.FORECASTS, {dd.DEVICE_ID: "a"}, start=T0 + pd.Timedelta(minutes=30), limit=2)
        assert window[dd.TS].min() >= T0 + pd.Timedelta(minutes=30) and len(window) == 2
        plans = pd.DataFrame({dd.DEVICE_ID: "a", dd.TS: [T0], s.ISSUED_AT: [issued], dd.BATTERY_POWER: [-2.5],
                              s.OBJECTIVE: ["cost"]})
        store.upsert_frame(s.PLANS, plans)
        back = store.read_frame(s.PLANS, {s.ISSUED_AT: issued})
        assert back[dd.BATTERY_POWER].tolist() == [-2.5] and back[dd.BATTERY_SOC].isna().all()

    def test_times_round_trip_to_the_microsecond_either_side_of_every_epoch(self, store):
        """Times before 1970 and 2000 (the Unix and PostgreSQL epochs), with microseconds, and a
        missing optional time come back as they went in, in the contract's dtype."""
        stamps = pd.DatetimeIndex(["1969-07-20T20:17:40.000001Z", "1999-12-31T23:59:59.999999Z",
                                   "2024-06-01T00:00:00.123456Z"]).as_unit("us")
        events = pd.DataFrame({s.SOURCE: "x", s.EVENT_ID: ["e1", "e2", "e3"], s.MODIFICATION: 0, s.RECEIVED_AT: stamps,
                               s.START_TS: stamps + pd.Timedelta(hours=1), s.END_TS: [stamps[0], pd.NaT, stamps[2]],
                               s.SIGNAL: "shed", s.VALUE: [1.0, np.nan, 3.0], s.STATUS: "done"})
        store.upsert_frame(s.DR_EVENTS, events)
        back = store.read_frame(s.DR_EVENTS, {s.SOURCE: "x"})
        assert str(back[s.RECEIVED_AT].dtype) == "datetime64[us, UTC]" and list(back[s.RECEIVED_AT]) == list(stamps)
        assert list(back[s.START_TS]) == list(stamps + pd.Timedelta(hours=1))
        assert back[s.END_TS].isna().tolist() == [False, True, False] and back[s.END_TS][2] == stamps[2]
        assert back[s.VALUE].isna().tolist() == [False, True, False]
        frame = readings(1, 3, start=stamps[1], prefix="micro")
        store.upsert_readings(frame)
        assert list(store.read_readings(frame[dd.DEVICE_ID].iloc[0])[dd.TS]) == list(frame[dd.TS])

    def test_newest_is_the_latest_time_of_the_rows_a_read_returns(self, store):
        assert store.newest(s.PLANS, s.ISSUED_AT, {dd.DEVICE_ID: "a"}) is None  # nothing stored
        issues = [T0 - pd.Timedelta(hours=h) for h in (3, 2, 1)]
        for k, issued in enumerate(issues):  # each issue plans the two hours after it
            store.upsert_frame(s.PLANS, pd.DataFrame({dd.DEVICE_ID: "a" if k < 2 else "b", s.ISSUED_AT: issued,
                                                      dd.TS: issued + pd.to_timedelta([1, 2], unit="h")}))
        assert store.newest(s.PLANS, s.ISSUED_AT, {dd.DEVICE_ID: "a"}) == issues[1]
        assert store.newest(s.PLANS, s.ISSUED_AT) == issues[2]
        assert store.newest(s.PLANS, dd.TS, {dd.DEVICE_ID: "a"}) == issues[1] + pd.Timedelta(hours=2)
        assert store.newest(s.PLANS, s.ISSUED_AT, {dd.DEVICE_ID: "a"}, start=T0 + pd.Timedelta(hours=1)) is None
        plan = store.read_frame(s.PLANS, {dd.DEVICE_ID: "a", s.ISSUED_AT: issues[1]})
        assert len(plan) == 2 and (plan[s.ISSUED_AT] == issues[1]).all()
        events = pd.DataFrame({s.SOURCE: "x", s.EVENT_ID: ["e1", "e2"], s.RECEIVED_AT: T0, s.START_TS: T0,
                               s.END_TS: [T0, pd.NaT], s.STATUS: "done"})
        store.upsert_frame(s.DR_EVENTS, events)
        assert store.newest(s.DR_EVENTS, s.END_TS) == T0  # a missing time is no time
        with pytest.raises(KeyError):
            store.newest(s.PLANS, "issued_at; DROP TABLE plans")

    def test_a_devices_rows_are_counted_and_removed_and_no_other_devices(self, store):
        from cloud.sync.forget import forget_device

        frame = readings(devices=2, steps=30)  # dev-000 and dev-001
        store.upsert_readings(frame)
        store.upsert_sites([site("dev-000"), site("dev-001")])
        store.upsert_frame(s.PLANS, pd.DataFrame({dd.DEVICE_ID: ["dev-000", "dev-001"], s.ISSUED_AT: T0, dd.TS: T0}))
        store.set_watermark("edge:sqlite", "dev-000", T0, 30)
        assert store.count_rows(s.READINGS, {dd.DEVICE_ID: "dev-000"}) == 30
        assert store.count_rows(s.PLANS) == 2
        with pytest.raises(ValueError, match="expected a filter"):
            store.delete_rows(s.READINGS, {})  # never the whole table
        listed = forget_device(store, "dev-000", remove=False)
        assert listed.rows[s.READINGS] == 30 and listed.rows[s.SITES] == 1 and store.count_readings("dev-000") == 30
        gone = forget_device(store, "dev-000", remove=True)
        assert gone.rows == {s.PLANS: 1, s.READINGS: 30, s.SITES: 1}
        assert store.count_readings("dev-000") == 0 and [x[dd.DEVICE_ID] for x in store.sites()] == ["dev-001"]
        assert store.count_readings("dev-001") == 30 and store.count_rows(s.PLANS) == 1
        assert set(store.reading_stats()) == {"dev-001"}
        assert store.watermarks("edge:sqlite") == {"dev-000": T0}  # a gateway still syncing sends only newer readings
        assert store.last_run("forget")["status"] == "ok" and store.last_run("forget")["rows"] == 32
        with pytest.raises(UsageError, match="--forget dev-000: nothing of it is stored in .*; expected one of dev-001"):
            forget_device(store, "dev-000", remove=True)

    def test_a_dr_window_reads_back_as_the_schedule_sent_and_a_withdrawn_one_as_none(self, store):
        """Each decider sends a site the windows it reads here, so they must read back whole on
        every adapter (JSON text in SQLite, jsonb on a server)."""
        from cloud.dr import records as r
        from der_core.setpoints import SetpointSchedule

        steps = [T0, T0 + pd.Timedelta(minutes=15), T0 + pd.Timedelta(minutes=30)]
        window = SetpointSchedule.from_commands(steps, np.array([-2.5, -1.25, np.nan]), np.array([0.75, 0.0, np.nan]),
                                                event=np.array([True, True, False]))
        r.save_windows(store, "x", "e1", {"dev-000": window, "dev-001": window}, T0)
        r.save_windows(store, "x", "e1", {"dev-001": None}, T0)  # a modification no longer plans it
        back = r.windows(store, "x", "e1")
        assert list(back) == ["dev-000"] and back["dev-000"].to_dict() == window.to_dict()

    def test_weather_forecasts_and_prices_keep_each_issue(self, store):
        targets = T0 + pd.to_timedelta(np.arange(4) * 3600, unit="s")
        for hours_before, ghi in ((6, 100.0), (1, 300.0)):
            store.upsert_frame(s.WEATHER_FORECASTS, pd.DataFrame({
                dd.DEVICE_ID: "a", s.SOURCE: "open-meteo", s.ISSUED_AT: T0 - pd.Timedelta(hours=hours_before),
                dd.TS: targets, s.GHI: ghi, s.TEMP_AIR: 21.5}))
        weather = store.read_frame(s.WEATHER_FORECASTS, {dd.DEVICE_ID: "a"})
        assert len(weather) == 8 and weather[s.DNI].isna().all() and weather[s.FETCHED_AT].notna().all()
        assert weather.groupby(s.ISSUED_AT)[s.GHI].first().tolist() == [100.0, 300.0]
        prices = pd.DataFrame({s.SOURCE: "awattar", s.AREA: "AT", dd.TS: targets[:2], s.END_TS: targets[1:3],
                               s.PUBLISHED_AT: T0 - pd.Timedelta(hours=11), s.KIND: "day-ahead",
                               s.PRICE_PER_KWH: [0.1, 0.2], s.CURRENCY: "EUR"})
        store.upsert_frame(s.PRICES, prices)
        store.upsert_frame(s.PRICES, prices.iloc[:1].assign(**{s.PRICE_PER_KWH: 0.15}))
        back = store.read_frame(s.PRICES, {s.AREA: "AT"}, start=T0)
        assert back[s.PRICE_PER_KWH].tolist() == [0.15, 0.2] and back[s.CURRENCY].tolist() == ["EUR", "EUR"]

    def test_features_round_trip_wide(self, store):
        wide = pd.DataFrame({dd.DEVICE_ID: ["a", "a"], dd.TS: [T0, T0 + pd.Timedelta(minutes=5)],
                             "load_lag_1h": [1.25, np.nan], "hour_sin": [0.0, 0.5]})
        store.upsert_frame(s.FEATURES, s.pack_features(wide, "v1"))
        back = s.unpack_features(store.read_frame(s.FEATURES, {s.VERSION: "v1"}))
        pd.testing.assert_frame_equal(back.drop(columns=[s.VERSION]), wide, check_like=True)

    @pytest.mark.parametrize("values", [
        [["dev-000", "dev-001"], ["dev-002", "dev-003"]],  # arrays of one length in every row
        [["dev-000"], ["dev-001", "dev-002"]],
        [{"a": {"b": [1, 2, {"c": None}]}, "n": 2**63 - 1, "q": "\"'\\\n😀"}, {}],
        [3, None],
    ])
    def test_json_cells_read_back_as_written(self, store, values):
        """A JSON column returns each row's value whole, whatever its shape, on every adapter."""
        events = pd.DataFrame({s.SOURCE: "x", s.EVENT_ID: [f"e{i}" for i in range(len(values))], s.RECEIVED_AT: T0,
                               s.START_TS: T0, s.SITES_COLUMN: pd.Series(values, dtype=object)})
        store.upsert_frame(s.DR_EVENTS, events)
        assert store.read_frame(s.DR_EVENTS, {s.SOURCE: "x"})[s.SITES_COLUMN].tolist() == values

    def test_device_ids_holding_reserved_characters_are_read_filtered_and_paged_as_any(self, store):
        """Commas, parentheses, dots, colons, quotes, backslashes and wildcards are SQL's and
        PostgREST's syntax, never a device id's undoing."""
        ids = ["a,b", "a(b)", "a.b", "50%", "a*", "it's", 'say "hi"', '"quoted"', "back\\s", "in.(x)", "eq.x", "x:y", "ü"]
        # 50 readings each: with a server that caps a response at 50 rows (the Supabase tests'),
        # every page ends on a device's last reading and the next starts after it.
        frame = dd.coerce_frame(pd.concat([readings(1, 50, prefix="p").assign(**{dd.DEVICE_ID: i}) for i in ids]))
        frame[dd.TS] = frame[dd.TS] + pd.Timedelta(microseconds=1)  # instants hold dots and colons too
        store.upsert_readings(frame)
        assert_same_readings(store.read_readings(), frame)
        for device in ids:
            assert len(store.read_readings(device)) == store.count_readings(device) == 50
        assert store.runs() == [] and set(store.reading_stats()) == set(ids)

    @pytest.mark.parametrize("update", [None, [s.VALUE, s.LOWER]])
    def test_a_column_the_frame_does_not_carry_keeps_what_is_stored(self, store, update):
        """A frame of some columns says nothing of the others: a stored row keeps them, a new
        row has them empty."""
        key = {dd.DEVICE_ID: "a", s.TARGET: "solar", s.MODEL: "m", s.ISSUED_AT: T0}
        full = pd.DataFrame({**key, dd.TS: [T0], s.VALUE: [1.0], s.LOWER: [0.5], s.UPPER: [2.0]})
        store.upsert_frame(s.FORECASTS, full)
        values = pd.DataFrame({**key, dd.TS: [T0, T0 + pd.Timedelta(hours=1)], s.VALUE: [3.0, 4.0]})
        store.upsert_frame(s.FORECASTS, values, update=update)
        back = store.read_frame(s.FORECASTS, {dd.DEVICE_ID: "a"})
        assert back[s.VALUE].tolist() == [3.0, 4.0] and back[s.UPPER].tolist()[0] == 2.0
        assert back[s.LOWER].tolist()[0] == 0.5 and back[[s.LOWER, s.UPPER]].iloc[1].isna().all()

    def test_floats_at_the_edges_of_float64_read_back_as_written(self, store):
        """Infinities are values, not gaps: read back as missing they passed for a reading or
        bound that was never sent. Extremes and subnormals keep every bit."""
        values = [np.inf, -np.inf, 1e308, -1.7976931348623157e308, 5e-324, 2.2250738585072014e-308, 0.1 + 0.2, np.nan]
        frame = readings(1, len(values), prefix="edge")
        frame[dd.BATTERY_POWER] = values
        store.upsert_readings(frame)
        assert_same_readings(store.read_readings(), frame)
        bounds = pd.DataFrame({dd.DEVICE_ID: "a", dd.TS: T0 + pd.to_timedelta(np.arange(len(values)), unit="h"),
                               s.TARGET: "solar", s.MODEL: "m", s.ISSUED_AT: T0, s.VALUE: 1.0, s.UPPER: values})
        store.upsert_frame(s.FORECASTS, bounds)
        back = store.read_frame(s.FORECASTS, {dd.DEVICE_ID: "a"})[s.UPPER].to_numpy()
        np.testing.assert_array_equal(back, np.array(values))

    def test_a_json_cell_is_json_on_every_adapter_or_refused_in_one_line(self, store):
        """JSON has no NaN: a missing number in an object, given as an object or as Python's
        JSON text, is ``null`` as everywhere else. Text that is not JSON, or an infinity,
        is refused before anything is written; SQLite kept such text and every later read of
        the table then failed."""
        def event(i, sites):
            return pd.DataFrame({s.SOURCE: "x", s.EVENT_ID: [f"e{i}"], s.RECEIVED_AT: T0, s.START_TS: T0,
                                 s.SITES_COLUMN: pd.Series([sites], dtype=object)})

        store.upsert_frame(s.DR_EVENTS, event(0, {"a": np.nan, "b": [1.5, float("nan")]}))
        store.upsert_frame(s.DR_EVENTS, event(1, '{"a": NaN}'))
        for bad in ("not json", '{"a": Infinity}', {"a": -np.inf}, {"a": "nul\x00"}):
            with pytest.raises(StoreError, match=r"dr_events\.sites: .*expected JSON") as refused:
                store.upsert_frame(s.DR_EVENTS, event(2, bad))
            assert "\n" not in str(refused.value)
        back = store.read_frame(s.DR_EVENTS, {s.SOURCE: "x"})
        assert back[s.SITES_COLUMN].tolist() == [{"a": None, "b": [1.5, None]}, {"a": None}]

    def test_a_column_the_table_lacks_is_refused_not_dropped(self, store):
        """A misspelt column would otherwise be dropped and its values lost without a word."""
        frame = pd.DataFrame({dd.DEVICE_ID: "a", dd.TS: [T0], s.TARGET: "solar", s.MODEL: "m", s.ISSUED_AT: T0,
                              s.VALUE: 1.0, "uper": 2.0})
        with pytest.raises(StoreError, match=r"forecasts has no column 'uper'; expected columns of") as refused:
            store.upsert_frame(s.FORECASTS, frame)
        assert "\n" not in str(refused.value) and store.count_rows(s.FORECASTS) == 0

    def test_instants_finer_than_a_microsecond_are_one_reading_the_last_as_any_duplicate(self, store):
        """The stores keep microseconds: two readings within one are one key, and the batch's
        last wins as for any duplicate, rather than failing the batch on every retry."""
        frame = readings(1, 2, prefix="ns")
        frame[dd.TS] = pd.DatetimeIndex(["2024-01-01T00:00:00.000001100Z", "2024-01-01T00:00:00.000001900Z"]).as_unit("ns")
        store.upsert_readings(frame)
        back = store.read_readings("ns-000")
        assert back[dd.TS].tolist() == [pd.Timestamp("2024-01-01T00:00:00.000001Z")]
        assert back[dd.PRICE].tolist() == [frame[dd.PRICE][1]]

    def test_a_run_s_details_are_stored_as_json_with_missing_numbers_null(self, store):
        run = store.start_run("features", {"score": np.nan, "nested": {"x": [1.5, float("nan")]}})
        details = store.last_run("features")[s.DETAILS]
        assert store.last_run("features")[s.RUN_ID] == run
        assert details["score"] is None and details["nested"] == {"x": [1.5, None]}

    @pytest.mark.parametrize("table, row, column, value", [
        (s.FORECASTS, {dd.DEVICE_ID: "a", dd.TS: T0, s.TARGET: "solar", s.MODEL: "m", s.ISSUED_AT: T0}, s.VALUE, "abc"),
        (s.SITES, {dd.DEVICE_ID: "a"}, "latitude", "north"),
        (s.SITES, {dd.DEVICE_ID: "a"}, "has_ev", "no"),
        (s.DR_EVENTS, {s.SOURCE: "x", s.EVENT_ID: "e", s.RECEIVED_AT: T0, s.START_TS: T0}, s.MODIFICATION, 1.5),
        (s.DR_EVENTS, {s.SOURCE: "x", s.EVENT_ID: "e", s.RECEIVED_AT: T0}, s.START_TS, "soon"),
    ])
    def test_a_value_not_of_its_column_s_kind_is_refused_in_one_line(self, store, table, row, column, value):
        """Not stored as missing (a latitude of "north" read back as no latitude) and not a
        traceback: one line naming the table, the column and the value."""
        frame = pd.DataFrame([{**row, column: value}])
        with pytest.raises(StoreError, match=rf"{table}\.{column}: {value!r}") as refused:
            store.upsert_frame(table, frame)
        assert "\n" not in str(refused.value) and store.count_rows(table) == 0

    def test_a_text_holding_nul_is_refused_in_one_line_by_every_adapter(self, store):
        """PostgreSQL's text cannot hold U+0000; SQLite can, so a store that took it there
        could never move to a server. Every adapter refuses it alike, before writing."""
        frame = pd.DataFrame({dd.DEVICE_ID: "a", dd.TS: [T0, T0 + pd.Timedelta(hours=1)], s.ISSUED_AT: T0,
                              s.OBJECTIVE: ["cost", "cost\x00; forecaster x"]})
        with pytest.raises(StoreError, match=r"dispatch_plans\.objective: 'cost\\x00; forecaster x' holds a NUL") as refused:
            store.upsert_frame(s.PLANS, frame)
        assert "\n" not in str(refused.value) and store.count_rows(s.PLANS) == 0
