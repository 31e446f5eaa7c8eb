"""cdk-nag (AWS Solutions + Serverless packs) and cfn-lint over every synthesized template."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cdk_nag import AwsSolutionsChecks, NagPack, ServerlessChecks
from conftest import NagAudit, SynthesizedApp


def _violations(pack: NagPack, synthesized: SynthesizedApp, env: str) -> list[str]:
    report = pack.validate_scope(synthesized.stages[env])
    return [
        f"{violation.rule_name} at {resource.construct_path}: {violation.description[:100]}"
        for violation in report.violations
        for resource in violation.violating_resources
    ]


@pytest.mark.parametrize("pack_type", [AwsSolutionsChecks, ServerlessChecks])
def test_cdk_nag_reports_nothing_unacknowledged(
    synthesized: SynthesizedApp, env: str, pack_type: type[NagPack]
) -> None:
    pack = pack_type(synthesized.app)
    assert _violations(pack, synthesized, env) == []


def test_cfn_lint_reports_no_errors_on_any_template(synthesized: SynthesizedApp) -> None:
    # Every environment plus the variant
    templates = sorted(synthesized.outdir.glob("assembly-*/*.template.json"))
    assert len(templates) == 3 * len(synthesized.stages) == 12
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(cfn_lint), "--format", "parseable", *map(str, templates)],
        capture_output=True,
        text=True,
        check=False,
    )
    # Exit status is a bit mask: 2 = errors, 4 = warnings, 8 = informational; 1 = crash.
    errors = [line for line in result.stdout.splitlines() if ":E" in line]
    assert result.returncode & 3 == 0 and not errors, result.stdout + result.stderr


def _covers(scope_path: str, resource_path: str) -> bool:
    return resource_path == scope_path or resource_path.startswith(scope_path + "/")


def test_every_finding_is_acknowledged_and_every_acknowledgment_is_still_needed(
    nag_audit: NagAudit,
) -> None:
    # Given every environment plus a variant using the options cdk.json does not (API key,
    # alarm e-mail, public training network, schedule), built without acknowledgments
    assert nag_audit.findings, "cdk-nag found nothing at all: is it still running?"
    # Then each finding has a matching acknowledgment on it or on a parent construct
    unacknowledged = sorted(
        (path, rule)
        for path, rule in nag_audit.findings
        if not any(
            rule == finding and _covers(scope, path) for scope, finding in nag_audit.acknowledged
        )
    )
    assert unacknowledged == []
    # And no acknowledgment is stale (it would silently hide a future finding)
    stale = sorted(
        (scope, finding)
        for scope, finding in nag_audit.acknowledged
        if not any(rule == finding and _covers(scope, path) for path, rule in nag_audit.findings)
    )
    assert stale == []
