"""A real inverter, battery and meter with a SunSpec map, over Modbus TCP (pymodbus).

Readings: PV from the inverter (model 101-103 ``W`` or ``DCW``, or 701 ``W``), the state of
charge from storage (124 ``ChaState``, else 802 ``SoC``), battery power from 802 ``W``, grid
power from the meter (201-204 ``W``, or the sum of its phases when the total is missing).
Each model's points and their scale factors come from one read, since a device may change a
scale factor between two reads and a value paired with another read's factor is wrong by a
power of ten.

Commands: model 124 storage control. A power P is sent as the window ``InWRte = P%``,
``OutWRte = -P%`` of ``WChaMax`` with both limits on (``StorCtl_Mod`` = 3), so the battery
charges (P > 0) or discharges (P < 0) at exactly P, the reading of model 124 that hybrid
inverters implementing it use; ``InOutWRte_RvrtTms`` makes the device return to its own mode
when no new command comes. P is clipped to ``WChaMax`` and to the state-of-charge window
(the configured one, raised to the device's ``MinRsvPct``). No command in force hands control
back (``StorCtl_Mod`` = 0).

A device that stops answering is logged once, retried with doubling waits up to
``reconnect_max_s``, and logged once again when it answers; nothing raises to the gateway.
A device that answers a command's write with an exception response (its storage control
locked or not offered) is there all the same: that is said once, and its readings go on.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence

import pandas as pd
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from der_core import der_data as dd
from der_core.config import MEASURED_FIELDS, BatterySign, MeterSign, ModbusSunSpecSource
from edge_gateway.sources import sunspec as ss
from edge_gateway.sources.base import Measured, Plausible, Samples, within_battery_limits

log = logging.getLogger(__name__)

#: StorCtl_Mod bits: the charge limit (InWRte) and the discharge limit (OutWRte) in force.
CHARGE_AND_DISCHARGE_LIMITS = 0b11
FIRST_RETRY_S = 1.0
MAX_MODELS = 200  # more than any device holds: a chain longer than this is a broken map
MAX_ADDRESS = 0xFFFF  # the last holding register Modbus can address
#: Scale factors of InWRte/OutWRte that can carry a command: steps of at most 10 % of WChaMax
#: and a range of at least 100 % in an int16 register.
RATE_SF = (-2, 1)


class DeviceUnavailable(Exception):
    """The device did not answer, or answered without a usable SunSpec map."""


class CommandRefused(Exception):
    """The device answered a write with an exception response (storage control locked or
    not offered): the link is fine and the readings go on; the battery keeps its own mode."""


class SunSpecDevice:
    """:class:`edge_gateway.sources.DeviceSource` for one SunSpec device over Modbus TCP.
    Thread-safe: the sampling job and the gateway's step share one connection."""

    def __init__(self, settings: ModbusSunSpecSource, soc_window: tuple[float, float] = (0.0, 100.0),
                 rates_kw: tuple[float, float] = (math.inf, math.inf)) -> None:
        self.settings = settings
        self.soc_window = soc_window
        #: The site's configured charge and discharge rates: a command stays within them and the device's WChaMax.
        self.rates_kw = rates_kw
        self.address = f"{settings.host}:{settings.port} unit {settings.unit_id}"
        # The link's state is reported here in one line per change; pymodbus would add an
        # error with a frame dump per failed attempt, so its logger stays quiet unless configured.
        vendor = logging.getLogger("pymodbus")
        if vendor.level == logging.NOTSET:
            vendor.setLevel(logging.CRITICAL)
        # The client's own reconnect loop stays off: the waits between attempts are ours.
        self._client = ModbusTcpClient(settings.host, port=settings.port, timeout=settings.timeout_s, retries=0,
                                       reconnect_delay=0)
        self._lock = threading.Lock()
        self._models: dict[str, ss.Model] | None = None
        self._samples = Samples()
        self._retry_at: pd.Timestamp | None = None
        self._wait_s = FIRST_RETRY_S
        self._down = False
        self._holding: bool | None = None  # our command is in force; None: unknown (after a connect)
        self._told: set[str] = set()  # one-time notes already logged
        self._plausible = Plausible(f"modbus-sunspec {self.address}")

    # -- link ---------------------------------------------------------------------------------
    def _read(self, address: int, count: int) -> list[int]:
        """``count`` registers from ``address``, or DeviceUnavailable: a device that answers
        with fewer, or a map whose lengths lead past the register space (65535), is a device
        not to be read now, said and retried like one that does not answer."""
        if address < 0 or address + count - 1 > MAX_ADDRESS:
            raise DeviceUnavailable(f"a read of {count} registers at {address} runs past the register space "
                                    f"({MAX_ADDRESS}); expected a SunSpec map within it")
        try:
            response = self._client.read_holding_registers(address, count=count, device_id=self.settings.unit_id)
        except (ModbusException, OSError, ValueError) as error:
            raise DeviceUnavailable(str(error)) from None
        if response.isError():
            raise DeviceUnavailable(f"exception response to a read of {count} registers at {address}")
        if len(response.registers) < count:
            raise DeviceUnavailable(f"{len(response.registers)} registers in the answer to a read of {count} at {address}")
        return list(response.registers[:count])

    def _write(self, address: int, values: Sequence[int]) -> None:
        try:
            response = self._client.write_registers(address, list(values), device_id=self.settings.unit_id)
        except (ModbusException, OSError, ValueError) as error:
            raise DeviceUnavailable(str(error)) from None
        if response.isError():
            code = getattr(response, "exception_code", "?")
            raise CommandRefused(f"exception code {code} to a write of {len(values)} registers at {address}")

    def _connected(self, at: pd.Timestamp) -> dict[str, ss.Model]:
        """The device's models by role, connecting and discovering its map when needed, no
        sooner than the wait after the last failure allows."""
        if self._models is not None:
            return self._models
        if self._retry_at is not None and at < self._retry_at:
            raise DeviceUnavailable("waiting to retry")
        if not self._client.connect():
            raise DeviceUnavailable("no connection")
        self._models = self._roles(self._discover())
        self._holding = None
        if self._down:
            log.warning("modbus-sunspec %s answers again; readings resume", self.address)
        self._down, self._retry_at, self._wait_s = False, None, FIRST_RETRY_S
        return self._models

    def _lost(self, at: pd.Timestamp, error: DeviceUnavailable) -> None:
        """Close the link and wait (doubling, up to ``reconnect_max_s``) before the next try."""
        self._client.close()
        self._models = None
        if not self._down:
            held = "; the battery returns to the device's own mode within its revert time" if self._holding else ""
            log.warning("modbus-sunspec %s not answering (%s): readings skipped until it answers, retrying "
                        "with backoff up to %gs%s", self.address, error, self.settings.reconnect_max_s, held)
        self._down, self._holding = True, False
        self._retry_at = at + pd.Timedelta(seconds=self._wait_s)
        self._wait_s = min(2 * self._wait_s, self.settings.reconnect_max_s)

    def _discover(self) -> list[ss.Model]:
        bases = ss.BASE_ADDRESSES if self.settings.base_address is None else (self.settings.base_address,)
        for base in bases:
            try:
                if not ss.is_marker(self._read(base, 2)):
                    continue
            except DeviceUnavailable:
                if not self._client.connected:
                    raise
                continue  # an exception response: no map here
            models, address = [], base + 2
            while len(models) < MAX_MODELS:
                model_id, length = self._read(address, 2)
                if model_id in (ss.END_ID, 0):
                    break
                models.append(ss.Model(model_id, address, length))
                address += 2 + length
            log.info("modbus-sunspec %s: SunSpec map at %d, models %s", self.address, base, ", ".join(str(m.id) for m in models))
            return models
        raise DeviceUnavailable(f"no SunSpec map (marker 'SunS') at {', '.join(map(str, bases))}")

    def _roles(self, models: list[ss.Model]) -> dict[str, ss.Model]:
        """The first model of each kind this gateway reads, when long enough to hold its points."""
        roles: dict[str, ss.Model] = {}
        wanted = {"inverter": (*ss.INVERTERS, ss.DER_AC), "storage": (ss.STORAGE,), "battery": (ss.BATTERY,), "meter": ss.METERS}
        for model in models:
            for role, ids in wanted.items():
                if model.id in ids and role not in roles:
                    if max(p.offset for p in ss.POINTS[model.id].values()) <= model.length + 1:
                        roles[role] = model
                    else:
                        self._note(f"short-{model.id}", "model %d at %d is shorter (%d) than its definition; not read",
                                   model.id, model.address, model.length)
        return roles

    def _note(self, key: str, message: str, *args: object) -> None:
        if key not in self._told:
            self._told.add(key)
            log.warning("modbus-sunspec %s: " + message, self.address, *args)

    def _block(self, model: ss.Model | None) -> tuple[list[int], int] | None:
        """The registers of one read spanning the model's points, and its first address."""
        if model is None:
            return None
        first, count = model.span()
        return self._read(first, count), first

    # -- readings -----------------------------------------------------------------------------
    def _measure(self, at: pd.Timestamp) -> Measured | None:
        try:
            models = self._connected(at)
            blocks = {role: self._block(models.get(role)) for role in ("inverter", "storage", "battery", "meter")}
        except DeviceUnavailable as error:
            if str(error) != "waiting to retry":
                self._lost(at, error)
            return None
        return self._decode(models, blocks)

    def _decode(self, models: dict[str, ss.Model], blocks: dict) -> Measured:
        def value(role: str, name: str) -> float:
            block = blocks.get(role)
            return math.nan if block is None else ss.scaled(block[0], models[role], name, block[1])

        pv_kw = value("inverter", self.settings.pv_point.value) / 1000.0
        if models.get("inverter") is not None and models["inverter"].id == ss.DER_AC and self.settings.pv_point.value != "W":
            pv_kw = math.nan  # model 701 has no DCW
        soc = value("storage", "ChaState")
        if not math.isfinite(soc):
            soc = value("battery", "SoC")
        battery_kw = value("battery", "W") / 1000.0
        if self.settings.battery_power_sign == BatterySign.DISCHARGE_POSITIVE:
            battery_kw = -battery_kw
        grid_kw = value("meter", "W")
        if not math.isfinite(grid_kw):
            phases = [p for p in (value("meter", f"Wph{x}") for x in "ABC") if math.isfinite(p)]
            grid_kw = math.fsum(phases) if phases else math.nan
        grid_kw /= 1000.0
        if self.settings.meter_power_sign == MeterSign.EXPORT_POSITIVE:
            grid_kw = -grid_kw
        return Measured.of(self._plausible(dict(zip(MEASURED_FIELDS, (pv_kw, soc, battery_kw, grid_kw), strict=True))))

    def sample(self, at: pd.Timestamp | None = None) -> None:
        at = dd.parse_ts(at if at is not None else dd.utc_now())
        with self._lock:
            measured = self._measure(at)
            if measured is not None:
                self._samples.add(at, measured)

    def reading(self, start: pd.Timestamp, end: pd.Timestamp) -> Measured | None:
        with self._lock:
            within = self._samples.take(start, end)
            if not within and (now := self._measure(end)) is not None:
                within = [now]
        return Measured.mean(within) if within else None

    def instant(self, at: pd.Timestamp, since: pd.Timestamp) -> Measured | None:
        with self._lock:
            return self._measure(at)

    # -- commands -----------------------------------------------------------------------------
    def command(self, power_kw: float, at: pd.Timestamp) -> float:
        if not self.settings.control:
            return math.nan
        with self._lock:
            try:
                storage = self._connected(at).get("storage")
                if storage is None:
                    self._note("no-storage", "no storage control model (124); battery commands are not sent")
                    return math.nan
                if math.isnan(power_kw):
                    self._hand_back(storage, "no plan or setpoint in force")
                    return math.nan
                return self._send(storage, power_kw)
            except DeviceUnavailable as error:
                if str(error) != "waiting to retry":
                    self._lost(at, error)
                return math.nan
            except CommandRefused as error:
                self._note("refused", "refuses battery commands (%s): they are not taken, the battery keeps the "
                           "device's own mode; readings go on", error)
                return math.nan

    def _hand_back(self, storage: ss.Model, why: str) -> None:
        if self._holding is False:
            return
        self._write(storage.address + ss.POINTS[storage.id]["StorCtl_Mod"].offset, [0])
        if self._holding:
            log.warning("modbus-sunspec %s: %s; battery control handed back to the device's own mode", self.address, why)
        self._holding = False

    def _send(self, storage: ss.Model, power_kw: float) -> float:
        registers, first = self._block(storage)
        limit_w = ss.scaled(registers, storage, "WChaMax", first)
        if not limit_w > 0.0:
            self._note("no-wchamax", "storage reports no WChaMax; battery commands are not sent")
            self._hand_back(storage, "the device reports no charge limit")
            return math.nan
        if not dd.plausible(dd.BATTERY_POWER, limit_w / 1000.0):
            self._note("wild-wchamax", "storage reports a WChaMax of %g W, beyond any battery (a wrong scale factor); "
                       "battery commands are not sent", limit_w)
            self._hand_back(storage, "the device reports an implausible charge limit")
            return math.nan
        soc = ss.scaled(registers, storage, "ChaState", first)
        if not dd.plausible(dd.BATTERY_SOC, soc):
            soc = math.nan  # a wrong scale factor, dropped from the readings too: the window is then the device's own
        reserve = ss.scaled(registers, storage, "MinRsvPct", first)
        low, high = self.soc_window
        low = max(low, reserve) if math.isfinite(reserve) else low
        charge_kw, discharge_kw = (min(limit_w / 1000.0, rate) for rate in self.rates_kw)
        power_w = 1000.0 * within_battery_limits(power_kw, charge_kw, discharge_kw, soc, (low, high))
        sf = ss.raw(registers, storage, "InOutWRte_SF", first)
        sf = 0 if sf is None else sf
        if not RATE_SF[0] <= sf <= RATE_SF[1]:
            self._note(f"rate-sf-{sf}", "InOutWRte_SF is %d: rates in steps of %g%% of WChaMax, up to %g%%, cannot "
                       "carry a command; expected %d to %d; battery commands are not sent", sf, 10.0**sf,
                       0x7FFF * 10.0**sf, *RATE_SF)
            self._hand_back(storage, "the device's rate scale cannot carry a command")
            return math.nan
        percent = ss.steps(100.0 * power_w / limit_w, sf) * 10.0**sf  # as the device will read it
        points = ss.POINTS[storage.id]
        # OutWRte, InWRte, InOutWRte_WinTms, InOutWRte_RvrtTms are consecutive: one write.
        self._write(storage.address + points["OutWRte"].offset,
                    [ss.encoded(-percent, sf, "int16"), ss.encoded(percent, sf, "int16"), 0, self.settings.revert_after_s])
        self._write(storage.address + points["StorCtl_Mod"].offset, [CHARGE_AND_DISCHARGE_LIMITS])
        if self._holding is not True:
            log.info("modbus-sunspec %s: battery follows the gateway's commands (reverting after %ds without one)",
                     self.address, self.settings.revert_after_s)
        self._holding = True
        return percent * limit_w / 100.0 / 1000.0 + 0.0

    def close(self) -> None:
        with self._lock:
            self._client.close()
