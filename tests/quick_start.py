"""The Quick start's first command (``run_pipeline.py`` with its defaults in a fresh folder),
run once per test run, whatever the number of workers: several modules check what it
leaves, and it is one of the slowest commands the suite runs. Each module works on its own
copy of the folder, so one that runs more commands there changes nothing another sees."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Unset as on a fresh clone: the embedded store and the default model folder.
SERVER_VARIABLES = ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_KEY", "FORECAST_MODEL_DIR")


def run_script(script: str, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python <script> <args>`` of the project in ``cwd``, as a fresh clone runs it."""
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES}
    env.update(PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def quick_start_pipeline(tmp_path_factory, worker_id) -> tuple[Path, subprocess.CompletedProcess]:
    """The folder the pipeline's first run left, and what it printed (do not change the folder:
    take :func:`copy_of` it).

    Under xdist every worker has this session fixture; the first to need it runs the command
    in the folder the workers share, holding a lock, and the others wait and read what it left."""
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    folder, printed = shared / "quick-start-pipeline", shared / "quick-start-pipeline.json"
    with open(shared / "quick-start-pipeline.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not printed.exists():
            folder.mkdir()
            done = run_script("run_pipeline.py", cwd=folder)
            printed.write_text(json.dumps({"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}))
    done = subprocess.CompletedProcess(["run_pipeline.py"], **json.loads(printed.read_text()))
    assert done.returncode == 0, done.stderr
    return folder, done


def copy_of(folder: Path, tmp_path_factory, name: str) -> Path:
    """A copy of ``folder`` of the module's own."""
    return Path(shutil.copytree(folder, tmp_path_factory.mktemp(name) / "copy"))
