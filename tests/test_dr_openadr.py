"""The fleet's OpenADR 2.0b VEN against a real openleadr VTN on localhost, its event
translation, and hostile events (hypothesis over openleadr's parsed event dicts)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.dr.model import Answer, Delivery, DREvent, Signal
from cloud.dr.openadr import FleetVen, RegistrationFailed, VenSettings, ven_settings
from cloud.dr.openadr_events import MAX_INTERVALS, EventRejected, translate
from cloud.dr.telemetry import Telemetry
from cloud.dr.tls import check_tls
from der_core.errors import ConfigError
from der_core.redact import redact
from tests.openadr_vtn import VEN_ID, until, vtn

BATTERIES = ("bat-1", "bat-2", "bat-3")
SOURCE = "openadr"


@dataclass
class ScriptedFleet:
    """A DRHandler with a capacity: it takes any request up to ``capacity_kw`` and reports
    the deliveries the test scripts."""

    capacity_kw: float = 20.0
    decided: list[DREvent] = field(default_factory=list)
    cancelled: list[tuple[str, str]] = field(default_factory=list)
    deliveries: dict[str, Delivery] = field(default_factory=dict)

    def decide(self, event: DREvent) -> Answer:
        self.decided.append(event)
        if event.requested_kw > self.capacity_kw:
            return Answer(False, f"{event.requested_kw:.0f} kW exceeds the fleet's {self.capacity_kw:.0f} kW")
        return Answer(True, "within capacity", event.requested_kw)

    def cancel(self, event_id: str, source: str) -> None:
        self.cancelled.append((event_id, source))

    def delivery(self, event_id: str, source: str) -> Delivery | None:
        return self.deliveries.get(event_id)

    def unmeasured(self, source: str) -> list[DREvent]:
        """The windows taken and not yet measured, as the store of a fleet remembers them."""
        return [e for e in self.decided if e.requested_kw <= self.capacity_kw and e.event_id not in self.deliveries
                and (e.event_id, source) not in self.cancelled]


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> pd.Timestamp:
        return pd.Timestamp.now(tz="UTC") + self.offset


TELEMETRY_TS = pd.Timestamp("2030-01-01T12:00:00Z")
TELEMETRY = {b: Telemetry(TELEMETRY_TS, -1.5 * (i + 1), 40.0 + 10 * i) for i, b in enumerate(BATTERIES)}


@asynccontextmanager
async def ven(url: str, handler: ScriptedFleet, clock: Callable[[], pd.Timestamp] | None = None, **options):
    settings = VenSettings(vtn_url=url, ven_name="fleet", telemetry_interval=timedelta(seconds=1), **options)
    fleet = FleetVen(settings, handler, BATTERIES, TELEMETRY.get, clock=clock or Clock())
    try:
        await fleet.run()
        yield fleet
    finally:
        await fleet.stop()


def soon() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(minutes=5)


# -- against a real VTN ------------------------------------------------------------------------


def test_registration_and_telemetry_reach_the_vtn():
    async def scenario():
        async with vtn() as server, ven(server.url, ScriptedFleet()):
            keys = [(b, m) for b in BATTERIES for m in ("RealPower", "stateOfCharge")]
            await until(lambda: all(server.received[k] for k in keys))
            return server

    server = asyncio.run(scenario())
    assert [r["ven_name"] for r in server.registrations] == ["fleet"]
    assert ("bat-2", "RealPower", "W", "k") in server.offered
    assert ("bat-2", "stateOfCharge", "%", "none") in server.offered
    assert {r for r, m, _, _ in server.offered if m == "deliveredReduction"} == {"fleet", *BATTERIES}
    for battery, reading in TELEMETRY.items():
        assert server.received[(battery, "RealPower")][0] == (TELEMETRY_TS.to_pydatetime(), reading.power_kw)
        assert server.received[(battery, "stateOfCharge")][0] == (TELEMETRY_TS.to_pydatetime(), reading.soc_percent)


def test_a_reduction_within_capacity_is_taken_and_the_vtn_sees_opt_in():
    handler = ScriptedFleet(capacity_kw=20)

    async def scenario():
        async with vtn() as server, ven(server.url, handler):
            start = soon()
            event_id = server.reduction(5.0, start, targets=[{"resource_id": "bat-1"}, {"resource_id": "bat-3"}])
            await until(lambda: event_id in server.opts)
            return server, event_id, start

    server, event_id, start = asyncio.run(scenario())
    assert server.opts[event_id] == "optIn"
    (event,) = handler.decided
    assert (event.event_id, event.source, event.signal, event.value) == (event_id, SOURCE, Signal.REDUCTION, 5.0)
    assert (event.start, event.end) == (pd.Timestamp(start), pd.Timestamp(start) + pd.Timedelta(hours=2))
    assert event.sites == ("bat-1", "bat-3")


def test_a_reduction_the_fleet_refuses_shows_opt_out_at_the_vtn():
    handler = ScriptedFleet(capacity_kw=20)

    async def scenario():
        async with vtn() as server, ven(server.url, handler):
            event_id = server.reduction(500.0, soon())
            await until(lambda: event_id in server.opts)
            return server, event_id

    server, event_id = asyncio.run(scenario())
    assert server.opts[event_id] == "optOut"
    assert [e.requested_kw for e in handler.decided] == [500.0]
    assert handler.decided[0].sites == ()  # the VTN targeted the VEN: the whole fleet


def test_a_cancellation_reaches_the_handler():
    handler = ScriptedFleet()

    async def scenario():
        async with vtn() as server, ven(server.url, handler):
            event_id = server.reduction(5.0, soon())
            await until(lambda: event_id in server.opts)
            server.server.cancel_event(VEN_ID, event_id)
            await until(lambda: bool(handler.cancelled))
            return server, event_id

    server, event_id = asyncio.run(scenario())
    assert server.opts[event_id] == "optIn"
    assert handler.cancelled == [(event_id, SOURCE)]


async def _a_reduction_taken(server, fleet) -> tuple[list[str], datetime, str]:
    """A 6 kW reduction the fleet opted into: the messages the VEN sends from before it on, its
    start and its id."""
    sent: list[str] = []
    fleet.client.add_hook("before_send_xml", sent.append)
    start = soon()
    event_id = server.reduction(6.0, start)
    await until(lambda: event_id in server.opts)
    return sent, start, event_id


def test_the_delivered_reduction_reaches_the_vtn_once_measured():
    handler, clock = ScriptedFleet(), Clock()

    async def scenario():
        async with vtn() as server, ven(server.url, handler, clock) as fleet:
            sent, start, event_id = await _a_reduction_taken(server, fleet)
            await asyncio.sleep(1.5)  # reports sampled before the window ends carry nothing
            before = dict(server.received)
            # and are not sent: openleadr's VTN answers an empty report with HTTP 500
            assert not _delivery_reports(sent)
            handler.deliveries[event_id] = Delivery(event_id, "10-of-10", 6.0, 6.0, 5.2,
                                                    {"bat-1": 2.0, "bat-2": 3.2})
            clock.offset = timedelta(hours=3)
            await until(lambda: bool(server.received[("bat-2", "deliveredReduction")]))
            await asyncio.sleep(1.5)  # and each delivery is sent once
            return server, start, before

    server, start, before = asyncio.run(scenario())
    assert not any(m == "deliveredReduction" and v for (_, m), v in before.items())
    assert server.received[("fleet", "deliveredReduction")] == [(start, 5.2)]
    assert server.received[("bat-1", "deliveredReduction")] == [(start, 2.0)]
    assert server.received[("bat-2", "deliveredReduction")] == [(start, 3.2)]
    assert server.received[("bat-3", "deliveredReduction")] == []


def _delivery_reports(messages: list[str]) -> list[str]:
    return [m for m in messages if "oadrUpdateReport" in m and "<ei:reportSpecifierID>DR_DELIVERY<" in m]


def test_a_delivery_the_vtn_did_not_answer_is_sent_again_when_it_is_back():
    """A window's delivery is offered once; sent while the VTN was away, it was lost."""
    handler, clock = ScriptedFleet(), Clock()

    async def scenario():
        async with vtn() as server, ven(server.url, handler, clock) as fleet:
            sent, start, event_id = await _a_reduction_taken(server, fleet)
            await server.server.stop()  # the VTN goes away, keeping what it knows
            handler.deliveries[event_id] = Delivery(event_id, "forecast", 6.0, 6.0, 5.2, {"bat-1": 2.0})
            clock.offset = timedelta(hours=3)
            await until(lambda: any(">fleet:delivered<" in m for m in _delivery_reports(sent)))
            await server.server.run()
            await until(lambda: bool(server.received[("bat-1", "deliveredReduction")]))
            await asyncio.sleep(1.5)  # and, answered, it is not sent again
            return server, start

    server, start = asyncio.run(scenario())
    assert server.received[("fleet", "deliveredReduction")] == [(start, 5.2)]
    assert server.received[("bat-1", "deliveredReduction")] == [(start, 2.0)]


# -- mutual TLS with signed messages -----------------------------------------------------------


def _certificates(folder):
    """A CA, a VTN certificate for localhost and a VEN certificate, all signed by the CA."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
          .not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    paths = {"ca": folder / "ca.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name in ("vtn", "ven"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        paths[name] = folder / f"{name}.pem"
        paths[f"{name}_key"] = folder / f"{name}.key"
        paths[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}_key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return {k: str(v) for k, v in paths.items()}


def _tls_vtn_options(paths):
    from openleadr.utils import certificate_fingerprint

    ven_fingerprint = certificate_fingerprint(open(paths["ven"], "rb").read())
    return {"http_cert": paths["vtn"], "http_key": paths["vtn_key"], "http_ca_file": paths["ca"],
            "cert": paths["vtn"], "key": paths["vtn_key"],
            "ven_lookup": lambda ven_id: {"ven_id": VEN_ID, "ven_name": "fleet", "fingerprint": ven_fingerprint,
                                          "registration_id": "reg-1"}}


def _fingerprint(path: str) -> str:
    from openleadr.utils import certificate_fingerprint

    return certificate_fingerprint(open(path, "rb").read())


def test_mutual_tls_with_signed_messages_registers_and_answers_events(tmp_path):
    paths = _certificates(tmp_path)
    handler = ScriptedFleet()

    async def scenario():
        async with vtn(**_tls_vtn_options(paths)) as server, ven(
            server.url, handler, ven_id=VEN_ID, cert_path=paths["ven"], key_path=paths["ven_key"],
            ca_path=paths["ca"], vtn_fingerprint=_fingerprint(paths["vtn"]),
        ):
            event_id = server.reduction(5.0, soon())
            await until(lambda: event_id in server.opts)
            return server, event_id

    server, event_id = asyncio.run(scenario())
    assert server.url.startswith("https://")
    assert server.registrations and server.opts[event_id] == "optIn"


def test_a_vtn_whose_signature_does_not_match_the_fingerprint_is_not_registered_with(tmp_path):
    paths = _certificates(tmp_path)

    async def scenario():
        async with vtn(**_tls_vtn_options(paths)) as server:
            async with ven(server.url, ScriptedFleet(), ven_id=VEN_ID, cert_path=paths["ven"],
                           key_path=paths["ven_key"], ca_path=paths["ca"], vtn_fingerprint=_fingerprint(paths["ven"])):
                pass

    with pytest.raises(RegistrationFailed, match="did not register VEN 'fleet': The certificate fingerprint was incorrect"):
        asyncio.run(scenario())


def test_a_vtn_that_cannot_be_reached_is_named_as_such_in_the_one_refusal(caplog):
    """openleadr logs every failed request; while registering those lines become the
    refusal's reason, so the command says one line, and why."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario():
        async with ven(f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b", ScriptedFleet()):
            pass

    with pytest.raises(RegistrationFailed) as raised:
        asyncio.run(scenario())
    assert str(raised.value).startswith(f"VTN http://127.0.0.1:{port}/OpenADR2/Simple/2.0b did not register VEN 'fleet': "
                                        f"ClientConnectorError: Cannot connect to host 127.0.0.1:{port}")
    assert not [r for r in caplog.records if r.name.startswith("openleadr")]


def test_settings_pass_the_tls_and_signing_options_to_openleadr():
    options = VenSettings(vtn_url="https://vtn.example.com/OpenADR2/Simple/2.0b", ven_name="fleet", ven_id="v1",
                          cert_path="ven.pem", key_path="ven.key", key_passphrase="pw", ca_path="ca.pem",
                          vtn_fingerprint=FINGERPRINT).client_options()
    assert options == {"ven_name": "fleet", "vtn_url": "https://vtn.example.com/OpenADR2/Simple/2.0b",
                       "ven_id": "v1", "cert": "ven.pem", "key": "ven.key", "passphrase": "pw", "ca_file": "ca.pem",
                       "vtn_fingerprint": FINGERPRINT, "check_hostname": True, "disable_signature": False,
                       "show_fingerprint": False}


FINGERPRINT = "29:55:3E:75:B8:8C:16:CB:6C:6B"


@pytest.mark.parametrize(("change", "said"), [
    ({"key_path": "vtn_key"}, "--key '{vtn_key}': not the key of that certificate; expected the private key of --cert"),
    ({"cert_path": "random"}, "--cert '{random}': holds no PEM block; expected a PEM file (-----BEGIN ...)"),
    ({"cert_path": "ven_key"}, "--cert '{ven_key}': holds no certificate; expected the VEN's certificate in PEM"),
    ({"key_path": "ven"}, "--key '{ven}': holds no private key; expected the VEN's private key in PEM"),
    ({"key_path": "encrypted"}, "--key '{encrypted}': is encrypted and no passphrase is set; expected its passphrase in "
                                "DER_OPENADR_KEY_PASSPHRASE"),
    ({"key_path": "encrypted", "key_passphrase": "wrong"}, "--key '{encrypted}': cannot be decrypted with the passphrase set"),
    ({"ca_path": "ven_key"}, "--ca '{ven_key}': no certificate or crl found; expected CA certificates in PEM"),
    ({"cert_path": "/dev/zero"}, "--cert '/dev/zero': is not a regular file (a device or a pipe); expected a PEM file"),
    ({"ca_path": None}, "--cert and --key are set without --ca; expected all three"),
    ({"key_path": None}, "--cert is set without --key; expected both"),
    ({"vtn_fingerprint": "ZZ"}, "VTN fingerprint 'ZZ': expected ten hex pairs joined by colons"),
    ({"vtn_url": "http://[::1/x"}, "VTN URL 'http://[::1/x': expected https://host[:port]/path"),
    ({"vtn_url": "http://127.0.0.1:99999/x"}, "VTN URL 'http://127.0.0.1:99999/x': expected https://host[:port]/path"),
    ({"ven_name": "a\nb"}, "VEN name 'a\\nb': expected 1 to 128 printable characters without < > &"),
])
def test_tls_files_and_names_that_cannot_serve_are_one_line_before_any_connection(tmp_path, change, said):
    """A key that is not the certificate's, an encrypted key without its passphrase, a file
    that is no PEM: each was a traceback from inside openleadr's first request."""
    from cryptography.hazmat.primitives import serialization

    paths = _certificates(tmp_path)
    (tmp_path / "random").write_bytes(bytes(range(256)))
    key = serialization.load_pem_private_key(open(paths["ven_key"], "rb").read(), None)
    (tmp_path / "encrypted").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.BestAvailableEncryption(b"right")))
    paths.update(random=str(tmp_path / "random"), encrypted=str(tmp_path / "encrypted"))
    given = {"vtn_url": "https://vtn.example.com/oadr", "cert_path": paths["ven"], "key_path": paths["ven_key"],
             "ca_path": paths["ca"], "vtn_fingerprint": FINGERPRINT}
    given.update({name: paths.get(value, value) if name.endswith("_path") else value for name, value in change.items()})
    if "key_passphrase" in change:
        environment = {"DER_OPENADR_KEY_PASSPHRASE": change["key_passphrase"]}
        del given["key_passphrase"]
    else:
        environment = {}
    with pytest.raises(ConfigError) as raised:
        ven_settings(environment, **given)
    assert said.format(**paths) in str(raised.value) and "\n" not in str(raised.value)
    given.update(cert_path=paths["ven"], ca_path=paths["ca"], vtn_fingerprint=FINGERPRINT, ven_name=None,
                 vtn_url="https://vtn.example.com/oadr", key_path=paths["encrypted"])
    assert ven_settings({"DER_OPENADR_KEY_PASSPHRASE": "right"}, **given).key_path == paths["encrypted"]


def test_a_certificate_outside_its_dates_is_refused(tmp_path):
    paths = _certificates(tmp_path)
    labels = {"cert": "--cert", "key": "--key", "ca": "--ca"}
    for moment, said in [(datetime.now(timezone.utc) + timedelta(days=3), "expired on"),
                         (datetime.now(timezone.utc) - timedelta(days=3), "not valid before")]:
        with pytest.raises(ConfigError, match=f"--cert '.*ven.pem': {said} .* UTC; expected a certificate valid now"):
            check_tls(paths["ven"], paths["ven_key"], None, paths["ca"], labels, now=moment)


@pytest.mark.parametrize(("url", "tls", "message"), [
    ("https://vtn.example.com/oadr", {"cert_path": "c", "key_path": "k"},
     "https needs the VEN's CA, VTN fingerprint"),
    ("http://vtn.example.com/oadr", {}, "plain http only to this machine"),
    ("ftp://vtn.example.com/oadr", {}, "expected https://host"),
])
def test_settings_refuse_an_insecure_or_unusable_vtn(url, tls, message):
    with pytest.raises(ConfigError, match=message):
        VenSettings(vtn_url=url, ven_name="fleet", **tls)


# -- translation -------------------------------------------------------------------------------

NOW = pd.Timestamp("2030-06-01T10:00:00Z")
START = datetime(2030, 6, 1, 12, tzinfo=timezone.utc)


def event(signal_name="LOAD_DISPATCH", signal_type="delta", payloads=(-5.0,), *, minutes=60, targets=None,
          measurement=None, status="far", modification=0, event_id="evt-1"):
    """An event in the shape openleadr's parser hands to ``on_event``."""
    signal = {"signal_name": signal_name, "signal_type": signal_type, "signal_id": "s1",
              "intervals": [{"dtstart": START + i * timedelta(minutes=minutes), "duration": timedelta(minutes=minutes),
                             "signal_payload": p, "uid": i} for i, p in enumerate(payloads)]}
    if measurement is not None:
        signal["measurement"] = measurement
    return {"event_descriptor": {"event_id": event_id, "modification_number": modification, "event_status": status,
                                 "market_context": "oadr://x", "priority": 0, "test_event": False},
            "active_period": {"dtstart": START, "duration": timedelta(minutes=minutes * len(payloads))},
            "event_signals": [signal], "targets": targets or [{"ven_id": VEN_ID}], "response_required": "always"}


def windows_of(evt):
    return translate(evt, source=SOURCE, ven_id=VEN_ID, resources=frozenset(BATTERIES), now=NOW)


@pytest.mark.parametrize(("evt", "signal", "values"), [
    (event(), Signal.REDUCTION, [5.0]),
    (event(payloads=(-5000.0,), measurement={"name": "powerReal", "unit": "W", "scale": "none"}), Signal.REDUCTION, [5.0]),
    (event(payloads=(-0.5,), measurement={"name": "powerReal", "unit": "W", "scale": "M"}), Signal.REDUCTION, [500.0]),
    (event("ELECTRICITY_PRICE", "price", (-0.05, 0.4)), Signal.PRICE, [-0.05, 0.4]),
    (event("ELECTRICITY_PRICE", "price", (0.4,), measurement={"name": "currencyPerKWh", "description": "currencyPerKWh",
                                                              "unit": "USD", "scale": "none"}), Signal.PRICE, [0.4]),
    (event("SIMPLE", "level", (1, 3)), Signal.LEVEL, [1.0, 3.0]),
    (event("LOAD_CONTROL", "x-loadControlLevelOffset", (2,)), Signal.LEVEL, [2.0]),
])
def test_supported_signals_become_windows(evt, signal, values):
    windows = windows_of(evt)
    assert [w.signal for w in windows] == [signal] * len(values)
    assert [w.value for w in windows] == values


def test_intervals_split_the_active_period_and_equal_neighbours_merge():
    windows = windows_of(event(payloads=(-5.0, -5.0, -3.0), minutes=30, modification=2,
                               targets=[{"resource_id": "bat-2"}, {"group_id": "north"}]))
    assert [(w.event_id, w.start, w.end, w.value) for w in windows] == [
        ("evt-1#0", pd.Timestamp(START), pd.Timestamp(START) + pd.Timedelta(minutes=60), 5.0),
        ("evt-1#2", pd.Timestamp(START) + pd.Timedelta(minutes=60), pd.Timestamp(START) + pd.Timedelta(minutes=90), 3.0),
    ]
    assert {(w.sites, w.modification, w.source, w.received_at) for w in windows} == {(("bat-2",), 2, SOURCE, NOW)}


def _with(evt, path, value):
    *parents, last = path
    target = evt
    for key in parents:
        target = target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return evt


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda e: _with(e, ["active_period", "duration"], timedelta(hours=-1)), "expected more than 0"),
    (lambda e: _with(e, ["active_period", "duration"], timedelta(days=400)), "expected more than 0"),
    (lambda e: _with(e, ["active_period", "dtstart"], ...), "active_period has no dtstart"),
    (lambda e: _with(e, ["active_period", "dtstart"], datetime(9999, 1, 1, tzinfo=timezone.utc)), "more than 7 days"),
    (lambda e: _with(e, ["active_period", "dtstart"], datetime(1, 1, 1, tzinfo=timezone.utc)), "ended"),
    (lambda e: _with(e, ["active_period", "dtstart"], datetime(2030, 6, 1, 12)), "with a time zone"),
    (lambda e: _with(e, ["event_signals", 0, "signal_name"], "x-mystery"), "not an OpenADR 2.0b signal"),
    (lambda e: _with(e, ["event_signals", 0, "signal_name"], "BID_LOAD"), "the fleet answers"),
    (lambda e: _with(e, ["event_signals", 0, "signal_type"], "setpoint"), "the fleet answers type delta"),
    (lambda e: _with(e, ["event_signals", 0, "intervals", 0, "signal_payload"], "five"), "expected a finite number"),
    (lambda e: _with(e, ["event_signals", 0, "intervals", 0, "signal_payload"], float("nan")), "finite number"),
    (lambda e: _with(e, ["event_signals", 0, "intervals", 0, "signal_payload"], 5.0), "expected a negative change"),
    (lambda e: _with(e, ["event_signals", 0, "intervals", 0, "duration"], timedelta(minutes=30)), "intervals last"),
    (lambda e: _with(e, ["event_signals", 0, "intervals"], [e["event_signals"][0]["intervals"][0]] * 5000),
     f"expected at most {MAX_INTERVALS}"),
    (lambda e: _with(e, ["event_signals", 0, "measurement"], {"name": "energyReal", "unit": "Wh"}), "powerReal"),
    (lambda e: _with(e, ["event_signals", 0, "targets"], [{"resource_id": "bat-1"}]), "its own targets"),
    (lambda e: _with(e, ["targets"], [{"resource_id": "bat-9"}]), "not a battery of this fleet"),
    (lambda e: _with(e, ["targets"], [{"ven_id": "someone-else"}]), "this VEN is"),
    (lambda e: _with(e, ["targets"], [{"meter": "m1"}]), "target meter"),
    (lambda e: _with(e, ["targets"], "bat-1"), "expected a list"),
    (lambda e: _with(e, ["event_descriptor", "event_id"], ""), "event_id"),
    (lambda e: _with(e, ["event_descriptor", "modification_number"], -1), "modification_number"),
    (lambda e: _with(e, ["event_signals"], []), "non-empty list of signals"),
])
def test_malformed_events_are_rejected_with_a_reason(mutate, reason):
    with pytest.raises(EventRejected, match=reason) as caught:
        windows_of(mutate(event()))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("name", "description", "said"), [
    ("currencyPerThm", "currency", "'currencyPerThm'"),  # gas, per therm
    ("customUnit", "currencyPerKW", "'currencyPerKW'"),  # a demand charge, per kW (openleadr's parse of it)
])
def test_a_price_of_something_other_than_a_kwh_is_rejected(name, description, said):
    """A price per therm or per kW was planned as a price adder per kWh."""
    measurement = {"name": name, "description": description, "unit": "USD", "scale": "none"}
    with pytest.raises(EventRejected) as caught:
        windows_of(event("ELECTRICITY_PRICE", "price", (150.0,), measurement=measurement))
    assert str(caught.value) == f"ELECTRICITY_PRICE item base {said}: expected currencyPerKWh, a price per kWh"


@pytest.mark.parametrize(("unit", "currency"), [("EUR", "EUR"), ("USD", "USD"), (None, None)])
def test_a_price_carries_the_currency_its_item_base_names(unit, currency):
    """The price is added to the sites' import prices: its money must be known to be checked."""
    measurement = {"name": "currencyPerKWh", "description": "currencyPerKWh", "unit": unit, "scale": "none"}
    assert [w.currency for w in windows_of(event("ELECTRICITY_PRICE", "price", (0.4,), measurement=measurement))] == [currency]


@pytest.mark.parametrize("unit", ["euro", "usd", 3])
def test_a_price_in_no_iso_currency_is_rejected(unit):
    measurement = {"name": "currencyPerKWh", "description": "currencyPerKWh", "unit": unit, "scale": "none"}
    with pytest.raises(EventRejected) as caught:
        windows_of(event("ELECTRICITY_PRICE", "price", (0.4,), measurement=measurement))
    assert str(caught.value).startswith(f"ELECTRICITY_PRICE currency {unit!r}: expected an ISO 4217 code")


def test_a_level_outside_0_to_3_is_rejected():
    with pytest.raises(EventRejected, match="expected 0, 1, 2 or 3"):
        windows_of(event("SIMPLE", "level", (4,)))


# -- the VEN's answers, without a network ------------------------------------------------------


def offline_ven(handler: ScriptedFleet) -> FleetVen:
    fleet = FleetVen(VenSettings(vtn_url="http://127.0.0.1:1/oadr", ven_name="fleet", ven_id=VEN_ID),
                     handler, BATTERIES, TELEMETRY.get, clock=lambda: NOW)
    return fleet


def test_an_update_that_drops_a_window_cancels_it_and_a_refused_update_leaves_the_event():
    handler = ScriptedFleet(capacity_kw=20)
    fleet = offline_ven(handler)
    assert fleet.on_event(event(payloads=(-5.0, -3.0, -1.0))) == "optIn"
    assert fleet.on_event(event(payloads=(-5.0, -3.0), modification=1)) == "optIn"
    assert handler.cancelled == [("evt-1#2", SOURCE)]
    assert [w.modification for w in handler.decided] == [0, 0, 0, 1, 1]
    assert fleet.on_event(event(payloads=(-5.0, -50.0), modification=2)) == "optOut"
    assert handler.cancelled[1:] == [("evt-1#0", SOURCE), ("evt-1#1", SOURCE)]
    assert fleet.on_event(event(status="cancelled", modification=3)) == "optOut"
    assert handler.cancelled[3:] == []  # the fleet had already left it


def test_an_update_under_way_keeps_the_windows_that_ran_and_decides_the_rest():
    """A VTN extends or deepens an event under way: the fleet refuses a window in the past, so
    deciding the windows that ran again opted the whole event out, the running one with it."""
    class Fleet(ScriptedFleet):
        def decide(self, event):
            return Answer(False, "window ended") if event.end <= clock[0] else super().decide(event)

    handler, clock = Fleet(capacity_kw=20), [NOW]
    fleet = FleetVen(VenSettings(vtn_url="http://127.0.0.1:1/oadr", ven_name="fleet", ven_id=VEN_ID),
                     handler, BATTERIES, TELEMETRY.get, clock=lambda: clock[0])
    assert fleet.on_event(event(payloads=(-5.0, -3.0))) == "optIn"
    clock[0] = pd.Timestamp(START) + pd.Timedelta(minutes=90)  # the first window ran, the second is under way
    assert fleet.on_event(event(payloads=(-5.0, -4.0), modification=1)) == "optIn"
    assert [(w.event_id, w.modification, w.value) for w in handler.decided[2:]] == [("evt-1#1", 1, 4.0)]
    assert handler.cancelled == []


def test_an_event_refused_in_one_window_leaves_the_windows_it_took():
    handler = ScriptedFleet(capacity_kw=20)
    assert offline_ven(handler).on_event(event(payloads=(-5.0, -30.0))) == "optOut"
    assert handler.cancelled == [("evt-1#0", SOURCE)]


def test_a_ven_restarted_before_a_windows_delivery_still_reports_it():
    """The windows a VEN took lived in its memory only: restarted after a window, before its
    delivery was measured, it never reported it (the VTN sends no event that has ended)."""
    handler = ScriptedFleet()
    assert offline_ven(handler).on_event(event(payloads=(-5.0, -3.0))) == "optIn"
    handler.deliveries["evt-1#1"] = Delivery("evt-1#1", "forecast", 3.0, 3.0, 2.5, {"bat-2": 2.5})
    restarted = FleetVen(VenSettings(vtn_url="http://127.0.0.1:1/oadr", ven_name="fleet", ven_id=VEN_ID),
                         handler, BATTERIES, TELEMETRY.get, clock=lambda: NOW + pd.Timedelta(hours=4))
    assert restarted.delivered("fleet") == []  # the first window is not measured yet
    handler.deliveries["evt-1#0"] = Delivery("evt-1#0", "forecast", 5.0, 5.0, 4.0, {"bat-1": 4.0})
    assert restarted.delivered("fleet") == [(START, 4.0)]
    assert restarted.delivered("bat-1") == [(START, 4.0)]


def test_a_failing_handler_is_answered_opt_out():
    class Broken(ScriptedFleet):
        def decide(self, event):
            raise RuntimeError("solver crashed")

    assert offline_ven(Broken()).on_event(event()) == "optOut"


# hypothesis: anything in openleadr's shape, and valid events with one field broken
_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                  st.text(max_size=12), st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=30)),
                  st.datetimes(timezones=st.just(timezone.utc)), st.datetimes())
_json = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                    st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                     max_leaves=20)
_paths = st.sampled_from([
    ["active_period", "dtstart"], ["active_period", "duration"], ["event_descriptor", "event_id"],
    ["event_descriptor", "modification_number"], ["event_descriptor", "event_status"], ["event_signals"],
    ["event_signals", 0, "signal_name"], ["event_signals", 0, "signal_type"], ["event_signals", 0, "intervals"],
    ["event_signals", 0, "intervals", 0, "signal_payload"], ["event_signals", 0, "intervals", 0, "duration"],
    ["event_signals", 0, "measurement"], ["targets"], ["event_descriptor"], ["active_period"],
])
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_answer(handler: ScriptedFleet, answer: str) -> None:
    assert answer in ("optIn", "optOut")
    for window in handler.decided:
        assert window.start < window.end <= window.start + pd.Timedelta(hours=24)
        assert pd.notna(window.value) and abs(window.value) < float("inf")
        assert set(window.sites) <= set(BATTERIES)
    if answer == "optIn":
        assert handler.decided


@FUZZ
@given(evt=st.dictionaries(st.sampled_from(["event_descriptor", "active_period", "event_signals", "targets",
                                            "response_required"]), _json))
def test_arbitrary_event_dicts_are_answered_without_escaping(evt):
    handler = ScriptedFleet()
    _check_answer(handler, offline_ven(handler).on_event(evt))


@FUZZ
@given(path=_paths, value=st.one_of(_json, st.just(...)),
       payloads=st.lists(st.floats(-40, -0.01), min_size=1, max_size=6))
def test_valid_events_with_one_broken_field_are_answered_without_escaping(path, value, payloads):
    handler = ScriptedFleet(capacity_kw=50)
    evt = event(payloads=tuple(payloads), minutes=20)
    try:
        _with(evt, path, value)
    except (KeyError, IndexError, TypeError):
        pass
    _check_answer(handler, offline_ven(handler).on_event(evt))


# -- the command -------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_the_command_registers_and_reports_the_stored_batteries_until_sigterm(tmp_path):
    from cloud.store.sqlite import SQLiteCloudStore
    from tests.forecast_helpers import fill_store, fleet

    configs, readings = fleet(sites=2, days=1, seed=3)
    store = SQLiteCloudStore(str(tmp_path / "cloud.db"))
    fill_store(store, configs, readings)
    store.close()
    device = configs[1].device_id
    last = readings[readings["device_id"] == device].iloc[-1]

    async def scenario():
        async with vtn() as server:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "run_dr.py"), "--ven", "--report-only", "--vtn-url", server.url,
                "--telemetry-interval", "1", "--cloud-db", str(tmp_path / "cloud.db"),
                stderr=asyncio.subprocess.PIPE, env={**os.environ, "DER_OPENADR_VTN_URL": ""})
            await until(lambda: bool(server.received[(device, "stateOfCharge")]), within_s=15)
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), 10)
            return server, proc.returncode, stderr.decode()

    server, code, stderr = asyncio.run(scenario())
    assert code == 0, stderr
    assert {r for r, m, _, _ in server.offered if m == "RealPower"} == {c.device_id for c in configs}
    assert server.received[(device, "RealPower")][0][1] == pytest.approx(last["battery_power_kw"])
    assert server.received[(device, "stateOfCharge")][0] == (last["ts"].to_pydatetime(),
                                                             pytest.approx(last["battery_soc_percent"]))


@pytest.mark.parametrize(("args", "env", "line"), [
    (["--ven", "--report-only"], {}, "error: VTN URL: set --vtn-url or DER_OPENADR_VTN_URL"),
    (["--ven", "--report-only", "--vtn-url", "http://vtn.example.com/oadr"], {},
     "error: VTN http://vtn.example.com/oadr: plain http only to this machine; use https with mutual TLS"),
    (["--ven", "--report-only", "--vtn-url", "https://vtn.example.com/oadr", "--key", "/nonexistent.key", "--ca", "/x"],
     {"DER_OPENADR_CERT": "/nonexistent.pem"}, "error: DER_OPENADR_CERT '/nonexistent.pem': not found; expected a PEM file"),
    (["--ven", "--report-only", "--vtn-url", "https://vtn.example.com/oadr"], {"DER_OPENADR_CERT": "/nonexistent.pem"},
     "error: DER_OPENADR_CERT is set without --key; expected both (the VEN's certificate and its private key)"),
    (["--ven", "--vtn-url", "http://127.0.0.1:9/oadr"], {},
     "error: run_dr.py --ven: the fleet sends its event schedules over MQTT; set MQTT_HOST (and MQTT_PORT), "
     "or pass --report-only to register and report without taking events"),
    (["--ven", "--report-only", "--vtn-url", "http://127.0.0.1:9/oadr", "--telemetry-interval", str(10**30)], {},
     f"run_dr.py: error: argument --telemetry-interval: '{10**30}' is not a number of seconds from 1 to 86400 "
     "(see --help)"),
])
def test_the_command_refuses_bad_settings_in_one_line(tmp_path, args, env, line):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DER_OPENADR_", "MQTT_"))}
    result = subprocess.run([sys.executable, str(ROOT / "run_dr.py"), *args], capture_output=True, text=True,
                            timeout=60, env={**clean, **env}, cwd=tmp_path)
    assert (result.returncode, result.stderr.strip()) == (2, line)


def test_the_keys_passphrase_never_shows_in_the_settings_or_a_log_line(tmp_path):
    passphrase = "a-passphrase-nobody-may-read"
    found = ven_settings({"DER_OPENADR_VTN_URL": "http://127.0.0.1:8080/OpenADR2/Simple/2.0b",
                             "DER_OPENADR_KEY_PASSPHRASE": passphrase})
    assert found.key_passphrase == passphrase and passphrase not in repr(found)
    assert passphrase not in redact(f"cannot load the key with {passphrase}")
