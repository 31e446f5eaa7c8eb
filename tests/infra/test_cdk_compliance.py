"""cdk-nag (AWS Solutions, Serverless, PCI DSS 3.2.1, NIST 800-53 rev 5) and cfn-lint over every
synthesized template."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_logs as logs
from cdk_nag import NagPack

import app as cdk_app
from tests.infra.synth import NagAudit, SynthesizedApp, cdk_context


def _violations(pack: NagPack, synthesized: SynthesizedApp, env: str) -> list[str]:
    report = pack.validate_scope(synthesized.stages[env])
    return [
        f"{violation.rule_name} at {resource.construct_path}: {violation.description[:100]}"
        for violation in report.violations
        for resource in violation.violating_resources
    ]


@pytest.mark.parametrize("pack", ["PCI.DSS.321", "NIST.800.53.R5"])
def test_synth_fails_on_an_unacknowledged_compliance_finding(
    lock_file: Path, lambda_python: str, tmp_path: Path, pack: str
) -> None:
    # Given the app as app.py builds it, one environment only
    context = copy.deepcopy(cdk_context())
    context["environments"] = {"dev": context["environments"]["dev"]}
    app = cdk.App(context=context, outdir=str(tmp_path))
    cdk_app.build(app, lock_path=lock_file, lambda_python=lambda_python)
    # When someone adds a log group without acknowledging its encryption (no AWS Solutions or
    # Serverless rule looks at that)
    logs.LogGroup(cdk.Stack(app, "Rogue"), "Plain")
    # Then synthesis refuses, naming the compliance pack's rule
    with pytest.raises(
        Exception, match=rf"ValidationFailed(.|\n)*{re.escape(pack)}-CloudWatchLogGroupEncrypted"
    ):
        app.synth()


@pytest.mark.parametrize("pack_type", cdk_app.NAG_PACKS)
def test_cdk_nag_reports_nothing_unacknowledged(
    synthesized: SynthesizedApp, env: str, pack_type: type[NagPack]
) -> None:
    pack = pack_type(synthesized.app)
    assert _violations(pack, synthesized, env) == []


def test_cfn_lint_reports_no_errors_on_any_template(synthesized: SynthesizedApp) -> None:
    # Every stack (Registry, Training, Inference, Features, Batch) of every environment plus the
    # variant
    templates = sorted(synthesized.outdir.glob("assembly-*/*.template.json"))
    assert len(templates) == 5 * len(synthesized.stages) == 20
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


def test_every_finding_is_acknowledged_and_every_acknowledgment_is_still_needed(
    nag_audit: NagAudit,
) -> None:
    # Given every environment plus a variant using the options cdk.json does not (API key,
    # alarm e-mail, public training network, schedule), built without acknowledgments
    assert nag_audit.findings, "cdk-nag found nothing at all: is it still running?"
    # (every pack ran: each reported something to acknowledge)
    assert {rule.split("-")[0] for _, rule in nag_audit.findings} == {
        "AwsSolutions",
        "Serverless",
        "PCI.DSS.321",
        "NIST.800.53.R5",
    }
    # Then each finding has a matching acknowledgment on it or on a parent construct
    assert nag_audit.unacknowledged() == []
    # And no acknowledgment is stale (it would silently hide a future finding)
    assert nag_audit.stale() == []
