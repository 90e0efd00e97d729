"""A mistake the user can fix, said in their terms: what happened, and the one step that fixes it.

The core raises `UserError` where it knows both; `geoloc` (cli.main) prints it as one message and exits with
status 2, and a page shows it as it is. It is a ValueError, so code that already catches those keeps working.
"""

from __future__ import annotations


class UserError(ValueError):
    """`message`: what happened, in the user's terms; `hint`: the next step (a command, a flag, a change)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message, hint)
        self.message, self.hint = message, hint

    def __str__(self) -> str:
        return f"{self.message}. {self.hint}" if self.hint else self.message
