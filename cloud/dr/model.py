"""The protocol-neutral shape of a demand-response event and what the fleet answers.

An event asks the fleet, for a window, either for a reduction of its grid import
(``requested_kw``, positive: less import than the baseline) or signals a price or level the
fleet may respond to. An adapter (OpenADR, the JSON API) builds :class:`DREvent` from its
protocol's message and hands it to a :class:`DRHandler`; the handler's :class:`Answer`
(opt in or out, with a reason) goes back in the protocol's terms, and :class:`Delivery`
is what the fleet reports once the window has passed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import pandas as pd

#: How far ahead an event may start, whichever adapter brought it: the fleet's forecasts
#: and a gateway's schedule (edge_gateway/mqtt/commands.py, ``MAX_HORIZON``) reach no further.
MAX_LEAD = timedelta(days=7)


class Signal(enum.StrEnum):
    """What an event asks for."""

    REDUCTION = "reduction"  # reduce grid import by requested_kw against the baseline
    PRICE = "price"  # a price per kWh in the window, in the targeted sites' currency
    LEVEL = "level"  # a simple level, 0 (normal) to 3 (most urgent)


@dataclass(frozen=True)
class DREvent:
    """One event: ``event_id`` unique per source, a window ``[start, end)`` in UTC, the signal
    and its value, the sites it targets (empty: the whole fleet), and when it was received.
    ``currency``: the ISO 4217 code a price names, None when its message names none (then
    the price is read in the targeted sites' currency)."""

    event_id: str
    source: str
    start: pd.Timestamp
    end: pd.Timestamp
    signal: Signal
    value: float
    received_at: pd.Timestamp
    sites: tuple[str, ...] = ()
    modification: int = 0
    currency: str | None = None

    @property
    def requested_kw(self) -> float:
        """The reduction asked for (0 for a price or level signal)."""
        return self.value if self.signal is Signal.REDUCTION else 0.0


@dataclass(frozen=True)
class Answer:
    """The fleet's answer to an event: in or out, why, and the reduction it plans (kW)."""

    opt_in: bool
    reason: str
    planned_kw: float = 0.0


@dataclass(frozen=True)
class Delivery:
    """The delivered reduction of an event, measured from the sites' readings against a
    baseline: for the fleet and per site (kW averaged over the window)."""

    event_id: str
    baseline: str
    requested_kw: float
    planned_kw: float
    delivered_kw: float
    per_site_kw: Mapping[str, float] = field(default_factory=dict)


class DRHandler(Protocol):
    """What a protocol adapter calls: decide on an event, then report what was delivered."""

    def decide(self, event: DREvent) -> Answer: ...

    def cancel(self, event_id: str, source: str) -> None: ...

    def delivery(self, event_id: str, source: str) -> Delivery | None:
        """The measured delivery, or None while the window has not passed or the readings it
        is measured from have not all arrived."""
        ...

    def unmeasured(self, source: str) -> list[DREvent]:
        """The events from ``source`` the handler took whose delivery it has not measured yet:
        an adapter restarted before reporting them still owes their delivery."""
        ...
