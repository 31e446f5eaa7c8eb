"""A one-row request runs on buffers bound to the ONNX Runtime session at load
(`sds.kernel.serving._OneRow`): its score is exactly what `InferenceSession.run` gives, whatever
row came before, from any thread, and a model the binding does not fit keeps the plain run. A
row of Python values (`LoadedModel.score_row`, a one-event request's) is written into those
buffers as its float32 matrix would be."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from lambdas.inference.app import InferenceApp
from sds.kernel.serving import LoadedModel, _OneRow


def _model(served: InferenceApp) -> LoadedModel:
    assert served.model is not None
    return served.model


def _rows(model: LoadedModel, count: int, seed: int) -> list[Any]:
    width = model.session.get_inputs()[0].shape[1]
    # Features of the model's own scale: amounts' logs up to ~14, hours, counts; varied scores.
    values = np.random.default_rng(seed).random((count, width)) * 12
    return [np.ascontiguousarray(row[None, :], dtype=np.float32) for row in values]


def _run(model: LoadedModel, row: Any) -> float:
    (probabilities,) = model.session.run([model.output_name], {model.input_name: row})
    return float(probabilities[0, 1])


def test_each_row_gets_its_own_score_exactly_as_run_gives_it(served: InferenceApp) -> None:
    model = _model(served)
    assert model._one_row is not None  # the registry's classifier is bound
    rows = _rows(model, 300, seed=1)
    scores = [model.score_matrix(row) for row in rows]
    assert scores == [[_run(model, row)] for row in rows]
    # The rows score differently, so a binding that kept its first row would have failed above.
    assert len({score for (score,) in scores}) > 10


def test_a_row_that_finds_the_buffers_busy_is_scored_by_run(served: InferenceApp) -> None:
    model = _model(served)
    assert model._one_row is not None
    row = _rows(model, 1, seed=2)[0]
    with model._one_row._busy:  # another thread's run in progress
        assert model.score_matrix(row) == [_run(model, row)]


def test_rows_scored_from_several_threads_at_once_each_get_their_own_score(
    served: InferenceApp,
) -> None:
    # `sds serve` answers requests in threads, all on one app.
    model = _model(served)
    per_thread = [_rows(model, 200, seed=10 + n) for n in range(4)]
    expected = [[[_run(model, row)] for row in rows] for rows in per_thread]
    got: list[list[list[float]]] = [[] for _ in per_thread]
    start = threading.Barrier(len(per_thread))

    def score(n: int) -> None:
        start.wait()
        got[n] = [model.score_matrix(row) for row in per_thread[n]]

    threads = [threading.Thread(target=score, args=(n,)) for n in range(len(per_thread))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == expected


def test_a_failed_run_frees_the_buffers(served: InferenceApp) -> None:
    model = _model(served)
    assert model._one_row is not None
    with pytest.raises(ValueError):
        model.score_matrix(np.zeros((1, 3), dtype=np.float32))  # not the model's width
    assert not model._one_row._busy.locked()
    row = _rows(model, 1, seed=3)[0]
    assert model.score_matrix(row) == [_run(model, row)]


def _python_rows(model: LoadedModel, count: int, seed: int) -> list[tuple[Any, ...]]:
    """Rows as `featurize_row` gives them: Python floats, ints and booleans."""
    rows = []
    for row in _rows(model, count, seed)[:count]:
        values: list[Any] = row[0].tolist()
        values[0] = int(values[0] * 1000)  # an int, as an hour of the day or a count is
        values[1] = values[1] > 6.0  # a boolean, as is_foreign is
        rows.append(tuple(values))
    return rows


def test_a_row_of_python_values_is_scored_as_its_float32_matrix_is(served: InferenceApp) -> None:
    model = _model(served)
    assert model._one_row is not None
    rows = _python_rows(model, 200, seed=5)
    matrices = [np.array((row,), dtype=np.float32) for row in rows]
    expected = [_run(model, matrix) for matrix in matrices]
    # Without the matrix (capture off), and with it (what a capture records and a shadow scores)
    assert [model.score_row(row) for row in rows] == [(score, None) for score in expected]
    for row, matrix, score in zip(rows, matrices, expected, strict=True):
        got, kept = model.score_row(row, keep=True)
        assert got == score
        assert kept is not None and kept.dtype == np.float32 and kept.flags.c_contiguous
        assert kept.tobytes() == matrix.tobytes()
    assert len(set(expected)) > 10


def test_a_row_is_written_as_numpy_writes_it_for_every_kind_of_number(
    served: InferenceApp,
) -> None:
    # The binding packs a row as C floats (`struct`); numpy's float32 conversion is the oracle,
    # on the values where a cast can differ: beyond float32's range, below its smallest
    # subnormal, ints beyond 2^53 and beyond 64 bits, a tie rounded once or twice, -0.0, NaN,
    # numpy's own scalars, and a string only numpy reads.
    model = _model(served)
    assert model._one_row is not None
    width = model.session.get_inputs()[0].shape[1]
    edges: list[Any] = [
        3.40282357e38,
        -1e300,
        2.0**1023,
        float("inf"),
        float("-inf"),
        float("nan"),
        -0.0,
        5e-324,
        1.4e-45,
        0.7e-45,
        2**53 + 1,
        2**60 + 2**36 + 1,
        2**70,
        -(2**63),
        10**30,
        True,
        False,
        np.float64(1e39),
        np.int64(2**62 + 2**37 + 1),
        np.float32(0.1),
    ]
    rows = [
        tuple(edges[(start + i) % len(edges)] for i in range(width)) for start in range(len(edges))
    ]
    rows.append(("1.5", *rows[0][1:]))  # refused by struct: numpy's assignment writes it
    for row in rows:
        with np.errstate(over="ignore"):  # numpy warns as it casts a double beyond float32
            matrix = np.array((row,), dtype=np.float32)
            score, kept = model.score_row(row, keep=True)
        assert kept is not None and kept.tobytes() == matrix.tobytes(), row
        assert score == _run(model, matrix), row


def test_a_row_scored_without_the_binding_gets_the_same_score_and_matrix(
    served: InferenceApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(served)
    assert model._one_row is not None
    rows = _python_rows(model, 20, seed=6)
    bound = [model.score_row(row, keep=True) for row in rows]
    with model._one_row._busy:  # another thread's run in progress: the plain run scores it
        busy = [model.score_row(row, keep=True) for row in rows]
    monkeypatch.setattr(model, "_one_row", None)  # a model the binding does not fit
    unbound = [model.score_row(row, keep=True) for row in rows]
    for scored in (busy, unbound):
        assert [score for score, _ in scored] == [score for score, _ in bound]
        assert [m.tobytes() for _, m in scored if m is not None] == [
            m.tobytes() for _, m in bound if m is not None
        ]
    assert model.score_row(rows[0]) == (bound[0][0], None)


def test_a_failed_row_frees_the_buffers(served: InferenceApp) -> None:
    model = _model(served)
    assert model._one_row is not None
    with pytest.raises(ValueError):
        model.score_row((1.0, 2.0, 3.0))  # not the model's width
    assert not model._one_row._busy.locked()
    row = _python_rows(model, 1, seed=7)[0]
    assert model.score_row(row)[0] == _run(model, np.array((row,), dtype=np.float32))


def test_larger_batches_are_scored_by_run(served: InferenceApp) -> None:
    model = _model(served)
    matrix = np.concatenate(_rows(model, 5, seed=4))
    (probabilities,) = model.session.run([model.output_name], {model.input_name: matrix})
    assert model.score_matrix(matrix) == probabilities[:, 1].tolist()


def _session(shape: list[int | str | None]) -> Any:
    """A model of one Identity op: float `features` of `shape` in, `probabilities` the same."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["features"], ["probabilities"])],
        "identity",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_the_binding_fits_rows_of_a_fixed_width_in_and_two_probabilities_out_only() -> None:
    assert _OneRow.bind(_session([None, 2]), "features", "probabilities") is not None
    assert _OneRow.bind(_session([None, 3]), "features", "probabilities") is None
    assert _OneRow.bind(_session([None]), "features", "probabilities") is None
    assert _OneRow.bind(_session([None, "width"]), "features", "probabilities") is None
    assert _OneRow.bind(_session([None, 2]), "features", "label") is None


def test_a_bound_identity_model_returns_each_rows_second_value() -> None:
    one_row = _OneRow.bind(_session([None, 2]), "features", "probabilities")
    assert one_row is not None
    for first, second in ((0.25, 0.75), (0.5, 0.125), (1.0, 0.0)):
        assert one_row.score(np.array([[first, second]], dtype=np.float32)) == second
