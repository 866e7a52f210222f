#!/usr/bin/env python
"""Demand response: the fleet as one OpenADR 2.0b VEN (docs/portfolio.md, "Demand response").

The VEN's events are decided by the fleet (cloud.dr.decision.FleetDR over the cloud store),
which sends its schedules to the gateways over MQTT (MQTT_HOST, MQTT_PORT, ...);
--report-only registers and reports without taking events, and needs no broker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import timedelta

import pandas as pd

from cloud.dr.decision import FleetDR
from cloud.dr.dispatch import MqttPublisher
from cloud.dr.openadr import FleetVen, ReportOnly, serve, ven_settings
from cloud.dr.telemetry import battery_devices, latest_from_store
from cloud.store.factory import add_cloud_db_flag, open_store_from_args
from der_core.cli_support import (
    ArgumentParser,
    add_common_flags,
    arg_type,
    bounded_int,
    run_cli,
    setup_logging,
)
from der_core.errors import UsageError
from edge_gateway.mqtt.settings import mqtt_configured, mqtt_settings


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="run_dr.py", description=__doc__)
    parser.add_argument("--ven", action="store_true", required=True, help="run the fleet's OpenADR VEN until stopped")
    parser.add_argument("--report-only", action="store_true",
                        help="register and report telemetry, answer every event optOut (no MQTT needed)")
    parser.add_argument("--vtn-url", help="the VTN, e.g. https://vtn.example.com/OpenADR2/Simple/2.0b (DER_OPENADR_VTN_URL)")
    parser.add_argument("--ven-name", help="this VEN's name (DER_OPENADR_VEN_NAME, default fleet)")
    parser.add_argument("--ven-id", help="the ven_id the VTN assigned, if any (DER_OPENADR_VEN_ID)")
    parser.add_argument("--cert", dest="cert_path", help="VEN certificate, PEM (DER_OPENADR_CERT)")
    parser.add_argument("--key", dest="key_path", help="VEN private key, PEM (DER_OPENADR_KEY)")
    parser.add_argument("--ca", dest="ca_path", help="CA of the VTN's server certificate (DER_OPENADR_CA)")
    parser.add_argument("--vtn-fingerprint", help="the VTN's signing certificate fingerprint (DER_OPENADR_VTN_FINGERPRINT)")
    parser.add_argument("--telemetry-interval", type=arg_type(bounded_int(1, 86_400), "a number of seconds from 1 to 86400"),
                        default=60,
                        help="shortest telemetry sampling the VEN offers, seconds (default 60)")
    add_cloud_db_flag(parser)
    add_common_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    logging.getLogger("openleadr").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    interval = timedelta(seconds=args.telemetry_interval)
    settings = ven_settings(os.environ, vtn_url=args.vtn_url, ven_name=args.ven_name, ven_id=args.ven_id,
                            cert_path=args.cert_path, key_path=args.key_path, ca_path=args.ca_path,
                            vtn_fingerprint=args.vtn_fingerprint, telemetry_interval=interval)
    if not args.report_only and not mqtt_configured(None):
        raise UsageError("run_dr.py --ven: the fleet sends its event schedules over MQTT; set MQTT_HOST "
                         "(and MQTT_PORT), or pass --report-only to register and report without taking events")
    mqtt = None if args.report_only else mqtt_settings()
    store = open_store_from_args(args, existing=True)  # the fleet the jobs stored: a typo would make an empty one
    devices = battery_devices(store)
    if not devices:
        raise UsageError("no declared site has a battery; declare sites with run_cloud_sync.py --site FILE")
    latest = latest_from_store(store, pd.Timedelta(interval) / 2)
    handler = ReportOnly() if mqtt is None else FleetDR(store, MqttPublisher(mqtt))
    asyncio.run(serve(FleetVen(settings, handler, devices, latest)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
