"""What forecast-driven MPC captures across sites and months (issue 7: at least 85 % of the
perfect-foresight savings, and a lower bill than the self-consumption rule), beyond the one
backtest the tests hold: 30-day backtests, naive forecaster, the default guarded execution.

    python benchmarks/bench_backtest.py [--seeds 42,7,3,11,default] [--months 2024-03,2024-06,2024-09] [--days 30] [--workers 2] [--no-car | --session-oracle]

``default`` is the default site as shipped (no seed: the one derived from its device id);
``--no-car`` runs the same homes without an EV (no peak guard, scenario plans);
``--session-oracle`` tells the guard, while a car charges, what the rest of the session
needs (``BacktestSettings.session_oracle``): not a controller, the measure of what not
knowing a session's length costs.
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
from cloud.optimization import backtest as bt  # noqa: E402
from cloud.optimization.report import metrics  # noqa: E402
from edge_gateway.config import build_config  # noqa: E402


def one(seed: str, month: str, days: int, car: bool = True, oracle: bool = False) -> dict:
    config = build_config(({} if seed == "default" else {"seed": int(seed)}) | ({} if car else {"home_load": {"has_ev": False}}))
    started = time.perf_counter()
    table = metrics(bt.run_backtest(config, bt.BacktestSettings(days=days, start=pd.Timestamp(f"{month}-01"), session_oracle=oracle)))
    return {
        "seed": seed, "month": month, "seconds": time.perf_counter() - started,
        "mpc": float(table.loc[bt.MPC, "capture"]), "self_consumption": float(table.loc[bt.SELF_CONSUMPTION, "capture"]),
        "mpc_bill": float(table.loc[bt.MPC, "bill"]), "rule_bill": float(table.loc[bt.SELF_CONSUMPTION, "bill"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="42,7,3,11,default")
    parser.add_argument("--months", default="2024-03,2024-06,2024-09")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--no-car", action="store_true", help="the same homes without an EV")
    kind.add_argument("--session-oracle", action="store_true", help="the guard knows what each session's rest needs")
    args = parser.parse_args()
    runs = [(seed, month) for seed in args.seeds.split(",") for month in args.months.split(",")]
    homes = "homes without a car" if args.no_car else "homes with a car" + (", session-length oracle" if args.session_oracle else "")
    print(f"machine: {describe()}; {len(runs)} backtests of {args.days} days ({homes}), {args.workers} at a time")
    print(f"{'site':>8} {'month':>8} {'MPC':>7} {'rule':>7} {'MPC bill':>9} {'rule bill':>9} {'time':>6}")
    results = []
    with ProcessPoolExecutor(args.workers) as pool:
        for row in pool.map(one, *zip(*runs), [args.days] * len(runs), [not args.no_car] * len(runs),
                            [args.session_oracle] * len(runs)):
            results.append(row)
            print(f"{row['seed']:>8} {row['month']:>8} {row['mpc']:7.1%} {row['self_consumption']:7.1%} "
                  f"{row['mpc_bill']:9.2f} {row['rule_bill']:9.2f} {row['seconds']:5.1f}s", flush=True)
    captures = [row["mpc"] for row in results]
    print(f"MPC capture: mean {statistics.mean(captures):.1%}, worst {min(captures):.1%}, "
          f"{sum(c >= 0.85 for c in captures)} of {len(captures)} at 85 % or more; "
          f"bill below the self-consumption rule's in {sum(r['mpc_bill'] < r['rule_bill'] for r in results)} of {len(results)}")


if __name__ == "__main__":
    main()
