"""A site whose devices Home Assistant already integrates, read from its entities and its
battery driven through a service call (REST API: :mod:`edge_gateway.sources.ha_api`).

Readings: each configured entity's state is read several times per interval
(``sample_every_s``) and the reading averages the powers and takes the last state of charge
(:meth:`Measured.mean`). The unit comes from each entity's ``unit_of_measurement`` (W, kW or
MW for a power, % for the state of charge), so a sensor in W and one in kW need no setting;
a state that is ``unavailable`` or ``unknown``, or not a number, or in another unit, leaves
its field empty (the last two with one warning per entity).

Commands: the power, clipped to the configured battery's rates and state-of-charge window
and to the entity's own ``min``/``max``, is sent as ``value`` in the entity's unit through
the configured service (``number.set_value``). With a mode select, the manual option is
selected first when the gateway takes control; no plan in force selects the auto option, or,
without a mode select, sets the power to 0 (the battery idles, since nothing else would stop
it following the last command).

Home Assistant not answering is logged once (and once again when it answers); its readings
are skipped meanwhile, nothing is invented. A refused token is one line naming
``HOMEASSISTANT_TOKEN``. The token is read from the environment only and registered with
:mod:`der_core.redact`, so no line shows it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable

import pandas as pd

from der_core import der_data as dd
from der_core.config import BatteryConfig, HomeAssistantEntity, HomeAssistantSource
from der_core.errors import ConfigError
from der_core.redact import register_secret, url_address
from edge_gateway.sources.base import Measured, Plausible, Samples, within_battery_limits
from edge_gateway.sources.ha_api import HomeAssistantApi, HomeAssistantError, Unauthorized, Unreachable

log = logging.getLogger(__name__)

TOKEN_VARIABLE = "HOMEASSISTANT_TOKEN"
#: kW per unit of a power entity, and percent per unit of a state of charge.
POWER_UNITS = {"W": 0.001, "kW": 1.0, "MW": 1000.0}
SOC_UNITS = {"%": 1.0}
#: States Home Assistant gives an entity without a value (its ``STATE_UNAVAILABLE``, ``STATE_UNKNOWN``).
NO_VALUE = ("unavailable", "unknown")


class HomeAssistantDevice:
    """:class:`edge_gateway.sources.DeviceSource` for entities of one Home Assistant.
    Thread-safe: the sampling job and the gateway's step share one client."""

    def __init__(self, settings: HomeAssistantSource, battery: BatteryConfig, token: str | None = None,
                 clock: Callable[[], pd.Timestamp] = dd.utc_now) -> None:
        token = os.environ.get(TOKEN_VARIABLE, "") if token is None else token
        if not token.strip():
            raise ConfigError(f"{TOKEN_VARIABLE} is not set; expected a long-lived access token of a Home Assistant user "
                              "(its profile page, Security, Long-lived access tokens)")
        register_secret(token)
        self.settings = settings
        self.battery = battery
        self.address = url_address(settings.url)
        self._api = HomeAssistantApi(settings.url, token.strip(), settings.timeout_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._samples = Samples()
        self._soc = math.nan  # the last state of charge read, for the commands' window
        self._down = False
        self._refused = False
        self._holding: bool | None = None  # our command is in force; None: unknown (after a start)
        self._told: set[str] = set()
        self._plausible = Plausible(f"homeassistant {self.address}")

    # -- link -------------------------------------------------------------------------------
    def _note(self, key: str, message: str, *args: object) -> None:
        if key not in self._told:
            self._told.add(key)
            log.warning("homeassistant %s: " + message, self.address, *args)

    def _failed(self, error: HomeAssistantError) -> None:
        """One line for a refused token and one for an outage, until Home Assistant answers."""
        if isinstance(error, Unauthorized):
            if not self._refused:
                log.error("homeassistant %s refused the token (%s): set %s to a long-lived access token of a Home "
                          "Assistant user; readings skipped until it is accepted", self.address, error, TOKEN_VARIABLE)
            self._refused = True
        elif not self._down:
            held = "; the battery keeps its last command until Home Assistant answers" if self._holding else ""
            log.warning("homeassistant %s not answering (%s): readings skipped until it answers%s", self.address, error, held)
            self._down = True

    def _answered(self) -> None:
        if self._down or self._refused:
            log.warning("homeassistant %s answers again; readings resume", self.address)
        self._down = self._refused = False

    # -- readings ---------------------------------------------------------------------------
    def _value(self, name: str, entity: HomeAssistantEntity) -> float:
        """The entity's state in the field's unit and sign; NaN without a usable one."""
        try:
            state = self._api.state(entity.entity_id)
        except (Unreachable, Unauthorized):
            raise
        except HomeAssistantError as error:
            self._note(f"read-{entity.entity_id}", "%s not read (%s); %s stays empty", entity.entity_id, error, name)
            return math.nan
        raw = state.get("state")
        if raw in NO_VALUE:
            return math.nan
        try:
            number = float(raw)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            self._note(f"state-{entity.entity_id}", "%s has the state %s, not a number; %s stays empty", entity.entity_id,
                       dd.shown(raw), name)
            return math.nan
        units = SOC_UNITS if name == dd.BATTERY_SOC else POWER_UNITS
        unit = state.get("attributes", {}).get("unit_of_measurement")
        if unit not in units:
            self._note(f"unit-{entity.entity_id}", "%s reports in %s; expected %s for %s, which stays empty",
                       entity.entity_id, dd.shown(unit), " or ".join(units), name)
            return math.nan
        return number * units[unit] * entity.sign

    def _measure(self) -> Measured | None:
        values = {}
        try:
            for name, entity in self.settings.entities.items():
                values[name] = self._value(name, entity)
        except (Unreachable, Unauthorized) as error:
            self._failed(error)
            return None
        self._answered()
        known = self._plausible({name: value for name, value in values.items() if math.isfinite(value)})
        if dd.BATTERY_SOC in known:
            self._soc = known[dd.BATTERY_SOC]
        return Measured.of(known) if known else None

    def sample(self, at: pd.Timestamp | None = None) -> None:
        at = dd.parse_ts(at if at is not None else self._clock())
        with self._lock:
            measured = self._measure()
        if measured is not None:
            self._samples.add(at, measured)

    def reading(self, start: pd.Timestamp, end: pd.Timestamp) -> Measured | None:
        within = self._samples.take(start, end)
        if not within:
            with self._lock:
                now = self._measure()
            within = [now] if now is not None else []
        return Measured.mean(within) if within else None

    def instant(self, at: pd.Timestamp, since: pd.Timestamp) -> Measured | None:
        with self._lock:
            return self._measure()

    # -- commands ---------------------------------------------------------------------------
    def command(self, power_kw: float, at: pd.Timestamp) -> float:
        if self.settings.command is None:
            return math.nan
        with self._lock:
            try:
                if math.isnan(power_kw):
                    self._hand_back("no plan or setpoint in force")
                    return math.nan
                sent = self._send(power_kw)
            except (Unreachable, Unauthorized) as error:
                self._failed(error)
                return math.nan
            except HomeAssistantError as error:
                self._note(f"command-{error}", "battery command not sent (%s)", error)
                return math.nan
            self._answered()
            return sent

    def _send(self, power_kw: float) -> float:
        command, battery = self.settings.command, self.battery
        target = self._api.state(command.entity_id)
        attributes = target.get("attributes", {})
        unit = attributes.get("unit_of_measurement")
        if unit not in POWER_UNITS:
            self._note(f"command-unit-{unit}", "%s is in %s; expected W or kW, so battery commands are not sent",
                       command.entity_id, dd.shown(unit))
            return math.nan
        power_kw = within_battery_limits(power_kw, battery.max_charge_rate_kw, battery.max_discharge_rate_kw, self._soc,
                                         (battery.min_soc, battery.max_soc))
        value = command.sign * power_kw / POWER_UNITS[unit]
        low, high = attributes.get("min"), attributes.get("max")
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low <= high:
            value = min(max(value, low), high)  # the entity refuses a value outside its range
        if command.mode is not None and self._holding is not True:
            self._api.call(command.mode.service, {"entity_id": command.mode.entity_id, "option": command.mode.manual})
        self._api.call(command.service, {"entity_id": command.entity_id, "value": round(value, 3) + 0.0})
        if self._holding is not True:
            log.info("homeassistant %s: the battery follows the gateway's commands through %s", self.address, command.entity_id)
        self._holding = True
        return round(value, 3) * POWER_UNITS[unit] * command.sign + 0.0

    def _hand_back(self, why: str) -> None:
        if self._holding is False:
            return
        command = self.settings.command
        if command.mode is not None:
            self._api.call(command.mode.service, {"entity_id": command.mode.entity_id, "option": command.mode.auto})
            how = f"battery control handed back to the device's own mode ({command.mode.entity_id} set to {command.mode.auto!r})"
        else:
            self._api.call(command.service, {"entity_id": command.entity_id, "value": 0})
            how = f"battery held idle ({command.entity_id} set to 0; configure command.mode to hand control back instead)"
        if self._holding:
            log.warning("homeassistant %s: %s; %s", self.address, why, how)
        self._holding = False

    def close(self) -> None:
        self._api.close()
