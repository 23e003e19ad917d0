"""One exception type for every problem a user can fix.

Why: the CLI turns these into a single line ("error: <problem>. Fix: <fix>") and exit code 2,
so bad input never ends in a traceback. Library callers catch the same type.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class ClinicalTransferError(Exception):
    """A problem with the user's input, stated with what to do about it."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem.rstrip(".")
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.problem}."
        if self.fix:
            text += f" Fix: {self.fix.rstrip('.')}."
        return text


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none (a one-line reason)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@contextmanager
def reading(what: str, fix: str):
    """Turn a damaged or incomplete file of the project's own outputs into one :class:`ClinicalTransferError`.

    Why: stores, dumps and run folders are written by this package, but disks fill, copies stop half way and
    files get deleted; reading them then fails deep inside numpy, pyarrow or json. ``what`` names the
    file or folder for the user, ``fix`` says how to get a good one (usually: write it again).
    """
    try:
        yield
    except ClinicalTransferError:
        raise
    except (OSError, ValueError, EOFError, KeyError, IndexError) as exc:  # json/pyarrow errors are ValueErrors
        detail = first_line(exc)
        if isinstance(exc, FileNotFoundError):
            detail = f"missing file {Path(exc.filename).name if exc.filename else ''}".rstrip()
        raise ClinicalTransferError(f"{what} is damaged or incomplete: {detail}", fix) from exc


def named(path: Path, load: Callable[[Path], T]) -> T:
    """``load(path)``, with a parse error prefixed by the file's name (for :func:`reading`'s message)."""
    try:
        return load(Path(path))
    except (ValueError, EOFError) as exc:
        raise ValueError(f"{Path(path).name}: {first_line(exc)}") from exc


def read_json(path: Path) -> dict:
    """A JSON file of the project's outputs (an invalid one named, see :func:`named`)."""
    return named(path, lambda p: json.loads(p.read_text()))
