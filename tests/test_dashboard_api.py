"""The dashboard's JSON API, /metrics, /health and token, through FastAPI's test client, on an
embedded store filled with simulated readings, forecasts and a plan from the real optimizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from swagger_ui_bundle import swagger_ui_path

from benchmarks.dashboard_data import STEPS, simulated, store_forecasts_and_plans
from cloud.dashboard.app import ROUTE_THREADS, HeldStaticFiles, create_app
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd
from der_core.config import SimulatorConfig, site_record
from der_core.sites import site_configs

START, END = "2024-06-10", "2024-06-13"


def fill_store(store, n_sites: int = 2, seed: int = 11) -> list[SimulatorConfig]:
    """Simulated sites with readings, forecasts, a plan and pipeline runs (one failure)."""
    configs = site_configs(SimulatorConfig(device_id="home", interval_seconds=900, seed=seed), n_sites)
    history = simulated(configs, START, END)
    store.upsert_sites([site_record(c) for c in configs])
    store.upsert_readings(history)
    store_forecasts_and_plans(store, configs, history, history[dd.TS].max() + pd.Timedelta(minutes=15))
    for job, status, rows in (("cloud_sync", "ok", len(history)), ("feature_engineering", "failed", 0),
                              ("feature_engineering", "ok", 500), ("feature_engineering", "failed", 0)):
        run = store.start_run(job)
        store.finish_run(run, status, rows, None if status == "ok" else "store unreachable")
    return configs


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    store = SQLiteCloudStore(tmp_path_factory.mktemp("dash") / "cloud.db")
    configs = fill_store(store)
    yield store, configs
    store.close()


@pytest.fixture
def client(filled):
    return TestClient(create_app(filled[0]))


@pytest.fixture
def portfolio_dir(tmp_path):
    run = tmp_path / "portfolio" / "run-1"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"sites": 50, "strategies": {"central": {"total_cost": 812.5}}}))
    for name in ("timesteps.csv", "sites.csv"):
        (run / name).write_text("")
    return tmp_path / "portfolio"


def test_health_names_the_store(client, filled):
    body = client.get("/health").json()
    assert body == {"status": "ok", "store": filled[0].label, "auth": False}


def test_openapi_lists_every_route(client):
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {"/health", "/metrics", "/api/sites", "/api/sites/{device_id}", "/api/sites/{device_id}/readings",
            "/api/sites/{device_id}/forecasts", "/api/sites/{device_id}/plan", "/api/sites/{device_id}/savings",
            "/api/pipeline", "/api/portfolio"} <= paths


def test_sites_report_equipment_and_coverage(client, filled):
    _, configs = filled
    sites = client.get("/api/sites").json()
    assert [site["device_id"] for site in sites] == sorted(c.device_id for c in configs)
    first = sites[0]
    assert first["readings"] == 3 * STEPS
    assert first["last_reading"] == "2024-06-12T23:45:00+00:00"
    assert first["battery_capacity_kwh"] == next(c for c in configs if c.device_id == first["device_id"]).battery.capacity_kwh
    assert client.get(f"/api/sites/{first['device_id']}").json() == first


def test_a_device_whose_site_is_not_declared_names_no_currency(tmp_path, filled):
    """Readings imported before a site file declared the home: their prices are in a currency
    nobody named, so none is shown (not the fallback's dollars); declared sites keep theirs."""
    from benchmarks.real_data import readings

    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        store.upsert_sites([site_record(filled[1][0])])
        stamps = pd.date_range("2024-06-01", periods=4, freq="15min", tz="UTC")
        store.upsert_readings(readings("imported-meter", pd.Series(0.5, index=stamps, name=dd.LOAD_TOTAL)))
        sites = {site["device_id"]: site for site in TestClient(create_app(store)).get("/api/sites").json()}
    assert sites["imported-meter"]["currency"] == ""
    assert sites[filled[1][0].device_id]["currency"] == "USD"


def test_a_home_without_a_load_meter_shows_the_load_its_plans_read(tmp_path):
    """A utility meter's half-hourly grid flow and an inverter's quarter-hourly PV, no load
    meter: the page's load is the balance the jobs take (each half hour's flow held over its
    quarter hours, plus the PV), and the PV is 0 in the dark, where the inverter logs nothing."""
    from benchmarks.real_data import readings

    site = {dd.DEVICE_ID: "uk-home", "latitude": 51.45, "longitude": -0.1, "timezone": "Europe/London",
            "country": "GB", "pv_capacity_kw": 3.4, "tilt_degrees": 40.0, "azimuth_degrees": 180.0,
            "battery_capacity_kwh": 0.0, "has_ev": False}
    halves = pd.date_range("2024-06-01T00:30Z", "2024-06-01T12:00Z", freq="30min")
    quarters = pd.date_range("2024-06-01T05:15Z", "2024-06-01T12:00Z", freq="15min")  # the inverter wakes at dawn
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        store.upsert_sites([site])
        store.upsert_readings(readings("uk-home", pd.Series(0.4, index=halves, name=dd.NET_GRID_FLOW)),
                              fields=[dd.NET_GRID_FLOW])
        store.upsert_readings(readings("uk-home", pd.Series(1.5, index=quarters, name=dd.SOLAR_KW)), fields=[dd.SOLAR_KW])
        body = TestClient(create_app(store)).get("/api/sites/uk-home/readings?hours=24").json()["series"]
    at = {ts: k for k, ts in enumerate(body["ts"])}
    midnight, morning = at["2024-06-01T01:00:00+00:00"], at["2024-06-01T11:45:00+00:00"]
    assert body[dd.LOAD_TOTAL][midnight] is None and body["house_load_kw"][midnight] == pytest.approx(0.4)
    assert body[dd.SOLAR_KW][midnight] is None and body["pv_kw"][midnight] == 0.0
    assert body["house_load_kw"][morning] == pytest.approx(0.4 + 1.5)  # 11:30-12:00's flow, this quarter's PV


def test_readings_default_to_the_last_48_hours(client, filled):
    device = filled[1][0].device_id
    body = client.get(f"/api/sites/{device}/readings").json()
    stored = filled[0].read_readings(device)
    assert body["count"] == 2 * STEPS
    assert body["series"]["ts"][0] == "2024-06-11T00:00:00+00:00"
    assert body["series"]["ts"][-1] == "2024-06-12T23:45:00+00:00"
    expected = stored[dd.SOLAR_KW].tail(2 * STEPS).round(4).tolist()
    assert body["series"][dd.SOLAR_KW] == expected


@pytest.mark.parametrize("query, count", [
    ("start=2024-06-12T00:00:00Z&end=2024-06-12T06:00:00Z", 24),
    ("start=2024-06-12T00:00:00&end=2024-06-12T06:00:00", 24),  # naive means UTC
    ("hours=6", 24),
    ("hours=6&end=2024-06-11T00:00:00%2B00:00", 24),
])
def test_readings_honour_the_range(client, filled, query, count):
    device = filled[1][1].device_id
    assert client.get(f"/api/sites/{device}/readings?{query}").json()["count"] == count


@pytest.mark.parametrize("query, reason", [
    ("start=2024-06-12T06:00:00Z&end=2024-06-12T00:00:00Z", "must be after start"),
    ("start=2024-06-12T00:00:00Z&end=2024-06-12T00:00:00Z", "must be after start"),
    ("start=2024-01-01T00:00:00Z&end=2024-06-12T00:00:00Z", "31-day maximum"),
    ("start=2024-06-12T00:00:00Z&hours=3", "either start or hours"),
    ("start=yesterday", "query parameter start: expected an ISO 8601 date-time"),
    ("hours=-1", "greater than 0"),
    ("hours=100000", "less than or equal"),
])
def test_bad_ranges_are_422_with_a_reason(client, filled, query, reason):
    device = filled[1][0].device_id
    response = client.get(f"/api/sites/{device}/readings?{query}")
    assert response.status_code == 422
    assert reason in json.dumps(response.json()["detail"])


@pytest.mark.parametrize("suffix", ["", "/readings", "/forecasts", "/plan", "/savings"])
def test_unknown_site_is_404(client, suffix):
    response = client.get(f"/api/sites/no-such-site{suffix}")
    assert response.status_code == 404
    assert "unknown site 'no-such-site'" in response.json()["detail"]


def test_forecasts_carry_bands(client, filled):
    device = filled[1][0].device_id
    targets = client.get(f"/api/sites/{device}/forecasts").json()["targets"]
    assert set(targets) == {"load_kw", "solar_kw", "price_per_kwh"}
    load = targets["load_kw"]
    assert load["model"] == "seasonal_naive" and len(load["series"]["ts"]) == STEPS
    assert load["series"]["ts"][0] == "2024-06-13T00:00:00+00:00"
    assert all(lo <= v <= hi for lo, v, hi in zip(load["series"]["p10"], load["series"]["value"], load["series"]["p90"]))


def test_forecasts_show_per_target_the_newest_issue_and_the_first_banded_model(tmp_path):
    """Per target: only the newest issue; of its models the first by name with a P10/P90 band,
    else the first by name; steps in time order."""
    from cloud.dashboard import queries as q

    store = SQLiteCloudStore(tmp_path / "cloud.db")
    old, new = pd.Timestamp("2024-06-01", tz="UTC"), pd.Timestamp("2024-06-01 06:00", tz="UTC")
    ts = pd.date_range("2024-06-01 07:00", periods=3, freq="15min", tz="UTC")
    rows = []
    for target, model, issued, band in (("load_kw", "zeta", new, True), ("load_kw", "alpha", new, False),
                                        ("load_kw", "alpha", old, True), ("solar_kw", "beta", new, False),
                                        ("solar_kw", "alpha", new, False), ("price_per_kwh", "alpha", old, True)):
        for i, stamp in enumerate(reversed(ts)):
            value = {"zeta": 1.0, "alpha": 2.0, "beta": 3.0}[model] + i + (10 if issued == old else 0)
            rows.append({dd.DEVICE_ID: "d", dd.TS: stamp, s.TARGET: target, s.MODEL: model, s.ISSUED_AT: issued,
                         s.VALUE: value, s.LOWER: value - 1 if band else None, s.UPPER: value + 1 if band else None})
    store.upsert_frame(s.FORECASTS, pd.DataFrame(rows))
    targets = q.forecasts(store, "d", None)["targets"]
    store.close()
    assert {t: (v["model"], v["issued_at"]) for t, v in targets.items()} == {
        "load_kw": ("zeta", "2024-06-01T06:00:00+00:00"), "solar_kw": ("alpha", "2024-06-01T06:00:00+00:00"),
        "price_per_kwh": ("alpha", "2024-06-01T00:00:00+00:00")}
    assert targets["load_kw"]["series"] == {"ts": [q.iso(t) for t in ts], "value": [3.0, 2.0, 1.0],
                                            "p10": [2.0, 1.0, 0.0], "p90": [4.0, 3.0, 2.0]}
    assert targets["solar_kw"]["series"]["p10"] == [None, None, None]


def test_plan_actions_follow_the_optimizer(client, filled):
    device = filled[1][0].device_id
    body = client.get(f"/api/sites/{device}/plan").json()
    series = body["series"]
    assert body["steps"] == STEPS and len(series["action"]) == STEPS
    assert sum(body["actions"].values()) == STEPS
    for action, power in zip(series["action"], series["battery_power_kw"]):
        if action in ("buy", "store"):
            assert power > 0
        elif action in ("sell", "discharge"):
            assert power < 0
    assert set(body["actions"]) <= {"buy", "sell", "store", "discharge", "idle"}
    assert body["actions"].get("idle", 0) < STEPS  # a TOU day gives the battery something to do


def test_the_plan_shown_is_the_newest_of_the_issues_kept(tmp_path):
    """Plans are kept, one an hour: the page shows the newest issue's steps and its summary,
    not a mix of the steps of every issue in the window."""
    from cloud.dashboard import queries as q
    from cloud.optimization.summary import StepInputs, summarize, write_summary

    store = SQLiteCloudStore(tmp_path / "cloud.db")
    site = {"device_id": "d", "timezone": "UTC", "currency": "EUR", "last_reading": "2024-06-01T06:00:00+00:00"}
    for hours, power in ((0, 1.0), (1, -2.0), (2, 0.5)):
        issued = pd.Timestamp("2024-06-01 04:00", tz="UTC") + pd.Timedelta(hours=hours)
        ts = pd.date_range(issued + pd.Timedelta(minutes=15), periods=8, freq="15min")
        store.upsert_frame(s.PLANS, pd.DataFrame({dd.DEVICE_ID: "d", dd.TS: ts, s.ISSUED_AT: issued, dd.BATTERY_POWER: power,
                                                  dd.NET_GRID_FLOW: 1.0, s.PLAN_PRICE: 0.2, s.OBJECTIVE: "cost"}))
        steps = StepInputs(ts, 0.25, ("store" if power > 0 else "discharge",) * 8, np.full(8, power), np.ones(8),
                           np.full(8, 0.2), np.zeros(8))
        write_summary(store, summarize("d", "UTC", "EUR", issued, steps, hours, 9.0, None))
    shown = q.plan(store, site, pd.Timestamp("2024-06-01", tz="UTC"))
    store.close()
    assert shown["issued_at"] == "2024-06-01T06:00:00+00:00" and shown["steps"] == 8
    assert set(shown["series"]["battery_power_kw"]) == {0.5} and shown["summary"]["bill"] == 2.0


def test_savings_compare_the_plan_with_an_idle_battery(client, filled):
    device = filled[1][0].device_id
    body = client.get(f"/api/sites/{device}/savings").json()
    assert body["available"] is True
    assert body["savings"] == pytest.approx(body["bill_without_battery"] - body["bill_with_plan"], abs=1e-3)
    assert body["savings"] > 0  # the optimizer never loses money against doing nothing


def test_pipeline_reports_freshness_and_failures(client):
    jobs = {job["job"]: job for job in client.get("/api/pipeline").json()["jobs"]}
    assert list(jobs) == ["cloud_sync", "feature_engineering"]
    assert jobs["feature_engineering"]["last_status"] == "failed"
    assert jobs["feature_engineering"]["last_error"] == "store unreachable"
    assert jobs["feature_engineering"]["failures"] == 2
    assert jobs["feature_engineering"]["rows"] == 500
    assert jobs["cloud_sync"]["rows"] == 2 * 3 * STEPS
    assert jobs["cloud_sync"]["age_seconds"] >= 0


def test_portfolio_absent_then_present(filled, portfolio_dir, tmp_path):
    empty = TestClient(create_app(filled[0], portfolio_dir=tmp_path / "missing")).get("/api/portfolio").json()
    assert empty["available"] is False and empty["results"] == []
    body = TestClient(create_app(filled[0], portfolio_dir=portfolio_dir)).get("/api/portfolio").json()
    assert body["available"] is True
    assert body["results"][0]["path"] == "run-1/summary.json"
    assert body["results"][0]["summary"]["strategies"]["central"]["total_cost"] == 812.5
    assert pd.Timestamp(body["results"][0]["modified"]).nanosecond == 0  # microseconds, as every time the API gives


def test_portfolio_lists_the_whole_runs_the_fleet_page_draws(filled, portfolio_dir):
    """A newer folder with a summary but not its series (a run stopped while writing, a copy)
    was the site page's newest run while the fleet page showed another."""
    partial = portfolio_dir / "run-2"
    partial.mkdir()
    (partial / "summary.json").write_text(json.dumps({"sites": 3, "strategies": {}}))
    body = TestClient(create_app(filled[0], portfolio_dir=portfolio_dir)).get("/api/portfolio").json()
    assert [r["path"] for r in body["results"]] == ["run-1/summary.json"]


def _samples(text: str) -> dict[tuple[str, str], float]:
    return {(sample.name, next(iter(sample.labels.values()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_expose_jobs_and_site_freshness(client, filled):
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert samples[("der_job_last_rows_processed", "cloud_sync")] == 2 * 3 * STEPS
    assert samples[("der_job_last_rows_processed", "feature_engineering")] == 500
    assert samples[("der_job_failed_runs", "feature_engineering")] == 2
    assert samples[("der_job_failed_runs", "cloud_sync")] == 0
    synced = filled[0].last_run("cloud_sync")["finished_at"]
    assert samples[("der_job_last_success_timestamp_seconds", "cloud_sync")] == pytest.approx(synced.timestamp())
    newest = pd.Timestamp("2024-06-12T23:45:00Z")
    for config in filled[1]:
        assert samples[("der_site_last_reading_timestamp_seconds", config.device_id)] == newest.timestamp()
        assert samples[("der_site_readings", config.device_id)] == 3 * STEPS
        assert samples[("der_site_data_age_seconds", config.device_id)] >= (pd.Timestamp("2025-01-01", tz="UTC") - newest).total_seconds()


def test_a_job_that_never_succeeded_has_no_last_success_samples(tmp_path):
    """Its failures count; rows "of its last successful run" would be a 0 no run processed."""
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        store.finish_run(store.start_run("optimizer"), "failed", 0, "no forecasts")
        samples = _samples(TestClient(create_app(store)).get("/metrics").text)
    assert samples[("der_job_failed_runs", "optimizer")] == 1
    assert ("der_job_last_rows_processed", "optimizer") not in samples
    assert ("der_job_last_success_timestamp_seconds", "optimizer") not in samples


def test_page_and_vendored_chart_library_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/vendor/uPlot.iife.min.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    assert client.get("/static/vendor/uPlot.iife.min.js").status_code == 200
    assert client.get("/static/app.js").status_code == 200


def test_routes_run_on_the_dashboards_own_few_threads(filled):
    app = create_app(filled[0])

    @app.get("/threads")
    async def threads() -> dict:
        import anyio.to_thread

        return {"tokens": anyio.to_thread.current_default_thread_limiter().total_tokens}

    with TestClient(app) as client:  # the lifespan sets them
        assert client.get("/threads").json() == {"tokens": ROUTE_THREADS} and ROUTE_THREADS < 40


def test_static_files_held_in_memory_are_the_files_on_disk_and_revalidate(tmp_path, filled):
    """The held copies answer with the file's bytes and headers, a 304 to its ETag, and a
    file changed on disk is read again."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "a.js").write_text("one();\n")
    app = create_app(filled[0])
    app.mount("/held", HeldStaticFiles(directory=static), name="held")
    client = TestClient(app)
    first = client.get("/held/a.js")
    assert first.status_code == 200 and first.text == "one();\n" and first.headers["content-length"] == "7"
    assert "javascript" in first.headers["content-type"] and first.headers["etag"]
    assert client.get("/held/a.js", headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    (static / "a.js").write_text("two(); three();\n")
    second = client.get("/held/a.js", headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 200 and second.text == "two(); three();\n" and second.headers["etag"] != first.headers["etag"]
    bundle = client.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 500_000
    assert bundle.content == (Path(swagger_ui_path) / "swagger-ui-bundle.js").read_bytes()


@pytest.mark.parametrize("path", ["/api/sites", "/api/pipeline", "/api/portfolio", "/metrics",
                                  "/api/sites/home-001/readings"])
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic s3cret-token", "s3cret-token"])
def test_token_protects_data_routes(filled, path, header):
    app = TestClient(create_app(filled[0], token="s3cret-token"))
    response = app.get(path, headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert "DASHBOARD_TOKEN" in response.json()["detail"]
    assert app.get(path, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200


def test_token_leaves_health_and_page_open(filled):
    app = TestClient(create_app(filled[0], token="s3cret-token"))
    assert app.get("/health").json()["auth"] is True
    assert app.get("/").status_code == 200


@pytest.mark.parametrize("path", ["/health", "/", "/fleet", "/docs", "/metrics", "/api/sites", "/api/sites/home-001/readings",
                                  "/static/app.js"])
def test_head_is_answered_as_get_without_the_body(client, path):
    """Monitors probe liveness with HEAD: a 405 read as the dashboard being down."""
    got, head = client.get(path), client.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"]


def test_head_needs_the_token_as_get_does(filled):
    app = TestClient(create_app(filled[0], token="s3cret-token"))
    assert app.head("/metrics").status_code == 401
    assert app.head("/metrics", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200


def test_store_failure_is_503(filled, tmp_path):
    store = SQLiteCloudStore(tmp_path / "broken.db")
    store.close()
    (tmp_path / "broken.db").write_bytes(b"not a database " * 1000)  # every new connection fails
    response = TestClient(create_app(store)).get("/api/sites")
    assert response.status_code == 503
    assert "cloud store unavailable" in response.json()["detail"]


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("OPTIONS", "/api/dr/events", "GET, HEAD, POST"),
    ("PUT", "/api/dr/events/evt-1", "DELETE, GET, HEAD"),
    ("POST", "/api/sites", "GET, HEAD"),
])
def test_a_method_a_path_does_not_take_is_405_naming_every_method_it_does(client, method, path, allowed):
    """``/api/dr/events`` is two routes (GET and POST); the refusal names both, not the first's."""
    response = client.request(method, path)
    assert response.status_code == 405 and response.headers["allow"] == allowed
    assert response.json() == {"detail": f"'{method}' is not a method of '{path}'; expected one of {allowed}"}
