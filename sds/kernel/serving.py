"""Serving-side model access: the verified load of the pinned model (settings: `sds.kernel.settings`).

Nothing here imports scikit-learn, scipy or pickle: the serving artifact is ONNX, scored by
ONNX Runtime. A model is loaded only if its bytes match the sha256 pinned at deploy time (the
`MODEL_SHA256` the CDK app took from models.lock.json) and the sha256 in its manifest, and only if
it was trained on the feature schema this code computes.
"""

from __future__ import annotations

import functools
import math
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sds.kernel.errors import Unavailable
from sds.kernel.features import Matrix, feature_schema
from sds.kernel.registry import open_registry
from sds.kernel.settings import ServingSettings

# From this many scores, `shown_scores` works in numpy (fewer, a call per score is cheaper).
SHOWN_IN_NUMPY_FROM = 64


class ModelUnavailable(Unavailable, RuntimeError):
    """No model can be served (no pin, or the pinned model failed to load or verify)."""


def shown_score(score: float, flagged: bool) -> float:
    """`score` to 6 decimals, rounded toward its decision: up if `flagged`, down if not.
    Exactly: the double nearest the decimal ceiling (floor) of the score's own value.

    The product with 1e6 is rounded once, and rounding never crosses an integer, so its ceiling
    (floor) is the exact one unless it came out a whole number, which it does when the score
    is a multiple of 1e-6 (0, 0.5, 1: exactly) or lies within the product's rounding of one
    (no float32 probability does: checked for all of them; a double may): then the score's
    exact ratio decides. A NaN or an infinity (no model gives one) is shown as it is, as
    `round` left it.
    """
    scaled = score * 1e6
    if scaled - scaled == 0.0:  # finite (inf - inf and NaN - NaN are NaN)
        whole = math.ceil(scaled) if flagged else math.floor(scaled)
        if whole != scaled:
            return whole / 1e6
    elif score - score != 0.0:
        return score
    numerator, denominator = score.as_integer_ratio()
    scaled_exactly = numerator * 1_000_000
    whole = -(-scaled_exactly // denominator) if flagged else scaled_exactly // denominator
    return whole / 1_000_000  # an int's true division is correctly rounded, however large


def shown_scores(scores: Sequence[float], threshold: float) -> list[float]:
    """Each score as shown beside its decision (`score >= threshold`), the API's
    fraud_probability and the rows of `sds score`: to 6 decimals, up if the score is flagged
    and down if not (`shown_score`), so that a shown score is at least the threshold exactly
    when its score is, and within 1e-6 of it.

    Rounding to nearest would not keep that: the threshold is itself a served score, so the
    scores at it would show below it (0.690989077... as 0.690989). For a large request in
    numpy, the same doubles: the products that come out whole numbers are left to
    `shown_score`.
    """
    if len(scores) < SHOWN_IN_NUMPY_FROM:
        return [shown_score(score, score >= threshold) for score in scores]
    import numpy as np

    values = np.array(scores, dtype=np.float64)
    with np.errstate(over="ignore"):  # beyond 1e302 (no model's score): left to `shown_score`
        scaled = values * 1e6
    down = np.floor(scaled)
    up = np.ceil(scaled)
    whole = np.where(values >= threshold, up, down)
    whole += 0.0  # a ceiling of -0.5 is -0.0, where `math.ceil` gives 0
    whole /= 1e6
    out: list[float] = whole.tolist()
    # A NaN is not whole and is shown as NaN; an infinity is "whole", and `shown_score` keeps it.
    for i in np.flatnonzero(down == up).tolist():
        out[i] = shown_score(scores[i], scores[i] >= threshold)
    return out


def serving_session(onnx_bytes: bytes) -> Any:
    """An ONNX Runtime session that scores as the served model does, one thread.

    One request at a time per Lambda environment: threads would only add scheduling jitter. And
    with more threads, ONNX Runtime's tree ensembles add a row's trees up in another order on a
    batch of about 100 rows or more, which changes the last bit of a score. So training scores
    its holdout on this session too: the decision threshold it chooses, and the alert rate it
    records, are those of the scores the function serves, bit for bit (a threshold taken from
    other scores can fall between tied served scores and flag none of them)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
    )


class LoadedModel:
    """A verified ONNX model, ready to score feature vectors."""

    def __init__(self, onnx_bytes: bytes, manifest: Mapping[str, Any]) -> None:
        import numpy as np

        self._np = np
        self.session = serving_session(onnx_bytes)
        self.manifest = manifest
        self.name = str(manifest["model"])
        self.version = int(manifest["version"])
        self.sha256 = str(manifest["sha256"])
        self.threshold = float(manifest["decision_threshold"])
        serving = manifest.get("serving", {})
        self.input_name = str(serving.get("input", self.session.get_inputs()[0].name))
        self.output_name = str(serving.get("output", "probabilities"))
        self._outputs = [self.output_name]
        # The binding's run, without the Python wrapper's per-call checks (input names, run
        # options, provider fallback), which cost about 1 us a call: what `score_matrix` uses.
        inner_run = getattr(getattr(self.session, "_sess", None), "run", None)
        self._run = inner_run if callable(inner_run) else self.session.run
        self._one_row = _OneRow.bind(self.session, self.input_name, self.output_name)

    def score_matrix(self, matrix: Matrix) -> list[float]:
        """`predict` for the handler's own matrix (C-contiguous float32 rows in the feature
        layout this model was verified against at load), with the least per-call overhead: the
        shadow's whole cost to a request is this call (`make bench`, section shadow). One row,
        the most common request, runs on buffers bound at load (`_OneRow`)."""
        one_row = self._one_row
        if one_row is not None and len(matrix) == 1:
            score = one_row.score(matrix)
            if score is not None:
                return [score]
        (probabilities,) = self._run(self._outputs, {self.input_name: matrix}, None)
        scores: list[float] = probabilities[:, 1].tolist()
        return scores

    def score_row(self, row: Sequence[Any], *, keep: bool = False) -> tuple[float, Matrix | None]:
        """`score_matrix` of the one-row matrix of `row` (`featurize_row`'s values, in the
        feature layout), written straight into the buffer bound at load: a one-event request
        builds no matrix of its own. With `keep`, that matrix too (a copy, what a capture
        records and a shadow scores), else None."""
        one_row = self._one_row
        if one_row is not None:
            scored = one_row.score_row(row, keep)
            if scored is not None:
                return scored
        matrix = self._np.array((row,), dtype=self._np.float32)
        return self.score_matrix(matrix)[0], matrix if keep else None

    def predict(self, vectors: Matrix | Sequence[Sequence[float]]) -> list[float]:
        """Fraud probability for each feature vector (rows of a float32 matrix: no copy)."""
        matrix = self._np.asarray(vectors, dtype=self._np.float32)
        (probabilities,) = self.session.run(self._outputs, {self.input_name: matrix})
        return list(probabilities[:, 1].tolist())

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "created_at": self.manifest.get("created_at"),
            "metrics": self.manifest.get("metrics", {}),
            "decision_threshold": self.threshold,
            "code_version": self.manifest.get("code_version"),
            "feature_schema": self.manifest.get("feature_schema"),
        }


class _OneRow:
    """A one-row run on input and output buffers bound to the session once (ONNX Runtime's
    IOBinding): a run then creates no tensors, allocates no output and converts nothing back.

    Measured in the handler, a 1-event request takes about 5 us less than with `run`, most of it
    not the calls saved (1.3 us alone) but the memory they no longer touch (docs/decisions.md
    47). Rebinding per request is slower than `run` (12 against 8 us alone), so other sizes keep
    `run`. The buffers serve one run at a time: a run that finds them busy (`sds serve` answers
    requests in threads) returns None, and the caller runs as usual.
    """

    __slots__ = ("_busy", "_bytes", "_input", "_output", "_pack", "_run")

    def __init__(self, session: Any, input_name: str, output_name: str, width: int) -> None:
        import numpy as np

        self._input = np.zeros((1, width), dtype=np.float32)
        self._output = np.zeros((1, 2), dtype=np.float32)
        binding = session.io_binding()
        binding.bind_cpu_input(input_name, self._input)
        binding.bind_output(output_name, "cpu", 0, np.float32, [1, 2], self._output.ctypes.data)
        self._run = functools.partial(session._sess.run_with_iobinding, binding._iobinding, None)
        self._busy = threading.Lock()
        # A row of Python numbers written into the input as native floats: each value converted
        # to a double and cast to float32 by C, as numpy's assignment does (an int or a boolean
        # as its float, a double beyond float32's range as an infinity), without numpy's
        # discovery of each value's type (docs/decisions.md 63).
        self._pack = struct.Struct(f"{width}f").pack_into
        self._bytes = self._input.data.cast("B")  # the same memory, as struct writes it

    @classmethod
    def bind(cls, session: Any, input_name: str, output_name: str) -> _OneRow | None:
        """The binding for a model of float32 rows of a fixed width in and (rows, 2) float32
        probabilities out, as the registry's classifiers are; None for any other model."""
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name: o for o in session.get_outputs()}
        feed, probabilities = inputs.get(input_name), outputs.get(output_name)
        if feed is None or probabilities is None or len(inputs) != 1:
            return None
        if feed.type != "tensor(float)" or probabilities.type != "tensor(float)":
            return None
        if len(feed.shape) != 2 or not isinstance(width := feed.shape[1], int):
            return None
        if len(probabilities.shape) != 2 or probabilities.shape[1] != 2:
            return None
        if not callable(getattr(getattr(session, "_sess", None), "run_with_iobinding", None)):
            return None
        return cls(session, input_name, output_name, width)

    def score(self, row: Matrix) -> float | None:
        """The positive class's probability for a (1, width) float32 matrix, copied into the
        bound input by numpy; None if the buffers are in use by another thread."""
        if not self._busy.acquire(blocking=False):
            return None
        try:
            self._input[0] = row[0]
            self._run()
            return float(self._output[0, 1])
        finally:
            self._busy.release()

    def score_row(self, row: Sequence[Any], keep: bool) -> tuple[float, Matrix | None] | None:
        """`score` of `width` Python numbers (`featurize_row`'s), and with `keep` a copy of the
        (1, width) matrix they were written as; None if the buffers are in use by another
        thread."""
        if not self._busy.acquire(blocking=False):
            return None
        try:
            try:
                self._pack(self._bytes, 0, *row)
            except struct.error:  # not numbers, or not `width` of them: numpy's assignment
                self._input[0] = row  # decides, as it did for every row before, and names it
            self._run()
            return float(self._output[0, 1]), self._input.copy() if keep else None
        finally:
            self._busy.release()


def no_model_message(settings: ServingSettings) -> str:
    """Why nothing is served without a pin, and what serves a model where `settings` apply: on a
    function, a promotion and then a deploy; under `sds serve`, which follows the lock file, the
    promotion alone."""
    state, then = (
        ("pinned for", "; this server serves it on the next request")
        if settings.follows_lock_file
        else ("deployed to", " and deploy")
    )
    env = settings.environment
    return (
        f"no model is {state} environment {env!r}: "
        f"promote a version (sds promote VERSION --to {env}){then}"
    )


def load_model(settings: ServingSettings) -> LoadedModel:
    """Fetch the pinned version, verify it end to end, and open an ONNX Runtime session."""
    if settings.model_version is None or settings.registry_uri is None:
        raise ModelUnavailable(no_model_message(settings))
    try:
        # Read-only: on S3 through the kernel's own client, so the Lambda never imports boto3.
        registry = open_registry(settings.registry_uri, settings.model_name, read_only=True)
        version = registry.get_version(settings.model_version)
        if version.sha256 != settings.model_sha256:
            raise ModelUnavailable(
                f"model {settings.model_name} v{settings.model_version}: registry manifest sha256 "
                f"{version.sha256[:12]}... does not match the deployed pin "
                f"{str(settings.model_sha256)[:12]}...; refusing to serve it"
            )
        onnx_bytes = registry.read_artifact(settings.model_version, info=version)
    except ModelUnavailable:
        raise
    except Exception as exc:
        raise ModelUnavailable(
            f"model {settings.model_name} v{settings.model_version} could not be loaded: {exc}"
        ) from exc
    # The registry checked the manifest's shape as it read it (a feature_schema, if any, is an
    # object; a decision_threshold, if any, a number; serving, if any, an object of strings):
    # what is left to check here is what serving needs and another model may lack.
    schema = version.manifest.get("feature_schema")
    trained_on = schema.get("features") if isinstance(schema, Mapping) else None
    expected = feature_schema()
    if trained_on != expected["features"]:
        raise ModelUnavailable(
            f"model {settings.model_name} v{settings.model_version} was trained on different "
            "features than this code computes; retrain it or deploy matching code"
        )
    computed = schema.get("aggregates") if isinstance(schema, Mapping) else None
    trained_fingerprint = computed.get("fingerprint") if isinstance(computed, Mapping) else None
    if trained_fingerprint != expected["aggregates"]["fingerprint"]:
        raise ModelUnavailable(
            f"model {settings.model_name} v{settings.model_version} was trained on other account "
            f"aggregate definitions (fingerprint {str(trained_fingerprint)[:12]}..., this code "
            f"computes {expected['aggregates']['fingerprint'][:12]}...); retrain it or deploy "
            "matching code"
        )
    if version.manifest.get("decision_threshold") is None:
        raise ModelUnavailable(
            f"model {settings.model_name} v{settings.model_version}: the manifest has no numeric "
            "decision_threshold; re-register it with this version of sds"
        )
    try:
        return LoadedModel(onnx_bytes, version.manifest)
    except Exception as exc:
        raise ModelUnavailable(
            f"model {settings.model_name} v{settings.model_version} is not a valid ONNX model: {exc}"
        ) from exc
