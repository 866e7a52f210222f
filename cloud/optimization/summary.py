"""The one summary of a plan a home owner reads: what to do when, why, and what it is worth.

Computed once per plan, by :func:`summarize`, and stored beside it (``plan_summaries``); the
command line, the pipeline's printout, the API and the dashboard all show that one object, so
a figure is the same wherever it appears.

Action blocks are the plan's contiguous runs of one action (``plan.ACTIONS`` but idle). A run
shorter than :data:`MIN_BLOCK` between two runs of the same action is folded into them: an
owner cannot act on a quarter-hour of "discharge" inside an afternoon of "store", and the
merged block keeps the exact net energy of every step it covers. Every block carries its
reason, built from the plan's own numbers (prices, PV surplus, the peak defended, the block the
energy is kept for).

Times are site-local and the zone is named; money is in the site's currency
(:mod:`der_core.money`). A plan made while an outside service was down says which input is
stale and since when (``prices stale since 2026-12-05T10:00Z (…)``), wherever it is shown.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cloud.optimization import reserve
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.money import money, price

if TYPE_CHECKING:
    from cloud.optimization.planner import SitePlan

#: Runs shorter than this between two runs of the same action are folded into them.
MIN_BLOCK = pd.Timedelta(minutes=45)
CHARGING, DISCHARGING = ("buy", "store"), ("sell", "discharge")
EVENING_FROM_HOUR = 17  # a charge kept for a discharge starting at or after this local hour is "for the evening"
PEAK_NEAR_KW = 0.05  # a block whose imports come this close to the plan's peak is defending it
VERBS = {"buy": "charge from the grid", "store": "store solar surplus", "sell": "sell to the grid",
         "discharge": "run the home from the battery"}


@dataclass(frozen=True)
class StepInputs:
    """What a summary is computed from, per step (length ``T``): the plan's battery and grid
    flows and the prices it was costed on. Positive ``battery_kw`` charges, positive
    ``grid_kw`` imports."""

    step_starts: pd.DatetimeIndex  # UTC
    step_hours: float
    actions: tuple[str, ...]
    battery_kw: np.ndarray
    grid_kw: np.ndarray
    import_price_per_kwh: np.ndarray
    export_price_per_kwh: np.ndarray
    demand_charge_per_kw: float = 0.0
    peak_import_kw: float = 0.0


@dataclass(frozen=True)
class ActionBlock:
    action: str
    start: pd.Timestamp  # UTC
    end: pd.Timestamp
    window: str  # site-local, "Sat 17:15–20:45"
    energy_kwh: float  # net energy into (charging) or out of (discharging) the battery
    power_kw: float  # mean over the block
    price_per_kwh: float  # the price the block's energy moves at (import for buy/discharge, export else)
    money: float  # that energy at that price: paid (buy), earned (sell), import avoided, export forgone
    reason: str

    @property
    def charging(self) -> bool:
        return self.action in CHARGING

    @property
    def moves_energy(self) -> bool:
        """Whether the block moves energy the owner is shown: one of "0.0 kWh" (a quarter hour
        at 0.1 kW between an afternoon's storing and the evening) is no action anyone can take,
        and a charge must not be said to be kept for it; it is left out of the summary."""
        return f"{abs(self.energy_kwh):.1f}" != "0.0"

    @property
    def heading(self) -> str:
        """What, when and how much, as a display puts it before the reason. Sent with the block
        so a browser shows the figure the command line shows: JavaScript's ``toFixed`` rounds
        a tie such as 0.25 kWh (one kW for a quarter hour) up, Python's format to even."""
        return f"{self.window} {self.action} {self.energy_kwh:.1f} kWh"

    def line(self) -> str:
        return f"{self.window}  {self.action} {self.energy_kwh:.1f} kWh at {self.power_kw:.1f} kW: {self.reason}"

    def to_dict(self, currency: str) -> dict[str, Any]:
        return {"action": self.action, "start": dd.format_ts(self.start), "end": dd.format_ts(self.end),
                "window": self.window, "heading": self.heading, "energy_kwh": self.energy_kwh, "power_kw": self.power_kw,
                "price_per_kwh": self.price_per_kwh, "money": self.money,
                "money_text": money(self.money, currency), "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionBlock:
        return cls(data["action"], dd.parse_ts(data["start"]), dd.parse_ts(data["end"]), data["window"],
                   float(data["energy_kwh"]), float(data["power_kw"]), float(data["price_per_kwh"]),
                   float(data["money"]), data["reason"])


@dataclass(frozen=True)
class PlanSummary:
    device_id: str
    timezone: str
    currency: str
    issued_at: pd.Timestamp
    start: pd.Timestamp
    end: pd.Timestamp
    blocks: tuple[ActionBlock, ...]
    bill: float
    bill_without_battery: float
    bill_self_consumption: float | None  # the battery's own rule; None when unknown
    next_action: str
    # The stored energy a plan gains (+) or spends (-) over the horizon, valued as
    # plan.stored_energy_value_per_kwh prices it: savings count it, so emptying the battery
    # is never shown as money saved.
    energy_value: float = 0.0
    energy_value_self_consumption: float = 0.0
    # Under a reserve policy: the expected valued cost over car arrivals of the policy and of the
    # battery's own rule (planner.SitePlan.over_arrivals). The bills above are the one forecast
    # with no car, where what the policy keeps for the car looks wasted; these weigh it.
    arrivals_cost: float | None = None
    arrivals_cost_self_consumption: float | None = None
    # What the policy keeps for the car: "hold 4.0 kWh for the car expected after 18:00".
    hold: str | None = None
    # Per outside input whose service was down (planner.SitePlan.stale): "stale since … (why)".
    stale: Mapping[str, str] = field(default_factory=dict)
    # What the reserve policy hedges (reserve.hedged): car arrivals, or the household's bursts.
    hedged: str = reserve.CAR_ARRIVALS
    # The battery's own rule is what is sent, the plan made costing more (planner.SitePlan.published):
    # the blocks and the bill are the rule's, and comparing it with itself would say nothing.
    rule_sent: bool = False

    @property
    def savings(self) -> float:
        """Against no battery: the figure shown as "saves"."""
        return self.bill_without_battery - (self.bill - self.energy_value)

    @property
    def savings_vs_self_consumption(self) -> float | None:
        if self.bill_self_consumption is None:
            return None
        return (self.bill_self_consumption - self.energy_value_self_consumption) - (self.bill - self.energy_value)

    @property
    def zone(self) -> str:
        """``America/Los_Angeles (PDT)``: the zone every time is in; ``(MDT, then MST)`` for a
        plan across a clock change, whose local hours would otherwise read as one offset's."""
        first, last = (f"{t.tz_convert(self.timezone):%Z}" for t in (self.start, self.end - pd.Timedelta(seconds=1)))
        return f"{self.timezone} ({first})" if first == last else f"{self.timezone} ({first}, then {last})"

    def money(self, amount: float) -> str:
        return money(amount, self.currency)

    def savings_line(self) -> str:
        if self.next_action == NO_BATTERY:  # one bill: no battery, no rule, nothing saved
            bill = self.bill_without_battery
            owed = f"bill {self.money(bill)}" if bill >= 0 else f"a credit of {self.money(-bill)}"
            return f"{owed} (no battery: nothing to save)"
        if self.rule_sent:
            return (f"saves {self.money(self.savings)}: bill {self.money(self.bill)} with the battery's own rule, which is "
                    f"sent{self._stored(self.energy_value)}, {self.money(self.bill_without_battery)} with no battery")
        rule, better = self.bill_self_consumption, self.savings_vs_self_consumption
        against_rule = ""
        if rule is not None:
            if better >= 0:
                compared = f"saves {self.money(better)} more"
            else:  # a reserve policy is sent for what it saves over what it hedges (the next line)
                compared = f"costs {self.money(-better)} more on this forecast" + (
                    f"; it is sent for what it saves over {self.hedged}, below" if self.arrivals_cost is not None else "")
            against_rule = (f"; the battery's own rule {self.money(rule)}{self._stored(self.energy_value_self_consumption)} "
                            f"(the plan {compared})")
        return (f"saves {self.money(self.savings)}: bill {self.money(self.bill)} with the plan{self._stored(self.energy_value)}, "
                f"{self.money(self.bill_without_battery)} with no battery{against_rule}")

    def _stored(self, value: float) -> str:
        """How a bill counts the energy its battery ends with: said for the plan and for the
        rule alike, since each comparison is of bills less that value."""
        if abs(value) < 0.005:
            return ""
        return f", counting the energy it {'adds to' if value > 0 else 'takes from'} the battery as {self.money(abs(value))}"

    def arrivals_line(self) -> str | None:
        """The reserve policy's and the rule's expected costs over what it hedges (car arrivals,
        or the household's bursts); None without."""
        if self.arrivals_cost is None or self.arrivals_cost_self_consumption is None:
            return None
        better = self.arrivals_cost_self_consumption - self.arrivals_cost
        return (f"over {self.hedged} (the policy's program): expected cost {self.money(self.arrivals_cost)} with the "
                f"reserve policy, {self.money(self.arrivals_cost_self_consumption)} with the battery's own rule "
                f"(policy {'saves' if better >= 0 else 'costs'} {self.money(abs(better))} {'more' if better >= 0 else 'extra'})")

    def stale_lines(self) -> list[str]:
        """``prices stale since … (why)``: one line per input planned on stored data."""
        return [f"{kind} {text}" for kind, text in sorted(self.stale.items())]

    def lines(self) -> list[str]:
        """The summary for a terminal: who, when and in what, the next action, every block, the money."""
        out = [f"{self.device_id}: times in {self.zone}, money in {self.currency}", *self.stale_lines(),
               f"next: {self.next_action}"]
        out += [f"  {block.line()}" for block in self.blocks] or ([] if self.next_action == NO_BATTERY
                                                                  else ["  keep the battery idle"])
        out += [f"  {self.hold}"] if self.hold else []
        out.append(self.savings_line())
        out += [line for line in (self.arrivals_line(),) if line]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, numbers unrounded: the stored summary must give back the very texts shown
        from the fresh one (a bill of 2.66499 rounded to 2.6650 would then read 2.67)."""
        return {
            "device_id": self.device_id, "timezone": self.timezone, "zone": self.zone, "currency": self.currency,
            "issued_at": dd.format_ts(self.issued_at), "start": dd.format_ts(self.start), "end": dd.format_ts(self.end),
            "next_action": self.next_action, "blocks": [b.to_dict(self.currency) for b in self.blocks],
            "bill": self.bill, "bill_without_battery": self.bill_without_battery,
            "bill_self_consumption": self.bill_self_consumption, "savings": self.savings,
            "energy_value": self.energy_value, "energy_value_self_consumption": self.energy_value_self_consumption,
            "savings_vs_self_consumption": self.savings_vs_self_consumption,
            "savings_text": self.money(self.savings), "bill_text": self.money(self.bill),
            "bill_without_battery_text": self.money(self.bill_without_battery), "savings_line": self.savings_line(),
            "arrivals_cost": self.arrivals_cost, "arrivals_cost_self_consumption": self.arrivals_cost_self_consumption,
            "arrivals_line": self.arrivals_line(), "hold": self.hold, "stale": dict(self.stale),
            "stale_lines": self.stale_lines(), "hedged": self.hedged, "rule_sent": self.rule_sent,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanSummary:
        rule = data.get("bill_self_consumption")
        return cls(data["device_id"], data["timezone"], data["currency"], dd.parse_ts(data["issued_at"]),
                   dd.parse_ts(data["start"]), dd.parse_ts(data["end"]),
                   tuple(ActionBlock.from_dict(b) for b in data["blocks"]), float(data["bill"]),
                   float(data["bill_without_battery"]), None if rule is None else float(rule), data["next_action"],
                   float(data.get("energy_value", 0.0)), float(data.get("energy_value_self_consumption", 0.0)),
                   _maybe_float(data.get("arrivals_cost")), _maybe_float(data.get("arrivals_cost_self_consumption")),
                   data.get("hold"), dict(data.get("stale") or {}), data.get("hedged", reserve.CAR_ARRIVALS),
                   bool(data.get("rule_sent", False)))


def _maybe_float(value: Any) -> float | None:
    return None if value is None else float(value)


def runs(actions: Sequence[str], step_starts: pd.DatetimeIndex, step: pd.Timedelta) -> list[list]:
    """``[action, first, stop)`` step-index runs, short runs folded as the module docstring says."""
    out: list[list] = []
    for i, action in enumerate(actions):
        if out and out[-1][0] == action:
            out[-1][2] = i + 1
        else:
            out.append([action, i, i + 1])
    folded = True
    while folded:
        folded = False
        for k in range(1, len(out) - 1):
            before, middle, after = out[k - 1], out[k], out[k + 1]
            if (middle[2] - middle[1]) * step < MIN_BLOCK and before[0] == after[0] != "idle":
                out[k - 1:k + 2] = [[before[0], before[1], after[2]]]
                folded = True
                break
    return out


def _window(start: pd.Timestamp, end: pd.Timestamp, timezone: str) -> str:
    first, last = start.tz_convert(timezone), end.tz_convert(timezone)
    same_day = (last - pd.Timedelta(microseconds=1)).date() == first.date()
    return f"{first:%a %H:%M}–{last:%H:%M}" if same_day else f"{first:%a %H:%M}–{last:%a %H:%M}"


def _block(action: str, first: int, stop: int, steps: StepInputs, timezone: str) -> ActionBlock:
    dt = steps.step_hours
    power = steps.battery_kw[first:stop]
    sign = 1.0 if action in CHARGING else -1.0
    energy = float(sign * power.sum() * dt)  # net: folded steps of the other direction count against it
    prices = (steps.import_price_per_kwh if action in ("buy", "discharge") else steps.export_price_per_kwh)[first:stop]
    moved = np.abs(power) * dt
    value = float((moved * prices).sum())
    unit_price = value / moved.sum() if moved.sum() > 0 else float(prices.mean())
    start = steps.step_starts[first]
    end = steps.step_starts[stop - 1] + pd.Timedelta(hours=dt)
    hours = (stop - first) * dt
    return ActionBlock(action, start, end, _window(start, end, timezone), energy, energy / hours, unit_price, value, "")


def _reason(block: ActionBlock, blocks: list[ActionBlock], steps: StepInputs, currency: str, timezone: str) -> str:
    """Why, in the plan's numbers: what a charge is kept for, what a discharge avoids."""
    def at(value: float) -> str:
        return price(value, currency)

    later = [b for b in blocks if b.start >= block.end]
    if block.charging:
        target = next((b for b in later if not b.charging), None)
        if block.action == "buy":
            if target is None:
                return (f"charge {block.energy_kwh:.1f} kWh at {at(block.price_per_kwh)} and keep it in the battery "
                        "for after this plan")
            return (f"charge {block.energy_kwh:.1f} kWh at {at(block.price_per_kwh)} to cover {target.window} "
                    f"at {at(target.price_per_kwh)}")
        worth = f"(it would export at {at(block.price_per_kwh)})"
        if target is None:
            return f"store {block.energy_kwh:.1f} kWh of solar surplus {worth} for after this plan"
        when = ("the evening" if target.start.tz_convert(timezone).hour >= EVENING_FROM_HOUR
                else target.window)
        return (f"store {block.energy_kwh:.1f} kWh of solar surplus {worth} for {when}, "
                f"when imports cost {at(target.price_per_kwh)}" if target.action == "discharge" else
                f"store {block.energy_kwh:.1f} kWh of solar surplus {worth} to sell {target.window} "
                f"at {at(target.price_per_kwh)}")
    if block.action == "sell":
        why = f"sell {block.energy_kwh:.1f} kWh at {at(block.price_per_kwh)}"
    else:
        why = f"cover the home's load with {block.energy_kwh:.1f} kWh instead of importing at {at(block.price_per_kwh)}"
    inside = (steps.step_starts >= block.start) & (steps.step_starts < block.end)
    imports = np.clip(steps.grid_kw[inside], 0, None)
    if (steps.demand_charge_per_kw > 0 and steps.peak_import_kw > 0 and len(imports)
            and imports.max() >= steps.peak_import_kw - PEAK_NEAR_KW):
        why += (f", keeping imports at or below the {steps.peak_import_kw:.1f} kW peak the demand charge "
                f"({at(steps.demand_charge_per_kw).removesuffix('/kWh')}/kW) is billed on")
    return why


def next_action(blocks: Sequence[ActionBlock], now: pd.Timestamp, timezone: str) -> str:
    block = next((b for b in blocks if b.end > now), None)
    if block is None:
        return "keep the battery idle for the rest of the plan"
    until = f"{block.end.tz_convert(timezone):%a %H:%M}"
    if block.start <= now:
        return f"{VERBS[block.action]} now, until {until}"
    return f"keep the battery idle until {block.start.tz_convert(timezone):%a %H:%M}, then {VERBS[block.action]} until {until}"


def summarize(device_id: str, timezone: str, currency: str, issued_at: pd.Timestamp, steps: StepInputs,
              bill: float, bill_without_battery: float, bill_self_consumption: float | None,
              energy_value: float = 0.0, energy_value_self_consumption: float = 0.0) -> PlanSummary:
    """The plan's summary (the module docstring says what it holds)."""
    step = pd.Timedelta(hours=steps.step_hours)
    blocks = [_block(a, first, stop, steps, timezone) for a, first, stop in runs(steps.actions, steps.step_starts, step)
              if a != "idle"]
    blocks = [b for b in blocks if b.moves_energy]
    blocks = [b.__class__(**{**b.__dict__, "reason": _reason(b, blocks, steps, currency, timezone)}) for b in blocks]
    start, end = steps.step_starts[0], steps.step_starts[-1] + step
    # A plan of past days (--start inside a meter's history) is read from its start.
    now = max(issued_at, start) if issued_at < end else start
    return PlanSummary(device_id, timezone, currency, issued_at, start, end, tuple(blocks), float(bill),
                       float(bill_without_battery), None if bill_self_consumption is None else float(bill_self_consumption),
                       next_action(blocks, now, timezone), float(energy_value),
                       float(energy_value_self_consumption))


def hold_line(held_kwh: float, expected_at: pd.Timestamp, timezone: str, bursts: bool = False) -> str:
    """What a reserve policy keeps for the car, or for the household's next burst in a home
    without one (reserve.held_for_car), site-local."""
    when = f"{expected_at.tz_convert(timezone):%a %H:%M}"
    if bursts:
        return f"hold {held_kwh:.1f} kWh for the household's bursts, one likely by {when}"
    return f"hold {held_kwh:.1f} kWh for the car expected after {when}"


#: The next action of a site without a battery: its plan is the bill it pays without one.
NO_BATTERY = "no battery at this site: nothing to schedule; the bill below is the site's without one"


def plan_summary(site_plan: SitePlan) -> PlanSummary:
    """The summary of a fresh plan: its blocks and the three bills the planner costed, and
    under a reserve policy sent, what it holds for the car and both expected costs over car
    arrivals."""
    plan, inputs = site_plan.plan, site_plan.inputs
    steps = StepInputs(site_plan.step_starts, plan.step_hours, plan.actions, plan.battery_power_kw, plan.grid_kw,
                       inputs.import_price_per_kwh, inputs.export_price_per_kwh, inputs.demand_charge_per_kw,
                       plan.peak_import_kw)
    summary = summarize(site_plan.device_id, site_plan.timezone, site_plan.currency, site_plan.issued_at, steps,
                        plan.total_cost, site_plan.no_battery.total, site_plan.self_consumption.total_cost,
                        plan.stored_value, site_plan.self_consumption.stored_value)
    if site_plan.battery.capacity_kwh <= 0:
        summary = dataclasses.replace(summary, next_action=NO_BATTERY)
    elif site_plan.published == "rule":
        summary = dataclasses.replace(summary, rule_sent=True)
    if site_plan.stale:
        summary = dataclasses.replace(summary, stale=dict(site_plan.stale))
    arrivals = site_plan.expected_over_arrivals()
    if arrivals is None:
        return summary
    held = site_plan.held_for_car if site_plan.published == "plan" else None
    hedged = reserve.hedged(site_plan.policy)
    return dataclasses.replace(summary, arrivals_cost=arrivals.cost,
                               arrivals_cost_self_consumption=arrivals.cost_self_consumption, hedged=hedged,
                               hold=None if held is None else hold_line(*held, site_plan.timezone, hedged == reserve.BURSTS))


def write_summary(store: CloudStore, summary: PlanSummary) -> int:
    """Store the summary beside its plan (an upsert on device, first step and issue time)."""
    row = {dd.DEVICE_ID: summary.device_id, dd.TS: summary.start, s.ISSUED_AT: summary.issued_at,
           s.SUMMARY: json.dumps(summary.to_dict())}
    return store.upsert_frame(s.PLAN_SUMMARIES, pd.DataFrame([row]))


def read_summary(store: CloudStore, device_id: str, issued_at: pd.Timestamp, since: pd.Timestamp | None = None) -> PlanSummary | None:
    """The stored summary of the plan ``device_id`` issued at ``issued_at``; None if none was stored."""
    mine = store.read_frame(s.PLAN_SUMMARIES, {dd.DEVICE_ID: device_id, s.ISSUED_AT: pd.Timestamp(issued_at)}, start=since)
    if mine.empty:
        return None
    value = mine[s.SUMMARY].iloc[0]
    return PlanSummary.from_dict(json.loads(value) if isinstance(value, str) else value)
