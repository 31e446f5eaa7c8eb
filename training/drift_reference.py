"""The training holdout's reference distributions, stored in the manifest for drift monitoring.

`sds monitor` and the scheduled monitor function compare served traffic with them
(`sds.kernel.drift`: the bins, PSI and how to read it). One function, called by both training
entrypoints (from history and from capture) with the holdout they evaluated on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sds.kernel import drift
from sds.kernel.features import FEATURE_NAMES


def holdout_reference(features: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """The manifest's `drift_reference`: quantile bins and shares of the holdout's scores and of
    each of its features (columns in `FEATURE_NAMES` order)."""
    rows = np.asarray(features, dtype=np.float64).tolist()
    return drift.reference(rows, np.asarray(scores, dtype=np.float64).tolist(), FEATURE_NAMES)
