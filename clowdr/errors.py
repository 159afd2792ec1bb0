"""Typed exceptions: deep code raises these, the CLI turns them into one line and an exit status."""
from __future__ import annotations

import tempfile


class ClowdrError(Exception):
    """Base class of every error clowdr reports to the user."""

    exit_status = 1


class InputError(ClowdrError):
    """Bad input from the user (a file, a field, an option): nothing was launched; exit status 2."""

    exit_status = 2

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where


class NotAvailableError(ClowdrError):
    """A mode that exists in the CLI for compatibility but is not implemented yet."""

    exit_status = 2


class LaunchStopped(ClowdrError):
    """A launch stopped before every task had finished: by a signal (Ctrl-C, SIGTERM, SIGHUP) or by its owner
    (``RunHandle.cancel``). Its tasks without a summary are left for ``--rerun incomplete``."""

    def __init__(self, message: str, run_id: str = "", signal_number: int | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.signal_number = signal_number
        self.exit_status = 128 + (signal_number or 2)


class RecordError(ClowdrError):
    """The provenance record cannot be written (a full or read-only disk): the launch ends, what is written
    stays whole, and tasks without a summary can be run again with ``--rerun incomplete``."""

    def __init__(self, path: object, error: OSError) -> None:
        super().__init__(f"cannot write the provenance record: {path}: {error.strerror or error}")
        self.path = path
        self.error = error
        self.run_id = ""          # the run it happened in, once known


class ScratchError(ClowdrError):
    """clowdr's own temporary files cannot be written (the system's temporary directory is full or read-only):
    nothing was written to the run or launched."""

    def __init__(self, what: str, error: OSError) -> None:
        super().__init__(f"cannot keep {what} in the temporary directory {tempfile.gettempdir()}: "
                         f"{error.strerror or error} (set TMPDIR to choose another)")
