"""scikit-learn -> ONNX conversion for serving, with the parity check that guards registration.

skl2onnx 1.20 cannot convert HistGradientBoosting with current scikit-learn/numpy: its tree
converter passes numpy booleans for `nodes_missing_value_tracks_true`, which onnx rejects
("AttributeProto.ints: Expected an int, got a boolean"). `_patch_missing_value_flags` casts them
to int. It probes first and applies itself only while upstream still fails, so it drops itself
once skl2onnx is fixed; tests prove both the probe and score parity with scikit-learn.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from sds.kernel.errors import SdsError
from sds.kernel.features import N_FEATURES

INPUT_NAME = "features"
PARITY_TOLERANCE = 1e-4
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


class ParityError(SdsError, RuntimeError):
    """ONNX scores differ from scikit-learn's beyond the tolerance: the model is not registered."""


def _convert(model: Any, n_features: int) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    return convert_sklearn(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )


def upstream_converts_hist_gradient_boosting() -> bool:
    """Whether the installed skl2onnx converts a tiny HistGradientBoosting model unaided."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    x[::7, 0] = np.nan  # missing values make the converter emit the flag
    y = (rng.random(64) < 0.5).astype(int)
    tiny = HistGradientBoostingClassifier(max_iter=2, max_leaf_nodes=3).fit(x, y)
    from skl2onnx.common import tree_ensemble

    current = tree_ensemble.add_node
    original = getattr(current, "__wrapped__", current)
    tree_ensemble.add_node = original
    try:
        _convert(tiny, 2)
        return True
    except (TypeError, ValueError) as exc:
        if "Expected an int, got a boolean" in str(exc) or "Expected an int" in str(exc.__cause__):
            return False
        raise
    finally:
        tree_ensemble.add_node = current


@functools.cache
def _patch_missing_value_flags() -> bool:
    """Install the int cast if (and only if) upstream needs it. Returns whether it was applied."""
    if upstream_converts_hist_gradient_boosting():
        return False
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node

    @functools.wraps(original)
    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        return original(
            *args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs
        )

    tree_ensemble.add_node = add_node
    return True


def to_onnx(model: Any, n_features: int = N_FEATURES) -> bytes:
    """Serialize a fitted classifier to ONNX: float32 input `features`, output `probabilities`."""
    _patch_missing_value_flags()
    onnx_model = _convert(model, n_features)
    return bytes(onnx_model.SerializeToString())


def onnx_scores(onnx_bytes: bytes, features: np.ndarray) -> np.ndarray:
    """The fraud score of each row as the served model gives it (float32), bit for bit: on the
    serving session (`sds.kernel.serving.serving_session`)."""
    from sds.kernel.serving import serving_session

    session = serving_session(onnx_bytes)
    _labels, probabilities = session.run(None, {INPUT_NAME: features.astype(np.float32)})
    return np.asarray(probabilities)[:, 1]


def check_parity(
    model: Any, onnx_bytes: bytes, features: np.ndarray, *, tolerance: float = PARITY_TOLERANCE
) -> float:
    """Max |ONNX - scikit-learn| fraud score on `features`; raises ParityError above tolerance."""
    x = features.astype(np.float32)
    expected = model.predict_proba(x)[:, 1]
    actual = onnx_scores(onnx_bytes, x)
    worst = float(np.max(np.abs(actual - expected))) if len(x) else 0.0
    if not worst <= tolerance:
        raise ParityError(
            f"ONNX and scikit-learn scores differ by up to {worst:.3g} on {len(x)} holdout rows "
            f"(tolerance {tolerance:g}); refusing to register"
        )
    return worst
