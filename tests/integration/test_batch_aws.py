"""The batch function's steps against S3 on the moto server, called as the state machine calls
them: plan, a shuffle per listed item, collect, a part per listed partition, summarize.

The parts it writes must be the parts `sds score` writes on one machine from the same history;
a failed part is named in the summary (from the Distributed Map's ResultWriter files) and a
second execution computes only what is missing.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lambdas.inference import batch as batch_app
from lambdas.inference.batch import BatchApp
from sds.kernel.batch import run as batch_run
from sds.kernel.batch import shuffle
from sds.kernel.batch.run import ModelRef
from sds.kernel.batch.settings import BatchFunctionSettings, BatchSettingsError
from sds.kernel.batch.storage import AlreadyExists, S3Storage, StorageError
from sds.kernel.registry import Version, open_registry
from sds.ops.batch import run_locally
from tests.support.batch_race import rival_first
from training.data import write_jsonl
from training.synthetic import generate_activity
from training.train import Progress, TrainParams, train

MODEL = "fraud"


@dataclass(frozen=True)
class Trained:
    registry_root: Path
    version: Version


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    data = write_jsonl(generate_activity(3000, seed=4), tmp_path_factory.mktemp("d") / "h.jsonl")
    root = tmp_path_factory.mktemp("registry")
    version = train(
        data=data,
        registry=open_registry(root.as_uri(), MODEL),
        params=TrainParams(max_iter=10, seed=1),
        actor="tester@ci",
        progress=Progress(1, enabled=False),
    )
    return Trained(root, version)


@dataclass
class Environment:
    app: BatchApp
    data_bucket: str
    registry_bucket: str
    s3: Any
    model: dict[str, Any]

    def upload(self, key: str, path: Path) -> str:
        self.s3.upload_file(str(path), self.data_bucket, key)
        return f"s3://{self.data_bucket}/{key}"

    def objects(self, prefix: str) -> dict[str, bytes]:
        listed = self.s3.list_objects_v2(Bucket=self.data_bucket, Prefix=prefix).get("Contents", [])
        return {
            o["Key"][len(prefix) :]: self.s3.get_object(Bucket=self.data_bucket, Key=o["Key"])[
                "Body"
            ].read()
            for o in listed
        }


@pytest.fixture
def environment(aws: Any, trained: Trained) -> Iterator[Environment]:
    s3 = aws.client("s3")
    data_bucket, registry_bucket = aws.bucket(versioned=True), aws.bucket(versioned=True)
    # The registry as training left it, on S3 (the same layout as on disk)
    for path in trained.registry_root.rglob("*"):
        if path.is_file():
            key = path.relative_to(trained.registry_root).as_posix()
            s3.upload_file(str(path), registry_bucket, key)
    settings = BatchFunctionSettings(
        model_name=MODEL,
        registry_uri=f"s3://{registry_bucket}",
        environment="dev",
        data_bucket=data_bucket,
        output_prefix="batch/",
    )
    yield Environment(
        BatchApp(settings),
        data_bucket,
        registry_bucket,
        s3,
        {"version": trained.version.number, "sha256": trained.version.sha256},
    )


class MapFailed(Exception):
    """A Distributed Map with more failed items than it tolerates, as Step Functions reports the
    execution that the `TooManyFailures` state ends: this error and cause."""

    error = "States.ExceedToleratedFailureThreshold"

    def __init__(self) -> None:
        super().__init__("The specified tolerated failure threshold was exceeded")


def execute(
    env: Environment, run: dict[str, Any], *, name: str = "exec-1", maps: bool = False
) -> dict[str, Any]:
    """What the state machine does with the function, step by step. Without `maps`, a raised
    error stops here, as it would fail a map item; with it, a map item's error is that item's
    failure, as the Distributed Maps handle it (`map_items`), and a failed map ends the run with
    Summarize and `MapFailed`."""
    plan = env.app.handle({"action": "plan", **run, "run_id": name})
    if plan["finished"]:
        return env.app.handle({"action": "summarize", "output": run["output"], "run_id": name})
    try:
        if plan["shuffle"]:
            items = json.loads(
                env.s3.get_object(Bucket=env.data_bucket, Key=plan["items_key"])["Body"].read()
            )
            events = [{"action": "shuffle", "output": run["output"], **item} for item in items]
            map_items(env, plan, "shuffle-map-run", events, catch=maps)
        collected = env.app.handle({"action": "collect", "output": run["output"]})
        parts = json.loads(
            env.s3.get_object(Bucket=env.data_bucket, Key=collected["parts_key"])["Body"].read()
        )
        events = [{"action": "part", "output": run["output"], **part} for part in parts]
        map_items(env, plan, "parts-map-run", events, catch=maps)
    except MapFailed:
        env.app.handle({"action": "summarize", "output": run["output"], "run_id": name})
        raise
    return env.app.handle({"action": "summarize", "output": run["output"], "run_id": name})


def map_items(
    env: Environment, plan: dict[str, Any], label: str, events: list[Any], *, catch: bool
) -> None:
    """A Distributed Map: the function called with each item, and the results written as the
    map's ResultWriter writes them under the run's output. With `catch`, an item's error is its
    failure (the error's type, and the function's error document as the cause) and a map with
    any failed item fails (`MapFailed`: these tests tolerate none); without, it is raised."""
    succeeded, failed = [], []
    for event in events:
        try:
            succeeded.append({"Output": json.dumps(env.app.handle(event))})
        except Exception as exc:
            if not catch:
                raise
            kind = type(exc).__name__
            cause = {"errorType": kind, "errorMessage": str(exc)}
            failed.append({"Input": json.dumps(event), "Error": kind, "Cause": json.dumps(cause)})
    written = f"{plan['results_prefix'].rstrip('/')}/{label}"
    files: dict[str, Any] = {
        "manifest.json": {"DestinationBucket": env.data_bucket},
        "SUCCEEDED_0.json": succeeded,
    }
    if failed:
        files["FAILED_0.json"] = failed
    for key, body in files.items():
        env.s3.put_object(
            Bucket=env.data_bucket, Key=f"{written}/{key}", Body=json.dumps(body).encode()
        )
    if failed:
        raise MapFailed


def test_the_item_processor_writes_the_parts_a_local_run_writes(
    environment: Environment, tmp_path: Path, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a history on S3: a plain object and a gzipped one, each cut into several ranges
    monkeypatch.setattr(shuffle, "RANGE_BYTES", 200_000)
    records = generate_activity(2500, seed=6)
    half = len(records) // 2
    plain = write_jsonl(records[:half], tmp_path / "a.jsonl")
    packed = write_jsonl(records[half:], tmp_path / "b.jsonl.gz")
    environment.upload("training-data/2026/a.jsonl", plain)
    data = environment.upload("training-data/2026/b.jsonl.gz", packed).rsplit("/", 1)[0] + "/"
    output = f"s3://{environment.data_bucket}/batch/backtest-1"

    # When the state machine runs the function's steps over it
    summary = execute(
        environment,
        {
            "job": "score",
            "input": data,
            "output": output,
            "model": environment.model,
            "partitions": 5,
        },
    )

    # Then the run is complete and its manifest names the model and counts every event
    assert summary["complete"] and summary["failed"] == 0 and summary["parts"] == 5
    written = environment.objects("batch/backtest-1/")
    manifest = json.loads(written["_run/manifest.json"])
    assert manifest["model"]["version"] == trained.version.number
    assert manifest["model"]["sha256"] == trained.version.sha256
    assert manifest["totals"]["events"] == len(records) and manifest["items"] > 2
    plan = json.loads(written["_run/plan.json"])
    packed_ranges = [i for i in plan["items"] if i["source"]["name"].endswith(".gz")]
    assert len(packed_ranges) > 1 and packed_ranges[-1]["to_end"]
    assert not [key for key in written if key.startswith("_run/work/")]
    # And each part is, byte for byte, the part `sds score` writes on one machine
    (tmp_path / "data").mkdir()
    plain.rename(tmp_path / "data" / "a.jsonl")
    packed.rename(tmp_path / "data" / "b.jsonl.gz")
    model = ModelRef(
        MODEL, trained.version.number, trained.version.sha256, trained.registry_root.as_uri()
    )
    run_locally(
        "score",
        data=str(tmp_path / "data"),
        out=str(tmp_path / "out"),
        model=model,
        workers=1,
        partitions=5,
    )
    parts = sorted(k for k in written if k.startswith("part-"))
    assert len(parts) == 5
    for key in parts:
        assert written[key] == (tmp_path / "out" / key).read_bytes(), key
    rows = [
        json.loads(line) for key in parts for line in gzip.decompress(written[key]).splitlines()
    ]
    assert len(rows) == sum(r["type"] == "payment" for r in records)


def test_scoring_an_s3_prefix_with_no_events_on_this_machine_leaves_no_object_in_out(
    environment: Environment, tmp_path: Path, trained: Trained
) -> None:
    # Given a prefix on S3 whose history objects hold no event
    (tmp_path / "a.jsonl").write_bytes(b"")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b"", mtime=0))
    environment.upload("training-data/empty/a.jsonl", tmp_path / "a.jsonl")
    data = environment.upload("training-data/empty/b.jsonl.gz", tmp_path / "b.jsonl.gz")
    data = data.rsplit("/", 1)[0]
    model = ModelRef(
        MODEL, trained.version.number, trained.version.sha256, trained.registry_root.as_uri()
    )

    # When `sds score` runs over it on this machine, into an S3 prefix
    with pytest.raises(shuffle.HistoryError) as raised:
        run_locally(
            "score",
            data=data,
            out=f"s3://{environment.data_bucket}/batch/empty",
            model=model,
            workers=1,
            partitions=2,
        )

    # Then it is refused, naming the prefix, and no object of the run is left under --out
    assert str(raised.value) == f"{data}: no events"
    assert environment.objects("batch/") == {}


def nothing_to_compute(env: Environment, tmp_path: Path, given: str) -> tuple[str, str]:
    """A prefix on S3 whose history gives a run nothing to compute, and how it is refused:
    objects holding no event (an empty one, a gzip of nothing, blank lines), or logins and no
    payment (a part has one row per payment)."""
    if given == "no events":
        (tmp_path / "a.jsonl").write_bytes(b"")
        (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b"", mtime=0))
        (tmp_path / "c.jsonl").write_bytes(b"\n  \n")
        names, problem = ["a.jsonl", "b.jsonl.gz", "c.jsonl"], "no events"
    else:
        logins = [r for r in generate_activity(300, seed=8) if r["type"] == "login"]
        write_jsonl(logins[:10], tmp_path / "a.jsonl")
        write_jsonl(logins[10:], tmp_path / "b.jsonl.gz")
        names, problem = ["a.jsonl", "b.jsonl.gz"], f"no payments among {len(logins)} events"
    for name in names:
        env.upload(f"training-data/nothing/{name}", tmp_path / name)
    data = f"s3://{env.data_bucket}/training-data/nothing"
    return data, f"{data}: {problem}"


NOTHING_TO_COMPUTE = ["no events", "logins only"]


@pytest.mark.parametrize("given", NOTHING_TO_COMPUTE)
@pytest.mark.parametrize("job", ["score", "features"])
def test_a_history_with_nothing_to_compute_fails_the_run_on_aws_and_leaves_no_object_in_out(
    environment: Environment, tmp_path: Path, job: str, given: str
) -> None:
    # Given a prefix on S3 whose history holds no event, or no payment
    data, refusal = nothing_to_compute(environment, tmp_path, given)
    output = f"s3://{environment.data_bucket}/batch/nothing"
    model = environment.model if job == "score" else None
    run = {"job": job, "input": data, "output": output, "model": model, "partitions": 2}

    # When the state machine runs the function's steps over it
    with pytest.raises(shuffle.HistoryError) as raised:
        execute(environment, run)

    # Then the collect step fails the run in the words `sds score` uses on this machine, and
    # nothing of the run (plan, item lists, shuffle, the map's result files) is left under --out
    assert str(raised.value) == refusal
    assert environment.objects("batch/") == {}


def test_a_collect_step_that_meets_a_passing_fault_keeps_the_shuffle_for_the_next_execution(
    environment: Environment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a backfill whose collect step meets a fault that is no refusal of the history (S3
    # unreachable a moment), after its shuffle
    data = environment.upload(
        "training-data/h.jsonl", write_jsonl(generate_activity(600, seed=4), tmp_path / "h.jsonl")
    )
    output = f"s3://{environment.data_bucket}/batch/passing"
    run = {"job": "features", "input": data, "output": output, "model": None, "partitions": 2}
    real = batch_run.collect_step

    def unreachable(plan: Any, storage: Any) -> Any:
        raise ConnectionError("S3 did not answer")

    monkeypatch.setattr(batch_run, "collect_step", unreachable)
    with pytest.raises(ConnectionError):
        execute(environment, run)
    kept = environment.objects("batch/passing/")

    # Then the run's plan and shuffle stay (only a refused history is discarded), and the next
    # execution resumes from them: nothing is shuffled again
    assert "_run/plan.json" in kept and any("shuffle" in key for key in kept), sorted(kept)
    monkeypatch.setattr(batch_run, "collect_step", real)
    plan = environment.app.handle({"action": "plan", **run, "run_id": "exec-2"})
    assert plan["shuffle"] is False or plan["items"] == 0, plan
    assert execute(environment, run, name="exec-2")["complete"]


def test_a_failed_part_is_named_and_the_next_execution_computes_only_what_is_missing(
    environment: Environment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a backfill whose third partition fails in the first execution
    data = environment.upload(
        "training-data/h.jsonl", write_jsonl(generate_activity(900, seed=2), tmp_path / "h.jsonl")
    )
    output = f"s3://{environment.data_bucket}/batch/features-1"
    run = {"job": "features", "input": data, "output": output, "model": None, "partitions": 4}
    real = batch_run.jobs.feature_rows
    calls: list[int] = []

    def flaky(history: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("the partition did not fit")
        return real(history)

    monkeypatch.setattr(batch_run.jobs, "feature_rows", flaky)
    plan = environment.app.handle({"action": "plan", **run, "run_id": "exec-1"})
    for item in range(plan["items"]):
        environment.app.handle({"action": "shuffle", "output": output, "item": item})
    environment.app.handle({"action": "collect", "output": output})
    failed = []
    for part in range(4):
        try:
            environment.app.handle({"action": "part", "output": output, "part": part})
        except MemoryError as exc:
            failed.append({
                "Input": json.dumps({"action": "part", "output": output, "part": part}),
                "Error": "MemoryError",
                "Cause": json.dumps({"errorType": "MemoryError", "errorMessage": str(exc)}),
            })  # fmt: skip
    # As the Distributed Map's ResultWriter writes it, under the execution's results prefix
    environment.s3.put_object(
        Bucket=environment.data_bucket,
        Key=f"{plan['results_prefix'].rstrip('/')}/map-run-1/FAILED_0.json",
        Body=json.dumps(failed).encode(),
    )

    # When the execution summarizes
    summary = environment.app.handle({"action": "summarize", "output": output, "run_id": "exec-1"})

    # Then the failed part is named with its error, and no manifest claims the run finished
    assert not summary["complete"] and summary["missing_parts"] == 1 and summary["parts"] == 3
    assert summary["failures"] == [
        {
            "step": "part",
            "part": 2,
            "error": "MemoryError",
            "cause": "MemoryError: the partition did not fit",
        }
    ]
    assert "_run/manifest.json" not in environment.objects("batch/features-1/")

    # And a second execution shuffles nothing again and computes the one missing part
    calls.clear()
    again = execute(environment, run, name="exec-2")
    assert again["complete"] and again["parts"] == 4 and len(calls) == 1
    assert environment.app.handle({"action": "plan", **run, "run_id": "exec-3"})["finished"]


def test_the_part_that_checks_an_event_id_held_under_two_accounts_refuses_the_run(
    environment: Environment, tmp_path: Path
) -> None:
    # Given two objects on S3 holding one event id under two accounts, which the shuffle sends
    # to different account partitions
    records = generate_activity(400, seed=12)
    twin = [r for r in records if r["type"] == "payment"][3]
    home = shuffle.partition_of(twin["account_id"], 4)
    other = min(
        r["account_id"] for r in records if shuffle.partition_of(r["account_id"], 4) != home
    )
    half = len(records) // 2
    assert records.index(twin) < half
    first = environment.upload(
        "training-data/dup/a.jsonl", write_jsonl(records[:half], tmp_path / "a.jsonl")
    )
    second = environment.upload(
        "training-data/dup/b.jsonl",
        write_jsonl([*records[half:], {**twin, "account_id": other}], tmp_path / "b.jsonl"),
    )
    output = f"s3://{environment.data_bucket}/batch/dup-1"
    run = {
        "job": "features",
        "input": f"s3://{environment.data_bucket}/training-data/dup/",
        "output": output,
        "model": None,
        "partitions": 4,
    }
    plan = environment.app.handle({"action": "plan", **run, "run_id": "exec-1"})
    for item in range(plan["items"]):
        environment.app.handle({"action": "shuffle", "output": output, "item": item})
    environment.app.handle({"action": "collect", "output": output})

    # When the Distributed Map calls the part action for every partition
    refused: dict[int, str] = {}
    for part in range(4):
        try:
            environment.app.handle({"action": "part", "output": output, "part": part})
        except shuffle.HistoryError as exc:
            refused[part] = str(exc)

    # Then the part that checks that id fails, naming it, both accounts and both objects' lines
    checker = shuffle.partition_of(twin["event_id"], 4)
    assert refused == {
        checker: f"event {twin['event_id']} appears twice with different content, under two "
        f"accounts: {twin['account_id']} ({first}:{records.index(twin) + 1}) and {other} "
        f"({second}:{len(records) - half + 1})"
    }
    # And it stored no part, so the run is not complete and claims no manifest
    summary = environment.app.handle({"action": "summarize", "output": output, "run_id": "exec-1"})
    assert not summary["complete"] and summary["missing_parts"] == 1
    assert f"part-{checker:05d}.jsonl.gz" not in environment.objects("batch/dup-1/")


@pytest.mark.parametrize(
    ("input_key", "output", "problem"),
    [
        ("elsewhere", "batch/x", "must be in the environment's data bucket"),
        ("training-data/h.jsonl", "results/x", "must be a location under"),
        ("training-data/h.jsonl", "batch/", "must be a location under"),
    ],
)
def test_a_run_outside_the_function_s_locations_is_refused_before_anything_is_written(
    environment: Environment, input_key: str, output: str, problem: str
) -> None:
    data = (
        "s3://some-other-bucket/h.jsonl"
        if input_key == "elsewhere"
        else f"s3://{environment.data_bucket}/{input_key}"
    )
    run = {"job": "features", "input": data, "output": f"s3://{environment.data_bucket}/{output}"}
    with pytest.raises(BatchSettingsError, match=problem):
        environment.app.handle({"action": "plan", **run, "model": None, "partitions": None})
    assert environment.objects("") == {}


def test_a_model_that_does_not_match_its_pin_fails_the_plan(
    environment: Environment, tmp_path: Path
) -> None:
    from sds.kernel.serving import ModelUnavailable

    data = environment.upload(
        "training-data/h.jsonl", write_jsonl(generate_activity(100, seed=2), tmp_path / "h.jsonl")
    )
    run = {
        "job": "score",
        "input": data,
        "output": f"s3://{environment.data_bucket}/batch/x",
        "model": {"version": environment.model["version"], "sha256": "f" * 64},
        "partitions": None,
    }
    with pytest.raises(ModelUnavailable, match="does not match the deployed pin"):
        environment.app.handle({"action": "plan", **run})
    assert not environment.objects("batch/")


# Two runs started at once into one prefix --------------------------------------------------------


def test_a_second_create_only_write_of_an_s3_object_loses_and_leaves_the_first(
    environment: Environment,
) -> None:
    # Given a run's plan created under a prefix
    output = S3Storage(environment.data_bucket, "batch/x/")
    output.create_bytes(batch_run.PLAN, b"first\n")

    # When another writer creates it too (If-None-Match: *, which S3 answers 412)
    with pytest.raises(AlreadyExists) as lost:
        output.create_bytes(batch_run.PLAN, b"second\n")

    # Then it is told it lost, naming the object, and the first one is there as it was
    name = f"s3://{environment.data_bucket}/batch/x/_run/plan.json"
    assert str(lost.value).startswith(f"{name}: already exists")
    assert environment.objects("batch/x/") == {"_run/plan.json": b"first\n"}


def racing_plan_steps(
    env: Environment, monkeypatch: pytest.MonkeyPatch, mine: dict[str, Any], theirs: dict[str, Any]
) -> dict[str, Any]:
    """The plan step of `mine`, whose output prefix the plan step of `theirs` (another execution
    started at the same moment) writes its plan to first, after both found none there. The
    result of their step is in the returned dictionary's "theirs", once the other step ran."""
    real = batch_app.open_storage
    steps: dict[str, Any] = {}

    def opened(location: str) -> Any:
        storage = real(location)
        if location == mine["output"] and "theirs" not in steps:
            steps["theirs"] = rival_first(
                storage, lambda: env.app.handle({"action": "plan", **theirs, "run_id": "theirs"})
            )
        return storage

    monkeypatch.setattr(batch_app, "open_storage", opened)
    steps["mine"] = env.app.handle({"action": "plan", **mine, "run_id": "mine"})
    steps["theirs"] = steps["theirs"].began
    return steps


def test_of_two_executions_started_at_once_with_other_arguments_the_slower_plan_is_refused(
    environment: Environment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two backfills of one history into one prefix, of other partitions, whose plan steps
    # both find no plan there
    data = environment.upload(
        "training-data/h.jsonl", write_jsonl(generate_activity(100, seed=2), tmp_path / "h.jsonl")
    )
    output = f"s3://{environment.data_bucket}/batch/at-once"
    mine = {"job": "features", "input": data, "output": output, "model": None, "partitions": 2}
    theirs = {**mine, "partitions": 3}

    # When the other one's plan is written first
    with pytest.raises(batch_run.RunMismatch) as refused:
        racing_plan_steps(environment, monkeypatch, mine, theirs)

    # Then this one's plan step is refused as the plan step of a later execution is
    monkeypatch.undo()
    with pytest.raises(batch_run.RunMismatch) as later:
        environment.app.handle({"action": "plan", **mine, "run_id": "later"})
    assert str(refused.value) == str(later.value)
    assert "it has 3 partitions, this one 2" in str(refused.value)
    # And the prefix holds the other run's plan, which goes on to finish
    plan = json.loads(environment.objects("batch/at-once/")["_run/plan.json"])
    assert (plan["run_id"], plan["partitions"]) == ("theirs", 3)
    assert execute(environment, theirs, name="theirs")["complete"]


def test_of_two_executions_started_at_once_with_the_same_arguments_the_slower_joins_the_other(
    environment: Environment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two backfills of one history into one prefix, with the same arguments, whose plan
    # steps both find no plan there
    data = environment.upload(
        "training-data/h.jsonl", write_jsonl(generate_activity(100, seed=2), tmp_path / "h.jsonl")
    )
    output = f"s3://{environment.data_bucket}/batch/at-once"
    run = {"job": "features", "input": data, "output": output, "model": None, "partitions": 2}

    # When the other one's plan is written first
    steps = racing_plan_steps(environment, monkeypatch, run, run)

    # Then this one goes on with the other's plan, as a resumed run does
    assert steps["theirs"]["resumed"] is False and steps["mine"]["resumed"] is True
    plan = json.loads(environment.objects("batch/at-once/")["_run/plan.json"])
    assert plan["run_id"] == "theirs"
    monkeypatch.undo()
    assert execute(environment, run, name="mine")["complete"]


# `sds --aws score` and `sds --aws backfill` ---------------------------------------------------------


class EndingExecutions:
    """moto's Step Functions records executions but runs none (they stay RUNNING): this client
    is moto's, except that an execution ends SUCCEEDED at its `after`-th describe (the test runs
    the steps itself, with the batch function), and that the parts map reports its progress the
    way the service does (moto has no map runs)."""

    def __init__(self, real: Any, after: int, parts: int) -> None:
        self._real, self._after, self._parts, self._describes = real, after, parts, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def describe_execution(self, **kwargs: Any) -> dict[str, Any]:
        described = dict(self._real.describe_execution(**kwargs))
        self._describes += 1
        if self._describes >= self._after:
            described["status"] = "SUCCEEDED"
        return described

    def list_map_runs(self, **kwargs: Any) -> dict[str, Any]:
        machine = kwargs["executionArn"].split(":")[-2]
        arn = f"arn:aws:states:us-east-1:123456789012:mapRun:{machine}/ComputeParts:1"
        return {"mapRuns": [{"mapRunArn": arn}]}

    def describe_map_run(self, **_: Any) -> dict[str, Any]:
        done = min(self._describes, self._parts)
        return {"itemCounts": {"total": self._parts, "succeeded": done, "running": 0, "failed": 0}}


@pytest.fixture
def deployed_batch(
    aws: Any, environment: Environment, project: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The Batch stack's state machine and the discovery parameters `sds --aws score` reads;
    dev's pin in the lock file."""
    from sds.kernel.lock import Pin, write_pin

    role = aws.client("iam").create_role(
        RoleName="sds-dev-batch",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    definition = {"StartAt": "Plan", "States": {"Plan": {"Type": "Pass", "End": True}}}
    machine = aws.client("stepfunctions").create_state_machine(
        name="sds-dev-batch", definition=json.dumps(definition), roleArn=role
    )["stateMachineArn"]
    ssm = aws.client("ssm")
    for key, value in {
        "registry-bucket": environment.registry_bucket,
        "training-data-bucket": environment.data_bucket,
        "batch-state-machine": machine,
    }.items():
        ssm.put_parameter(Name=f"/sds/dev/{key}", Value=value, Type="String")
    write_pin(
        project,
        model=MODEL,
        env="dev",
        pin=Pin(environment.model["version"], environment.model["sha256"]),
    )
    monkeypatch.setattr("sds.ops.batch_aws.POLL_SECONDS", 0.01)
    return machine


def test_sds_aws_score_starts_the_state_machine_with_the_pin_and_reports_the_run(
    aws: Any,
    environment: Environment,
    deployed_batch: str,
    cli: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given history in dev's data bucket, and the run the state machine's steps complete
    data = environment.upload(
        "training-data/h.jsonl", write_jsonl(generate_activity(600, seed=3), tmp_path / "h.jsonl")
    )
    output = f"s3://{environment.data_bucket}/batch/scores-1"
    run = {"job": "score", "input": data, "output": output, "model": environment.model}
    finished = execute(environment, {**run, "partitions": None})
    parts = finished["parts"]
    from sds.kernel import sdk

    made = sdk.client
    ending = EndingExecutions(made("stepfunctions"), after=3, parts=parts)
    monkeypatch.setattr(
        sdk, "client", lambda service: ending if service == "stepfunctions" else made(service)
    )

    # When an operator scores on AWS
    result = cli("--aws", "score", "--env", "dev", "--data", data, "--out", output, "--json")

    # Then it started dev's state machine with the pinned model, followed it to the end, and
    # reports the run's manifest
    assert result.code == 0, result.err
    report = result.json()
    assert report["status"] == "SUCCEEDED" and report["complete"]
    assert report["manifest"]["totals"]["rows"] == finished["rows"]
    (execution,) = aws.client("stepfunctions").list_executions(stateMachineArn=deployed_batch)[
        "executions"
    ]
    described = aws.client("stepfunctions").describe_execution(
        executionArn=execution["executionArn"]
    )
    assert json.loads(described["input"]) == {
        "job": "score",
        "input": data,
        "output": output,
        "model": environment.model,
        "partitions": None,
    }
    assert execution["name"].startswith("score-")
    assert "started score-" in result.err
    # and showed the parts map's progress while following it
    assert f"parts: 1/{parts} items done" in result.err
    assert f"parts: {parts}/{parts} items done, 0 running, 0 failed" in result.err


def test_sds_aws_backfill_without_waiting_prints_the_execution(
    aws: Any, environment: Environment, deployed_batch: str, cli: Any
) -> None:
    data = f"s3://{environment.data_bucket}/training-data/"
    output = f"s3://{environment.data_bucket}/batch/features-1/"

    result = cli(
        "--aws", "backfill", "--env", "dev", "--data", data, "--out", output, "--no-wait",
        "--partitions", "3",
    )  # fmt: skip

    assert result.code == 0, result.err
    assert "started features-" in result.out
    (execution,) = aws.client("stepfunctions").list_executions(stateMachineArn=deployed_batch)[
        "executions"
    ]
    described = aws.client("stepfunctions").describe_execution(
        executionArn=execution["executionArn"]
    )
    assert json.loads(described["input"])["model"] is None
    assert json.loads(described["input"])["output"] == output.rstrip("/")
    assert json.loads(described["input"])["partitions"] == 3  # as on this machine


@pytest.mark.parametrize(
    ("data", "out", "problem"),
    [
        ("s3://someone-elses/h.jsonl", "{bucket}/batch/x", "must be in the environment's data"),
        ("{bucket}/training-data/", "{bucket}/models/x", "must be a location under"),
        ("{bucket}/training-data/", "/tmp/scores", "must be a location under"),
    ],
)
def test_sds_aws_score_refuses_locations_the_state_machine_cannot_use_before_starting_it(
    aws: Any,
    environment: Environment,
    deployed_batch: str,
    cli: Any,
    data: str,
    out: str,
    problem: str,
) -> None:
    bucket = f"s3://{environment.data_bucket}"
    result = cli(
        "--aws", "score", "--env", "dev",
        "--data", data.format(bucket=bucket), "--out", out.format(bucket=bucket),
    )  # fmt: skip

    assert result.code == 2 and problem in result.err
    assert not aws.client("stepfunctions").list_executions(stateMachineArn=deployed_batch)[
        "executions"
    ]


def start_running(aws: Any, machine: str, output: str, *, data: str = "") -> str:
    """An execution of `machine` writing `output` that is still running (moto runs none to its
    end), as another operator's `sds --aws backfill --no-wait` leaves one; its ARN."""
    document = {"job": "features", "input": data, "output": output, "model": None}
    return str(
        aws.client("stepfunctions").start_execution(
            stateMachineArn=machine,
            name=f"features-{len(output)}-{abs(hash(output)) % 10**6}",
            input=json.dumps({**document, "partitions": None}),
        )["executionArn"]
    )


def executions_of(aws: Any, machine: str) -> list[str]:
    listed = aws.client("stepfunctions").list_executions(stateMachineArn=machine)["executions"]
    return sorted(e["executionArn"] for e in listed)


@pytest.mark.parametrize("command", ["score", "backfill"])
def test_a_run_into_an_out_that_a_running_execution_writes_is_refused_naming_it(
    aws: Any, environment: Environment, deployed_batch: str, cli: Any, command: str
) -> None:
    # Given a run into --out started without following it (`--no-wait`), still running on AWS
    data = f"s3://{environment.data_bucket}/training-data/"
    output = f"s3://{environment.data_bucket}/batch/busy"
    arguments = ["--aws", command, "--env", "dev", "--data", data, "--no-wait"]
    first = cli(*arguments, "--out", output, "--json")
    assert first.code == 0, first.err
    arn = first.json()["execution"]

    # When the same command runs again while it runs (--out spelt with a trailing slash; not
    # following it, so that a run it started would not be followed forever on moto)
    again = cli(*arguments, "--out", f"{output}/")
    as_json = cli(*arguments, "--out", output, "--json")

    # Then it is refused (exit 3) in one line naming the running execution and what to do:
    # wait for it to end or stop it, then run again; and it starts nothing
    assert again.code == as_json.code == 3, again.err
    line = again.err.strip().splitlines()[-1]
    assert line == (
        f"sds: refused: {output} is being written by a run still going on dev's batch state "
        f"machine: {arn}; wait for it to end (aws stepfunctions describe-execution "
        f"--execution-arn {arn}) or stop it (aws stepfunctions stop-execution --execution-arn "
        f"{arn}), then run the command again"
    ), again.err
    report = as_json.json()
    assert report["error"]["type"] == "RunInProgress" and report["error"]["exit_code"] == 3
    assert (report["execution"], report["output"]) == (arn, output)
    assert executions_of(aws, deployed_batch) == [arn]


def test_a_running_execution_is_found_on_any_page_of_the_running_ones(
    aws: Any,
    environment: Environment,
    deployed_batch: str,
    cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a run into --out still running (its input naming --out with a trailing slash, as
    # one started by hand may), started before two runs into other prefixes, and running
    # executions listed one a page (the newest first: it is on the last page)
    bucket = f"s3://{environment.data_bucket}"
    output = f"{bucket}/batch/busy"
    arn = start_running(aws, deployed_batch, f"{output}/")
    for other in ("a", "b"):
        start_running(aws, deployed_batch, f"{bucket}/batch/{other}")
    monkeypatch.setattr("sds.ops.batch_aws.RUNNING_PAGE", 1, raising=False)

    # When a backfill into --out starts
    result = cli(
        "--aws", "backfill", "--env", "dev", "--data", f"{bucket}/training-data/",
        "--out", output, "--no-wait",
    )  # fmt: skip

    # Then it is refused, naming the run found on the last page
    assert result.code == 3, result.err
    assert (
        f"{output} is being written by a run still going on dev's batch state machine: {arn};"
        in result.err
    )
    assert len(executions_of(aws, deployed_batch)) == 3


def test_running_executions_that_write_elsewhere_do_not_hold_up_a_run(
    aws: Any, environment: Environment, deployed_batch: str, cli: Any
) -> None:
    # Given runs still going on AWS into other prefixes (one of them the --out's parent, one
    # whose name --out starts with), and one whose input names no output at all
    bucket = f"s3://{environment.data_bucket}"
    output = f"{bucket}/batch/mine"
    for other in (f"{bucket}/batch", f"{bucket}/batch/mine-2", f"{bucket}/batch/theirs"):
        start_running(aws, deployed_batch, other)
    aws.client("stepfunctions").start_execution(
        stateMachineArn=deployed_batch, name="by-hand", input="{}"
    )

    # When a backfill into --out starts
    result = cli(
        "--aws", "backfill", "--env", "dev", "--data", f"{bucket}/training-data/",
        "--out", output, "--no-wait", "--json",
    )  # fmt: skip

    # Then it starts: the running ones write elsewhere
    assert result.code == 0, result.err
    assert len(executions_of(aws, deployed_batch)) == 5


def test_a_run_into_an_out_starts_again_once_the_earlier_run_there_has_ended(
    aws: Any, environment: Environment, deployed_batch: str, cli: Any
) -> None:
    # Given a run into --out started without following it, then stopped
    arguments = [
        "--aws", "backfill", "--env", "dev",
        "--data", f"s3://{environment.data_bucket}/training-data/",
        "--out", f"s3://{environment.data_bucket}/batch/again", "--no-wait", "--json",
    ]  # fmt: skip
    first = cli(*arguments)
    assert first.code == 0, first.err
    arn = first.json()["execution"]
    assert cli(*arguments).code == 3  # refused while it runs
    aws.client("stepfunctions").stop_execution(executionArn=arn)

    # When the same command runs again
    again = cli(*arguments)

    # Then it starts a new execution into the same --out
    assert again.code == 0, again.err
    assert again.json()["execution"] != arn
    assert executions_of(aws, deployed_batch) == sorted([arn, again.json()["execution"]])


def test_a_run_that_cannot_look_for_running_ones_starts_nothing(
    environment: Environment, deployed_batch: str, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    from sds.kernel import sdk

    # Given a caller whose policy may start the batch state machine but not list its executions
    started: list[dict[str, Any]] = []

    class Denied:
        def get_paginator(self, operation: str) -> Any:
            assert operation == "list_executions"
            return self

        def paginate(self, **_: Any) -> Any:
            error = {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}
            raise ClientError(error, "ListExecutions")

        def start_execution(self, **kwargs: Any) -> dict[str, Any]:
            started.append(kwargs)
            return {"executionArn": "arn:aws:states:us-east-1:123456789012:execution:m:x"}

    made = sdk.client
    monkeypatch.setattr(
        sdk, "client", lambda service: Denied() if service == "stepfunctions" else made(service)
    )

    # When a backfill starts
    output = f"s3://{environment.data_bucket}/batch/unknown"
    result = cli(
        "--aws", "backfill", "--env", "dev",
        "--data", f"s3://{environment.data_bucket}/training-data/", "--out", output, "--no-wait",
    )  # fmt: skip

    # Then it fails (exit 1) saying what it could not do and why, and starts nothing
    assert result.code == 1, result.err
    line = result.err.strip().splitlines()[-1]
    assert line.startswith(
        f"sds: error: looking for runs of dev's batch state machine still writing {output}"
    ), line
    assert "access denied" in line
    assert started == []


class NothingRunning:
    """A fake Step Functions client's answer to the command's look for runs still writing --out:
    none (the fake's executions end before the next one starts)."""

    def get_paginator(self, operation: str) -> Any:
        assert operation == "list_executions"
        return self

    def paginate(self, **_: Any) -> Any:
        return iter([{"executions": []}])


@pytest.mark.parametrize(
    ("cause", "kind", "said", "advice"),
    [
        (
            {"errorType": "MemoryError", "errorMessage": "too big"},
            "BatchRunFailed",
            "ended FAILED: States.ExceedToleratedFailureThreshold",
            "run the same command again",
        ),
        (
            {"errorType": "HistoryError", "errorMessage": "s3://b/h.jsonl:3: invalid JSON"},
            "HistoryError",
            "s3://b/h.jsonl:3: invalid JSON; ",
            "fix the input, then run the command into a new --out prefix",
        ),
    ],
    ids=["passing fault", "refused history"],
)
def test_a_failed_execution_names_the_failed_parts(
    environment: Environment,
    deployed_batch: str,
    workspace: Any,
    tmp_path: Path,
    cause: dict[str, str],
    kind: str,
    said: str,
    advice: str,
) -> None:
    import dataclasses

    from sds.ops.aws import Clients, Discovery
    from sds.ops.batch_aws import BatchRunFailed, run_on_aws

    # Given an execution that fails with a part over the tolerance, as ResultWriter recorded it
    output = f"s3://{environment.data_bucket}/batch/features-2"
    failed = [
        {
            "Input": json.dumps({"action": "part", "output": output, "part": 3}),
            "Error": "States.TaskFailed",
            "Cause": json.dumps(cause),
        }
    ]

    class Failing(NothingRunning):
        def start_execution(self, **kwargs: Any) -> dict[str, Any]:
            name = kwargs["name"]
            environment.s3.put_object(
                Bucket=environment.data_bucket,
                Key=f"batch/features-2/_run/sfn/{name}/map-1/FAILED_0.json",
                Body=json.dumps(failed).encode(),
            )
            return {"executionArn": f"arn:aws:states:us-east-1:123456789012:execution:m:{name}"}

        def describe_execution(self, **_: Any) -> dict[str, Any]:
            return {
                "status": "FAILED",
                "error": "States.ExceedToleratedFailureThreshold",
                "cause": "The specified tolerated failure threshold was exceeded",
            }

    ws = workspace()
    ssm = Clients()["ssm"]
    ws = dataclasses.replace(
        ws, discovery=Discovery(clients=Clients(overrides={"stepfunctions": Failing(), "ssm": ssm}))
    )
    lines: list[str] = []

    # When the run is started and followed
    with pytest.raises(BatchRunFailed) as raised:
        run_on_aws(
            ws, "features", env="dev", data=f"s3://{environment.data_bucket}/training-data/",
            out=output, version=None, say=lines.append,
        )  # fmt: skip

    # Then it fails (exit 1), as the history's error where the part refused the history, saying
    # why and how to go on: resume after a passing fault, fix the input after a refusal of the
    # history (which a resumed run would meet again); the failed part is named after that
    failure = raised.value
    described = f"{cause['errorType']}: {cause['errorMessage']}"
    assert (type(failure).__name__, failure.exit_code) == (kind, 1)
    assert failure.failures == [
        {"step": "part", "part": 3, "error": "States.TaskFailed", "cause": described}
    ]
    message = str(failure)
    assert said in message and advice in message
    assert ("run the same command again" in message) is (cause["errorType"] == "MemoryError")
    assert failure.listing() == [f"  part 3: States.TaskFailed: {described}"]


def error_and_after(err: str) -> tuple[str, list[str]]:
    """The command's error line on stderr, and the lines after it."""
    lines = err.strip().splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith("sds:")]
    return lines[at], lines[at + 1 :]


class RunningSteps(NothingRunning):
    """moto's Step Functions records executions but runs none: this client starts an execution
    by running the state machine's steps with the batch function (`execute`, its maps' failures
    handled as the service handles them), and describes it as the service does: SUCCEEDED, or
    FAILED with the error a step raised (a function's error is the execution's error, its cause
    the function's error document in JSON) or a failed map's (`MapFailed`)."""

    def __init__(self, env: Environment) -> None:
        self._env = env
        self.raised: Exception | None = None
        self.started: list[str] = []

    def start_execution(self, **kwargs: Any) -> dict[str, Any]:
        self.raised = None
        self.started.append(kwargs["name"])
        try:
            execute(self._env, json.loads(kwargs["input"]), name=kwargs["name"], maps=True)
        except Exception as exc:
            self.raised = exc
        return {
            "executionArn": f"arn:aws:states:us-east-1:123456789012:execution:m:{kwargs['name']}"
        }

    def describe_execution(self, **_: Any) -> dict[str, Any]:
        if self.raised is None:
            return {"status": "SUCCEEDED"}
        if isinstance(self.raised, MapFailed):
            return {"status": "FAILED", "error": MapFailed.error, "cause": str(self.raised)}
        kind = type(self.raised).__name__
        cause = {
            "errorMessage": str(self.raised),
            "errorType": kind,
            "requestId": "c0ffee00-0000-4000-8000-000000000000",
            "stackTrace": ['  File "/var/task/lambdas/inference/batch.py", line 1, in collect\n'],
        }
        return {"status": "FAILED", "error": kind, "cause": json.dumps(cause)}

    def list_map_runs(self, **_: Any) -> dict[str, Any]:
        return {"mapRuns": []}


@pytest.mark.parametrize("given", NOTHING_TO_COMPUTE)
@pytest.mark.parametrize("command", ["score", "backfill"])
def test_sds_aws_score_or_backfill_of_a_history_with_nothing_to_compute_says_so_as_locally(
    environment: Environment,
    deployed_batch: str,
    cli: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    given: str,
) -> None:
    from sds.kernel import sdk

    # Given a prefix in dev's data bucket whose history holds no event, or no payment
    data, refusal = nothing_to_compute(environment, tmp_path, given)
    output = f"s3://{environment.data_bucket}/batch/nothing"
    machine = RunningSteps(environment)
    made = sdk.client
    monkeypatch.setattr(
        sdk, "client", lambda service: machine if service == "stepfunctions" else made(service)
    )

    # When an operator runs it on AWS
    result = cli("--aws", command, "--env", "dev", "--data", data, "--out", output)

    # Then it fails with the line `sds score` prints on this machine, not as a run to resume,
    # and leaves no object under --out
    assert isinstance(machine.raised, shuffle.HistoryError)
    assert result.code == 1, result.err
    assert result.err.strip().splitlines()[-1] == f"sds: error: {refusal}"
    assert "run the same command again" not in result.out + result.err
    assert environment.objects("batch/") == {}

    # And --json reports it as the same error as on this machine, naming the execution
    result = cli("--aws", command, "--env", "dev", "--data", data, "--out", output, "--json")
    assert result.code == 1, result.err
    report = result.json()
    assert report["error"] == {"message": refusal, "type": "HistoryError", "exit_code": 1}
    assert report["execution"].split(":")[-1].startswith(("score-", "features-"))


def refused_plan(env: Environment, tmp_path: Path, given: str) -> tuple[list[str], str]:
    """The arguments of a run whose plan step refuses it (before it writes anything), and how
    the refusal's line starts."""
    bucket = f"s3://{env.data_bucket}"
    data = env.upload(
        "training-data/h.jsonl", write_jsonl(generate_activity(200, seed=5), tmp_path / "h.jsonl")
    )
    output = f"{bucket}/batch/refused"
    if given == "another run at --out":
        other = env.upload("training-data/other.jsonl", tmp_path / "h.jsonl")
        run = {"job": "features", "input": other, "output": output, "model": None}
        env.app.handle({"action": "plan", **run, "partitions": None, "run_id": "earlier"})
        return ["--data", data, "--out", output], f"{output} holds a run this one cannot resume"
    if given == "other files at --out":
        env.s3.put_object(Bucket=env.data_bucket, Key="batch/refused/notes.txt", Body=b"mine")
        return ["--data", data, "--out", output], f"{output} is not empty and holds no sds run"
    if given == "no history files":
        env.s3.put_object(Bucket=env.data_bucket, Key="training-data/docs/a.txt", Body=b"x")
        prefix = f"{bucket}/training-data/docs"
        return ["--data", prefix, "--out", output], f"{prefix}: no .jsonl or .jsonl.gz files"
    if given == "--out inside --data":
        return (
            ["--data", f"{bucket}/batch/", "--out", output],
            f"the output {output} is inside the input {bucket}/batch/",
        )
    assert given == "partitions out of range"
    return (
        ["--data", data, "--out", output, "--partitions", "0"],
        "--partitions must be between 1 and 10000, got 0",
    )


@pytest.mark.parametrize(
    ("given", "kind", "code"),
    [
        ("another run at --out", "RunMismatch", 3),
        ("other files at --out", "Refused", 3),
        ("no history files", "HistoryError", 1),
        ("partitions out of range", "UsageError", 2),
        ("--out inside --data", "UsageError", 2),
    ],
)
@pytest.mark.parametrize("command", ["score", "backfill"])
def test_a_run_the_plan_step_refuses_exits_on_aws_as_on_this_machine_with_one_line(
    environment: Environment,
    deployed_batch: str,
    cli: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    given: str,
    kind: str,
    code: int,
) -> None:
    from sds.kernel import sdk

    # Given a run the plan step refuses, and what --out holds before it
    arguments, problem = refused_plan(environment, tmp_path, given)
    before = environment.objects("batch/")
    machine = RunningSteps(environment)
    made = sdk.client
    monkeypatch.setattr(
        sdk, "client", lambda service: machine if service == "stepfunctions" else made(service)
    )

    # When the same backfill runs on this machine, and the command on AWS
    monkeypatch.setenv("SDS_TARGET", "local")
    local = cli("backfill", *arguments, "--workers", "1", "--json")
    monkeypatch.setenv("SDS_TARGET", "aws")
    on_aws = cli("--aws", command, "--env", "dev", *arguments)
    as_json = cli("--aws", command, "--env", "dev", *arguments, "--json")

    # Then both exit with the refusal's own code, and --json reports the same error type
    assert local.code == on_aws.code == as_json.code == code, (local.err, on_aws.err)
    assert local.json()["error"]["type"] == as_json.json()["error"]["type"] == kind
    assert as_json.json()["error"]["exit_code"] == code
    # and the command says so in one line naming the problem, not Step Functions' raw cause
    # (the function's error document, with its stack trace)
    label = "refused" if code == 3 else "error"
    last = on_aws.err.strip().splitlines()[-1]
    assert last.startswith(f"sds: {label}: {problem}"), on_aws.err
    assert "errorType" not in on_aws.out + on_aws.err and "stackTrace" not in on_aws.err
    assert "run the same command again" not in on_aws.out + on_aws.err
    # And the refusal wrote nothing under --out
    assert environment.objects("batch/") == before
    if given == "--out inside --data":  # refused by the CLI, before it starts anything
        assert not machine.started
    else:  # refused by the plan step, whose raw cause only --json carries
        assert json.loads(as_json.json()["cause"])["errorType"] == kind


def test_a_step_s_passing_fault_is_one_line_naming_it_and_the_run_resumes(
    environment: Environment,
    deployed_batch: str,
    cli: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sds.kernel import sdk

    # Given a backfill on AWS whose collect step meets a fault that is no error of sds's (S3
    # unreachable a moment), after its shuffle
    data = environment.upload(
        "training-data/h.jsonl", write_jsonl(generate_activity(300, seed=4), tmp_path / "h.jsonl")
    )
    output = f"s3://{environment.data_bucket}/batch/fault"
    machine = RunningSteps(environment)
    made = sdk.client
    monkeypatch.setattr(
        sdk, "client", lambda service: machine if service == "stepfunctions" else made(service)
    )

    def unreachable(plan: Any, storage: Any) -> Any:
        raise ConnectionError("S3 did not answer")

    monkeypatch.setattr(batch_run, "collect_step", unreachable)

    # When it runs
    result = cli("--aws", "backfill", "--env", "dev", "--data", data, "--out", output)

    # Then it fails (exit 1) naming the fault in the function's words, not its raw error
    # document, and says that running it again resumes
    assert result.code == 1, result.err
    ended, after = error_and_after(result.err)
    assert not after and ended.endswith(
        "ended FAILED: ConnectionError: S3 did not answer; run the same command again to compute "
        "what is missing (finished parts are kept)"
    ), ended
    assert "errorType" not in result.out + result.err
    # and --json keeps the raw cause
    result = cli("--aws", "backfill", "--env", "dev", "--data", data, "--out", output, "--json")
    assert json.loads(result.json()["cause"])["errorMessage"] == "S3 did not answer"


def test_a_step_that_s3_failed_keeps_its_type_says_that_the_command_resumes_and_it_does(
    environment: Environment,
    deployed_batch: str,
    cli: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lambdas.inference import batch as batch_function
    from sds.kernel import sdk

    # Given a backfill on AWS whose collect step, after its shuffle, meets S3 refusing a request
    # (the run's storage says so as a StorageError, an error of sds's own)
    data = environment.upload(
        "training-data/h.jsonl", write_jsonl(generate_activity(300, seed=4), tmp_path / "h.jsonl")
    )
    output = f"s3://{environment.data_bucket}/batch/throttled"
    arguments = ["--aws", "backfill", "--env", "dev", "--data", data, "--out", output]
    machine = RunningSteps(environment)
    made = sdk.client
    monkeypatch.setattr(
        sdk, "client", lambda service: machine if service == "stepfunctions" else made(service)
    )
    refusal = f"{output}/_run/work/shuffled.json: SlowDown: Please reduce your request rate."
    real = batch_run.collect_step

    def throttled(plan: Any, storage: Any) -> Any:
        raise StorageError(refusal)

    monkeypatch.setattr(batch_run, "collect_step", throttled)

    # When it runs
    result = cli(*arguments)

    # Then it fails as that error, in its words, and says that running it again resumes
    assert result.code == 1, result.err
    line, after = error_and_after(result.err)
    assert not after and line == (
        f"sds: error: {refusal}; run the same command again to compute what is missing "
        "(finished parts are kept)"
    ), result.err
    result = cli(*arguments, "--json")
    assert result.json()["error"]["type"] == "StorageError", result.err

    # And running it again (S3 answering) finishes the run from its shuffle: no item is
    # shuffled again
    monkeypatch.setattr(batch_run, "collect_step", real)
    shuffled: list[int] = []
    real_shuffle = batch_function.shuffle_step

    def counted(*args: Any, **kwargs: Any) -> Any:
        shuffled.append(1)
        return real_shuffle(*args, **kwargs)

    monkeypatch.setattr(batch_function, "shuffle_step", counted)
    result = cli(*arguments)
    assert result.code == 0, result.err
    assert shuffled == []


def test_a_run_on_aws_with_failed_parts_fails_in_one_line_that_says_to_resume_then_names_them(
    environment: Environment,
    deployed_batch: str,
    cli: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sds.kernel import sdk

    # Given a backfill on AWS whose third part fails (out of memory), the others finishing
    data = environment.upload(
        "training-data/h.jsonl", write_jsonl(generate_activity(900, seed=2), tmp_path / "h.jsonl")
    )
    output = f"s3://{environment.data_bucket}/batch/parts-failed"
    arguments = ["--aws", "backfill", "--env", "dev", "--data", data, "--out", output]
    machine = RunningSteps(environment)
    made = sdk.client
    monkeypatch.setattr(
        sdk, "client", lambda service: machine if service == "stepfunctions" else made(service)
    )
    real = batch_run.jobs.feature_rows
    calls: list[int] = []

    def flaky(history: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("the partition did not fit")
        return real(history)

    monkeypatch.setattr(batch_run.jobs, "feature_rows", flaky)

    # When it runs
    result = cli(*arguments, "--partitions", "4")

    # Then it fails (exit 1) as every error does: one line on stderr naming what failed and
    # saying that running again resumes, then the failed part; nothing on stdout
    assert result.code == 1, result.err
    assert result.out == ""
    line, after = error_and_after(result.err)
    name = machine.started[-1]
    assert line == (
        f"sds: error: {name} on dev ended FAILED: States.ExceedToleratedFailureThreshold: The "
        "specified tolerated failure threshold was exceeded (1 failed item); run the same "
        "command again to compute what is missing (finished parts are kept)"
    )
    assert after == ["  part 2: MemoryError: the partition did not fit"]

    # And --json prints the error's document, with the failed items and the execution
    def out_of_memory(history: Any) -> Any:
        raise MemoryError("the partition did not fit")

    monkeypatch.setattr(batch_run.jobs, "feature_rows", out_of_memory)  # the part left fails
    result = cli(*arguments, "--json")
    assert result.code == 1, result.err
    report = result.json()
    assert report["error"] == {
        "message": error_and_after(result.err)[0].removeprefix("sds: error: "),
        "type": "BatchRunFailed",
        "exit_code": 1,
    }
    assert report["failures"] == [
        {
            "step": "part",
            "part": 2,
            "error": "MemoryError",
            "cause": "MemoryError: the partition did not fit",
        }
    ]
    assert report["execution"].endswith(f":{machine.started[-1]}")
    assert report["status"] == "FAILED" and report["output"] == output

    # And running it again computes the part that failed
    monkeypatch.setattr(batch_run.jobs, "feature_rows", real)
    result = cli(*arguments)
    assert result.code == 0, result.err
    assert "into 4 parts" in result.out


def test_a_history_with_a_bad_line_fails_on_aws_as_on_this_machine(
    environment: Environment,
    deployed_batch: str,
    cli: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sds.kernel import sdk

    # Given a history in dev's data bucket whose third line is not JSON
    lines = write_jsonl(generate_activity(300, seed=4), tmp_path / "h.jsonl").read_text()
    bad = lines.splitlines()
    bad[2] = "{not json"
    (tmp_path / "h.jsonl").write_text("\n".join(bad) + "\n")
    data = environment.upload("training-data/bad/h.jsonl", tmp_path / "h.jsonl")
    output = f"s3://{environment.data_bucket}/batch/bad"
    machine = RunningSteps(environment)
    made = sdk.client
    monkeypatch.setattr(
        sdk, "client", lambda service: machine if service == "stepfunctions" else made(service)
    )

    # When it is backfilled on this machine, and on AWS
    monkeypatch.setenv("SDS_TARGET", "local")
    local = cli("backfill", "--data", data, "--out", str(tmp_path / "out"), "--workers", "1")
    local_json = cli("backfill", "--data", data, "--out", str(tmp_path / "out"), "--json")
    monkeypatch.setenv("SDS_TARGET", "aws")
    on_aws = cli("--aws", "backfill", "--env", "dev", "--data", data, "--out", output)
    as_json = cli("--aws", "backfill", "--env", "dev", "--data", data, "--out", output, "--json")

    # Then both fail (exit 1) with a line naming the bad line in the same words; on AWS the line
    # goes on to say what to do (a resumed run would meet it again), and the failed item follows
    assert local.code == local_json.code == on_aws.code == as_json.code == 1, on_aws.err
    problem = local.err.strip().splitlines()[-1].removeprefix("sds: error: ")
    assert problem.startswith(f"{data}:3: invalid JSON"), problem
    assert on_aws.out == ""
    line, after = error_and_after(on_aws.err)
    assert line.startswith(f"sds: error: {problem}; {machine.started[0]} on dev ended FAILED")
    assert line.endswith(
        "fix the input, then run the command into a new --out prefix (or delete "
        f"{output}'s objects first: a changed input cannot resume this run)"
    )
    assert after == [f"  shuffle item 0: HistoryError: {problem}"]
    assert "run the same command again" not in on_aws.err
    # And --json reports the same error type as on this machine, with the failed item and the
    # execution
    report = as_json.json()
    assert local_json.json()["error"]["type"] == report["error"]["type"] == "HistoryError"
    assert report["error"]["exit_code"] == 1
    assert [(f["step"], f["item"], f["error"]) for f in report["failures"]] == [
        ("shuffle", 0, "HistoryError")
    ]
    assert report["execution"].endswith(f":{machine.started[-1]}")


def test_ctrl_c_while_following_a_run_on_aws_says_the_run_goes_on_and_how_to_stop_it(
    environment: Environment,
    deployed_batch: str,
    cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sds.kernel import sdk

    # Given an execution that Ctrl-C interrupts while the CLI follows it
    arn = "arn:aws:states:us-east-1:123456789012:execution:sds-dev-batch:features-1"

    class Interrupted(NothingRunning):
        def start_execution(self, **_: Any) -> dict[str, Any]:
            return {"executionArn": arn}

        def describe_execution(self, **_: Any) -> dict[str, Any]:
            raise KeyboardInterrupt

    made = sdk.client
    monkeypatch.setattr(
        sdk,
        "client",
        lambda service: Interrupted() if service == "stepfunctions" else made(service),
    )

    # When an operator backfills on AWS and presses Ctrl-C
    data = f"s3://{environment.data_bucket}/training-data/"
    output = f"s3://{environment.data_bucket}/batch/features-3/"
    result = cli("--aws", "backfill", "--env", "dev", "--data", data, "--out", output)

    # Then it exits 130 saying the run goes on, with the command that stops it
    assert result.code == 130, result.err
    assert result.err.strip().splitlines()[-1] == (
        f"sds: interrupted: stopped following; the run keeps going on AWS: {arn} (stop it with: "
        f"aws stepfunctions stop-execution --execution-arn {arn})"
    )


def test_a_network_failure_while_following_a_run_on_aws_says_the_run_goes_on_and_how_to_follow_it(
    environment: Environment,
    deployed_batch: str,
    cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from botocore.exceptions import EndpointConnectionError

    from sds.kernel import sdk

    # Given an execution whose following loses the network
    arn = "arn:aws:states:us-east-1:123456789012:execution:sds-dev-batch:features-2"

    class Unreachable(NothingRunning):
        def start_execution(self, **_: Any) -> dict[str, Any]:
            return {"executionArn": arn}

        def describe_execution(self, **_: Any) -> dict[str, Any]:
            raise EndpointConnectionError(endpoint_url="https://states.us-east-1.amazonaws.com")

    made = sdk.client
    monkeypatch.setattr(
        sdk,
        "client",
        lambda service: Unreachable() if service == "stepfunctions" else made(service),
    )

    # When an operator backfills on AWS
    data = f"s3://{environment.data_bucket}/training-data/"
    output = f"s3://{environment.data_bucket}/batch/features-4/"
    result = cli("--aws", "backfill", "--env", "dev", "--data", data, "--out", output)

    # Then it fails saying why, that the run goes on, and how to follow it or stop it
    assert result.code != 0, result.err
    line = result.err.strip().splitlines()[-1]
    assert "Could not connect to the endpoint URL" in line, line
    assert f"the run keeps going on AWS: {arn}" in line, line
    assert f"aws stepfunctions describe-execution --execution-arn {arn}" in line, line
    assert f"aws stepfunctions stop-execution --execution-arn {arn}" in line, line
