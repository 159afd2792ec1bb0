"""Typed exceptions: deep code raises these, the CLI turns them into one line and an exit status."""
from __future__ import annotations


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
