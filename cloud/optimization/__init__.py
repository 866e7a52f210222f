"""Battery dispatch: when to buy, sell or store energy."""

from cloud.optimization.lp import build_lp, solve_dispatch, solve_many
from cloud.optimization.model import (
    BatterySpec,
    DispatchError,
    HorizonInputs,
    InfeasiblePlan,
    InvalidDispatchInputs,
    SolverFailed,
    check_feasible,
)
from cloud.optimization.plan import ACTIONS, CostBreakdown, DispatchPlan, build_plan
from cloud.optimization.reference import cost_without_battery, self_consumption_dispatch, self_consumption_power_kw

__all__ = [
    "ACTIONS",
    "BatterySpec",
    "CostBreakdown",
    "DispatchError",
    "DispatchPlan",
    "HorizonInputs",
    "InfeasiblePlan",
    "InvalidDispatchInputs",
    "SolverFailed",
    "build_lp",
    "build_plan",
    "check_feasible",
    "cost_without_battery",
    "self_consumption_dispatch",
    "self_consumption_power_kw",
    "solve_dispatch",
    "solve_many",
]
