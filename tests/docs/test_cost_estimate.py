"""docs/cost.py prices what bills while idle, read from templates, whatever stack holds it.

Small hand-written templates stand in for synthesized ones (the README check against the real
templates is tests/infra/test_cost.py): each test gives resources of one kind and checks the
monthly figure a reader would compute from the price table by hand.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cost() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sds_docs_cost", ROOT / "docs" / "cost.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def template(**resources: dict[str, Any]) -> dict[str, Any]:
    return {"Resources": resources}


def resource(type_: str, **properties: Any) -> dict[str, Any]:
    return {"Type": type_, "Properties": properties}


def one_env(cost: ModuleType, *templates: dict[str, Any], account: str | None = None) -> Any:
    (found,) = cost.estimate(
        {("prod", f"Stack{i}"): t for i, t in enumerate(templates)}, {"prod": account}
    )
    return found


def test_interface_endpoints_bill_per_az_and_gateway_endpoints_are_free(cost: ModuleType) -> None:
    # Given two interface endpoints in 2 AZs and 1 AZ, and the S3 gateway endpoint
    ecr = {"Fn::Join": ["", ["com.amazonaws.", {"Ref": "AWS::Region"}, ".ecr.api"]]}
    found = one_env(
        cost,
        template(
            Ecr=resource(
                "AWS::EC2::VPCEndpoint",
                VpcEndpointType="Interface",
                ServiceName=ecr,
                SubnetIds=[{"Ref": "A"}, {"Ref": "B"}],
            ),
            Logs=resource(
                "AWS::EC2::VPCEndpoint",
                VpcEndpointType="Interface",
                ServiceName="com.amazonaws.us-east-1.logs",
                SubnetIds=[{"Ref": "A"}],
            ),
            S3=resource("AWS::EC2::VPCEndpoint", VpcEndpointType="Gateway"),
        ),
    )
    # Then 3 endpoint-AZs at 0.01 USD an hour for 730 hours, named by service
    assert found.row("endpoints") == (21.9, ["ecr.api x 2 AZ", "logs x 1 AZ"])
    assert found.total == 21.9


def test_endpoints_leased_per_run_cost_nothing_idle_and_say_what_a_run_hour_costs(
    cost: ModuleType,
) -> None:
    # Given a lease function for three services in two subnets (infra.network.endpoints:
    # during_runs, azs 2), and no interface endpoint in the template
    found = one_env(
        cost,
        template(
            Lease=resource(
                "AWS::Lambda::Function",
                Environment={
                    "Variables": {
                        "SERVICE_NAMES": "com.amazonaws.us-east-1.ecr.api,"
                        "com.amazonaws.us-east-1.ecr.dkr,com.amazonaws.us-east-1.logs",
                        "SUBNET_IDS": {
                            "Fn::Join": ["", [{"Ref": "SubnetA"}, ",", {"Ref": "SubnetB"}]]
                        },
                    }
                },
            ),
            Other=resource("AWS::Lambda::Function", Environment={"Variables": {"A": "b"}}),
        ),
    )
    # Then nothing bills idle, and the line says 6 endpoint-AZs at 0.01 USD an hour of a run
    assert found.row("endpoints") == (
        0.0,
        ["leased per training run: 3 x 2 AZ, 0.06 USD per hour of a run"],
    )
    assert found.total == 0.0
    assert "leased per training run: 3 x 2 AZ" in cost.readme_table([found])


def test_kms_keys_are_counted_in_every_stack_nat_and_secrets_too(cost: ModuleType) -> None:
    found = one_env(
        cost,
        template(RegistryKey=resource("AWS::KMS::Key")),
        template(TopicKey=resource("AWS::KMS::Key"), Nat=resource("AWS::EC2::NatGateway")),
        template(Ip=resource("AWS::EC2::EIP"), Token=resource("AWS::SecretsManager::Secret")),
    )
    assert found.row("kms") == (2.0, ["RegistryKey", "TopicKey"])
    assert found.row("nat")[0] == 32.85
    assert found.row("ipv4")[0] == 3.65
    assert found.row("secrets")[0] == 0.4
    assert found.total == round(2.0 + 32.85 + 3.65 + 0.4, 2)


def alarms(n: int, *, math: bool = False) -> dict[str, Any]:
    if math:
        metric = {"MetricStat": {"Metric": {}, "Period": 60, "Stat": "Sum"}}
        body = {"Metrics": [metric, metric, {"Expression": "100*e/i", "Id": "r"}]}
    else:
        body = {"Period": 60}
    return template(**{f"Alarm{i}": resource("AWS::CloudWatch::Alarm", **body) for i in range(n)})


def test_the_free_tier_is_per_account_and_used_up_in_chain_order(cost: ModuleType) -> None:
    # Given three environments with a dashboard and 4 alarms (one of them metric math) each
    def env_templates(env: str) -> dict[tuple[str, str], dict[str, Any]]:
        return {
            (env, "Dash"): template(D=resource("AWS::CloudWatch::Dashboard")),
            (env, "Alarms"): alarms(3),
            (env, "Math"): alarms(1, math=True),
        }

    templates = {**env_templates("dev"), **env_templates("staging"), **env_templates("prod")}
    # When all three share one account: 15 alarm metrics, 10 free; 3 dashboards, all free
    shared = cost.estimate(templates, {"dev": None, "staging": None, "prod": None})
    # Then dev and staging use the free tier up and prod pays for its 5 alarm metrics
    assert [e.row("alarms")[0] for e in shared] == [0.0, 0.0, 0.5]
    assert [e.row("dashboards")[0] for e in shared] == [0.0, 0.0, 0.0]
    # And with prod in an account of its own, its free tier covers it
    split = cost.estimate(templates, {"dev": None, "staging": None, "prod": "222222222222"})
    assert [e.row("alarms")[0] for e in split] == [0.0, 0.0, 0.0]
    # And a fourth dashboard in the shared account costs 3 USD
    templates[("prod", "Dash2")] = template(E=resource("AWS::CloudWatch::Dashboard"))
    assert (
        cost.estimate(templates, {"dev": None, "staging": None, "prod": None})[2].row("dashboards")[
            0
        ]
        == 3.0
    )


def function(**properties: Any) -> dict[str, Any]:
    return resource(
        "AWS::Lambda::Function", **{"Runtime": "python3.12", "MemorySize": 1024, **properties}
    )


def test_snapstart_caches_count_the_versions_the_pruner_keeps(cost: ModuleType) -> None:
    snapstart = {"ApplyOn": "PublishedVersions"}
    pruner = function(
        MemorySize=256,
        Environment={"Variables": {"FUNCTION_NAME": {"Ref": "Model"}, "VERSIONS_TO_KEEP": "3"}},
    )
    # Given a 1 GB Python function with SnapStart pruned to 3 versions
    pruned = one_env(cost, template(Model=function(SnapStart=snapstart), Pruner=pruner))
    # Then 3 caches of 1 GB for a month at 0.0000015046 USD per GB-second
    assert pruned.row("snapstart") == (11.86, ["3 x 1 GB"])
    assert pruned.warnings == ()
    # And without a pruner the cost is unbounded: one version counted, and a warning
    unpruned = one_env(cost, template(Model=function(SnapStart=snapstart)))
    assert unpruned.row("snapstart")[0] == 3.95
    (warning,) = unpruned.warnings
    assert "grows with each deploy" in warning
    # And Java's SnapStart has no cache charge
    java = one_env(cost, template(Model=function(SnapStart=snapstart, Runtime="java21")))
    assert java.row("snapstart") == (0.0, [])


def test_provisioned_concurrency_bills_memory_all_month(cost: ModuleType) -> None:
    found = one_env(
        cost,
        template(
            Model=function(MemorySize=2048, Architectures=["arm64"]),
            Live=resource(
                "AWS::Lambda::Alias",
                FunctionName={"Ref": "Model"},
                ProvisionedConcurrencyConfig={"ProvisionedConcurrentExecutions": 2},
            ),
        ),
    )
    # 2 environments x 2 GB x 2,628,000 s x 0.0000033334 USD
    assert found.row("provisioned") == (35.04, ["Live: 2 x 2 GB"])


def test_every_price_names_its_source(cost: ModuleType) -> None:
    for name, price in cost.PRICES.items():
        assert price.usd > 0 and price.source.startswith("https://aws.amazon.com/"), name
