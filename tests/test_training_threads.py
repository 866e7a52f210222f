"""LightGBM's threads: waiting OpenMP threads sleep instead of spinning (a spinning thread holds
a core another process needs, which made two threads seven times slower than one on a busy
two-core machine; benchmarks/bench_training.py --busy-core has the figures), and a model's
``n_jobs`` caps the threads a fit uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cloud.forecasting import design as dz
from cloud.forecasting import models

ROOT = Path(__file__).resolve().parents[1]
# What the process sees when LightGBM's library loads: libgomp reads the variable only then.
PROBE = (
    "import os, sys\n"
    "import cloud.forecasting.models\n"
    "print(os.environ.get('OMP_WAIT_POLICY'), 'lightgbm' in sys.modules)\n"
)


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**clean, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip()


def test_openmp_threads_wait_passively_unless_the_user_chose():
    assert _probe() == "PASSIVE True"
    assert _probe(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE True"


def test_the_wait_policy_is_set_before_lightgbm_is_imported():
    source = (ROOT / "cloud" / "forecasting" / "__init__.py").read_text()
    assert "import lightgbm" not in source and "from cloud" not in source  # nothing loads it first


@pytest.mark.parametrize("rows, most, expected", [
    (1_000, models.N_JOBS, 1), (200_000, models.N_JOBS, models.N_JOBS), (200_000, 1, 1), (200_000, 0, models.N_JOBS),
    (200_000, -1, models.N_JOBS), (200_000, 64, models.N_JOBS),
])
def test_threads_for_caps_at_n_jobs(rows, most, expected):
    assert models.threads_for(rows, most) == expected


def test_a_fit_and_a_prediction_pass_the_models_n_jobs_as_the_cap(monkeypatch):
    caps = []
    monkeypatch.setattr(models, "threads_for", lambda rows, most=models.N_JOBS, idle=None: caps.append(most) or 1)
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(rng.normal(size=(300, len(dz.FEATURES))), columns=list(dz.FEATURES))
    model = models.LightGBMForecaster(params={"n_jobs": 1, "n_estimators": 2}).fit(rows, rng.normal(size=300))
    model.predict(rows)
    assert caps == [1] * 2  # once for the fit's three quantiles, once for the prediction


@pytest.mark.parametrize("idle, expected", [(0.2, 1), (0.9, 1), (1.6, 2), (2.0, 2)])
def test_large_fits_take_no_more_threads_than_cores_are_idle(idle, expected):
    assert models.threads_for(200_000, models.N_JOBS, lambda: idle) == expected


def test_small_fits_and_one_thread_caps_never_sample_the_cores():
    def sample() -> float:
        raise AssertionError("sampled the cores for a fit that takes one thread anyway")

    assert models.threads_for(1_000, models.N_JOBS, sample) == 1
    assert models.threads_for(200_000, 1, sample) == 1


def test_idle_cores_are_between_none_and_every_usable_core():
    assert 0.0 <= models.idle_cores(0.05) <= len(os.sched_getaffinity(0))


def test_a_large_fit_samples_the_idle_cores_once(monkeypatch):
    calls = []
    monkeypatch.setattr(models, "idle_cores", lambda: calls.append(1) or 1.0)
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(rng.normal(size=(100_000, len(dz.FEATURES))), columns=list(dz.FEATURES))
    model = models.LightGBMForecaster(params={"n_estimators": 1}).fit(rows, rng.normal(size=100_000))
    assert calls == [1] and len(model.boosters[models.KW_VIEW]) == len(models.QUANTILES)
