"""Does a real Home Assistant take the gateway's entities? Run before each release: installing
Home Assistant takes minutes and hundreds of packages, too slow for CI.

    MQTT_HOST=127.0.0.1 MQTT_PORT=1883 python benchmarks/check_home_assistant.py --ha-venv /path/to/ha-venv
    python benchmarks/check_home_assistant.py --install /path/to/new-venv     # pip install first

In a temporary folder it writes Home Assistant's configuration and the MQTT integration's
config entry (pointed at the broker of ``MQTT_HOST``/``MQTT_PORT``), starts ``hass``, runs
``run_simulator.py --continuous`` for a few intervals with a battery in ``setpoint`` mode,
stops Home Assistant with SIGTERM (which writes its registries) and reads
``.storage/core.entity_registry``: the five energy sensors (device class energy, state class
total_increasing, kWh), the next-action sensor, the battery mode select and the manual
setpoint number must be there. Then it deletes the device's retained messages
(``--remove-device``). Prints what it found; exits 1 when something is missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._machine import describe  # noqa: E402
from edge_gateway.mqtt import mqtt_settings, topics  # noqa: E402
from edge_gateway.mqtt.remove import remove_device  # noqa: E402

HA_VERSION = "2024.3.3"  # the last release that runs on Python 3.11
HA_REQUIREMENTS = [f"homeassistant=={HA_VERSION}", "paho-mqtt==1.6.1"]  # 2024.3's MQTT integration pins paho 1.6.1
STARTUP_S = 300.0


def install(venv: Path) -> None:
    print(f"installing Home Assistant {HA_VERSION} into {venv} (several minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", *HA_REQUIREMENTS], check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(folder: Path, host: str, port: int, http_port: int) -> None:
    (folder / ".storage").mkdir(parents=True)
    (folder / "configuration.yaml").write_text(
        "homeassistant: {name: check, latitude: 37.77, longitude: -122.42, elevation: 16, unit_system: metric,\n"
        "                time_zone: America/Los_Angeles, currency: USD, country: US}\n"
        f"http: {{server_host: 127.0.0.1, server_port: {http_port}}}\n"
        "logger: {default: warning, logs: {homeassistant.components.mqtt: info}}\n")
    entry = {"entry_id": "mqttcheck0001", "version": 1, "minor_version": 1, "domain": "mqtt", "title": host,
             "data": {"broker": host, "port": port, "discovery": True, "discovery_prefix": topics.DISCOVERY_PREFIX},
             "options": {}, "pref_disable_new_entities": False, "pref_disable_polling": False, "source": "user",
             "unique_id": None, "disabled_by": None}
    (folder / ".storage" / "core.config_entries").write_text(json.dumps(
        {"version": 1, "minor_version": 2, "key": "core.config_entries", "data": {"entries": [entry]}}))


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(1.0)
    return False


def run_gateway(folder: Path, device_id: str, intervals: int, interval_s: int) -> None:
    config = folder / "gateway.json"
    config.write_text(json.dumps({"device_id": device_id, "interval_seconds": interval_s, "battery": {"mode": "setpoint"}}))
    process = subprocess.Popen([sys.executable, str(ROOT / "run_simulator.py"), "--continuous", "--enable-mqtt", "--config", str(config),
                                "--store", str(folder / "edge.db"), "--output", str(folder / "readings.jsonl"), "--quiet"],
                               cwd=ROOT, stdout=subprocess.DEVNULL)
    time.sleep(intervals * interval_s + 2)
    process.send_signal(signal.SIGTERM)
    if process.wait(timeout=60) != 0:
        raise SystemExit(f"the gateway exited with status {process.returncode}")


def expected(device_id: str) -> dict[str, dict]:
    """unique_id -> what the registry entry must say."""
    node = topics.node_id(device_id)
    wanted = {f"der_{node}_{m.key}": {"domain": "sensor", "original_device_class": "energy", "unit_of_measurement": "kWh",
                                      "state_class": "total_increasing"} for m in topics.ENERGY_SENSORS}
    wanted[f"der_{node}_{topics.NEXT_ACTION}"] = {"domain": "sensor", "original_device_class": "enum"}
    wanted[f"der_{node}_{topics.MODE}"] = {"domain": "select"}
    wanted[f"der_{node}_{topics.MANUAL_SETPOINT}"] = {"domain": "number", "unit_of_measurement": "kW"}
    return wanted


def check(registry: dict, device_id: str) -> list[str]:
    """Print each expected entity as registered; return what is missing or wrong."""
    entities = {e["unique_id"]: e for e in registry["data"]["entities"] if e.get("platform") == "mqtt"}
    problems = []
    for unique_id, want in expected(device_id).items():
        entity = entities.get(unique_id)
        if entity is None:
            problems.append(f"{unique_id}: not registered")
            print(f"  MISSING  {unique_id}")
            continue
        got = {"domain": entity["entity_id"].split(".")[0], "original_device_class": entity.get("original_device_class"),
               "unit_of_measurement": entity.get("unit_of_measurement"),
               "state_class": (entity.get("capabilities") or {}).get("state_class")}
        wrong = {k: (got[k], v) for k, v in want.items() if got[k] != v}
        print(f"  {'ok' if not wrong else 'WRONG':7}  {entity['entity_id']:60} class={got['original_device_class']} "
              f"unit={got['unit_of_measurement']} state_class={got['state_class']}")
        problems += [f"{unique_id}: {k} is {g!r}, expected {w!r}" for k, (g, w) in wrong.items()]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--ha-venv", type=Path, help="a venv with homeassistant installed")
    where.add_argument("--install", type=Path, metavar="VENV", help="create this venv and install Home Assistant into it first")
    parser.add_argument("--intervals", type=int, default=3, help="gateway readings to make (default 3)")
    parser.add_argument("--interval", type=int, default=5, help="seconds between readings (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    args = parser.parse_args()
    venv = args.install or args.ha_venv
    if args.install:
        install(args.install)
    hass = venv / "bin" / "hass"
    if not hass.exists():
        print(f"error: {hass} not found; expected a venv with homeassistant {HA_VERSION} (or pass --install VENV)", file=sys.stderr)
        return 2
    settings = mqtt_settings()
    device_id = f"ha-check-{uuid.uuid4().hex[:8]}"
    folder = Path(tempfile.mkdtemp(prefix="ha-check-"))
    config, http_port = folder / "ha", free_port()
    write_config(config, settings.host, settings.port, http_port)
    print(f"{dt.date.today()}  {describe()}  Home Assistant {HA_VERSION}  broker {settings.address}  device {device_id}")
    log = (folder / "hass.log").open("w")
    started = time.monotonic()
    ha = subprocess.Popen([str(hass), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT,
                          env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"})
    try:
        if not wait_for_port(http_port, ha, STARTUP_S):
            print(f"error: Home Assistant did not start within {STARTUP_S:g}s; see {folder / 'hass.log'}", file=sys.stderr)
            return 1
        print(f"Home Assistant up in {time.monotonic() - started:.0f}s; gateway: {args.intervals} readings every {args.interval}s")
        run_gateway(folder, device_id, args.intervals, args.interval)
        time.sleep(2)  # the last discovery messages reach Home Assistant
    finally:
        ha.send_signal(signal.SIGTERM)
        ha.wait(timeout=120)
        log.close()
    registry_path = config / ".storage" / "core.entity_registry"
    if not registry_path.exists():
        print(f"error: Home Assistant wrote no entity registry; see {folder / 'hass.log'}", file=sys.stderr)
        return 1
    registry = json.loads(registry_path.read_text())
    node = topics.node_id(device_id)
    ours = [e for e in registry["data"]["entities"] if e.get("unique_id", "").startswith(f"der_{node}_")]
    print(f"entity registry: {len(ours)} entities of the device")
    problems = check(registry, device_id)
    errors = [line.rstrip() for line in (folder / "hass.log").read_text().splitlines() if "ERROR" in line and "mqtt" in line]
    for line in errors[:10]:
        print(f"  hass: {line[:200]}")
    print(f"--remove-device: cleared {remove_device(settings, device_id)} retained message(s)")
    if args.keep:
        print(f"kept {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    if problems:
        print("FAILED: " + "; ".join(problems))
        return 1
    print(f"OK: {len(expected(device_id))} entities registered as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
