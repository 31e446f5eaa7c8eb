"""Every error sds can raise carries its exit code (and HTTP status), so the CLI needs no list.

Given every module of `sds/` and `training/` imported, when each exception class they define is
checked, then it derives from `SdsError` and declares an exit code among those `sds --help`
documents: a new error class without one fails here, instead of crashing the CLI with a traceback.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

from sds.kernel.errors import SdsError

PACKAGES = ("sds", "training")
DOCUMENTED_EXIT_CODES = {1, 2, 3}  # sds --help, README "The CLI", docs/runbook.md


def _import_everything() -> None:
    for package in PACKAGES:
        root = importlib.import_module(package)
        for module in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            if module.name.endswith(".__main__"):
                continue  # importing it would run the command line
            importlib.import_module(module.name)


def _subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def project_error_classes() -> dict[str, type[BaseException]]:
    _import_everything()
    return {
        f"{cls.__module__}.{cls.__qualname__}": cls
        for cls in _subclasses(BaseException)
        if cls.__module__.split(".")[0] in PACKAGES
    }


# Interruptions are not errors: a KeyboardInterrupt subclass (SIGTERM's) exits 128 + its signal.
EVERYTHING = project_error_classes()
ERRORS = {n: c for n, c in EVERYTHING.items() if not issubclass(c, KeyboardInterrupt)}
INTERRUPTIONS = {n: c for n, c in EVERYTHING.items() if issubclass(c, KeyboardInterrupt)}


def test_the_walk_finds_the_errors_of_every_layer() -> None:
    # A walk that found nothing would pass everything below
    for name in (
        "sds.kernel.registry.core.ConcurrentUpdate",
        "sds.kernel.lock.LockFileError",
        "sds.config.ConfigError",
        "sds.ops.promotion.GateFailure",
        "sds.kernel.aws.errors.AwsFailure",
        "training.data.DataError",
        "training.onnx_export.ParityError",
    ):
        assert name in ERRORS, sorted(ERRORS)


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_every_error_class_declares_a_documented_exit_code(name: str) -> None:
    cls = ERRORS[name]
    assert issubclass(cls, SdsError), f"{name} does not derive from sds.kernel.errors.SdsError"
    assert cls.exit_code in DOCUMENTED_EXIT_CODES, (name, cls.exit_code)


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_stderr_calls_a_refusal_a_refusal_and_nothing_else(name: str) -> None:
    # `sds: refused: ...` exactly when the exit code is 3, whichever class refused
    cls = ERRORS[name]
    assert issubclass(cls, SdsError)
    assert (cls.label == "refused") == (cls.exit_code == 3), (name, cls.label, cls.exit_code)


def test_every_interruption_declares_its_documented_exit_code() -> None:
    assert {n: c.exit_code for n, c in INTERRUPTIONS.items()} == {  # type: ignore[attr-defined]
        "sds.kernel.signals.Terminated": 143  # README "The CLI": 130 Ctrl-C, 143 SIGTERM
    }


@pytest.mark.parametrize(
    ("name", "exit_code"),
    [
        # refused: nothing changed, because a gate failed or a concurrent change won
        ("sds.ops.promotion.GateFailure", 3),
        ("sds.ops.promotion.ConcurrentRollback", 3),
        ("sds.kernel.registry.core.ConcurrentUpdate", 3),
        ("sds.kernel.registry.store.PreconditionFailed", 3),
        # refused: nothing changed, because the Lambda version to switch to cannot serve
        ("sds.ops.aws_rollback.TargetNotServable", 3),
        ("sds.kernel.activation.VersionNotReady", 3),
        # usage
        ("sds.kernel.errors.UsageError", 2),
        # errors
        ("sds.ops.promotion.OperationError", 1),
        ("sds.kernel.registry.core.RegistryError", 1),
        ("sds.kernel.registry.core.IntegrityError", 1),
        ("sds.kernel.registry.core.VersionConflict", 1),
        ("sds.config.ConfigError", 1),
        ("sds.kernel.lock.LockFileError", 1),
        ("sds.kernel.aws.errors.AwsError", 1),  # sds.ops.aws re-exports it
        ("sds.kernel.aws.errors.AwsFailure", 1),
        ("sds.kernel.activation.ActivationError", 1),
        ("training.data.DataError", 1),
    ],
)
def test_refusals_exit_3_usage_errors_2_and_the_rest_1(name: str, exit_code: int) -> None:
    assert ERRORS[name].exit_code == exit_code  # type: ignore[attr-defined]


def test_serving_errors_answer_503() -> None:
    for name in ("sds.kernel.settings.SettingsError", "sds.kernel.serving.ModelUnavailable"):
        assert ERRORS[name].http_status == 503  # type: ignore[attr-defined]


def test_builtin_bases_stay_so_existing_handlers_still_catch_them() -> None:
    # ConfigError is raised where ValueError was caught before (cdk.json parsing, app.py)
    assert issubclass(ERRORS["sds.config.ConfigError"], ValueError)
    assert issubclass(ERRORS["sds.kernel.lock.LockFileError"], ValueError)
    assert issubclass(ERRORS["sds.ops.promotion.OperationError"], RuntimeError)


def test_a_gate_failure_reports_its_gates_in_its_json_document() -> None:
    from sds.ops.promotion import GateFailure, GateResult

    # Given a version that fails one of prod's two gates
    results = [
        GateResult("min_roc_auc", True, "roc_auc 0.9100 (needs >= 0.8)"),
        GateResult("require_live_in", False, "live in staging: nothing (needs version 4)"),
    ]

    # When the refusal is reported as JSON
    document = GateFailure("prod", 4, results).to_dict()

    # Then the document says refused, which gates, and the error with its exit code
    assert document["refused"] is True
    assert (document["env"], document["version"]) == ("prod", 4)
    assert [g["gate"] for g in document["gates"] if not g["passed"]] == ["require_live_in"]
    assert document["error"]["type"] == "GateFailure"
    assert document["error"]["exit_code"] == 3
    assert "require_live_in" in document["error"]["message"]
