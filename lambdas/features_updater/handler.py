"""AWS Lambda entry point of the feature updater (SQS event source, partial batch responses).

Thin on purpose: settings come from the environment (`sds.kernel.activity.UpdaterSettings`), the
store is opened once per execution environment with strongly consistent reads (its reads come
right before a compare-and-swap), and each batch is `lambdas.features_updater.updater`'s work.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from lambdas.features_updater.updater import FeatureUpdater
from sds.kernel.activity import UpdaterSettings
from sds.kernel.featurestore import open_feature_store
from sds.kernel.online import OnlineFeatures

logging.getLogger().setLevel(os.environ.get("LOG_LEVEL", "INFO"))

# Per attempt; two attempts per call. A batch's commits stop `updater.TIME_RESERVE_MS` before the
# function's timeout (60 s): on a slow table the rest of the batch comes back, not all of it.
STORE_TIMEOUT_S = 3.0

settings = UpdaterSettings.from_environ(os.environ)
updater = FeatureUpdater(
    OnlineFeatures(
        open_feature_store(
            settings.feature_store_uri, timeout=STORE_TIMEOUT_S, consistent_read=True
        )
    ),
    environment=settings.environment,
)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return updater.handle(event, context)
