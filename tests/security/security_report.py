"""Counts the security suites measure, collected during the run and printed at the end.

Tests call `record(suite, key, n)`; `tests/security/conftest.py` prints every suite's counts in
pytest's terminal summary (whatever `-s`/`-q` says), so a CI log or a `make test` run shows how
many hostile requests were sent, what they got back, and how many faults were injected.
"""

from __future__ import annotations

from collections import Counter

COUNTS: dict[str, Counter[str]] = {}


def record(suite: str, key: str, n: int = 1) -> None:
    COUNTS.setdefault(suite, Counter())[key] += n


def merge(suite: str, counts: Counter[str] | dict[str, int]) -> None:
    for key, n in counts.items():
        record(suite, key, n)


def summary_lines() -> list[str]:
    lines = []
    for suite in sorted(COUNTS):
        counts = COUNTS[suite]
        parts = ", ".join(f"{key}: {counts[key]}" for key in sorted(counts))
        lines.append(f"{suite}: {parts}")
    return lines
