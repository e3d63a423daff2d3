"""Exceptions that the CLI turns into one-line messages and exit codes."""

from __future__ import annotations

import os


class WmhkitError(Exception):
    """Base class of every error wmhkit reports to a user without a traceback."""

    exit_code = 1


class InputError(WmhkitError):
    """An input file is missing, unreadable or not what the command needs (CLI exit code 2)."""

    exit_code = 2

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if self.path is None else f"{self.path}: {problem}")


class OutputExistsError(InputError):
    """An output file exists and the user did not pass --force."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, "output exists; pass --force to overwrite it")
