"""What every command prints the same way: JSON documents, tables, values, and errors.

Errors are one line on stderr, `sds: <label>: <message>` (`one_line`: whitespace collapsed, raw
XML or HTML bodies cut to the error code and message they carry); with `--json` the same error is also a
document on stdout, `{"error": {"message", "type", "exit_code"}}` plus whatever fields the error
adds itself (`SdsError.details`, e.g. a failed promotion's gates). An interruption (Ctrl-C,
SIGTERM) is reported the same way (`report_interruption`), type `KeyboardInterrupt` or
`Terminated`.

A command with a result to report that failed all the same (a deletion refused among several
done, an environment it could not read among those it lists) prints its report and raises a
`FailedResult`: reported as every error, its `--json` document is the result's fields with
"error" among them, never a result without it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from sds.kernel.aws.errors import one_line
from sds.kernel.errors import EXIT_ERROR, SdsError
from sds.kernel.signals import stop_reason


class FailedResult(SdsError):
    """A command's result that is an error too: part of the work done and part not, or part of
    what the report needed not read. The command prints its text report, then raises this, with
    the document `--json` would have printed (`result`): `main` reports it as every error, one
    line on stderr and the exit code, and with `--json` the result's fields next to "error".
    A subclass names the failure (the `--json` type)."""

    def __init__(self, message: str, result: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.result = dict(result)

    def details(self) -> dict[str, Any]:
        return dict(self.result)


class Unreadable(FailedResult):
    """Something a report needed could not be read (an environment unreachable, models.lock.json,
    a corrupt registry alias): the report says what it could, and the command fails, so a script
    never takes "could not look" for "all fine"."""


def unreachable(causes: Mapping[str, str]) -> list[str]:
    """Each environment of `causes` that could not be reached, with why, as a phrase; those with
    the same cause (no credentials, say) in one: "dev and prod are unreachable: ..."."""
    by_cause: dict[str, list[str]] = {}
    for env, cause in causes.items():
        by_cause.setdefault(cause, []).append(env)
    return [
        f"{listing(envs)} {'is' if len(envs) == 1 else 'are'} unreachable: {cause}"
        for cause, envs in by_cause.items()
    ]


def listing(names: list[str]) -> str:
    """`names` as a phrase: "dev", "dev and prod", "dev, staging and prod"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, sort_keys=True, default=str))


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Left-aligned columns as wide as their widest cell, two spaces apart."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return "\n".join(lines)


def fmt(value: Any, digits: int = 4) -> str:
    """A metric or value for a table cell: floats to `digits` places, None as "-"."""
    return (
        f"{value:.{digits}f}"
        if isinstance(value, float)
        else ("-" if value is None else str(value))
    )


def error_document(exc: BaseException) -> dict[str, Any]:
    """The `--json` report of `exc`: an SdsError's own (with its details), else the bare error;
    its message on one line, as on stderr."""
    document = (
        exc.to_dict()
        if isinstance(exc, SdsError)
        else {"error": {"message": str(exc), "type": type(exc).__name__, "exit_code": EXIT_ERROR}}
    )
    document["error"]["message"] = one_line(str(document["error"]["message"]))
    return document


def report_error(exc: BaseException, *, as_json: bool, label: str | None = None) -> int:
    """Print `exc` (one line on stderr, and a JSON document on stdout with --json) and return
    its exit code: an SdsError's own, else 1. `label` overrides how stderr introduces it. The
    line comes first: it is said even when the document's reader has gone (BrokenPipeError)."""
    code = exc.exit_code if isinstance(exc, SdsError) else EXIT_ERROR
    if label is None:
        label = exc.label if isinstance(exc, SdsError) else "error"
    print(f"sds: {label}: {one_line(str(exc))}", file=sys.stderr)
    if as_json:
        print_json(error_document(exc))
    return code


def report_interruption(exc: KeyboardInterrupt, *, as_json: bool) -> int:
    """Print how a command was stopped (Ctrl-C or SIGTERM, and what it says about resuming), as
    `report_error` prints an error, and return its exit code (130 or 143)."""
    how, code = stop_reason(exc)
    message = one_line(str(exc))
    print(f"sds: {how}: {message}" if message else f"sds: {how}", file=sys.stderr)
    if as_json:
        print_json(
            {"error": {"message": message or how, "type": type(exc).__name__, "exit_code": code}}
        )
    return code
