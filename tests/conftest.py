"""Shared fixtures. Services (Postgres, Mosquitto) are real; a test that needs one skips with
the reason when it is unreachable on a developer's machine, and fails in CI (:func:`in_ci`)."""

from __future__ import annotations

import os
import socket

import pytest

from tests.quick_start import quick_start_pipeline  # noqa: F401  (a session fixture: registered here, run once)

CI_VALUES = ("1", "true", "yes")


def in_ci() -> bool:
    """The one test of "running in CI", where a missing service fails instead of skipping:
    CI set to 1, true or yes (any case), the values CI systems use."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, in CI, fail) when ``name`` is not listening on ``host:port``."""
    if port_open(host, port):
        return
    message = f"{name} not reachable at {host}:{port}"
    if in_ci():
        pytest.fail(f"{message}; CI requires it (.ci/run starts it)")
    pytest.skip(f"{message}; start it or set the host/port variables to run this test")


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Every test runs in its own folder so default paths (data/edge.db, ...) never collide."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path
