"""Registry stack: the stateful buckets every environment's models and training data live in."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

from tests.infra.infra_helpers import one, resources
from tests.infra.synth import VARIANT, SynthesizedApp

# Never change: CloudFormation would replace the bucket (and, with RETAIN, orphan the old one
# with every model version in it). A rename of the construct path must keep this id.
REGISTRY_BUCKET_LOGICAL_ID = "RegistryBucket9C3667AF"
ACCESS_LOGS_LOGICAL_ID = "RegistryAccessLogs7B323143"
CAPTURES_BUCKET_LOGICAL_ID = "CapturesBucketA18E2F11"


def _registry(synthesized: SynthesizedApp, env: str) -> dict[str, Any]:
    return synthesized.template(env, "Registry").to_json()


def _data_bucket(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    found = [(k, v) for k, v in resources(template, "AWS::S3::Bucket").items()]
    (data,) = [(k, v) for k, v in found if k.startswith("TrainingDataBucket")]
    return data


def test_registry_bucket_logical_id_is_pinned(synthesized: SynthesizedApp, env: str) -> None:
    template = synthesized.template(env, "Registry").to_json()
    assert template["Resources"][REGISTRY_BUCKET_LOGICAL_ID]["Type"] == "AWS::S3::Bucket"


def _assert_private_tls_only(synthesized: SynthesizedApp, env: str, bucket_id: str) -> None:
    template = synthesized.template(env, "Registry")
    bucket = template.to_json()["Resources"][bucket_id]["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    # TLS only: a bucket policy denies every request without SecureTransport
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "s3:*",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


def _expected_encryption(synthesized: SynthesizedApp, env: str) -> list[dict[str, Any]]:
    if not synthesized.project.env(env).infra.registry.kms:
        return [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    key_id, _ = one(_registry(synthesized, env), "AWS::KMS::Key")
    return [
        {
            "BucketKeyEnabled": True,
            "ServerSideEncryptionByDefault": {
                "SSEAlgorithm": "aws:kms",
                "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]},
            },
        }
    ]


def test_registry_bucket_is_versioned_encrypted_private_logged_with_lifecycle(
    synthesized: SynthesizedApp, env: str
) -> None:
    infra = synthesized.project.env(env).infra
    bucket = _registry(synthesized, env)["Resources"][REGISTRY_BUCKET_LOGICAL_ID]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"] == (
        _expected_encryption(synthesized, env)
    )
    assert bucket["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": ACCESS_LOGS_LOGICAL_ID},
        "LogFilePrefix": "registry/",
    }
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert {
        "Id": "expire-noncurrent-versions",
        "Status": "Enabled",
        "NoncurrentVersionExpiration": {"NoncurrentDays": infra.registry.noncurrent_version_days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    } in rules
    _assert_private_tls_only(synthesized, env, REGISTRY_BUCKET_LOGICAL_ID)


def test_training_data_has_its_own_bucket_encrypted_like_the_registry(
    synthesized: SynthesizedApp, env: str
) -> None:
    # Given the Registry stack, Then training data lives in a bucket of its own (no grant on
    # the registry reaches it), versioned, encrypted with the registry's key, private and
    # TLS-only, logged to the same access-log bucket under its own prefix
    data_id, data = _data_bucket(_registry(synthesized, env))
    props = data["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == (
        _expected_encryption(synthesized, env)
    )
    assert props["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": ACCESS_LOGS_LOGICAL_ID},
        "LogFilePrefix": "training-data/",
    }
    _assert_private_tls_only(synthesized, env, data_id)


def test_access_log_bucket_is_versioned_so_a_log_cannot_silently_disappear(
    synthesized: SynthesizedApp, env: str
) -> None:
    registry = synthesized.project.env(env).infra.registry
    logs = _registry(synthesized, env)["Resources"][ACCESS_LOGS_LOGICAL_ID]["Properties"]
    assert logs["VersioningConfiguration"] == {"Status": "Enabled"}
    # S3 delivers server access logs to SSE-S3 buckets only
    assert logs["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    (rule,) = logs["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == registry.access_log_expiration_days
    assert rule["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": registry.noncurrent_version_days
    }
    _assert_private_tls_only(synthesized, env, ACCESS_LOGS_LOGICAL_ID)


def test_the_data_key_is_customer_managed_rotated_and_delegated_to_iam_only(
    synthesized: SynthesizedApp, env: str
) -> None:
    registry = synthesized.project.env(env).infra.registry
    keys = resources(_registry(synthesized, env), "AWS::KMS::Key")
    if not registry.kms:
        assert keys == {}
        return
    ((_, key),) = keys.items()
    assert key["Properties"]["EnableKeyRotation"] is True
    # Kept as long as the data it protects: a deleted key leaves retained objects unreadable
    assert key["DeletionPolicy"] == ("Retain" if registry.retain else "Delete")
    # The key policy only lets the account delegate through IAM; who may use it is decided by
    # the exact grants in each role and operator policy (tests/security/test_least_privilege.py)
    (statement,) = key["Properties"]["KeyPolicy"]["Statement"]
    assert statement["Principal"] == {
        "AWS": {"Fn::Join": ["", ["arn:aws:iam::", {"Ref": "AWS::AccountId"}, ":root"]]}
    }


def test_the_registry_and_training_data_outlive_their_stack_in_every_environment(
    synthesized: SynthesizedApp, env: str
) -> None:
    # Given an environment in cdk.json (dev included: every version starts in its registry)
    template = _registry(synthesized, env)
    infra = synthesized.project.env(env).infra
    assert infra.registry.removal_policy == "retain"
    data_id, _ = _data_bucket(template)
    # Then deleting the stack keeps the three buckets, and nothing is set up to empty them
    for bucket_id in (REGISTRY_BUCKET_LOGICAL_ID, data_id, CAPTURES_BUCKET_LOGICAL_ID):
        bucket = template["Resources"][bucket_id]
        assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
        tags = {t["Key"] for t in bucket["Properties"].get("Tags", [])}
        assert "aws-cdk:auto-delete-objects" not in tags
    emptied = [
        r["Properties"]["BucketName"]
        for r in resources(template, "Custom::S3AutoDeleteObjects").values()
    ]
    assert {"Ref": REGISTRY_BUCKET_LOGICAL_ID} not in emptied
    assert {"Ref": data_id} not in emptied
    assert {"Ref": CAPTURES_BUCKET_LOGICAL_ID} not in emptied
    # And only the access logs follow retain_data (dev lets `cdk destroy` remove them)
    logs = template["Resources"][ACCESS_LOGS_LOGICAL_ID]
    assert logs["DeletionPolicy"] == ("Retain" if infra.retain_data else "Delete")
    assert emptied == ([] if infra.retain_data else [{"Ref": ACCESS_LOGS_LOGICAL_ID}])
    assert synthesized.stages[env].registry.termination_protection is infra.retain_data


def test_removal_policy_destroy_is_the_explicit_opt_out(synthesized: SynthesizedApp) -> None:
    # Given the variant, which sets registry.removal_policy "destroy"
    template = _registry(synthesized, VARIANT)
    data_id, _ = _data_bucket(template)
    # Then the data buckets (and their key) go with the stack, emptied first
    buckets = (
        REGISTRY_BUCKET_LOGICAL_ID,
        data_id,
        ACCESS_LOGS_LOGICAL_ID,
        CAPTURES_BUCKET_LOGICAL_ID,
    )
    for bucket_id in buckets:
        assert template["Resources"][bucket_id]["DeletionPolicy"] == "Delete"
    emptied = {
        r["Properties"]["BucketName"]["Ref"]
        for r in resources(template, "Custom::S3AutoDeleteObjects").values()
    }
    assert emptied == set(buckets)
    (key,) = resources(template, "AWS::KMS::Key").values()
    assert key["DeletionPolicy"] == "Delete"


def test_buckets_have_no_physical_name_and_are_published_for_tools(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = synthesized.template(env, "Registry")
    for bucket in resources(template.to_json(), "AWS::S3::Bucket").values():
        assert "BucketName" not in bucket["Properties"]
    template.has_resource_properties(
        "AWS::SSM::Parameter",
        {"Name": f"/sds/{env}/registry-bucket", "Value": {"Ref": REGISTRY_BUCKET_LOGICAL_ID}},
    )
    data_id, _ = _data_bucket(template.to_json())
    template.has_resource_properties(
        "AWS::SSM::Parameter",
        {"Name": f"/sds/{env}/training-data-bucket", "Value": {"Ref": data_id}},
    )
