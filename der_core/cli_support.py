"""What every ``run_*.py`` shares: argument parsing with one-line errors, logging, progress
bars and the mapping of named exceptions to one line and an exit code (DESIGN.md, "Errors").
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pandas as pd

from der_core import der_data as dd
from der_core.errors import DERError, UsageError
from der_core.files import folder_problem
from der_core.redact import RedactingFilter, redact, register_flag_secrets

T = TypeVar("T")
log = logging.getLogger("der")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {redact(_one_line(message))} (see --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        """A NUL character is refused in any argument: no file system names a file with one,
        and a path holding it raises where it is opened, deep inside a command."""
        for arg in sys.argv[1:] if args is None else args:
            if "\x00" in str(arg):
                self.error(f"argument {dd.shown(str(arg))} holds a NUL character; expected text without one")
        return super().parse_known_args(args, namespace)


def _one_line(text: str, limit: int | None = 300) -> str:
    """Error text as one line of bounded length: input quoted in it may hold newlines or be huge."""
    text = " ".join(str(text).split())
    return text if limit is None or len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``-v`` and ``-q``, one or the other: together, one would be dropped unsaid."""
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks on errors")
    loudness.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the stream that was
    current at set-up (which a test harness or an embedding program may since have closed)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _record_on_one_line(record: logging.LogRecord) -> bool:
    """A record's message on one line: a line break inside a value it quotes (a file name, a
    payload) would start a line that reads as another record, or hide one. A traceback,
    kept apart in ``exc_text``, keeps its lines."""
    message = record.getMessage()
    if "\n" in message or "\r" in message:
        record.msg, record.args = _one_line(message, limit=None), None
    return True


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Log to stderr in a form systemd's journal keeps: level and logger, no colour codes."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = _CurrentStderr()
    handler.addFilter(RedactingFilter())
    handler.addFilter(_record_on_one_line)
    logging.basicConfig(
        level=level,
        handlers=[handler],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for noisy in ("urllib3", "httpx", "httpcore", "distributed", "apscheduler.executors.default", "hpack"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def env_value(name: str, cast: Callable[[str], T], default: T, *, expected: str) -> T:
    """Read an environment variable through ``cast``; a bad value is a one-line ``UsageError``."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except (TypeError, ValueError):
        raise UsageError(f"environment variable {name}={raw!r}: expected {expected}") from None


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """A whole number in ``[low, high]``."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(text)
        return value

    return parse


def device_id_arg(text: str) -> str:
    """An argparse ``type`` for flags naming a device: the data contract's one rule."""
    problem = dd.device_id_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def output_path(text: str | Path, what: str) -> Path:
    """A file path to write: its folder must exist (a typo should not create a tree of folders
    somewhere unexpected) and the path must not be a folder itself."""
    path = Path(text)
    if "\x00" in str(text):  # no file system names a file so; opening it would raise
        raise UsageError(f"{what} {dd.shown(str(text))}: holds a NUL character; expected a file path")
    if str(text) == "" or path.is_dir():
        raise UsageError(f"{what} {dd.shown(str(text))}: is a folder; expected a file path")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{what} {dd.shown(str(text))}: folder {dd.shown(str(parent))} does not exist; create it first")
    return path


def output_folder(text: str | Path, what: str, writable: bool = True) -> Path:
    """A folder to write results in, checked before the work that makes them: it is a folder
    or can be made one, and can be written in unless ``writable`` is False (a folder that is
    only read from when the command does not write) (``der_core.files.folder_problem``), else
    one line naming ``what``."""
    problem = folder_problem(text, writable)
    if problem is not None:
        raise UsageError(f"{what} {dd.shown(str(text), 200)}: {problem}; expected a folder to write in")
    return Path(text)


#: The years a plan, backtest or fleet run may start in: its history reaches weeks before and
#: its horizon days after, all within the dates pandas holds.
START_YEARS = (1900, 2200)


def start_timestamp(text: str) -> pd.Timestamp:
    """A ``--start`` of a plan or a run: a date or time, not empty or NaT, in
    :data:`START_YEARS` (else ValueError)."""
    try:
        value = pd.Timestamp(text)
    except OverflowError:
        raise ValueError(text) from None
    if value is pd.NaT or not START_YEARS[0] <= value.year <= START_YEARS[1]:
        raise ValueError(text)
    return value


def local_instant(ts: pd.Timestamp, timezone: str, flag: str, text: str | None = None) -> pd.Timestamp:
    """``ts`` given to ``flag`` as a UTC instant: with an offset as it says, without one as the
    clock in ``timezone`` shows it. A local time the clock skips or repeats is refused rather
    than guessed, since a plan's or a backfill's first step would otherwise move by an hour;
    so is one the zone's rules cannot place (beyond the dates pandas holds)."""
    quoted = dd.shown(str(ts) if text is None else text)
    if ts.tzinfo is not None:
        return ts.tz_convert("UTC")
    try:
        local = ts.tz_localize(timezone, nonexistent="NaT", ambiguous="NaT")
        skipped = local is pd.NaT and ts.tz_localize(timezone, nonexistent="NaT", ambiguous=True) is pd.NaT
    except (ValueError, OverflowError, NotImplementedError):
        raise UsageError(f"{flag} {quoted}: outside the supported dates; expected a date YYYY-MM-DD or an ISO 8601 time") from None
    if local is pd.NaT:
        what = "does not exist" if skipped else "occurs twice"
        raise UsageError(f"{flag} {quoted}: {ts:%Y-%m-%d %H:%M} {what} in {timezone} (daylight saving time); "
                         "expected a local time the clock shows once, or an ISO 8601 time with an offset")
    return local.tz_convert("UTC")


def arg_type(cast: Callable[[str], T], expected: str) -> Callable[[str], T]:
    """An argparse ``type`` whose error message names what was expected."""

    def parse(text: str) -> T:
        try:
            return cast(text)
        except (TypeError, ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{dd.shown(text)} is not {expected}") from None

    parse.__name__ = expected
    return parse


def duration(span: timedelta) -> str:
    """A span as people say it: ``15 min``, ``1.5 h``."""
    minutes = span.total_seconds() / 60
    return f"{minutes:g} min" if minutes < 60 else f"{minutes / 60:.3g} h"


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it") -> Iterable[T]:
    """A progress bar on a terminal; silent in logs, pipes and CI."""
    if not sys.stderr.isatty() or os.environ.get("CI"):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``kill``, a service manager's stop) met as an interrupt: Python's
    default ends the process where it stands, so a backfill's partial file stayed on disk and
    an import's run stayed ``running``; raised, it unwinds as Ctrl-C does."""

    def __init__(self) -> None:
        super().__init__("stopped by SIGTERM")


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated()


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main`` and turn our named exceptions into one line on stderr and an exit code.
    SIGTERM ends it as an interrupt does (:class:`Terminated`), every cleanup run; a command
    that runs until stopped installs its own handler for the time it runs."""
    words = sys.argv[1:] if argv is None else list(argv)  # an empty list means no arguments, not sys.argv
    verbose = "-v" in words or "--verbose" in words
    register_flag_secrets(words)
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        return int(main(argv) or 0)
    except DERError as error:
        return _fail(error, str(error), error.exit_code, verbose)
    except BrokenPipeError:
        # The reader of the output left (``| head``): nothing is wrong with the work, and an
        # error line about it would be the only thing left on the terminal. Python's own
        # advice: point stdout at /dev/null so the flush at exit does not raise again.
        _quiet_stdout()
        return 1
    except OSError as error:
        # A file the library opened for the user (a store, an output, a state file) that the
        # system refused: name it and the reason, not the call stack.
        where = f"{error.filename}: " if error.filename is not None else ""
        return _fail(error, f"{where}{error.strerror or error}", 1, verbose)
    except Terminated:
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _quiet_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # stdout is no file (captured, closed)
        pass
    finally:
        os.close(devnull)


def _fail(error: BaseException, message: str, code: int, verbose: bool) -> int:
    if verbose:
        log.error("failed", exc_info=error)
    print(f"error: {redact(_one_line(message, limit=2000))}", file=sys.stderr)
    return code


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, file=None) -> None:
    """A plain aligned text table (no dependency, pipes cleanly)."""
    file = file or sys.stdout
    if not rows:
        print("(none)", file=file)
        return
    columns = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)), file=file)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)), file=file)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
