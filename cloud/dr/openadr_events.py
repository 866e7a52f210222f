"""OpenADR 2.0b events (openleadr's parsed ``oadrEvent`` dicts) as :class:`DREvent` windows.

The VTN is a remote party: every field of its event is checked here, once, and an event
this module cannot translate faithfully raises :class:`EventRejected` with a one-line
reason, which the VEN answers with optOut. The rules:

- The window is the active period (``dtstart`` plus a positive ``duration`` of at most
  :data:`MAX_DURATION`, starting at most :data:`MAX_LEAD` ahead); the signal's intervals
  split it, in order, and their durations must add up to it (OpenADR's definition of
  intervals, so the interval ``dtstart`` openleadr fills in is not trusted).
- One signal is translated. ``LOAD_DISPATCH`` (``delta``: a negative change of load in
  ``powerReal``, kW unless the signal's item base says W or MW) is a reduction;
  ``ELECTRICITY_PRICE`` (``price``, per kWh: an item base other than ``currencyPerKWh`` refuses
  the event; its unit, an ISO 4217 code, is the price's currency, which the decision checks
  against the sites') a price; ``SIMPLE`` and ``LOAD_CONTROL``
  (``x-loadControlLevelOffset``) a level 0-3. When several are present the first of that
  order wins; any signal name outside OpenADR's list, any other signal type, or a signal with
  its own targets refuses the event, because acting on part of an instruction is not
  answering it.
- Adjacent intervals with equal values are one window; each window is one
  :class:`DREvent`, with the event's id when there is one window and ``<id>#<n>`` (the
  position of its first interval) otherwise.
- Targets: a ``ven_id`` must be this VEN's, a ``resource_id`` one of its batteries (the
  event's sites); groups and parties address the whole fleet, as does an event without
  targets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from cloud.dr.model import MAX_LEAD, DREvent, Signal
from der_core.der_data import shown
from der_core.errors import ValidationFailed
from der_core.money import ISO_4217

#: The longest event window the fleet plans for; longer ones are not demand response.
MAX_DURATION = timedelta(hours=24)
#: More intervals than five-minute steps over :data:`MAX_DURATION` is not a schedule.
MAX_INTERVALS = 288
#: Rounding the VTN's XML durations may leave between the intervals and the active period.
_SUM_TOLERANCE = timedelta(seconds=1)
_MAX_ID_CHARS = 200

#: OpenADR 2.0b's signal names (openleadr's ``enums.SIGNAL_NAME``, spelled here so the
#: rules of this module read in one place).
KNOWN_SIGNALS = frozenset({
    "SIMPLE", "simple", "ELECTRICITY_PRICE", "ENERGY_PRICE", "DEMAND_CHARGE", "BID_PRICE",
    "BID_LOAD", "BID_ENERGY", "CHARGE_STATE", "LOAD_DISPATCH", "LOAD_CONTROL",
})
#: (signal name, signal type) the fleet answers, in order of precedence, and what each means.
SUPPORTED = {
    ("LOAD_DISPATCH", "delta"): Signal.REDUCTION,
    ("ELECTRICITY_PRICE", "price"): Signal.PRICE,
    ("LOAD_CONTROL", "x-loadControlLevelOffset"): Signal.LEVEL,
    ("SIMPLE", "level"): Signal.LEVEL,
    ("simple", "level"): Signal.LEVEL,
}
_PRECEDENCE = ("LOAD_DISPATCH", "ELECTRICITY_PRICE", "LOAD_CONTROL", "SIMPLE", "simple")
#: A LOAD_DISPATCH item base's scale, as the factor from its unit (W) to kW.
_KW_PER_UNIT = {"none": 1e-3, "k": 1.0, "M": 1e3}
_LEVELS = range(0, 4)
_TARGET_KEYS = frozenset({"ven_id", "resource_id", "group_id", "party_id"})


class EventRejected(ValidationFailed):
    """An event the VEN cannot translate; the message is the one-line reason."""


def event_id_of(event: Any) -> str:
    """The event's id, checked (the VEN needs it even to refuse or cancel an event)."""
    descriptor = _mapping(_field(event, "event_descriptor"), "event_descriptor")
    return _identifier(_field(descriptor, "event_id", "event_descriptor"), "event_id")


def status_of(event: Mapping[str, Any]) -> str:
    """The event's status as the VTN sent it (``far``, ``near``, ``active``, ``completed``,
    ``cancelled``); an absent or odd status is ``""``."""
    status = event["event_descriptor"].get("event_status")
    return status if isinstance(status, str) else ""


def translate(
    event: Any,
    *,
    source: str,
    ven_id: str | None,
    resources: frozenset[str],
    now: pd.Timestamp,
) -> tuple[DREvent, ...]:
    """The windows of one openleadr event dict, or :class:`EventRejected` saying why not."""
    event_id = event_id_of(event)
    descriptor = event["event_descriptor"]
    modification = descriptor.get("modification_number", 0)
    if isinstance(modification, bool) or not isinstance(modification, int) or modification < 0:
        raise EventRejected(f"modification_number {shown(modification)}: expected a whole number >= 0")
    start, duration = _active_period(_mapping(_field(event, "active_period"), "active_period"), now)
    name, signal_type, signal, kw_per_unit = _chosen_signal(_field(event, "event_signals"))
    currency = _currency(signal) if name == "ELECTRICITY_PRICE" else None
    sites = _sites(event.get("targets"), ven_id, resources)
    windows = _windows(signal, start, duration, kw_per_unit, SUPPORTED[(name, signal_type)])
    return tuple(
        DREvent(
            event_id=event_id if len(windows) == 1 else f"{event_id}#{uid}",
            source=source,
            start=begin,
            end=end,
            signal=SUPPORTED[(name, signal_type)],
            value=value,
            received_at=now,
            sites=sites,
            modification=modification,
            currency=currency,
        )
        for uid, begin, end, value in windows
    )


def _field(container: Mapping[str, Any], key: str, where: str = "event") -> Any:
    if not isinstance(container, Mapping):
        raise EventRejected(f"{where}: expected a mapping, got {type(container).__name__}")
    if container.get(key) is None:
        raise EventRejected(f"{where} has no {key}")
    return container[key]


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise EventRejected(f"{what}: expected a mapping, got {type(value).__name__}")
    return value


def _identifier(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_ID_CHARS or not value.isprintable():
        raise EventRejected(f"{what} {shown(value)}: expected a printable string of 1 to {_MAX_ID_CHARS} characters")
    return value


def _duration(value: Any, what: str) -> timedelta:
    if not isinstance(value, timedelta):
        raise EventRejected(f"{what} {shown(value)}: expected a duration")
    if value <= timedelta(0) or value > MAX_DURATION:
        raise EventRejected(f"{what} {value}: expected more than 0 and at most {MAX_DURATION}")
    return value


def _active_period(period: Mapping[str, Any], now: pd.Timestamp) -> tuple[pd.Timestamp, timedelta]:
    dtstart = _field(period, "dtstart", "active_period")
    if not isinstance(dtstart, datetime) or dtstart.tzinfo is None:
        raise EventRejected(f"active_period dtstart {shown(dtstart)}: expected a time with a time zone")
    duration = _duration(_field(period, "duration", "active_period"), "active_period duration")
    # Compared as datetimes first: a year-1 or year-9999 start is outside pandas' range.
    if dtstart - now.to_pydatetime() > MAX_LEAD:
        raise EventRejected(f"active_period dtstart {dtstart.isoformat()}: starts more than {MAX_LEAD} ahead")
    if dtstart + duration <= now.to_pydatetime():
        raise EventRejected(f"active period ended at {(dtstart + duration).isoformat()}")
    return pd.Timestamp(dtstart).tz_convert("UTC"), duration


def _chosen_signal(signals: Any) -> tuple[str, str, Mapping[str, Any], float]:
    if not isinstance(signals, Sequence) or isinstance(signals, str) or not signals:
        raise EventRejected("event_signals: expected a non-empty list of signals")
    by_name: dict[str, Mapping[str, Any]] = {}
    for signal in signals:
        signal = _mapping(signal, "event signal")
        name, signal_type = signal.get("signal_name"), signal.get("signal_type")
        if name not in KNOWN_SIGNALS:
            raise EventRejected(f"signal_name {shown(name)}: not an OpenADR 2.0b signal")
        if signal.get("targets") or signal.get("targets_by_type"):
            raise EventRejected(f"signal {name} has its own targets; the fleet answers event targets only")
        by_name.setdefault(name, signal)
        if name in _PRECEDENCE and (name, signal_type) not in SUPPORTED:
            supported = [t for n, t in SUPPORTED if n == name]
            raise EventRejected(f"signal {name} of type {shown(signal_type)}: the fleet answers type {supported[0]}")
    chosen = next((n for n in _PRECEDENCE if n in by_name), None)
    if chosen is None:
        raise EventRejected(f"signals {', '.join(sorted(by_name))}: the fleet answers {', '.join(_PRECEDENCE[:4])}")
    signal = by_name[chosen]
    scale = _kw_per_unit(signal) if chosen == "LOAD_DISPATCH" else _per_kwh(signal) if chosen == "ELECTRICITY_PRICE" else 1.0
    return chosen, signal["signal_type"], signal, scale


def _kw_per_unit(signal: Mapping[str, Any]) -> float:
    """LOAD_DISPATCH's unit: its item base (powerReal in W with an SI scale), else kW."""
    base = signal.get("measurement")
    if base is None:
        return 1.0
    base = _mapping(base, "signal measurement")
    if base.get("name") != "powerReal" or base.get("unit") != "W" or base.get("scale", "none") not in _KW_PER_UNIT:
        raise EventRejected(
            f"LOAD_DISPATCH item base {shown(base.get('name'))} in {shown(base.get('scale'))}"
            f"{shown(base.get('unit'))}: expected powerReal in W, kW or MW"
        )
    return _KW_PER_UNIT[base.get("scale", "none")]


def _per_kwh(signal: Mapping[str, Any]) -> float:
    """ELECTRICITY_PRICE's unit: its item base must be a price per kWh (``currencyPerKWh``, the
    fleet's price adder), else the price is of something else (a demand charge per kW, gas per
    therm) and taking it as per kWh would misread it."""
    base = signal.get("measurement")
    if base is None:
        return 1.0
    base = _mapping(base, "signal measurement")
    if base.get("name") != "currencyPerKWh" or base.get("scale", "none") != "none":
        name = base.get("description") if base.get("name") == "customUnit" else base.get("name")
        raise EventRejected(f"ELECTRICITY_PRICE item base {shown(name)}: expected currencyPerKWh, a price per kWh")
    return 1.0


def _currency(signal: Mapping[str, Any]) -> str | None:
    """The currency a price names: its ``currencyPerKWh`` item base's unit (an ISO 4217 code,
    openleadr's ``_CURRENCIES``), None without an item base or unit. A unit that is no code
    refuses the event: the price could be in any money."""
    unit = (signal.get("measurement") or {}).get("unit")
    if unit is None:
        return None
    if not isinstance(unit, str) or unit not in ISO_4217:
        raise EventRejected(f"ELECTRICITY_PRICE currency {shown(unit)}: expected an ISO 4217 code such as 'USD'")
    return unit


def _windows(
    signal: Mapping[str, Any], start: pd.Timestamp, duration: timedelta, kw_per_unit: float, kind: Signal
) -> list[tuple[int, pd.Timestamp, pd.Timestamp, float]]:
    intervals = signal.get("intervals")
    if not isinstance(intervals, Sequence) or isinstance(intervals, str) or not intervals:
        raise EventRejected("signal intervals: expected a non-empty list")
    if len(intervals) > MAX_INTERVALS:
        raise EventRejected(f"{len(intervals)} intervals: expected at most {MAX_INTERVALS}")
    windows: list[tuple[int, pd.Timestamp, pd.Timestamp, float]] = []
    begin, total = start, timedelta(0)
    for position, interval in enumerate(intervals):
        interval = _mapping(interval, f"interval {position}")
        step = _duration(interval.get("duration"), f"interval {position} duration")
        value = _value(interval.get("signal_payload"), kind, kw_per_unit, position)
        total += step
        if total > duration + _SUM_TOLERANCE:
            raise EventRejected(f"intervals last longer than the active period {duration}")
        end = begin + step
        if windows and windows[-1][3] == value:
            windows[-1] = (windows[-1][0], windows[-1][1], end, value)
        else:
            windows.append((position, begin, end, value))
        begin = end
    if abs(total - duration) > _SUM_TOLERANCE:
        raise EventRejected(f"intervals last {total}, the active period {duration}")
    return windows


def _value(payload: Any, kind: Signal, kw_per_unit: float, position: int) -> float:
    if isinstance(payload, bool) or not isinstance(payload, (int, float)) or not math.isfinite(payload):
        raise EventRejected(f"interval {position} payload {shown(payload)}: expected a finite number")
    if kind is Signal.REDUCTION:
        if payload >= 0:
            raise EventRejected(
                f"interval {position} LOAD_DISPATCH delta {payload}: expected a negative change (a reduction)"
            )
        return -payload * kw_per_unit
    if kind is Signal.LEVEL and payload not in _LEVELS:
        raise EventRejected(f"interval {position} level {payload}: expected 0, 1, 2 or 3")
    return float(payload)


def _sites(targets: Any, ven_id: str | None, resources: frozenset[str]) -> tuple[str, ...]:
    if targets is None:
        return ()
    if not isinstance(targets, Sequence) or isinstance(targets, str):
        raise EventRejected(f"targets: expected a list, got {type(targets).__name__}")
    sites: set[str] = set()
    for target in targets:
        target = _mapping(target, "target")
        unknown = set(target) - _TARGET_KEYS
        if unknown:
            raise EventRejected(f"target {', '.join(sorted(map(str, unknown)))}: expected {', '.join(sorted(_TARGET_KEYS))}")
        for key, value in target.items():
            _identifier(value, f"target {key}")
        if "ven_id" in target and target["ven_id"] != ven_id:
            raise EventRejected(f"target ven_id {shown(target['ven_id'])}: this VEN is {shown(ven_id)}")
        if "resource_id" in target:
            if target["resource_id"] not in resources:
                raise EventRejected(f"target resource_id {shown(target['resource_id'])}: not a battery of this fleet")
            sites.add(target["resource_id"])
    return tuple(sorted(sites))
