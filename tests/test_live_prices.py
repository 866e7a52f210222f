"""Prices from outside services: each adapter reads its service's documented answer into per-kWh
prices over UTC intervals with the time they were published; fetching asks only for what the
store lacks; reading back never shows a price published after the instant asked about.

Every service here is a FakeService on localhost; each body says which documentation page or
example it follows."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from cloud.live.http import (
    MalformedResponse,
    RetryPolicy,
    SourceRefused,
    SourceUnavailable,
)
from cloud.live.inputs import SiteInputs
from cloud.live.prices import (
    HttpSettings,
    fetch_prices,
    price_forecast,
    price_source,
    published_prices,
)
from cloud.live.prices.awattar import Awattar
from cloud.live.prices.comed import ComedRealTime
from cloud.live.prices.entsoe import EntsoeDayAhead
from cloud.live.prices.generic import HttpPrices
from cloud.live.prices.octopus import OctopusAgile
from cloud.store import schema as s
from cloud.store.postgres import PostgresCloudStore
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd
from der_core.errors import ConfigError
from tests.fakes.http_service import FakeService, Reply
from tests.fakes.service_bodies import (
    PRODUCT,
    RATES_PATH,
    REGION,
    TARIFF,
    agile_pages,
    agile_results,
)
from tests.pg_fixtures import pg_url, truncate_all  # noqa: F401  (fixture)

FAST = RetryPolicy(attempts=4, timeout_s=2.0, backoff_s=1.0, max_backoff_s=8.0, max_wait_s=60.0)
KEY = "entsoe-test-token-5f0c2a9e"
UTC = "UTC"


@pytest.fixture
def fake():
    with FakeService() as service:
        yield service


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "sqlite":
        with SQLiteCloudStore(tmp_path / "cloud.db") as cloud:
            yield cloud
        return
    url = request.getfixturevalue("pg_url")
    with PostgresCloudStore(url) as cloud:
        cloud.init_schema()
        truncate_all(url)
        yield cloud


def settings(fake: FakeService, waits: list[float] | None = None, **environ: str) -> HttpSettings:
    env = {f"DER_{name}_URL": fake.url for name in ("ENTSOE", "OCTOPUS", "AWATTAR", "COMED")} | environ
    return HttpSettings(environ=env, policy=FAST, sleep=(waits if waits is not None else []).append)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


def local_day(day: str, zone: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(day, tz=zone)
    return start.tz_convert(UTC), (start + pd.DateOffset(days=1)).tz_convert(UTC)


# --- ENTSO-E -----------------------------------------------------------------------------------
# Bodies follow the Transparency Platform's RESTful API guide, "Day Ahead Prices [12.1.D]"
# (https://transparency.entsoe.eu/content/static_content/Static%20content/web%20api/Guide.html
# and https://documenter.getpostman.com/view/7009892/2s93JtP3F6): a Publication_MarketDocument
# (namespace publicationdocument:7:3) of TimeSeries with currency_Unit.name EUR,
# price_Measure_Unit.name MWH, curveType A01 or A03, and Periods of Points; "no data" is an
# Acknowledgement_MarketDocument with Reason code 999.

def entsoe_series(start: pd.Timestamp, end: pd.Timestamp, resolution: str, points: dict[int, float],
                  curve: str = "A01") -> str:
    body = "".join(f"<Point><position>{p}</position><price.amount>{v}</price.amount></Point>"
                   for p, v in sorted(points.items()))
    return (f"<TimeSeries><mRID>1</mRID><auction.type>A01</auction.type><businessType>A62</businessType>"
            f"<in_Domain.mRID codingScheme=\"A01\">10Y1001A1001A82H</in_Domain.mRID>"
            f"<out_Domain.mRID codingScheme=\"A01\">10Y1001A1001A82H</out_Domain.mRID>"
            f"<contract_MarketAgreement.type>A01</contract_MarketAgreement.type>"
            f"<currency_Unit.name>EUR</currency_Unit.name><price_Measure_Unit.name>MWH</price_Measure_Unit.name>"
            f"<curveType>{curve}</curveType><Period><timeInterval><start>{start:%Y-%m-%dT%H:%MZ}</start>"
            f"<end>{end:%Y-%m-%dT%H:%MZ}</end></timeInterval><resolution>{resolution}</resolution>{body}"
            f"</Period></TimeSeries>")


def entsoe_document(*series: str) -> str:
    return ("<?xml version=\"1.0\" encoding=\"utf-8\"?>"
            "<Publication_MarketDocument xmlns=\"urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3\">"
            "<mRID>9a3f</mRID><revisionNumber>1</revisionNumber><type>A44</type>"
            "<createdDateTime>2026-03-28T13:05:00Z</createdDateTime>" + "".join(series) + "</Publication_MarketDocument>")


NO_DATA = ("<?xml version=\"1.0\" encoding=\"utf-8\"?><Acknowledgement_MarketDocument "
           "xmlns=\"urn:iec62325.351:tc57wg16:451-1:acknowledgementdocument:7:0\"><mRID>1</mRID>"
           "<createdDateTime>2026-06-02T09:00:00Z</createdDateTime><Reason><code>999</code>"
           "<text>No matching data found for Data item Day-ahead Prices [12.1.D]</text></Reason>"
           "</Acknowledgement_MarketDocument>")


def entsoe(fake: FakeService, area: str = "DE_LU") -> EntsoeDayAhead:
    return price_source({"source": "entsoe", "area": area}, settings(fake, ENTSOE_API_KEY=KEY))


@pytest.mark.parametrize("day, hours, published", [
    ("2026-03-29", 23, "2026-03-28T12:00"),  # clocks go forward: 13:00 CET is 12:00 UTC
    ("2026-10-25", 25, "2026-10-24T11:00"),  # clocks go back the night after 13:00 CEST
    ("2026-06-01", 24, "2026-05-31T11:00"),
])
def test_entsoe_day_ahead_prices_per_kwh_over_utc_hours_published_the_day_before(fake, day, hours, published):
    start, end = local_day(day, "Europe/Berlin")
    fake.route("/", Reply(200, entsoe_document(entsoe_series(start, end, "PT60M",
                                                              {p: 40.0 + p for p in range(1, hours + 1)}))))
    frame = entsoe(fake).fetch(start, end)
    assert len(frame) == hours
    assert frame[dd.TS].iloc[0] == start and frame[s.END_TS].iloc[-1] == end
    assert (frame[s.END_TS] - frame[dd.TS] == pd.Timedelta(hours=1)).all()
    np.testing.assert_allclose(frame[s.PRICE_PER_KWH], (40.0 + np.arange(1, hours + 1)) / 1000)
    assert (frame[s.PUBLISHED_AT] == utc(published)).all()
    assert set(frame[s.CURRENCY]) == {"EUR"} and set(frame[s.SOURCE]) == {"entsoe"} and set(frame[s.AREA]) == {"DE_LU"}
    query = fake.requests[0].query
    assert query["documentType"] == ["A44"] and query["in_Domain"] == query["out_Domain"] == ["10Y1001A1001A82H"]
    assert query["periodStart"] == [f"{start:%Y%m%d%H%M}"] and query["securityToken"] == [KEY]


def test_entsoe_a03_positions_left_out_repeat_the_one_before_and_the_finest_resolution_is_kept(fake):
    start, end = local_day("2026-06-01", "Europe/Berlin")
    hourly = entsoe_series(start, end, "PT60M", {p: 500.0 for p in range(1, 25)})
    quarters = entsoe_series(start, end, "PT15M", {1: 80.0, 3: 70.0, 9: 60.0}, curve="A03")
    fake.route("/", Reply(200, entsoe_document(hourly, quarters)))
    frame = entsoe(fake).fetch(start, end)
    assert len(frame) == 96 and (frame[s.END_TS] - frame[dd.TS] == pd.Timedelta(minutes=15)).all()
    expected = np.array([80.0, 80.0] + [70.0] * 6 + [60.0] * 88) / 1000
    np.testing.assert_allclose(frame[s.PRICE_PER_KWH], expected)


def test_entsoe_no_data_yet_is_an_empty_answer_and_other_acknowledgements_are_refusals(fake):
    start, end = local_day("2026-06-03", "Europe/Berlin")
    fake.route("/", Reply(200, NO_DATA), Reply(200, NO_DATA.replace("999", "A02").replace(
        "No matching data found", "Unknown area")))
    assert entsoe(fake).fetch(start, end).empty
    with pytest.raises(SourceRefused, match="ENTSO-E refused the request: reason A02 Unknown area"):
        entsoe(fake).fetch(start, end)


def test_entsoe_a_period_without_a_priced_point_is_no_prices(fake):
    start, end = local_day("2026-06-03", "Europe/Berlin")
    fake.route("/", Reply(200, entsoe_document(entsoe_series(start, end, "PT60M", {}))))
    assert entsoe(fake).fetch(start, end).empty


def test_entsoe_a_period_ending_before_it_starts_is_malformed(fake):
    start, end = local_day("2026-06-03", "Europe/Berlin")
    fake.route("/", Reply(200, entsoe_document(entsoe_series(end, start, "PT60M", {1: 50.0}))))
    with pytest.raises(MalformedResponse, match="ENTSO-E: a Period's timeInterval ends at 2026-06-02T22:00Z, not after"):
        entsoe(fake).fetch(start, end)


def test_entsoe_needs_its_key_and_never_shows_it(fake, caplog):
    with pytest.raises(ConfigError, match="ENTSO-E needs a key: set ENTSOE_API_KEY"):
        price_source({"source": "entsoe", "area": "DE_LU"}, settings(fake))
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # a CLI run in this process may have quietened it
    start, end = local_day("2026-06-01", "Europe/Berlin")
    fake.route("/", Reply(500))
    with pytest.raises(SourceUnavailable) as unavailable:
        entsoe(fake).fetch(start, end)
    fake.route("/", Reply(401, f"<html>token {KEY} is not valid</html>"))
    with pytest.raises(SourceRefused) as refused:
        entsoe(fake).fetch(start, end)
    fake.route("/", Reply(200, "<Publication_MarketDocument><TimeSeries>"))
    with pytest.raises(MalformedResponse, match="ENTSO-E: the answer is not XML") as malformed:
        entsoe(fake).fetch(start, end)
    assert all(request.query["securityToken"] == [KEY] for request in fake.requests)
    assert "HTTP Request" in caplog.text  # httpx did log the requests, with the key masked
    for shown in (str(unavailable.value), str(refused.value), str(malformed.value), caplog.text):
        assert KEY not in shown


def test_entsoe_a_point_without_its_price_names_the_field(fake):
    start, end = local_day("2026-06-01", "Europe/Berlin")
    fake.route("/", Reply(200, entsoe_document(entsoe_series(start, end, "PT60M", {1: 40.0})).replace(
        "<price.amount>40.0</price.amount>", "")))
    with pytest.raises(MalformedResponse, match="ENTSO-E: the response has no field 'price.amount'"):
        entsoe(fake).fetch(start, end)


# --- Octopus Agile ------------------------------------------------------------------------------
# Bodies follow the REST API's tariff charges listing (tests/fakes/service_bodies.py says where).


@pytest.mark.parametrize("day, slots, published", [
    ("2026-03-29", 46, "2026-03-28T16:00"),  # 23:00 GMT to 23:00 BST, published 16:00 GMT
    ("2026-10-25", 50, "2026-10-24T15:00"),  # 23:00 BST to 23:00 GMT, published 16:00 BST
])
def test_octopus_agile_pages_into_gbp_per_kwh_over_a_uk_dst_day(fake, day, slots, published):
    start = pd.Timestamp(day, tz="Europe/London") - pd.Timedelta(hours=1)  # the Agile day starts at 23:00
    end = (pd.Timestamp(day, tz="Europe/London") + pd.DateOffset(days=1) - pd.Timedelta(hours=1))
    start, end = start.tz_convert(UTC), end.tz_convert(UTC)
    fake.route(RATES_PATH, *agile_pages(fake.url, agile_results(start, end), size=30))
    source = price_source({"source": "octopus", "product": PRODUCT, "region": REGION}, settings(fake))
    frame = source.fetch(start, end)
    assert len(frame) == slots and frame[dd.TS].iloc[0] == start and frame[s.END_TS].iloc[-1] == end
    np.testing.assert_allclose(frame[s.PRICE_PER_KWH], (10 + 0.5 * np.arange(slots)) / 100)
    assert (frame[s.PUBLISHED_AT] == utc(published)).all() and set(frame[s.CURRENCY]) == {"GBP"}
    assert set(frame[s.AREA]) == {TARIFF}
    first, second = fake.requests
    assert first.query["period_from"] == [f"{start:%Y-%m-%dT%H:%M:%SZ}"] and second.query["page"] == ["2"]
    assert second.path == RATES_PATH  # the next page is asked of DER_OCTOPUS_URL, as the first


def test_a_429_is_waited_out_as_retry_after_asks_then_the_answer_is_read(fake):
    start, end = utc("2026-06-01T22:00"), utc("2026-06-02T00:00")
    fake.route(RATES_PATH, Reply(429, {"detail": "Request was throttled."}, headers={"Retry-After": "7"}),
               *agile_pages(fake.url, agile_results(start, end), size=100))
    waits: list[float] = []
    frame = OctopusAgile(PRODUCT, REGION, settings(fake, waits)).fetch(start, end)
    assert waits == [7.0] and len(frame) == 4 and len(fake.requests) == 2


def test_octopus_a_rate_without_its_price_names_the_service_and_field(fake):
    start, end = utc("2026-06-01T22:00"), utc("2026-06-02T00:00")
    results = agile_results(start, end)
    del results[2]["value_inc_vat"]
    fake.route(RATES_PATH, Reply(200, {"count": 4, "next": None, "previous": None, "results": results}))
    with pytest.raises(MalformedResponse, match="Octopus Energy: the response has no field 'results.2.value_inc_vat'"):
        OctopusAgile(PRODUCT, REGION, settings(fake)).fetch(start, end)


@pytest.mark.parametrize("page, message", [
    ({"count": 0, "next": None, "previous": None, "results": None}, "field 'results' is not a list"),
    ({"count": 0, "next": 5, "previous": None, "results": []}, "field 'next' is 5; expected the next page's link"),
])
def test_octopus_a_page_whose_results_or_next_link_are_not_what_it_documents_is_malformed(fake, page, message):
    fake.route(RATES_PATH, Reply(200, page))
    with pytest.raises(MalformedResponse, match=f"Octopus Energy: {message}"):
        OctopusAgile(PRODUCT, REGION, settings(fake)).fetch(utc("2026-06-01T22:00"), utc("2026-06-02T00:00"))


# --- aWATTar ------------------------------------------------------------------------------------
# Bodies follow aWATTar's API page (https://www.awattar.at/services/api) and its example
# (https://apis.io/examples/awattar/awattar-market-data-example/): {"object": "list", "data":
# [{"start_timestamp", "end_timestamp", "marketprice", "unit": "Eur/MWh"}]}, epoch milliseconds.

def awattar_body(start: pd.Timestamp, end: pd.Timestamp, unit: str = "Eur/MWh") -> dict:
    starts = pd.date_range(start, end, freq="h", inclusive="left")
    return {"object": "list", "data": [
        {"start_timestamp": t.value // 10**6, "end_timestamp": (t + pd.Timedelta(hours=1)).value // 10**6,
         "marketprice": round(-5.12 + 3.5 * i, 2), "unit": unit} for i, t in enumerate(starts)]}


@pytest.mark.parametrize("area", ["AT", "DE"])
def test_awattar_market_prices_per_kwh_over_the_berlin_25_hour_day(fake, area):
    start, end = local_day("2026-10-25", "Europe/Berlin")
    fake.route("/v1/marketdata", Reply(200, awattar_body(start, end)))
    frame = price_source({"source": "awattar", "area": area}, settings(fake)).fetch(start, end)
    assert len(frame) == 25 and frame[s.END_TS].iloc[-1] == end
    np.testing.assert_allclose(frame[s.PRICE_PER_KWH], np.round(-5.12 + 3.5 * np.arange(25), 2) / 1000)
    assert (frame[s.PUBLISHED_AT] == utc("2026-10-24T11:00")).all()
    assert fake.requests[0].query == {"start": [str(start.value // 10**6)], "end": [str(end.value // 10**6)]}


def test_awattar_that_keeps_failing_is_unavailable_after_every_attempt(fake):
    fake.route("/v1/marketdata", Reply(503))
    start, end = local_day("2026-06-01", "Europe/Vienna")
    with pytest.raises(SourceUnavailable, match=r"aWATTar at .*/v1/marketdata: HTTP 503 after 4 attempt"):
        Awattar("AT", settings(fake)).fetch(start, end)
    assert len(fake.requests) == FAST.attempts


def test_awattar_in_another_unit_is_malformed_not_misread(fake):
    start, end = local_day("2026-06-01", "Europe/Vienna")
    fake.route("/v1/marketdata", Reply(200, awattar_body(start, end, unit="Eur/kWh")))
    with pytest.raises(MalformedResponse, match="aWATTar: data.0.unit is 'Eur/kWh'; expected 'Eur/MWh'"):
        Awattar("AT", settings(fake)).fetch(start, end)


# --- ComEd --------------------------------------------------------------------------------------
# Bodies follow ComEd's 5-Minute Price Data API page (https://hourlypricing.comed.com/hp-api/),
# whose output example is [{"millisUTC":"1434686700000","price":"2.0"}, …]: text values, cents
# per kWh, newest first.

def comed_body(first_end: pd.Timestamp, count: int) -> list[dict]:
    ends = first_end + pd.Timedelta(minutes=5) * np.arange(count)
    return [{"millisUTC": str(t.value // 10**6), "price": f"{2.0 + 0.1 * i:.1f}"} for i, t in enumerate(ends)][::-1]


def test_comed_five_minute_prices_end_at_their_stamp_and_are_known_then(fake):
    start, end = utc("2026-07-01T17:00"), utc("2026-07-01T18:00")
    fake.route("/api", Reply(200, comed_body(start + pd.Timedelta(minutes=5), 12)))
    frame = price_source({"source": "comed"}, settings(fake)).fetch(start, end)
    assert len(frame) == 12 and frame[dd.TS].iloc[0] == start and frame[s.END_TS].iloc[-1] == end
    assert (frame[s.PUBLISHED_AT] == frame[s.END_TS]).all() and set(frame[s.KIND]) == {"real_time"}
    np.testing.assert_allclose(frame[s.PRICE_PER_KWH], (2.0 + 0.1 * np.arange(12)) / 100)
    assert set(frame[s.CURRENCY]) == {"USD"}
    query = fake.requests[0].query  # Chicago wall time, both ends included
    assert query["type"] == ["5minutefeed"] and query["datestart"] == ["202607011205"]
    assert query["dateend"] == ["202607011300"]


def test_comed_a_price_that_is_not_a_number_names_the_field(fake):
    body = comed_body(utc("2026-07-01T17:05"), 3)
    body[1]["price"] = "n/a"
    fake.route("/api", Reply(200, body))
    with pytest.raises(MalformedResponse, match="ComEd: field 'price' holds a value that is not a number"):
        ComedRealTime(settings(fake)).fetch(utc("2026-07-01T17:00"), utc("2026-07-01T18:00"))


# --- a generic feed -----------------------------------------------------------------------------
# Bodies follow the field mapping documented in docs/operations.md, "Prices from outside
# services" (a JSON list of rows at a dot path, or CSV under a header).

@pytest.mark.parametrize("day, hours, published", [("2026-03-29", 23, "2026-03-28T12:00"),
                                                   ("2026-10-25", 25, "2026-10-24T11:00")])
def test_generic_json_with_local_wall_times_over_a_berlin_dst_day(fake, day, hours, published):
    start, end = local_day(day, "Europe/Berlin")
    walls = pd.date_range(start, end, freq="h", inclusive="left").tz_convert("Europe/Berlin").tz_localize(None)
    fake.route("/feed.json", Reply(200, {"data": {"prices": [
        {"from": f"{t:%Y-%m-%dT%H:%M}", "eur_mwh": 100.0 + i} for i, t in enumerate(walls)]}}))
    spec = {"source": "http", "name": "stadtwerk", "area": "DE_LU", "url": f"{fake.url}/feed.json",
            "params": {"from": "{start}"}, "rows": "data.prices", "time_field": "from", "time_zone": "Europe/Berlin",
            "price_field": "eur_mwh", "unit": "per_mwh", "currency": "EUR", "published": "day_before",
            "published_time": "13:00"}
    frame = price_source(spec, settings(fake)).fetch(start, end)
    assert len(frame) == hours and frame[dd.TS].iloc[0] == start and frame[s.END_TS].iloc[-1] == end
    assert frame[dd.TS].is_unique and (frame[s.END_TS] - frame[dd.TS] == pd.Timedelta(hours=1)).all()
    np.testing.assert_allclose(frame[s.PRICE_PER_KWH], (100.0 + np.arange(hours)) / 1000)
    assert (frame[s.PUBLISHED_AT] == utc(published)).all() and set(frame[s.SOURCE]) == {"stadtwerk"}
    assert fake.requests[0].query == {"from": [start.isoformat()]}


BERLIN_FALL_BACK = [("2026-10-25T01:00", "+02:00"), ("2026-10-25T02:00", "+02:00"), ("2026-10-25T02:00", "+01:00"),
                    ("2026-10-25T03:00", "+01:00")]


@pytest.mark.parametrize("stamps", [
    [wall + offset for wall, offset in BERLIN_FALL_BACK],  # each row's own offset, which changes at 03:00 CEST
    [wall for wall, _ in reversed(BERLIN_FALL_BACK)],  # wall times, newest first
], ids=["offsets-change", "walls-newest-first"])
def test_generic_feed_over_the_fall_back_hour_prices_each_utc_hour_once(fake, stamps):
    prices = [1.0, 2.0, 3.0, 4.0] if stamps[0].endswith("+02:00") else [4.0, 3.0, 2.0, 1.0]
    fake.route("/feed.json", Reply(200, [{"from": t, "eur_kwh": p} for t, p in zip(stamps, prices)]))
    spec = {"source": "http", "name": "stadtwerk", "area": "DE_LU", "url": f"{fake.url}/feed.json",
            "time_field": "from", "time_zone": "Europe/Berlin", "price_field": "eur_kwh", "unit": "per_kwh",
            "currency": "EUR", "interval_minutes": 60}
    frame = price_source(spec, settings(fake)).fetch(utc("2026-10-24T22:00"), utc("2026-10-25T04:00"))
    assert list(frame[dd.TS]) == list(pd.date_range(utc("2026-10-24T23:00"), periods=4, freq="h"))
    np.testing.assert_allclose(frame[s.PRICE_PER_KWH], [1.0, 2.0, 3.0, 4.0])


def test_a_price_row_with_a_null_time_is_malformed_not_dropped(fake):
    start, end = utc("2026-06-01T22:00"), utc("2026-06-02T00:00")
    body = awattar_body(start, end)
    body["data"][1]["start_timestamp"] = None
    fake.route("/v1/marketdata", Reply(200, body))
    with pytest.raises(MalformedResponse, match="aWATTar: field 'data.start_timestamp' is null in row 1; expected a time"):
        Awattar("AT", settings(fake)).fetch(start, end)


def test_generic_csv_in_cents_with_epoch_seconds_known_at_each_interval_end(fake):
    start = utc("2026-07-01T17:00")
    lines = ["start,end,cents"] + [f"{(start + pd.Timedelta(minutes=15 * i)).value // 10**9},"
                                   f"{(start + pd.Timedelta(minutes=15 * (i + 1))).value // 10**9},{3.5 + i}"
                                   for i in range(4)]
    fake.route("/prices.csv", Reply(200, "\n".join(lines), content_type="text/csv"))
    source = price_source({"source": "http", "area": "zone-7", "url": f"{fake.url}/prices.csv", "format": "csv",
                           "time_field": "start", "time_format": "epoch_s", "end_field": "end", "price_field": "cents",
                           "unit": "per_kwh", "cents": True, "currency": "USD", "kind": "real_time"}, settings(fake))
    assert isinstance(source, HttpPrices)
    frame = source.fetch(start, start + pd.Timedelta(hours=1))
    np.testing.assert_allclose(frame[s.PRICE_PER_KWH], [0.035, 0.045, 0.055, 0.065])
    assert (frame[s.PUBLISHED_AT] == frame[s.END_TS]).all() and frame[s.END_TS].iloc[-1] == start + pd.Timedelta(hours=1)


def test_generic_rows_missing_their_price_field_name_it(fake):
    fake.route("/feed.json", Reply(200, [{"t": "2026-07-01T17:00Z", "p": 1.0}, {"t": "2026-07-01T18:00Z"}]))
    source = price_source({"source": "http", "area": "x", "url": f"{fake.url}/feed.json", "time_field": "t",
                           "price_field": "p", "unit": "per_kwh", "currency": "EUR"}, settings(fake))
    with pytest.raises(MalformedResponse, match="http: the response has no field 'p'"):
        source.fetch(utc("2026-07-01T17:00"), utc("2026-07-01T19:00"))


# --- specs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, kind, name, area, currency", [
    ({"source": "entsoe", "area": "DE_LU"}, EntsoeDayAhead, "entsoe", "DE_LU", "EUR"),
    ({"source": "entsoe", "area": "10YAT-APG------L"}, EntsoeDayAhead, "entsoe", "10YAT-APG------L", "EUR"),
    ({"source": "octopus", "product": PRODUCT, "region": "C"}, OctopusAgile, "octopus", TARIFF, "GBP"),
    ({"source": "awattar", "area": "AT"}, Awattar, "awattar", "AT", "EUR"),
    ({"source": "comed"}, ComedRealTime, "comed", "ComEd", "USD"),
])
def test_a_spec_builds_its_adapter(spec, kind, name, area, currency):
    source = price_source(spec, HttpSettings(environ={"ENTSOE_API_KEY": KEY}))
    assert isinstance(source, kind) and (source.name, source.area, source.currency) == (name, area, currency)


@pytest.mark.parametrize("spec, message", [
    ({"source": "nordpool"}, "prices.source: unknown source 'nordpool'; expected one of entsoe, octopus, awattar, "
                             "comed, http"),
    ({"area": "AT"}, "prices.source: no source; expected one of"),
    ({"source": "octopus", "product": PRODUCT}, "prices: region: Field required"),
    ({"source": "octopus", "product": PRODUCT, "region": "O"}, "prices: region: String should match pattern"),
    ({"source": "entsoe", "area": "XX"}, "prices: area: unknown bidding zone 'XX'; expected one of AT, BE"),
    ({"source": "awattar", "area": "CH"}, "prices: area: Input should be 'AT' or 'DE'"),
    ({"source": "comed", "zone": "x"}, "prices: zone: unknown field"),
    ({"source": "http", "area": "x", "url": "http://h/p", "time_field": "t", "price_field": "p", "unit": "per_kwh",
      "currency": "EUR", "time_zone": "Mars/Olympus"}, "prices: time_zone: unknown time zone 'Mars/Olympus'"),
    ({"source": "http", "area": "x", "url": "http://h/p", "time_field": "t", "unit": "per_kwh", "currency": "EUR"},
     "prices: price_field: Field required"),
    ({"source": "http", "area": "x", "url": "http://h/p", "time_field": "t", "price_field": "p", "unit": "per_kwh",
      "currency": "EUR", "params": {"day": "{date}"}}, "prices: params: day: '{date}' cannot be filled"),
    ({"source": "http", "area": "x", "url": "http://h/p", "time_field": "t", "price_field": "p", "unit": "per_kwh",
      "currency": "EUR", "params": {"q": "{"}}, "prices: params: q: '{' cannot be filled"),
    (["entsoe"], "prices: expected an object with a \"source\" field, got list"),
])
def test_a_wrong_spec_is_one_config_error_line(spec, message):
    with pytest.raises(ConfigError) as caught:
        price_source(spec, HttpSettings(environ={"ENTSOE_API_KEY": KEY}))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


# --- storing and reading back ---------------------------------------------------------------------

def test_fetch_prices_asks_only_for_what_the_store_lacks(fake, store):
    day1, day2 = local_day("2026-06-01", "Europe/Berlin"), local_day("2026-06-02", "Europe/Berlin")
    until_noon = day2[0] + pd.Timedelta(hours=12)  # day 2 published only up to 12:00 UTC (a partial day)
    fake.route("/", Reply(200, entsoe_document(
        entsoe_series(*day1, "PT60M", {p: 50.0 for p in range(1, 25)}),
        entsoe_series(day2[0], until_noon, "PT60M", {p: 60.0 for p in range(1, 13)}))),
        Reply(200, entsoe_document(entsoe_series(*day2, "PT60M", {p: 70.0 for p in range(1, 25)}))),
        Reply(200, NO_DATA))
    source, window_end = entsoe(fake), day2[1] + pd.Timedelta(days=1)
    assert fetch_prices(store, source, day1[0], window_end) == 36 and len(fake.requests) == 1
    assert fetch_prices(store, source, day1[0], window_end) == 12 and len(fake.requests) == 2
    assert fake.requests[1].query["periodStart"] == [f"{until_noon:%Y%m%d%H%M}"]
    assert fetch_prices(store, source, day1[0], window_end) == 0 and len(fake.requests) == 3
    assert fake.requests[2].query["periodStart"] == [f"{day2[1]:%Y%m%d%H%M}"]
    assert fetch_prices(store, source, day1[0], day2[1]) == 0 and len(fake.requests) == 3  # all stored: no request
    stored = store.read_frame(s.PRICES, {s.SOURCE: "entsoe", s.AREA: "DE_LU"})
    assert len(stored) == 48 and stored[dd.TS].is_unique and stored[s.FETCHED_AT].notna().all()
    # day 2's first twelve hours keep the price first published for them; the rest are day 2's answer
    assert stored[s.PRICE_PER_KWH].tolist() == [0.05] * 24 + [0.06] * 12 + [0.07] * 12


def publication(published: pd.Timestamp, starts: pd.DatetimeIndex, prices, minutes: int = 60) -> pd.DataFrame:
    return pd.DataFrame({s.SOURCE: "http", s.AREA: "x", dd.TS: starts, s.END_TS: starts + pd.Timedelta(minutes=minutes),
                         s.PUBLISHED_AT: published, s.KIND: "day_ahead", s.PRICE_PER_KWH: prices, s.CURRENCY: "EUR"})


def test_published_prices_never_show_a_price_published_after_at(store):
    t0 = utc("2026-06-02T00:00")
    hours = pd.date_range(t0, periods=4, freq="h")
    first, revised = utc("2026-06-01T11:00"), utc("2026-06-01T15:00")
    store.upsert_frame(s.PRICES, publication(first, hours, 0.10))
    store.upsert_frame(s.PRICES, publication(revised, hours, 0.20))
    instants, step = pd.date_range(t0 + pd.Timedelta(hours=1), periods=5, freq="h"), pd.Timedelta(hours=1)

    def known(at: pd.Timestamp) -> list[float]:
        return published_prices(store, "http", "x", at, instants, step).tolist()

    nan = float("nan")
    assert np.isnan(known(first - pd.Timedelta(seconds=1))).all()
    np.testing.assert_array_equal(known(first), [0.10] * 4 + [nan])
    np.testing.assert_array_equal(known(revised - pd.Timedelta(seconds=1)), [0.10] * 4 + [nan])
    np.testing.assert_array_equal(known(revised), [0.20] * 4 + [nan])


def test_published_prices_average_finer_intervals_and_leave_partial_cover_missing(store):
    t0, published = utc("2026-06-02T00:00"), utc("2026-06-01T11:00")
    store.upsert_frame(s.PRICES, publication(published, pd.date_range(t0, periods=6, freq="15min"),
                                             [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], minutes=15))
    hourly = published_prices(store, "http", "x", published, pd.DatetimeIndex([t0 + pd.Timedelta(hours=1),
                                                                              t0 + pd.Timedelta(hours=2)]),
                              pd.Timedelta(hours=1))
    np.testing.assert_allclose(hourly.to_numpy(), [0.25, np.nan])  # the second hour is half covered
    quarters = published_prices(store, "http", "x", published, pd.date_range(t0, periods=3, freq="15min"),
                                pd.Timedelta(minutes=15))
    np.testing.assert_allclose(quarters.to_numpy(), [np.nan, 0.1, 0.2])  # t describes (t - 15 min, t]


def test_prices_fetched_from_a_service_are_known_only_from_their_publication(fake, store):
    start, end = local_day("2026-03-29", "Europe/Berlin")
    fake.route("/", Reply(200, entsoe_document(entsoe_series(start, end, "PT60M", {p: 40.0 for p in range(1, 24)}))))
    assert fetch_prices(store, entsoe(fake), start, end) == 23
    instants, step = pd.date_range(start + pd.Timedelta(hours=1), end, freq="h"), pd.Timedelta(hours=1)
    before = published_prices(store, "entsoe", "DE_LU", utc("2026-03-28T11:59"), instants, step)
    after = published_prices(store, "entsoe", "DE_LU", utc("2026-03-28T12:00"), instants, step)
    assert before.isna().all() and len(after) == 23 and (after == 0.04).all()


def test_past_the_publications_the_forecast_is_the_same_local_hours_mean_of_the_last_week(store):
    """Berlin's hours: a week of days published the day before at noon, each day's price its
    local hour plus the day's number; past the last day, each hour's mean over the seven."""
    zone = "Europe/Berlin"
    first = pd.Timestamp("2026-06-01", tz=zone)
    for day in range(8):
        local = pd.date_range(first + pd.Timedelta(days=day), periods=24, freq="h")
        store.upsert_frame(s.PRICES, publication((local[0] - pd.Timedelta(hours=12)).tz_convert(UTC),
                                                 local.tz_convert(UTC), local.hour + 0.01 * day))
    at = (first + pd.Timedelta(days=7, hours=13)).tz_convert(UTC)  # day 7 known, day 8 not yet published
    step = pd.Timedelta(hours=1)
    instants = pd.date_range(at + step, periods=36, freq="h")
    forecast = price_forecast(store, "http", "x", at, instants, step, zone)
    hours = (instants - step).tz_convert(zone).hour
    published = instants <= (first + pd.Timedelta(days=8)).tz_convert(UTC)
    np.testing.assert_allclose(forecast[published], hours[published] + 0.07)  # day 7's own prices
    np.testing.assert_allclose(forecast[~published], hours[~published] + 0.04)  # days 1 to 7: mean 0.04
    # Nothing known at all: NaN, as published_prices.
    before = (first - pd.Timedelta(hours=13)).tz_convert(UTC)  # before day 0 was published
    assert price_forecast(store, "http", "x", before, instants, step, zone).isna().all()


def test_an_hour_nobody_published_or_forecast_is_priced_at_the_known_mean_never_free(store):
    t0 = utc("2026-06-02T00:00")
    store.upsert_frame(s.PRICES, publication(utc("2026-06-01T11:00"), pd.date_range(t0, periods=2, freq="h"), [0.10, 0.30]))
    inputs = SiteInputs(store, "home-1", "UTC", prices=SimpleNamespace(name="http", area="x"))
    instants = pd.date_range(t0 + pd.Timedelta(hours=1), periods=4, freq="h")
    np.testing.assert_allclose(inputs.wholesale(utc("2026-06-01T12:00"), instants), [0.10, 0.30, 0.20, 0.20])
    assert inputs.wholesale(utc("2026-06-01T10:00"), instants).tolist() == [0.0] * 4  # nothing known yet


@pytest.mark.parametrize("now, stale", [
    ("2026-06-02T10:00", True),  # ENTSO-E has nothing for today: the plan would start on made-up prices
    ("2026-06-01T15:00", False),  # today's stored; tomorrow's "no data" is normal before its publication
])
def test_an_answer_without_the_price_in_force_now_marks_the_prices_stale_until_one_is_stored(fake, now, stale):
    """ENTSO-E answers "no data" (reason 999) for today and tomorrow: where the store holds no
    price for now either, the prices are stale, said in one line; the next refresh that gets
    today's prices stores them and clears the mark."""
    day1, day2 = local_day("2026-06-01", "Europe/Berlin"), local_day("2026-06-02", "Europe/Berlin")
    fake.route("/", Reply(200, NO_DATA), Reply(200, entsoe_document(entsoe_series(*day2, "PT60M", {p: 70.0 for p in
                                                                                                     range(1, 25)}))))
    with SQLiteCloudStore(":memory:") as store:
        today = publication(utc("2026-05-31T11:00"), pd.date_range(*day1, freq="h", inclusive="left"), [0.05] * 24)
        store.upsert_frame(s.PRICES, today.assign(**{s.SOURCE: "entsoe", s.AREA: "DE_LU"}))
        inputs = SiteInputs(store, "home-1", "Europe/Berlin", prices=entsoe(fake))
        assert inputs.refresh({}, utc(now)) == 0
        assert list(inputs.stale) == (["prices"] if stale else [])
        if stale:
            assert "entsoe DE_LU: no price stored for the hour before 2026-06-02T10:00Z" in inputs.stale["prices"]
            assert inputs.refresh({}, utc(now)) == 24 and inputs.stale == {}
