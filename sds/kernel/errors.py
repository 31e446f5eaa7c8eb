"""Errors that say what they mean to the caller: the `sds` exit code and, where one applies, an
HTTP status.

Every error sds raises on purpose derives from `SdsError` and declares its `exit_code` by
inheriting it, the way mlflow's `MlflowException` carries an error code
(`mlflow/exceptions.py`): `Refused` for "deliberately not done, nothing changed" (3), `UsageError`
for a command line that cannot work (2), everything else an error (1). The CLI's `main` catches
`SdsError` and exits with `exc.exit_code`; it never matches class names. A subclass adds fields
to the `--json` error report through `details()`.

Exit codes (as `sds --help`, the README and docs/runbook.md document them): 0 done (or nothing to
do), 1 error, 2 usage error, 3 refused (a promotion gate failed, a concurrent change won, a
rollback's target was never served by that environment or its Lambda version cannot serve, or a
batch run's --out holds another run (of other input, say) or other files, with --aws too).

The wording of counts in messages lives here too, beside the errors that carry most of them, so
the Lambda functions word them as the CLI does without importing it: `counted(2, "problem")` is
"2 problems", `plural(1, "key")` is "key"; never "problem(s)".
"""

from __future__ import annotations

from typing import Any, ClassVar

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3


def plural(n: int, noun: str) -> str:
    """`key` for a count of one, `keys` for any other (0 too): for a noun before a list of names,
    as in "unknown keys a, b". Every noun sds counts takes an -s."""
    return noun if n == 1 else f"{noun}s"


def counted(n: int, noun: str) -> str:
    """`1 part`, `2 parts`, `0 parts`: a count and its noun, in the singular for one only."""
    return f"{n} {plural(n, noun)}"


class SdsError(Exception):
    """An error sds expects and explains: the message is one line that names the problem."""

    exit_code: ClassVar[int] = EXIT_ERROR
    http_status: ClassVar[int] = 500
    label: ClassVar[str] = "error"
    """How the CLI introduces the message on stderr: `sds: <label>: <message>`."""

    def details(self) -> dict[str, Any]:
        """Fields a `--json` error report carries next to "error" (none unless a subclass adds)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        """The `--json` error report: `{..details, "error": {"message", "type", "exit_code"}}`."""
        return {
            **self.details(),
            "error": {
                "message": str(self),
                "type": type(self).__name__,
                "exit_code": self.exit_code,
            },
        }


class Refused(SdsError):
    """Deliberately not done, and nothing was changed: a gate failed or a concurrent change won.
    Every refusal says so on stderr (`sds: refused: ...`), as its exit code (3) does."""

    exit_code = EXIT_REFUSED
    http_status = 409
    label = "refused"


class UsageError(SdsError):
    """The command line cannot work as given (a missing or invalid argument)."""

    exit_code = EXIT_USAGE
    http_status = 400


class Unavailable(SdsError):
    """The service cannot answer now (no model, or the function is misconfigured)."""

    http_status = 503
