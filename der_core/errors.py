"""Named exceptions the library raises; CLIs map each to one line and an exit code.

Exit codes follow DESIGN.md: 2 for usage and configuration errors, 1 for runtime failures.
"""


class DERError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = 1


class UsageError(DERError):
    """A command line, date or option that cannot be used as given."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file or variable that fails validation."""


class StoreError(DERError):
    """A store (SQLite, InfluxDB, Postgres, Supabase) could not be read or written."""


class StoreUnavailable(StoreError):
    """A store's server could not be reached; the operation may succeed later."""


class ValidationFailed(DERError):
    """Data (a row, a command) failed validation."""


class StorePathError(UsageError, StoreError):
    """A store file that cannot be created or opened where the user asked for it: the user's
    to correct (exit 2), and still a store error to whoever handles those."""
