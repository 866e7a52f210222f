"""How the cloud jobs' ``--status`` speaks: the run header every job prints (last run, last
error, from ``pipeline_runs``), its table cells, and JSON for ``--json``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd

from cloud.store import schema as s
from der_core import der_data as dd
from der_core.cli_support import print_table
from der_core.errors import DERError

log = logging.getLogger(__name__)
T = TypeVar("T")


def record_failure(store, run_id: int, rows: int, error: BaseException) -> None:
    """Finish a run as failed with one line naming the error (its type too when it is not one
    of ours, whose messages stand alone). A store that cannot record it is logged, not raised
    over the failure itself: the store may be what failed, and the first error matters."""
    message = str(error) if isinstance(error, DERError) else f"{type(error).__name__}: {error}"
    # A path the file system gave in bytes that are not UTF-8 comes as lone surrogates, which
    # no store can encode: they are kept as escapes, so the failure is still recorded.
    message = " ".join(message.split()).encode("utf-8", "backslashreplace").decode("utf-8")
    try:
        store.finish_run(run_id, "failed", rows, message)
    except DERError as second:
        log.warning("could not record the failed run: %s", second)


#: The status of a run that did its work on old data (an outside service down): not failed,
#: yet not ``ok``, so ``--status`` and the dashboard say what is stale.
STALE = "stale"


def recorded_run(store, job: str, details: dict[str, Any], work: Callable[[], tuple[T, int]],
                 stale_of: Callable[[T], str | None] | None = None) -> T:
    """Run ``work`` (returning its value and the rows it wrote) as one ``pipeline_runs`` row:
    ``ok`` with the rows, :data:`STALE` with the line ``stale_of(value)`` gives when it gives
    one, or ``failed`` with the error's line, which is raised on. Any error fails it, an
    interrupt or a defect as well: in a daemon that lives on, a run left ``running`` would
    read as under way for ever."""
    run_id = store.start_run(job, details)
    try:
        value, rows = work()
    except BaseException as error:
        record_failure(store, run_id, 0, error)
        raise
    stale = stale_of(value) if stale_of is not None else None
    store.finish_run(run_id, STALE if stale else "ok", rows, stale or None)
    return value


def when(ts: pd.Timestamp | None) -> str:
    return "-" if ts is None else dd.format_ts(ts)


def cell(value: Any) -> Any:
    """A table cell: timestamps in the contract's format, durations as pandas writes them."""
    if isinstance(value, pd.Timestamp):
        return when(value)
    if isinstance(value, pd.Timedelta):
        return str(value)
    return value


def json_default(value: Any) -> Any:
    """For ``json.dumps``: timestamps as the contract writes them, durations in seconds,
    numpy scalars as Python numbers."""
    if isinstance(value, pd.Timestamp):
        return dd.format_ts(value)
    if isinstance(value, pd.Timedelta):
        return value.total_seconds()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_job_status(status: dict[str, Any], heading: str, rows_key: str, as_json: bool = False) -> None:
    """``status`` holds ``last_run``, ``last_error`` (pipeline_runs rows or None) and, under
    ``rows_key``, one dict per device or site for the table."""
    if as_json:
        print(json.dumps(status, default=json_default, indent=2))
        return
    print(heading)
    run, error = status["last_run"], status["last_error"]
    if run:
        print(f"last run: #{run[s.RUN_ID]} {when(run[s.STARTED_AT])} {run[s.STATUS]}, {run[s.ROWS]} rows")
    else:
        print("last run: none")
    print(f"last error: {when(error[s.STARTED_AT])} {error[s.ERROR]}" if error else "last error: none")
    print_table([{k: cell(v) for k, v in row.items()} for row in status[rows_key]])
