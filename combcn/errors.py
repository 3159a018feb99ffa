"""The exceptions combcn raises for problems a user can fix.

Every error a user can cause (bad file, missing frame, wrong channel, bad option) is a
:class:`CombcnError`. The command line prints its message and exits non-zero without a
traceback; anything else escaping is a bug in combcn and keeps its traceback.

Messages say what is wrong, where (file and frame when known) and what to do.
"""

from __future__ import annotations

from pathlib import Path


class CombcnError(Exception):
    """Base class of every user-facing combcn error.

    Args:
        message: what is wrong and what to do about it.
        path: the file concerned, if any.
        frame: the frame number concerned, if any.
    """

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, frame: int | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.frame = frame
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.frame is not None:
            where.append(f"frame {self.frame}")
        prefix = f"{', '.join(where)}: " if where else ""
        return prefix + self.message


class InputError(CombcnError):
    """The plate, matte or another input cannot be used as given (missing, unreadable, mismatched)."""


class ConfigError(CombcnError):
    """An option, config file or parameter is invalid."""


class OutputError(CombcnError):
    """The output cannot be written where asked (exists, not writable, would overwrite the input)."""


class ModelError(CombcnError):
    """Weights cannot be loaded or do not match the model."""


class BackendError(CombcnError):
    """A requested compute backend (e.g. CUDA) is not available."""
