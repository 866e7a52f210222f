"""The fleet's answer to a demand-response event: :class:`FleetDR`, the one :class:`DRHandler`.

``decide`` applies these rules in this order; the first that fails opts out with its reason:

1. the event is well formed (:func:`malformed`): instants the fleet's times hold and a
   modification within OpenADR's count (else it is not stored either), ``start < end``, a
   window of at most ``max_window``, a finite value, no negative reduction or price, a price
   adder of at most :data:`MAX_PRICE_PER_KWH`, a level 0 to 3, only sites the store knows,
   and a price that names its currency in the targeted sites' one (:func:`foreign_currency`);
2. the window has not ended, starts at least ``lead_time`` after now (the schedules must
   reach the gateways, and a gateway read its book, before the window) and at most
   :data:`~cloud.dr.model.MAX_LEAD` after now (:func:`too_far_ahead`). A modification of an
   event the fleet stands by whose window is under way (:func:`under_way_at`) is not too
   soon: its sites hold the earlier window until a new schedule reaches them, so the rest of
   the window, from the first plan step ``lead_time`` from now reaches, is planned again by
   the rules below from the batteries' state now, and each site is sent the earlier window up
   to that step, then the new plan (:func:`cloud.dr.plan.continued`); cut to end before that
   step, the earlier window is sent cut at the new end;
3. some targeted site is online (a reading within ``online_intervals`` of its interval);
4. the window is at least as long as the reading interval of every online targeted site
   (:func:`too_short`): delivery is measured from the readings stamped in the window, and a
   shorter window may hold none, which would leave the event without a delivery to report;
5. the fleet can hold the reduction: its expected capability (per site
   :meth:`FleetState.capability_kw` over the window's own hours, :func:`window_hours`,
   times the site's expected participation) is at least
   ``margin`` times the reduction asked. A level asks ``level_fractions[level]`` of the
   capability; a price signal asks nothing and is planned as a price adder in the window;
6. some site can follow: an event the fleet would answer with nothing (a level or price
   with every site left out) opts out, since opting in promises a response; only a level
   whose fraction is 0 (normal operation) opts in with nothing planned, as it asks nothing;
7. the joint plan holds the reduction (no slack on the fleet row).

Sites that cannot follow (offline, no history to forecast from, an empty battery) are left
out of the plan and the reduction falls on the others. Opting in stores the event, its plan,
each site's forecast baseline and each site's window (``dr_events``, ``dr_results``,
``dr_windows``), then publishes one schedule per site carrying the stored windows of every
standing event (opted in, not ended) it takes part in (:func:`cloud.dr.plan.site_schedule`);
cancelling or withdrawing an event marks it so in the store first, then republishes what the
site's other events still need, and clears the site only when none is left. The windows are
read from the store when a schedule is sent, never kept in memory: a decider restarted
between two events, or two deciders on the same store (the dashboard's API and a VEN), send a
site every window the fleet promised, and whichever sends last sends the union. A repeated
event (same source, id and modification) gets the stored answer, a newer modification is
decided again. Decisions run one at a time in a process.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cloud.dr import baseline as b
from cloud.dr import records as r
from cloud.dr.capability import FleetState, commitments, fleet_state
from cloud.dr.delivery import measure, synced_through
from cloud.dr.dispatch import SchedulePublisher
from cloud.dr.model import MAX_LEAD, Answer, Delivery, DREvent, Signal
from cloud.dr.plan import continued, schedules, site_schedule, solve
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.errors import DERError
from der_core.setpoints import SetpointSchedule
from der_core.site_file import site_currency

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DRSettings:
    step: pd.Timedelta = pd.Timedelta(minutes=15)  # plan step, the optimizer's
    lead_time: pd.Timedelta = pd.Timedelta(minutes=10)  # two 5-minute gateway readings after publishing
    online_intervals: int = 3
    margin: float = 1.1  # capability must exceed the request by 10 %: forecasts err
    max_window: pd.Timedelta = pd.Timedelta(hours=24)
    forecast_days: int = 5  # same-day-type days the forecast baseline averages
    level_fractions: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5)  # of the fleet's capability, per level 0..3
    wear_per_kwh: float = 0.01
    slack_tolerance: float = 1e-3  # share of the request a plan may miss by rounding
    # How long after a window's end its delivery waits for the sites' last readings to sync
    # (every minute by default); a site still silent then is measured with what it sent.
    delivery_wait: pd.Timedelta = pd.Timedelta(hours=1)


#: The instants an event may name: what the fleet's time arithmetic (nanoseconds, as pandas
#: holds them) reaches; an event outside them is a misread date, not a request.
EARLIEST, LATEST = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")
#: The highest price adder a plan takes (per kWh): far above any market's cap (ERCOT's, the
#: highest, is 5 $/kWh), and low enough that the plan's costs stay inside the LP's tolerances.
MAX_PRICE_PER_KWH = 10_000.0
#: The largest reduction an event may ask, kW: 10 GW, more than any fleet of homes holds; a
#: larger request is a unit mixed up (W as kW), and its figures would fill a line.
MAX_REDUCTION_KW = 1e7
#: OpenADR's modificationNumber is an unsigned 32-bit count.
MAX_MODIFICATION = 2**32 - 1
#: Rounds of read-then-send a site's schedule takes while other deciders change its windows:
#: each round follows one more decision landing meanwhile.
MAX_SENDS = 5


def unrepresentable(event: DREvent) -> str | None:
    """Why an event cannot even be stored, or None: an instant beyond what the fleet's times
    hold (a misread date), a modification beyond OpenADR's count."""
    for name, instant in (("start", event.start), ("end", event.end)):
        if pd.isna(instant):
            return f"{name} is no time; expected the date-time of a coming event"
        if not EARLIEST <= instant <= LATEST:  # shown by its parts: strftime stops at year 9999
            return (f"{name} {instant.year:04d}-{instant.month:02d}-{instant.day:02d} is outside "
                    f"{EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}; expected the date-time of a coming event")
    if not 0 <= event.modification <= MAX_MODIFICATION:
        return f"modification {event.modification} is outside 0 to {MAX_MODIFICATION}, OpenADR's count"
    return None


def malformed(event: DREvent, known: set[str], settings: DRSettings = DRSettings()) -> str | None:
    """Why an event cannot be meant, in one line, or None."""
    if (problem := unrepresentable(event)) is not None:
        return problem
    if not event.end > event.start:
        return f"window ends ({dd.format_ts(event.end)}) at or before its start ({dd.format_ts(event.start)})"
    if event.end - event.start > settings.max_window:
        return f"window of {event.end - event.start} is longer than {settings.max_window}"
    if not math.isfinite(event.value):
        return f"{event.signal} value is not a finite number"
    if event.value < 0:
        return f"{event.signal} value {event.value:g} is negative; expected >= 0"
    if event.signal is Signal.PRICE and event.value > MAX_PRICE_PER_KWH:
        return f"price {event.value:g} per kWh is above {MAX_PRICE_PER_KWH:g}; expected a price adder per kWh"
    if event.signal is Signal.REDUCTION and event.value > MAX_REDUCTION_KW:
        return f"reduction {event.value:g} kW is above {MAX_REDUCTION_KW:g}; expected the fleet's kW"
    if event.signal is Signal.LEVEL and (event.value != int(event.value) or event.value >= len(settings.level_fractions)):
        return f"level {event.value:g}; expected a whole number 0 to {len(settings.level_fractions) - 1}"
    unknown = sorted(set(event.sites) - known)
    if unknown:
        return f"unknown site {dd.shown(unknown[0])} ({len(unknown)} unknown); expected sites of the fleet"
    return None


def foreign_currency(event: DREvent, targeted: list[dict]) -> str | None:
    """Why a price cannot be taken in the targeted sites' money, or None: a price naming a
    currency (``event.currency``) is added to each site's import price, which is in the site's
    currency (``site_currency``), so a price in another currency, or sites in several or in
    none named, would be planned as a number in the wrong money."""
    if event.signal is not Signal.PRICE or event.currency is None:
        return None
    currencies = sorted({site_currency(site) or "no currency declared" for site in targeted})
    if currencies == [event.currency]:
        return None
    return (f"price in {event.currency}, the targeted sites' in {', '.join(currencies)}; "
            f"expected a price in the sites' currency")


def too_far_ahead(event: DREvent, now: pd.Timestamp) -> str | None:
    """Why an event starts too far ahead to be planned, or None: the forecasts a plan stands on
    and the schedule a gateway takes reach :data:`~cloud.dr.model.MAX_LEAD`, whichever
    adapter brought the event."""
    if event.start - now <= MAX_LEAD:
        return None
    return (f"starts at {dd.format_ts(event.start)}, more than {MAX_LEAD.days} days after now ({dd.format_ts(now)}); "
            f"expected a start within {MAX_LEAD.days} days")


def too_short(event: DREvent, state: FleetState) -> str | None:
    """Why an event's window is too short to be measured, or None: a window shorter than a
    site's reading interval may hold none of its readings, and delivery is measured from them."""
    if not state.online.any():
        return None
    longest = float(state.interval_minutes[state.online].max())
    window = (event.end - event.start) / pd.Timedelta(minutes=1)
    if window >= longest:
        return None
    return (f"a window of {window:g} min is shorter than the sites' reading interval of {longest:g} min; "
            f"expected at least {longest:g} min, for delivery is measured from the readings in the window")


class FleetDR:
    """Decides events for the fleet in ``store`` and dispatches it through ``publisher``.

    ``participation``: each site's expected probability of following (default 1: gateways in
    setpoint mode follow their schedules); ``clock``: now (injected by tests and simulations).
    """

    def __init__(self, store: CloudStore, publisher: SchedulePublisher, *, settings: DRSettings = DRSettings(),
                 participation: Mapping[str, float] | None = None,
                 clock: Callable[[], pd.Timestamp] = dd.utc_now) -> None:
        self.store, self.publisher, self.settings = store, publisher, settings
        self.participation = dict(participation or {})
        self.clock = clock
        self._lock = threading.Lock()

    # --- DRHandler ---
    def decide(self, event: DREvent) -> Answer:
        if (problem := unrepresentable(event)) is not None:  # declined, and nothing to store it as
            log.info("DR %s/%s: out (malformed event: %s)", event.source, event.event_id, problem)
            return Answer(False, f"malformed event: {problem}")
        with self._lock:
            stored = r.stored_event(self.store, event.source, event.event_id)
            if stored is not None and stored[s.STATUS] != r.RECEIVED and int(stored[s.MODIFICATION] or 0) >= event.modification:
                return _answer(stored)
            if (ended := _ran(stored, self.clock())) is not None:
                log.info("DR %s/%s: out (%s)", event.source, event.event_id, ended)
                return Answer(False, ended)
            r.save_event(self.store, event, r.RECEIVED)
            try:
                answer = self._decide(event, stored)
            except Exception as error:  # not left "received" for ever: the fleet did not follow it
                r.save_event(self.store, event, r.OPTED_OUT, f"decision failed: {' '.join(str(error).split())}")
                self._abandon(event)
                raise
            if not answer.opt_in:
                r.save_event(self.store, event, r.OPTED_OUT, answer.reason)
                if stored is not None and stored[s.STATUS] == r.OPTED_IN:  # a modification the fleet no longer follows
                    self._withdraw(event.source, event.event_id)
            log.info("DR %s/%s: %s (%s)", event.source, event.event_id, "in" if answer.opt_in else "out", answer.reason)
            return answer

    def cancel(self, event_id: str, source: str) -> None:
        with self._lock:
            stored = r.stored_event(self.store, source, event_id)
            if stored is None or stored[s.STATUS] in (r.CANCELLED, r.COMPLETED):
                return
            r.set_status(self.store, source, event_id, r.CANCELLED, "cancelled by the event's source")
            if stored[s.STATUS] == r.OPTED_IN and self.clock() < dd.parse_ts(stored[s.END_TS]):
                self._withdraw(source, event_id)

    def delivery(self, event_id: str, source: str) -> Delivery | None:
        with self._lock:
            stored = r.stored_event(self.store, source, event_id)
            if stored is None or stored[s.STATUS] not in (r.OPTED_IN, r.COMPLETED):
                return None
            event = r.event_of(stored)
            now = self.clock()
            if now < event.end:
                return None
            planned = r.results(self.store, source, event_id)
            dispatched = planned.loc[planned[dd.DEVICE_ID] != r.FLEET, dd.DEVICE_ID].unique()
            if (stored[s.STATUS] == r.OPTED_IN and now < event.end + self.settings.delivery_wait
                    and not synced_through(self.store, dispatched, event.end)):
                return None  # the window's last readings are still on their way
            rows = measure(self.store, event, planned, now, self.settings.step, self._excluded_windows(event))
            r.save_results(self.store, rows)
            r.set_status(self.store, source, event_id, r.COMPLETED)
            fleet = {row[s.BASELINE]: row for row in rows if row[dd.DEVICE_ID] == r.FLEET}
            sites = {row[dd.DEVICE_ID]: row[s.DELIVERED_KW] for row in rows
                     if row[s.BASELINE] == b.FORECAST and row[dd.DEVICE_ID] != r.FLEET}
            return Delivery(event_id, b.FORECAST, event.requested_kw, float(stored[s.PLANNED_KW]),
                            fleet[b.FORECAST][s.DELIVERED_KW], sites)

    def unmeasured(self, source: str) -> list[DREvent]:
        with self._lock:
            events = r.all_events(self.store)
            taken = events[(events[s.SOURCE] == source) & (events[s.STATUS] == r.OPTED_IN)]
            return [r.event_of(row) for row in taken.to_dict("records")]

    # --- the rules ---
    def _decide(self, event: DREvent, earlier: dict | None) -> Answer:
        now, settings = self.clock(), self.settings
        sites = {site[dd.DEVICE_ID]: site for site in self.store.sites()}
        problem = malformed(event, set(sites), settings)
        if problem:
            return Answer(False, f"malformed event: {problem}")
        if event.end <= now:
            return Answer(False, f"window ended at {dd.format_ts(event.end)}, before now ({dd.format_ts(now)})")
        under_way = under_way_at(earlier, event, now + settings.lead_time)
        if event.start < now + settings.lead_time and not under_way:
            return Answer(False, f"too soon: starts at {dd.format_ts(event.start)}; schedules need {settings.lead_time} "
                                 f"to reach the gateways (from {dd.format_ts(now + settings.lead_time)})")
        if (problem := too_far_ahead(event, now)) is not None:
            return Answer(False, f"too far ahead: {problem}")
        targeted = [sites[d] for d in (event.sites or sorted(sites))]
        if not targeted:  # "all" of a fleet none has joined yet: nothing to forecast or plan
            return Answer(False, "the fleet has no sites yet: none is declared or has synced readings")
        if (problem := foreign_currency(event, targeted)) is not None:
            return Answer(False, f"malformed event: {problem}")
        steps = pd.date_range(event.start.floor(settings.step), event.end.ceil(settings.step), freq=settings.step,
                              inclusive="left")
        # Under way, the steps before the first a new schedule reaches are the earlier schedule's.
        first = int((steps < (now + settings.lead_time).ceil(settings.step)).sum()) if under_way else 0
        state = fleet_state(self.store, targeted, steps, settings.step, now, settings.forecast_days, settings.online_intervals)
        if first == len(steps):  # cut to end before a new schedule reaches the sites: nothing to plan again
            held = continued(r.windows(self.store, event.source, event.event_id), {}, event.end, event.end)
            rows = _held_rows(event, state, steps, settings.step, first,
                              r.results(self.store, event.source, event.event_id), None, self._weights(state), now)
            return self._stand(event, held, f"under way: the earlier schedule held to the new end "
                                            f"{dd.format_ts(event.end)}", _fleet_planned(rows), rows, now)
        promised = commitments(self.store, state.devices, event, now)
        state = state.less(promised)
        if not state.online.any():
            scope = "the targeted sites are" if event.sites else "the fleet is"
            return Answer(False, f"{scope} offline: none of {len(targeted)} site(s) has a reading in its last "
                                 f"{settings.online_intervals} intervals")
        if (problem := too_short(event, state)) is not None:
            return Answer(False, f"too short: {problem}")
        hours = window_hours(event, steps[first:])
        weights = self._weights(state)
        capability = weights @ state.from_step(first).capability_kw(hours, self._shares(event, steps[first:]))
        requested = self._requested(event, capability)
        if requested is not None and requested > 0 and capability < requested * settings.margin:
            held = (f" besides what {promised.events} other event(s) it took hold" if promised.events else "")
            return Answer(False, f"too large: {requested:.1f} kW asked, the fleet can hold {capability:.1f} kW "
                                 f"for {hours:g} h{held}; it opts in from {settings.margin:g} x the request")
        return self._opt_in(event, state, steps, weights, requested, now, first)

    def _shares(self, event: DREvent, steps: pd.DatetimeIndex) -> np.ndarray:
        """Each of ``steps``' share inside the part of ``event``'s window they answer."""
        return b.step_shares(steps, self.settings.step, max(event.start, steps[0]), event.end)

    def _weights(self, state: FleetState) -> np.ndarray:
        return np.array([self.participation.get(d, 1.0) for d in state.devices])

    def _requested(self, event: DREvent, capability: float) -> float | None:
        """The reduction to plan (kW); None for a price signal, planned by its price."""
        if event.signal is Signal.REDUCTION:
            return event.value
        if event.signal is Signal.LEVEL:
            return self.settings.level_fractions[int(event.value)] * capability
        return None

    def _opt_in(self, event: DREvent, whole: FleetState, all_steps: pd.DatetimeIndex, weights: np.ndarray,
                requested: float | None, now: pd.Timestamp, first: int = 0) -> Answer:
        """Plan the window's steps from ``first`` (0, or under way the first step a new schedule
        reaches), and stand by it; ``whole`` is the state over all the window's steps, ``all_steps``."""
        settings = self.settings
        state, steps = whole.from_step(first), all_steps[first:]
        followers = state.followable & (state.capability_kw(window_hours(event, steps), self._shares(event, steps)) > 0)
        left_out = len(state.devices) - int(followers.sum())
        if event.signal is Signal.LEVEL and settings.level_fractions[int(event.value)] == 0.0:
            return self._stand(event, {}, "nothing to reduce at this level", 0.0, [], now)
        if requested == 0.0 or not followers.any():
            return Answer(False, f"nothing to deliver: none of {len(state.devices)} targeted site(s) can reduce now "
                                 "(offline, no history, empty battery or in another event)")
        plan = solve(state.subset(followers), steps, settings.step, (event.start, event.end), requested_kw=requested,
                     price_adder_per_kwh=event.value if event.signal is Signal.PRICE else 0.0,
                     weights=weights[followers], wear_per_kwh=settings.wear_per_kwh)
        planned = plan.fleet_reduction_kw
        if requested is not None and planned < requested * (1 - settings.slack_tolerance):
            return Answer(False, f"too large: the plan holds {planned:.1f} of {requested:.1f} kW over the window")
        reason = f"planned {planned:.1f} kW on {len(plan.devices)} site(s)"
        if left_out:
            reason += f"; {left_out} left out (offline, no history, empty battery or in another event)"
        if not first:
            return self._stand(event, schedules(plan, event.start, event.end), reason, planned,
                               _planned_rows(event, plan, now), now)
        windows = continued(r.windows(self.store, event.source, event.event_id), schedules(plan, event.start, event.end),
                            steps[0], event.end)
        rows = _held_rows(event, whole, all_steps, settings.step, first,
                          r.results(self.store, event.source, event.event_id), plan, weights, now)
        return self._stand(event, windows, f"under way: the earlier schedule held until {dd.format_ts(steps[0])}, "
                                           f"then {reason}", _fleet_planned(rows), rows, now)

    def _stand(self, event: DREvent, windows: Mapping[str, SetpointSchedule], reason: str, planned: float,
               rows: list[dict], now: pd.Timestamp) -> Answer:
        """Store the event opted in with its window per site (a modification's replace the earlier
        ones, on every site they were on), then send its sites their schedules: stored first, so
        the schedules sent, here or by another decider, carry it. When no site could be sent its
        schedule (the broker is down) the answer is out: no battery knows of the event."""
        earlier = r.windows(self.store, event.source, event.event_id)
        r.save_windows(self.store, event.source, event.event_id, {d: windows.get(d) for d in {*earlier, *windows}}, now)
        r.save_event(self.store, event, r.OPTED_IN, reason, planned)
        r.replace_planned(self.store, event.source, event.event_id, rows)
        sites = {*earlier, *windows}
        failed = self._send(sites, now)
        if failed and len(failed) == len(sites):  # no site will answer: opting in would promise what none does
            return Answer(False, f"no schedule delivered: none of {len(sites)} site(s) could be sent its schedule "
                                 f"({failed[0]})")
        if failed:
            reason += f"; {len(failed)} schedule(s) not delivered ({failed[0]})"
            r.save_event(self.store, event, r.OPTED_IN, reason, planned)
        return Answer(True, reason, planned)

    def _send(self, devices, now: pd.Timestamp) -> list[str]:
        """Send each site the schedule of the stored windows of its standing events, or clear it
        when none is left; read at sending, so what another decider stored is sent too.

        Then read again, and send again each site whose schedule changed meanwhile, until a
        read finds what was last sent. Two deciders on one store (a VEN and the dashboard)
        each store an event's windows before reading: whichever of them sends a site last has
        read, after its send, everything the other stored before its own read, so the site
        ends up holding every window without a lock between processes."""
        failed: dict[str, str] = {}
        sent: dict[str, str | None] = {}
        for _ in range(MAX_SENDS):
            standing = r.standing_windows(self.store, now)
            due = {device: site_schedule(standing.get(device, []), now) for device in sorted(devices)}
            due = {device: schedule for device, schedule in due.items()
                   if device not in sent or sent[device] != _shown(schedule)}
            if not due:
                break
            for device, schedule in due.items():
                sent[device] = _shown(schedule)
                failed.pop(device, None)
                try:
                    if schedule is None:
                        self.publisher.clear(device)
                    else:
                        self.publisher.publish(device, schedule)
                except DERError as error:
                    failed[device] = f"{device}: {error}"
        return list(failed.values())

    def _withdraw(self, source: str, event_id: str) -> None:
        """Resend the sites of an event no longer standing in the store: its stored windows
        name them, and its plan rows name them for an event decided before windows were stored."""
        rows = r.results(self.store, source, event_id)
        devices = set(rows[(rows[s.BASELINE] == b.FORECAST) & (rows[dd.DEVICE_ID] != r.FLEET)][dd.DEVICE_ID])
        devices |= set(r.windows(self.store, source, event_id))
        for failure in self._send(devices, self.clock()):
            log.warning("DR %s/%s: schedule not withdrawn: %s", source, event_id, failure)

    def _abandon(self, event: DREvent) -> None:
        """After a decision failed, take what it (or the modification before it) may already
        have sent off the sites: the event is opted out, so no site may go on holding its
        window. A failure here is logged; the decision's own error is the one raised."""
        try:
            self._withdraw(event.source, event.event_id)
        except Exception as error:
            log.warning("DR %s/%s: schedules of the failed decision not withdrawn: %s", event.source, event.event_id,
                        " ".join(str(error).split()))

    def _excluded_windows(self, event: DREvent) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """Windows of the fleet's other events that ran (opted in): days they touch are not eligible baseline days."""
        events = r.all_events(self.store)
        ran = events[events[s.STATUS].isin([r.OPTED_IN, r.COMPLETED])
                     & ~((events[s.SOURCE] == event.source) & (events[s.EVENT_ID] == event.event_id))]
        return [(dd.parse_ts(a), dd.parse_ts(z)) for a, z in zip(ran[s.START_TS], ran[s.END_TS])]


def window_hours(event: DREvent, steps: pd.DatetimeIndex) -> float:
    """The hours of ``event``'s window that the plan ``steps`` answer: from its start (or the
    first step, later under way) to its end. Not the steps' own hours: a window off the plan
    step is padded by them, but the source asks for and measures the window alone, and a
    site's schedule holds it alone (:func:`cloud.dr.plan.schedules`)."""
    return (event.end - max(event.start, steps[0])) / pd.Timedelta(hours=1)


def _ran(stored: dict | None, now: pd.Timestamp) -> str | None:
    """Why a modification of a stored event the fleet took is not decided, or None: its window
    has ended, so what ran cannot change, and storing the modification in its place (declined)
    would lose the window the fleet delivered and its measurement."""
    if stored is None or stored[s.STATUS] not in (r.OPTED_IN, r.COMPLETED):
        return None
    end = dd.parse_ts(stored[s.END_TS])
    if now < end:
        return None
    return (f"window ended at {dd.format_ts(end)}, before now ({dd.format_ts(now)}): the window the fleet took "
            "stands as it ran")


def under_way_at(earlier: dict | None, event: DREvent, reach: pd.Timestamp) -> bool:
    """Whether ``event`` modifies one the fleet stands by whose window opened, or opens, before
    ``reach`` (the first instant a new schedule reaches the sites): its sites already hold the
    earlier window, so the rest of the window is planned again rather than dropped, which
    would stop the batteries in a reduction the event's source still counts on."""
    return (earlier is not None and earlier[s.STATUS] == r.OPTED_IN and event.start < reach
            and dd.parse_ts(earlier[s.START_TS]) < reach)


def _shown(schedule: SetpointSchedule | None) -> str | None:
    """What a site is sent, to tell whether it changed: the schedule's JSON, None for a clear."""
    return None if schedule is None else schedule.to_json()


def _answer(stored: dict) -> Answer:
    planned = stored[s.PLANNED_KW]
    return Answer(stored[s.STATUS] in (r.OPTED_IN, r.COMPLETED), stored[s.REASON] or "",
                  0.0 if planned is None or pd.isna(planned) else float(planned))


def _held_rows(event: DREvent, whole: FleetState, steps: pd.DatetimeIndex, step: pd.Timedelta, first: int,
               earlier: pd.DataFrame, plan, weights: np.ndarray, now: pd.Timestamp) -> list[dict]:
    """The planned rows of an event re-planned under way, over its whole window (delivery is
    measured over it): per site the forecast baseline over the window (``steps`` cover it,
    :func:`cloud.dr.baseline.window_mean`), and the planned reduction over it, the earlier
    plan's (its mean per site) on the ``first`` steps its schedule held and the re-plan's on
    the rest; the fleet's sums them, participation-weighted."""
    sites = earlier[(earlier[s.BASELINE] == b.FORECAST) & (earlier[dd.DEVICE_ID] != r.FLEET)]
    held = dict(zip(sites[dd.DEVICE_ID], pd.to_numeric(sites[s.PLANNED_KW]).fillna(0.0)))
    rest = {} if plan is None else dict(zip(plan.devices, plan.site_reduction_kw))
    row = {s.SOURCE: event.source, s.EVENT_ID: event.event_id, s.BASELINE: b.FORECAST, s.COMPUTED_AT: now}
    rows, fleet_base, fleet_cut = [], 0.0, 0.0
    for i, device in enumerate(whole.devices):
        if device not in held and device not in rest:
            continue
        base = float(b.window_mean(whole.baseline_kw[i], steps, step, event.start, event.end))
        cuts = np.where(np.arange(len(steps)) < first, held.get(device, 0.0), rest.get(device, 0.0))
        cut = float(b.window_mean(cuts, steps, step, event.start, event.end))
        rows.append(row | {dd.DEVICE_ID: device, s.BASELINE_KW: base, s.PLANNED_KW: cut})
        fleet_base, fleet_cut = fleet_base + base, fleet_cut + weights[i] * cut
    return rows + [row | {dd.DEVICE_ID: r.FLEET, s.BASELINE_KW: fleet_base, s.PLANNED_KW: float(fleet_cut)}]


def _fleet_planned(rows: list[dict]) -> float:
    return next(row[s.PLANNED_KW] for row in rows if row[dd.DEVICE_ID] == r.FLEET)


def _planned_rows(event: DREvent, plan, now: pd.Timestamp) -> list[dict]:
    """The forecast baseline and planned reduction per site and for the fleet over the window
    (:func:`cloud.dr.baseline.window_mean`, as the plan's reduction), fixed at decision time."""
    site_baseline = b.window_mean(plan.baseline_kw, plan.steps, plan.step, *plan.window)
    row = {s.SOURCE: event.source, s.EVENT_ID: event.event_id, s.BASELINE: b.FORECAST, s.COMPUTED_AT: now}
    rows = [row | {dd.DEVICE_ID: d, s.BASELINE_KW: float(base), s.PLANNED_KW: float(cut)}
            for d, base, cut in zip(plan.devices, site_baseline, plan.site_reduction_kw)]
    return rows + [row | {dd.DEVICE_ID: r.FLEET, s.BASELINE_KW: float(site_baseline.sum()),
                          s.PLANNED_KW: plan.fleet_reduction_kw}]
