"""Paths named on a command line are checked for what they are before any work: a file to
read is a regular file, a folder to write in is a folder or can be made one. A folder that
cannot be made was found only when the training or the backtest was done."""

from __future__ import annotations

import os

import pytest

import run_cloud_sync
import run_dr
import run_feature_engineering
import run_model_training
import run_optimizer
import run_pipeline
import run_portfolio
from der_core.cli_support import run_cli
from der_core.files import folder_problem, input_problem


@pytest.fixture
def places(tmp_path):
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    return tmp_path


def test_what_a_path_is_said_as_an_input_and_as_a_folder(places):
    said = {name: (input_problem(places / name), folder_problem(places / name))
            for name in ("file", "pipe", "loop-a", "missing", "file/below", "new/deep")}
    assert said == {
        "file": (None, "is a file, not a folder"),
        "pipe": ("is not a regular file (a device or a pipe)", "is a device or a pipe, not a folder"),
        "loop-a": ("is a loop of symbolic links", "is a loop of symbolic links"),
        "missing": ("not found", None),
        "file/below": ("Not a directory", f"{places / 'file'} is a file, not a folder"),
        "new/deep": ("not found", None),
    }
    assert input_problem(places) == "is a folder" and folder_problem(places) is None
    assert input_problem(places / ("a" * 5000)) == folder_problem(places / ("a" * 5000)) == "File name too long"


@pytest.mark.parametrize("main, argv, flag", [
    (run_model_training.main, ["--train", "--model-dir"], "--model-dir"),
    (run_model_training.main, ["--status", "--model-dir"], "--model-dir"),
    (run_optimizer.main, ["--backtest", "--days", "1", "--output"], "--output"),
    (run_portfolio.main, ["--sites", "2", "--hours", "2", "--output"], "--output"),
    (run_pipeline.main, ["--once", "--data-dir"], "--data-dir"),
])
def test_a_folder_to_write_in_is_checked_before_the_work(places, capsys, monkeypatch, main, argv, flag):
    monkeypatch.chdir(places)
    for where, said in [("file", "is a file, not a folder"), ("file/out", f"{places / 'file'} is a file, not a folder"),
                        ("pipe", "is a device or a pipe, not a folder")]:
        assert run_cli(main, [*argv, str(places / where)]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line == f"error: {flag} '{places / where}': {said}; expected a folder to write in"
    assert sorted(p.name for p in places.iterdir()) == ["file", "loop-a", "loop-b", "pipe"]  # nothing was made


#: A folder this process cannot write in, root or not: the kernel's view of process 1.
UNWRITABLE = "/proc/1"


def test_a_folder_to_write_in_that_refuses_writes_is_refused_before_the_training(capsys, monkeypatch, tmp_path):
    """A model folder that cannot be written in was found when the models were saved, after
    the whole training; one only read from (``--status``, a plan) may still be read-only."""
    assert os.path.isdir(UNWRITABLE) and not os.access(UNWRITABLE, os.W_OK)  # what the test relies on
    models = f"{UNWRITABLE}/models"
    assert folder_problem(models, writable=True) == f"{UNWRITABLE} cannot be written in"
    assert folder_problem(UNWRITABLE, writable=True) == "cannot be written in"
    assert folder_problem(models) is None
    monkeypatch.chdir(tmp_path)
    assert run_cli(run_model_training.main, ["--train", "--model-dir", models]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --model-dir '{models}': {UNWRITABLE} cannot be written in; "
                                               "expected a folder to write in")
    assert run_cli(run_model_training.main, ["--status", "--model-dir", models]) == 0
    assert list(tmp_path.iterdir()) == []  # refused before any store was opened


def test_the_model_folder_of_the_environment_is_named_as_such(places, capsys, monkeypatch):
    monkeypatch.setenv("FORECAST_MODEL_DIR", str(places / "file"))
    assert run_cli(run_model_training.main, ["--status"]) == 2
    assert capsys.readouterr().err.startswith(f"error: FORECAST_MODEL_DIR '{places / 'file'}': is a file, not a folder")


@pytest.mark.parametrize("main, argv", [
    (run_cloud_sync.main, ["--status"]),
    (run_cloud_sync.main, ["--forget", "home-1"]),  # without --yes it only lists
    (run_feature_engineering.main, ["--status"]),
    (run_optimizer.main, ["--status"]),
    (run_pipeline.main, ["--status"]),
    (run_dr.main, ["--ven", "--report-only", "--vtn-url", "http://127.0.0.1:9/OpenADR2/Simple/2.0b"]),
])
def test_a_command_that_only_reads_a_store_never_makes_one(tmp_path, capsys, main, argv):
    """A mistyped --cloud-db made folders and an empty store, then showed it empty. (The
    default store is made by any command, a new install's --status too, as the spec has it.)"""
    typo = tmp_path / "dat" / "cloud.db"
    assert run_cli(main, [*argv, "--cloud-db", str(typo)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"error: no cloud store at '{typo}': no job has written one there; expected the store the jobs "
                    "write (--cloud-db FILE)")
    assert not (tmp_path / "dat").exists()


def test_a_line_break_in_a_file_name_never_splits_a_log_record(tmp_path, capsys):
    """A name holding a line break printed it into the log line: what followed it read as a
    record of its own (here a forged ERROR), and a log reader took it for one."""
    name = "m\nERROR forged.csv"
    (tmp_path / name).write_text("timestamp,pv_kw\n2024-06-01T00:00:00Z,-9\n2024-06-01T00:15:00Z,0.2\n")
    assert run_cli(run_cloud_sync.main, ["--import", str(tmp_path / name), "--device-id", "home", "--units", "kW",
                                         "--column-map", "pv_kw=solar_generation_kw",
                                         "--cloud-db", str(tmp_path / "cloud.db")]) == 0
    records = [line for line in capsys.readouterr().err.splitlines() if line]
    (warning,) = [line for line in records if "quarantined" in line]
    assert " WARNING cloud.sync.importer: " in warning and "m ERROR forged.csv: 1 rows quarantined" in warning
    assert not any(line.startswith("ERROR") for line in records)
