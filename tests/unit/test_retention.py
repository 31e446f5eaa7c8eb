"""The retention rule (`sds.kernel.retention`): which published versions pruning keeps, and why.

Pure and fast: published versions, aliases, deployments and the registry alias are given as
values. The moto tests (tests/integration/test_prune_aws.py) run the same rule against the
Lambda, CodeDeploy and S3 APIs; here every branch of the rule is pinned, and a property test
checks the promise on many generated states: nothing a rollback, an alias or a deployment can
need is ever in the plan's deletions.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sds.kernel import settings as serving_settings
from sds.kernel.lock import Pin
from sds.kernel.registry import AliasState
from sds.kernel.retention import (
    AliasRouting,
    InFlightDeployment,
    PruneTarget,
    PublishedVersion,
    RetentionError,
    appspec_versions,
    in_flight_deployment,
    plan_retention,
    version_number,
)


def sha(model: int, build: int = 0) -> str:
    return f"{model:02x}{build:02x}".ljust(64, "0")


def pin(model: int) -> Pin:
    return Pin(model, sha(model))


def serving(number: int, model: int | None) -> PublishedVersion:
    return PublishedVersion(number, {} if model is None else {"live": pin(model)})


def registry(version: int, history: tuple[int, ...] = (), name: str = "prod") -> AliasState:
    return AliasState(
        name=name,
        version=version,
        sha256=sha(version),
        previous=history[-1] if history else None,
        history=history,
        updated_at="2026-11-26T10:00:00Z",
        updated_by="alice",
        reason="",
        event_id="e",
    )


def deleted(**kwargs: object) -> list[int]:
    return [d.version for d in plan_retention(**kwargs).to_delete]  # type: ignore[arg-type]


def why(plan: object, version: int) -> list[str]:
    (decision,) = [d for d in plan.decisions if d.version == version]  # type: ignore[attr-defined]
    return list(decision.reasons)


def test_beyond_the_count_everything_goes_oldest_first() -> None:
    versions = [serving(n, None) for n in range(1, 8)]
    plan = plan_retention(versions=versions, versions_to_keep=3)
    assert [d.version for d in plan.to_delete] == [1, 2, 3, 4]
    assert [d.version for d in plan.kept] == [7, 6, 5]
    assert why(plan, 5) == ["one of the 3 newest"]
    assert why(plan, 4) == []


def test_what_live_points_or_routes_to_is_kept() -> None:
    versions = [serving(n, None) for n in range(1, 8)]
    live = AliasRouting("live", 2, {4: 0.1})
    plan = plan_retention(versions=versions, versions_to_keep=2, aliases=[live])
    assert [d.version for d in plan.to_delete] == [1, 3, 5]
    assert why(plan, 2) == ["alias live points here"]
    assert why(plan, 4) == ["alias live routes 10% here"]


def test_an_in_flight_deployments_versions_are_kept_and_an_unreadable_one_blocks() -> None:
    versions = [serving(n, None) for n in range(1, 8)]
    moving = InFlightDeployment("d-1", 2, 3)
    assert deleted(versions=versions, versions_to_keep=2, deployments=[moving]) == [1, 4, 5]
    unknown = InFlightDeployment("d-2", None, None, readable=False)
    plan = plan_retention(versions=versions, versions_to_keep=2, deployments=[unknown])
    assert plan.to_delete == [] and plan.blocked is not None and "d-2" in plan.blocked
    assert [d.version for d in plan.decisions if not d.keep] == [5, 4, 3, 2, 1]


def test_the_newest_version_serving_each_model_in_the_history_is_kept() -> None:
    # Given models 1..4 deployed in order (versions 1..4), two more builds of model 2 (5, 6) and
    # model 4 live (version 4 is live, 7 and 8 are newer builds of model 4)
    versions = [
        serving(1, 1),
        serving(2, 2),
        serving(3, 3),
        serving(4, 4),
        serving(5, 2),
        serving(6, 2),
        serving(7, 4),
        serving(8, 4),
    ]
    alias = registry(4, history=(1, 2, 3))
    # When the history is kept 2 deep (models 3 and 2)
    plan = plan_retention(versions=versions, versions_to_keep=2, registry_alias=alias)
    # Then model 3's version, and model 2's newest build stay; model 1 is 3 rollbacks back
    assert [d.version for d in plan.to_delete] == [1, 2, 4, 5]
    assert why(plan, 6) == [
        "newest version serving model v2 (2 rollbacks back in registry alias prod's history)"
    ]
    assert why(plan, 3) == [
        "newest version serving model v3 (1 rollback back in registry alias prod's history)"
    ]
    assert why(plan, 8) == [
        "one of the 2 newest",
        "newest version serving model v4 (live in registry alias prod)",
    ]
    # And a deeper history keeps model 1 too; a depth of 0 keeps the current model only
    deeper = plan_retention(
        versions=versions, versions_to_keep=2, registry_alias=alias, history_depth=3
    )
    assert 1 not in [d.version for d in deeper.to_delete]
    shallow = plan_retention(
        versions=versions, versions_to_keep=2, registry_alias=alias, history_depth=0
    )
    assert [d.version for d in shallow.to_delete] == [1, 2, 3, 4, 5, 6]


def test_a_model_pinned_by_any_pin_variable_keeps_its_newest_version() -> None:
    # Given the pin table with its second pin variable, the shadow's
    table = serving_settings.PIN_VARIABLES
    assert serving_settings.SHADOW_PIN in table
    environ = {
        "MODEL_VERSION": "3",
        "MODEL_SHA256": sha(3),
        "SHADOW_MODEL_VERSION": "9",
        "SHADOW_MODEL_SHA256": sha(9),
    }
    # Then model_pins reads both, and served_model still reads the live one only
    assert serving_settings.model_pins(environ) == {"live": pin(3), "shadow": pin(9)}
    assert serving_settings.model_pins(environ, (serving_settings.LIVE_PIN,)) == {"live": pin(3)}
    assert serving_settings.served_model(environ) == pin(3)
    # And a version carrying model 9 as shadow is kept when the configuration pins it, by role
    versions = [
        PublishedVersion(1, {"live": pin(3), "shadow": pin(9)}),
        PublishedVersion(2, {"live": pin(3)}),
        PublishedVersion(3, {"live": pin(3)}),
        PublishedVersion(4, {"live": pin(3)}),
    ]
    plan = plan_retention(
        versions=versions,
        versions_to_keep=2,
        registry_alias=registry(3),
        configuration_pins=serving_settings.model_pins(environ, table),
    )
    assert [d.version for d in plan.to_delete] == [2]
    assert why(plan, 1) == [
        "newest version with model v9 as shadow (pinned as shadow by the function's configuration)"
    ]


def test_a_malformed_pin_pins_nothing() -> None:
    assert serving_settings.model_pins({"MODEL_VERSION": "7", "MODEL_SHA256": "short"}) == {}
    assert serving_settings.model_pins({"MODEL_VERSION": "x", "MODEL_SHA256": sha(7)}) == {}


def test_a_count_below_one_is_refused_with_its_name() -> None:
    with pytest.raises(RetentionError, match="versions_to_keep must be >= 1, got 0"):
        plan_retention(versions=[], versions_to_keep=0)
    with pytest.raises(RetentionError, match="history_depth must be >= 0"):
        plan_retention(versions=[], versions_to_keep=1, history_depth=-1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7), (7, 7), ("arn:aws:lambda:us-east-1:1:function:f:12", 12), ("$LATEST", None)],
)
def test_version_numbers_are_read_from_numbers_and_qualified_arns(
    value: object, expected: int | None
) -> None:
    assert version_number(value) == expected


def test_aliases_on_latest_or_with_odd_weights_protect_nothing_published() -> None:
    alias = AliasRouting.from_response(
        {
            "Name": "live",
            "FunctionVersion": "$LATEST",
            "RoutingConfig": {"AdditionalVersionWeights": {"3": 0.25, "$LATEST": 0.1}},
        }
    )
    assert alias == AliasRouting("live", None, {3: 0.25})


@pytest.mark.parametrize(
    ("revision", "expected"),
    [
        (
            {
                "appSpecContent": {
                    "content": '{"Resources": [{"fn": {"Properties": '
                    '{"CurrentVersion": 7, "TargetVersion": "8"}}}]}'
                }
            },
            ("7", "8"),
        ),
        ({"appSpecContent": {"content": "version: 0.0\nResources: []"}}, None),
        ({"string": {"content": '{"Resources": "not a list"}'}}, None),
        ({}, None),
    ],
)
def test_an_appspec_says_which_versions_a_deployment_moves_between_or_nothing(
    revision: dict[str, object], expected: tuple[str, str] | None
) -> None:
    assert appspec_versions(revision) == expected
    deployment = in_flight_deployment("d-1", {"revision": revision})
    assert deployment.readable == (expected is not None)


def test_the_pruner_settings_round_trip_and_name_what_is_wrong() -> None:
    target = PruneTarget("fn", "prod", "fraud", "s3://bucket", "app", "group", 10)
    assert PruneTarget.from_environ(target.to_environ()) == target
    with pytest.raises(RetentionError, match="missing: FUNCTION_NAME, DEPLOYMENT_GROUP"):
        broken = target.to_environ()
        del broken["FUNCTION_NAME"], broken["DEPLOYMENT_GROUP"]
        PruneTarget.from_environ(broken)
    with pytest.raises(RetentionError, match="VERSIONS_TO_KEEP must be a positive integer"):
        PruneTarget.from_environ({**target.to_environ(), "VERSIONS_TO_KEEP": "0"})


# Property: nothing anyone can need is ever deleted -----------------------------------------


@st.composite
def states(draw: st.DrawFn) -> dict[str, object]:
    count = draw(st.integers(min_value=0, max_value=25))
    models = st.one_of(st.none(), st.integers(min_value=1, max_value=8))
    versions = [serving(n, draw(models)) for n in range(1, count + 1)]
    numbers = st.integers(min_value=1, max_value=max(count, 1))
    aliases = [
        AliasRouting(
            "live",
            draw(numbers),
            draw(st.dictionaries(numbers, st.floats(0.01, 0.5), max_size=2)),
        )
    ]
    deployments = draw(
        st.lists(
            st.builds(InFlightDeployment, st.text("d-x", min_size=1), numbers, numbers),
            max_size=2,
        )
    )
    history = tuple(draw(st.lists(st.integers(1, 8), max_size=6)))
    alias = draw(st.one_of(st.none(), st.builds(registry, st.integers(1, 8), st.just(history))))
    return {
        "versions": versions,
        "aliases": aliases,
        "deployments": deployments,
        "registry_alias": alias,
        "versions_to_keep": draw(st.integers(min_value=1, max_value=6)),
        "history_depth": draw(st.integers(min_value=0, max_value=6)),
    }


@settings(max_examples=300, deadline=None)
@given(states())
def test_nothing_a_rollback_an_alias_or_a_deployment_needs_is_ever_deleted(
    state: dict[str, object],
) -> None:
    plan = plan_retention(**state)  # type: ignore[arg-type]
    gone = {d.version for d in plan.to_delete}
    versions: list[PublishedVersion] = state["versions"]  # type: ignore[assignment]
    newest = sorted((v.number for v in versions), reverse=True)
    needed = set(newest[: state["versions_to_keep"]])  # type: ignore[misc]
    for alias in state["aliases"]:  # type: ignore[attr-defined]
        needed |= {alias.version, *alias.weights}
    for deployment in state["deployments"]:  # type: ignore[attr-defined]
        needed |= {deployment.from_version, deployment.to_version}
    alias: AliasState | None = state["registry_alias"]  # type: ignore[assignment]
    if alias is not None:
        depth: int = state["history_depth"]  # type: ignore[assignment]
        targets = {alias.version, *(alias.history[-depth:] if depth else ())}
        for model in targets:
            # what `sds --aws rollback` switches to: the newest version serving the model
            serving_it = [v.number for v in versions if v.pins.get("live") == pin(model)]
            if serving_it:
                needed.add(max(serving_it))
    assert not gone & needed
    # and everything else goes: the rule keeps nothing without a reason
    assert all(d.keep == bool(d.reasons) for d in plan.decisions)
    assert gone == {d.version for d in plan.decisions if not d.reasons}
