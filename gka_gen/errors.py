"""The one error type a user ever sees from the compiler front end."""
from __future__ import annotations


class SpecError(Exception):
    """A spec is wrong. Carries the file, the field (dotted path) and the reason.

    The CLI prints ``str(err)`` and exits 2; nothing else about the failure is shown,
    because a spec is untrusted input and a traceback would only help an attacker or
    confuse a user.
    """

    def __init__(self, reason: str, *, file: str | None = None, field: str | None = None):
        self.reason = reason
        self.file = file
        self.field = field
        super().__init__(str(self))

    def at(self, *, file: str | None = None, field: str | None = None) -> "SpecError":
        """The same error with a file and/or an outer field prefix filled in."""
        if field and self.field:
            field = f"{field}.{self.field}" if not self.field.startswith(field) else self.field
        return SpecError(self.reason, file=self.file or file, field=field or self.field)

    def __str__(self) -> str:
        where = self.file or "<spec>"
        if self.field:
            where += f": {self.field}"
        return f"{where}: {self.reason}"
