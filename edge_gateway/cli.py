"""``run_simulator.py``: parse, build settings, call the library, map errors to one line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from edge_gateway import generator
from edge_gateway.cli_support import ArgumentParser, add_common_flags, arg_type, positive_int, progress, setup_logging
from edge_gateway.config import SimulatorConfig, load_config, site_record, with_overrides, write_config
from edge_gateway.errors import DERError, UsageError
from edge_gateway.gateway import JsonlSink, align
from edge_gateway.memory import retain_freed_memory
from edge_gateway.mqtt import add_mqtt_flags, mqtt_configured, mqtt_settings
from edge_gateway.sites import site_configs
from edge_gateway.status import edge_status
from edge_gateway.stores.factory import add_influx_flags, influx_settings, open_edge_store

log = logging.getLogger("edge_gateway")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="run_simulator.py", description="Edge gateway simulator: solar, battery, home load and grid price readings.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="make one reading now and print it")
    mode.add_argument("--continuous", action="store_true", help="make a reading every --interval seconds")
    mode.add_argument("--scheduled", action="store_true", help="like --continuous, aligned to clock boundaries")
    mode.add_argument("--historical", action="store_true", help="generate readings for --start .. --end")
    mode.add_argument("--generate-config", action="store_true", help="write a sample configuration to --config")
    mode.add_argument("--status", action="store_true", help="show what the edge store holds and whether the configured servers answer")
    mode.add_argument("--daemon", action="store_true", help="run the gateway with every enabled sink until SIGTERM/SIGINT (for systemd)")
    parser.add_argument("--config", help="JSON configuration file (all fields optional)")
    parser.add_argument("--interval", type=arg_type(positive_int, "a whole number of seconds > 0"), help="seconds between readings (default: config interval_seconds, 300)")
    parser.add_argument("--start", help="first instant of --historical (YYYY-MM-DD in the site's time zone, or ISO 8601)")
    parser.add_argument("--end", help="end of --historical, exclusive (same forms as --start)")
    parser.add_argument("--output", help="also append readings to this JSON Lines file (--historical without it: stdout)")
    parser.add_argument("--seed", type=arg_type(int, "an integer"), help="random seed (same seed, same readings)")
    parser.add_argument("--device-id", help="device id (default: config device_id)")
    parser.add_argument("--sites", type=arg_type(positive_int, "a whole number of sites > 0"), default=1, help="simulate N sites around the configured one")
    parser.add_argument("--store", help="edge store file (SQLite; default: config edge_store_path)")
    parser.add_argument("--no-store", action="store_true", help="do not write readings to the edge store")
    parser.add_argument("--force", action="store_true", help="with --generate-config: overwrite an existing file")
    add_influx_flags(parser)
    add_mqtt_flags(parser)
    add_common_flags(parser)
    return parser


def load_settings(args: argparse.Namespace) -> SimulatorConfig:
    config = load_config(args.config) if args.config and not args.generate_config else SimulatorConfig()
    return with_overrides(config, seed=args.seed, device_id=args.device_id, interval_seconds=args.interval, output_file=args.output)


def parse_instant(text: str, flag: str, timezone: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise UsageError(f"{flag} {text!r}: expected a date YYYY-MM-DD or an ISO 8601 time") from None
    if ts is pd.NaT:
        raise UsageError(f"{flag} {text!r}: expected a date YYYY-MM-DD or an ISO 8601 time")
    return (ts.tz_localize(timezone) if ts.tzinfo is None else ts).tz_convert("UTC")


def generate_config(args: argparse.Namespace, config: SimulatorConfig) -> int:
    if not args.config:
        raise UsageError("--generate-config needs --config FILE to write to")
    path = Path(args.config)
    if path.exists() and not args.force:
        raise UsageError(f"{path} already exists; choose another path or add --force to overwrite it")
    write_config(config, path)
    print(f"wrote {path}")
    return 0


def sinks_for(args: argparse.Namespace, config: SimulatorConfig, stdout: bool):
    sinks, store = [], None
    if not args.no_store:
        influx = influx_settings(args) if args.enable_influxdb else None
        store = open_edge_store(args.store or config.edge_store_path, influx)
        sinks.append(store.write)
    if config.output_file or stdout:
        sinks.append(JsonlSink(config.output_file, sys.stdout if stdout else None))
    return sinks, store


def run_historical(args: argparse.Namespace, configs: list[SimulatorConfig]) -> int:
    if not (args.start and args.end):
        raise UsageError("--historical needs --start and --end (e.g. --start 2024-06-15 --end 2024-06-16)")
    tz = configs[0].timezone
    start, end = parse_instant(args.start, "--start", tz), parse_instant(args.end, "--end", tz)
    if end <= start:
        raise UsageError(f"--end ({args.end}) must be after --start ({args.start})")
    sinks, store = sinks_for(args, configs[0], stdout=not configs[0].output_file)
    if store is not None:
        for site in configs:
            store.put_site(site_record(site))
    interval = configs[0].interval_seconds
    steps = len(generator.time_range(start, end, interval))
    chunk = 8_640
    rows = 0
    for frame in progress(generator.historical(configs, start, end, chunk), total=-(-steps // chunk), desc="historical", unit="chunk"):
        for sink in sinks:
            sink(frame)
        rows += len(frame)
    log.info("generated %d readings for %d site(s) from %s to %s", rows, len(configs), start, end)
    if store is not None:
        store.close()
    return 0


def run_live(args: argparse.Namespace, configs: list[SimulatorConfig], gateway_id: str | None = None) -> int:
    # Imported here: the scheduler's imports cost a fifth of a second --historical never needs.
    from edge_gateway.daemon import open_runtime
    from edge_gateway.scheduling import Every, run_schedule

    mqtt = mqtt_settings(args) if args.enable_mqtt else None
    runtime = open_runtime(
        configs,
        store_path=None if args.no_store else (args.store or configs[0].edge_store_path),
        influx=influx_settings(args) if args.enable_influxdb and not args.no_store else None,
        mqtt=mqtt,
        output_file=configs[0].output_file,
        stream=sys.stdout if args.once or not configs[0].output_file else None,
        gateway_id=gateway_id,
        state_dir=Path(args.store or configs[0].edge_store_path).parent / "state",
    )
    gateway, interval = runtime.gateway, configs[0].interval_seconds
    try:
        if args.once:
            gateway.step(align(pd.Timestamp.now(tz="UTC"), interval))
            if runtime.link is not None and not runtime.link.connected.wait(mqtt.stop_timeout_s):
                kept = "; it is kept in the edge store" if runtime.store is not None else ""
                raise DERError(f"MQTT broker {mqtt.address} unreachable: the reading was not published{kept}")
            return 0
        job = Every("gateway", lambda: gateway.step(align(pd.Timestamp.now(tz="UTC"), interval) if args.scheduled else None), interval, aligned=args.scheduled)
        run_schedule([job])
        return 0
    finally:
        runtime.close()


def start_daemon(args: argparse.Namespace, configs: list[SimulatorConfig], gateway_id: str | None = None) -> int:
    from edge_gateway.daemon import run_daemon

    if args.no_store:
        raise UsageError("--daemon keeps every reading in the edge store so nothing is lost offline; drop --no-store")
    return run_daemon(
        configs,
        store_path=args.store or configs[0].edge_store_path,
        influx=influx_settings(args) if args.enable_influxdb else None,
        mqtt=mqtt_settings(args) if args.enable_mqtt else None,
        output_file=configs[0].output_file,
        gateway_id=gateway_id,
    )


def show_status(args: argparse.Namespace, config: SimulatorConfig) -> int:
    healthy = edge_status(
        args.store or config.edge_store_path,
        sys.stdout,
        influx=influx_settings(args) if args.enable_influxdb else None,
        mqtt=mqtt_settings(args) if mqtt_configured(args) else None,
    )
    return 0 if healthy else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    config = load_settings(args)
    if args.generate_config:
        return generate_config(args, config)
    if args.status:
        return show_status(args, config)
    configs = site_configs(config, args.sites)
    if args.historical:
        retain_freed_memory()  # chunk after chunk allocates the same arrays again
        return run_historical(args, configs)
    if args.daemon:
        return start_daemon(args, configs, gateway_id=config.device_id)
    return run_live(args, configs, gateway_id=config.device_id)
