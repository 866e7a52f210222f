"""A real home from its site file to a plan and a what-if backtest, by the README's commands
("Your own home") run as a user runs them, in a fresh folder on the embedded SQLite store.

The home is measured, not simulated: the PV is NREL PVDAQ system 50's AC power (Golden,
Colorado; ``pvanalytics``' example data, MIT) and the load is the UCI "Individual household
electric power consumption" house in Sceaux, France (Hebrail and Berard, EDF R&D, CC BY 4.0,
shipped by ``EnergyData``), put on the PV's dates as ``benchmarks/bench_backtest_real.py``
assembles that home (benchmarks/real_data.py reads both from the installed packages). Five
weeks of it, 1 June to 5 July 2012, are written as a logger writes them: local wall-clock
times without an offset, power in watts, one row per 15 minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.bench_backtest_real import home
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd

ROOT = Path(__file__).resolve().parents[1]
SITE_FILE = ROOT / "examples" / "site.json"
SERVER_VARIABLES = ("SUPABASE_URL", "SUPABASE_KEY", "DATABASE_URL", "FORECAST_MODEL_DIR", "FORECAST_WEATHER_CSV",
                    "FORECAST_SITE_ID", "FE_SITE_ID")
FIRST, LAST = pd.Timestamp("2012-06-01 00:15", tz="America/Denver"), pd.Timestamp("2012-07-06 00:00", tz="America/Denver")
STRATEGIES = ("no_battery", "self_consumption", "tou_arbitrage", "mpc", "perfect_foresight")

pytestmark = pytest.mark.slow


def readme_commands() -> list[list[str]]:
    """The commands of the README's "Your own home" block, split as a shell splits them."""
    import shlex

    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Your own home"):]
    block = block[block.index("```bash") + len("```bash"):]
    block = block[: block.index("```")]
    return [shlex.split(line.split("  #")[0]) for line in block.strip().splitlines() if line.startswith("python ")]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES}
    environment.update(MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    script, *args = command[1:]
    done = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}: {done.stderr}"
    return done


def write_meter_csv(path: Path, site: dict) -> pd.DataFrame:
    """The home's five weeks as its logger writes them; returns them in kW by UTC instant."""
    _, recorded = home(site["pv"]["capacity_kwp"])
    weeks = recorded.loc[FIRST.tz_convert("UTC") : LAST.tz_convert("UTC")]
    assert len(weeks) == 35 * 96 and weeks.notna().all().all()  # five whole weeks, no gaps
    pd.DataFrame({"Date/Time": weeks.index.tz_convert(site["timezone"]).strftime("%Y-%m-%d %H:%M"),
                  "PV (W)": (weeks["pv_kw"] * 1000).round(), "Load (W)": (weeks["load_kw"] * 1000).round()}
                 ).to_csv(path, index=False)
    return weeks


def backtest_bills(stdout: str) -> dict[str, list[float]]:
    """Per strategy row of the backtest's table: its numbers (bill first)."""
    rows = {}
    for line in stdout.splitlines():
        name, *cells = line.split() or [""]
        if name in STRATEGIES:
            rows[name] = [float(cell) for cell in cells]
    return rows


def test_a_real_home_goes_from_the_readmes_commands_to_a_plan_and_a_what_if_backtest(tmp_path):
    site = json.loads(SITE_FILE.read_text())
    device, battery = site["device_id"], site["battery"]
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "site.json").write_text(SITE_FILE.read_text())
    weeks = write_meter_csv(tmp_path / "meter.csv", site)
    sync, features, train, evaluate, plan, backtest = readme_commands()
    db = tmp_path / "data" / "cloud.db"

    # 1-2: the site is declared and its meter file imported, its local times read in its zone
    done = run(sync, tmp_path)
    assert f"site {device} declared" in done.stdout
    assert f"imported {len(weeks)} readings of {device} (0 quarantined)" in done.stdout
    assert "clock: PV peaks within 45 min of the declared array's clear-sky peak" in done.stdout
    with SQLiteCloudStore(db) as store:
        stored = store.read_readings(device, columns=[dd.SOLAR_KW, dd.LOAD_TOTAL])
        declared = next(row for row in store.sites() if row[dd.DEVICE_ID] == device)
    assert pd.DatetimeIndex(stored[dd.TS]).equals(weeks.index.as_unit(pd.DatetimeIndex(stored[dd.TS]).unit))
    np.testing.assert_allclose(stored[dd.LOAD_TOTAL], weeks["load_kw"], atol=1e-3)
    assert declared["timezone"] == site["timezone"] and declared["battery_capacity_kwh"] == battery["capacity_kwh"]

    # 3: features over the history before the newest reading
    done = run(features, tmp_path)
    with SQLiteCloudStore(db) as store:
        rows = store.read_frame("der_features", equals={dd.DEVICE_ID: device})
    assert len(rows) > 4 * 7 * 96 and pd.Timestamp(rows[dd.TS].max()) == LAST.tz_convert("UTC")

    # 4-5: models trained on the home and scored on its newest week
    done = run(train, tmp_path)
    version = (tmp_path / "trained_models" / "ACTIVE").read_text().strip()
    assert f"trained version {version}" in done.stdout and "load_kw: 1 sites" in done.stdout
    assert "price_per_kwh: not trained: no grid_price_price_per_kwh readings" in done.stdout
    assert "WARNING" not in done.stderr  # a home without price readings is planned on its tariff
    done = run(evaluate, tmp_path)
    assert f"active version {version}" in done.stdout
    assert any(line.strip().startswith("load_kw: MAE") for line in done.stdout.splitlines())

    # 6: the next 24 h after the data, on the trained models, for the declared battery
    done = run(plan, tmp_path)
    assert done.stdout.startswith(f"{device}: times in America/Denver (MDT), money in USD")
    assert "forecaster models (active models in trained_models)" in done.stdout
    with SQLiteCloudStore(db) as store:
        planned = store.read_frame(s.PLANS, equals={dd.DEVICE_ID: device}).sort_values(dd.TS)
    assert len(planned) == 96 and pd.Timestamp(planned[dd.TS].iloc[0]) == LAST.tz_convert("UTC")
    soc, power = planned[dd.BATTERY_SOC].to_numpy(), planned[dd.BATTERY_POWER].to_numpy()
    assert soc.min() >= battery["min_soc"] - 1e-6 and soc.max() <= battery["max_soc"] + 1e-6
    assert np.abs(power).max() <= battery["max_charge_kw"] + 1e-6 and np.abs(power).max() > 0.1
    # SOC moves by the declared capacity: charging p kW for 15 min adds p/4 * sqrt(0.9) kWh,
    # from the declared start, the middle of its window
    before = np.concatenate([[(battery["min_soc"] + battery["max_soc"]) / 2], soc[:-1]])
    charging = power > 0.05
    implied_kwh = power[charging] * 0.25 * np.sqrt(battery["round_trip_efficiency"]) / ((soc - before)[charging] / 100)
    assert charging.any() and np.median(implied_kwh) == pytest.approx(battery["capacity_kwh"], rel=0.02)

    # 7: a what-if battery over the recorded days, every strategy billed
    assert backtest[backtest.index("--battery-kwh") + 1] == "10"
    done = run(backtest, tmp_path)
    heading = done.stdout.splitlines()[0]
    assert heading.startswith(f"{device}: 27 days from 2012-06-09 00:00 MDT, battery 10 kWh / 5 kW (what-if), "
                              "forecaster naive (the active models in trained_models learnt from readings up to "
                              "2012-07-06 06:00Z, after 2012-06-09 06:00Z)")
    bills = backtest_bills(done.stdout)
    assert set(bills) == set(STRATEGIES)
    bill = {name: cells[0] for name, cells in bills.items()}
    cycles = {name: cells[6] for name, cells in bills.items()}  # after bill, stored, savings, capture, peak, own use
    assert bill["no_battery"] > 0 and cycles["no_battery"] == 0
    assert bill["perfect_foresight"] < bill["mpc"] < bill["no_battery"] and cycles["mpc"] > 5
    assert (tmp_path / "data" / "backtest" / device / "report.md").exists()
