"""The architecture picture is drawn from cdk.json, so it follows the configured environments.

Given the project's cdk.json, when docs/diagram.py builds the graph (Graphviz's rendering is
stubbed out: `make diagram` renders, the suite only checks what would be drawn), then every
environment appears in promotion order with its stacks and deployment strategy, and every path
(requests, activity events, training, promotion, rollback, capture, batch runs) has its edges.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sds_docs_diagram", ROOT / "docs" / "diagram.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _graph_source(cdk_json: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    import diagrams

    captured: list[str] = []
    monkeypatch.setattr(diagrams.Diagram, "render", lambda self: captured.append(self.dot.source))
    monkeypatch.setattr("os.remove", lambda path: None)
    _load_generator().draw(tmp_path / "architecture.png", cdk_json=cdk_json)
    (source,) = captured
    return source


_TOKEN = re.compile(
    r'^(?P<root>digraph) "[^"]*" \{'
    r'|^\s*subgraph "cluster_(?P<cluster>[^"]*)" \{'
    r"|^\s*(?P<close>\})"
    r'|^\s*"?(?P<tail>\w+)"? -> "?(?P<head>\w+)"? \[(?P<edge>[^\]]*)\]'
    r'|^\s*"?(?P<node>\w+)"? \[(?P<attrs>[^\]]*)\]',
    re.MULTILINE,
)


def _attribute(attrs: str, name: str) -> str:
    found = re.search(rf'\b{name}=(?:"((?:[^"\\]|\\.)*)"|([^\s"]+))', attrs)
    return "" if found is None else found.group(1) or found.group(2)


def _graph(source: str) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str, str, str]]]:
    """Each node's (label, innermost cluster), and each edge's (tail, head, label, style)."""
    nodes: dict[str, tuple[str, str]] = {}
    edges: list[tuple[str, str, str, str]] = []
    clusters: list[str] = []
    for token in _TOKEN.finditer(source):
        if token["root"] is not None:
            clusters.append("")
        elif token["cluster"] is not None:
            clusters.append(token["cluster"])
        elif token["close"] is not None:
            clusters.pop()
        elif token["tail"] is not None:
            attrs = token["edge"]
            edges.append(
                (
                    token["tail"],
                    token["head"],
                    _attribute(attrs, "label"),
                    _attribute(attrs, "style"),
                )
            )
        elif token["node"] not in ("graph", "node", "edge"):
            nodes[token["node"]] = (
                _attribute(token["attrs"], "label"),
                clusters[-1],
            )
    return nodes, edges


def _node(nodes: dict[str, tuple[str, str]], cluster: str, starts: str) -> str:
    (found,) = [n for n, (label, c) in nodes.items() if c == cluster and label.startswith(starts)]
    return found


def test_every_environment_is_drawn_in_promotion_order_with_its_stacks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = _graph_source(ROOT / "cdk.json", monkeypatch, tmp_path)

    clusters = re.findall(r'label="(dev|staging|prod)  \(', source)
    assert clusters == ["dev", "staging", "prod"]
    for env in ("dev", "staging", "prod"):
        for stack in ("Registry", "Inference", "Features", "Training", "Batch"):
            assert f'label="{env}/{stack}"' in source
    assert "CodeDeploy\nall at once" in source
    assert "CodeDeploy\ncanary 10 % for 5 min" in source
    for path_label in ("POST /predict", "register version", "sds promote", "auto rollback"):
        assert path_label in source
    assert "sds rollback --aws --env ENV" in source
    # And each environment's event path: bus, queue, updater and the table the function reads
    for node in ("activity bus", "queue\n+ dead-letter queue", "feature updater", "feature table"):
        assert source.count(node) == 3, node
    assert source.count("fold (once per event id)") == 3
    assert source.count("read aggregates") == 3


def test_a_new_environment_in_cdk_json_appears_in_the_picture(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    document = json.loads((ROOT / "cdk.json").read_text())
    document["context"]["environments"]["qa"] = {
        "promote_from": "staging",
        "infra": {"deployment": {"strategy": "linear_10_percent_every_2_minutes"}},
    }
    cdk_json = tmp_path / "cdk.json"
    cdk_json.write_text(json.dumps(document))

    source = _graph_source(cdk_json, monkeypatch, tmp_path)

    assert 'label="qa  (promoted from staging)"' in source
    assert "CodeDeploy\nlinear 10 % / 2 min" in source


def test_every_training_task_registers_where_versions_are_allocated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given cdk.json: dev starts the chain, trains weekly; staging and prod are promoted into
    source = _graph_source(ROOT / "cdk.json", monkeypatch, tmp_path)

    # Then each environment's training task has one "register version" edge, into dev's registry
    nodes = dict(re.findall(r'^\s*"?(\w+)"? \[label="([^"]*)"', source, flags=re.MULTILINE))
    edges = re.findall(r'"?(\w+)"? -> "?(\w+)"? \[label="(register version[^"]*)"', source)
    assert len(edges) == 3, edges
    for tail, head, label in edges:
        assert nodes[head] == "registry (S3)\nalias dev", (nodes[tail], label)
    assert sorted(label for _, _, label in edges) == [
        "register version",
        "register version\n(in dev)",
        "register version\n(in dev)",
    ]
    # And the weekly schedule is dev's
    assert source.count("schedule\ncron(0 3 ? * MON *)") == 1


def test_every_environment_captures_what_it_serves_and_receives_labels(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given cdk.json
    source = _graph_source(ROOT / "cdk.json", monkeypatch, tmp_path)
    # Then each environment's function ships capture lines through its log group and Firehose
    # into its captures bucket, next to the labels, with its sampling and retention
    for edge in ("one line per\nscored payment", "subscription", "captures/", "labels/"):
        assert len(re.findall(rf'-> "?\w+"? \[label="?{re.escape(edge)}"? ', source)) == 3, edge
    assert source.count("captures (S3)\ncaptures/ labels/\ndt=YYYY-MM-DD\nsampled 1, kept 365") == 3


def test_the_readme_caption_names_every_colour_the_picture_uses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given the picture's title, which names each path's colour
    source = _graph_source(ROOT / "cdk.json", monkeypatch, tmp_path)
    (title,) = re.findall(r"label=\"sds: model [^\"]*\((.*?)\)\"", source)
    colours = re.findall(r"(\w+): ", title)
    assert len(colours) >= 6, title
    # Then the README's caption under the picture says what each colour is
    readme = (ROOT / "README.md").read_text()
    caption = readme.split("Drawn from `cdk.json` by `make diagram`", 1)[1].split("\n\n", 1)[0]
    missing = [c for c in colours if f"{c}:" not in caption.lower()]
    assert missing == [], caption


def test_every_environment_scores_and_backfills_on_its_batch_state_machine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given cdk.json: each environment has a Batch stack, its runs read history anywhere in the
    # training-data bucket and write under infra.batch.output_prefix (batch/)
    source = _graph_source(ROOT / "cdk.json", monkeypatch, tmp_path)
    nodes, edges = _graph(source)
    people = _node(nodes, "operators and CI", "data scientist")

    def edge(tail: str, head: str) -> tuple[str, str]:
        (found,) = [(label, style) for t, h, label, style in edges if (t, h) == (tail, head)]
        return found

    for env in ("dev", "staging", "prod"):
        machine = _node(nodes, f"{env}/Batch", "state machine")
        function = _node(nodes, f"{env}/Batch", "batch function")
        data = _node(nodes, f"{env}/Registry", "training data (S3)")
        registry = _node(nodes, f"{env}/Registry", "registry (S3)")
        assert "max 100 at once" in nodes[machine][0]
        assert "batch/" in nodes[data][0]
        # Then the operator starts the environment's state machine, whose maps call its function
        assert edge(people, machine)[0].startswith(f"sds --aws score / backfill --env {env}")
        assert edge(machine, function)[0].startswith("distributed maps")
        # And the function reads the history and the model version, and writes under batch/
        reads = [(label, style) for t, h, label, style in edges if (t, h) == (function, data)]
        assert ("read history", "dashed") in reads, reads
        assert ("write batch/\n(parts, manifest)", "") in reads, reads
        assert len(reads) == 2, reads
        assert edge(function, registry) == (
            "load chosen version\n(sha256-verified; score)",
            "dashed",
        )
    # And no batch run touches a feature table: a backfill writes its aggregates to S3
    tables = {n for n, (label, _) in nodes.items() if label.startswith("feature table")}
    batch = {n for n, (_, cluster) in nodes.items() if cluster.endswith("/Batch")}
    assert [e for e in edges if e[0] in batch and e[1] in tables] == []


def test_training_from_history_reads_the_training_data_bucket(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given cdk.json: every environment trains from history (infra.training.source)
    source = _graph_source(ROOT / "cdk.json", monkeypatch, tmp_path)
    nodes, edges = _graph(source)
    # Then each training task reads its own environment's training-data bucket
    for env in ("dev", "staging", "prod"):
        data = _node(nodes, f"{env}/Registry", "training data (S3)")
        task = _node(nodes, f"{env}/Training", "training task")
        assert (data, task, "train from history\n(training-data/)", "") in edges
