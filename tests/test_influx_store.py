"""InfluxDB 2.x edge store against the in-process fake of the v2 API (tests/fakes/influx_server.py):
no InfluxDB 2.x server can be installed on the build machine."""

from __future__ import annotations

import logging
import random

import numpy as np
import pandas as pd
import pytest

from cloud.store.sqlite import SQLiteCloudStore
from cloud.sync.job import SyncSettings, sync_once
from cloud.sync.retry import RetryPolicy
from der_core import der_data as dd
from der_core.errors import StoreError, StoreUnavailable
from edge_gateway.stores import influx_protocol as lp
from edge_gateway.stores.influx import InfluxEdgeStore
from edge_gateway.stores.influx_settings import InfluxSettings
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.fakes.influx_flux import format_time, parse_time
from tests.fakes.influx_server import FakeInfluxServer, LineProtocolError, parse_line
from tests.sync_fixtures import readings as valid_readings

TOKEN = "test-token"


def readings(n: int, device: str = "edge-gateway-001", start: str = "2024-06-01T00:00:00Z", seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    stamps = pd.date_range(start, periods=n, freq="5min", tz="UTC")
    rows = []
    for i, ts in enumerate(stamps):
        row = {c: float(rng.normal(3, 2)) for c, t in dd.FIELD_TYPES.items() if t is float}
        row.update({dd.DEVICE_ID: device, dd.TS: ts, dd.BATTERY_CYCLES: 100 + i, dd.TOU_PERIOD: dd.TOU_PERIODS[i % 3]})
        rows.append(row)
    return dd.rows_to_frame(rows)


@pytest.fixture
def server():
    fake = FakeInfluxServer(token=TOKEN).start()
    yield fake
    fake.stop()


class Recorder:
    """Stands in for time.sleep so backoff is observable and tests take no wall time."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sleeps():
    return Recorder()


@pytest.fixture
def make_store(server, tmp_path, clock, sleeps):
    opened = []

    def make(**overrides) -> InfluxEdgeStore:
        options = {"flush_interval_s": 0, "max_retries": 2, "retry_base_s": 0.01, "timeout_s": 2.0, **overrides}
        settings = InfluxSettings(url=server.url, token=TOKEN, **options)
        store = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), sleep=sleeps,
                                clock=clock, rng=random.Random(7), background=False)
        opened.append(store)
        return store

    yield make
    for store in opened:
        try:
            store.close()
        except Exception:  # already closed by the test
            pass


# --- line protocol ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "device",
    ["edge-gateway-001", "site 7", "a,b=c", "quote\"d", "ünïcode-東京", "=leading", "trailing "],
)
def test_tag_escaping_round_trips_through_a_strict_parser(device):
    frame = readings(1, device=device)
    (line,) = lp.frame_to_lines(frame)
    measurement, tags, fields, stamp = parse_line(line)
    assert measurement == lp.MEASUREMENT
    assert tags == {dd.DEVICE_ID: device, dd.TOU_PERIOD: "off_peak"}
    assert stamp == frame[dd.TS].iloc[0].as_unit("ns").value


@pytest.mark.parametrize("bad", ["back\\slash", "line\nbreak", ""])
def test_tags_that_cannot_round_trip_are_refused(bad):
    with pytest.raises(ValueError):
        lp.frame_to_lines(readings(1, device=bad))


def test_fields_keep_types_and_missing_values_are_omitted():
    frame = readings(2)
    frame.loc[0, dd.SOLAR_KW] = np.nan
    frame.loc[1, dd.BATTERY_CYCLES] = pd.NA
    first, second = (parse_line(line)[2] for line in lp.frame_to_lines(frame))
    assert dd.SOLAR_KW not in first and dd.BATTERY_CYCLES not in second
    assert first[dd.BATTERY_CYCLES] == 100 and isinstance(first[dd.BATTERY_CYCLES], int)
    assert second[dd.SOLAR_KW] == frame.loc[1, dd.SOLAR_KW]  # repr() floats parse back exactly
    assert set(first) | {dd.SOLAR_KW} == set(lp.FIELDS)


@pytest.mark.parametrize("precision,unit", [("ns", 1), ("us", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000)])
def test_timestamp_precision(precision, unit):
    frame = readings(3)
    stamps = [parse_line(line, precision)[3] for line in lp.frame_to_lines(frame, precision)]
    assert stamps == [t.as_unit("ns").value for t in frame[dd.TS]]


def test_precision_that_would_truncate_is_refused():
    frame = readings(1)
    frame[dd.TS] = frame[dd.TS] + pd.Timedelta(1, "ms")
    with pytest.raises(ValueError, match="precision"):
        lp.frame_to_lines(frame, "s")


def test_infinite_values_are_refused():
    frame = readings(1)
    frame.loc[0, dd.PRICE] = np.inf
    with pytest.raises(ValueError, match=dd.PRICE):
        lp.frame_to_lines(frame)


@pytest.mark.parametrize(
    "line",
    [
        "der_reading device_id=x",  # a field value must be a number, string or boolean
        "der_reading,device_id=x",  # no fields
        "der_reading,device_id= a=1 1",  # empty tag value
        "der_reading,device_id=x a=1 12x",  # bad timestamp
        "der_reading,device_id=x a=1.2.3",  # bad float
        'der_reading,device_id=x a="open',  # unbalanced quotes
        "der_reading,device_id=x,device_id=y a=1",  # duplicate tag
        "der_reading,device_id=x a=NaN",  # NaN is not a line-protocol number
    ],
)
def test_fake_rejects_malformed_lines(line):
    with pytest.raises(LineProtocolError):
        parse_line(line)


def test_fake_write_endpoint_answers_400_for_a_malformed_line(server):
    import urllib.request

    request = urllib.request.Request(
        f"{server.url}/api/v2/write?org=edge-gateway&bucket=der-data&precision=ns",
        data=b"der_reading,device_id=x a=1i\nder_reading,device_id=x a=oops",
        headers={"Authorization": f"Token {TOKEN}"},
        method="POST",
    )
    server.add_bucket("der-data")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 400
    assert server.accepted_lines == 0  # a batch with a bad line stores nothing


# --- Flux and CSV ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ['plain', 'with "quotes"', "back\\slash", "${interp}", "new\nline"])
def test_flux_string_literals_escape(text):
    query = lp.range_query(text, None)
    from tests.fakes.influx_flux import parse_pipeline

    assert parse_pipeline(query)[0] == ("from", {"bucket": text})


@pytest.mark.parametrize("stamp", ["2024-06-01T00:00:00Z", "2024-06-01T12:34:56.123456Z", "2024-06-01T12:34:56.123456789Z"])
def test_flux_time_literals_are_exact(stamp):
    ts = pd.Timestamp(stamp)
    assert parse_time(lp.flux_time(ts, lp.EPOCH)) == ts.as_unit("ns").value
    assert format_time(ts.as_unit("ns").value) == stamp


def test_in_band_flux_error_becomes_store_error():
    text = "#datatype,string,string\r\n#group,true,true\r\n#default,,\r\n,error,reference\r\n,bucket not found,\r\n"
    with pytest.raises(StoreError, match="bucket not found"):
        lp.parse_annotated_csv(text)


# --- the store --------------------------------------------------------------------------------------


@pytest.mark.parametrize("days,every_seconds", [(7, 7 * 86400), (30, 30 * 86400), (0, None)])
def test_missing_bucket_is_created_with_retention(make_store, server, days, every_seconds):
    make_store(retention_days=days)
    rules = server.buckets["der-data"]["retentionRules"]
    assert (rules[0]["everySeconds"] if rules else None) == every_seconds


def test_existing_bucket_is_left_alone(make_store, server):
    server.add_bucket("der-data", every_seconds=3600)
    make_store(retention_days=7)
    assert server.buckets["der-data"]["retentionRules"] == [{"type": "expire", "everySeconds": 3600}]
    assert ("POST", "/api/v2/buckets") not in server.requests


def test_range_read_returns_identical_flat_rows(make_store):
    store = make_store()
    frame = pd.concat([readings(12), readings(5, device="edge-gateway-002", seed=2)], ignore_index=True)
    frame.loc[3, dd.SOLAR_KW] = np.nan  # a missing value stays missing
    assert store.write(frame) == len(frame)
    assert store.spool_size() == 0
    pd.testing.assert_frame_equal(store.read_range(None), dd.coerce_frame(frame))
    one = store.read_range("edge-gateway-001", frame[dd.TS].iloc[2], frame[dd.TS].iloc[6], limit=3)
    pd.testing.assert_frame_equal(one, dd.coerce_frame(frame.iloc[2:5].reset_index(drop=True)))
    assert store.count() == 17 and store.count("edge-gateway-002") == 5
    assert store.count("edge-gateway-001", frame[dd.TS].iloc[10]) == 2
    assert store.devices() == ["edge-gateway-001", "edge-gateway-002"]
    pd.testing.assert_frame_equal(store.latest("edge-gateway-001"), dd.coerce_frame(frame.iloc[[11]].reset_index(drop=True)))


def test_empty_store_reads(make_store):
    store = make_store()
    assert store.read_range(None).empty and store.latest("nobody").empty
    assert store.count() == 0 and store.devices() == []


def test_sites_live_in_the_spool_file(make_store):
    store = make_store()
    store.put_site({"device_id": "edge-gateway-001", "latitude": 37.77, "timezone": "America/Los_Angeles"})
    assert [s["latitude"] for s in store.sites()] == [37.77]


def test_rows_written_behind_a_devices_newest_are_noted_for_the_sync_and_survive_a_restart(server, tmp_path):
    settings = InfluxSettings(url=server.url, token=TOKEN, flush_interval_s=0, max_retries=0)
    store = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False)
    frame = readings(12)
    store.write(frame.iloc[6:])
    assert store.late_writes() == ({}, 0)
    store.write(frame.iloc[:6])  # a backfill, sent to InfluxDB at once
    store.close()
    reopened = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False)
    late, through = reopened.late_writes()
    assert late == {"edge-gateway-001": [(frame[dd.TS].iloc[0], frame[dd.TS].iloc[5])]} and through > 0
    reopened.acknowledge_late_writes(through)
    assert reopened.late_writes() == ({}, 0)
    reopened.close()


def test_writes_batch_by_size(make_store, server):
    store = make_store(batch_size=5, flush_interval_s=3600)
    frame = readings(12)
    for i in range(4):
        store.write(frame.iloc[i : i + 1])
    assert server.write_requests == 0 and store.spool_size() == 4
    pd.testing.assert_frame_equal(store.read_range(None), dd.coerce_frame(frame.iloc[:4]))  # waiting rows are visible
    store.write(frame.iloc[4:12])
    assert store.spool_size() == 0 and server.accepted_lines == 12
    assert server.write_requests == 3  # 5 + 5 + 2 lines, oldest first


def test_writes_flush_after_the_interval(server, tmp_path):
    now = [0.0]
    settings = InfluxSettings(url=server.url, token=TOKEN, batch_size=100, flush_interval_s=10)
    store = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), clock=lambda: now[0], background=False)
    store.write(readings(1))
    now[0] = 9.0
    assert store.flush_if_due() == 0 and server.accepted_lines == 0
    now[0] = 10.0
    assert store.flush_if_due() == 1 and server.accepted_lines == 1
    store.close()


def test_failure_spools_then_replays_every_reading_exactly_once(make_store, server, clock, sleeps):
    store = make_store(batch_size=4)
    first, second, third = readings(6), readings(6, start="2024-06-02T00:00:00Z"), readings(3, start="2024-06-03T00:00:00Z")
    server.fail_next(3, status=503)  # one write and its two retries
    assert store.write(first) == 6
    assert store.spool_size() == 6 and server.accepted_lines == 0
    assert "503" in store.last_error
    # exponential backoff with equal jitter: attempt k waits between base*2^k/2 and base*2^k
    assert len(sleeps.delays) == 2
    assert 0.005 <= sleeps.delays[0] <= 0.01 and 0.01 <= sleeps.delays[1] <= 0.02
    server.stop()  # now the server is gone entirely: connection refused
    clock.now += 3600  # past the pause that follows a failure
    assert store.write(second) == 6
    assert store.spool_size() == 12 and "cannot be reached" in store.last_error
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        store.replay_spool()
    server.start()
    assert store.replay_spool() == 12
    store.write(third)
    expected = dd.coerce_frame(pd.concat([first, second, third], ignore_index=True))
    pd.testing.assert_frame_equal(store.read_range(None), expected)
    assert store.spool_size() == 0
    assert server.accepted_lines == 15  # nothing was sent twice


def test_pause_after_failure_keeps_writes_fast(make_store, server, clock, sleeps):
    store = make_store()
    server.fail_next(3)
    store.write(readings(1))
    retries = len(sleeps.delays)
    store.write(readings(1, start="2024-06-02T00:00:00Z"))  # paused: no new attempt, no sleeping
    assert len(sleeps.delays) == retries and store.spool_size() == 2
    clock.now += 3600
    store.write(readings(1, start="2024-06-03T00:00:00Z"))  # the pause is over: the backlog goes first
    assert store.spool_size() == 0 and server.accepted_lines == 3


def test_a_writer_asks_a_server_it_found_down_once_per_pause(make_store, server, clock, sleeps):
    """The gateway reads its store on every step. With the server down, each read retried
    with backoff, so every step of an outage waited seconds (about 12 s with the defaults)
    and a gateway reading every 10 s skipped every other reading. Once a writer finds the
    server down, a read in its pause fails at once, and the one after it is one attempt."""
    store = make_store()
    server.stop()
    store.write(readings(1))  # the flush finds it down: retried, then paused
    retried = len(sleeps.delays)
    assert retried == 2 and store.spool_size() == 1
    with pytest.raises(StoreUnavailable, match=r"cannot be reached.*\(next attempt in \d+ s\)"):
        store.latest("edge-gateway-001")
    clock.now += 3600
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        store.latest("edge-gateway-001")  # one attempt, no retries: the pause is the backoff
    assert len(sleeps.delays) == retried
    server.start()
    with pytest.raises(StoreUnavailable, match="next attempt"):
        store.latest("edge-gateway-001")  # that failure paused it again
    clock.now += 3600
    assert len(store.latest("edge-gateway-001")) == 1  # read again: the reading waiting in the spool
    store.write(readings(1, start="2024-06-02T00:00:00Z"))  # no longer paused: the backlog goes too
    assert store.spool_size() == 0 and server.accepted_lines == 2 and len(sleeps.delays) == retried


def test_a_writer_finding_the_server_down_on_a_read_pauses_as_on_a_flush(make_store, server, clock, sleeps):
    store = make_store()
    store.write(readings(1))
    server.stop()
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        store.latest("edge-gateway-001")
    retried = len(sleeps.delays)
    with pytest.raises(StoreUnavailable, match="next attempt"):
        store.read_range("edge-gateway-001")
    assert len(sleeps.delays) == retried == 2


def test_a_gateway_steps_through_an_outage_without_waiting_and_says_it_twice(make_store, server, clock, sleeps,
                                                                              tmp_path, caplog):
    """Every step of an outage makes its reading, spooled, without a retry's wait; the outage
    is one warning when it begins and one line when the store is read again, not a warning
    a step."""
    from edge_gateway.gateway import Gateway
    from tests.sim_helpers import config

    store = make_store()
    gateway = Gateway([config(seed=3)], [store.write], tmp_path / "state", history=store)
    stamps = pd.date_range("2024-06-15T00:05Z", periods=8, freq="5min")
    gateway.step(stamps[0])
    server.stop()
    caplog.set_level(logging.INFO, logger="edge_gateway.gateway")
    for at in stamps[1:6]:
        assert len(gateway.step(at)) == 1
        clock.now += 1.0  # pauses outlast a step once the server has failed a few times
    retried = len(sleeps.delays)
    server.start()
    clock.now += 3600
    for at in stamps[6:]:
        gateway.step(at)
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "edge_gateway.gateway"]
    assert [level for level, _ in said] == [logging.WARNING, logging.INFO], said
    assert "readings made without checking the stored readings" in said[0][1]
    assert said[1][1] == "edge store readable again; readings from 2024-06-15T00:10:00+00:00 on were made unchecked"
    assert retried == 2 and len(sleeps.delays) == retried  # the first failure's retries only
    assert store.spool_size() == 0 and len(store.read_range("edge-gateway-001")) == 8


def test_spool_survives_a_restart(server, tmp_path):
    settings = InfluxSettings(url=server.url, token=TOKEN, flush_interval_s=0, max_retries=0)
    server.stop()
    offline = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False)
    offline.write(readings(5))
    offline.close()
    server.start()
    online = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False)
    assert online.spool_size() == 5
    online.write(readings(1, start="2024-07-01T00:00:00Z"))  # leftovers are overdue: sent first
    assert online.spool_size() == 0 and server.accepted_lines == 6
    online.close()


def test_what_an_offline_store_says_is_one_warning_and_only_to_a_writer(server, tmp_path, caplog, clock):
    """A reader (the sync, ``--status``) of a store whose server is down meets the error
    itself, so opening says nothing above DEBUG; a writer whose readings stay spooled hears
    it once, at close, with how many wait."""
    settings = InfluxSettings(url=server.url, token=TOKEN, flush_interval_s=0, max_retries=0)
    server.stop()
    caplog.set_level(logging.DEBUG, logger="edge_gateway.stores.influx")

    def warnings() -> list[str]:
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        caplog.clear()
        return said

    reader = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False)
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        reader.count()
    reader.close()
    assert warnings() == []
    writer = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False, clock=clock)
    writer.write(readings(5))  # paused since opening: spooled, no attempt
    writer.close()
    (said,) = warnings()
    assert said.startswith("closing with 5 readings spooled, sent once InfluxDB takes them: InfluxDB at ")
    writer = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False, clock=clock)
    clock.now += 3600  # the pause is over: close tries, and that failure is the one line
    writer.close()
    (said,) = warnings()
    assert said.endswith("; 5 readings wait in the spool")


def test_a_reader_over_a_gateway_s_spool_reads_it_and_leaves_it_to_the_gateway(server, tmp_path, caplog, clock):
    """The sync opens the gateway's store while readings wait in its spool: with the server
    down it says nothing but its own error; with it up it reads the spooled readings beside
    the stored ones and sends none of them, which is the gateway's to do."""
    settings = InfluxSettings(url=server.url, token=TOKEN, flush_interval_s=0, max_retries=0)
    server.stop()
    gateway = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False, clock=clock)
    gateway.write(readings(5))
    gateway.close()
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="edge_gateway.stores.influx")
    clock.now += 3600  # long past any pause: a writer would try to send them now
    reader = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False, clock=clock, reader=True)
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        reader.read_range(None)
    reader.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    server.start()
    server.add_bucket(settings.bucket)  # as its gateway made it
    reader = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False, clock=clock, reader=True)
    assert len(reader.read_range(None)) == 5 and reader.spool_size() == 5
    reader.close()
    assert server.accepted_lines == 0


def sync(store: InfluxEdgeStore, cloud: SQLiteCloudStore) -> int:
    store.flush()
    return sync_once(store, cloud, SyncSettings(retry=RetryPolicy(attempts=1))).rows_synced


def test_a_bucket_made_again_under_its_name_is_synced_whole(server, tmp_path, clock):
    """A bucket deleted and made again, refilled by a new gateway with the days before: its
    readings lie behind the old bucket's watermarks, so under the old bucket's name they
    would never be sent."""
    frame = valid_readings(devices=1, steps=20)
    settings = InfluxSettings(url=server.url, token=TOKEN, flush_interval_s=0, max_retries=0)
    with SQLiteCloudStore(tmp_path / "cloud.db") as cloud:
        first = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False, clock=clock)
        first.write(frame.iloc[10:])
        assert sync(first, cloud) == 10
        source = first.source
        first.close()
        server.delete_bucket("der-data")
        second = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "new-card.db"), background=False, clock=clock)
        second.write(frame.iloc[:10])
        assert second.source != source and sync(second, cloud) == 10
        assert len(cloud.read_readings()) == 20
        assert second.source == f"edge:influxdb:der-data:{server.buckets['der-data']['id']}"
        second.close()


def test_a_spool_from_before_bucket_ids_keeps_its_watermarks_for_its_bucket_only(server, tmp_path, clock):
    import sqlite3

    settings = InfluxSettings(url=server.url, token=TOKEN, flush_interval_s=0, max_retries=0)
    store = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False, clock=clock)
    store.write(readings(3))
    store.close()
    with sqlite3.connect(tmp_path / "edge.db") as conn:
        conn.execute("DROP TABLE influx_named_bucket")  # as a spool written before buckets were named by id
    for reader in (True, False, True):  # the sync and the gateway open it, in either order, and again
        store = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False, clock=clock,
                                reader=reader)
        assert store.source == "edge:influxdb:der-data"
        store.close()
    server.delete_bucket("der-data")
    server.add_bucket("der-data")
    store = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False, clock=clock, reader=True)
    assert store.source == f"edge:influxdb:der-data:{server.buckets['der-data']['id']}"
    store.close()


def test_a_reader_before_its_gateway_made_the_bucket_is_one_line(server, tmp_path):
    settings = InfluxSettings(url=server.url, token=TOKEN, flush_interval_s=0, max_retries=0)
    store = InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False, reader=True)
    with pytest.raises(StoreError, match="no bucket der-data in organisation edge-gateway; expected the gateway to have"):
        store.source
    store.close()


def test_malformed_batch_is_quarantined_not_dropped(make_store, server):
    store = make_store()
    server.fail_next(1, status=400)
    store.write(readings(2))
    assert store.spool_size() == 0 and store.rejected_size() == 2


def test_bad_token_is_one_clear_line(server, tmp_path):
    settings = InfluxSettings(url=server.url, token="wrong", flush_interval_s=0)
    with pytest.raises(StoreError) as caught:
        InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False)
    message = str(caught.value)
    assert message == (
        f"InfluxDB at {server.url} rejected the token (401): expected a token with write access to bucket der-data"
    )
    assert not isinstance(caught.value, StoreUnavailable)


def test_unknown_org_names_the_org(server, tmp_path):
    settings = InfluxSettings(url=server.url, token=TOKEN, org="nobody", flush_interval_s=0)
    with pytest.raises(StoreError, match="nobody"):
        InfluxEdgeStore(settings, SQLiteEdgeStore(tmp_path / "edge.db"), background=False)


def test_status_reports_connectivity_and_backlog(make_store, server):
    store = make_store()
    assert store.ping() is True
    server.stop()
    store.write(readings(2))
    status = store.status()
    assert status["reachable"] is False and status["spool_size"] == 2 and "cannot be reached" in status["last_error"]
