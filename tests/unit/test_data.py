"""Synthetic events and reading history: deterministic files, a learnable signal, clear errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from sds.kernel.features import validate_event
from training.data import LABEL, DataError, generate_events, read_history, write_jsonl


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return generate_events(20_000, seed=5)


# Generator --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["history.jsonl", "history.jsonl.gz"])
def test_given_the_same_seed_then_the_written_files_are_byte_identical(
    tmp_path: Path, name: str
) -> None:
    first = write_jsonl(generate_events(500, seed=42), tmp_path / "a" / name).read_bytes()
    second = write_jsonl(generate_events(500, seed=42), tmp_path / "b" / name).read_bytes()
    other = write_jsonl(generate_events(500, seed=43), tmp_path / "c" / name).read_bytes()

    assert first == second
    assert first != other


def test_given_a_gz_name_then_the_file_is_gzip_of_the_plain_jsonl(tmp_path: Path) -> None:
    events = generate_events(50, seed=1)
    plain = write_jsonl(events, tmp_path / "h.jsonl").read_bytes()
    packed = write_jsonl(events, tmp_path / "h.jsonl.gz").read_bytes()

    assert packed[:2] == b"\x1f\x8b"
    assert gzip.decompress(packed) == plain


def test_generated_events_are_valid_time_ordered_and_uniquely_identified(
    events: list[dict[str, Any]],
) -> None:
    for record in events[:2000]:
        assert validate_event(record, extra_fields=("event_id", "timestamp", LABEL)) == []
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)
    assert len({e["event_id"] for e in events}) == len(events)


def test_generated_history_has_a_few_percent_fraud(events: list[dict[str, Any]]) -> None:
    rate = sum(e[LABEL] for e in events) / len(events)

    assert 0.01 <= rate <= 0.06


def _rate(events: list[dict[str, Any]]) -> float:
    assert events, "the slice is empty: the generator lost the pattern this test looks for"
    return sum(e[LABEL] for e in events) / len(events)


def test_generated_fraud_follows_the_signals_an_analyst_looks_at(
    events: list[dict[str, Any]],
) -> None:
    overall = _rate(events)
    new_device_abroad = _rate(
        [e for e in events if e["is_new_device"] and e["country"] != e["card_country"]]
    )
    familiar_at_home = _rate(
        [e for e in events if not e["is_new_device"] and e["country"] == e["card_country"]]
    )
    many_failed_logins = _rate([e for e in events if e["num_failed_logins_last_24_hours"] >= 3])

    assert new_device_abroad > 3 * overall
    assert familiar_at_home < overall
    assert many_failed_logins > 3 * overall


def test_given_n_below_one_then_generation_is_refused() -> None:
    with pytest.raises(ValueError, match="n must be >= 1"):
        generate_events(0)


# Reading history ------------------------------------------------------------------------------


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_given_a_file_then_read_history_returns_events_labels_and_times_without_record_fields(
    tmp_path: Path,
) -> None:
    records = generate_events(200, seed=2)
    history = read_history(write_jsonl(records, tmp_path / "h.jsonl"))

    assert len(history.events) == 200
    assert history.labels == [r[LABEL] for r in records]
    assert history.timestamps == [r["timestamp"] for r in records]
    assert set(history.events[0]) == set(records[0]) - {"event_id", "timestamp", LABEL}
    assert history.sources == [str(tmp_path / "h.jsonl")]


def test_given_a_directory_of_plain_and_gz_files_out_of_order_then_history_is_merged_in_time_order(
    tmp_path: Path,
) -> None:
    records = generate_events(300, seed=4)
    # Later events in the first file name, earlier ones in a gzipped file and a subdirectory.
    write_jsonl(records[200:], tmp_path / "data" / "a.jsonl")
    write_jsonl(records[:100], tmp_path / "data" / "b.jsonl.gz")
    write_jsonl(list(reversed(records[100:200])), tmp_path / "data" / "sub" / "c.jsonl")
    (tmp_path / "data" / "notes.txt").write_text("not history")

    history = read_history(tmp_path / "data")

    assert history.timestamps == [r["timestamp"] for r in records]
    assert history.labels == [r[LABEL] for r in records]
    assert len(history.sources) == 3


def test_given_blank_lines_then_they_are_skipped(tmp_path: Path) -> None:
    record = json.dumps(generate_events(1, seed=1)[0])
    history = read_history(_write_lines(tmp_path / "h.jsonl", ["", record, "   ", record]))

    assert len(history.events) == 2


def test_the_fingerprint_is_stable_across_reads_and_locations_and_changes_with_content(
    tmp_path: Path,
) -> None:
    records = generate_events(100, seed=8)
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
    records = generate_events(100, seed=8)
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
    return json.dumps(generate_events(1, seed=1)[0])


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


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"timestamp": None}, "timestamp: must be an ISO 8601 time"),
        ({"timestamp": "yesterday"}, "timestamp: must be an ISO 8601 time"),
        ({"timestamp": "2026-01-01T00:00:00"}, "timestamp: must carry a time zone (e.g. 'Z')"),
        ({LABEL: "no"}, f"{LABEL}: must be true or false"),
        ({"surprise": 1}, "surprise: is not a known field"),
    ],
)
def test_given_a_bad_record_field_then_the_error_names_it(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    record = {**json.loads(_good_line()), **change}
    path = _write_lines(tmp_path / "h.jsonl", [json.dumps(record)])

    assert _error(path) == f"{path}:1.{expected}"


def test_given_a_missing_timestamp_then_the_error_names_file_and_line(tmp_path: Path) -> None:
    record = json.loads(_good_line())
    del record["timestamp"]
    path = _write_lines(tmp_path / "h.jsonl", [_good_line(), json.dumps(record)])

    assert _error(path) == f"{path}:2.timestamp: must be an ISO 8601 time"


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


def test_given_nothing_to_read_then_the_error_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    blank = _write_lines(tmp_path / "blank.jsonl", ["", ""])

    assert (
        _error(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: no such file or directory"
    )
    assert _error(tmp_path / "empty") == f"{tmp_path / 'empty'}: no .jsonl or .jsonl.gz files"
    assert _error(blank) == f"{blank}: no events"
