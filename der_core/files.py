"""What a file named on a command line must be before it is read: a regular file that
exists. A folder, a device (``/dev/zero`` never ends) or a pipe (opening one waits for a
writer) would otherwise hang a command or fill its memory before any error could be said.
"""

from __future__ import annotations

import errno
import stat
from pathlib import Path


def input_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an input file (``not found``, ``is a folder``, ...), or
    None when it is a regular file. Follows symbolic links, as opening it would."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a loop of symbolic links"
        return error.strerror or str(error)  # a name too long for the file system, a folder not searchable
    except ValueError:  # a NUL character: no file system names a file so
        return "holds a NUL character"
    if stat.S_ISDIR(mode):
        return "is a folder"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a device or a pipe)"
    return None


def read_bounded(path: str | Path, limit: int) -> bytes | None:
    """The bytes of the file at ``path``, or None when it holds more than ``limit``: a file
    that grows while read is read no further than that."""
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    return None if len(data) > limit else data
