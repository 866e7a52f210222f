"""``--status``: every registered version, the active one marked, and its metrics."""

from __future__ import annotations

from typing import Any

from cloud.forecasting.evaluation import headline
from cloud.forecasting.models import PRIMARY, REFERENCE
from cloud.forecasting.registry import Registry
from der_core.cli_support import print_table


def version_rows(registry: Registry) -> list[dict[str, Any]]:
    active = registry.active()
    rows = []
    for manifest in registry.versions():
        targets = manifest.get("targets", {})
        ranges = [r for info in targets.values() for r in info.get("train_range", [])]
        rows.append({"active": "*" if manifest["version"] == active else "", "version": manifest["version"],
                     "created": manifest.get("created_at", "")[:19], "targets": ",".join(targets) or "-",
                     "skipped": ",".join(manifest.get("skipped", {})) or "-",
                     "sites": max((len(i.get("sites", [])) for i in targets.values()), default=0),
                     "trained on": f"{min(ranges)[:10]}..{max(ranges)[:10]}" if ranges else "-"})
    return rows


def metric_rows(registry: Registry, name: str) -> list[dict[str, Any]]:
    metrics = registry.metrics(name)
    rows = []
    for target, by_model in metrics.items():
        for kind in (PRIMARY, "ridge", REFERENCE, "seasonal_naive_week", "persistence"):
            if kind not in by_model:
                continue
            m = headline(by_model[kind], target)
            rows.append({"target": target, "model": kind, "scope": "daytime" if target == "solar_kw" else "all hours",
                         "MAE": m.get("mae"), "RMSE": m.get("rmse"), "nMAE": m.get("nmae_mean"),
                         "skill": m.get("skill"), "pinball": m.get("pinball"), "P10-P90": m.get("coverage_p10_p90")})
    return rows


def print_status(registry: Registry) -> None:
    rows = version_rows(registry)
    print(f"model registry {registry.root}: {len(rows)} version(s)")
    print_table(rows)
    active = registry.active()
    if active is None:
        print("no active version: train one with `python run_model_training.py --train`")
        return
    print(f"\nactive version {active}, test-set metrics (skill against {REFERENCE}):")
    print_table(metric_rows(registry, active))
    manifest = registry.manifest(active)
    for skipped_target, reason in manifest.get("skipped", {}).items():
        print(f"not trained: {skipped_target}: {reason}")
    evaluations = registry.evaluations(active)
    if evaluations:
        last = evaluations[-1]
        drifting = [t["target"] for t in last["targets"] if t.get("drift")]
        harder = [t["target"] for t in last["targets"] if t.get("harder_week")]
        unscored = [t["target"] for t in last["targets"] if not t.get("rows")]
        print(f"last evaluation {last['evaluated_at'][:19]}: " + (f"DRIFT in {', '.join(drifting)}" if drifting else "no drift")
              + (f"; worse than at training in {', '.join(harder)} on days among its test days (no newer readings)"
                 if harder else "")
              + (f"; nothing scored in {', '.join(unscored)} (a gap in the newest week)" if unscored else ""))
