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

from lambdas.inference.batch import BatchApp
from sds.kernel.batch import run as batch_run
from sds.kernel.batch import shuffle
from sds.kernel.batch.run import ModelRef
from sds.kernel.batch.settings import BatchFunctionSettings, BatchSettingsError
from sds.kernel.registry import Version, open_registry
from sds.ops.batch import run_locally
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


def execute(env: Environment, run: dict[str, Any], *, name: str = "exec-1") -> dict[str, Any]:
    """What the state machine does with the function, step by step (without the map's failure
    handling: a raised error stops here, as it would fail a map item)."""
    plan = env.app.handle({"action": "plan", **run, "run_id": name})
    if plan["finished"]:
        return env.app.handle({"action": "summarize", "output": run["output"], "run_id": name})
    if plan["shuffle"]:
        items = json.loads(
            env.s3.get_object(Bucket=env.data_bucket, Key=plan["items_key"])["Body"].read()
        )
        for item in items:
            env.app.handle({"action": "shuffle", "output": run["output"], **item})
    collected = env.app.handle({"action": "collect", "output": run["output"]})
    parts = json.loads(
        env.s3.get_object(Bucket=env.data_bucket, Key=collected["parts_key"])["Body"].read()
    )
    for part in parts:
        env.app.handle({"action": "part", "output": run["output"], **part})
    return env.app.handle({"action": "summarize", "output": run["output"], "run_id": name})


def test_the_item_processor_writes_the_parts_a_local_run_writes(
    environment: Environment, tmp_path: Path, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a history on S3: a plain object cut into several ranges and a gzipped one
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
