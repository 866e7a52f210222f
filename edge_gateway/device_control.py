"""A measured device's battery commands: the interval's, sent at each reading, and the
schedule's import cap held on the device's own grid flow, at the reading and between readings.

A reading covers a whole interval, but a burst of load (a kettle, a car starting to charge)
lifts the grid import within seconds. So while a cap is in force (the schedule's
``import_limit_kw``, raised to the month's peak outside a demand-response event:
:meth:`Controller.cap_kw`), the device's grid and battery powers are read at the reading and
then every ``cap_poll_s``, and the interval's command goes through the one control law of a
setpoint battery, :func:`der_physics.battery.request_setpoint`, on the net load they give: the
battery discharges more (or charges less) whenever the command would import above the cap,
as it does within a simulated site's step. The cap is never applied to the reading's mean
load: a burst inside the interval would pass it, and the mean of a past interval says nothing
of the load now. Between readings the device is sent a new command only when the request
moves by more than :data:`DEADBAND_KW`, and the interval's command again once the burst has
passed. The device's ``command`` clips each to its limits, as at a reading. With no power
command in force the device runs its own mode, and nothing is held: a battery in its own
self-consumption mode already imports no more than its rate forces it to.

One lock serialises the reading's command and the polls', so a poll never sends a request
made for an interval the gateway has already left. A poll that cannot read the device logs
one warning until it reads again and leaves the last command in force; a lost link or a stale
plan hands control back at the next reading, as without the polls.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd

from der_core import der_data as dd
from der_core.config import SimulatorConfig
from der_core.control import Controller
from der_physics.battery import request_setpoint
from edge_gateway.sources.base import DeviceSource, within_battery_limits

log = logging.getLogger(__name__)

#: A request within this of the one in force is not sent: each command costs the device a
#: write (a Modbus write, an MQTT message, a service call), and 100 W is within a hybrid
#: inverter's own regulation of its grid flow.
DEADBAND_KW = 0.1


@dataclass(frozen=True)
class IntervalCommand:
    """What the reading at ``start`` asked of the battery for the interval from it (NaN: the
    device's own mode), and the control that decides the cap (its month's peak then)."""

    start: pd.Timestamp
    request_kw: float
    controller: Controller


class DeviceControl:
    """The battery commands of one measured site (``Gateway`` sends the interval's through
    :meth:`interval_command`; the daemon calls :meth:`hold_cap` every ``cap_poll_s``). Thread-safe."""

    def __init__(self, config: SimulatorConfig, source: DeviceSource, setpoints) -> None:
        self.config = config
        self.source = source
        self.setpoints = setpoints  # gateway.SetpointSource, or None
        self._lock = threading.Lock()
        self._held: IntervalCommand | None = None
        self._asked_kw = math.nan  # the request last sent (before the device's clipping)
        self._unread = False  # a poll could not read the device; warned until one reads again
        self._holding = False  # a poll has held the cap at least once (said once)

    @property
    def interval(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=self.config.interval_seconds)

    def interval_command(self, at: pd.Timestamp, request_kw: float, controller: Controller) -> float:
        """Send the reading's request for the interval from ``at`` (NaN hands control back),
        under the cap in force on the grid flow read now; returns what the device was sent,
        as ``command`` does."""
        with self._lock:
            held = self._held = IntervalCommand(at, request_kw, controller)
            request = request_kw
            if self.setpoints is not None and not math.isnan(request_kw):
                request, _, _ = self._capped(held, at)
                if math.isnan(request):  # the device's grid flow unread: the interval's command as planned
                    request = request_kw
            self._asked_kw = request
            return self.source.command(request, at)

    def hold_cap(self, at: pd.Timestamp | None = None) -> float:
        """One poll at ``at`` (default now): the power sent to hold the cap in force, or to
        return to the interval's command once none binds; NaN when nothing was sent (no
        command or cap in force, the request within the deadband, or the device unread)."""
        at = dd.parse_ts(at if at is not None else dd.utc_now())
        with self._lock:
            held = self._held
            if held is None or self.setpoints is None or math.isnan(held.request_kw):
                return math.nan  # the device's own mode: nothing of ours to defend
            if not held.start <= at < held.start + self.interval:
                return math.nan  # the next reading decides
            request, cap_kw, net_kw = self._capped(held, at)
            if math.isnan(request) or (
                    abs(self._within_rates(request) - self._within_rates(self._asked_kw)) <= DEADBAND_KW):
                return math.nan
            sent = self.source.command(request, at)
            if not math.isnan(sent):  # not sent (the device away): the next poll tries again
                self._asked_kw = request
                self._said(cap_kw, net_kw, sent)
            return sent

    def _capped(self, held: IntervalCommand, at: pd.Timestamp) -> tuple[float, float, float]:
        """The interval's command under the cap in force at ``at`` on the net load read now,
        with that cap and net load: the command itself without a cap (cap NaN), NaN when the
        device cannot be read."""
        cap_kw = self._cap_kw(held, at)
        if math.isnan(cap_kw):
            return held.request_kw, cap_kw, math.nan
        net_kw = self._net_load_kw(at, cap_kw)
        if math.isnan(net_kw):
            return math.nan, cap_kw, net_kw
        request = request_setpoint(np.float64(held.request_kw), np.float64(math.nan), np.float64(cap_kw), np.float64(net_kw))
        return float(request), cap_kw, net_kw

    def _cap_kw(self, held: IntervalCommand, at: pd.Timestamp) -> float:
        device_id = self.config.device_id
        return held.controller.cap_kw(self.setpoints.import_limit_kw(device_id, at), at, self.setpoints.event(device_id, at))

    def _net_load_kw(self, at: pd.Timestamp, cap_kw: float) -> float:
        """The device's net load now (NaN, warned once per outage, when it cannot be read)."""
        measured = self.source.instant(at, at - self.interval)
        net_kw = math.nan if measured is None else measured.net_load_kw
        if math.isfinite(net_kw):
            if self._unread:
                log.info("%s: grid flow read again; the %g kW import cap is held between readings", self.config.device_id,
                         cap_kw)
            self._unread = False
            return net_kw
        if not self._unread:
            log.warning("%s: no grid and battery power from the device; the %g kW import cap is not held between readings "
                        "until they are read (the interval's command stays in force)", self.config.device_id, cap_kw)
        self._unread = True
        return math.nan

    def _within_rates(self, power_kw: float) -> float:
        """A request as the battery's rates allow it, so two beyond them compare equal."""
        battery = self.config.battery
        return within_battery_limits(power_kw, battery.max_charge_rate_kw, battery.max_discharge_rate_kw, math.nan,
                                     (battery.min_soc, battery.max_soc))

    def _said(self, cap_kw: float, net_kw: float, sent_kw: float) -> None:
        if math.isnan(cap_kw):
            log.debug("%s: back to the interval's command (%.2f kW)", self.config.device_id, sent_kw)
            return
        level = logging.DEBUG if self._holding else logging.INFO
        log.log(level, "%s: net load %.2f kW against the %g kW import cap: battery at %.2f kW until the next reading",
                self.config.device_id, net_kw, cap_kw, sent_kw)
        self._holding = True
