"""``run_simulator.py --daemon`` and the extended ``--status``: real processes, real signals."""

from __future__ import annotations

import configparser
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from der_core import der_data as dd
from der_core.cli_support import run_cli
from edge_gateway.cli import build_parser, main
from edge_gateway.mqtt import topics
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.mqtt_fixtures import Recorder, broker, clear_retained, free_port, unique_id  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def write_config(folder: Path, device_id: str) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps({"device_id": device_id, "interval_seconds": 1, "seed": 3, "battery": {"mode": "setpoint"}}))
    return path


def start_daemon(folder: Path, device_id: str, *extra: str, env: dict | None = None, journal: bool = False) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "run_simulator.py"), "--daemon", "--config", str(write_config(folder, device_id)),
               "--store", str(folder / "data" / "edge.db"), *extra]
    env = {**os.environ, **(env or {})}
    env.pop("JOURNAL_STREAM", None)
    if not journal:
        return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Stand in for systemd: stderr is a stream whose device:inode JOURNAL_STREAM names.
    read_end, write_end = os.pipe()
    stat = os.fstat(write_end)
    env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
    daemon = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=write_end, text=True)
    os.close(write_end)
    daemon.stderr = open(read_end)  # noqa: SIM115 - closed by communicate()
    return daemon


def stored(folder: Path, device_id: str) -> pd.DataFrame:
    with SQLiteEdgeStore(folder / "data" / "edge.db") as store:
        return store.read_range(device_id)


@pytest.mark.mqtt
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_daemon_flushes_says_offline_and_exits_0_on_a_signal(broker, tmp_path, sig):  # noqa: F811
    device = unique_id()
    recorder = Recorder(broker, [topics.telemetry(device), topics.status(device)])
    env = {"MQTT_HOST": broker.host, "MQTT_PORT": str(broker.port)}
    daemon = start_daemon(tmp_path, device, "--enable-mqtt", env=env, journal=True)
    try:
        assert recorder.wait_for(lambda: len(recorder.on(topics.telemetry(device))) >= 2, timeout_s=15), daemon.stderr.read() if daemon.poll() is not None else ""
        daemon.send_signal(sig)
        out, err = daemon.communicate(timeout=20)
        assert recorder.wait_for(lambda: recorder.on(topics.status(device))[-1].payload == b"offline")
    finally:
        if daemon.poll() is None:
            daemon.kill()
        recorder.close()
        clear_retained(broker, topics.state_topics(device) + topics.all_discovery_topics(device))
    assert daemon.returncode == 0, err
    assert out == ""  # the daemon's stdout is the journal too: readings go to sinks, not there
    lines = err.splitlines()
    assert any(line.startswith("<6>edge_gateway.daemon: daemon: stopped cleanly") for line in lines), err
    assert all(line.startswith(("<", "    ")) for line in lines), err  # every line carries its journal priority
    readings = stored(tmp_path, device)
    published = {r["timestamp"] for r in recorder.json_on(topics.telemetry(device))}
    assert published == set(readings[dd.TS].map(dd.format_ts))  # the last reading too: flushed before exit
    marks = json.loads((tmp_path / "data" / "state" / f"mqtt-{device}.json").read_text())
    assert marks[device] == int(readings[dd.TS].iloc[-1].as_unit("us").asm8.view("int64"))


def test_the_daemon_without_mqtt_writes_the_store_and_stops_cleanly(tmp_path):
    device = unique_id()
    daemon = start_daemon(tmp_path, device, env={"JOURNAL_STREAM": "8:1234"})  # inherited, but not our stderr
    try:
        deadline = pd.Timestamp.now() + pd.Timedelta(seconds=15)
        while pd.Timestamp.now() < deadline and not ((tmp_path / "data" / "edge.db").exists() and len(stored(tmp_path, device)) >= 2):
            assert daemon.poll() is None, daemon.stderr.read()
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=20)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, err
    assert len(stored(tmp_path, device)) >= 2
    assert "INFO edge_gateway.daemon: daemon: stopped cleanly" in err  # plain format outside systemd


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--daemon", "--no-store"], {}, "--daemon keeps every reading in the edge store"),
        (["--daemon", "--enable-mqtt", "--mqtt-port", "0"], {}, "--mqtt-port='0': expected a TCP port number 1-65535"),
        (["--daemon", "--enable-mqtt"], {"MQTT_PORT": "eighteen"}, "environment variable MQTT_PORT='eighteen': expected a TCP port"),
        (["--daemon", "--enable-mqtt"], {"MQTT_TLS": "maybe"}, "MQTT_TLS='maybe': expected true or false"),
        (["--daemon", "--enable-mqtt", "--mqtt-ca-file", "missing.pem"], {}, "CA file not found"),
        (["--daemon", "--enable-mqtt", "--mqtt-password", "x"], {}, "without a user name"),
        (["--status", "--enable-mqtt", "--mqtt-host", "http://broker"], {}, "expected a host name or IP address"),
        # Names the resolver cannot encode failed in the client's thread, a traceback per reconnect.
        (["--once", "--no-store", "--enable-mqtt", "--mqtt-host", "\u202eabc"], {}, "MQTT host '\\u202eabc': expected a host"),
        (["--once", "--no-store", "--enable-mqtt"], {"MQTT_HOST": "a" * 300}, "(302 characters): expected a host name"),
        (["--once", "--no-store", "--enable-mqtt", "--mqtt-host", "a" * 64 + ".example"], {}, "expected a host name"),
    ],
)
def test_bad_daemon_and_mqtt_options_are_one_line_and_exit_2(in_tmp_cwd, capsys, monkeypatch, argv, env, message):
    for name in ("MQTT_HOST", "MQTT_PORT", "MQTT_TLS", "MQTT_USERNAME", "MQTT_PASSWORD", "MQTT_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_status_reports_an_unreachable_broker_in_one_line_and_exits_1(in_tmp_cwd, capsys):
    port = free_port()
    assert main(["--status", "--enable-mqtt", "--mqtt-port", str(port)]) == 1
    out = capsys.readouterr().out
    assert f"mqtt broker 127.0.0.1:{port}: unreachable (" in out
    assert "edge store data/edge.db: no readings yet" in out


@pytest.mark.mqtt
def test_status_shows_readings_last_time_acknowledgements_and_a_reachable_broker(broker, in_tmp_cwd, capsys, monkeypatch):  # noqa: F811
    device = unique_id()
    monkeypatch.setenv("MQTT_HOST", broker.host)
    monkeypatch.setenv("MQTT_PORT", str(broker.port))
    try:
        assert main(["--once", "--enable-mqtt", "--device-id", device, "--config", str(write_config(in_tmp_cwd, device))]) == 0
    finally:
        clear_retained(broker, topics.state_topics(device) + topics.all_discovery_topics(device))
    printed = json.loads(capsys.readouterr().out)
    assert main(["--status"]) == 0  # MQTT_HOST set: the broker is checked without --enable-mqtt
    out = capsys.readouterr().out
    assert "edge store data/edge.db: 1 readings, 1 device(s)" in out
    row = next(line for line in out.splitlines() if line.startswith(device)).split()
    assert row[1] == "1" and row[2] == printed["timestamp"] and row[-1] == printed["timestamp"]  # last reading, acknowledged
    assert f"mqtt broker {broker.address}: reachable" in out


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read(ROOT / "deploy" / "edge-gateway.service")
    return unit


def _env_example() -> dict[str, str]:
    lines = (ROOT / "deploy" / "edge-gateway.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_the_systemd_unit_runs_the_daemon_as_its_own_user_and_stops_it_with_sigterm():
    service = _unit()["Service"]
    assert service["User"] not in ("", "root")
    assert service["EnvironmentFile"] == "/etc/edge-gateway.env"
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) >= 30
    assert service["Restart"] == "on-failure" and service["StandardError"] == "journal"
    python, script, *args = service["ExecStart"].replace("$GATEWAY_ARGS", _env_example()["GATEWAY_ARGS"]).split()
    assert python.startswith(service["WorkingDirectory"]) and python.endswith("/bin/python") and script == "run_simulator.py"
    parsed = build_parser().parse_args(args)  # every flag of the unit and the example is one the CLI knows
    assert parsed.daemon and parsed.enable_mqtt and parsed.store.startswith("/var/lib/edge-gateway/")


def test_the_environment_example_names_only_variables_the_gateway_reads():
    sources = "".join(p.read_text() for p in [ROOT / "edge_gateway" / "mqtt" / "settings.py", ROOT / "edge_gateway" / "stores" / "influx_settings.py"])
    names = set(_env_example()) - {"GATEWAY_ARGS"}
    assert {n for n in names if n.startswith("MQTT_")} == {"MQTT_HOST", "MQTT_PORT", "MQTT_USERNAME", "MQTT_PASSWORD", "MQTT_TLS", "MQTT_CA_FILE"}
    assert all(f'"{name}"' in sources for name in names), sorted(n for n in names if f'"{n}"' not in sources)
