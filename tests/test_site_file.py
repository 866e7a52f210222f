"""A declared site: the site file's validation, its row in the cloud store, and a real site
carried through the README's commands, from declaration to a plan inside its history."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import run_cloud_sync
import run_feature_engineering
import run_model_training
import run_optimizer
from cloud.optimization.forecasters import LOAD, PV, site_actuals
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd
from der_core.cli_support import run_cli
from der_core.config import build_config, site_record
from der_core.errors import ConfigError
from der_core.site_file import (
    build_site,
    declared_site,
    load_site_file,
    planning_config,
    site_kind,
    site_row,
)
from der_core.tariff import site_tariff
from der_physics.tariff import tariff_prices

SITE = {
    "device_id": "home-1",
    "location": {"latitude": 48.14, "longitude": 11.58, "altitude_m": 520.0},
    "timezone": "Europe/Berlin",
    "country": "DE",
    "currency": "EUR",
    "pv": {"capacity_kwp": 6.0, "tilt_degrees": 30.0, "azimuth_degrees": 180.0, "inverter_kw": 5.0},
    "battery": {"capacity_kwh": 10.0, "max_charge_kw": 4.0, "max_discharge_kw": 4.0, "round_trip_efficiency": 0.9,
                "min_soc": 10.0, "max_soc": 90.0},
    "ev_charger": None,
    "tariff": "default_tou",
}


AGILE = {"source": "octopus", "product": "AGILE-24-10-01", "region": "C"}


def with_(**changes):
    return {**SITE, **changes}


def nested(depth: int) -> dict:
    return {} if depth == 0 else {"x": nested(depth - 1)}


@pytest.mark.parametrize(("data", "message"), [
    (with_(tariff="flat"), "tariff: unknown tariff 'flat'; expected one of default_tou"),
    (with_(pv={**SITE["pv"], "capacity_kwp": "6"}), "pv.capacity_kwp: Input should be a valid number (got a string '6')"),
    (with_(battery={**SITE["battery"], "min_soc": 95.0}), "battery: min_soc (95.0) must not exceed max_soc (90.0)"),
    (with_(timezone="Mars/Olympus"), "timezone: unknown time zone 'Mars/Olympus'"),
    # Zones the database holds that name no place: the machine's own, and the unset one.
    (with_(timezone="localtime"), "timezone: time zone 'localtime' names no place"),
    (with_(timezone="Factory"), "timezone: time zone 'Factory' names no place"),
    (with_(battery={**SITE["battery"], "max_charge_kw": 1e308}),
     "battery.max_charge_kw: Input should be less than or equal to 100000"),
    (with_(battery={**SITE["battery"], "round_trip_efficiency": 0.01}),
     "battery.round_trip_efficiency: Input should be greater than or equal to 0.5"),
    # A battery that stores nothing: the plans would divide by its window.
    (with_(battery={**SITE["battery"], "min_soc": 20.0, "max_soc": 20.0}),
     "battery: min_soc (20.0) equals max_soc (20.0): the battery could store nothing"),
    (with_(battery={**SITE["battery"], "capacity_kwh": 5e-324}), "battery: capacity_kwh (4.94066e-324) is below 0.01 kWh"),
    (with_(country="XX"), "country: 'XX' is not a country with a public-holiday calendar"),
    (with_(seed=1), "seed: unknown field"),
    ({k: v for k, v in SITE.items() if k != "battery"}, "battery: Field required"),
    ([], "expected a JSON object at the top level, got list"),
    (with_(pv={"capacity_kwp": nested(40)}), "nested more than"),
    (with_(prices=AGILE), "prices: the tariff's import price is tou, and published prices price only a dynamic one"),
    (with_(weather="dark-sky"), "weather: unknown weather source 'dark-sky'; expected one of open-meteo, forecast-solar"),
    (with_(weather="forecast-solar", pv=None), "weather: Forecast.Solar forecasts a PV plane and the site declares no pv"),
    (with_(prices={"product": "AGILE-24-10-01"}), "prices: expected a price source's spec with a \"source\" field"),
    ({k: v for k, v in SITE.items() if k != "tariff"}, "tariff: Field required"),
    # A list or a scalar where an object belongs: what was given, not the class it would become.
    (with_(battery=[]), "battery: expected an object, got a list"),
    (with_(location=[48.14, 11.58]), "location: expected an object, got a list"),
    (with_(ev_charger="null"), "ev_charger: expected an object, got a string 'null'"),
    (with_(prices=[AGILE]), "prices: expected an object, got a list"),
    (with_(tariff={"import_price": {"kind": "tou", "periods": {"days": ["weekday"]}, "otherwise": 0.1},
                   "export_price": {"kind": "fixed", "price": 0.05}}),
     "tariff.import_price.tou.periods: expected a list, got an object"),
])
def test_a_bad_site_file_is_one_line_naming_the_field(data, message):
    with pytest.raises(ConfigError) as caught:
        build_site(data, source="site.json")
    assert str(caught.value).startswith("site.json: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_site_with_prices_and_no_tariff_pays_the_published_price_and_keeps_it_through_the_store():
    site = build_site({k: v for k, v in with_(prices=AGILE, currency="GBP", country="GB", timezone="Europe/London",
                                              weather="open-meteo").items() if k != "tariff"})
    imports, exports = tariff_prices(site.tariff, pd.DatetimeIndex(["2026-12-05T18:00Z"]), site.timezone, site.country,
                                     np.array([0.31]))
    assert (imports[0], exports[0]) == (0.31, 0.0)
    assert declared_site(site_row(site)) == site and site.weather.source == "open-meteo"


def test_a_price_source_in_another_currency_than_the_sites_is_one_line():
    from cloud.live.inputs import check_declaration

    site = build_site({k: v for k, v in with_(prices=AGILE).items() if k != "tariff"})  # EUR, Octopus is GBP
    with pytest.raises(ConfigError, match="prices: octopus prices are in GBP and the site's currency is EUR"):
        check_declaration(site)


@pytest.mark.parametrize("prices, message", [
    ({"source": "entsoe", "area": "XX"}, "prices: area: unknown bidding zone 'XX'"),
    ({"source": "entsoe", "area": "DE_LU", "colour": 1}, "prices: colour: unknown field"),
    (AGILE, "prices: octopus prices are in GBP and the site's currency is EUR"),
])
def test_a_wrong_price_source_names_the_site_file_as_every_other_field_does(tmp_path, monkeypatch, capsys,
                                                                            prices, message):
    """The price source is checked after validation (it needs the cloud's adapters), and its
    error still starts with the file, so a user with several site files knows which to open."""
    monkeypatch.setenv("ENTSOE_API_KEY", "key")
    monkeypatch.chdir(tmp_path)  # a relative name: the line is the file's, not a temporary folder's, which
    # the secret masking may touch where another test in this process used its words as a secret
    (tmp_path / "w3.json").write_text(json.dumps({k: v for k, v in with_(prices=prices).items() if k != "tariff"}))
    assert run_cli(run_cloud_sync.main, ["--site", "w3.json", "--cloud-db", "cloud.db"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: w3.json: {message}") and err.count("\n") == 1


def test_a_tariff_in_another_currency_than_the_sites_is_one_line():
    """The bill adds the tariff's prices up in the site's money, unconverted: a EUR tariff
    on a site declaring USD is refused; with the site's currency left null it is the tariff's."""
    import json
    from pathlib import Path

    tariff = json.loads((Path(__file__).parents[1] / "examples" / "tariff-dynamic-de.json").read_text())
    with pytest.raises(ConfigError, match="the site's currency is USD and its tariff's EUR; expected one currency"):
        build_site(with_(tariff=tariff, currency="USD"))
    assert planning_config(build_site(with_(tariff=tariff, currency=None))).currency == "EUR"


def test_a_site_whose_currency_is_its_tariffs_is_shown_in_it_where_it_is_planned_in_it():
    """With the site's currency null, a tariff in pounds makes its plans in pounds; the stored
    row said nothing of it, and the dashboard's list showed the country's euros."""
    from der_core.site_file import site_currency

    tariff = {"currency": "GBP", "import_price": {"kind": "fixed", "price": 0.25},
              "export_price": {"kind": "fixed", "price": 0.15}}
    site = build_site(with_(tariff=tariff, currency=None))
    assert planning_config(site).currency_code == "GBP"
    assert site_currency(site_row(site)) == "GBP"
    assert site_currency(site_row(build_site(with_(currency=None)))) == "EUR"  # no currency anywhere: the country's


def test_a_tariff_may_be_given_as_its_time_of_use_prices():
    prices = {"off_peak_price": 0.2, "shoulder_price": 0.3, "peak_price": 0.4, "base_feed_in_tariff": 0.08}
    config = planning_config(build_site(with_(tariff=prices)))
    weekday = pd.DatetimeIndex(["2024-05-08 03:00", "2024-05-08 12:00", "2024-05-08 18:00"]).tz_localize("Europe/Berlin")
    imports, exports = tariff_prices(site_tariff(config), weekday, config.timezone, config.country)
    assert imports.tolist() == [0.2, 0.3, 0.4] and exports.tolist() == pytest.approx([0.064, 0.08, 0.128])
    assert site_tariff(config).demand_charge_per_kw == 0.0
    assert config.grid_price.volatility == 0.0 and config.grid_price.spike_probability_per_day == 0.0


def test_a_declared_row_is_told_from_a_simulated_one():
    row = site_row(build_site(SITE))
    assert site_kind(row) == "declared" and declared_site(row) == build_site(SITE)
    assert site_kind(site_record(build_config({"seed": 1}))) == "simulated" and site_kind(None) == "none"
    assert set(row) == set(dd.SITE_FIELDS)


def test_a_home_without_equipment_declares_none_of_it():
    site = build_site(with_(pv=None, battery=None, ev_charger=None))
    row, config = site_row(site), planning_config(site)
    assert (row["pv_capacity_kw"], row["inverter_kw"], row["battery_capacity_kwh"], row["has_ev"]) == (0.0, None, 0.0, False)
    assert (config.solar.capacity_kw, config.battery.capacity_kwh, config.home_load.ev_charger_kw) == (0.0, 0.0, 0.0)
    assert config.battery.initial_soc == 50.0


def test_units_that_look_mixed_up_are_said_when_the_site_is_declared(tmp_path, capsys):
    """A battery of 13,500 kWh (Wh written as kWh) was declared without a word, and its plans
    expected hundreds of dollars a day; it is still declared, since a large system may be so."""
    slip = with_(battery={**SITE["battery"], "capacity_kwh": 13_500.0}, pv={**SITE["pv"], "capacity_kwp": 6000.0})
    path = tmp_path / "site.json"
    path.write_text(json.dumps(slip))
    assert run_cli(run_cloud_sync.main, ["--site", str(path), "--cloud-db", str(tmp_path / "c.db")]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[1:] == [
        "  warning: pv: 6000 kWp of panels on a 5 kW inverter (1200 times it): panels in W rather than kW?",
        "  warning: battery: 13500 kWh charged at 4 kW takes 3,375 h: a capacity in Wh (13.5 kWh)?"]
    assert build_site(SITE).doubts() == []


def test_cli_refuses_a_device_id_the_site_file_does_not_name(tmp_path, capsys):
    path = tmp_path / "site.json"
    path.write_text(json.dumps(SITE))
    code = run_cli(run_cloud_sync.main, ["--site", str(path), "--device-id", "other", "--cloud-db", str(tmp_path / "c.db")])
    assert code == 2 and "differs from the site file's device_id home-1" in capsys.readouterr().err
    assert load_site_file(path).device_id == "home-1"


def test_a_site_file_that_writes_a_field_twice_is_refused_and_nothing_is_declared(tmp_path, capsys):
    """JSON readers keep the last of two equal keys unsaid; which battery the owner meant
    cannot be told, so the file is refused before anything is written."""
    path = tmp_path / "site.json"
    text = json.dumps(SITE)
    path.write_text(text.replace('"battery": {', '"battery": {"capacity_kwh": 99.0, ', 1))
    db = tmp_path / "c.db"
    assert run_cli(run_cloud_sync.main, ["--site", str(path), "--cloud-db", str(db)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"error: {path}: field 'capacity_kwh' is written twice in one object; expected each field once"
    with SQLiteCloudStore(db) as store:
        assert store.sites() == []


DAYS = 22


def measured_csv(path, soc: bool) -> pd.DataFrame:
    """A stand-in for a real meter's file: a simulated home's load and PV, 15-minute, in kW,
    with a battery's SOC (30 % by night, 70 % by day, UTC) only when ``soc``."""
    config = build_config({"seed": 3, "timezone": "Europe/Berlin", "home_load": {"has_ev": False},
                           "solar": {"latitude": 48.14, "longitude": 11.58}})
    stamps = pd.date_range("2024-05-01", periods=DAYS * 96, freq="15min", tz="UTC")
    truth = site_actuals(config, stamps)
    frame = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), "pv_kw": truth[PV].round(4).to_numpy(),
                          "load_kw": truth[LOAD].round(4).to_numpy()})
    if soc:
        frame["soc"] = np.where(np.arange(len(frame)) % 96 < 48, 30.0, 70.0)
    frame.to_csv(path, index=False)
    return frame


@pytest.mark.parametrize(("battery", "soc", "first_soc"), [
    (True, True, 30.0),  # the measured SOC at the instant
    (True, False, 50.0),  # no SOC readings: the declared battery's start, the middle of its window
    (False, False, None),  # no battery: the bill without one
])
def test_a_real_site_goes_from_its_file_to_a_plan_inside_its_history(tmp_path, monkeypatch, capsys, battery, soc, first_soc):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FORECAST_MODEL_DIR", str(tmp_path / "models"))
    site = SITE if battery else with_(battery=None)
    (tmp_path / "site.json").write_text(json.dumps(site))
    measured_csv(tmp_path / "meter.csv", soc)
    db = ["--cloud-db", str(tmp_path / "cloud.db")]
    columns = "pv_kw=solar_generation_kw,load_kw=home_load_total_load_kw" + (",soc=battery_soc_percent" if soc else "")

    assert run_cli(run_cloud_sync.main, ["--site", "site.json", "--import", "meter.csv", "--column-map", columns, *db]) == 0
    assert "site home-1 declared" in capsys.readouterr().out
    assert run_cli(run_cloud_sync.main, ["--status", "--json", *db]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [(d[dd.DEVICE_ID], d["site"]) for d in status["devices"]] == [("home-1", "declared")]

    assert run_cli(run_feature_engineering.main, ["--once", "--lookback-days", "7", *db]) == 0
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        first = store.read_frame("der_features", equals={dd.DEVICE_ID: "home-1"})[dd.TS]
    assert len(first) > 6 * 96 and first.max() >= pd.Timestamp("2024-05-22T23:00", tz="UTC")
    assert run_cli(run_feature_engineering.main, ["--once", "--lookback-days", "14", *db]) == 0
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        longer = store.read_frame("der_features", equals={dd.DEVICE_ID: "home-1"})[dd.TS]
    assert longer.min() < first.min() - pd.Timedelta(days=6)  # the longer lookback reached back

    capsys.readouterr()
    assert run_cli(run_model_training.main, ["--train", *db]) == 0
    assert run_cli(run_model_training.main, ["--evaluate", *db]) == 0
    assert "on the newest data" in capsys.readouterr().out

    instant = "2024-05-15T06:00:00Z"
    assert run_cli(run_optimizer.main, ["--device-id", "home-1", "--start", instant, "--json", *db]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["state_from"] == "readings" and plan["start"].startswith("2024-05-15T06:00")
    assert run_cli(run_optimizer.main, ["--status", "--json", *db]) == 0  # a plan of past days, issued now, is listed
    listed = json.loads(capsys.readouterr().out)["plans"]
    assert [(p[dd.DEVICE_ID], p["first_step"][:16]) for p in listed] == [("home-1", "2024-05-15T06:00")]
    planned_soc = [step["soc_percent"] for step in plan["plan"]]
    assert np.isfinite(planned_soc).all()
    if battery:  # one step on from the start: at most 4 kW for 15 minutes, 10 % of 10 kWh
        assert planned_soc[0] == pytest.approx(first_soc, abs=10.0 + 1e-6) and plan["cost"]["total"] < plan["cost_without_battery"]
        assert plan["initial_soc_percent"] == pytest.approx(first_soc)
        assert plan["initial_soc_read_at"] == (instant.replace("Z", "+00:00") if soc else None)
        assert run_cli(run_optimizer.main, ["--device-id", "home-1", "--start", instant, *db]) == 0
        said = capsys.readouterr().out
        assert (f"battery starts at {first_soc:.0f}%: its reading at Wed 08:00" in said if soc else
                f"battery starts at {first_soc:.0f}%, the configured start (initial_soc): no battery_soc_percent "
                "reading in the 1 h before Wed 08:00" in said)
    else:
        assert plan["cost"]["total"] == pytest.approx(plan["cost_without_battery"])
        assert plan["summary"]["next_action"].startswith("no battery at this site")
    assert plan["summary"]["stale"] == {}  # planned at a reading
    # two days after the newest reading (2024-05-22T23:45Z): the plan says its readings are stale
    assert run_cli(run_optimizer.main, ["--device-id", "home-1", "--start", "2024-05-24T23:45:00Z", *db]) == 0
    assert ("readings stale since 2024-05-22T23:45Z (the newest, 48 h before the plan's start: the forecasts carry on "
            "from the days before it)") in capsys.readouterr().out.splitlines()[1]
    assert run_cli(run_optimizer.main, ["--device-id", "home-1", "--forecaster", "perfect", *db]) == 2
    assert capsys.readouterr().err.strip().endswith("--forecaster perfect: home-1 is a real site, and perfect foresight "
                                                    "replays a simulator, which it has not; expected --forecaster naive "
                                                    "or models")


def test_a_soc_reading_outside_the_declared_window_is_said_to_be(tmp_path, monkeypatch, capsys):
    """The battery reads 30 % where the site declares 40-90 %: the plan starts at 40 % and
    says the reading was outside the window, not that 40 % was read."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "site.json").write_text(json.dumps(with_(battery={**SITE["battery"], "min_soc": 40.0})))
    measured_csv(tmp_path / "meter.csv", soc=True)
    db = ["--cloud-db", str(tmp_path / "cloud.db")]
    columns = "pv_kw=solar_generation_kw,load_kw=home_load_total_load_kw,soc=battery_soc_percent"
    assert run_cli(run_cloud_sync.main, ["--site", "site.json", "--import", "meter.csv", "--column-map", columns, *db]) == 0
    capsys.readouterr()
    assert run_cli(run_optimizer.main, ["--device-id", "home-1", "--start", "2024-05-15T06:00:00Z", "--forecaster", "naive",
                                        *db]) == 0
    assert "battery starts at 40%: its reading at Wed 08:00, 30%, outside the declared 40-90% window" in \
        capsys.readouterr().out


def test_a_declared_site_without_readings_before_the_start_is_not_planned(tmp_path, capsys):
    (tmp_path / "site.json").write_text(json.dumps(SITE))
    db = ["--cloud-db", str(tmp_path / "cloud.db")]
    assert run_cli(run_cloud_sync.main, ["--site", str(tmp_path / "site.json"), *db]) == 0
    capsys.readouterr()
    assert run_cli(run_optimizer.main, ["--device-id", "home-1", "--start", "2024-05-15T06:00Z", *db]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: home-1: no readings before 2024-05-15T06:00") and "\n" not in err
    assert err.endswith("--import FILE --site FILE, or plan from a later --start")
    assert run_cli(run_optimizer.main, ["--device-id", "home-1", *db]) == 2  # from now, as the pipeline plans
    err = capsys.readouterr().err.strip()
    assert err.endswith("run_cloud_sync.py --import FILE --site FILE") and "--start" not in err


def test_a_declared_site_whose_readings_ended_long_before_the_start_is_told_where_they_end(tmp_path, capsys):
    (tmp_path / "site.json").write_text(json.dumps(SITE))
    measured_csv(tmp_path / "meter.csv", soc=False)
    db = ["--cloud-db", str(tmp_path / "cloud.db")]
    assert run_cli(run_cloud_sync.main, ["--site", str(tmp_path / "site.json"), "--import", str(tmp_path / "meter.csv"),
                                         "--column-map", "pv_kw=solar_generation_kw,load_kw=home_load_total_load_kw", *db]) == 0
    capsys.readouterr()
    assert run_cli(run_optimizer.main, ["--device-id", "home-1", "--start", "2025-01-01T00:00Z", *db]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: home-1: no readings in the ") and "\n" not in err
    assert err.endswith("its newest is 2024-05-22T23:45:00+00:00: plan after it with "
                        "run_optimizer.py --device-id home-1 --start 2024-05-22T23:45:00+00:00")


def test_an_undeclared_meter_is_not_planned_as_a_simulated_home(tmp_path, capsys):
    measured_csv(tmp_path / "meter.csv", soc=False)
    db = ["--cloud-db", str(tmp_path / "cloud.db")]
    assert run_cli(run_cloud_sync.main, ["--import", str(tmp_path / "meter.csv"), "--device-id", "meter-9",
                                         "--column-map", "pv_kw=solar_generation_kw,load_kw=home_load_total_load_kw", *db]) == 0
    capsys.readouterr()
    assert run_cli(run_optimizer.main, ["--device-id", "meter-9", *db]) == 2
    assert "holds its readings but no site; declare it with run_cloud_sync.py --site FILE" in capsys.readouterr().err


@pytest.mark.parametrize("currency", ["HRK", "JPY", "ZWG"])
def test_a_site_declares_any_currency_a_household_pays_in(currency):
    """The kuna is withdrawn (2023), yet older Croatian records are priced in it."""
    assert build_site(with_(currency=currency, tariff={"off_peak_price": 1, "shoulder_price": 2, "peak_price": 3,
                                                     "base_feed_in_tariff": 0.5})).currency == currency


@pytest.mark.parametrize("currency", ["BTC", "UDS", "XAU"])
def test_a_currency_no_household_pays_in_is_one_line(currency):
    with pytest.raises(ConfigError, match=f"currency: '{currency}' is not a currency code; expected an ISO 4217 code"):
        build_site(with_(currency=currency))


def _features_by_ts(store) -> pd.DataFrame:
    rows = store.read_frame("der_features", equals={dd.DEVICE_ID: "home-1"})
    return pd.DataFrame([json.loads(f) if isinstance(f, str) else f for f in rows["features"]],
                        index=pd.DatetimeIndex(rows[dd.TS])).sort_index()


@pytest.mark.parametrize(("change", "moved"), [
    ({"timezone": "Europe/London", "country": "GB", "currency": None}, ["hour"]),
    ({"pv": {**SITE["pv"], "capacity_kwp": 3.0}}, ["clearsky_kw"]),
    ({"battery": {**SITE["battery"], "capacity_kwh": 5.0}}, []),  # no feature reads the battery
])
def test_a_site_declared_again_has_its_features_rewritten_when_they_read_what_changed(tmp_path, capsys, change, moved):
    """The feature job writes each instant once (and the last hour again): a site declared
    again in another zone or with other panels kept the features of the old declaration for
    its whole history, and the forecasters trained on both."""
    path, db = tmp_path / "site.json", tmp_path / "c.db"
    path.write_text(json.dumps(SITE))
    assert run_cli(run_cloud_sync.main, ["--site", str(path), "--cloud-db", str(db)]) == 0
    stamps = pd.date_range("2024-05-01", periods=2 * 96, freq="15min", tz="UTC")
    with SQLiteCloudStore(db) as store:
        frame = pd.DataFrame({column: np.nan for column in dd.COLUMNS}, index=range(len(stamps)))
        frame[dd.DEVICE_ID], frame[dd.TS], frame[dd.SOLAR_KW], frame[dd.LOAD_TOTAL] = "home-1", stamps, 1.0, 0.5
        store.upsert_readings(dd.coerce_frame(frame))
    assert run_cli(run_feature_engineering.main, ["--once", "--lookback-days", "7", "--cloud-db", str(db)]) == 0
    with SQLiteCloudStore(db) as store:
        before = _features_by_ts(store)
    path.write_text(json.dumps(with_(**change)))
    capsys.readouterr()
    assert run_cli(run_cloud_sync.main, ["--site", str(path), "--cloud-db", str(db)]) == 0
    said = capsys.readouterr().out
    assert ("its features are written again from its first reading" in said) == bool(moved), said
    assert run_cli(run_feature_engineering.main, ["--once", "--lookback-days", "7", "--cloud-db", str(db)]) == 0
    with SQLiteCloudStore(db) as store:
        after = _features_by_ts(store)
    first_day = before.index < stamps[96]
    changed = [c for c in ("hour", "clearsky_kw") if not np.allclose(before.loc[first_day, c], after.loc[first_day, c])]
    assert changed == moved


def test_a_stored_declaration_this_version_no_longer_reads_stops_only_its_own_site(tmp_path, capsys, caplog):
    """A row declared under an older, looser rule (a zone since refused) raised for every
    site: the sync's status, the sync itself and the optimizer of any other site failed on it.
    It is still a declared site, and only its own plans are refused, saying how to mend it."""
    from cloud.live.inputs import SitesWeather
    from cloud.optimization.planner import stored_sites
    from cloud.sync.job import declared_devices

    db = tmp_path / "c.db"
    old = site_row(build_site(with_(device_id="home-2")))
    stored = json.loads(old["config_json"])
    stored["declared_site"]["timezone"] = "localtime"
    old["config_json"] = json.dumps(stored)
    with SQLiteCloudStore(db) as store:
        store.upsert_sites([site_row(build_site(SITE)), old])
        assert declared_devices(store) == {"home-1", "home-2"}
        assert list(stored_sites(store)) == ["home-1"]
        assert SitesWeather(store, fallback=None).declared == {}  # neither declares a weather service
        assert "site home-2 in the cloud store: timezone: time zone 'localtime' names no place" in caplog.text
        with pytest.raises(ConfigError, match="home-2 in the cloud store: timezone: .*; declare it again with "
                                              "run_cloud_sync.py --site FILE"):
            stored_sites(store, "home-2")
    assert site_kind(old) == "declared"
    assert run_cli(run_cloud_sync.main, ["--status", "--json", "--cloud-db", str(db)]) == 0


def test_a_stored_declaration_this_version_no_longer_reads_skips_only_its_own_features_and_models(tmp_path, caplog):
    """The feature job and the trainer read every site's panels and zone: one row declared
    under a looser rule made both fail for every site. That site alone is skipped, with the
    line that says to declare it again; asked for by name, it is refused."""
    from cloud.feature_engineering.job import run_features
    from cloud.feature_engineering.settings import FeatureSettings
    from cloud.forecasting.data import load_histories

    db = tmp_path / "c.db"
    old = site_row(build_site(with_(device_id="home-2")))
    stored = json.loads(old["config_json"])
    stored["declared_site"]["timezone"] = "localtime"
    old["config_json"] = json.dumps(stored)
    stamps = pd.date_range("2024-05-01", periods=3 * 96, freq="15min", tz="UTC")
    with SQLiteCloudStore(db) as store:
        store.upsert_sites([site_row(build_site(SITE)), old])
        for device in ("home-1", "home-2"):
            frame = pd.DataFrame({column: np.nan for column in dd.COLUMNS}, index=range(len(stamps)))
            frame[dd.DEVICE_ID], frame[dd.TS], frame[dd.SOLAR_KW], frame[dd.LOAD_TOTAL] = device, stamps, 1.0, 0.5
            store.upsert_readings(dd.coerce_frame(frame))
        result = run_features(store, FeatureSettings(lookback_days=7), now=stamps[-1])
        skipped = {site.device_id: site.skipped for site in result.sites}
        assert skipped["home-1"] is None and "declare it again with run_cloud_sync.py --site FILE" in skipped["home-2"]
        assert store.count_rows("der_features") > 0
        histories = load_histories(store, pd.Timedelta(minutes=15), pd.Timedelta(hours=2), min_days=1)
        assert [history.device_id for history in histories] == ["home-1"]
        with pytest.raises(ConfigError, match="home-2 in the cloud store: timezone: "):
            run_features(store, FeatureSettings(lookback_days=7, site_id="home-2"), now=stamps[-1])
