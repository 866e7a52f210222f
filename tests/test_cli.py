"""run_simulator.py as a user runs it: commands of the spec, exit codes, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.test_der_data import SPEC_EXAMPLE, shape

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


def test_a_reader_that_leaves_the_pipe_gets_no_error_line(tmp_path):
    """``| head``: the reader closes the pipe before the output is written; the command stops
    without an error line or a traceback about it."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "run_simulator.py"), "--historical", "--start", "2024-01-01T00:00:00+00:00",
             "--end", "2024-01-01T01:00:00+00:00", "--no-store"],
            cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (1, "")


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
        # the JSON Lines said 07:00:00 for readings the store and the cloud held at 07:00:00.5
        (["--historical", "--start", "2024-06-15T00:00:00.5", "--end", "2024-06-15T01:00"], None,
         "--start '2024-06-15T00:00:00.5': readings are stamped to the second; expected a time in whole seconds"),
        (["--historical", "--start", "0001-01-01", "--end", "9999-01-01"], None, "--start '0001-01-01': expected a date YYYY-MM-DD or an ISO 8601 time in 1900-2200"),
        (["--once", "--interval", "0"], None, "argument --interval: '0' is not a whole number of seconds > 0"),
        # a value the configuration refuses is said under the flag typed, not the field it sets
        (["--once", "--interval", "86401"], None, "error: --interval: Input should be less than or equal to 86400 (got 86401)"),
        (["--once", "--seed", "-1"], None, "error: --seed: Input should be greater than or equal to 0 (got -1)"),
        (["--once", "--frobnicate"], None, "unrecognized arguments: --frobnicate"),
        (["--once", "--continuous"], None, "not allowed with argument"),
        (["--generate-config"], None, "--generate-config needs --config FILE"),
        (["--once", "--enable-influxdb"], None, "InfluxDB token missing"),
        # InfluxDB is the store --no-store turns off: its readings went nowhere, said nowhere
        (["--continuous", "--enable-influxdb", "--influxdb-token", "t", "--no-store"], None,
         "--enable-influxdb makes InfluxDB the edge store and --no-store writes to none; expected one of them"),
        (["--historical", "--start", "2024-06-15", "--end", "2024-06-16", "--enable-influxdb", "--no-store"], None,
         "--enable-influxdb makes InfluxDB the edge store and --no-store writes to none; expected one of them"),
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


def test_a_terminated_backfill_leaves_no_partial_file(tmp_path):
    """SIGTERM (``timeout``, a service stop) unwinds a one-shot command as Ctrl-C does: the
    hidden file a backfill writes into is removed, nothing appears under the name asked for."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run_simulator.py"), "--historical", "--start", "2000-01-01", "--end", "2100-01-01",
         "--no-store", "--output", "century.jsonl"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.stat().st_size > 0 for p in tmp_path.glob(".century.jsonl.*.partial")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "terminated"
    assert list(tmp_path.iterdir()) == []


def test_status_reports_the_store(tmp_path):
    run("--historical", "--start", "2024-06-15", "--end", "2024-06-15T06:00", "--output", "x.jsonl", cwd=tmp_path)
    result = run("--status", cwd=tmp_path)
    assert result.returncode == 0
    assert "edge-gateway-001" in result.stdout and "readings" in result.stdout


def one_error_line(result, code=2):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


DAY = ("--historical", "--start", "2024-06-15", "--end", "2024-06-15T01:00")


@pytest.mark.parametrize(
    "args,config,line",
    [
        (["--config", "c.json", *DAY], b'{"device_id": "\xff"}',
         "error: c.json: not UTF-8 text (byte 0xff at offset 15); expected a JSON file in UTF-8"),
        (["--config", "c.json", *DAY], b'{"solar":' * 100_000 + b"1" + b"}" * 100_000,
         "error: c.json: nested too deeply to read; expected the documented sections"),
        (["--config", "c.json", *DAY, "--no-store"], b'{"output_file": "/"}', "error: output_file '/': is a folder; expected a file path"),
        (["--config", "c.json", "--once", "--no-store"], b'{"output_file": "/"}', "error: output_file '/': is a folder; expected a file path"),
        (["--config", "c.json", *DAY], b'{"battery": {"capacity_kwh": 10, "capacity_kwh": 20}}',
         "error: c.json: field 'capacity_kwh' is written twice in one object; expected each field once"),
        (["--config", "c.json", *DAY], b'{"interval_seconds": "300"}',
         "error: c.json: interval_seconds: Input should be a valid integer (got a string '300')"),
        (["--config", "c.json", *DAY], b'{"country": "ZZ"}',
         "error: c.json: country: 'ZZ' is not a country with a public-holiday calendar; expected an ISO 3166 alpha-2 code "
         "such as 'US', 'DE' or 'GB'"),
        (["--historical", "--start", "2024-03-10T02:30", "--end", "2024-03-10T04:00"], None,
         "error: --start '2024-03-10T02:30': 2024-03-10 02:30 does not exist in America/Los_Angeles (daylight saving time); "
         "expected a local time the clock shows once, or an ISO 8601 time with an offset"),
        (["--historical", "--start", "2024-11-03", "--end", "2024-11-03T01:30"], None,
         "error: --end '2024-11-03T01:30': 2024-11-03 01:30 occurs twice in America/Los_Angeles (daylight saving time); "
         "expected a local time the clock shows once, or an ISO 8601 time with an offset"),
        ([*DAY, "--store", "/proc/x/edge.db"], None,
         "error: SQLite store /proc/x/edge.db: cannot create folder /proc/x (No such file or directory); expected a writable file path"),
        ([*DAY, "--store", "a" * 5000 + "/edge.db"], None,
         "error: SQLite store 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa... (5010 characters): "
         "File name too long; expected a file path"),
        ([*DAY, "--store", "/dev/null"], None,
         "error: SQLite store /dev/null: is not a regular file (a device or a pipe); expected a file path"),
        ([*DAY, "--sites", "100000000"], None,
         "run_simulator.py: error: argument --sites: '100000000' is not a whole number of sites from 1 to 1000 (see --help)"),
        ([*DAY, "--device-id", "../etc"], None,
         "run_simulator.py: error: argument --device-id: device_id '../etc' is not valid; expected 1 to 64 letters, digits, "
         "'_', '.', ':' or '-', starting with a letter or digit (see --help)"),
        ([*DAY, "--output", "missing/data.jsonl"], None, "error: --output 'missing/data.jsonl': folder 'missing' does not exist; create it first"),
        (["--generate-config", "--config", "missing/c.json"], None, "error: --config 'missing/c.json': folder 'missing' does not exist; create it first"),
        (["--once", "--enable-influxdb", "--influxdb-token", "t0ken", "--influxdb-url", "ftp://user:SECRET@host"], None,
         "error: InfluxDB URL 'ftp://user:***@host': expected http://host:port or https://host:port"),
        (["--once", "--enable-influxdb", "--influxdb-token", "t0ken", "--influxdb-retention-days", str(10**30)], None,
         f"error: --influxdb-retention-days: expected 0 (forever) to 36500 days, got {10**30}"),
    ],
    ids=["not-utf8", "recursion", "output-root", "output-root-once", "field-twice", "string-number", "unknown-country", "dst-gap",
         "dst-repeat", "store-unwritable", "store-name-too-long", "store-device", "sites-bound", "device-id", "output-folder", "config-folder", "url-secret",
         "retention-bound"],
)
def test_hostile_input_is_one_exact_line_exit_2(tmp_path, args, config, line):
    if config is not None:
        (tmp_path / "c.json").write_bytes(config)
    result = run(*args, cwd=tmp_path)
    assert one_error_line(result) == line
    assert not (tmp_path / "missing").exists()


def test_huge_device_id_is_quoted_cut_short(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"device_id": "a" * 10_000_000}))
    line = one_error_line(run("--config", "c.json", *DAY, cwd=tmp_path))
    assert line.startswith("error: c.json: device_id: 'aaaa") and "... (10000002 characters) is not valid" in line
    assert len(line) < 300


def test_secrets_in_server_urls_never_show(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "run_simulator.py"), "--status", "--enable-influxdb", "--store", "s.db",
         "--influxdb-url", "http://user:SECRET@127.0.0.1:1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "INFLUXDB_TOKEN": "tok-3141"},
    )
    assert result.returncode == 1
    assert "influxdb http://user:***@127.0.0.1:1 (bucket der-data): unreachable" in result.stdout
    for secret in ("SECRET", "tok-3141"):
        assert secret not in result.stdout + result.stderr


def test_historical_output_is_new_unless_forced(tmp_path):
    args = ("--historical", "--start", "2024-06-15", "--end", "2024-06-16", "--output", "data.jsonl", "--no-store")
    assert run(*args, "--seed", "4", cwd=tmp_path).returncode == 0
    first = (tmp_path / "data.jsonl").read_text()
    line = one_error_line(run(*args, "--seed", "5", cwd=tmp_path))
    assert line == "error: --output data.jsonl already exists; choose another path or add --force to replace it"
    assert (tmp_path / "data.jsonl").read_text() == first
    assert run(*args, "--seed", "5", "--force", cwd=tmp_path).returncode == 0
    stamps = [json.loads(x)["timestamp"] for x in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert len(stamps) == len(set(stamps)) == 288
    assert (tmp_path / "data.jsonl").read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]  # no partial file left behind


def test_a_nul_character_in_an_argument_a_path_or_a_store_is_one_line_not_a_traceback(tmp_path, capsys):
    """No file system names a file with a NUL, and opening one raises ValueError deep inside
    a command (found by the fuzz test): every command line refuses it, and so do the paths a
    configuration gives."""
    import run_cloud_sync
    from der_core.cli_support import output_path
    from der_core.errors import StorePathError, UsageError
    from edge_gateway import cli
    from edge_gateway.stores.sqlite import connect

    for main, argv in ((cli.main, ["--once", "--store", "e\x00.db"]), (run_cloud_sync.main, ["--import", "m\x00.csv"])):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        assert capsys.readouterr().err.endswith("holds a NUL character; expected text without one (see --help)\n")
    with pytest.raises(UsageError, match=r"^--config .*: holds a NUL character; expected a file path$"):
        output_path("c\x00.json", "--config")
    with pytest.raises(StorePathError, match=r"holds a NUL character; expected a file path$"):
        connect(str(tmp_path / "e\x00.db"))


def test_a_reading_is_made_and_kept_in_the_outbox_while_influxdb_is_down(tmp_path, capsys, monkeypatch):
    """With InfluxDB unreachable the gateway still makes its readings: they wait in the
    store's outbox for the server (docs/operations.md, "InfluxDB 2.x edge store"). The step's
    check of the newest stored reading asked the server first, so every step failed and
    --once, --continuous and --daemon made no reading for as long as InfluxDB was down."""
    import socket
    import sqlite3

    from edge_gateway import cli
    from edge_gateway.stores import influx

    monkeypatch.setattr(influx, "MAX_BACKOFF_S", 0.0)  # the retries' waits, not what they decide
    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.chdir(tmp_path)
    argv = ["--once", "--seed", "1", "--enable-influxdb", "--influxdb-token", "t0ken", "--influxdb-url", url]
    assert cli.main(argv) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    with sqlite3.connect(tmp_path / "data" / "edge.db") as spool:
        (waiting,) = spool.execute("SELECT count(*) FROM influx_spool").fetchone()
    assert json.loads(line)["device_id"] == "edge-gateway-001" and waiting == 1


def test_status_with_influxdb_lists_its_devices_and_creates_nothing(tmp_path):
    """``--status --enable-influxdb`` lists per device what InfluxDB holds (it listed the SQLite
    spool, empty, under "edge store"), and reads as the sync does: it made the spool file and
    created the bucket a status only asks about (docs/operations.md, "InfluxDB 2.x edge store")."""
    from tests.fakes.influx_server import FakeInfluxServer

    server = FakeInfluxServer(token="tok").start()
    try:
        env = {**os.environ, "INFLUXDB_URL": server.url, "INFLUXDB_TOKEN": "tok"}

        def simulator(*args, cwd):
            return subprocess.run([sys.executable, str(ROOT / "run_simulator.py"), *args, "--enable-influxdb"],
                                  cwd=cwd, env=env, capture_output=True, text=True, timeout=120)

        (tmp_path / "fresh").mkdir()
        status = simulator("--status", "--influxdb-bucket", "untouched", cwd=tmp_path / "fresh")
        assert status.returncode == 1 and 'could not find bucket "untouched"' in status.stdout
        assert "untouched" not in server.buckets and list((tmp_path / "fresh").iterdir()) == []
        made = simulator("--historical", "--start", "2024-06-15", "--end", "2024-06-15T01:00", "--output", "x.jsonl", cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        status = simulator("--status", cwd=tmp_path)
    finally:
        server.stop()
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == f"influxdb {server.url} (bucket der-data): reachable, 12 reading(s) stored, 0 reading(s) spooled for it"
    assert lines[2].split()[:2] == ["edge-gateway-001", "12"]


def test_every_environment_variable_the_code_reads_by_name_is_documented():
    """A variable that changes what a command does is in the README or docs/ (FORECAST_SITE_ID,
    which restricts training to one site, was in neither). JOURNAL_STREAM is systemd's own."""
    import re

    code = "\n".join(p.read_text() for folder in ("cloud", "der_core", "der_physics", "edge_gateway")
                     for p in (ROOT / folder).rglob("*.py"))
    code += "\n".join(p.read_text() for p in ROOT.glob("run_*.py"))
    read = set(re.findall(r'(?:environ\.get|env_value|getenv)\(\s*"([A-Z][A-Z0-9_]+)"|environ\["([A-Z][A-Z0-9_]+)"\]', code))
    names = {name for pair in read for name in pair if name} - {"JOURNAL_STREAM"}
    docs = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    assert len(names) > 10 and sorted(name for name in names if name not in docs) == []


def test_historical_output_replaces_only_a_regular_file(tmp_path):
    """``--output`` naming a pipe or a device (``/dev/stdout``) is refused, with or without
    --force: the atomic replace put a regular file where the pipe was (as root, where
    /dev/stdout was). Through a symbolic link, --force replaces the file it names and the
    link stays a link."""
    args = ("--historical", "--start", "2024-06-15", "--end", "2024-06-15T01:00", "--no-store", "--force")
    os.mkfifo(tmp_path / "pipe")
    refused = run(*args, "--output", "pipe", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr == (
        "error: --output 'pipe': is not a regular file (a device or a pipe); expected a file to write "
        "(without --output the readings stream to stdout)\n")
    assert (tmp_path / "pipe").is_fifo()
    (tmp_path / "real.jsonl").write_text("old\n")
    (tmp_path / "link.jsonl").symlink_to("real.jsonl")
    assert run(*args, "--output", "link.jsonl", cwd=tmp_path).returncode == 0
    assert (tmp_path / "link.jsonl").is_symlink() and len((tmp_path / "real.jsonl").read_text().splitlines()) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "pipe", "real.jsonl"]
