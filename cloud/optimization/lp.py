"""The dispatch linear program, solved with HiGHS through ``highspy``.

Columns: one site's battery block (:mod:`battery_block`: charge, discharge, import, export
and SOC, each a block of ``T`` steps), then one peak-import column (kW). Rows: the block's
energy balance and SOC recursion, then a block of ``T`` peak rows ``import[t] - peak <= 0``.

Rate, grid, SOC-window and terminal limits are column bounds; the peak column's lower bound is
``peak_so_far_kw`` and an objective offset removes the part of the peak already paid for and
adds the standing charge. Outside a tariff's demand window a peak row is free (its upper bound
infinite), so only the window's imports set the peak.
The last SOC column is credited at :func:`plan.stored_energy_value_per_kwh` and the start's
energy is charged back in the offset, so the objective is the plan's ``valued_cost``: the
terminal limit keeps the end no lower than the start, and energy left above it is worth what
it can displace later.
Import and export are also capped at the most either can carry while the other is zero
(:func:`_grid_caps_kw`), which keeps the LP bounded when export pays more than import costs.

The sparsity pattern depends only on ``T``: it is built once per horizon length and every
site fills in its own values, which is what keeps :func:`solve_many` cheap.

Simultaneous flows. Charging and discharging in the same step burns ``1 - eta_c*eta_d`` of the
energy cycled, and importing while exporting nets to a smaller flow through the meter. When
energy has a non-negative value at every step (import cost and export price >= 0, export price
<= import cost) and wear is priced, shrinking both flows of such a pair keeps the SOC path and
lowers the cost, so the LP optimum has neither. Negative prices break that argument (burning
energy then earns money); so does a PV surplus above the export limit with the battery full
(PV curtailment is not modelled, so losses are the only sink); and ties leave it to the solver. So :func:`solve_dispatch` checks
the LP answer; if any step carries both flows of a pair it re-solves as a MIP with a binary
direction only for the steps and pairs where an optimum may need one (:func:`direction_steps`),
then polishes with an LP whose directions are fixed, so the returned plan has exact zeros.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import highspy
import numpy as np
import scipy.sparse as sp

from cloud.optimization import battery_block as block
from cloud.optimization.bill import standing_charge
from cloud.optimization.model import (
    BatterySpec,
    DispatchError,
    HorizonInputs,
    SolverFailed,
    check_feasible,
    power_for_stored_kw,
    stored_kw,
)
from cloud.optimization.plan import DispatchPlan, build_plan, stored_energy_value_per_kwh

log = logging.getLogger(__name__)

SIMULTANEOUS_TOLERANCE_KW = 1e-7
_INF = highspy.kHighsInf


@lru_cache(maxsize=16)
def _pattern(steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column starts, row indices and coefficient codes of the constraint matrix (CSC): the
    battery block of one site, then each step's peak row ``import[t] - peak <= 0``."""
    rows, columns, codes = block.entries(1, steps)
    t = np.arange(steps)
    peak_rows, peak_column = 2 * steps + t, len(block.KINDS) * steps
    rows = np.concatenate((rows, peak_rows, peak_rows))
    columns = np.concatenate((columns, block.column(0, block.IMPORT, t, steps), np.full(steps, peak_column)))
    codes = np.concatenate((codes, np.full(steps, block.ONE), np.full(steps, block.MINUS_ONE)))
    start, index, codes = block.compressed(rows, columns, codes, peak_column + 1)
    for array in (start, index, codes):
        array.flags.writeable = False
    return start, index, codes


def _matrix_values(codes: np.ndarray, battery: BatterySpec, step_hours: float) -> np.ndarray:
    return block.coefficients(battery.charge_efficiency, battery.discharge_efficiency, step_hours)[codes]


def _grid_caps_kw(inputs: HorizonInputs, battery: BatterySpec) -> tuple[np.ndarray, np.ndarray]:
    """The largest import and export of each step when the other flow is zero.

    Used as column bounds they cut no dispatch without simultaneous flows, keep the LP
    bounded when an export price exceeds the import cost, and serve as the MIP's big-M.
    """
    net = inputs.net_load_kw
    import_cap = np.minimum(inputs.import_limit_kw, np.maximum(0.0, net + battery.max_charge_kw))
    export_cap = np.minimum(inputs.export_limit_kw, np.maximum(0.0, battery.max_discharge_kw - net))
    return import_cap, export_cap


def _column_data(inputs: HorizonInputs, battery: BatterySpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Objective coefficients, lower and upper bounds of every column."""
    steps, dt = inputs.steps, inputs.step_hours
    wear = np.full(steps, battery.wear_cost_per_kwh * dt)
    stored = np.zeros(steps)
    stored[-1] = -stored_energy_value_per_kwh(inputs.import_cost_per_kwh, battery.discharge_efficiency, battery.max_discharge_kw)
    shape = (1, steps)
    flows = block.by_kind(wear, wear, inputs.import_cost_per_kwh * dt, -inputs.export_price_per_kwh * dt, stored, shape)
    cost = np.concatenate((flows, [inputs.demand_charge_per_kw]))
    soc_lower = np.full(steps, battery.min_kwh)
    soc_lower[-1] = max(battery.min_kwh, battery.terminal_kwh)
    lower = np.concatenate((block.by_kind(0.0, 0.0, 0.0, 0.0, soc_lower, shape), [inputs.peak_so_far_kw]))
    import_cap, export_cap = _grid_caps_kw(inputs, battery)
    limits = block.by_kind(battery.max_charge_kw, battery.max_discharge_kw, import_cap, export_cap, battery.max_kwh, shape)
    upper = np.concatenate((limits, [_INF]))
    return cost, lower, upper


def _row_bounds(inputs: HorizonInputs, battery: BatterySpec) -> tuple[np.ndarray, np.ndarray]:
    """The battery block's equalities, then the peak rows: ``<= 0`` in the demand window, free
    outside it (the matrix stays the same for every window, so its pattern is shared)."""
    steps = inputs.steps
    battery_rows = block.right_hand_side(inputs.net_load_kw, battery.initial_kwh)
    peak_upper = np.zeros(steps) if inputs.demand_window is None else np.where(inputs.demand_window, 0.0, _INF)
    return np.concatenate((battery_rows, np.full(steps, -_INF))), np.concatenate((battery_rows, peak_upper))


def fixed_charges(inputs: HorizonInputs) -> float:
    """The objective's constant from the tariff: the standing charge of the horizon's days,
    less the peak already paid for (the peak column's lower bound)."""
    return (standing_charge(inputs.standing_charge_per_day, inputs.steps, inputs.step_hours)
            - inputs.demand_charge_per_kw * inputs.peak_so_far_kw)


def stored_offset(inputs: HorizonInputs, battery: BatterySpec) -> float:
    """The start's stored energy at the value the last SOC column is credited at: with it in
    the objective's constant, the objective counts only the energy gained or spent."""
    value = stored_energy_value_per_kwh(inputs.import_cost_per_kwh, battery.discharge_efficiency, battery.max_discharge_kw)
    return value * battery.initial_kwh


def build_lp(inputs: HorizonInputs, battery: BatterySpec) -> highspy.HighsLp:
    """The dispatch LP of one site, ready for ``Highs.passModel``."""
    start, index, codes = _pattern(inputs.steps)
    cost, col_lower, col_upper = _column_data(inputs, battery)
    row_lower, row_upper = _row_bounds(inputs, battery)
    offset = stored_offset(inputs, battery) + fixed_charges(inputs)
    values = _matrix_values(codes, battery, inputs.step_hours)
    return highs_lp((start, index, values), cost, col_lower, col_upper, row_lower, row_upper, offset)


def highs_lp(matrix: tuple[np.ndarray, np.ndarray, np.ndarray] | sp.spmatrix, cost: np.ndarray, col_lower: np.ndarray,
             col_upper: np.ndarray, row_lower: np.ndarray, row_upper: np.ndarray, offset: float) -> highspy.HighsLp:
    """An LP ready for ``Highs.passModel``: the constraint matrix (CSC, or its column starts,
    row indices and values), objective, column and row bounds and the objective's constant."""
    if sp.issparse(matrix):
        matrix = matrix.tocsc()
        matrix = (matrix.indptr, matrix.indices, matrix.data)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = len(cost), len(row_lower)
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = cost, col_lower, col_upper
    lp.row_lower_, lp.row_upper_ = row_lower, row_upper
    lp.offset_ = offset
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = matrix
    return lp


def lp_arrays(inputs: HorizonInputs, battery: BatterySpec) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The LP of :func:`build_lp` as arrays: constraint matrix, objective, column and row
    bounds, so a larger model (scenarios, stochastic.py) is built from the same blocks."""
    start, index, codes = _pattern(inputs.steps)
    cost, col_lower, col_upper = _column_data(inputs, battery)
    row_lower, row_upper = _row_bounds(inputs, battery)
    values = _matrix_values(codes, battery, inputs.step_hours)
    matrix = sp.csc_matrix((values, index, start), shape=(len(row_lower), len(cost)))
    return matrix, cost, col_lower, col_upper, row_lower, row_upper


def quiet_highs() -> highspy.Highs:
    """A HiGHS instance with its logging off before it can write anything.

    ``highspy.Highs()`` enables its Python callbacks as it is built, and from highspy 1.16
    that writes HiGHS's banner to standard output before any option can be set, which
    corrupts the CLIs' ``--json`` output. The compiled base class has every method the
    project calls and no callbacks (none are used here); older highspy without it falls
    back to the public class, which was silent until its output flag was read."""
    highs = getattr(getattr(highspy, "_core", None), "_Highs", highspy.Highs)()
    highs.setOptionValue("output_flag", False)
    return highs


def new_solver() -> highspy.Highs:
    """A quiet HiGHS instance; :func:`solve_many` reuses one across sites."""
    highs = quiet_highs()
    # On a 96-step dispatch LP presolve costs more than it saves (about 3 ms against 2 ms).
    highs.setOptionValue("presolve", "off")
    return highs


def run_model(highs: highspy.Highs, model: highspy.HighsLp | highspy.HighsModel, what: str) -> tuple[np.ndarray, float]:
    """Solve ``model``; its column values and objective, or :class:`SolverFailed` naming ``what``."""
    highs.passModel(model)
    highs.run()
    status = highs.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise SolverFailed(f"HiGHS ended the {what} with status {highs.modelStatusToString(status)}")
    return np.array(highs.getSolution().col_value), float(highs.getInfo().objective_function_value)


def _has_simultaneous_flows(x: np.ndarray, steps: int) -> bool:
    charge, discharge, imports, exports = x[:steps], x[steps : 2 * steps], x[2 * steps : 3 * steps], x[3 * steps : 4 * steps]
    both = np.minimum(charge, discharge).max() > SIMULTANEOUS_TOLERANCE_KW
    return bool(both or np.minimum(imports, exports).max() > SIMULTANEOUS_TOLERANCE_KW)


def direction_steps(inputs: HorizonInputs, battery: BatterySpec) -> tuple[np.ndarray, np.ndarray]:
    """The steps where a direction must be chosen by binary: for the battery, and for the meter.

    Elsewhere an optimum never needs both flows of a pair, so a solution that has them is
    turned into one without at no extra cost (:func:`_directions`):

    * meter, where export pays no more than import costs: lower import and export by the same
      amount; the balance holds, the cost falls by the difference and the peak cannot rise.
    * battery, where import cost and export price are both >= 0 and the export limit is above
      anything the step could export (``max_discharge - net``): lower charge and discharge
      together keeping the SOC change; the losses no longer burnt become less import, or more
      export that the limit still allows, and neither costs more (nor does the wear).

    Negative prices and a binding export limit are what leave the other steps; on a day with a
    few of them the MIP branches on those alone, which is what keeps it fast.
    """
    cost, price = inputs.import_cost_per_kwh, inputs.export_price_per_kwh
    export_may_bind = inputs.export_limit_kw < battery.max_discharge_kw - inputs.net_load_kw
    return (cost < 0) | (price < 0) | export_may_bind, price > cost


def direction_mip(lp: highspy.HighsLp, inputs: HorizonInputs, battery: BatterySpec,
                  battery_steps: np.ndarray, meter_steps: np.ndarray) -> highspy.HighsLp:
    """The LP plus one binary per chosen step for the battery's and the meter's direction:
    ``charge <= max_charge * b``, ``discharge <= max_discharge * (1 - b)``, and the same for
    import and export with their caps (:func:`_grid_caps_kw`) as big-M."""
    steps = inputs.steps
    base = sp.csc_matrix((lp.a_matrix_.value_, lp.a_matrix_.index_, lp.a_matrix_.start_), shape=(lp.num_row_, lp.num_col_))
    import_m, export_m = _grid_caps_kw(inputs, battery)
    pairs = [
        (np.flatnonzero(battery_steps), 0, np.full(steps, battery.max_charge_kw), np.full(steps, battery.max_discharge_kw)),
        (np.flatnonzero(meter_steps), 2 * steps, import_m, export_m),
    ]
    chosen = [at for at, *_ in pairs]
    binaries = sum(len(at) for at in chosen)
    rows, columns, values, upper = [], [], [], []
    binary = lp.num_col_
    row = 0
    for at, first, on_m, off_m in pairs:
        for t in at:
            # on-flow - M_on * b <= 0 ; off-flow + M_off * b <= M_off
            rows += [row, row, row + 1, row + 1]
            columns += [first + t, binary, first + steps + t, binary]
            values += [1.0, -on_m[t], 1.0, off_m[t]]
            upper += [0.0, off_m[t]]
            row += 2
            binary += 1
    links = sp.csc_matrix((values, (rows, columns)), shape=(row, lp.num_col_ + binaries))
    matrix = sp.vstack((sp.hstack((base, sp.csc_matrix((lp.num_row_, binaries)))), links), format="csc")
    mip = highs_lp(
        matrix, np.concatenate((lp.col_cost_, np.zeros(binaries))),
        np.concatenate((lp.col_lower_, np.zeros(binaries))), np.concatenate((lp.col_upper_, np.ones(binaries))),
        np.concatenate((lp.row_lower_, np.full(row, -_INF))), np.concatenate((lp.row_upper_, upper)), lp.offset_,
    )
    mip.integrality_ = [highspy.HighsVarType.kContinuous] * lp.num_col_ + [highspy.HighsVarType.kInteger] * binaries
    return mip


def _directions(x: np.ndarray, inputs: HorizonInputs, battery: BatterySpec) -> tuple[np.ndarray, np.ndarray]:
    """Each step's battery and meter direction (True = charging, importing) from a solution
    that may still carry both flows of a pair where no binary decided: the sign of the SOC
    change, then of the meter's net flow once the battery's flows are netted that way. The
    reductions of :func:`direction_steps` reach exactly these directions."""
    steps = inputs.steps
    charge, discharge = x[:steps], x[steps : 2 * steps]
    stored = stored_kw(charge, discharge, battery.charge_efficiency, battery.discharge_efficiency)
    battery_kw = power_for_stored_kw(stored, battery.charge_efficiency, battery.discharge_efficiency)
    return stored >= 0, inputs.net_load_kw + battery_kw > 0


#: How long the direction MIP may search (its p99 on a day's plan is about 0.15 s).
MIP_TIME_LIMIT_S = 10.0


def mip_solver() -> highspy.Highs:
    """A quiet HiGHS instance set for the direction MIP."""
    highs = new_solver()
    highs.setOptionValue("presolve", "on")  # the MIP's branch and bound relies on it
    # The default relative gap (1e-4) would let the plan cost visibly more than the optimum.
    highs.setOptionValue("mip_rel_gap", 1e-9)
    # RENS and RINS solve sub-MIPs at the root: on these models they spent nine tenths of a
    # multi-second solve to find incumbents branch and bound finds in a few nodes anyway.
    # Heuristics only look for solutions; optimality is still proven, the objective unchanged.
    highs.setOptionValue("mip_heuristic_run_rens", False)
    highs.setOptionValue("mip_heuristic_run_rins", False)
    # Restarting the root after fixing a few binaries re-ran presolve and cuts several times
    # for little gain: off, the slowest solves took half as long, to the same optimum.
    highs.setOptionValue("mip_allow_restart", False)
    # A MIP whose relaxation is weak (export paying more than import at every step of a
    # month) can search for hours, and no interrupt reaches Python while HiGHS runs: the
    # search stops here, with its best answer so far (solve_directions).
    highs.setOptionValue("time_limit", MIP_TIME_LIMIT_S)
    return highs


def with_directions(lp: highspy.HighsLp, charging: np.ndarray, importing: np.ndarray) -> highspy.HighsLp:
    """``lp`` with the other flow of each pair held at zero."""
    steps = len(charging)
    upper = np.array(lp.col_upper_)
    upper[:steps][~charging] = 0.0
    upper[steps : 2 * steps][charging] = 0.0
    upper[2 * steps : 3 * steps][~importing] = 0.0
    upper[3 * steps : 4 * steps][importing] = 0.0
    lp.col_upper_ = upper
    return lp


def solve_directions(
    lp: highspy.HighsLp, inputs: HorizonInputs, battery: BatterySpec,
    *, highs: highspy.Highs | None = None, every_step: bool = False, relaxed: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Choose each step's directions by MIP, then re-solve the LP with them fixed (``lp``'s
    bounds are changed). ``every_step`` gives every step and pair a binary: the plain
    formulation, slower, with the same optimum (tests and benchmarks/bench_mip.py compare).
    A MIP stopped at :data:`MIP_TIME_LIMIT_S` gives its best answer so far, said in a
    warning; without one, the directions are read off ``relaxed``, the LP's own solution
    (solved here when not given), as :func:`_directions` reads any solution."""
    highs = highs or mip_solver()
    chosen = (np.ones(inputs.steps, bool),) * 2 if every_step else direction_steps(inputs, battery)
    highs.passModel(direction_mip(lp, inputs, battery, *chosen))
    highs.run()
    status, info = highs.getModelStatus(), highs.getInfo()
    if status == highspy.HighsModelStatus.kOptimal:
        x = np.array(highs.getSolution().col_value)
    elif status != highspy.HighsModelStatus.kTimeLimit:
        raise SolverFailed(f"HiGHS ended the direction MIP with status {highs.modelStatusToString(status)}")
    elif info.primal_solution_status == int(highspy.SolutionStatus.kSolutionStatusFeasible):
        x = np.array(highs.getSolution().col_value)
        log.warning("the battery's and the meter's directions over %d steps were not proven best within %gs; the plan "
                    "takes the best found, within %.2g %% of the optimum", inputs.steps, MIP_TIME_LIMIT_S,
                    100.0 * info.mip_gap)
    else:
        x = relaxed if relaxed is not None else run_model(new_solver(), lp, "dispatch LP")[0]  # lp is unchanged so far
        log.warning("no battery and meter directions over %d steps were found within %gs; the plan takes them from "
                    "the relaxed program, which may cost more than the optimum", inputs.steps, MIP_TIME_LIMIT_S)
    # A solver of its own: the MIP's clock would count against the LP's time (HiGHS keeps one per instance).
    return run_model(new_solver(), with_directions(lp, *_directions(x, inputs, battery)), "LP with fixed directions")


def solve_dispatch(inputs: HorizonInputs, battery: BatterySpec, *, highs: highspy.Highs | None = None) -> DispatchPlan:
    """The cheapest dispatch of one site over the horizon.

    Raises :class:`InfeasiblePlan` (checked before solving) when no dispatch meets every
    constraint, :class:`SolverFailed` if HiGHS stops without an optimum.
    """
    check_feasible(inputs, battery)
    lp = build_lp(inputs, battery)
    x, objective = run_model(highs or new_solver(), lp, "dispatch LP")
    status = "optimal"
    if _has_simultaneous_flows(x, inputs.steps):
        x, objective = solve_directions(lp, inputs, battery, relaxed=x)
        status = "optimal (directions fixed by MIP)"
    charge, discharge = net_battery_flows(x, inputs.steps, battery)
    return build_plan(inputs, battery, charge, discharge, status=status, objective=objective)


def net_battery_flows(x: np.ndarray, steps: int, battery: BatterySpec) -> tuple[np.ndarray, np.ndarray]:
    """Charge and discharge (kW) from the first two column blocks of a solution, netted to the
    one flow that moves the SOC as the pair does: it removes flows below
    SIMULTANEOUS_TOLERANCE_KW that a solver may leave on both sides, and where a program burns
    energy on purpose (a scenario's later steps, stochastic.py) the plan keeps the program's
    SOC path, in its window, where charge minus discharge would not (a battery cannot burn)."""
    charge, discharge = np.clip(x[:steps], 0.0, battery.max_charge_kw), np.clip(x[steps : 2 * steps], 0.0, battery.max_discharge_kw)
    stored = stored_kw(charge, discharge, battery.charge_efficiency, battery.discharge_efficiency)
    power = power_for_stored_kw(stored, battery.charge_efficiency, battery.discharge_efficiency)
    return np.maximum(power, 0.0), np.maximum(-power, 0.0)


def solve_many(
    sites: Sequence[HorizonInputs], batteries: BatterySpec | Sequence[BatterySpec],
    *, errors: Literal["raise", "return"] = "raise",
) -> list[DispatchPlan | DispatchError]:
    """Plans for many sites in this process, reusing one solver and each horizon's pattern.

    ``batteries`` is one spec for every site or one per site. With ``errors="return"`` a site
    that cannot be planned gets its exception in its slot instead of stopping the batch.
    """
    specs = [batteries] * len(sites) if isinstance(batteries, BatterySpec) else list(batteries)
    if len(specs) != len(sites):
        raise DispatchError(f"solve_many got {len(sites)} sites but {len(specs)} battery specs")
    highs = new_solver()
    plans: list[DispatchPlan | DispatchError] = []
    for number, (inputs, battery) in enumerate(zip(sites, specs, strict=True)):
        try:
            plans.append(solve_dispatch(inputs, battery, highs=highs))
        except DispatchError as error:
            if errors == "raise":
                raise type(error)(f"site {number}: {error}") from error
            plans.append(error)
    return plans
