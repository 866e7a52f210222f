#!/usr/bin/env python
"""Train, evaluate and inspect the day-ahead load, solar and price forecasters (docs/forecasting.md, "Forecasting")."""

from __future__ import annotations

import sys

from cloud.forecasting.job import run_evaluation, run_training
from cloud.forecasting.registry import Registry
from cloud.forecasting.settings import settings_from
from cloud.forecasting.status import print_status
from cloud.store.factory import add_cloud_db_flag, open_store_from_args
from der_core.cli_support import (
    ArgumentParser,
    add_common_flags,
    arg_type,
    positive_float,
    run_cli,
    setup_logging,
)
from der_core.errors import UsageError


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="run_model_training.py", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--train", action="store_true", help="train every model, register and activate the version")
    mode.add_argument("--evaluate", action="store_true", help="re-score the active models on the newest data, warn on drift")
    mode.add_argument("--status", action="store_true", help="list versions, mark the active one, show its metrics")
    parser.add_argument("--model-dir", help="model registry folder (FORECAST_MODEL_DIR, default ./trained_models)")
    parser.add_argument("--scheduler", help="train on this Dask scheduler (tcp://host:8786) instead of locally")
    parser.add_argument("--horizon-hours", type=arg_type(positive_float, "a positive number of hours"),
                        help="forecast horizon (default 24, in 15-minute steps)")
    add_cloud_db_flag(parser)
    add_common_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if not (args.train or args.evaluate or args.status):
        raise UsageError("nothing to do: expected one of --train, --evaluate, --status")
    settings = settings_from(args.model_dir, args.horizon_hours, training=args.train)
    if args.status:
        print_status(Registry(settings.model_dir))
        return 0
    store = open_store_from_args(args)
    try:
        if args.train:
            return train(store, settings, args.scheduler)
        return evaluate(store, settings)
    finally:
        store.close()


def train(store, settings, scheduler: str | None) -> int:
    client = None
    if scheduler:
        from cloud.forecasting.distributed import connect

        client = connect(scheduler)
    try:
        outcome = run_training(store, settings, client)
    finally:
        if client is not None:
            client.close()
    print(f"trained version {outcome.version} in {outcome.folder} (active); "
          f"{outcome.forecast_rows} forecast rows written to {store.label}")
    for target, result in outcome.result.targets.items():
        print(f"  {target}: {len(result.sites)} sites, trained on {result.train_range[0]:%Y-%m-%d}.."
              f"{result.train_range[1]:%Y-%m-%d}, tested on {result.test_range[0]:%Y-%m-%d}..{result.test_range[1]:%Y-%m-%d}")
    for target, reason in outcome.result.skipped.items():
        print(f"  {target}: not trained: {reason}")
    for gap in outcome.result.site_gaps:
        print(f"  {gap.target}: {gap.device_id} left out: {gap.reason}")
    return 0


def evaluate(store, settings) -> int:
    version, results = run_evaluation(store, settings)
    print(f"active version {version} on the newest data of {store.label}:")
    for r in results:
        if not r.rows:
            print(f"  {r.target}: nothing scored: no forecast of the newest week has both its truth and the same time the "
                  "day before measured (a gap); evaluate again once readings cover a whole day")
            continue
        numbers = f"MAE {r.mae:.4g} (at training {r.trained_mae:.4g})" if r.mae is not None and r.trained_mae else "no score"
        skill = f", skill {r.skill:.2f}" if r.skill is not None else ""
        print(f"  {r.target}: {numbers}{skill}, P10-P90 coverage {r.coverage or 0:.0%} over {r.rows} rows")
        if r.harder_week:
            print(f"note: {r.target}: {r.harder_week}, on days among those training tested the models on (to "
                  f"{r.tested_until:%Y-%m-%d}): a harder week of that test, not a change since; no reading is newer, so "
                  "retraining would learn from the same readings")
        if r.drift:
            print(f"warning: drift in {r.target}: {r.drift}; retrain with `python run_model_training.py --train`",
                  file=sys.stderr)
    repeated = [r for r in results if r.rows and r.tested_until is not None and not r.harder_week]
    if repeated:
        print(f"note: {', '.join(r.target for r in repeated)}: every truth scored lies among the days training tested "
              f"the models on (to {max(r.tested_until for r in repeated):%Y-%m-%d}): these scores repeat that test; "
              "evaluate again once newer readings are synced")
    if any(r.seen_in_training for r in results):
        print("note: no readings newer than the training range yet, so these scores include data the models were "
              "trained on and flatter them; evaluate again once newer readings are synced")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
