"""The planner's default forecaster: the trained models where the active version covers the
site, else naive, with why; and the reserve policy's house load taken from the models a site
plans with."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cloud.optimization import forecasters as fc
from der_core.config import SimulatorConfig, with_overrides

SITE = with_overrides(SimulatorConfig(), device_id="home-1")
START = pd.Timestamp("2024-06-10T00:00Z")
STORE = object()  # choose() only asks whether there is a cloud store


def registry(tmp_path, sites=("home-1",), until="2024-06-09 23:45:00+00:00", horizon_steps=96, active=True,
             skills=None, pv_sites=None, site_until=None) -> str:
    """A model registry holding one version whose manifest says what it learnt from, with
    ``skills`` (load, PV) its test-set metrics, and with ``pv_sites`` a PV model trained on those
    sites, the others left out for too few days."""
    folder = tmp_path / "models"
    (folder / "v1").mkdir(parents=True)
    ranges = {"train_range": ["2024-05-01 00:15:00+00:00", "2024-06-01 00:00:00+00:00"],
              "test_range": ["2024-06-01 00:15:00+00:00", until]}
    manifest = {"version": "v1", "horizon_steps": horizon_steps,
                "targets": {"load_kw": {"models": ["lightgbm"], "sites": list(sites), **ranges}}}
    if site_until is not None:  # each site split at its own time: home-1's own newest truths
        manifest["targets"]["load_kw"]["site_ranges"] = {"home-1": [site_until, site_until]}
    if pv_sites is not None:
        manifest["targets"]["solar_kw"] = {"models": ["lightgbm"], "sites": list(pv_sites), **ranges}
        manifest["sites_left_out"] = [{"target": "solar_kw", "device_id": d, "reason": "only 9.5 days of solar_generation_kw"}
                                      for d in ("home-1", "home-2") if d not in pv_sites]
    (folder / "v1" / "manifest.json").write_text(json.dumps(manifest))
    if skills is not None:
        metrics = {"load_kw": {"lightgbm": {"all_hours": {"skill": skills[0]}}},
                   "solar_kw": {"lightgbm": {"all_hours": {"skill": 0.5}, "daytime": {"skill": skills[1]}}}}
        (folder / "v1" / "metrics.json").write_text(json.dumps(metrics))
    if active:
        (folder / "ACTIVE").write_text("v1\n")
    return str(folder)


@pytest.mark.parametrize(("changes", "store", "choice", "reason"), [
    ({}, STORE, "models", "active models in {folder}"),
    ({}, None, "naive", "no cloud store to forecast from"),
    ({"active": False}, STORE, "naive", "no trained models in {folder}"),
    ({"sites": ("home-2",)}, STORE, "naive", "the active models in {folder} were not trained on home-1"),
    ({"horizon_steps": 48}, STORE, "naive", "the active models in {folder} forecast 12 h in 15-minute steps, not 24 h in 15-minute steps"),
    ({"until": "2024-06-10 00:45:00+00:00"}, STORE, "models", "active models in {folder}"),  # within the slack
    ({"until": "2024-06-20 00:00:00+00:00"}, STORE, "naive",
     "the active models in {folder} learnt from readings up to 2024-06-20 00:00Z, after 2024-06-10 00:00Z"),
    ({"skills": (0.17, 0.11)}, STORE, "models", "active models in {folder}"),
    ({"skills": (-0.03, 0.11)}, STORE, "naive",
     "the active models in {folder} forecast the load no better than same time yesterday on their test days (skill -0.03)"),
    ({"skills": (0.17, -0.16)}, STORE, "models", "active models in {folder}; PV as the naive forecaster has it, the PV "
     "model being no better than same time yesterday on its test days (skill -0.16)"),
    ({"until": "2024-06-20 00:00:00+00:00", "site_until": "2024-06-09 23:45:00+00:00"}, STORE, "models",
     "active models in {folder}"),  # another site's newer truths are not home-1's
    ({"pv_sites": ("home-1",)}, STORE, "models", "active models in {folder}"),
    ({"pv_sites": ("home-2",)}, STORE, "models", "active models in {folder}; PV as the naive forecaster has it, the "
     "solar_kw model was not trained on home-1: only 9.5 days of solar_generation_kw"),
])
def test_auto_is_the_models_where_they_cover_the_site_else_naive(tmp_path, changes, store, choice, reason):
    folder = registry(tmp_path, **changes)
    chosen = fc.choose(fc.AUTO, SITE, store, folder, START)
    assert chosen == fc.Choice(choice, reason.format(folder=folder))


@pytest.mark.parametrize(("until", "note"), [
    ("2024-06-09 23:45:00+00:00", ""),
    ("2024-06-20 00:00:00+00:00", "; they learnt from readings up to 2024-06-20 00:00Z, after 2024-06-10 00:00Z: these "
                                  "days were in their training, so the figures are what they remember, not a forecast's"),
])
def test_models_asked_for_by_name_are_taken_and_said_to_remember_days_they_learnt_from(tmp_path, until, note):
    """A backtest with --forecaster models over the models' own training days scores their
    memory: taken as asked, but the reason shown with the figures says so."""
    folder = registry(tmp_path, until=until)
    assert fc.choose("models", SITE, STORE, folder, START) == fc.Choice("models", "--forecaster models" + note)
    assert fc.choose("naive", SITE, STORE, folder, START) == fc.Choice("naive", "--forecaster naive")


def test_models_three_weeks_behind_the_plan_are_taken_and_said_to_be_old(tmp_path):
    folder = registry(tmp_path)  # learnt up to 2024-06-09 23:45
    assert fc.choose(fc.AUTO, SITE, STORE, folder, START + pd.Timedelta(days=3)).reason == f"active models in {folder}"
    assert fc.choose(fc.AUTO, SITE, STORE, folder, START + pd.Timedelta(days=20)) == fc.Choice(
        "models", f"active models in {folder}; they learnt from readings up to 2024-06-09, 20 days before "
                  "(`run_model_training.py --train` renews them)")


@pytest.mark.parametrize(("minutes", "choice"), [(30, "models"), (60, "models"), (20, "naive"), (5, "naive")])
def test_the_models_serve_steps_made_of_whole_quarter_hours(tmp_path, minutes, choice):
    folder = registry(tmp_path)
    chosen = fc.choose(fc.AUTO, SITE, STORE, folder, START, step=pd.Timedelta(minutes=minutes))
    assert chosen.name == choice
    if choice == "naive":
        assert chosen.reason.endswith(f"forecast 24 h in 15-minute steps, not 24 h in {minutes}-minute steps")


class _Issued(fc.ModelsForecaster):
    """The models' adapter over a fixed issue: load k kW at the k-th quarter hour after
    START, the sixth left out (a quarter hour the models give nothing for)."""

    def _loaded(self):
        return type("Version", (), {"manifest": {"horizon_steps": 96}})()


def test_a_half_hourly_plan_takes_the_mean_of_the_models_two_quarter_hours(monkeypatch):
    from cloud.forecasting import issue

    def issued(store, device_id, issued_at, horizon_steps, **_):
        ends = pd.date_range(issued_at + fc.MODELS_STEP, periods=horizon_steps, freq="15min")
        load = np.arange(1.0, horizon_steps + 1)
        load[5] = np.nan
        return pd.DataFrame({"target_ts": ends, "load_kw_p50": load, "target": "x"})

    monkeypatch.setattr(issue, "forecast_next_day", issued)
    halves = pd.date_range(START + pd.Timedelta(minutes=30), periods=4, freq="30min")
    np.testing.assert_array_equal(_Issued(SITE, STORE).load_kw(START, halves), [1.5, 3.5, np.nan, 7.5])
    with pytest.raises(fc.ForecasterUnavailable, match="the models forecast 15-minute steps, which make no 20-minute step"):
        _Issued(SITE, STORE).load_kw(START, pd.date_range(START + pd.Timedelta(minutes=20), periods=4, freq="20min"))


@pytest.mark.parametrize(("pv_skill", "learnt"), [(0.2, True), (-0.1, False), (None, True)])
def test_a_pv_model_no_better_than_yesterday_leaves_the_pv_to_the_naive_forecast(monkeypatch, pv_skill, learnt):
    from cloud.forecasting import issue

    def issued(store, device_id, issued_at, horizon_steps, **_):
        ends = pd.date_range(issued_at + fc.MODELS_STEP, periods=horizon_steps, freq="15min")
        return pd.DataFrame({"target_ts": ends, "load_kw_p50": 1.0, "solar_kw_p50": 7.0, "target": "x"})

    metrics = {} if pv_skill is None else {"solar_kw": {"lightgbm": {"daytime": {"skill": pv_skill}}}}

    class Scored(fc.ModelsForecaster):
        def _loaded(self):
            return type("Version", (), {"manifest": {"horizon_steps": 96}, "metrics": metrics})()

    monkeypatch.setattr(issue, "forecast_next_day", issued)
    instants = pd.date_range(START + fc.MODELS_STEP, periods=96, freq="15min")
    frame = Scored(SITE, STORE)(START, instants)
    assert (frame[fc.LOAD] == 1.0).all()
    if learnt:
        assert (frame[fc.PV] == 7.0).all()
    else:
        np.testing.assert_allclose(frame[fc.PV], fc.pv_forecast(SITE, START, instants, None).generation_kw)
        assert frame[fc.PV].max() > 0 and frame[fc.PV].min() == 0  # the day's own curve, not the model's 7 kW


@pytest.mark.parametrize("name", ["naive", "models", "perfect"])
def test_a_named_forecaster_is_itself_even_where_models_cover_the_site(tmp_path, name):
    assert fc.choose(name, SITE, STORE, registry(tmp_path), START) == fc.Choice(name, f"--forecaster {name}")


def test_make_forecaster_resolves_auto_and_says_why(tmp_path):
    history = pd.DataFrame({fc.LOAD: np.ones(96 * 8)}, index=pd.date_range(START - pd.Timedelta(days=8), periods=96 * 8,
                                                                          freq="15min"))
    forecaster = fc.make_forecaster(fc.AUTO, SITE, history, model_dir=str(tmp_path / "none"), issued_from=START)
    assert (forecaster.name, forecaster.reason) == ("naive", "no cloud store to forecast from")
    with pytest.raises(Exception, match="forecaster 'oracle': expected one of auto, naive, perfect, models"):
        fc.make_forecaster("oracle", SITE, history)


class _Models(fc.ModelsForecaster):
    """The models' adapter with its P50 load given, as the registry's models would issue it:
    2 kW over their horizon's first 8 steps, nothing past it."""

    def load_kw(self, issued_at, instants):
        return np.where(np.arange(len(instants)) < 8, 2.0, np.nan)


def test_the_reserve_policys_house_load_is_the_models_where_they_reach_and_naive_past_them():
    instants = pd.date_range(START + pd.Timedelta(minutes=15), periods=16, freq="15min")
    history = pd.Series(0.5, index=pd.date_range(START - pd.Timedelta(days=8), START, freq="15min"))
    naive = fc.naive_load_kw(history, START, instants, SITE.timezone, fc.HOUSE_ANOMALY_READINGS)
    assert np.allclose(naive, 0.5)
    np.testing.assert_array_equal(fc.house_load_kw(None, history, START, instants, SITE.timezone), naive)
    np.testing.assert_array_equal(fc.house_load_kw(fc.NaiveForecaster(SITE, history), history, START, instants, SITE.timezone), naive)
    learnt = fc.house_load_kw(_Models(SITE, STORE), history, START, instants, SITE.timezone)
    np.testing.assert_array_equal(learnt, np.r_[np.full(8, 2.0), naive[8:]])


def test_a_site_without_house_load_is_told_how_to_give_it():
    """A home that imported its inverter's export alone has PV but no load to plan from."""
    instants = pd.date_range(START + pd.Timedelta(minutes=15), periods=4, freq="15min")
    only_later = pd.Series(0.5, index=[START + pd.Timedelta(hours=1)])
    with pytest.raises(fc.ForecasterUnavailable, match=r"no house load \(home_load_total_load_kw\) before .*: a plan "
                       r"needs the home's own; import it \(run_cloud_sync.py --import FILE --column-map "
                       r"COLUMN=home_load_total_load_kw\), or the grid flow beside the PV "
                       r"\(COLUMN=net_grid_flow_kw\)"):
        fc.naive_load_kw(only_later, START, instants, SITE.timezone)


def test_a_quiet_reading_after_a_busy_week_never_forecasts_less_than_the_standing_load():
    """The latest reading's departure from the usual holds for the next hours; far below a
    busy week's usual it would take the forecast to 0 kW, below anything the house drew."""
    stamps = pd.date_range(START - pd.Timedelta(days=8), START, freq="15min")
    busy = (stamps.hour >= 18) | (stamps.hour < 1)  # evenings until one in the morning
    history = pd.Series(np.where(busy, 2.5, 0.3), index=stamps)
    history.iloc[-1] = 0.3  # midnight, quiet tonight: 2.2 kW below the usual
    instants = pd.date_range(START + pd.Timedelta(minutes=15), periods=8, freq="15min")
    naive = fc.naive_load_kw(history, START, instants, "UTC")
    np.testing.assert_allclose(naive, 0.3)  # the usual less 2.2 kW, never below the week's lowest
