"""What a path named on a command line must be before it is used: a file to read is a
regular file that exists; a folder to write in is a folder, or can be made one. A folder, a
device (``/dev/zero`` never ends) or a pipe (opening one waits for a writer) would otherwise
hang a command or fill its memory, and a folder that cannot be made would be found only
when the work is done and its results are written.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from der_core.errors import ConfigError


def _said(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "is a loop of symbolic links"
    return error.strerror or str(error)  # a name too long for the file system, a folder not searchable


def input_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an input file (``not found``, ``is a folder``, ...), or
    None when it is a regular file. Follows symbolic links, as opening it would."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as error:
        return _said(error)
    except ValueError:  # a NUL character: no file system names a file so
        return "holds a NUL character"
    if stat.S_ISDIR(mode):
        return "is a folder"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a device or a pipe)"
    return None


def folder_problem(path: str | Path, writable: bool = False) -> str | None:
    """Why no folder can be written in at ``path`` (it is a file, a file stands where one of
    its folders would be, ...), or None when it is a folder or can be made one. ``writable``:
    also when the folder, or the one it would be made in, refuses this process's writes (its
    permissions, a read-only file system), which a folder only read from may do."""
    target = Path(path)
    for place in (target, *target.parents):
        try:
            mode = place.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue  # not there yet, or below a file: the place above says which
        except OSError as error:
            return _said(error)
        except ValueError:
            return "holds a NUL character"
        if stat.S_ISDIR(mode):
            if writable and not os.access(place, os.W_OK | os.X_OK):
                return "cannot be written in" if place == target else f"{place} cannot be written in"
            return None
        what = "a file" if stat.S_ISREG(mode) else "a device or a pipe"
        return f"is {what}, not a folder" if place == target else f"{place} is {what}, not a folder"
    return None


def read_input(path: str | Path, limit: int, where: str, expected: str) -> bytes:
    """The bytes of the input file at ``path``: a regular file (:func:`input_problem`) of at
    most ``limit`` bytes, read no further than that (a file that grows while read stops
    there). Else a :class:`ConfigError` ``"{where}: {what is wrong}; expected {expected}"``."""
    problem = input_problem(path)
    if problem is not None:
        raise ConfigError(f"{where}: {problem}; expected {expected}")
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise ConfigError(f"{where}: cannot be read ({error.strerror}); expected {expected}") from None
    if len(data) > limit:
        raise ConfigError(f"{where}: larger than {limit / 2**20:g} MiB; expected {expected}")
    return data
