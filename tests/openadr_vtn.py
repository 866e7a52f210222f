"""A real OpenADR 2.0b VTN (openleadr's ``OpenADRServer``) on localhost for tests: it registers
one VEN as ``VEN_ID``, records the reports it is offered and the values it receives, and
the opt (optIn/optOut) the VEN answers to each event it issues."""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import openleadr

VEN_ID = "ven-fleet-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Vtn:
    server: object
    url: str
    registrations: list[dict] = field(default_factory=list)
    offered: list[tuple[str, str, str, str]] = field(default_factory=list)
    received: dict[tuple[str, str], list[tuple[datetime, float]]] = field(default_factory=lambda: defaultdict(list))
    opts: dict[str, str] = field(default_factory=dict)

    def on_create_party_registration(self, registration_info: dict):
        self.registrations.append(registration_info)
        return VEN_ID, "reg-1"

    def on_register_report(self, ven_id, resource_id, measurement, unit, scale, min_sampling_interval,
                           max_sampling_interval):
        self.offered.append((resource_id, measurement, unit, scale))

        def on_values(values, key=(resource_id, measurement)):
            self.received[key].extend(values)

        return on_values, min_sampling_interval

    def on_opt(self, ven_id: str, event_id: str, opt_type: str) -> None:
        self.opts[event_id] = opt_type

    def reduction(self, kw: float, start: datetime, targets: list[dict] | None = None) -> str:
        return self.server.add_event(
            ven_id=VEN_ID, signal_name="LOAD_DISPATCH", signal_type="delta",
            intervals=[{"dtstart": start, "duration": timedelta(hours=2), "signal_payload": -kw}],
            targets=targets, callback=self.on_opt)


@asynccontextmanager
async def vtn(**tls):
    port = free_port()
    server = openleadr.OpenADRServer(vtn_id="VTN", http_port=port, http_host="127.0.0.1",
                                     requested_poll_freq=timedelta(seconds=1), show_fingerprint=False, **tls)
    scheme = "https" if tls.get("http_cert") else "http"
    host = "localhost" if tls.get("http_cert") else "127.0.0.1"
    record = Vtn(server, f"{scheme}://{host}:{port}/OpenADR2/Simple/2.0b")
    server.add_handler("on_create_party_registration", record.on_create_party_registration)
    server.add_handler("on_register_report", record.on_register_report)
    await server.run()
    try:
        yield record
    finally:
        await server.stop()


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    """Wait for what the VTN or VEN should see; the test then asserts it (no timing checked)."""
    for _ in range(int(within_s / 0.1)):
        if condition():
            return
        await asyncio.sleep(0.1)
