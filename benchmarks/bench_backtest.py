"""What forecast-driven MPC captures across sites and months (target: at least 85 % of the
perfect-foresight savings, and a lower bill than the self-consumption rule), beyond the one
backtest the tests hold: 30-day backtests, naive forecaster, the default guarded execution.

    python benchmarks/bench_backtest.py [--seeds 42,7,3,11,default] [--months 2024-03,2024-06,2024-09] [--days 30] [--workers 2] [--no-car] [--execution capped] [--policy-every-minutes 60]

``default`` is the default site as shipped (no seed: the one derived from its device id);
``--no-car`` runs the same homes without an EV (the guard's cap and a reserve kept at every
hour, the reserve policy above it);
``--execution capped`` runs homes with a car on the hourly scenario LP instead of the
reserve policy, for comparison; ``--policy-every-minutes 60`` re-solves the policy every
hour instead of at each local midnight only (what hourly re-planning would do to it).
Prints one line per backtest, then the mean and the worst.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from benchmarks._machine import describe  # noqa: E402
from cloud.evaluation import backtest as bt  # noqa: E402
from cloud.evaluation.report import metrics  # noqa: E402
from cloud.optimization.decision import Execution  # noqa: E402
from der_core.config import build_config  # noqa: E402


def one(seed: str, month: str, days: int, car: bool = True, execution: str = Execution.GUARDED,
        policy_every_minutes: int | None = None) -> dict:
    config = build_config(({} if seed == "default" else {"seed": int(seed)}) | ({} if car else {"home_load": {"has_ev": False}}))
    started = time.perf_counter()
    table = metrics(bt.run_backtest(config, bt.BacktestSettings(days=days, start=pd.Timestamp(f"{month}-01"), execution=execution,
                                                               policy_every_minutes=policy_every_minutes)))
    return {
        "seed": seed, "month": month, "seconds": time.perf_counter() - started,
        "mpc": float(table.loc[bt.MPC, "capture"]), "self_consumption": float(table.loc[bt.SELF_CONSUMPTION, "capture"]),
        # Each bill less the energy the battery left stored, as the savings count it.
        "mpc_bill": float(table.loc[bt.MPC, "bill"] - table.loc[bt.MPC, "stored"]),
        "rule_bill": float(table.loc[bt.SELF_CONSUMPTION, "bill"] - table.loc[bt.SELF_CONSUMPTION, "stored"]),
        "mpc_peak": float(table.loc[bt.MPC, "peak_import_kw"]), "perfect_peak": float(table.loc[bt.PERFECT, "peak_import_kw"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="42,7,3,11,default")
    parser.add_argument("--months", default="2024-03,2024-06,2024-09")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-car", action="store_true", help="the same homes without an EV")
    parser.add_argument("--execution", choices=[e.value for e in Execution], default=Execution.GUARDED.value, help="how the MPC carries its plans out")
    parser.add_argument("--policy-every-minutes", type=int, default=None,
                        help="also re-solve the reserve policy this often (default: at each local midnight only)")
    args = parser.parse_args()
    runs = [(seed, month) for seed in args.seeds.split(",") for month in args.months.split(",")]
    homes = ("homes without a car" if args.no_car else "homes with a car") + f", execution {args.execution}"
    if args.policy_every_minutes:
        homes += f", policy re-solved every {args.policy_every_minutes} min"
    print(f"machine: {describe()}; {len(runs)} backtests of {args.days} days ({homes}), {args.workers} at a time")
    print(f"{'site':>8} {'month':>8} {'MPC':>7} {'rule':>7} {'MPC bill':>9} {'rule bill':>9} {'MPC peak':>9} {'PF peak':>8} {'time':>6}")
    results = []
    with ProcessPoolExecutor(args.workers) as pool:
        for row in pool.map(one, *zip(*runs), [args.days] * len(runs), [not args.no_car] * len(runs),
                            [args.execution] * len(runs), [args.policy_every_minutes] * len(runs)):
            results.append(row)
            print(f"{row['seed']:>8} {row['month']:>8} {row['mpc']:7.1%} {row['self_consumption']:7.1%} "
                  f"{row['mpc_bill']:9.2f} {row['rule_bill']:9.2f} {row['mpc_peak']:9.2f} {row['perfect_peak']:8.2f} "
                  f"{row['seconds']:5.1f}s", flush=True)
    captures = [row["mpc"] for row in results]
    print(f"MPC capture: mean {statistics.mean(captures):.1%}, worst {min(captures):.1%}, "
          f"{sum(c >= 0.85 for c in captures)} of {len(captures)} at 85 % or more; "
          f"bill below the self-consumption rule's in {sum(r['mpc_bill'] < r['rule_bill'] for r in results)} of {len(results)}")


if __name__ == "__main__":
    main()
