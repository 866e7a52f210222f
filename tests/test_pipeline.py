"""run_pipeline.py end to end in a temporary folder: the chain completes on its defaults and
leaves a dashboard with data; reruns continue instead of rewriting; --continuous runs the
chain and stops cleanly on SIGTERM; bad flags are one line and exit status 2."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from cloud.dashboard.app import create_app
from cloud.optimization import forecasters as fc
from cloud.pipeline import pipeline_settings, runner, stages
from cloud.pipeline import settings as ps
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd
from der_core.config import SimulatorConfig
from der_core.errors import ConfigError, DERError, UsageError
from edge_gateway.mqtt import topics
from tests.mqtt_fixtures import Recorder, broker, clear_retained, unique_id  # noqa: F401
from tests.quick_start import copy_of, run_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "run_pipeline.py")
STEPS_PER_DAY = 86_400 // ps.DEFAULT_INTERVAL_S


def _run(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_script("run_pipeline.py", *args, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def first_run(quick_start_pipeline, tmp_path_factory):
    folder, done = quick_start_pipeline
    return copy_of(folder, tmp_path_factory, "pipeline"), done


def test_defaults_complete_and_print_a_summary(first_run):
    _, done = first_run
    lines = done.stdout.splitlines()
    for index, stage in enumerate(("simulate", "sync", "features", "forecasting", "planning"), start=1):
        assert any(line.startswith(f"[{index}/5] {stage}") for line in lines), done.stdout
    assert f"backfilled {ps.DEFAULT_SITES * ps.DEFAULT_DAYS * STEPS_PER_DAY} readings" in done.stdout
    assert "pipeline finished" in done.stdout and "expected savings across 3 sites" in done.stdout
    for k in range(1, ps.DEFAULT_SITES + 1):
        assert f"{ps.DEVICE_PREFIX}-{k:03d}" in done.stdout
    assert "python run_dashboard.py  (then open http://127.0.0.1:8000/)" in done.stdout


def test_plans_use_the_trained_forecasters(first_run):
    _, done = first_run
    forecasting = next(line for line in done.stdout.splitlines() if line.startswith("[4/5] forecasting"))
    planning = next(line for line in done.stdout.splitlines() if line.startswith("[5/5] planning"))
    assert " ok " in forecasting and "forecast rows for the next 24 h" in forecasting
    assert "(models forecasts: active models in " in planning


def test_leaves_a_dashboard_with_data(first_run):
    folder, _ = first_run
    store = SQLiteCloudStore(folder / "data" / "cloud.db")
    try:
        client = TestClient(create_app(store))
        sites = client.get("/api/sites").json()
        assert [s["device_id"] for s in sites] == [f"home-{k:03d}" for k in range(1, 4)]
        assert all(s["readings"] >= ps.DEFAULT_DAYS * STEPS_PER_DAY for s in sites)
        readings = client.get("/api/sites/home-001/readings").json()
        assert readings["count"] == 2 * STEPS_PER_DAY
        plan = client.get("/api/sites/home-001/plan").json()
        assert plan["steps"] == STEPS_PER_DAY and sum(plan["actions"].values()) == STEPS_PER_DAY
        assert client.get("/api/sites/home-001/savings").json()["available"] is True
        jobs = {j["job"]: j for j in client.get("/api/pipeline").json()["jobs"]}
        for job in ("simulate", "cloud_sync", "feature_engineering", "optimizer"):
            assert jobs[job]["last_status"] == "ok" and jobs[job]["rows"] > 0, jobs
    finally:
        store.close()


def test_rerun_continues_without_rewriting_history(first_run):
    folder, _ = first_run
    store = SQLiteCloudStore(folder / "data" / "cloud.db")
    try:
        before = store.read_readings("home-002")
    finally:
        store.close()
    done = _run(cwd=folder)
    assert done.returncode == 0, done.stderr
    store = SQLiteCloudStore(folder / "data" / "cloud.db")
    try:
        after = store.read_readings("home-002")
    finally:
        store.close()
    assert after[dd.TS].is_unique
    kept = after[after[dd.TS].isin(before[dd.TS])].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before.reset_index(drop=True))
    assert after[dd.TS].diff().dropna().eq(pd.Timedelta(seconds=ps.DEFAULT_INTERVAL_S)).all()


def test_status_lists_each_stage(first_run):
    folder, _ = first_run
    done = _run("--status", cwd=folder)
    assert done.returncode == 0, done.stderr
    for job in ("simulate", "cloud_sync", "feature_engineering", "optimizer"):
        assert job in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--sites", "0"], "--sites: '0' is not a positive whole number"),
    (["--days", "5"], "--days 5: expected 15 to 90 days"),
    (["--interval", "7"], "--interval 7: expected seconds that divide a day"),
    (["--once", "--continuous"], "not allowed with argument"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    # simulated homes' flags beside real sites were ignored without a word
    (["--site", "site.json", "--sites", "5"], "--site FILE plans declared sites instead of simulated homes, so --sites "
                                              "would change nothing; expected --site or the simulation's flags, not both"),
    (["--site", "site.json", "--seed", "3", "--sites", "2"], "so --sites and --seed would change nothing"),
])
def test_bad_flags_are_one_line(tmp_path, args, message):
    done = _run(*args, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


def test_the_pipeline_takes_the_jobs_store_file(tmp_path, monkeypatch, capsys):
    """``--cloud-db FILE``, as every job takes it: the store the README's import and jobs
    wrote is the one the pipeline runs on, not a new one in --data-dir."""
    import run_pipeline

    for name in ("SUPABASE_URL", "SUPABASE_KEY", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    mine = tmp_path / "mine.db"
    with SQLiteCloudStore(mine) as store:
        run = store.start_run("cloud_import", {"file": "meter.csv"})
        store.finish_run(run, "ok", 7)
    assert pipeline_settings(tmp_path / "data", cloud_db=mine).cloud.sqlite_path == str(mine)
    run_pipeline.main(["--status", "--cloud-db", str(mine), "--data-dir", str(tmp_path / "data")])
    assert "cloud_import" in capsys.readouterr().out
    assert not (tmp_path / "data" / "cloud.db").exists()


def test_a_site_file_whose_units_look_mixed_up_is_warned_of_as_run_cloud_sync_does(tmp_path, monkeypatch, capsys):
    """A battery of 100000 kWh charged at 0.001 kW is most likely Wh and W: the site file's
    doubts are said (not refused) by every command that reads it, the pipeline's too."""
    import run_pipeline

    for name in ("SUPABASE_URL", "SUPABASE_KEY", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    site = tmp_path / "big.json"
    site.write_text(json.dumps({
        "device_id": "home-9", "location": {"latitude": 52.52, "longitude": 13.40, "altitude_m": 34},
        "timezone": "Europe/Berlin", "country": "DE", "pv": None, "ev_charger": None, "tariff": "default_tou",
        "battery": {"capacity_kwh": 100000, "max_charge_kw": 0.001, "max_discharge_kw": 0.001,
                    "round_trip_efficiency": 0.9, "min_soc": 10, "max_soc": 90}}))
    mine = tmp_path / "mine.db"
    SQLiteCloudStore(mine).close()
    run_pipeline.main(["--site", str(site), "--status", "--cloud-db", str(mine), "--data-dir", str(tmp_path / "data")])
    assert capsys.readouterr().err == (f"warning: {site}: battery: 100000 kWh charged at 0.001 kW takes 100,000,000 h: "
                                       "a capacity in Wh (100 kWh)?\n")


def test_a_real_sites_models_are_the_jobs_own_and_simulated_ones_stay_in_the_data_folder(tmp_path, monkeypatch):
    """The models its owner trained with run_model_training.py are a declared site's, and a
    plan made by run_optimizer.py reads the pipeline's; a simulated fleet's stay apart."""
    monkeypatch.delenv("FORECAST_MODEL_DIR", raising=False)
    site = Path(__file__).resolve().parents[1] / "examples" / "site.json"
    assert pipeline_settings(tmp_path / "data").model_dir == tmp_path / "data" / "models"
    assert pipeline_settings(tmp_path / "data", site_files=[site]).model_dir == Path("trained_models")
    monkeypatch.setenv("FORECAST_MODEL_DIR", str(tmp_path / "mine"))
    assert pipeline_settings(tmp_path / "data").model_dir == tmp_path / "mine"
    assert pipeline_settings(tmp_path / "data", site_files=[site]).model_dir == tmp_path / "mine"


def test_continuous_schedules_every_job_at_its_cadence(tmp_path, monkeypatch):
    for name in ("SUPABASE_URL", "SUPABASE_KEY", "DATABASE_URL"):  # its own embedded cloud, nothing shared
        monkeypatch.delenv(name, raising=False)
    settings = pipeline_settings(tmp_path / "data", sites=1, days=15)
    with runner.ExitStack() as resources:
        ctx = runner.open_context(settings, resources)
        jobs = {job.name: job for job in runner.continuous_jobs(ctx, threading.Lock())}
        assert {n: j.interval_s for n, j in jobs.items()} == {
            "gateway": ps.DEFAULT_INTERVAL_S, "sync": 60, "features": 3600, "training": 86_400, "plans": 3600}
        jobs["gateway"].func()
        jobs["sync"].func()
        assert ctx.cloud.count_readings("home") == 1
        jobs["plans"].func()
        assert ctx.cloud.last_run("optimizer")["status"] == "ok"


def test_published_plans_reach_their_gateways_topic_and_the_run_is_recorded(tmp_path, broker):  # noqa: F811
    """``--publish``: each plan just made is sent retained on its device's setpoint topic, as
    ``run_optimizer.py --publish`` sends it, and the sending is a job run of its own."""
    from cloud.optimization.planner import PlanSettings, plan_site

    config = SimulatorConfig(device_id=unique_id("pipe"), seed=4)
    topic = topics.setpoint(config.device_id)
    recorder = Recorder(broker, [topic])
    try:
        settings = dataclasses.replace(pipeline_settings(tmp_path), mqtt=broker)
        assert stages.chain_of(settings)[-1] == ("publish", stages.publish)
        with SQLiteCloudStore(tmp_path / "cloud.db") as store:
            ctx = stages.Context(settings, None, store, [config])
            ctx.plans = [plan_site(config, PlanSettings(horizon_hours=6, execution="capped"))]
            report = stages.publish(ctx)
            assert report.message == f"1 plan(s) sent to {topic} on {broker.host}:{broker.port}"
            assert store.last_run(stages.PUBLISH_JOB)["status"] == "ok"
        assert recorder.wait_for(lambda: recorder.on(topic)), "no schedule arrived"
        assert json.loads(recorder.on(topic)[0].payload) == json.loads(ctx.plans[0].schedule().to_json())
        late = Recorder(broker, [topic])  # a gateway that connects after the plan was sent still gets it
        try:
            assert late.wait_for(lambda: late.on(topic)) and late.on(topic)[0].retain
        finally:
            late.close()
    finally:
        clear_retained(broker, [topic])
        recorder.close()


def test_a_broker_that_is_down_fails_the_sending_not_the_plans_or_the_schedule(tmp_path, monkeypatch):
    """Each hour's plans are stored whatever the broker does; a broker that is down fails the
    publish run with its reason, and the continuous job goes on to the next hour."""
    for name in ("SUPABASE_URL", "SUPABASE_KEY", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MQTT_HOST", "127.0.0.1")
    monkeypatch.setenv("MQTT_PORT", "1")  # nothing listens there
    settings = pipeline_settings(tmp_path / "data", sites=1, days=15, publish=True)
    with runner.ExitStack() as resources:
        ctx = runner.open_context(settings, resources)
        jobs = {job.name: job for job in runner.continuous_jobs(ctx, threading.Lock())}
        jobs["gateway"].func()
        jobs["sync"].func()
        jobs["plans"].func()  # logs the failure; raises nothing
        assert ctx.cloud.last_run("optimizer")["status"] == "ok"
        sent = ctx.cloud.last_run(stages.PUBLISH_JOB)
        assert sent["status"] == "failed" and sent["error"].startswith("1 of 1 plans not sent to 127.0.0.1:1 (0 sent); home: ")
        assert len(ctx.cloud.read_frame("dispatch_plans")) == 96


def test_a_bad_broker_setting_is_one_line_before_anything_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MQTT_PORT": "eighty"}
    done = subprocess.run([sys.executable, SCRIPT, "--publish", "--sites", "1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "MQTT_PORT" in done.stderr
    assert not (tmp_path / "data" / "cloud.db").exists()


def test_continuous_runs_the_chain_then_stops_on_sigterm(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("SUPABASE_URL", "SUPABASE_KEY", "DATABASE_URL"):
        env.pop(name, None)
    process = subprocess.Popen([sys.executable, SCRIPT, "--continuous", "--sites", "1", "--days", "15"], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            if line.startswith("[5/5]"):
                break
        scheduled = ""
        for line in process.stderr:
            scheduled += line
            # A signal is only handled once the scheduler runs (APScheduler logs this line then).
            if "Scheduler started" in line:
                break
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "gateway every 900s" in scheduled and "plans every 3600s" in scheduled
    store = SQLiteCloudStore(tmp_path / "data" / "cloud.db")
    try:
        # A clock boundary passing before the signal may add the gateway's next reading.
        assert store.count_readings() >= 15 * STEPS_PER_DAY
        assert store.last_run("optimizer")["status"] == "ok"
    finally:
        store.close()


def test_forecasting_without_history_is_unavailable_and_plans_stay_on_the_naive_forecaster(tmp_path):
    store = SQLiteCloudStore(tmp_path / "cloud.db")
    try:
        ctx = stages.Context(pipeline_settings(tmp_path), None, store, [])
        with pytest.raises(stages.StageUnavailable, match="forecasting not available yet: "):
            stages.forecasting(ctx)
        choice = fc.choose(fc.AUTO, SimulatorConfig(), store, str(ctx.settings.model_dir))
        assert choice == fc.Choice("naive", f"no trained models in {ctx.settings.model_dir}")
    finally:
        store.close()


def test_a_site_that_cannot_be_planned_never_holds_back_the_others(tmp_path, monkeypatch, caplog):
    """An aggregator's home whose gateway went quiet a month ago is named, and every other
    home is planned; only when no home can be planned does the stage fail. Each reason is
    said once: the stage's line names the first, a warning each of the others."""
    from types import SimpleNamespace

    from cloud.optimization import planner

    def run_plan(config, *_args):
        if config.device_id.startswith("quiet"):
            raise UsageError(f"{config.device_id}: no readings in the 34 days before 2026-12-06T18:45:00+00:00")
        return SimpleNamespace(step_starts=range(96), forecaster="naive", forecaster_reason="no models", stale={})

    monkeypatch.setattr(planner, "run_plan", run_plan)
    ctx = stages.Context(pipeline_settings(tmp_path), None, None,
                         [SimulatorConfig(device_id=d) for d in ("home-a", "quiet", "home-b")])
    report = stages.planning(ctx)
    assert [p.step_starts for p in ctx.plans] == [range(96)] * 2 and report.rows == 192
    assert report.message.endswith("; 1 not planned: quiet: no readings in the 34 days before 2026-12-06T18:45:00+00:00")
    ctx.configs = [SimulatorConfig(device_id="quiet")]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with pytest.raises(DERError, match="^quiet: no readings in the 34 days"):
        stages.planning(ctx)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    ctx.configs = [SimulatorConfig(device_id=d) for d in ("quiet", "home-a", "quiet-2", "quiet-3")]
    assert stages.planning(ctx).message.endswith("; 3 not planned: quiet: no readings in the 34 days before "
                                                 "2026-12-06T18:45:00+00:00 (and others)")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"planning: not planned: {d}: no readings in the 34 days before 2026-12-06T18:45:00+00:00" for d in ("quiet-2", "quiet-3")]


def test_a_failed_stage_stops_the_chain_and_the_run(tmp_path):
    def broken(_ctx):
        raise DERError("cloud store unreachable")

    def unavailable(_ctx):
        raise stages.StageUnavailable("forecasting not available: no models")

    reached = []
    chain = (("forecasting", unavailable), ("sync", broken), ("planning", lambda ctx: reached.append(1)))
    out = io.StringIO()
    result = runner.run_chain(stages.Context(pipeline_settings(tmp_path), None, None, []), chain, out=out)
    assert [(o.name, o.status) for o in result.outcomes] == [
        ("forecasting", "unavailable"), ("sync", "failed"), ("planning", "skipped")]
    assert reached == [] and result.failed.message == "cloud store unreachable"
    assert "[2/3] sync         failed" in out.getvalue()


def test_a_declaration_that_failed_at_the_start_is_made_by_the_next_hours_plans(tmp_path, monkeypatch):
    """--continuous with --site declares its sites in the first run only: a store that refused
    the first declaration left the hourly plans job raising for a site it never declared, every
    hour until a restart, though the first run's warning said the schedule would retry."""
    from tests.test_site_file import SITE

    for name in ("SUPABASE_URL", "SUPABASE_KEY", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    site = tmp_path / "site.json"
    site.write_text(json.dumps(SITE))
    settings = pipeline_settings(tmp_path / "data", site_files=[site])
    with runner.ExitStack() as resources:
        ctx = runner.open_context(settings, resources)
        stored = ctx.cloud.upsert_sites

        def unreachable(_rows):
            raise DERError("cloud store unreachable")

        monkeypatch.setattr(ctx.cloud, "upsert_sites", unreachable)
        assert runner.run_chain(ctx, out=io.StringIO()).failed.name == "declare"
        monkeypatch.setattr(ctx.cloud, "upsert_sites", stored)
        jobs = {job.name: job for job in runner.continuous_jobs(ctx, threading.Lock())}
        jobs["plans"].func()
        assert [row[dd.DEVICE_ID] for row in ctx.cloud.sites()] == ["home-1"] and "home-1" in ctx.inputs


def test_two_site_files_of_one_device_are_one_line_naming_both(tmp_path):
    """Which of two declarations of one home the owner meant cannot be told; the line names
    both files, so the one to drop can be found."""
    from tests.test_site_file import SITE

    for name in ("home.json", "copy.json"):
        (tmp_path / name).write_text(json.dumps(SITE))
    with pytest.raises(ConfigError) as caught:
        pipeline_settings(tmp_path, site_files=[tmp_path / "home.json", tmp_path / "copy.json"])
    assert str(caught.value) == (f"--site: device_id home-1 is declared twice ({tmp_path / 'home.json'} and "
                                 f"{tmp_path / 'copy.json'}); expected one site file per site")


def test_status_says_which_input_is_stale_until_a_fetch_succeeds(tmp_path, monkeypatch, capsys):
    """A weather service that is down leaves the inputs job ``stale`` with the site, the input
    and why, and --status exit 1; once it answers again, ``ok`` and exit 0."""
    import run_pipeline
    from cloud.live.http import RetryPolicy
    from tests.fakes.http_service import FakeService, Reply
    from tests.fakes.service_bodies import open_meteo_body, unix
    from tests.test_site_file import SITE

    for name in ("SUPABASE_URL", "SUPABASE_KEY", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    site, db = tmp_path / "site.json", tmp_path / "cloud.db"
    site.write_text(json.dumps({**SITE, "weather": "open-meteo"}))
    status = ["--site", str(site), "--status", "--cloud-db", str(db), "--data-dir", str(tmp_path / "data")]
    hour = pd.Timestamp.now(tz="UTC").floor("h")
    with FakeService() as fake:
        monkeypatch.setenv("DER_OPEN_METEO_URL", fake.url)
        down = Reply(500, "<html>Internal Server Error</html>", headers={"Retry-After": "0"})
        fake.route("/forecast", *[down] * RetryPolicy().attempts, Reply(200, open_meteo_body("minutely_15", unix(hour, 8, "15min"))))
        settings = pipeline_settings(tmp_path / "data", site_files=[site], cloud_db=db)
        with runner.ExitStack() as resources:
            ctx = runner.open_context(settings, resources)
            stages.declare(ctx)
            assert runner.run_stage("inputs", stages.inputs, ctx).status == "stale"  # as --once shows it
            assert run_pipeline.main(status) == 1
            line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith(stages.INPUTS_JOB))
            assert line.split()[1] == "stale" and "home-1 weather never fetched (Open-Meteo at" in line
            assert f"HTTP 500 after {RetryPolicy().attempts} attempt(s))" in line
            assert runner.run_stage("inputs", stages.inputs, ctx).status == "ok"
            assert run_pipeline.main(status) == 0
            line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith(stages.INPUTS_JOB))
            assert line.split()[1] == "ok"


def test_status_of_a_site_priced_by_a_keyed_service_asks_no_key(tmp_path, monkeypatch, capsys):
    """``--status --site FILE`` fetches nothing, yet building the site's ENTSO-E source asked for
    ENTSOE_API_KEY: exit 2, where --once, which does fetch, still needs it."""
    import run_pipeline
    from der_core.cli_support import run_cli
    from tests.test_site_file import SITE

    for name in ("SUPABASE_URL", "SUPABASE_KEY", "DATABASE_URL", "ENTSOE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    site = tmp_path / "site.json"
    site.write_text(json.dumps({**{k: v for k, v in SITE.items() if k != "tariff"},
                                "prices": {"source": "entsoe", "area": "DE_LU"}}))
    folder = ["--site", str(site), "--data-dir", str(tmp_path / "data")]
    assert run_pipeline.main([*folder, "--status"]) == 0
    assert "ENTSOE_API_KEY" not in capsys.readouterr().err
    assert run_cli(run_pipeline.main, [*folder, "--once"]) == 2
    assert "ENTSO-E needs a key: set ENTSOE_API_KEY" in capsys.readouterr().err
