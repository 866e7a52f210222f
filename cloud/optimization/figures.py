"""A plan's figures for machines, as ``run_optimizer.py --json`` prints them beside the plan's
steps: typed here, encoded only by ``to_dict``, whose keys and their order are the output's
contract. The owner's summary of the same plan, with its blocks and reasons, is
:class:`cloud.optimization.summary.PlanSummary`.

Money is in the site's currency; a valued cost is the bill less what the energy left in the
battery is worth (plan.DispatchPlan.valued_cost).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from cloud.optimization.guard import GuardRule
from cloud.optimization.plan import CostBreakdown
from der_core import der_data as dd


@dataclass(frozen=True)
class ScenarioFigures:
    """A scenario plan's expected valued costs over all its load scenarios: its own, with no
    battery, and under the battery's own rule."""

    scenarios: int
    cost: float
    cost_without_battery: float
    cost_self_consumption: float

    @property
    def savings_vs_no_battery(self) -> float:
        return self.cost_without_battery - self.cost

    @property
    def savings_vs_self_consumption(self) -> float:
        return self.cost_self_consumption - self.cost

    def to_dict(self) -> dict:
        return {"scenarios": self.scenarios, "cost": self.cost, "cost_without_battery": self.cost_without_battery,
                "cost_self_consumption": self.cost_self_consumption, "savings_vs_no_battery": self.savings_vs_no_battery,
                "savings_vs_self_consumption": self.savings_vs_self_consumption}


@dataclass(frozen=True)
class ArrivalFigures:
    """Under a reserve policy, the expected valued costs over car arrivals of the policy and of
    the battery's own rule."""

    cost: float
    cost_self_consumption: float

    @property
    def savings_vs_self_consumption(self) -> float:
        return self.cost_self_consumption - self.cost

    def to_dict(self) -> dict:
        return {"cost": self.cost, "cost_self_consumption": self.cost_self_consumption,
                "savings_vs_self_consumption": self.savings_vs_self_consumption}


@dataclass(frozen=True)
class ReserveFigures:
    """The reserve policy sent: the import cap, its session states, and the energy it keeps
    above the battery's minimum with no car charging, now and over the plan's steps (None
    when the policy covers none of them)."""

    cap_kw: float
    states: int
    one_session_a_day: bool
    floor_above_min_kwh_now: float | None
    floor_above_min_kwh_lowest: float | None
    floor_above_min_kwh_highest: float | None
    guard: GuardRule | None = None  # the peak guard whose cap the policy defends

    def to_dict(self) -> dict:
        return {"cap_kw": self.cap_kw, "states": self.states, "one_session_a_day": self.one_session_a_day,
                "floor_above_min_kwh_now": self.floor_above_min_kwh_now,
                "floor_above_min_kwh_lowest": self.floor_above_min_kwh_lowest,
                "floor_above_min_kwh_highest": self.floor_above_min_kwh_highest,
                "guard_fit": self.guard.payload() if self.guard is not None else None}


@dataclass(frozen=True)
class PlanFigures:
    """What a plan costs and saves against the references, what is sent, and how it was made."""

    device_id: str
    issued_at: pd.Timestamp
    start: pd.Timestamp
    steps: int
    forecaster: str
    state_from: str  # "readings" or "simulator"
    status: str
    cost: CostBreakdown
    total_cost: float
    cost_without_battery: float
    cost_self_consumption: float
    savings_vs_no_battery: float
    savings_vs_self_consumption: float
    stored_energy_value: float
    stored_energy_value_self_consumption: float
    published: str  # planner.PUBLISHED_PLAN or PUBLISHED_RULE
    published_reason: str | None
    final_soc_percent: float
    self_consumption_final_soc_percent: float
    execution: str
    load_scenarios: int
    expected_over_scenarios: ScenarioFigures | None
    expected_over_arrivals: ArrivalFigures | None
    reserve: ReserveFigures | None
    forecaster_reason: str = ""  # why the forecaster is the one (forecasters.choose)
    #: Per outside input planned on stored data because its service was down: "stale since … (why)".
    stale: Mapping[str, str] = field(default_factory=dict)
    initial_soc_percent: float = 0.0  # the SOC the plan starts from
    initial_soc_read_at: pd.Timestamp | None = None  # the reading it is; None: the configured start

    def to_dict(self) -> dict:
        optional = lambda figures: None if figures is None else figures.to_dict()  # noqa: E731
        return {
            "device_id": self.device_id,
            "issued_at": dd.format_ts(self.issued_at),
            "start": dd.format_ts(self.start),
            "steps": self.steps,
            "forecaster": self.forecaster,
            "forecaster_reason": self.forecaster_reason,
            "state_from": self.state_from,
            "status": self.status,
            "cost": dataclasses.asdict(self.cost) | {"total": self.total_cost},
            "cost_without_battery": self.cost_without_battery,
            "cost_self_consumption": self.cost_self_consumption,
            "savings_vs_no_battery": self.savings_vs_no_battery,
            "savings_vs_self_consumption": self.savings_vs_self_consumption,
            "stored_energy_value": self.stored_energy_value,
            "stored_energy_value_self_consumption": self.stored_energy_value_self_consumption,
            "published": self.published,
            "published_reason": self.published_reason,
            "final_soc_percent": self.final_soc_percent,
            "self_consumption_final_soc_percent": self.self_consumption_final_soc_percent,
            "execution": self.execution,
            "load_scenarios": self.load_scenarios,
            "expected_over_scenarios": optional(self.expected_over_scenarios),
            "expected_over_arrivals": optional(self.expected_over_arrivals),
            "reserve": optional(self.reserve),
            "stale": dict(self.stale),
            "initial_soc_percent": self.initial_soc_percent,
            "initial_soc_read_at": None if self.initial_soc_read_at is None else dd.format_ts(self.initial_soc_read_at),
        }
