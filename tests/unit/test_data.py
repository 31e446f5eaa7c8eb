"""Reading activity history: time-ordered, deduplicated, labelled payments, and clear errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from sds.kernel.features import parse_time
from training.data import LABEL, DataError, read_history, write_jsonl
from training.synthetic import generate_activity


def _payments(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == "payment"]


# Reading history ------------------------------------------------------------------------------


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_given_a_file_then_read_history_returns_events_times_and_labelled_payments(
    tmp_path: Path,
) -> None:
    records = generate_activity(200, seed=2)
    history = read_history(write_jsonl(records, tmp_path / "h.jsonl"))

    assert len(history.events) == len(records)
    assert [e["event_id"] for e in history.payment_events] == [
        r["event_id"] for r in _payments(records)
    ]
    assert history.labels == [r[LABEL] for r in _payments(records)]
    assert history.times.tolist() == [parse_time(r["occurred_at"]) for r in records]
    assert all(LABEL not in e for e in history.events)  # the label is not an event field
    assert history.timestamp(0) == _payments(records)[0]["occurred_at"]
    assert history.sources == [str(tmp_path / "h.jsonl")]


def test_given_a_directory_of_plain_and_gz_files_out_of_order_then_history_is_merged_in_time_order(
    tmp_path: Path,
) -> None:
    records = generate_activity(300, seed=4)
    third = len(records) // 3
    # Later events in the first file name, earlier ones in a gzipped file and a subdirectory.
    write_jsonl(records[2 * third :], tmp_path / "data" / "a.jsonl")
    write_jsonl(records[:third], tmp_path / "data" / "b.jsonl.gz")
    write_jsonl(list(reversed(records[third : 2 * third])), tmp_path / "data" / "sub" / "c.jsonl")
    (tmp_path / "data" / "notes.txt").write_text("not history")

    history = read_history(tmp_path / "data")

    assert [e["event_id"] for e in history.events] == [r["event_id"] for r in records]
    assert history.labels == [r[LABEL] for r in _payments(records)]
    assert len(history.sources) == 3


def test_a_redelivered_event_counts_once_and_a_conflicting_one_is_refused(tmp_path: Path) -> None:
    records = generate_activity(50, seed=6)
    history = read_history(write_jsonl([*records, records[3], records[7]], tmp_path / "h.jsonl"))
    assert len(history.events) == len(records) and history.duplicates == 2

    other = {**records[3], "occurred_at": "2026-01-01T00:00:00Z"}
    path = write_jsonl([*records, other], tmp_path / "bad.jsonl")
    assert _error(path) == (
        f"{path}:{len(records) + 1}: event {records[3]['event_id']} appears twice with "
        "different content"
    )
    # A copy labelled otherwise is a conflict too (the batch runs' reader refuses it), not a
    # relabel by whichever line comes last
    paid = next(r for r in records if r["type"] == "payment")
    relabelled = {**paid, LABEL: not paid[LABEL]}
    path = write_jsonl([*records, relabelled], tmp_path / "relabelled.jsonl")
    assert _error(path) == (
        f"{path}:{len(records) + 1}: event {paid['event_id']} appears twice with different content"
    )


def test_given_blank_lines_then_they_are_skipped(tmp_path: Path) -> None:
    first, second = (json.dumps(r) for r in _payments(generate_activity(2, seed=1))[:2])
    history = read_history(_write_lines(tmp_path / "h.jsonl", ["", first, "   ", second]))

    assert len(history.events) == 2


def test_the_fingerprint_is_stable_across_reads_and_locations_and_changes_with_content(
    tmp_path: Path,
) -> None:
    records = _payments(generate_activity(100, seed=8))
    first = read_history(write_jsonl(records, tmp_path / "one" / "h.jsonl")).fingerprint
    again = read_history(tmp_path / "one" / "h.jsonl").fingerprint
    elsewhere = read_history(write_jsonl(records, tmp_path / "two" / "h.jsonl")).fingerprint
    changed_record = {**records[50], "amount": records[50]["amount"] + 1}
    changed = read_history(
        write_jsonl([*records[:50], changed_record, *records[51:]], tmp_path / "three" / "h.jsonl")
    ).fingerprint

    assert len(first) == 64
    assert first == again == elsewhere
    assert changed != first


def test_given_the_same_events_in_different_files_then_the_fingerprint_differs(
    tmp_path: Path,
) -> None:
    """The fingerprint is of the bytes the model was trained from, including how they were split."""
    records = generate_activity(100, seed=8)
    whole = read_history(write_jsonl(records, tmp_path / "a" / "h.jsonl"))
    write_jsonl(records[:50], tmp_path / "b" / "h1.jsonl")
    write_jsonl(records[50:], tmp_path / "b" / "h2.jsonl")
    split = read_history(tmp_path / "b")

    assert split.events == whole.events
    assert split.fingerprint != whole.fingerprint


# Clear errors -----------------------------------------------------------------------------------


def _error(location: Path) -> str:
    with pytest.raises(DataError) as caught:
        read_history(location)
    message = str(caught.value)
    assert "\n" not in message
    return message


def _good_line() -> str:
    return json.dumps(_payments(generate_activity(1, seed=1))[0])


def test_given_bad_json_then_the_error_names_file_and_line(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "h.jsonl", [_good_line(), "", '{"amount": 1,'])

    assert (
        _error(path)
        == f"{path}:3: invalid JSON (Expecting property name enclosed in double quotes)"
    )


def test_given_an_invalid_field_then_the_error_names_file_line_and_field(tmp_path: Path) -> None:
    bad = {**json.loads(_good_line()), "hour_of_day": 31}
    path = _write_lines(tmp_path / "h.jsonl", [_good_line(), _good_line(), json.dumps(bad)])

    assert _error(path) == f"{path}:3.hour_of_day: must be <= 23"


TIME_REASON = "must be an ISO 8601 time with a time zone, e.g. 2026-03-01T12:00:00Z"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"occurred_at": None}, f"occurred_at: {TIME_REASON}"),
        ({"occurred_at": "yesterday"}, f"occurred_at: {TIME_REASON}"),
        ({"occurred_at": "2026-01-01T00:00:00"}, f"occurred_at: {TIME_REASON}"),
        ({LABEL: "no"}, f"{LABEL}: a payment's label must be true or false"),
        ({"surprise": 1}, "surprise: is not a known field"),
        ({"type": "refund"}, "type: 'refund' is not one of payment, login"),
        (
            {"txn_count_last_1h": 3},
            "txn_count_last_1h: is computed by sds from the account's events (logins, "
            "payments) and must not be sent",
        ),
    ],
)
def test_given_a_bad_record_field_then_the_error_names_it(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    record = {**json.loads(_good_line()), **change}
    path = _write_lines(tmp_path / "h.jsonl", [json.dumps(record)])

    assert _error(path) == f"{path}:1.{expected}"


def test_given_a_missing_time_then_the_error_names_file_and_line(tmp_path: Path) -> None:
    record = json.loads(_good_line())
    del record["occurred_at"]
    path = _write_lines(tmp_path / "h.jsonl", [_good_line(), json.dumps(record)])

    assert _error(path) == f"{path}:2.occurred_at: is required"


def test_labels_belong_to_payments_only(tmp_path: Path) -> None:
    unlabelled = {k: v for k, v in json.loads(_good_line()).items() if k != LABEL}
    login = {
        "type": "login",
        "event_id": "l-1",
        "account_id": "a",
        "occurred_at": "2026-01-01T00:00:00Z",
        "outcome": "failure",
    }
    assert _error(_write_lines(tmp_path / "a.jsonl", [json.dumps(unlabelled)])).endswith(
        f":1.{LABEL}: a payment's label must be true or false"
    )
    labelled_login = _write_lines(tmp_path / "b.jsonl", [json.dumps({**login, LABEL: True})])
    assert _error(labelled_login).endswith(f":1.{LABEL}: only payments are labelled")
    logins_only = _write_lines(tmp_path / "c.jsonl", [json.dumps(login)])
    assert _error(logins_only) == f"{logins_only}: no payments among 1 events"


def test_given_bad_json_inside_a_gz_file_then_the_error_names_the_gz_file_and_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.jsonl.gz"
    path.write_bytes(gzip.compress((_good_line() + "\nnot json\n").encode()))

    assert _error(path).startswith(f"{path}:2: invalid JSON")


@pytest.mark.parametrize(
    "payload",
    [b"not gzip at all", gzip.compress(b'{"a": 1}\n' * 100)[:30], b"\x1f\x8b\x08\x00garbage"],
    ids=["not-gzip", "truncated", "corrupt"],
)
def test_given_a_broken_gz_file_then_the_error_names_the_file(
    tmp_path: Path, payload: bytes
) -> None:
    path = tmp_path / "h.jsonl.gz"
    path.write_bytes(payload)

    assert _error(path).startswith(f"{path}: not a valid gzip file")


def test_given_a_line_that_is_not_utf8_then_the_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(_good_line().encode() + b'\n{"currency": "\xff"}\n')

    assert _error(path) == f"{path}:2: not valid UTF-8"


def test_given_a_number_too_long_to_parse_then_the_error_names_file_and_line(
    tmp_path: Path,
) -> None:
    path = _write_lines(tmp_path / "h.jsonl", ['{"amount": ' + "9" * 5000 + "}"])

    assert _error(path).startswith(f"{path}:1: invalid JSON")


def test_given_a_gzip_file_named_jsonl_then_the_error_says_so_and_what_to_call_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(gzip.compress((_good_line() + "\n").encode()))

    assert _error(path) == (
        f"{path}: gzip-compressed, but its name does not end in .gz: rename it h.jsonl.gz"
    )


def test_given_nothing_to_read_then_the_error_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    blank = _write_lines(tmp_path / "blank.jsonl", ["", ""])

    assert (
        _error(tmp_path / "nope.jsonl")
        == f"{tmp_path / 'nope.jsonl'}: no such file, folder or prefix"
    )
    assert _error(tmp_path / "empty") == f"{tmp_path / 'empty'}: no .jsonl or .jsonl.gz files"
    assert _error(blank) == f"{blank}: no events"
