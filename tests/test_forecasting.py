"""Models, metrics, the time split, training on partial data and issuing forecasts."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cloud.forecasting import design as dz
from cloud.forecasting.issue import forecast_next_day, forecast_rows, write_forecasts
from cloud.forecasting.job import issue_forecasts, run_training, train_or_reuse
from cloud.forecasting.metrics import pinball, score
from cloud.forecasting.models import MODELS, load_model
from cloud.forecasting.registry import NoModels, Registry
from cloud.forecasting.settings import ForecastSettings
from cloud.forecasting.targets import LOAD_KW, PRICE_PER_KWH, SOLAR_KW
from cloud.forecasting.training import (
    NotEnoughData,
    TrainSettings,
    design_rows,
    time_split,
    train,
)
from cloud.forecasting.weather import SimulatedWeatherForecast
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd
from der_core.config import site_record
from tests.forecast_helpers import fill_store, fleet, histories

SMALL = {"n_estimators": 15}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_fleet():
    return fleet(3, 18, seed=5)


@pytest.fixture(scope="module")
def load_rows(small_fleet):
    settings = TrainSettings(issue_every=pd.Timedelta(hours=12))
    return design_rows(histories(*small_fleet), LOAD_KW, settings, SimulatedWeatherForecast())


def test_pinball_and_coverage_by_hand():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.column_stack([y - 1, y + 0.5, np.array([2.5, 3.0, 3.5, 3.9])])
    assert pinball(y, y + 0.5, 0.5) == pytest.approx(0.25)
    assert pinball(y, y - 1, 0.1) == pytest.approx(0.1)
    m = score(y, pred, np.array([0.25, 0.5, 24.0, 24.0]), reference=y + 1.0, capacity=np.full(4, 10.0))
    assert m["mae"] == pytest.approx(0.5) and m["rmse"] == pytest.approx(0.5)
    assert m["skill"] == pytest.approx(0.5) and m["nmae_capacity"] == pytest.approx(0.05)
    assert m["nmae_mean"] == pytest.approx(0.5 / 2.5)
    assert m["coverage_p10_p90"] == pytest.approx(0.75)  # the last truth (4.0) is above its P90 (3.9)
    assert set(m["mae_by_horizon_hour"]) == {1, 24}


def test_time_split_never_trains_on_a_truth_the_test_forecasts(load_rows):
    train_mask, test_mask, cutoffs = time_split(load_rows, 0.2)
    (cutoff,) = set(cutoffs)  # the sites cover the same days
    assert load_rows[train_mask][dz.TARGET_TS].max() <= cutoff <= load_rows[test_mask][dz.ISSUED_AT].min()
    issues = load_rows[dz.ISSUED_AT].unique()
    assert 0.15 < (np.sort(issues) >= cutoff).mean() < 0.3


def test_each_site_keeps_its_own_newest_days_for_the_test_whatever_the_others_cover(load_rows):
    """Two homes measured years apart: one cutoff for both, the newest share of all their
    times, left the older home with no test and the newer one with little training."""
    older = load_rows[load_rows[dd.DEVICE_ID] == load_rows[dd.DEVICE_ID].iloc[0]]
    years = pd.Timedelta(days=4 * 365)
    newer = older.assign(**{dd.DEVICE_ID: "newer", dz.ISSUED_AT: older[dz.ISSUED_AT] + years,
                            dz.TARGET_TS: older[dz.TARGET_TS] + years})
    rows = pd.concat([older, newer], ignore_index=True)
    train, test, cutoffs = time_split(rows, 0.2)
    for device, mine in rows.groupby(dd.DEVICE_ID):
        share = test[mine.index].mean()
        assert 0.15 < share < 0.3 and train[mine.index].mean() > 0.6, (device, share)
        assert mine[train[mine.index]][dz.TARGET_TS].max() <= cutoffs[device] <= mine[test[mine.index]][dz.ISSUED_AT].min()


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_saved_models_predict_the_same_in_a_fresh_process(kind, load_rows, tmp_path):
    model_cls = MODELS[kind]
    model = model_cls(0.0, SMALL) if kind == "lightgbm" else model_cls(0.0)
    model.fit(load_rows, load_rows[dz.Y].to_numpy())
    model.save(tmp_path / "model")
    sample = load_rows.sample(300, random_state=1)
    sample.to_pickle(tmp_path / "rows.pkl")
    np.save(tmp_path / "expected.npy", model.predict(sample))
    code = (
        "import sys, numpy as np, pandas as pd\n"
        "from pathlib import Path\n"
        "from cloud.forecasting.models import load_model\n"
        "folder = Path(sys.argv[1])\n"
        "pred = load_model(folder / 'model').predict(pd.read_pickle(folder / 'rows.pkl'))\n"
        "assert np.array_equal(pred, np.load(folder / 'expected.npy')), 'predictions differ'\n"
        "print('identical', pred.shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "identical (300, 3)" in done.stdout
    assert np.all(np.diff(np.load(tmp_path / "expected.npy"), axis=1) >= 0)  # quantiles never cross
    assert type(load_model(tmp_path / "model")) is model_cls


def test_training_skips_targets_no_site_has_and_says_why(small_fleet):
    configs, readings = small_fleet
    load_only = readings.copy()
    for column in (dd.SOLAR_KW, dd.PRICE, dd.SOLAR_IRRADIANCE):
        load_only[column] = np.nan
    sites = histories(configs, load_only)
    result = train(sites, TrainSettings(issue_every=pd.Timedelta(hours=12), backtest_folds=0, lgbm_params=SMALL),
                   SimulatedWeatherForecast())
    assert list(result.targets) == [LOAD_KW]
    assert f"no {dd.SOLAR_KW} readings" in result.skipped[SOLAR_KW]
    assert f"no {dd.PRICE} readings" in result.skipped[PRICE_PER_KWH]
    assert result.targets[LOAD_KW].metrics["lightgbm"]["all_hours"]["rows"] > 0


def test_training_with_too_little_history_names_what_is_needed(small_fleet):
    configs, readings = small_fleet
    short = readings[readings[dd.TS] < readings[dd.TS].min() + pd.Timedelta(days=5)]
    with pytest.raises(NotEnoughData, match=r"load_kw: edge-gateway-001-001: only 5.0 days of home_load_total_load_kw; "
                                            r"at least 14 are needed \(and 2 more sites\)"):
        train(histories(configs, short), TrainSettings(), SimulatedWeatherForecast())


def test_two_weeks_of_readings_short_of_the_fourteen_days_never_read_as_fourteen(small_fleet, tmp_path):
    """Two weeks of quarter hours span 13.99 days from the first reading to the last: the
    message must not say the store holds 14.0 while asking for 14."""
    from cloud.forecasting.data import load_histories
    from cloud.forecasting.settings import MAX_GAP, STEP

    configs, readings = small_fleet
    two_weeks = readings[readings[dd.TS] < readings[dd.TS].min() + pd.Timedelta(days=14)]
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        fill_store(store, configs, two_weeks)
        with pytest.raises(NotEnoughData, match=r"holds at most 13\.9 days of readings for a site \(3 sites\); "
                                                r"at least 14 days"):
            load_histories(store, STEP, MAX_GAP, 14.0)


def test_a_test_share_that_leaves_nothing_to_train_on_names_the_share(small_fleet):
    """Every issue time in the test but the first: no forecast's truth precedes the cutoff."""
    with pytest.raises(NotEnoughData, match=r"^load_kw: a test share of 0.999 \(FORECAST_TEST_SIZE\) of the issue times "
                                            r"left no training rows; expected a smaller share \(default 0.2\) or more "
                                            r"days of readings$"):
        train(histories(*small_fleet), TrainSettings(test_size=0.999, lgbm_params=SMALL), SimulatedWeatherForecast())


@pytest.fixture(scope="module")
def trained_store(small_fleet, tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    store = SQLiteCloudStore(str(folder / "cloud.db"))
    fill_store(store, *small_fleet)
    settings = ForecastSettings(model_dir=folder / "models")
    outcome = run_training(store, settings, train_settings=TrainSettings(
        issue_every=pd.Timedelta(hours=12), backtest_folds=1, lgbm_params=SMALL))
    yield store, settings, outcome
    store.close()


def test_training_registers_activates_and_issues_forecasts(trained_store, small_fleet):
    store, settings, outcome = trained_store
    registry = Registry(settings.model_dir)
    assert registry.active() == outcome.version
    folder = settings.model_dir / outcome.version
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["features"] == list(dz.FEATURES) and manifest["design_version"] == dz.DESIGN_VERSION
    assert set(manifest["targets"]) == {LOAD_KW, SOLAR_KW, PRICE_PER_KWH}
    load = manifest["targets"][LOAD_KW]
    assert sorted(load["site_ranges"]) == load["sites"]  # each site's own newest training and test truths
    for trained, tested in load["site_ranges"].values():
        assert load["train_range"][0] < trained < tested <= load["test_range"][1]
    assert (folder / "sample_week.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {"mae", "rmse", "pinball", "coverage_p10_p90", "skill"} <= set(metrics[SOLAR_KW]["lightgbm"]["daytime"])
    assert metrics[LOAD_KW]["backtest"], "the rolling-origin backtest ran"
    stored = store.read_frame(s.FORECASTS)
    assert len(stored) == outcome.forecast_rows == 3 * 3 * 96
    assert set(stored[s.MODEL]) == {f"lightgbm@{outcome.version}"}
    assert (stored[s.LOWER] <= stored[s.VALUE]).all() and (stored[s.VALUE] <= stored[s.UPPER]).all()
    assert store.last_run("model_training")["status"] == "ok"


def test_a_target_whose_model_left_the_site_out_is_not_forecast_for_it(trained_store, small_fleet):
    """A site left out of the PV model's training gets no PV forecast from it, and the frame
    says why; its load, which the load model learnt, is still forecast."""

    store, settings, _ = trained_store
    device = small_fleet[0][0].device_id
    version = Registry(settings.model_dir).load()
    manifest = json.loads(json.dumps(version.manifest))
    manifest["targets"][SOLAR_KW]["sites"].remove(device)
    manifest["sites_left_out"] = [{"target": SOLAR_KW, "device_id": device,
                                   "reason": "only 10.0 days of solar_generation_kw; at least 14 are needed"}]
    frame = forecast_next_day(store, device, "2024-04-15T10:00Z", version=dataclasses.replace(version, manifest=manifest))
    assert "solar_kw_p50" not in frame and frame["load_kw_p50"].notna().all()
    assert frame.attrs["missing_targets"][SOLAR_KW] == (f"the solar_kw model was not trained on {device}: only 10.0 "
                                                         "days of solar_generation_kw; at least 14 are needed")


def test_forecast_next_day_uses_only_readings_up_to_the_issue_time(trained_store, small_fleet):
    store, settings, _ = trained_store
    configs, readings = small_fleet
    device = configs[0].device_id
    tau = pd.Timestamp("2024-04-15 10:00", tz="UTC")
    from_store = forecast_next_day(store, device, tau, model_dir=str(settings.model_dir))
    future_changed = readings.copy()
    later = future_changed[dd.TS] > tau
    future_changed.loc[later, dd.LOAD_TOTAL] = 99.0
    from_frame = forecast_next_day(future_changed, device, tau, model_dir=str(settings.model_dir),
                                   site=site_record(configs[0]))
    pd.testing.assert_frame_equal(from_store, from_frame)
    assert list(from_store.columns) == ["target_ts", *(f"{t}_{q}" for t in (LOAD_KW, SOLAR_KW, PRICE_PER_KWH)
                                                        for q in ("p10", "p50", "p90"))]
    assert from_store["target_ts"].iloc[0] == tau + pd.Timedelta(minutes=15) and len(from_store) == 96
    assert (from_store[f"{SOLAR_KW}_p10"] >= 0).all()
    rows = forecast_rows(from_store)
    assert set(rows[s.TARGET]) == {LOAD_KW, SOLAR_KW, PRICE_PER_KWH} and (rows[s.ISSUED_AT] == tau).all()
    assert write_forecasts(store, from_store) == 3 * 96


def test_pipeline_calls_reuse_young_models(trained_store):
    store, settings, outcome = trained_store
    assert train_or_reuse(store, settings.model_dir, max_age=pd.Timedelta(days=1)) == f"reused models {outcome.version}"
    assert issue_forecasts(store, settings.model_dir, ["no-such-site"]) == 0


def test_no_active_model_is_a_named_error(tmp_path):
    with pytest.raises(NoModels, match="train one with"):
        Registry(tmp_path).load()


@pytest.mark.parametrize(("damaged", "text", "said"), [
    ("manifest.json", "junk", "manifest.json: cannot be read as the registry wrote it"),
    ("manifest.json", "{}", "manifest.json: holds no version and targets as the registry writes them"),
    ("metrics.json", "junk", "metrics.json: cannot be read as the registry wrote it"),
    (f"{LOAD_KW}/lightgbm/model.json", "junk", "a model cannot be read as training wrote it"),
])
def test_a_damaged_registry_is_no_usable_models_named_in_one_line(trained_store, tmp_path, damaged, text, said):
    """A disk or a hand that changed a registry file: every reader says which file and how to
    mend it (NoModels, so a plan takes the naive forecaster and says why), not a JSON error."""
    from cloud.optimization.forecasters import AUTO, choose
    from der_core.config import build_config

    _, settings, outcome = trained_store
    root = Path(shutil.copytree(settings.model_dir, tmp_path / "models"))
    (root / outcome.version / damaged).write_text(text)
    registry = Registry(root)
    with pytest.raises(NoModels, match=said) as caught:
        registry.load(outcome.version) if damaged != "metrics.json" else registry.metrics(outcome.version)
    assert "\n" not in str(caught.value) and "run_model_training.py --train" in str(caught.value)
    if damaged == "manifest.json":
        older = root / "20000101T000000Z"  # a damaged version beside a sound active one stops nothing
        shutil.copytree(root / outcome.version, older)
        sound = Registry(tmp_path / "sound")
        shutil.copytree(settings.model_dir, sound.root)
        shutil.copytree(older, sound.root / older.name)
        assert sound.manifest(outcome.version)["version"] == outcome.version
        assert sound.load(outcome.version).name == outcome.version
        assert said not in choose(AUTO, build_config({"seed": 1}), object(), model_dir=str(sound.root),
                                  step=pd.Timedelta(minutes=15), horizon=pd.Timedelta(hours=24)).reason
        choice = choose(AUTO, build_config({"seed": 1}), object(), model_dir=str(root), step=pd.Timedelta(minutes=15),
                        horizon=pd.Timedelta(hours=24))
        assert choice.name == "naive" and said in choice.reason


def test_a_weather_file_naming_a_site_the_store_lacks_says_so_once(trained_store, tmp_path, caplog):
    """Rows for a misspelt device id are never read: the site they meant gets no weather."""
    from cloud.forecasting.job import sites_weather

    store, settings, _ = trained_store
    known = store.sites()[0][dd.DEVICE_ID]
    path = tmp_path / "wx.csv"
    pd.DataFrame({"issued_at": ["2024-04-10T00:00Z"] * 2, "target_ts": ["2024-04-11T00:00Z"] * 2,
                  "temp_air_celsius": [10.0, 11.0], "clear_sky_index": [0.5, 0.6],
                  "device_id": [known, "golden-hom"]}).to_csv(path, index=False)
    with caplog.at_level("WARNING"):
        sites_weather(store, dataclasses.replace(settings, weather_csv=str(path)))
    said = [r.getMessage() for r in caplog.records if "weather forecast file" in r.getMessage()]
    assert said == [f"weather forecast file {path}: its rows for golden-hom are not used: no site of {store.label} "
                    "has that device_id"]
