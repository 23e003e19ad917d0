"""One exception type for every problem a user can fix.

Why: the CLI turns these into a single line ("error: <problem>. Fix: <fix>") and exit code 2,
so bad input never ends in a traceback. Library callers catch the same type.
"""

from __future__ import annotations


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
