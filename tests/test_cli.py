"""run_simulator.py as a user runs it: commands of the spec, exit codes, one-line errors."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.test_models import SPEC_EXAMPLE, shape

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd, timeout=120):
    return subprocess.run(
        [sys.executable, str(ROOT / "run_simulator.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_once_prints_one_spec_reading_and_stores_it(tmp_path):
    result = run("--once", "--seed", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    assert shape(json.loads(line)) == shape(SPEC_EXAMPLE)
    with SQLiteEdgeStore(tmp_path / "data" / "edge.db") as store:
        assert store.count() == 1 and store.sites()[0]["device_id"] == "edge-gateway-001"


def test_historical_writes_jsonl_and_the_store(tmp_path):
    result = run("--historical", "--start", "2024-06-15", "--end", "2024-06-16", "--output", "data.jsonl", "--seed", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "data.jsonl").read_text().splitlines()
    assert len(lines) == 288
    first = json.loads(lines[0])
    assert first["timestamp"] == "2024-06-15T07:00:00+00:00"  # local midnight in San Francisco (PDT)
    with SQLiteEdgeStore(tmp_path / "data" / "edge.db") as store:
        assert store.count() == 288


def test_historical_without_output_streams_to_stdout(tmp_path):
    result = run("--historical", "--start", "2024-01-01T00:00:00+00:00", "--end", "2024-01-01T01:00:00+00:00", "--no-store", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 12
    assert not (tmp_path / "data").exists()


def test_same_seed_same_output_across_runs(tmp_path):
    args = ("--historical", "--start", "2024-03-01", "--end", "2024-03-02", "--seed", "9", "--no-store")
    assert run(*args, cwd=tmp_path).stdout == run(*args, cwd=tmp_path).stdout


def test_several_sites(tmp_path):
    result = run("--historical", "--start", "2024-03-01", "--end", "2024-03-01T02:00", "--sites", "3", "--no-store", cwd=tmp_path)
    devices = {json.loads(line)["device_id"] for line in result.stdout.splitlines()}
    assert devices == {"edge-gateway-001-001", "edge-gateway-001-002", "edge-gateway-001-003"}


def test_generate_config_then_use_it(tmp_path):
    assert run("--generate-config", "--config", "config.json", cwd=tmp_path).returncode == 0
    config = json.loads((tmp_path / "config.json").read_text())
    config["device_id"] = "roof-7"
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = run("--once", "--config", "config.json", "--no-store", cwd=tmp_path)
    assert json.loads(result.stdout)["device_id"] == "roof-7"


@pytest.mark.parametrize(
    "args,config,message",
    [
        (["--once", "--config", "c.json"], {"battery": {"min_soc": 95, "max_soc": 90}}, "battery: min_soc (95.0) must not exceed max_soc (90.0)"),
        (["--once", "--config", "c.json"], {"solar": {"capacity_kw": -3}}, "solar.capacity_kw: Input should be greater than or equal to 0"),
        (["--once", "--config", "c.json"], {"battery": {"round_trip_efficiency": 1.5}}, "battery.round_trip_efficiency"),
        (["--once", "--config", "c.json"], {"solar": {"latitude": 123}}, "solar.latitude"),
        (["--once", "--config", "c.json"], {"wat": 1}, "wat: unknown field"),
        (["--once", "--config", "c.json"], "{not json", "malformed JSON"),
        (["--once", "--config", "missing.json"], None, "config file not found"),
        (["--historical", "--start", "2024-06-16", "--end", "2024-06-15"], None, "--end (2024-06-15) must be after --start (2024-06-16)"),
        (["--historical", "--start", "2024-02-30", "--end", "2024-03-01"], None, "--start '2024-02-30': expected a date"),
        (["--historical", "--start", "2024-06-15"], None, "--historical needs --start and --end"),
        (["--once", "--interval", "0"], None, "argument --interval: '0' is not a whole number of seconds > 0"),
        (["--once", "--frobnicate"], None, "unrecognized arguments: --frobnicate"),
        (["--once", "--continuous"], None, "not allowed with argument"),
        (["--generate-config"], None, "--generate-config needs --config FILE"),
        (["--once", "--enable-influxdb"], None, "InfluxDB token missing"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(tmp_path, args, config, message):
    if config is not None:
        (tmp_path / "c.json").write_text(config if isinstance(config, str) else json.dumps(config))
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_generate_config_refuses_to_overwrite(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    result = run("--generate-config", "--config", "config.json", cwd=tmp_path)
    assert result.returncode == 2 and "already exists" in result.stderr
    assert (tmp_path / "config.json").read_text() == "{}"


@pytest.mark.parametrize("mode", ["--continuous", "--scheduled"])
def test_live_modes_run_until_sigterm(tmp_path, mode):
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run_simulator.py"), mode, "--interval", "1", "--output", "live.jsonl"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 60
    path = tmp_path / "live.jsonl"
    while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    stamps = [json.loads(line)["timestamp"] for line in path.read_text().splitlines()]
    assert len(stamps) >= 3 and len(set(stamps)) == len(stamps)
    with SQLiteEdgeStore(tmp_path / "data" / "edge.db") as store:
        assert store.count() == len(stamps)


def test_status_reports_the_store(tmp_path):
    run("--historical", "--start", "2024-06-15", "--end", "2024-06-15T06:00", "--output", "x.jsonl", cwd=tmp_path)
    result = run("--status", cwd=tmp_path)
    assert result.returncode == 0
    assert "edge-gateway-001" in result.stdout and "readings" in result.stdout
