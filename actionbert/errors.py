"""Expected errors: the user asked for something that cannot be done as asked (not a bug in actionbert).

The command line prints such an error as one `error: ...` line (the message names the problem and the fix)
and exits with its `exit_code` (2); any other exception is a bug and is shown with its traceback. The classes
also derive from the built-in type a caller would catch (ValueError, FileNotFoundError, OSError), so library
users can keep catching those.
"""

from __future__ import annotations

EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR, EXIT_BUG = 0, 1, 2, 3


class ActionbertError(Exception):
    """Base of the expected errors; the CLI shows `error: <message>` and exits with `exit_code`."""

    exit_code = EXIT_ERROR


class UsageError(ActionbertError, ValueError):
    """Arguments, config values or run-folder choices that cannot be honoured."""


class DataError(ActionbertError, ValueError):
    """A dataset, video list or file whose content cannot be used."""


class MissingFileError(DataError, FileNotFoundError):
    """A file the command needs does not exist."""


class StorageError(ActionbertError, OSError):
    """A file could not be written (no space left, no permission, ...); the message names the file."""


class DistributedError(ActionbertError, RuntimeError):
    """A process of a multi-process (torchrun) run stopped answering or went away."""
