"""Fleet draws, participation, supply-shortfall deferral, the archetype law and the CLI."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import run_portfolio
from cloud.portfolio import archetypes, participation, stress
from cloud.portfolio.fleet import draw_sites, read_csv, simulator_config, write_csv
from der_core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_fleet_is_reproducible_and_follows_its_documented_shares():
    sites = draw_sites(2000, seed=5)
    assert sites == draw_sites(2000, seed=5) and sites != draw_sites(2000, seed=6)
    pv = np.array([s.pv_kw > 0 for s in sites])
    bat = np.array([s.battery_kwh > 0 for s in sites])
    assert abs(pv.mean() - 0.7) < 0.04 and abs(np.mean([s.has_ev for s in sites]) - 0.35) < 0.04
    assert abs(bat[pv].mean() - 0.6) < 0.05 and abs(bat[~pv].mean() - 0.1) < 0.04
    assert simulator_config(next(s for s in sites if s.battery_kwh == 0), "bay-area").battery.capacity_kwh == 0


def test_fleet_csv_round_trips_and_names_a_bad_field(tmp_path):
    sites = draw_sites(5, seed=1)
    path = write_csv(sites, tmp_path / "fleet.csv")
    assert read_csv(path).sites == tuple(sites)
    path.write_text(path.read_text().replace(",tou,", ",cheap,", 1))
    with pytest.raises(ConfigError, match=r"fleet.csv:\d+: tariff='cheap'"):
        read_csv(path)


@pytest.mark.parametrize("change, said", [
    # the first site's row is line 2 (the second's, line 3, repeats the id it is given here)
    ({"pv_kw": "nan"}, "fleet.csv:2: pv_kw='nan': expected a PV size from 0 to 10000 kWp"),
    ({"battery_kwh": "inf"}, "fleet.csv:2: battery_kwh='inf': expected a battery capacity from 0 (none) to 100000 kWh"),
    ({"latitude": "999"}, "fleet.csv:2: latitude='999': expected a latitude from -90 to 90 degrees"),
    ({"longitude": "-181"}, "fleet.csv:2: longitude='-181': expected a longitude from -180 to 180 degrees"),
    ({"azimuth_deg": "360"}, "fleet.csv:2: azimuth_deg='360': expected a compass bearing from 0 to below 360 degrees"),
    ({"load_scale": "0"}, "fleet.csv:2: load_scale='0': expected a load scale above 0"),
    ({"hvac_kw": "-1"}, "fleet.csv:2: hvac_kw='-1': expected an HVAC power from 0 to 1000 kW"),
    ({"has_ev": "maybe"}, "fleet.csv:2: has_ev='maybe': expected yes or no (also true/false, y/n, 1/0)"),
    ({"seed": "-1"}, "fleet.csv:2: seed='-1': expected a whole number 0 or more"),
    ({"site_id": "site-00001"}, "fleet.csv:3: site_id='site-00001' is already on line 2; expected each site once"),
])
def test_a_bad_fleet_row_is_one_line_naming_row_column_and_value(tmp_path, change, said):
    """Refused when the CSV is read, since past it a bad value fails inside a Dask worker, a
    duplicate id joins two sites' results with each other, and an unknown has_ev reads as no."""
    sites = draw_sites(3, seed=1)
    path = write_csv(sites, tmp_path / "fleet.csv")
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    row = dict(zip(header, lines[1].split(",")))
    lines[1] = ",".join({**row, **change}[name] for name in header)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        read_csv(path)
    assert str(caught.value).startswith(str(path.parent / said)) and "\n" not in str(caught.value)


def test_every_bad_fleet_row_is_named_in_one_run(tmp_path):
    """Nine bad rows took nine runs to find, one per run: the line names the first and where
    the others are."""
    sites = draw_sites(5, seed=1)
    path = write_csv(sites, tmp_path / "fleet.csv")
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    for k, change in ((1, {"latitude": "999"}), (3, {"pv_kw": "nan"}), (5, {"has_ev": "maybe"})):
        row = dict(zip(header, lines[k].split(",")))
        lines[k] = ",".join({**row, **change}[name] for name in header)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        read_csv(path)
    assert str(caught.value) == (f"3 bad rows, the first {path}:2: latitude='999': expected a latitude from -90 to 90 "
                                 "degrees; the others on lines 4, 6")


def test_has_ev_takes_the_usual_spellings_of_yes_and_no(tmp_path):
    spellings = {"Y": True, "yes": True, "TRUE": True, "1": True, "True": True,
                 "n": False, "No": False, "false": False, "0": False}
    path = write_csv(draw_sites(len(spellings), seed=1), tmp_path / "fleet.csv")
    header, *rows = path.read_text().splitlines()
    column = header.split(",").index("has_ev")
    cells = [row.split(",") for row in rows]
    for row, spelling in zip(cells, spellings):
        row[column] = spelling
    path.write_text("\n".join([header, *(",".join(row) for row in cells)]) + "\n")
    assert [site.has_ev for site in read_csv(path).sites] == list(spellings.values())


@pytest.mark.parametrize("content, said", [
    (b"SQLite format 3\x00\x8b\x9c", "fleet.csv: not UTF-8 text (byte 0x8b); expected a CSV file in UTF-8"),
    (None, "fleet.csv: fleet CSV not found"),
    (b"site_id\n\"" + b"a" * 200_000, "fleet.csv: not a CSV file (field larger than field limit (131072))"),
])
def test_a_fleet_file_that_is_no_csv_is_one_line(tmp_path, content, said):
    path = tmp_path / "fleet.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        read_csv(path)
    assert said in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="fleet CSV is a folder; expected a CSV file of site_id, latitude"):
        read_csv(tmp_path)


def test_participation_falls_with_cost_and_draws_are_seeded():
    model = participation.ParticipationModel()
    p = model.probability(np.array([0.0, 0.3, 0.6, 2.0]))
    assert np.all(np.diff(p) < 0) and p[1] == pytest.approx(model.p_max / 2) and p[-1] < 1e-6
    idx = np.arange(2000)
    a = participation.follows(model, np.zeros(2000), 7, idx, 3)
    assert np.array_equal(a, participation.follows(model, np.zeros(2000), 7, idx, 3))
    assert abs(a.mean() - p[0]) < 0.03
    assert np.array_equal(participation.follows(model, np.zeros(10), 7, idx[5:15], 3), a[5:15])  # partition-free


def test_deaf_sites_are_nested_as_the_partition_grows():
    idx = np.arange(1000)
    small, large = participation.deaf_sites(1, idx, 0.1), participation.deaf_sites(1, idx, 0.3)
    assert np.all(large[small]) and abs(large.mean() - 0.3) < 0.05


def _shortfall(hears_share: float):
    steps, n = 12, 20
    load = np.full((n, steps), 2.0)
    ev = np.zeros((n, steps))
    ev[:, 3:6] = 1.0
    loads = [(ev, 8), (0.3 * load, 2)]
    supply = np.full(steps, np.inf)
    supply[3:6] = 40.0
    hears = np.arange(n) < hears_share * n
    return load, loads, supply, stress.respond(load + ev, np.zeros((n, steps)), np.zeros((n, steps)), supply, loads, hears, 1.0)


def test_deferral_keeps_demand_under_supply_and_conserves_energy():
    load, loads, supply, out = _shortfall(1.0)
    total = out.served_load_kw.sum(axis=0)
    assert np.all(total[3:6] <= supply[3:6] + 1e-9) and out.unserved_kw.sum() == 0
    assert out.deferred_kw.sum() > 0
    assert out.served_load_kw.sum() == pytest.approx((load + loads[0][0]).sum())


def test_sites_that_cannot_hear_the_aggregator_are_shed_instead():
    outcomes = [_shortfall(share)[3] for share in (1.0, 0.5, 0.0)]
    unserved = [o.unserved_kw.sum() for o in outcomes]
    assert unserved[0] == 0 < unserved[1] < unserved[2]
    assert outcomes[2].deferred_kw.sum() == 0


def test_archetype_interpolation_reproduces_the_grid_and_the_scaling_law():
    grid = np.add.outer(np.array(archetypes.PV_PER_L) * -10.0, np.array(archetypes.BATTERY_PER_L) * -2.0) + 1000.0
    x, y = np.array([3.0, 4.5, 12.0]), np.array([5.0, 8.5, 0.0])
    assert np.allclose(archetypes._bilinear(grid, x, y), 1000.0 - 10.0 * x - 2.0 * y)  # exact on a linear surface


@pytest.mark.slow
def test_cli_writes_every_output_and_reports_status(in_tmp_cwd, capsys):
    code = run_portfolio.main(["--sites", "6", "--hours", "48", "--group-size", "3", "--output", "out", "--workers", "1"])
    assert code == 0
    out = in_tmp_cwd / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["strategies"]) == {"no_battery", "rule_based", "decentralised", "central"}
    frame = pd.read_csv(out / "timesteps.csv")
    assert len(frame) == 48 and "central_grid_kw" in frame
    assert all((out / name).stat().st_size > 0 for name in ("aggregate_load.png", "dr_event.png", "report.md"))
    assert run_portfolio.main(["--status", "--output", "out"]) == 0
    assert "central" in capsys.readouterr().out


def test_a_strategy_named_twice_runs_once_in_the_order_given(in_tmp_cwd, capsys):
    """--strategies rule_based,no_battery,rule_based simulated the fleet under the rule twice
    (results are keyed by name, so the second run was only time, and it was shown twice)."""
    argv = ["--sites", "2", "--hours", "2", "--workers", "1", "--output", "out",
            "--strategies", "rule_based, no_battery,rule_based"]
    assert run_portfolio.main(argv) == 0
    assert "strategies rule_based, no_battery, on " in capsys.readouterr().out
    assert list(json.loads((in_tmp_cwd / "out" / "summary.json").read_text())["strategies"]) == ["rule_based", "no_battery"]


@pytest.mark.parametrize("argv, message", [
    (["--sites", "0"], "'0' is not a number of sites from 1 to 1,000,000"),
    (["--scenario", "nope"], "--scenario 'nope'"),
    (["--strategies", "magic", "--sites", "2", "--hours", "2"], "unknown magic"),
    # Sizes no machine holds, and values no generator or calendar takes: one line, not a traceback.
    (["--sites", str(10**30)], "is not a number of sites from 1 to 1,000,000"),
    (["--hours", str(10**30)], "is not a number of hours from 1 to 87,840"),
    (["--workers", str(10**30)], "is not a number of workers from 1 to 64"),
    (["--seed", "-1"], "'-1' is not a whole number from 0"),
    (["--start", "nan", "--sites", "2", "--hours", "2"], "--start 'nan': expected an ISO 8601 date-time in 1900-2200"),
    (["--start", "", "--sites", "2", "--hours", "2"], "--start '': expected an ISO 8601 date-time in 1900-2200"),
])
def test_cli_usage_errors_are_one_line_and_exit_2(in_tmp_cwd, capsys, argv, message):
    from der_core.cli_support import run_cli

    try:
        code = run_cli(run_portfolio.main, argv)
    except SystemExit as exit_:  # argparse refuses before main runs
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_each_stage_line_is_out_while_the_run_goes_on(tmp_path):
    """A run's output is often a log file, which Python writes in blocks: each stage's line is
    flushed as the stage ends. The scheduler here accepts the connection and never answers,
    so the run waits on it, and the fleet's line must be out meanwhile."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        run = subprocess.Popen([sys.executable, str(ROOT / "run_portfolio.py"), "--sites", "3", "--hours", "24",
                                "--scheduler", f"tcp://127.0.0.1:{silent.getsockname()[1]}", "--output", "out"],
                               cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # a bound on the wait, so an unflushed line fails the test rather than hanging it
            readable, _, _ = select.select([run.stdout], [], [], 120)
            assert readable and run.poll() is None, "no line while the run waits on its scheduler"
            assert run.stdout.readline() == "fleet: 3 sites drawn from seed 0 (bay-area)\n"
        finally:
            run.kill()
            run.communicate()



def test_a_scheduler_that_never_answers_is_one_line_not_a_hang(tmp_path):
    """Something accepts the connection and says nothing (another service's port): the client's
    own timeout held past its limit in its cleanup, and the run hung without a word."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        done = subprocess.run([sys.executable, str(ROOT / "run_portfolio.py"), "--sites", "3", "--hours", "24",
                               "--scheduler", address, "--output", "out"], cwd=tmp_path,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (f"error: Dask scheduler {address}: no answer within 10 s; expected "
                                                    "a Dask scheduler's address (tcp://host:8786)")
