"""run_dashboard.py's flags: each store flag means what it says or the command line is refused
in one line (exit 2), never one flag dropped unsaid."""

from __future__ import annotations

import pytest

import run_dashboard
from cloud.store.sqlite import SQLiteCloudStore
from der_core.cli_support import run_cli

#: No server listens here: a command that reached for it fails rather than serves.
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"


@pytest.fixture
def served(monkeypatch):
    """The store the dashboard would serve, without serving it."""
    opened = {}
    monkeypatch.setattr(run_dashboard, "create_app", lambda store, **_: opened.setdefault("store", store))
    monkeypatch.setattr("uvicorn.Server.run", lambda *args, **kwargs: None)
    monkeypatch.delenv("SUPABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)
    return opened


@pytest.mark.parametrize("cloud_db, named", [("postgres", "postgres"), ("supabase", "supabase"), ("other.db", "'other.db'")])
def test_sqlite_path_beside_another_store_is_refused(tmp_path, served, capsys, cloud_db, named):
    SQLiteCloudStore(tmp_path / "trial.db").close()  # a job wrote it
    assert run_cli(run_dashboard.main, ["--cloud-db", cloud_db, "--sqlite-path", str(tmp_path / "trial.db")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --sqlite-path ") and f"--cloud-db {named} name two stores" in line
    assert "store" not in served


@pytest.mark.parametrize("cloud_db", [[], ["--cloud-db", "sqlite"]])
def test_sqlite_path_chooses_the_embedded_store_over_the_environments(tmp_path, served, cloud_db):
    """As ``--cloud-db FILE`` does: a flag typed outweighs DATABASE_URL set long ago."""
    SQLiteCloudStore(tmp_path / "trial.db").close()
    assert run_cli(run_dashboard.main, [*cloud_db, "--sqlite-path", str(tmp_path / "trial.db")]) == 0
    assert served["store"].label.endswith("trial.db")


@pytest.mark.parametrize("flag, env, expected", [
    (["--portfolio-dir", "portfolio-outptu"], None, "--portfolio-dir 'portfolio-outptu': no such folder"),
    (["--portfolio-dir", "summary.json"], None, "--portfolio-dir 'summary.json': is a file"),
    ([], "portfolio-outptu", "environment variable PORTFOLIO_OUTPUT_DIR='portfolio-outptu': no such folder"),
])
def test_a_portfolio_folder_named_must_be_one(tmp_path, monkeypatch, served, capsys, flag, env, expected):
    """A typo showed "no portfolio results yet" as if no portfolio had been run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "summary.json").write_text("{}")
    if env is not None:
        monkeypatch.setenv("PORTFOLIO_OUTPUT_DIR", env)
    assert run_cli(run_dashboard.main, [*flag, "--cloud-db", "sqlite"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"error: {expected}; expected the folder run_portfolio.py --output wrote its results in"
    assert "store" not in served


def test_the_default_portfolio_folder_may_not_exist_yet(tmp_path, monkeypatch, served):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PORTFOLIO_OUTPUT_DIR", raising=False)
    assert run_cli(run_dashboard.main, ["--cloud-db", "sqlite"]) == 0
    assert "store" in served


def test_a_store_that_cannot_be_reached_is_one_line_before_serving(served, capsys):
    assert run_cli(run_dashboard.main, ["--cloud-db", "postgres"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: postgres 127.0.0.1:1/none: cannot connect")
    assert "store" not in served


def test_verbose_and_quiet_together_are_refused(served, capsys):
    """Verbose won unsaid, serving debug logs to one who asked for warnings only."""
    with pytest.raises(SystemExit) as exit_:
        run_dashboard.main(["--cloud-db", "sqlite", "-v", "-q"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith(": error: argument -q/--quiet: not allowed with argument -v/--verbose "
                                            "(see --help)\n")
    assert "store" not in served


def test_an_address_that_cannot_be_bound_is_one_line_without_a_warning_before_it(tmp_path, served, capsys):
    """``--host ""`` warned that the API was exposed beyond the machine, then failed to bind:
    the warning is said once the dashboard does listen there."""
    SQLiteCloudStore(tmp_path / "trial.db").close()
    assert run_cli(run_dashboard.main, ["--host", "", "--cloud-db", str(tmp_path / "trial.db")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "exposes" not in line


def test_a_dashboard_listening_beyond_this_machine_without_a_token_says_so(tmp_path, served, capsys, monkeypatch):
    import socket

    monkeypatch.delenv("DASHBOARD_TOKEN", raising=False)
    SQLiteCloudStore(tmp_path / "trial.db").close()
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        port = str(probe.getsockname()[1])
    assert run_cli(run_dashboard.main, ["--host", "0.0.0.0", "--port", port, "--cloud-db", str(tmp_path / "trial.db")]) == 0
    assert "--host 0.0.0.0 exposes the API beyond this machine without DASHBOARD_TOKEN" in capsys.readouterr().err
