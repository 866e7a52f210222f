"""The fleet's OpenADR 2.0b VEN: one VEN, one resource per battery, built on openleadr's client.

:class:`FleetVen` registers with the VTN, turns each event into :class:`DREvent` windows
(:mod:`cloud.dr.openadr_events`) for a :class:`DRHandler` and answers optIn only when the
handler takes every window; a refused, malformed or hostile event is answered optOut with a
one-line reason in the log, and nothing it raises reaches openleadr's loop. A cancelled
event, or a window an update drops, goes to ``handler.cancel``; a window of an updated event
that already ran stays taken without being decided again.

Reports, both ``TELEMETRY_USAGE`` so any openleadr VTN can request them:

- ``TELEMETRY``: per battery (``resource_id`` = device id) its power (``powerReal`` in kW,
  positive while charging, which is consumption seen from the grid) and its state of charge
  (custom measurement ``stateOfCharge`` in %), read through the ``latest`` callable.
- ``DR_DELIVERY``: the delivered reduction (custom measurement ``deliveredReduction`` in
  kW) of each window the fleet opted into, for the fleet (``resource_id`` = the VEN name)
  and per battery, sent once ``handler.delivery`` has it. OpenADR reports carry no event
  id, so a value is stamped with its window's start, which is how the VTN matches it to
  its event interval. A delivery the VTN did not answer is sent again (:class:`_Client`).

The handler is called on the VEN's event loop, one call at a time, so it needs no locking;
a slow decision delays the next poll, never a message already answered.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import signal
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
from cryptography.utils import CryptographyDeprecationWarning

from cloud.dr.model import Answer, Delivery, DREvent, DRHandler
from cloud.dr.openadr_events import EventRejected, event_id_of, status_of, translate
from cloud.dr.telemetry import Telemetry
from cloud.dr.tls import check_tls
from der_core.der_data import device_id_problem, shown
from der_core.errors import ConfigError, DERError
from der_core.redact import register_secret

# signxml and openleadr name DSA keys (in annotations and isinstance checks), which
# cryptography deprecates; this VEN never uses DSA, and a command's output stays one line.
warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"(signxml|openleadr)\.")
from openleadr import OpenADRClient, objects, utils  # noqa: E402

log = logging.getLogger(__name__)

OPT_IN, OPT_OUT = "optIn", "optOut"
TELEMETRY_REPORT, DELIVERY_REPORT = "TELEMETRY", "DR_DELIVERY"
#: How long a window's delivery is kept for the VTN to collect after the window ends.
DELIVERY_RETENTION = timedelta(days=7)
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
#: OpenADR's certificate fingerprint: the last ten bytes of its SHA-256, as hex pairs.
_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){9}")
#: A VEN's name is sent in every message; this bounds what a VTN is asked to take.
MAX_VEN_NAME = 128


class RegistrationFailed(DERError):
    """The VTN could not be reached or did not register this VEN."""


@dataclass(frozen=True)
class VenSettings:
    """Where the VTN is, who this VEN is, and its TLS material.

    Plain HTTP is accepted for a VTN on this machine only (tests, a local VTN); any other
    VTN needs ``https`` with mutual TLS and signed messages: ``cert_path``/``key_path`` (this
    VEN's certificate and key, which both authenticate the connection and sign every
    message), ``ca_path`` (the CA the VTN's server certificate is checked against) and
    ``vtn_fingerprint`` (the VTN's signing certificate, checked on every message received).
    """

    vtn_url: str
    ven_name: str
    ven_id: str | None = None
    source: str = "openadr"
    telemetry_interval: timedelta = timedelta(minutes=1)
    cert_path: str | None = None
    key_path: str | None = None
    key_passphrase: str | None = field(default=None, repr=False)  # a secret: never in a repr or a log
    ca_path: str | None = None
    vtn_fingerprint: str | None = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        try:
            parts = urlsplit(self.vtn_url)
            parts.port  # noqa: B018  (a port out of range or not a number raises here)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not self.vtn_url.isprintable():
            raise ConfigError(f"VTN URL {shown(self.vtn_url, 80)}: expected https://host[:port]/path")
        if not self.ven_name.strip():
            raise ConfigError("VEN name: expected a non-empty name")
        if len(self.ven_name) > MAX_VEN_NAME or not self.ven_name.isprintable() or set(self.ven_name) & set("<>&"):
            raise ConfigError(f"VEN name {shown(self.ven_name)}: expected 1 to {MAX_VEN_NAME} printable characters "
                              "without < > &")
        if self.vtn_fingerprint is not None and not _FINGERPRINT.fullmatch(self.vtn_fingerprint):
            raise ConfigError(f"VTN fingerprint {shown(self.vtn_fingerprint)}: expected ten hex pairs joined by colons, "
                              "such as 29:55:3E:75:B8:8C:16:CB:6C:6B (openleadr's certificate fingerprint)")
        if self.telemetry_interval <= timedelta(0):
            raise ConfigError(f"telemetry interval {self.telemetry_interval}: expected more than 0 s")
        tls = {"cert": self.cert_path, "key": self.key_path, "CA": self.ca_path, "VTN fingerprint": self.vtn_fingerprint}
        missing = [name for name, value in tls.items() if not value]
        if parts.scheme == "https" and missing:
            raise ConfigError(f"VTN {self.vtn_url}: https needs the VEN's {', '.join(missing)} (mutual TLS, signed messages)")
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            raise ConfigError(f"VTN {self.vtn_url}: plain http only to this machine; use https with mutual TLS")

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments of openleadr's ``OpenADRClient`` for these settings."""
        signed = bool(self.cert_path and self.key_path)
        return {
            "ven_name": self.ven_name,
            "vtn_url": self.vtn_url,
            "ven_id": self.ven_id,
            "cert": self.cert_path,
            "key": self.key_path,
            "passphrase": self.key_passphrase,
            "ca_file": self.ca_path,
            "vtn_fingerprint": self.vtn_fingerprint,
            "check_hostname": self.check_hostname,
            "disable_signature": not signed,
            "show_fingerprint": False,
        }


class _Client(OpenADRClient):
    """openleadr's client with the VEN's report sending (its queue worker, replaced):

    - a report with no values is not sent: the delivery report is sampled at the telemetry
      rate and is empty but once a window, and openleadr's VTN answers an empty report with
      HTTP 500, which openleadr logs, message and all, as a warning each time;
    - a delivery report the VTN did not answer (down, restarting, a network fault) goes out
      again with the next one: a window's delivery is measured and offered once, so a VTN
      away at that moment would never get it. Telemetry is not resent: its next sample
      supersedes it. A VTN that answers, even with an error code, has had it."""

    async def _report_queue_worker(self) -> None:
        unsent: dict[str, list] = {}  # report specifier -> intervals the VTN did not answer
        try:
            while True:
                report = await self.pending_reports.get()
                retry = report.report_specifier_id == DELIVERY_REPORT
                if retry:
                    report.intervals = [*unsent.pop(report.report_specifier_id, []), *(report.intervals or [])]
                if not report.intervals:
                    continue
                try:
                    answered, payload = await self._send_report(report)
                except Exception as error:  # the worker carries every later report: it must go on
                    log.warning("report %s not sent: %s: %s", report.report_specifier_id, type(error).__name__,
                                shown(str(error), 200))
                    continue
                if not answered and retry:
                    unsent[report.report_specifier_id] = report.intervals
                elif "cancel_report" in payload:
                    await self.cancel_report(payload["cancel_report"])
        except asyncio.CancelledError:
            return

    async def _send_report(self, report: objects.Report) -> tuple[bool, Mapping[str, Any]]:
        """Send one report: whether the VTN answered, and its answer."""
        report.dtstart = min(interval.dtstart for interval in report.intervals)
        message = self._create_message("oadrUpdateReport", ven_id=self.ven_id, request_id=utils.generate_id(),
                                       reports=[report])
        answer = await self._perform_request("EiReport", message)
        response_type, payload = answer if answer else (None, {})
        return response_type is not None, payload


class _Held(logging.Handler):
    """openleadr's log records while registering, kept to be replayed or quoted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def reason(self) -> str | None:
        """The last error or warning openleadr met that says why (a fingerprint that did not
        match is a warning; its closing "aborting" line says nothing new), cut to one line."""
        errors = [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]
        said = [m for m in errors if not m.startswith("No RegistrationID received") and not m.rstrip().endswith(":")]
        if not said:
            return None
        text = " ".join(said[-1].split())
        return text if len(text) <= 300 else f"{text[:300]}..."


@dataclass(frozen=True)
class _Answered:
    """The answer sent for an OpenADR event, the windows it took, and until when to keep it."""

    answer: str
    window_ids: tuple[str, ...]
    keep_until: pd.Timestamp


@dataclass
class _Window:
    """A window the fleet opted into, and its delivery once measured."""

    event: DREvent
    delivery: Delivery | None = None
    reported: set[str] = field(default_factory=set)


class FleetVen:
    """The fleet as one OpenADR VEN. ``resources`` are the batteries' device ids; ``latest``
    returns a battery's latest :class:`Telemetry` (None when it has none)."""

    def __init__(
        self,
        settings: VenSettings,
        handler: DRHandler,
        resources: Sequence[str],
        latest: Callable[[str], Telemetry | None],
        *,
        clock: Callable[[], pd.Timestamp] = lambda: pd.Timestamp.now(tz="UTC"),
    ) -> None:
        bad = next((r for r in resources if device_id_problem(r)), None)
        if bad is not None or not resources:
            raise ConfigError(f"resources: expected device ids, got {shown(bad) if bad is not None else 'none'}")
        if settings.ven_name in resources:
            raise ConfigError(f"VEN name {settings.ven_name!r} is also a battery; the fleet's reports need it apart")
        self.settings, self.handler, self.latest, self.clock = settings, handler, latest, clock
        self.resources = frozenset(resources)
        self.client = _Client(**settings.client_options())
        self.client.add_handler("on_event", self.on_event)
        self.client.add_handler("on_update_event", self.on_event)
        self._events: dict[str, _Answered] = {}  # OpenADR event id -> what was answered
        # window id -> the window, opted into; those a VEN stopped before their delivery was
        # measured come back from the handler, so a restart does not lose what the VTN is owed.
        self._windows = {w.event_id: _Window(w) for w in handler.unmeasured(settings.source)}
        self._add_reports(sorted(self.resources))

    # openleadr's side ---------------------------------------------------------------------
    async def run(self) -> None:
        """Register with the VTN and start polling; :class:`RegistrationFailed` if it refuses,
        naming why in the same line. openleadr logs each failed request as it meets it; those
        lines are held while registering, then given their place: the refusal's reason when
        registration fails, the log when it succeeds."""
        held = _Held()
        source = logging.getLogger("openleadr")
        source.addHandler(held)
        propagate, source.propagate = source.propagate, False
        try:
            await self.client.run()
        finally:
            source.removeHandler(held)
            source.propagate = propagate
        if not self.client.registration_id:
            why = held.reason()
            raise RegistrationFailed(f"VTN {self.settings.vtn_url} did not register VEN {self.settings.ven_name!r}"
                                     + (f": {why}" if why else ""))
        for record in held.records:
            source.handle(record)
        log.info("registered with %s as ven_id %s", self.settings.vtn_url, self.client.ven_id)

    async def stop(self) -> None:
        if self.client.client_session is None:  # never connected: only the scheduler to stop, if started
            if self.client.scheduler.running:
                self.client.scheduler.shutdown()
            return
        await self.client.stop()

    def on_event(self, event: Any) -> str:
        """openleadr's ``on_event`` and ``on_update_event``: the answer to one event."""
        try:
            return self._answer(event)
        except Exception as error:  # openleadr's loop must never see an exception: refuse instead
            log.warning("openadr event: optOut, %s: %s", type(error).__name__, shown(str(error), 200))
            return OPT_OUT

    # the answer ---------------------------------------------------------------------------
    def _answer(self, event: Any) -> str:
        try:
            event_id = event_id_of(event)
        except EventRejected as error:
            log.warning("openadr event without a usable id: optOut, %s", error)
            return OPT_OUT
        now = self.clock()
        self._events = {k: v for k, v in self._events.items() if v.keep_until >= now}
        self._windows = {k: w for k, w in self._windows.items() if w.event.end + DELIVERY_RETENTION >= now}
        before = self._events.get(event_id, _Answered(OPT_OUT, (), now))
        if status_of(event) == "cancelled":
            known = event_id in self._events
            self._cancel(event_id, before.window_ids if known else self._window_ids(event, event_id, now))
            self._events.pop(event_id, None)
            log.info("openadr event %s cancelled", event_id)
            return before.answer
        try:
            windows = translate(event, source=self.settings.source, ven_id=self.client.ven_id,
                                resources=self.resources, now=now)
        except EventRejected as error:
            return self._refuse(event_id, before.window_ids, str(error), now)
        taken: list[str] = []
        planned_kw = 0.0
        # A window of the event that ran is not decided again (the fleet refuses a window in the
        # past): an update of an event under way changes what is to come, not what was delivered.
        ran = {w.event_id for w in windows if w.end <= now and w.event_id in before.window_ids}
        for window in windows:
            if window.event_id in ran:
                taken.append(window.event_id)
                continue
            answer = self.handler.decide(window)
            if not answer.opt_in:
                return self._refuse(event_id, (*before.window_ids, *taken), f"{window.event_id}: {answer.reason}", now)
            taken.append(window.event_id)
            planned_kw += answer.planned_kw
        self._cancel(event_id, tuple(i for i in before.window_ids if i not in taken))
        self._windows.update((w.event_id, _Window(w)) for w in windows if w.event_id not in ran)
        self._events[event_id] = _Answered(OPT_IN, tuple(taken), windows[-1].end + DELIVERY_RETENTION)
        log.info("openadr event %s mod %d: optIn, %d window(s), %.1f kW planned",
                 event_id, windows[0].modification, len(windows), planned_kw)
        return OPT_IN

    def _refuse(self, event_id: str, accepted: tuple[str, ...], reason: str, now: pd.Timestamp) -> str:
        """optOut, and out of every window of the event the fleet had taken."""
        log.warning("openadr event %s: optOut, %s", event_id, reason)
        self._cancel(event_id, tuple(dict.fromkeys(accepted)))
        self._events[event_id] = _Answered(OPT_OUT, (), now + DELIVERY_RETENTION)
        return OPT_OUT

    def _window_ids(self, event: Mapping[str, Any], event_id: str, now: pd.Timestamp) -> tuple[str, ...]:
        """The windows a cancelled event had when this VEN holds no record of them (it
        restarted, or refused the event); the handler ignores ids it never took."""
        try:
            windows = translate(event, source=self.settings.source, ven_id=self.client.ven_id,
                                resources=self.resources, now=now)
        except EventRejected:
            return (event_id,)
        return tuple(w.event_id for w in windows)

    def _cancel(self, event_id: str, window_ids: tuple[str, ...]) -> None:
        for window_id in window_ids:
            self._windows.pop(window_id, None)
            try:
                self.handler.cancel(window_id, self.settings.source)
            except Exception as error:  # the other windows are still cancelled
                log.warning("cancel of %s (event %s) failed: %s: %s",
                            window_id, event_id, type(error).__name__, shown(str(error), 200))

    # reports ------------------------------------------------------------------------------
    def _add_reports(self, resources: list[str]) -> None:
        rate = self.settings.telemetry_interval
        sampling = {"sampling_rate": _sampling_rate(rate), "report_duration": max(rate, timedelta(hours=1))}
        for resource in resources:
            self.client.add_report(
                lambda r=resource: self._telemetry(r, "power_kw"), resource_id=resource, measurement="REAL_POWER",
                unit="W", scale="k", report_specifier_id=TELEMETRY_REPORT, r_id=f"{resource}:power", **sampling)
            self.client.add_report(
                lambda r=resource: self._telemetry(r, "soc_percent"), resource_id=resource,
                measurement="stateOfCharge", unit="%", report_specifier_id=TELEMETRY_REPORT,
                r_id=f"{resource}:soc", **sampling)
        for resource in [self.settings.ven_name, *resources]:
            self.client.add_report(
                lambda r=resource: self.delivered(r), resource_id=resource, measurement="deliveredReduction",
                unit="W", scale="k", report_specifier_id=DELIVERY_REPORT, r_id=f"{resource}:delivered", **sampling)

    def _telemetry(self, resource: str, quantity: str) -> list[tuple[datetime, float]]:
        try:
            reading = self.latest(resource)
        except Exception as error:  # a failing store must not stop the other reports
            log.warning("telemetry of %s unavailable: %s: %s", resource, type(error).__name__, shown(str(error), 200))
            return []
        if reading is None:
            return []
        value = float(getattr(reading, quantity))
        return [(pd.Timestamp(reading.ts).to_pydatetime(), value)] if math.isfinite(value) else []

    def delivered(self, resource: str) -> list[tuple[datetime, float]]:
        """The deliveries not yet reported for ``resource`` (the VEN name: the fleet), each
        stamped with its window's start."""
        now = self.clock()
        values: list[tuple[datetime, float]] = []
        for window_id, window in list(self._windows.items()):
            if window.event.end + DELIVERY_RETENTION < now:
                del self._windows[window_id]
                continue
            if window.delivery is None and window.event.end <= now:
                window.delivery = self._delivery(window.event)
            if window.delivery is None or resource in window.reported:
                continue
            kw = window.delivery.delivered_kw if resource == self.settings.ven_name \
                else window.delivery.per_site_kw.get(resource)
            window.reported.add(resource)
            if kw is not None and math.isfinite(kw):
                values.append((window.event.start.to_pydatetime(), float(kw)))
        return values

    def _delivery(self, event: DREvent) -> Delivery | None:
        try:
            return self.handler.delivery(event.event_id, event.source)
        except Exception as error:  # asked again at the next report
            log.warning("delivery of %s unavailable: %s: %s", event.event_id, type(error).__name__, shown(str(error), 200))
            return None


def _sampling_rate(rate: timedelta) -> objects.SamplingRate:
    return objects.SamplingRate(min_period=rate, max_period=max(rate, timedelta(hours=1)), on_change=False)


#: Environment variables of :func:`ven_settings` (the key's passphrase is read from here only).
ENV = {
    "vtn_url": "DER_OPENADR_VTN_URL",
    "ven_name": "DER_OPENADR_VEN_NAME",
    "ven_id": "DER_OPENADR_VEN_ID",
    "cert_path": "DER_OPENADR_CERT",
    "key_path": "DER_OPENADR_KEY",
    "key_passphrase": "DER_OPENADR_KEY_PASSPHRASE",
    "ca_path": "DER_OPENADR_CA",
    "vtn_fingerprint": "DER_OPENADR_VTN_FINGERPRINT",
}


def ven_settings(env: Mapping[str, str], **given: Any) -> VenSettings:
    """Settings from flags (``given``, None when absent) over the environment, validated once.
    A TLS file that cannot be read is a configuration error here, not a handshake failure later."""
    values = {name: given.get(name) or env.get(variable) or None for name, variable in ENV.items()}
    if not values["vtn_url"]:
        raise ConfigError(f"VTN URL: set --vtn-url or {ENV['vtn_url']}")
    values["ven_name"] = values["ven_name"] or "fleet"
    register_secret(values["key_passphrase"])
    labels = {short: ENV[name] if not given.get(name) and env.get(ENV[name]) else flag
              for short, name, flag in (("cert", "cert_path", "--cert"), ("key", "key_path", "--key"), ("ca", "ca_path", "--ca"))}
    check_tls(values["cert_path"], values["key_path"], values["key_passphrase"], values["ca_path"], labels)
    extra = {k: v for k, v in given.items() if k not in ENV and v is not None}
    return VenSettings(**values, **extra)


class ReportOnly:
    """A handler that takes no event: a VEN commissioned with its VTN (registration and
    telemetry) before the fleet's decision answers for it."""

    def decide(self, event: DREvent) -> Answer:
        return Answer(False, "this VEN reports only; the fleet's decision is not connected")

    def cancel(self, event_id: str, source: str) -> None:
        return None

    def delivery(self, event_id: str, source: str) -> Delivery | None:
        return None

    def unmeasured(self, source: str) -> list[DREvent]:
        return []


async def serve(ven: FleetVen) -> None:
    """Register, then answer and report until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await ven.run()
        await stop.wait()
    finally:
        await ven.stop()
