"""Registry stack: the stateful bucket every environment's models live in."""

from __future__ import annotations

from aws_cdk.assertions import Match
from conftest import SynthesizedApp
from infra_helpers import resources

# Never change: CloudFormation would replace the bucket (and, with RETAIN, orphan the old one
# with every model version in it). A rename of the construct path must keep this id.
REGISTRY_BUCKET_LOGICAL_ID = "RegistryBucket9C3667AF"


def test_registry_bucket_logical_id_is_pinned(synthesized: SynthesizedApp, env: str) -> None:
    template = synthesized.template(env, "Registry").to_json()
    assert template["Resources"][REGISTRY_BUCKET_LOGICAL_ID]["Type"] == "AWS::S3::Bucket"


def test_registry_bucket_is_versioned_encrypted_private_logged_with_lifecycle(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = synthesized.template(env, "Registry")
    infra = synthesized.project.env(env).infra
    bucket = template.to_json()["Resources"][REGISTRY_BUCKET_LOGICAL_ID]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["LoggingConfiguration"]["DestinationBucketName"] == {
        "Ref": "RegistryAccessLogs7B323143"
    }
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert {
        "Id": "expire-noncurrent-versions",
        "Status": "Enabled",
        "NoncurrentVersionExpiration": {"NoncurrentDays": infra.registry.noncurrent_version_days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    } in rules
    # TLS only: a bucket policy denies every request without SecureTransport
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": REGISTRY_BUCKET_LOGICAL_ID},
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


def test_stateful_resources_are_retained_outside_dev(synthesized: SynthesizedApp, env: str) -> None:
    template = synthesized.template(env, "Registry").to_json()
    retain = synthesized.project.env(env).infra.retain_data
    buckets = resources(template, "AWS::S3::Bucket")
    assert len(buckets) == 2  # registry + its access logs
    for bucket in buckets.values():
        assert bucket["DeletionPolicy"] == ("Retain" if retain else "Delete")
        assert bucket["UpdateReplacePolicy"] == ("Retain" if retain else "Delete")
    assert synthesized.stages[env].registry.termination_protection is retain
    # dev empties its buckets on destroy; retained environments never get that machinery
    auto_delete = resources(template, "Custom::S3AutoDeleteObjects")
    assert len(auto_delete) == (0 if retain else 2)


def test_bucket_has_no_physical_name_and_is_published_for_tools(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = synthesized.template(env, "Registry")
    for bucket in resources(template.to_json(), "AWS::S3::Bucket").values():
        assert "BucketName" not in bucket["Properties"]
    template.has_resource_properties(
        "AWS::SSM::Parameter",
        {"Name": f"/sds/{env}/registry-bucket", "Value": {"Ref": REGISTRY_BUCKET_LOGICAL_ID}},
    )
