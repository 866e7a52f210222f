"""``run_simulator.py``: parse, build settings, call the library, map errors to one line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from der_core.cli_support import (
    START_YEARS,
    ArgumentParser,
    add_common_flags,
    arg_type,
    bounded_int,
    device_id_arg,
    local_instant,
    output_path,
    positive_int,
    progress,
    setup_logging,
    start_timestamp,
)
from der_core.config import (
    SimulatorConfig,
    load_config,
    site_record,
    with_overrides,
    write_config,
)
from der_core.der_data import shown
from der_core.errors import DERError, UsageError
from der_core.files import input_problem
from der_core.memory import retain_freed_memory
from der_core.sites import site_configs
from der_physics import generator
from edge_gateway.gateway import ClockSteps, JsonlSink, align
from edge_gateway.mqtt import add_mqtt_flags, mqtt_configured, mqtt_settings
from edge_gateway.status import edge_status
from edge_gateway.stores.factory import open_edge_store
from edge_gateway.stores.influx_settings import add_influx_flags, influx_settings

log = logging.getLogger("edge_gateway")

#: ``--sites`` at most: a chunk of --historical holds every site's day-long arrays at once
#: (about 2 MB per site), so a thousand sites need about 2 GB; fleets beyond that are
#: run_portfolio.py's work.
MAX_SITES = 1000


#: The configuration field each flag sets, so a value refused is said under its flag.
FLAGS = {"seed": "--seed", "device_id": "--device-id", "interval_seconds": "--interval", "output_file": "--output"}


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
    mode.add_argument("--remove-device", type=device_id_arg, metavar="DEVICE_ID",
                      help="delete the device's retained Home Assistant configs and states from the MQTT broker, then exit")
    parser.add_argument("--config", help="JSON configuration file (all fields optional)")
    parser.add_argument("--interval", type=arg_type(positive_int, "a whole number of seconds > 0"), help="seconds between readings (default: config interval_seconds, 300)")
    parser.add_argument("--start", help="first instant of --historical (YYYY-MM-DD in the site's time zone, or ISO 8601)")
    parser.add_argument("--end", help="end of --historical, exclusive (same forms as --start)")
    parser.add_argument("--output", help="also write readings to this JSON Lines file: --historical makes a new file "
                        "(--force replaces one), live modes append (--historical without it: stdout)")
    parser.add_argument("--seed", type=arg_type(int, "an integer"), help="random seed (same seed, same readings)")
    parser.add_argument("--device-id", type=device_id_arg, help="device id (default: config device_id)")
    parser.add_argument("--sites", type=arg_type(bounded_int(1, MAX_SITES), f"a whole number of sites from 1 to {MAX_SITES}"),
                        default=1, help=f"simulate N sites around the configured one (at most {MAX_SITES})")
    parser.add_argument("--store", help="edge store file (SQLite; default: config edge_store_path)")
    parser.add_argument("--no-store", action="store_true", help="do not write readings to the edge store")
    parser.add_argument("--force", action="store_true", help="with --generate-config or --historical --output: replace an existing file")
    add_influx_flags(parser)
    add_mqtt_flags(parser)
    add_common_flags(parser)
    return parser


def load_settings(args: argparse.Namespace) -> SimulatorConfig:
    config = load_config(args.config) if args.config and not args.generate_config else SimulatorConfig()
    return with_overrides(config, FLAGS, seed=args.seed, device_id=args.device_id, interval_seconds=args.interval,
                          output_file=args.output)


def parse_instant(text: str, flag: str, timezone: str) -> pd.Timestamp:
    """An instant from a flag, local times in the site's ``timezone`` (:func:`local_instant`)."""
    try:
        ts = start_timestamp(text)
    except (ValueError, TypeError):
        raise UsageError(f"{flag} {shown(text)}: expected a date YYYY-MM-DD or an ISO 8601 time "
                         f"in {START_YEARS[0]}-{START_YEARS[1]}") from None
    return local_instant(ts, timezone, flag, text)


def generate_config(args: argparse.Namespace, config: SimulatorConfig) -> int:
    if not args.config:
        raise UsageError("--generate-config needs --config FILE to write to")
    path = output_path(args.config, "--config")
    if path.exists() and not args.force:
        raise UsageError(f"{path} already exists; choose another path or add --force to overwrite it")
    write_config(config, path)
    print(f"wrote {path}")
    return 0


def historical_output(args: argparse.Namespace, config: SimulatorConfig) -> Path | None:
    """Where --historical writes, checked before any work: a backfill writes a whole range, so
    adding it to an older file would repeat every instant; an existing file is refused unless
    --force says to replace it. Only a regular file is replaced, the one a symbolic link names
    (the link stays): replacing ``/dev/stdout`` or a pipe would put a file where the device was."""
    if not config.output_file:
        return None
    flag = "--output" if args.output else "output_file"
    path = output_path(config.output_file, flag)
    if not path.exists():
        return path
    problem = input_problem(path)
    if problem is not None:
        raise UsageError(f"{flag} {shown(str(path))}: {problem}; expected a file to write "
                         "(without --output the readings stream to stdout)")
    if not args.force:
        raise UsageError(f"--output {path} already exists; choose another path or add --force to replace it")
    return path.resolve()


def run_historical(args: argparse.Namespace, configs: list[SimulatorConfig]) -> int:
    if not (args.start and args.end):
        raise UsageError("--historical needs --start and --end (e.g. --start 2024-06-15 --end 2024-06-16)")
    tz = configs[0].timezone
    start, end = parse_instant(args.start, "--start", tz), parse_instant(args.end, "--end", tz)
    if end <= start:
        raise UsageError(f"--end ({args.end}) must be after --start ({args.start})")
    if start != start.floor("s"):  # the output's timestamps are to the second: they would name another instant than the store's
        raise UsageError(f"--start {shown(args.start)}: readings are stamped to the second; expected a time in whole seconds")
    target = historical_output(args, configs[0])
    store = None
    if not args.no_store:
        store = open_edge_store(args.store or configs[0].edge_store_path, influx_settings(args) if args.enable_influxdb else None)
    # Readings go to a hidden file beside the target and replace it only once all are written,
    # so an interrupted run never leaves half a backfill under the name asked for.
    partial = None
    if target is not None:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        os.close(handle)
        partial = Path(name)
    sinks = [store.write] if store is not None else []
    sinks.append(JsonlSink(partial, None if partial is not None else sys.stdout))
    try:
        if store is not None:
            for site in configs:
                store.put_site(site_record(site))
        steps = generator.step_count(start, end, configs[0].interval_seconds)
        chunk = 8_640
        rows = 0
        for frame in progress(generator.historical(configs, start, end, chunk), total=-(-steps // chunk), desc="historical", unit="chunk"):
            for sink in sinks:
                sink(frame)
            rows += len(frame)
        if partial is not None:
            os.replace(partial, target)
            partial = None
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)
        if store is not None:
            store.close()
    log.info("generated %d readings for %d site(s) from %s to %s", rows, len(configs), start, end)
    return 0


def live_output(config: SimulatorConfig, flag: str) -> None:
    """Live modes append to their output file; its folder must exist (checked before starting)."""
    if config.output_file:
        output_path(config.output_file, flag)


def run_live(args: argparse.Namespace, configs: list[SimulatorConfig], gateway_id: str | None = None) -> int:
    live_output(configs[0], "--output" if args.output else "output_file")
    # Imported here: the scheduler's imports cost a fifth of a second --historical never needs.
    from der_core.scheduling import Every, run_schedule
    from edge_gateway.daemon import device_jobs, open_runtime

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
        hold_writes=not args.once,
    )
    gateway, interval = runtime.gateway, configs[0].interval_seconds
    try:
        if args.once:
            gateway.step(align(pd.Timestamp.now(tz="UTC"), interval))
            if runtime.link is not None and not runtime.link.connected.wait(mqtt.stop_timeout_s):
                kept = "; it is kept in the edge store" if runtime.store is not None else ""
                raise DERError(f"MQTT broker {mqtt.address} unreachable: the reading was not published{kept}")
            return 0
        job = Every("gateway", ClockSteps(gateway, aligned=args.scheduled), interval, aligned=args.scheduled)
        run_schedule([job, *device_jobs(runtime)])
        return 0
    finally:
        runtime.close()


def start_daemon(args: argparse.Namespace, configs: list[SimulatorConfig], gateway_id: str | None = None) -> int:
    from edge_gateway.daemon import run_daemon

    if args.no_store:
        raise UsageError("--daemon keeps every reading in the edge store so nothing is lost offline; drop --no-store")
    live_output(configs[0], "--output" if args.output else "output_file")
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


def remove_device(args: argparse.Namespace) -> int:
    from edge_gateway.mqtt.remove import remove_device as remove

    settings = mqtt_settings(args)
    cleared = remove(settings, args.remove_device)
    print(f"cleared {cleared} retained message(s) of device {args.remove_device} from MQTT broker {settings.address}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.remove_device:
        return remove_device(args)
    if args.no_store and args.enable_influxdb:
        raise UsageError("--enable-influxdb makes InfluxDB the edge store and --no-store writes to none; expected one of them")
    config = load_settings(args)
    if args.generate_config:
        return generate_config(args, config)
    if args.status:
        return show_status(args, config)
    configs = site_configs(config, args.sites)
    if args.historical and config.reads_device:
        raise UsageError(f"--historical simulates a past; a {config.source.kind} source reads its device live only")
    if args.historical:
        retain_freed_memory()  # chunk after chunk allocates the same arrays again
        return run_historical(args, configs)
    if args.daemon:
        return start_daemon(args, configs, gateway_id=config.device_id)
    return run_live(args, configs, gateway_id=config.device_id)
