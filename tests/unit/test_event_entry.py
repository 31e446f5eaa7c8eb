"""Where events enter: `POST /events` (the local API, over real HTTP), `sds ingest FILE` (the
CLI), and the training and batch readers. All share one gate with /predict: an input with a
problem (not JSON, nested too deeply, a string that is not valid Unicode, one event id with two
contents) is refused whole with an answer that names the problem, and nothing of it is stored;
an exact copy of an event is a redelivery, counted once. Across inputs too: an event id the
feature store already holds with other content refuses the later input (409, or an error from
`sds ingest`), while a plain copy of a stored event is a silent, counted duplicate."""

from __future__ import annotations

import http.client
import json
import logging
import re
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sds.cli.main import main
from sds.kernel.batch.shuffle import HistoryError, parse_event
from sds.kernel.features import NOT_UNICODE
from sds.kernel.featurestore import FeatureStoreError, open_feature_store
from sds.kernel.online import OnlineFeatures
from sds.ops.capture_store import LabelFiles
from sds.ops.local_api import LocalApi, PinnedApps
from training.data import DataError, read_history
from training.synthetic import LABEL, generate_activity

ROOT = Path(__file__).resolve().parents[2]
NESTED = b'{"events": ' + b"[" * 2000 + b"]" * 2000 + b"}"


def activity(count: int, *, seed: int = 7) -> list[dict[str, Any]]:
    """Valid activity events (logins and payments), without training labels."""
    records = generate_activity(count, seed=seed)[:count]
    return [{k: v for k, v in e.items() if k != LABEL} for e in records]


def failed_login(event_id: str, account: str = "acct", *, ago: int = 60) -> dict[str, Any]:
    """A failed login `ago` seconds before now: one the aggregates read, so its id is recorded."""
    at = datetime.now(UTC) - timedelta(seconds=ago)
    return {
        "type": "login",
        "event_id": event_id,
        "account_id": account,
        "occurred_at": at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "outcome": "failure",
    }


def stored_event_ids(database: Path) -> int:
    """How many event ids the SQLite feature store recorded (0 if it was never created)."""
    if not database.exists():
        return 0
    with sqlite3.connect(database) as connection:
        return int(connection.execute("select count(*) from events").fetchone()[0])


# POST /events ------------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LocalApi]:
    """The local API with a feature store and a labels folder, and no model pinned."""
    apps = PinnedApps(
        lock_path=tmp_path / "models.lock.json",
        model="fraud",
        env="dev",
        registry_uri=f"file://{tmp_path / 'registry'}",
        max_events=100,
        max_body_bytes=262_144,
        feature_store_uri=f"sqlite://{tmp_path / 'features.db'}",
        labels=LabelFiles(tmp_path / "labels"),
    )
    server = LocalApi(apps).start()
    yield server
    server.stop()


def post_events(api: LocalApi, body: bytes) -> tuple[int, Any]:
    host, port = api.server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), int(port), timeout=15)
    try:
        connection.request("POST", "/events", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (NESTED, "invalid_json", "the JSON is nested too deeply"),
        (b'{"events": [1', "invalid_json", "the body is not valid JSON"),
        (b'{"events": ["\xff"]}', "invalid_body", "the body is not valid UTF-8"),
        (b"", "empty_body", "the request body is empty"),
    ],
    ids=["nested 2000 deep", "cut short", "not UTF-8", "empty"],
)
def test_a_body_that_is_not_json_gets_a_400_that_says_why_and_the_api_keeps_serving(
    api: LocalApi, tmp_path: Path, body: bytes, error: str, message: str
) -> None:
    # When a body that cannot be read is posted
    status, answer = post_events(api, body)
    # Then the client gets a 400 naming the problem (not a dropped connection)
    assert (status, answer["error"]) == (400, error)
    assert answer["message"].startswith(message)
    # and the next request is served
    events = activity(3)
    status, answer = post_events(api, json.dumps({"events": events}).encode())
    assert status == 202 and answer["accepted"] == len(events)


def test_an_integer_too_long_for_python_to_convert_gets_a_400_naming_its_field(
    api: LocalApi, tmp_path: Path
) -> None:
    # Given a payment whose amount has 5000 digits (Python converts at most 4300)
    payment = next(e for e in activity(20) if e["type"] == "payment")
    raw = json.dumps({"events": [{**payment, "amount": 12345}]}).replace("12345", "1" * 5000)
    # When it is posted
    status, answer = post_events(api, raw.encode())
    # Then the answer names the field and its range, as /predict's does, and nothing is stored
    assert status == 400
    assert answer["problems"] == [{"field": "events[0].amount", "reason": "must be <= 1e+09"}]
    assert stored_event_ids(tmp_path / "features.db") == 0


def test_a_lone_surrogate_in_an_event_gets_a_400_naming_the_field_and_stores_nothing(
    api: LocalApi, tmp_path: Path
) -> None:
    # Given a batch of good events and one whose account id is the escape "\ud800"
    events = activity(5)
    body = json.dumps({"events": [*events, {**events[0], "event_id": "x"}]})
    body = body.replace(
        '"event_id": "x", "account_id": "' + events[0]["account_id"],
        '"event_id": "x", "account_id": "\\ud800',
    )
    assert "\\ud800" in body
    # When it is posted
    status, answer = post_events(api, body.encode())
    # Then it is refused whole, the field named, and nothing of the batch is stored
    assert status == 400
    assert {"field": "events[5].account_id", "reason": NOT_UNICODE} in answer["problems"]
    assert stored_event_ids(tmp_path / "features.db") == 0


def test_one_event_id_with_two_contents_is_refused_and_an_exact_copy_is_counted_once(
    api: LocalApi, tmp_path: Path
) -> None:
    # Given a login, and the same event id under another account
    (first,) = [e for e in activity(20) if e["type"] == "login"][:1]
    other = {**first, "account_id": first["account_id"] + "-other"}
    # When both are posted in one request
    status, answer = post_events(api, json.dumps({"events": [first, other]}).encode())
    # Then the request is refused, naming both, and nothing is stored
    assert (status, answer["error"]) == (400, "conflicting_events")
    assert answer["message"] == (
        f"event {first['event_id']} appears twice with different content, under two accounts: "
        f"{first['account_id']} (events[0]) and {other['account_id']} (events[1]); "
        "nothing was stored"
    )
    assert stored_event_ids(tmp_path / "features.db") == 0
    # And an exact copy is a redelivery: accepted, folded once
    status, answer = post_events(api, json.dumps({"events": [first, first]}).encode())
    assert status == 202 and answer["duplicates"] == 1
    # while two labels of one payment (a review, then a chargeback) are not a conflict
    labels = [
        {"type": "label", "event_id": "p-1", "is_fraud": verdict, "labelled_at": at, "source": s}
        for verdict, at, s in (
            (False, "2026-03-02T00:00:00Z", "review"),
            (True, "2026-03-20T00:00:00Z", "chargeback"),
        )
    ]
    status, answer = post_events(api, json.dumps({"events": labels}).encode())
    assert status == 202 and answer["labels"] == 2


def test_an_event_id_stored_by_an_earlier_request_with_other_content_gets_a_409(
    api: LocalApi, tmp_path: Path
) -> None:
    # Given a first request that stored four failed logins
    first = [failed_login(f"l{i}", ago=60 + i) for i in range(4)]
    assert post_events(api, json.dumps({"events": first}).encode())[0] == 202
    assert stored_event_ids(tmp_path / "features.db") == 4
    # When a second request reuses one of their ids under another account, beside new logins
    reused = {**first[2], "account_id": "someone-else"}
    body = {"events": [failed_login("n1"), reused, failed_login("n2")]}
    status, answer = post_events(api, json.dumps(body).encode())
    # Then it is refused with 409, the event named where it is, and nothing of it is stored
    assert (status, answer["error"]) == (409, "conflicts_with_stored_events")
    assert answer["message"] == (
        "1 event reuses an event id already stored with different content; nothing was stored"
    )
    assert answer["problems"] == [
        {
            "field": "events[1]",
            "reason": "event l2 was already stored from an earlier input with different "
            "content; this copy (account someone-else, events[1]) is refused: event ids must not "
            "be reused",
        }
    ]
    assert stored_event_ids(tmp_path / "features.db") == 4
    # And a request reusing two of the ids is refused in the plural
    body = {"events": [{**first[0], "account_id": "someone-else"}, reused]}
    status, answer = post_events(api, json.dumps(body).encode())
    assert (status, answer["message"]) == (
        409,
        "2 events reuse an event id already stored with different content; nothing was stored",
    )
    # And the first request sent again (a client's retry) is accepted: duplicates, counted
    status, answer = post_events(api, json.dumps({"events": first}).encode())
    assert status == 202
    assert (answer["applied"], answer["duplicates"], answer["conflicts"]) == (0, 4, {})


def test_a_conflict_a_concurrent_writer_brought_in_after_the_check_is_a_409_too(
    api: LocalApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a stored login, and a request reusing its id under another account beside a new
    # login, while another writer stores the first between the request's check and its commit
    assert post_events(api, json.dumps({"events": [failed_login("l1")]}).encode())[0] == 202
    monkeypatch.setattr("sds.kernel.online.OnlineFeatures.recorded_conflicts", lambda *_: [])
    reused = {**failed_login("l1"), "account_id": "someone-else"}
    body = {"events": [failed_login("n1"), reused]}
    # When it is posted
    status, answer = post_events(api, json.dumps(body).encode())
    # Then the commit caught it: 409 naming it where it is, and saying the rest was stored
    assert (status, answer["error"]) == (409, "conflicts_with_stored_events")
    assert answer["message"].endswith("the other events were stored")
    assert [p["field"] for p in answer["problems"]] == ["events[1]"]
    assert answer["applied"] == 1 and list(answer["conflicts"]) == ["l1"]
    assert stored_event_ids(tmp_path / "features.db") == 2


@pytest.mark.parametrize(
    ("body", "problems"),
    [
        ([], [("body", "must be a JSON object")]),
        ({}, [("events", "is required")]),
        ({"events": {}}, [("events", "must be a list of events")]),
        ({"events": []}, [("events", "must contain at least one event")]),
        ({"events": [{}] * 1001}, [("events", "has 1001 events; the limit is 1000")]),
        ({"events": "LOGINS", "batch": 1}, [("batch", "is not a known field")]),
        ({"events": "LOGINS", "": 1}, [('""', "is not a known field")]),
        (
            {"events": 7, "batch": 1},
            [("events", "must be a list of events"), ("batch", "is not a known field")],
        ),
    ],
    ids=[
        "not an object",
        "no events",
        "not a list",
        "empty",
        "too many",
        "valid events and another key",
        "valid events and an empty key",
        "two problems",
    ],
)
def test_a_batch_envelope_with_problems_gets_a_400_naming_each_and_stores_nothing(
    api: LocalApi, tmp_path: Path, body: Any, problems: list[tuple[str, str]]
) -> None:
    # Given a body whose envelope is wrong, around valid logins where it holds any
    logins = [failed_login("e1"), failed_login("e2")]
    if isinstance(body, dict):
        body = {key: logins if value == "LOGINS" else value for key, value in body.items()}
    # When it is posted
    status, answer = post_events(api, json.dumps(body).encode())
    # Then every problem is named, as /predict names them, and nothing is stored
    assert (status, answer["error"]) == (400, "invalid_request")
    named = [(p["field"], p["reason"]) for p in answer["problems"]]
    assert [(field, reason.split(" (")[0]) for field, reason in named] == problems
    counted = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
    assert answer["message"] == f"{counted}; nothing was stored"
    assert stored_event_ids(tmp_path / "features.db") == 0


def test_a_batch_the_store_could_not_take_gets_a_503_that_says_to_send_it_again(
    api: LocalApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a feature store that cannot be read
    def unavailable(*_: Any) -> Any:
        raise FeatureStoreError("the store is locked")

    monkeypatch.setattr(api.apps.online.store, "read", unavailable)
    # When a batch is posted
    status, answer = post_events(api, json.dumps({"events": [failed_login("f1")]}).encode())
    # Then the answer is an error a client can act on, with what failed and why
    assert (status, answer["error"]) == (503, "feature_store_unavailable")
    assert answer["message"].startswith("1 event could not be stored; send the whole batch")
    assert answer["failed"] == {"f1": "the store is locked"}


def test_a_handler_that_raises_answers_502_as_api_gateway_does_and_the_api_keeps_serving(
    api: LocalApi, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a route whose code raises (a defect, not the client's fault)
    def broken(event: Any) -> Any:
        raise RuntimeError("a defect")

    monkeypatch.setattr(api.apps.events, "handle", broken)
    # When it is called
    with caplog.at_level(logging.ERROR, logger="sds.ops.local_api"):
        status, answer = post_events(api, b'{"events": []}')
    # Then the client gets API Gateway's answer, not a dropped connection; the traceback is logged
    assert (status, answer) == (502, {"message": "Internal server error"})
    assert "RuntimeError: a defect" in caplog.text
    monkeypatch.undo()
    assert post_events(api, json.dumps({"events": activity(2)}).encode())[0] == 202


# sds ingest --------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(ROOT / "cdk.json", tmp_path / "cdk.json")
    monkeypatch.setenv("SDS_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("SDS_ACTOR", "tester")
    for name in ("SDS_HOME", "SDS_LOCK_FILE", "SDS_TARGET", "SDS_REGISTRY_DEV", "SDS_AWS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def ingest(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["ingest", str(path), "--env", "dev", "--clock", "events", "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def feature_store(project: Path) -> Path:
    found = list(project.rglob("*.db"))
    assert len(found) <= 1, found
    return found[0] if found else project / "no-store.db"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_ingest_validates_the_whole_file_before_storing_a_lone_surrogate_at_its_end(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 1500 good events and, last, one whose account id is the escape "\ud800"
    events = activity(1500)
    bad = json.dumps({**events[0], "event_id": "bad"}).replace(
        json.dumps(events[0]["account_id"]), '"\\ud800"'
    )
    path = write_lines(project / "events.jsonl", [*map(json.dumps, events), bad])
    # When it is ingested
    code, out, err = ingest(capsys, path)
    # Then it is refused with the file, line and field named, and nothing is stored
    assert code != 0 and out == ""
    assert f"{path}:1501.account_id: {NOT_UNICODE}" in err
    assert "nothing was stored" in err
    assert stored_event_ids(feature_store(project)) == 0


def test_ingest_names_the_line_of_json_nested_too_deeply_without_a_traceback(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_lines(
        project / "events.jsonl", [json.dumps(activity(1)[0]), (b"[" * 5000).decode()]
    )
    code, _, err = ingest(capsys, path)
    assert code != 0
    assert f"{path}:2: invalid JSON (nested too deeply)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert stored_event_ids(feature_store(project)) == 0


def test_ingest_refuses_one_event_id_with_two_contents_as_training_does(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a history where one event id appears under two accounts (line 3 and the last)
    events = activity(5)
    twin = {**events[2], "account_id": "someone-else"}
    path = write_lines(project / "events.jsonl", [*map(json.dumps, events), json.dumps(twin)])
    # When it is ingested
    code, _, err = ingest(capsys, path)
    # Then it is refused with the message training and batch runs give, and nothing is stored
    assert code != 0
    assert (
        f"event {twin['event_id']} appears twice with different content, under two accounts: "
        f"{events[2]['account_id']} ({path}:3) and someone-else ({path}:{len(events) + 1})"
    ) in err
    assert stored_event_ids(feature_store(project)) == 0
    # And a file holding an exact copy is a redelivery: ingested, the copy counted once
    path = write_lines(project / "events.jsonl", [*map(json.dumps, events), json.dumps(events[2])])
    code, out, _ = ingest(capsys, path)
    assert code == 0
    assert f"dev: {len(events) + 1} events -> " in out and "1 already there" in out


def test_ingest_refuses_a_payment_sent_twice_with_two_labels_as_training_does(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a history where one payment appears twice, the copies differing in their label only
    records = [e for e in generate_activity(40, seed=3) if e["type"] == "payment"][:5]
    relabelled = {**records[1], LABEL: not records[1][LABEL]}
    path = write_lines(project / "h.jsonl", [*map(json.dumps, records), json.dumps(relabelled)])
    # When it is ingested, and read as training and batch runs read it (`sds backfill`)
    code, _, err = ingest(capsys, path)
    batch = main(["backfill", "--data", str(path), "--out", str(project / "out"), "--quiet"])
    batch_err = capsys.readouterr().err
    # Then both refuse it with the same message, and nothing is stored
    assert (code, batch) == (1, 1)
    message = f"event {records[1]['event_id']} appears twice with different content"
    assert message in err and message in batch_err
    assert stored_event_ids(feature_store(project)) == 0


def test_ingest_refuses_a_file_starting_with_a_byte_order_mark_as_training_does(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a history saved with a UTF-8 byte order mark
    path = project / "bom.jsonl"
    records = generate_activity(5, seed=3)[:5]
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(e) + "\n" for e in records).encode())
    # When it is ingested, and read as training and batch runs read it (`sds backfill`)
    code, _, err = ingest(capsys, path)
    batch = main(["backfill", "--data", str(path), "--out", str(project / "out"), "--quiet"])
    batch_err = capsys.readouterr().err
    # Then both refuse it, naming the mark, and nothing is stored
    assert (code, batch) == (1, 1)
    assert "byte order mark" in batch_err
    assert f"{path}:1: the file starts with a UTF-8 byte order mark (BOM)" in err
    assert stored_event_ids(feature_store(project)) == 0


def test_ingest_refuses_a_file_reusing_a_stored_event_id_with_other_content(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a first file ingested
    events = activity(8)
    first = write_lines(project / "first.jsonl", [json.dumps(e) for e in events[:5]])
    assert ingest(capsys, first)[0] == 0
    stored = stored_event_ids(feature_store(project))
    # When a second file brings new events and, on its line 2, one of the first file's ids with
    # another amount or outcome
    changed = dict(events[2])
    if changed["type"] == "payment":
        changed["amount"] = changed["amount"] + 1
    else:
        changed["outcome"] = "success" if changed["outcome"] == "failure" else "failure"
    second = write_lines(
        project / "second.jsonl", [json.dumps(e) for e in (events[5], changed, *events[6:])]
    )
    code, out, err = ingest(capsys, second)
    # Then it is refused with one line that names the event id and where it is, and nothing of
    # the file is stored
    assert code == 1 and out == ""
    assert err.strip() == (
        f"sds: error: 1 problem, nothing was stored: event {changed['event_id']} was already "
        "stored from an earlier input with different content; this copy (account "
        f"{changed['account_id']}, {second}:2) is refused: event ids must not be reused"
    )
    assert stored_event_ids(feature_store(project)) == stored
    # And the first file ingested again is a silent redelivery: every event already there
    code, out, err = ingest(capsys, first)
    assert code == 0 and err == ""
    assert "dev: 5 events -> 0 applied" in out


def test_ingest_reports_a_conflict_a_concurrent_writer_brought_in_after_its_check(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a stored login, and a file that reuses its id under another account beside a new
    # event, ingested while another writer stores the login between the check and the commit
    first, fresh = failed_login("l1", ago=120), failed_login("l2")
    assert ingest(capsys, write_lines(project / "a.jsonl", [json.dumps(first)]))[0] == 0
    monkeypatch.setattr("sds.kernel.online.OnlineFeatures.recorded_conflicts", lambda *_: [])
    reused = {**first, "account_id": "someone-else"}
    path = write_lines(project / "b.jsonl", [json.dumps(reused), json.dumps(fresh)])
    # When it is ingested
    code, out, err = ingest(capsys, path)
    # Then the commit catches it: the conflicting event is not folded, named, and the run fails
    assert code == 1
    assert "1 applied" in out
    assert (
        "refused l1: event l1 was already stored from an earlier input with different content; "
        "this copy (account someone-else) is refused"
    ) in err


def _login_at(event_id: str, account: str, at: datetime) -> dict[str, Any]:
    return {
        **failed_login(event_id, account),
        "occurred_at": at.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def _aggregates(project: Path, account: str, at: datetime) -> dict[str, float]:
    store = open_feature_store(f"sqlite://{feature_store(project)}")
    try:
        return OnlineFeatures(store).read([(account, int(at.timestamp()) * 1_000_000)])[0]
    finally:
        store.close()


def test_a_replay_of_a_sparse_history_folds_every_event_as_it_happened(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 600 failed logins of one account, one every 30 minutes: 12.5 days, more than the
    # longest window (8 days) within the ingest's first 500 events
    start = datetime(2026, 3, 1, tzinfo=UTC)
    logins = [_login_at(f"l{i}", "acct", start + timedelta(minutes=30 * i)) for i in range(600)]
    path = write_lines(project / "sparse.jsonl", [json.dumps(e) for e in logins])
    # When it is replayed
    capsys.readouterr()
    code = main(["ingest", str(path), "--env", "dev", "--clock", "events", "--json"])
    result = json.loads(capsys.readouterr().out)
    # Then none is dropped as too old (none was when it happened), and the account is counted
    assert code == 0
    assert (result["applied"], result["too_old"], result["entities"]) == (600, 0, 1)
    # And ten minutes after its last login (March 13, 11:40) the 24-hour window, from its first
    # whole hour (March 12, 11:00), holds 50 logins, and the hour from 10:40 holds two
    after = start + timedelta(minutes=30 * 599 + 10)
    values = _aggregates(project, "acct", after)
    assert values["num_failed_logins_last_24_hours"] == 50
    assert values["failed_logins_last_1h"] == 2


def test_a_replay_shows_its_progress_in_steps_however_many_hours_its_history_spans(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a history of 1000 events over weeks: a replay folds it in hundreds of batches (an
    # hour of history at most each)
    path = write_lines(project / "history.jsonl", [json.dumps(e) for e in activity(1000)])
    # When it is replayed with its stderr in a log (not a terminal)
    capsys.readouterr()
    code = main(["ingest", str(path), "--env", "dev", "--clock", "events"])
    out, err = capsys.readouterr()
    # Then stderr shows each step as the other long commands do (a start line and a done line;
    # the fold's count of events within), not a line per batch, and stdout has the summary
    assert code == 0
    assert re.fullmatch(
        r"\[1/3\] reading .*history\.jsonl \.\.\.\n"
        r"      done in \d+\.\d s: 1000 valid events\n"
        r"\[2/3\] checking the event ids dev's feature store holds \.\.\.\n"
        r"      done in \d+\.\d s: 0 held with other content\n"
        r"\[3/3\] folding 1000 events into dev's feature store \(events clock\) \.\.\.\n"
        r"      folded \(1000 events\) \.\.\.\n"
        r"      folded: 1000 events in \d+\.\d s\n"
        r"      done in \d+\.\d s: \d+ applied, 0 already there\n",
        err,
    ), err
    assert out.startswith("dev: 1000 events -> ")
    # And --quiet shows none of it, while --json keeps stdout one JSON document
    code, out, err = ingest(capsys, path)
    assert (code, err) == (0, "")
    assert out.startswith("dev: 1000 events -> 0 applied")
    capsys.readouterr()
    assert main(["ingest", str(path), "--env", "dev", "--clock", "events", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 1000


def test_a_replay_with_one_event_dated_decades_ahead_still_folds_every_other_one(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given three failed logins of acct-42 and a login of acct-7 dated 70 years later (a typo)
    start = datetime(2026, 11, 30, 21, tzinfo=UTC)
    logins = [_login_at(f"l{i}", "acct-42", start + timedelta(minutes=i)) for i in range(3)]
    typo = _login_at("l-typo", "acct-7", start.replace(year=2096))
    path = write_lines(project / "typo.jsonl", [json.dumps(e) for e in (*logins, typo)])
    # When it is replayed
    code, out, _ = ingest(capsys, path)
    # Then every event is applied, and acct-42 counts its three logins half an hour later
    assert code == 0
    assert "dev: 4 events -> 4 applied, 0 already there, 0 too old" in out
    values = _aggregates(project, "acct-42", start + timedelta(minutes=30))
    assert values["failed_logins_last_1h"] == 3


def test_ingest_on_the_wall_clock_refuses_an_event_dated_ahead_of_it_as_the_updater_does(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a file whose second login is dated an hour from now
    ahead = failed_login("l-ahead", ago=-3600)
    path = write_lines(project / "a.jsonl", [json.dumps(failed_login("l-now")), json.dumps(ahead)])
    # When it is ingested on the wall clock
    capsys.readouterr()
    code = main(["ingest", str(path), "--env", "dev", "--quiet"])
    err = capsys.readouterr().err
    # Then it is refused, naming the line and why, and nothing is stored
    assert code == 1
    assert re.search(
        rf"nothing was stored: {re.escape(str(path))}:2\.occurred_at: is 3[56][0-9]{{2}} s ahead "
        r"of the clock \(more than 300 s\): is the producer's clock right\?",
        err,
    ), err
    assert stored_event_ids(feature_store(project)) == 0


def test_post_events_refuses_an_event_dated_ahead_of_the_clock_and_stores_nothing(
    api: LocalApi, tmp_path: Path
) -> None:
    # Given a batch whose second login is dated an hour from now
    batch = [failed_login("l-now"), failed_login("l-ahead", ago=-3600)]
    # When it is posted
    status, body = post_events(api, json.dumps({"events": batch}).encode())
    # Then it is a 400 naming the event's time, and nothing of the batch is stored
    assert status == 400
    assert body["error"] == "invalid_request"
    (problem,) = body["problems"]
    assert problem["field"] == "events[1].occurred_at"
    assert problem["reason"].endswith(
        "s ahead of the clock (more than 300 s): is the producer's clock right?"
    )
    assert stored_event_ids(tmp_path / "features.db") == 0


AHEAD = (
    r"is 3[56][0-9]{2} s ahead of the clock \(more than 300 s\): is the producer's clock right\?"
)


def test_post_events_names_dates_ahead_of_the_clock_with_every_other_problem_at_once(
    api: LocalApi, tmp_path: Path
) -> None:
    # Given a batch with an invalid login, one dated an hour ahead, and one that is both
    bad_outcome = {**failed_login("l-bad"), "outcome": "maybe"}
    ahead = failed_login("l-ahead", ago=-3600)
    both = {**failed_login("l-both", ago=-3600), "outcome": "maybe"}
    del both["account_id"]
    # When it is posted
    status, body = post_events(api, json.dumps({"events": [bad_outcome, ahead, both]}).encode())
    # Then one answer names every problem, the dates among them, in /predict's order: event by
    # event, each event's problems in its fields' order
    assert (status, body["error"]) == (400, "invalid_request")
    named = [(p["field"], p["reason"]) for p in body["problems"]]
    assert [field for field, _ in named] == [
        "events[0].outcome",
        "events[1].occurred_at",
        "events[2].account_id",
        "events[2].occurred_at",
        "events[2].outcome",
    ]
    assert re.fullmatch(AHEAD, named[1][1]) and re.fullmatch(AHEAD, named[3][1]), named
    assert body["message"] == "5 problems; nothing was stored"
    assert stored_event_ids(tmp_path / "features.db") == 0


def stored_label_files(folder: Path) -> list[Path]:
    """The files the local API stored labels in under `folder` (none if it was never created)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def label_at(event_id: str, *, ahead: timedelta) -> dict[str, Any]:
    """A chargeback label dated `ahead` of now."""
    at = (datetime.now(UTC) + ahead).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "type": "label",
        "event_id": event_id,
        "is_fraud": True,
        "labelled_at": at,
        "source": "chargeback",
    }


def test_post_events_refuses_a_label_dated_ahead_of_the_clock_as_sds_label_does(
    api: LocalApi, tmp_path: Path
) -> None:
    # Given a batch with a valid login, a label dated an hour ahead, and an invalid login
    ahead = label_at("p-1", ahead=timedelta(hours=1))
    bad_outcome = {**failed_login("l-bad"), "outcome": "maybe"}
    batch = [failed_login("l-now"), ahead, bad_outcome]
    # When it is posted
    status, body = post_events(api, json.dumps({"events": batch}).encode())
    # Then the label's date is named among the batch's other problems, and nothing is stored
    assert (status, body["error"]) == (400, "invalid_request")
    named = [(p["field"], p["reason"]) for p in body["problems"]]
    assert [field for field, _ in named] == ["events[1].labelled_at", "events[2].outcome"]
    assert re.fullmatch(AHEAD, named[0][1]), named
    assert body["message"] == "2 problems; nothing was stored"
    # And a batch whose only problem is that label is refused too: neither the login nor the
    # label is stored
    status, body = post_events(api, json.dumps({"events": batch[:2]}).encode())
    assert (status, [p["field"] for p in body["problems"]]) == (400, ["events[1].labelled_at"])
    assert stored_event_ids(tmp_path / "features.db") == 0
    assert stored_label_files(tmp_path / "labels") == []
    # while a label dated a minute ahead (the drift clocks may have) is taken
    within = label_at("p-1", ahead=timedelta(minutes=1))
    status, body = post_events(api, json.dumps({"events": [within]}).encode())
    assert (status, body["labels"]) == (202, 1)
    assert len(stored_label_files(tmp_path / "labels")) == 1


def test_ingest_names_dates_ahead_of_the_clock_with_every_other_problem_at_once(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a file whose first login is invalid and whose second is dated an hour ahead
    bad_outcome = {**failed_login("l-bad"), "outcome": "maybe"}
    ahead = failed_login("l-ahead", ago=-3600)
    path = write_lines(project / "a.jsonl", [json.dumps(bad_outcome), json.dumps(ahead)])
    # When it is ingested on the wall clock
    capsys.readouterr()
    code = main(["ingest", str(path), "--env", "dev", "--quiet"])
    err = capsys.readouterr().err
    # Then one refusal names both, line by line
    assert code == 1
    where = re.escape(str(path))
    assert re.search(
        rf"2 problems, nothing was stored: {where}:1\.outcome: 'maybe' is not one of "
        rf"success, failure; {where}:2\.occurred_at: {AHEAD}",
        err,
    ), err
    assert stored_event_ids(feature_store(project)) == 0


def test_ingest_interrupted_while_reading_says_that_nothing_was_stored(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an ingest interrupted (Ctrl-C) while it still validates its input
    def interrupted(location: str, **options: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("sds.ops.ingest.read_events", interrupted)
    path = write_lines(project / "a.jsonl", [json.dumps(failed_login("l1"))])
    # When it stops
    capsys.readouterr()
    code = main(["ingest", str(path), "--env", "dev"])
    err = capsys.readouterr().err
    # Then it says nothing was stored, not to rerun it to "store the rest"
    assert code == 130
    assert "nothing was stored" in err and "store the rest" not in err


def test_an_old_store_file_without_digests_keeps_working_and_gains_them(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a feature store file written before digests were kept, holding event id "old-1"
    database = project / ".sds" / "features" / "dev.db"
    database.parent.mkdir(parents=True)
    with sqlite3.connect(database) as connection:
        connection.executescript(
            "CREATE TABLE entities (entity TEXT PRIMARY KEY, state TEXT NOT NULL, "
            "version INTEGER NOT NULL, expires_at INTEGER NOT NULL);"
            "CREATE TABLE events (event_id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);"
            "INSERT INTO events VALUES ('old-1', 99999999999999999);"
        )
    connection.close()
    logins = [failed_login("l1", ago=120), failed_login("l2")]
    # When a file with "old-1" (whatever its content) and a new login is ingested into it
    old = {**logins[0], "event_id": "old-1"}
    code, out, _ = ingest(capsys, write_lines(project / "e.jsonl", map(json.dumps, [old, logins[1]])))  # fmt: skip
    # Then the old id is a duplicate (nothing can tell), the new one is folded with its digest
    assert code == 0 and "1 applied, 1 already there" in out
    with sqlite3.connect(database) as connection:
        rows = dict(connection.execute("SELECT event_id, digest FROM events").fetchall())
    connection.close()
    assert rows["old-1"] is None and len(rows[logins[1]["event_id"]]) == 64
    # And the new id is now guarded: other content under it is refused
    changed = {**logins[1], "account_id": "someone-else"}
    code, _, err = ingest(capsys, write_lines(project / "f.jsonl", [json.dumps(changed)]))
    assert code == 1 and f"event {changed['event_id']} was already stored" in err


# Training and batch readers ---------------------------------------------------------------------


def test_training_and_batch_readers_refuse_a_lone_surrogate_naming_the_file_and_line(
    tmp_path: Path,
) -> None:
    # Given a labelled history whose third line has the account id "\ud800"
    records = generate_activity(5, seed=3)
    lines = [json.dumps(r) for r in records]
    lines[2] = lines[2].replace(json.dumps(records[2]["account_id"]), '"\\ud800"')
    path = write_lines(tmp_path / "history.jsonl", lines)
    # When training reads it (the standard library's parser reads the escape)
    with pytest.raises(DataError) as error:
        read_history(path)
    # Then the line and the field are named
    assert str(error.value) == f"{path}:3.account_id: {NOT_UNICODE}"
    # And the batch runs' reader (orjson) refuses the same line as JSON it cannot hold
    with pytest.raises(HistoryError, match=rf"^{re.escape(str(path))}:3: invalid JSON"):
        parse_event(lines[2].encode(), f"{path}:3", labels_required=True)
