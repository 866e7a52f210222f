"""Hostile input to the dashboard's API: device ids of any characters and length, dates of any
shape, numbers out of range and parameters no route takes get a 4xx whose detail is one line
naming the parameter, never a 5xx or a traceback (the test client re-raises any exception a
route lets escape)."""

from __future__ import annotations

import string
from urllib.parse import quote, urlencode

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.dashboard.app import create_app
from cloud.store.postgres import PostgresCloudStore
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd
from tests.pg_fixtures import pg_url  # noqa: F401  (fixture)
from tests.test_dashboard_api import fill_store

SUFFIXES = ("", "/readings", "/forecasts", "/plan", "/savings")
PARAMETERS = ("start", "end", "hours")
#: How a 422's detail names what was wrong.
NAMED = ("path parameter device_id", "unknown query parameter", *(f"query parameter {p}" for p in PARAMETERS))


@pytest.fixture(scope="module")
def sqlite_app(tmp_path_factory):
    store = SQLiteCloudStore(tmp_path_factory.mktemp("dash-input") / "cloud.db")
    devices = [c.device_id for c in fill_store(store)]
    with TestClient(create_app(store)) as client:
        yield client, devices
    store.close()


def one_line_naming_a_parameter(response, *names: str) -> str:
    assert response.status_code < 500, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    assert len(detail) < 300, detail  # input is quoted cut short, never in full
    if response.status_code == 422:
        assert any(name in detail for name in names), detail
    return detail


@pytest.mark.parametrize("device, fragment", [
    ("bad id", "device_id 'bad id' is not valid"),
    ("x" * 5000, "(5002 characters)"),
    ("-leading-dash", "starting with a letter or digit"),
    ("é", "expected 1 to 64 letters"),
])
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_malformed_device_id_is_422_in_one_line(sqlite_app, device, fragment, suffix):
    client, _ = sqlite_app
    response = client.get(f"/api/sites/{quote(device, safe='')}{suffix}")
    assert response.status_code == 422
    detail = one_line_naming_a_parameter(response, "path parameter device_id")
    assert fragment in detail


def test_unknown_but_valid_device_id_is_404_quoting_it_cut_short(sqlite_app):
    client, _ = sqlite_app
    device = "a" * 64
    response = client.get(f"/api/sites/{device}/readings")
    assert response.status_code == 404
    assert response.json()["detail"] == f"unknown site {dd.shown(device)}; GET /api/sites lists the known ones"


@pytest.mark.parametrize("path, query, expected", [
    ("/api/sites/{d}/readings", "star=2024-06-12", "unknown query parameter 'star'; this route takes: end, hours, start"),
    ("/api/sites", "limit=5", "unknown query parameter 'limit'; this route takes: none"),
    ("/api/sites/{d}/readings", "hours=1&hours=2", "query parameter hours given 2 times ('1', '2'); expected it once"),
    ("/api/sites/{d}/readings", "start=yesterday",
     "query parameter start: expected an ISO 8601 date-time such as 2024-06-12T00:00:00Z, got 'yesterday'"),
    ("/api/sites/{d}/readings", "hours=abc", "query parameter hours: expected a number, got 'abc'"),
    ("/api/sites/{d}/readings", "hours=nan", "query parameter hours: expected a finite number, got 'nan'"),
    ("/api/sites/{d}/readings", "start=0001-01-01T00:00:00%2B05:00",
     "query parameter start: the window bound 0000-12-31T19:00:00+00:00 is outside years 1 to 9999 in UTC; "
     "expected a date-time inside them"),
    ("/api/sites/{d}/readings", "end=0001-01-02T00:00:00Z",
     "query parameter end/hours: the window bound 0000-12-31T00:00:00+00:00 is outside years 1 to 9999 in UTC; "
     "expected a date-time inside them"),
    ("/api/sites/{d}/readings", "end=9999-12-31T23:59:59-05:00",
     "query parameter end: the window bound 10000-01-01T04:59:59+00:00 is outside years 1 to 9999 in UTC; "
     "expected a date-time inside them"),
    ("/api/sites/{d}/readings", "start=" + "9" * 500, None),
])
def test_malformed_query_is_422_in_one_line(sqlite_app, path, query, expected):
    client, devices = sqlite_app
    response = client.get(f"{path.format(d=devices[0])}?{query}")
    assert response.status_code == 422
    detail = one_line_naming_a_parameter(response, *NAMED)
    if expected is not None:
        assert detail == expected


def test_far_but_valid_dates_answer_empty(sqlite_app):
    client, devices = sqlite_app
    response = client.get(f"/api/sites/{devices[0]}/readings?start=9999-12-30T00:00:00Z&end=9999-12-31T23:59:59Z")
    assert response.status_code == 200 and response.json()["count"] == 0


@pytest.mark.parametrize("end", ["1500-01-01T00:00:00Z", "0097-09-10T07:03:44.5Z", "9000-01-01T00:00:00Z"])
def test_a_fraction_of_an_hour_before_a_far_end_answers(sqlite_app, end):
    """Bounds outside what nanoseconds hold (before 1677, after 2262) stay in µs whatever
    fraction of an hour the window is."""
    client, devices = sqlite_app
    for hours in ("1e-9", "291.16272011630764", "0.5"):
        response = client.get(f"/api/sites/{devices[0]}/readings?end={end}&hours={hours}")
        assert response.status_code == 200 and response.json()["count"] == 0, response.text


# property-based: anything a client can put in a path or a query string -----------------------------

_dates = st.one_of(
    st.datetimes().map(lambda t: t.isoformat()),
    st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat()),
    st.dates().map(str),
    st.integers(min_value=-10**20, max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=60),
    st.text(alphabet=string.digits + "-:TZ+. ", max_size=40),
)
_values = {"start": _dates, "end": _dates, "hours": st.one_of(st.floats().map(str), st.text(max_size=20), _dates)}
_query = st.dictionaries(
    st.one_of(st.sampled_from(PARAMETERS), st.text(min_size=1, max_size=20)),
    st.one_of(_dates, st.text(max_size=30)),
    max_size=4,
).flatmap(lambda d: st.fixed_dictionaries({k: _values.get(k, st.just(v)) for k, v in d.items()}))


def _device(devices: list[str]):
    return st.one_of(st.sampled_from(devices), st.text(min_size=1, max_size=120),
                     st.text(alphabet=string.ascii_letters + string.digits + "_.:-", min_size=1, max_size=80))


def _check(client, devices, device: str, suffix: str, query: dict[str, str]) -> None:
    path = f"/api/sites/{quote(device, safe='')}{suffix}"
    response = client.get(path + ("?" + urlencode(query) if query else ""))
    assert response.status_code < 500, (path, query, response.text)
    if response.status_code >= 400:
        one_line_naming_a_parameter(response, *NAMED)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), suffix=st.sampled_from(SUFFIXES), query=_query)
def test_any_path_and_query_is_answered_without_a_5xx_sqlite(sqlite_app, data, suffix, query):
    client, devices = sqlite_app
    _check(client, devices, data.draw(_device(devices)), suffix, query)


@pytest.fixture(scope="module")
def postgres_app(pg_url):  # noqa: F811
    store = PostgresCloudStore(pg_url)
    devices = [c.device_id for c in fill_store(store)]
    with TestClient(create_app(store)) as client:
        yield client, devices
    store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), suffix=st.sampled_from(SUFFIXES), query=_query)
def test_any_path_and_query_is_answered_without_a_5xx_postgres(postgres_app, data, suffix, query):
    client, devices = postgres_app
    _check(client, devices, data.draw(_device(devices)), suffix, query)


def test_the_openapi_document_declares_the_one_line_refusals_the_routes_give(sqlite_app):
    """Every /api route declares 401, 404, 422 and 503 with a ``detail`` line, the body the
    app answers (not FastAPI's list of validation errors), so a client generated from the
    document reads the refusals it gets."""
    client, devices = sqlite_app
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in str(document)
    assert document["components"]["schemas"]["Problem"]["required"] == ["detail"]
    for path, operations in document["paths"].items():
        if path.startswith("/api"):
            for operation in operations.values():
                assert {"401", "404", "422", "503"} <= set(operation["responses"]), path
    refused = client.get(f"/api/sites/{devices[0]}/readings?hours=-1")
    assert refused.status_code == 422 and set(refused.json()) == {"detail"} and isinstance(refused.json()["detail"], str)
