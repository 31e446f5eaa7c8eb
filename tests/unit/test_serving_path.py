"""The serving path stays free of scikit-learn, scipy and pickle.

A fresh interpreter imports the Lambda handler (which loads the pinned model at init, as a cold
start does) and serves one request. Then no scikit-learn, scipy, skops or joblib module may be
loaded, and nothing may have been unpickled.

The stdlib `pickle` module itself is in `sys.modules`: numpy imports it unconditionally in
`numpy/_core/_methods.py` (for `ndarray.dump`/`dumps`), so every process that uses numpy has it.
The test pins that down precisely instead of ignoring it: the only importer of `pickle` may be
`numpy._core._methods`, and no unpickling may happen (no `pickle.find_class` audit event, no call
to `pickle.load`/`loads`/`Unpickler`).
"""

from __future__ import annotations

import json

from tests.support.trained_model import TrainedModel

FORBIDDEN = ("sklearn", "scipy", "skops", "joblib", "cloudpickle", "dill")
NUMPY_PICKLE_IMPORTER = "numpy._core._methods"

_PROBE = r"""
import importlib.abc
import json
import sys

FORBIDDEN = set(sys.argv[1].split(","))
WATCHED = FORBIDDEN | {"pickle", "_pickle"}
importers = {}


def _importer():
    frame = sys._getframe(2)
    while frame is not None and (
        frame.f_code.co_filename.startswith("<frozen") or "importlib" in frame.f_code.co_filename
    ):
        frame = frame.f_back
    return None if frame is None else frame.f_globals.get("__name__")


class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in WATCHED:
            importers.setdefault(name, _importer())
        return None


sys.meta_path.insert(0, Watch())
unpickled = []
sys.addaudithook(lambda event, args: unpickled.append(repr(args)) if event == "pickle.find_class" else None)

import numpy  # noqa: E402  (brings pickle; wrap its entry points before anything else runs)

pickle_calls = []
if "pickle" in sys.modules:
    pickle = sys.modules["pickle"]
    for name in ("load", "loads", "Unpickler"):
        original = getattr(pickle, name)

        def spy(*args, __name=name, __original=original, **kwargs):
            pickle_calls.append(__name)
            return __original(*args, **kwargs)

        setattr(pickle, name, spy)

import lambdas.inference.handler as handler  # noqa: E402  (cold start: loads the model)

event = {
    "path": "/predict",
    "httpMethod": "POST",
    "headers": {"Content-Type": "application/json"},
    "isBase64Encoded": False,
    "body": json.dumps({"events": [{
        "amount": 120.0, "currency": "EUR", "merchant_category": "travel", "country": "FR",
        "card_country": "FR", "hour_of_day": 11, "account_age_days": 400,
        "is_new_device": False, "event_id": "subprocess", "account_id": "acct-1",
        "occurred_at": "2026-03-01T12:00:00Z",
    }]}),
}
response = handler.lambda_handler(event, None)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in WATCHED)
print("RESULT " + json.dumps({
    "response": response,
    "loaded": loaded,
    "importers": importers,
    "unpickled": unpickled,
    "pickle_calls": pickle_calls,
}))
"""


def test_serving_a_request_imports_no_scikit_learn_scipy_or_pickle_users(
    trained: TrainedModel,
) -> None:
    report, lines = trained.run_probe(_PROBE, ",".join(FORBIDDEN))

    response = report["response"]
    assert response["statusCode"] == 200, response
    body = json.loads(response["body"])
    assert body["model"] == {"name": "fraud", "version": 1}
    assert body["predictions"][0]["event_id"] == "subprocess"
    forbidden_loaded = [m for m in report["loaded"] if m.split(".")[0] in FORBIDDEN]
    assert forbidden_loaded == [], f"serving imported {forbidden_loaded}: {report['importers']}"
    if "pickle" in report["loaded"]:
        assert report["importers"]["pickle"] == NUMPY_PICKLE_IMPORTER, (
            "something other than numpy imports pickle on the serving path: "
            f"{report['importers']['pickle']}"
        )
    assert report["unpickled"] == []
    assert report["pickle_calls"] == []
    # The request also emitted its CloudWatch metric as an Embedded Metric Format line.
    metrics = [json.loads(line) for line in lines if line.startswith('{"_aws"')]
    assert [m["Predictions"] for m in metrics if "Predictions" in m] == [1]


def test_the_probe_would_notice_a_scikit_learn_import(trained: TrainedModel) -> None:
    """Guards the guard: the same probe, with scikit-learn imported on purpose, reports it."""
    probe = _PROBE.replace(
        "import lambdas.inference.handler as handler",
        "import sklearn.ensemble\nimport lambdas.inference.handler as handler",
    )
    report, _ = trained.run_probe(probe, ",".join(FORBIDDEN))

    assert "sklearn" in report["loaded"]
    assert "scipy" in {m.split(".")[0] for m in report["loaded"]}
    assert report["importers"]["sklearn"] == "__main__"
